/* ke-load: an NTS-KE load generator.
 *
 * Each session is what a real NTS client does once per server: TCP connect, TLS 1.3 handshake
 * with ALPN ntske/1 (the server certificate verified against --ca and --name), one request, the
 * whole response read and checked to carry 8 cookies, then close_notify and close. With --cert
 * and --key the generator acts as a pool and sends Fixed Key requests (PROTOCOL.md §3.3) with
 * fresh random keys instead; with --keep-alive too, it asks for Keep Alive and, when the server
 * honours it, sends the next requests on the same connection (each request then counts as one
 * session).
 *
 * Sessions are driven by our sans-I/O TLS sessions over libuv TCP handles: one loop per thread
 * keeps its share of --concurrency connections busy. The client side of a handshake (ECDHE plus
 * two signature verifications) costs more CPU than the server side, so --threads lets one
 * generator use several cores when the server has more than one.
 *
 * Runs stop by themselves: after --sessions sessions were started, or --duration seconds passed,
 * whichever comes first (defaults: 1000 sessions, at most 60 s). Exit status 0 when every
 * session succeeded, 1 when any failed or none completed, 2 on usage errors. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <uv.h>

#include "ke_msg.h"
#include "tls.h"

#define MAX_THREADS 64
#define MAX_CONCURRENCY 65536
#define REQUEST_MAX 512

struct options {
	struct sockaddr_storage addr;
	const char *connect;
	const char *ca;
	const char *name;
	const char *cert;
	const char *key;
	unsigned concurrency;
	unsigned threads;
	uint64_t sessions;
	double duration;
	unsigned timeout_ms;
	uint16_t aead;
	enum ke_numbering numbering;
	bool keep_alive;
	bool json;
};

struct worker;

enum conn_phase { PHASE_IDLE, PHASE_CONNECTING, PHASE_TLS, PHASE_CLOSING };

struct conn {
	struct worker *w;
	uv_tcp_t tcp;
	uv_connect_t connect_req;
	struct tls_session *tls;
	enum conn_phase phase;
	bool request_sent;
	bool open;		/* tcp handle initialised and not yet closed */
	unsigned pending_writes;
	uint64_t started_ns;	/* start of the current session (connect, or request on keep-alive) */
	uint8_t resp[KE_MSG_RESPONSE_MAX];
	size_t resp_len;
};

struct write_req {
	uv_write_t req;
	struct conn *c;
	uint8_t data[];
};

struct worker {
	const struct options *opt;
	pthread_t thread;
	uv_loop_t loop;
	uv_timer_t ticker;
	struct tls_creds *creds;
	struct conn *conns;
	unsigned n_conns;
	uint64_t ok;
	uint64_t failed;
	uint64_t timeouts;
	double *lat_ms; /* one per successful session */
	size_t n_lat, cap_lat;
	char first_error[160];
	int setup_error;
};

/* Shared by all threads: sessions handed out so far, and the time after which none start. */
static atomic_uint_fast64_t sessions_started;
static uint64_t deadline_ns;

static void usage(FILE *f)
{
	fputs("Usage: ke-load --connect IP:PORT --ca FILE [OPTIONS]\n"
	      "  --connect IP:PORT    NTS-KE server ([v6]:port for IPv6)\n"
	      "  --ca FILE            trust anchor for the server certificate (PEM)\n"
	      "  --name NAME          name to verify the certificate against (default: the IP)\n"
	      "  --concurrency N      connections kept busy at once (default 16)\n"
	      "  --threads T          event loops, one per thread (default 1)\n"
	      "  --sessions M         sessions to start in total (default 1000; 0 = no limit)\n"
	      "  --duration S         stop starting sessions after S seconds (default 60)\n"
	      "  --timeout-ms MS      a session taking longer fails (default 5000)\n"
	      "  --aead 15|17         AEAD to ask for (default 15)\n"
	      "  --cert FILE --key FILE  act as a pool: Fixed Key requests with this client cert\n"
	      "  --keep-alive         with --cert: ask for Keep Alive and reuse connections\n"
	      "  --numbering iana|ntpd-rs-v1  pool record numbering (default iana)\n"
	      "  --json               print one JSON line instead of text\n",
	      f);
}

