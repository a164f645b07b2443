/* One [[nts-ke-server]]: a TCP listener whose connections each run a ke_server state machine. */
#ifndef NTSPOOL_KE_LISTENER_H
#define NTSPOOL_KE_LISTENER_H

#include <jansson.h>
#include <uv.h>

#include "config_daemon.h"
#include "ke_server.h"
#include "status.h"

struct ke_listener;

/* Loads the listener's credentials (chain, key, pinned pool certificates) from the files cfg
 * names and takes the accepted pool tokens the configuration loaded; cfg, config_file (the configuration's path, for messages) and
 * keyset_slot are borrowed for the listener's life. Opens no socket. *out is new.
 * Returns 0 or negative errno with a message naming the file in err. */
int ke_listener_new(struct ke_listener **out, uv_loop_t *loop,
		    const struct config_daemon_nts_ke_server *cfg, const char *config_file,
		    struct keyset *const *keyset_slot, char *err, size_t errlen);

/* Binds and starts accepting at most max_conns connections at once (concurrent-connections, or
 * less when the descriptor limit is lower). Returns 0 or negative errno with err. */
int ke_listener_start(struct ke_listener *l, unsigned max_conns, char *err, size_t errlen);

/* Re-reads the credential files and the token file; on failure keeps the old credentials and
 * tokens and returns negative errno with err. Sessions in progress keep the credentials they
 * started with; the next request of a kept-alive pool connection is checked against the new
 * tokens. */
int ke_listener_reload(struct ke_listener *l, char *err, size_t errlen);

/* Stops accepting; open sessions finish on their own. */
void ke_listener_stop(struct ke_listener *l);

/* Frees the listener once the loop has ended (no session is left then). */
void ke_listener_free(struct ke_listener *l);

/* The status object of doc/status.md (new reference) and the Prometheus lines. */
json_t *ke_listener_status(const struct ke_listener *l);
void ke_listener_metrics(const struct ke_listener *const *ls, size_t n, struct status_text *out);

#endif
