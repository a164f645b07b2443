/* ntp-ctl's HTTP/1.1 client for the status endpoints: one GET over a plain TCP socket, bounded
 * in time and size, because the answer comes from whatever listens at the address given. */
#ifndef NTSPOOL_CTL_HTTP_H
#define NTSPOOL_CTL_HTTP_H

#include <stddef.h>

#include "config.h"

/* Bodies above this are refused: a status document is a few KiB. */
#define CTL_HTTP_BODY_MAX (1024 * 1024)

/* GETs path (borrowed) from addr (borrowed); the whole exchange must end within timeout_ms.
 * On a 2xx answer returns 0 with *body new (caller frees; NUL-terminated, *len bytes before
 * the NUL). Otherwise returns negative errno with a message in err: -ECONNREFUSED and other
 * socket errors, -ETIMEDOUT, -EMSGSIZE (body above CTL_HTTP_BODY_MAX), -EPROTO (not HTTP, or
 * a status other than 2xx). */
int ctl_http_get(const struct config_listen *addr, const char *path, int timeout_ms,
		 char **body, size_t *len, char *err, size_t errlen);

#endif
