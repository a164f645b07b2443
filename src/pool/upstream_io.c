#include "upstream_io_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "ke_client.h"
#include "ke_conn.h"
#include "log.h"
#include "net.h"
#include "slot.h"
#include "upstream_snapshot.h"

/* Exchanges waiting for a connection of one upstream once max_conns are busy. Beyond this the
 * caller is told at once (-EAGAIN) rather than piling up work no upstream can take. */
#define QUEUE_MAX 64


void upstream_io_release(struct upstream_io *io)
{
	if (--io->pending == 0 && io->closing)
		free(io);
}

uint64_t upstream_io_now_ms(const struct upstream_io *io)
{
	return uv_now(io->loop);
}

static void pump(struct upstream_io *io, uint32_t id);

/* ---- Exchanges ------------------------------------------------------------------------------- */

/* Reports x and frees it. */
static void deliver(struct upstream_io_exchange *x, int err, bool keys_sent, int parse_rc,
		    const struct ke_msg_response *resp, const char *reason)
{
	struct upstream_io_result r = {
		.err = err,
		.keys_sent = keys_sent,
		.parse_rc = parse_rc,
		.resp = resp,
		.reason = reason,
		.latency_ms = upstream_io_now_ms(x->io) - x->start_ms,
	};
	upstream_io_done_cb cb = x->cb;
	void *ud = x->ud;
	gnutls_memset(x->req, 0, x->len);
	free(x);
	cb(ud, &r);
}

/* Reports x once: at once from the loop, or, inside a caller's call (only failures can arise
 * there), from the next timer run. Callers have detached x from every list and connection.
 * reason NULL or "": the errno's text. */
static void finish(struct upstream_io_exchange *x, int err, bool keys_sent, int parse_rc,
		   const struct ke_msg_response *resp, const char *reason)
{
	struct upstream_io *io = x->io;
	char why[REASON_MAX];
	if (err < 0 && !(reason && *reason)) {
		snprintf(why, sizeof why, "%s", strerror(-err));
		reason = why;
	}
	if (!io->in_call) {
		deliver(x, err, keys_sent, parse_rc, resp, reason ? reason : "");
		return;
	}
	x->failed_err = err;
	x->failed_keys_sent = keys_sent;
	snprintf(x->failed_reason, sizeof x->failed_reason, "%s", reason ? reason : "");
	x->next = NULL;
	struct upstream_io_exchange **p = &io->deferred;
	while (*p)
		p = &(*p)->next;
	*p = x;
	upstream_io_rearm(io);
}

/* Takes x off the wait queue or the deferred reports, wherever it is. */
static void dequeue(struct upstream_io_exchange *x)
{
	struct upstream_io_exchange **lists[] = { &x->io->queue, &x->io->deferred };
	for (size_t i = 0; i < 2; i++) {
		for (struct upstream_io_exchange **p = lists[i]; *p; p = &(*p)->next) {
			if (*p == x) {
				*p = x->next;
				x->next = NULL;
				return;
			}
		}
	}
}

/* Delivers the failures found inside callers' calls, oldest first. */
static void deliver_deferred(struct upstream_io *io)
{
	struct upstream_io_exchange *x;
	while ((x = io->deferred)) {
		io->deferred = x->next;
		deliver(x, x->failed_err, x->failed_keys_sent, 0, NULL, x->failed_reason);
	}
}

/* ---- Connections ----------------------------------------------------------------------------- */

static void conn_free(struct conn *c)
{
	struct upstream_io *io = c->io;
	ke_client_free(c->ke);
	free(c);
	upstream_io_release(io);
}

