#include "ke_listener.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>

#include "conn_limit.h"
#include "ke_conn.h"
#include "log.h"
#include "net.h"
#include "ratelimit.h"
#include "tls_creds.h"

struct ke_listener {
	uv_loop_t *loop;
	struct ke_shared *sh;
	/* This worker's views of the shared slots, refreshed before each accept and each event
	 * a session sees; the sessions read the pointers below through server_cfg. */
	struct slot_view keyset_view, tokens_view, creds_view;
	struct keyset *keyset;
	struct pool_tokens *tokens;
	struct tls_creds *creds;
	struct ke_server_config server_cfg;
	struct ke_server_stats stats;
	struct net_listener *net;
	struct net_listener_stats last_net; /* kept after the socket closed */
	struct ke_conn_group conns;	    /* open connections: shedding, a graceful stop */
	struct log_ratelimit conn_log;
};

static const char ke_where[] = "[[nts-ke-server]]";

/* Messages name the option and the line of the configuration `file` behind each file. */
static int load_creds(const struct config_daemon_nts_ke_server *cfg, const char *file,
		      struct tls_creds **out, char *err, size_t errlen)
{
	char cert[512], key[512], pool[512];
	const struct tls_server_options opt = {
		.cert_file = cfg->certificate_chain_path,
		.key_file = cfg->private_key_path,
		.pool_cert_files = (const char *const *)cfg->authorized_pool_server_certificates,
		.n_pool_cert_files = cfg->authorized_pool_server_certificate_count,
		.allow_world_readable_key = cfg->allow_world_readable_private_key,
	};
	const struct tls_creds_names names = {
		.cert = config_prefix(cert, sizeof cert, file, cfg->certificate_chain_path_line,
				      "certificate-chain-path", ke_where),
		.key = config_prefix(key, sizeof key, file, cfg->private_key_path_line,
				     "private-key-path", ke_where),
		.pool_cert = config_prefix(pool, sizeof pool, file,
					   cfg->authorized_pool_server_certificates_line,
					   "authorized-pool-server-certificates", ke_where),
	};
	return tls_creds_new_server_named(out, &opt, &names, err, errlen);
}

int ke_shared_init(struct ke_shared *sh, const struct config_daemon_nts_ke_server *cfg,
		   const char *config_file, struct slot *keyset, char *err, size_t errlen)
{
	memset(sh, 0, sizeof *sh);
	struct tls_creds *creds;
	int rc = conn_limit_new(&sh->per_address, cfg->max_connections_per_address);
	if (rc < 0) {
		snprintf(err, errlen, "nts-ke %s: out of memory", cfg->listen.text);
		return rc;
	}
	const struct config_rate_limit *rl = &cfg->rate_limit;
	if (rl->rate > 0) {
		const struct ratelimit_config rl_cfg = { .rate = rl->rate,
							 .burst = rl->burst,
							 .max_clients = rl->clients,
							 .v4_bits = (uint8_t)rl->v4_bits,
							 .v6_bits = (uint8_t)rl->v6_bits };
		uint64_t key;
		rc = gnutls_rnd(GNUTLS_RND_NONCE, &key, sizeof key) < 0 ? -EIO : 0;
		if (rc == 0)
			rc = ratelimit_new(&sh->rate_limit, &rl_cfg, key);
		if (rc < 0) {
			snprintf(err, errlen, "nts-ke %s: rate limit: %s", cfg->listen.text,
				 strerror(-rc));
			conn_limit_free(sh->per_address);
			sh->per_address = NULL;
			return rc;
		}
	}
	if ((rc = load_creds(cfg, config_file, &creds, err, errlen)) < 0) {
		conn_limit_free(sh->per_address);
		ratelimit_free(sh->rate_limit);
		sh->per_address = NULL;
		sh->rate_limit = NULL;
		return rc;
	}
	tls_creds_slot_init(&sh->creds, creds);
	pool_tokens_slot_init(&sh->tokens, pool_tokens_ref(cfg->tokens));
	sh->cfg = cfg;
	sh->config_file = config_file;
	sh->keyset = keyset;
	sh->ready = true;
	return 0;
}

