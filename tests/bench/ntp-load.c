/* ntp-load: an NTS-protected (or plain) NTPv4 load generator.
 *
 * With NTS it first does one key exchange like a client (TLS 1.3, ALPN ntske/1, one request for
 * NTPv4 and --aead) and keeps the 8 cookies and the exported keys; then it sends NTS requests to
 * the server and port the response named (the KE server's address and port 123 when absent)
 * using the cookies in turn. Servers do not track cookie reuse, so 8 cookies carry any number of
 * requests. With --plain it sends plain mode-3 packets to --connect instead.
 *
 * One thread keeps --window requests outstanding on one connected UDP socket, sending and
 * receiving in batches (sendmmsg/recvmmsg). Each request carries a random transmit timestamp
 * whose low 16 bits name its window slot, so a reply is matched to its request by the origin
 * timestamp the server echoes. A slot frees on its reply or after --timeout-ms (a loss). One
 * reply in --verify-every is checked with nts_ntp_verify_response (origin, UID, authenticator
 * with the S2C key); plain replies are checked for mode 4 and a matching origin only.
 *
 * Runs stop by themselves after --count requests or --duration seconds, whichever comes first
 * (defaults: no count limit, 10 s). Exit status 0 when replies came and every checked one
 * verified, 1 otherwise, 2 on usage or setup errors. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_msg.h"
#include "ntp_packet.h"
#include "nts_ntp.h"
#include "tls.h"

#define BATCH 64
#define PKT_MAX 1280
#define MAX_WINDOW 65536
#define KE_TIMEOUT_MS 5000

struct options {
	const char *connect;
	const char *ca;
	const char *name;
	const char *ntp; /* override of the negotiated NTP address */
	unsigned window;
	uint64_t count;
	double duration;
	unsigned timeout_ms;
	unsigned verify_every;
	unsigned placeholders;
	uint16_t aead;
	bool plain;
	bool json;
};

struct slot {
	bool busy;
	uint64_t xmt;
	uint64_t sent_ns;
	uint8_t uid[NTS_NTP_UID_LEN];
};

struct nts_state {
	uint16_t aead;
	struct aead *c2s, *s2c;
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	size_t n_cookies;
	char server[KE_MSG_NAME_MAX + 1];
	uint16_t port;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fputs("Usage: ntp-load --connect IP:PORT [--ca FILE | --plain] [OPTIONS]\n"
	      "  --connect IP:PORT    NTS-KE server (with --plain: the NTP server)\n"
	      "  --ca FILE            trust anchor for the KE server certificate (PEM)\n"
	      "  --name NAME          name to verify the certificate against (default: the IP)\n"
	      "  --plain              plain NTPv4, no key exchange\n"
	      "  --ntp IP:PORT        send NTP here instead of where the KE response says\n"
	      "  --aead 15|17         AEAD to ask for (default 15)\n"
	      "  --window W           requests outstanding at once (default 64)\n"
	      "  --count N            requests to send in total (default: no limit)\n"
	      "  --duration S         stop sending after S seconds (default 10)\n"
	      "  --timeout-ms MS      a request unanswered for this long is lost (default 1000)\n"
	      "  --verify-every K     authenticate one reply in K (default 1: all)\n"
	      "  --placeholders P     cookie placeholders per request, 0..7 (default 0)\n"
	      "  --json               print one JSON line instead of text\n",
	      f);
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int resolve(const char *host, const char *port, struct sockaddr_storage *out,
		   socklen_t *out_len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -EINVAL;
	memcpy(out, res->ai_addr, res->ai_addrlen);
	*out_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Resolves "HOST:PORT" or "[IPv6]:PORT" (numeric hosts only) into *out. */
static int parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *out_len)
{
	char host[256];
	const char *port;
	size_t hl;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - s - 1);
		port = close + 2;
		s++;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
		port = colon + 1;
	}
	if (hl == 0 || hl >= sizeof host)
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	return resolve(host, port, out, out_len);
}

static int send_all(int fd, struct tls_session *tls)
{
	const uint8_t *p;
	size_t n;
	tls_output(tls, &p, &n);
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		tls_output_consume(tls, (size_t)w);
		tls_output(tls, &p, &n);
	}
	return 0;
}

/* Runs the TLS session over the blocking socket fd until a whole response is in resp; returns
 * its length or a negative errno (a message on stderr). */
