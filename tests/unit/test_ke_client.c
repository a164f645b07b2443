/* The NTS-KE client connection against the real server state machine (ke_server_conn), for
 * misbehaving servers against a bare TLS server session, and against a plain GnuTLS server for
 * TLS 1.3 post-handshake messages: ciphertext pumped by hand, certificates from
 * test-keys/gen-cert.sh, explicit time. */
#include "ke_client.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "ke_msg.h"
#include "ke_record.h"
#include "ke_server.h"
#include "keyset.h"
#include "log.h"
#include "testutil.h"
#include "tls.h"
#include "tls_testutil.h"
#include "wire.h"

#define T0 1000
#define TIMEOUT 5000
#define REQ_TIMEOUT 2500
/* Ciphertext moves in pieces no larger than a socket read, as the glue would hand them over. */
#define CHUNK 16384

/* Bodies of filler records. */
static const uint8_t zeros[KE_MSG_RESPONSE_MAX];

static char *dir;
static FILE *devnull;

static void setup(void)
{
	devnull = fopen("/dev/null", "w");
	cr_assert(devnull);
	log_set_stream(devnull);
	log_set_level(LOG_LEVEL_DEBUG);
	dir = tu_tempdir();
	tu_gen_cert(dir, "server --dns ntp.test");
	tu_gen_cert(dir, "pool --dns pool.test");
}

static void teardown(void)
{
	tu_rmtree(dir);
	free(dir);
	log_set_stream(NULL);
	fclose(devnull);
}

TestSuite(ke_client, .init = setup, .fini = teardown);

static const char *const pool_pin[] = { "pool.pem" };

/* Our client against either the server state machine (srv) or a bare TLS session (raw). */
struct h {
	struct tls_creds *sc;
	struct ke_client *cli;
	struct ke_server_conn *srv;
	struct tls_session *raw;
	struct keyset *ks;
	struct ke_server_stats st;
	struct ke_server_config cfg;
	enum ke_numbering n;
	uint64_t now;
};

static void h_init(struct h *h, enum ke_numbering n, bool raw)
{
	memset(h, 0, sizeof *h);
	uint8_t keys[KEYSET_KEY_LEN];
	struct tu_rng rng;
	tu_rng_seed(&rng, 11);
	tu_rng_fill(&rng, keys, sizeof keys);
	cr_assert_eq(keyset_from_keys(&h->ks, 0, 0, 1, keys, 0), 0);
	h->sc = tu_tls_server_creds(dir, "server", pool_pin, 1);
	h->n = n;
	h->now = T0;
	h->cfg = (struct ke_server_config){ .numbering = n, .timeout_ms = TIMEOUT };
	if (raw)
		cr_assert_eq(tls_session_new_server(&h->raw, h->sc), 0);
	else
		cr_assert_eq(ke_server_conn_new(&h->srv, h->sc, &h->cfg, &h->ks, &h->st, h->now),
			     0);
}

/* The client, verifying `name`, with or without the pool certificate. */
static void h_client(struct h *h, bool pool, const char *name)
{
	struct tls_creds *cc = tu_tls_client_creds(dir, pool ? "pool" : NULL);
	cr_assert_eq(ke_client_new(&h->cli, cc, name, h->n, h->now, TIMEOUT), 0);
	tls_creds_unref(cc);
	cr_assert_eq(ke_client_state(h->cli), KE_CLIENT_HANDSHAKING);
	cr_assert_eq(ke_client_deadline(h->cli), T0 + TIMEOUT);
}

static void h_free(struct h *h)
{
	ke_client_free(h->cli);
	ke_server_conn_free(h->srv);
	tls_free(h->raw);
	tls_creds_unref(h->sc);
	keyset_unref(h->ks);
}

TU_TLS_MACHINE_END(cli_machine, struct h, cli, ke_client)
TU_TLS_MACHINE_END(srv_machine, struct h, srv, ke_server_conn)

static bool cli_failed(void *ctx)
{
	return ke_client_state(((struct h *)ctx)->cli) == KE_CLIENT_FAILED;
}

/* The client as the pump's end: handed server ciphertext in CHUNK pieces, and nothing more once
 * it failed. */
static struct tu_tls_end cli_end(struct h *h)
{
	struct tu_tls_end e = cli_machine(h);
	e.failed = cli_failed;
	e.chunk = CHUNK;
	return e;
}

/* Moves ciphertext between the client and the server side until neither has anything to say. */
static void pump(struct h *h)
{
	struct tu_tls_end cli = cli_end(h);
	struct tu_tls_end srv = h->srv ? srv_machine(h) : tu_tls_session_end(h->raw);
	tu_tls_pump(&cli, &srv);
}