int ke_shared_reload(struct ke_shared *sh, char *err, size_t errlen)
{
	struct tls_creds *fresh;
	struct pool_tokens *tokens;
	int rc = load_creds(sh->cfg, sh->config_file, &fresh, err, errlen);
	if (rc < 0)
		return rc;
	rc = config_daemon_load_tokens(sh->cfg, sh->config_file, &tokens, err, errlen);
	if (rc < 0) {
		tls_creds_unref(fresh);
		return rc;
	}
	size_t pins = tls_creds_pinned_count(fresh), toks = pool_tokens_count(tokens);
	slot_publish(&sh->creds, fresh);
	slot_publish(&sh->tokens, tokens);
	log_info("nts-ke %s: certificates reloaded (%zu authorised pool certificate%s), pool "
		 "tokens reloaded (%zu accepted pool token%s)",
		 sh->cfg->listen.text, pins, pins == 1 ? "" : "s", toks, toks == 1 ? "" : "s");
	return 0;
}

void ke_shared_deinit(struct ke_shared *sh)
{
	if (!sh->ready)
		return;
	slot_destroy(&sh->creds);
	slot_destroy(&sh->tokens);
	conn_limit_free(sh->per_address);
	ratelimit_free(sh->rate_limit);
	memset(sh, 0, sizeof *sh);
}

int ke_listener_new(struct ke_listener **out, uv_loop_t *loop, struct ke_shared *sh)
{
	struct ke_listener *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	const struct config_daemon_nts_ke_server *cfg = sh->cfg;
	l->loop = loop;
	l->sh = sh;
	ke_conn_group_init(&l->conns);
	l->conn_log = (struct log_ratelimit)LOG_RATELIMIT_INIT(5, 20);
	slot_view_init(&l->keyset_view, sh->keyset);
	slot_view_init(&l->tokens_view, &sh->tokens);
	slot_view_init(&l->creds_view, &sh->creds);
	l->server_cfg = (struct ke_server_config){
		.numbering = cfg->pool_record_numbers,
		.timeout_ms = cfg->key_exchange_timeout_ms,
		.handshake_timeout_ms = cfg->handshake_timeout_ms,
		.ntp_port = cfg->ntp_port,
		.ntp_server = cfg->ntp_server,
		.tokens = &l->tokens,
		.creds = &l->creds,
	};
	*out = l;
	return 0;
}

/* What the sessions read through their slots is what is published now. */
void ke_listener_refresh(struct ke_listener *l)
{
	l->keyset = slot_view_get(&l->keyset_view);
	l->tokens = slot_view_get(&l->tokens_view);
	l->creds = slot_view_get(&l->creds_view);
}

/* ke_server_conn as the connection driver runs it. */
KE_CONN_ADAPTERS(ke_server_conn, struct ke_server_conn)

static bool m_idle(const void *m)
{
	return ke_server_conn_idle(m);
}

static bool m_handshaking(const void *m)
{
	return ke_server_conn_handshaking(m);
}

static const struct ke_conn_machine machine_ops =
	KE_CONN_MACHINE(ke_server_conn, .idle = m_idle, .handshaking = m_handshaking);

static void on_conn_event(struct ke_conn *conn, void *machine, void *ud)
{
	(void)conn;
	(void)machine;
	ke_listener_refresh(ud);
}

static void on_conn_closed(struct ke_conn *conn, void *machine, void *ud)
{
	struct ke_listener *l = ud;
	(void)machine;
	conn_limit_release(l->sh->per_address, ke_conn_peer(conn));
}

