/* The broker's per-client state machine against a real TLS 1.3 client in memory, with a fake
 * upstream registry (pick over an array, every call recorded) and upstream answers built with the
 * ke_msg builders and parsed with ke_msg_parse_response exactly as the glue does. Explicit time,
 * no sockets. Every test checks the bytes the client reads back and the session's counters. */
#include "session.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "log.h"
#include "testutil.h"
#include "tls.h"
#include "tls_testutil.h"
#include "wire.h"

#define T0 1000
#define TIMEOUT 5000
#define MAX_UPS 6
#define MAX_PICKS 8

static char *dir;
static FILE *devnull;

static void setup(void)
{
	/* Every debug line is formatted, so its arguments are checked under the sanitizers. */
	devnull = fopen("/dev/null", "w");
	cr_assert(devnull);
	log_set_stream(devnull);
	log_set_level(LOG_LEVEL_DEBUG);
	dir = tu_tempdir();
	tu_gen_cert(dir, "broker --dns pool.test");
}

static void teardown(void)
{
	tu_rmtree(dir);
	free(dir);
	log_set_stream(NULL);
	fclose(devnull);
}

TestSuite(pool_session, .init = setup, .fini = teardown);

/* ---- The fake registry ---------------------------------------------------------------------- */

struct fake_upstream {
	uint32_t id;
	const char *name;
	uint16_t protocols[4];
	size_t n_protocols;
	struct ke_msg_algorithm algs[4];
	size_t n_algs;
	enum ke_numbering numbering;
	const char *token;
};

/* What one pick was given. */
struct pick_call {
	uint32_t tried[POOL_SESSION_MAX_ATTEMPTS];
	size_t n_tried;
	size_t n_deny;
	bool denies_a; /* ke_msg_request_denies(req, "a.test") */
	uint64_t now;
};

struct fake_registry {
	enum ke_numbering numbering; /* of the upstreams added: the broker's own by default */
	struct fake_upstream ups[MAX_UPS];
	size_t n;
	struct pick_call calls[MAX_PICKS];
	size_t n_calls;
};

/* The first upstream not tried yet, in array order. */
static int fake_pick(void *ud, const struct pool_pick_query *q, struct pool_upstream_info *out)
{
	const struct ke_msg_request *req = q->req;
	const uint32_t *tried = q->tried;
	size_t n_tried = q->n_tried;
	uint64_t now_ms = q->now_ms;
	struct fake_registry *r = ud;
	cr_assert_lt(r->n_calls, MAX_PICKS);
	cr_assert_leq(n_tried, POOL_SESSION_MAX_ATTEMPTS);
	struct pick_call *c = &r->calls[r->n_calls++];
	memcpy(c->tried, tried, n_tried * sizeof *tried);
	c->n_tried = n_tried;
	c->n_deny = req->n_deny;
	c->denies_a = ke_msg_request_denies(req, "a.test");
	c->now = now_ms;
	for (size_t i = 0; i < r->n; i++) {
		bool used = false;
		for (size_t j = 0; j < n_tried; j++)
			used |= tried[j] == r->ups[i].id;
		if (used)
			continue;
		*out = (struct pool_upstream_info){ .id = r->ups[i].id,
						    .name = r->ups[i].name,
						    .protocols = r->ups[i].protocols,
						    .n_protocols = r->ups[i].n_protocols,
						    .algorithms = r->ups[i].algs,
						    .n_algorithms = r->ups[i].n_algs,
						    .numbering = r->ups[i].numbering,
						    .token = r->ups[i].token };
		return 0;
	}
	return -ENOENT;
}

/* An upstream speaking NTPv4 with both AEADs. */
static void add_upstream(struct fake_registry *r, uint32_t id, const char *name)
{
	cr_assert_lt(r->n, MAX_UPS);
	r->ups[r->n++] = (struct fake_upstream){
		.id = id,
		.name = name,
		.protocols = { KE_MSG_PROTOCOL_NTPV4 },
		.n_protocols = 1,
		.algs = { { 15, 32 }, { 17, 64 } },
		.n_algs = 2,
		.numbering = r->numbering,
	};
}

static const struct fake_upstream *fake_find(const struct fake_registry *r, uint32_t id)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->ups[i].id == id)
			return &r->ups[i];
	cr_assert_fail("no upstream %u", id);
	return NULL;
}

/* ---- One client session ---------------------------------------------------------------------- */

struct h {
	struct tls_creds *sc;
	struct tls_session *cli;
	struct pool_session *s;
	struct pool_session_stats st;
	struct pool_session_config cfg;
	struct pool_session_upstreams ups;
	struct fake_registry reg;
	enum ke_numbering up_numbering; /* of the upstream the request went to */
	uint64_t now;
};

static void h_init(struct h *h, enum ke_numbering n)
{
	memset(h, 0, sizeof *h);
	h->sc = tu_tls_server_creds(dir, "broker", NULL, 0);
	h->cfg = (struct pool_session_config){ .numbering = n, .timeout_ms = TIMEOUT,
					       .max_attempts = 3 };
	h->ups = (struct pool_session_upstreams){ .pick = fake_pick, .ud = &h->reg };
	h->reg.numbering = n;
	h->up_numbering = n;
	h->now = T0;
}

static void h_start(struct h *h)
{
	cr_assert_eq(pool_session_new(&h->s, h->sc, &h->cfg, &h->ups, &h->st, h->now), 0);
	cr_assert_eq(h->st.accepted, 0, "not a client's session until admitted");
	pool_session_set_peer(h->s, "192.0.2.1:40000");
	pool_session_admitted(h->s);
	pool_session_admitted(h->s);
	cr_assert_eq(h->st.accepted, 1, "counted once");
	cr_assert_eq(pool_session_upstream_id(h->s), UINT32_MAX);
}

static void h_free(struct h *h)
{
	pool_session_free(h->s);
	tls_free(h->cli);
	tls_creds_unref(h->sc);
}

