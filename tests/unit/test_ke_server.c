/* The NTS-KE server's state machine against a real TLS 1.3 client in memory: ciphertext pumped
 * both ways by hand, certificates from test-keys/gen-cert.sh, explicit time. Every test checks
 * the bytes the client reads back and the listener's counters. */
#include "ke_server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "ke_msg.h"
#include "keyset.h"
#include "log.h"
#include "pool_proto.h"
#include "testutil.h"
#include "tls.h"
#include "tls_testutil.h"
#include "wire.h"

#define T0 1000
#define TIMEOUT 5000

static char *dir;
static FILE *log_file;

static void setup(void)
{
	/* Every debug line is formatted, so its arguments are checked under the sanitizers; the
	 * lines are kept (each test runs in its own process) so the token tests can show that no
	 * token is ever logged. */
	log_file = tmpfile();
	cr_assert(log_file);
	log_set_stream(log_file);
	log_set_level(LOG_LEVEL_DEBUG);
	dir = tu_tempdir();
	tu_gen_cert(dir, "server --dns ntp.test");
	tu_gen_cert(dir, "pool --dns pool.test");
	tu_gen_cert(dir, "other --dns other.test");
}

static void teardown(void)
{
	tu_rmtree(dir);
	free(dir);
	log_set_stream(NULL);
	fclose(log_file);
}

TestSuite(ke_server, .init = setup, .fini = teardown);

/* Everything the server sent and the client read, kept by the token tests to show that no
 * token ever leaves the server. */
#define SEEN_MAX (256 * 1024)

/* One connection: our client session, the state machine, its keyset and token slots and
 * counters. */
struct h {
	struct tls_creds *sc;
	struct tls_session *cli;
	struct ke_server_conn *srv;
	struct keyset *ks;
	struct pool_tokens *tokens; /* the slot cfg.tokens points at (h_init_auth) */
	struct ke_server_stats st;
	struct ke_server_config cfg;
	uint64_t now;
	uint8_t *seen; /* NULL unless recorded */
	size_t seen_len;
};

static const char *const pool_pin[] = { "pool.pem" };

/* pin: pool.pem is an authorised pool certificate. */
static struct tls_creds *server_creds(bool pin)
{
	return tu_tls_server_creds(dir, "server", pool_pin, pin ? 1 : 0);
}

static void h_init(struct h *h, enum ke_numbering n)
{
	memset(h, 0, sizeof *h);
	uint8_t keys[KEYSET_KEY_LEN];
	struct tu_rng rng;
	tu_rng_seed(&rng, 7);
	tu_rng_fill(&rng, keys, sizeof keys);
	cr_assert_eq(keyset_from_keys(&h->ks, 0, 0, 1, keys, 0), 0);
	h->sc = server_creds(true);
	h->cfg = (struct ke_server_config){ .numbering = n, .timeout_ms = TIMEOUT };
	h->now = T0;
}

static void record(struct h *h, const uint8_t *p, size_t n)
{
	if (!h->seen)
		return;
	cr_assert_leq(n, SEEN_MAX - h->seen_len);
	memcpy(h->seen + h->seen_len, p, n);
	h->seen_len += n;
}

/* The state machine; the client session is made by h_connect. */
static void h_start(struct h *h)
{
	cr_assert_eq(ke_server_conn_new(&h->srv, h->sc, &h->cfg, &h->ks, &h->st, h->now), 0);
	ke_server_conn_set_peer(h->srv, "192.0.2.1:40000");
}

static void h_free(struct h *h)
{
	ke_server_conn_free(h->srv);
	tls_free(h->cli);
	tls_creds_unref(h->sc);
	keyset_unref(h->ks);
	pool_tokens_unref(h->tokens);
	free(h->seen);
}

TU_TLS_MACHINE_END(srv_machine, struct h, srv, ke_server_conn)

static void srv_sent(void *ctx, const uint8_t *p, size_t n)
{
	record(ctx, p, n);
}

/* The state machine as the pump's end; what it sends is recorded on the way out. */
static struct tu_tls_end srv_end(struct h *h)
{
	struct tu_tls_end e = srv_machine(h);
	e.sent = srv_sent;
	return e;
}

/* Moves ciphertext both ways until neither side has anything to say. */
static void pump(struct h *h)
{
	struct tu_tls_end cli = tu_tls_session_end(h->cli), srv = srv_end(h);
	tu_tls_pump(&cli, &srv);
}

static void h_connect(struct h *h, const char *client_cert)
{
	h_start(h);
	h->cli = tu_tls_client_session(dir, client_cert, "ntp.test");
	pump(h);
	cr_assert_eq(tls_state(h->cli), TLS_ESTABLISHED, "%s", tls_reason(h->cli));
	cr_assert_not(ke_server_conn_done(h->srv), "%s", ke_server_conn_reason(h->srv));
}

static void h_send(struct h *h, const uint8_t *msg, size_t len)
{
	cr_assert_eq(tls_write(h->cli, msg, len), 0);
	pump(h);
}

/* One whole response; fails the test if none is there. */
static size_t h_recv(struct h *h, uint8_t *buf, size_t cap)
{
	size_t have = 0;
	for (;;) {
		int framed = ke_msg_frame(buf, have, KE_MSG_RESPONSE_MAX);
		cr_assert_geq(framed, 0);
		if (framed > 0) {
			cr_assert_eq((size_t)framed, have, "nothing after the response");
			record(h, buf, have);
			return have;
		}
		ssize_t n = tls_read(h->cli, buf + have, cap - have);
		cr_assert_gt(n, 0, "no response (%zd)", n);
		have += (size_t)n;
	}
}

/* After a response: whether the server closed the session (close_notify) or kept it. */
static bool h_server_closed(struct h *h)
{
	uint8_t b[16];
	ssize_t n = tls_read(h->cli, b, sizeof b);
	cr_assert(n == 0 || n == -EAGAIN, "unexpected %zd", n);
	return n == 0;
}

/* Error(code), End, then close_notify. */
static void expect_error_reply(struct h *h, uint16_t code)
{
	uint8_t buf[256];
	const uint8_t want[] = { 0x80, 0x02, 0x00, 0x02, 0x00, (uint8_t)code, 0x80, 0, 0, 0 };
	size_t len = h_recv(h, buf, sizeof buf);
	cr_assert_eq(len, sizeof want);
	cr_assert_arr_eq(buf, want, sizeof want);
	cr_assert(h_server_closed(h));
	cr_assert(ke_server_conn_done(h->srv));
}

/* The connection's only answer was Error(code). */
static void expect_error(struct h *h, uint16_t code)
{
	expect_error_reply(h, code);
	cr_assert_eq(h->st.errors[code], 1);
	cr_assert_eq(h->st.completed, 0);
}

static void parse_ok(const uint8_t *buf, size_t len, enum ke_numbering n,
		     enum ke_msg_request_kind asked, struct ke_msg_response *r)
{
	int rc = ke_msg_parse_response(buf, len, n, asked, r);
	cr_assert_eq(rc, 0, "response refused: %d", rc);
}

static const uint16_t ntpv4[] = { KE_MSG_PROTOCOL_NTPV4 };

static size_t plain_request(uint8_t *buf, size_t cap, enum ke_numbering n, const uint16_t *aeads,
			    size_t n_aeads)
{
	int len = ke_msg_build_request(buf, cap, n, ntpv4, 1, aeads, n_aeads, NULL, 0);
	cr_assert_gt(len, 0);
	return (size_t)len;
}

