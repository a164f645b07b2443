/* ntp-load: an NTS-protected (or plain) NTPv4 load generator.
 *
 * With NTS it behaves like a real client towards the server (RFC 8915 §5.7): every request
 * carries a cookie used by no earlier request, and every cookie it uses came from a key exchange
 * or from the encrypted part of an earlier authenticated reply. Those cookies, the keys they are
 * tied to and the key exchanges that bring them are ntp-cookies.c's; this file is the load loop.
 * Before the run, key exchanges fill the pool with enough cookies for every window slot. Each
 * request takes the oldest unused cookie, and each authenticated reply gives back the fresh
 * cookies it carries. When a request is lost its cookie is gone, so the pool can run dry while
 * slots are free: those requests wait (they are counted here), and a refill key exchange runs
 * inside the send loop, without blocking it, to bring 8 more. Each request in flight holds a
 * reference to the keys of its cookie. NTP goes to the server and port the first key exchange
 * named (the KE server's address and port 123 when absent). With --plain it sends plain mode-3
 * packets to --connect instead.
 *
 * One thread keeps --window requests outstanding on one connected UDP socket, sending and
 * receiving in batches (sendmmsg/recvmmsg). Each request carries a random transmit timestamp
 * whose low 16 bits name its window slot, so a reply is matched to its request by the origin
 * timestamp the server echoes. A slot frees on its reply or after --timeout-ms (a loss). Every
 * NTS reply is opened with nts_ntp_verify_response (origin, UID, authenticator with the S2C key):
 * its cookies are inside the ciphertext, so a client cannot take them without authenticating the
 * reply. Plain replies are checked for mode 4 and a matching origin only.
 *
 * Runs stop by themselves after --count requests or --duration seconds, whichever comes first
 * (defaults: no count limit, 10 s). Exit status 0 when replies came and every NTS reply
 * verified, 1 otherwise, 2 on usage or setup errors. */
#include <errno.h>
#include <fcntl.h>
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

#include <gnutls/crypto.h>

#include "aead.h"
#include "ntp-cookies.h"
#include "ntp_packet.h"
#include "nts_ntp.h"
#include "tls.h"

#define BATCH 64
#define PKT_MAX 1280
#define MAX_WINDOW 65536

struct options {
	const char *connect;
	const char *ca;
	const char *name;
	const char *ntp; /* override of the negotiated NTP address */
	unsigned window;
	uint64_t count;
	double duration;
	unsigned timeout_ms;
	unsigned placeholders;
	uint16_t aead;
	bool plain;
	bool json;
};

struct slot {
	bool busy;
	uint64_t xmt;
	uint64_t sent_ns;
	struct ntp_cookies_keys *keys; /* a reference while the request is in flight */
	uint8_t uid[NTS_NTP_UID_LEN];
};

