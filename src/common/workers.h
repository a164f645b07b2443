/* Worker threads, one libuv loop each, for the listeners of both daemons. The main loop keeps
 * the signals, the status endpoint and what runs once per process (the broker's upstream
 * registry and probes, the daemon's keyset rotation, sources and clock); each worker serves its
 * own share of the KE and NTP sockets (SO_REUSEPORT groups bound by the main thread before the
 * workers start).
 *
 * Commands reach a worker through its uv_async (reload, stop, publish); the worker runs the
 * owner's hook on its own loop. The main thread reads a worker's counters as a copy the worker's
 * publish hook made under the worker's lock: workers_publish asks every worker for a fresh copy
 * and waits for them, so a status read counts everything a worker did before the request
 * (worker_lock / worker_unlock around the read). */
#ifndef NTSPOOL_WORKERS_H
#define NTSPOOL_WORKERS_H

#include <stddef.h>

#include <uv.h>

/* The most workers a program runs. */
#define WORKERS_MAX 256

struct worker;
struct workers;

struct workers_ops {
	/* On the worker's thread, before its loop runs: open what the worker serves on
	 * worker_loop(w). 0 or negative errno with a message in err. After a failure the
	 * worker is stopped like the others (stop must cope with a partial start). */
	int (*start)(struct worker *w, char *err, size_t errlen);
	/* On the worker's thread, under the worker's lock: copy what the main thread reads. Runs
	 * after start, for each workers_publish, and before stop. NULL: nothing to publish. */
	void (*publish)(struct worker *w);
	/* On the worker's thread (SIGHUP); NULL: nothing to do. */
	void (*reload)(struct worker *w);
	/* On the worker's thread, once: close listeners and drain connections; the worker's loop
	 * ends when every handle closed. */
	void (*stop)(struct worker *w);
	/* On the main loop, once every worker's loop ended (after workers_stop). */
	void (*all_stopped)(void *ud);
};

/* Starts n (1..WORKERS_MAX) threads and waits until each ran its start hook. uds[i] is worker
 * i's owner object (worker_ud). ud goes to all_stopped. *out is new even on failure, when the
 * first worker's error is in err and the caller must still workers_stop, run the main loop, and
 * workers_free. */
int workers_start(struct workers **out, uv_loop_t *main_loop, unsigned n,
		  const struct workers_ops *ops, void *const *uds, void *ud, char *err,
		  size_t errlen);

unsigned workers_count(const struct workers *ws);
struct worker *workers_at(struct workers *ws, unsigned i);

/* Broadcasts: each worker runs the hook on its loop soon after. Only from the main thread;
 * reload after stop is ignored. */
void workers_reload(struct workers *ws);
void workers_stop(struct workers *ws);

/* Every worker that still runs makes a fresh copy of its counters (its publish hook); returns
 * once all did, or after timeout_ms. Main thread only. */
void workers_publish(struct workers *ws, unsigned timeout_ms);

/* After the main loop ended: joins every thread and frees ws (NULL is fine). */
void workers_free(struct workers *ws);

unsigned worker_index(const struct worker *w);
uv_loop_t *worker_loop(struct worker *w);
void *worker_ud(const struct worker *w);
/* The lock the publish hook runs under; the main thread takes it to read the copy. */
void worker_lock(struct worker *w);
void worker_unlock(struct worker *w);

/* The number of CPUs the process may run on (its affinity mask: taskset, cpusets), at least 1
 * and at most WORKERS_MAX: the default worker count. */
unsigned workers_default_count(void);

#endif
