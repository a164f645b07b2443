/* One request to the status endpoint, parsed as its bytes arrive: sans-I/O (http_parser
 * underneath, no socket, no loop), so it is tested and fuzzed on its own. A request is bounded in
 * size, a connection carries one request, and a complete request routes to /status or /metrics
 * with GET or HEAD, or to the HTTP error to answer. */
#ifndef NTSPOOL_STATUS_HTTP_H
#define NTSPOOL_STATUS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

/* A request's bytes at most: beyond, the request is bad (400). */
#define STATUS_REQUEST_MAX 8192
/* Longer targets cannot name a route, so only this much of one is kept. */
#define STATUS_URL_MAX 256

enum status_http_state {
	STATUS_HTTP_MORE,     /* the request is not complete yet */
	STATUS_HTTP_COMPLETE, /* a whole request: route it */
	STATUS_HTTP_BAD,      /* malformed, or more than STATUS_REQUEST_MAX bytes: answer 400 */
};

enum status_http_target { STATUS_HTTP_STATUS, STATUS_HTTP_METRICS };

struct status_http {
	http_parser parser;
	size_t received;
	char url[STATUS_URL_MAX];
	size_t url_len;
	bool url_overflow;
	enum status_http_state state;
};

void status_http_init(struct status_http *r);

/* Takes the next len bytes (borrowed) and returns the state. Once COMPLETE or BAD the state
 * stays and further bytes are ignored (what follows a request is never parsed). */
enum status_http_state status_http_feed(struct status_http *r, const uint8_t *buf, size_t len);

/* The end of the stream: a partial request is BAD; nothing at all stays MORE (the peer just
 * left). */
enum status_http_state status_http_eof(struct status_http *r);

/* For a COMPLETE request: 0 with *target, or the HTTP status to answer instead: 400 (a target
 * that is not a path), 404 (another path), 405 (another method on a known path). */
int status_http_route(const struct status_http *r, enum status_http_target *target);

/* A complete HEAD request: the answer has no body. */
bool status_http_is_head(const struct status_http *r);

#endif
