#include "upstream_io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_client.h"
#include "log.h"
#include "net.h"
#include "ntp_packet.h"
#include "nts_ntp.h"

/* Exchanges waiting for a connection of one upstream once max_conns are busy. Beyond this the
 * caller is told at once (-EAGAIN) rather than piling up work no upstream can take. */
#define QUEUE_MAX 64
#define REASON_MAX 160
#define NTP_BUF 1024

struct conn;

struct upstream_io_exchange {
	struct upstream_io *io;
	struct upstream_io_exchange *next; /* in io->queue while waiting */
	struct conn *conn;		   /* while running */
	uint32_t id;
	enum ke_msg_request_kind kind;
	upstream_io_done_cb cb;
	void *ud;
	uint64_t start_ms;
	size_t len;
	uint8_t req[]; /* wiped as soon as ke_client holds its copy */
};

/* One NTS-KE connection to an upstream. Freed when it is unlinked and nothing can call back:
 * from the stream's on_closed, from the resolver callback, or at once if neither exists. */
struct conn {
	struct upstream_io *io;
	struct conn *next; /* in io->conns while linked */
	bool linked;
	bool resolving; /* gai outstanding: its callback frees a conn unlinked meanwhile */
	bool connected;
	uint32_t id;
	uint16_t port;
	uv_getaddrinfo_t gai;
	struct net_stream *stream;
	struct ke_client *ke;
	struct upstream_io_exchange *x; /* busy; NULL = idle (or not connected yet) */
};

/* A deep check (PROTOCOL.md §4.3): Fixed Key exchange, then one NTS-protected NTP request. */
struct deep {
	struct upstream_io *io;
	struct deep *next; /* in io->deeps until finished */
	bool linked;
	bool resolving;
	uint32_t id;
	uint16_t aead;
	size_t key_len;
	uint8_t c2s[AEAD_MAX_KEY_LEN];
	uint8_t s2c[AEAD_MAX_KEY_LEN];
	struct upstream_io_exchange *x;
	uint64_t deadline; /* of the resolve and NTP stages; 0 during the KE stage */
	uv_getaddrinfo_t gai;
	struct net_udp *udp;
	struct sockaddr_storage to;
	struct ke_msg_cookie cookie;
	uint8_t uid[NTS_NTP_UID_LEN];
	uint64_t sent_ts;
	char reason[REASON_MAX]; /* why the last reply was refused */
};

/* What io remembers per upstream: the AEAD its last Support answer allows for deep checks. */
struct ups {
	struct ups *next;
	uint32_t id;
	uint16_t deep_aead;
};

/* A probe in flight: the callback's context. */
struct probe {
	struct upstream_io *io;
	uint32_t id;
};

/* An upstream_io_exchange call in progress: tells it whether its exchange was already reported
 * (then the caller gets no handle). Calls nest when a callback starts another exchange. */
struct sync_call {
	struct sync_call *outer;
	const struct upstream_io_exchange *x;
	bool reported;
	int err;
};

struct upstream_io {
	uv_loop_t *loop;
	struct tls_creds *creds;
	struct upstream_registry *reg;
	const struct upstream_io_config *cfg;
	uv_timer_t timer; /* probes, deep checks, and deadlines the streams do not cover */
	struct conn *conns;
	struct upstream_io_exchange *queue; /* FIFO */
	struct deep *deeps;
	struct ups *ups;
	unsigned pending; /* the timer, conns and deep checks not freed yet */
	bool closing;
	struct sync_call *sync;
	char reason[REASON_MAX]; /* of the failure being reported to a callback */
};

static struct log_ratelimit fail_log = LOG_RATELIMIT_INIT(5, 20);

static void release(struct upstream_io *io)
{
	if (--io->pending == 0 && io->closing)
		free(io);
}

static uint64_t now_ms(const struct upstream_io *io)
{
	return uv_now(io->loop);
}

static void rearm(struct upstream_io *io);
static void pump(struct upstream_io *io, uint32_t id);

/* ---- Exchanges ------------------------------------------------------------------------------- */

