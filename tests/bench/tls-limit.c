/* tls-limit: the most NTS-KE sessions one core could serve, as far as TLS goes.
 *
 * An NTS-KE server must at least, per session, set up a GnuTLS server session, complete a full
 * TLS 1.3 handshake (ECDHE and one signature with its key) with ALPN ntske/1, and export the two
 * NTS keys (RFC 8915 §5.1: RFC 5705 exporter, label "EXPORTER-network-time-security"). This
 * program does exactly that with a given certificate chain and key, against a GnuTLS client in
 * the same thread, the two sessions passing bytes through memory queues: no sockets, no event
 * loop, no NTS-KE records, no session tickets, no client-certificate request. The server's share
 * is measured alone: the thread's CPU clock (CLOCK_THREAD_CPUTIME_ID) is read around every
 * server-side call, and the client's work in between is not counted. Both sides use the priority
 * string our own sessions use, so the handshake negotiated is the one ke-load gets from
 * ntp-daemon.
 *
 * The first WARMUP handshakes are not counted (lazy initialisation in GnuTLS and nettle). The run
 * stops after --count handshakes or --duration seconds, whichever comes first (default 5 s).
 * Every handshake's keys are exported on both sides and must agree. Exit status 0 when every
 * handshake succeeded, 1 otherwise, 2 on usage or setup errors. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_msg.h"
#include "tls.h"
#include "tls_creds.h"

#define WARMUP 16
/* A handshake is a handful of flights; more passes than this means the two sides are stuck. */
#define MAX_PASSES 64
/* More than any TLS 1.3 flight with a certificate chain; a queue growing past it is a bug. */
#define QUEUE_MAX (256 * 1024)

struct options {
	const char *cert;
	const char *key;
	uint64_t count;
	double duration;
	uint16_t aead;
	bool json;
};

/* Bytes from one side to the other. */
struct queue {
	uint8_t buf[QUEUE_MAX];
	size_t head, len;
};

/* One session's transport: it reads `in` and writes `out`. */
struct end {
	gnutls_session_t s;
	struct queue *in, *out;
};

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ssize_t push(gnutls_transport_ptr_t p, const void *data, size_t len)
{
	struct end *e = p;
	struct queue *q = e->out;
	if (q->head > 0) {
		memmove(q->buf, q->buf + q->head, q->len);
		q->head = 0;
	}
	if (len > sizeof q->buf - q->len) {
		gnutls_transport_set_errno(e->s, ENOBUFS);
		return -1;
	}
	memcpy(q->buf + q->len, data, len);
	q->len += len;
	return (ssize_t)len;
}

static ssize_t pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
	struct end *e = p;
	struct queue *q = e->in;
	if (q->len == 0) {
		gnutls_transport_set_errno(e->s, EAGAIN);
		return -1;
	}
	size_t n = len < q->len ? len : q->len;
	memcpy(data, q->buf + q->head, n);
	q->head += n;
	q->len -= n;
	if (q->len == 0)
		q->head = 0;
	return (ssize_t)n;
}

/* GnuTLS asks whether data is waiting; in memory it either is or will not come by waiting. */
static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
	struct end *e = p;
	(void)ms;
	return e->in->len > 0 ? 1 : 0;
}

struct ctx {
	const struct options *o;
	gnutls_certificate_credentials_t server_cred, client_cred;
	gnutls_priority_t prio;
	struct queue *c2s, *s2c;
	uint64_t server_ns; /* the server side's CPU time, summed call by call */
	char cipher[64], group[64], sign[64];
	char error[256];
};

/* Keeps the first failure's reason only: later ones usually follow from it. */
static void set_reason(struct ctx *c, const char *reason)
{
	if (!c->error[0])
		snprintf(c->error, sizeof c->error, "%s", reason);
}

static void set_error(struct ctx *c, const char *what, int g)
{
	if (!c->error[0])
		snprintf(c->error, sizeof c->error, "%s: %s", what, gnutls_strerror(g));
}

