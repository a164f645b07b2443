/* http-get IP:PORT PATH [--method M] [--wait SECONDS] [--status]: a tiny HTTP/1.1 client for
 * the status endpoints. Connecting is retried until --wait seconds have passed (daemons that are
 * starting up). Prints the body (or, with --status, only the status code); exit 0 for a 2xx
 * status, else "HTTP <code>" on stderr and exit 1 (also for connection failures); 2 on usage. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_MAX (4 * 1024 * 1024)
#define IO_TIMEOUT_S 10

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_endpoint(const char *s, struct sockaddr_storage *ss, socklen_t *sl)
{
	const char *colon = strrchr(s, ':');
	char host[INET6_ADDRSTRLEN + 1];
	if (!colon)
		return -EINVAL;
	size_t hlen = (size_t)(colon - s);
	const char *h = s;
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (hlen == 0 || hlen >= sizeof host || end == colon + 1 || *end || port < 1 ||
	    port > 65535)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*sl = sizeof *a4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*sl = sizeof *a6;
		return 0;
	}
	return -EINVAL;
}

/* Connects, retrying every 100 ms until wait_s has passed. The fd or a negative errno. */
static int connect_retry(const struct sockaddr_storage *ss, socklen_t sl, double wait_s)
{
	double deadline = now_s() + wait_s;
	for (;;) {
		int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		struct timeval tv = { IO_TIMEOUT_S, 0 };
		if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0 &&
		    connect(fd, (const struct sockaddr *)ss, sl) == 0)
			return fd;
		int e = errno;
		close(fd);
		if (now_s() >= deadline)
			return -e;
		struct timespec pause = { 0, 100 * 1000000L };
		nanosleep(&pause, NULL);
	}
}

static int send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads the response until EOF or until Content-Length bytes of body arrived. Returns the
 * length, with *body set to the offset of the body, or a negative errno. */
static ssize_t read_response(int fd, char *buf, size_t cap, size_t *body)
{
	size_t have = 0;
	long clen = -1;
	*body = 0;
	for (;;) {
		if (*body == 0) {
			buf[have] = '\0';
			char *end = strstr(buf, "\r\n\r\n");
			if (end) {
				*body = (size_t)(end - buf) + 4;
				for (char *line = strstr(buf, "\r\n"); line && line < end;
				     line = strstr(line + 2, "\r\n")) {
					if (!strncasecmp(line + 2, "Content-Length:", 15))
						clen = strtol(line + 17, NULL, 10);
				}
			}
		}
		if (*body && clen >= 0 && have >= *body + (size_t)clen)
			return (ssize_t)(*body + (size_t)clen);
		if (have + 1 == cap)
			return -EMSGSIZE;
		ssize_t n = recv(fd, buf + have, cap - have - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return *body ? (ssize_t)have : -EBADMSG;
		have += (size_t)n;
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "method", required_argument, NULL, 'm' },
		{ "wait", required_argument, NULL, 'w' },
		{ "status", no_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	const char *method = "GET";
	double wait_s = 0;
	bool status_only = false;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'm':
			method = optarg;
			break;
		case 'w':
			wait_s = strtod(optarg, &end);
			if (end == optarg || *end || wait_s < 0 || wait_s > 3600)
				goto usage;
			break;
		case 's':
			status_only = true;
			break;
		default:
			goto usage;
		}
	}
	struct sockaddr_storage ss;
	socklen_t sl;
	if (argc - optind != 2 || parse_endpoint(argv[optind], &ss, &sl) < 0 ||
	    argv[optind + 1][0] != '/')
		goto usage;
	int fd = connect_retry(&ss, sl, wait_s);
	if (fd < 0) {
		fprintf(stderr, "http-get: connect %s: %s\n", argv[optind], strerror(-fd));
		return 1;
	}
	char req[2048];
	int rl = snprintf(req, sizeof req,
			  "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n", method,
			  argv[optind + 1], argv[optind],
			  strcmp(method, "GET") && strcmp(method, "HEAD") ? "Content-Length: 0\r\n"
									   : "");
	char *buf = malloc(RESPONSE_MAX);
	size_t body = 0;
	ssize_t len = -ENOMEM;
	if (buf && rl > 0 && (size_t)rl < sizeof req) {
		len = send_all(fd, req, (size_t)rl);
		if (len == 0)
			len = read_response(fd, buf, RESPONSE_MAX, &body);
	}
	close(fd);
	int code = 0;
	if (len < 0 || sscanf(buf, "HTTP/1.%*1[01] %3d", &code) != 1) {
		fprintf(stderr, "http-get: no HTTP response (%s)\n",
			len < 0 ? strerror((int)-len) : "bad status line");
		free(buf);
		return 1;
	}
	if (status_only)
		printf("%d\n", code);
	else
		fwrite(buf + body, 1, (size_t)len - body, stdout);
	free(buf);
	if (code < 200 || code > 299) {
		fprintf(stderr, "HTTP %d\n", code);
		return 1;
	}
	return 0;
usage:
	fputs("Usage: http-get IP:PORT PATH [--method M] [--wait SECONDS] [--status]\n", stderr);
	return 2;
}