static void unlink_conn(struct conn *c)
{
	if (!c->linked)
		return;
	c->linked = false;
	for (struct conn **p = &c->io->conns; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
}

bool upstream_io_lookup(struct upstream_io *io, uint32_t id, struct upstream_io_target *out)
{
	if (io->reg) {
		const char *domain = upstream_domain(io->reg, id);
		if (!domain)
			return false;
		*out = (struct upstream_io_target){ .domain = domain,
						    .port = upstream_port(io->reg, id),
						    .numbering = upstream_numbering(io->reg, id),
						    .state = upstream_state(io->reg, id) };
		return true;
	}
	/* The snapshot the view took at the last refresh: stable between refreshes, which happen
	 * only where a new exchange or a kick begins. */
	const struct upstream_snapshot_entry *e = upstream_snapshot_find(io->snapshots.obj, id);
	if (!e)
		return false;
	*out = (struct upstream_io_target){
		.domain = e->domain, .port = e->port, .numbering = e->numbering, .state = e->state
	};
	return true;
}

/* A data plane takes up the snapshot published now. */
static void refresh(struct upstream_io *io)
{
	if (!io->reg)
		slot_view_get(&io->snapshots);
}

const char *upstream_io_name_of(struct upstream_io *io, uint32_t id)
{
	struct upstream_io_target t;
	return upstream_io_lookup(io, id, &t) ? t.domain : "(removed)";
}

enum kill_mode {
	KILL_ABORT, /* reset the connection at once */
	KILL_CLOSE, /* let queued output (close_notify) go out first */
	KILL_GONE,  /* the driver is closing the connection already and frees c after */
};

static unsigned conns_of(const struct upstream_io *io, uint32_t id);

static bool queued_for(const struct upstream_io *io, uint32_t id)
{
	for (const struct upstream_io_exchange *q = io->queue; q; q = q->next)
		if (q->id == id)
			return true;
	return false;
}

/* A removed (draining) upstream leaves the registry, and /status, once nothing of it is left
 * here; then what io kept for upstreams the registry no longer knows goes too. */
static void forget_drained(struct upstream_io *io)
{
	if (!io->reg)
		return;
	for (size_t i = upstream_count(io->reg); i-- > 0;) {
		uint32_t id = upstream_id_at(io->reg, i);
		if (upstream_state(io->reg, id) == UPSTREAM_DRAINING && conns_of(io, id) == 0 &&
		    !queued_for(io, id))
			upstream_forget(io->reg, id);
	}
	for (struct ups **p = &io->ups; *p;) {
		struct ups *u = *p;
		if (upstream_domain(io->reg, u->id)) {
			p = &u->next;
			continue;
		}
		*p = u->next;
		free(u);
	}
}

/* Unlinks c, lets it go as mode says, and fails its exchange with err. */
static void conn_kill(struct conn *c, int err, enum kill_mode mode)
{
	struct upstream_io *io = c->io;
	struct upstream_io_exchange *x = c->x;
	bool sent = ke_client_request_sent(c->ke);
	char why[REASON_MAX];
	if (x) {
		x->conn = NULL;
		snprintf(why, sizeof why, "%s",
			 ke_client_error(c->ke) < 0 ? ke_client_reason(c->ke) : strerror(-err));
	}
	unlink_conn(c);
	c->x = NULL;
	if (mode != KILL_GONE) {
		if (c->kc)
			ke_conn_close(c->kc, mode == KILL_ABORT);
		else if (c->resolving)
			uv_cancel((uv_req_t *)&c->gai);
		else
			conn_free(c);
	}
	if (x) {
		if (log_ratelimit_allow(&io->fail_log, upstream_io_now_ms(io)))
			log_debug("upstream %s:%u: exchange failed: %s",
				  upstream_io_name_of(io, x->id), c->port, why);
		finish(x, err, sent, 0, NULL, why);
	}
	if (!io->closing)
		forget_drained(io);
}

static bool too_old(const struct conn *c)
{
	uint64_t max = c->io->cfg->max_age_ms;
	return max && upstream_io_now_ms(c->io) - c->opened_ms >= max;
}

/* ---- The connection as the driver runs it: the conn is the machine, ke_client inside ---- */

KE_CONN_KE_CLIENT_ADAPTERS(conn, struct conn, ke)

/* ke_client's own deadline while it has one (handshake, waiting for an answer); otherwise an
 * exchange about to be sent is bounded by upstream-timeout-ms and an idle connection closes
 * after the idle time. */
static uint64_t m_deadline(const void *m)
{
	const struct conn *c = m;
	uint64_t d = ke_client_deadline(c->ke);
	if (d)
		return d;
	return c->since_ms + (c->x ? c->io->cfg->upstream_timeout_ms : c->io->cfg->idle_ms);
}

static void m_free(void *m)
{
	conn_free(m);
}

static const struct ke_conn_machine conn_machine =
	KE_CONN_KE_CLIENT_MACHINE(conn, m_deadline, m_free);

/* After each stream event: a complete response goes to its exchange, and the connection is kept
 * (idle) when both sides agreed on Keep Alive and it is young enough. */
static void on_progress(struct ke_conn *kc, void *m, void *ud)
{
	struct conn *c = m;
	struct upstream_io *io = c->io;
	(void)kc;
	(void)ud;
	if (ke_client_state(c->ke) != KE_CLIENT_RESPONSE)
		return;
	const struct ke_msg_response *resp;
	struct upstream_io_exchange *x = c->x;
	int parse_rc = ke_client_response(c->ke, &resp);
	uint32_t id = c->id;
	c->x = NULL;
	if (x) {
		x->conn = NULL;
		finish(x, 0, true, parse_rc, resp, "");
	}
	/* The callback may have closed everything; the conn itself lives until the driver is
	 * done with it. */
	if (!c->linked)
		return;
	uint64_t now = upstream_io_now_ms(io);
	ke_client_response_done(c->ke, now);
	/* A connection past its age limit is not kept: a long-lived one would pin this worker to
	 * one upstream address and one TLS session key for ever. */
	if (ke_client_state(c->ke) == KE_CLIENT_READY && too_old(c))
		ke_client_close(c->ke);
	if (ke_client_state(c->ke) == KE_CLIENT_READY) {
		c->since_ms = now;
		ke_conn_kick(c->kc);
	} else {
		/* close_notify goes out, then the driver closes: on_conn_closed unlinks it. */
		ke_conn_kick(c->kc);
	}
	pump(io, id);
}

static void on_conn_closed(struct ke_conn *kc, void *m, void *ud)
{
	struct conn *c = m;
	struct upstream_io *io = c->io;
	(void)ud;
	if (c->linked) {
		/* Ended without our asking: a failure like any other. */
		uint32_t id = c->id;
		int err = ke_client_error(c->ke) < 0 ? ke_client_error(c->ke)
			  : ke_conn_error(kc) < 0    ? ke_conn_error(kc)
						     : -ECONNRESET;
		conn_kill(c, err, KILL_GONE);
		pump(io, id);
	}
	c->kc = NULL;
}

static void start_connect(struct conn *c, struct sockaddr *sa)
{
	struct upstream_io *io = c->io;
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(c->port);
	else
		((struct sockaddr_in6 *)sa)->sin6_port = htons(c->port);
	const struct ke_conn_owner owner = { .progress = on_progress,
					     .closed = on_conn_closed,
					     .ud = io };
	int rc = ke_conn_connect(&c->kc, io->loop, sa, &conn_machine, c, &owner);
	if (rc < 0) {
		uint32_t id = c->id;
		c->kc = NULL;
		conn_kill(c, rc, KILL_ABORT);
		pump(io, id);
	}
}

static void on_conn_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct conn *c = req->data;
	struct upstream_io *io = c->io;
	c->resolving = false;
	if (!c->linked) {
		uv_freeaddrinfo(res);
		conn_free(c);
		return;
	}
	if (status < 0 || !res) {
		uint32_t id = c->id;
		log_debug("upstream %s: cannot resolve: %s", upstream_io_name_of(io, id),
			  uv_strerror(status));
		uv_freeaddrinfo(res);
		conn_kill(c, -EHOSTUNREACH, KILL_ABORT);
		pump(io, id);
		return;
	}
	struct sockaddr_storage ss;
	memcpy(&ss, res->ai_addr, res->ai_addrlen);
	uv_freeaddrinfo(res);
	start_connect(c, (struct sockaddr *)&ss);
}

