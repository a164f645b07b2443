#include "workers.h"

#include <errno.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

enum { CMD_RELOAD = 1u, CMD_STOP = 2u, CMD_PUBLISH = 4u };

struct worker {
	struct workers *ws;
	unsigned index;
	void *ud;
	uv_loop_t loop;
	uv_async_t wake;
	pthread_t thread;
	bool thread_started;
	atomic_uint cmds;
	/* send_lock makes a send and the close of wake exclusive: the main thread never sends to
	 * a handle the worker is closing. */
	pthread_mutex_t send_lock;
	bool wake_closed;
	pthread_mutex_t lock; /* the publish hook's copy */
	bool stopped;
};

struct workers {
	uv_loop_t *main;
	const struct workers_ops *ops;
	void *ud;
	unsigned n;
	bool stopping;
	/* Start-up barrier and the count of loops that ended; done_lock also guards the main
	 * loop's done handle against a send racing its close. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned reported;
	int first_rc;
	char first_err[512];
	uv_async_t done;
	unsigned finished;
	bool done_closed;
	unsigned acks; /* workers that ran their publish hook for the current workers_publish */
	struct worker w[];
};

static void publish(struct worker *w)
{
	if (!w->ws->ops->publish)
		return;
	pthread_mutex_lock(&w->lock);
	w->ws->ops->publish(w);
	pthread_mutex_unlock(&w->lock);
}

static void run_commands(uv_async_t *h)
{
	struct worker *w = h->data;
	struct workers *ws = w->ws;
	unsigned cmds = atomic_exchange_explicit(&w->cmds, 0, memory_order_acq_rel);
	if (w->stopped)
		return;
	if ((cmds & CMD_RELOAD) && !(cmds & CMD_STOP) && ws->ops->reload)
		ws->ops->reload(w);
	if (cmds & (CMD_PUBLISH | CMD_STOP))
		publish(w);
	if (cmds & CMD_PUBLISH) {
		pthread_mutex_lock(&ws->mu);
		ws->acks++;
		pthread_cond_broadcast(&ws->cv);
		pthread_mutex_unlock(&ws->mu);
	}
	if (cmds & CMD_STOP) {
		w->stopped = true;
		ws->ops->stop(w);
		pthread_mutex_lock(&w->send_lock);
		w->wake_closed = true;
		pthread_mutex_unlock(&w->send_lock);
		uv_close((uv_handle_t *)&w->wake, NULL);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct workers *ws = w->ws;
	char err[512] = "";
	int rc = uv_loop_init(&w->loop);
	if (rc < 0) {
		snprintf(err, sizeof err, "worker %u: %s", w->index, uv_strerror(rc));
		pthread_mutex_lock(&ws->mu);
		if (ws->first_rc == 0) {
			ws->first_rc = rc;
			snprintf(ws->first_err, sizeof ws->first_err, "%s", err);
		}
		ws->reported++;
		pthread_cond_broadcast(&ws->cv);
		/* Without a loop there is nothing to stop: this worker has ended already. */
		ws->finished++;
		pthread_mutex_unlock(&ws->mu);
		pthread_mutex_lock(&w->send_lock);
		w->wake_closed = true;
		pthread_mutex_unlock(&w->send_lock);
		return NULL;
	}
	uv_async_init(&w->loop, &w->wake, run_commands);
	w->wake.data = w;
	rc = ws->ops->start(w, err, sizeof err);
	publish(w);
	pthread_mutex_lock(&ws->mu);
	if (rc < 0 && ws->first_rc == 0) {
		ws->first_rc = rc;
		snprintf(ws->first_err, sizeof ws->first_err, "%s", err);
	}
	ws->reported++;
	pthread_cond_broadcast(&ws->cv);
	pthread_mutex_unlock(&ws->mu);

	uv_run(&w->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&w->loop) != 0)
		log_error("worker %u: handles left open at exit", w->index);

	pthread_mutex_lock(&ws->mu);
	ws->finished++;
	if (!ws->done_closed)
		uv_async_send(&ws->done);
	pthread_mutex_unlock(&ws->mu);
	return NULL;
}

static void on_done(uv_async_t *h)
{
	struct workers *ws = h->data;
	pthread_mutex_lock(&ws->mu);
	bool all = ws->finished == ws->n;
	if (all)
		ws->done_closed = true;
	pthread_mutex_unlock(&ws->mu);
	if (!all)
		return;
	uv_close((uv_handle_t *)&ws->done, NULL);
	if (ws->ops->all_stopped)
		ws->ops->all_stopped(ws->ud);
}

/* True when the command went to a worker that still takes commands. */
static bool send_cmd(struct worker *w, unsigned cmd)
{
	atomic_fetch_or_explicit(&w->cmds, cmd, memory_order_release);
	pthread_mutex_lock(&w->send_lock);
	bool open = !w->wake_closed;
	if (open)
		uv_async_send(&w->wake);
	pthread_mutex_unlock(&w->send_lock);
	return open;
}