static int session_new(struct ctx *c, gnutls_session_t *s, struct end *e, bool server)
{
	static const gnutls_datum_t alpn = { (unsigned char *)TLS_ALPN, sizeof TLS_ALPN - 1 };
	int g = gnutls_init(s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
				       GNUTLS_NO_TICKETS);
	if (g < 0) {
		set_error(c, "gnutls_init", g);
		return -ENOMEM;
	}
	e->s = *s;
	if ((g = gnutls_priority_set(*s, c->prio)) < 0 ||
	    (g = gnutls_credentials_set(*s, GNUTLS_CRD_CERTIFICATE,
					server ? c->server_cred : c->client_cred)) < 0 ||
	    (g = gnutls_alpn_set_protocols(*s, &alpn, 1,
					   server ? GNUTLS_ALPN_MANDATORY : 0)) < 0) {
		set_error(c, "session setup", g);
		gnutls_deinit(*s);
		return -EINVAL;
	}
	gnutls_transport_set_ptr(*s, e);
	gnutls_transport_set_push_function(*s, push);
	gnutls_transport_set_pull_function(*s, pull);
	gnutls_transport_set_pull_timeout_function(*s, pull_timeout);
	return 0;
}

static int export_keys(gnutls_session_t s, uint16_t aead, size_t key_len, uint8_t *c2s,
		       uint8_t *s2c)
{
	/* RFC 8915 §5.1: protocol id (NTPv4), AEAD id, then 0 for C2S and 1 for S2C. */
	uint8_t context[5] = { KE_MSG_PROTOCOL_NTPV4 >> 8, KE_MSG_PROTOCOL_NTPV4 & 0xff,
			       (uint8_t)(aead >> 8), (uint8_t)aead, 0 };
	size_t label_len = sizeof TLS_EXPORTER_LABEL - 1;
	int g = gnutls_prf_rfc5705(s, label_len, TLS_EXPORTER_LABEL, sizeof context,
				   (const char *)context, key_len, (char *)c2s);
	if (g < 0)
		return g;
	context[4] = 1;
	return gnutls_prf_rfc5705(s, label_len, TLS_EXPORTER_LABEL, sizeof context,
				  (const char *)context, key_len, (char *)s2c);
}

static bool alpn_is_ntske(gnutls_session_t s)
{
	gnutls_datum_t p;
	return gnutls_alpn_get_selected_protocol(s, &p) == 0 && p.size == sizeof TLS_ALPN - 1 &&
	       memcmp(p.data, TLS_ALPN, p.size) == 0;
}