static int on_accept(struct net_listener *nl, struct net_stream *s, void *ud)
{
	struct ke_listener *l = ud;
	(void)nl;
	/* One host cannot take every slot: beyond its share the connection is closed at once. */
	int taken = conn_limit_take(l->sh->per_address, net_stream_peer(s));
	if (taken < 0)
		return taken;
	ke_listener_refresh(l);
	struct ke_server_conn *ke = NULL;
	int rc = ke_server_conn_new(&ke, l->creds, &l->server_cfg, &l->keyset, &l->stats,
				    uv_now(l->loop));
	if (rc == 0) {
		char peer[NET_ADDR_STRLEN];
		ke_server_conn_set_peer(ke, net_addr_str(net_stream_peer(s), peer, sizeof peer));
		if (l->sh->rate_limit)
			ke_server_conn_set_rate_limit(ke, l->sh->rate_limit, net_stream_peer(s));
		const struct ke_conn_owner owner = { .before = on_conn_event,
						     .closed = on_conn_closed,
						     .ud = l,
						     .group = &l->conns };
		struct ke_conn *conn;
		rc = ke_conn_start(&conn, s, &machine_ops, ke, &owner);
	}
	if (rc < 0) {
		if (log_ratelimit_allow(&l->conn_log, uv_now(l->loop)))
			log_warn("nts-ke %s: cannot start a session: %s", l->sh->cfg->listen.text,
				 strerror(-rc));
		ke_server_conn_free(ke);
		conn_limit_release(l->sh->per_address, net_stream_peer(s));
		return rc;
	}
	return 0;
}

/* Full, and someone waits: the oldest connection that has not completed its handshake makes
 * room (a slowloris client holds a slot only until a newer one needs it). */
static bool shed(struct net_listener *nl, void *ud)
{
	struct ke_listener *l = ud;
	(void)nl;
	return ke_conn_group_shed(&l->conns);
}

static void on_listener_closed(struct net_listener *nl, void *ud)
{
	struct ke_listener *l = ud;
	l->last_net = *net_listener_stats(nl);
	l->net = NULL;
}

static const struct net_listener_ops listener_ops = {
	.on_accept = on_accept,
	.on_closed = on_listener_closed,
	.shed = shed,
};

int ke_listener_start(struct ke_listener *l, int fd, unsigned max_conns, char *err,
		      size_t errlen)
{
	return net_listener_adopt(&l->net, l->loop, fd, max_conns, &listener_ops, l, err, errlen);
}

void ke_listener_stop(struct ke_listener *l)
{
	if (l->net)
		net_listener_close(l->net);
	ke_conn_group_drain(&l->conns);
}

void ke_listener_free(struct ke_listener *l)
{
	if (!l)
		return;
	slot_view_release(&l->keyset_view);
	slot_view_release(&l->tokens_view);
	slot_view_release(&l->creds_view);
	free(l);
}

void ke_listener_counters(const struct ke_listener *l, struct ke_listener_counters *out)
{
	out->net = l->net ? *net_listener_stats(l->net) : l->last_net;
	out->ke = l->stats;
}

/* Every member of ke_server_stats is a uint64_t counter, so the sums walk them as an array. */
#define KE_STAT_WORDS (sizeof(struct ke_server_stats) / sizeof(uint64_t))
_Static_assert(sizeof(struct ke_server_stats) % sizeof(uint64_t) == 0,
	       "ke_server_stats holds uint64_t counters only");

static void sum_counters(const struct ke_listener_counters *per_worker, size_t n,
			 struct ke_listener_counters *out)
{
	memset(out, 0, sizeof *out);
	uint64_t *sum = (uint64_t *)&out->ke;
	for (size_t w = 0; w < n; w++) {
		const struct ke_listener_counters *c = &per_worker[w];
		out->net.accepted += c->net.accepted;
		out->net.paused += c->net.paused;
		out->net.accept_errors += c->net.accept_errors;
		out->net.shed += c->net.shed;
		out->net.active += c->net.active;
		const uint64_t *v = (const uint64_t *)&c->ke;
		for (size_t i = 0; i < KE_STAT_WORDS; i++)
			sum[i] += v[i];
	}
}

