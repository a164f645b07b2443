/* ntp-daemon's lifecycle: configuration in, listeners and the keyset task running on a loop,
 * reload on SIGHUP, graceful stop on SIGTERM. The per-connection and per-packet logic lives in
 * ke_server and ntp_server; this file only wires them to sockets, timers and files. */
#ifndef NTSPOOL_DAEMON_H
#define NTSPOOL_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "clock_helper.h"
#include "config_daemon.h"
#include "keyset_task.h"
#include "ntp_server.h"
#include "privdrop.h"
#include "slot.h"
#include "status.h"


struct ke_listener;
struct ke_shared;
struct ntp_listener;
struct sources;
struct status_server;
struct sync;
struct workers;
struct worker;
struct ke_listener_counters;
struct daemon;

/* One worker's share: its own listener of every [[nts-ke-server]] and [[server]] (on the
 * worker's loop), and the copy of their counters the main thread reads under the worker's
 * lock. */
struct daemon_worker {
	struct daemon *d;
	struct worker *w;
	struct ke_listener **ke;		  /* d->n_ke */
	struct ntp_listener **ntp;		  /* d->n_ntp */
	struct ke_listener_counters *ke_counters; /* published copies */
	struct ntp_server_stats *ntp_counters;
};

struct daemon {
	uv_loop_t *loop;
	char *config_path;
	struct config_daemon cfg;
	struct keyset_task keys; /* the published keyset and its rotation */
	struct ke_shared *ke;	 /* per [[nts-ke-server]]: credentials, tokens, address table */
	size_t n_ke;
	unsigned *ke_caps; /* per [[nts-ke-server]]: each worker's connection limit in force */
	size_t n_ntp;
	unsigned n_workers;
	struct daemon_worker *dw;
	struct workers *workers;
	int *ke_fds;  /* [k * n_workers + w]: bound sockets until worker w takes them, else -1 */
	int *ntp_fds;
	struct status_endpoints status; /* every endpoint of [observability] */
	struct ratelimit **ntp_rate;	/* per [[server]]: its rate limiter, shared by the workers */
	struct sources *sources; /* the [[source]] entries, NULL without any */
	struct sync *sync;	 /* selection and discipline over the sources */
	struct privdrop priv;	 /* the account and the drop, decided by daemon_prepare */
	struct clock_helper helper; /* holds CAP_SYS_TIME under clock control, else unused */
	uv_poll_t helper_poll;	    /* on helper_watch_fd: the helper's end closing, or speaking */
	int helper_watch_fd;	    /* a duplicate of the helper's socket, -1: none */
	bool helper_poll_open;
	uv_timer_t sync_timer;	 /* ends a phase correction at sync_next_event */
	bool sync_timer_open;
	struct ntp_server_clock clock; /* what sync decided; published to the workers */
	struct slot clock_slot;
	bool clock_ready;
	uint64_t started_ms; /* uv_now at start, for uptime */
	bool stopping;
};

/* Takes ownership of cfg (moved into d) and config_path (copied). Loads every file the
 * configuration names (certificates, pinned pool certificates, the sources' CAs) and checks the
 * key file read-only, opening no socket and writing nothing.
 * workers: how many threads serve the listeners (1..WORKERS_MAX).
 * Returns 0, or negative errno with a message in err: the caller exits PROGRAM_EXIT_CONFIG. */
int daemon_prepare(struct daemon *d, uv_loop_t *loop, const char *config_path,
		   struct config_daemon *cfg, unsigned workers, char *err, size_t errlen);

/* Binds every listener's sockets (one per worker) and the status endpoint, then loads or
 * creates the keyset (the first write to disk), starts the workers, the rotation timer and the
 * sources. Returns 0, or negative errno with a message in
 * err (e.g. address in use): the caller stops the daemon and exits PROGRAM_EXIT_FAILURE. */
int daemon_start(struct daemon *d, char *err, size_t errlen);

/* SIGHUP: reloads certificates, pinned pool certificates and the accepted-token file of every
 * NTS-KE listener from the files of the running configuration. A listener whose files fail to
 * load keeps its old credentials and tokens (and the reason is logged); listeners are never
 * dropped. */
void daemon_reload(struct daemon *d);

/* SIGTERM: every worker stops accepting and receiving, the keyset is stored, and every handle
 * closes; sessions in flight finish (each bounded by its deadline), after which uv_run returns
 * (the main loop waits for the last worker). Idempotent. */
void daemon_stop(struct daemon *d);

/* Joins the workers and frees what is left after the loop ended. */
void daemon_free(struct daemon *d);

#endif