/* The cookies of a parsed response open under ks to exactly c2s/s2c, sealed by key id. */
static void check_cookies(struct keyset *ks, const struct ke_msg_response *r, uint16_t aead,
			  const uint8_t *c2s, const uint8_t *s2c, uint32_t key_id)
{
	size_t key_len = aead_key_len(aead);
	cr_assert_eq(r->n_cookies, 8);
	for (size_t i = 0; i < r->n_cookies; i++) {
		uint8_t oc2s[AEAD_MAX_KEY_LEN], os2c[AEAD_MAX_KEY_LEN];
		uint16_t id;
		size_t kl;
		const uint8_t *ck = r->cookies[i].data;
		cr_assert_eq(r->cookies[i].len, keyset_cookie_len(aead));
		cr_assert_eq(((uint32_t)ck[0] << 24 | ck[1] << 16 | ck[2] << 8 | ck[3]), key_id);
		int rc = keyset_open_cookie(ks, ck, r->cookies[i].len, &id, oc2s, os2c, &kl);
		cr_assert_eq(rc, 0);
		cr_assert_eq(id, aead);
		cr_assert_eq(kl, key_len);
		cr_assert_arr_eq(oc2s, c2s, key_len);
		cr_assert_arr_eq(os2c, s2c, key_len);
		if (i > 0)
			cr_assert_arr_neq(ck, r->cookies[0].data, r->cookies[i].len);
	}
}

/* A plain exchange for the client's AEAD list; returns the AEAD the server chose after checking
 * the cookies against the client's own export. */
static uint16_t plain_exchange(const uint16_t *aeads, size_t n_aeads)
{
	struct h h;
	uint8_t buf[KE_MSG_RESPONSE_MAX];
	struct ke_msg_response r;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	h_send(&h, buf, plain_request(buf, sizeof buf, KE_NUMBERING_IANA, aeads, n_aeads));
	size_t len = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, len, KE_NUMBERING_IANA, KE_MSG_REQUEST_PLAIN, &r);
	cr_assert(r.has_aead);
	uint8_t c2s[64], s2c[64];
	size_t kl = aead_key_len(r.aead);
	cr_assert_eq(tls_export_nts_keys(h.cli, 0, r.aead, kl, c2s, s2c), 0);
	check_cookies(h.ks, &r, r.aead, c2s, s2c, 0);
	cr_assert_not(r.has_port);
	cr_assert_not(r.has_server);
	cr_assert_not(r.keep_alive);
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.completed, 1);
	h_free(&h);
	return r.aead;
}

Test(ke_server, plain_success_layout)
{
	struct h h;
	uint8_t buf[KE_MSG_RESPONSE_MAX];
	static const uint16_t aeads[] = { AEAD_AES_SIV_CMAC_256 };
	h_init(&h, KE_NUMBERING_IANA);
	h.cfg.ntp_port = 4123;
	h.cfg.ntp_server = "time.test";
	h_connect(&h, NULL);
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + TIMEOUT);
	h_send(&h, buf, plain_request(buf, sizeof buf, KE_NUMBERING_IANA, aeads, 1));
	size_t len = h_recv(&h, buf, sizeof buf);

	cr_assert_eq(len, 12 + 8 * (4 + 104) + 6 + 13 + 4);
	static const uint8_t head[] = { 0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 2, 0, 15 };
	cr_assert_arr_eq(buf, head, sizeof head);
	uint8_t c2s[32], s2c[32];
	cr_assert_eq(tls_export_nts_keys(h.cli, 0, 15, 32, c2s, s2c), 0);
	const uint8_t *p = buf + sizeof head;
	for (int i = 0; i < 8; i++, p += 108) {
		static const uint8_t cookie_head[] = { 0x00, 5, 0, 104 };
		cr_assert_arr_eq(p, cookie_head, 4, "cookie %d: New Cookie, C=0", i);
		uint8_t oc2s[64], os2c[64];
		uint16_t id;
		size_t kl;
		cr_assert_eq(keyset_open_cookie(h.ks, p + 4, 104, &id, oc2s, os2c, &kl), 0);
		cr_assert_eq(id, 15);
		cr_assert_eq(kl, 32);
		cr_assert_arr_eq(oc2s, c2s, 32);
		cr_assert_arr_eq(os2c, s2c, 32);
	}
	static const uint8_t tail[] = { 0x80, 7, 0, 2, 0x10, 0x1b, 0x80, 6, 0, 9,  't', 'i',
					'm',  'e', '.', 't', 'e',  's',  't',  0x80, 0, 0, 0 };
	cr_assert_arr_eq(p, tail, sizeof tail);
	cr_assert(h_server_closed(&h), "close_notify follows the response");
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(ke_server_conn_deadline(h.srv), 0);
	cr_assert_eq(h.st.sessions, 1);
	cr_assert_eq(h.st.completed, 1);
	cr_assert_eq(h.st.errors[0] + h.st.errors[1] + h.st.errors[2], 0);
	cr_assert_eq(h.st.no_overlap + h.st.timeouts + h.st.tls_failures + h.st.unauthorised, 0);
	cr_assert_str_empty(ke_server_conn_reason(h.srv));
	h_free(&h);
}

Test(ke_server, aead_preference_is_the_clients)
{
	static const uint16_t a17_15[] = { 17, 15 }, a15_17[] = { 15, 17 }, a30_17[] = { 30, 17 };
	cr_assert_eq(plain_exchange(a17_15, 2), 17);
	cr_assert_eq(plain_exchange(a15_17, 2), 15);
	cr_assert_eq(plain_exchange(a30_17, 2), 17, "an AEAD we lack is skipped");
}

static void no_overlap_case(const uint16_t *protocols, size_t n_protocols, const uint16_t *aeads,
			    size_t n_aeads, const uint8_t *want, size_t want_len)
{
	struct h h;
	uint8_t buf[512];
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	int len = ke_msg_build_request(buf, sizeof buf, KE_NUMBERING_IANA, protocols, n_protocols,
				       aeads, n_aeads, NULL, 0);
	cr_assert_gt(len, 0);
	h_send(&h, buf, (size_t)len);
	cr_assert_eq(h_recv(&h, buf, sizeof buf), want_len);
	cr_assert_arr_eq(buf, want, want_len);
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.no_overlap, 1);
	cr_assert_eq(h.st.completed, 0);
	h_free(&h);
}

Test(ke_server, no_overlap)
{
	static const uint16_t other_protocols[] = { 1, 0x7f00 }, aeads[] = { 15 },
			      unknown_aeads[] = { 30, 1 };
	static const uint8_t no_protocol[] = { 0x80, 1, 0, 0, 0x80, 0, 0, 0 };
	static const uint8_t no_aead[] = { 0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 0, 0x80, 0, 0, 0 };
	no_overlap_case(other_protocols, 2, aeads, 1, no_protocol, sizeof no_protocol);
	no_overlap_case(ntpv4, 1, unknown_aeads, 2, no_aead, sizeof no_aead);
}

/* A hand-written request. */
struct raw_msg {
	uint8_t buf[8192];
	struct wire_writer w;
};

static void raw_begin(struct raw_msg *m)
{
	wire_writer_init(&m->w, m->buf, sizeof m->buf);
}

