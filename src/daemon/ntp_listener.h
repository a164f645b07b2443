/* One [[server]]: each worker's UDP socket of the address (a SO_REUSEPORT group), answering NTP
 * and NTS-protected NTP with ntp_server. The keyset and the clock the daemon announces reach the
 * workers as published slots. */
#ifndef NTSPOOL_NTP_LISTENER_H
#define NTSPOOL_NTP_LISTENER_H

#include <jansson.h>
#include <uv.h>

#include "config_daemon.h"
#include "ratelimit.h"
#include "ntp_server.h"
#include "slot.h"
#include "status.h"

/* Makes s a slot of the announced clock holding a copy of c. 0 or -ENOMEM. */
int ntp_clock_slot_init(struct slot *s, const struct ntp_server_clock *c);
/* Publishes a copy of c (after each synchronisation update). 0 or -ENOMEM (the old clock stays). */
int ntp_clock_publish(struct slot *s, const struct ntp_server_clock *c);

struct ntp_listener;

/* The rate limiter of one [[server]] (rate-limiting-cache-size and -cutoff-ms), to share among
 * the workers' listeners of that server: *out is new (ratelimit_free), NULL when the server
 * limits nothing. 0 or negative errno. */
int ntp_rate_limit_new(const struct config_daemon_server *cfg, struct ratelimit **out);

/* cfg, keyset, clock and rate are borrowed for the listener's life; rate (the server's shared
 * table from ntp_rate_limit_new) may be NULL, and the listener then makes a table of its own
 * when cfg limits the rate (a client whose datagrams reach several workers then has a budget
 * per worker). *out is new. 0 or negative errno. */
int ntp_listener_new_shared(struct ntp_listener **out, uv_loop_t *loop,
			    const struct config_daemon_server *cfg, struct slot *keyset,
			    struct slot *clock, struct ratelimit *rate);
/* As ntp_listener_new_shared with rate NULL. */
int ntp_listener_new(struct ntp_listener **out, uv_loop_t *loop,
		     const struct config_daemon_server *cfg, struct slot *keyset,
		     struct slot *clock);
/* Starts answering on fd (a bound UDP socket, taken over even on failure). 0 or negative errno
 * with err. */
int ntp_listener_start(struct ntp_listener *l, int fd, char *err, size_t errlen);
void ntp_listener_stop(struct ntp_listener *l);
void ntp_listener_free(struct ntp_listener *l);

/* Copies the listener's counters (on its own thread). */
void ntp_listener_counters(const struct ntp_listener *l, struct ntp_server_stats *out);

/* The status object of one [[server]] from each worker's counters: sums and a per-worker
 * breakdown (new reference). */
json_t *ntp_listener_status(const struct config_daemon_server *cfg,
			    const struct ntp_server_stats *per_worker, size_t n);
/* Prometheus lines: cfgs[0..n_ntp), counters[k * n_workers + w] for server k on worker w. */
void ntp_listener_metrics(const struct config_daemon_server *cfgs, size_t n_ntp,
			  const struct ntp_server_stats *counters, size_t n_workers,
			  struct status_text *out);

#endif