static void h_connect(struct h *h, bool pool)
{
	h_client(h, pool, "ntp.test");
	pump(h);
	cr_assert_eq(ke_client_state(h->cli), KE_CLIENT_READY, "%s", ke_client_reason(h->cli));
	cr_assert_eq(ke_client_deadline(h->cli), 0, "an idle connection has no deadline");
	if (h->raw)
		cr_assert_eq(tls_state(h->raw), TLS_ESTABLISHED, "%s", tls_reason(h->raw));
}

static void h_send(struct h *h, const uint8_t *req, size_t len, enum ke_msg_request_kind kind)
{
	cr_assert_eq(ke_client_send(h->cli, req, len, kind, h->now, REQ_TIMEOUT), 0);
	cr_assert_eq(ke_client_state(h->cli), KE_CLIENT_WAITING);
	cr_assert(ke_client_request_sent(h->cli));
	cr_assert_eq(ke_client_deadline(h->cli), h->now + REQ_TIMEOUT);
	pump(h);
}

static const uint16_t ntpv4[] = { KE_MSG_PROTOCOL_NTPV4 };
static const uint16_t siv256[] = { AEAD_AES_SIV_CMAC_256 };

static size_t plain_request(uint8_t *buf, size_t cap, enum ke_numbering n)
{
	int len = ke_msg_build_request(buf, cap, n, ntpv4, 1, siv256, 1, NULL, 0);
	cr_assert_gt(len, 0);
	return (size_t)len;
}

static size_t support_request(uint8_t *buf, size_t cap, enum ke_numbering n, bool keep_alive)
{
	int len = ke_msg_build_support_request(buf, cap, n, NULL, n == KE_NUMBERING_IANA, true,
					       keep_alive);
	cr_assert_gt(len, 0);
	return (size_t)len;
}

/* The response: parse result rc, for checking. */
static const struct ke_msg_response *h_response(struct h *h, int want_rc)
{
	const struct ke_msg_response *r = NULL;
	cr_assert_eq(ke_client_state(h->cli), KE_CLIENT_RESPONSE, "state %d: %s",
		     ke_client_state(h->cli), ke_client_reason(h->cli));
	cr_assert_eq(ke_client_deadline(h->cli), 0);
	int rc = ke_client_response(h->cli, &r);
	cr_assert_eq(rc, want_rc, "parse %d", rc);
	cr_assert_not_null(r);
	return r;
}

/* Every cookie opens under ks to exactly c2s/s2c. */
static void check_cookies(struct keyset *ks, const struct ke_msg_response *r, const uint8_t *c2s,
			  const uint8_t *s2c, size_t key_len)
{
	cr_assert_eq(r->n_cookies, 8);
	for (size_t i = 0; i < r->n_cookies; i++) {
		uint8_t oc2s[AEAD_MAX_KEY_LEN], os2c[AEAD_MAX_KEY_LEN];
		uint16_t id;
		size_t kl;
		cr_assert_eq(keyset_open_cookie(ks, r->cookies[i].data, r->cookies[i].len, &id,
						oc2s, os2c, &kl),
			     0);
		cr_assert_eq(kl, key_len);
		cr_assert_arr_eq(oc2s, c2s, key_len);
		cr_assert_arr_eq(os2c, s2c, key_len);
	}
}

/* The raw server reads one whole request of the expected length. */
static void raw_expect_request(struct h *h, size_t want)
{
	uint8_t buf[KE_MSG_REQUEST_MAX];
	size_t have = 0;
	while (have < want) {
		ssize_t n = tls_read(h->raw, buf + have, sizeof buf - have);
		cr_assert_gt(n, 0, "request incomplete (%zd)", n);
		have += (size_t)n;
	}
	cr_assert_eq(have, want);
	cr_assert_eq(ke_msg_frame(buf, have, KE_MSG_REQUEST_MAX), (int)want);
}

/* The raw server sees the client's close_notify. */
static void raw_expect_close_notify(struct h *h)
{
	uint8_t b[16];
	cr_assert_eq(tls_read(h->raw, b, sizeof b), 0);
}

/* ---- Against the server state machine ------------------------------------------------------ */