static void raw_list(struct raw_msg *m, enum ke_record_kind kind, const uint16_t *ids, size_t n)
{
	cr_assert_eq(ke_record_put_u16_list(&m->w, KE_NUMBERING_IANA, kind, ids, n), 0);
}

static void raw_put(struct raw_msg *m, bool critical, uint16_t type, const void *body, size_t len)
{
	cr_assert_eq(ke_record_put_raw(&m->w, critical, type, body, len), 0);
}

static void send_raw_expect_error(struct raw_msg *m, const char *client, uint16_t code)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, client);
	h_send(&h, m->buf, wire_written(&m->w));
	expect_error(&h, code);
	cr_assert_eq(h.st.unauthorised, 0);
	h_free(&h);
}

Test(ke_server, malformed_requests)
{
	static const uint16_t aeads[] = { 15 };
	const uint8_t odd[3] = { 0, 0, 0 }, cookie[8] = { 1 }, two[2] = { 0, 1 };
	struct raw_msg m;

	/* Unknown critical record, otherwise valid: Error 0 — but not an unauthorised pool. */
	raw_begin(&m);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0x1234, NULL, 0);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 0);

	raw_begin(&m); /* duplicate Next Protocol */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 1);

	raw_begin(&m); /* no Next Protocol */
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 1);

	raw_begin(&m); /* NTPv4 without AEAD */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 1);

	raw_begin(&m); /* odd list length */
	raw_put(&m, true, 1, odd, sizeof odd);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 1);

	raw_begin(&m); /* a New Cookie from a client */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, false, 5, cookie, sizeof cookie);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 1);

	raw_begin(&m); /* End with a body: refused by the framing itself */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0, two, sizeof two);
	send_raw_expect_error(&m, NULL, 1);

	raw_begin(&m); /* an Error record from a client */
	raw_put(&m, true, 2, two, sizeof two);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 1);
}

Test(ke_server, unknown_noncritical_record_ignored)
{
	struct h h;
	struct raw_msg m;
	static const uint16_t aeads[] = { 17 };
	struct ke_msg_response r;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	raw_begin(&m);
	raw_put(&m, false, 0x2345, "abc", 3);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aeads, 1);
	raw_put(&m, true, 0, NULL, 0);
	h_send(&h, m.buf, wire_written(&m.w));
	size_t len = h_recv(&h, m.buf, sizeof m.buf);
	parse_ok(m.buf, len, KE_NUMBERING_IANA, KE_MSG_REQUEST_PLAIN, &r);
	cr_assert_eq(r.aead, 17);
	cr_assert_eq(h.st.completed, 1);
	h_free(&h);
}

Test(ke_server, oversize_request)
{
	/* One record whose header alone proves the request too long. */
	struct raw_msg m;
	static const uint8_t filler[4200];
	raw_begin(&m);
	raw_put(&m, false, 0x2345, filler, sizeof filler);
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	h_send(&h, m.buf, 8);
	expect_error(&h, 1);
	h_free(&h);

	/* Many small records: the 4096th byte passes without an End. */
	raw_begin(&m);
	for (int i = 0; i < 41; i++)
		raw_put(&m, false, 0x2345, filler, 96);
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	for (size_t off = 0; off < wire_written(&m.w); off += 500) {
		size_t n = wire_written(&m.w) - off < 500 ? wire_written(&m.w) - off : 500;
		cr_assert_not(ke_server_conn_done(h.srv), "refused before 4096 bytes");
		h_send(&h, m.buf + off, n);
	}
	expect_error(&h, 1);
	h_free(&h);
}

Test(ke_server, truncated_request_at_timeout)
{
	struct h h;
	uint8_t buf[256];
	static const uint16_t aeads[] = { 15 };
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	size_t len = plain_request(buf, sizeof buf, KE_NUMBERING_IANA, aeads, 1);
	h_send(&h, buf, len - 2);
	cr_assert_not(ke_server_conn_done(h.srv));
	cr_assert(!h_server_closed(&h), "nothing is answered to half a request");
	h.now = ke_server_conn_deadline(h.srv);
	ke_server_conn_timeout(h.srv, h.now);
	pump(&h);
	expect_error(&h, 1);
	cr_assert_eq(h.st.timeouts, 1);
	h_free(&h);
}

Test(ke_server, partial_request_then_eof)
{
	struct h h;
	uint8_t buf[256];
	static const uint16_t aeads[] = { 15 };
	size_t len = plain_request(buf, sizeof buf, KE_NUMBERING_IANA, aeads, 1);

	/* The socket's read side ends. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	h_send(&h, buf, 5);
	ke_server_conn_eof(h.srv, h.now);
	pump(&h);
	expect_error(&h, 1);
	cr_assert_eq(h.st.timeouts, 0);
	h_free(&h);

	/* close_notify from the client inside TLS. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	cr_assert_eq(tls_write(h.cli, buf, len - 1), 0);
	cr_assert_eq(tls_close(h.cli), 0);
	pump(&h);
	expect_error(&h, 1);
	h_free(&h);

	/* Nothing sent at all: just the end. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	ke_server_conn_eof(h.srv, h.now);
	pump(&h);
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.errors[1] + h.st.timeouts + h.st.completed, 0);
	h_free(&h);
}

/* The handshake has its own, shorter deadline; once it is done the session's applies, counted
 * from the start. */
Test(ke_server, handshake_deadline_then_session_deadline)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h.cfg.handshake_timeout_ms = 300;
	h_start(&h);
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + 300, "the handshake's deadline first");
	h.cli = tu_tls_client_session(dir, NULL, "ntp.test");
	pump(&h);
	cr_assert_eq(tls_state(h.cli), TLS_ESTABLISHED, "%s", tls_reason(h.cli));
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + TIMEOUT, "then the session's");
	h_free(&h);

	/* A handshake deadline beyond the session's changes nothing. */
	h_init(&h, KE_NUMBERING_IANA);
	h.cfg.handshake_timeout_ms = TIMEOUT * 2;
	h_start(&h);
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + TIMEOUT);
	h_free(&h);
}

