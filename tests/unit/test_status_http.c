/* The status endpoint's request parser on its own: routes, methods, byte-at-a-time input, the
 * size bound, what follows a request, and the end of the stream. */
#include "status_http.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static enum status_http_state feed_all(struct status_http *r, const char *text, size_t step)
{
	enum status_http_state st = STATUS_HTTP_MORE;
	size_t len = strlen(text);
	for (size_t i = 0; i < len; i += step) {
		size_t n = len - i < step ? len - i : step;
		st = status_http_feed(r, (const uint8_t *)text + i, n);
	}
	return st;
}

static int route_of(const char *text, enum status_http_target *t)
{
	struct status_http r;
	status_http_init(&r);
	cr_assert_eq(feed_all(&r, text, 1000), STATUS_HTTP_COMPLETE, "%s", text);
	return status_http_route(&r, t);
}

Test(status_http, routes_and_methods)
{
	enum status_http_target t;
	cr_assert_eq(route_of("GET /status HTTP/1.1\r\nHost: x\r\n\r\n", &t), 0);
	cr_assert_eq(t, STATUS_HTTP_STATUS);
	cr_assert_eq(route_of("GET /metrics?x=1 HTTP/1.1\r\n\r\n", &t), 0);
	cr_assert_eq(t, STATUS_HTTP_METRICS);
	cr_assert_eq(route_of("GET http://h/status HTTP/1.1\r\n\r\n", &t), 0, "absolute form");
	cr_assert_eq(route_of("POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &t), 405);
	cr_assert_eq(route_of("GET /other HTTP/1.1\r\n\r\n", &t), 404);
	cr_assert_eq(route_of("GET /statusx HTTP/1.1\r\n\r\n", &t), 404);
}

Test(status_http, head_has_no_body)
{
	struct status_http r;
	status_http_init(&r);
	cr_assert_eq(feed_all(&r, "HEAD /metrics HTTP/1.1\r\n\r\n", 3), STATUS_HTTP_COMPLETE);
	cr_assert(status_http_is_head(&r));
	status_http_init(&r);
	cr_assert_eq(feed_all(&r, "GET /metrics HTTP/1.1\r\n\r\n", 3), STATUS_HTTP_COMPLETE);
	cr_assert_not(status_http_is_head(&r));
}

Test(status_http, byte_at_a_time_and_what_follows_is_ignored)
{
	struct status_http r;
	status_http_init(&r);
	const char *req = "GET /status HTTP/1.1\r\n\r\n";
	for (size_t i = 0; i + 1 < strlen(req); i++)
		cr_assert_eq(status_http_feed(&r, (const uint8_t *)req + i, 1), STATUS_HTTP_MORE);
	cr_assert_eq(status_http_feed(&r, (const uint8_t *)req + strlen(req) - 1, 1),
		     STATUS_HTTP_COMPLETE);
	cr_assert_eq(status_http_feed(&r, (const uint8_t *)"garbage\r\n", 9), STATUS_HTTP_COMPLETE,
		     "a second request on the connection is never parsed");
	enum status_http_target t;
	cr_assert_eq(status_http_route(&r, &t), 0);
}

Test(status_http, malformed_and_oversize_are_bad)
{
	struct status_http r;
	status_http_init(&r);
	cr_assert_eq(feed_all(&r, "\x01\x02 not http\r\n\r\n", 100), STATUS_HTTP_BAD);
	enum status_http_target t;
	cr_assert_eq(status_http_route(&r, &t), 400);

	status_http_init(&r);
	cr_assert_eq(feed_all(&r, "GET /status HTTP/1.1\r\n", 100), STATUS_HTTP_MORE);
	char header[128];
	enum status_http_state st = STATUS_HTTP_MORE;
	for (int i = 0; i < 200 && st == STATUS_HTTP_MORE; i++) {
		snprintf(header, sizeof header, "X-Pad-%03d: %060d\r\n", i, 0);
		st = feed_all(&r, header, 1000);
	}
	cr_assert_eq(st, STATUS_HTTP_BAD, "over %d bytes", STATUS_REQUEST_MAX);
	cr_assert_leq(r.received, STATUS_REQUEST_MAX);
}

Test(status_http, end_of_stream)
{
	struct status_http r;
	status_http_init(&r);
	cr_assert_eq(status_http_eof(&r), STATUS_HTTP_MORE, "nothing sent: the peer just left");
	cr_assert_eq(feed_all(&r, "GET /sta", 100), STATUS_HTTP_MORE);
	cr_assert_eq(status_http_eof(&r), STATUS_HTTP_BAD, "a partial request");
}
