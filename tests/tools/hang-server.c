/* hang-server IP:PORT SECONDS: a TCP listener that accepts every connection and never sends a
 * byte, holding the connections open, then exits 0 after SECONDS (1..3600). It stands for an
 * upstream that hangs. Bytes the peers send are read and dropped so their writes never block.
 * Exit 1 on a socket failure, 2 on usage errors. */
#include <arpa/inet.h>
#include <errno.h>
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

#define MAX_CONNS 256



int main(int argc, char **argv)
{
	char *end = NULL;
	long secs = argc == 3 ? strtol(argv[2], &end, 10) : 0;
	if (argc != 3 || *end || secs < 1 || secs > 3600) {
		fputs("Usage: hang-server IP:PORT SECONDS\n", stderr);
		return 2;
	}
	int lfd = tool_listen(argv[1], false, "hang-server");
	if (lfd == -EINVAL) {
		fputs("Usage: hang-server IP:PORT SECONDS (IPv4)\n", stderr);
		return 2;
	}
	if (lfd < 0)
		return 1;
	struct pollfd p[MAX_CONNS + 1] = { { .fd = lfd, .events = POLLIN } };
	nfds_t n = 1;
	int64_t stop = tool_now_ms() + secs * 1000;
	char sink[4096];
	for (int64_t left; (left = stop - tool_now_ms()) > 0;) {
		if (poll(p, n, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			perror("hang-server: poll");
			return 1;
		}
		for (nfds_t i = n; i-- > 1;) {
			if (!p[i].revents)
				continue;
			ssize_t r = read(p[i].fd, sink, sizeof sink);
			if (r > 0 || (r < 0 && errno == EINTR))
				continue;
			close(p[i].fd);
			p[i] = p[--n];
		}
		if (p[0].revents & POLLIN) {
			int c = accept(lfd, NULL, NULL);
			if (c >= 0 && n <= MAX_CONNS)
				p[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
			else if (c >= 0)
				close(c);
		}
	}
	for (nfds_t i = 0; i < n; i++)
		close(p[i].fd);
	return 0;
}