Test(ke_server, timeouts_before_and_after_handshake)
{
	struct h h;

	/* Nothing ever arrived. */
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	ke_server_conn_timeout(h.srv, T0 + TIMEOUT);
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(h.st.timeouts, 1);
	const uint8_t *p;
	size_t n;
	ke_server_conn_output(h.srv, &p, &n);
	cr_assert_eq(n, 0);
	h_free(&h);

	/* A ClientHello and no more. */
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	h.cli = tu_tls_client_session(dir, NULL, "ntp.test");
	tls_step(h.cli);
	tls_output(h.cli, &p, &n);
	cr_assert_gt(n, 0);
	cr_assert_eq(ke_server_conn_input(h.srv, p, n, h.now), 0);
	cr_assert_not(ke_server_conn_done(h.srv));
	ke_server_conn_timeout(h.srv, T0 + TIMEOUT);
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(h.st.timeouts, 1);
	cr_assert_eq(h.st.errors[1] + h.st.tls_failures, 0);
	h_free(&h);

	/* Handshake done, no request byte: close_notify, no Error. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, NULL);
	ke_server_conn_timeout(h.srv, T0 + TIMEOUT);
	pump(&h);
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.timeouts, 1);
	cr_assert_eq(h.st.errors[0] + h.st.errors[1] + h.st.errors[2], 0);
	h_free(&h);
}

Test(ke_server, unauthorised_pool_requests)
{
	/* Neither a pinned certificate nor a token: Error 1 (PROTOCOL.md §3.5 replaced the Error 0
	 * of §3.4), counted as unauthorised but not as a refused token, since none was offered. */
	static const char *const clients[] = { NULL, "other" };
	uint8_t key[64] = { 9 };
	for (size_t i = 0; i < 2; i++) {
		struct h h;
		uint8_t buf[512];
		h_init(&h, KE_NUMBERING_IANA);
		h_connect(&h, clients[i]);
		int len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL,
						       true, true, true);
		cr_assert_gt(len, 0);
		h_send(&h, buf, (size_t)len);
		expect_error(&h, 1);
		cr_assert_eq(h.st.unauthorised, 1);
		cr_assert_eq(h.st.token_refused, 0, "no token was offered");
		cr_assert_eq(h.st.pool_support, 0);
		cr_assert_eq(h.st.pool_auth_certificate + h.st.pool_auth_token, 0);
		h_free(&h);

		h_init(&h, KE_NUMBERING_IANA);
		h_connect(&h, clients[i]);
		len = ke_msg_build_fixed_key_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, key,
						     key, 64, 0, 17, false);
		cr_assert_gt(len, 0);
		h_send(&h, buf, (size_t)len);
		expect_error(&h, 1);
		cr_assert_eq(h.st.unauthorised, 1);
		cr_assert_eq(h.st.token_refused, 0);
		cr_assert_eq(h.st.pool_fixed_key, 0);
		cr_assert_eq(h.st.pool_auth_certificate + h.st.pool_auth_token, 0);
		h_free(&h);
	}
}

Test(ke_server, unknown_critical_beside_pool_record_is_not_unauthorised)
{
	/* Authorisation alone would not have saved this request, so it is a plain Error 0. */
	struct raw_msg m;
	raw_begin(&m);
	cr_assert_eq(ke_record_put(&m.w, KE_NUMBERING_IANA, KE_RECORD_SUPPORTED_ALGORITHMS, NULL,
				   0), 0);
	raw_put(&m, true, 0x1234, NULL, 0);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, NULL, 0);
}

Test(ke_server, authorised_support)
{
	struct h h;
	uint8_t buf[512];
	struct ke_msg_response r;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	int len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, true, true,
					       false);
	cr_assert_gt(len, 0);
	h_send(&h, buf, (size_t)len);
	size_t rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert(r.has_supported_protocols);
	cr_assert_eq(r.n_supported_protocols, 1);
	cr_assert_eq(r.supported_protocols[0], 0);
	cr_assert(r.has_supported_algorithms);
	cr_assert_eq(r.n_supported_algorithms, 2);
	cr_assert_eq(r.supported_algorithms[0].id, 15);
	cr_assert_eq(r.supported_algorithms[0].key_len, 32);
	cr_assert_eq(r.supported_algorithms[1].id, 17);
	cr_assert_eq(r.supported_algorithms[1].key_len, 64);
	cr_assert_eq(r.n_cookies, 0);
	cr_assert_not(r.keep_alive);
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.pool_support, 1);
	cr_assert_eq(h.st.completed, 0);
	cr_assert_eq(h.st.keep_alive_reuse, 0);
	h_free(&h);

	/* Only the list asked for. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, false, true,
					   false);
	h_send(&h, buf, (size_t)len);
	rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert_not(r.has_supported_protocols);
	cr_assert(r.has_supported_algorithms);
	h_free(&h);
}

/* token: NULL for none, else the first record. */
static size_t fixed_key_request(uint8_t *buf, size_t cap, enum ke_numbering n, const char *token,
				const uint8_t *c2s, const uint8_t *s2c, uint16_t aead,
				bool keep_alive)
{
	int len = ke_msg_build_fixed_key_request(buf, cap, n, token, c2s, s2c, aead_key_len(aead),
						 0, aead, keep_alive);
	cr_assert_gt(len, 0);
	return (size_t)len;
}

/* Sends a Fixed Key request (with token, unless NULL) for random keys and checks the cookies
 * seal them under key_id. */
static void fixed_key_exchange_token(struct h *h, const char *token, uint16_t aead,
				     bool keep_alive, uint32_t key_id, uint64_t seed)
{
	uint8_t buf[KE_MSG_RESPONSE_MAX], c2s[64], s2c[64];
	struct tu_rng rng;
	struct ke_msg_response r;
	tu_rng_seed(&rng, seed);
	tu_rng_fill(&rng, c2s, sizeof c2s);
	tu_rng_fill(&rng, s2c, sizeof s2c);
	h_send(h, buf, fixed_key_request(buf, sizeof buf, h->cfg.numbering, token, c2s, s2c, aead,
					 keep_alive));
	size_t len = h_recv(h, buf, sizeof buf);
	parse_ok(buf, len, h->cfg.numbering, KE_MSG_REQUEST_FIXED_KEY, &r);
	cr_assert_eq(r.protocol, 0);
	cr_assert_eq(r.aead, aead);
	cr_assert_eq(r.keep_alive, keep_alive);
	check_cookies(h->ks, &r, aead, c2s, s2c, key_id);
}

static void fixed_key_exchange(struct h *h, uint16_t aead, bool keep_alive, uint32_t key_id,
			       uint64_t seed)
{
	fixed_key_exchange_token(h, NULL, aead, keep_alive, key_id, seed);
}

Test(ke_server, authorised_fixed_key)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	fixed_key_exchange(&h, 17, false, 0, 11);
	cr_assert(h_server_closed(&h));
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(h.st.pool_fixed_key, 1);
	cr_assert_eq(h.st.completed, 1);
	cr_assert_eq(h.st.keep_alive_reuse, 0);
	cr_assert_eq(h.st.pool_auth_certificate, 1);
	cr_assert_eq(h.st.pool_auth_token + h.st.unauthorised + h.st.token_refused, 0);
	h_free(&h);

	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	fixed_key_exchange(&h, 15, false, 0, 12);
	cr_assert_eq(h.st.completed, 1);
	h_free(&h);
}

Test(ke_server, fixed_key_length_mismatch)
{
	struct raw_msg m;
	uint8_t keys[64] = { 1 };
	static const uint16_t a17[] = { 17 };
	raw_begin(&m);
	cr_assert_eq(ke_record_put(&m.w, KE_NUMBERING_IANA, KE_RECORD_FIXED_KEY, keys, 64), 0);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, a17, 1);
	raw_put(&m, true, 0, NULL, 0);
	send_raw_expect_error(&m, "pool", 1);
}

Test(ke_server, fixed_key_unknown_protocol_no_overlap)
{
	struct h h;
	struct raw_msg m;
	uint8_t keys[64] = { 1 };
	static const uint16_t proto[] = { 5 }, a15[] = { 15 };
	static const uint8_t want[] = { 0x80, 1, 0, 0, 0x80, 0, 0, 0 };
	raw_begin(&m);
	cr_assert_eq(ke_record_put(&m.w, KE_NUMBERING_IANA, KE_RECORD_FIXED_KEY, keys, 64), 0);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, proto, 1);
	raw_list(&m, KE_RECORD_AEAD, a15, 1);
	cr_assert_eq(ke_record_put(&m.w, KE_NUMBERING_IANA, KE_RECORD_KEEP_ALIVE, NULL, 0), 0);
	raw_put(&m, true, 0, NULL, 0);
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	h_send(&h, m.buf, wire_written(&m.w));
	cr_assert_eq(h_recv(&h, m.buf, sizeof m.buf), sizeof want);
	cr_assert_arr_eq(m.buf, want, sizeof want);
	cr_assert(h_server_closed(&h), "a no-overlap answer ends the connection");
	cr_assert_eq(h.st.no_overlap, 1);
	cr_assert_eq(h.st.pool_fixed_key, 1);
	cr_assert_eq(h.st.completed, 0);
	h_free(&h);
}