int upstream_io_resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb,
			const char *name, int socktype, int flags)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = socktype,
				  .ai_flags = flags };
	return uv_getaddrinfo(loop, req, cb, name, NULL, &hints);
}

/* Opens a new connection for x (already detached from the queue). */
static void open_conn(struct upstream_io *io, struct upstream_io_exchange *x)
{
	struct upstream_io_target t;
	bool known = upstream_io_lookup(io, x->id, &t);
	const char *domain = t.domain;
	uint64_t now = upstream_io_now_ms(io);
	struct conn *c = known ? calloc(1, sizeof *c) : NULL;
	int rc = !known ? -ENOENT : c ? 0 : -ENOMEM;
	enum ke_numbering numbering = known ? t.numbering : KE_NUMBERING_IANA;
	if (c)
		rc = ke_client_new(&c->ke, io->creds, domain, numbering, now,
				   io->cfg->upstream_timeout_ms);
	if (rc == 0)
		rc = ke_client_send(c->ke, x->req, x->len, x->kind, now,
				    io->cfg->upstream_timeout_ms);
	gnutls_memset(x->req, 0, x->len);
	if (rc < 0) {
		if (c)
			ke_client_free(c->ke);
		free(c);
		finish(x, rc, false, 0, NULL, NULL);
		return;
	}
	c->io = io;
	c->id = x->id;
	c->opened_ms = now;
	c->since_ms = now;
	c->numbering = numbering;
	c->port = t.port;
	c->x = x;
	x->conn = c;
	c->linked = true;
	c->next = io->conns;
	io->conns = c;
	io->pending++;

	struct sockaddr_storage ss;
	if (net_addr_parse_ip(domain, &ss)) {
		start_connect(c, (struct sockaddr *)&ss);
		return;
	}
	c->gai.data = c;
	rc = upstream_io_resolve(io->loop, &c->gai, on_conn_resolved, domain, SOCK_STREAM,
				 AI_ADDRCONFIG);
	if (rc < 0) {
		conn_kill(c, rc, KILL_ABORT);
		return;
	}
	c->resolving = true;
	upstream_io_rearm(io);
}

