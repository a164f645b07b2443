/* Internals shared by upstream_io.c (connections, exchanges, the timer, the life cycle) and
 * upstream_check.c (the probes and deep checks that keep the registry current). Included by
 * those two files only. */
#ifndef NTSPOOL_POOL_UPSTREAM_IO_INT_H
#define NTSPOOL_POOL_UPSTREAM_IO_INT_H

#include "upstream_io.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "aead.h"
#include "ke_client.h"
#include "ke_conn.h"
#include "ke_msg.h"
#include "log.h"
#include "net.h"
#include "nts_ntp.h"
#include "slot.h"
#include "upstream.h"

#define REASON_MAX 160

struct conn;

struct upstream_io_exchange {
	struct upstream_io *io;
	struct upstream_io_exchange *next; /* in io->queue while waiting */
	struct conn *conn;		   /* while running */
	uint32_t id;
	enum ke_msg_request_kind kind;
	upstream_io_done_cb cb;
	void *ud;
	uint64_t start_ms;
	/* A failure found inside a caller's call waits in io->deferred for the loop. */
	int failed_err;
	bool failed_keys_sent;
	char failed_reason[REASON_MAX];
	size_t len;
	uint8_t req[]; /* wiped as soon as ke_client holds its copy */
};

/* One NTS-KE connection to an upstream: the machine the connection driver runs once it
 * connects (ke_conn frees it then, after its closed hook); before that freed from the resolver
 * callback or at once. */
struct conn {
	struct upstream_io *io;
	struct conn *next; /* in io->conns while linked */
	bool linked;
	bool resolving; /* gai outstanding: its callback frees a conn unlinked meanwhile */
	uint32_t id;
	uint16_t port;
	uint64_t opened_ms;	     /* for the age limit of kept connections */
	uint64_t since_ms;	     /* the current exchange's start, or when it became idle */
	enum ke_numbering numbering; /* its ke_client's: a connection never mixes numberings */
	uv_getaddrinfo_t gai;
	struct ke_conn *kc; /* the driver's, once connecting */
	struct ke_client *ke;
	struct upstream_io_exchange *x; /* busy; NULL = idle (or not connected yet) */
};

/* One NTS-protected NTP request of a deep check, to one address family's server address. */
struct deep_ntp {
	struct deep *d;
	uint8_t family; /* UPSTREAM_FAMILY_* */
	struct sockaddr_storage to;
	struct net_udp *udp; /* while the request is out */
	bool waiting;	     /* sent, no authenticated reply yet */
	uint8_t uid[NTS_NTP_UID_LEN];
	uint64_t sent_ts;
	char reason[REASON_MAX]; /* why the last reply was refused */
};

/* One result of a deep check (upstream_deep_outcome with its reason kept here). */
struct deep_outcome {
	uint16_t aead;
	uint8_t family;
	bool ok;
	char reason[REASON_MAX];
};

/* A deep check (PROTOCOL.md §4.3): for each AEAD in turn a Fixed Key exchange with keys of our
 * own, then one NTS-protected NTP request per address family (the first IPv4 and the first IPv6
 * address) of the server the answer names, each with a cookie of its own. */
struct deep {
	struct upstream_io *io;
	struct deep *next; /* in io->deeps until finished */
	bool linked;
	bool resolving;
	uint32_t id;
	uint16_t aeads[UPSTREAM_DEEP_AEADS_MAX];
	size_t n_aeads;
	size_t cur; /* aeads[cur] is being checked */
	size_t key_len;
	uint8_t c2s[AEAD_MAX_KEY_LEN];
	uint8_t s2c[AEAD_MAX_KEY_LEN];
	struct upstream_io_exchange *x;
	uint64_t deadline; /* of the resolve and NTP stages; 0 during the KE stage */
	uv_getaddrinfo_t gai;
	/* The server the addresses in ntp[] are of ("" none): the next AEAD's answer naming it
	 * again needs no resolution. */
	char server[KE_MSG_NAME_MAX + 1];
	uint16_t port;
	struct deep_ntp ntp[2];
	size_t n_ntp;
	struct ke_msg_cookie cookies[2];
	size_t n_cookies;
	uint8_t families; /* seen in this check */
	struct deep_outcome out[UPSTREAM_DEEP_OUTCOMES_MAX];
	size_t n_out;
};

