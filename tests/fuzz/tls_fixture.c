/* Shared by the TLS harnesses (tls_server, ke_server_conn, pool_session, ke_client; #included, not
 * a harness of its own): credentials made once in memory, the input reader the event-driven
 * harnesses decode their events with, and an in-memory pump that completes a real TLS 1.3
 * handshake between two ends.
 *
 * The certificates are generated with GnuTLS on first use, like test-keys/gen-cert.sh makes them
 * for the unit tests: a private CA, a server leaf for "ntp.test" (presented with the CA as its
 * chain) and a pool leaf for "pool.test" (presented by a client as the pool's certificate, and
 * pinned by one of the server credentials), ECDSA P-256, serverAuth and clientAuth. The PEM files
 * live in a private temporary directory only while tls_creds reads them; it is removed at once.
 * The credentials are the only state kept between inputs. Log lines go to /dev/null at debug
 * level, so their formatting runs (and is checked by the sanitizers) on every input. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "log.h"
#include "tls.h"
#include "tls_creds.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

#define FX_SERVER_NAME "ntp.test"

static struct tls_creds *fx_server;	   /* ntp.test; pins the pool certificate */
static struct tls_creds *fx_server_nopin; /* the same key pair, nothing pinned */
static struct tls_creds *fx_client;	   /* trusts the CA only, presents nothing */
static struct tls_creds *fx_client_pool;   /* trusts the CA, presents the pool certificate */

/* ---- Credentials ----------------------------------------------------------------------------- */

static gnutls_x509_privkey_t fx_new_key(void)
{
	gnutls_x509_privkey_t k;
	CHECK(gnutls_x509_privkey_init(&k) == 0);
	unsigned bits = GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1);
	CHECK(gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA, bits, 0) == 0);
	return k;
}

/* A certificate for key: a CA (self-signed when issuer is NULL) or a leaf for dns. */
static gnutls_x509_crt_t fx_new_cert(gnutls_x509_privkey_t key, const char *cn, const char *dns,
				     unsigned char serial, gnutls_x509_crt_t issuer,
				     gnutls_x509_privkey_t issuer_key)
{
	gnutls_x509_crt_t c;
	time_t now = time(NULL);
	CHECK(gnutls_x509_crt_init(&c) == 0);
	CHECK(gnutls_x509_crt_set_version(c, 3) == 0);
	CHECK(gnutls_x509_crt_set_serial(c, &serial, 1) == 0);
	CHECK(gnutls_x509_crt_set_activation_time(c, now - 86400) == 0);
	CHECK(gnutls_x509_crt_set_expiration_time(c, now + 3650 * 86400L) == 0);
	CHECK(gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
					    (unsigned)strlen(cn)) == 0);
	CHECK(gnutls_x509_crt_set_key(c, key) == 0);
	if (!dns) {
		CHECK(gnutls_x509_crt_set_basic_constraints(c, 1, -1) == 0);
		CHECK(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_KEY_CERT_SIGN |
							       GNUTLS_KEY_CRL_SIGN) == 0);
	} else {
		CHECK(gnutls_x509_crt_set_basic_constraints(c, 0, -1) == 0);
		CHECK(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE) == 0);
		CHECK(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0) == 0);
		CHECK(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_CLIENT, 0) == 0);
		CHECK(gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_DNSNAME, dns,
							   (unsigned)strlen(dns),
							   GNUTLS_FSAN_SET) == 0);
	}
	CHECK(gnutls_x509_crt_sign2(c, issuer ? issuer : c, issuer_key ? issuer_key : key,
				    GNUTLS_DIG_SHA256, 0) == 0);
	return c;
}

/* Writes the PEM of a certificate (or two, a chain) or of a key to dir/name. */
static char *fx_write(const char *dir, const char *name, const gnutls_datum_t *a,
		      const gnutls_datum_t *b, mode_t mode)
{
	char *path = NULL;
	CHECK(asprintf(&path, "%s/%s", dir, name) > 0);
	FILE *f = fopen(path, "wx");
	CHECK(f);
	CHECK(fchmod(fileno(f), mode) == 0);
	CHECK(fwrite(a->data, 1, a->size, f) == a->size);
	if (b)
		CHECK(fwrite(b->data, 1, b->size, f) == b->size);
	CHECK(fclose(f) == 0);
	return path;
}

