/* net: real libuv loop, real loopback sockets on ports the kernel picks. The clients are plain
 * libuv handles in the same loop; a watchdog timer fails a test that would hang. */
#include "net.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define WATCHDOG_MS 30000
#define MAX_STREAMS 16
#define MAX_CLIENTS 16
#define CHUNK 65536

enum mode {
	MODE_ECHO,	/* echo reads; close on EOF */
	MODE_BYE,	/* write "bye" and close inside on_accept */
	MODE_ABORT,	/* abort (and close again) inside on_read */
	MODE_TIMEOUT,	/* deadline in on_accept, abort on timeout */
	MODE_DISARM,	/* deadline set then disarmed; a test timer closes later */
	MODE_FLUSH,	/* queue FLUSH_BYTES then close at once */
	MODE_LINGER,	/* as FLUSH with LINGER_BYTES to a client that never reads */
	MODE_CAP,	/* hold streams open until the cap was hit, then "hi" and close */
	MODE_REFUSE,	/* set ops, then refuse */
};

#define FLUSH_BYTES (16 * CHUNK)
#define LINGER_BYTES (256 * CHUNK)

struct sstream {
	struct net_stream *s;
	int closed_calls;
	int eof_calls;
	int eof_status;
	int timeouts;
	size_t nread;
	bool open;
};

struct client {
	uv_tcp_t tcp;
	uv_connect_t conn;
	uv_write_t wreq;
	const char *send;
	bool read;
	size_t close_after; /* close once this many bytes arrived (0: wait for the end) */
	bool connected;
	bool ended;
	int end; /* 1 EOF, 2 closed by us, or a negative libuv error */
	int local_port;
	uint8_t *rx;
	size_t rxlen;
	size_t rxcap;
};

static struct {
	uv_loop_t loop;
	uv_timer_t watchdog;
	uv_timer_t aux; /* per-test helper timer */
	bool aux_used;
	bool timed_out;
	enum mode mode;
	struct net_listener *l;
	struct sockaddr_storage addr;
	bool listener_closed;
	struct net_listener_stats final;
	struct sstream streams[MAX_STREAMS];
	int nstreams;
	int open_streams;
	int max_open;
	int closed_total;
	int expect_closed;
	struct client clients[MAX_CLIENTS];
	int nclients;
	int connected;
	int clients_ended;
	int expect_ended;
	bool released;
	bool finished;
	void (*on_client_end)(struct client *c);
} T;

static uint8_t client_rbuf[CHUNK];

static void ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

static void free_clients(void)
{
	for (int i = 0; i < T.nclients; i++)
		free(T.clients[i].rx);
}

TestSuite(net, .init = ignore_sigpipe, .fini = free_clients);

static uint8_t pattern(size_t i)
{
	return (uint8_t)((i >> 16) * 13 + i * 31);
}

static void make_addr(const char *ip, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (strchr(ip, ':'))
		cr_assert_eq(uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss), 0);
	else
		cr_assert_eq(uv_ip4_addr(ip, port, (struct sockaddr_in *)ss), 0);
}

static int addr_port(const struct sockaddr *a)
{
	if (a->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
	return ntohs(((const struct sockaddr_in *)a)->sin_port);
}

static void watchdog_fired(uv_timer_t *t)
{
	(void)t;
	T.timed_out = true;
	uv_stop(&T.loop);
}

static void setup(enum mode mode)
{
	memset(&T, 0, sizeof T);
	T.mode = mode;
	cr_assert_eq(uv_loop_init(&T.loop), 0);
	uv_timer_init(&T.loop, &T.watchdog);
	uv_timer_start(&T.watchdog, watchdog_fired, WATCHDOG_MS, 0);
	uv_unref((uv_handle_t *)&T.watchdog);
}

/* Runs until every handle closed, then checks that nothing is left in the loop. */
static void run_and_teardown(void)
{
	uv_run(&T.loop, UV_RUN_DEFAULT);
	cr_assert(!T.timed_out, "watchdog: the test hung");
	uv_close((uv_handle_t *)&T.watchdog, NULL);
	uv_run(&T.loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&T.loop), 0);
}

/* ---- Clients ------------------------------------------------------------------------------- */

static void check_done(void);

static void client_closed(uv_handle_t *h)
{
	(void)h;
}

static void client_end(struct client *c, int end)
{
	if (c->ended)
		return;
	c->ended = true;
	c->end = end;
	T.clients_ended++;
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, client_closed);
	if (T.on_client_end)
		T.on_client_end(c);
	check_done();
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	(void)suggested;
	buf->base = (char *)client_rbuf;
	buf->len = sizeof client_rbuf;
}

