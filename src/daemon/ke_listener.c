#include "ke_listener.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_limit.h"
#include "ke_conn.h"
#include "log.h"
#include "net.h"
#include "tls_creds.h"

struct ke_listener {
	uv_loop_t *loop;
	const struct config_daemon_nts_ke_server *cfg;
	const char *config_file;
	struct keyset *const *keyset_slot;
	struct pool_tokens *tokens; /* one reference; read by every connection at each request */
	struct ke_server_config server_cfg;
	struct ke_server_stats stats;
	struct tls_creds *creds; /* one reference; each session holds its own */
	struct net_listener *net;
	struct net_listener_stats last_net; /* kept after the socket closed */
	struct session *sessions;	    /* open connections, for a graceful stop */
	struct log_ratelimit conn_log;
	unsigned max_conns; /* in force: concurrent-connections, or less for the descriptors */
	struct conn_limit *per_address; /* max-connections-per-address */
};

/* One accepted connection in the listener's list (for a graceful stop). Freed when the driver
 * reports it closed. */
struct session {
	struct ke_listener *l;
	struct ke_conn *conn;
	struct session *prev, *next;
};

static int load_creds(const struct config_daemon_nts_ke_server *cfg, struct tls_creds **out,
		      char *err, size_t errlen)
{
	struct tls_server_options opt = {
		.cert_file = cfg->certificate_chain_path,
		.key_file = cfg->private_key_path,
		.pool_cert_files = (const char *const *)cfg->authorized_pool_server_certificates,
		.n_pool_cert_files = cfg->authorized_pool_server_certificate_count,
	};
	return tls_creds_new_server(out, &opt, err, errlen);
}