static void fx_creds_init(void)
{
	const char *tmp = getenv("TMPDIR");
	char *dir = NULL;
	CHECK(asprintf(&dir, "%s/ntspool-fuzz.XXXXXX", tmp && tmp[0] ? tmp : "/tmp") > 0);
	CHECK(mkdtemp(dir));

	gnutls_x509_privkey_t ca_key = fx_new_key(), srv_key = fx_new_key(),
			      pool_key = fx_new_key();
	gnutls_x509_crt_t ca = fx_new_cert(ca_key, "NTS Pool Fuzz CA", NULL, 1, NULL, NULL);
	gnutls_x509_crt_t srv = fx_new_cert(srv_key, FX_SERVER_NAME, FX_SERVER_NAME, 2, ca, ca_key);
	gnutls_x509_crt_t pool = fx_new_cert(pool_key, "pool.test", "pool.test", 3, ca, ca_key);
	gnutls_datum_t ca_pem, srv_pem, srv_key_pem, pool_pem, pool_key_pem;
	CHECK(gnutls_x509_crt_export2(ca, GNUTLS_X509_FMT_PEM, &ca_pem) == 0);
	CHECK(gnutls_x509_crt_export2(srv, GNUTLS_X509_FMT_PEM, &srv_pem) == 0);
	CHECK(gnutls_x509_crt_export2(pool, GNUTLS_X509_FMT_PEM, &pool_pem) == 0);
	CHECK(gnutls_x509_privkey_export2(srv_key, GNUTLS_X509_FMT_PEM, &srv_key_pem) == 0);
	CHECK(gnutls_x509_privkey_export2(pool_key, GNUTLS_X509_FMT_PEM, &pool_key_pem) == 0);

	char *files[7] = {
		fx_write(dir, "ca.pem", &ca_pem, NULL, 0644),
		fx_write(dir, "server.chain.pem", &srv_pem, &ca_pem, 0644),
		fx_write(dir, "server.key", &srv_key_pem, NULL, 0600),
		fx_write(dir, "pool.pem", &pool_pem, NULL, 0644),
		fx_write(dir, "pool.chain.pem", &pool_pem, &ca_pem, 0644),
		fx_write(dir, "pool.key", &pool_key_pem, NULL, 0600),
		NULL,
	};
	char err[TLS_CREDS_ERR_MAX] = "";
	const char *const pins[] = { files[3] };
	struct tls_server_options so = { .cert_file = files[1], .key_file = files[2],
					 .pool_cert_files = pins, .n_pool_cert_files = 1 };
	if (tls_creds_new_server(&fx_server, &so, err, sizeof err) != 0)
		goto fail;
	so.n_pool_cert_files = 0;
	if (tls_creds_new_server(&fx_server_nopin, &so, err, sizeof err) != 0)
		goto fail;
	struct tls_client_options co = { .no_system_trust = true, .ca_file = files[0] };
	if (tls_creds_new_client(&fx_client, &co, err, sizeof err) != 0)
		goto fail;
	co.cert_file = files[4];
	co.key_file = files[5];
	if (tls_creds_new_client(&fx_client_pool, &co, err, sizeof err) != 0)
		goto fail;

	for (char **f = files; *f; f++) {
		CHECK(unlink(*f) == 0);
		free(*f);
	}
	CHECK(rmdir(dir) == 0);
	free(dir);
	gnutls_free(ca_pem.data);
	gnutls_free(srv_pem.data);
	gnutls_free(pool_pem.data);
	gnutls_memset(srv_key_pem.data, 0, srv_key_pem.size);
	gnutls_free(srv_key_pem.data);
	gnutls_memset(pool_key_pem.data, 0, pool_key_pem.size);
	gnutls_free(pool_key_pem.data);
	gnutls_x509_crt_deinit(ca);
	gnutls_x509_crt_deinit(srv);
	gnutls_x509_crt_deinit(pool);
	gnutls_x509_privkey_deinit(ca_key);
	gnutls_x509_privkey_deinit(srv_key);
	gnutls_x509_privkey_deinit(pool_key);
	return;
fail:
	fprintf(stderr, "tls fixture: credentials: %s\n", err);
	abort();
}

