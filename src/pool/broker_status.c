/* The broker's status endpoint: /status (JSON) and /metrics (Prometheus text), from the
 * workers' published counters summed and the registry's view of each upstream. Runs on the
 * main loop. */
#include "broker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cidr.h"
#include "conn_limit.h"
#include "ratelimit.h"
#include "status.h"
#include "workers.h"

/* How long a status read waits for the workers' fresh counters. */
#define PUBLISH_WAIT_MS 250

/* ---- status ---- */

/* What every worker counted, summed (per listener and per upstream too), with the per-worker
 * session counts; read after the workers published afresh and the outcomes reached the
 * registry. */
struct totals {
	struct pool_session_stats sessions;
	struct broker_worker_stats wstats; /* summed, histograms merged */
	struct broker_recent *recent;	   /* every worker's, oldest first */
	size_t n_recent;
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
	sum->rate_limited += s->rate_limited;
}

static void add_wstats(struct broker_worker_stats *sum, const struct broker_worker_stats *s)
{
	sum->proxy_refused += s->proxy_refused;
	histogram_merge(&sum->session_seconds, &s->session_seconds);
	histogram_merge(&sum->upstream_seconds, &s->upstream_seconds);
}

static int recent_order(const void *a, const void *b)
{
	const struct broker_recent *x = a, *y = b;
	return x->ended_ms < y->ended_ms ? -1 : x->ended_ms > y->ended_ms;
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
		broker_drain_events(b);
	struct totals *t = calloc(1, sizeof *t);
	if (t) {
		t->per_worker = calloc(n, sizeof *t->per_worker);
		t->listeners = calloc(b->n_listen * n + 1, sizeof *t->listeners);
		t->recent = calloc(n * BROKER_RECENT_MAX + 1, sizeof *t->recent);
		histogram_init_default(&t->wstats.session_seconds);
		histogram_init_default(&t->wstats.upstream_seconds);
	}
	if (!t || !t->per_worker || !t->listeners || !t->recent) {
		if (t) {
			free(t->per_worker);
			free(t->listeners);
			free(t->recent);
		}
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
		add_wstats(&t->wstats, &bw->pub_wstats);
		memcpy(t->recent + t->n_recent, bw->pub_recent,
		       bw->n_pub_recent * sizeof *t->recent);
		t->n_recent += bw->n_pub_recent;
		worker_unlock(bw->w);
	}
	qsort(t->recent, t->n_recent, sizeof *t->recent, recent_order);
	return t;
}

static void free_totals(struct totals *t)
{
	if (!t)
		return;
	free(t->per_worker);
	free(t->listeners);
	free(t->recent);
	free(t);
}

/* The last BROKER_RECENT_MAX sessions of all workers, oldest first. */
static json_t *recent_json(const struct totals *t)
{
	json_t *a = json_array();
	size_t from = t->n_recent > BROKER_RECENT_MAX ? t->n_recent - BROKER_RECENT_MAX : 0;
	for (size_t i = from; i < t->n_recent; i++) {
		const struct broker_recent *r = &t->recent[i];
		json_t *o = json_pack("{s:s, s:s, s:f, s:I}", "client", r->client, "outcome",
				      r->outcome, "duration_s", r->duration_s, "ended_unix_ms",
				      (json_int_t)r->ended_ms);
		json_object_set_new(o, "via", r->via[0] ? json_string(r->via) : json_null());
		json_object_set_new(o, "upstream",
				    r->upstream[0] ? json_string(r->upstream) : json_null());
		json_object_set_new(o, "region", r->region[0] ? json_string(r->region) : json_null());
		json_object_set_new(o, "sni_quarter",
				    r->quarter >= 0 ? json_integer(r->quarter) : json_null());
		json_array_append_new(a, o);
	}
	return a;
}