int ke_listener_new(struct ke_listener **out, uv_loop_t *loop,
		    const struct config_daemon_nts_ke_server *cfg, const char *config_file,
		    struct keyset *const *keyset_slot, char *err, size_t errlen)
{
	struct ke_listener *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	int rc = conn_limit_new(&l->per_address, cfg->max_connections_per_address);
	if (rc < 0) {
		snprintf(err, errlen, "nts-ke %s: out of memory", cfg->listen.text);
		free(l);
		return rc;
	}
	rc = load_creds(cfg, &l->creds, err, errlen);
	if (rc < 0) {
		conn_limit_free(l->per_address);
		free(l);
		return rc;
	}
	l->tokens = pool_tokens_ref(cfg->tokens);
	l->loop = loop;
	l->conn_log = (struct log_ratelimit)LOG_RATELIMIT_INIT(5, 20);
	l->cfg = cfg;
	l->config_file = config_file;
	l->keyset_slot = keyset_slot;
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

/* ke_server_conn as the connection driver runs it. */
KE_CONN_ADAPTERS(ke_server_conn, struct ke_server_conn)

static bool m_idle(const void *m)
{
	return ke_server_conn_idle(m);
}

static const struct ke_conn_machine machine_ops = KE_CONN_MACHINE(ke_server_conn, .idle = m_idle);

static void on_conn_closed(struct ke_conn *conn, void *machine, void *ud)
{
	struct session *se = ud;
	(void)machine;
	conn_limit_release(se->l->per_address, ke_conn_peer(conn));
	if (se->prev)
		se->prev->next = se->next;
	else
		se->l->sessions = se->next;
	if (se->next)
		se->next->prev = se->prev;
	free(se);
}

static int on_accept(struct net_listener *nl, struct net_stream *s, void *ud)
{
	struct ke_listener *l = ud;
	(void)nl;
	/* One host cannot take every slot: beyond its share the connection is closed at once. */
	int taken = conn_limit_take(l->per_address, net_stream_peer(s));
	if (taken < 0)
		return taken;
	struct session *se = calloc(1, sizeof *se);
	struct ke_server_conn *ke = NULL;
	int rc = se ? ke_server_conn_new(&ke, l->creds, &l->server_cfg, l->keyset_slot, &l->stats,
					 uv_now(l->loop))
		    : -ENOMEM;
	if (rc == 0) {
		se->l = l;
		char peer[NET_ADDR_STRLEN];
		ke_server_conn_set_peer(ke, net_addr_str(net_stream_peer(s), peer, sizeof peer));
		const struct ke_conn_owner owner = { .closed = on_conn_closed, .ud = se };
		rc = ke_conn_start(&se->conn, s, &machine_ops, ke, &owner);
	}
	if (rc < 0) {
		if (log_ratelimit_allow(&l->conn_log, uv_now(l->loop)))
			log_warn("nts-ke %s: cannot start a session: %s", l->cfg->listen.text,
				 strerror(-rc));
		ke_server_conn_free(ke);
		free(se);
		conn_limit_release(l->per_address, net_stream_peer(s));
		return rc;
	}
	se->next = l->sessions;
	if (l->sessions)
		l->sessions->prev = se;
	l->sessions = se;
	return 0;
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
};

int ke_listener_start(struct ke_listener *l, unsigned max_conns, char *err, size_t errlen)
{
	l->max_conns = max_conns;
	int rc = net_listener_new(&l->net, l->loop, (const struct sockaddr *)&l->cfg->listen.addr,
				  max_conns, &listener_ops, l, err, errlen);
	if (rc < 0)
		return rc;
	size_t pins = tls_creds_pinned_count(l->creds), toks = pool_tokens_count(l->tokens);
	log_info("nts-ke listening on %s (%zu authorised pool certificate%s, %zu accepted pool "
		 "token%s)",
		 l->cfg->listen.text, pins, pins == 1 ? "" : "s", toks, toks == 1 ? "" : "s");
	return 0;
}

int ke_listener_reload(struct ke_listener *l, char *err, size_t errlen)
{
	struct tls_creds *fresh;
	struct pool_tokens *tokens;
	int rc = load_creds(l->cfg, &fresh, err, errlen);
	if (rc < 0)
		return rc;
	rc = config_daemon_load_tokens(l->cfg, l->config_file, &tokens, err, errlen);
	if (rc < 0) {
		tls_creds_unref(fresh);
		return rc;
	}
	tls_creds_unref(l->creds);
	l->creds = fresh;
	pool_tokens_unref(l->tokens);
	l->tokens = tokens;
	size_t pins = tls_creds_pinned_count(fresh), toks = pool_tokens_count(tokens);
	log_info("nts-ke %s: certificates reloaded (%zu authorised pool certificate%s), pool "
		 "tokens reloaded (%zu accepted pool token%s)",
		 l->cfg->listen.text, pins, pins == 1 ? "" : "s", toks, toks == 1 ? "" : "s");
	return 0;
}

void ke_listener_stop(struct ke_listener *l)
{
	if (l->net)
		net_listener_close(l->net);
	/* Draining only asks for closes; the list changes when the driver reports them, later. */
	for (struct session *se = l->sessions; se; se = se->next)
		ke_conn_drain(se->conn);
}

void ke_listener_free(struct ke_listener *l)
{
	if (!l)
		return;
	tls_creds_unref(l->creds);
	pool_tokens_unref(l->tokens);
	conn_limit_free(l->per_address);
	free(l);
}

static const struct net_listener_stats *net_stats(const struct ke_listener *l)
{
	return l->net ? net_listener_stats(l->net) : &l->last_net;
}

json_t *ke_listener_status(const struct ke_listener *l)
{
	const struct net_listener_stats *ns = net_stats(l);
	const struct ke_server_stats *st = &l->stats;
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I}, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:I, s:I, s:{s:I, s:I}, s:I, s:I, s:I, s:I}",
			 "listen", l->cfg->listen.text,
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
			 "authorized_pool_certificates",
			 (json_int_t)tls_creds_pinned_count(l->creds),
			 "pool_authorised", "certificate", (json_int_t)st->pool_auth_certificate,
			 "token", (json_int_t)st->pool_auth_token,
			 "token_refused", (json_int_t)st->token_refused,
			 "accepted_pool_tokens", (json_int_t)pool_tokens_count(l->tokens),
			 "max_connections", (json_int_t)l->max_conns, "refused_per_address",
			 (json_int_t)conn_limit_refused(l->per_address));
}