Test(ke_server, keep_alive_sequence)
{
	struct h h;
	uint8_t buf[512];
	struct ke_msg_response r;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");

	h.now = T0 + 100;
	int len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, true, true,
					       true);
	h_send(&h, buf, (size_t)len);
	size_t rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert(r.keep_alive);
	cr_assert_not(h_server_closed(&h));
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + 100 + KE_SERVER_KEEP_ALIVE_IDLE_MS,
		     "an idle pool connection waits longer than one request may take");

	h.now = T0 + 4000;
	fixed_key_exchange(&h, 17, true, 0, 21);
	cr_assert_not(h_server_closed(&h));
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + 4000 + KE_SERVER_KEEP_ALIVE_IDLE_MS);

	/* The first bytes of the next request start that request's own deadline. */
	h.now = T0 + 9000;
	len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, true, false,
					   true);
	h_send(&h, buf, 3);
	cr_assert_eq(ke_server_conn_deadline(h.srv), T0 + 9000 + TIMEOUT);
	h_send(&h, buf + 3, (size_t)len - 3);
	rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);

	h.now = T0 + 12000; /* past the first session deadline: each request has its own */
	fixed_key_exchange(&h, 15, true, 0, 22);
	cr_assert_not(h_server_closed(&h));
	cr_assert_not(ke_server_conn_done(h.srv));

	cr_assert_eq(tls_close(h.cli), 0);
	pump(&h);
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.pool_support, 2);
	cr_assert_eq(h.st.pool_fixed_key, 2);
	cr_assert_eq(h.st.completed, 2);
	cr_assert_eq(h.st.keep_alive_reuse, 3);
	cr_assert_eq(h.st.errors[0] + h.st.errors[1] + h.st.errors[2] + h.st.timeouts, 0);
	h_free(&h);
}

Test(ke_server, keep_alive_idle_timeout_and_pipelining)
{
	struct h h;
	uint8_t buf[1024], resp[512];
	struct ke_msg_response r;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	/* Two requests in one write: both answered, in order. */
	int a = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, true, false,
					     true);
	int b = ke_msg_build_support_request(buf + a, sizeof buf - (size_t)a, KE_NUMBERING_IANA,
					     NULL, false, true, true);
	cr_assert(a > 0 && b > 0);
	h_send(&h, buf, (size_t)(a + b));
	size_t rlen = h_recv(&h, resp, sizeof resp);
	parse_ok(resp, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert(r.has_supported_protocols && !r.has_supported_algorithms);
	rlen = h_recv(&h, resp, sizeof resp);
	parse_ok(resp, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert(!r.has_supported_protocols && r.has_supported_algorithms);
	cr_assert_eq(h.st.keep_alive_reuse, 1);

	/* Idle between requests: closed cleanly, not a timeout of a request. */
	ke_server_conn_timeout(h.srv, ke_server_conn_deadline(h.srv));
	pump(&h);
	cr_assert(h_server_closed(&h));
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(h.st.timeouts, 0);
	cr_assert_eq(h.st.errors[1], 0);
	h_free(&h);
}

Test(ke_server, plain_request_never_kept_alive)
{
	static const char *const clients[] = { NULL, "pool" };
	static const uint16_t aeads[] = { 15 };
	for (size_t i = 0; i < 2; i++) {
		struct h h;
		struct raw_msg m;
		struct ke_msg_response r;
		raw_begin(&m);
		raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
		raw_list(&m, KE_RECORD_AEAD, aeads, 1);
		cr_assert_eq(ke_record_put(&m.w, KE_NUMBERING_IANA, KE_RECORD_KEEP_ALIVE, NULL, 0),
			     0);
		raw_put(&m, true, 0, NULL, 0);
		size_t one = wire_written(&m.w);
		/* A second request right behind the first is ignored. */
		wire_put_bytes(&m.w, m.buf, one);
		h_init(&h, KE_NUMBERING_IANA);
		h_connect(&h, clients[i]);
		h_send(&h, m.buf, wire_written(&m.w));
		size_t len = h_recv(&h, m.buf, sizeof m.buf);
		parse_ok(m.buf, len, KE_NUMBERING_IANA, KE_MSG_REQUEST_PLAIN, &r);
		cr_assert_not(r.keep_alive);
		cr_assert_eq(r.n_cookies, 8);
		cr_assert(h_server_closed(&h), "client %zu", i);
		cr_assert_eq(h.st.completed, 1);
		cr_assert_eq(h.st.keep_alive_reuse, 0);
		h_free(&h);
	}
}

Test(ke_server, plain_request_on_a_kept_alive_connection_is_refused)
{
	/* The exporter would give the same keys again on the same session: Error 1, no cookies. */
	struct h h;
	uint8_t buf[KE_MSG_RESPONSE_MAX];
	struct ke_msg_response r;
	static const uint16_t aeads[] = { 15 };
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	int len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, true, true,
					       true);
	h_send(&h, buf, (size_t)len);
	size_t rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert(r.keep_alive);
	h_send(&h, buf, plain_request(buf, sizeof buf, KE_NUMBERING_IANA, aeads, 1));
	rlen = h_recv(&h, buf, sizeof buf);
	cr_assert_eq(ke_msg_parse_response(buf, rlen, KE_NUMBERING_IANA, KE_MSG_REQUEST_PLAIN, &r),
		     -EREMOTEIO);
	cr_assert(r.has_error);
	cr_assert_eq(r.error, KE_MSG_ERROR_BAD_REQUEST);
	cr_assert_eq(r.n_cookies, 0);
	cr_assert_eq(h.st.errors[KE_MSG_ERROR_BAD_REQUEST], 1);
	cr_assert_eq(h.st.completed, 0);
	h_free(&h);
}

Test(ke_server, ntpdrs_v1_numbering)
{
	struct h h;
	uint8_t buf[KE_MSG_RESPONSE_MAX];
	struct ke_msg_response r;
	static const uint16_t aeads[] = { 17 };
	h_init(&h, KE_NUMBERING_NTPDRS_V1);
	h_connect(&h, "pool");
	int len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_NTPDRS_V1, NULL, false,
					       true, true);
	cr_assert_gt(len, 0);
	cr_assert_eq(buf[0], 0xc0, "Supported Algorithm List is 0x4001 with C=1");
	h_send(&h, buf, (size_t)len);
	size_t rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_NTPDRS_V1, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert(r.keep_alive);
	cr_assert_eq(r.n_supported_algorithms, 2);
	fixed_key_exchange(&h, 17, false, 0, 31);
	cr_assert(h_server_closed(&h));
	cr_assert_eq(h.st.pool_support, 1);
	cr_assert_eq(h.st.pool_fixed_key, 1);
	cr_assert_eq(h.st.keep_alive_reuse, 1);
	h_free(&h);

	/* The IANA Supported Algorithm List (10) is nothing in ntpd-rs-v1: Error 0. */
	h_init(&h, KE_NUMBERING_NTPDRS_V1);
	h_connect(&h, "pool");
	len = ke_msg_build_support_request(buf, sizeof buf, KE_NUMBERING_IANA, NULL, false, true,
					   false);
	h_send(&h, buf, (size_t)len);
	expect_error(&h, 0);
	h_free(&h);

	/* Plain clients are unaffected by the numbering. */
	h_init(&h, KE_NUMBERING_NTPDRS_V1);
	h_connect(&h, NULL);
	h_send(&h, buf, plain_request(buf, sizeof buf, KE_NUMBERING_NTPDRS_V1, aeads, 1));
	rlen = h_recv(&h, buf, sizeof buf);
	parse_ok(buf, rlen, KE_NUMBERING_NTPDRS_V1, KE_MSG_REQUEST_PLAIN, &r);
	cr_assert_eq(r.n_cookies, 8);
	cr_assert_eq(h.st.completed, 1);
	h_free(&h);
}