static void client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct client *c = st->data;

	if (nread < 0) {
		client_end(c, nread == UV_EOF ? 1 : (int)nread);
		return;
	}
	if (c->rxlen + (size_t)nread > c->rxcap) {
		c->rxcap = (c->rxlen + (size_t)nread) * 2;
		c->rx = realloc(c->rx, c->rxcap);
		cr_assert(c->rx);
	}
	memcpy(c->rx + c->rxlen, buf->base, (size_t)nread);
	c->rxlen += (size_t)nread;
	if (c->close_after && c->rxlen >= c->close_after)
		client_end(c, 2);
}

static void client_written(uv_write_t *req, int status)
{
	(void)req;
	(void)status;
}

static void client_connected(uv_connect_t *req, int status)
{
	struct client *c = req->handle->data;
	struct sockaddr_storage local;
	int len = sizeof local;

	if (status < 0) {
		client_end(c, status);
		return;
	}
	c->connected = true;
	T.connected++;
	cr_assert_eq(uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &len), 0);
	c->local_port = addr_port((struct sockaddr *)&local);
	if (c->send) {
		uv_buf_t b = uv_buf_init((char *)c->send, (unsigned)strlen(c->send));

		cr_assert_eq(uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, client_written), 0);
	}
	if (c->read)
		cr_assert_eq(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), 0);
}

static struct client *client_start(const char *send, bool read, size_t close_after)
{
	cr_assert_lt(T.nclients, MAX_CLIENTS);
	struct client *c = &T.clients[T.nclients++];

	c->send = send;
	c->read = read;
	c->close_after = close_after;
	cr_assert_eq(uv_tcp_init(&T.loop, &c->tcp), 0);
	c->tcp.data = c;
	cr_assert_eq(uv_tcp_connect(&c->conn, &c->tcp, (struct sockaddr *)&T.addr,
				    client_connected),
		     0);
	return c;
}

/* ---- The server-side owner ----------------------------------------------------------------- */

static void check_done(void)
{
	if (T.finished || T.closed_total < T.expect_closed || T.clients_ended < T.expect_ended)
		return;
	T.finished = true;
	net_listener_close(T.l);
	for (int i = 0; i < T.nclients; i++) {
		struct client *c = &T.clients[i];

		if (!uv_is_closing((uv_handle_t *)&c->tcp))
			uv_close((uv_handle_t *)&c->tcp, client_closed);
	}
}

static void s_read(struct net_stream *s, const uint8_t *buf, size_t len, void *ud)
{
	struct sstream *ss = ud;

	cr_assert(ss->open, "on_read after close");
	ss->nread += len;
	if (T.mode == MODE_ECHO) {
		cr_assert_eq(net_stream_write(s, buf, len), 0);
	} else if (T.mode == MODE_ABORT) {
		net_stream_abort(s);
		net_stream_close(s);
		net_stream_abort(s);
		net_stream_set_deadline(s, 1);
		cr_assert_eq(net_stream_write(s, buf, len), -EPIPE);
		ss->open = false;
	}
}

static void s_eof(struct net_stream *s, int status, void *ud)
{
	struct sstream *ss = ud;

	cr_assert(ss->open, "on_eof after close");
	ss->eof_calls++;
	ss->eof_status = status;
	ss->open = false;
	net_stream_close(s);
}

static void s_timeout(struct net_stream *s, void *ud)
{
	struct sstream *ss = ud;

	cr_assert(ss->open, "on_timeout after close");
	ss->timeouts++;
	ss->open = false;
	net_stream_abort(s);
}

static void s_closed(struct net_stream *s, void *ud)
{
	struct sstream *ss = ud;

	cr_assert_eq(ss->s, s);
	cr_assert_eq(ss->closed_calls, 0, "on_closed twice");
	ss->closed_calls++;
	T.closed_total++;
	T.open_streams--;
	check_done();
}

static const struct net_stream_ops s_ops = {
	.on_read = s_read,
	.on_eof = s_eof,
	.on_timeout = s_timeout,
	.on_closed = s_closed,
};

static void say_hi_and_close(struct sstream *ss)
{
	cr_assert_eq(net_stream_write(ss->s, (const uint8_t *)"hi", 2), 0);
	ss->open = false;
	net_stream_close(ss->s);
}

static void write_pattern(struct net_stream *s, size_t total)
{
	uint8_t *chunk = malloc(CHUNK);

	cr_assert(chunk);
	for (size_t off = 0; off < total; off += CHUNK) {
		for (size_t i = 0; i < CHUNK; i++)
			chunk[i] = pattern(off + i);
		cr_assert_eq(net_stream_write(s, chunk, CHUNK), 0);
	}
	free(chunk);
}

static void aux_closed(uv_handle_t *h)
{
	(void)h;
}

static void disarm_fired(uv_timer_t *t)
{
	struct sstream *ss = &T.streams[0];

	ss->open = false;
	net_stream_close(ss->s);
	uv_close((uv_handle_t *)t, aux_closed);
}