struct counters {
	uint64_t sent, answered, lost, strays, checked, verified, verify_failed, naks;
	uint64_t no_cookie; /* requests whose slot was free while the pool was empty */
	double *rtt_ms;
	size_t n_rtt, cap_rtt;
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
	      "  --plain              plain NTPv4 mode-3 requests, no extension field, no key\n"
	      "                       exchange\n"
	      "  --ntp IP:PORT        send NTP here instead of where the KE response says\n"
	      "  --aead 15|17         AEAD to ask for (default 15)\n"
	      "  --window W           requests outstanding at once (default 64)\n"
	      "  --count N            requests to send in total (default: no limit)\n"
	      "  --duration S         stop sending after S seconds (default 10)\n"
	      "  --timeout-ms MS      a request unanswered for this long is lost (default 1000)\n"
	      "  --placeholders P     cookie placeholders per request, 0..7 (default 0)\n"
	      "  --verify-every 1     deprecated, accepted for old scripts: every NTS reply is\n"
	      "                       authenticated, since its fresh cookies are inside the\n"
	      "                       ciphertext; any other value is refused\n"
	      "  --json               print one JSON line instead of text\n"
	      "Each NTS request uses a cookie never used before, taken from the key exchanges or\n"
	      "from earlier replies; when lost requests drain the cookies, a new key exchange\n"
	      "brings more (counted as refills).\n",
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

/* ---- NTP ---- */

/* Fills pkt with a request for slot i: a random transmit timestamp whose low 16 bits are i and,
 * with NTS, the cookie c sealed with c2s (both borrowed). */
static int build_request(const struct options *o, const struct nts_ntp_cookie *c,
			 struct aead *c2s, struct slot *s, unsigned i, uint8_t *pkt, size_t cap)
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
	struct nts_ntp_request_params p = {
		.hdr = hdr,
		.uid = { s->uid, NTS_NTP_UID_LEN },
		.cookie = { c->data, c->len },
		.placeholders = o->placeholders,
		.nonce = { rnd + 8 + NTS_NTP_UID_LEN, NTS_NTP_NONCE_LEN },
	};
	return nts_ntp_build_request(&p, c2s, pkt, cap);
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

struct window {
	struct slot *slots;
	unsigned *free_stack;
	unsigned n_free;
	/* Of the free slots, how many were counted as waiting for a cookie. A slot is counted when
	 * it is free while the pool is empty, and once only, however long it waits: the cookies
	 * that come back go to the other slots first, so in a pool kept dry by losses each lost
	 * request's slot counts once, not every request sent meanwhile. */
	unsigned n_waiting;
};

static void release(struct window *w, unsigned i)
{
	ntp_cookies_keys_unref(w->slots[i].keys);
	w->slots[i].keys = NULL;
	w->slots[i].busy = false;
	w->free_stack[w->n_free++] = i;
}

/* Matches one reply to its slot, authenticates it, keeps its cookies and frees the slot. */
static void handle_reply(const struct options *o, struct ntp_cookies *nc, struct window *w,
			 struct counters *k, const uint8_t *pkt, size_t len, uint64_t now)
{
	struct ntp_packet_header h;
	if (ntp_packet_parse_header(pkt, len, &h) < 0) {
		k->strays++;
		return;
	}
	unsigned i = (unsigned)(h.origin_ts & 0xffff);
	if (i >= o->window || !w->slots[i].busy || w->slots[i].xmt != h.origin_ts ||
	    h.mode != NTP_PACKET_MODE_SERVER) {
		k->strays++;
		return;
	}
	struct slot *s = &w->slots[i];
	k->answered++;
	record_rtt(k, (double)(now - s->sent_ns) / 1e6);
	if (!o->plain) {
		struct nts_ntp_response resp;
		k->checked++;
		int rc = nts_ntp_verify_response(pkt, len, s->xmt, s->uid, NTS_NTP_UID_LEN,
						 ntp_cookies_keys_s2c(s->keys), &resp);
		if (rc == NTS_NTP_RESPONSE_OK) {
			k->verified++;
			ntp_cookies_add(nc, s->keys, resp.cookies, resp.n_cookies);
		} else if (rc == NTS_NTP_RESPONSE_NAK) {
			k->naks++;
		} else {
			k->verify_failed++;
		}
	}
	release(w, i);
}

struct bufs {
	uint8_t out[BATCH][PKT_MAX], in[BATCH][PKT_MAX];
};

/* nc: NULL with --plain. */
static int run(const struct options *o, struct ntp_cookies *nc, int fd, struct counters *k,
	       double *elapsed)
{
	struct mmsghdr smsg[BATCH], rmsg[BATCH];
	struct iovec siov[BATCH], riov[BATCH];
	unsigned out_slot[BATCH];
	struct bufs *b = malloc(sizeof *b);
	struct window w = { .slots = calloc(o->window, sizeof *w.slots),
			    .free_stack = malloc(o->window * sizeof *w.free_stack) };
	int rc = 0;

	if (!b || !w.slots || !w.free_stack) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned i = o->window; i-- > 0;)
		w.free_stack[w.n_free++] = i;
	for (unsigned i = 0; i < BATCH; i++) {
		riov[i] = (struct iovec){ b->in[i], PKT_MAX };
		rmsg[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &riov[i], .msg_iovlen = 1 } };
	}

	uint64_t t0 = now_ns(), last_reply = t0, last_scan = t0;
	uint64_t stop_sending = t0 + (uint64_t)(o->duration * 1e9);
	uint64_t timeout = (uint64_t)o->timeout_ms * 1000000u;
	bool blocked = false;

	for (;;) {
		uint64_t now = now_ns();
		bool sending = now < stop_sending && (o->count == 0 || k->sent < o->count);
		if (!sending && w.n_free == o->window)
			break;
		/* Past the send phase, wait at most one timeout for the last replies. */
		if (!sending && now > stop_sending + timeout)
			break;

		/* The n-th request of the batch takes the n-th oldest unused cookie; only those
		 * actually sent leave the pool. */
		unsigned n = 0;
		while (sending && !blocked && w.n_free > 0 && n < BATCH &&
		       (o->plain || n < ntp_cookies_count(nc)) &&
		       (o->count == 0 || k->sent + n < o->count)) {
			unsigned i = w.free_stack[--w.n_free];
			const struct nts_ntp_cookie *c = NULL;
			struct aead *c2s = NULL;
			if (!o->plain)
				c = ntp_cookies_peek(nc, n, &c2s);
			int len = build_request(o, c, c2s, &w.slots[i], i, b->out[n], PKT_MAX);
			if (len < 0) {
				w.free_stack[w.n_free++] = i;
				rc = len;
				goto out;
			}
			siov[n] = (struct iovec){ b->out[n], (size_t)len };
			smsg[n] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &siov[n],
								 .msg_iovlen = 1 } };
			out_slot[n++] = i;
		}
		if (n > 0) {
			int sent = sendmmsg(fd, smsg, n, MSG_DONTWAIT);
			if (sent < 0) {
				if (errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED &&
				    errno != ENOBUFS) {
					for (unsigned j = n; j-- > 0;)
						w.free_stack[w.n_free++] = out_slot[j];
					rc = -errno;
					goto out;
				}
				sent = 0;
			}
			uint64_t t = now_ns();
			for (unsigned j = 0; j < (unsigned)sent; j++) {
				struct slot *s = &w.slots[out_slot[j]];
				s->busy = true;
				s->sent_ns = t;
				/* The cookie is spent; its keys' reference moves to the slot. */
				if (!o->plain)
					s->keys = ntp_cookies_take(nc);
			}
			/* Unsent requests give their slots back, cookies unspent; retry once
			 * writable. */
			for (unsigned j = n; j-- > (unsigned)sent;)
				w.free_stack[w.n_free++] = out_slot[j];
			if (w.n_waiting > w.n_free)
				w.n_waiting = w.n_free;
			k->sent += (uint64_t)sent;
			blocked = (unsigned)sent < n;
		}

		now = now_ns();
		sending = now < stop_sending && (o->count == 0 || k->sent < o->count);
		if (!o->plain && sending && w.n_free > 0 && ntp_cookies_count(nc) == 0) {
			/* Lost requests took their cookies with them: the free slots wait, and
			 * with --count only the requests still to be sent are counted. */
			uint64_t room = o->count ? o->count - k->sent : UINT64_MAX;
			uint64_t fresh = w.n_free - w.n_waiting;
			k->no_cookie += fresh < room ? fresh : room;
			w.n_waiting = w.n_free;
			ntp_cookies_refill(nc);
		}

		bool can_send = sending && w.n_free > 0 && !blocked &&
				(o->plain || ntp_cookies_count(nc) > 0);
		struct pollfd pfd[2] = {
			{ .fd = fd, .events = POLLIN | (blocked ? POLLOUT : 0) },
			{ .fd = -1 },
		};
		if (!o->plain)
			ntp_cookies_pollfd(nc, &pfd[1]);
		int pr = poll(pfd, 2, can_send ? 0 : 5);
		if (pr < 0 && errno != EINTR) {
			rc = -errno;
			goto out;
		}
		if (pr > 0 && (pfd[0].revents & POLLOUT))
			blocked = false;
		for (;;) {
			int got = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
			if (got <= 0)
				break;
			uint64_t t = now_ns();
			last_reply = t;
			for (int j = 0; j < got; j++)
				handle_reply(o, nc, &w, k, b->in[j], rmsg[j].msg_len, t);
			if (got < BATCH)
				break;
		}
		if (!o->plain)
			ntp_cookies_step(nc, pr > 0 ? pfd[1].revents : 0);

		now = now_ns();
		if (now - last_scan > 10000000u) {
			last_scan = now;
			for (unsigned i = 0; i < o->window; i++) {
				if (w.slots[i].busy && now - w.slots[i].sent_ns > timeout) {
					release(&w, i);
					k->lost++;
				}
			}
		}
	}
	for (unsigned i = 0; i < o->window; i++)
		if (w.slots[i].busy)
			k->lost++;
	*elapsed = (double)(last_reply - t0) / 1e9;
