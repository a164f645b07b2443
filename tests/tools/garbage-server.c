/* garbage-server IP:PORT SECONDS COUNT_FILE: a TCP listener that answers every connection with
 * 512 random bytes (no TLS, no NTS-KE), then closes it; it stands for a key-exchange port that
 * answers garbage. After each accepted connection it rewrites COUNT_FILE with the number of
 * connections accepted so far (written to a temporary file and renamed, so a reader never sees a
 * partial number). Exits 0 after SECONDS (1..3600); 1 on a socket or file failure, 2 on usage
 * errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tool_net.h"



static int write_count(const char *path, unsigned long n)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return -1;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	int bad = fprintf(f, "%lu\n", n) < 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path) != 0)
		return -1;
	return 0;
}

/* xorshift64: the bytes only need to be arbitrary, not unpredictable. */
static uint64_t rng_state;

static uint8_t rnd8(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint8_t)(rng_state >> 32);
}

int main(int argc, char **argv)
{
	char *end = NULL;
	long secs = argc == 4 ? strtol(argv[2], &end, 10) : 0;
	if (argc != 4 || *end || secs < 1 || secs > 3600) {
		fputs("Usage: garbage-server IP:PORT SECONDS COUNT_FILE\n", stderr);
		return 2;
	}
	const char *count_file = argv[3];
	int lfd = tool_listen(argv[1], false, "garbage-server");
	if (lfd == -EINVAL) {
		fputs("Usage: garbage-server IP:PORT SECONDS COUNT_FILE (IPv4)\n", stderr);
		return 2;
	}
	if (lfd < 0)
		return 1;
	unsigned long accepted = 0;
	if (write_count(count_file, accepted) < 0) {
		perror("garbage-server: count file");
		close(lfd);
		return 1;
	}
	rng_state = (uint64_t)tool_now_ms() * 0x9E3779B97F4A7C15ull | 1;
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int64_t stop = tool_now_ms() + secs * 1000;
	for (int64_t left; (left = stop - tool_now_ms()) > 0;) {
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			perror("garbage-server: poll");
			close(lfd);
			return 1;
		}
		if (!(p.revents & POLLIN))
			continue;
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue;
		accepted++;
		if (write_count(count_file, accepted) < 0) {
			perror("garbage-server: count file");
			close(c);
			close(lfd);
			return 1;
		}
		uint8_t buf[512];
		for (size_t i = 0; i < sizeof buf; i++)
			buf[i] = rnd8();
		/* The first byte must not look like a TLS record, whatever the generator gives. */
		buf[0] = 0x5a;
		(void)send(c, buf, sizeof buf, MSG_NOSIGNAL | MSG_DONTWAIT);
		shutdown(c, SHUT_WR);
		close(c);
	}
	close(lfd);
	return 0;
}