static int ke_exchange(int fd, struct tls_session *tls, const uint8_t *req, size_t req_len,
		       uint8_t *resp, size_t cap)
{
	size_t have = 0;
	bool sent = false;
	uint8_t buf[16 * 1024];

	for (;;) {
		int st = tls_step(tls);
		if (st < 0) {
			fprintf(stderr, "ntp-load: TLS: %s\n", tls_reason(tls));
			return st;
		}
		int rc = send_all(fd, tls);
		if (rc < 0)
			return rc;
		if (st == TLS_ESTABLISHED && !sent) {
			rc = tls_write(tls, req, req_len);
			if (rc < 0 || (rc = send_all(fd, tls)) < 0)
				return rc;
			sent = true;
		}
		while (sent) {
			if (have == cap)
				return -EMSGSIZE;
			ssize_t n = tls_read(tls, resp + have, cap - have);
			if (n == -EAGAIN)
				break;
			if (n <= 0) {
				fprintf(stderr, "ntp-load: connection ended before the response\n");
				return n == 0 ? -ECONNRESET : (int)n;
			}
			have += (size_t)n;
			int len = ke_msg_frame(resp, have, KE_MSG_RESPONSE_MAX);
			if (len != 0)
				return len;
		}
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "ntp-load: key exchange: %s\n",
				n == 0 ? "connection closed" : strerror(errno));
			return n == 0 ? -ECONNRESET : -errno;
		}
		rc = tls_feed(tls, buf, (size_t)n);
		if (rc < 0)
			return rc;
	}
}

/* One key exchange: cookies, keys and where to send NTP. */
static int key_exchange(const struct options *o, const struct sockaddr_storage *ke,
			socklen_t ke_len, const char *ke_host, struct nts_state *st)
{
	char err[TLS_CREDS_ERR_MAX];
	struct tls_creds *creds = NULL;
	struct tls_session *tls = NULL;
	struct ke_msg_response resp;
	uint8_t req[256], c2s[KE_MSG_KEY_MAX], s2c[KE_MSG_KEY_MAX];
	static uint8_t msg[KE_MSG_RESPONSE_MAX];
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	int fd = -1, rc, len;

	struct tls_client_options copt = { .no_system_trust = true, .ca_file = o->ca };
	rc = tls_creds_new_client(&creds, &copt, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "ntp-load: %s\n", err);
		goto fail;
	}
	rc = tls_session_new_client(&tls, creds, o->name ? o->name : ke_host);
	if (rc < 0)
		goto fail;
	fd = socket(ke->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	struct timeval tv = { .tv_sec = KE_TIMEOUT_MS / 1000 };
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (const struct sockaddr *)ke, ke_len) < 0) {
		rc = -errno;
		fprintf(stderr, "ntp-load: connect %s: %s\n", o->connect, strerror(errno));
		goto fail;
	}
	len = ke_msg_build_request(req, sizeof req, KE_NUMBERING_IANA, protocols, 1, &o->aead, 1,
				   NULL, 0);
	if (len < 0) {
		rc = len;
		goto fail;
	}
	rc = ke_exchange(fd, tls, req, (size_t)len, msg, sizeof msg);
	if (rc < 0)
		goto fail;
	len = rc;
	rc = ke_msg_parse_response(msg, (size_t)len, KE_NUMBERING_IANA, KE_MSG_REQUEST_PLAIN,
				   &resp);
	if (rc < 0 || !resp.has_protocol || resp.protocol != KE_MSG_PROTOCOL_NTPV4 ||
	    !resp.has_aead || resp.aead != o->aead || resp.n_cookies == 0) {
		fprintf(stderr, "ntp-load: unusable KE response (%s%s)\n",
			rc < 0 ? strerror(-rc) : "no NTPv4, AEAD or cookies",
			rc == -EREMOTEIO ? ", server sent Error" : "");
		rc = -EPROTO;
		goto fail;
	}
	size_t kl = aead_key_len(resp.aead);
	rc = tls_export_nts_keys(tls, resp.protocol, resp.aead, kl, c2s, s2c);
	if (rc == 0)
		rc = aead_new(&st->c2s, resp.aead, c2s, kl);
	if (rc == 0)
		rc = aead_new(&st->s2c, resp.aead, s2c, kl);
	gnutls_memset(c2s, 0, sizeof c2s);
	gnutls_memset(s2c, 0, sizeof s2c);
	if (rc < 0)
		goto fail;
	st->aead = resp.aead;
	st->n_cookies = resp.n_cookies;
	memcpy(st->cookies, resp.cookies, sizeof st->cookies);
	snprintf(st->server, sizeof st->server, "%s", resp.has_server ? resp.server.name : ke_host);
	st->port = resp.has_port ? resp.port : KE_MSG_PORT_DEFAULT;
	if (tls_close(tls) == 0)
		send_all(fd, tls);