Test(ke_client, plain_exchange)
{
	struct h h;
	uint8_t req[256];
	h_init(&h, KE_NUMBERING_IANA, false);
	h_connect(&h, false);
	h_send(&h, req, plain_request(req, sizeof req, h.n), KE_MSG_REQUEST_PLAIN);

	const struct ke_msg_response *r = h_response(&h, 0);
	cr_assert(r->has_protocol);
	cr_assert_eq(r->protocol, KE_MSG_PROTOCOL_NTPV4);
	cr_assert(r->has_aead);
	cr_assert_eq(r->aead, AEAD_AES_SIV_CMAC_256);
	cr_assert_not(r->keep_alive);
	uint8_t c2s[32], s2c[32];
	cr_assert_eq(ke_client_export(h.cli, 0, 15, 32, c2s, s2c), 0);
	cr_assert_arr_neq(c2s, s2c, 32);
	check_cookies(h.ks, r, c2s, s2c, 32);
	cr_assert_eq(ke_client_send(h.cli, req, 10, KE_MSG_REQUEST_PLAIN, h.now, 1), -EBUSY,
		     "the response was not taken yet");

	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	const uint8_t *p;
	size_t n;
	ke_client_output(h.cli, &p, &n);
	cr_assert_gt(n, 0, "close_notify is queued");
	cr_assert_eq(ke_client_error(h.cli), 0);
	cr_assert_str_empty(ke_client_reason(h.cli));
	cr_assert_eq(ke_client_send(h.cli, req, 10, KE_MSG_REQUEST_PLAIN, h.now, 1), -ENOTCONN);
	cr_assert_eq(h.st.completed, 1);
	h_free(&h);
}

Test(ke_client, request_queued_during_handshake)
{
	struct h h;
	uint8_t req[256];
	h_init(&h, KE_NUMBERING_IANA, false);
	h_client(&h, false, "ntp.test");
	size_t len = plain_request(req, sizeof req, h.n);
	h.now += 100;
	cr_assert_eq(ke_client_send(h.cli, req, len, KE_MSG_REQUEST_PLAIN, h.now, 1000), 0);
	cr_assert_eq(ke_client_send(h.cli, req, len, KE_MSG_REQUEST_PLAIN, h.now, 1000), -EBUSY);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_HANDSHAKING);
	cr_assert_not(ke_client_request_sent(h.cli));
	cr_assert_eq(ke_client_deadline(h.cli), T0 + 100 + 1000, "the earlier deadline counts");
	memset(req, 0, sizeof req); /* the client keeps its own copy */

	pump(&h);
	cr_assert(ke_client_request_sent(h.cli));
	const struct ke_msg_response *r = h_response(&h, 0);
	cr_assert_eq(r->n_cookies, 8);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	h_free(&h);
}

/* Support then Fixed Key on one kept-alive connection, as an authorised pool. */
static void pool_keep_alive(enum ke_numbering n)
{
	struct h h;
	uint8_t req[512];
	uint8_t c2s[64], s2c[64];
	h_init(&h, n, false);
	h_connect(&h, true);

	h_send(&h, req, support_request(req, sizeof req, n, true), KE_MSG_REQUEST_SUPPORT);
	const struct ke_msg_response *r = h_response(&h, 0);
	cr_assert(r->keep_alive);
	cr_assert(r->has_supported_algorithms);
	cr_assert_eq(r->n_supported_algorithms, 2);
	cr_assert_eq(r->n_cookies, 0);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_READY);
	cr_assert_eq(ke_client_deadline(h.cli), 0);

	for (size_t i = 0; i < sizeof c2s; i++) {
		c2s[i] = (uint8_t)i;
		s2c[i] = (uint8_t)(0xff - i);
	}
	h.now += 10000;
	int len = ke_msg_build_fixed_key_request(req, sizeof req, n, NULL, c2s, s2c, 64, 0,
						 AEAD_AES_SIV_CMAC_512, true);
	cr_assert_gt(len, 0);
	h_send(&h, req, (size_t)len, KE_MSG_REQUEST_FIXED_KEY);
	r = h_response(&h, 0);
	cr_assert(r->keep_alive);
	cr_assert_eq(r->aead, AEAD_AES_SIV_CMAC_512);
	check_cookies(h.ks, r, c2s, s2c, 64);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_READY);

	cr_assert_eq(h.st.pool_support, 1);
	cr_assert_eq(h.st.pool_fixed_key, 1);
	cr_assert_eq(h.st.keep_alive_reuse, 1);
	cr_assert_eq(h.st.unauthorised, 0);

	/* The owner's idle timeout ends a kept connection without a failure. */
	ke_client_timeout(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	cr_assert_eq(ke_client_error(h.cli), 0);
	pump(&h);
	cr_assert(ke_server_conn_done(h.srv), "the server saw close_notify");
	h_free(&h);
}

