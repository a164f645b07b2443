#include "broker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <jansson.h>

#include "conn_limit.h"
#include "ke_conn.h"
#include "log.h"
#include "net.h"
#include "program.h"
#include "ratelimit.h"
#include "status.h"
#include "tls_creds.h"
#include "upstream.h"
#include "upstream_io.h"
#include "workers.h"

/* Retry bounds after a failed probe (PROTOCOL.md §4.3: exponential, capped at 10 minutes). */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS (10 * 60 * 1000)


static const char server_where[] = "[nts-pool-ke-server]";

/* Messages name the option and the line of the configuration `file` behind each file. */
static int load_creds(const struct config_pool *cfg, const char *file, struct tls_creds **server,
		      struct tls_creds **client, char *err, size_t errlen)
{
	char cert[512], key[512], ca[512];
	const struct tls_creds_names names = {
		.cert = config_prefix(cert, sizeof cert, file, cfg->certificate_chain_path_line,
				      "certificate-chain-path", server_where),
		.key = config_prefix(key, sizeof key, file, cfg->private_key_path_line,
				     "private-key-path", server_where),
		.ca = config_prefix(ca, sizeof ca, file, cfg->certificate_authority_path_line,
				    "certificate-authority-path", server_where),
	};
	struct tls_server_options so = {
		.cert_file = cfg->certificate_chain_path,
		.key_file = cfg->private_key_path,
		.allow_world_readable_key = cfg->allow_world_readable_private_key,
	};
	int rc = tls_creds_new_server_named(server, &so, &names, err, errlen);
	if (rc < 0)
		return rc;
	struct tls_client_options co = {
		.ca_file = cfg->certificate_authority_path,
		.cert_file = cfg->certificate_chain_path,
		.key_file = cfg->private_key_path,
		.allow_world_readable_key = cfg->allow_world_readable_private_key,
	};
	rc = tls_creds_new_client_named(client, &co, &names, err, errlen);
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
					       .token = cfg->key_exchange_servers[i].token,
					       .regions = (const char *const *)cfg
								  ->key_exchange_servers[i]
								  .regions,
					       .n_regions =
						       cfg->key_exchange_servers[i].region_count };
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
		.rise = c->healthy_after_passes,
		.fall = c->unhealthy_after_failures,
	};
}

/* The client lookup of cfg: its [[region]] table and its country database. *out may be NULL
 * when neither is configured. A database that fails is named by its option and line in the
 * configuration `file`. */
static int load_geo(const struct config_pool *cfg, const char *file, struct geo **out, char *err,
		    size_t errlen)
{
	*out = NULL;
	if (cfg->region_count == 0 && !cfg->geoip_database_path)
		return 0;
	struct geo_region *regions = calloc(cfg->region_count + 1, sizeof *regions);
	if (!regions) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->region_count; i++)
		regions[i] = (struct geo_region){ .name = cfg->regions[i].name,
						  .prefixes = cfg->regions[i].prefixes,
						  .n_prefixes = cfg->regions[i].prefix_count };
	char why[512];
	int rc = geo_new(out, regions, cfg->region_count, cfg->geoip_database_path, why,
			 sizeof why);
	free(regions);
	if (rc < 0) {
		const char *db = cfg->geoip_database_path;
		snprintf(err, errlen, "%s", why);
		/* geo_new names the database first ("PATH: reason"); anything else is a region. */
		if (db && strncmp(why, db, strlen(db)) == 0 && why[strlen(db)] == ':')
			program_file_error(rc, file, cfg->geoip_database_path_line,
					   "geoip-database-path", server_where, err, errlen);
		return rc;
	}
	const char *type;
	uint64_t built;
	if (geo_database_info(*out, &type, &built))
		log_info("geographic selection: %s (%s, built %llu)", cfg->geoip_database_path,
			 type, (unsigned long long)built);
	return 0;
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
void broker_drain_events(struct broker *b)
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
	broker_drain_events(h->data);
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
		broker_drain_events(b);
	broker_close_main_handles(b);
	if (b->io) {
		upstream_io_close(b->io);
		b->io = NULL;
	}
}

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
	atomic_init(&b->min_region_servers, b->cfg.min_region_servers);
	b->config_path = strdup(config_path);
	if (!b->config_path)
		return -ENOMEM;
	apply_limits(b);

	int rc = privdrop_plan(&b->priv, b->cfg.user, b->config_path, b->cfg.user_line, server_where,
			       err, errlen);
	if (rc < 0)
		return rc;
	struct tls_creds *server, *client;
	rc = load_creds(&b->cfg, b->config_path, &server, &client, err, errlen);
	if (rc < 0)
		return rc;
	tls_creds_slot_init(&b->server_creds, server);
	tls_creds_slot_init(&b->client_creds, client);
	b->creds_ready = true;
	struct geo *geo;
	rc = load_geo(&b->cfg, b->config_path, &geo, err, errlen);
	if (rc < 0)
		return rc;
	geo_slot_init(&b->geo, geo);
	b->geo_ready = true;
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
		slot_view_init(&bw->geo_view, &b->geo);
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