static void set_reason(struct upstream_io *io, const char *reason, int err)
{
	if (reason && *reason)
		snprintf(io->reason, sizeof io->reason, "%s", reason);
	else
		snprintf(io->reason, sizeof io->reason, "%s", strerror(err < 0 ? -err : err));
}

/* Reports x once and frees it. Callers have detached x from every list and connection. */
static void finish(struct upstream_io_exchange *x, int err, bool keys_sent, int parse_rc,
		   const struct ke_msg_response *resp)
{
	uint64_t latency = now_ms(x->io) - x->start_ms;
	for (struct sync_call *s = x->io->sync; s; s = s->outer) {
		if (s->x == x) {
			s->reported = true;
			s->err = err;
		}
	}
	upstream_io_done_cb cb = x->cb;
	void *ud = x->ud;
	gnutls_memset(x->req, 0, x->len);
	free(x);
	cb(ud, err, keys_sent, parse_rc, resp, latency);
}

static void dequeue(struct upstream_io_exchange *x)
{
	for (struct upstream_io_exchange **p = &x->io->queue; *p; p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			x->next = NULL;
			return;
		}
	}
}

/* ---- Connections ----------------------------------------------------------------------------- */

static void conn_free(struct conn *c)
{
	struct upstream_io *io = c->io;
	ke_client_free(c->ke);
	free(c);
	release(io);
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

static const char *name_of(const struct upstream_io *io, uint32_t id)
{
	const char *name = upstream_domain(io->reg, id);
	return name ? name : "(removed)";
}

enum kill_mode {
	KILL_ABORT, /* reset the connection at once */
	KILL_CLOSE, /* let queued output (close_notify) go out first */
	KILL_GONE,  /* net is closing the stream already: on_closed frees c */
};

/* Unlinks c, lets it go as mode says, and fails its exchange with err. */
static void conn_kill(struct conn *c, int err, enum kill_mode mode)
{
	struct upstream_io *io = c->io;
	struct upstream_io_exchange *x = c->x;
	bool sent = ke_client_request_sent(c->ke);
	if (x) {
		x->conn = NULL;
		set_reason(io, ke_client_error(c->ke) < 0 ? ke_client_reason(c->ke) : NULL, err);
	}
	unlink_conn(c);
	c->x = NULL;
	if (mode != KILL_GONE) {
		if (c->stream && mode == KILL_ABORT)
			net_stream_abort(c->stream);
		else if (c->stream)
			net_stream_close(c->stream);
		else if (c->resolving)
			uv_cancel((uv_req_t *)&c->gai);
		else
			conn_free(c);
	}
	if (x) {
		if (log_ratelimit_allow(&fail_log, now_ms(io)))
			log_debug("upstream %s:%u: exchange failed: %s", name_of(io, x->id),
				  upstream_port(io->reg, x->id), io->reason);
		finish(x, err, sent, 0, NULL);
	}
}

/* The stream's deadline for the state c is in; idle connections get the idle timeout. */
static void follow_deadline(struct conn *c)
{
	uint64_t now = now_ms(c->io);
	uint64_t deadline = ke_client_deadline(c->ke);
	if (deadline == 0)
		net_stream_set_deadline(c->stream, c->x ? c->io->cfg->upstream_timeout_ms
						       : c->io->cfg->idle_ms);
	else
		net_stream_set_deadline(c->stream, deadline > now ? deadline - now : 1);
}

/* Hands ke_client's output to the socket and acts on its state: delivers a response, keeps an
 * idle connection, or drops a closed or failed one. */
static void conn_flush(struct conn *c)
{
	struct upstream_io *io = c->io;
	const uint8_t *p;
	size_t n;

	/* Until the TCP connection is up, output waits in ke_client. */
	ke_client_output(c->ke, &p, &n);
	if (c->connected && n > 0) {
		if (net_stream_write(c->stream, p, n) < 0) {
			uint32_t id = c->id;
			conn_kill(c, -EPIPE, KILL_ABORT);
			pump(io, id);
			return;
		}
		ke_client_output_consume(c->ke, n);
	}
	switch (ke_client_state(c->ke)) {
	case KE_CLIENT_HANDSHAKING:
	case KE_CLIENT_WAITING:
		follow_deadline(c);
		return;
	case KE_CLIENT_READY:
		/* Idle connections keep the idle deadline set when they became idle. */
		if (c->x)
			follow_deadline(c);
		return;
	case KE_CLIENT_RESPONSE: {
		const struct ke_msg_response *resp;
		struct upstream_io_exchange *x = c->x;
		int parse_rc = ke_client_response(c->ke, &resp);
		uint32_t id = c->id;
		c->x = NULL;
		if (x) {
			x->conn = NULL;
			finish(x, 0, true, parse_rc, resp);
		}
		/* The callback may have closed everything; the conn itself lives until on_closed. */
		if (!c->linked)
			return;
		ke_client_response_done(c->ke, now_ms(io));
		ke_client_output(c->ke, &p, &n);
		if (n > 0) {
			if (net_stream_write(c->stream, p, n) < 0) {
				conn_kill(c, -EPIPE, KILL_ABORT);
				pump(io, id);
				return;
			}
			ke_client_output_consume(c->ke, n);
		}
		if (ke_client_state(c->ke) == KE_CLIENT_READY) {
			net_stream_set_deadline(c->stream, io->cfg->idle_ms);
		} else {
			conn_kill(c, -ECONNRESET, KILL_CLOSE);
		}
		pump(io, id);
		return;
	}
	case KE_CLIENT_CLOSED: {
		uint32_t id = c->id;
		conn_kill(c, -ECONNRESET, KILL_CLOSE);
		pump(io, id);
		return;
	}
	case KE_CLIENT_FAILED: {
		uint32_t id = c->id;
		conn_kill(c, ke_client_error(c->ke) < 0 ? ke_client_error(c->ke) : -EPROTO,
			  KILL_ABORT);
		pump(io, id);
		return;
	}
	}
}

static void on_read(struct net_stream *s, const uint8_t *buf, size_t len, void *ud)
{
	struct conn *c = ud;
	(void)s;
	ke_client_input(c->ke, buf, len, now_ms(c->io));
	conn_flush(c);
}

static void on_eof(struct net_stream *s, int status, void *ud)
{
	struct conn *c = ud;
	(void)s;
	(void)status;
	ke_client_eof(c->ke, now_ms(c->io));
	conn_flush(c);
}

static void on_timeout(struct net_stream *s, void *ud)
{
	struct conn *c = ud;
	(void)s;
	ke_client_timeout(c->ke, now_ms(c->io));
	conn_flush(c);
}

static void on_connect(struct net_stream *s, int status, void *ud)
{
	struct conn *c = ud;
	struct upstream_io *io = c->io;
	(void)s;
	if (status < 0) {
		uint32_t id = c->id;
		conn_kill(c, status, KILL_GONE);
		pump(io, id);
		return;
	}
	c->connected = true;
	conn_flush(c);
}

static void on_closed(struct net_stream *s, void *ud)
{
	struct conn *c = ud;
	struct upstream_io *io = c->io;
	(void)s;
	if (c->linked) {
		/* Closed without our asking: a failure like any other. */
		uint32_t id = c->id;
		conn_kill(c, -ECONNRESET, KILL_GONE);
		pump(io, id);
	}
	conn_free(c);
}

static const struct net_stream_ops conn_ops = {
	.on_read = on_read,
	.on_eof = on_eof,
	.on_timeout = on_timeout,
	.on_closed = on_closed,
	.on_connect = on_connect,
};

static void start_connect(struct conn *c, struct sockaddr *sa)
{
	struct upstream_io *io = c->io;
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(c->port);
	else
		((struct sockaddr_in6 *)sa)->sin6_port = htons(c->port);
	int rc = net_connect(&c->stream, io->loop, sa, &conn_ops, c);
	if (rc < 0) {
		uint32_t id = c->id;
		c->stream = NULL;
		conn_kill(c, rc, KILL_ABORT);
		pump(io, id);
		return;
	}
	uint64_t now = now_ms(io), deadline = ke_client_deadline(c->ke);
	net_stream_set_deadline(c->stream, deadline > now ? deadline - now : 1);
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
		log_debug("upstream %s: cannot resolve: %s", name_of(io, id),
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

/* Literal IPv4/IPv6 addresses need no resolver. */
static bool parse_literal(const char *name, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, name, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, name, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		return true;
	}
	return false;
}

static int resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb,
		   const char *name, int socktype)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = socktype,
				  .ai_flags = AI_ADDRCONFIG };
	return uv_getaddrinfo(loop, req, cb, name, NULL, &hints);
}