Test(ke_client, pool_keep_alive_iana)
{
	pool_keep_alive(KE_NUMBERING_IANA);
}

Test(ke_client, pool_keep_alive_ntpdrs)
{
	pool_keep_alive(KE_NUMBERING_NTPDRS_V1);
}

/* A kept connection the server closes while idle ends cleanly. */
Test(ke_client, idle_server_close)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, false);
	h_connect(&h, true);
	h_send(&h, req, support_request(req, sizeof req, h.n, true), KE_MSG_REQUEST_SUPPORT);
	h_response(&h, 0);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_READY);
	ke_server_conn_timeout(h.srv, h.now + TIMEOUT);
	pump(&h);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	cr_assert_eq(ke_client_error(h.cli), 0);
	h_free(&h);
}

Test(ke_client, unauthorised_pool_request)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, false);
	h_connect(&h, false);
	h_send(&h, req, support_request(req, sizeof req, h.n, true), KE_MSG_REQUEST_SUPPORT);
	const struct ke_msg_response *r = h_response(&h, -EREMOTEIO);
	cr_assert(r->has_error);
	cr_assert_eq(r->error, KE_MSG_ERROR_BAD_REQUEST, "not authorised is a bad request (§3.5)");
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED, "an error never keeps the connection");
	cr_assert_eq(h.st.unauthorised, 1);
	h_free(&h);
}

Test(ke_client, wrong_server_name)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA, false);
	h_client(&h, false, "elsewhere.test");
	pump(&h);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -EACCES);
	cr_assert_str_not_empty(ke_client_reason(h.cli));
	cr_assert_eq(ke_client_deadline(h.cli), 0);
	cr_assert_eq(ke_client_input(h.cli, (const uint8_t *)"x", 1, h.now), -EACCES,
		     "failures are sticky");
	uint8_t req[64];
	cr_assert_eq(ke_client_send(h.cli, req, plain_request(req, sizeof req, h.n),
				    KE_MSG_REQUEST_PLAIN, h.now, 1),
		     -ENOTCONN);
	h_free(&h);
}

Test(ke_client, handshake_timeout)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA, false);
	h_client(&h, false, "ntp.test");
	ke_client_timeout(h.cli, T0 + TIMEOUT);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -ETIMEDOUT);
	cr_assert_str_not_empty(ke_client_reason(h.cli));
	h_free(&h);
}

Test(ke_client, server_closes_in_handshake)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA, false);
	h_client(&h, false, "ntp.test");
	ke_client_eof(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -ECONNRESET);
	h_free(&h);
}

/* ---- Against a bare TLS server ------------------------------------------------------------- */

Test(ke_client, export_matches_server)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	uint8_t c2s[64], s2c[64], sc2s[64], ss2c[64];
	cr_assert_eq(ke_client_export(h.cli, 0, 17, 64, c2s, s2c), 0);
	cr_assert_eq(tls_export_nts_keys(h.raw, 0, 17, 64, sc2s, ss2c), 0);
	cr_assert_arr_eq(c2s, sc2s, 64);
	cr_assert_arr_eq(s2c, ss2c, 64);
	cr_assert_arr_neq(c2s, s2c, 64);
	h_free(&h);
}

/* A Support response built by the raw server, with or without Keep Alive, and close_notify
 * in the same flight if asked. */
static void raw_support_response(struct h *h, bool keep_alive, bool close_notify)
{
	static const struct ke_msg_algorithm algs[] = { { 15, 32 } };
	struct ke_msg_support s = { .algorithms = true, .algs = algs, .n_algs = 1,
				    .keep_alive = keep_alive };
	uint8_t msg[128];
	int len = ke_msg_build_support_response(msg, sizeof msg, h->n, &s);
	cr_assert_gt(len, 0);
	cr_assert_eq(tls_write(h->raw, msg, (size_t)len), 0);
	if (close_notify)
		cr_assert_eq(tls_close(h->raw), 0);
	pump(h);
}

Test(ke_client, keep_alive_not_echoed)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, true);
	size_t len = support_request(req, sizeof req, h.n, true);
	h_send(&h, req, len, KE_MSG_REQUEST_SUPPORT);
	raw_expect_request(&h, len);
	raw_support_response(&h, false, false);
	const struct ke_msg_response *r = h_response(&h, 0);
	cr_assert_not(r->keep_alive);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	pump(&h);
	raw_expect_close_notify(&h);
	h_free(&h);
}

