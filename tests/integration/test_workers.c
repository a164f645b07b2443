/* The worker threads of src/common/workers: each runs its hooks on its own thread and loop,
 * broadcasts reach every worker, workers_publish returns only after every worker published, a
 * failed start is reported once with its message and still stops cleanly, and all_stopped comes
 * once, on the main loop, after the last worker's loop ended. */
#include "workers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define N 3

struct owner {
	pthread_t thread; /* the thread start ran on */
	uv_loop_t *loop;
	uv_timer_t tick; /* work on the worker's own loop */
	bool tick_ready;
	int ticks;	  /* the worker's own counter */
	int published;	  /* its copy, under the worker's lock */
	int reloads;
	int stops;
	bool fail;
};

static struct {
	uv_loop_t *main;
	pthread_t main_thread;
	atomic_int all_stopped;
	bool all_stopped_on_main;
	struct owner o[N];
} T;

static void on_tick(uv_timer_t *t)
{
	struct owner *o = t->data;
	o->ticks++;
}

static int w_start(struct worker *w, char *err, size_t errlen)
{
	struct owner *o = worker_ud(w);
	o->thread = pthread_self();
	o->loop = worker_loop(w);
	if (o->fail) {
		snprintf(err, errlen, "worker %u: refused on purpose", worker_index(w));
		return -EADDRINUSE;
	}
	uv_timer_init(o->loop, &o->tick);
	o->tick.data = o;
	o->tick_ready = true;
	uv_timer_start(&o->tick, on_tick, 1, 1);
	return 0;
}

static void w_publish(struct worker *w)
{
	struct owner *o = worker_ud(w);
	cr_assert(pthread_equal(pthread_self(), o->thread), "publish on the worker's thread");
	o->published = o->ticks;
}

static void w_reload(struct worker *w)
{
	struct owner *o = worker_ud(w);
	cr_assert(pthread_equal(pthread_self(), o->thread), "reload on the worker's thread");
	o->reloads++;
}

static void w_stop(struct worker *w)
{
	struct owner *o = worker_ud(w);
	cr_assert(pthread_equal(pthread_self(), o->thread), "stop on the worker's thread");
	o->stops++;
	if (o->tick_ready)
		uv_close((uv_handle_t *)&o->tick, NULL);
}

static void w_all_stopped(void *ud)
{
	cr_assert_eq(ud, &T);
	atomic_fetch_add(&T.all_stopped, 1);
	T.all_stopped_on_main = pthread_equal(pthread_self(), T.main_thread);
}

static const struct workers_ops ops = {
	.start = w_start,
	.publish = w_publish,
	.reload = w_reload,
	.stop = w_stop,
	.all_stopped = w_all_stopped,
};

static void setup(void)
{
	memset(&T, 0, sizeof T);
	T.main = uv_loop_new();
	T.main_thread = pthread_self();
}

static int start(struct workers **ws, char *err, size_t errlen)
{
	void *uds[N];
	for (int i = 0; i < N; i++)
		uds[i] = &T.o[i];
	return workers_start(ws, T.main, N, &ops, uds, &T, err, errlen);
}

static void stop_and_free(struct workers *ws)
{
	workers_stop(ws);
	uv_run(T.main, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(T.main), 0, "the main loop has nothing left open");
	free(T.main);
	workers_free(ws);
	cr_assert_eq(atomic_load(&T.all_stopped), 1, "all_stopped once");
	cr_assert(T.all_stopped_on_main, "all_stopped on the main thread");
}

Test(workers, hooks_run_on_their_own_threads_and_loops)
{
	setup();
	char err[256] = "";
	struct workers *ws;
	cr_assert_eq(start(&ws, err, sizeof err), 0, "%s", err);
	cr_assert_eq(workers_count(ws), N);
	for (int i = 0; i < N; i++) {
		cr_assert_not(pthread_equal(T.o[i].thread, T.main_thread));
		cr_assert_eq(T.o[i].loop, worker_loop(workers_at(ws, (unsigned)i)));
		for (int j = 0; j < i; j++)
			cr_assert_not(pthread_equal(T.o[i].thread, T.o[j].thread));
	}

	/* A fresh copy from each worker once workers_publish returns: the ticks keep counting on
	 * the workers' loops, and a later publish never shows less. */
	int last[N] = { 0 };
	for (int round = 0; round < 20; round++) {
		workers_publish(ws, 5000);
		for (int i = 0; i < N; i++) {
			struct worker *w = workers_at(ws, (unsigned)i);
			worker_lock(w);
			int v = T.o[i].published;
			worker_unlock(w);
			cr_assert_geq(v, last[i]);
			last[i] = v;
		}
		uv_sleep(5);
	}
	for (int i = 0; i < N; i++)
		cr_assert_gt(last[i], 0, "worker %d's loop ran its timer", i);

	workers_reload(ws);
	workers_publish(ws, 5000); /* commands are handled in order: the reload ran before */
	for (int i = 0; i < N; i++) {
		struct worker *w = workers_at(ws, (unsigned)i);
		worker_lock(w);
		int reloads = T.o[i].reloads;
		worker_unlock(w);
		cr_assert_eq(reloads, 1, "worker %d reloaded once", i);
	}
	stop_and_free(ws);
	for (int i = 0; i < N; i++)
		cr_assert_eq(T.o[i].stops, 1, "worker %d stopped once", i);
}

Test(workers, a_failed_start_is_reported_and_still_stops)
{
	setup();
	T.o[1].fail = true;
	char err[256] = "";
	struct workers *ws;
	cr_assert_eq(start(&ws, err, sizeof err), -EADDRINUSE);
	cr_assert_str_eq(err, "worker 1: refused on purpose");
	cr_assert_not_null(ws, "the caller still stops and frees");
	workers_reload(ws); /* harmless before the stop */
	stop_and_free(ws);
	for (int i = 0; i < N; i++)
		cr_assert_eq(T.o[i].stops, 1, "worker %d stopped once (partial start or not)", i);
	workers_reload(NULL);
	workers_free(NULL);
}

Test(workers, stop_twice_and_publish_after_stop_are_harmless)
{
	setup();
	char err[256] = "";
	struct workers *ws;
	cr_assert_eq(start(&ws, err, sizeof err), 0, "%s", err);
	workers_stop(ws);
	workers_stop(ws);
	workers_publish(ws, 5000);
	workers_reload(ws);
	stop_and_free(ws);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(T.o[i].stops, 1);
		cr_assert_eq(T.o[i].reloads, 0, "no reload after the stop");
	}
}

Test(workers, counts_out_of_range_are_refused)
{
	setup();
	char err[256] = "";
	struct workers *ws;
	void *uds[1] = { &T.o[0] };
	cr_assert_eq(workers_start(&ws, T.main, 0, &ops, uds, &T, err, sizeof err), -EINVAL);
	cr_assert_null(ws);
	cr_assert(strstr(err, "between 1 and"), "%s", err);
	cr_assert_eq(workers_start(&ws, T.main, WORKERS_MAX + 1, &ops, uds, &T, err, sizeof err),
		     -EINVAL);
	cr_assert_eq(uv_loop_close(T.main), 0);
	free(T.main);
	cr_assert_geq(workers_default_count(), 1);
	cr_assert_leq(workers_default_count(), WORKERS_MAX);
}
