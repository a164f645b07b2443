#include "tls_testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* DIR/NAME.SUFFIX as a new string (caller frees). */
static char *leaf_path(const char *dir, const char *name, const char *suffix)
{
	char *file = NULL;
	cr_assert(asprintf(&file, "%s.%s", name, suffix) >= 0);
	char *p = tu_path(dir, file);
	free(file);
	return p;
}

struct tls_creds *tu_tls_server_creds(const char *dir, const char *name, const char *const *pins,
				      size_t n_pins)
{
	char *cp = leaf_path(dir, name, "chain.pem"), *kp = leaf_path(dir, name, "key");
	char **pp = calloc(n_pins + 1, sizeof *pp);
	cr_assert(pp);
	for (size_t i = 0; i < n_pins; i++)
		pp[i] = tu_path(dir, pins[i]);
	struct tls_server_options o = { .cert_file = cp, .key_file = kp,
					.pool_cert_files = (const char *const *)pp,
					.n_pool_cert_files = n_pins };
	char err[TLS_CREDS_ERR_MAX] = "";
	struct tls_creds *c = NULL;
	int ret = tls_creds_new_server(&c, &o, err, sizeof err);
	cr_assert_eq(ret, 0, "server creds: %d %s", ret, err);
	for (size_t i = 0; i < n_pins; i++)
		free(pp[i]);
	free(pp);
	free(cp);
	free(kp);
	return c;
}

struct tls_creds *tu_tls_client_creds(const char *dir, const char *name)
{
	char *ca = tu_path(dir, "ca.pem");
	char *cp = name ? leaf_path(dir, name, "chain.pem") : NULL;
	char *kp = name ? leaf_path(dir, name, "key") : NULL;
	struct tls_client_options o = { .no_system_trust = true, .ca_file = ca, .cert_file = cp,
					.key_file = kp };
	char err[TLS_CREDS_ERR_MAX] = "";
	struct tls_creds *c = NULL;
	int ret = tls_creds_new_client(&c, &o, err, sizeof err);
	cr_assert_eq(ret, 0, "client creds: %d %s", ret, err);
	free(ca);
	free(cp);
	free(kp);
	return c;
}

struct tls_session *tu_tls_client_session(const char *dir, const char *name,
					  const char *server_name)
{
	struct tls_creds *cc = tu_tls_client_creds(dir, name);
	struct tls_session *s = NULL;
	cr_assert_eq(tls_session_new_client(&s, cc, server_name), 0);
	tls_creds_unref(cc);
	return s;
}

/* ---- The pump ------------------------------------------------------------------------------- */

static void session_step(void *ctx)
{
	tls_step(ctx);
}

static void session_output(void *ctx, const uint8_t **p, size_t *n)
{
	tls_output(ctx, p, n);
}

static void session_consume(void *ctx, size_t n)
{
	tls_output_consume(ctx, n);
}

static int session_input(void *ctx, const uint8_t *p, size_t n)
{
	return tls_feed(ctx, p, n);
}

struct tu_tls_end tu_tls_session_end(struct tls_session *s)
{
	return (struct tu_tls_end){ .ctx = s, .step = session_step, .output = session_output,
				    .consume = session_consume, .input = session_input };
}

static bool has_failed(const struct tu_tls_end *e)
{
	return e->failed && e->failed(e->ctx);
}

bool tu_tls_move(const struct tu_tls_end *from, const struct tu_tls_end *to)
{
	bool moved = false;
	for (;;) {
		const uint8_t *p;
		size_t n;
		from->output(from->ctx, &p, &n);
		if (n == 0 || has_failed(to))
			return moved;
		size_t take = to->chunk && n > to->chunk ? to->chunk : n;
		if (from->sent)
			from->sent(from->ctx, p, take);
		int rc = to->input(to->ctx, p, take);
		cr_assert(rc == 0 || has_failed(to), "input refused: %d", rc);
		from->consume(from->ctx, take);
		moved = true;
	}
}

void tu_tls_pump(const struct tu_tls_end *a, const struct tu_tls_end *b)
{
	for (int round = 0; round < 64; round++) {
		if (a->step)
			a->step(a->ctx);
		if (b->step)
			b->step(b->ctx);
		bool ab = tu_tls_move(a, b);
		bool ba = tu_tls_move(b, a);
		if (!ab && !ba)
			return;
	}
	cr_assert_fail("the exchange did not settle");
}

/* ---- The raw GnuTLS peer -------------------------------------------------------------------- */

static ssize_t raw_push(gnutls_transport_ptr_t ptr, const void *data, size_t len)
{
	struct tu_tls_raw *r = ptr;
	if (r->attached) {
		cr_assert_eq(tls_feed(r->attached, data, len), 0);
		return (ssize_t)len;
	}
	cr_assert_leq(len, sizeof r->out - r->out_len);
	memcpy(r->out + r->out_len, data, len);
	r->out_len += len;
	return (ssize_t)len;
}

