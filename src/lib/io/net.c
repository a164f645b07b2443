#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "net_int.h"

/* Kernel queue of a listener: connections wait there while accepting is paused at the cap. */
#define LISTEN_BACKLOG 511
/* How long a closing stream may take to flush its writes and see the peer's FIN: a peer that
 * never reads must not hold a connection slot. */
#define LINGER_MS 2000
/* When a stream cannot be allocated, the pending connection is retried this much later. */
#define ACCEPT_RETRY_MS 1000
/* Read buffer of a stream made by net_connect (accepted streams share their listener's): room
 * for one whole TLS record (16 KiB plus its overhead). */
#define CONNECT_RBUF 16640

enum stream_state {
	STREAM_OPEN,	 /* reads are delivered, writes accepted */
	STREAM_DRAINING, /* flushing writes and waiting for the peer's FIN, bounded by LINGER_MS */
	STREAM_CLOSED,	 /* uv_close called on both handles */
};

struct net_listener {
	/* The listening socket, polled and accepted from here rather than by uv_listen: libuv's
	 * own answer to running out of descriptors accepts and closes connections without a word,
	 * where this one counts, warns and waits (the connections stay in the backlog). */
	uv_poll_t poll;
	int fd;
	bool polling;
	uv_timer_t retry;
	uv_loop_t *loop;
	const struct net_listener_ops *ops; /* NULL once on_closed ran */
	void *ud;
	struct sockaddr_storage addr;
	struct net_listener_stats stats;
	struct log_ratelimit accept_rl;
	unsigned max_conns;
	int handles;  /* listener handles not yet closed */
	bool closing;
	/* Shared by all streams of this listener: libuv hands it to one read callback at a time
	 * and on_read consumes the bytes before returning. The listener outlives its streams. */
	uint8_t rbuf[65536];
};

struct net_stream {
	uv_tcp_t tcp;
	uv_timer_t timer; /* the owner's deadline while open, the linger while draining */
	uv_shutdown_t shutdown;
	uv_connect_t connect;
	struct net_listener *listener; /* NULL for a stream made by net_connect */
	const struct net_stream_ops *ops;
	void *ud;
	struct sockaddr_storage peer;
	enum stream_state state;
	int handles;
	bool reading;
	bool eof;	    /* the peer finished sending, or the connection failed */
	bool shutdown_done; /* our FIN went out after the last write */
	bool connecting;    /* net_connect's request is pending */
	uint8_t rbuf[];	    /* CONNECT_RBUF bytes for a stream made by net_connect */
};

struct write_req {
	uv_write_t req;
	uint8_t data[];
};

