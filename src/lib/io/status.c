#include "status.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "status_http.h"

/* ---- status_text and the Prometheus text format -------------------------------------------- */

void status_text_init(struct status_text *t)
{
	memset(t, 0, sizeof *t);
}

void status_text_deinit(struct status_text *t)
{
	free(t->buf);
	memset(t, 0, sizeof *t);
}

/* Makes room for extra more bytes plus the terminating NUL. */
static bool reserve(struct status_text *t, size_t extra)
{
	if (t->err)
		return false;
	if (extra >= SIZE_MAX / 2 - t->len) {
		t->err = -ENOMEM;
		return false;
	}
	size_t need = t->len + extra + 1;
	if (need <= t->cap)
		return true;
	size_t cap = t->cap ? t->cap : 256;
	while (cap < need)
		cap *= 2;
	char *buf = realloc(t->buf, cap);
	if (!buf) {
		t->err = -ENOMEM;
		return false;
	}
	t->buf = buf;
	t->cap = cap;
	return true;
}

void status_text_append(struct status_text *t, const char *s, size_t len)
{
	if (!reserve(t, len))
		return;
	memcpy(t->buf + t->len, s, len);
	t->len += len;
	t->buf[t->len] = '\0';
}

void status_text_printf(struct status_text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		if (!t->err)
			t->err = -EINVAL;
		return;
	}
	if (!reserve(t, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
}

void status_metric_header(struct status_text *t, const char *name, const char *type,
			  const char *help)
{
	status_text_printf(t, "# HELP %s ", name);
	for (const char *p = help; *p; p++) {
		if (*p == '\\')
			status_text_append(t, "\\\\", 2);
		else if (*p == '\n')
			status_text_append(t, "\\n", 2);
		else
			status_text_append(t, p, 1);
	}
	status_text_printf(t, "\n# TYPE %s %s\n", name, type);
}

/* Counters are integers and must not print as 1.2e+06 or 5.000000; other values take the
 * shortest form that reads back to the same double. */
static void format_value(char *buf, size_t len, double v)
{
	if (isnan(v))
		snprintf(buf, len, "NaN");
	else if (isinf(v))
		snprintf(buf, len, "%s", v > 0 ? "+Inf" : "-Inf");
	else if (v > -0x1p63 && v < 0x1p63 && (double)(long long)v == v)
		snprintf(buf, len, "%lld", (long long)v);
	else {
		snprintf(buf, len, "%.15g", v);
		if (strtod(buf, NULL) != v)
			snprintf(buf, len, "%.17g", v);
	}
}

void status_metric_value(struct status_text *t, const char *name, const char *labels,
			 double value)
{
	char num[64];
	format_value(num, sizeof num, value);
	if (labels)
		status_text_printf(t, "%s{%s} %s\n", name, labels, num);
	else
		status_text_printf(t, "%s %s\n", name, num);
}

const char *status_label_escape(const char *value, char *buf, size_t buflen)
{
	if (buflen == 0)
		return buf;
	size_t o = 0;
	for (const char *p = value; *p; p++) {
		char esc = *p == '\\' ? '\\' : *p == '"' ? '"' : *p == '\n' ? 'n' : 0;
		size_t need = esc ? 2 : 1;
		if (o + need >= buflen)
			break;
		if (esc) {
			buf[o++] = '\\';
			buf[o++] = esc;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return buf;
}

/* ---- The server ---------------------------------------------------------------------------- */

struct conn;

struct status_server {
	struct net_listener *listener; /* NULL once its close callback ran */
	unsigned flags;		       /* STATUS_SERVE_* */
	const struct status_provider *provider;
	void *ud;
	struct sockaddr_storage addr;
	struct conn *conns;
	bool closing;
};

struct conn {
	struct status_server *srv;
	struct net_stream *stream;
	struct conn *prev, *next;
	struct status_http req;
	uint64_t accepted_ms; /* the loop's time at accept */
	bool answered;
};

static void maybe_free(struct status_server *s)
{
	if (s->closing && !s->listener && !s->conns)
		free(s);
}

static const char *reason(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 503:
		return "Service Unavailable";
	default:
		return "Internal Server Error";
	}
}

/* Writes the whole answer and closes; the body (borrowed) is left out for HEAD. */
static void send_response(struct conn *c, int code, const char *type, const char *body,
			  size_t body_len)
{
	struct status_text out = { 0 };
	bool head = status_http_is_head(&c->req);

	c->answered = true;
	status_text_printf(&out,
			   "HTTP/1.1 %d %s\r\n"
			   "Content-Type: %s\r\n"
			   "Content-Length: %zu\r\n"
			   "Cache-Control: no-store\r\n"
			   "%s"
			   "Connection: close\r\n"
			   "\r\n",
			   code, reason(code), type, body_len,
			   code == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (!head)
		status_text_append(&out, body, body_len);
	if (out.err || net_stream_write(c->stream, (const uint8_t *)out.buf, out.len) < 0) {
		log_debug("status: cannot answer a request");
		net_stream_abort(c->stream);
	} else {
		net_stream_close(c->stream);
	}
	status_text_deinit(&out);
}

static void send_error(struct conn *c, int code)
{
	char body[64];
	int n = snprintf(body, sizeof body, "%d %s\n", code, reason(code));
	send_response(c, code, "text/plain; charset=utf-8", body, (size_t)n);
}

static void serve_status(struct conn *c)
{
	const struct status_provider *pv = c->srv->provider;
	json_t *doc = pv->status_json(c->srv->ud);
	char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
	json_decref(doc);
	if (!text) {
		log_debug("status: no status document");
		send_error(c, 500);
		return;
	}
	/* The document ends with a newline so `curl` leaves the shell prompt alone. */
	struct status_text body = { 0 };
	status_text_append(&body, text, strlen(text));
	status_text_append(&body, "\n", 1);
	free(text);
	if (body.err)
		send_error(c, 500);
	else
		send_response(c, 200, "application/json", body.buf, body.len);
	status_text_deinit(&body);
}

static void serve_metrics(struct conn *c)
{
	const struct status_provider *pv = c->srv->provider;
	struct status_text body = { 0 };
	pv->metrics(&body, c->srv->ud);
	if (body.err)
		send_error(c, 500);
	else
		send_response(c, 200, "text/plain; version=0.0.4; charset=utf-8",
			      body.buf ? body.buf : "", body.len);
	status_text_deinit(&body);
}

static void route(struct conn *c)
{
	enum status_http_target target;
	int code = status_http_route(&c->req, &target);
	if (code == 400)
		log_debug("status: bad request target");
	/* A metrics listener faces Prometheus, often beyond loopback: the counters only. */
	if (code == 0 && target == STATUS_HTTP_STATUS &&
	    (c->srv->flags & STATUS_SERVE_METRICS_ONLY))
		code = 404;
	if (code)
		send_error(c, code);
	else if (target == STATUS_HTTP_STATUS)
		serve_status(c);
	else
		serve_metrics(c);
}

static void conn_read(struct net_stream *st, const uint8_t *buf, size_t len, void *ud)
{
	struct conn *c = ud;
	if (c->answered || len == 0)
		return;
	/* The first bytes: the request now has what is left of the whole deadline. */
	if (c->req.received == 0) {
		uint64_t spent = net_stream_now_ms(st) - c->accepted_ms;
		net_stream_set_deadline(st, spent < STATUS_TIMEOUT_MS ? STATUS_TIMEOUT_MS - spent : 1);
	}
	switch (status_http_feed(&c->req, buf, len)) {
	case STATUS_HTTP_MORE:
		break;
	case STATUS_HTTP_COMPLETE:
		route(c);
		break;
	case STATUS_HTTP_BAD:
		log_debug("status: malformed request or over %d bytes (%s)", STATUS_REQUEST_MAX,
			  http_errno_name(HTTP_PARSER_ERRNO(&c->req.parser)));
		send_error(c, 400);
		break;
	}
}

static void conn_eof(struct net_stream *st, int status, void *ud)
{
	struct conn *c = ud;
	if (c->answered)
		return;
	if (status == 0 && status_http_eof(&c->req) == STATUS_HTTP_BAD) {
		/* A half-closed peer with a partial request can still read why it failed. */
		send_error(c, 400);
		return;
	}
	c->answered = true;
	if (status == 0)
		net_stream_close(st);
	else
		net_stream_abort(st);
}

static void conn_timeout(struct net_stream *st, void *ud)
{
	struct conn *c = ud;
	log_debug("status: request timed out");
	c->answered = true;
	net_stream_abort(st);
}

static void conn_closed(struct net_stream *st, void *ud)
{
	struct conn *c = ud;
	struct status_server *s = c->srv;
	(void)st;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
	maybe_free(s);
}

static const struct net_stream_ops conn_ops = {
	.on_read = conn_read,
	.on_eof = conn_eof,
	.on_timeout = conn_timeout,
	.on_closed = conn_closed,
};

/* With every slot taken, the oldest connection that has not sent a whole request makes room: a
 * local user holding idle connections cannot blind monitoring. It learns why (503). */
static void make_room(struct status_server *s)
{
	unsigned open = 0;
	struct conn *oldest = NULL;
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->answered)
			continue;
		open++;
		if (c->req.state != STATUS_HTTP_COMPLETE)
			oldest = c; /* the list is newest first */
	}
	if (open >= STATUS_MAX_CONNS && oldest) {
		log_debug("status: all %d slots taken; dropping the oldest idle connection",
			  STATUS_MAX_CONNS);
		send_error(oldest, 503);
	}
}

static int listener_accept(struct net_listener *l, struct net_stream *st, void *ud)
{
	struct status_server *s = ud;
	(void)l;
	if (s->closing)
		return -ECANCELED;
	make_room(s);
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->srv = s;
	c->stream = st;
	status_http_init(&c->req);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	net_stream_set_ops(st, &conn_ops, c);
	/* A connection that says nothing is the cheapest way to hold a slot: it gets less time. */
	c->accepted_ms = net_stream_now_ms(st);
	net_stream_set_deadline(st, STATUS_IDLE_MS);
	return 0;
}

static void listener_closed(struct net_listener *l, void *ud)
{
	struct status_server *s = ud;
	(void)l;
	s->listener = NULL;
	maybe_free(s);
}

static const struct net_listener_ops listener_ops = {
	.on_accept = listener_accept,
	.on_closed = listener_closed,
};

/* 127.0.0.0/8, ::1 and IPv4-mapped loopback. */
static bool is_loopback(const struct sockaddr *a)
{
	if (a->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
	if (a->sa_family != AF_INET6)
		return false;
	const struct in6_addr *v6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
	if (IN6_IS_ADDR_LOOPBACK(v6))
		return true;
	return IN6_IS_ADDR_V4MAPPED(v6) && v6->s6_addr[12] == 127;
}

/* Serves on a listener made by make (a new one on addr, or the adopted fd). */
static int server_start(struct status_server **out, uv_loop_t *loop, const struct sockaddr *addr,
			int fd, unsigned flags, const struct status_provider *provider, void *ud,
			char *err, size_t errlen)
{
	struct status_server *s = calloc(1, sizeof *s);
	int rc;

	if (!s) {
		if (fd >= 0)
			close(fd);
		snprintf(err, errlen, "status endpoint: out of memory");
		return -ENOMEM;
	}
	s->provider = provider;
	s->ud = ud;
	s->flags = flags;
	/* One slot more than served: the newcomer that makes the oldest idle connection go. */
	if (addr)
		rc = net_listener_new(&s->listener, loop, addr, STATUS_MAX_CONNS + 1, &listener_ops,
				      s, err, errlen);
	else
		rc = net_listener_adopt(&s->listener, loop, fd, STATUS_MAX_CONNS + 1, &listener_ops,
					s, err, errlen);
	if (rc < 0)
		goto fail;
	const struct sockaddr *bound = net_listener_addr(s->listener);
	size_t len = bound->sa_family == AF_INET6  ? sizeof(struct sockaddr_in6)
		     : bound->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						   : sizeof(struct sockaddr_un);
	memcpy(&s->addr, bound, len);
	if (bound->sa_family != AF_UNIX && !is_loopback(bound) &&
	    !(flags & STATUS_SERVE_METRICS_ONLY)) {
		char a[NET_ADDR_STRLEN];
		log_warn("status endpoint on %s, not a loopback address: whoever can reach it reads "
			 "the counters and can hold its %d connections",
			 net_addr_str(bound, a, sizeof a), STATUS_MAX_CONNS);
	}
	*out = s;
	return 0;
fail:
	free(s);
	return rc;
}

int status_server_new(struct status_server **out, uv_loop_t *loop, const struct sockaddr *addr,
		      const struct status_provider *provider, void *ud, char *err, size_t errlen)
{
	return server_start(out, loop, addr, -1, 0, provider, ud, err, errlen);
}

int status_server_new_flags(struct status_server **out, uv_loop_t *loop,
			    const struct sockaddr *addr, unsigned flags,
			    const struct status_provider *provider, void *ud, char *err,
			    size_t errlen)
{
	return server_start(out, loop, addr, -1, flags, provider, ud, err, errlen);
}

int status_server_adopt(struct status_server **out, uv_loop_t *loop, int fd, unsigned flags,
			const struct status_provider *provider, void *ud, char *err, size_t errlen)
{
	return server_start(out, loop, NULL, fd, flags, provider, ud, err, errlen);
}

const struct sockaddr *status_server_addr(const struct status_server *s)
{
	return (const struct sockaddr *)&s->addr;
}

void status_server_close(struct status_server *s)
{
	if (s->closing)
		return;
	s->closing = true;
	/* The listener goes last: its close callback may be what frees s. */
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		c->answered = true;
		net_stream_abort(c->stream);
	}
	net_listener_close(s->listener);
}
