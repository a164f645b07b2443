/* Fuzz harness: status_http, the status endpoint's request parser. The first input byte sets the
 * chunk size (1..64) the rest is fed in, as a slow or fast peer would send it; the end of the
 * stream follows.
 * Contract checked (status_http.h): the state only moves MORE -> COMPLETE or MORE -> BAD and then
 * stays, whatever follows; never more than STATUS_REQUEST_MAX bytes are taken; the end of the
 * stream leaves a partial request BAD and a complete one COMPLETE; a complete request routes to
 * 0 (with a known target), 400, 404 or 405, and HEAD is reported only for a complete request. */
#include <stdint.h>
#include <stdlib.h>

#include "status_http.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t step = (size_t)(data[0] % 64) + 1;
	data++;
	size--;
	struct status_http r;
	status_http_init(&r);
	enum status_http_state st = STATUS_HTTP_MORE;
	for (size_t i = 0; i < size; i += step) {
		size_t n = size - i < step ? size - i : step;
		enum status_http_state next = status_http_feed(&r, data + i, n);
		CHECK(st == STATUS_HTTP_MORE || next == st);
		CHECK(r.received <= STATUS_REQUEST_MAX);
		CHECK(r.url_len < STATUS_URL_MAX);
		st = next;
	}
	enum status_http_state end = status_http_eof(&r);
	if (st == STATUS_HTTP_COMPLETE)
		CHECK(end == STATUS_HTTP_COMPLETE);
	else if (r.received > 0)
		CHECK(end == STATUS_HTTP_BAD);
	else
		CHECK(end == STATUS_HTTP_MORE);
	enum status_http_target t = (enum status_http_target)-1;
	int code = status_http_route(&r, &t);
	if (end == STATUS_HTTP_COMPLETE) {
		CHECK(code == 0 || code == 400 || code == 404 || code == 405);
		if (code == 0)
			CHECK(t == STATUS_HTTP_STATUS || t == STATUS_HTTP_METRICS);
	} else {
		CHECK(code == 400);
		CHECK(!status_http_is_head(&r));
	}
	return 0;
}