static int l_accept(struct net_listener *l, struct net_stream *s, void *ud)
{
	(void)ud;
	cr_assert_eq(l, T.l);
	cr_assert_lt(T.nstreams, MAX_STREAMS);
	struct sstream *ss = &T.streams[T.nstreams++];

	ss->s = s;
	ss->open = true;
	net_stream_set_ops(s, &s_ops, ss);
	if (T.mode == MODE_REFUSE)
		return -EPERM;
	T.open_streams++;
	if (T.open_streams > T.max_open)
		T.max_open = T.open_streams;
	switch (T.mode) {
	case MODE_BYE:
		cr_assert_eq(net_stream_write(s, (const uint8_t *)"bye", 3), 0);
		ss->open = false;
		net_stream_close(s);
		net_stream_close(s);
		cr_assert_eq(net_stream_write(s, (const uint8_t *)"x", 1), -EPIPE);
		break;
	case MODE_TIMEOUT:
		net_stream_set_deadline(s, 50);
		break;
	case MODE_DISARM:
		net_stream_set_deadline(s, 1);
		net_stream_set_deadline(s, 0);
		uv_timer_init(&T.loop, &T.aux);
		uv_timer_start(&T.aux, disarm_fired, 200, 0);
		break;
	case MODE_FLUSH:
		write_pattern(s, FLUSH_BYTES);
		ss->open = false;
		net_stream_close(s);
		break;
	case MODE_LINGER:
		write_pattern(s, LINGER_BYTES);
		ss->open = false;
		net_stream_close(s);
		break;
	case MODE_CAP:
		if (T.released)
			say_hi_and_close(ss);
		break;
	default:
		break;
	}
	return 0;
}

static void l_closed(struct net_listener *l, void *ud)
{
	(void)ud;
	T.listener_closed = true;
	T.final = *net_listener_stats(l);
}

static const struct net_listener_ops l_ops = {
	.on_accept = l_accept,
	.on_closed = l_closed,
};

/* Returns false if the address family is not available here. */
static bool start_listener(const char *ip, unsigned max_conns)
{
	struct sockaddr_storage ss;
	char err[256] = "";
	int rc;

	make_addr(ip, 0, &ss);
	rc = net_listener_new(&T.l, &T.loop, (struct sockaddr *)&ss, max_conns, &l_ops, NULL, err,
			      sizeof err);
	if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT)
		return false;
	cr_assert_eq(rc, 0, "%s", err);
	const struct sockaddr *a = net_listener_addr(T.l);

	cr_assert_eq(a->sa_family, ss.ss_family);
	cr_assert_neq(addr_port(a), 0);
	memcpy(&T.addr, a,
	       a->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	return true;
}

/* ---- TCP tests ----------------------------------------------------------------------------- */

static void echo_test(const char *ip)
{
	static const char msg[] = "hello, stream";

	setup(MODE_ECHO);
	if (!start_listener(ip, 8)) {
		run_and_teardown();
		cr_skip_test("%s not available", ip);
	}
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start(msg, true, strlen(msg));

	run_and_teardown();
	cr_assert_eq(c->end, 2);
	cr_assert_eq(c->rxlen, strlen(msg));
	cr_assert_arr_eq(c->rx, msg, strlen(msg));

	struct sstream *ss = &T.streams[0];

	cr_assert_eq(T.nstreams, 1);
	cr_assert_eq(ss->nread, strlen(msg));
	cr_assert_eq(ss->eof_calls, 1, "on_eof on peer close");
	cr_assert_eq(ss->eof_status, 0);
	cr_assert_eq(ss->closed_calls, 1);
	cr_assert(T.listener_closed);
	cr_assert_eq(T.final.accepted, 1);
	cr_assert_eq(T.final.active, 0);
	cr_assert_eq(T.final.paused, 0);
}

Test(net, echo_v4)
{
	echo_test("127.0.0.1");
}

Test(net, echo_v6)
{
	echo_test("::1");
}

/* The peer address handed to the owner is the client's end of the connection. */
static struct {
	int port;
	int family;
} peer_seen;

static int peer_accept(struct net_listener *l, struct net_stream *s, void *ud)
{
	const struct sockaddr *p = net_stream_peer(s);

	peer_seen.port = addr_port(p);
	peer_seen.family = p->sa_family;
	return l_accept(l, s, ud);
}

Test(net, peer_address)
{
	static const struct net_listener_ops ops = { .on_accept = peer_accept,
						     .on_closed = l_closed };
	struct sockaddr_storage ss;
	char err[256];

	setup(MODE_ECHO);
	make_addr("127.0.0.1", 0, &ss);
	cr_assert_eq(net_listener_new(&T.l, &T.loop, (struct sockaddr *)&ss, 2, &ops, NULL, err,
				      sizeof err),
		     0);
	memcpy(&T.addr, net_listener_addr(T.l), sizeof(struct sockaddr_in));
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start("ping", true, 4);

	run_and_teardown();
	cr_assert_eq(peer_seen.family, AF_INET);
	cr_assert_eq(peer_seen.port, c->local_port);
}