fail:
	if (fd >= 0)
		close(fd);
	tls_free(tls);
	tls_creds_unref(creds);
	return rc;
}

/* Fills pkt with a request for slot i: a random transmit timestamp whose low 16 bits are i. */
static int build_request(const struct options *o, struct nts_state *st, struct slot *s,
			 unsigned i, uint64_t seq, uint8_t *pkt, size_t cap)
{
	uint8_t rnd[NTS_NTP_UID_LEN + NTS_NTP_NONCE_LEN + 8];
	if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, o->plain ? 8 : sizeof rnd) < 0)
		return -EIO;
	uint64_t r;
	memcpy(&r, rnd, 8);
	s->xmt = (r & ~(uint64_t)0xffff) | i;
	struct ntp_packet_header hdr = { .version = NTP_PACKET_VERSION,
					 .mode = NTP_PACKET_MODE_CLIENT, .transmit_ts = s->xmt };
	if (o->plain) {
		struct wire_writer w;
		wire_writer_init(&w, pkt, cap);
		ntp_packet_put_header(&w, &hdr);
		return wire_writer_error(&w) < 0 ? wire_writer_error(&w) : (int)wire_written(&w);
	}
	memcpy(s->uid, rnd + 8, NTS_NTP_UID_LEN);
	const struct ke_msg_cookie *c = &st->cookies[seq % st->n_cookies];
	struct nts_ntp_request_params p = {
		.hdr = hdr,
		.uid = { s->uid, NTS_NTP_UID_LEN },
		.cookie = { c->data, c->len },
		.placeholders = o->placeholders,
		.nonce = { rnd + 8 + NTS_NTP_UID_LEN, NTS_NTP_NONCE_LEN },
	};
	return nts_ntp_build_request(&p, st->c2s, pkt, cap);
}

/* CPU seconds this process used: tells whether the generator, not the server, was the limit. */
static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double percentile(const double *v, size_t n, double p)
{
	return n ? v[(size_t)(p * (double)(n - 1) + 0.5)] : 0;
}

struct counters {
	uint64_t sent, answered, lost, strays, checked, verified, verify_failed, naks;
	double *rtt_ms;
	size_t n_rtt, cap_rtt;
};

static void record_rtt(struct counters *k, double ms)
{
	if (k->n_rtt == k->cap_rtt) {
		size_t cap = k->cap_rtt ? 2 * k->cap_rtt : 65536;
		double *p = realloc(k->rtt_ms, cap * sizeof *p);
		if (!p)
			return; /* a lost sample, not a lost run */
		k->rtt_ms = p;
		k->cap_rtt = cap;
	}
	k->rtt_ms[k->n_rtt++] = ms;
}

/* Matches one reply to its slot, checks it, and frees the slot. */
static void handle_reply(const struct options *o, struct nts_state *st, struct slot *slots,
			 unsigned *free_stack, unsigned *n_free, struct counters *k,
			 const uint8_t *pkt, size_t len, uint64_t now)
{
	struct ntp_packet_header h;
	if (ntp_packet_parse_header(pkt, len, &h) < 0) {
		k->strays++;
		return;
	}
	unsigned i = (unsigned)(h.origin_ts & 0xffff);
	if (i >= o->window || !slots[i].busy || slots[i].xmt != h.origin_ts ||
	    h.mode != NTP_PACKET_MODE_SERVER) {
		k->strays++;
		return;
	}
	struct slot *s = &slots[i];
	k->answered++;
	record_rtt(k, (double)(now - s->sent_ns) / 1e6);
	if (!o->plain && k->answered % o->verify_every == 0) {
		struct nts_ntp_response resp;
		k->checked++;
		int rc = nts_ntp_verify_response(pkt, len, s->xmt, s->uid, NTS_NTP_UID_LEN, st->s2c,
						 &resp);
		if (rc == NTS_NTP_RESPONSE_OK)
			k->verified++;
		else if (rc == NTS_NTP_RESPONSE_NAK)
			k->naks++;
		else
			k->verify_failed++;
	}
	s->busy = false;
	free_stack[(*n_free)++] = i;
}

