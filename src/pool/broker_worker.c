#include "broker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cidr.h"
#include "conn_limit.h"
#include "ke_conn.h"
#include "ratelimit.h"
#include "tls_creds.h"
#include "workers.h"

/* One client connection: its session runs on the connection driver, which owns and frees it. */
struct client {
	struct broker_worker *bw;
	struct ke_conn *conn;
	struct pool_session *session;
	struct pool_session_upstreams ups; /* picks for this client (ud: the client) */
	struct upstream_io_exchange *exchange; /* outstanding upstream work, or NULL */
	uint32_t upstream;
	bool admitted;	     /* its real address known and its per-address slot taken */
	bool proxied;	     /* the address came from a PROXY header */
	bool local;	     /* ... a LOCAL one: the balancer itself (its health check) */
	struct sockaddr_storage addr; /* the real client address, once admitted */
	struct geo_levels levels;
	int quarter; /* the SNI sub-pool of the last pick, -1 for none */
	uint64_t started_ns, exchange_ns; /* monotonic */
};

static void close_io_when_idle(struct broker_worker *bw)
{
	if (bw->stopping && bw->clients == 0 && bw->io) {
		upstream_io_close(bw->io);
		bw->io = NULL;
	}
}

static uint8_t family_of(const struct sockaddr_storage *a)
{
	uint8_t family, addr[16];
	if (!cidr_addr_of((const struct sockaddr *)a, &family, addr))
		return 0;
	return family == AF_INET ? UPSTREAM_FAMILY_IPV4 : UPSTREAM_FAMILY_IPV6;
}

/* Selection for one client from the snapshot this worker holds now: its region levels, its SNI
 * sub-pool and its address family. A new snapshot also tells the worker's connections (an
 * upstream removed or renumbered leaves its idle connections useless). */
static int pick(void *ud, const struct pool_pick_query *pq, struct pool_upstream_info *out)
{
	struct client *c = ud;
	struct broker_worker *bw = c->bw;
	const struct upstream_snapshot *snap = slot_view_get(&bw->snapshot_view);
	if (snap != bw->last_snapshot) {
		bw->last_snapshot = snap;
		if (bw->io)
			upstream_io_kick(bw->io);
	}
	const char *levels[GEO_LEVELS_MAX];
	for (size_t i = 0; i < c->levels.n; i++)
		levels[i] = c->levels.name[i];
	c->quarter = upstream_sni_quarter(pq->sni);
	const struct upstream_pick_query q = {
		.req = pq->req,
		.tried = pq->tried,
		.n_tried = pq->n_tried,
		.now_ms = pq->now_ms,
		.levels = levels,
		.level_kinds = c->levels.kind,
		.n_levels = c->levels.n,
		.min_region_servers = atomic_load_explicit(&bw->b->min_region_servers,
							   memory_order_relaxed),
		.quarter = c->quarter,
		.family = family_of(&c->addr),
	};
	return upstream_snapshot_pick_for(snap, bw->picker, &q, out);
}

/* ---- upstream exchanges ---- */

static void start_upstream_work(struct client *c);

static void report(struct broker_worker *bw, enum broker_event_kind kind, uint32_t id,
		   uint64_t latency_ms, const char *text)
{
	struct broker_event ev = { .kind = kind, .id = id, .latency_ms = latency_ms };
	snprintf(ev.text, sizeof ev.text, "%s", text ? text : "");
	broker_event_push(bw->b, &ev);
}

/* An upstream failure during a session: reported (the registry makes the upstream due for a
 * probe), the session told (it fails over only while the keys have not left). */
static void upstream_failed(struct client *c, int err, bool keys_sent, const char *reason)
{
	report(c->bw, BROKER_FAILED, c->upstream, 0, reason);
	pool_session_upstream_failed(c->session, keys_sent, err, uv_now(c->bw->loop));
}