/* What selection and admission are configured with. */
static json_t *selection_json(const struct broker *b)
{
	const struct config_pool *c = &b->cfg;
	json_t *regions = json_array(), *from = json_array();
	for (size_t i = 0; i < c->region_count; i++)
		json_array_append_new(regions, json_string(c->regions[i].name));
	for (size_t i = 0; i < c->proxy_protocol_from_count; i++) {
		char text[CIDR_STRLEN];
		json_array_append_new(from, json_string(cidr_format(&c->proxy_protocol_from[i], text,
								    sizeof text)));
	}
	struct ratelimit_stats rl = { 0 };
	if (b->rate_limit)
		ratelimit_stats(b->rate_limit, &rl);
	json_t *o = json_pack("{s:b, s:o, s:o, s:I}", "proxy_protocol", c->proxy_protocol,
			      "proxy_protocol_from", from, "regions", regions, "min_region_servers",
			      (json_int_t)atomic_load(&((struct broker *)b)->min_region_servers));
	json_object_set_new(o, "geoip_database",
			    c->geoip_database_path ? json_string(c->geoip_database_path)
						   : json_null());
	json_object_set_new(
		o, "rate_limit",
		b->rate_limit ? json_pack("{s:f, s:I, s:I, s:I, s:I, s:I}", "per_second",
					  c->rate_limit.rate, "burst",
					  (json_int_t)c->rate_limit.burst, "clients_tracked",
					  (json_int_t)rl.tracked, "allowed", (json_int_t)rl.allowed,
					  "limited", (json_int_t)rl.limited, "evicted",
					  (json_int_t)rl.evicted)
			      : json_null());
	return o;
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
	json_object_set_new(json_object_get(doc, "sessions"), "rate_limited",
			    json_integer((json_int_t)st->rate_limited));
	json_object_set_new(json_object_get(json_object_get(doc, "sessions"), "failed"),
			    "rate_limited", json_integer((json_int_t)st->rate_limited));
	json_object_set_new(json_object_get(doc, "limits"), "refused_proxy_header",
			    json_integer((json_int_t)t->wstats.proxy_refused));
	json_object_set_new(doc, "selection", selection_json(b));
	json_object_set_new(doc, "recent_sessions", recent_json(t));
	free_totals(t);
	return doc;
}

static void append_text(void *ud, const char *text, size_t len)
{
	status_text_append(ud, text, len);
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
	counter(out, "nts_pool_ke_sessions_accepted_total",
		"Client sessions started (admitted: no refused PROXY header, no balancer check)",
		st->accepted);
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
	status_metric_value(out, failed, "reason=\"rate_limited\"", (double)st->rate_limited);
	static const char refused[] = "nts_pool_ke_connections_refused_total";
	status_metric_header(out, refused, "counter",
			     "Client connections closed before a session, by reason");
	status_metric_value(out, refused, "reason=\"proxy_header\"",
			    (double)t->wstats.proxy_refused);
	status_metric_value(out, refused, "reason=\"per_address\"",
			    (double)conn_limit_refused(b->per_address));
	static const char session_h[] = "nts_pool_ke_session_duration_seconds";
	status_metric_header(out, session_h, "histogram",
			     "Client sessions from accept to close (monotonic clock)");
	histogram_write(&t->wstats.session_seconds, session_h, NULL, append_text, out);
	static const char upstream_h[] = "nts_pool_ke_upstream_exchange_duration_seconds";
	status_metric_header(out, upstream_h, "histogram",
			     "Fixed Key exchanges with upstreams, from request to answer or failure");
	histogram_write(&t->wstats.upstream_seconds, upstream_h, NULL, append_text, out);
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
	unsigned kept = 0;
	for (size_t i = 0; i < t->n_kept; i++)
		kept += t->kept[i].n;
	status_metric_header(out, "nts_pool_ke_kept_connections", "gauge",
			     "Kept-alive upstream connections of every worker, all upstreams");
	status_metric_value(out, "nts_pool_ke_kept_connections", NULL, kept);
	if (b->rate_limit) {
		struct ratelimit_stats rl;
		ratelimit_stats(b->rate_limit, &rl);
		status_metric_header(out, "nts_pool_ke_rate_limit_clients", "gauge",
				     "Client prefixes the rate limiter tracks");
		status_metric_value(out, "nts_pool_ke_rate_limit_clients", NULL, (double)rl.tracked);
		counter(out, "nts_pool_ke_rate_limit_evicted_total",
			"Tracked prefixes forgotten to make room (a full table)", rl.evicted);
	}

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

const struct status_provider broker_status_provider = { .status_json = status_json, .metrics = metrics };