Test(ke_server, rotation_between_requests)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h, "pool");
	fixed_key_exchange(&h, 15, true, 0, 41);
	struct keyset *next = NULL;
	cr_assert_eq(keyset_rotate(&next, h.ks, 7, 100), 0);
	keyset_unref(h.ks);
	h.ks = next;
	fixed_key_exchange(&h, 15, true, 1, 42);
	cr_assert_eq(h.st.completed, 2);
	h_free(&h);
}

Test(ke_server, missing_keyset_is_internal_error)
{
	struct h h;
	uint8_t buf[256];
	static const uint16_t aeads[] = { 15 };
	h_init(&h, KE_NUMBERING_IANA);
	keyset_unref(h.ks);
	h.ks = NULL;
	h_connect(&h, NULL);
	h_send(&h, buf, plain_request(buf, sizeof buf, KE_NUMBERING_IANA, aeads, 1));
	expect_error(&h, 2);
	h_free(&h);
}

/* Runs a raw client's handshake against the state machine; the server must refuse it. */
static void raw_client_refused(const char *prio, const char *alpn)
{
	struct h h;
	struct tu_tls_raw *r = tu_tls_raw_client(prio, alpn);
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	struct tu_tls_end raw = tu_tls_raw_end(r), srv = srv_end(&h);
	tu_tls_pump(&raw, &srv);
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(h.st.tls_failures, 1);
	cr_assert_str_not_empty(ke_server_conn_reason(h.srv));
	cr_assert_eq(h.st.completed + h.st.errors[0] + h.st.errors[1] + h.st.errors[2], 0);
	tu_tls_raw_free(r);
	h_free(&h);
}

Test(ke_server, tls12_client_refused)
{
	raw_client_refused("NORMAL:-VERS-ALL:+VERS-TLS1.2", TLS_ALPN);
}

