#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Retry bounds after a failed probe (PROTOCOL.md §4.3: exponential, capped at 10 minutes). */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS (10 * 60 * 1000)

struct listener {
	struct broker *b;
	struct net_listener *net;
	struct net_listener_stats last; /* kept once the socket closed */
	char text[64];
};

struct broker {
	uv_loop_t *loop;
	unsigned max_conns; /* per listener in force: max-connections, or less for the descriptors */
	struct conn_limit *per_address; /* max-connections-per-address, over every listener */
	struct log_ratelimit session_log;
	char *config_path;
	struct config_pool cfg;
	struct tls_creds *server_creds; /* presented to clients */
	struct tls_creds *client_creds; /* presented to upstreams: the pool's certificate */
	struct upstream_registry *registry;
	struct upstream_io *io;
	struct upstream_io_config io_cfg;
	struct pool_session_config session_cfg;
	struct pool_session_upstreams upstreams;
	struct pool_session_stats stats;
	struct listener *listeners;
	size_t n_listeners;
	struct status_server *status;
	size_t clients; /* sessions alive: upstream_io outlives every one of them */
	uint64_t started_ms;
	bool stopping;
};

/* Sessions may hold exchanges on upstream_io, so it closes only after the last session. */
static void close_io_when_idle(struct broker *b)
{
	if (b->stopping && b->clients == 0 && b->io) {
		upstream_io_close(b->io);
		b->io = NULL;
	}
}

/* One client connection. Freed in on_closed. */
/* One client connection: its session runs on the connection driver, which owns and frees it. */
struct client {
	struct broker *b;
	struct ke_conn *conn;
	struct pool_session *session;
	struct upstream_io_exchange *exchange; /* outstanding upstream work, or NULL */
	uint32_t upstream;
};

static int pick(void *ud, const struct ke_msg_request *req, const uint32_t *tried, size_t n_tried,
		uint64_t now_ms, struct pool_upstream_info *out)
{
	struct broker *b = ud;
	return upstream_pick(b->registry, req, tried, n_tried, now_ms, out);
}

static int load_creds(const struct config_pool *cfg, struct tls_creds **server,
		      struct tls_creds **client, char *err, size_t errlen)
{
	struct tls_server_options so = { .cert_file = cfg->certificate_chain_path,
					 .key_file = cfg->private_key_path };
	int rc = tls_creds_new_server(server, &so, err, errlen);
	if (rc < 0)
		return rc;
	struct tls_client_options co = { .ca_file = cfg->certificate_authority_path,
					 .cert_file = cfg->certificate_chain_path,
					 .key_file = cfg->private_key_path };
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
	};
}

/* ---- client connections ---- */

static void start_upstream_work(struct client *c);

/* An upstream failure during a session: counted, the upstream due for a probe, the session told
 * (it fails over only while the keys have not left). */
static void upstream_failed(struct client *c, int err, bool keys_sent, const char *reason)
{
	struct broker *b = c->b;
	uint64_t now = uv_now(b->loop);
	upstream_session_failed(b->registry, c->upstream, reason, now);
	upstream_io_kick(b->io);
	pool_session_upstream_failed(c->session, keys_sent, err, now);
}

static void on_upstream_done(void *ud, const struct upstream_io_result *r)
{
	struct client *c = ud;
	struct broker *b = c->b;
	uint64_t now = uv_now(b->loop);
	int parse_rc = r->parse_rc;
	const struct ke_msg_response *resp = r->resp;
	c->exchange = NULL;
	if (r->err < 0) {
		upstream_failed(c, r->err, r->keys_sent, r->reason);
	} else {
		if (parse_rc == 0) {
			upstream_session_ok(b->registry, c->upstream, r->latency_ms);
			upstream_server_announced(b->registry, c->upstream,
						  resp->has_server ? resp->server.name : NULL);
		} else {
			upstream_session_failed(b->registry, c->upstream,
						resp && resp->has_error ? "answered with an Error"
									: "malformed answer",
						now);
			upstream_io_kick(b->io);
		}
		pool_session_upstream_response(c->session, parse_rc, resp, now);
	}
	ke_conn_kick(c->conn);
	start_upstream_work(c);
}

/* Hands the session's Fixed Key request to upstream_io. A request refused outright never left,
 * so the session moves on to its next candidate (bounded by max-upstream-attempts). */
static void start_upstream_work(struct client *c)
{
	uint32_t id;
	const uint8_t *req;
	size_t len;
	while (!c->exchange && pool_session_upstream_request(c->session, &id, &req, &len)) {
		c->upstream = id;
		int rc = upstream_io_exchange(c->b->io, id, req, len, KE_MSG_REQUEST_FIXED_KEY,
					      on_upstream_done, c, &c->exchange);
		if (rc == 0)
			return;
		upstream_failed(c, rc, false, strerror(-rc));
		ke_conn_kick(c->conn);
	}
}

