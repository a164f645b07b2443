#include "broker_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_limit.h"
#include "ke_conn.h"
#include "tls_creds.h"
#include "workers.h"

/* One client connection: its session runs on the connection driver, which owns and frees it. */
struct client {
	struct broker_worker *bw;
	struct ke_conn *conn;
	struct pool_session *session;
	struct upstream_io_exchange *exchange; /* outstanding upstream work, or NULL */
	uint32_t upstream;
};

static void close_io_when_idle(struct broker_worker *bw)
{
	if (bw->stopping && bw->clients == 0 && bw->io) {
		upstream_io_close(bw->io);
		bw->io = NULL;
	}
}

/* Selection from the snapshot this worker holds now; a new one also tells the worker's
 * connections (an upstream removed or renumbered leaves its idle connections useless). */
static int pick(void *ud, const struct ke_msg_request *req, const uint32_t *tried, size_t n_tried,
		uint64_t now_ms, struct pool_upstream_info *out)
{
	struct broker_worker *bw = ud;
	const struct upstream_snapshot *snap = slot_view_get(&bw->snapshot_view);
	if (snap != bw->last_snapshot) {
		bw->last_snapshot = snap;
		if (bw->io)
			upstream_io_kick(bw->io);
	}
	return upstream_snapshot_pick(snap, bw->picker, req, tried, n_tried, now_ms, out);
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

static void on_client_closed(struct ke_conn *conn, void *machine, void *ud)
{
	struct client *c = ud;
	struct broker_worker *bw = c->bw;
	(void)machine;
	conn_limit_release(bw->b->per_address, ke_conn_peer(conn));
	if (c->exchange)
		upstream_io_cancel(c->exchange);
	free(c);
	bw->clients--;
	close_io_when_idle(bw);
}

static int on_accept(struct net_listener *nl, struct net_stream *s, void *ud)
{
	struct broker_worker *bw = ud;
	struct broker *b = bw->b;
	(void)nl;
	/* One host cannot take every slot: beyond its share the connection is closed at once. */
	int taken = conn_limit_take(b->per_address, net_stream_peer(s));
	if (taken < 0)
		return taken;
	struct client *c = calloc(1, sizeof *c);
	struct pool_session *session = NULL;
	int rc = c ? pool_session_new(&session, slot_view_get(&bw->server_creds_view),
				      &b->session_cfg, &bw->upstreams, &bw->stats, uv_now(bw->loop))
		   : -ENOMEM;
	if (rc == 0) {
		c->bw = bw;
		c->session = session;
		c->upstream = UINT32_MAX;
		char peer[NET_ADDR_STRLEN];
		pool_session_set_peer(session, net_addr_str(net_stream_peer(s), peer, sizeof peer));
		const struct ke_conn_owner owner = { .progress = on_progress,
						     .closed = on_client_closed,
						     .ud = c,
						     .group = &bw->conns };
		rc = ke_conn_start(&c->conn, s, &machine_ops, session, &owner);
	}
	if (rc < 0) {
		if (log_ratelimit_allow(&bw->session_log, uv_now(bw->loop)))
			log_warn("worker %u: cannot start a session: %s", worker_index(bw->w),
				 strerror(-rc));
		pool_session_free(session);
		free(c);
		conn_limit_release(b->per_address, net_stream_peer(s));
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
	bw->upstreams = (struct pool_session_upstreams){ .pick = pick, .ud = bw };
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
	upstream_picker_free(bw->picker);
	free(bw->listeners);
	free(bw->pub_listeners);
	free(bw->last_listeners);
}
