#include "broker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "conn_limit.h"
#include "ke_conn.h"
#include "log.h"
#include "net.h"
#include "program.h"
#include "status.h"
#include "tls_creds.h"
#include "upstream.h"
#include "upstream_io.h"
#include "workers.h"

/* Retry bounds after a failed probe (PROTOCOL.md §4.3: exponential, capped at 10 minutes). */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS (10 * 60 * 1000)

/* How long a status read waits for the workers' fresh counters. */
#define PUBLISH_WAIT_MS 250

static int load_creds(const struct config_pool *cfg, struct tls_creds **server,
		      struct tls_creds **client, char *err, size_t errlen)
{
	struct tls_server_options so = {
		.cert_file = cfg->certificate_chain_path,
		.key_file = cfg->private_key_path,
		.allow_world_readable_key = cfg->allow_world_readable_private_key,
	};
	int rc = tls_creds_new_server(server, &so, err, errlen);
	if (rc < 0)
		return rc;
	struct tls_client_options co = {
		.ca_file = cfg->certificate_authority_path,
		.cert_file = cfg->certificate_chain_path,
		.key_file = cfg->private_key_path,
		.allow_world_readable_key = cfg->allow_world_readable_private_key,
	};
	rc = tls_creds_new_client(client, &co, err, errlen);
	if (rc < 0) {
		tls_creds_unref(*server);
		*server = NULL;
	}
	return rc;
}

/* The registry copies what it keeps, so the specs only borrow from cfg. */
static struct upstream_spec *specs_of(const struct config_pool *cfg)
{
	struct upstream_spec *s = calloc(cfg->key_exchange_server_count, sizeof *s);
	if (!s)
		return NULL;
	for (size_t i = 0; i < cfg->key_exchange_server_count; i++)
		s[i] = (struct upstream_spec){ .domain = cfg->key_exchange_servers[i].addr.host,
					       .port = cfg->key_exchange_servers[i].addr.port,
					       .weight = cfg->key_exchange_servers[i].weight,
					       .numbering = cfg->key_exchange_servers[i].numbering,
					       .token = cfg->key_exchange_servers[i].token };
	return s;
}

static void apply_limits(struct broker *b)
{
	const struct config_pool *c = &b->cfg;
	b->session_cfg = (struct pool_session_config){
		.numbering = c->pool_record_numbers,
		.timeout_ms = c->key_exchange_timeout_ms,
		.handshake_timeout_ms = c->handshake_timeout_ms,
		.max_attempts = c->max_upstream_attempts,
	};
	b->io_cfg = (struct upstream_io_config){
		.upstream_timeout_ms = c->upstream_timeout_ms,
		.idle_ms = (uint64_t)c->upstream_idle_s * 1000,
		.max_age_ms = (uint64_t)c->upstream_max_age_s * 1000,
		.max_conns = c->upstream_connections,
	};
}

static struct upstream_timing timing_of(const struct config_pool *c)
{
	return (struct upstream_timing){
		.probe_interval_ms = (uint64_t)c->probe_interval_s * 1000,
		.support_cache_ms = (uint64_t)c->support_cache_s * 1000,
		.backoff_min_ms = BACKOFF_MIN_MS,
		.backoff_max_ms = BACKOFF_MAX_MS,
		.deep_check_ms = (uint64_t)c->deep_check_interval_s * 1000,
		.fixed_key_streak = c->fixed_key_failure_streak,
	};
}

/* ---- session outcomes from the workers ---- */

void broker_event_push(struct broker *b, const struct broker_event *ev)
{
	struct broker_events *q = &b->events;
	pthread_mutex_lock(&q->lock);
	if (q->n == q->cap && q->cap < BROKER_EVENTS_MAX) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		struct broker_event *v = realloc(q->v, cap * sizeof *v);
		if (v) {
			q->v = v;
			q->cap = cap;
		}
	}
	if (q->n < q->cap) {
		q->v[q->n++] = *ev;
		if (!q->closed)
			uv_async_send(&q->async);
	} else {
		q->dropped++;
	}
	pthread_mutex_unlock(&q->lock);
}