Test(net, close_inside_accept_flushes_and_fins)
{
	setup(MODE_BYE);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start(NULL, true, 0);

	run_and_teardown();
	cr_assert_eq(c->end, 1, "the client sees a clean EOF, got %d", c->end);
	cr_assert_eq(c->rxlen, 3);
	cr_assert_arr_eq(c->rx, "bye", 3);
	cr_assert_eq(T.streams[0].closed_calls, 1);
	cr_assert_eq(T.streams[0].eof_calls, 0, "no callback but on_closed after close");
	cr_assert_eq(T.streams[0].nread, 0);
}

Test(net, abort_inside_read_resets)
{
	setup(MODE_ABORT);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start("x", true, 0);

	run_and_teardown();
	cr_assert_eq(c->end, UV_ECONNRESET, "got %d", c->end);
	cr_assert_eq(T.streams[0].closed_calls, 1);
	cr_assert_eq(T.streams[0].eof_calls, 0);
	cr_assert_eq(T.streams[0].timeouts, 0, "the deadline is ignored after abort");
	cr_assert_eq(T.final.active, 0);
}

Test(net, deadline_fires)
{
	setup(MODE_TIMEOUT);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start(NULL, true, 0);

	run_and_teardown();
	cr_assert_eq(T.streams[0].timeouts, 1);
	cr_assert_eq(T.streams[0].closed_calls, 1);
	cr_assert_eq(c->end, UV_ECONNRESET, "abort after the timeout resets, got %d", c->end);
}

Test(net, deadline_disarmed)
{
	setup(MODE_DISARM);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start(NULL, true, 0);

	run_and_teardown();
	cr_assert_eq(T.streams[0].timeouts, 0);
	cr_assert_eq(T.streams[0].closed_calls, 1);
	cr_assert_eq(c->end, 1);
}

Test(net, close_flushes_queued_writes)
{
	setup(MODE_FLUSH);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	struct client *c = client_start(NULL, true, 0);

	run_and_teardown();
	cr_assert_eq(c->end, 1, "clean EOF after the data, got %d", c->end);
	cr_assert_eq(c->rxlen, FLUSH_BYTES);
	for (size_t i = 0; i < c->rxlen; i++)
		if (c->rx[i] != pattern(i))
			cr_assert_fail("byte %zu out of order", i);
	cr_assert_eq(T.streams[0].closed_calls, 1);
}

/* A peer that never reads cannot hold a slot: the linger cuts the close. */
Test(net, close_linger_is_bounded)
{
	setup(MODE_LINGER);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 0;
	struct client *c = client_start(NULL, false, 0);

	run_and_teardown();
	cr_assert(c->connected);
	cr_assert_eq(T.streams[0].closed_calls, 1);
	cr_assert_eq(T.final.active, 0);
}

Test(net, refuse_in_accept)
{
	setup(MODE_REFUSE);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 0;
	T.expect_ended = 1;
	struct client *c = client_start(NULL, true, 0);

	run_and_teardown();
	cr_assert(c->end == 1 || c->end < 0, "the client is disconnected, got %d", c->end);
	cr_assert_eq(c->rxlen, 0);
	cr_assert_eq(T.nstreams, 1);
	cr_assert_eq(T.streams[0].closed_calls, 0, "no stream callback after a refusal");
	cr_assert(T.listener_closed);
	cr_assert_eq(T.final.accepted, 1);
}

static void cap_poll(uv_timer_t *t)
{
	const struct net_listener_stats *st = net_listener_stats(T.l);

	cr_assert_leq(st->active, 4);
	if (T.connected < T.nclients || st->paused == 0 || T.open_streams < 4)
		return;
	T.released = true;
	for (int i = 0; i < T.nstreams; i++)
		if (T.streams[i].open)
			say_hi_and_close(&T.streams[i]);
	uv_close((uv_handle_t *)t, aux_closed);
}

Test(net, connection_cap_pauses_accepting)
{
	setup(MODE_CAP);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 8;
	T.expect_ended = 8;
	for (int i = 0; i < 8; i++)
		client_start(NULL, true, 0);
	uv_timer_init(&T.loop, &T.aux);
	uv_timer_start(&T.aux, cap_poll, 5, 5);

	run_and_teardown();
	cr_assert_eq(T.max_open, 4, "at most max_conns streams at once");
	cr_assert_eq(T.nstreams, 8, "every client is served in the end");
	for (int i = 0; i < 8; i++) {
		struct client *c = &T.clients[i];

		cr_assert_eq(c->end, 1, "client %d: %d", i, c->end);
		cr_assert_eq(c->rxlen, 2);
		cr_assert_arr_eq(c->rx, "hi", 2);
		cr_assert_eq(T.streams[i].closed_calls, 1);
	}
	cr_assert_gt(T.final.paused, 0);
	cr_assert_eq(T.final.accepted, 8);
	cr_assert_eq(T.final.active, 0);
	cr_assert_eq(T.final.accept_errors, 0);
}