static int run(const struct options *o, struct nts_state *st, int fd, struct counters *k,
	       double *elapsed)
{
	static uint8_t out[BATCH][PKT_MAX], in[BATCH][PKT_MAX];
	struct mmsghdr smsg[BATCH], rmsg[BATCH];
	struct iovec siov[BATCH], riov[BATCH];
	unsigned out_slot[BATCH];
	struct slot *slots = calloc(o->window, sizeof *slots);
	unsigned *free_stack = malloc(o->window * sizeof *free_stack);
	unsigned n_free = 0;
	uint64_t seq = 0;

	if (!slots || !free_stack) {
		free(slots);
		free(free_stack);
		return -ENOMEM;
	}
	for (unsigned i = o->window; i-- > 0;)
		free_stack[n_free++] = i;
	for (unsigned i = 0; i < BATCH; i++) {
		riov[i] = (struct iovec){ in[i], PKT_MAX };
		rmsg[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &riov[i], .msg_iovlen = 1 } };
	}

	uint64_t t0 = now_ns(), last_reply = t0, last_scan = t0;
	uint64_t stop_sending = t0 + (uint64_t)(o->duration * 1e9);
	uint64_t timeout = (uint64_t)o->timeout_ms * 1000000u;
	int rc = 0;
	bool blocked = false;

	for (;;) {
		uint64_t now = now_ns();
		bool sending = now < stop_sending && (o->count == 0 || k->sent < o->count);
		if (!sending && n_free == o->window)
			break;
		/* Past the send phase, wait at most one timeout for the last replies. */
		if (!sending && now > stop_sending + timeout)
			break;

		unsigned n = 0;
		while (sending && !blocked && n_free > 0 && n < BATCH &&
		       (o->count == 0 || k->sent + n < o->count)) {
			unsigned i = free_stack[--n_free];
			int len = build_request(o, st, &slots[i], i, seq++, out[n], PKT_MAX);
			if (len < 0) {
				rc = len;
				goto out;
			}
			siov[n] = (struct iovec){ out[n], (size_t)len };
			smsg[n] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &siov[n],
								 .msg_iovlen = 1 } };
			out_slot[n++] = i;
		}
		if (n > 0) {
			int sent = sendmmsg(fd, smsg, n, MSG_DONTWAIT);
			if (sent < 0) {
				if (errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED &&
				    errno != ENOBUFS) {
					rc = -errno;
					goto out;
				}
				sent = 0;
			}
			uint64_t t = now_ns();
			for (unsigned j = 0; j < (unsigned)sent; j++) {
				slots[out_slot[j]].busy = true;
				slots[out_slot[j]].sent_ns = t;
			}
			/* Unsent requests give their slots back; retry once writable. */
			for (unsigned j = n; j-- > (unsigned)sent;)
				free_stack[n_free++] = out_slot[j];
			k->sent += (uint64_t)sent;
			blocked = (unsigned)sent < n;
		}

		struct pollfd pfd = { .fd = fd, .events = POLLIN | (blocked ? POLLOUT : 0) };
		int pr = poll(&pfd, 1, sending && n_free > 0 && !blocked ? 0 : 5);
		if (pr < 0 && errno != EINTR) {
			rc = -errno;
			goto out;
		}
		if (pr > 0 && (pfd.revents & POLLOUT))
			blocked = false;
		for (;;) {
			int got = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
			if (got <= 0)
				break;
			uint64_t t = now_ns();
			last_reply = t;
			for (int j = 0; j < got; j++)
				handle_reply(o, st, slots, free_stack, &n_free, k, in[j],
					     rmsg[j].msg_len, t);
			if (got < BATCH)
				break;
		}

		now = now_ns();
		if (now - last_scan > 10000000u) {
			last_scan = now;
			for (unsigned i = 0; i < o->window; i++) {
				if (slots[i].busy && now - slots[i].sent_ns > timeout) {
					slots[i].busy = false;
					free_stack[n_free++] = i;
					k->lost++;
				}
			}
		}
	}
	for (unsigned i = 0; i < o->window; i++)
		if (slots[i].busy)
			k->lost++;