Test(ke_server, client_without_alpn_refused)
{
	raw_client_refused("NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL);
}

Test(ke_server, garbage_and_overflow)
{
	struct h h;
	static const uint8_t junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	cr_assert_eq(ke_server_conn_input(h.srv, junk, sizeof junk - 1, h.now), 0);
	cr_assert(ke_server_conn_done(h.srv));
	cr_assert_eq(h.st.tls_failures, 1);
	cr_assert_eq(ke_server_conn_input(h.srv, junk, sizeof junk - 1, h.now), 0,
		     "input after the end is ignored");
	h_free(&h);

	uint8_t *big = calloc(1, TLS_IN_MAX + 1);
	cr_assert(big);
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	cr_assert_eq(ke_server_conn_input(h.srv, big, TLS_IN_MAX + 1, h.now), -EMSGSIZE);
	cr_assert(ke_server_conn_done(h.srv));
	free(big);
	h_free(&h);
}

/* ---- Pool tokens (PROTOCOL.md §3.5) --------------------------------------------------------- */

/* Shaped like the tokens KELB derives (64 lowercase hex characters). B differs from A only in
 * its last byte, so only a comparison over the full length tells them apart. */
#define TOKEN_A "5d3c0e6f8a9b4c1d2e3f405162738495a6b7c8d9eaf0b1c2d3e4f5061728394a"
#define TOKEN_B "5d3c0e6f8a9b4c1d2e3f405162738495a6b7c8d9eaf0b1c2d3e4f5061728394b"
#define TOKEN_C "pool-token-c"

static const enum ke_numbering numberings[] = { KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1 };

static struct pool_tokens *token_set(const char *const *tokens, size_t n)
{
	struct pool_tokens *t = NULL;
	cr_assert_eq(pool_tokens_new(&t), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(pool_tokens_add(t, tokens[i], strlen(tokens[i])), 0);
	cr_assert_eq(pool_tokens_count(t), n);
	return t;
}

/* A server accepting tokens[0, n_tokens) (none: its slot holds NULL), with pool.pem pinned
 * when pin; everything the client receives is recorded. */
static void h_init_auth(struct h *h, enum ke_numbering n, bool pin, const char *const *tokens,
			size_t n_tokens)
{
	h_init(h, n);
	if (!pin) {
		tls_creds_unref(h->sc);
		h->sc = server_creds(false);
	}
	if (n_tokens)
		h->tokens = token_set(tokens, n_tokens);
	h->cfg.tokens = &h->tokens;
	h->seen = malloc(SEEN_MAX);
	cr_assert(h->seen);
}

/* Tokens are secrets: neither the bytes the server sent (ciphertext, and the plaintext the
 * client read) nor any log line of the test may hold one. */
static void expect_secret_kept(const struct h *h, const char *secret)
{
	size_t n = strlen(secret);
	cr_assert_gt(h->seen_len, 0);
	cr_assert_null(memmem(h->seen, h->seen_len, secret, n), "the server sent a token");
	cr_assert_eq(fflush(log_file), 0);
	long size = ftell(log_file);
	cr_assert_gt(size, 0);
	char *text = malloc((size_t)size);
	cr_assert(text);
	rewind(log_file);
	cr_assert_eq(fread(text, 1, (size_t)size, log_file), (size_t)size);
	cr_assert_eq(fseek(log_file, 0, SEEK_END), 0);
	static const char ours[] = "nts-ke 192.0.2.1:40000: ";
	cr_assert_not_null(memmem(text, (size_t)size, ours, strlen(ours)),
			   "the server's own lines are in the captured log");
	cr_assert_null(memmem(text, (size_t)size, secret, n), "a token was logged");
	free(text);
}

/* A Support request for both lists or a Fixed Key request (AEAD 15), token first unless NULL;
 * the Authentication record is checked to be 14 (IANA) or 0x4005 (ntpd-rs-v1), C=0. */
static size_t pool_request(uint8_t *buf, size_t cap, enum ke_numbering n,
			   enum ke_msg_request_kind kind, const char *token, bool keep_alive)
{
	static const uint8_t key[32] = { 7 };
	int len = kind == KE_MSG_REQUEST_SUPPORT
			  ? ke_msg_build_support_request(buf, cap, n, token, true, true, keep_alive)
			  : ke_msg_build_fixed_key_request(buf, cap, n, token, key, key, 32, 0, 15,
							   keep_alive);
	cr_assert_gt(len, 0);
	if (token) {
		cr_assert_eq(buf[0] << 8 | buf[1], n == KE_NUMBERING_IANA ? 14 : 0x4005);
		cr_assert_eq((size_t)(buf[2] << 8 | buf[3]), strlen(token));
		cr_assert_arr_eq(buf + 4, token, strlen(token));
	}
	return (size_t)len;
}

/* A Support request answered with both lists, and kept alive exactly when asked. */
static void support_exchange(struct h *h, const char *token, bool keep_alive)
{
	uint8_t buf[512];
	struct ke_msg_response r;
	h_send(h, buf, pool_request(buf, sizeof buf, h->cfg.numbering, KE_MSG_REQUEST_SUPPORT,
				    token, keep_alive));
	size_t len = h_recv(h, buf, sizeof buf);
	parse_ok(buf, len, h->cfg.numbering, KE_MSG_REQUEST_SUPPORT, &r);
	cr_assert_eq(r.n_supported_protocols, 1);
	cr_assert_eq(r.n_supported_algorithms, 2);
	cr_assert_eq(r.keep_alive, keep_alive);
	cr_assert_eq(h_server_closed(h), !keep_alive);
}

/* The first and only request of the connection was refused with Error 1. */
static void expect_refused(struct h *h, bool token_refused)
{
	expect_error(h, KE_MSG_ERROR_BAD_REQUEST);
	cr_assert_eq(h->st.unauthorised, 1);
	cr_assert_eq(h->st.token_refused, token_refused ? 1u : 0u);
	cr_assert_eq(h->st.pool_support + h->st.pool_fixed_key, 0);
	cr_assert_eq(h->st.pool_auth_token + h->st.pool_auth_certificate, 0);
}

Test(ke_server, token_authorises_pool_requests)
{
	static const char *const accepted[] = { TOKEN_A, TOKEN_B };
	for (size_t i = 0; i < 2; i++) {
		struct h h;
		h_init_auth(&h, numberings[i], false, accepted, 2);
		h_connect(&h, NULL);
		support_exchange(&h, TOKEN_B, true);
		fixed_key_exchange_token(&h, TOKEN_B, 17, true, 0, 51);
		cr_assert_not(h_server_closed(&h), "kept alive for the next request");
		fixed_key_exchange_token(&h, TOKEN_B, 15, false, 0, 52);
		cr_assert(h_server_closed(&h));
		cr_assert(ke_server_conn_done(h.srv));
		cr_assert_eq(h.st.pool_auth_token, 3, "the token is checked on every request");
		cr_assert_eq(h.st.pool_support, 1);
		cr_assert_eq(h.st.pool_fixed_key, 2);
		cr_assert_eq(h.st.completed, 2);
		cr_assert_eq(h.st.keep_alive_reuse, 2);
		cr_assert_eq(h.st.pool_auth_certificate + h.st.unauthorised, 0);
		cr_assert_eq(h.st.token_refused, 0);
		cr_assert_eq(h.st.errors[0] + h.st.errors[1] + h.st.errors[2], 0);
		expect_secret_kept(&h, TOKEN_A);
		expect_secret_kept(&h, TOKEN_B);
		h_free(&h);

		/* Without Keep Alive asked: answered, then closed. */
		h_init_auth(&h, numberings[i], false, accepted, 2);
		h_connect(&h, NULL);
		support_exchange(&h, TOKEN_A, false);
		cr_assert(ke_server_conn_done(h.srv));
		cr_assert_eq(h.st.pool_auth_token, 1);
		expect_secret_kept(&h, TOKEN_A);
		h_free(&h);
	}
}

/* One request to a server accepting only TOKEN_A (no pinned certificate) from client (a
 * certificate name or NULL): Error 1. offered: it carried a token, so the refusal counts. */
static void token_refused_case(enum ke_numbering n, const char *client, const uint8_t *req,
			       size_t len, bool offered, const char *sent)
{
	static const char *const accepted[] = { TOKEN_A };
	struct h h;
	h_init_auth(&h, n, false, accepted, 1);
	h_connect(&h, client);
	h_send(&h, req, len);
	expect_refused(&h, offered);
	expect_secret_kept(&h, TOKEN_A);
	if (sent)
		expect_secret_kept(&h, sent);
	h_free(&h);
}

Test(ke_server, token_refusals)
{
	static const enum ke_msg_request_kind kinds[] = { KE_MSG_REQUEST_SUPPORT,
							  KE_MSG_REQUEST_FIXED_KEY };
	char prefix[sizeof TOKEN_A - 1], longer[sizeof TOKEN_A + 1];
	memcpy(prefix, TOKEN_A, sizeof prefix - 1);
	prefix[sizeof prefix - 1] = '\0';
	snprintf(longer, sizeof longer, "%s0", TOKEN_A);
	const char *const wrong[] = { TOKEN_B, prefix, longer, TOKEN_C };
	uint8_t buf[512];
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		for (size_t k = 0; k < 2; k++) {
			for (size_t w = 0; w < sizeof wrong / sizeof wrong[0]; w++) {
				size_t len = pool_request(buf, sizeof buf, n, kinds[k], wrong[w],
							  false);
				token_refused_case(n, NULL, buf, len, true, wrong[w]);
			}
			/* No token, from an anonymous client and from one whose certificate is
			 * not pinned on this server. */
			size_t len = pool_request(buf, sizeof buf, n, kinds[k], NULL, true);
			token_refused_case(n, NULL, buf, len, false, NULL);
			token_refused_case(n, "pool", buf, len, false, NULL);
		}

		/* The right token, but not first: a token authorises only as the first record.
		 * Then repeated, and empty. */
		struct wire_writer wr;
		wire_writer_init(&wr, buf, sizeof buf);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_SUPPORTED_ALGORITHMS, NULL, 0), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_AUTH_TOKEN, TOKEN_A, 64), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_END, NULL, 0), 0);
		token_refused_case(n, NULL, buf, wire_written(&wr), true, NULL);

		wire_writer_init(&wr, buf, sizeof buf);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_AUTH_TOKEN, TOKEN_A, 64), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_AUTH_TOKEN, TOKEN_A, 64), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_SUPPORTED_ALGORITHMS, NULL, 0), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_END, NULL, 0), 0);
		token_refused_case(n, NULL, buf, wire_written(&wr), true, NULL);

		wire_writer_init(&wr, buf, sizeof buf);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_AUTH_TOKEN, NULL, 0), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_SUPPORTED_PROTOCOLS, NULL, 0), 0);
		cr_assert_eq(ke_record_put(&wr, n, KE_RECORD_END, NULL, 0), 0);
		token_refused_case(n, NULL, buf, wire_written(&wr), true, NULL);
	}
}

Test(ke_server, token_on_a_plain_request_is_ignored)
{
	/* Accepted or not, a token changes nothing for a plain key exchange (§3.5). */
	static const char *const accepted[] = { TOKEN_A };
	static const char *const offered[] = { TOKEN_A, TOKEN_B };
	static const uint16_t aeads[] = { 15 };
	for (size_t c = 0; c < 4; c++) {
		enum ke_numbering n = numberings[c / 2];
		const char *token = offered[c % 2];
		struct h h;
		struct raw_msg m;
		struct ke_msg_response r;
		raw_begin(&m);
		cr_assert_eq(ke_record_put(&m.w, n, KE_RECORD_AUTH_TOKEN, token, 64), 0);
		cr_assert_eq(ke_record_put_u16_list(&m.w, n, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1), 0);
		cr_assert_eq(ke_record_put_u16_list(&m.w, n, KE_RECORD_AEAD, aeads, 1), 0);
		cr_assert_eq(ke_record_put(&m.w, n, KE_RECORD_END, NULL, 0), 0);
		h_init_auth(&h, n, false, accepted, 1);
		h_connect(&h, NULL);
		h_send(&h, m.buf, wire_written(&m.w));
		size_t len = h_recv(&h, m.buf, sizeof m.buf);
		parse_ok(m.buf, len, n, KE_MSG_REQUEST_PLAIN, &r);
		uint8_t c2s[32], s2c[32];
		cr_assert_eq(tls_export_nts_keys(h.cli, 0, 15, 32, c2s, s2c), 0);
		check_cookies(h.ks, &r, 15, c2s, s2c, 0);
		cr_assert_not(r.keep_alive);
		cr_assert(h_server_closed(&h));
		cr_assert_eq(h.st.completed, 1);
		cr_assert_eq(h.st.pool_auth_token + h.st.token_refused + h.st.unauthorised, 0);
		expect_secret_kept(&h, token);
		h_free(&h);
	}
}

