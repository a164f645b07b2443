/* The NTS-KE server's per-connection logic as a sans-I/O state machine (PROTOCOL.md §1-§3).
 *
 * It owns the connection's TLS session: the glue feeds it ciphertext from the socket, sends what
 * it outputs, arms the deadline it asks for, and closes the socket when it says it is done. No
 * socket, loop or clock inside: time comes in as now_ms (a monotonic clock in milliseconds). */
#ifndef NTSPOOL_KE_SERVER_H
#define NTSPOOL_KE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ke_record.h"
#include "keyset.h"
#include "pool_proto.h"
#include "tls.h"

/* Counters of one NTS-KE listener; the glue adds the listener's own (accepted, refused). */
struct ke_server_stats {
	uint64_t sessions;	   /* connections given to a state machine */
	uint64_t completed;	   /* successful plain key exchanges (cookies sent) */
	uint64_t errors[3];	   /* Error records sent, by code 0, 1, 2 */
	uint64_t no_overlap;	   /* no common protocol or AEAD */
	uint64_t timeouts;	   /* deadline passed before a response was sent */
	uint64_t tls_failures;	   /* handshakes refused (version, ALPN, alerts, garbage) */
	uint64_t pool_support;	   /* Support requests answered for an authorised pool */
	uint64_t pool_fixed_key;   /* Fixed Key requests answered for an authorised pool */
	uint64_t unauthorised;	   /* pool requests from a peer that is not an authorised pool */
	uint64_t token_refused;	   /* pool requests whose token was not accepted or not first */
	uint64_t pool_auth_certificate; /* pool requests authorised by a pinned certificate */
	uint64_t pool_auth_token;	/* pool requests authorised by an accepted token */
	uint64_t keep_alive_reuse; /* requests after the first on a kept-alive connection */
	uint64_t rate_limited;	   /* plain requests answered Error 2 for the client's rate */
};

/* How long a kept-alive pool connection may sit idle between requests. Longer than a broker's
 * own idle limit (30 s by default), so the broker is the side that closes an idle connection:
 * a request it writes into a connection we are closing would fail after its keys left. Only
 * authorised pools get Keep Alive, and connections stay bounded by concurrent-connections. */
#define KE_SERVER_KEEP_ALIVE_IDLE_MS 60000

struct ke_server_config {
	enum ke_numbering numbering;
	uint64_t timeout_ms;    /* whole session without keep-alive; per request with it */
	/* The TLS handshake must be done this soon after the connection started (0: only
	 * timeout_ms bounds it), so a peer that stalls before it holds a slot only briefly. */
	uint64_t handshake_timeout_ms;
	uint16_t ntp_port;      /* 0 or 123: no Port record */
	const char *ntp_server; /* NULL: no Server record; borrowed */
	/* Borrowed slot of the accepted pool tokens: *tokens is read at every request, so a reload
	 * that swaps the set applies to the next request of a kept-alive connection. NULL, or a
	 * slot holding NULL: no token is accepted. */
	struct pool_tokens *const *tokens;
	/* Borrowed slot of the listener's credentials, read at every request like the tokens: a
	 * kept-alive pool connection whose certificate a reload unpinned is refused from its next
	 * request on. NULL: the pins the session started with. */
	struct tls_creds *const *creds;
};

struct ke_server_conn;

/* A new connection's state machine. creds (a reference is taken), cfg (borrowed, must outlive
 * the connection), keyset_slot (borrowed: *keyset_slot is read at each request so a rotation
 * takes effect for the next request), stats (borrowed). *out is new (ke_server_conn_free).
 * Returns 0, -ENOMEM, or a negative errno from TLS setup. */
int ke_server_conn_new(struct ke_server_conn **out, struct tls_creds *creds,
		       const struct ke_server_config *cfg, struct keyset *const *keyset_slot,
		       struct ke_server_stats *stats, uint64_t now_ms);

void ke_server_conn_free(struct ke_server_conn *c);

/* Plain key exchanges of this connection take a token from rl (borrowed, outliving c) for peer
 * (copied) when they arrive; without one the request gets Error 2 (counted in rate_limited and
 * in errors[2]). Pool requests take none and are answered as ever: an authorised pool's many
 * key exchanges come from one address by design. */
struct ratelimit;
void ke_server_conn_set_rate_limit(struct ke_server_conn *c, struct ratelimit *rl,
				   const struct sockaddr *peer);

/* Names the peer (e.g. "192.0.2.1:40000"; borrowed, copied, truncated to 63 bytes) in the
 * connection's debug log lines. */
void ke_server_conn_set_peer(struct ke_server_conn *c, const char *peer);

/* Ciphertext from the peer (borrowed). Drives the handshake, reads the request, answers it.
 * Returns 0 (keep going; check output/done), or a negative errno when the connection must be
 * dropped at once (e.g. input over TLS limits). */
int ke_server_conn_input(struct ke_server_conn *c, const uint8_t *buf, size_t len,
			 uint64_t now_ms);

/* The peer closed its sending side. An incomplete request is answered with Error 1 when TLS still
 * allows it; then the connection is done. */
void ke_server_conn_eof(struct ke_server_conn *c, uint64_t now_ms);

/* The deadline passed: a started but incomplete request gets Error 1 and End (if the handshake
 * completed), then close_notify; the connection is done. A kept-alive connection idle between
 * requests is closed the same way but does not count as a timeout. */
void ke_server_conn_timeout(struct ke_server_conn *c, uint64_t now_ms);

/* Ciphertext to send: *ptr (borrowed until the next call on c) and *len; consume what was
 * handed to the socket. */
void ke_server_conn_output(const struct ke_server_conn *c, const uint8_t **ptr, size_t *len);
void ke_server_conn_output_consume(struct ke_server_conn *c, size_t n);

/* Absolute deadline in now_ms units (0 = none). Changes after input on keep-alive connections. */
uint64_t ke_server_conn_deadline(const struct ke_server_conn *c);

/* True once nothing more will be read: send the remaining output, then close the socket. */
bool ke_server_conn_done(const struct ke_server_conn *c);

/* True while a kept-alive pool connection waits for its next request (nothing buffered): a
 * daemon that is stopping closes such connections instead of waiting for their idle deadline. */
bool ke_server_conn_idle(const struct ke_server_conn *c);

/* The TLS handshake has not completed yet (nothing a client proved it wants is lost when such a
 * connection is shed to admit a newer one). */
bool ke_server_conn_handshaking(const struct ke_server_conn *c);

/* For logs and status: the TLS failure reason, "" if none (borrowed). */
const char *ke_server_conn_reason(const struct ke_server_conn *c);

#endif