/* The session as the pump's end. */
TU_TLS_MACHINE_END(session_end, struct h, s, pool_session)

/* Moves ciphertext both ways until neither side has anything to say. */
static void pump(struct h *h)
{
	struct tu_tls_end cli = tu_tls_session_end(h->cli), s = session_end(h);
	tu_tls_pump(&cli, &s);
}

static void h_connect(struct h *h)
{
	h_start(h);
	h->cli = tu_tls_client_session(dir, NULL, "pool.test");
	pump(h);
	cr_assert_eq(tls_state(h->cli), TLS_ESTABLISHED, "%s", tls_reason(h->cli));
	cr_assert_not(pool_session_done(h->s));
	cr_assert_eq(pool_session_deadline(h->s), T0 + TIMEOUT);
}

static void h_send(struct h *h, const uint8_t *msg, size_t len)
{
	cr_assert_eq(tls_write(h->cli, msg, len), 0);
	pump(h);
}

static const uint16_t ntpv4[] = { KE_MSG_PROTOCOL_NTPV4 };
static const uint16_t aead15[] = { 15 };

/* A plain request from the client, with optional deny names. */
static void h_request(struct h *h, const uint16_t *aeads, size_t n_aeads,
		      const char *const *deny, size_t n_deny)
{
	uint8_t buf[1024];
	int len = ke_msg_build_request(buf, sizeof buf, h->cfg.numbering, ntpv4, 1, aeads, n_aeads,
				       deny, n_deny);
	cr_assert_gt(len, 0);
	h_send(h, buf, (size_t)len);
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
			return have;
		}
		ssize_t n = tls_read(h->cli, buf + have, cap - have);
		cr_assert_gt(n, 0, "no response (%zd)", n);
		have += (size_t)n;
	}
}

/* Nothing at all has been sent to the client since the handshake. */
static void expect_silence(struct h *h)
{
	uint8_t b[16];
	cr_assert_eq(tls_read(h->cli, b, sizeof b), -EAGAIN);
}

/* The session ended with close_notify after its one message. */
static void expect_closed(struct h *h)
{
	uint8_t b[16];
	cr_assert_eq(tls_read(h->cli, b, sizeof b), 0, "close_notify follows the response");
	cr_assert(pool_session_done(h->s));
	cr_assert_eq(pool_session_deadline(h->s), 0);
	cr_assert_str_not_empty(pool_session_reason(h->s));
	uint32_t id;
	const uint8_t *req;
	size_t len;
	cr_assert_not(pool_session_upstream_request(h->s, &id, &req, &len));
}

static void expect_error(struct h *h, uint16_t code)
{
	uint8_t buf[256];
	const uint8_t want[] = { 0x80, 0x02, 0x00, 0x02, 0x00, (uint8_t)code, 0x80, 0, 0, 0 };
	size_t len = h_recv(h, buf, sizeof buf);
	cr_assert_eq(len, sizeof want);
	cr_assert_arr_eq(buf, want, sizeof want);
	expect_closed(h);
	cr_assert_eq(h->st.completed, 0);
}

/* Every outcome counter but `except` is zero; `except` (NULL for none) is one. */
static void expect_only(const struct h *h, const uint64_t *except)
{
	const uint64_t *all[] = { &h->st.completed,	     &h->st.no_overlap,
				  &h->st.failed_tls,	     &h->st.failed_bad_request,
				  &h->st.failed_no_upstream, &h->st.failed_upstream,
				  &h->st.failed_timeout };
	for (size_t i = 0; i < sizeof all / sizeof *all; i++)
		cr_assert_eq(*all[i], all[i] == except ? 1u : 0u, "counter %zu", i);
	cr_assert_eq(h->st.accepted, 1);
}

/* The Fixed Key request the session offers: taken exactly once, addressed to want_id, in that
 * upstream's numbering with its token first (or no Authentication record without one), and
 * carrying exactly the keys the client exports on its own side of the TLS session. */
static void take_request(struct h *h, uint32_t want_id, uint16_t aead, size_t key_len)
{
	uint32_t id = 0;
	const uint8_t *req;
	size_t len;
	cr_assert(pool_session_upstream_request(h->s, &id, &req, &len));
	cr_assert_eq(id, want_id);
	cr_assert_eq(pool_session_upstream_id(h->s), want_id);
	const struct fake_upstream *up = fake_find(&h->reg, want_id);
	bool iana = up->numbering == KE_NUMBERING_IANA;
	h->up_numbering = up->numbering;

	/* On the wire: [Authentication (14 / 0x4005, C=0)], then Fixed Key (12 / 0x4002, C=1). */
	size_t off = 0;
	if (up->token) {
		size_t tl = strlen(up->token);
		cr_assert_gt(len, 4 + tl);
		cr_assert_eq(req[0] << 8 | req[1], iana ? 14 : 0x4005);
		cr_assert_eq((size_t)(req[2] << 8 | req[3]), tl);
		cr_assert_arr_eq(req + 4, up->token, tl);
		off = 4 + tl;
	}
	cr_assert_gt(len, off + 2);
	cr_assert_eq(req[off] << 8 | req[off + 1], iana ? 0x8000 | 12 : 0x8000 | 0x4002);
	struct ke_msg_request parsed;
	struct ke_msg_reject rej;
	if (up->numbering != h->cfg.numbering) {
		/* The broker's own numbering does not know the critical Fixed Key type used. */
		cr_assert_eq(ke_msg_parse_request(req, len, h->cfg.numbering, &parsed, &rej),
			     -EPROTO);
		cr_assert_eq(rej.code, KE_MSG_ERROR_UNRECOGNIZED_CRITICAL);
	}
	cr_assert_eq(ke_msg_parse_request(req, len, up->numbering, &parsed, &rej), 0, "%s",
		     rej.reason);
	cr_assert_not(parsed.token_misplaced);
	cr_assert_eq(parsed.has_token, up->token != NULL);
	if (up->token) {
		cr_assert_eq(parsed.token_len, strlen(up->token));
		cr_assert_arr_eq(parsed.token, up->token, parsed.token_len);
	}
	cr_assert_eq(parsed.kind, KE_MSG_REQUEST_FIXED_KEY);
	cr_assert_eq(parsed.n_protocols, 1);
	cr_assert_eq(parsed.protocols[0], KE_MSG_PROTOCOL_NTPV4);
	cr_assert_eq(parsed.n_aeads, 1);
	cr_assert_eq(parsed.aeads[0], aead);
	cr_assert(parsed.keep_alive);
	cr_assert_eq(parsed.fixed_key_len, key_len);
	uint8_t c2s[KE_MSG_KEY_MAX], s2c[KE_MSG_KEY_MAX];
	cr_assert_eq(tls_export_nts_keys(h->cli, KE_MSG_PROTOCOL_NTPV4, aead, key_len, c2s, s2c),
		     0);
	cr_assert_arr_eq(parsed.fixed_c2s, c2s, key_len);
	cr_assert_arr_eq(parsed.fixed_s2c, s2c, key_len);
	ke_msg_request_wipe(&parsed);
	cr_assert_not(pool_session_upstream_request(h->s, &id, &req, &len), "taken once");
}