/* One handshake and key export. Every server-side call is inside the server clock. */
static int one_handshake(struct ctx *c, bool first)
{
	gnutls_session_t cs = NULL, ss = NULL;
	struct end ce = { .in = c->s2c, .out = c->c2s }, se = { .in = c->c2s, .out = c->s2c };
	uint8_t sk[2][KE_MSG_KEY_MAX], ck[2][KE_MSG_KEY_MAX];
	size_t kl = aead_key_len(c->o->aead);
	int rc = -EPROTO, g;
	uint64_t t;

	c->c2s->head = c->c2s->len = c->s2c->head = c->s2c->len = 0;
	if (session_new(c, &cs, &ce, false) < 0)
		return -EINVAL;
	t = thread_cpu_ns();
	g = session_new(c, &ss, &se, true);
	c->server_ns += thread_cpu_ns() - t;
	if (g < 0) {
		gnutls_deinit(cs);
		return -EINVAL;
	}

	bool client_done = false, server_done = false;
	for (unsigned pass = 0; !(client_done && server_done); pass++) {
		if (pass == MAX_PASSES) {
			set_reason(c, "handshake stuck: neither side makes progress");
			goto out;
		}
		if (!client_done) {
			g = gnutls_handshake(cs);
			if (g == 0)
				client_done = true;
			else if (gnutls_error_is_fatal(g)) {
				set_error(c, "client handshake", g);
				goto out;
			}
		}
		if (!server_done) {
			t = thread_cpu_ns();
			g = gnutls_handshake(ss);
			c->server_ns += thread_cpu_ns() - t;
			if (g == 0)
				server_done = true;
			else if (gnutls_error_is_fatal(g)) {
				set_error(c, "server handshake", g);
				goto out;
			}
		}
	}

	t = thread_cpu_ns();
	bool alpn_ok = alpn_is_ntske(ss);
	g = alpn_ok ? export_keys(ss, c->o->aead, kl, sk[0], sk[1]) : 0;
	c->server_ns += thread_cpu_ns() - t;
	if (!alpn_ok) {
		set_reason(c, "ALPN ntske/1 not negotiated");
		goto out;
	}
	if (g < 0 || (g = export_keys(cs, c->o->aead, kl, ck[0], ck[1])) < 0) {
		set_error(c, "key export", g);
		goto out;
	}
	if (memcmp(sk[0], ck[0], kl) != 0 || memcmp(sk[1], ck[1], kl) != 0) {
		set_reason(c, "exported keys differ between the two sides");
		goto out;
	}
	if (first) {
		snprintf(c->cipher, sizeof c->cipher, "%s",
			 gnutls_cipher_get_name(gnutls_cipher_get(ss)));
		snprintf(c->group, sizeof c->group, "%s",
			 gnutls_group_get_name(gnutls_group_get(ss)));
		snprintf(c->sign, sizeof c->sign, "%s",
			 gnutls_sign_get_name(gnutls_sign_algorithm_get(ss)));
	}
	rc = 0;
out:
	gnutls_memset(sk, 0, sizeof sk);
	gnutls_memset(ck, 0, sizeof ck);
	gnutls_deinit(cs);
	t = thread_cpu_ns();
	gnutls_deinit(ss);
	c->server_ns += thread_cpu_ns() - t;
	return rc;
}

static void usage(FILE *f)
{
	fputs("Usage: tls-limit --cert CHAIN.pem --key KEY.pem [OPTIONS]\n"
	      "  --cert FILE          PEM chain the server presents (end-entity first)\n"
	      "  --key FILE           its PEM private key\n"
	      "  --count N            handshakes to count (default: no limit)\n"
	      "  --duration S         stop after S seconds (default 5)\n"
	      "  --aead 15|17         AEAD whose key length the exporter produces (default 15)\n"
	      "  --json               print one JSON line instead of text\n"
	      "Server and client run in this one thread over memory queues; only the server\n"
	      "side's CPU time is measured.\n",
	      f);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum { O_CERT = 256, O_KEY, O_COUNT, O_DURATION, O_AEAD, O_JSON, O_HELP };
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, O_CERT },
		{ "key", required_argument, NULL, O_KEY },
		{ "count", required_argument, NULL, O_COUNT },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "aead", required_argument, NULL, O_AEAD },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int ch;

	*o = (struct options){ .duration = 5, .aead = 15 };
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case O_CERT: o->cert = optarg; break;
		case O_KEY: o->key = optarg; break;
		case O_COUNT: {
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (errno || *end || end == optarg || optarg[0] == '-' || v == 0)
				goto bad;
			o->count = v;
			break;
		}
		case O_DURATION:
			o->duration = strtod(optarg, &end);
			if (*end || end == optarg || !(o->duration > 0 && o->duration <= 86400))
				goto bad;
			break;
		case O_AEAD: {
			unsigned long v = strtoul(optarg, &end, 10);
			if (*end || end == optarg || v > 65535 || aead_key_len((uint16_t)v) == 0)
				goto bad;
			o->aead = (uint16_t)v;
			break;
		}
		case O_JSON: o->json = true; break;
		case O_HELP: usage(stdout); exit(0);
		default: goto bad;
		}
	}
	if (optind != argc || !o->cert || !o->key)
		goto bad;
	return 0;
