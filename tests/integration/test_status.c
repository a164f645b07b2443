/* The status endpoint on a real loop on loopback. The loop runs in the test thread; a client thread
 * speaks HTTP with blocking sockets and only records what it saw, and the test thread asserts once
 * the loop has finished. A watchdog timer stops the loop if anything hangs. */
#include "status.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
/* Criterion passes a test whose process leaked, so the tests about closing ask LeakSanitizer. */
#define assert_no_leaks() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks")
#else
#define assert_no_leaks() ((void)0)
#endif

#define WATCHDOG_MS 30000
/* Longer than the server's deadline, so a cut connection is told apart from a hung one. */
#define CLIENT_TIMEOUT_S 10
#define MAX_RESULTS 256

TestSuite(status, .timeout = 60);

/* ---- What the provider serves -------------------------------------------------------------- */

struct content {
	bool null_doc;
	bool metrics_fail;
	int status_calls;
};

static json_t *make_doc(void)
{
	return json_pack("{s:s, s:i, s:f, s:b, s:s, s:[i,i,i], s:{s:I}}", "program", "test-prog",
			 "accepted", 42, "uptime_s", 12.5, "ok", 1, "quoted", "a \"b\" \\ é",
			 "list", 1, 2, 3, "keyset", "created", (json_int_t)1795000000);
}

static json_t *provide_json(void *ud)
{
	struct content *c = ud;
	c->status_calls++;
	return c->null_doc ? NULL : make_doc();
}

static const char *const label_raw = "a\"b\\c\nd";
static const char *const expected_metrics =
	"# HELP test_requests_total Requests seen.\\nBy path \\\\ listener.\n"
	"# TYPE test_requests_total counter\n"
	"test_requests_total{listen=\"a\\\"b\\\\c\\nd\"} 1234567\n"
	"test_requests_total 0\n"
	"# HELP test_offset_seconds Offset.\n"
	"# TYPE test_offset_seconds gauge\n"
	"test_offset_seconds -0.125\n";

static void provide_metrics(struct status_text *out, void *ud)
{
	struct content *c = ud;
	char esc[64], labels[80];
	status_metric_header(out, "test_requests_total", "counter",
			     "Requests seen.\nBy path \\ listener.");
	snprintf(labels, sizeof labels, "listen=\"%s\"",
		 status_label_escape(label_raw, esc, sizeof esc));
	status_metric_value(out, "test_requests_total", labels, 1234567);
	status_metric_value(out, "test_requests_total", NULL, 0);
	status_metric_header(out, "test_offset_seconds", "gauge", "Offset.");
	status_metric_value(out, "test_offset_seconds", NULL, -0.125);
	if (c->metrics_fail)
		out->err = -ENOMEM;
}

static const struct status_provider provider = {
	.status_json = provide_json,
	.metrics = provide_metrics,
};

/* ---- The client side ----------------------------------------------------------------------- */

struct response {
	int code;	/* -1: nothing parsable came back */
	char *raw;	/* everything received, NUL-terminated */
	size_t raw_len;
	char *body;	/* into raw */
	size_t body_len;
	bool reset;	/* the connection ended with ECONNRESET */
	bool timed_out; /* the client gave up waiting */
};

struct fixture;
typedef void (*client_fn)(struct fixture *f);

struct fixture {
	uv_loop_t loop;
	uv_async_t done;
	uv_timer_t watchdog;
	struct status_server *srv;
	struct sockaddr_storage addr;
	struct content content;
	client_fn client;
	bool watchdog_fired;
	/* Written by the client thread, read after it joined. */
	struct response res[MAX_RESULTS];
	size_t nres;
	int kept_fd; /* a connection left open for the test thread */
};

