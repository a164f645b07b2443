/* ntp-query IP:PORT [TIMEOUT_MS]: one plain NTPv4 client request (mode 3) over UDP, and prints
 * the answer as one JSON object on stdout:
 *   {"result":"ok","leap":0,"version":4,"mode":4,"stratum":2,"poll":4,"precision":-20,
 *    "refid":"7f000002","root_delay_s":0.0001,"root_dispersion_s":0.004}
 * or {"result":"timeout"} / {"result":"bad_reply"} (a datagram that is not the answer to our
 * request: too short, wrong mode or origin timestamp). It retries twice within TIMEOUT_MS
 * (default 3000). Exit 0 when it ran (whatever the answer), 1 on a socket failure, 2 on usage
 * errors. IPv4 only. */
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

#define NTP_LEN 48
#define NTP_UNIX_OFFSET 2208988800ull

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_addr(const char *s, struct sockaddr_in *a)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof host)
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	*a = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (*end || end == colon + 1 || port < 1 || port > 65535 ||
	    inet_pton(AF_INET, host, &a->sin_addr) != 1)
		return -1;
	return 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int main(int argc, char **argv)
{
	struct sockaddr_in to;
	char *end = NULL;
	long timeout = 3000;
	if (argc == 3)
		timeout = strtol(argv[2], &end, 10);
	if (argc < 2 || argc > 3 || (end && *end) || timeout < 1 || timeout > 60000 ||
	    parse_addr(argv[1], &to) < 0) {
		fputs("Usage: ntp-query IP:PORT [TIMEOUT_MS]\n", stderr);
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
		perror("ntp-query");
		return 1;
	}
	/* The transmit timestamp is only an identifier here: the current time, made unique. */
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	uint8_t req[NTP_LEN] = { 0 };
	req[0] = 0 << 6 | 4 << 3 | 3; /* LI 0, VN 4, mode 3 */
	uint32_t sec = (uint32_t)((uint64_t)rt.tv_sec + NTP_UNIX_OFFSET);
	uint32_t frac = (uint32_t)(((uint64_t)rt.tv_nsec << 32) / 1000000000u) ^ (uint32_t)getpid();
	for (int i = 0; i < 4; i++) {
		req[40 + i] = (uint8_t)(sec >> (24 - 8 * i));
		req[44 + i] = (uint8_t)(frac >> (24 - 8 * i));
	}
	const char *result = "timeout";
	uint8_t rep[1024];
	ssize_t n = 0;
	int64_t stop = now_ms() + timeout;
	for (int attempt = 0; attempt < 3 && now_ms() < stop; attempt++) {
		if (send(fd, req, sizeof req, 0) < 0 && errno != ECONNREFUSED) {
			perror("ntp-query: send");
			return 1;
		}
		int64_t until = now_ms() + timeout / 3;
		if (until > stop)
			until = stop;
		for (int64_t left; (left = until - now_ms()) > 0;) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int r = poll(&p, 1, (int)left);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			n = recv(fd, rep, sizeof rep, 0);
			if (n < 0) {
				/* ICMP port unreachable: nothing listens (yet); wait out this round. */
				if (errno == ECONNREFUSED || errno == EINTR)
					continue;
				perror("ntp-query: recv");
				return 1;
			}
			if (n >= NTP_LEN && (rep[0] & 7) == 4 && !memcmp(rep + 24, req + 40, 8)) {
				result = "ok";
				goto done;
			}
			result = "bad_reply";
		}
	}
done:
	close(fd);
	if (strcmp(result, "ok") != 0) {
		printf("{\"result\":\"%s\"}\n", result);
		return 0;
	}
	printf("{\"result\":\"ok\",\"leap\":%d,\"version\":%d,\"mode\":%d,\"stratum\":%d,"
	       "\"poll\":%d,\"precision\":%d,\"refid\":\"%08x\",\"root_delay_s\":%.6f,"
	       "\"root_dispersion_s\":%.6f,\"length\":%zd}\n",
	       rep[0] >> 6, (rep[0] >> 3) & 7, rep[0] & 7, rep[1], (int8_t)rep[2], (int8_t)rep[3],
	       be32(rep + 12), be32(rep + 4) / 65536.0, be32(rep + 8) / 65536.0, n);
	return 0;
}