/* Everything a harness keeps between inputs, made on the first one. */
static void fx_init(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	FILE *devnull = fopen("/dev/null", "w");
	CHECK(devnull);
	log_set_stream(devnull);
	log_set_level(LOG_LEVEL_DEBUG);
	fx_creds_init();
}

/* ---- Reading the input ----------------------------------------------------------------------- */

struct fx_in {
	const uint8_t *p;
	size_t n;
};

static bool fx_more(const struct fx_in *in)
{
	return in->n > 0;
}

/* The next byte, 0 once the input is used up. */
static uint8_t fx_u8(struct fx_in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint16_t fx_u16(struct fx_in *in)
{
	uint16_t hi = fx_u8(in);
	return (uint16_t)(hi << 8 | fx_u8(in));
}

/* Up to want bytes of the input (borrowed); *len says how many there were. */
static const uint8_t *fx_bytes(struct fx_in *in, size_t want, size_t *len)
{
	const uint8_t *p = in->p;
	*len = want < in->n ? want : in->n;
	in->p += *len;
	in->n -= *len;
	return p;
}

/* ---- Pumping --------------------------------------------------------------------------------- */

/* One end of an in-memory connection: its output queue and a way to hand it ciphertext. */
struct fx_end {
	void *ctx;
	void (*step)(void *ctx); /* optional: progress before each round (tls_step) */
	void (*output)(void *ctx, const uint8_t **p, size_t *n);
	void (*consume)(void *ctx, size_t n);
	int (*input)(void *ctx, const uint8_t *p, size_t n);
};

static void fx_session_step(void *ctx)
{
	tls_step(ctx);
}

static void fx_session_output(void *ctx, const uint8_t **p, size_t *n)
{
	tls_output(ctx, p, n);
}

static void fx_session_consume(void *ctx, size_t n)
{
	tls_output_consume(ctx, n);
}

static int fx_session_input(void *ctx, const uint8_t *p, size_t n)
{
	return tls_feed(ctx, p, n);
}

static struct fx_end fx_session_end(struct tls_session *s)
{
	return (struct fx_end){ .ctx = s, .step = fx_session_step, .output = fx_session_output,
				.consume = fx_session_consume, .input = fx_session_input };
}

/* Moves everything from has queued to to; false when there was nothing or to refused it. */
static bool fx_move(const struct fx_end *from, const struct fx_end *to)
{
	const uint8_t *p;
	size_t n;
	from->output(from->ctx, &p, &n);
	if (n == 0)
		return false;
	int rc = to->input(to->ctx, p, n);
	from->consume(from->ctx, n);
	return rc == 0;
}

/* Rounds of stepping and moving both ways until nothing moves (a handshake takes three). */
static void fx_pump(const struct fx_end *a, const struct fx_end *b)
{
	for (int round = 0; round < 16; round++) {
		if (a->step)
			a->step(a->ctx);
		if (b->step)
			b->step(b->ctx);
		bool ab = fx_move(a, b);
		bool ba = fx_move(b, a);
		if (!ab && !ba)
			return;
	}
	CHECK(!"the handshake did not settle");
}

/* A client tls_session for FX_SERVER_NAME, presenting the pool certificate or nothing. */
static struct tls_session *fx_client_session(bool pool)
{
	struct tls_session *s = NULL;
	CHECK(tls_session_new_client(&s, pool ? fx_client_pool : fx_client, FX_SERVER_NAME) == 0);
	return s;
}

/* Reads what the session has decrypted into buf[*len, cap): returns the last tls_read result
 * (-EAGAIN when it ran dry, 0 for close_notify, another negative errno on failure). */
static ssize_t fx_read_all(struct tls_session *s, uint8_t *buf, size_t *len, size_t cap)
{
	for (;;) {
		if (*len == cap)
			return -ENOBUFS;
		ssize_t n = tls_read(s, buf + *len, cap - *len);
		if (n <= 0)
			return n;
		CHECK((size_t)n <= cap - *len);
		*len += (size_t)n;
	}
}