static unsigned conns_of(const struct upstream_io *io, uint32_t id)
{
	unsigned n = 0;
	for (const struct conn *c = io->conns; c; c = c->next)
		n += c->id == id;
	return n;
}

/* An idle kept connection of upstream id in its current numbering (requests are built in it). */
static struct conn *idle_conn(struct upstream_io *io, uint32_t id)
{
	struct upstream_io_target t;
	if (!upstream_io_lookup(io, id, &t))
		return NULL;
	for (struct conn *c = io->conns; c; c = c->next)
		if (c->id == id && !c->x && c->kc && ke_client_state(c->ke) == KE_CLIENT_READY &&
		    c->numbering == t.numbering && !too_old(c))
			return c;
	return NULL;
}

/* Runs x (detached) on an idle connection or a new one; false when neither is possible. */
static bool start(struct upstream_io *io, struct upstream_io_exchange *x)
{
	struct conn *c = idle_conn(io, x->id);
	if (c) {
		int rc = ke_client_send(c->ke, x->req, x->len, x->kind, upstream_io_now_ms(io),
					io->cfg->upstream_timeout_ms);
		gnutls_memset(x->req, 0, x->len);
		c->x = x;
		c->since_ms = upstream_io_now_ms(io);
		x->conn = c;
		if (rc < 0)
			conn_kill(c, rc, KILL_ABORT);
		else
			ke_conn_kick(c->kc);
		return true;
	}
	if (conns_of(io, x->id) >= io->cfg->max_conns)
		return false;
	open_conn(io, x);
	return true;
}

/* Starts what waits for upstream id as far as its connection bound allows. */
static void pump(struct upstream_io *io, uint32_t id)
{
	struct upstream_io_exchange **p = &io->queue;
	while (!io->closing && *p) {
		struct upstream_io_exchange *x = *p;
		if (x->id != id) {
			p = &x->next;
			continue;
		}
		if (!idle_conn(io, id) && conns_of(io, id) >= io->cfg->max_conns)
			return;
		*p = x->next;
		x->next = NULL;
		start(io, x);
		/* A failure reported from the loop may have changed the queue. */
		p = &io->queue;
	}
}

