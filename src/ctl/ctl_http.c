#include "ctl_http.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

/* Header bytes plus chunk framing on top of the body; anything longer is not a status endpoint. */
#define RAW_MAX (CTL_HTTP_BODY_MAX + 64 * 1024)

struct response {
	char *body;
	size_t len, cap;
	bool complete;
	bool too_big;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline; 0 when ready, -ETIMEDOUT or -errno otherwise. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

void ctl_endpoint_tcp(struct ctl_endpoint *ep, const struct config_listen *l)
{
	memset(ep, 0, sizeof *ep);
	ep->addr = l->addr;
	ep->addr_len = l->addr_len;
	snprintf(ep->text, sizeof ep->text, "%s", l->text);
	snprintf(ep->host, sizeof ep->host, "%s", l->text);
}

int ctl_endpoint_unix(struct ctl_endpoint *ep, const char *path)
{
	memset(ep, 0, sizeof *ep);
	struct sockaddr_un *sa = (struct sockaddr_un *)&ep->addr;
	if (strlen(path) >= sizeof sa->sun_path || !*path)
		return -ENAMETOOLONG;
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, strlen(path) + 1);
	ep->addr_len = sizeof *sa;
	snprintf(ep->text, sizeof ep->text, "unix:%s", path);
	snprintf(ep->host, sizeof ep->host, "localhost");
	return 0;
}

static int connect_to(const struct ctl_endpoint *addr, int64_t deadline)
{
	int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (connect(fd, (const struct sockaddr *)&addr->addr, addr->addr_len) < 0) {
		if (errno != EINPROGRESS) {
			r = -errno;
			goto fail;
		}
		r = wait_fd(fd, POLLOUT, deadline);
		if (r < 0)
			goto fail;
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
			r = -errno;
			goto fail;
		}
		if (soerr) {
			r = -soerr;
			goto fail;
		}
	}
	return fd;
fail:
	close(fd);
	return r;
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int r = wait_fd(fd, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct response *resp = p->data;
	/* Without Content-Length the field is UINT64_MAX and the body runs to the close. */
	if (p->content_length != UINT64_MAX && p->content_length > CTL_HTTP_BODY_MAX) {
		resp->too_big = true;
		return -1;
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct response *resp = p->data;
	if (n > CTL_HTTP_BODY_MAX - resp->len) {
		resp->too_big = true;
		return -1;
	}
	if (resp->len + n + 1 > resp->cap) {
		size_t cap = resp->cap ? resp->cap : 16 * 1024;
		while (cap < resp->len + n + 1)
			cap *= 2;
		char *nb = realloc(resp->body, cap);
		if (!nb)
			return -1;
		resp->body = nb;
		resp->cap = cap;
	}
	memcpy(resp->body + resp->len, at, n);
	resp->len += n;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct response *resp = p->data;
	resp->complete = true;
	/* One response is all we asked for: stop before any bytes after it. */
	http_parser_pause(p, 1);
	return 0;
}

/* Feeds n bytes (0: the peer closed) to the parser; 0 or negative errno with err. */
static int feed(http_parser *p, const http_parser_settings *s, const char *buf, size_t n,
		char *err, size_t errlen)
{
	struct response *resp = p->data;
	http_parser_execute(p, s, buf, n);
	enum http_errno e = HTTP_PARSER_ERRNO(p);
	if (e == HPE_OK || (e == HPE_PAUSED && resp->complete))
		return 0;
	if (resp->too_big) {
		snprintf(err, errlen, "response body larger than %d bytes", CTL_HTTP_BODY_MAX);
		return -EMSGSIZE;
	}
	if (e == HPE_CB_body) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (n == 0)
		snprintf(err, errlen, "connection closed in the middle of the answer");
	else
		snprintf(err, errlen, "not a valid HTTP response (%s)", http_errno_description(e));
	return -EPROTO;
}

static int read_response(int fd, http_parser *p, int64_t deadline, char *err, size_t errlen)
{
	static const http_parser_settings settings = {
		.on_headers_complete = on_headers_complete,
		.on_body = on_body,
		.on_message_complete = on_message_complete,
	};
	struct response *resp = p->data;
	char buf[16 * 1024];
	size_t total = 0;
	while (!resp->complete) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				int r = -errno;
				snprintf(err, errlen, "receiving: %s", strerror(-r));
				return r;
			}
			int r = wait_fd(fd, POLLIN, deadline);
			if (r < 0) {
				snprintf(err, errlen, "%s", r == -ETIMEDOUT ? "no complete answer in time"
									     : strerror(-r));
				return r;
			}
			continue;
		}
		total += (size_t)n;
		if (total > RAW_MAX) {
			snprintf(err, errlen, "response larger than %d bytes", RAW_MAX);
			return -EMSGSIZE;
		}
		int r = feed(p, &settings, buf, (size_t)n, err, errlen);
		if (r < 0)
			return r;
		if (n == 0 && !resp->complete) {
			snprintf(err, errlen, "%s", total ? "connection closed in the middle of the answer"
							  : "connection closed without an answer");
			return -EPROTO;
		}
	}
	return 0;
}

int ctl_http_get(const struct ctl_endpoint *addr, const char *path, int timeout_ms, char **body,
		 size_t *len, char *err, size_t errlen)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct response resp = { 0 };
	char req[512];
	int r;
	int fd = connect_to(addr, deadline);
	if (fd < 0) {
		r = fd;
		snprintf(err, errlen, "cannot connect: %s",
			 r == -ETIMEDOUT ? "no answer in time" : strerror(-r));
		return r;
	}
	int n = snprintf(req, sizeof req,
			 "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
			 "Connection: close\r\nUser-Agent: ntp-ctl/" PACKAGE_VERSION "\r\n\r\n",
			 path, addr->host);
	if (n < 0 || (size_t)n >= sizeof req) {
		snprintf(err, errlen, "request path too long");
		r = -EINVAL;
		goto fail;
	}
	r = send_all(fd, req, (size_t)n, deadline);
	if (r < 0) {
		snprintf(err, errlen, "sending the request: %s",
			 r == -ETIMEDOUT ? "no progress in time" : strerror(-r));
		goto fail;
	}
	http_parser parser;
	http_parser_init(&parser, HTTP_RESPONSE);
	parser.data = &resp;
	r = read_response(fd, &parser, deadline, err, errlen);
	if (r < 0)
		goto fail;
	if (parser.status_code < 200 || parser.status_code > 299) {
		snprintf(err, errlen, "HTTP status %u %s", parser.status_code,
			 http_status_str((enum http_status)parser.status_code));
		r = -EPROTO;
		goto fail;
	}
	if (!resp.body) {
		resp.body = malloc(1);
		if (!resp.body) {
			snprintf(err, errlen, "out of memory");
			r = -ENOMEM;
			goto fail;
		}
	}
	resp.body[resp.len] = '\0';
	close(fd);
	*body = resp.body;
	*len = resp.len;
	return 0;
fail:
	close(fd);
	free(resp.body);
	return r;
}