/* Applies what the workers reported to the registry (main loop). The queue is swapped out under
 * the lock and applied outside it, so workers never wait for the registry. */
static void drain_events(struct broker *b)
{
	struct broker_events *q = &b->events;
	pthread_mutex_lock(&q->lock);
	struct broker_event *v = q->v;
	size_t n = q->n;
	q->v = NULL;
	q->n = q->cap = 0;
	pthread_mutex_unlock(&q->lock);
	uint64_t now = uv_now(b->loop);
	bool failed = false;
	for (size_t i = 0; i < n; i++) {
		const struct broker_event *ev = &v[i];
		if (ev->kind == BROKER_SERVED) {
			upstream_session_ok(b->registry, ev->id, ev->latency_ms);
			upstream_server_announced(b->registry, ev->id,
						  ev->text[0] ? ev->text : NULL);
		} else {
			upstream_session_failed(b->registry, ev->id, ev->text, now);
			failed = true;
		}
	}
	free(v);
	/* A failure makes the upstream due for a probe now. */
	if (failed && b->io)
		upstream_io_kick(b->io);
}

static void on_events(uv_async_t *h)
{
	drain_events(h->data);
}

/* Before the main loop waits: a registry that moved (probe results, outcomes, a reload) is
 * published to the workers as a new snapshot. */
static void publish_snapshot(struct broker *b)
{
	uint64_t v = upstream_registry_version(b->registry);
	if (b->snapshots_ready && v == b->published_version)
		return;
	struct upstream_snapshot *snap = upstream_registry_snapshot(b->registry);
	if (!snap)
		return; /* out of memory: the workers keep the last one; retried next time */
	if (!b->snapshots_ready) {
		upstream_snapshot_slot_init(&b->snapshots, snap);
		b->snapshots_ready = true;
	} else {
		slot_publish(&b->snapshots, snap);
	}
	b->published_version = v;
}

static void on_publish(uv_prepare_t *h)
{
	publish_snapshot(h->data);
}

static void broker_close_main_handles(struct broker *b)
{
	if (b->publish_ready) {
		uv_close((uv_handle_t *)&b->publish, NULL);
		b->publish_ready = false;
	}
	if (b->events_ready) {
		pthread_mutex_lock(&b->events.lock);
		b->events.closed = true;
		pthread_mutex_unlock(&b->events.lock);
		uv_close((uv_handle_t *)&b->events.async, NULL);
	}
}

void broker_workers_stopped(void *ud)
{
	struct broker *b = ud;
	log_debug("every worker stopped");
	if (b->events_ready)
		drain_events(b);
	broker_close_main_handles(b);
	if (b->io) {
		upstream_io_close(b->io);
		b->io = NULL;
	}
}

/* ---- status ---- */

/* What every worker counted, summed (per listener and per upstream too), with the per-worker
 * session counts; read after the workers published afresh and the outcomes reached the
 * registry. */
struct totals {
	struct pool_session_stats sessions;
	struct pool_session_stats *per_worker;	 /* n_workers */
	struct net_listener_stats *listeners;	 /* [l * n_workers + w] */
	struct broker_kept kept[BROKER_KEPT_MAX]; /* per upstream id, summed over workers */
	size_t n_kept;
};

static void add_stats(struct pool_session_stats *sum, const struct pool_session_stats *s)
{
	sum->accepted += s->accepted;
	sum->completed += s->completed;
	sum->no_overlap += s->no_overlap;
	sum->failed_tls += s->failed_tls;
	sum->failed_bad_request += s->failed_bad_request;
	sum->failed_no_upstream += s->failed_no_upstream;
	sum->failed_upstream += s->failed_upstream;
	sum->failed_timeout += s->failed_timeout;
	sum->failovers += s->failovers;
}

static void add_kept(struct totals *t, const struct broker_kept *k)
{
	for (size_t i = 0; i < t->n_kept; i++) {
		if (t->kept[i].id == k->id) {
			t->kept[i].n += k->n;
			return;
		}
	}
	if (t->n_kept < BROKER_KEPT_MAX)
		t->kept[t->n_kept++] = *k;
}