static int connect_to(const struct fixture *f)
{
	int fd = socket(f->addr.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = CLIENT_TIMEOUT_S };
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	socklen_t len = f->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						       : sizeof(struct sockaddr_in);
	if (connect(fd, (const struct sockaddr *)&f->addr, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Reads until the server closes and splits the answer into status code and body. */
static void read_response(int fd, struct response *r)
{
	size_t cap = 4096;
	r->raw = malloc(cap);
	r->raw_len = 0;
	r->code = -1;
	for (;;) {
		if (cap - r->raw_len < 1024)
			r->raw = realloc(r->raw, cap *= 2);
		ssize_t n = recv(fd, r->raw + r->raw_len, cap - r->raw_len - 1, 0);
		if (n > 0) {
			r->raw_len += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ECONNRESET)
			r->reset = true;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			r->timed_out = true;
		break;
	}
	r->raw[r->raw_len] = '\0';
	char *end = strstr(r->raw, "\r\n\r\n");
	if (end && sscanf(r->raw, "HTTP/1.1 %d ", &r->code) == 1) {
		r->body = end + 4;
		r->body_len = r->raw_len - (size_t)(r->body - r->raw);
	}
}

static struct response *next_result(struct fixture *f)
{
	return f->nres < MAX_RESULTS ? &f->res[f->nres++] : NULL;
}

/* One connection: sends req in pieces of at most `chunk` bytes and records the answer. */
static void exchange_chunked(struct fixture *f, const char *req, size_t len, size_t chunk)
{
	struct response *r = next_result(f);
	if (!r)
		return;
	int fd = connect_to(f);
	if (fd < 0)
		return;
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		if (!send_all(fd, req + off, n))
			break;
		if (chunk < len) {
			/* Gives the server a chance to read each piece on its own. */
			struct timespec ts = { .tv_nsec = 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	read_response(fd, r);
	close(fd);
}

static void exchange(struct fixture *f, const char *req)
{
	exchange_chunked(f, req, strlen(req), strlen(req));
}

/* ---- The loop side ------------------------------------------------------------------------- */

static void stop(struct fixture *f)
{
	status_server_close(f->srv);
	uv_close((uv_handle_t *)&f->done, NULL);
	uv_close((uv_handle_t *)&f->watchdog, NULL);
}

static void on_done(uv_async_t *a)
{
	stop(a->data);
}

static void on_watchdog(uv_timer_t *t)
{
	struct fixture *f = t->data;
	f->watchdog_fired = true;
	stop(f);
}

static void *client_main(void *arg)
{
	struct fixture *f = arg;
	f->client(f);
	uv_async_send(&f->done);
	return NULL;
}

static struct fixture *fixture_new(void)
{
	struct fixture *f = calloc(1, sizeof *f);
	cr_assert(f);
	f->kept_fd = -1;
	cr_assert_eq(uv_loop_init(&f->loop), 0);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	char err[256] = "";
	int rc = status_server_new(&f->srv, &f->loop, (const struct sockaddr *)&sin, &provider,
				   &f->content, err, sizeof err);
	cr_assert_eq(rc, 0, "status_server_new: %d %s", rc, err);
	const struct sockaddr *bound = status_server_addr(f->srv);
	cr_assert_eq(bound->sa_family, AF_INET);
	cr_assert_neq(((const struct sockaddr_in *)bound)->sin_port, 0);
	memcpy(&f->addr, bound, sizeof(struct sockaddr_in));
	return f;
}

/* Runs the loop until the client is done, then checks that every handle is gone. */
static void run(struct fixture *f, client_fn client)
{
	pthread_t th;
	f->client = client;
	cr_assert_eq(uv_async_init(&f->loop, &f->done, on_done), 0);
	f->done.data = f;
	cr_assert_eq(uv_timer_init(&f->loop, &f->watchdog), 0);
	f->watchdog.data = f;
	cr_assert_eq(uv_timer_start(&f->watchdog, on_watchdog, WATCHDOG_MS, 0), 0);
	cr_assert_eq(pthread_create(&th, NULL, client_main, f), 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	cr_assert_not(f->watchdog_fired, "the watchdog stopped the loop");
	cr_assert_eq(uv_loop_close(&f->loop), 0);
}

static void fixture_free(struct fixture *f)
{
	for (size_t i = 0; i < f->nres; i++)
		free(f->res[i].raw);
	if (f->kept_fd >= 0)
		close(f->kept_fd);
	free(f);
}

/* The value of header `name` (case-insensitive) in r, copied into buf; NULL if absent. */
static const char *header(const struct response *r, const char *name, char *buf, size_t len)
{
	size_t nlen = strlen(name);
	const char *p = strstr(r->raw, "\r\n");
	while (p && p + 2 < r->body - 2) {
		p += 2;
		const char *eol = strstr(p, "\r\n");
		if (!eol)
			return NULL;
		if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
			const char *v = p + nlen + 1;
			while (*v == ' ')
				v++;
			snprintf(buf, len, "%.*s", (int)(eol - v), v);
			return buf;
		}
		p = eol;
	}
	return NULL;
}

/* Checks the parts every answer shares and returns its body length from Content-Length. */
static void assert_answer(const struct response *r, int code)
{
	char v[128];
	cr_assert_eq(r->code, code, "expected %d, got: %s", code, r->raw ? r->raw : "(nothing)");
	cr_assert_not_null(header(r, "Content-Length", v, sizeof v));
	cr_assert_eq(strtoul(v, NULL, 10), r->body_len, "Content-Length %s, body %zu", v,
		     r->body_len);
	cr_assert_not_null(header(r, "Connection", v, sizeof v));
	cr_assert_str_eq(v, "close");
}

/* ---- Tests: the text helpers (no loop) ----------------------------------------------------- */

static char *value_text(double v)
{
	struct status_text t = { 0 };
	status_metric_value(&t, "m", NULL, v);
	cr_assert_eq(t.err, 0);
	cr_assert(t.len > 2);
	t.buf[t.len - 1] = '\0';
	char *s = strdup(t.buf + 2);
	status_text_deinit(&t);
	return s;
}

static void assert_value(double v, const char *want)
{
	char *got = value_text(v);
	cr_assert_str_eq(got, want);
	free(got);
}

Test(status, metric_values_print_exactly)
{
	assert_value(0, "0");
	assert_value(42, "42");
	assert_value(1e6, "1000000");
	assert_value(18446744073.0, "18446744073");
	assert_value(9007199254740993.0, "9007199254740992");
	assert_value(-7, "-7");
	assert_value(0.1, "0.1");
	assert_value(-0.125, "-0.125");
	assert_value(1.0 / 3.0, "0.33333333333333331");
	assert_value(1e300, "1e+300");
	assert_value(NAN, "NaN");
	assert_value(INFINITY, "+Inf");
	assert_value(-INFINITY, "-Inf");
}

Test(status, metric_lines)
{
	struct status_text t;
	status_text_init(&t);
	status_metric_header(&t, "x_total", "counter", "Line one\nback\\slash");
	status_metric_value(&t, "x_total", "a=\"1\",b=\"2\"", 3);
	cr_assert_eq(t.err, 0);
	cr_assert_str_eq(t.buf, "# HELP x_total Line one\\nback\\\\slash\n"
				"# TYPE x_total counter\n"
				"x_total{a=\"1\",b=\"2\"} 3\n");
	cr_assert_eq(t.len, strlen(t.buf));
	status_text_deinit(&t);
	cr_assert_null(t.buf);
	cr_assert_eq(t.len, 0);
}

Test(status, text_grows_and_error_is_sticky)
{
	struct status_text t = { 0 };
	for (int i = 0; i < 10000; i++)
		status_text_printf(&t, "%05d\n", i);
	cr_assert_eq(t.err, 0);
	cr_assert_eq(t.len, 60000);
	cr_assert_eq(strlen(t.buf), 60000);
	cr_assert_eq(memcmp(t.buf + 59994, "09999\n", 6), 0);
	t.err = -ENOMEM;
	status_text_append(&t, "more", 4);
	status_metric_value(&t, "m", NULL, 1);
	cr_assert_eq(t.len, 60000);
	cr_assert_eq(t.err, -ENOMEM);
	status_text_deinit(&t);
}

Test(status, label_escape)
{
	char buf[32];
	cr_assert_str_eq(status_label_escape(label_raw, buf, sizeof buf), "a\\\"b\\\\c\\nd");
	cr_assert_str_eq(status_label_escape("plain", buf, sizeof buf), "plain");
	cr_assert_str_eq(status_label_escape("", buf, sizeof buf), "");
	/* Cut before an escape that does not fit whole, never inside it. */
	cr_assert_str_eq(status_label_escape("ab\"c", buf, 4), "ab");
	cr_assert_str_eq(status_label_escape("ab\"c", buf, 5), "ab\\\"");
	cr_assert_str_eq(status_label_escape("abcdef", buf, 4), "abc");
	buf[0] = 'x';
	cr_assert_eq(status_label_escape("abc", buf, 0), buf);
	cr_assert_eq(buf[0], 'x');
}

/* ---- Tests: serving ------------------------------------------------------------------------ */

static void get_status(struct fixture *f)
{
	exchange(f, "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

Test(status, get_status_returns_the_document)
{
	struct fixture *f = fixture_new();
	run(f, get_status);
	cr_assert_eq(f->nres, 1);
	const struct response *r = &f->res[0];
	char v[128];
	assert_answer(r, 200);
	cr_assert_str_eq(header(r, "Content-Type", v, sizeof v), "application/json");
	cr_assert_eq(f->content.status_calls, 1);

	cJSON *doc = cJSON_ParseWithLength(r->body, r->body_len);
	cr_assert_not_null(doc, "cJSON cannot parse: %s", r->body);
	cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(doc, "program")->valuestring,
			 "test-prog");
	cr_assert_eq(cJSON_GetObjectItemCaseSensitive(doc, "accepted")->valuedouble, 42);
	cr_assert_eq(cJSON_GetObjectItemCaseSensitive(doc, "uptime_s")->valuedouble, 12.5);
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "ok")));
	cr_assert_str_eq(cJSON_GetObjectItemCaseSensitive(doc, "quoted")->valuestring,
			 "a \"b\" \\ é");
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "list");
	cr_assert_eq(cJSON_GetArraySize(list), 3);
	cr_assert_eq(cJSON_GetArrayItem(list, 2)->valuedouble, 3);
	const cJSON *ks = cJSON_GetObjectItemCaseSensitive(doc, "keyset");
	cr_assert_eq(cJSON_GetObjectItemCaseSensitive(ks, "created")->valuedouble, 1795000000.0);
	cr_assert_eq(cJSON_GetArraySize(doc), 7);
	cJSON_Delete(doc);
	fixture_free(f);
}

static void get_metrics(struct fixture *f)
{
	exchange(f, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
}

Test(status, get_metrics_returns_the_text)
{
	struct fixture *f = fixture_new();
	run(f, get_metrics);
	const struct response *r = &f->res[0];
	char v[128];
	assert_answer(r, 200);
	cr_assert_str_eq(header(r, "Content-Type", v, sizeof v),
			 "text/plain; version=0.0.4; charset=utf-8");
	cr_assert_str_eq(r->body, expected_metrics);
	fixture_free(f);
}

static void routes(struct fixture *f)
{
	exchange(f, "GET /status?verbose=1&x HTTP/1.1\r\n\r\n");
	exchange(f, "GET http://localhost:8080/metrics HTTP/1.1\r\n\r\n");
	exchange(f, "GET /nope HTTP/1.1\r\n\r\n");
	exchange(f, "GET /status/ HTTP/1.1\r\n\r\n");
	exchange(f, "GET /statusx HTTP/1.1\r\n\r\n");
	exchange(f, "GET / HTTP/1.0\r\n\r\n");
	exchange(f, "POST /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
	exchange(f, "DELETE /metrics HTTP/1.1\r\n\r\n");
	exchange(f, "POST /elsewhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
}

Test(status, routing_and_methods)
{
	struct fixture *f = fixture_new();
	run(f, routes);
	cr_assert_eq(f->nres, 9);
	const int want[] = { 200, 200, 404, 404, 404, 404, 405, 405, 404 };
	for (size_t i = 0; i < 9; i++)
		assert_answer(&f->res[i], want[i]);
	cr_assert_not_null(strstr(f->res[0].body, "\"test-prog\""));
	cr_assert_str_eq(f->res[1].body, expected_metrics);
	char v[128];
	for (size_t i = 6; i < 8; i++) {
		cr_assert_not_null(header(&f->res[i], "Allow", v, sizeof v));
		cr_assert_not_null(strstr(v, "GET"));
	}
	cr_assert_null(header(&f->res[2], "Allow", v, sizeof v));
	/* Only the routed GET /status reached the provider, not the 405 on the same path. */
	cr_assert_eq(f->content.status_calls, 1);
	fixture_free(f);
}

static void head_request(struct fixture *f)
{
	exchange(f, "HEAD /status HTTP/1.1\r\n\r\n");
	get_status(f);
}

Test(status, head_has_the_headers_and_no_body)
{
	struct fixture *f = fixture_new();
	run(f, head_request);
	char v[128];
	const struct response *head = &f->res[0], *get = &f->res[1];
	cr_assert_eq(head->code, 200);
	cr_assert_eq(head->body_len, 0);
	cr_assert_not_null(header(head, "Content-Length", v, sizeof v));
	cr_assert_eq(strtoul(v, NULL, 10), get->body_len);
	cr_assert_gt(get->body_len, 0);
	fixture_free(f);
}

static void bad_requests(struct fixture *f)
{
	exchange(f, "\x01\x02\x03garbage\r\n\r\n");
	exchange(f, "GET /status HTTP/9.Z\r\n\r\n");
	exchange(f, "GET /status HTTP/1.1\r\nBad Header\r\n\r\n");
	/* Exactly the limit, never finished: the server reads it all, so its close is clean. */
	char *big = malloc(STATUS_REQUEST_MAX + 1);
	const char *start = "GET /status HTTP/1.1\r\nX-Pad: ";
	memset(big, 'a', STATUS_REQUEST_MAX);
	memcpy(big, start, strlen(start));
	big[STATUS_REQUEST_MAX] = '\0';
	exchange(f, big);
	/* A long but valid request under the limit is still served. */
	size_t ok_len = STATUS_REQUEST_MAX - 200;
	memset(big, 'a', ok_len);
	memcpy(big, start, strlen(start));
	memcpy(big + ok_len - 4, "\r\n\r\n", 5);
	exchange(f, big);
	/* A target too long to be kept is no route. */
	memset(big, 'a', 2000);
	memcpy(big, "GET /", 5);
	memcpy(big + 1000, " HTTP/1.1\r\n\r\n", sizeof " HTTP/1.1\r\n\r\n");
	exchange(f, big);
	free(big);
}

Test(status, malformed_and_oversize_requests)
{
	struct fixture *f = fixture_new();
	run(f, bad_requests);
	cr_assert_eq(f->nres, 6);
	const int want[] = { 400, 400, 400, 400, 200, 404 };
	for (size_t i = 0; i < 6; i++)
		assert_answer(&f->res[i], want[i]);
	fixture_free(f);
}

static void null_document(struct fixture *f)
{
	get_status(f);
	get_metrics(f);
}

Test(status, provider_failures_are_500)
{
	struct fixture *f = fixture_new();
	f->content.null_doc = true;
	f->content.metrics_fail = true;
	run(f, null_document);
	assert_answer(&f->res[0], 500);
	assert_answer(&f->res[1], 500);
	cr_assert_eq(f->content.status_calls, 1);
	fixture_free(f);
}

static void one_byte_writes(struct fixture *f)
{
	const char *req = "GET /metrics?a=b HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: t\r\n\r\n";
	exchange_chunked(f, req, strlen(req), 1);
}

Test(status, request_in_one_byte_writes)
{
	struct fixture *f = fixture_new();
	run(f, one_byte_writes);
	assert_answer(&f->res[0], 200);
	cr_assert_str_eq(f->res[0].body, expected_metrics);
	fixture_free(f);
}

/* A stalled half request holds its slot until the deadline; the others are served meanwhile. */
static void stalled_client(struct fixture *f)
{
	struct response *stalled = next_result(f);
	int fd = connect_to(f);
	if (fd < 0 || !send_all(fd, "GET /sta", 8)) {
		if (fd >= 0)
			close(fd);
		return;
	}
	get_status(f);
	read_response(fd, stalled);
	close(fd);
}

Test(status, stalled_client_is_cut_at_the_deadline)
{
	struct fixture *f = fixture_new();
	run(f, stalled_client);
	cr_assert_eq(f->nres, 2);
	const struct response *stalled = &f->res[0];
	cr_assert_not(stalled->timed_out, "the server never cut the stalled client");
	cr_assert_eq(stalled->raw_len, 0, "got: %s", stalled->raw);
	assert_answer(&f->res[1], 200);
	fixture_free(f);
}

/* Every slot held by a connection that sends nothing, then a GET: the listener accepts in order,
 * so all of them are the server's when the GET arrives, and the oldest must make room. */
static void idle_then_get(struct fixture *f)
{
	int idle[STATUS_MAX_CONNS];
	for (int i = 0; i < STATUS_MAX_CONNS; i++)
		idle[i] = connect_to(f);
	get_status(f);
	struct response *r = next_result(f);
	if (r && idle[0] >= 0)
		read_response(idle[0], r);
	for (int i = 0; i < STATUS_MAX_CONNS; i++)
		if (idle[i] >= 0)
			close(idle[i]);
}

Test(status, idle_connections_cannot_keep_monitoring_out)
{
	struct fixture *f = fixture_new();
	run(f, idle_then_get);
	cr_assert_eq(f->nres, 2);
	assert_answer(&f->res[0], 200);
	cr_assert_eq(f->res[1].code, 503, "the oldest idle connection made room: %s",
		     f->res[1].raw ? f->res[1].raw : "(nothing)");
	fixture_free(f);
}

static void many_requests(struct fixture *f)
{
	for (int i = 0; i < 200; i++) {
		if (i % 2)
			get_status(f);
		else
			exchange(f, "GET /missing HTTP/1.1\r\n\r\n");
	}
}

Test(status, many_sequential_requests_are_all_answered)
{
	struct fixture *f = fixture_new();
	run(f, many_requests);
	cr_assert_eq(f->nres, 200);
	for (size_t i = 0; i < 200; i++)
		assert_answer(&f->res[i], i % 2 ? 200 : 404);
	cr_assert_eq(f->content.status_calls, 100);
	fixture_free(f);
	assert_no_leaks();
}

/* Leaves a connection with a partial request open when the server closes. Because the listener
 * accepts in order, the second connection's answer proves the first one was accepted. */
static void open_at_close(struct fixture *f)
{
	f->kept_fd = connect_to(f);
	if (f->kept_fd >= 0)
		send_all(f->kept_fd, "GET /status HTTP/1.1\r\n", 22);
	get_status(f);
}

Test(status, close_with_an_open_connection)
{
	struct fixture *f = fixture_new();
	run(f, open_at_close);
	cr_assert_geq(f->kept_fd, 0);
	assert_answer(&f->res[0], 200);
	struct response r = { 0 };
	read_response(f->kept_fd, &r);
	cr_assert_not(r.timed_out);
	cr_assert_eq(r.raw_len, 0);
	free(r.raw);
	fixture_free(f);
	assert_no_leaks();
}

Test(status, bind_error_has_a_message)
{
	struct fixture *f = fixture_new();
	struct status_server *second = NULL;
	char err[256] = "";
	int rc = status_server_new(&second, &f->loop, (const struct sockaddr *)&f->addr, &provider,
				   &f->content, err, sizeof err);
	cr_assert_eq(rc, -EADDRINUSE, "got %d", rc);
	cr_assert_null(second);
	cr_assert_neq(err[0], '\0');
	status_server_close(f->srv);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&f->loop), 0);
	fixture_free(f);
	assert_no_leaks();
}

static void ipv6_get(struct fixture *f)
{
	get_status(f);
}

Test(status, serves_on_ipv6_loopback)
{
	struct fixture *f = calloc(1, sizeof *f);
	cr_assert(f);
	f->kept_fd = -1;
	cr_assert_eq(uv_loop_init(&f->loop), 0);
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	char err[256] = "";
	int rc = status_server_new(&f->srv, &f->loop, (const struct sockaddr *)&sin6, &provider,
				   &f->content, err, sizeof err);
	if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
		uv_loop_close(&f->loop);
		free(f);
		cr_skip_test("no IPv6 loopback: %s", err);
	}
	cr_assert_eq(rc, 0, "%s", err);
	const struct sockaddr *bound = status_server_addr(f->srv);
	cr_assert_eq(bound->sa_family, AF_INET6);
	cr_assert_neq(((const struct sockaddr_in6 *)bound)->sin6_port, 0);
	memcpy(&f->addr, bound, sizeof(struct sockaddr_in6));
	run(f, ipv6_get);
	assert_answer(&f->res[0], 200);
	fixture_free(f);
}