static ssize_t raw_pull(gnutls_transport_ptr_t ptr, void *data, size_t len)
{
	struct tu_tls_raw *r = ptr;
	if (r->in_len == 0) {
		gnutls_transport_set_errno(r->gs, EAGAIN);
		return -1;
	}
	size_t n = len < r->in_len ? len : r->in_len;
	memcpy(data, r->in, n);
	memmove(r->in, r->in + n, r->in_len - n);
	r->in_len -= n;
	return (ssize_t)n;
}

static struct tu_tls_raw *raw_new(unsigned flags, const char *prio, const char *alpn,
				  const char *dir, const char *name)
{
	struct tu_tls_raw *r = calloc(1, sizeof *r);
	cr_assert(r);
	r->handshake = GNUTLS_E_AGAIN;
	cr_assert_eq(gnutls_init(&r->gs, flags), 0);
	cr_assert_eq(gnutls_priority_set_direct(r->gs, prio, NULL), 0);
	cr_assert_eq(gnutls_certificate_allocate_credentials(&r->cred), 0);
	if (name) {
		char *cp = leaf_path(dir, name, "chain.pem"), *kp = leaf_path(dir, name, "key");
		int ret =
			gnutls_certificate_set_x509_key_file(r->cred, cp, kp, GNUTLS_X509_FMT_PEM);
		cr_assert_eq(ret, 0, "%s: %s", cp, gnutls_strerror(ret));
		free(cp);
		free(kp);
	}
	cr_assert_eq(gnutls_credentials_set(r->gs, GNUTLS_CRD_CERTIFICATE, r->cred), 0);
	if (alpn) {
		gnutls_datum_t d = { (unsigned char *)alpn, (unsigned)strlen(alpn) };
		cr_assert_eq(gnutls_alpn_set_protocols(r->gs, &d, 1, 0), 0);
	}
	gnutls_transport_set_ptr(r->gs, r);
	gnutls_transport_set_push_function(r->gs, raw_push);
	gnutls_transport_set_pull_function(r->gs, raw_pull);
	return r;
}

struct tu_tls_raw *tu_tls_raw_client(const char *prio, const char *alpn)
{
	return raw_new(GNUTLS_CLIENT, prio, alpn, NULL, NULL);
}

struct tu_tls_raw *tu_tls_raw_server(const char *dir, const char *name, unsigned flags,
				     const char *prio, const char *alpn)
{
	return raw_new(GNUTLS_SERVER | flags, prio, alpn, dir, name);
}

void tu_tls_raw_free(struct tu_tls_raw *r)
{
	if (r) {
		gnutls_deinit(r->gs);
		gnutls_certificate_free_credentials(r->cred);
	}
	free(r);
}

void tu_tls_raw_attach(struct tu_tls_raw *r, struct tls_session *s)
{
	r->attached = s;
}

/* Queues ciphertext (borrowed, copied) for r to read. */
static void raw_feed(struct tu_tls_raw *r, const void *p, size_t n)
{
	cr_assert_leq(n, sizeof r->in - r->in_len);
	if (n)
		memcpy(r->in + r->in_len, p, n);
	r->in_len += n;
}

ssize_t tu_tls_raw_recv(struct tu_tls_raw *r, void *buf, size_t cap)
{
	ssize_t got;
	while ((got = gnutls_record_recv(r->gs, buf, cap)) == GNUTLS_E_AGAIN && r->in_len > 0)
		;
	return got;
}

static void raw_step(void *ctx)
{
	struct tu_tls_raw *r = ctx;
	if (r->handshake != GNUTLS_E_AGAIN)
		return;
	r->handshake = gnutls_handshake(r->gs);
	if (r->handshake < 0 && r->handshake != GNUTLS_E_AGAIN)
		gnutls_alert_send_appropriate(r->gs, r->handshake);
}

static void raw_output(void *ctx, const uint8_t **p, size_t *n)
{
	struct tu_tls_raw *r = ctx;
	*p = r->out;
	*n = r->out_len;
}

static void raw_consume(void *ctx, size_t n)
{
	struct tu_tls_raw *r = ctx;
	memmove(r->out, r->out + n, r->out_len - n);
	r->out_len -= n;
}

static int raw_input(void *ctx, const uint8_t *p, size_t n)
{
	raw_feed(ctx, p, n);
	return 0;
}

struct tu_tls_end tu_tls_raw_end(struct tu_tls_raw *r)
{
	return (struct tu_tls_end){ .ctx = r, .step = raw_step, .output = raw_output,
				    .consume = raw_consume, .input = raw_input };
}