static unsigned kept_of(const struct totals *t, uint32_t id)
{
	for (size_t i = 0; i < t->n_kept; i++)
		if (t->kept[i].id == id)
			return t->kept[i].n;
	return 0;
}

/* NULL without memory; free with free_totals. */
static struct totals *gather(struct broker *b)
{
	size_t n = b->n_workers;
	workers_publish(b->workers, PUBLISH_WAIT_MS);
	if (b->events_ready)
		drain_events(b);
	struct totals *t = calloc(1, sizeof *t);
	if (t) {
		t->per_worker = calloc(n, sizeof *t->per_worker);
		t->listeners = calloc(b->n_listen * n + 1, sizeof *t->listeners);
	}
	if (!t || !t->per_worker || !t->listeners) {
		if (t)
			free(t->per_worker);
		free(t);
		return NULL;
	}
	for (size_t w = 0; w < n && b->workers; w++) {
		struct broker_worker *bw = &b->bw[w];
		worker_lock(bw->w);
		t->per_worker[w] = bw->pub_stats;
		add_stats(&t->sessions, &bw->pub_stats);
		for (size_t l = 0; l < b->n_listen; l++)
			t->listeners[l * n + w] = bw->pub_listeners[l];
		for (size_t k = 0; k < bw->n_pub_kept; k++)
			add_kept(t, &bw->pub_kept[k]);
		worker_unlock(bw->w);
	}
	return t;
}

static void free_totals(struct totals *t)
{
	if (!t)
		return;
	free(t->per_worker);
	free(t->listeners);
	free(t);
}

static json_t *listener_json(const struct broker *b, const struct totals *t, size_t l)
{
	size_t n = b->n_workers;
	struct net_listener_stats sum = { 0 };
	json_t *workers = json_array();
	for (size_t w = 0; w < n; w++) {
		const struct net_listener_stats *s = &t->listeners[l * n + w];
		sum.accepted += s->accepted;
		sum.active += s->active;
		sum.paused += s->paused;
		sum.accept_errors += s->accept_errors;
		sum.shed += s->shed;
		json_array_append_new(workers, json_pack("{s:I, s:I, s:I}", "worker", (json_int_t)w,
							 "accepted", (json_int_t)s->accepted,
							 "active", (json_int_t)s->active));
	}
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o}", "listen", b->cfg.listen[l].text,
			 "accepted", (json_int_t)sum.accepted, "active", (json_int_t)sum.active,
			 "limit_reached", (json_int_t)sum.paused, "accept_errors",
			 (json_int_t)sum.accept_errors, "shed", (json_int_t)sum.shed, "workers",
			 workers);
}

