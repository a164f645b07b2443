/* ntp-cookies: ntp-load's pool of unused NTS cookies, the keys they are tied to, and the key
 * exchanges that fill it. See ntp-cookies.h. */
#include "ntp-cookies.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_client.h"
#include "ke_msg.h"
#include "tls.h"

#define KE_TIMEOUT_MS 5000
/* After a failed refill, the next one waits this long, so a KE server that is down is not
 * hammered by a loop spinning on an empty pool. */
#define KE_RETRY_MS 250
#define KE_REQUEST_MAX 256
#define REASON_MAX 200

/* Fresh cookies in a reply are sealed by the server with the keys of the request's cookie. One
 * reference per cookie in the pool, per request in flight and, while it adds cookies, the key
 * exchange's own. */
struct ntp_cookies_keys {
	struct aead *c2s, *s2c;
	size_t refs;
};

/* An unused cookie and the keys its requests must be sealed with. */
struct pooled {
	struct ntp_cookies_keys *keys;
	struct nts_ntp_cookie cookie;
};

/* Unused cookies, oldest first, in a ring: a client spends the oldest first, like the daemon's
 * sources. */
struct cookie_pool {
	struct pooled *ring;
	size_t cap, head, n;
};

/* A key exchange in progress over a non-blocking TCP socket, driven by the caller's poll. */
struct ke_job {
	int fd; /* -1: none in progress */
	bool connecting;
	bool refill; /* started by the send loop, not by the initial fill */
	struct ke_client *ke;
};

struct ntp_cookies {
	uint16_t aead;
	struct tls_creds *creds;
	struct sockaddr_storage ke_addr;
	socklen_t ke_len;
	char *ke_name;
	struct cookie_pool pool;
	struct ke_job job;
	uint64_t retry_ns; /* no refill before this */
	bool have_server;
	char server[KE_MSG_NAME_MAX + 1];
	uint16_t port;
	struct ntp_cookies_stats stats; /* all but left, which is pool.n */
	char error[REASON_MAX];		/* the first key exchange failure */
};

enum { KE_RUNNING = 0, KE_DONE = 1 };

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
	return now_ns() / 1000000u;
}

/* ---- keys and the cookie pool ---- */

/* *out is new with one reference (the caller's). */
static int keys_new(struct ntp_cookies_keys **out, uint16_t aead, const uint8_t *c2s,
		    const uint8_t *s2c, size_t key_len)
{
	struct ntp_cookies_keys *k = calloc(1, sizeof *k);
	if (!k)
		return -ENOMEM;
	int rc = aead_new(&k->c2s, aead, c2s, key_len);
	if (rc == 0)
		rc = aead_new(&k->s2c, aead, s2c, key_len);
	if (rc < 0) {
		aead_free(k->c2s);
		free(k);
		return rc;
	}
	k->refs = 1;
	*out = k;
	return 0;
}

static struct ntp_cookies_keys *keys_ref(struct ntp_cookies_keys *k)
{
	k->refs++;
	return k;
}

void ntp_cookies_keys_unref(struct ntp_cookies_keys *k)
{
	if (!k || --k->refs > 0)
		return;
	aead_free(k->c2s);
	aead_free(k->s2c);
	free(k);
}

struct aead *ntp_cookies_keys_s2c(const struct ntp_cookies_keys *k)
{
	return k->s2c;
}

static int pool_init(struct cookie_pool *p, size_t cap)
{
	*p = (struct cookie_pool){ .ring = calloc(cap, sizeof *p->ring), .cap = cap };
	return p->ring ? 0 : -ENOMEM;
}

/* The j-th oldest unused cookie (borrowed; j < p->n). */
static struct pooled *pool_peek(const struct cookie_pool *p, size_t j)
{
	return &p->ring[(p->head + j) % p->cap];
}

/* Removes the n oldest cookies (n <= p->n), dropping the references they still hold (a cookie
 * handed to a request has had its reference moved to the request). */
static void pool_pop(struct cookie_pool *p, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		struct pooled *e = pool_peek(p, 0);
		ntp_cookies_keys_unref(e->keys);
		e->keys = NULL;
		p->head = (p->head + 1) % p->cap;
		p->n--;
	}
}

/* Adds a cookie (data borrowed) for keys (a reference is taken) behind the others. A cookie our
 * requests cannot carry (empty, too long, not a multiple of 4) or one beyond the pool's capacity
 * is dropped: the pool holds enough for every slot plus one key exchange's worth. Returns true
 * when the cookie was kept. */