const char *net_addr_str(const struct sockaddr *addr, char *buf, size_t buflen)
{
	char ip[INET6_ADDRSTRLEN];

	if (buflen == 0)
		return buf;
	if (addr && addr->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)addr;

		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
		snprintf(buf, buflen, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
	} else if (addr && addr->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
		if (in6->sin6_scope_id)
			snprintf(buf, buflen, "[%s%%%u]:%u", ip, (unsigned)in6->sin6_scope_id,
				 (unsigned)ntohs(in6->sin6_port));
		else
			snprintf(buf, buflen, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
	} else {
		snprintf(buf, buflen, "(address family %d)", addr ? (int)addr->sa_family : -1);
	}
	return buf;
}

bool net_addr_parse_ip(const char *name, struct sockaddr_storage *ss)
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

bool net_addr_equal(const struct sockaddr *a, const struct sockaddr_storage *b)
{
	if (a->sa_family != b->ss_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family != AF_INET6)
		return false;
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

socklen_t net_int_addr_len(const struct sockaddr *addr)
{
	return addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in);
}

void net_int_set_error(char *err, size_t errlen, const struct sockaddr *addr, int rc)
{
	char a[NET_ADDR_STRLEN];
	char msg[128];

	if (!err || errlen == 0)
		return;
	uv_strerror_r(rc, msg, sizeof msg);
	snprintf(err, errlen, "%s: %s", net_addr_str(addr, a, sizeof a), msg);
}

uint16_t net_int_addr_port(const struct sockaddr *addr)
{
	return ntohs(addr->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
						 : ((const struct sockaddr_in *)addr)->sin_port);
}

int net_int_bound_socket(const struct sockaddr *addr, int type, enum net_bind_mode mode, int *out)
{
	int one = 1;
	int fd;
	int rc;

	if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	fd = socket(addr->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A restarted TCP listener must not wait for the old connections' TIME_WAIT. */
	if (type == SOCK_STREAM && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
		goto fail;
	if (mode == NET_BIND_GROUP && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
		goto fail;
	if (addr->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
		goto fail;
	if (bind(fd, addr, net_int_addr_len(addr)) < 0)
		goto fail;
	if (type == SOCK_STREAM && listen(fd, LISTEN_BACKLOG) < 0)
		goto fail;
	*out = fd;
	return 0;
fail:
	rc = -errno;
	close(fd);
	return rc;
}

int net_int_local_addr(int fd, struct sockaddr_storage *out)
{
	socklen_t len = sizeof *out;

	return getsockname(fd, (struct sockaddr *)out, &len) < 0 ? -errno : 0;
}

/* ---- Streams ------------------------------------------------------------------------------- */

static void listener_stream_gone(struct net_listener *l);

static void stream_handle_closed(uv_handle_t *h)
{
	struct net_stream *s = h->data;
	struct net_listener *l = s->listener;

	if (--s->handles > 0)
		return;
	if (s->ops && s->ops->on_closed)
		s->ops->on_closed(s, s->ud);
	free(s);
	if (l)
		listener_stream_gone(l);
}

static void stop_reading(struct net_stream *s)
{
	if (s->reading)
		uv_read_stop((uv_stream_t *)&s->tcp);
	s->reading = false;
}

static void close_handles(struct net_stream *s)
{
	s->state = STREAM_CLOSED;
	s->reading = false;
	uv_close((uv_handle_t *)&s->tcp, stream_handle_closed);
	uv_close((uv_handle_t *)&s->timer, stream_handle_closed);
}

static void abort_stream(struct net_stream *s)
{
	if (s->state == STREAM_CLOSED)
		return;
	s->state = STREAM_CLOSED;
	s->reading = false;
	/* libuv refuses the reset once a shutdown is under way; a plain close then still frees the
	 * slot at once, and the kernel finishes or resets the connection on its own. */
	if (uv_tcp_close_reset(&s->tcp, stream_handle_closed) < 0)
		uv_close((uv_handle_t *)&s->tcp, stream_handle_closed);
	uv_close((uv_handle_t *)&s->timer, stream_handle_closed);
}

/* Reports the end of input to the owner once; later failures are seen by its next write. */
static void stream_ended(struct net_stream *s, int status)
{
	bool first = !s->eof;

	s->eof = true;
	stop_reading(s);
	if (s->state == STREAM_DRAINING) {
		if (s->shutdown_done || status < 0)
			close_handles(s);
		return;
	}
	if (first && s->state == STREAM_OPEN && s->ops && s->ops->on_eof)
		s->ops->on_eof(s, status, s->ud);
}

static void stream_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct net_stream *s = h->data;

	(void)suggested;
	if (s->listener) {
		buf->base = (char *)s->listener->rbuf;
		buf->len = sizeof s->listener->rbuf;
	} else {
		buf->base = (char *)s->rbuf;
		buf->len = CONNECT_RBUF;
	}
}

static void stream_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct net_stream *s = st->data;

	if (nread > 0) {
		/* While draining, the peer's late bytes are read only to be discarded, so that the
		 * final close sends a FIN and not a reset that could destroy our last reply. */
		if (s->state == STREAM_OPEN && s->ops && s->ops->on_read)
			s->ops->on_read(s, (const uint8_t *)buf->base, (size_t)nread, s->ud);
		return;
	}
	if (nread < 0)
		stream_ended(s, nread == UV_EOF ? 0 : (int)nread);
}

static int start_reading(struct net_stream *s)
{
	int rc;

	if (s->reading || s->eof)
		return 0;
	rc = uv_read_start((uv_stream_t *)&s->tcp, stream_alloc, stream_read);
	if (rc == 0)
		s->reading = true;
	return rc;
}

static void stream_timer(uv_timer_t *t)
{
	struct net_stream *s = t->data;
	char a[NET_ADDR_STRLEN];

	if (s->state == STREAM_OPEN) {
		if (s->ops && s->ops->on_timeout)
			s->ops->on_timeout(s, s->ud);
	} else if (s->state == STREAM_DRAINING) {
		log_debug("%s: closing linger expired",
			  net_addr_str((const struct sockaddr *)&s->peer, a, sizeof a));
		abort_stream(s);
	}
}

static void stream_shutdown(uv_shutdown_t *req, int status)
{
	struct net_stream *s = req->handle->data;

	if (s->state != STREAM_DRAINING)
		return;
	s->shutdown_done = true;
	if (status < 0 || s->eof)
		close_handles(s);
}

static void stream_written(uv_write_t *req, int status)
{
	struct net_stream *s = req->handle->data;

	free(req);
	if (status < 0 && status != UV_ECANCELED && s->state == STREAM_OPEN)
		stream_ended(s, status);
}

void net_stream_set_ops(struct net_stream *s, const struct net_stream_ops *ops, void *ud)
{
	s->ops = ops;
	s->ud = ud;
}

int net_stream_write(struct net_stream *s, const uint8_t *buf, size_t len)
{
	struct write_req *w;
	uv_buf_t b;
	int rc;

	if (s->state != STREAM_OPEN)
		return -EPIPE;
	if (len == 0)
		return 0;
	/* Most replies fit the socket buffer: try that first and copy only the rest. libuv refuses
	 * the try while anything is queued, which keeps the bytes in order. */
	b.base = (char *)buf;
	b.len = len;
	rc = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
	if (rc >= 0) {
		buf += rc;
		len -= (size_t)rc;
		if (len == 0)
			return 0;
	} else if (rc != UV_EAGAIN) {
		return rc;
	}
	w = malloc(sizeof *w + len);
	if (!w)
		return -ENOMEM;
	memcpy(w->data, buf, len);
	b.base = (char *)w->data;
	b.len = len;
	rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, stream_written);
	if (rc < 0)
		free(w);
	return rc;
}

uint64_t net_stream_now_ms(const struct net_stream *s)
{
	return uv_now(s->tcp.loop);
}

size_t net_stream_queued(const struct net_stream *s)
{
	return uv_stream_get_write_queue_size((const uv_stream_t *)&s->tcp);
}

void net_stream_set_deadline(struct net_stream *s, uint64_t timeout_ms)
{
	if (s->state != STREAM_OPEN)
		return;
	if (timeout_ms == 0)
		uv_timer_stop(&s->timer);
	else
		uv_timer_start(&s->timer, stream_timer, timeout_ms, 0);
}

void net_stream_close(struct net_stream *s)
{
	if (s->state != STREAM_OPEN)
		return;
	/* Before the connection is up there is no peer to flush writes to or to wait for. */
	if (s->connecting) {
		close_handles(s);
		return;
	}
	s->state = STREAM_DRAINING;
	uv_timer_start(&s->timer, stream_timer, LINGER_MS, 0);
	if (start_reading(s) < 0)
		s->eof = true;
	/* libuv sends the FIN only after every queued write went out. */
	if (uv_shutdown(&s->shutdown, (uv_stream_t *)&s->tcp, stream_shutdown) < 0)
		close_handles(s);
}

void net_stream_abort(struct net_stream *s)
{
	abort_stream(s);
}

const struct sockaddr *net_stream_peer(const struct net_stream *s)
{
	return (const struct sockaddr *)&s->peer;
}

static void stream_connected(uv_connect_t *req, int status)
{
	struct net_stream *s = req->handle->data;

	s->connecting = false;
	/* Closed by the owner meanwhile (libuv then reports UV_ECANCELED): on_closed follows. */
	if (s->state != STREAM_OPEN)
		return;
	if (status == 0)
		status = start_reading(s);
	s->ops->on_connect(s, status, s->ud);
	if (status < 0)
		abort_stream(s);
}

int net_connect(struct net_stream **out, uv_loop_t *loop, const struct sockaddr *addr,
		const struct net_stream_ops *ops, void *ud)
{
	struct net_stream *s;
	int rc;

	if (!ops || !ops->on_connect)
		return -EINVAL;
	if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	s = calloc(1, sizeof *s + CONNECT_RBUF);
	if (!s)
		return -ENOMEM;
	rc = uv_tcp_init_ex(loop, &s->tcp, addr->sa_family);
	if (rc < 0) {
		free(s);
		return rc;
	}
	uv_timer_init(loop, &s->timer);
	s->tcp.data = s;
	s->timer.data = s;
	s->handles = 2;
	s->state = STREAM_OPEN;
	memcpy(&s->peer, addr, net_int_addr_len(addr));
	/* Set before connecting, so not even the first write waits for Nagle. */
	rc = uv_tcp_nodelay(&s->tcp, 1);
	if (rc == 0)
		rc = uv_tcp_connect(&s->connect, &s->tcp, addr, stream_connected);
	if (rc < 0) {
		/* The handles are in the loop now: they go through their close callbacks. */
		close_handles(s);
		return rc;
	}
	s->connecting = true;
	s->ops = ops;
	s->ud = ud;
	*out = s;
	return 0;
}

/* ---- Listeners ----------------------------------------------------------------------------- */

static void listener_free_if_unused(struct net_listener *l)
{
	if (l->closing && l->handles == 0 && l->stats.active == 0)
		free(l);
}

static void accept_failed(struct net_listener *l, int rc)
{
	char a[NET_ADDR_STRLEN];
	char msg[128];

	l->stats.accept_errors++;
	if (log_ratelimit_allow(&l->accept_rl, uv_now(l->loop))) {
		uv_strerror_r(rc, msg, sizeof msg);
		log_warn("%s: accepting a connection failed: %s",
			 net_addr_str((const struct sockaddr *)&l->addr, a, sizeof a), msg);
	}
}

static void listener_readable(uv_poll_t *p, int status, int events);
static void listener_retry(uv_timer_t *t);

static void poll_on(struct net_listener *l)
{
	if (!l->polling && !l->closing && uv_poll_start(&l->poll, UV_READABLE, listener_readable) == 0)
		l->polling = true;
}

static void poll_off(struct net_listener *l)
{
	if (l->polling)
		uv_poll_stop(&l->poll);
	l->polling = false;
}

/* Makes a stream of an accepted descriptor (taken over) and hands it to the owner. */
static void serve_accepted(struct net_listener *l, int fd, const struct sockaddr_storage *peer)
{
	struct net_stream *s = calloc(1, sizeof *s);
	if (!s) {
		close(fd);
		accept_failed(l, -ENOMEM);
		return;
	}
	s->listener = l;
	s->state = STREAM_OPEN;
	s->peer = *peer;
	uv_tcp_init(l->loop, &s->tcp);
	uv_timer_init(l->loop, &s->timer);
	s->tcp.data = s;
	s->timer.data = s;
	s->handles = 2;
	l->stats.active++;
	int rc = uv_tcp_open(&s->tcp, fd);
	if (rc < 0) {
		close(fd);
		accept_failed(l, rc);
		close_handles(s);
		return;
	}
	uv_tcp_nodelay(&s->tcp, 1);
	l->stats.accepted++;
	rc = l->ops->on_accept(l, s, l->ud);
	if (rc == 0 && !s->ops)
		log_error("net: on_accept kept a stream without setting its callbacks");
	if (rc < 0 || !s->ops) {
		s->ops = NULL;
		abort_stream(s);
		return;
	}
	if (s->state == STREAM_OPEN && start_reading(s) < 0)
		abort_stream(s);
}

/* Connections taken per readable event: the loop's other work is not starved by a flood. */
#define ACCEPT_BATCH 64

static void listener_readable(uv_poll_t *p, int status, int events)
{
	struct net_listener *l = p->data;
	(void)events;
	if (status < 0) {
		accept_failed(l, status);
		return;
	}
	for (int n = 0; n < ACCEPT_BATCH && !l->closing; n++) {
		if (l->stats.active >= l->max_conns) {
			/* Full: an owner that ends a stream not worth its slot lets the newcomer in as
			 * soon as that stream is gone; otherwise the newcomer waits in the backlog. */
			poll_off(l);
			if (l->ops->shed && l->ops->shed(l, l->ud))
				l->stats.shed++;
			else
				l->stats.paused++;
			return;
		}
		struct sockaddr_storage peer;
		socklen_t len = sizeof peer;
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			serve_accepted(l, fd, &peer);
			continue;
		}
		int err = errno;
		if (err == EAGAIN || err == EWOULDBLOCK)
			return;
		if (err == EINTR || err == ECONNABORTED || err == EPROTO)
			continue;
		/* Out of descriptors or memory: counted and said (rate-limited), and accepting waits
		 * a moment instead of spinning; the connections wait in the backlog meanwhile. */
		accept_failed(l, -err);
		poll_off(l);
		uv_timer_start(&l->retry, listener_retry, ACCEPT_RETRY_MS, 0);
		return;
	}
}

static void resume(struct net_listener *l)
{
	if (l->closing || l->stats.active >= l->max_conns || uv_is_active((uv_handle_t *)&l->retry))
		return;
	poll_on(l);
}

static void listener_retry(uv_timer_t *t)
{
	resume(t->data);
}

static void listener_stream_gone(struct net_listener *l)
{
	l->stats.active--;
	if (l->closing)
		listener_free_if_unused(l);
	else
		resume(l);
}

static void listener_handle_closed(uv_handle_t *h)
{
	struct net_listener *l = h->data;

	if (--l->handles > 0)
		return;
	if (l->ops && l->ops->on_closed)
		l->ops->on_closed(l, l->ud);
	l->ops = NULL;
	listener_free_if_unused(l);
}

static void listener_poll_closed(uv_handle_t *h)
{
	struct net_listener *l = h->data;
	/* The descriptor is ours (uv_poll only watched it) and goes once libuv let go of it. */
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	listener_handle_closed(h);
}

static void listener_close_handles(struct net_listener *l)
{
	l->closing = true;
	poll_off(l);
	uv_close((uv_handle_t *)&l->poll, listener_poll_closed);
	uv_close((uv_handle_t *)&l->retry, listener_handle_closed);
}

int net_listener_new(struct net_listener **out, uv_loop_t *loop, const struct sockaddr *addr,
		     unsigned max_conns, const struct net_listener_ops *ops, void *ud, char *err,
		     size_t errlen)
{
	int fd = -1;
	int rc = max_conns == 0 || !ops || !ops->on_accept
			 ? -EINVAL
			 : net_int_bound_socket(addr, SOCK_STREAM, NET_BIND_EXCLUSIVE, &fd);
	if (rc < 0) {
		net_int_set_error(err, errlen, addr, rc);
		return rc;
	}
	return net_listener_adopt(out, loop, fd, max_conns, ops, ud, err, errlen);
}

int net_listener_adopt(struct net_listener **out, uv_loop_t *loop, int fd, unsigned max_conns,
		       const struct net_listener_ops *ops, void *ud, char *err, size_t errlen)
{
	struct net_listener *l = NULL;
	struct sockaddr_storage bound = { .ss_family = AF_UNSPEC };
	int rc;

	if (max_conns == 0 || !ops || !ops->on_accept) {
		rc = -EINVAL;
		goto fail;
	}
	rc = net_int_local_addr(fd, &bound);
	if (rc < 0)
		goto fail;
	l = calloc(1, sizeof *l);
	if (!l) {
		rc = -ENOMEM;
		goto fail;
	}
	l->addr = bound;
	l->loop = loop;
	l->ops = ops;
	l->ud = ud;
	l->max_conns = max_conns;
	l->accept_rl = (struct log_ratelimit)LOG_RATELIMIT_INIT(1, 5);
	l->fd = -1;
	/* Accepting from the socket ourselves needs it non-blocking. */
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = uv_poll_init_socket(loop, &l->poll, fd);
	if (rc < 0)
		goto fail;
	l->fd = fd;
	fd = -1;
	uv_timer_init(loop, &l->retry);
	l->poll.data = l;
	l->retry.data = l;
	l->handles = 2;
	poll_on(l);
	if (!l->polling) {
		/* The handles are in the loop now: they go through their close callbacks. */
		rc = -EIO;
		l->ops = NULL;
		listener_close_handles(l);
		l = NULL;
		goto fail;
	}
	*out = l;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(l);
	net_int_set_error(err, errlen, (const struct sockaddr *)&bound, rc);
	return rc;
}

int net_bind_group(const struct sockaddr *addr, int type, unsigned n, int *fds, char *err,
		   size_t errlen)
{
	int rc = 0;
	unsigned i = 0;

	if (n == 0)
		return -EINVAL;
	if (n == 1) {
		rc = net_int_bound_socket(addr, type, NET_BIND_EXCLUSIVE, &fds[0]);
		goto out;
	}
	/* SO_REUSEPORT would also let us join a group another process of this user holds on the
	 * address and share its traffic; an exclusive bind first says whether the address is
	 * free. */
	int probe;
	if ((rc = net_int_bound_socket(addr, type, NET_BIND_EXCLUSIVE, &probe)) < 0)
		goto out;
	close(probe);
	struct sockaddr_storage at;
	memcpy(&at, addr, net_int_addr_len(addr));
	for (; i < n; i++) {
		if ((rc = net_int_bound_socket((const struct sockaddr *)&at, type, NET_BIND_GROUP,
					       &fds[i])) < 0)
			break;
		/* Port 0: the rest of the group joins the port the first socket got. */
		if (i == 0 && net_int_addr_port(addr) == 0 && (rc = net_int_local_addr(fds[0], &at)) < 0) {
			i++;
			break;
		}
	}
	if (rc < 0)
		while (i-- > 0)
			close(fds[i]);
out:
	if (rc < 0)
		net_int_set_error(err, errlen, addr, rc);
	return rc;
}

const struct sockaddr *net_listener_addr(const struct net_listener *l)
{
	return (const struct sockaddr *)&l->addr;
}

const struct net_listener_stats *net_listener_stats(const struct net_listener *l)
{
	return &l->stats;
}

void net_listener_close(struct net_listener *l)
{
	if (l->closing)
		return;
	listener_close_handles(l);
}