static json_t *status_json(void *ud)
{
	struct broker *b = ud;
	uint64_t now = uv_now(b->loop);
	struct totals *t = gather(b);
	if (!t)
		return NULL;
	json_t *listeners = json_array(), *ups = json_array(), *per_worker = json_array();
	for (size_t l = 0; l < b->n_listen; l++)
		json_array_append_new(listeners, listener_json(b, t, l));
	for (size_t i = 0; i < upstream_count(b->registry); i++) {
		uint32_t id = upstream_id_at(b->registry, i);
		json_array_append_new(ups, upstream_status_json(b->registry, id, kept_of(t, id), now,
								(uint64_t)time(NULL)));
	}
	for (size_t w = 0; w < b->n_workers; w++)
		json_array_append_new(per_worker,
				      json_pack("{s:I, s:I, s:I}", "worker", (json_int_t)w,
						"accepted", (json_int_t)t->per_worker[w].accepted,
						"completed", (json_int_t)t->per_worker[w].completed));
	const struct pool_session_stats *st = &t->sessions;
	const struct config_pool *c = &b->cfg;
	json_t *doc = json_pack(
		"{s:s, s:s, s:f, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I}, s:o}, "
		"s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
		"program", "nts-pool-ke", "version", PACKAGE_VERSION, "uptime_s",
		(double)(now - b->started_ms) / 1000.0, "workers", (json_int_t)b->n_workers,
		"listeners", listeners, "sessions", "accepted", (json_int_t)st->accepted,
		"completed", (json_int_t)st->completed, "no_overlap", (json_int_t)st->no_overlap,
		"failovers", (json_int_t)st->failovers, "failed", "tls", (json_int_t)st->failed_tls,
		"bad_request", (json_int_t)st->failed_bad_request, "no_upstream",
		(json_int_t)st->failed_no_upstream, "upstream_error", (json_int_t)st->failed_upstream,
		"timeout", (json_int_t)st->failed_timeout, "workers", per_worker, "upstreams", ups,
		"limits", "max_connections", (json_int_t)b->max_conns * (json_int_t)b->n_workers,
		"max_connections_per_address", (json_int_t)c->max_connections_per_address,
		"refused_per_address", (json_int_t)conn_limit_refused(b->per_address),
		"key_exchange_timeout_ms", (json_int_t)c->key_exchange_timeout_ms,
		"upstream_timeout_ms", (json_int_t)c->upstream_timeout_ms, "max_upstream_attempts",
		(json_int_t)c->max_upstream_attempts, "upstream_connections",
		(json_int_t)c->upstream_connections, "upstream_idle_s", (json_int_t)c->upstream_idle_s);
	free_totals(t);
	return doc;
}

static void counter(struct status_text *out, const char *name, const char *help, uint64_t v)
{
	status_metric_header(out, name, "counter", help);
	status_metric_value(out, name, NULL, (double)v);
}

/* Per listen address, summed over the workers: what /status lists under listeners. */
static void listener_metrics(const struct broker *b, const struct totals *t,
			     struct status_text *out)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "nts_pool_ke_listener_accepted_total", "counter", "Client connections accepted" },
		{ "nts_pool_ke_listener_active", "gauge", "Client connections open" },
		{ "nts_pool_ke_listener_limit_reached_total", "counter",
		  "Times accepting paused at max-connections with nothing to shed" },
		{ "nts_pool_ke_listener_shed_total", "counter",
		  "Connections without a completed handshake closed to admit a waiting one" },
		{ "nts_pool_ke_listener_accept_errors_total", "counter", "Failed accepts" },
	};
	size_t n = b->n_workers;
	for (size_t m = 0; m < sizeof fam / sizeof fam[0]; m++) {
		status_metric_header(out, fam[m].name, fam[m].type, fam[m].help);
		for (size_t l = 0; l < b->n_listen; l++) {
			uint64_t v = 0;
			for (size_t w = 0; w < n; w++) {
				const struct net_listener_stats *st = &t->listeners[l * n + w];
				v += m == 0   ? st->accepted
				     : m == 1 ? st->active
				     : m == 2 ? st->paused
				     : m == 3 ? st->shed
						: st->accept_errors;
			}
			char esc[128], labels[160];
			snprintf(labels, sizeof labels, "listen=\"%s\"",
				 status_label_escape(b->cfg.listen[l].text, esc, sizeof esc));
			status_metric_value(out, fam[m].name, labels, (double)v);
		}
	}
}