static void on_upstream_done(void *ud, const struct upstream_io_result *r)
{
	struct client *c = ud;
	struct broker_worker *bw = c->bw;
	uint64_t now = uv_now(bw->loop);
	const struct ke_msg_response *resp = r->resp;
	c->exchange = NULL;
	histogram_observe(&bw->wstats.upstream_seconds,
			  (double)(uv_hrtime() - c->exchange_ns) / 1e9);
	if (r->err == -ETIMEDOUT) {
		/* In words an operator can act on, with the bound that ran out. */
		char why[64];
		snprintf(why, sizeof why, "timed out after %.1f s",
			 (double)bw->b->io_cfg.upstream_timeout_ms / 1000.0);
		upstream_failed(c, r->err, r->keys_sent, why);
	} else if (r->err < 0) {
		upstream_failed(c, r->err, r->keys_sent, r->reason);
	} else {
		if (r->parse_rc == 0) {
			report(bw, BROKER_SERVED, c->upstream, r->latency_ms,
			       resp->has_server ? resp->server.name : NULL);
		} else {
			char why[64];
			if (resp && resp->has_error)
				snprintf(why, sizeof why, "upstream answered Error %u", resp->error);
			else
				snprintf(why, sizeof why, "malformed answer");
			report(bw, BROKER_FAILED, c->upstream, 0, why);
		}
		pool_session_upstream_response(c->session, r->parse_rc, resp, now);
	}
	ke_conn_kick(c->conn);
	start_upstream_work(c);
}

/* Hands the session's Fixed Key request to the worker's upstream_io. A request refused outright
 * never left, so the session moves on to its next candidate (bounded by max-upstream-attempts). */
static void start_upstream_work(struct client *c)
{
	uint32_t id;
	const uint8_t *req;
	size_t len;
	while (!c->exchange && pool_session_upstream_request(c->session, &id, &req, &len)) {
		c->upstream = id;
		c->exchange_ns = uv_hrtime();
		int rc = c->bw->io ? upstream_io_exchange(c->bw->io, id, req, len,
							  KE_MSG_REQUEST_FIXED_KEY, on_upstream_done,
							  c, &c->exchange)
				   : -ESHUTDOWN;
		if (rc == 0)
			return;
		upstream_failed(c, rc, false, strerror(-rc));
		ke_conn_kick(c->conn);
	}
}

/* ---- client connections ---- */

/* pool_session as the connection driver runs it. */
KE_CONN_ADAPTERS(pool_session, struct pool_session)

static bool m_handshaking(const void *m)
{
	return pool_session_handshaking(m);
}

static const struct ke_conn_machine machine_ops =
	KE_CONN_MACHINE(pool_session, .handshaking = m_handshaking);

/* After each client event the session may want its upstream exchange. */
static void on_progress(struct ke_conn *conn, void *machine, void *ud)
{
	(void)conn;
	(void)machine;
	start_upstream_work(ud);
}

static void remember(struct client *c)
{
	struct broker_worker *bw = c->bw;
	double duration = (double)(uv_hrtime() - c->started_ns) / 1e9;
	/* Neither a connection refused before it was a client's nor the load balancer's own
	 * health checks are sessions: they would crowd the clients out of the list and the
	 * histogram. */
	if (!c->admitted || c->local)
		return;
	histogram_observe(&bw->wstats.session_seconds, duration);
	struct broker_recent *r = &bw->recent[bw->recent_next];
	bw->recent_next = (bw->recent_next + 1) % BROKER_RECENT_MAX;
	if (bw->n_recent < BROKER_RECENT_MAX)
		bw->n_recent++;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	*r = (struct broker_recent){ .ended_ms = (uint64_t)ts.tv_sec * 1000 +
						 (uint64_t)ts.tv_nsec / 1000000,
				     .duration_s = duration,
				     .quarter = c->quarter };
	const struct sockaddr *via = ke_conn_via(c->conn);
	net_addr_str(c->admitted ? (const struct sockaddr *)&c->addr : via, r->client,
		     sizeof r->client);
	if (c->proxied)
		net_addr_str(via, r->via, sizeof r->via);
	const char *why = pool_session_reason(c->session);
	snprintf(r->outcome, sizeof r->outcome, "%s", !c->admitted ? "refused"
						      : why[0]	  ? why
								  : "closed");
	snprintf(r->upstream, sizeof r->upstream, "%s", pool_session_upstream_name(c->session));
	if (c->levels.n)
		snprintf(r->region, sizeof r->region, "%s", c->levels.name[0]);
}