/* Opens a new connection for x (already detached from the queue). */
static void open_conn(struct upstream_io *io, struct upstream_io_exchange *x)
{
	const char *domain = upstream_domain(io->reg, x->id);
	uint64_t now = now_ms(io);
	struct conn *c = domain ? calloc(1, sizeof *c) : NULL;
	int rc = !domain ? -ENOENT : c ? 0 : -ENOMEM;
	if (c)
		rc = ke_client_new(&c->ke, io->creds, domain, io->cfg->numbering, now,
				   io->cfg->upstream_timeout_ms);
	if (rc == 0)
		rc = ke_client_send(c->ke, x->req, x->len, x->kind, now,
				    io->cfg->upstream_timeout_ms);
	gnutls_memset(x->req, 0, x->len);
	if (rc < 0) {
		if (c)
			ke_client_free(c->ke);
		free(c);
		set_reason(io, NULL, rc);
		finish(x, rc, false, 0, NULL);
		return;
	}
	c->io = io;
	c->id = x->id;
	c->port = upstream_port(io->reg, x->id);
	c->x = x;
	x->conn = c;
	c->linked = true;
	c->next = io->conns;
	io->conns = c;
	io->pending++;

	struct sockaddr_storage ss;
	if (parse_literal(domain, &ss)) {
		start_connect(c, (struct sockaddr *)&ss);
		return;
	}
	c->gai.data = c;
	rc = resolve(io->loop, &c->gai, on_conn_resolved, domain, SOCK_STREAM);
	if (rc < 0) {
		conn_kill(c, rc, KILL_ABORT);
		return;
	}
	c->resolving = true;
	rearm(io);
}