static void metrics(struct status_text *out, void *ud)
{
	struct broker *b = ud;
	struct totals *t = gather(b);
	if (!t)
		return;
	const struct pool_session_stats *st = &t->sessions;
	counter(out, "nts_pool_ke_sessions_accepted_total", "Client sessions started", st->accepted);
	counter(out, "nts_pool_ke_sessions_completed_total", "Cookies delivered to clients",
		st->completed);
	counter(out, "nts_pool_ke_sessions_no_overlap_total", "No common protocol or AEAD",
		st->no_overlap);
	counter(out, "nts_pool_ke_sessions_failovers_total",
		"Upstream candidates abandoned before keys left", st->failovers);
	static const char failed[] = "nts_pool_ke_sessions_failed_total";
	status_metric_header(out, failed, "counter", "Failed client sessions by reason");
	status_metric_value(out, failed, "reason=\"tls\"", (double)st->failed_tls);
	status_metric_value(out, failed, "reason=\"bad_request\"", (double)st->failed_bad_request);
	status_metric_value(out, failed, "reason=\"no_upstream\"", (double)st->failed_no_upstream);
	status_metric_value(out, failed, "reason=\"upstream_error\"", (double)st->failed_upstream);
	status_metric_value(out, failed, "reason=\"timeout\"", (double)st->failed_timeout);
	static const char per_worker[] = "nts_pool_ke_worker_sessions_accepted_total";
	status_metric_header(out, per_worker, "counter", "Client sessions started, by worker");
	for (size_t w = 0; w < b->n_workers; w++) {
		char labels[32];
		snprintf(labels, sizeof labels, "worker=\"%zu\"", w);
		status_metric_value(out, per_worker, labels, (double)t->per_worker[w].accepted);
	}
	status_metric_header(out, "nts_pool_ke_workers", "gauge", "Worker threads serving clients");
	status_metric_value(out, "nts_pool_ke_workers", NULL, b->n_workers);
	listener_metrics(b, t, out);

	enum { HEALTHY, SERVED, FAILURES, KEPT };
	static const struct {
		const char *name, *type, *help;
	} per_upstream[] = {
		[HEALTHY] = { "nts_pool_ke_upstream_healthy", "gauge",
			      "1 when the upstream is selectable" },
		[SERVED] = { "nts_pool_ke_upstream_sessions_served_total", "counter",
			     "Sessions served" },
		[FAILURES] = { "nts_pool_ke_upstream_failures_total", "counter",
			       "Upstream failures" },
		[KEPT] = { "nts_pool_ke_upstream_kept_connections", "gauge",
			   "Kept-alive connections" },
	};
	for (size_t m = 0; m < sizeof per_upstream / sizeof per_upstream[0]; m++) {
		status_metric_header(out, per_upstream[m].name, per_upstream[m].type,
				     per_upstream[m].help);
		for (size_t i = 0; i < upstream_count(b->registry); i++) {
			uint32_t id = upstream_id_at(b->registry, i);
			char name[300], esc[320], labels[340];
			snprintf(name, sizeof name, "%s:%u", upstream_domain(b->registry, id),
				 upstream_port(b->registry, id));
			snprintf(labels, sizeof labels, "upstream=\"%s\"",
				 status_label_escape(name, esc, sizeof esc));
			uint64_t served, failures;
			upstream_counters(b->registry, id, &served, &failures);
			double v = m == HEALTHY	 ? upstream_state(b->registry, id) == UPSTREAM_HEALTHY
				   : m == SERVED ? (double)served
				   : m == FAILURES ? (double)failures
						   : kept_of(t, id);
			status_metric_value(out, per_upstream[m].name, labels, v);
		}
	}
	free_totals(t);
}

static const struct status_provider provider = { .status_json = status_json, .metrics = metrics };

/* ---- lifecycle ---- */

int broker_prepare(struct broker **out, uv_loop_t *loop, const char *config_path,
		   struct config_pool *cfg, unsigned workers, char *err, size_t errlen)
{
	struct broker *b = calloc(1, sizeof *b);
	if (!b)
		return -ENOMEM;
	*out = b;
	b->loop = loop;
	b->n_workers = workers;
	b->cfg = *cfg;
	memset(cfg, 0, sizeof *cfg);
	b->config_path = strdup(config_path);
	if (!b->config_path)
		return -ENOMEM;
	apply_limits(b);

