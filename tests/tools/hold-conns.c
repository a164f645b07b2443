/* hold-conns IP:PORT N SECONDS READY_FILE [spread] [sustain]: a slowloris client. Opens N TCP connections to
 * IP:PORT (IPv4) and holds them without ever completing a TLS handshake: every other connection
 * sends the first 5 bytes of a TLS record header announcing a ClientHello and then nothing (a
 * client stopped mid-ClientHello), the rest send nothing at all. Once every connection attempt
 * has either connected or failed it creates READY_FILE; connections still pending after 10 s
 * count as failed. It then holds them until SECONDS have passed, noticing the ones the server
 * closes, and prints one JSON line: {"opened":N,"connected":C,"failed":F,"closed_by_peer":P,
 * "reopened":R} (failed: those not up at the end).
 * With "spread" the connections come from many loopback addresses (127.1.x.y, 250 connections
 * each), as a distributed attack's would, so a per-address cap does not stop them. With
 * "sustain" every connection the server closes (or that fails) is opened again at once, so N
 * attempts stay outstanding for the whole time (the line then also has "reopened").
 * SIGTERM ends the holding early (the line is still printed). The descriptor soft limit is
 * raised to the hard one first. Exit 0; 1 on a setup failure
 * (not enough descriptors, READY_FILE not creatable); 2 on usage errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tool_net.h"

#define MAX_N 20000
#define CONNECT_WAIT_MS 10000

enum cstate { PENDING, UP, FAILED, CLOSED };

static volatile sig_atomic_t stop_now;

static void on_term(int sig)
{
	(void)sig;
	stop_now = 1;
}


/* Starts connection i (non-blocking); st FAILED when it cannot even start. */
static void open_one(struct pollfd *p, enum cstate *st, long i, const struct sockaddr_in *to,
		     bool spread)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	*p = (struct pollfd){ .fd = fd, .events = POLLOUT };
	*st = PENDING;
	struct sockaddr_in from = { .sin_family = AF_INET };
	from.sin_addr.s_addr =
		htonl(0x7f010000u | (uint32_t)(i / 250 % 250) << 8 | (uint32_t)(i % 250 + 1));
	if (fd < 0 || (spread && bind(fd, (struct sockaddr *)&from, sizeof from) < 0) ||
	    (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS)) {
		*st = FAILED;
		p->fd = -1;
		if (fd >= 0)
			close(fd);
	}
}


int main(int argc, char **argv)
{
	char *end1 = NULL, *end2 = NULL;
	bool spread = false, sustain = false, bad = argc < 5 || argc > 7;
	for (int a = 5; a < argc; a++) {
		if (strcmp(argv[a], "spread") == 0)
			spread = true;
		else if (strcmp(argv[a], "sustain") == 0)
			sustain = true;
		else
			bad = true;
	}
	long n = bad ? 0 : strtol(argv[2], &end1, 10);
	long secs = bad ? 0 : strtol(argv[3], &end2, 10);
	struct sockaddr_in to;
	if (bad || *end1 || *end2 || n < 1 || n > MAX_N || secs < 1 || secs > 3600 ||
	    tool_parse_ipv4(argv[1], &to) < 0) {
		fputs("Usage: hold-conns IP:PORT N SECONDS READY_FILE [spread] [sustain]  (IPv4, N "
		      "1..20000)\n",
		      stderr);
		return 2;
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < (rlim_t)n + 16) {
		fprintf(stderr, "hold-conns: the descriptor limit is below %ld\n", n + 16);
		return 1;
	}
	struct sigaction sa = { .sa_handler = on_term };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	struct pollfd *p = calloc((size_t)n, sizeof *p);
	enum cstate *st = calloc((size_t)n, sizeof *st);
	if (!p || !st) {
		fputs("hold-conns: out of memory\n", stderr);
		return 1;
	}
	for (long i = 0; i < n; i++)
		open_one(&p[i], &st[i], i, &to, spread);
	long reopened = 0, connected = 0, closed = 0;
	/* A ClientHello's record header: handshake (22), TLS 1.0 legacy version, 512 bytes to
	 * follow that never come. */
	static const uint8_t hello_start[5] = { 0x16, 0x03, 0x01, 0x02, 0x00 };
	int64_t start = tool_now_ms(), stop = start + secs * 1000;
	bool ready = false;
	char sink[4096];
	for (int64_t t; !stop_now && (t = tool_now_ms()) < stop;) {
		long pending = 0;
		for (long i = 0; i < n; i++)
			pending += st[i] == PENDING;
		if (!ready && (pending == 0 || t - start >= CONNECT_WAIT_MS)) {
			for (long i = 0; i < n; i++) {
				if (st[i] == PENDING) {
					close(p[i].fd);
					p[i].fd = -1;
					st[i] = FAILED;
				}
			}
			int fd = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (fd < 0) {
				perror("hold-conns: ready file");
				return 1;
			}
			close(fd);
			ready = true;
		}
		int wait = (int)(stop - t);
		if (!ready && wait > 100)
			wait = 100;
		if (poll(p, (nfds_t)n, wait) < 0) {
			if (errno == EINTR)
				continue;
			perror("hold-conns: poll");
			return 1;
		}
		for (long i = 0; i < n; i++) {
			if (p[i].fd < 0 || !p[i].revents)
				continue;
			if (st[i] == PENDING) {
				int err = 0;
				socklen_t len = sizeof err;
				if (getsockopt(p[i].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
					close(p[i].fd);
					p[i].fd = -1;
					/* Reset after the server accepted it: it was up, then shed. */
					st[i] = err == ECONNRESET || err == EPIPE ? CLOSED : FAILED;
					connected += st[i] == CLOSED;
					closed += st[i] == CLOSED;
					continue;
				}
				st[i] = UP;
				connected++;
				if (i % 2 == 0 &&
				    write(p[i].fd, hello_start, sizeof hello_start) < 0) {
					/* Closed already: noticed as a read of 0 or an error below. */
				}
				p[i].events = POLLIN;
				continue;
			}
			/* Whatever the server sends is dropped; its close is counted. */
			ssize_t r = read(p[i].fd, sink, sizeof sink);
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
				close(p[i].fd);
				p[i].fd = -1;
				st[i] = CLOSED;
				closed++;
			}
		}
		/* A sustained attack comes straight back. */
		for (long i = 0; sustain && ready && i < n; i++) {
			if (st[i] == CLOSED || st[i] == FAILED) {
				open_one(&p[i], &st[i], i, &to, spread);
				reopened++;
			}
		}
	}
	long failed = 0, opened = n + reopened;
	for (long i = 0; i < n; i++) {
		failed += st[i] == FAILED;
		if (p[i].fd >= 0)
			close(p[i].fd);
	}
	printf("{\"opened\":%ld,\"connected\":%ld,\"failed\":%ld,\"closed_by_peer\":%ld,"
	       "\"reopened\":%ld}\n",
	       opened, connected, failed, closed, reopened);
	free(p);
	free(st);
	return 0;
}