/* Distinct cookies of distinct lengths. */
static void make_cookies(struct ke_msg_cookie *ck, size_t n, uint64_t seed)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, seed);
	for (size_t i = 0; i < n; i++) {
		ck[i].len = 96 + 4 * i;
		tu_rng_fill(&rng, ck[i].data, ck[i].len);
	}
}

/* An upstream message, parsed as the glue parses it, reported to the session. */
static void report(struct h *h, const uint8_t *msg, size_t len)
{
	struct ke_msg_response resp;
	int rc = ke_msg_parse_response(msg, len, h->up_numbering, KE_MSG_REQUEST_FIXED_KEY, &resp);
	pool_session_upstream_response(h->s, rc, &resp, h->now);
	pump(h);
}

/* A success answer from the upstream, with an unknown non-critical record before End. */
static void report_success(struct h *h, const struct ke_msg_success *ok, bool unknown)
{
	uint8_t buf[4096], out[4096];
	int len = ke_msg_build_success(buf, sizeof buf, h->up_numbering, ok);
	cr_assert_gt(len, 4);
	struct wire_writer w;
	wire_writer_init(&w, out, sizeof out);
	wire_put_bytes(&w, buf, (size_t)len - 4);
	if (unknown)
		cr_assert_eq(ke_record_put_raw(&w, false, 0x2345, "xyz", 3), 0);
	cr_assert_eq(ke_record_put(&w, h->up_numbering, KE_RECORD_END, NULL, 0), 0);
	report(h, out, wire_written(&w));
}

static void report_error(struct h *h, uint16_t code)
{
	uint8_t buf[16];
	int len = ke_msg_build_error(buf, sizeof buf, h->up_numbering, code);
	cr_assert_gt(len, 0);
	report(h, buf, (size_t)len);
}

/* Record by record: Next Protocol, AEAD, the cookies in order, [Port], Server, End — and
 * nothing else (no Keep Alive, no unknown record). */
static void check_success(struct h *h, const uint8_t *buf, size_t len, uint16_t aead,
			  const struct ke_msg_cookie *ck, size_t n_ck, uint16_t port,
			  const char *server)
{
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, buf, len, h->cfg.numbering);

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_NEXT_PROTOCOL);
	cr_assert(rec.critical);
	cr_assert_eq(rec.len, 2);
	cr_assert_eq(rec.body[0] << 8 | rec.body[1], KE_MSG_PROTOCOL_NTPV4);

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_AEAD);
	cr_assert_eq(rec.len, 2);
	cr_assert_eq(rec.body[0] << 8 | rec.body[1], aead);

	for (size_t i = 0; i < n_ck; i++) {
		cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
		cr_assert_eq(rec.kind, KE_RECORD_NEW_COOKIE, "cookie %zu", i);
		cr_assert_not(rec.critical);
		cr_assert_eq(rec.len, ck[i].len);
		cr_assert_arr_eq(rec.body, ck[i].data, ck[i].len);
	}

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	if (port) {
		cr_assert_eq(rec.kind, KE_RECORD_PORT);
		cr_assert(rec.critical);
		cr_assert_eq(rec.len, 2);
		cr_assert_eq(rec.body[0] << 8 | rec.body[1], port);
		cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	}
	cr_assert_eq(rec.kind, KE_RECORD_SERVER);
	cr_assert(rec.critical);
	cr_assert_eq(rec.len, strlen(server));
	cr_assert_arr_eq(rec.body, server, strlen(server));

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_END);
	cr_assert_eq(ke_record_iter_next(&it, &rec), 0, "nothing after End");

	struct ke_msg_response r;
	int rc = ke_msg_parse_response(buf, len, h->cfg.numbering, KE_MSG_REQUEST_PLAIN, &r);
	cr_assert_eq(rc, 0);
	cr_assert_not(r.keep_alive);
	cr_assert_eq(r.ignored, 0);
}

/* ---- Success --------------------------------------------------------------------------------- */

static void good_exchange(enum ke_numbering n)
{
	struct h h;
	uint8_t buf[4096];
	struct ke_msg_cookie ck[8];
	h_init(&h, n);
	add_upstream(&h.reg, 7, "a.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	cr_assert_eq(h.reg.n_calls, 1);
	cr_assert_eq(h.reg.calls[0].n_tried, 0);
	cr_assert_eq(h.reg.calls[0].now, T0);
	take_request(&h, 7, 15, 32);
	expect_silence(&h);

	make_cookies(ck, 8, 1);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 8,
				     .keep_alive = true };
	report_success(&h, &ok, true);
	size_t len = h_recv(&h, buf, sizeof buf);
	check_success(&h, buf, len, 15, ck, 8, 0, "a.test");
	expect_closed(&h);
	cr_assert_str_eq(pool_session_reason(h.s), "completed");
	expect_only(&h, &h.st.completed);
	cr_assert_eq(h.st.failovers, 0);
	cr_assert_eq(pool_session_upstream_id(h.s), 7);
	h_free(&h);
}