	struct tls_creds *server, *client;
	int rc = load_creds(&b->cfg, &server, &client, err, errlen);
	if (rc < 0)
		return rc;
	tls_creds_slot_init(&b->server_creds, server);
	tls_creds_slot_init(&b->client_creds, client);
	b->creds_ready = true;
	struct upstream_spec *specs = specs_of(&b->cfg);
	if (!specs)
		return -ENOMEM;
	struct upstream_timing t = timing_of(&b->cfg);
	rc = upstream_registry_new(&b->registry, specs, b->cfg.key_exchange_server_count, &t,
				   uv_now(loop));
	free(specs);
	if (rc < 0) {
		snprintf(err, errlen, "upstream registry: %s", strerror(-rc));
		return rc;
	}
	publish_snapshot(b);
	if (!b->snapshots_ready)
		return -ENOMEM;
	b->n_listen = b->cfg.listen_count;
	b->listen_fds = malloc((b->n_listen * workers + 1) * sizeof *b->listen_fds);
	b->bw = calloc(workers, sizeof *b->bw);
	if (!b->listen_fds || !b->bw)
		return -ENOMEM;
	for (size_t i = 0; i < b->n_listen * workers; i++)
		b->listen_fds[i] = -1;
	for (unsigned w = 0; w < workers; w++) {
		struct broker_worker *bw = &b->bw[w];
		bw->b = b;
		bw->session_log = (struct log_ratelimit)LOG_RATELIMIT_INIT(5, 20);
		slot_view_init(&bw->snapshot_view, &b->snapshots);
		slot_view_init(&bw->server_creds_view, &b->server_creds);
		slot_view_init(&bw->client_creds_view, &b->client_creds);
		bw->listeners = calloc(b->n_listen + 1, sizeof *bw->listeners);
		bw->pub_listeners = calloc(b->n_listen + 1, sizeof *bw->pub_listeners);
		bw->last_listeners = calloc(b->n_listen + 1, sizeof *bw->last_listeners);
		if (!bw->listeners || !bw->pub_listeners || !bw->last_listeners ||
		    upstream_picker_new(&bw->picker) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* The main loop's own handles: session outcomes in, snapshots out. */
static int start_main_handles(struct broker *b)
{
	if (pthread_mutex_init(&b->events.lock, NULL) != 0)
		return -ENOMEM;
	uv_async_init(b->loop, &b->events.async, on_events);
	b->events.async.data = b;
	b->events_ready = true;
	uv_prepare_init(b->loop, &b->publish);
	b->publish.data = b;
	uv_prepare_start(&b->publish, on_publish);
	uv_unref((uv_handle_t *)&b->publish);
	b->publish_ready = true;
	return 0;
}

int broker_start(struct broker *b, char *err, size_t errlen)
{
	b->started_ms = uv_now(b->loop);
	int rc = conn_limit_new(&b->per_address, b->cfg.max_connections_per_address);
	if (rc == 0)
		rc = start_main_handles(b);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	struct tls_creds *client = slot_acquire(&b->client_creds);
	rc = upstream_io_new(&b->io, b->loop, client, b->registry, &b->io_cfg);
	tls_creds_unref(client);
	if (rc < 0) {
		snprintf(err, errlen, "upstream connections: %s", strerror(-rc));
		return rc;
	}
	/* Each worker may hold upstream-connections per upstream, the control plane one more for
	 * its probe, and every deep check a UDP socket. */
	unsigned n = b->n_workers;
	unsigned fixed = PROGRAM_FD_RESERVE +
			 (unsigned)b->cfg.key_exchange_server_count *
				 (b->cfg.upstream_connections * n + 2) +
			 (b->cfg.observability.has_status_listen ? STATUS_MAX_CONNS + 2 : 0);
	b->max_conns = program_conn_cap("max-connections", b->cfg.max_connections,
					(unsigned)b->n_listen, n, fixed);
	for (size_t l = 0; l < b->n_listen; l++) {
		rc = net_bind_group((const struct sockaddr *)&b->cfg.listen[l].addr, SOCK_STREAM, n,
				    &b->listen_fds[l * n], err, errlen);
		if (rc < 0)
			return rc;
	}
	void **uds = calloc(n, sizeof *uds);
	if (!uds) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (unsigned w = 0; w < n; w++)
		uds[w] = &b->bw[w];
	rc = workers_start(&b->workers, b->loop, n, &broker_worker_ops, uds, b, err, errlen);
	free(uds);
	if (rc < 0)
		return rc;
	for (size_t l = 0; l < b->n_listen; l++)
		log_info("nts-ke (pool) listening on %s", b->cfg.listen[l].text);
	log_info("%u worker%s serving", n, n == 1 ? "" : "s");
	if (b->cfg.observability.has_status_listen) {
		const struct config_listen *sl = &b->cfg.observability.status_listen;
		rc = status_server_new(&b->status, b->loop, (const struct sockaddr *)&sl->addr,
				       &provider, b, err, errlen);
		if (rc < 0)
			return rc;
		log_info("status endpoint on http://%s/status", sl->text);
	}
	log_info("%zu upstream(s) configured; probing", upstream_count(b->registry));
	return 0;
}

void broker_reload(struct broker *b)
{
	char err[1024];
	if (b->stopping)
		return;
	log_info("reloading %s", b->config_path);
	struct config_pool fresh;
	if (config_pool_load(b->config_path, &fresh, err, sizeof err) < 0) {
		log_warn("reload failed, keeping the running configuration: %s", err);
		return;
	}
	struct tls_creds *server = NULL, *client = NULL;
	if (load_creds(&fresh, &server, &client, err, sizeof err) < 0) {
		log_warn("reload failed, keeping the running configuration: %s", err);
		config_pool_free(&fresh);
		return;
	}
	struct upstream_spec *specs = specs_of(&fresh);
	if (!specs || upstream_registry_update(b->registry, specs, fresh.key_exchange_server_count,
					       uv_now(b->loop)) < 0) {
		log_warn("reload failed, keeping the running configuration: out of memory");
		free(specs);
		tls_creds_unref(server);
		tls_creds_unref(client);
		config_pool_free(&fresh);
		return;
	}
	free(specs);
	upstream_io_set_creds(b->io, client);
	slot_publish(&b->server_creds, server);
	slot_publish(&b->client_creds, client);
	upstream_io_kick(b->io);
	/* The workers see the new upstreams and credentials from here on. */
	publish_snapshot(b);
	workers_reload(b->workers);
	/* The registry copied the upstream names; the rest of the old configuration stays in force
	 * (listen addresses and limits need a restart), except what we reloaded. */
	free(b->cfg.certificate_chain_path);
	free(b->cfg.private_key_path);
	free(b->cfg.certificate_authority_path);
	b->cfg.certificate_chain_path = fresh.certificate_chain_path;
	b->cfg.private_key_path = fresh.private_key_path;
	b->cfg.certificate_authority_path = fresh.certificate_authority_path;
	fresh.certificate_chain_path = fresh.private_key_path = NULL;
	fresh.certificate_authority_path = NULL;
	config_pool_free(&fresh);
	log_info("reloaded: certificates and %zu upstream(s)", upstream_count(b->registry));
}

void broker_stop(struct broker *b)
{
	if (b->stopping)
		return;
	b->stopping = true;
	log_info("stopping");
	if (b->status) {
		status_server_close(b->status);
		b->status = NULL;
	}
	if (b->workers) {
		/* The control plane closes once the workers' sessions no longer report to it. */
		workers_stop(b->workers);
		return;
	}
	broker_close_main_handles(b);
	if (b->io) {
		upstream_io_close(b->io);
		b->io = NULL;
	}
}

void broker_free(struct broker *b)
{
	if (!b)
		return;
	workers_free(b->workers);
	for (unsigned w = 0; b->bw && w < b->n_workers; w++)
		broker_worker_free(&b->bw[w]);
	free(b->bw);
	for (size_t i = 0; b->listen_fds && i < b->n_listen * b->n_workers; i++)
		if (b->listen_fds[i] >= 0)
			close(b->listen_fds[i]);
	free(b->listen_fds);
	upstream_registry_free(b->registry);
	conn_limit_free(b->per_address);
	if (b->snapshots_ready)
		slot_destroy(&b->snapshots);
	if (b->creds_ready) {
		slot_destroy(&b->server_creds);
		slot_destroy(&b->client_creds);
	}
	if (b->events_ready) {
		pthread_mutex_destroy(&b->events.lock);
		free(b->events.v);
	}
	config_pool_free(&b->cfg);
	free(b->config_path);
	free(b);
}