static uint64_t now_ns(void)
{
	return uv_hrtime();
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

/* "IP:PORT" or "[IPv6]:PORT". */
static int parse_addr(const char *s, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon;
	size_t hl;
	uint64_t port;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - s - 1);
		if (hl >= sizeof host)
			return -EINVAL;
		memcpy(host, s + 1, hl);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - s);
		if (hl >= sizeof host)
			return -EINVAL;
		memcpy(host, s, hl);
	}
	host[hl] = '\0';
	if (parse_uint(colon + 1, 65535, &port) < 0 || port == 0)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0)
		return 0;
	if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0)
		return 0;
	return -EINVAL;
}

static void note_error(struct worker *w, const char *what, const char *detail)
{
	if (!w->first_error[0])
		snprintf(w->first_error, sizeof w->first_error, "%s: %s", what, detail);
}

static void conn_start(struct conn *c);

/* Whether another session may start; claims it from the shared budget when so. */
static bool claim_session(const struct options *opt)
{
	if (now_ns() >= deadline_ns)
		return false;
	uint64_t n = atomic_fetch_add(&sessions_started, 1);
	return opt->sessions == 0 || n < opt->sessions;
}

static void on_close(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->open = false;
	c->phase = PHASE_IDLE;
	if (claim_session(c->w->opt))
		conn_start(c);
}

