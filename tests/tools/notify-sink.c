/* notify-sink PATH: the service manager's end of sd_notify(3), for tests. Binds a datagram socket
 * at PATH (mode 0666, so a daemon that dropped to another account can still send, as systemd's
 * own socket allows) and writes one line to stdout for each datagram: "pid=N " (the sender's pid,
 * from the kernel's credentials) then the message, its newlines shown as spaces. A datagram
 * longer than the buffer is shown as "pid=N truncated". Runs until killed; exit 1 when the
 * socket cannot be set up, 2 on usage errors. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SINK_MAX 4096

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: notify-sink PATH\n");
		return 2;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(argv[1]) >= sizeof sa.sun_path) {
		fprintf(stderr, "notify-sink: %s: path too long\n", argv[1]);
		return 2;
	}
	memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int on = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0 ||
	    bind(fd, (const struct sockaddr *)&sa, sizeof sa) < 0 || chmod(argv[1], 0666) < 0) {
		fprintf(stderr, "notify-sink: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (;;) {
		char buf[SINK_MAX];
		union {
			struct cmsghdr h;
			char space[CMSG_SPACE(sizeof(struct ucred))];
		} ctl;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
				    .msg_controllen = sizeof ctl };
		ssize_t n = recvmsg(fd, &m, MSG_TRUNC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "notify-sink: recvmsg: %s\n", strerror(errno));
			return 1;
		}
		long pid = -1;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
				struct ucred u;
				memcpy(&u, CMSG_DATA(c), sizeof u);
				pid = (long)u.pid;
			}
		}
		if ((size_t)n > sizeof buf) {
			printf("pid=%ld truncated\n", pid);
		} else {
			for (ssize_t i = 0; i < n; i++)
				if (buf[i] == '\n' || buf[i] == '\0')
					buf[i] = ' ';
			printf("pid=%ld %.*s\n", pid, (int)n, buf);
		}
		fflush(stdout);
	}
}