/* The client's handshake has its own, shorter deadline; then the session's applies. */
Test(pool_session, handshake_deadline_then_session_deadline)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h.cfg.handshake_timeout_ms = 400;
	h_start(&h);
	cr_assert_eq(pool_session_deadline(h.s), T0 + 400, "the handshake's deadline first");
	h.cli = tu_tls_client_session(dir, NULL, "pool.test");
	pump(&h);
	cr_assert_eq(tls_state(h.cli), TLS_ESTABLISHED, "%s", tls_reason(h.cli));
	cr_assert_eq(pool_session_deadline(h.s), T0 + TIMEOUT, "then the session's");
	h_free(&h);
}

Test(pool_session, good_exchange_iana)
{
	good_exchange(KE_NUMBERING_IANA);
}

Test(pool_session, good_exchange_ntpdrs_v1)
{
	good_exchange(KE_NUMBERING_NTPDRS_V1);
}

/* The broker speaks `own` to its client, and the upstream's numbering and token to the
 * upstream (take_request checks the request; PROTOCOL.md §2: never mixed on one connection). */
static void upstream_generation_case(enum ke_numbering own, enum ke_numbering up_n,
				     const char *token)
{
	struct h h;
	uint8_t buf[4096];
	struct ke_msg_cookie ck[8];
	h_init(&h, own);
	add_upstream(&h.reg, 4, "a.test");
	h.reg.ups[0].numbering = up_n;
	h.reg.ups[0].token = token;
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 4, 15, 32);
	cr_assert_eq(h.up_numbering, up_n);
	make_cookies(ck, 8, 9);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 8,
				     .port = 4123, .keep_alive = true };
	report_success(&h, &ok, true);
	size_t len = h_recv(&h, buf, sizeof buf);
	check_success(&h, buf, len, 15, ck, 8, 4123, "a.test");
	if (token)
		cr_assert_null(memmem(buf, len, token, strlen(token)), "a client got the token");
	expect_closed(&h);
	expect_only(&h, &h.st.completed);
	h_free(&h);
}

Test(pool_session, upstream_numbering_and_token)
{
	/* 64 hex characters, as KELB derives them. */
	static const char token[] =
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
	upstream_generation_case(KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1, token);
	upstream_generation_case(KE_NUMBERING_IANA, KE_NUMBERING_IANA, token);
	upstream_generation_case(KE_NUMBERING_NTPDRS_V1, KE_NUMBERING_IANA, "pool-token-1");
	upstream_generation_case(KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1, NULL);
	upstream_generation_case(KE_NUMBERING_NTPDRS_V1, KE_NUMBERING_IANA, NULL);
}

static void server_port_case(uint16_t port, const char *server, uint16_t want_port,
			     const char *want_server)
{
	struct h h;
	uint8_t buf[4096];
	struct ke_msg_cookie ck[3];
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 1, 15, 32);
	make_cookies(ck, 3, 2);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 3,
				     .port = port, .server = server };
	report_success(&h, &ok, false);
	size_t len = h_recv(&h, buf, sizeof buf);
	check_success(&h, buf, len, 15, ck, 3, want_port, want_server);
	expect_closed(&h);
	expect_only(&h, &h.st.completed);
	h_free(&h);
}

Test(pool_session, server_and_port_from_the_upstream)
{
	server_port_case(4123, "ntp1.a.test", 4123, "ntp1.a.test");
	server_port_case(0, "192.0.2.9", 0, "192.0.2.9");
	server_port_case(4123, NULL, 4123, "a.test");
}

Test(pool_session, longest_response_fits)
{
	struct h h;
	uint8_t buf[4096];
	struct ke_msg_cookie ck[8];
	char name[KE_MSG_NAME_MAX + 1];
	memset(name, 'n', KE_MSG_NAME_MAX);
	name[KE_MSG_NAME_MAX] = '\0';
	for (size_t i = 0; i < 8; i++) {
		ck[i].len = KE_MSG_COOKIE_MAX;
		memset(ck[i].data, (int)i + 1, KE_MSG_COOKIE_MAX);
	}
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 1, 15, 32);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 8,
				     .port = 65535, .server = name };
	report_success(&h, &ok, false);
	size_t len = h_recv(&h, buf, sizeof buf);
	check_success(&h, buf, len, 15, ck, 8, 65535, name);
	expect_only(&h, &h.st.completed);
	h_free(&h);
}

/* The AEAD chosen for the upstream request: the client's first that the upstream lists and we
 * know. */
static void aead_case(const uint16_t *aeads, size_t n_aeads, const struct ke_msg_algorithm *algs,
		      size_t n_algs, uint16_t want, size_t key_len)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 3, "a.test");
	memcpy(h.reg.ups[0].algs, algs, n_algs * sizeof *algs);
	h.reg.ups[0].n_algs = n_algs;
	h_connect(&h);
	h_request(&h, aeads, n_aeads, NULL, 0);
	take_request(&h, 3, want, key_len);
	h_free(&h);
}

Test(pool_session, aead_order_is_the_clients)
{
	static const uint16_t a17_15[] = { 17, 15 }, a15_17[] = { 15, 17 }, a30_15[] = { 30, 15 };
	static const struct ke_msg_algorithm both[] = { { 15, 32 }, { 17, 64 } },
					     with30[] = { { 30, 32 }, { 15, 32 } },
					     only15[] = { { 15, 32 } };
	aead_case(a17_15, 2, both, 2, 17, 64);
	aead_case(a15_17, 2, both, 2, 15, 32);
	aead_case(a30_15, 2, with30, 2, 15, 32);
	aead_case(a17_15, 2, only15, 1, 15, 32);
}