static struct rlimit saved_nofile;
static uint64_t errors_while_low;

/* Some accepts failed for want of descriptors: the connection must still be waiting, not
 * dropped. Descriptors come back; the listener's retry serves it. */
static void emfile_check(uv_timer_t *t)
{
	const struct net_listener_stats *st = net_listener_stats(T.l);
	errors_while_low = st->accept_errors;
	cr_assert_eq(T.clients[0].end, 0, "the waiting connection was not dropped");
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
	uv_close((uv_handle_t *)t, aux_closed);
}

/* Out of descriptors: unlike libuv's own accept (which takes the connection with a reserve
 * descriptor and closes it without a word), the listener counts the failure, warns, and leaves
 * the connection waiting in the backlog; once descriptors are available again it is served. */
Test(net, accept_emfile_is_counted_and_the_connection_waits)
{
	struct rlimit low;
	int next_fd;

	setup(MODE_ECHO);
	start_listener("127.0.0.1", 8);
	T.expect_closed = 1;
	T.expect_ended = 1;
	client_start("x", true, 1);
	/* The client's socket exists now; the accepted one would be the next descriptor. */
	next_fd = dup(0);
	cr_assert_geq(next_fd, 0);
	close(next_fd);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved_nofile), 0);
	low = saved_nofile;
	low.rlim_cur = (rlim_t)next_fd;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	uv_timer_init(&T.loop, &T.aux);
	uv_timer_start(&T.aux, emfile_check, 300, 0);

	run_and_teardown();
	cr_assert_geq(errors_while_low, 1, "the failed accept was counted");
	cr_assert_eq(T.clients[0].end, 2, "served once descriptors were back: %d", T.clients[0].end);
	cr_assert_arr_eq(T.clients[0].rx, "x", 1);
	cr_assert_eq(T.final.accepted, 1);
	cr_assert_geq(T.final.accept_errors, 1);
	cr_assert_eq(T.streams[0].closed_calls, 1);
}

Test(net, listener_bind_errors)
{
	struct sockaddr_storage ss;
	struct net_listener *other = NULL;
	char err[256] = "";
	char want[128];
	int rc;

	setup(MODE_ECHO);
	start_listener("127.0.0.1", 4);
	rc = net_listener_new(&other, &T.loop, (struct sockaddr *)&T.addr, 4, &l_ops, NULL, err,
			      sizeof err);
	cr_assert_eq(rc, -EADDRINUSE);
	cr_assert_null(other);
	snprintf(want, sizeof want, "127.0.0.1:%d: address already in use",
		 addr_port((struct sockaddr *)&T.addr));
	cr_assert_str_eq(err, want);

	make_addr("127.0.0.1", 0, &ss);
	cr_assert_eq(net_listener_new(&other, &T.loop, (struct sockaddr *)&ss, 0, &l_ops, NULL,
				      err, sizeof err),
		     -EINVAL);
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_UNIX;
	cr_assert_eq(net_listener_new(&other, &T.loop, (struct sockaddr *)&ss, 4, &l_ops, NULL,
				      err, sizeof err),
		     -EAFNOSUPPORT);
	cr_assert_null(other);

	net_listener_close(T.l);
	net_listener_close(T.l);
	run_and_teardown();
	cr_assert(T.listener_closed);
}

/* ---- UDP ----------------------------------------------------------------------------------- */

#define UDP_COUNT 24
#define UDP_BIG 60000

static struct {
	struct net_udp *srv;
	struct net_udp *cli;
	bool got[UDP_COUNT];
	int received;
	int bad;
} U;

static size_t udp_len(int i)
{
	return i == UDP_COUNT - 1 ? UDP_BIG : (size_t)i * 37 + 1;
}

static void udp_echo(struct net_udp *u, const uint8_t *buf, size_t len,
		     const struct sockaddr *from, void *ud)
{
	(void)ud;
	cr_assert_eq(net_udp_send(u, buf, len, from), 0);
}

static void udp_reply(struct net_udp *u, const uint8_t *buf, size_t len,
		      const struct sockaddr *from, void *ud)
{
	(void)u;
	(void)ud;
	cr_assert_eq(addr_port(from), addr_port(net_udp_addr(U.srv)));
	if (len == 0 || buf[0] >= UDP_COUNT || len != udp_len(buf[0]) || U.got[buf[0]]) {
		U.bad++;
		return;
	}
	for (size_t j = 1; j < len; j++)
		if (buf[j] != (uint8_t)(buf[0] + j)) {
			U.bad++;
			return;
		}
	U.got[buf[0]] = true;
	if (++U.received == UDP_COUNT) {
		net_udp_close(U.srv);
		net_udp_close(U.cli);
		net_udp_close(U.cli);
	}
}