int upstream_io_exchange(struct upstream_io *io, uint32_t id, const uint8_t *req, size_t len,
			 enum ke_msg_request_kind kind, upstream_io_done_cb cb, void *ud,
			 struct upstream_io_exchange **handle)
{
	if (handle)
		*handle = NULL;
	int rc = 0;
	struct upstream_io_target t;
	refresh(io);
	if (io->closing)
		rc = -ESHUTDOWN;
	else if (!upstream_io_lookup(io, id, &t))
		rc = -ENOENT;
	else if (len == 0 || len > KE_MSG_REQUEST_MAX)
		rc = -EMSGSIZE;
	if (rc == 0 && !idle_conn(io, id) && conns_of(io, id) >= io->cfg->max_conns) {
		unsigned waiting = 0;
		for (const struct upstream_io_exchange *q = io->queue; q; q = q->next)
			waiting += q->id == id;
		if (waiting >= QUEUE_MAX)
			rc = -EAGAIN;
	}
	struct upstream_io_exchange *x = NULL;
	if (rc == 0) {
		x = calloc(1, sizeof *x + len);
		if (!x)
			rc = -ENOMEM;
	}
	if (rc < 0)
		return rc;
	x->io = io;
	x->id = id;
	x->kind = kind;
	x->cb = cb;
	x->ud = ud;
	x->start_ms = upstream_io_now_ms(io);
	x->len = len;
	memcpy(x->req, req, len);
	if (handle)
		*handle = x;
	io->in_call++;
	bool started = start(io, x);
	io->in_call--;
	if (!started) {
		struct upstream_io_exchange **p = &io->queue;
		while (*p)
			p = &(*p)->next;
		*p = x;
		upstream_io_rearm(io);
	}
	return 0;
}

void upstream_io_cancel(struct upstream_io_exchange *x)
{
	if (!x)
		return;
	struct upstream_io *io = x->io;
	struct conn *c = x->conn;
	io->in_call++;
	if (c) {
		uint32_t id = c->id;
		c->x = NULL;
		x->conn = NULL;
		conn_kill(c, -ECANCELED, KILL_ABORT);
		pump(io, id);
	} else {
		dequeue(x);
	}
	io->in_call--;
	gnutls_memset(x->req, 0, x->len);
	free(x);
}

unsigned upstream_io_kept(const struct upstream_io *io, uint32_t id)
{
	return conns_of(io, id);
}

/* ---- The timer ------------------------------------------------------------------------------- */

static void expire(struct upstream_io *io, uint64_t now)
{
	for (struct upstream_io_exchange **p = &io->queue; *p;) {
		struct upstream_io_exchange *x = *p;
		if (x->start_ms + io->cfg->upstream_timeout_ms > now) {
			p = &x->next;
			continue;
		}
		*p = x->next;
		finish(x, -ETIMEDOUT, false, 0, NULL, "no connection free in time");
		p = &io->queue;
	}
conns:
	for (struct conn *c = io->conns; c; c = c->next) {
		if (c->resolving && ke_client_deadline(c->ke) <= now) {
			uint32_t id = c->id;
			conn_kill(c, -ETIMEDOUT, KILL_ABORT);
			pump(io, id);
			goto conns;
		}
	}
deeps:
	for (struct deep *d = io->deeps; d; d = d->next) {
		if (d->deadline && d->deadline <= now) {
			upstream_check_deep_expired(d);
			goto deeps;
		}
	}
}

