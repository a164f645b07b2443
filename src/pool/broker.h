/* nts-pool-ke's lifecycle: configuration in; on the main loop the control plane (the upstream
 * registry, its probes and deep checks, the snapshots it publishes, the status endpoint); on
 * each worker the data plane (client listeners whose connections each run a pool_session, and
 * the worker's own upstream connections); reload on SIGHUP and a graceful stop on SIGTERM, both
 * broadcast to the workers. Only wiring lives here: the protocol is in session, the choices in
 * upstream and upstream_snapshot, the upstream connections in upstream_io. */
#ifndef NTSPOOL_POOL_BROKER_H
#define NTSPOOL_POOL_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config_pool.h"
#include "session.h"


struct broker;

/* Takes ownership of cfg (moved). Loads certificates and builds the registry; opens no socket.
 * workers: how many threads serve clients (1..WORKERS_MAX). *out is new. Returns 0, or
 * negative errno with a message in err (exit PROGRAM_EXIT_CONFIG). */
int broker_prepare(struct broker **out, uv_loop_t *loop, const char *config_path,
		   struct config_pool *cfg, unsigned workers, char *err, size_t errlen);

/* Binds the listeners and the status endpoint and starts probing. Returns 0, or negative errno
 * with err (the caller stops the broker and exits PROGRAM_EXIT_FAILURE). */
int broker_start(struct broker *b, char *err, size_t errlen);

/* SIGHUP: re-reads the configuration file; on success swaps in the certificate, key and CA and
 * applies the upstream list (new ones are probed before use, removed ones drain). Listen addresses
 * and limits need a restart. A failed reload keeps everything as it was and logs why. */
void broker_reload(struct broker *b);

/* SIGTERM: stops accepting and probing; sessions in flight finish within their deadline. */
void broker_stop(struct broker *b);

/* After the loop has ended. */
void broker_free(struct broker *b);

#endif