/* pool_session as the connection driver runs it. */
KE_CONN_ADAPTERS(pool_session, struct pool_session)

static const struct ke_conn_machine machine_ops = KE_CONN_MACHINE(pool_session);

/* After each client event the session may want its upstream exchange. */
static void on_progress(struct ke_conn *conn, void *machine, void *ud)
{
	(void)conn;
	(void)machine;
	start_upstream_work(ud);
}

static void on_client_closed(struct ke_conn *conn, void *machine, void *ud)
{
	struct client *c = ud;
	struct broker *b = c->b;
	(void)machine;
	conn_limit_release(b->per_address, ke_conn_peer(conn));
	if (c->exchange)
		upstream_io_cancel(c->exchange);
	free(c);
	b->clients--;
	close_io_when_idle(b);
}

static int on_accept(struct net_listener *nl, struct net_stream *s, void *ud)
{
	struct listener *l = ud;
	struct broker *b = l->b;
	(void)nl;
	/* One host cannot take every slot: beyond its share the connection is closed at once. */
	int taken = conn_limit_take(b->per_address, net_stream_peer(s));
	if (taken < 0)
		return taken;
	struct client *c = calloc(1, sizeof *c);
	struct pool_session *session = NULL;
	int rc = c ? pool_session_new(&session, b->server_creds, &b->session_cfg, &b->upstreams,
				      &b->stats, uv_now(b->loop))
		   : -ENOMEM;
	if (rc == 0) {
		c->b = b;
		c->session = session;
		c->upstream = UINT32_MAX;
		char peer[NET_ADDR_STRLEN];
		pool_session_set_peer(session, net_addr_str(net_stream_peer(s), peer, sizeof peer));
		const struct ke_conn_owner owner = { .progress = on_progress,
						     .closed = on_client_closed,
						     .ud = c };
		rc = ke_conn_start(&c->conn, s, &machine_ops, session, &owner);
	}
	if (rc < 0) {
		if (log_ratelimit_allow(&b->session_log, uv_now(b->loop)))
			log_warn("%s: cannot start a session: %s", l->text, strerror(-rc));
		pool_session_free(session);
		free(c);
		conn_limit_release(b->per_address, net_stream_peer(s));
		return rc;
	}
	b->clients++;
	return 0;
}

static void on_listener_closed(struct net_listener *nl, void *ud)
{
	struct listener *l = ud;
	l->last = *net_listener_stats(nl);
	l->net = NULL;
}

static const struct net_listener_ops listener_ops = {
	.on_accept = on_accept,
	.on_closed = on_listener_closed,
};

/* ---- status ---- */

static const struct net_listener_stats *listener_stats(const struct listener *l)
{
	return l->net ? net_listener_stats(l->net) : &l->last;
}

static json_t *status_json(void *ud)
{
	struct broker *b = ud;
	uint64_t now = uv_now(b->loop);
	json_t *listeners = json_array(), *ups = json_array();
	for (size_t i = 0; i < b->n_listeners; i++) {
		const struct net_listener_stats *s = listener_stats(&b->listeners[i]);
		json_array_append_new(
			listeners,
			json_pack("{s:s, s:I, s:I, s:I, s:I}", "listen", b->listeners[i].text,
				  "accepted", (json_int_t)s->accepted, "active", (json_int_t)s->active,
				  "limit_reached", (json_int_t)s->paused, "accept_errors",
				  (json_int_t)s->accept_errors));
	}
	for (size_t i = 0; i < upstream_count(b->registry); i++) {
		uint32_t id = upstream_id_at(b->registry, i);
		json_array_append_new(ups, upstream_status_json(b->registry, id,
								upstream_io_kept(b->io, id), now,
								(uint64_t)time(NULL)));
	}
	const struct pool_session_stats *st = &b->stats;
	const struct config_pool *c = &b->cfg;
	return json_pack(
		"{s:s, s:s, s:f, s:o, s:{s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I}}, s:o, "
		"s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
		"program", "nts-pool-ke", "version", PACKAGE_VERSION, "uptime_s",
		(double)(now - b->started_ms) / 1000.0, "listeners", listeners, "sessions",
		"accepted", (json_int_t)st->accepted, "completed", (json_int_t)st->completed,
		"no_overlap", (json_int_t)st->no_overlap, "failovers", (json_int_t)st->failovers,
		"failed", "tls", (json_int_t)st->failed_tls, "bad_request",
		(json_int_t)st->failed_bad_request, "no_upstream", (json_int_t)st->failed_no_upstream,
		"upstream_error", (json_int_t)st->failed_upstream, "timeout",
		(json_int_t)st->failed_timeout, "upstreams", ups, "limits", "max_connections",
		(json_int_t)b->max_conns, "max_connections_per_address",
		(json_int_t)c->max_connections_per_address, "refused_per_address",
		(json_int_t)conn_limit_refused(b->per_address), "key_exchange_timeout_ms",
		(json_int_t)c->key_exchange_timeout_ms, "upstream_timeout_ms",
		(json_int_t)c->upstream_timeout_ms, "max_upstream_attempts",
		(json_int_t)c->max_upstream_attempts, "upstream_connections",
		(json_int_t)c->upstream_connections, "upstream_idle_s", (json_int_t)c->upstream_idle_s);
}