static void udp_test(const char *ip)
{
	struct sockaddr_storage ss;
	char err[256] = "";
	uint8_t *buf = malloc(70000);
	int rc;

	cr_assert(buf);
	memset(&U, 0, sizeof U);
	setup(MODE_ECHO);
	make_addr(ip, 0, &ss);
	rc = net_udp_new(&U.srv, &T.loop, (struct sockaddr *)&ss, udp_echo, NULL, err, sizeof err);
	if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
		free(buf);
		run_and_teardown();
		cr_skip_test("%s not available", ip);
	}
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(net_udp_new(&U.cli, &T.loop, (struct sockaddr *)&ss, udp_reply, NULL, err,
				 sizeof err),
		     0, "%s", err);
	cr_assert_neq(addr_port(net_udp_addr(U.srv)), 0);

	/* Sent back to back before the loop runs: the server finds them queued together and
	 * reads them in recvmmsg batches. */
	for (int i = 0; i < UDP_COUNT; i++) {
		size_t len = udp_len(i);

		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)(i + j);
		cr_assert_eq(net_udp_send(U.cli, buf, len, net_udp_addr(U.srv)), 0);
	}
	/* No datagram can exceed a receive slot: the kernel refuses it already. */
	cr_assert_eq(net_udp_send(U.cli, buf, 70000, net_udp_addr(U.srv)), -EMSGSIZE);
	free(buf);

	run_and_teardown();
	cr_assert_eq(U.bad, 0);
	cr_assert_eq(U.received, UDP_COUNT);
}

Test(net, udp_echo_v4)
{
	udp_test("127.0.0.1");
}

Test(net, udp_echo_v6)
{
	udp_test("::1");
}

static void udp_unused(struct net_udp *u, const uint8_t *buf, size_t len,
		       const struct sockaddr *from, void *ud)
{
	(void)u;
	(void)buf;
	(void)len;
	(void)from;
	(void)ud;
	cr_assert_fail("no datagram expected");
}

Test(net, udp_bind_error_and_send_after_close)
{
	struct sockaddr_storage ss;
	struct net_udp *a = NULL, *b = NULL;
	char err[256] = "";
	char want[128];

	setup(MODE_ECHO);
	make_addr("127.0.0.1", 0, &ss);
	cr_assert_eq(net_udp_new(&a, &T.loop, (struct sockaddr *)&ss, udp_unused, NULL, err,
				 sizeof err),
		     0);
	cr_assert_eq(net_udp_new(&b, &T.loop, net_udp_addr(a), udp_unused, NULL, err, sizeof err),
		     -EADDRINUSE);
	cr_assert_null(b);
	snprintf(want, sizeof want, "127.0.0.1:%d: address already in use",
		 addr_port(net_udp_addr(a)));
	cr_assert_str_eq(err, want);
	net_udp_close(a);
	cr_assert_eq(net_udp_send(a, (const uint8_t *)"x", 1, net_udp_addr(a)), -EBADF);
	run_and_teardown();
}

/* ---- Addresses ----------------------------------------------------------------------------- */

Test(net, addr_str)
{
	struct sockaddr_storage ss;
	char buf[NET_ADDR_STRLEN];

	make_addr("192.0.2.1", 4460, &ss);
	cr_assert_str_eq(net_addr_str((struct sockaddr *)&ss, buf, sizeof buf), "192.0.2.1:4460");
	make_addr("2001:db8::1", 123, &ss);
	cr_assert_str_eq(net_addr_str((struct sockaddr *)&ss, buf, sizeof buf),
			 "[2001:db8::1]:123");
	make_addr("::ffff:192.0.2.7", 65535, &ss);
	cr_assert_str_eq(net_addr_str((struct sockaddr *)&ss, buf, sizeof buf),
			 "[::ffff:192.0.2.7]:65535");
	make_addr("fe80::1", 1, &ss);
	((struct sockaddr_in6 *)&ss)->sin6_scope_id = 2;
	cr_assert_str_eq(net_addr_str((struct sockaddr *)&ss, buf, sizeof buf), "[fe80::1%2]:1");

	make_addr("192.0.2.1", 4460, &ss);
	cr_assert_str_eq(net_addr_str((struct sockaddr *)&ss, buf, 8), "192.0.2");
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_UNIX;
	cr_assert_str_eq(net_addr_str((struct sockaddr *)&ss, buf, sizeof buf),
			 "(address family 1)");
}

/* ---- Outgoing streams (net_connect) -------------------------------------------------------- */

enum cmode {
	CMODE_ECHO,	       /* send CMSG, close once it came back */
	CMODE_CLOSE_IN_CONNECT, /* send "bye" and close inside on_connect */
	CMODE_ABORT_IN_CONNECT, /* abort (and close again) inside on_connect */
	CMODE_DEADLINE,	       /* deadline armed in on_connect, abort on timeout */
	CMODE_PENDING,	       /* deadline armed before the connection is up, abort on timeout */
};