out:
	if (w.slots)
		for (unsigned i = 0; i < o->window; i++)
			ntp_cookies_keys_unref(w.slots[i].keys);
	free(w.slots);
	free(w.free_stack);
	free(b);
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

	*o = (struct options){ .window = 64, .duration = 10, .timeout_ms = 1000, .aead = 15 };
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
			/* Skipping authentication would mean skipping the cookies too. */
			if (parse_uint(optarg, UINT32_MAX, &v) < 0 || v != 1) {
				fprintf(stderr, "ntp-load: --verify-every %s: no longer supported: "
					"every NTS reply is authenticated, because a client must "
					"decrypt it to take its fresh cookies\n", optarg);
				return -EINVAL;
			}
			fprintf(stderr, "ntp-load: --verify-every is deprecated "
				"(every NTS reply is authenticated)\n");
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

/* c: all zero with --plain. */
static void print_results(const struct options *o, const struct ntp_cookies_stats *c,
			  const struct counters *k, const char *ntp_str, double elapsed,
			  double cpu)
{
	double rate = elapsed > 0 ? (double)k->answered / elapsed : 0;
	double loss = k->sent ? 100.0 * (double)k->lost / (double)k->sent : 0;
	double p50 = percentile(k->rtt_ms, k->n_rtt, 0.5),
	       p99 = percentile(k->rtt_ms, k->n_rtt, 0.99),
	       max = k->n_rtt ? k->rtt_ms[k->n_rtt - 1] : 0;
	const char *mode = o->plain ? "plain" : "nts";

	if (o->json) {
		printf("{\"tool\":\"ntp-load\",\"target\":\"%s\",\"ntp\":\"%s\",\"mode\":\"%s\","
		       "\"aead\":%u,\"window\":%u,\"sent\":%" PRIu64 ",\"answered\":%" PRIu64
		       ",\"lost\":%" PRIu64 ",\"strays\":%" PRIu64 ",\"loss_pct\":%.3f,"
		       "\"checked\":%" PRIu64 ",\"verified\":%" PRIu64 ",\"verify_failed\":%" PRIu64
		       ",\"naks\":%" PRIu64 ",\"key_exchanges\":%" PRIu64 ",\"ke_initial\":%" PRIu64
		       ",\"ke_refills\":%" PRIu64 ",\"ke_failed\":%" PRIu64
		       ",\"no_cookie\":%" PRIu64
		       ",\"cookies\":{\"from_ke\":%" PRIu64 ",\"from_replies\":%" PRIu64
		       ",\"used\":%" PRIu64 ",\"dropped\":%" PRIu64 ",\"left\":%zu},"
		       "\"elapsed_s\":%.3f,\"requests_per_s\":%.1f,"
		       "\"rtt_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},\"cpu_s\":%.3f}\n",
		       o->connect, ntp_str, mode, o->plain ? 0 : o->aead, o->window, k->sent,
		       k->answered, k->lost, k->strays, loss, k->checked, k->verified,
		       k->verify_failed, k->naks, c->ke_initial + c->ke_refills, c->ke_initial,
		       c->ke_refills, c->ke_failed, k->no_cookie, c->from_ke, c->from_replies,
		       c->used, c->dropped, c->left, elapsed, rate, p50, p99, max, cpu);
		return;
	}
	printf("ntp-load %s -> NTP %s (%s", o->connect, ntp_str, mode);
	if (!o->plain)
		printf(", AEAD %u, %u placeholders", o->aead, o->placeholders);
	printf("), window %u\n", o->window);
	printf("requests     sent %" PRIu64 "  answered %" PRIu64 "  lost %" PRIu64
	       " (%.3f%%)  strays %" PRIu64 "\n", k->sent, k->answered, k->lost, loss, k->strays);
	if (!o->plain) {
		printf("checked      %" PRIu64 "  verified %" PRIu64 "  failed %" PRIu64
		       "  NAK %" PRIu64 "\n", k->checked, k->verified, k->verify_failed, k->naks);
		printf("key exch.    initial %" PRIu64 "  refills %" PRIu64 "  failed %" PRIu64
		       "  requests that waited for a cookie %" PRIu64 "\n", c->ke_initial,
		       c->ke_refills, c->ke_failed, k->no_cookie);
		printf("cookies      from KE %" PRIu64 "  from replies %" PRIu64 "  used %" PRIu64
		       "  dropped %" PRIu64 "  left %zu\n", c->from_ke, c->from_replies, c->used,
		       c->dropped, c->left);
	}
	printf("rate         %.1f answered/s over %.2f s\n", rate, elapsed);
	printf("rtt ms       p50 %.3f  p99 %.3f  max %.3f\n", p50, p99, max);
	printf("generator    %.2f CPU s (%.0f%% of one core)\n", cpu,
	       elapsed > 0 ? 100 * cpu / elapsed : 0);
}