static unsigned conns_of(const struct upstream_io *io, uint32_t id)
{
	unsigned n = 0;
	for (const struct conn *c = io->conns; c; c = c->next)
		n += c->id == id;
	return n;
}

static struct conn *idle_conn(struct upstream_io *io, uint32_t id)
{
	for (struct conn *c = io->conns; c; c = c->next)
		if (c->id == id && !c->x && c->connected &&
		    ke_client_state(c->ke) == KE_CLIENT_READY)
			return c;
	return NULL;
}

/* Runs x (detached) on an idle connection or a new one; false when neither is possible. */
static bool start(struct upstream_io *io, struct upstream_io_exchange *x)
{
	struct conn *c = idle_conn(io, x->id);
	if (c) {
		int rc = ke_client_send(c->ke, x->req, x->len, x->kind, now_ms(io),
					io->cfg->upstream_timeout_ms);
		gnutls_memset(x->req, 0, x->len);
		c->x = x;
		x->conn = c;
		if (rc < 0)
			conn_kill(c, rc, KILL_ABORT);
		else
			conn_flush(c);
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
		/* start may have reported and the callback may have changed the queue. */
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
	if (io->closing)
		rc = -ESHUTDOWN;
	else if (!upstream_domain(io->reg, id))
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
	if (rc < 0) {
		set_reason(io, NULL, rc);
		cb(ud, rc, false, 0, NULL, 0);
		return rc;
	}
	x->io = io;
	x->id = id;
	x->kind = kind;
	x->cb = cb;
	x->ud = ud;
	x->start_ms = now_ms(io);
	x->len = len;
	memcpy(x->req, req, len);
	struct sync_call sc = { .outer = io->sync, .x = x };
	io->sync = &sc;
	bool started = start(io, x);
	io->sync = sc.outer;
	if (sc.reported)
		return sc.err < 0 ? sc.err : -EIO;
	if (!started) {
		struct upstream_io_exchange **p = &io->queue;
		while (*p)
			p = &(*p)->next;
		*p = x;
		rearm(io);
	}
	if (handle)
		*handle = x;
	return 0;
}

void upstream_io_cancel(struct upstream_io_exchange *x)
{
	if (!x)
		return;
	struct upstream_io *io = x->io;
	struct conn *c = x->conn;
	if (c) {
		uint32_t id = c->id;
		c->x = NULL;
		x->conn = NULL;
		conn_kill(c, -ECANCELED, KILL_ABORT);
		pump(io, id);
	} else {
		dequeue(x);
	}
	gnutls_memset(x->req, 0, x->len);
	free(x);
}

unsigned upstream_io_kept(const struct upstream_io *io, uint32_t id)
{
	return conns_of(io, id);
}

/* ---- Per-upstream memory --------------------------------------------------------------------- */

static struct ups *ups_get(struct upstream_io *io, uint32_t id, bool create)
{
	for (struct ups *u = io->ups; u; u = u->next)
		if (u->id == id)
			return u;
	if (!create)
		return NULL;
	struct ups *u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->id = id;
	u->next = io->ups;
	io->ups = u;
	return u;
}

/* The AEAD a deep check uses: 15 if the upstream supports it, else 17, else none. */
static uint16_t deep_aead_of(const struct ke_msg_response *resp)
{
	static const uint16_t prefs[] = { AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_512 };
	for (size_t p = 0; p < sizeof prefs / sizeof prefs[0]; p++)
		for (size_t i = 0; i < resp->n_supported_algorithms; i++)
			if (resp->supported_algorithms[i].id == prefs[p] &&
			    resp->supported_algorithms[i].key_len == aead_key_len(prefs[p]))
				return prefs[p];
	return 0;
}

/* ---- Probes ---------------------------------------------------------------------------------- */

static const char *remote_reason(int parse_rc, const struct ke_msg_response *resp, char *buf,
				 size_t len)
{
	if (parse_rc == -EREMOTEIO && resp->has_error)
		snprintf(buf, len, "upstream answered Error %u", resp->error);
	else if (parse_rc == -EREMOTEIO)
		snprintf(buf, len, "upstream sent a warning");
	else
		snprintf(buf, len, "malformed response: %s", strerror(-parse_rc));
	return buf;
}

static void probe_done(void *ud, int err, bool keys_sent, int parse_rc,
		       const struct ke_msg_response *resp, uint64_t latency_ms)
{
	struct probe *pr = ud;
	struct upstream_io *io = pr->io;
	uint32_t id = pr->id;
	char buf[REASON_MAX];
	(void)keys_sent;
	(void)latency_ms;
	free(pr);
	if (io->closing)
		return;
	uint64_t now = now_ms(io);
	if (err < 0) {
		upstream_probe_failed(io->reg, id, io->reason, now);
	} else if (parse_rc < 0) {
		upstream_probe_failed(io->reg, id, remote_reason(parse_rc, resp, buf, sizeof buf),
				      now);
	} else {
		struct ups *u = ups_get(io, id, true);
		if (u)
			u->deep_aead = deep_aead_of(resp);
		upstream_probe_ok(io->reg, id, resp, now);
	}
	rearm(io);
}

static void start_probe(struct upstream_io *io, uint32_t id)
{
	uint8_t buf[64];
	upstream_probe_started(io->reg, id, now_ms(io));
	int n = ke_msg_build_support_request(buf, sizeof buf, io->cfg->numbering, true, true, true);
	struct probe *pr = n > 0 ? malloc(sizeof *pr) : NULL;
	if (!pr) {
		upstream_probe_failed(io->reg, id, "cannot build a Support request", now_ms(io));
		return;
	}
	pr->io = io;
	pr->id = id;
	upstream_io_exchange(io, id, buf, (size_t)n, KE_MSG_REQUEST_SUPPORT, probe_done, pr, NULL);
}

/* ---- Deep checks ----------------------------------------------------------------------------- */

static void deep_free(struct deep *d)
{
	struct upstream_io *io = d->io;
	gnutls_memset(d->c2s, 0, sizeof d->c2s);
	gnutls_memset(d->s2c, 0, sizeof d->s2c);
	free(d);
	release(io);
}

/* Reports the result once (not while closing: shutdown says nothing about the upstream) and
 * releases the stages still open. */
static void deep_finish(struct deep *d, bool ok, const char *reason)
{
	struct upstream_io *io = d->io;
	if (!d->linked)
		return;
	d->linked = false;
	for (struct deep **p = &io->deeps; *p; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	if (d->x) {
		upstream_io_cancel(d->x);
		d->x = NULL;
	}
	if (d->udp) {
		net_udp_close(d->udp);
		d->udp = NULL;
	}
	if (!io->closing) {
		if (ok)
			log_debug("upstream %s:%u: deep check passed", name_of(io, d->id),
				  upstream_port(io->reg, d->id));
		else
			log_info("upstream %s:%u: deep check failed: %s", name_of(io, d->id),
				 upstream_port(io->reg, d->id), reason);
		upstream_deep_result(io->reg, d->id, ok, ok ? NULL : reason, now_ms(io));
	}
	if (d->resolving)
		uv_cancel((uv_req_t *)&d->gai);
	else
		deep_free(d);
	if (!io->closing)
		rearm(io);
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr_storage *b)
{
	if (a->sa_family != b->ss_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

static void deep_recv(struct net_udp *u, const uint8_t *buf, size_t len,
		      const struct sockaddr *from, void *ud)
{
	struct deep *d = ud;
	struct aead *s2c = NULL;
	struct nts_ntp_response out;
	(void)u;
	/* Anyone can send us datagrams: a bad one is noted and the real reply still awaited. */
	if (!d->linked || !same_addr(from, &d->to))
		return;
	int rc = aead_new(&s2c, d->aead, d->s2c, d->key_len);
	if (rc == 0)
		rc = nts_ntp_verify_response(buf, len, d->sent_ts, d->uid, sizeof d->uid, s2c, &out);
	aead_free(s2c);
	gnutls_memset(&out, 0, sizeof out);
	if (rc == NTS_NTP_RESPONSE_OK) {
		deep_finish(d, true, NULL);
		return;
	}
	if (rc == NTS_NTP_RESPONSE_NAK)
		snprintf(d->reason, sizeof d->reason, "NTS NAK for fresh cookies");
	else
		snprintf(d->reason, sizeof d->reason, "NTP reply refused: %s", strerror(-rc));
}

/* Sends the NTS-protected request to d->to. Returns 0, or a reason for the failure. */
static const char *deep_send(struct deep *d)
{
	struct upstream_io *io = d->io;
	struct sockaddr_storage local = { .ss_family = d->to.ss_family };
	uint8_t nonce[NTS_NTP_NONCE_LEN], pkt[NTP_BUF];
	char err[128];
	struct aead *c2s = NULL;

	if (net_udp_new(&d->udp, io->loop, (struct sockaddr *)&local, deep_recv, d, err,
			sizeof err) < 0) {
		d->udp = NULL;
		return "cannot open a UDP socket";
	}
	if (gnutls_rnd(GNUTLS_RND_NONCE, d->uid, sizeof d->uid) < 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, nonce, sizeof nonce) < 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, &d->sent_ts, sizeof d->sent_ts) < 0)
		return "no randomness";
	struct nts_ntp_request_params p = {
		.hdr = { .leap = NTP_PACKET_LEAP_UNSYNC, .version = NTP_PACKET_VERSION,
			 .mode = NTP_PACKET_MODE_CLIENT, .transmit_ts = d->sent_ts },
		.uid = { d->uid, sizeof d->uid },
		.cookie = { d->cookie.data, d->cookie.len },
		.placeholders = 0,
		.nonce = { nonce, sizeof nonce },
	};
	int n = aead_new(&c2s, d->aead, d->c2s, d->key_len);
	if (n == 0)
		n = nts_ntp_build_request(&p, c2s, pkt, sizeof pkt);
	aead_free(c2s);
	if (n < 0)
		return "cannot build the NTS request";
	if (net_udp_send(d->udp, pkt, (size_t)n, (struct sockaddr *)&d->to) < 0)
		return "cannot send the NTS request";
	d->deadline = now_ms(io) + io->cfg->upstream_timeout_ms;
	snprintf(d->reason, sizeof d->reason, "no NTP reply");
	rearm(io);
	return NULL;
}

static void deep_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct deep *d = req->data;
	d->resolving = false;
	if (!d->linked) {
		uv_freeaddrinfo(res);
		deep_free(d);
		return;
	}
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		deep_finish(d, false, "cannot resolve the NTP server");
		return;
	}
	uint16_t port = ((struct sockaddr_in *)&d->to)->sin_port;
	memcpy(&d->to, res->ai_addr, res->ai_addrlen);
	uv_freeaddrinfo(res);
	if (d->to.ss_family == AF_INET)
		((struct sockaddr_in *)&d->to)->sin_port = port;
	else
		((struct sockaddr_in6 *)&d->to)->sin6_port = port;
	const char *why = deep_send(d);
	if (why)
		deep_finish(d, false, why);
}