static void on_client_closed(struct ke_conn *conn, void *machine, void *ud)
{
	struct client *c = ud;
	struct broker_worker *bw = c->bw;
	(void)machine;
	/* Behind a load balancer, a connection that ended before its client was admitted had no
	 * usable header (an admission refused over the per-address limit is counted there). */
	if (c->proxied && !c->admitted && ke_conn_error(conn) != -EBUSY)
		bw->wstats.proxy_refused++;
	remember(c);
	if (c->admitted)
		conn_limit_release(bw->b->per_address, (const struct sockaddr *)&c->addr);
	if (c->exchange)
		upstream_io_cancel(c->exchange);
	free(c);
	bw->clients--;
	close_io_when_idle(bw);
}

/* The client's real address is known (at accept, or once its PROXY header is read): one host
 * cannot take every slot (beyond its share the connection is closed), a host over its rate
 * limit gets a quick Error 2, and its region levels are looked up once. */
static int admit(struct client *c, const struct sockaddr *client)
{
	struct broker_worker *bw = c->bw;
	struct broker *b = bw->b;
	int taken = conn_limit_take(b->per_address, client);
	if (taken < 0)
		return taken;
	c->admitted = true;
	memcpy(&c->addr, client,
	       client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					     : sizeof(struct sockaddr_in));
	char peer[NET_ADDR_STRLEN];
	pool_session_set_peer(c->session, net_addr_str(client, peer, sizeof peer));
	if (!c->local)
		pool_session_admitted(c->session);
	if (b->rate_limit && !ratelimit_allow(b->rate_limit, client, uv_now(bw->loop)))
		pool_session_refuse_rate_limited(c->session);
	geo_lookup(slot_view_get(&bw->geo_view), client, &c->levels);
	return 0;
}

static int on_proxy_admit(struct ke_conn *conn, void *machine, const struct sockaddr *client,
			  void *ud)
{
	struct client *c = ud;
	struct sockaddr_storage via;
	(void)machine;
	memcpy(&via, ke_conn_via(conn),
	       ke_conn_via(conn)->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							: sizeof(struct sockaddr_in));
	c->local = net_addr_equal(client, &via);
	return admit(c, client);
}

static int on_accept(struct net_listener *nl, struct net_stream *s, void *ud)
{
	struct broker_worker *bw = ud;
	struct broker *b = bw->b;
	(void)nl;
	const struct sockaddr *peer = net_stream_peer(s);
	/* Behind a load balancer only it may connect: anyone else could forge a header. */
	if (b->cfg.proxy_protocol &&
	    cidr_match(b->cfg.proxy_protocol_from, b->cfg.proxy_protocol_from_count, peer) < 0) {
		bw->wstats.proxy_refused++;
		if (log_ratelimit_allow(&bw->session_log, uv_now(bw->loop))) {
			char text[NET_ADDR_STRLEN];
			log_warn("worker %u: %s is not in proxy-protocol-from; connection closed",
				 worker_index(bw->w), net_addr_str(peer, text, sizeof text));
		}
		return -EPERM;
	}
	struct client *c = calloc(1, sizeof *c);
	struct pool_session *session = NULL;
	int rc = -ENOMEM;
	if (c) {
		c->bw = bw;
		c->ups = (struct pool_session_upstreams){ .pick = pick, .ud = c };
		c->upstream = UINT32_MAX;
		c->quarter = -1;
		c->started_ns = uv_hrtime();
		rc = pool_session_new(&session, slot_view_get(&bw->server_creds_view),
				      &b->session_cfg, &c->ups, &bw->stats, uv_now(bw->loop));
	}
	if (rc == 0) {
		c->session = session;
		if (!b->cfg.proxy_protocol)
			rc = admit(c, peer);
	}
	if (rc == 0) {
		c->proxied = b->cfg.proxy_protocol;
		const struct ke_conn_owner owner = { .progress = on_progress,
						     .closed = on_client_closed,
						     .admit = c->proxied ? on_proxy_admit : NULL,
						     .proxy = c->proxied,
						     .ud = c,
						     .group = &bw->conns };
		rc = ke_conn_start(&c->conn, s, &machine_ops, session, &owner);
	}
	if (rc < 0) {
		if (rc != -EBUSY && log_ratelimit_allow(&bw->session_log, uv_now(bw->loop)))
			log_warn("worker %u: cannot start a session: %s", worker_index(bw->w),
				 strerror(-rc));
		if (c && c->admitted)
			conn_limit_release(b->per_address, peer);
		pool_session_free(session);
		free(c);
		return rc;
	}
	bw->clients++;
	return 0;
}

