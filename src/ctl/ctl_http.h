/* ntp-ctl's HTTP/1.1 client for the status endpoints: one GET over a plain TCP or Unix stream
 * socket, bounded in time and size, because the answer comes from whatever listens there. */
#ifndef NTSPOOL_CTL_HTTP_H
#define NTSPOOL_CTL_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "config.h"

/* Where a status endpoint is: a TCP address or a Unix socket. */
struct ctl_endpoint {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char text[CONFIG_UNIX_PATH_MAX + 8]; /* "IP:PORT" or "unix:PATH", for messages */
	char host[64];			     /* the Host header: the address or "localhost" */
};

/* From a TCP listen address (borrowed). */
void ctl_endpoint_tcp(struct ctl_endpoint *ep, const struct config_listen *l);
/* From a Unix socket path (borrowed); -ENAMETOOLONG when it does not fit. */
int ctl_endpoint_unix(struct ctl_endpoint *ep, const char *path);

/* Bodies above this are refused: a status document is a few KiB. */
#define CTL_HTTP_BODY_MAX (1024 * 1024)

/* GETs path (borrowed) from addr (borrowed); the whole exchange must end within timeout_ms.
 * On a 2xx answer returns 0 with *body new (caller frees; NUL-terminated, *len bytes before
 * the NUL). Otherwise returns negative errno with a message in err: -ECONNREFUSED and other
 * socket errors, -ETIMEDOUT, -EMSGSIZE (body above CTL_HTTP_BODY_MAX), -EPROTO (not HTTP, or
 * a status other than 2xx). */
int ctl_http_get(const struct ctl_endpoint *addr, const char *path, int timeout_ms, char **body,
		 size_t *len, char *err, size_t errlen);

#endif
