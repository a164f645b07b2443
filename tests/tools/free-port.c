/* free-port [--reserve DIR] [N]: prints N (default 1) distinct ports, one a line, that are free
 * right now for both TCP and UDP on every IPv4 address. Ports are drawn at random from
 * 20000..32767, below Linux's ephemeral range, so they do not collide with the kernel's choice of
 * client ports. All the ports are held while choosing so they are distinct.
 *
 * A port that is free now may still be taken by a test running in parallel that chose it a
 * moment earlier and has not bound it yet. With --reserve, each port chosen is also claimed by
 * creating DIR/PORT exclusively; a port whose file exists is skipped unless the file is older
 * than an hour (a test that was killed). The caller removes its files when it is done.
 * Exit 1 when not enough free ports were found, 2 on usage errors. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
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
#define STALE_S 3600

/* Claims port in dir: 1 when this call created dir/port, 0 when someone holds it, -1 on error. */
static int reserve(const char *dir, uint16_t port)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof path, "%s/%u", dir, port) >= sizeof path)
		return -1;
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0) {
			close(fd);
			return 1;
		}
		if (errno != EEXIST)
			return -1;
		struct stat st;
		if (stat(path, &st) < 0 || time(NULL) - st.st_mtime < STALE_S)
			return 0;
		unlink(path);
	}
	return 0;
}

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
	const char *dir = NULL;
	if (argc >= 3 && strcmp(argv[1], "--reserve") == 0) {
		dir = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc > 2 || (argc == 2 && ((n = strtol(argv[1], NULL, 10)) < 1 || n > MAX_PORTS))) {
		fputs("Usage: free-port [--reserve DIR] [N]  (1..64)\n", stderr);
		return 2;
	}
	if (dir && mkdir(dir, 01777) < 0 && errno != EEXIST) {
		perror("free-port: mkdir");
		return 1;
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
		int claimed = dir ? reserve(dir, port) : 1;
		if (claimed < 0) {
			perror("free-port: reserve");
			return 1;
		}
		if (claimed == 0) {
			close(t);
			close(u);
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
