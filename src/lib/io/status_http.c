#include "status_http.h"

#include <string.h>

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct status_http *r = p->data;
	if (len >= STATUS_URL_MAX - r->url_len) {
		r->url_overflow = true;
		return 0;
	}
	memcpy(r->url + r->url_len, at, len);
	r->url_len += len;
	return 0;
}

/* One request per connection: pausing keeps the parser from reading into what follows it. */
static int on_message_complete(http_parser *p)
{
	struct status_http *r = p->data;
	r->state = STATUS_HTTP_COMPLETE;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = on_url,
	.on_message_complete = on_message_complete,
};

void status_http_init(struct status_http *r)
{
	memset(r, 0, sizeof *r);
	http_parser_init(&r->parser, HTTP_REQUEST);
	r->parser.data = r;
	r->state = STATUS_HTTP_MORE;
}

enum status_http_state status_http_feed(struct status_http *r, const uint8_t *buf, size_t len)
{
	if (r->state != STATUS_HTTP_MORE || len == 0)
		return r->state;
	size_t room = STATUS_REQUEST_MAX - r->received;
	size_t n = len < room ? len : room;
	r->received += n;
	size_t parsed = http_parser_execute(&r->parser, &parser_settings, (const char *)buf, n);
	if (r->state == STATUS_HTTP_COMPLETE)
		return r->state;
	if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK || parsed != n ||
	    r->received >= STATUS_REQUEST_MAX)
		r->state = STATUS_HTTP_BAD;
	return r->state;
}

enum status_http_state status_http_eof(struct status_http *r)
{
	if (r->state == STATUS_HTTP_MORE && r->received > 0)
		r->state = STATUS_HTTP_BAD;
	return r->state;
}

static bool path_is(const char *path, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(path, want, len) == 0;
}

int status_http_route(const struct status_http *r, enum status_http_target *target)
{
	const char *path = "";
	size_t path_len = 0;
	if (r->state != STATUS_HTTP_COMPLETE)
		return 400;
	if (!r->url_overflow) {
		struct http_parser_url u;
		http_parser_url_init(&u);
		if (http_parser_parse_url(r->url, r->url_len, 0, &u) != 0)
			return 400;
		if (u.field_set & (1u << UF_PATH)) {
			path = r->url + u.field_data[UF_PATH].off;
			path_len = u.field_data[UF_PATH].len;
		}
	}
	bool is_status = path_is(path, path_len, "/status");
	bool is_metrics = path_is(path, path_len, "/metrics");
	if (!is_status && !is_metrics)
		return 404;
	if (r->parser.method != HTTP_GET && r->parser.method != HTTP_HEAD)
		return 405;
	*target = is_status ? STATUS_HTTP_STATUS : STATUS_HTTP_METRICS;
	return 0;
}

bool status_http_is_head(const struct status_http *r)
{
	return r->state == STATUS_HTTP_COMPLETE && r->parser.method == HTTP_HEAD;
}