bad:
	usage(stderr);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct options o;
	struct ctx c = { .o = &o };
	int g, status = 2;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	c.c2s = malloc(sizeof *c.c2s);
	c.s2c = malloc(sizeof *c.s2c);
	if (!c.c2s || !c.s2c) {
		fprintf(stderr, "tls-limit: out of memory\n");
		goto out;
	}
	if ((g = gnutls_certificate_allocate_credentials(&c.server_cred)) < 0 ||
	    (g = gnutls_certificate_allocate_credentials(&c.client_cred)) < 0) {
		fprintf(stderr, "tls-limit: credentials: %s\n", gnutls_strerror(g));
		goto out;
	}
	g = gnutls_certificate_set_x509_key_file2(c.server_cred, o.cert, o.key,
						  GNUTLS_X509_FMT_PEM, NULL, 0);
	if (g < 0) {
		fprintf(stderr, "tls-limit: %s / %s: %s\n", o.cert, o.key, gnutls_strerror(g));
		goto out;
	}
	g = gnutls_priority_init2(&c.prio, tls_creds_priority_string, NULL, 0);
	if (g < 0) {
		fprintf(stderr, "tls-limit: priority: %s\n", gnutls_strerror(g));
		goto out;
	}

	for (unsigned i = 0; i < WARMUP; i++) {
		if (one_handshake(&c, i == 0) < 0) {
			fprintf(stderr, "tls-limit: %s\n", c.error);
			goto out;
		}
	}
	c.server_ns = 0;
	uint64_t ok = 0, failed = 0, cpu0 = thread_cpu_ns();
	double t0 = mono_s(), elapsed = 0;
	while (o.count == 0 || ok + failed < o.count) {
		if (one_handshake(&c, false) == 0)
			ok++;
		else
			failed++;
		elapsed = mono_s() - t0;
		if (elapsed >= o.duration)
			break;
	}
	double server_s = (double)c.server_ns / 1e9;
	double client_s = (double)(thread_cpu_ns() - cpu0) / 1e9 - server_s;
	double per_cpu = server_s > 0 ? (double)ok / server_s : 0;
	double us_each = ok ? 1e6 * server_s / (double)ok : 0;

	if (o.json) {
		printf("{\"tool\":\"tls-limit\",\"cert\":\"%s\",\"aead\":%u,\"handshakes\":%" PRIu64
		       ",\"failed\":%" PRIu64 ",\"server_cpu_s\":%.4f,\"client_cpu_s\":%.4f,"
		       "\"handshakes_per_server_cpu_s\":%.1f,\"server_us_per_handshake\":%.1f,"
		       "\"elapsed_s\":%.3f,\"cipher\":\"%s\",\"group\":\"%s\","
		       "\"signature\":\"%s\"}\n",
		       o.cert, o.aead, ok, failed, server_s, client_s, per_cpu, us_each, elapsed,
		       c.cipher, c.group, c.sign);
	} else {
		printf("tls-limit %s (TLS 1.3 %s, group %s, signature %s), exporter keys for AEAD "
		       "%u\n", o.cert, c.cipher, c.group, c.sign, o.aead);
		printf("handshakes   ok %" PRIu64 "  failed %" PRIu64 " over %.2f s\n", ok, failed,
		       elapsed);
		printf("server       %.3f CPU s: %.1f handshakes per server CPU-s (%.1f us each)\n",
		       server_s, per_cpu, us_each);
		printf("client       %.3f CPU s (same thread, not counted)\n", client_s);
	}
	if (failed)
		fprintf(stderr, "tls-limit: first failure: %s\n", c.error);
	status = ok > 0 && failed == 0 ? 0 : 1;
out:
	if (c.prio)
		gnutls_priority_deinit(c.prio);
	if (c.server_cred)
		gnutls_certificate_free_credentials(c.server_cred);
	if (c.client_cred)
		gnutls_certificate_free_credentials(c.client_cred);
	free(c.c2s);
	free(c.s2c);
	return status;
}