int main(int argc, char **argv)
{
	struct options o;
	struct tls_creds *creds = NULL;
	struct ntp_cookies *nc = NULL;
	struct ntp_cookies_stats cs = { 0 };
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
		char err[TLS_CREDS_ERR_MAX];
		struct tls_client_options copt = { .no_system_trust = true, .ca_file = o.ca };
		rc = tls_creds_new_client(&creds, &copt, err, sizeof err);
		if (rc < 0) {
			fprintf(stderr, "ntp-load: %s\n", err);
			goto out;
		}
		struct ntp_cookies_params cp = {
			.aead = o.aead,
			.creds = creds,
			.ke_addr = (const struct sockaddr *)&ke_addr,
			.ke_len = ke_len,
			.ke_name = o.name ? o.name : ke_host,
			.window = o.window,
		};
		if (ntp_cookies_new(&nc, &cp) < 0) {
			fprintf(stderr, "ntp-load: out of memory\n");
			goto out;
		}
		/* A cookie for every request that can be outstanding at once. */
		size_t want = o.window;
		if (o.count && o.count < want)
			want = (size_t)o.count;
		rc = ntp_cookies_fill(nc, want);
		if (rc < 0) {
			const char *why = ntp_cookies_error(nc);
			fprintf(stderr, "ntp-load: key exchange failed: %s\n",
				why ? why : strerror(-rc));
			goto out;
		}
		uint16_t ntp_port;
		const char *server = ntp_cookies_server(nc, &ntp_port);
		snprintf(port, sizeof port, "%u", ntp_port);
		if (!o.ntp &&
		    resolve(server[0] ? server : ke_host, port, &ntp_addr, &ntp_len) < 0) {
			fprintf(stderr, "ntp-load: cannot resolve NTP server %s\n", server);
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
	rc = run(&o, nc, fd, &k, &elapsed);
	double cpu = cpu_seconds() - cpu0;
	if (rc < 0) {
		fprintf(stderr, "ntp-load: %s\n", strerror(-rc));
		goto out;
	}

	if (k.n_rtt)
		qsort(k.rtt_ms, k.n_rtt, sizeof *k.rtt_ms, cmp_double);
	if (nc)
		ntp_cookies_get_stats(nc, &cs);
	print_results(&o, &cs, &k, ntp_str, elapsed, cpu);
	if (nc && ntp_cookies_error(nc))
		fprintf(stderr, "ntp-load: first key exchange failure: %s\n",
			ntp_cookies_error(nc));
	status = k.answered > 0 && k.verify_failed == 0 && k.naks == 0 ? 0 : 1;
out:
	if (fd >= 0)
		close(fd);
	ntp_cookies_free(nc);
	tls_creds_unref(creds);
	free(k.rtt_ms);
	return status;
}