/* Full, and someone waits: the oldest client that has not completed its handshake makes room. */
static bool shed(struct net_listener *nl, void *ud)
{
	struct broker_worker *bw = ud;
	(void)nl;
	return ke_conn_group_shed(&bw->conns);
}

static void on_listener_closed(struct net_listener *nl, void *ud)
{
	struct broker_worker *bw = ud;
	for (size_t i = 0; i < bw->b->n_listen; i++) {
		if (bw->listeners[i] == nl) {
			bw->last_listeners[i] = *net_listener_stats(nl);
			bw->listeners[i] = NULL;
		}
	}
}

static const struct net_listener_ops listener_ops = {
	.on_accept = on_accept,
	.on_closed = on_listener_closed,
	.shed = shed,
};

/* ---- the worker's hooks ---- */

static int worker_start(struct worker *w, char *err, size_t errlen)
{
	struct broker_worker *bw = worker_ud(w);
	struct broker *b = bw->b;
	unsigned i = worker_index(w), n = b->n_workers;
	bw->w = w;
	bw->loop = worker_loop(w);
	histogram_init_default(&bw->wstats.session_seconds);
	histogram_init_default(&bw->wstats.upstream_seconds);
	ke_conn_group_init(&bw->conns);
	int rc = upstream_io_new_data(&bw->io, bw->loop, slot_view_get(&bw->client_creds_view),
				      &b->snapshots, &b->io_cfg);
	if (rc < 0) {
		snprintf(err, errlen, "worker %u: upstream connections: %s", i, strerror(-rc));
		return rc;
	}
	for (size_t l = 0; l < b->n_listen; l++) {
		int fd = b->listen_fds[l * n + i];
		b->listen_fds[l * n + i] = -1;
		rc = net_listener_adopt(&bw->listeners[l], bw->loop, fd, b->max_conns,
					&listener_ops, bw, err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void worker_publish(struct worker *w)
{
	struct broker_worker *bw = worker_ud(w);
	bw->pub_stats = bw->stats;
	bw->pub_wstats = bw->wstats;
	bw->n_pub_recent = bw->n_recent;
	for (size_t i = 0; i < bw->n_recent; i++)
		bw->pub_recent[i] = bw->recent[(bw->recent_next + BROKER_RECENT_MAX - bw->n_recent +
						i) % BROKER_RECENT_MAX];
	for (size_t l = 0; l < bw->b->n_listen; l++)
		bw->pub_listeners[l] = bw->listeners[l] ? *net_listener_stats(bw->listeners[l])
							: bw->last_listeners[l];
	const struct upstream_snapshot *snap = bw->snapshot_view.obj;
	bw->n_pub_kept = 0;
	for (size_t k = 0; snap && bw->io && k < snap->n && k < BROKER_KEPT_MAX; k++) {
		bw->pub_kept[k] = (struct broker_kept){
			.id = snap->e[k].id, .n = upstream_io_kept(bw->io, snap->e[k].id)
		};
		bw->n_pub_kept = k + 1;
	}
}

/* The main loop published new credentials and a new snapshot already: new connections to
 * upstreams present the new client certificate, and idle ones that no longer fit go. */
static void worker_reload(struct worker *w)
{
	struct broker_worker *bw = worker_ud(w);
	if (!bw->io)
		return;
	upstream_io_set_creds(bw->io, slot_view_get(&bw->client_creds_view));
	slot_view_get(&bw->server_creds_view);
	slot_view_get(&bw->geo_view);
	upstream_io_kick(bw->io);
}

static void worker_stop(struct worker *w)
{
	struct broker_worker *bw = worker_ud(w);
	bw->stopping = true;
	for (size_t l = 0; l < bw->b->n_listen; l++)
		if (bw->listeners[l])
			net_listener_close(bw->listeners[l]);
	close_io_when_idle(bw);
}

const struct workers_ops broker_worker_ops = {
	.start = worker_start,
	.publish = worker_publish,
	.reload = worker_reload,
	.stop = worker_stop,
	.all_stopped = broker_workers_stopped,
};

void broker_worker_free(struct broker_worker *bw)
{
	slot_view_release(&bw->snapshot_view);
	slot_view_release(&bw->server_creds_view);
	slot_view_release(&bw->client_creds_view);
	slot_view_release(&bw->geo_view);
	upstream_picker_free(bw->picker);
	free(bw->listeners);
	free(bw->pub_listeners);
	free(bw->last_listeners);
}