static bool pool_push(struct cookie_pool *p, struct ntp_cookies_keys *keys, const uint8_t *data,
		      size_t len)
{
	if (len == 0 || len > NTS_NTP_COOKIE_MAX || len % 4 != 0 || p->n == p->cap)
		return false;
	struct pooled *e = &p->ring[(p->head + p->n) % p->cap];
	e->keys = keys_ref(keys);
	memcpy(e->cookie.data, data, len);
	e->cookie.len = len;
	p->n++;
	return true;
}

static void pool_deinit(struct cookie_pool *p)
{
	if (!p->ring)
		return;
	pool_pop(p, p->n);
	gnutls_memset(p->ring, 0, p->cap * sizeof *p->ring);
	free(p->ring);
	p->ring = NULL;
}

/* ---- key exchanges, without blocking ---- */

static void ke_fail_reason(struct ntp_cookies *nc, const char *what, const char *detail)
{
	if (!nc->error[0])
		snprintf(nc->error, sizeof nc->error, "%s%s%s", what, detail[0] ? ": " : "",
			 detail);
}

static void ke_job_end(struct ke_job *j)
{
	ke_client_free(j->ke);
	j->ke = NULL;
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
	j->connecting = false;
}

/* Hands ke_client's output to the socket as far as it takes it now. */
static int ke_flush(struct ke_job *j)
{
	const uint8_t *p;
	size_t n;
	if (j->connecting)
		return 0;
	for (;;) {
		ke_client_output(j->ke, &p, &n);
		if (n == 0)
			return 0;
		ssize_t w = send(j->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (w < 0)
			return -errno;
		ke_client_output_consume(j->ke, (size_t)w);
	}
}

/* The poll events the job waits for: writable while connecting or with output pending. */
static short ke_events(const struct ke_job *j)
{
	const uint8_t *p;
	size_t n;
	if (j->connecting)
		return POLLOUT;
	ke_client_output(j->ke, &p, &n);
	return (short)(POLLIN | (n > 0 ? POLLOUT : 0));
}

/* Starts a key exchange: non-blocking connect, ClientHello and the request queued. */
static int ke_start(struct ntp_cookies *nc, bool refill)
{
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	struct ke_job *j = &nc->job;
	uint8_t req[KE_REQUEST_MAX];
	uint64_t now = now_ms();
	int one = 1, rc;

	j->refill = refill;
	j->fd = socket(nc->ke_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (j->fd < 0) {
		rc = -errno;
		ke_fail_reason(nc, "TCP socket", strerror(errno));
		goto fail;
	}
	setsockopt(j->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(j->fd, (const struct sockaddr *)&nc->ke_addr, nc->ke_len) < 0) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			ke_fail_reason(nc, "connect", strerror(errno));
			goto fail;
		}
		j->connecting = true;
	}
	rc = ke_client_new(&j->ke, nc->creds, nc->ke_name, KE_NUMBERING_IANA, now, KE_TIMEOUT_MS);
	if (rc < 0) {
		ke_fail_reason(nc, "TLS setup", strerror(-rc));
		goto fail;
	}
	rc = ke_msg_build_request(req, sizeof req, KE_NUMBERING_IANA, protocols, 1, &nc->aead, 1,
				  NULL, 0);
	if (rc >= 0)
		rc = ke_client_send(j->ke, req, (size_t)rc, KE_MSG_REQUEST_PLAIN, now,
				    KE_TIMEOUT_MS);
	if (rc >= 0)
		rc = ke_flush(j);
	if (rc < 0) {
		ke_fail_reason(nc, "KE request", strerror(-rc));
		goto fail;
	}
	return 0;
fail:
	ke_job_end(j);
	return rc;
}

/* Takes the complete response: keys exported, cookies into the pool, the NTP server noted from
 * the first one (later ones are assumed to name the same: one server is measured). */