/* The files SIGHUP re-reads, as the account: one it cannot read would fail the next reload,
 * which re-reads the configuration file itself first. */
static void warn_unreadable(const struct broker *b)
{
	const struct config_pool *c = &b->cfg;
	program_warn_unreadable(b->config_path, NULL, 0, NULL, NULL);
	program_warn_unreadable(c->certificate_chain_path, b->config_path,
				c->certificate_chain_path_line, "certificate-chain-path",
				server_where);
	program_warn_unreadable(c->private_key_path, b->config_path, c->private_key_path_line,
				"private-key-path", server_where);
	program_warn_unreadable(c->certificate_authority_path, b->config_path,
				c->certificate_authority_path_line, "certificate-authority-path",
				server_where);
	program_warn_unreadable(c->geoip_database_path, b->config_path,
				c->geoip_database_path_line, "geoip-database-path", server_where);
	for (size_t i = 0; i < c->key_exchange_server_count; i++)
		program_warn_unreadable(c->key_exchange_servers[i].token_path, b->config_path,
					c->key_exchange_servers[i].line,
					"authentication-token-path",
					"[nts-pool-ke-server] key-exchange-servers entry");
}

/* The process model (doc/deploy.md): the listeners and the status endpoints are bound while the
 * process is one thread and still privileged; then it drops to its account with no capability
 * left, before it connects to an upstream, reads a byte from a client or starts a thread. */
