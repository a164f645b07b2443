/* The broker's per-client logic (PROTOCOL.md §4 steps 1-8) as a sans-I/O state machine.
 *
 * It owns the client's TLS session: the glue feeds it the client's ciphertext, sends what it
 * outputs, arms its deadline and closes the client socket once it is done. It never talks to an
 * upstream itself: when it needs one it picks a candidate through the registry callbacks, builds
 * the Fixed Key request, and hands it to the glue (pool_session_upstream_request); the glue runs
 * that one exchange and reports back. Keys of one client session reach at most one upstream:
 * after a report that the request may have been sent, the session never tries another. */
#ifndef NTSPOOL_POOL_SESSION_H
#define NTSPOOL_POOL_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "tls.h"

/* Why sessions ended, for /status. */
struct pool_session_stats {
	uint64_t accepted;	    /* sessions started */
	uint64_t completed;	    /* cookies delivered to the client */
	uint64_t no_overlap;	    /* answered "no common protocol/AEAD" */
	uint64_t failed_tls;	    /* handshake refused (TLS 1.2, ALPN, garbage) */
	uint64_t failed_bad_request; /* Error 0/1 sent to the client */
	uint64_t failed_no_upstream; /* Error 2: no healthy upstream left to try */
	uint64_t failed_upstream;    /* Error 2: the upstream failed after the keys left */
	uint64_t failed_timeout;     /* session deadline passed */
	uint64_t failovers;	    /* candidates abandoned before the keys left */
	uint64_t rate_limited;	    /* Error 2: the client's prefix is over its rate limit */
};

/* An upstream candidate as the session needs it; all pointers borrowed until the session reports
 * on this candidate (pool_session_upstream_request is taken, or the pick is abandoned). */
struct pool_upstream_info {
	uint32_t id;
	const char *name; /* configured domain: the Server record when the upstream sends none */
	const uint16_t *protocols;
	size_t n_protocols;
	const struct ke_msg_algorithm *algorithms; /* (AEAD id, key length) */
	size_t n_algorithms;
	enum ke_numbering numbering; /* the upstream's record numbers (pool-record-numbers) */
	const char *token;	     /* its authentication token (secret), NULL: none */
};

/* What a pick is asked for one client; everything borrowed for the call. */
struct pool_pick_query {
	const struct ke_msg_request *req; /* the client's request: deny set, AEADs */
	const uint32_t *tried;		  /* candidates already tried */
	size_t n_tried;
	const char *sni; /* the name the client sent in its TLS SNI, NULL: none */
	uint64_t now_ms;
};

/* The upstream registry as the session sees it. pick: a healthy upstream not among q->tried,
 * not denied by q->req when possible (falling back to a denied one when every healthy one is
 * denied, PROTOCOL.md §4 step 3), with fresh support lists; 0 and *out filled, or -ENOENT. */
struct pool_session_upstreams {
	int (*pick)(void *ud, const struct pool_pick_query *q, struct pool_upstream_info *out);
	void *ud;
};

/* The most candidates one session tries (the config's bound of max-upstream-attempts). */
#define POOL_SESSION_MAX_ATTEMPTS 16

struct pool_session_config {
	enum ke_numbering numbering; /* towards clients; each upstream has its own */
	uint64_t timeout_ms;	     /* whole client session (key-exchange-timeout-ms) */
	uint64_t handshake_timeout_ms; /* TLS done this soon after the start (handshake-timeout-ms),
					* 0: only timeout_ms bounds it */
	unsigned max_attempts;	     /* upstream candidates tried at most (max-upstream-attempts),
				      * 1..POOL_SESSION_MAX_ATTEMPTS */
};

struct pool_session;

/* creds: the broker's server credentials (a reference is taken). cfg, ups, stats: borrowed for
 * the session's life; the session counts in stats only once pool_session_admitted said its
 * client is one (a connection refused for its PROXY header, or the load balancer's own health
 * check, is no session). *out is new (pool_session_free). Returns 0, -EINVAL (max_attempts out of
 * range, no pick), -ENOMEM or a negative errno from TLS setup. */
int pool_session_new(struct pool_session **out, struct tls_creds *creds,
		     const struct pool_session_config *cfg,
		     const struct pool_session_upstreams *ups, struct pool_session_stats *stats,
		     uint64_t now_ms);
void pool_session_free(struct pool_session *s);

/* Client side, as ke_server_conn. The reason says how the session ended (borrowed, lives as
 * long as s; "" while it runs). */
int pool_session_input(struct pool_session *s, const uint8_t *buf, size_t len, uint64_t now_ms);
void pool_session_eof(struct pool_session *s, uint64_t now_ms);
void pool_session_timeout(struct pool_session *s, uint64_t now_ms);
void pool_session_output(const struct pool_session *s, const uint8_t **ptr, size_t *len);
void pool_session_output_consume(struct pool_session *s, size_t n);
uint64_t pool_session_deadline(const struct pool_session *s);
bool pool_session_done(const struct pool_session *s);
const char *pool_session_reason(const struct pool_session *s);
void pool_session_set_peer(struct pool_session *s, const char *peer);
/* The connection is a client's (admitted at accept, or after its PROXY header): from now on
 * the session is counted (accepted, then how it ends). Idempotent. */
void pool_session_admitted(struct pool_session *s);

/* The client is over its rate limit: once its request is read it gets Error 2 (counted in
 * rate_limited) and no upstream is asked. Call before the first input. */
void pool_session_refuse_rate_limited(struct pool_session *s);

/* The configured name of the upstream the session settled on (borrowed, "" before any). */
const char *pool_session_upstream_name(const struct pool_session *s);

/* Upstream side. True when an exchange is wanted and not yet taken: *id, and the Fixed Key
 * request (*req, *len borrowed until the report or until the session is done, when the keys are
 * wiped: copy them). The glue takes it exactly once (a second call
 * returns false until the session wants another), runs it on a kept-alive or new connection to
 * upstream *id, and reports with one of the two calls below. */
bool pool_session_upstream_request(struct pool_session *s, uint32_t *id, const uint8_t **req,
				   size_t *len);

/* The exchange failed. keys_sent: the request may have reached the upstream (it was written to
 * TLS); then the client gets Error 2, otherwise the next candidate is tried. */
void pool_session_upstream_failed(struct pool_session *s, bool keys_sent, int err,
				  uint64_t now_ms);

/* The upstream answered: parse_rc and resp as from ke_client_response (resp borrowed for the
 * call). A usable answer becomes the client's response, built from its parsed fields. */
void pool_session_upstream_response(struct pool_session *s, int parse_rc,
				    const struct ke_msg_response *resp, uint64_t now_ms);

/* The upstream id the session settled on (for the registry's per-upstream counters), or
 * UINT32_MAX before any. */
uint32_t pool_session_upstream_id(const struct pool_session *s);

/* The client's TLS handshake has not completed yet: such a session may be shed to admit a
 * newer connection when the listener is full. */
bool pool_session_handshaking(const struct pool_session *s);

#endif
