/* The clock helper: a process of its own that holds CAP_SYS_TIME and nothing else, forked before
 * the network process drops its privileges, so that the process that parses network input cannot
 * adjust the clock except through the requests clock_request.h allows (the OpenNTPD design).
 *
 * The network process talks to it over a SOCK_SEQPACKET socketpair through clock_helper_ops, a
 * clock backend like the kernel's: one request, one reply, synchronously (a helper answers in
 * microseconds). A helper that stops answering is reported once, killed and reaped; every call
 * then fails and lost is set, for the owner to stop (a daemon that cannot steer the clock should
 * not go on announcing it as synchronised). */
#ifndef NTSPOOL_CLOCK_HELPER_H
#define NTSPOOL_CLOCK_HELPER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h"
#include "privdrop.h"

struct clock_helper {
	pid_t pid; /* 0: none */
	int fd;	   /* the network process's end; -1: none (not started, or gone) */
	bool lost; /* it ran and failed: the clock can no longer be adjusted */
};

/* How long the network process waits for a reply before it gives the helper up. */
#define CLOCK_HELPER_TIMEOUT_MS 1000

void clock_helper_init(struct clock_helper *h);

/* Forks the helper, which drops to p's account keeping only the capabilities in keep
 * (PRIVDROP_CAP masks) and serves requests with ops/ud until its socket closes, refusing steps
 * beyond the panic thresholds of limits (NULL: none but clock_request's). Call while the process
 * has one thread. Returns once the helper said it runs: 0, or negative errno with err written
 * (the helper that failed is reaped). */
int clock_helper_spawn(struct clock_helper *h, const struct privdrop *p, uint64_t keep,
		       const struct clock_backend_ops *ops, void *ud,
		       const struct clock_discipline_config *limits, char *err, size_t errlen);

/* The helper's loop on fd: each request is checked (clock_request_decode, then a step against
 * guard unless it is NULL), carried out on ops/ud if valid, and answered (-ERANGE for a step the
 * guard refuses). Returns 0 when the other end closes, negative errno on a socket failure. */
int clock_helper_serve(int fd, const struct clock_backend_ops *ops, void *ud,
		       struct clock_step_guard *guard);

/* One request and its reply: the helper's result, or -EPIPE once the helper is gone. */
int clock_helper_call(struct clock_helper *h, uint32_t op, double value);

/* A clock backend over the helper (ud: the struct clock_helper). */
extern const struct clock_backend_ops clock_helper_ops;

/* Gives the helper up (why: negative errno, for the log): closes the socket, kills the helper if
 * it still runs, reaps it and sets lost. Calls fail with -EPIPE from then on. Nothing once the
 * socket is closed. */
void clock_helper_give_up(struct clock_helper *h, int why);

/* Closes the socket, which ends the helper, and waits for it. */
void clock_helper_close(struct clock_helper *h);

#endif