static void on_tick(uv_timer_t *t)
{
	struct upstream_io *io = t->data;
	uint64_t now = upstream_io_now_ms(io);
	uint32_t id;
	deliver_deferred(io);
	expire(io, now);
	/* Each due upstream is started once per tick even if the registry keeps it due. */
	for (size_t n = io->reg ? upstream_count(io->reg) : 0;
	     n > 0 && !io->closing && upstream_probe_due(io->reg, now, &id) == 0; n--)
		upstream_check_start_probe(io, id);
	for (size_t n = io->reg ? upstream_count(io->reg) : 0;
	     n > 0 && !io->closing && upstream_deep_due(io->reg, now, &id) == 0; n--)
		upstream_check_start_deep(io, id);
	upstream_io_rearm(io);
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

void upstream_io_rearm(struct upstream_io *io)
{
	if (io->closing)
		return;
	uint64_t next = io->reg ? min64(upstream_next_probe_ms(io->reg),
					upstream_next_deep_ms(io->reg))
				: UINT64_MAX;
	if (io->deferred)
		next = 0;
	for (const struct upstream_io_exchange *x = io->queue; x; x = x->next)
		next = min64(next, x->start_ms + io->cfg->upstream_timeout_ms);
	for (const struct conn *c = io->conns; c; c = c->next)
		if (c->resolving)
			next = min64(next, ke_client_deadline(c->ke));
	for (const struct deep *d = io->deeps; d; d = d->next)
		if (d->deadline)
			next = min64(next, d->deadline);
	if (next == UINT64_MAX) {
		uv_timer_stop(&io->timer);
		return;
	}
	uint64_t now = upstream_io_now_ms(io);
	uv_timer_start(&io->timer, on_tick, next > now ? next - now : 0, 0);
}

/* ---- Life cycle ------------------------------------------------------------------------------ */

static int io_new(struct upstream_io **out, uv_loop_t *loop, struct tls_creds *creds,
		  struct upstream_registry *registry, struct slot *snapshots,
		  const struct upstream_io_config *cfg)
{
	struct upstream_io *io = calloc(1, sizeof *io);
	if (!io)
		return -ENOMEM;
	io->fail_log = (struct log_ratelimit)LOG_RATELIMIT_INIT(5, 20);
	int rc = uv_timer_init(loop, &io->timer);
	if (rc < 0) {
		free(io);
		return rc;
	}
	io->timer.data = io;
	io->loop = loop;
	io->creds = tls_creds_ref(creds);
	io->reg = registry;
	if (snapshots)
		slot_view_init(&io->snapshots, snapshots);
	io->cfg = cfg;
	io->pending = 1;
	upstream_io_rearm(io);
	*out = io;
	return 0;
}

int upstream_io_new(struct upstream_io **out, uv_loop_t *loop, struct tls_creds *creds,
		    struct upstream_registry *registry, const struct upstream_io_config *cfg)
{
	return io_new(out, loop, creds, registry, NULL, cfg);
}

int upstream_io_new_data(struct upstream_io **out, uv_loop_t *loop, struct tls_creds *creds,
			 struct slot *snapshots, const struct upstream_io_config *cfg)
{
	return io_new(out, loop, creds, NULL, snapshots, cfg);
}

void upstream_io_set_creds(struct upstream_io *io, struct tls_creds *creds)
{
	struct tls_creds *old = io->creds;
	io->creds = tls_creds_ref(creds);
	tls_creds_unref(old);
}

void upstream_io_kick(struct upstream_io *io)
{
	/* A reload that changed an upstream's numbering leaves its idle connections useless, and
	 * one that removed the upstream leaves them with nothing to do. */
	refresh(io);
restart:
	for (struct conn *c = io->conns; c; c = c->next) {
		struct upstream_io_target t;
		if (!c->x && (!upstream_io_lookup(io, c->id, &t) || c->numbering != t.numbering ||
			      t.state == UPSTREAM_DRAINING)) {
			conn_kill(c, -ECANCELED, KILL_CLOSE);
			goto restart;
		}
	}
	forget_drained(io);
	upstream_io_rearm(io);
}

static void timer_closed(uv_handle_t *h)
{
	struct upstream_io *io = h->data;
	slot_view_release(&io->snapshots);
	upstream_io_release(io);
}

void upstream_io_close(struct upstream_io *io)
{
	if (io->closing)
		return;
	io->closing = true;
	uv_timer_stop(&io->timer);
	uv_close((uv_handle_t *)&io->timer, timer_closed);
	while (io->deeps)
		upstream_check_deep_abort(io->deeps);
	deliver_deferred(io);
	while (io->queue) {
		struct upstream_io_exchange *x = io->queue;
		io->queue = x->next;
		finish(x, -ECANCELED, false, 0, NULL, "shutting down");
	}
	while (io->conns)
		conn_kill(io->conns, -ECANCELED, KILL_ABORT);
	while (io->ups) {
		struct ups *u = io->ups;
		io->ups = u->next;
		free(u);
	}
	tls_creds_unref(io->creds);
	io->creds = NULL;
}