Test(ke_client, keep_alive_not_asked)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, true);
	size_t len = support_request(req, sizeof req, h.n, false);
	h_send(&h, req, len, KE_MSG_REQUEST_SUPPORT);
	raw_expect_request(&h, len);
	raw_support_response(&h, true, false);
	cr_assert(h_response(&h, 0)->keep_alive);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED, "only an agreed Keep Alive keeps it");
	pump(&h);
	raw_expect_close_notify(&h);
	h_free(&h);
}

/* Keep Alive echoed, but the server closes in the same flight: nothing is left to reuse. */
Test(ke_client, keep_alive_then_close_notify)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, true);
	size_t len = support_request(req, sizeof req, h.n, true);
	h_send(&h, req, len, KE_MSG_REQUEST_SUPPORT);
	raw_expect_request(&h, len);
	raw_support_response(&h, true, true);
	h_response(&h, 0);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	h_free(&h);
}

Test(ke_client, response_timeout)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	h.now += 50;
	size_t len = plain_request(req, sizeof req, h.n);
	h_send(&h, req, len, KE_MSG_REQUEST_PLAIN);
	cr_assert_eq(ke_client_send(h.cli, req, len, KE_MSG_REQUEST_PLAIN, h.now, 1), -EBUSY);
	raw_expect_request(&h, len);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_WAITING);
	cr_assert_eq(ke_client_deadline(h.cli), T0 + 50 + REQ_TIMEOUT);
	ke_client_timeout(h.cli, T0 + 50 + REQ_TIMEOUT);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -ETIMEDOUT);
	cr_assert_str_not_empty(ke_client_reason(h.cli));
	h_free(&h);
}

/* The first half of a real success response, then the end of the connection. */
static void truncated_response(bool close_notify)
{
	struct h h;
	uint8_t req[64], msg[2048];
	struct ke_msg_cookie cookies[8];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	size_t len = plain_request(req, sizeof req, h.n);
	h_send(&h, req, len, KE_MSG_REQUEST_PLAIN);
	raw_expect_request(&h, len);
	for (int i = 0; i < 8; i++) {
		cookies[i].len = 100;
		memset(cookies[i].data, i + 1, 100);
	}
	struct ke_msg_success s = { .protocol = 0, .aead = 15, .cookies = cookies, .n_cookies = 8 };
	int full = ke_msg_build_success(msg, sizeof msg, h.n, &s);
	cr_assert_gt(full, 0);
	cr_assert_eq(tls_write(h.raw, msg, (size_t)full / 2), 0);
	if (close_notify)
		cr_assert_eq(tls_close(h.raw), 0);
	pump(&h);
	if (!close_notify) {
		cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_WAITING);
		ke_client_eof(h.cli, h.now);
	}
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -ECONNRESET);
	cr_assert_str_not_empty(ke_client_reason(h.cli));
	h_free(&h);
}

Test(ke_client, server_closes_mid_response)
{
	truncated_response(false);
}

Test(ke_client, close_notify_mid_response)
{
	truncated_response(true);
}

/* Records that never reach End, 80 KB in all: refused once the headers pass 65536 bytes. */
Test(ke_client, oversize_response)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	size_t len = plain_request(req, sizeof req, h.n);
	h_send(&h, req, len, KE_MSG_REQUEST_PLAIN);
	raw_expect_request(&h, len);

	size_t body = 40000, total = 2 * (KE_RECORD_HEADER_LEN + body);
	uint8_t *msg = calloc(1, total);
	cr_assert(msg);
	struct wire_writer w;
	wire_writer_init(&w, msg, total);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(ke_record_put_raw(&w, false, 0x3000, zeros, body), 0);
	cr_assert_eq(tls_write(h.raw, msg, total), 0);
	free(msg);
	pump(&h);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -EMSGSIZE);
	cr_assert(strstr(ke_client_reason(h.cli), "65536"), "refused by the framing, not TLS: %s",
		  ke_client_reason(h.cli));
	h_free(&h);
}