static void deep_ke_done(void *ud, int err, bool keys_sent, int parse_rc,
			 const struct ke_msg_response *resp, uint64_t latency_ms)
{
	struct deep *d = ud;
	struct upstream_io *io = d->io;
	char buf[REASON_MAX + 32];
	(void)keys_sent;
	(void)latency_ms;
	d->x = NULL;
	if (err < 0) {
		snprintf(buf, sizeof buf, "Fixed Key exchange: %s", io->reason);
		deep_finish(d, false, buf);
		return;
	}
	if (parse_rc < 0) {
		deep_finish(d, false, remote_reason(parse_rc, resp, buf, sizeof buf));
		return;
	}
	if (!resp->has_protocol || resp->protocol != KE_MSG_PROTOCOL_NTPV4 || !resp->has_aead ||
	    resp->aead != d->aead || resp->n_cookies == 0) {
		deep_finish(d, false, "Fixed Key answer without the protocol, AEAD or cookies asked");
		return;
	}
	d->cookie = resp->cookies[0];
	const char *server = resp->has_server ? resp->server.name : name_of(io, d->id);
	uint16_t port = resp->has_port ? resp->port : KE_MSG_PORT_DEFAULT;
	d->deadline = now_ms(io) + io->cfg->upstream_timeout_ms;
	if (parse_literal(server, &d->to)) {
		if (d->to.ss_family == AF_INET)
			((struct sockaddr_in *)&d->to)->sin_port = htons(port);
		else
			((struct sockaddr_in6 *)&d->to)->sin6_port = htons(port);
		const char *why = deep_send(d);
		if (why)
			deep_finish(d, false, why);
		return;
	}
	/* Keep the port where deep_resolved finds it (same offset in both families). */
	memset(&d->to, 0, sizeof d->to);
	((struct sockaddr_in *)&d->to)->sin_port = htons(port);
	d->gai.data = d;
	if (resolve(io->loop, &d->gai, deep_resolved, server, SOCK_DGRAM) < 0) {
		deep_finish(d, false, "cannot resolve the NTP server");
		return;
	}
	d->resolving = true;
	rearm(io);
}