int broker_start(struct broker *b, char *err, size_t errlen)
{
	b->started_ms = uv_now(b->loop);
	int rc = conn_limit_new(&b->per_address, b->cfg.max_connections_per_address);
	const struct config_rate_limit *rl = &b->cfg.rate_limit;
	if (rc == 0 && rl->rate > 0) {
		uint64_t key;
		const struct ratelimit_config rc_cfg = { .rate = rl->rate,
							 .burst = rl->burst,
							 .max_clients = rl->clients,
							 .v4_bits = (uint8_t)rl->v4_bits,
							 .v6_bits = (uint8_t)rl->v6_bits };
		rc = gnutls_rnd(GNUTLS_RND_NONCE, &key, sizeof key) < 0 ? -EIO : 0;
		if (rc == 0)
			rc = ratelimit_new(&b->rate_limit, &rc_cfg, key);
	}
	if (rc == 0)
		rc = start_main_handles(b);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	unsigned n = b->n_workers;
	for (size_t l = 0; l < b->n_listen; l++) {
		rc = net_bind_group((const struct sockaddr *)&b->cfg.listen[l].addr, SOCK_STREAM, n,
				    &b->listen_fds[l * n], err, errlen);
		if (rc < 0)
			return program_listen_error(rc, b->config_path, &b->cfg.listen[l], "listen",
						    server_where, err, errlen);
	}
	struct status_endpoint_failure failed;
	rc = status_endpoints_open(&b->status, b->loop, &b->cfg.observability, b->config_path,
				   "[observability]", &broker_status_provider, b, &failed, err,
				   errlen);
	if (rc < 0)
		return failed.listen ? program_listen_error(rc, b->config_path, failed.listen,
							    failed.key, "[observability]", err,
							    errlen)
				     : rc;
	if ((rc = privdrop_apply(&b->priv, 0, err, errlen)) < 0)
		return rc;
	char who[128];
	privdrop_describe(who, sizeof who);
	log_info("running as %s", who);
	warn_unreadable(b);
	struct tls_creds *client = slot_acquire(&b->client_creds);
	rc = upstream_io_new(&b->io, b->loop, client, b->registry, &b->io_cfg);
	tls_creds_unref(client);
	if (rc < 0) {
		snprintf(err, errlen, "upstream connections: %s", strerror(-rc));
		return rc;
	}
	/* Each worker may hold upstream-connections per upstream, the control plane one more for
	 * its probe, and every deep check a UDP socket. */
	unsigned fixed = PROGRAM_FD_RESERVE +
			 (unsigned)b->cfg.key_exchange_server_count *
				 (b->cfg.upstream_connections * n + 2) +
			 status_endpoints_max_fds(&b->cfg.observability);
	b->max_conns = program_conn_cap("max-connections", b->cfg.max_connections,
					(unsigned)b->n_listen, n, fixed);
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
	if (load_creds(&fresh, b->config_path, &server, &client, err, sizeof err) < 0) {
		log_warn("reload failed, keeping the running configuration: %s", err);
		config_pool_free(&fresh);
		return;
	}
	struct geo *geo = NULL;
	if (load_geo(&fresh, b->config_path, &geo, err, sizeof err) < 0) {
		log_warn("reload failed, keeping the running configuration: %s", err);
		tls_creds_unref(server);
		tls_creds_unref(client);
		config_pool_free(&fresh);
		return;
	}
	struct upstream_spec *specs = specs_of(&fresh);
	if (!specs || upstream_registry_update(b->registry, specs, fresh.key_exchange_server_count,
					       uv_now(b->loop)) < 0) {
		log_warn("reload failed, keeping the running configuration: out of memory");
		free(specs);
		geo_unref(geo);
		tls_creds_unref(server);
		tls_creds_unref(client);
		config_pool_free(&fresh);
		return;
	}
	free(specs);
	broker_warn_restart_keys(&b->cfg, &fresh);
	slot_publish(&b->geo, geo);
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
	b->cfg.certificate_chain_path_line = fresh.certificate_chain_path_line;
	b->cfg.private_key_path_line = fresh.private_key_path_line;
	b->cfg.certificate_authority_path_line = fresh.certificate_authority_path_line;
	fresh.certificate_chain_path = fresh.private_key_path = NULL;
	fresh.certificate_authority_path = NULL;
	/* Geography is read per pick, so its bound reloads with the table and the database; the
	 * table and the database's path are kept for /status (the workers read the geo). */
	atomic_store_explicit(&b->min_region_servers, fresh.min_region_servers,
			      memory_order_relaxed);
	struct config_region *regions = b->cfg.regions;
	size_t region_count = b->cfg.region_count;
	char *geoip = b->cfg.geoip_database_path;
	b->cfg.regions = fresh.regions;
	b->cfg.region_count = fresh.region_count;
	b->cfg.geoip_database_path = fresh.geoip_database_path;
	b->cfg.geoip_database_path_line = fresh.geoip_database_path_line;
	fresh.regions = regions;
	fresh.region_count = region_count;
	fresh.geoip_database_path = geoip;
	config_pool_free(&fresh);
	log_info("reloaded: certificates, regions and %zu upstream(s)",
		 upstream_count(b->registry));
}

void broker_stop(struct broker *b)
{
	if (b->stopping)
		return;
	b->stopping = true;
	log_info("stopping");
	status_endpoints_close(&b->status);
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
	ratelimit_free(b->rate_limit);
	if (b->geo_ready)
		slot_destroy(&b->geo);
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