out:
	*elapsed = (double)(last_reply - t0) / 1e9;
	free(slots);
	free(free_stack);
	return rc;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum { O_CONNECT = 256, O_CA, O_NAME, O_PLAIN, O_NTP, O_AEAD, O_WINDOW, O_COUNT,
	       O_DURATION, O_TIMEOUT, O_VERIFY, O_PLACEHOLDERS, O_JSON, O_HELP };
	static const struct option longopts[] = {
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "ca", required_argument, NULL, O_CA },
		{ "name", required_argument, NULL, O_NAME },
		{ "plain", no_argument, NULL, O_PLAIN },
		{ "ntp", required_argument, NULL, O_NTP },
		{ "aead", required_argument, NULL, O_AEAD },
		{ "window", required_argument, NULL, O_WINDOW },
		{ "count", required_argument, NULL, O_COUNT },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "verify-every", required_argument, NULL, O_VERIFY },
		{ "placeholders", required_argument, NULL, O_PLACEHOLDERS },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int ch;

	*o = (struct options){ .window = 64, .duration = 10, .timeout_ms = 1000,
			       .verify_every = 1, .aead = 15 };
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case O_CONNECT: o->connect = optarg; break;
		case O_CA: o->ca = optarg; break;
		case O_NAME: o->name = optarg; break;
		case O_PLAIN: o->plain = true; break;
		case O_NTP: o->ntp = optarg; break;
		case O_AEAD:
			if (parse_uint(optarg, 65535, &v) < 0 || aead_key_len((uint16_t)v) == 0)
				goto bad;
			o->aead = (uint16_t)v;
			break;
		case O_WINDOW:
			if (parse_uint(optarg, MAX_WINDOW, &v) < 0 || v == 0)
				goto bad;
			o->window = (unsigned)v;
			break;
		case O_COUNT:
			if (parse_uint(optarg, UINT64_MAX / 2, &v) < 0 || v == 0)
				goto bad;
			o->count = v;
			break;
		case O_DURATION: {
			char *end;
			o->duration = strtod(optarg, &end);
			if (*end || end == optarg || !(o->duration > 0 && o->duration <= 86400))
				goto bad;
			break;
		}
		case O_TIMEOUT:
			if (parse_uint(optarg, 60000, &v) < 0 || v == 0)
				goto bad;
			o->timeout_ms = (unsigned)v;
			break;
		case O_VERIFY:
			if (parse_uint(optarg, UINT32_MAX, &v) < 0 || v == 0)
				goto bad;
			o->verify_every = (unsigned)v;
			break;
		case O_PLACEHOLDERS:
			if (parse_uint(optarg, NTS_NTP_MAX_COOKIES - 1, &v) < 0)
				goto bad;
			o->placeholders = (unsigned)v;
			break;
		case O_JSON: o->json = true; break;
		case O_HELP: usage(stdout); exit(0);
		default: goto bad;
		}
	}
	if (optind != argc || !o->connect || (!o->plain && !o->ca))
		goto bad;
	return 0;