int workers_start(struct workers **out, uv_loop_t *main_loop, unsigned n,
		  const struct workers_ops *ops, void *const *uds, void *ud, char *err,
		  size_t errlen)
{
	*out = NULL;
	if (n == 0 || n > WORKERS_MAX) {
		snprintf(err, errlen, "workers = %u: between 1 and %u", n, WORKERS_MAX);
		return -EINVAL;
	}
	struct workers *ws = calloc(1, sizeof *ws + n * sizeof ws->w[0]);
	if (!ws) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ws->main = main_loop;
	ws->ops = ops;
	ws->ud = ud;
	ws->n = n;
	pthread_mutex_init(&ws->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ws->cv, &ca);
	pthread_condattr_destroy(&ca);
	uv_async_init(main_loop, &ws->done, on_done);
	ws->done.data = ws;
	*out = ws;
	unsigned launched = 0;
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &ws->w[i];
		w->ws = ws;
		w->index = i;
		w->ud = uds[i];
		atomic_init(&w->cmds, 0);
		pthread_mutex_init(&w->send_lock, NULL);
		pthread_mutex_init(&w->lock, NULL);
	}
	int rc = 0;
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &ws->w[i];
		rc = -pthread_create(&w->thread, NULL, worker_main, w);
		if (rc < 0) {
			snprintf(err, errlen, "worker %u: cannot start a thread: %s", i,
				 strerror(-rc));
			break;
		}
		w->thread_started = true;
		launched++;
	}
	pthread_mutex_lock(&ws->mu);
	/* Workers never launched count as ended, so all_stopped still comes once. */
	ws->finished += n - launched;
	for (unsigned i = launched; i < n; i++)
		ws->w[i].stopped = ws->w[i].wake_closed = true;
	while (ws->reported < launched)
		pthread_cond_wait(&ws->cv, &ws->mu);
	if (rc == 0 && ws->first_rc < 0) {
		rc = ws->first_rc;
		snprintf(err, errlen, "%s", ws->first_err);
	}
	pthread_mutex_unlock(&ws->mu);
	return rc;
}

unsigned workers_count(const struct workers *ws)
{
	return ws ? ws->n : 0;
}

struct worker *workers_at(struct workers *ws, unsigned i)
{
	return &ws->w[i];
}

void workers_reload(struct workers *ws)
{
	if (!ws || ws->stopping)
		return;
	for (unsigned i = 0; i < ws->n; i++)
		send_cmd(&ws->w[i], CMD_RELOAD);
}

void workers_publish(struct workers *ws, unsigned timeout_ms)
{
	/* Stopping workers published their last counts already. */
	if (!ws || !ws->ops->publish || ws->stopping)
		return;
	pthread_mutex_lock(&ws->mu);
	ws->acks = 0;
	pthread_mutex_unlock(&ws->mu);
	unsigned asked = 0;
	for (unsigned i = 0; i < ws->n; i++)
		asked += send_cmd(&ws->w[i], CMD_PUBLISH);
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&ws->mu);
	/* A worker that stops meanwhile published at its stop and never acknowledges: the wait is
	 * bounded either way. */
	while (ws->acks < asked)
		if (pthread_cond_timedwait(&ws->cv, &ws->mu, &until) != 0)
			break;
	pthread_mutex_unlock(&ws->mu);
}

void workers_stop(struct workers *ws)
{
	if (!ws || ws->stopping)
		return;
	ws->stopping = true;
	for (unsigned i = 0; i < ws->n; i++)
		send_cmd(&ws->w[i], CMD_STOP);
	/* Workers that never ran a loop may be all there is: the done handle still fires once. */
	pthread_mutex_lock(&ws->mu);
	if (!ws->done_closed)
		uv_async_send(&ws->done);
	pthread_mutex_unlock(&ws->mu);
}

void workers_free(struct workers *ws)
{
	if (!ws)
		return;
	for (unsigned i = 0; i < ws->n; i++) {
		struct worker *w = &ws->w[i];
		if (w->thread_started)
			pthread_join(w->thread, NULL);
		pthread_mutex_destroy(&w->send_lock);
		pthread_mutex_destroy(&w->lock);
	}
	pthread_cond_destroy(&ws->cv);
	pthread_mutex_destroy(&ws->mu);
	free(ws);
}

unsigned worker_index(const struct worker *w)
{
	return w->index;
}

uv_loop_t *worker_loop(struct worker *w)
{
	return &w->loop;
}

void *worker_ud(const struct worker *w)
{
	return w->ud;
}

void worker_lock(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
}

void worker_unlock(struct worker *w)
{
	pthread_mutex_unlock(&w->lock);
}

unsigned workers_default_count(void)
{
	/* The CPUs this process may run on (taskset, cpusets, a container's share), not every CPU
	 * online: more workers than those only take turns on the same cores. */
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
							       : sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > WORKERS_MAX ? WORKERS_MAX : (unsigned)n;
}