static void start_deep(struct upstream_io *io, uint32_t id)
{
	uint8_t req[KE_MSG_REQUEST_MAX];
	const struct ups *u = ups_get(io, id, false);
	upstream_deep_started(io->reg, id, now_ms(io));
	struct deep *d = calloc(1, sizeof *d);
	if (!d) {
		upstream_deep_result(io->reg, id, false, "out of memory", now_ms(io));
		return;
	}
	d->io = io;
	d->id = id;
	d->linked = true;
	d->next = io->deeps;
	io->deeps = d;
	io->pending++;
	d->aead = u ? u->deep_aead : 0;
	d->key_len = aead_key_len(d->aead);
	if (d->key_len == 0) {
		deep_finish(d, false, "upstream supports neither AEAD 15 nor 17");
		return;
	}
	if (gnutls_rnd(GNUTLS_RND_KEY, d->c2s, d->key_len) < 0 ||
	    gnutls_rnd(GNUTLS_RND_KEY, d->s2c, d->key_len) < 0) {
		deep_finish(d, false, "no randomness");
		return;
	}
	int n = ke_msg_build_fixed_key_request(req, sizeof req, io->cfg->numbering, d->c2s, d->s2c,
					       d->key_len, KE_MSG_PROTOCOL_NTPV4, d->aead, true);
	if (n < 0) {
		gnutls_memset(req, 0, sizeof req);
		deep_finish(d, false, "cannot build a Fixed Key request");
		return;
	}
	struct upstream_io_exchange *x;
	upstream_io_exchange(io, id, req, (size_t)n, KE_MSG_REQUEST_FIXED_KEY, deep_ke_done, d,
			     &x);
	gnutls_memset(req, 0, sizeof req);
	/* A synchronous failure has already finished d. */
	if (x)
		d->x = x;
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
		set_reason(io, "no connection free in time", -ETIMEDOUT);
		finish(x, -ETIMEDOUT, false, 0, NULL);
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
			deep_finish(d, false, d->resolving ? "NTP server not resolved in time"
							   : d->reason);
			goto deeps;
		}
	}
}

