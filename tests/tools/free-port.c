/* free-port [N]: prints N (default 1) distinct ports, one a line, that are free right now for
 * both TCP and UDP on every IPv4 address. Ports are drawn at random from 20000..32767, below
 * Linux's ephemeral range, so they do not collide with the kernel's choice of client ports and
 * rarely with another test picking at the same time. All the ports are held while choosing so
 * they are distinct. Exit 1 when not enough free ports were found, 2 on usage errors. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define PORT_MIN 20000
#define PORT_SPAN 12768
#define MAX_PORTS 64
#define MAX_TRIES 2000

/* Binds one socket of the type to 0.0.0.0:port; the fd, or a negative errno. */
static int bind_port(int type, uint16_t port)
{
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_ANY) };
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int main(int argc, char **argv)
{
	long n = 1;
	if (argc > 2 || (argc == 2 && ((n = strtol(argv[1], NULL, 10)) < 1 || n > MAX_PORTS))) {
		fputs("Usage: free-port [N]  (1..64)\n", stderr);
		return 2;
	}
	int fds[2 * MAX_PORTS];
	uint16_t ports[MAX_PORTS];
	long found = 0;
	for (int tries = 0; found < n && tries < MAX_TRIES; tries++) {
		uint16_t r;
		if (getrandom(&r, sizeof r, 0) != sizeof r) {
			perror("free-port: getrandom");
			return 1;
		}
		uint16_t port = (uint16_t)(PORT_MIN + r % PORT_SPAN);
		int t = bind_port(SOCK_STREAM, port);
		if (t < 0)
			continue;
		int u = bind_port(SOCK_DGRAM, port);
		if (u < 0) {
			close(t);
			continue;
		}
		fds[2 * found] = t;
		fds[2 * found + 1] = u;
		ports[found++] = port;
	}
	for (long i = 0; i < 2 * found; i++)
		close(fds[i]);
	if (found < n) {
		fputs("free-port: not enough free ports\n", stderr);
		return 1;
	}
	for (long i = 0; i < n; i++)
		printf("%u\n", ports[i]);
	return 0;
}