/* One counter family across listeners: name, help, and where the value sits. */
struct ke_metric {
	const char *name;
	const char *type;
	const char *help;
	uint64_t (*get)(const struct ke_listener *l);
};

#define STAT_GETTER(field)                                              \
	static uint64_t get_##field(const struct ke_listener *l)        \
	{                                                               \
		return l->stats.field;                                  \
	}
#define NET_GETTER(name, field)                                         \
	static uint64_t get_##name(const struct ke_listener *l)         \
	{                                                               \
		return net_stats(l)->field;                             \
	}
NET_GETTER(accepted, accepted)
NET_GETTER(active, active)
NET_GETTER(limit_reached, paused)
NET_GETTER(accept_errors, accept_errors)
STAT_GETTER(completed)
STAT_GETTER(no_overlap)
STAT_GETTER(timeouts)
STAT_GETTER(tls_failures)
STAT_GETTER(pool_support)
STAT_GETTER(pool_fixed_key)
STAT_GETTER(unauthorised)
STAT_GETTER(keep_alive_reuse)
STAT_GETTER(token_refused)

static const struct ke_metric ke_metrics[] = {
	{ "ntp_daemon_ke_accepted_total", "counter", "NTS-KE connections accepted", get_accepted },
	{ "ntp_daemon_ke_active", "gauge", "NTS-KE connections open", get_active },
	{ "ntp_daemon_ke_limit_reached_total", "counter",
	  "Times accepting paused at concurrent-connections", get_limit_reached },
	{ "ntp_daemon_ke_accept_errors_total", "counter", "Failed accepts", get_accept_errors },
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
};

void ke_listener_metrics(const struct ke_listener *const *ls, size_t n, struct status_text *out)
{
	char esc[128], labels[192];
	for (size_t m = 0; m < sizeof ke_metrics / sizeof ke_metrics[0]; m++) {
		status_metric_header(out, ke_metrics[m].name, ke_metrics[m].type,
				     ke_metrics[m].help);
		for (size_t i = 0; i < n; i++) {
			snprintf(labels, sizeof labels, "listen=\"%s\"",
				 status_label_escape(ls[i]->cfg->listen.text, esc, sizeof esc));
			status_metric_value(out, ke_metrics[m].name, labels,
					    (double)ke_metrics[m].get(ls[i]));
		}
	}
	status_metric_header(out, "ntp_daemon_ke_pool_authorised_total", "counter",
			     "Pool requests authorised, by method");
	for (size_t i = 0; i < n; i++) {
		status_label_escape(ls[i]->cfg->listen.text, esc, sizeof esc);
		snprintf(labels, sizeof labels, "listen=\"%s\",method=\"certificate\"", esc);
		status_metric_value(out, "ntp_daemon_ke_pool_authorised_total", labels,
				    (double)ls[i]->stats.pool_auth_certificate);
		snprintf(labels, sizeof labels, "listen=\"%s\",method=\"token\"", esc);
		status_metric_value(out, "ntp_daemon_ke_pool_authorised_total", labels,
				    (double)ls[i]->stats.pool_auth_token);
	}
	status_metric_header(out, "ntp_daemon_ke_errors_total", "counter",
			     "Error records sent, by code");
	for (size_t i = 0; i < n; i++) {
		status_label_escape(ls[i]->cfg->listen.text, esc, sizeof esc);
		for (int code = 0; code < 3; code++) {
			snprintf(labels, sizeof labels, "listen=\"%s\",code=\"%d\"", esc, code);
			status_metric_value(out, "ntp_daemon_ke_errors_total", labels,
					    (double)ls[i]->stats.errors[code]);
		}
	}
}