/* What io remembers per upstream: the AEADs its last Support answer allows for deep checks, and
 * whether it answered well only without the Supported Next Protocol List (a seed-era server) in
 * the numbering it then had, so probes in that numbering omit the list. */
struct ups {
	struct ups *next;
	uint32_t id;
	uint16_t deep_aeads[UPSTREAM_DEEP_AEADS_MAX];
	size_t n_deep_aeads;
	bool no_protocol_list;
	enum ke_numbering no_list_numbering;
};

/* A probe in flight: the callback's context. */
struct probe {
	struct upstream_io *io;
	uint32_t id;
	bool asked_list; /* the request carried the Supported Next Protocol List */
	bool retry;	 /* the second try, without the list, after an Error 0 */
};

struct upstream_io {
	uv_loop_t *loop;
	struct log_ratelimit fail_log;
	struct tls_creds *creds;
	struct upstream_registry *reg; /* the control plane's: probes, deep checks, forgetting */
	struct slot_view snapshots;    /* without reg (a worker's): what the registry published */
	const struct upstream_io_config *cfg;
	uv_timer_t timer; /* probes, deep checks, and deadlines the streams do not cover */
	struct conn *conns;
	struct upstream_io_exchange *queue; /* FIFO */
	struct deep *deeps;
	struct ups *ups;
	unsigned pending; /* the timer, conns and deep checks not freed yet */
	bool closing;
	/* Inside upstream_io_exchange or upstream_io_cancel: failures found now are deferred to
	 * io->deferred (FIFO) and delivered from the timer, so no callback runs before the call
	 * returns. */
	unsigned in_call;
	struct upstream_io_exchange *deferred;
};

/* upstream_io.c: drops one of io->pending, freeing io with the last one once it is closing. */
void upstream_io_release(struct upstream_io *io);

/* upstream_io.c: the loop's clock, the time base of every deadline here and in the registry. */
uint64_t upstream_io_now_ms(const struct upstream_io *io);

/* upstream_io.c: reschedules the timer; call whenever a probe, check or deadline may be due. */
void upstream_io_rearm(struct upstream_io *io);

/* Where an exchange for upstream id goes: from the registry (control plane) or from the worker's
 * current snapshot. Borrowed until the next lookup or registry change. */
struct upstream_io_target {
	const char *domain;
	uint16_t port;
	enum ke_numbering numbering;
	enum upstream_state state;
};

/* upstream_io.c: false when neither knows id (any more). */
bool upstream_io_lookup(struct upstream_io *io, uint32_t id, struct upstream_io_target *out);

/* upstream_io.c: upstream id's domain for log lines, "(removed)" once the registry dropped it. */
const char *upstream_io_name_of(struct upstream_io *io, uint32_t id);


/* upstream_io.c: starts resolving name for socktype into req (the caller owns req); flags are
 * getaddrinfo's ai_flags. */
int upstream_io_resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb,
			const char *name, int socktype, int flags);

/* upstream_check.c: the timer's entry for a due probe (a Support exchange) of upstream id. */
void upstream_check_start_probe(struct upstream_io *io, uint32_t id);

/* upstream_check.c: the timer's entry for a due deep check of upstream id. */
void upstream_check_start_deep(struct upstream_io *io, uint32_t id);

/* upstream_check.c: the timer's entry for deep check d past its deadline: the stage waiting
 * fails (the NTP requests without a reply, or, for a stuck resolution, the AEADs left) and the
 * check goes on with the next AEAD or reports. */
void upstream_check_deep_expired(struct deep *d);

/* upstream_check.c: ends deep check d without a report (io is closing). */
void upstream_check_deep_abort(struct deep *d);

#endif
