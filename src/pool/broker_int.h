/* Internals shared by broker.c (the control plane on the main loop: configuration,
 * credentials, the upstream registry, its probes and published snapshots, the status endpoint)
 * and broker_worker.c (the data plane on each worker: client listeners and sessions, the
 * upstream exchanges, session outcomes sent back). Included by those two files only. */
#ifndef NTSPOOL_POOL_BROKER_INT_H
#define NTSPOOL_POOL_BROKER_INT_H

#include "broker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "geo.h"
#include "histogram.h"
#include "ke_conn.h"
#include "ke_msg.h"
#include "log.h"
#include "net.h"
#include "privdrop.h"
#include "slot.h"
#include "status.h"
#include "upstream.h"
#include "upstream_io.h"
#include "upstream_snapshot.h"

struct conn_limit;
struct status_server;
struct workers;
struct worker;

/* A session outcome a worker reports for the registry: served (latency, the Server name the
 * upstream announced, "" for none) or failed (the reason). */
enum broker_event_kind { BROKER_SERVED, BROKER_FAILED };

struct broker_event {
	enum broker_event_kind kind;
	uint32_t id;
	uint64_t latency_ms;
	char text[KE_MSG_NAME_MAX + 1];
};

/* Events waiting for the main loop. Bounded: beyond the cap the counts of a burst are lost
 * (counted in dropped) rather than memory growing without bound. */
#define BROKER_EVENTS_MAX 65536

struct broker_events {
	pthread_mutex_t lock;
	struct broker_event *v;
	size_t n, cap;
	uint64_t dropped;
	uv_async_t async; /* on the main loop */
	bool closed;	  /* async closed: workers only queue (drained at the end) */
};

/* The most upstreams a snapshot lists (configured plus draining). */
#define BROKER_KEPT_MAX (2 * UPSTREAM_MAX)

struct broker_kept {
	uint32_t id;
	unsigned n;
};

/* The last sessions each worker ended, for /status: who the client was (its real address, and
 * the load balancer's when a PROXY header gave it), how it ended and where it went. */
#define BROKER_RECENT_MAX 16

struct broker_recent {
	uint64_t ended_ms; /* wall clock, for ordering across workers */
	double duration_s;
	char client[NET_ADDR_STRLEN];
	char via[NET_ADDR_STRLEN]; /* "" without a PROXY header */
	char outcome[64];
	char upstream[KE_MSG_NAME_MAX + 1]; /* "" when none was settled on */
	char region[GEO_NAME_MAX + 1];	    /* the client's most specific level, "" for none */
	int quarter;			    /* SNI sub-pool, -1 for none */
};

/* Counters of the data plane beyond the sessions' own. */
struct broker_worker_stats {
	uint64_t proxy_refused;	   /* PROXY header missing, malformed or from a stranger */
	struct histogram session_seconds;  /* accept to close */
	struct histogram upstream_seconds; /* one upstream exchange */
};

/* One worker's share: a listener per listen address and the sessions on them, its own
 * upstream connections, and the copy of its counters the main thread reads. */
struct broker_worker {
	struct broker *b;
	struct worker *w;
	uv_loop_t *loop;
	struct net_listener **listeners; /* b->n_listen */
	struct upstream_io *io;
	struct slot_view snapshot_view, server_creds_view, client_creds_view;
	struct upstream_picker *picker;
	const struct upstream_snapshot *last_snapshot; /* the one picks last used */
	struct pool_session_stats stats;
	struct broker_worker_stats wstats;
	struct slot_view geo_view;
	struct broker_recent recent[BROKER_RECENT_MAX]; /* a ring */
	size_t n_recent, recent_next;
	struct log_ratelimit session_log;
	size_t clients; /* sessions alive: the worker's upstream_io outlives them */
	struct ke_conn_group conns; /* its client connections, for shedding */
	bool stopping;
	/* Published under the worker's lock. */
	struct pool_session_stats pub_stats;
	struct broker_worker_stats pub_wstats;
	struct broker_recent pub_recent[BROKER_RECENT_MAX]; /* oldest first */
	size_t n_pub_recent;
	struct net_listener_stats *pub_listeners; /* b->n_listen */
	struct net_listener_stats *last_listeners; /* kept once a socket closed */
	struct broker_kept pub_kept[BROKER_KEPT_MAX];
	size_t n_pub_kept;
};

struct broker {
	uv_loop_t *loop;
	unsigned n_workers;
	unsigned max_conns;		/* per worker's listener in force */
	struct conn_limit *per_address; /* max-connections-per-address, over every worker */
	struct ratelimit *rate_limit;	/* per-client key exchanges, NULL: off */
	struct slot geo;		/* geo: the client's region levels (may hold NULL) */
	atomic_uint min_region_servers; /* reloaded with the regions; workers read it per pick */
	bool geo_ready;
	char *config_path;
	struct config_pool cfg;
	struct slot server_creds; /* tls_creds presented to clients */
	struct slot client_creds; /* tls_creds presented to upstreams: the pool's certificate */
	bool creds_ready;
	struct upstream_registry *registry; /* main thread only */
	struct upstream_io *io;		    /* the control plane's: probes and deep checks */
	struct upstream_io_config io_cfg;
	struct pool_session_config session_cfg;
	struct slot snapshots; /* upstream_snapshot: what the workers pick from */
	bool snapshots_ready;
	uint64_t published_version;
	uv_prepare_t publish; /* republishes before the main loop waits, when the registry moved */
	bool publish_ready;
	struct broker_events events;
	bool events_ready;
	size_t n_listen;
	int *listen_fds; /* [l * n_workers + w] until worker w takes them, else -1 */
	struct broker_worker *bw;
	struct workers *workers;
	struct status_endpoints status; /* every endpoint of [observability] */
	struct privdrop priv; /* the account and the drop, decided by broker_prepare */
	uint64_t started_ms;
	bool stopping;
};

/* broker_worker.c: the workers' hooks (start, publish, reload, stop). */
extern const struct workers_ops broker_worker_ops;

/* broker_worker.c: after the workers' loops ended. */
void broker_worker_free(struct broker_worker *bw);

/* broker.c: on the main loop once every worker's loop ended (ud: the broker). */
void broker_workers_stopped(void *ud);

/* broker.c: applies the outcomes the workers queued to the registry (main loop). */
void broker_drain_events(struct broker *b);

/* broker_restart.c: warns of every key that differs between the running configuration and
 * the one a reload read, among those only a restart applies. */
void broker_warn_restart_keys(const struct config_pool *run, const struct config_pool *next);

/* broker_status.c: /status and /metrics. */
struct status_provider;
extern const struct status_provider broker_status_provider;

/* broker.c: queues an outcome for the main loop (any thread). */
void broker_event_push(struct broker *b, const struct broker_event *ev);

#endif