static void counter(struct status_text *out, const char *name, const char *help, uint64_t v)
{
	status_metric_header(out, name, "counter", help);
	status_metric_value(out, name, NULL, (double)v);
}

static void metrics(struct status_text *out, void *ud)
{
	struct broker *b = ud;
	const struct pool_session_stats *st = &b->stats;
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
						   : upstream_io_kept(b->io, id);
			status_metric_value(out, per_upstream[m].name, labels, v);
		}
	}
}

static const struct status_provider provider = { .status_json = status_json, .metrics = metrics };

/* ---- lifecycle ---- */

int broker_prepare(struct broker **out, uv_loop_t *loop, const char *config_path,
		   struct config_pool *cfg, char *err, size_t errlen)
{
	struct broker *b = calloc(1, sizeof *b);
	if (!b)
		return -ENOMEM;
	*out = b;
	b->session_log = (struct log_ratelimit)LOG_RATELIMIT_INIT(5, 20);
	b->loop = loop;
	b->cfg = *cfg;
	memset(cfg, 0, sizeof *cfg);
	b->config_path = strdup(config_path);
	if (!b->config_path)
		return -ENOMEM;
	apply_limits(b);
	b->upstreams = (struct pool_session_upstreams){ .pick = pick, .ud = b };

	int rc = load_creds(&b->cfg, &b->server_creds, &b->client_creds, err, errlen);
	if (rc < 0)
		return rc;
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
	b->listeners = calloc(b->cfg.listen_count, sizeof *b->listeners);
	if (!b->listeners)
		return -ENOMEM;
	return 0;
}

int broker_start(struct broker *b, char *err, size_t errlen)
{
	b->started_ms = uv_now(b->loop);
	int rc = conn_limit_new(&b->per_address, b->cfg.max_connections_per_address);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	rc = upstream_io_new(&b->io, b->loop, b->client_creds, b->registry, &b->io_cfg);
	if (rc < 0) {
		snprintf(err, errlen, "upstream connections: %s", strerror(-rc));
		return rc;
	}
	/* Each upstream may hold upstream-connections, and every deep check a UDP socket. */
	unsigned fixed = PROGRAM_FD_RESERVE +
			 (unsigned)b->cfg.key_exchange_server_count * (b->cfg.upstream_connections + 1) +
			 (b->cfg.observability.has_status_listen ? STATUS_MAX_CONNS + 2 : 0);
	b->max_conns = program_conn_cap("max-connections", b->cfg.max_connections,
					(unsigned)b->cfg.listen_count, fixed);
	for (size_t i = 0; i < b->cfg.listen_count; i++) {
		struct listener *l = &b->listeners[i];
		l->b = b;
		snprintf(l->text, sizeof l->text, "%s", b->cfg.listen[i].text);
		rc = net_listener_new(&l->net, b->loop, (const struct sockaddr *)&b->cfg.listen[i].addr,
				      b->max_conns, &listener_ops, l, err, errlen);
		if (rc < 0)
			return rc;
		b->n_listeners++;
		log_info("nts-ke (pool) listening on %s", l->text);
	}
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
	tls_creds_unref(b->server_creds);
	b->server_creds = server;
	tls_creds_unref(b->client_creds);
	b->client_creds = client;
	upstream_io_set_creds(b->io, client);
	upstream_io_kick(b->io);
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
	for (size_t i = 0; i < b->n_listeners; i++)
		if (b->listeners[i].net)
			net_listener_close(b->listeners[i].net);
	if (b->status) {
		status_server_close(b->status);
		b->status = NULL;
	}
	close_io_when_idle(b);
}

void broker_free(struct broker *b)
{
	if (!b)
		return;
	upstream_registry_free(b->registry);
	conn_limit_free(b->per_address);
	tls_creds_unref(b->server_creds);
	tls_creds_unref(b->client_creds);
	free(b->listeners);
	config_pool_free(&b->cfg);
	free(b->config_path);
	free(b);
}