static int ke_take(struct ntp_cookies *nc)
{
	const struct ke_msg_response *r;
	uint8_t c2s[KE_MSG_KEY_MAX], s2c[KE_MSG_KEY_MAX];
	struct ntp_cookies_keys *keys = NULL;
	int prc = ke_client_response(nc->job.ke, &r);
	char detail[REASON_MAX / 2];

	if (prc < 0 || !r->has_protocol || r->protocol != KE_MSG_PROTOCOL_NTPV4 ||
	    !r->has_aead || r->aead != nc->aead || r->n_cookies == 0) {
		snprintf(detail, sizeof detail, "%s%s",
			 prc < 0 ? strerror(-prc) : "no NTPv4, AEAD or cookies",
			 prc == -EREMOTEIO ? ", server sent Error" : "");
		ke_fail_reason(nc, "unusable KE response", detail);
		return -EPROTO;
	}
	size_t kl = aead_key_len(r->aead);
	int rc = ke_client_export(nc->job.ke, r->protocol, r->aead, kl, c2s, s2c);
	if (rc == 0)
		rc = keys_new(&keys, r->aead, c2s, s2c, kl);
	gnutls_memset(c2s, 0, sizeof c2s);
	gnutls_memset(s2c, 0, sizeof s2c);
	if (rc < 0) {
		ke_fail_reason(nc, "key export", strerror(-rc));
		return rc;
	}
	for (size_t i = 0; i < r->n_cookies; i++) {
		nc->stats.from_ke++;
		if (!pool_push(&nc->pool, keys, r->cookies[i].data, r->cookies[i].len))
			nc->stats.dropped++;
	}
	ntp_cookies_keys_unref(keys);
	if (!nc->have_server) {
		snprintf(nc->server, sizeof nc->server, "%s", r->has_server ? r->server.name : "");
		nc->port = r->has_port ? r->port : KE_MSG_PORT_DEFAULT;
		nc->have_server = true;
	}
	return 0;
}

/* Advances the job with what poll reported (revents). Returns KE_RUNNING, KE_DONE (the cookies
 * are in the pool and the job has ended) or a negative errno (failed and ended; the first
 * reason is kept in nc->error). Counts the outcome. */
static int ke_step(struct ntp_cookies *nc, short revents)
{
	struct ke_job *j = &nc->job;
	uint64_t now = now_ms();
	uint8_t buf[16 * 1024];
	int rc;

	if (j->connecting && (revents & (POLLOUT | POLLERR | POLLHUP))) {
		int err = 0;
		socklen_t l = sizeof err;
		if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
			err = errno;
		if (err) {
			rc = -err;
			ke_fail_reason(nc, "connect", strerror(err));
			goto fail;
		}
		j->connecting = false;
	}
	if (!j->connecting && (revents & (POLLIN | POLLHUP | POLLERR))) {
		for (;;) {
			enum ke_client_state s = ke_client_state(j->ke);
			if (s != KE_CLIENT_HANDSHAKING && s != KE_CLIENT_WAITING)
				break;
			ssize_t n = recv(j->fd, buf, sizeof buf, MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n < 0) {
				rc = -errno;
				ke_fail_reason(nc, "KE recv", strerror(errno));
				goto fail;
			}
			if (n == 0) {
				ke_client_eof(j->ke, now);
				break;
			}
			/* A failure shows in the state, below. */
			ke_client_input(j->ke, buf, (size_t)n, now);
		}
	}
	uint64_t deadline = ke_client_deadline(j->ke);
	if (deadline != 0 && now >= deadline)
		ke_client_timeout(j->ke, now);
	rc = ke_flush(j);
	if (rc < 0) {
		ke_fail_reason(nc, "KE send", strerror(-rc));
		goto fail;
	}
	switch (ke_client_state(j->ke)) {
	case KE_CLIENT_HANDSHAKING:
	case KE_CLIENT_READY:
	case KE_CLIENT_WAITING:
		return KE_RUNNING;
	case KE_CLIENT_RESPONSE:
		rc = ke_take(nc);
		if (rc < 0)
			goto fail;
		/* close_notify, as a polite client sends; it may not all go out before close. */
		ke_client_response_done(j->ke, now);
		ke_flush(j);
		if (j->refill)
			nc->stats.ke_refills++;
		else
			nc->stats.ke_initial++;
		ke_job_end(j);
		return KE_DONE;
	case KE_CLIENT_CLOSED:
		rc = -ECONNRESET;
		ke_fail_reason(nc, "key exchange", "closed before the response");
		goto fail;
	case KE_CLIENT_FAILED:
		rc = ke_client_error(j->ke) < 0 ? ke_client_error(j->ke) : -EPROTO;
		ke_fail_reason(nc, "key exchange", ke_client_reason(j->ke));
		goto fail;
	}
	rc = -EPROTO;
fail:
	nc->stats.ke_failed++;
	ke_job_end(j);
	return rc;
}

