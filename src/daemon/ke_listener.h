/* One [[nts-ke-server]]: what the daemon keeps once for it on the main loop (ke_shared: the
 * credentials and accepted tokens as published slots, the per-address table), and the TCP
 * listener each worker runs on its own loop, whose connections each run a ke_server state
 * machine on the connection driver. */
#ifndef NTSPOOL_KE_LISTENER_H
#define NTSPOOL_KE_LISTENER_H

#include <jansson.h>
#include <uv.h>

#include "config_daemon.h"
#include "ke_server.h"
#include "net.h"
#include "slot.h"
#include "status.h"

struct conn_limit;

/* Owned by the daemon, read by every worker's listener of this [[nts-ke-server]]. */
struct ke_shared {
	const struct config_daemon_nts_ke_server *cfg; /* borrowed */
	const char *config_file;		       /* borrowed, for messages */
	struct slot creds;			       /* tls_creds: chain, key, pinned pools */
	struct slot tokens;			       /* pool_tokens: the accepted set */
	struct slot *keyset;			       /* borrowed: the keyset task's */
	struct conn_limit *per_address;		       /* max-connections-per-address */
	struct ratelimit *rate_limit;		       /* per-client key exchanges, NULL: off */
	bool ready;
};

/* Loads the credentials (chain, key, pinned pool certificates) from the files cfg names and
 * takes the accepted pool tokens the configuration loaded. cfg, config_file (the configuration's
 * path, for messages) and keyset are borrowed for sh's life. Returns 0 or negative errno with a
 * message naming the file in err. */
int ke_shared_init(struct ke_shared *sh, const struct config_daemon_nts_ke_server *cfg,
		   const char *config_file, struct slot *keyset, char *err, size_t errlen);

/* Re-reads the credential files and the token file and publishes both; on failure keeps the old
 * ones and returns negative errno with err. Sessions in progress keep the credentials they
 * started with; the next request of a kept-alive pool connection, on any worker, is checked
 * against the new pins and tokens. Main thread only. */
int ke_shared_reload(struct ke_shared *sh, char *err, size_t errlen);

/* After every listener using sh was freed. */
void ke_shared_deinit(struct ke_shared *sh);

/* What one worker's listener counted (its net listener and its sessions). */
struct ke_listener_counters {
	struct net_listener_stats net;
	struct ke_server_stats ke;
};

struct ke_listener;

/* One worker's listener of sh (borrowed for the listener's life) on loop. Opens no socket.
 * *out is new. 0 or -ENOMEM. */
int ke_listener_new(struct ke_listener **out, uv_loop_t *loop, struct ke_shared *sh);

/* Starts accepting on fd (a bound, listening socket, taken over even on failure), at most
 * max_conns connections at once. Returns 0 or negative errno with err. */
int ke_listener_start(struct ke_listener *l, int fd, unsigned max_conns, char *err,
		      size_t errlen);

/* Takes up what is published in the shared slots now (done before every accept and every
 * event a session sees; a reload calls it so an idle worker lets go of the old objects). */
void ke_listener_refresh(struct ke_listener *l);

/* Stops accepting; open sessions finish on their own (kept-alive idle ones are closed). */
void ke_listener_stop(struct ke_listener *l);

/* Frees the listener once its loop has ended (no session is left then). */
void ke_listener_free(struct ke_listener *l);

/* Copies the listener's counters (on its own thread). */
void ke_listener_counters(const struct ke_listener *l, struct ke_listener_counters *out);

/* The status object of doc/status.md (new reference) for sh from each worker's counters
 * (per_worker[0..n)): sums, the limit in force over all workers (max_conns each), and a
 * per-worker breakdown. */
json_t *ke_listener_status(struct ke_shared *sh, const struct ke_listener_counters *per_worker,
			   size_t n, unsigned max_conns);

/* The Prometheus lines of every [[nts-ke-server]]: shs[0..n_ke), counters[k * n_workers + w]
 * for listener k on worker w; sums per listener, and accepted connections per worker. */
void ke_listener_metrics(const struct ke_shared *shs, size_t n_ke,
			 const struct ke_listener_counters *counters, size_t n_workers,
			 struct status_text *out);

#endif