/* ---- Client requests ---------------------------------------------------------------------- */

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

static void bad_request_case_n(enum ke_numbering n, const uint8_t *msg, size_t len,
			       uint16_t code)
{
	struct h h;
	h_init(&h, n);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	h_send(&h, msg, len);
	expect_error(&h, code);
	expect_only(&h, &h.st.failed_bad_request);
	cr_assert_eq(h.reg.n_calls, 0, "no upstream picked for a refused request");
	h_free(&h);
}

static void bad_request_case(struct raw_msg *m, size_t len, uint16_t code)
{
	bad_request_case_n(KE_NUMBERING_IANA, m->buf, len, code);
}

Test(pool_session, bad_requests)
{
	struct raw_msg m;
	static const uint8_t key[64] = { 1 }, two[2] = { 0, 1 }, odd[3] = { 0 };

	raw_begin(&m); /* unknown critical record */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aead15, 1);
	raw_put(&m, true, 0x1234, NULL, 0);
	raw_put(&m, true, 0, NULL, 0);
	bad_request_case(&m, wire_written(&m.w), 0);

	/* A Fixed Key request: clients of the pool are never pools, and an unauthorised pool
	 * request is Error 1 (PROTOCOL.md §3.5). */
	raw_begin(&m);
	cr_assert_eq(ke_record_put(&m.w, KE_NUMBERING_IANA, KE_RECORD_FIXED_KEY, key, 64), 0);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aead15, 1);
	raw_put(&m, true, 0, NULL, 0);
	bad_request_case(&m, wire_written(&m.w), 1);

	raw_begin(&m); /* NTPv4 without AEAD */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_put(&m, true, 0, NULL, 0);
	bad_request_case(&m, wire_written(&m.w), 1);

	raw_begin(&m); /* odd list length */
	raw_put(&m, true, 1, odd, sizeof odd);
	raw_list(&m, KE_RECORD_AEAD, aead15, 1);
	raw_put(&m, true, 0, NULL, 0);
	bad_request_case(&m, wire_written(&m.w), 1);

	raw_begin(&m); /* End with a body: refused by the framing */
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aead15, 1);
	raw_put(&m, true, 0, two, sizeof two);
	bad_request_case(&m, wire_written(&m.w), 1);

	raw_begin(&m); /* a header alone proves the request over 4096 bytes */
	static const uint8_t filler[4200];
	raw_put(&m, false, 0x2345, filler, sizeof filler);
	bad_request_case(&m, 8, 1);
}

Test(pool_session, pool_requests_from_clients_get_error_1)
{
	/* The broker accepts no pool, by certificate or by token: Support and Fixed Key requests,
	 * with or without a token, are Error 1 in both numberings and never reach a pick. */
	static const enum ke_numbering ns[] = { KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1 };
	static const char *const tokens[] = { NULL, "some-pool-token" };
	static const uint8_t key[32] = { 3 };
	uint8_t buf[512];
	for (size_t i = 0; i < 2; i++) {
		for (size_t t = 0; t < 2; t++) {
			int len = ke_msg_build_support_request(buf, sizeof buf, ns[i], tokens[t],
							       true, true, true);
			cr_assert_gt(len, 0);
			bad_request_case_n(ns[i], buf, (size_t)len, 1);
			len = ke_msg_build_fixed_key_request(buf, sizeof buf, ns[i], tokens[t], key,
							     key, 32, 0, 15, true);
			cr_assert_gt(len, 0);
			bad_request_case_n(ns[i], buf, (size_t)len, 1);
		}
	}
}

Test(pool_session, unknown_noncritical_request_record_ignored)
{
	struct h h;
	struct raw_msg m;
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	raw_begin(&m);
	raw_put(&m, false, 0x2345, "abc", 3);
	raw_list(&m, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1);
	raw_list(&m, KE_RECORD_AEAD, aead15, 1);
	raw_put(&m, true, 0, NULL, 0);
	h_send(&h, m.buf, wire_written(&m.w));
	take_request(&h, 1, 15, 32);
	h_free(&h);
}

Test(pool_session, incomplete_request_at_deadline)
{
	struct h h;
	uint8_t buf[256];
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	int len = ke_msg_build_request(buf, sizeof buf, KE_NUMBERING_IANA, ntpv4, 1, aead15, 1,
				       NULL, 0);
	cr_assert_gt(len, 2);
	h_send(&h, buf, (size_t)len - 2);
	expect_silence(&h);
	cr_assert_not(pool_session_done(h.s));
	h.now = pool_session_deadline(h.s);
	pool_session_timeout(h.s, h.now);
	pump(&h);
	expect_error(&h, 1);
	expect_only(&h, &h.st.failed_timeout);
	cr_assert_eq(h.reg.n_calls, 0);
	h_free(&h);
}

Test(pool_session, no_request_at_deadline)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h);
	pool_session_timeout(h.s, T0 + TIMEOUT);
	pump(&h);
	expect_error(&h, 1);
	expect_only(&h, &h.st.failed_timeout);
	h_free(&h);
}

Test(pool_session, request_cut_short_by_the_client)
{
	struct h h;
	uint8_t buf[256];
	int len = ke_msg_build_request(buf, sizeof buf, KE_NUMBERING_IANA, ntpv4, 1, aead15, 1,
				       NULL, 0);
	cr_assert_gt(len, 1);

	/* close_notify inside TLS after half a request. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h);
	cr_assert_eq(tls_write(h.cli, buf, (size_t)len - 1), 0);
	cr_assert_eq(tls_close(h.cli), 0);
	pump(&h);
	expect_error(&h, 1);
	expect_only(&h, &h.st.failed_bad_request);
	h_free(&h);

	/* The socket's read side ends without a byte: nothing to answer, close_notify. */
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h);
	pool_session_eof(h.s, h.now);
	pump(&h);
	expect_closed(&h);
	expect_only(&h, NULL);
	h_free(&h);
}