/* One key exchange waited for (the initial fill, before the clock of the run starts). */
static int ke_blocking(struct ntp_cookies *nc)
{
	int rc = ke_start(nc, false);
	if (rc < 0) {
		nc->stats.ke_failed++;
		return rc;
	}
	while (rc == KE_RUNNING) {
		struct pollfd pfd = { .fd = nc->job.fd, .events = ke_events(&nc->job) };
		if (poll(&pfd, 1, 100) < 0 && errno != EINTR) {
			rc = -errno;
			ke_job_end(&nc->job);
			break;
		}
		rc = ke_step(nc, pfd.revents);
	}
	return rc < 0 ? rc : 0;
}

/* ---- the interface ---- */

int ntp_cookies_new(struct ntp_cookies **out, const struct ntp_cookies_params *p)
{
	if (p->ke_len > sizeof(struct sockaddr_storage))
		return -EINVAL;
	struct ntp_cookies *nc = calloc(1, sizeof *nc);
	if (!nc)
		return -ENOMEM;
	nc->aead = p->aead;
	nc->job.fd = -1;
	memcpy(&nc->ke_addr, p->ke_addr, p->ke_len);
	nc->ke_len = p->ke_len;
	nc->ke_name = strdup(p->ke_name);
	if (!nc->ke_name || pool_init(&nc->pool, (size_t)p->window + KE_MSG_MAX_COOKIES) < 0) {
		free(nc->ke_name);
		free(nc);
		return -ENOMEM;
	}
	nc->creds = tls_creds_ref(p->creds);
	*out = nc;
	return 0;
}

void ntp_cookies_free(struct ntp_cookies *nc)
{
	if (!nc)
		return;
	if (nc->job.fd >= 0)
		ke_job_end(&nc->job);
	pool_deinit(&nc->pool);
	tls_creds_unref(nc->creds);
	free(nc->ke_name);
	free(nc);
}

int ntp_cookies_fill(struct ntp_cookies *nc, size_t want)
{
	while (nc->pool.n < want) {
		int rc = ke_blocking(nc);
		if (rc < 0)
			return rc;
	}
	return 0;
}

const char *ntp_cookies_server(const struct ntp_cookies *nc, uint16_t *port)
{
	*port = nc->port;
	return nc->server;
}

size_t ntp_cookies_count(const struct ntp_cookies *nc)
{
	return nc->pool.n;
}

const struct nts_ntp_cookie *ntp_cookies_peek(const struct ntp_cookies *nc, size_t j,
					      struct aead **c2s)
{
	const struct pooled *e = pool_peek(&nc->pool, j);
	*c2s = e->keys->c2s;
	return &e->cookie;
}

struct ntp_cookies_keys *ntp_cookies_take(struct ntp_cookies *nc)
{
	struct pooled *e = pool_peek(&nc->pool, 0);
	struct ntp_cookies_keys *keys = e->keys;
	/* The reference moves to the caller, so popping does not drop it. */
	e->keys = NULL;
	pool_pop(&nc->pool, 1);
	nc->stats.used++;
	return keys;
}

void ntp_cookies_add(struct ntp_cookies *nc, struct ntp_cookies_keys *keys,
		     const struct nts_ntp_cookie *cookies, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		nc->stats.from_replies++;
		if (!pool_push(&nc->pool, keys, cookies[i].data, cookies[i].len))
			nc->stats.dropped++;
	}
}

void ntp_cookies_refill(struct ntp_cookies *nc)
{
	uint64_t now = now_ns();
	if (nc->job.fd < 0 && now >= nc->retry_ns && ke_start(nc, true) < 0) {
		nc->stats.ke_failed++;
		nc->retry_ns = now + (uint64_t)KE_RETRY_MS * 1000000u;
	}
}

void ntp_cookies_pollfd(const struct ntp_cookies *nc, struct pollfd *pfd)
{
	*pfd = (struct pollfd){ .fd = nc->job.fd,
				.events = nc->job.fd >= 0 ? ke_events(&nc->job) : 0 };
}

void ntp_cookies_step(struct ntp_cookies *nc, short revents)
{
	if (nc->job.fd >= 0 && ke_step(nc, revents) < 0)
		nc->retry_ns = now_ns() + (uint64_t)KE_RETRY_MS * 1000000u;
}

void ntp_cookies_get_stats(const struct ntp_cookies *nc, struct ntp_cookies_stats *out)
{
	*out = nc->stats;
	out->left = nc->pool.n;
}

const char *ntp_cookies_error(const struct ntp_cookies *nc)
{
	return nc->error[0] ? nc->error : NULL;
}