/* The largest response a client must accept still goes through. */
Test(ke_client, response_at_the_limit)
{
	struct h h;
	uint8_t req[64];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	size_t len = plain_request(req, sizeof req, h.n);
	h_send(&h, req, len, KE_MSG_REQUEST_PLAIN);
	raw_expect_request(&h, len);

	size_t total = KE_MSG_RESPONSE_MAX;
	uint8_t *msg = calloc(1, total);
	cr_assert(msg);
	struct wire_writer w;
	wire_writer_init(&w, msg, total);
	static const uint8_t cookie[4] = { 1, 2, 3, 4 };
	cr_assert_eq(ke_record_put_u16_list(&w, h.n, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1), 0);
	cr_assert_eq(ke_record_put_u16_list(&w, h.n, KE_RECORD_AEAD, siv256, 1), 0);
	cr_assert_eq(ke_record_put(&w, h.n, KE_RECORD_NEW_COOKIE, cookie, sizeof cookie), 0);
	size_t pad = total - 12 - 8 - 2 * KE_RECORD_HEADER_LEN;
	cr_assert_eq(ke_record_put_raw(&w, false, 0x3000, zeros, pad), 0);
	cr_assert_eq(ke_record_put(&w, h.n, KE_RECORD_END, NULL, 0), 0);
	cr_assert_eq(wire_written(&w), total);
	cr_assert_eq(tls_write(h.raw, msg, total), 0);
	free(msg);
	pump(&h);
	const struct ke_msg_response *r = h_response(&h, 0);
	cr_assert_eq(r->n_cookies, 1);
	cr_assert_eq(r->ignored, 1);
	h_free(&h);
}

Test(ke_client, data_without_request)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	cr_assert_eq(tls_write(h.raw, "\x80\0\0\0", 4), 0);
	pump(&h);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -EPROTO);
	cr_assert_str_eq(ke_client_reason(h.cli), "data without a request");
	h_free(&h);
}

/* A server that sends more than one message per request is not trusted with either. */
Test(ke_client, data_after_response)
{
	struct h h;
	uint8_t req[64], msg[256];
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, true);
	size_t len = support_request(req, sizeof req, h.n, true);
	h_send(&h, req, len, KE_MSG_REQUEST_SUPPORT);
	raw_expect_request(&h, len);
	static const struct ke_msg_algorithm algs[] = { { 15, 32 } };
	struct ke_msg_support s = { .algorithms = true, .algs = algs, .n_algs = 1,
				    .keep_alive = true };
	int n = ke_msg_build_support_response(msg, sizeof msg, h.n, &s);
	cr_assert_gt(n, 0);
	memcpy(msg + n, msg, (size_t)n);
	cr_assert_eq(tls_write(h.raw, msg, 2 * (size_t)n), 0);
	pump(&h);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_FAILED);
	cr_assert_eq(ke_client_error(h.cli), -EPROTO);
	cr_assert_str_eq(ke_client_reason(h.cli), "data after the response");
	h_free(&h);
}

Test(ke_client, close_while_ready)
{
	struct h h;
	uint8_t req[KE_MSG_REQUEST_MAX + 1] = { 0 };
	h_init(&h, KE_NUMBERING_IANA, true);
	h_connect(&h, false);
	cr_assert_eq(ke_client_send(h.cli, req, 0, KE_MSG_REQUEST_PLAIN, h.now, 1), -EINVAL);
	cr_assert_eq(ke_client_send(h.cli, req, sizeof req, KE_MSG_REQUEST_PLAIN, h.now, 1),
		     -EINVAL);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_READY);
	ke_client_close(h.cli);
	ke_client_close(h.cli);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	pump(&h);
	raw_expect_close_notify(&h);
	h_free(&h);
}

/* ---- Against a GnuTLS server that sends post-handshake messages ----------------------------- */

/* A plain GnuTLS server over byte buffers moved by hand. With tickets it behaves like OpenSSL's and
 * Go's defaults (NewSessionTicket after the handshake); ours never sends any (GNUTLS_NO_TICKETS).
 * It requests a client certificate as ours does, which makes GnuTLS send its tickets after the
 * client's Finished rather than with its own first flight. */
struct tsrv {
	struct tu_tls_raw *raw;
	gnutls_datum_t ticket_key;
	unsigned tickets, key_updates, peer_key_updates; /* seen by the handshake hook */
};

static int tsrv_hook(gnutls_session_t gs, unsigned htype, unsigned when, unsigned incoming,
		     const gnutls_datum_t *msg)
{
	struct tsrv *t = gnutls_session_get_ptr(gs);
	(void)when;
	(void)msg;
	if (htype == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET && !incoming)
		t->tickets++;
	else if (htype == GNUTLS_HANDSHAKE_KEY_UPDATE)
		++*(incoming ? &t->peer_key_updates : &t->key_updates);
	return 0;
}

