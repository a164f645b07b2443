/* ntp-daemon's lifecycle: configuration in, listeners and the keyset task running on a loop,
 * reload on SIGHUP, graceful stop on SIGTERM. The per-connection and per-packet logic lives in
 * ke_server and ntp_server; this file only wires them to sockets, timers and files. */
#ifndef NTSPOOL_DAEMON_H
#define NTSPOOL_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config_daemon.h"
#include "keyset_task.h"
#include "ntp_server.h"


struct ke_listener;
struct ntp_listener;
struct sources;
struct status_server;
struct sync;

struct daemon {
	uv_loop_t *loop;
	char *config_path;
	struct config_daemon cfg;

	struct keyset_task keys; /* the published keyset and its rotation */

	struct ke_listener **ke;
	size_t n_ke;
	struct ntp_listener **ntp;
	size_t n_ntp;
	struct status_server *status;
	struct sources *sources; /* the [[source]] entries, NULL without any */
	struct sync *sync;	 /* selection and discipline over the sources */

	struct ntp_server_clock clock;
	uint64_t started_ms; /* uv_now at start, for uptime */
	bool stopping;
};

/* Takes ownership of cfg (moved into d) and config_path (copied). Loads every file the
 * configuration names (certificates, pinned pool certificates, the keyset), opening no socket.
 * Returns 0, or negative errno with a message in err: the caller exits PROGRAM_EXIT_CONFIG. */
int daemon_prepare(struct daemon *d, uv_loop_t *loop, const char *config_path,
		   struct config_daemon *cfg, char *err, size_t errlen);

/* Binds every listener and starts the timers. Returns 0, or negative errno with a message in
 * err (e.g. address in use): the caller stops the daemon and exits PROGRAM_EXIT_FAILURE. */
int daemon_start(struct daemon *d, char *err, size_t errlen);

/* SIGHUP: reloads certificates, pinned pool certificates and the accepted-token file of every
 * NTS-KE listener from the files of the running configuration. A listener whose files fail to
 * load keeps its old credentials and tokens (and the reason is logged); listeners are never
 * dropped. */
void daemon_reload(struct daemon *d);

/* SIGTERM: stops accepting and receiving, stores the keyset, and closes every handle; sessions in
 * flight finish (each bounded by its deadline), after which uv_run returns. Idempotent. */
void daemon_stop(struct daemon *d);

/* Frees what is left after the loop ended. */
void daemon_free(struct daemon *d);

#endif