static void conn_close(struct conn *c)
{
	tls_free(c->tls);
	c->tls = NULL;
	c->phase = PHASE_CLOSING;
	if (c->open && !uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void session_failed(struct conn *c, const char *what, const char *detail)
{
	c->w->failed++;
	note_error(c->w, what, detail);
	conn_close(c);
}

static void session_ok(struct conn *c)
{
	struct worker *w = c->w;
	if (w->n_lat == w->cap_lat) {
		size_t cap = w->cap_lat ? 2 * w->cap_lat : 4096;
		double *p = realloc(w->lat_ms, cap * sizeof *p);
		if (!p) {
			/* Losing a latency sample is better than losing the run. */
			w->ok++;
			return;
		}
		w->lat_ms = p;
		w->cap_lat = cap;
	}
	w->lat_ms[w->n_lat++] = (double)(now_ns() - c->started_ns) / 1e6;
	w->ok++;
}

static void on_write(uv_write_t *req, int status)
{
	struct write_req *wr = (struct write_req *)req;
	struct conn *c = wr->c;
	free(wr);
	c->pending_writes--;
	if (c->phase == PHASE_TLS && status < 0) {
		session_failed(c, "write", uv_strerror(status));
		return;
	}
	/* close_notify is on its way: the connection can go. */
	if (c->phase == PHASE_CLOSING && c->pending_writes == 0 && c->open &&
	    !uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* Sends whatever ciphertext the session has queued. The bytes are copied because libuv needs
 * them until the write callback while the session's queue moves on. */
static int flush(struct conn *c)
{
	const uint8_t *p;
	size_t n;
	tls_output(c->tls, &p, &n);
	if (n == 0)
		return 0;
	struct write_req *wr = malloc(sizeof *wr + n);
	if (!wr)
		return -ENOMEM;
	memcpy(wr->data, p, n);
	wr->c = c;
	tls_output_consume(c->tls, n);
	uv_buf_t buf = uv_buf_init((char *)wr->data, (unsigned)n);
	int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
	if (rc < 0) {
		free(wr);
		return rc;
	}
	c->pending_writes++;
	return 0;
}

static int send_request(struct conn *c)
{
	const struct options *opt = c->w->opt;
	uint8_t msg[REQUEST_MAX];
	int len;

	if (opt->cert) {
		uint8_t keys[2 * KE_MSG_KEY_MAX];
		size_t kl = ke_msg_aead_key_len(opt->aead);
		if (gnutls_rnd(GNUTLS_RND_NONCE, keys, 2 * kl) < 0)
			return -EIO;
		len = ke_msg_build_fixed_key_request(msg, sizeof msg, opt->numbering, NULL, keys,
						     keys + kl, kl, KE_MSG_PROTOCOL_NTPV4,
						     opt->aead, opt->keep_alive);
		gnutls_memset(keys, 0, sizeof keys);
	} else {
		static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
		len = ke_msg_build_request(msg, sizeof msg, opt->numbering, protocols, 1,
					   &opt->aead, 1, NULL, 0);
	}
	if (len < 0)
		return len;
	int rc = tls_write(c->tls, msg, (size_t)len);
	gnutls_memset(msg, 0, sizeof msg);
	if (rc < 0)
		return rc;
	c->request_sent = true;
	c->resp_len = 0;
	return flush(c);
}

/* A complete response arrived: check it, then either reuse the connection or close it. */
static void handle_response(struct conn *c, size_t len)
{
	const struct options *opt = c->w->opt;
	struct ke_msg_response resp;
	enum ke_msg_request_kind kind = opt->cert ? KE_MSG_REQUEST_FIXED_KEY
						  : KE_MSG_REQUEST_PLAIN;
	int rc = ke_msg_parse_response(c->resp, len, opt->numbering, kind, &resp);
	char detail[64];

	if (rc == -EREMOTEIO) {
		snprintf(detail, sizeof detail, "server sent Error %u", resp.error);
		session_failed(c, "response", detail);
		return;
	}
	if (rc < 0) {
		session_failed(c, "response", strerror(-rc));
		return;
	}
	if (!resp.has_aead) {
		snprintf(detail, sizeof detail, "server does not offer AEAD %u", opt->aead);
		session_failed(c, "response", detail);
		return;
	}
	if (resp.aead != opt->aead || resp.n_cookies != KE_MSG_MAX_COOKIES) {
		snprintf(detail, sizeof detail, "AEAD %u, %zu cookies", resp.aead, resp.n_cookies);
		session_failed(c, "response", detail);
		return;
	}
	session_ok(c);

	if (opt->keep_alive && resp.keep_alive && len == c->resp_len && claim_session(opt)) {
		c->started_ns = now_ns();
		rc = send_request(c);
		if (rc < 0)
			session_failed(c, "request", strerror(-rc));
		return;
	}
	if (tls_close(c->tls) < 0 || flush(c) < 0) {
		conn_close(c);
		return;
	}
	tls_free(c->tls);
	c->tls = NULL;
	c->phase = PHASE_CLOSING;
	if (c->pending_writes == 0)
		conn_close(c);
}

/* Steps the handshake, sends the request once established, and collects the response. */
static void drive(struct conn *c)
{
	int st = tls_step(c->tls);
	if (st < 0) {
		session_failed(c, "tls", tls_reason(c->tls));
		return;
	}
	if (flush(c) < 0) {
		session_failed(c, "write", "out of memory");
		return;
	}
	if (st != TLS_ESTABLISHED)
		return;
	if (!c->request_sent) {
		int rc = send_request(c);
		if (rc < 0)
			session_failed(c, "request", strerror(-rc));
		return;
	}
	for (;;) {
		if (c->resp_len == sizeof c->resp) {
			session_failed(c, "response", "too long");
			return;
		}
		ssize_t n = tls_read(c->tls, c->resp + c->resp_len, sizeof c->resp - c->resp_len);
		if (n == -EAGAIN)
			return;
		if (n == 0) {
			session_failed(c, "response", "closed before the end");
			return;
		}
		if (n < 0) {
			session_failed(c, "tls", tls_reason(c->tls));
			return;
		}
		c->resp_len += (size_t)n;
		int len = ke_msg_frame(c->resp, c->resp_len, KE_MSG_RESPONSE_MAX);
		if (len < 0) {
			session_failed(c, "response", strerror(-len));
			return;
		}
		if (len > 0) {
			handle_response(c, (size_t)len);
			return;
		}
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static _Thread_local char rbuf[64 * 1024];
	buf->base = rbuf;
	buf->len = sizeof rbuf;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (c->phase != PHASE_TLS || n == 0)
		return;
	if (n < 0) {
		session_failed(c, "read", n == UV_EOF ? "connection closed" : uv_strerror((int)n));
		return;
	}
	int rc = tls_feed(c->tls, buf->base, (size_t)n);
	if (rc < 0) {
		session_failed(c, "tls", strerror(-rc));
		return;
	}
	drive(c);
}

static void on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	if (c->phase != PHASE_CONNECTING)
		return;
	if (status < 0) {
		session_failed(c, "connect", uv_strerror(status));
		return;
	}
	int rc = tls_session_new_client(&c->tls, c->w->creds, c->w->opt->name);
	if (rc < 0) {
		session_failed(c, "tls session", strerror(-rc));
		return;
	}
	c->phase = PHASE_TLS;
	rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
	if (rc < 0) {
		session_failed(c, "read", uv_strerror(rc));
		return;
	}
	drive(c);
}

static void conn_start(struct conn *c)
{
	c->request_sent = false;
	c->resp_len = 0;
	c->pending_writes = 0;
	c->started_ns = now_ns();
	int rc = uv_tcp_init(&c->w->loop, &c->tcp);
	if (rc < 0) {
		c->w->failed++;
		note_error(c->w, "socket", uv_strerror(rc));
		return;
	}
	c->open = true;
	c->tcp.data = c;
	c->connect_req.data = c;
	c->phase = PHASE_CONNECTING;
	uv_tcp_nodelay(&c->tcp, 1);
	rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&c->w->opt->addr,
			    on_connect);
	if (rc < 0)
		session_failed(c, "connect", uv_strerror(rc));
}

/* Fails sessions past their timeout; stops the ticker once every connection is idle. */
static void on_tick(uv_timer_t *t)
{
	struct worker *w = t->data;
	uint64_t now = now_ns(), limit = (uint64_t)w->opt->timeout_ms * 1000000u;
	bool busy = false;
	for (unsigned i = 0; i < w->n_conns; i++) {
		struct conn *c = &w->conns[i];
		if (c->phase == PHASE_CONNECTING || c->phase == PHASE_TLS) {
			if (now - c->started_ns > limit) {
				w->timeouts++;
				session_failed(c, "session", "timed out");
			}
		}
		if (c->open)
			busy = true;
	}
	if (!busy)
		uv_close((uv_handle_t *)t, NULL);
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	for (unsigned i = 0; i < w->n_conns; i++) {
		w->conns[i].w = w;
		if (claim_session(w->opt))
			conn_start(&w->conns[i]);
	}
	uv_timer_start(&w->ticker, on_tick, 10, 10);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	return NULL;
}

static int worker_init(struct worker *w, const struct options *opt, unsigned n_conns)
{
	char err[TLS_CREDS_ERR_MAX];
	w->opt = opt;
	w->n_conns = n_conns;
	w->conns = calloc(n_conns, sizeof *w->conns);
	if (!w->conns)
		return -ENOMEM;
	struct tls_client_options copt = { .no_system_trust = true, .ca_file = opt->ca,
					   .cert_file = opt->cert, .key_file = opt->key };
	int rc = tls_creds_new_client(&w->creds, &copt, err, sizeof err);
	if (rc < 0) {
		fprintf(stderr, "ke-load: %s\n", err);
		return rc;
	}
	rc = uv_loop_init(&w->loop);
	if (rc < 0)
		return rc;
	uv_timer_init(&w->loop, &w->ticker);
	w->ticker.data = w;
	return 0;
}

static void worker_deinit(struct worker *w)
{
	uv_loop_close(&w->loop);
	tls_creds_unref(w->creds);
	free(w->conns);
	free(w->lat_ms);
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
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum { O_CONNECT = 256, O_CA, O_NAME, O_CONC, O_THREADS, O_SESSIONS, O_DURATION,
	       O_TIMEOUT, O_AEAD, O_CERT, O_KEY, O_KEEP, O_NUMBERING, O_JSON, O_HELP };
	static const struct option longopts[] = {
		{ "connect", required_argument, NULL, O_CONNECT },
		{ "ca", required_argument, NULL, O_CA },
		{ "name", required_argument, NULL, O_NAME },
		{ "concurrency", required_argument, NULL, O_CONC },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "sessions", required_argument, NULL, O_SESSIONS },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "aead", required_argument, NULL, O_AEAD },
		{ "cert", required_argument, NULL, O_CERT },
		{ "key", required_argument, NULL, O_KEY },
		{ "keep-alive", no_argument, NULL, O_KEEP },
		{ "numbering", required_argument, NULL, O_NUMBERING },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int ch;
	bool have_sessions = false, have_duration = false;

	*o = (struct options){ .concurrency = 16, .threads = 1, .sessions = 1000,
			       .duration = 60, .timeout_ms = 5000, .aead = 15,
			       .numbering = KE_NUMBERING_IANA };
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case O_CONNECT:
			o->connect = optarg;
			if (parse_addr(optarg, &o->addr) < 0)
				goto bad;
			break;
		case O_CA: o->ca = optarg; break;
		case O_NAME: o->name = optarg; break;
		case O_CONC:
			if (parse_uint(optarg, MAX_CONCURRENCY, &v) < 0 || v == 0)
				goto bad;
			o->concurrency = (unsigned)v;
			break;
		case O_THREADS:
			if (parse_uint(optarg, MAX_THREADS, &v) < 0 || v == 0)
				goto bad;
			o->threads = (unsigned)v;
			break;
		case O_SESSIONS:
			if (parse_uint(optarg, UINT64_MAX / 2, &v) < 0)
				goto bad;
			o->sessions = v;
			have_sessions = true;
			break;
		case O_DURATION: {
			char *end;
			o->duration = strtod(optarg, &end);
			if (*end || end == optarg || !(o->duration > 0 && o->duration <= 86400))
				goto bad;
			have_duration = true;
			break;
		}
		case O_TIMEOUT:
			if (parse_uint(optarg, 600000, &v) < 0 || v == 0)
				goto bad;
			o->timeout_ms = (unsigned)v;
			break;
		case O_AEAD:
			if (parse_uint(optarg, 65535, &v) < 0 || ke_msg_aead_key_len((uint16_t)v) == 0)
				goto bad;
			o->aead = (uint16_t)v;
			break;
		case O_CERT: o->cert = optarg; break;
		case O_KEY: o->key = optarg; break;
		case O_KEEP: o->keep_alive = true; break;
		case O_NUMBERING:
			if (strcmp(optarg, "iana") == 0)
				o->numbering = KE_NUMBERING_IANA;
			else if (strcmp(optarg, "ntpd-rs-v1") == 0)
				o->numbering = KE_NUMBERING_NTPDRS_V1;
			else
				goto bad;
			break;
		case O_JSON: o->json = true; break;
		case O_HELP: usage(stdout); exit(0);
		default: goto bad;
		}
	}
	/* --duration alone means "for that long": no session count limit. */
	if (have_duration && !have_sessions)
		o->sessions = 0;
	if (optind != argc || !o->connect || !o->ca || !o->cert != !o->key ||
	    (o->keep_alive && !o->cert) || o->threads > o->concurrency)
		goto bad;
	return 0;
bad:
	usage(stderr);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct options opt;
	static struct worker workers[MAX_THREADS];
	char ipbuf[INET6_ADDRSTRLEN];
	int rc;

	if (parse_options(argc, argv, &opt) < 0)
		return 2;
	if (!opt.name) {
		const struct sockaddr *sa = (const struct sockaddr *)&opt.addr;
		if (sa->sa_family == AF_INET)
			uv_ip4_name((const struct sockaddr_in *)sa, ipbuf, sizeof ipbuf);
		else
			uv_ip6_name((const struct sockaddr_in6 *)sa, ipbuf, sizeof ipbuf);
		opt.name = ipbuf;
	}

	for (unsigned t = 0; t < opt.threads; t++) {
		unsigned share = opt.concurrency / opt.threads +
				 (t < opt.concurrency % opt.threads ? 1 : 0);
		rc = worker_init(&workers[t], &opt, share);
		if (rc < 0) {
			fprintf(stderr, "ke-load: setup failed: %s\n", strerror(-rc));
			return 2;
		}
	}

	uint64_t t0 = now_ns();
	deadline_ns = t0 + (uint64_t)(opt.duration * 1e9);
	for (unsigned t = 0; t < opt.threads; t++) {
		rc = pthread_create(&workers[t].thread, NULL, worker_run, &workers[t]);
		if (rc != 0) {
			fprintf(stderr, "ke-load: thread: %s\n", strerror(rc));
			return 2;
		}
	}
	for (unsigned t = 0; t < opt.threads; t++)
		pthread_join(workers[t].thread, NULL);
	double elapsed = (double)(now_ns() - t0) / 1e9;
	double cpu = cpu_seconds();

	uint64_t ok = 0, failed = 0, timeouts = 0;
	size_t n_lat = 0;
	const char *first_error = "";
	for (unsigned t = 0; t < opt.threads; t++) {
		ok += workers[t].ok;
		failed += workers[t].failed;
		timeouts += workers[t].timeouts;
		n_lat += workers[t].n_lat;
		if (!first_error[0])
			first_error = workers[t].first_error;
	}
	double *lat = malloc((n_lat ? n_lat : 1) * sizeof *lat);
	if (!lat) {
		fputs("ke-load: out of memory\n", stderr);
		return 2;
	}
	size_t k = 0;
	for (unsigned t = 0; t < opt.threads; t++) {
		memcpy(lat + k, workers[t].lat_ms, workers[t].n_lat * sizeof *lat);
		k += workers[t].n_lat;
	}
	qsort(lat, n_lat, sizeof *lat, cmp_double);
	double rate = elapsed > 0 ? (double)ok / elapsed : 0;
	double p50 = percentile(lat, n_lat, 0.50), p90 = percentile(lat, n_lat, 0.90),
	       p99 = percentile(lat, n_lat, 0.99), max = n_lat ? lat[n_lat - 1] : 0;
	const char *mode = !opt.cert ? "plain" : opt.keep_alive ? "fixed-key-keep-alive"
								 : "fixed-key";

	if (opt.json) {
		printf("{\"tool\":\"ke-load\",\"target\":\"%s\",\"mode\":\"%s\",\"aead\":%u,"
		       "\"concurrency\":%u,\"threads\":%u,\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
		       ",\"timeouts\":%" PRIu64 ",\"elapsed_s\":%.3f,\"sessions_per_s\":%.1f,"
		       "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
		       "\"cpu_s\":%.3f}\n",
		       opt.connect, mode, opt.aead, opt.concurrency, opt.threads, ok, failed,
		       timeouts, elapsed, rate, p50, p90, p99, max, cpu);
	} else {
		printf("ke-load %s (%s, AEAD %u), concurrency %u, %u thread(s)\n", opt.connect,
		       mode, opt.aead, opt.concurrency, opt.threads);
		printf("sessions     ok %" PRIu64 "  failed %" PRIu64 " (timeouts %" PRIu64 ")\n",
		       ok, failed, timeouts);
		printf("rate         %.1f sessions/s over %.2f s\n", rate, elapsed);
		printf("latency ms   p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", p50, p90, p99, max);
		printf("generator    %.2f CPU s (%.0f%% of one core)\n", cpu,
		       elapsed > 0 ? 100 * cpu / elapsed : 0);
	}
	if (first_error[0])
		fprintf(stderr, "ke-load: first failure: %s\n", first_error);

	free(lat);
	for (unsigned t = 0; t < opt.threads; t++)
		worker_deinit(&workers[t]);
	return ok > 0 && failed == 0 ? 0 : 1;
}