#define CMSG "ping over net_connect"

static struct {
	enum cmode mode;
	struct net_stream *s;
	int connect_calls;
	int connect_status;
	int eof_calls;
	int timeouts;
	int closed_calls;
	bool peer_ok;
	uint8_t rx[64];
	size_t rxlen;
} C;

static void c_connect(struct net_stream *s, int status, void *ud)
{
	cr_assert_eq(ud, &C);
	cr_assert_eq(s, C.s);
	C.connect_calls++;
	C.connect_status = status;
	if (status < 0)
		return;
	C.peer_ok = addr_port(net_stream_peer(s)) == addr_port((struct sockaddr *)&T.addr);
	switch (C.mode) {
	case CMODE_ECHO:
		cr_assert_eq(net_stream_write(s, (const uint8_t *)CMSG, strlen(CMSG)), 0);
		break;
	case CMODE_CLOSE_IN_CONNECT:
		cr_assert_eq(net_stream_write(s, (const uint8_t *)"bye", 3), 0);
		net_stream_close(s);
		net_stream_close(s);
		break;
	case CMODE_ABORT_IN_CONNECT:
		net_stream_abort(s);
		net_stream_close(s);
		net_stream_set_deadline(s, 1);
		cr_assert_eq(net_stream_write(s, (const uint8_t *)"x", 1), -EPIPE);
		break;
	case CMODE_DEADLINE:
		net_stream_set_deadline(s, 50);
		break;
	case CMODE_PENDING:
		cr_assert_fail("the connection cannot be up");
	}
}

static void c_read(struct net_stream *s, const uint8_t *buf, size_t len, void *ud)
{
	(void)ud;
	cr_assert_eq(C.mode, CMODE_ECHO, "no reads after close");
	cr_assert_leq(C.rxlen + len, sizeof C.rx);
	memcpy(C.rx + C.rxlen, buf, len);
	C.rxlen += len;
	if (C.rxlen == strlen(CMSG))
		net_stream_close(s);
}

static void c_eof(struct net_stream *s, int status, void *ud)
{
	(void)status;
	(void)ud;
	C.eof_calls++;
	net_stream_close(s);
}

static void c_timeout(struct net_stream *s, void *ud)
{
	(void)ud;
	C.timeouts++;
	net_stream_abort(s);
}

static void c_closed(struct net_stream *s, void *ud)
{
	(void)ud;
	cr_assert_eq(s, C.s);
	cr_assert_eq(C.closed_calls, 0, "on_closed twice");
	C.closed_calls++;
	T.clients_ended++;
	if (T.l)
		check_done();
}

static const struct net_stream_ops c_ops = {
	.on_read = c_read,
	.on_eof = c_eof,
	.on_timeout = c_timeout,
	.on_closed = c_closed,
	.on_connect = c_connect,
};

static void c_start(enum cmode mode, const struct sockaddr *to)
{
	memset(&C, 0, sizeof C);
	C.mode = mode;
	cr_assert_eq(net_connect(&C.s, &T.loop, to, &c_ops, &C), 0);
	cr_assert_not_null(C.s);
	cr_assert_eq(addr_port(net_stream_peer(C.s)), addr_port(to));
}

static void connect_round_trip(const char *ip)
{
	setup(MODE_ECHO);
	if (!start_listener(ip, 4)) {
		run_and_teardown();
		cr_skip_test("%s not available", ip);
	}
	T.expect_closed = 1;
	T.expect_ended = 1;
	c_start(CMODE_ECHO, (struct sockaddr *)&T.addr);

	run_and_teardown();
	cr_assert_eq(C.connect_calls, 1);
	cr_assert_eq(C.connect_status, 0);
	cr_assert(C.peer_ok);
	cr_assert_eq(C.rxlen, strlen(CMSG));
	cr_assert_arr_eq(C.rx, CMSG, strlen(CMSG));
	cr_assert_eq(C.closed_calls, 1);
	cr_assert_eq(C.timeouts, 0);
	cr_assert_eq(T.streams[0].nread, strlen(CMSG));
	cr_assert_eq(T.streams[0].eof_calls, 1, "the server saw our FIN");
	cr_assert_eq(T.streams[0].closed_calls, 1);
}

Test(net, connect_round_trip_v4)
{
	connect_round_trip("127.0.0.1");
}

Test(net, connect_round_trip_v6)
{
	connect_round_trip("::1");
}

/* A bound socket that does not listen: connections to its port are refused, and the port cannot
 * be taken by anyone else meanwhile. */