Test(ke_server, certificate_only_server_refuses_tokens)
{
	uint8_t buf[512];
	for (int slot = 0; slot < 2; slot++) {
		/* No slot at all, or a slot holding no set. */
		struct h h;
		h_init_auth(&h, KE_NUMBERING_IANA, true, NULL, 0);
		if (slot == 0)
			h.cfg.tokens = NULL;
		h_connect(&h, NULL);
		h_send(&h, buf, pool_request(buf, sizeof buf, KE_NUMBERING_IANA,
					     KE_MSG_REQUEST_SUPPORT, TOKEN_A, true));
		expect_refused(&h, true);
		expect_secret_kept(&h, TOKEN_A);
		h_free(&h);

		/* The pinned certificate is enough, whatever token rides along. */
		h_init_auth(&h, KE_NUMBERING_IANA, true, NULL, 0);
		if (slot == 0)
			h.cfg.tokens = NULL;
		h_connect(&h, "pool");
		support_exchange(&h, TOKEN_A, true);
		fixed_key_exchange_token(&h, NULL, 15, false, 0, 71);
		cr_assert(h_server_closed(&h));
		cr_assert_eq(h.st.pool_auth_certificate, 2);
		cr_assert_eq(h.st.pool_auth_token + h.st.token_refused + h.st.unauthorised, 0);
		expect_secret_kept(&h, TOKEN_A);
		h_free(&h);
	}
}

Test(ke_server, certificate_or_token_when_both_are_configured)
{
	static const char *const accepted[] = { TOKEN_A };
	uint8_t buf[512];
	struct h h;

	h_init_auth(&h, KE_NUMBERING_IANA, true, accepted, 1);
	h_connect(&h, "pool");
	support_exchange(&h, NULL, true);
	fixed_key_exchange_token(&h, NULL, 17, true, 0, 81);
	cr_assert_eq(h.st.pool_auth_certificate, 2);
	cr_assert_eq(h.st.pool_auth_token + h.st.token_refused + h.st.unauthorised, 0);
	h_free(&h);

	/* Anonymous, and with a certificate that is not pinned: the token alone authorises. */
	static const char *const clients[] = { NULL, "other" };
	for (size_t i = 0; i < 2; i++) {
		h_init_auth(&h, KE_NUMBERING_IANA, true, accepted, 1);
		h_connect(&h, clients[i]);
		support_exchange(&h, TOKEN_A, true);
		fixed_key_exchange_token(&h, TOKEN_A, 15, false, 0, 82);
		cr_assert(h_server_closed(&h));
		cr_assert_eq(h.st.pool_auth_token, 2);
		cr_assert_eq(h.st.pool_auth_certificate + h.st.token_refused, 0);
		cr_assert_eq(h.st.unauthorised, 0);
		expect_secret_kept(&h, TOKEN_A);
		h_free(&h);

		h_init_auth(&h, KE_NUMBERING_IANA, true, accepted, 1);
		h_connect(&h, clients[i]);
		h_send(&h, buf, pool_request(buf, sizeof buf, KE_NUMBERING_IANA,
					     KE_MSG_REQUEST_FIXED_KEY, TOKEN_B, false));
		expect_refused(&h, true);
		expect_secret_kept(&h, TOKEN_B);
		h_free(&h);

		h_init_auth(&h, KE_NUMBERING_IANA, true, accepted, 1);
		h_connect(&h, clients[i]);
		h_send(&h, buf, pool_request(buf, sizeof buf, KE_NUMBERING_IANA,
					     KE_MSG_REQUEST_SUPPORT, NULL, false));
		expect_refused(&h, false);
		h_free(&h);
	}
}

Test(ke_server, token_reload_applies_to_the_next_request)
{
	static const char *const before[] = { TOKEN_A, TOKEN_B };
	static const char *const after[] = { TOKEN_B, TOKEN_C };
	static const char *const all[] = { TOKEN_A, TOKEN_B, TOKEN_C };
	uint8_t buf[512];
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		/* Two kept-alive pool connections of one listener, sharing its token slot. */
		struct pool_tokens *slot = token_set(before, 2);
		struct h a, b;
		h_init_auth(&a, n, false, NULL, 0);
		h_init_auth(&b, n, false, NULL, 0);
		a.cfg.tokens = b.cfg.tokens = &slot;
		h_connect(&a, NULL);
		h_connect(&b, NULL);
		support_exchange(&a, TOKEN_A, true);
		support_exchange(&b, TOKEN_B, true);

		/* SIGHUP: the new set replaces the old one in the slot, which is released. */
		struct pool_tokens *old = slot;
		slot = token_set(after, 2);
		pool_tokens_unref(old);

		h_send(&a, buf, pool_request(buf, sizeof buf, n, KE_MSG_REQUEST_SUPPORT, TOKEN_A,
					     true));
		expect_error_reply(&a, KE_MSG_ERROR_BAD_REQUEST);
		cr_assert_eq(a.st.errors[KE_MSG_ERROR_BAD_REQUEST], 1);
		cr_assert_eq(a.st.token_refused, 1);
		cr_assert_eq(a.st.unauthorised, 1);
		cr_assert_eq(a.st.pool_support, 1, "only the request before the reload");
		cr_assert_eq(a.st.pool_auth_token, 1);
		cr_assert_eq(a.st.keep_alive_reuse, 1);

		fixed_key_exchange_token(&b, TOKEN_B, 15, true, 0, 91);
		cr_assert_not(h_server_closed(&b), "a token still accepted keeps being served");
		support_exchange(&b, TOKEN_B, true);
		cr_assert_eq(b.st.pool_auth_token, 3);
		cr_assert_eq(b.st.token_refused + b.st.unauthorised, 0);

		/* Every token removed: the slot holds no set, and b is refused as well. */
		old = slot;
		slot = NULL;
		pool_tokens_unref(old);
		h_send(&b, buf, pool_request(buf, sizeof buf, n, KE_MSG_REQUEST_FIXED_KEY, TOKEN_B,
					     true));
		expect_error_reply(&b, KE_MSG_ERROR_BAD_REQUEST);
		cr_assert_eq(b.st.token_refused, 1);
		cr_assert_eq(b.st.unauthorised, 1);
		cr_assert_eq(b.st.pool_fixed_key, 1);
		cr_assert_eq(b.st.completed, 1);
		for (size_t t = 0; t < 3; t++) {
			expect_secret_kept(&a, all[t]);
			expect_secret_kept(&b, all[t]);
		}
		h_free(&a);
		h_free(&b);
	}
}