static void on_tick(uv_timer_t *t)
{
	struct upstream_io *io = t->data;
	uint64_t now = now_ms(io);
	uint32_t id;
	expire(io, now);
	/* Each due upstream is started once per tick even if the registry keeps it due. */
	for (size_t n = upstream_count(io->reg); n > 0 && !io->closing &&
						 upstream_probe_due(io->reg, now, &id) == 0; n--)
		start_probe(io, id);
	for (size_t n = upstream_count(io->reg); n > 0 && !io->closing &&
						 upstream_deep_due(io->reg, now, &id) == 0; n--)
		start_deep(io, id);
	rearm(io);
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void rearm(struct upstream_io *io)
{
	if (io->closing)
		return;
	uint64_t next = min64(upstream_next_probe_ms(io->reg), upstream_next_deep_ms(io->reg));
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
	uint64_t now = now_ms(io);
	uv_timer_start(&io->timer, on_tick, next > now ? next - now : 0, 0);
}

/* ---- Life cycle ------------------------------------------------------------------------------ */

int upstream_io_new(struct upstream_io **out, uv_loop_t *loop, struct tls_creds *creds,
		    struct upstream_registry *registry, const struct upstream_io_config *cfg)
{
	struct upstream_io *io = calloc(1, sizeof *io);
	if (!io)
		return -ENOMEM;
	int rc = uv_timer_init(loop, &io->timer);
	if (rc < 0) {
		free(io);
		return rc;
	}
	io->timer.data = io;
	io->loop = loop;
	io->creds = tls_creds_ref(creds);
	io->reg = registry;
	io->cfg = cfg;
	io->pending = 1;
	rearm(io);
	*out = io;
	return 0;
}

void upstream_io_set_creds(struct upstream_io *io, struct tls_creds *creds)
{
	struct tls_creds *old = io->creds;
	io->creds = tls_creds_ref(creds);
	tls_creds_unref(old);
}

void upstream_io_kick(struct upstream_io *io)
{
	/* Forget what we kept for upstreams the registry no longer knows. */
	for (struct ups **p = &io->ups; *p;) {
		struct ups *u = *p;
		if (upstream_domain(io->reg, u->id)) {
			p = &u->next;
			continue;
		}
		*p = u->next;
		free(u);
	}
	rearm(io);
}

static void timer_closed(uv_handle_t *h)
{
	release(h->data);
}

void upstream_io_close(struct upstream_io *io)
{
	if (io->closing)
		return;
	io->closing = true;
	uv_timer_stop(&io->timer);
	uv_close((uv_handle_t *)&io->timer, timer_closed);
	while (io->deeps)
		deep_finish(io->deeps, false, NULL);
	while (io->queue) {
		struct upstream_io_exchange *x = io->queue;
		io->queue = x->next;
		set_reason(io, "shutting down", -ECANCELED);
		finish(x, -ECANCELED, false, 0, NULL);
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