static int bound_only(struct sockaddr_storage *ss, int backlog)
{
	socklen_t len = sizeof *ss;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	make_addr("127.0.0.1", 0, ss);
	cr_assert_eq(bind(fd, (struct sockaddr *)ss, sizeof(struct sockaddr_in)), 0);
	if (backlog >= 0)
		cr_assert_eq(listen(fd, backlog), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)ss, &len), 0);
	return fd;
}

Test(net, connect_refused)
{
	struct sockaddr_storage ss;
	int fd = bound_only(&ss, -1);

	setup(MODE_ECHO);
	c_start(CMODE_ECHO, (struct sockaddr *)&ss);
	run_and_teardown();
	close(fd);
	cr_assert_eq(C.connect_calls, 1);
	cr_assert_eq(C.connect_status, -ECONNREFUSED, "got %d", C.connect_status);
	cr_assert_eq(C.closed_calls, 1);
	cr_assert_eq(C.eof_calls, 0);
	cr_assert_eq(C.rxlen, 0);
}

Test(net, connect_close_inside_on_connect_flushes)
{
	setup(MODE_ECHO);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	c_start(CMODE_CLOSE_IN_CONNECT, (struct sockaddr *)&T.addr);

	run_and_teardown();
	cr_assert_eq(C.connect_status, 0);
	cr_assert_eq(C.closed_calls, 1);
	cr_assert_eq(C.eof_calls, 0, "no callback but on_closed after close");
	cr_assert_eq(T.streams[0].nread, 3, "the write before the close went out");
	cr_assert_eq(T.streams[0].eof_calls, 1);
}

Test(net, connect_abort_inside_on_connect)
{
	setup(MODE_ECHO);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 0;
	T.expect_ended = 1;
	c_start(CMODE_ABORT_IN_CONNECT, (struct sockaddr *)&T.addr);

	run_and_teardown();
	cr_assert_eq(C.connect_calls, 1);
	cr_assert_eq(C.connect_status, 0);
	cr_assert_eq(C.closed_calls, 1);
	cr_assert_eq(C.timeouts, 0, "the deadline is ignored after abort");
	cr_assert_eq(C.eof_calls, 0);
	cr_assert_eq(T.final.active, 0);
}

Test(net, connect_deadline_after_connect)
{
	setup(MODE_ECHO);
	start_listener("127.0.0.1", 4);
	T.expect_closed = 1;
	T.expect_ended = 1;
	c_start(CMODE_DEADLINE, (struct sockaddr *)&T.addr);

	run_and_teardown();
	cr_assert_eq(C.connect_status, 0);
	cr_assert_eq(C.timeouts, 1);
	cr_assert_eq(C.closed_calls, 1);
	cr_assert_eq(T.streams[0].eof_calls, 1, "the server saw the reset");
}

/* A listener with a full accept queue drops further SYNs (Linux), so a connect stays pending:
 * the deadline must cut it without any on_connect. */
Test(net, connect_deadline_while_connecting)
{
	struct sockaddr_storage ss;
	int lfd = bound_only(&ss, 0);
	int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(filler, 0);
	cr_assert_eq(connect(filler, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
	setup(MODE_ECHO);
	c_start(CMODE_PENDING, (struct sockaddr *)&ss);
	net_stream_set_deadline(C.s, 50);
	run_and_teardown();
	close(filler);
	close(lfd);
	cr_assert_eq(C.connect_calls, 0);
	cr_assert_eq(C.timeouts, 1);
	cr_assert_eq(C.closed_calls, 1);
}

/* Closing before the connection is up frees everything with on_closed alone. */
Test(net, connect_close_while_connecting)
{
	struct sockaddr_storage ss;
	int lfd = bound_only(&ss, 0);
	int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(filler, 0);
	cr_assert_eq(connect(filler, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
	setup(MODE_ECHO);
	c_start(CMODE_PENDING, (struct sockaddr *)&ss);
	cr_assert_eq(net_stream_write(C.s, (const uint8_t *)"queued", 6), 0);
	net_stream_close(C.s);
	cr_assert_eq(net_stream_write(C.s, (const uint8_t *)"x", 1), -EPIPE);
	run_and_teardown();
	close(filler);
	close(lfd);
	cr_assert_eq(C.connect_calls, 0);
	cr_assert_eq(C.closed_calls, 1);
}

Test(net, connect_bad_arguments)
{
	static const struct net_stream_ops no_connect = { .on_closed = c_closed };
	struct sockaddr_storage ss;
	struct net_stream *s = NULL;

	setup(MODE_ECHO);
	make_addr("127.0.0.1", 9, &ss);
	cr_assert_eq(net_connect(&s, &T.loop, (struct sockaddr *)&ss, &no_connect, NULL), -EINVAL);
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_UNIX;
	cr_assert_eq(net_connect(&s, &T.loop, (struct sockaddr *)&ss, &c_ops, &C), -EAFNOSUPPORT);
	cr_assert_null(s);
	run_and_teardown();
}