bad:
	usage(stderr);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct options o;
	struct nts_state st = { 0 };
	struct counters k = { 0 };
	struct sockaddr_storage ke_addr, ntp_addr;
	socklen_t ke_len, ntp_len;
	char ke_host[INET6_ADDRSTRLEN], ntp_str[300], port[8];
	double elapsed = 0;
	int rc, fd = -1, status = 2;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	if (parse_addr(o.connect, &ke_addr, &ke_len) < 0) {
		fprintf(stderr, "ntp-load: bad address %s\n", o.connect);
		return 2;
	}
	getnameinfo((const struct sockaddr *)&ke_addr, ke_len, ke_host, sizeof ke_host, NULL, 0,
		    NI_NUMERICHOST);

	if (o.plain) {
		ntp_addr = ke_addr;
		ntp_len = ke_len;
	} else {
		rc = key_exchange(&o, &ke_addr, ke_len, ke_host, &st);
		if (rc < 0) {
			fprintf(stderr, "ntp-load: key exchange failed: %s\n", strerror(-rc));
			goto out;
		}
		snprintf(port, sizeof port, "%u", st.port);
		if (!o.ntp && resolve(st.server, port, &ntp_addr, &ntp_len) < 0) {
			fprintf(stderr, "ntp-load: cannot resolve NTP server %s\n", st.server);
			goto out;
		}
	}
	if (o.ntp && parse_addr(o.ntp, &ntp_addr, &ntp_len) < 0) {
		fprintf(stderr, "ntp-load: bad address %s\n", o.ntp);
		goto out;
	}
	char host[INET6_ADDRSTRLEN], serv[8];
	getnameinfo((const struct sockaddr *)&ntp_addr, ntp_len, host, sizeof host, serv,
		    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(ntp_str, sizeof ntp_str, ntp_addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
		 host, serv);

	fd = socket(ntp_addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)&ntp_addr, ntp_len) < 0) {
		fprintf(stderr, "ntp-load: UDP socket: %s\n", strerror(errno));
		goto out;
	}
	int bufsz = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);

	double cpu0 = cpu_seconds();
	rc = run(&o, &st, fd, &k, &elapsed);
	double cpu = cpu_seconds() - cpu0;
	if (rc < 0) {
		fprintf(stderr, "ntp-load: %s\n", strerror(-rc));
		goto out;
	}

	if (k.n_rtt)
		qsort(k.rtt_ms, k.n_rtt, sizeof *k.rtt_ms, cmp_double);
	double rate = elapsed > 0 ? (double)k.answered / elapsed : 0;
	double loss = k.sent ? 100.0 * (double)k.lost / (double)k.sent : 0;
	double p50 = percentile(k.rtt_ms, k.n_rtt, 0.5), p99 = percentile(k.rtt_ms, k.n_rtt, 0.99),
	       max = k.n_rtt ? k.rtt_ms[k.n_rtt - 1] : 0;
	const char *mode = o.plain ? "plain" : "nts";
	if (o.json) {
		printf("{\"tool\":\"ntp-load\",\"target\":\"%s\",\"ntp\":\"%s\",\"mode\":\"%s\","
		       "\"aead\":%u,\"window\":%u,\"sent\":%" PRIu64 ",\"answered\":%" PRIu64
		       ",\"lost\":%" PRIu64 ",\"strays\":%" PRIu64 ",\"loss_pct\":%.3f,"
		       "\"checked\":%" PRIu64 ",\"verified\":%" PRIu64 ",\"verify_failed\":%" PRIu64
		       ",\"naks\":%" PRIu64 ",\"elapsed_s\":%.3f,\"requests_per_s\":%.1f,"
		       "\"rtt_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},\"cpu_s\":%.3f}\n",
		       o.connect, ntp_str, mode, o.plain ? 0 : st.aead, o.window, k.sent,
		       k.answered, k.lost, k.strays, loss, k.checked, k.verified, k.verify_failed,
		       k.naks, elapsed, rate, p50, p99, max, cpu);
	} else {
		printf("ntp-load %s -> NTP %s (%s", o.connect, ntp_str, mode);
		if (!o.plain)
			printf(", AEAD %u, %zu cookies, %u placeholders", st.aead, st.n_cookies,
			       o.placeholders);
		printf("), window %u\n", o.window);
		printf("requests     sent %" PRIu64 "  answered %" PRIu64 "  lost %" PRIu64
		       " (%.3f%%)  strays %" PRIu64 "\n", k.sent, k.answered, k.lost, loss,
		       k.strays);
		if (!o.plain)
			printf("checked      %" PRIu64 "  verified %" PRIu64 "  failed %" PRIu64
			       "  NAK %" PRIu64 "\n", k.checked, k.verified, k.verify_failed,
			       k.naks);
		printf("rate         %.1f answered/s over %.2f s\n", rate, elapsed);
		printf("rtt ms       p50 %.3f  p99 %.3f  max %.3f\n", p50, p99, max);
		printf("generator    %.2f CPU s (%.0f%% of one core)\n", cpu,
		       elapsed > 0 ? 100 * cpu / elapsed : 0);
	}
	status = k.answered > 0 && k.verify_failed == 0 && k.naks == 0 ? 0 : 1;
out:
	if (fd >= 0)
		close(fd);
	aead_free(st.c2s);
	aead_free(st.s2c);
	gnutls_memset(st.cookies, 0, sizeof st.cookies);
	free(k.rtt_ms);
	return status;
}