static void tsrv_init(struct tsrv *t, bool tickets)
{
	memset(t, 0, sizeof *t);
	t->raw = tu_tls_raw_server(dir, "server", GNUTLS_NONBLOCK, "NORMAL:-VERS-ALL:+VERS-TLS1.3",
				   TLS_ALPN);
	gnutls_session_t gs = t->raw->gs;
	gnutls_certificate_server_set_request(gs, GNUTLS_CERT_REQUEST);
	if (tickets) {
		cr_assert_eq(gnutls_session_ticket_key_generate(&t->ticket_key), 0);
		cr_assert_eq(gnutls_session_ticket_enable_server(gs, &t->ticket_key), 0);
	}
	gnutls_session_set_ptr(gs, t);
	gnutls_handshake_set_hook_function(gs, GNUTLS_HANDSHAKE_ANY, GNUTLS_HOOK_POST, tsrv_hook);
}

static void tsrv_deinit(struct tsrv *t)
{
	tu_tls_raw_free(t->raw);
	if (t->ticket_key.data) {
		gnutls_memset(t->ticket_key.data, 0, t->ticket_key.size);
		gnutls_free(t->ticket_key.data);
	}
}

static void cli_to_tsrv(struct h *h, struct tsrv *t)
{
	struct tu_tls_end cli = cli_end(h), srv = tu_tls_raw_end(t->raw);
	tu_tls_move(&cli, &srv);
}

/* Everything the server has sent, handed to the client in one input (one TCP segment). */
static void tsrv_to_cli(struct h *h, struct tsrv *t)
{
	struct tu_tls_raw *r = t->raw;
	cr_assert_gt(r->out_len, 0);
	cr_assert_eq(ke_client_input(h->cli, r->out, r->out_len, h->now), 0, "%s",
		     ke_client_reason(h->cli));
	r->out_len = 0;
}

/* The client READY with `req` sent behind its Finished; the server's handshake done, which
 * leaves its tickets (if any) in t->raw->out. */
static void tsrv_connect_and_send(struct h *h, struct tsrv *t, const uint8_t *req, size_t len,
				  enum ke_msg_request_kind kind)
{
	h_client(h, false, "ntp.test");
	cli_to_tsrv(h, t);
	cr_assert_eq(gnutls_handshake(t->raw->gs), GNUTLS_E_AGAIN);
	tsrv_to_cli(h, t);
	cr_assert_eq(ke_client_state(h->cli), KE_CLIENT_READY, "%s", ke_client_reason(h->cli));
	cr_assert_eq(ke_client_send(h->cli, req, len, kind, h->now, REQ_TIMEOUT), 0);
	cli_to_tsrv(h, t);
	cr_assert_eq(gnutls_handshake(t->raw->gs), 0);
}

/* The server reads one whole request of `want` bytes. */
static void tsrv_expect_request(struct tsrv *t, size_t want)
{
	uint8_t buf[KE_MSG_REQUEST_MAX];
	size_t have = 0;
	while (have < want) {
		ssize_t n = tu_tls_raw_recv(t->raw, buf + have, sizeof buf - have);
		cr_assert_gt(n, 0, "request incomplete (%zd)", n);
		have += (size_t)n;
	}
	cr_assert_eq(ke_msg_frame(buf, have, KE_MSG_REQUEST_MAX), (int)want);
}

/* A success response with 8 cookies (cookie i is 100 bytes of i + 1), then close_notify unless
 * Keep Alive is echoed. */
static void tsrv_respond(struct tsrv *t, enum ke_numbering n, bool keep_alive)
{
	struct ke_msg_cookie cookies[8];
	uint8_t msg[2048];
	for (int i = 0; i < 8; i++) {
		cookies[i].len = 100;
		memset(cookies[i].data, i + 1, 100);
	}
	struct ke_msg_success s = { .protocol = 0, .aead = 15, .cookies = cookies, .n_cookies = 8,
				    .keep_alive = keep_alive };
	int len = ke_msg_build_success(msg, sizeof msg, n, &s);
	cr_assert_gt(len, 0);
	cr_assert_eq(gnutls_record_send(t->raw->gs, msg, (size_t)len), len);
	if (!keep_alive)
		cr_assert_eq(gnutls_bye(t->raw->gs, GNUTLS_SHUT_WR), 0);
}

static void check_tsrv_cookies(struct h *h)
{
	const struct ke_msg_response *r = h_response(h, 0);
	cr_assert_eq(r->aead, AEAD_AES_SIV_CMAC_256);
	cr_assert_eq(r->n_cookies, 8);
	for (size_t i = 0; i < 8; i++) {
		cr_assert_eq(r->cookies[i].len, 100);
		cr_assert_eq(r->cookies[i].data[0], i + 1);
		cr_assert_eq(r->cookies[i].data[99], i + 1);
	}
}