Test(pool_session, half_close_after_the_request_still_answered)
{
	struct h h;
	uint8_t buf[4096];
	struct ke_msg_cookie ck[2];
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	cr_assert_eq(tls_close(h.cli), 0);
	pump(&h);
	pool_session_eof(h.s, h.now);
	cr_assert_not(pool_session_done(h.s));
	take_request(&h, 1, 15, 32);
	make_cookies(ck, 2, 3);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 2 };
	report_success(&h, &ok, false);
	size_t len = h_recv(&h, buf, sizeof buf);
	check_success(&h, buf, len, 15, ck, 2, 0, "a.test");
	cr_assert(pool_session_done(h.s));
	expect_only(&h, &h.st.completed);
	h_free(&h);
}

Test(pool_session, deny_reaches_pick)
{
	struct h h;
	static const char *const deny[] = { "A.test", "b.test" };
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "c.test");
	h_connect(&h);
	h_request(&h, aead15, 1, deny, 2);
	cr_assert_eq(h.reg.n_calls, 1);
	cr_assert_eq(h.reg.calls[0].n_deny, 2);
	cr_assert(h.reg.calls[0].denies_a);
	take_request(&h, 1, 15, 32);
	h_free(&h);
}

/* ---- Negotiation against the candidate's lists ---------------------------------------------- */

static void no_overlap_case(const uint16_t *protocols, size_t n_protocols,
			    const struct ke_msg_algorithm *algs, size_t n_algs, const uint8_t *want,
			    size_t want_len)
{
	struct h h;
	uint8_t buf[256];
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	add_upstream(&h.reg, 2, "b.test");
	memcpy(h.reg.ups[0].protocols, protocols, n_protocols * sizeof *protocols);
	h.reg.ups[0].n_protocols = n_protocols;
	memcpy(h.reg.ups[0].algs, algs, n_algs * sizeof *algs);
	h.reg.ups[0].n_algs = n_algs;
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	cr_assert_eq(h_recv(&h, buf, sizeof buf), want_len);
	cr_assert_arr_eq(buf, want, want_len);
	expect_closed(&h);
	expect_only(&h, &h.st.no_overlap);
	cr_assert_eq(h.reg.n_calls, 1);
	cr_assert_eq(h.st.failovers, 0);
	h_free(&h);
}

Test(pool_session, no_overlap_with_the_candidate)
{
	static const uint16_t other[] = { 1 };
	static const struct ke_msg_algorithm ok_algs[] = { { 15, 32 } },
					     a17[] = { { 17, 64 } };
	static const uint8_t no_protocol[] = { 0x80, 1, 0, 0, 0x80, 0, 0, 0 };
	static const uint8_t no_aead[] = { 0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 0, 0x80, 0, 0, 0 };
	no_overlap_case(other, 1, ok_algs, 1, no_protocol, sizeof no_protocol);
	no_overlap_case(ntpv4, 1, a17, 1, no_aead, sizeof no_aead);
}

Test(pool_session, unknown_client_aead_is_no_overlap)
{
	/* The upstream lists AEAD 30 too, but we cannot export for it. */
	struct h h;
	uint8_t buf[256];
	static const uint16_t a30[] = { 30 };
	static const uint8_t no_aead[] = { 0x80, 1, 0, 2, 0, 0, 0x80, 4, 0, 0, 0x80, 0, 0, 0 };
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h.reg.ups[0].algs[1] = (struct ke_msg_algorithm){ 30, 32 };
	h_connect(&h);
	h_request(&h, a30, 1, NULL, 0);
	cr_assert_eq(h_recv(&h, buf, sizeof buf), sizeof no_aead);
	cr_assert_arr_eq(buf, no_aead, sizeof no_aead);
	expect_only(&h, &h.st.no_overlap);
	h_free(&h);
}

Test(pool_session, wrong_key_length_fails_over)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	add_upstream(&h.reg, 2, "b.test");
	h.reg.ups[0].algs[0].key_len = 16;
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	cr_assert_eq(h.reg.n_calls, 2);
	cr_assert_eq(h.reg.calls[1].n_tried, 1);
	cr_assert_eq(h.reg.calls[1].tried[0], 1);
	cr_assert_eq(h.st.failovers, 1);
	take_request(&h, 2, 15, 32);
	expect_silence(&h);
	expect_only(&h, NULL);
	h_free(&h);
}

/* ---- Upstream failures -------------------------------------------------------------------- */

Test(pool_session, no_upstream)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	expect_error(&h, 2);
	expect_only(&h, &h.st.failed_no_upstream);
	cr_assert_eq(h.reg.n_calls, 1);
	cr_assert_eq(pool_session_upstream_id(h.s), UINT32_MAX);
	h_free(&h);
}

Test(pool_session, failover_before_the_keys_leave)
{
	struct h h;
	uint8_t buf[4096];
	struct ke_msg_cookie ck[8];
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 10, "a.test");
	add_upstream(&h.reg, 20, "b.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 10, 15, 32);
	h.now += 100;
	pool_session_upstream_failed(h.s, false, -ECONNREFUSED, h.now);
	pump(&h);
	expect_silence(&h);
	cr_assert_eq(h.st.failovers, 1);
	cr_assert_eq(h.reg.n_calls, 2);
	cr_assert_eq(h.reg.calls[1].n_tried, 1);
	cr_assert_eq(h.reg.calls[1].tried[0], 10);
	cr_assert_eq(h.reg.calls[1].now, T0 + 100);
	take_request(&h, 20, 15, 32);
	make_cookies(ck, 8, 4);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 8 };
	report_success(&h, &ok, false);
	size_t len = h_recv(&h, buf, sizeof buf);
	check_success(&h, buf, len, 15, ck, 8, 0, "b.test");
	expect_only(&h, &h.st.completed);
	cr_assert_eq(pool_session_upstream_id(h.s), 20);
	h_free(&h);
}

