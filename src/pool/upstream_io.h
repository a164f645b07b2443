/* The broker's connections to its upstreams: per upstream a bounded set of kept-alive NTS-KE
 * connections (ke_client over net streams, authenticated with the pool certificate), one-shot
 * exchanges on them, and the background probes and deep checks that keep the registry current.
 * The only pool code besides main that touches the loop. */
#ifndef NTSPOOL_POOL_UPSTREAM_IO_H
#define NTSPOOL_POOL_UPSTREAM_IO_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "ke_msg.h"
#include "tls_creds.h"
#include "upstream.h"

/* Each upstream's record numbering and token come from the registry. */
struct upstream_io_config {
	uint64_t upstream_timeout_ms; /* connect + handshake + one exchange */
	uint64_t idle_ms;	      /* kept connections close after this idle time */
	uint64_t max_age_ms;	      /* ... and are not reused once this old (0: no limit) */
	unsigned max_conns;	      /* per upstream: idle + busy */
};

struct upstream_io;

/* The control plane's: probes and deep checks for the registry, and exchanges of its own.
 * creds: the pool's client credentials (its certificate + key, system trust + the extra CA; a
 * reference is taken). registry and cfg: borrowed for the object's life. Starts the probe timer.
 * *out is released with upstream_io_close. */
int upstream_io_new(struct upstream_io **out, uv_loop_t *loop, struct tls_creds *creds,
		    struct upstream_registry *registry, const struct upstream_io_config *cfg);

/* A worker's data plane: exchanges only (no probes, no deep checks, nothing forgotten), for the
 * upstreams of the snapshots published in the slot (borrowed for the object's life; each
 * lookup reads the snapshot published now). */
struct slot;
int upstream_io_new_data(struct upstream_io **out, uv_loop_t *loop, struct tls_creds *creds,
			 struct slot *snapshots, const struct upstream_io_config *cfg);

/* Swaps the client credentials for new connections (SIGHUP); kept connections live on. */
void upstream_io_set_creds(struct upstream_io *io, struct tls_creds *creds);

/* After the registry (or the published snapshot) changed: closes idle connections whose upstream
 * now has another record numbering or is being removed, forgets drained upstreams (control
 * plane) and reschedules the timer. */
void upstream_io_kick(struct upstream_io *io);

/* Result of one exchange (borrowed for the call): keys_sent as in pool_session_upstream_failed;
 * on success (err == 0) parse_rc and resp as from ke_client_response; reason says why it failed
 * (never NULL, "" on success); latency_ms of the whole exchange. */
struct upstream_io_result {
	int err;
	bool keys_sent;
	int parse_rc;
	const struct ke_msg_response *resp;
	const char *reason;
	uint64_t latency_ms;
};

/* Exactly one call per exchange that upstream_io_exchange accepted, always from the loop. */
typedef void (*upstream_io_done_cb)(void *ud, const struct upstream_io_result *r);

struct upstream_io_exchange;

/* Runs one request (bytes copied and wiped after sending) of the given kind with upstream id on
 * an idle kept connection, or a new one (DNS resolution for names, TCP, TLS 1.3 with the pool
 * certificate, server name verified). The caller's request carries Keep Alive (the builders take
 * it as an argument); a connection is kept when both sides agreed on it. At most max_conns
 * connections per upstream: further exchanges wait (bounded, up to upstream_timeout_ms) for one
 * to become idle. Returns 0, and cb reports the outcome exactly once, later, from the loop (a
 * connection that cannot even start is reported that way too); or a negative errno with no
 * callback to follow and *handle NULL: unknown id -ENOENT, closing -ESHUTDOWN, a request of 0 or
 * more than KE_MSG_REQUEST_MAX bytes -EMSGSIZE, the wait queue full -EAGAIN, -ENOMEM. *handle
 * (may be NULL) lets the caller cancel until the callback: upstream_io_cancel stops the callback
 * (the connection is dropped if busy). No callback of any exchange runs inside this call or
 * inside upstream_io_cancel. */
int upstream_io_exchange(struct upstream_io *io, uint32_t id, const uint8_t *req, size_t len,
			 enum ke_msg_request_kind kind, upstream_io_done_cb cb, void *ud,
			 struct upstream_io_exchange **handle);
void upstream_io_cancel(struct upstream_io_exchange *x);

/* Kept-alive connections of one upstream (idle + busy), for /status. */
unsigned upstream_io_kept(const struct upstream_io *io, uint32_t id);

/* Stops probing and closes every connection; exchanges still open are reported at once with
 * -ECANCELED (keys_sent as it stands), failures not yet delivered with their own error: the one
 * call that reports before it returns, since nothing runs after it. Freed from the last close
 * callback: run the loop after. */
void upstream_io_close(struct upstream_io *io);

#endif