json_t *ke_listener_status(struct ke_shared *sh, const struct ke_listener_counters *per_worker,
			   size_t n, unsigned max_conns)
{
	struct ke_listener_counters all;
	sum_counters(per_worker, n, &all);
	const struct net_listener_stats *ns = &all.net;
	const struct ke_server_stats *st = &all.ke;
	struct tls_creds *creds = slot_acquire(&sh->creds);
	struct pool_tokens *tokens = slot_acquire(&sh->tokens);
	json_t *workers = json_array();
	for (size_t w = 0; w < n; w++)
		json_array_append_new(
			workers, json_pack("{s:I, s:I, s:I, s:I}", "worker", (json_int_t)w,
					   "accepted", (json_int_t)per_worker[w].net.accepted,
					   "active", (json_int_t)per_worker[w].net.active,
					   "completed", (json_int_t)per_worker[w].ke.completed));
	json_t *o = json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I}, s:I, s:I, s:I, s:I, "
		"s:I, s:I, s:I, s:I, s:{s:I, s:I}, s:I, s:I, s:I, s:I, s:o}",
		"listen", sh->cfg->listen.text,
		"accepted", (json_int_t)ns->accepted,
		"active", (json_int_t)ns->active,
		"limit_reached", (json_int_t)ns->paused,
		"accept_errors", (json_int_t)ns->accept_errors,
		"completed", (json_int_t)st->completed,
		"errors", "0", (json_int_t)st->errors[0], "1", (json_int_t)st->errors[1],
		"2", (json_int_t)st->errors[2],
		"no_overlap", (json_int_t)st->no_overlap,
		"timeouts", (json_int_t)st->timeouts,
		"tls_failures", (json_int_t)st->tls_failures,
		"pool_support", (json_int_t)st->pool_support,
		"pool_fixed_key", (json_int_t)st->pool_fixed_key,
		"unauthorised", (json_int_t)st->unauthorised,
		"keep_alive_reuse", (json_int_t)st->keep_alive_reuse,
		"authorized_pool_certificates", (json_int_t)tls_creds_pinned_count(creds),
		"pool_authorised", "certificate", (json_int_t)st->pool_auth_certificate,
		"token", (json_int_t)st->pool_auth_token,
		"token_refused", (json_int_t)st->token_refused,
		"accepted_pool_tokens", (json_int_t)pool_tokens_count(tokens),
		"max_connections", (json_int_t)max_conns * (json_int_t)n, "refused_per_address",
		(json_int_t)conn_limit_refused(sh->per_address), "workers", workers);
	json_object_set_new(o, "shed", json_integer((json_int_t)ns->shed));
	json_object_set_new(o, "rate_limited", json_integer((json_int_t)st->rate_limited));
	tls_creds_unref(creds);
	pool_tokens_unref(tokens);
	return o;
}

/* One counter family across listeners: name, help, and where the value sits. */
struct ke_metric {
	const char *name;
	const char *type;
	const char *help;
	uint64_t (*get)(const struct ke_listener_counters *c);
};

#define STAT_GETTER(field)                                                      \
	static uint64_t get_##field(const struct ke_listener_counters *c)       \
	{                                                                       \
		return c->ke.field;                                             \
	}
#define NET_GETTER(name, field)                                                 \
	static uint64_t get_##name(const struct ke_listener_counters *c)        \
	{                                                                       \
		return c->net.field;                                            \
	}
NET_GETTER(accepted, accepted)
NET_GETTER(active, active)
NET_GETTER(limit_reached, paused)
NET_GETTER(accept_errors, accept_errors)
NET_GETTER(shed, shed)
STAT_GETTER(completed)
STAT_GETTER(no_overlap)
STAT_GETTER(timeouts)
STAT_GETTER(tls_failures)
STAT_GETTER(pool_support)
STAT_GETTER(pool_fixed_key)
STAT_GETTER(unauthorised)
STAT_GETTER(keep_alive_reuse)
STAT_GETTER(token_refused)
STAT_GETTER(rate_limited)