Test(pool_session, failover_stops_at_max_attempts)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	for (uint32_t i = 0; i < 5; i++)
		add_upstream(&h.reg, 100 + i, "x.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	for (uint32_t i = 0; i < 3; i++) {
		take_request(&h, 100 + i, 15, 32);
		cr_assert_eq(h.reg.calls[i].n_tried, i);
		for (uint32_t j = 0; j < i; j++)
			cr_assert_eq(h.reg.calls[i].tried[j], 100 + j);
		pool_session_upstream_failed(h.s, false, -ETIMEDOUT, h.now);
		pump(&h);
	}
	expect_error(&h, 2);
	expect_only(&h, &h.st.failed_no_upstream);
	cr_assert_eq(h.reg.n_calls, 3, "no fourth candidate");
	cr_assert_eq(h.st.failovers, 3);
	h_free(&h);
}

Test(pool_session, keys_sent_means_error_2_and_no_retry)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	add_upstream(&h.reg, 2, "b.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 1, 15, 32);
	pool_session_upstream_failed(h.s, true, -ECONNRESET, h.now);
	pump(&h);
	expect_error(&h, 2);
	expect_only(&h, &h.st.failed_upstream);
	cr_assert_eq(h.reg.n_calls, 1, "no other upstream is picked");
	cr_assert_eq(h.st.failovers, 0);
	h_free(&h);
}

/* The upstream answered something unusable: Error 2, never another upstream. why: the
 * session's reason when it names the upstream's fault, NULL to skip that check. */
static void bad_answer_case(void (*answer)(struct h *), const char *why)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	add_upstream(&h.reg, 2, "b.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 1, 15, 32);
	answer(&h);
	expect_error(&h, 2);
	if (why)
		cr_assert_str_eq(pool_session_reason(h.s), why);
	expect_only(&h, &h.st.failed_upstream);
	cr_assert_eq(h.reg.n_calls, 1);
	cr_assert_eq(h.st.failovers, 0);
	h_free(&h);
}

static void answer_error0(struct h *h)
{
	report_error(h, 0);
}

static void answer_error1(struct h *h)
{
	report_error(h, 1);
}

static void answer_error2(struct h *h)
{
	report_error(h, 2);
}

static void answer_garbage(struct h *h)
{
	static const uint8_t junk[] = { 0x80, 1, 0, 9, 0, 0, 0x80, 0, 0, 0 };
	struct ke_msg_response resp;
	cr_assert_eq(ke_msg_parse_response(junk, sizeof junk, h->up_numbering,
					   KE_MSG_REQUEST_FIXED_KEY, &resp),
		     -EBADMSG);
	report(h, junk, sizeof junk);
}

static void answer_unknown_critical(struct h *h)
{
	uint8_t buf[64];
	struct wire_writer w;
	wire_writer_init(&w, buf, sizeof buf);
	cr_assert_eq(ke_record_put_raw(&w, true, 0x1234, NULL, 0), 0);
	cr_assert_eq(ke_record_put(&w, h->up_numbering, KE_RECORD_END, NULL, 0), 0);
	report(h, buf, wire_written(&w));
}

/* NTPv4 and an AEAD without a cookie: the parser refuses it. */
static void answer_no_cookie(struct h *h)
{
	uint8_t buf[64];
	struct wire_writer w;
	wire_writer_init(&w, buf, sizeof buf);
	enum ke_numbering n = h->up_numbering;
	cr_assert_eq(ke_record_put_u16_list(&w, n, KE_RECORD_NEXT_PROTOCOL, ntpv4, 1), 0);
	cr_assert_eq(ke_record_put_u16_list(&w, n, KE_RECORD_AEAD, aead15, 1), 0);
	cr_assert_eq(ke_record_put(&w, n, KE_RECORD_END, NULL, 0), 0);
	report(h, buf, wire_written(&w));
}

/* A parse result of 0 without cookies still gets no success from the session itself. */
static void answer_no_cookie_parsed_ok(struct h *h)
{
	struct ke_msg_response resp;
	memset(&resp, 0, sizeof resp);
	resp.has_protocol_record = resp.has_protocol = true;
	resp.has_aead_record = resp.has_aead = true;
	resp.aead = 15;
	pool_session_upstream_response(h->s, 0, &resp, h->now);
	pump(h);
}

static void answer_other_aead(struct h *h)
{
	struct ke_msg_cookie ck[8];
	make_cookies(ck, 8, 5);
	struct ke_msg_success ok = { .protocol = 0, .aead = 17, .cookies = ck, .n_cookies = 8 };
	report_success(h, &ok, false);
}

static void answer_other_protocol(struct h *h)
{
	struct ke_msg_response resp;
	memset(&resp, 0, sizeof resp);
	resp.has_protocol_record = resp.has_protocol = true;
	resp.protocol = 1;
	resp.has_aead_record = resp.has_aead = true;
	resp.aead = 15;
	resp.n_cookies = 1;
	resp.cookies[0].len = 4;
	pool_session_upstream_response(h->s, 0, &resp, h->now);
	pump(h);
}

static void answer_no_overlap(struct h *h)
{
	uint8_t buf[32];
	int len = ke_msg_build_no_overlap(buf, sizeof buf, h->up_numbering, true, 0);
	cr_assert_gt(len, 0);
	report(h, buf, (size_t)len);
}

Test(pool_session, upstream_answers_refused)
{
	bad_answer_case(answer_error0, "upstream answer refused");
	bad_answer_case(answer_error1, "upstream answer refused");
	bad_answer_case(answer_error2, "upstream answer refused");
	bad_answer_case(answer_garbage, "upstream answer refused");
	bad_answer_case(answer_unknown_critical, "upstream answer refused");
	bad_answer_case(answer_no_cookie, "upstream answer refused");
	bad_answer_case(answer_no_cookie_parsed_ok, "upstream sent no cookie");
	bad_answer_case(answer_other_aead, "upstream chose another AEAD");
	bad_answer_case(answer_other_protocol, "upstream chose another protocol");
	bad_answer_case(answer_no_overlap, "upstream chose another AEAD");
}