enum ticket_timing {
	TICKETS_WITH_RESPONSE,	 /* one segment: the tickets, the response, close_notify */
	TICKETS_BEFORE_RESPONSE, /* the tickets while the request is out, the response later */
	TICKETS_WITH_HANDSHAKE,	 /* the tickets behind the server's first flight */
};

static void ticket_exchange(enum ticket_timing when)
{
	struct h h = { .n = KE_NUMBERING_IANA, .now = T0 };
	struct tsrv t;
	uint8_t req[64];
	tsrv_init(&t, true);
	/* Asking no client certificate, GnuTLS sends its tickets with its first flight. */
	if (when == TICKETS_WITH_HANDSHAKE)
		gnutls_certificate_server_set_request(t.raw->gs, GNUTLS_CERT_IGNORE);
	size_t len = plain_request(req, sizeof req, h.n);
	tsrv_connect_and_send(&h, &t, req, len, KE_MSG_REQUEST_PLAIN);
	cr_assert_geq(t.tickets, 1, "no ticket was sent: the test would prove nothing");
	cr_assert_eq(t.raw->out_len > 0, when != TICKETS_WITH_HANDSHAKE,
		     "tickets sent at another time");
	if (when == TICKETS_BEFORE_RESPONSE) {
		tsrv_to_cli(&h, &t);
		cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_WAITING, "%s",
			     ke_client_reason(h.cli));
	}
	tsrv_expect_request(&t, len);
	tsrv_respond(&t, h.n, false);
	tsrv_to_cli(&h, &t);
	/* The FIN that follows close_notify: by now the response must be complete. */
	ke_client_eof(h.cli, h.now);
	check_tsrv_cookies(&h);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_CLOSED);
	tsrv_deinit(&t);
	h_free(&h);
}

Test(ke_client, ticket_and_response_in_one_segment)
{
	ticket_exchange(TICKETS_WITH_RESPONSE);
}

Test(ke_client, ticket_then_response_in_later_segment)
{
	ticket_exchange(TICKETS_BEFORE_RESPONSE);
}

/* GnuTLS's own default for a server that asks no certificate ("early start"): the tickets queue
 * behind the handshake, and the client reads them while idle, before any request is out. */
Test(ke_client, tickets_in_handshake_flight)
{
	ticket_exchange(TICKETS_WITH_HANDSHAKE);
}

/* A KeyUpdate asking ours in return, in the segment of the response, on a kept connection: the
 * response reads under the server's new key, and the next request goes out under ours. */
Test(ke_client, key_update_before_response)
{
	struct h h = { .n = KE_NUMBERING_IANA, .now = T0 };
	struct tsrv t;
	uint8_t req[256], c2s[32], s2c[32];
	memset(c2s, 0x11, sizeof c2s);
	memset(s2c, 0x22, sizeof s2c);
	tsrv_init(&t, false);
	int len = ke_msg_build_fixed_key_request(req, sizeof req, h.n, NULL, c2s, s2c, 32, 0,
						 AEAD_AES_SIV_CMAC_256, true);
	cr_assert_gt(len, 0);
	tsrv_connect_and_send(&h, &t, req, (size_t)len, KE_MSG_REQUEST_FIXED_KEY);
	cr_assert_eq(t.raw->out_len, 0,
		     "no tickets: the KeyUpdate is the only post-handshake message");
	tsrv_expect_request(&t, (size_t)len);
	cr_assert_eq(gnutls_session_key_update(t.raw->gs, GNUTLS_KU_PEER), 0);
	cr_assert_eq(t.key_updates, 1);
	tsrv_respond(&t, h.n, true);
	tsrv_to_cli(&h, &t);
	check_tsrv_cookies(&h);
	cr_assert(h_response(&h, 0)->keep_alive);
	ke_client_response_done(h.cli, h.now);
	cr_assert_eq(ke_client_state(h.cli), KE_CLIENT_READY, "%s", ke_client_reason(h.cli));

	cr_assert_eq(ke_client_send(h.cli, req, (size_t)len, KE_MSG_REQUEST_FIXED_KEY, h.now,
				    REQ_TIMEOUT), 0);
	cli_to_tsrv(&h, &t);
	tsrv_expect_request(&t, (size_t)len);
	cr_assert_eq(t.peer_key_updates, 1, "the client updated its key as asked");
	tsrv_respond(&t, h.n, false);
	tsrv_to_cli(&h, &t);
	check_tsrv_cookies(&h);
	tsrv_deinit(&t);
	h_free(&h);
}