static const struct ke_metric ke_metrics[] = {
	{ "ntp_daemon_ke_accepted_total", "counter", "NTS-KE connections accepted", get_accepted },
	{ "ntp_daemon_ke_active", "gauge", "NTS-KE connections open", get_active },
	{ "ntp_daemon_ke_limit_reached_total", "counter",
	  "Times accepting paused at concurrent-connections", get_limit_reached },
	{ "ntp_daemon_ke_accept_errors_total", "counter", "Failed accepts", get_accept_errors },
	{ "ntp_daemon_ke_shed_total", "counter",
	  "Connections without a completed handshake closed to admit a waiting one", get_shed },
	{ "ntp_daemon_ke_completed_total", "counter", "Key exchanges that delivered cookies",
	  get_completed },
	{ "ntp_daemon_ke_no_overlap_total", "counter", "Requests without a common protocol or AEAD",
	  get_no_overlap },
	{ "ntp_daemon_ke_timeouts_total", "counter", "Sessions cut at the deadline", get_timeouts },
	{ "ntp_daemon_ke_tls_failures_total", "counter", "Refused TLS handshakes",
	  get_tls_failures },
	{ "ntp_daemon_ke_pool_support_total", "counter",
	  "Support requests answered for authorised pools", get_pool_support },
	{ "ntp_daemon_ke_pool_fixed_key_total", "counter",
	  "Fixed Key requests answered for authorised pools", get_pool_fixed_key },
	{ "ntp_daemon_ke_unauthorised_total", "counter",
	  "Pool requests refused: neither a pinned certificate nor an accepted token",
	  get_unauthorised },
	{ "ntp_daemon_ke_token_refused_total", "counter",
	  "Pool requests whose token was not accepted or not the first record",
	  get_token_refused },
	{ "ntp_daemon_ke_keep_alive_reuse_total", "counter",
	  "Requests after the first on kept-alive connections", get_keep_alive_reuse },
	{ "ntp_daemon_ke_rate_limited_total", "counter",
	  "Key exchanges answered Error 2: the client's prefix was over its rate limit",
	  get_rate_limited },
};

void ke_listener_metrics(const struct ke_shared *shs, size_t n_ke,
			 const struct ke_listener_counters *counters, size_t n_workers,
			 struct status_text *out)
{
	char esc[128], labels[192];
	struct ke_listener_counters *sums = calloc(n_ke ? n_ke : 1, sizeof *sums);
	if (!sums)
		return;
	for (size_t k = 0; k < n_ke; k++)
		sum_counters(&counters[k * n_workers], n_workers, &sums[k]);
	for (size_t m = 0; m < sizeof ke_metrics / sizeof ke_metrics[0]; m++) {
		status_metric_header(out, ke_metrics[m].name, ke_metrics[m].type,
				     ke_metrics[m].help);
		for (size_t k = 0; k < n_ke; k++) {
			snprintf(labels, sizeof labels, "listen=\"%s\"",
				 status_label_escape(shs[k].cfg->listen.text, esc, sizeof esc));
			status_metric_value(out, ke_metrics[m].name, labels,
					    (double)ke_metrics[m].get(&sums[k]));
		}
	}
	static const char authorised[] = "ntp_daemon_ke_pool_authorised_total";
	status_metric_header(out, authorised, "counter", "Pool requests authorised, by method");
	for (size_t k = 0; k < n_ke; k++) {
		status_label_escape(shs[k].cfg->listen.text, esc, sizeof esc);
		snprintf(labels, sizeof labels, "listen=\"%s\",method=\"certificate\"", esc);
		status_metric_value(out, authorised, labels, (double)sums[k].ke.pool_auth_certificate);
		snprintf(labels, sizeof labels, "listen=\"%s\",method=\"token\"", esc);
		status_metric_value(out, authorised, labels, (double)sums[k].ke.pool_auth_token);
	}
	status_metric_header(out, "ntp_daemon_ke_errors_total", "counter",
			     "Error records sent, by code");
	for (size_t k = 0; k < n_ke; k++) {
		status_label_escape(shs[k].cfg->listen.text, esc, sizeof esc);
		for (int code = 0; code < 3; code++) {
			snprintf(labels, sizeof labels, "listen=\"%s\",code=\"%d\"", esc, code);
			status_metric_value(out, "ntp_daemon_ke_errors_total", labels,
					    (double)sums[k].ke.errors[code]);
		}
	}
	static const char per_worker[] = "ntp_daemon_ke_worker_accepted_total";
	status_metric_header(out, per_worker, "counter", "NTS-KE connections accepted, by worker");
	for (size_t k = 0; k < n_ke; k++) {
		status_label_escape(shs[k].cfg->listen.text, esc, sizeof esc);
		for (size_t w = 0; w < n_workers; w++) {
			snprintf(labels, sizeof labels, "listen=\"%s\",worker=\"%zu\"", esc, w);
			status_metric_value(out, per_worker, labels,
					    (double)counters[k * n_workers + w].net.accepted);
		}
	}
	free(sums);
}