/* ---- The deadline --------------------------------------------------------------------------- */

Test(pool_session, deadline_while_waiting_on_the_upstream)
{
	struct h h;
	struct ke_msg_cookie ck[8];
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	add_upstream(&h.reg, 2, "b.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	take_request(&h, 1, 15, 32);
	h.now = pool_session_deadline(h.s);
	cr_assert_eq(h.now, T0 + TIMEOUT);
	pool_session_timeout(h.s, h.now);
	pump(&h);
	expect_error(&h, 2);
	expect_only(&h, &h.st.failed_timeout);

	/* The glue reports later: nothing changes and nothing more is sent. */
	make_cookies(ck, 8, 6);
	struct ke_msg_success ok = { .protocol = 0, .aead = 15, .cookies = ck, .n_cookies = 8 };
	report_success(&h, &ok, false);
	pool_session_upstream_failed(h.s, false, -ETIMEDOUT, h.now);
	pool_session_timeout(h.s, h.now);
	const uint8_t *p;
	size_t n;
	pool_session_output(h.s, &p, &n);
	cr_assert_eq(n, 0);
	expect_only(&h, &h.st.failed_timeout);
	cr_assert_eq(h.reg.n_calls, 1);
	cr_assert_eq(h.st.failovers, 0);
	h_free(&h);
}

Test(pool_session, deadline_before_the_glue_took_the_request)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_connect(&h);
	h_request(&h, aead15, 1, NULL, 0);
	pool_session_timeout(h.s, T0 + TIMEOUT);
	pump(&h);
	expect_error(&h, 2);
	expect_only(&h, &h.st.failed_timeout);
	h_free(&h);
}

Test(pool_session, deadline_in_the_handshake)
{
	struct h h;
	const uint8_t *p;
	size_t n;
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	h.cli = tu_tls_client_session(dir, NULL, "pool.test");
	tls_step(h.cli);
	tls_output(h.cli, &p, &n);
	cr_assert_gt(n, 0);
	cr_assert_eq(pool_session_input(h.s, p, n, h.now), 0);
	tls_output_consume(h.cli, n);
	cr_assert_not(pool_session_done(h.s));
	pool_session_timeout(h.s, T0 + TIMEOUT);
	cr_assert(pool_session_done(h.s));
	expect_only(&h, &h.st.failed_timeout);
	h_free(&h);
}

/* A connection that never became a client's (its PROXY header refused or late, or the load
 * balancer's own check) is no session: its end counts nowhere. */
Test(pool_session, not_admitted_counts_nothing)
{
	struct h h;
	h_init(&h, KE_NUMBERING_IANA);
	cr_assert_eq(pool_session_new(&h.s, h.sc, &h.cfg, &h.ups, &h.st, h.now), 0);
	pool_session_timeout(h.s, T0 + TIMEOUT);
	cr_assert(pool_session_done(h.s));
	struct pool_session_stats zero = { 0 };
	cr_assert_eq(memcmp(&h.st, &zero, sizeof zero), 0, "nothing counted");
	h_free(&h);
}

/* ---- TLS ------------------------------------------------------------------------------------ */

Test(pool_session, tls12_client_refused)
{
	struct h h;
	struct tu_tls_raw *r = tu_tls_raw_client("NORMAL:-VERS-ALL:+VERS-TLS1.2", TLS_ALPN);
	h_init(&h, KE_NUMBERING_IANA);
	add_upstream(&h.reg, 1, "a.test");
	h_start(&h);
	struct tu_tls_end raw = tu_tls_raw_end(r), s = session_end(&h);
	tu_tls_pump(&raw, &s);
	cr_assert(pool_session_done(h.s));
	cr_assert_neq(r->handshake, 0, "the handshake did not complete");
	cr_assert_str_not_empty(pool_session_reason(h.s));
	expect_only(&h, &h.st.failed_tls);
	cr_assert_eq(h.reg.n_calls, 0);
	tu_tls_raw_free(r);
	h_free(&h);
}

Test(pool_session, garbage_and_overflow)
{
	struct h h;
	static const uint8_t junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	cr_assert_eq(pool_session_input(h.s, junk, sizeof junk - 1, h.now), 0);
	cr_assert(pool_session_done(h.s));
	expect_only(&h, &h.st.failed_tls);
	cr_assert_eq(pool_session_input(h.s, junk, sizeof junk - 1, h.now), 0,
		     "input after the end is ignored");
	h_free(&h);

	uint8_t *big = calloc(1, TLS_IN_MAX + 1);
	cr_assert(big);
	h_init(&h, KE_NUMBERING_IANA);
	h_start(&h);
	cr_assert_eq(pool_session_input(h.s, big, TLS_IN_MAX + 1, h.now), -EMSGSIZE);
	cr_assert(pool_session_done(h.s));
	free(big);
	h_free(&h);
}

Test(pool_session, bad_config_refused)
{
	struct h h;
	struct pool_session *s = NULL;
	h_init(&h, KE_NUMBERING_IANA);
	h.cfg.max_attempts = 0;
	cr_assert_eq(pool_session_new(&s, h.sc, &h.cfg, &h.ups, &h.st, h.now), -EINVAL);
	h.cfg.max_attempts = POOL_SESSION_MAX_ATTEMPTS + 1;
	cr_assert_eq(pool_session_new(&s, h.sc, &h.cfg, &h.ups, &h.st, h.now), -EINVAL);
	cr_assert_null(s);
	cr_assert_eq(h.st.accepted, 0);
	h_free(&h);
}
