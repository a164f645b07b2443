/* Fuzz harness: the broker's client session (pool_session, src/pool) after a real TLS 1.3
 * handshake with an in-process client, with a fake upstream registry of three upstreams and
 * upstream outcomes chosen by the input.
 * The first byte chooses the setup: bit 0 ntpd-rs-v1 record numbers towards the client (else
 * IANA), bits 1-4 max-upstream-attempts - 1 (1..16), bit 5 a 2 s handshake deadline, bit 6 the
 * client presents the pool certificate (the broker pins nothing: it never counts). The second
 * byte's low three bits say which upstreams are healthy. The upstreams:
 *   1 "a.test"  IANA, no token, NTPv4 with AEAD 15 (32-byte keys) and 17 (64)
 *   2 "b.test"  ntpd-rs-v1, token "pool-token", NTPv4 with AEAD 15
 *   7 "c.test"  IANA, token of 64 hex digits, protocols 1 and NTPv4, AEAD 17 listed with 32-byte
 *               keys (a broken list: the session must skip it) and 15
 * pick returns the first healthy one not tried that the request does not deny, else the first
 * healthy denied one. Then each event is one byte (its value mod 12) and its arguments:
 *   0 LEN16 DATA   the client writes DATA, delivered to the session at once
 *   1 LEN16 DATA   the client writes DATA, held back
 *   2 N16          N bytes (0: all) of the client's held ciphertext are delivered
 *   3              the client closed its side (pool_session_eof)
 *   4              the deadline passes: time jumps to it and pool_session_timeout runs
 *   5 D            D x 50 ms pass; the glue's timer fires if the deadline is reached
 *   6              the client sends close_notify, delivered
 *   7 LEN16 DATA   DATA is delivered as raw ciphertext
 *   8              the glue takes the upstream request (pool_session_upstream_request)
 *   9 K            the exchange failed, keys_sent = K & 1 (pool_session_upstream_failed)
 *  10 LEN16 DATA   the upstream answered DATA: parsed as the glue does (ke_msg_parse_response
 *                  for a Fixed Key request, the upstream's numbering) and reported
 *  11 F N16 S      the upstream answered well: a success for the request's protocol and AEAD
 *                  with F & 7 + 1 cookies of N bytes each (1..256), a Port (F & 8), a Server
 *                  name (F & 16: "s<S>.test"), Keep Alive (F & 32), a wrong AEAD (F & 64)
 * Whatever the session outputs reaches the client at once, which decrypts and parses it.
 * Contract checked (session.h, PROTOCOL.md §4): the Fixed Key request taken is a valid pool
 * request in the upstream's numbering, carrying its token first, Keep Alive, a protocol and AEAD
 * both sides support, and the keys of the client's own TLS session (RFC 8915 exporter); it is
 * taken once per candidate, never twice from one upstream, and never again after an exchange that
 * may have reached an upstream (failed with keys_sent, or answered): the client's keys reach at
 * most one upstream; pick sees at most max_attempts - 1 tried upstreams and no more than
 * max_attempts candidates are tried; the client gets exactly one response, then close_notify,
 * nothing after an Error, cookies only without one, and the cookies, Port and Server of a usable
 * answer (no Keep Alive); the session is done after answering and outputs nothing more; the
 * deadline lies ahead and does not move once the handshake is done; the counters match. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "session.h"
#include "tls.h"

#include "tls_fixture.c"

#define T0 1000000
#define TIMEOUT 5000

struct fake_upstream {
	uint32_t id;
	const char *name;
	uint16_t protocols[2];
	size_t n_protocols;
	struct ke_msg_algorithm algs[2];
	size_t n_algs;
	enum ke_numbering numbering;
	const char *token;
};

static const struct fake_upstream upstreams[3] = {
	{ 1, "a.test", { KE_MSG_PROTOCOL_NTPV4 }, 1, { { 15, 32 }, { 17, 64 } }, 2,
	  KE_NUMBERING_IANA, NULL },
	{ 2, "b.test", { KE_MSG_PROTOCOL_NTPV4 }, 1, { { 15, 32 } }, 1, KE_NUMBERING_NTPDRS_V1,
	  "pool-token" },
	{ 7, "c.test", { 1, KE_MSG_PROTOCOL_NTPV4 }, 2, { { 17, 32 }, { 15, 32 } }, 2,
	  KE_NUMBERING_IANA, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" },
};

struct h {
	struct pool_session *s;
	struct tls_session *cli;
	struct pool_session_stats st;
	struct pool_session_config cfg;
	struct pool_session_upstreams ups;
	unsigned healthy; /* bit i: upstreams[i] */
	uint64_t now;

	unsigned picks;
	uint32_t last_pick; /* id of the last candidate picked */
	unsigned takes;
	uint32_t taken[POOL_SESSION_MAX_ATTEMPTS];
	bool outstanding; /* an exchange was taken and not reported */
	bool keys_gone;	  /* an exchange may have reached an upstream */
	const struct fake_upstream *up; /* of the outstanding or last exchange */
	uint16_t protocol, aead;	/* of the request taken */

	/* The last usable answer reported, which the client's success must repeat. */
	bool expect_success;
	struct ke_msg_response answer;

	size_t mirrored;
	uint64_t produced;
	bool done_seen;
	uint64_t produced_at_done;

	bool cli_closed, cli_dead, got_close;
	unsigned responses, errors, successes, no_overlaps;
	size_t plain_len;
	uint8_t plain[KE_MSG_RESPONSE_MAX + 16384]; /* last: not cleared between inputs */
};

static const struct fake_upstream *find(uint32_t id)
{
	for (size_t i = 0; i < 3; i++)
		if (upstreams[i].id == id)
			return &upstreams[i];
	CHECK(!"an upstream the registry does not have");
	return NULL;
}

static int fake_pick(void *ud, const struct pool_pick_query *q, struct pool_upstream_info *out)
{
	const struct ke_msg_request *req = q->req;
	const uint32_t *tried = q->tried;
	size_t n_tried = q->n_tried;
	uint64_t now_ms = q->now_ms;
	struct h *h = ud;
	CHECK(!h->keys_gone && !h->outstanding && !pool_session_done(h->s));
	CHECK(n_tried < h->cfg.max_attempts && n_tried == h->picks);
	CHECK(now_ms == h->now);
	CHECK(req->kind == KE_MSG_REQUEST_PLAIN && req->n_protocols >= 1);
	for (size_t i = 0; i < n_tried; i++) {
		find(tried[i]);
		for (size_t j = 0; j < i; j++)
			CHECK(tried[i] != tried[j]);
	}
	const struct fake_upstream *choice = NULL;
	for (int pass = 0; pass < 2 && !choice; pass++)
		for (size_t i = 0; i < 3 && !choice; i++) {
			const struct fake_upstream *u = &upstreams[i];
			bool used = false;
			for (size_t j = 0; j < n_tried; j++)
				used |= tried[j] == u->id;
			if (!(h->healthy & (1u << i)) || used ||
			    (pass == 0 && ke_msg_request_denies(req, u->name)))
				continue;
			choice = u;
		}
	if (!choice)
		return -ENOENT;
	h->picks++;
	h->last_pick = choice->id;
	*out = (struct pool_upstream_info){ .id = choice->id,
					    .name = choice->name,
					    .protocols = choice->protocols,
					    .n_protocols = choice->n_protocols,
					    .algorithms = choice->algs,
					    .n_algorithms = choice->n_algs,
					    .numbering = choice->numbering,
					    .token = choice->token };
	return 0;
}

/* ---- The client reading its answer ----------------------------------------------------------- */

static void check_response(struct h *h, const uint8_t *m, size_t len)
{
	CHECK(h->responses == 0); /* one request, one answer */
	h->responses++;
	struct ke_msg_response r;
	int rc = ke_msg_parse_response(m, len, h->cfg.numbering, KE_MSG_REQUEST_PLAIN, &r);
	if (rc == -EREMOTEIO) {
		CHECK(r.has_error && r.error <= KE_MSG_ERROR_INTERNAL && r.n_warnings == 0);
		CHECK(r.n_cookies == 0 && !r.has_protocol_record && !r.has_aead_record);
		h->errors++;
		return;
	}
	CHECK(rc == 0 && !r.keep_alive && r.ignored == 0);
	if (r.n_cookies == 0) {
		CHECK(!r.has_protocol || !r.has_aead); /* no overlap */
		h->no_overlaps++;
		return;
	}
	/* A success repeats the usable answer of the one upstream that saw the keys. */
	CHECK(h->expect_success);
	const struct ke_msg_response *a = &h->answer;
	CHECK(r.protocol == h->protocol && r.aead == h->aead);
	CHECK(r.n_cookies == a->n_cookies);
	for (size_t i = 0; i < r.n_cookies; i++)
		CHECK(r.cookies[i].len == a->cookies[i].len &&
		      memcmp(r.cookies[i].data, a->cookies[i].data, r.cookies[i].len) == 0);
	CHECK(r.has_port == (a->has_port && a->port != KE_MSG_PORT_DEFAULT));
	if (r.has_port)
		CHECK(r.port == a->port);
	CHECK(r.has_server);
	CHECK(strcmp(r.server.name, a->has_server ? a->server.name : h->up->name) == 0);
	h->successes++;
}

static void client_read(struct h *h)
{
	ssize_t r = fx_read_all(h->cli, h->plain, &h->plain_len, sizeof h->plain);
	CHECK(r != -ENOBUFS);
	for (;;) {
		int framed = ke_msg_frame(h->plain, h->plain_len, KE_MSG_RESPONSE_MAX);
		CHECK(framed >= 0);
		if (framed == 0)
			break;
		check_response(h, h->plain, (size_t)framed);
		memmove(h->plain, h->plain + framed, h->plain_len - (size_t)framed);
		h->plain_len -= (size_t)framed;
	}
	if (r == 0) {
		CHECK(h->plain_len == 0);
		h->got_close = true;
	} else if (r != -EAGAIN) {
		h->cli_dead = true;
	}
}

static void mirror(struct h *h)
{
	const uint8_t *p;
	size_t len;
	pool_session_output(h->s, &p, &len);
	CHECK(len >= h->mirrored && len <= TLS_OUT_MAX);
	h->produced += len - h->mirrored;
	while (h->mirrored < len) {
		size_t take = len - h->mirrored < 16384 ? len - h->mirrored : 16384;
		if (!h->cli_dead) {
			CHECK(tls_feed(h->cli, p + h->mirrored, take) == 0);
			client_read(h);
		}
		h->mirrored += take;
	}
}

/* ---- The glue's side ------------------------------------------------------------------------- */

static void input(struct h *h, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	int rc = pool_session_input(h->s, p, n, h->now);
	CHECK(rc == 0 || (rc < 0 && pool_session_done(h->s)));
}

static void deliver(struct h *h, size_t n)
{
	const uint8_t *p;
	size_t len;
	tls_output(h->cli, &p, &len);
	if (n == 0 || n > len)
		n = len;
	while (n > 0) {
		size_t take = n < 16384 ? n : 16384;
		tls_output(h->cli, &p, &len);
		input(h, p, take);
		tls_output_consume(h->cli, take);
		n -= take;
	}
}

static void fire_timeout(struct h *h)
{
	uint64_t d = pool_session_deadline(h->s);
	if (d > h->now)
		h->now = d;
	pool_session_timeout(h->s, h->now);
}

/* The glue takes the Fixed Key request: it must be the one the candidate needs. */
static void take(struct h *h)
{
	uint32_t id;
	const uint8_t *req;
	size_t len;
	if (!pool_session_upstream_request(h->s, &id, &req, &len))
		return;
	CHECK(!h->keys_gone && !h->outstanding); /* the keys reach at most one upstream */
	CHECK(!pool_session_done(h->s));
	CHECK(id == h->last_pick && pool_session_upstream_id(h->s) == id);
	for (unsigned i = 0; i < h->takes; i++)
		CHECK(h->taken[i] != id);
	CHECK(h->takes < h->cfg.max_attempts);
	h->taken[h->takes++] = id;
	const struct fake_upstream *u = find(id);

	struct ke_msg_request r;
	struct ke_msg_reject rej;
	CHECK(ke_msg_parse_request(req, len, u->numbering, &r, &rej) == 0);
	CHECK(r.kind == KE_MSG_REQUEST_FIXED_KEY && r.keep_alive);
	CHECK(r.has_token == (u->token != NULL));
	if (u->token)
		CHECK(r.token_len == strlen(u->token) &&
		      memcmp(r.token, u->token, r.token_len) == 0);
	uint16_t protocol = r.protocols[0], aead = r.aeads[0];
	bool listed = false;
	for (size_t i = 0; i < u->n_algs; i++)
		listed |= u->algs[i].id == aead && u->algs[i].key_len == r.fixed_key_len;
	CHECK(listed);
	bool spoken = false;
	for (size_t i = 0; i < u->n_protocols; i++)
		spoken |= u->protocols[i] == protocol;
	CHECK(spoken);
	/* The keys are the client's own, from its TLS session. */
	uint8_t c2s[KE_MSG_KEY_MAX], s2c[KE_MSG_KEY_MAX];
	CHECK(tls_export_nts_keys(h->cli, protocol, aead, r.fixed_key_len, c2s, s2c) == 0);
	CHECK(memcmp(c2s, r.fixed_c2s, r.fixed_key_len) == 0);
	CHECK(memcmp(s2c, r.fixed_s2c, r.fixed_key_len) == 0);
	ke_msg_request_wipe(&r);
	CHECK(!pool_session_upstream_request(h->s, &id, &req, &len)); /* taken once */
	h->outstanding = true;
	h->up = u;
	h->protocol = protocol;
	h->aead = aead;
}

static bool usable(const struct h *h, int rc, const struct ke_msg_response *r)
{
	return rc == 0 && r->has_protocol && r->protocol == h->protocol && r->has_aead &&
	       r->aead == h->aead && r->n_cookies > 0;
}

static void report_response(struct h *h, int rc, const struct ke_msg_response *r)
{
	if (h->outstanding) {
		h->outstanding = false;
		h->keys_gone = true;
		if (usable(h, rc, r)) {
			h->expect_success = true;
			h->answer = *r;
		}
	}
	pool_session_upstream_response(h->s, rc, r, h->now);
}

static void respond_raw(struct h *h, const uint8_t *p, size_t n)
{
	struct ke_msg_response r;
	enum ke_numbering num = h->up ? h->up->numbering : KE_NUMBERING_IANA;
	int rc = ke_msg_parse_response(p, n, num, KE_MSG_REQUEST_FIXED_KEY, &r);
	report_response(h, rc, &r);
}

static void respond_ok(struct h *h, uint8_t f, size_t cookie_len, uint8_t s)
{
	static struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	size_t n = (f & 7u) + 1;
	cookie_len = cookie_len % KE_MSG_COOKIE_MAX + 1;
	for (size_t i = 0; i < n; i++) {
		cookies[i].len = cookie_len;
		memset(cookies[i].data, (int)(i + s), cookie_len);
	}
	char server[16];
	snprintf(server, sizeof server, "s%u.test", s);
	struct ke_msg_success ok = {
		.protocol = h->up ? h->protocol : KE_MSG_PROTOCOL_NTPV4,
		.aead = h->up ? h->aead : 15,
		.cookies = cookies,
		.n_cookies = n,
		.port = f & 8 ? (uint16_t)(1000 + s) : 0,
		.server = f & 16 ? server : NULL,
		.keep_alive = f & 32,
	};
	if (f & 64)
		ok.aead = ok.aead == 15 ? 17 : 15;
	uint8_t msg[4096];
	enum ke_numbering num = h->up ? h->up->numbering : KE_NUMBERING_IANA;
	int len = ke_msg_build_success(msg, sizeof msg, num, &ok);
	CHECK(len > 0);
	struct ke_msg_response r;
	int rc = ke_msg_parse_response(msg, (size_t)len, num, KE_MSG_REQUEST_FIXED_KEY, &r);
	CHECK(rc == 0);
	report_response(h, rc, &r);
}

static void check_after(struct h *h, uint64_t d0)
{
	mirror(h);
	bool done = pool_session_done(h->s);
	uint64_t d = pool_session_deadline(h->s);
	if (h->done_seen) {
		CHECK(done && h->produced == h->produced_at_done);
	} else if (done) {
		h->done_seen = true;
		h->produced_at_done = h->produced;
		CHECK(pool_session_reason(h->s)[0] != '\0');
		h->outstanding = false;
	}
	CHECK(h->picks <= h->cfg.max_attempts);
	CHECK(pool_session_upstream_id(h->s) == (h->takes ? h->taken[h->takes - 1] : UINT32_MAX));
	if (done) {
		uint32_t id;
		const uint8_t *req;
		size_t len;
		CHECK(d == 0 && !pool_session_handshaking(h->s));
		CHECK(!pool_session_upstream_request(h->s, &id, &req, &len));
		return;
	}
	CHECK(h->responses == 0 && !h->got_close);
	CHECK(pool_session_reason(h->s)[0] == '\0');
	CHECK(d > h->now && d == d0); /* the session deadline is fixed */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fx_init();
	static struct h h;
	struct fx_in in = { data, size };
	uint8_t setup = fx_u8(&in);
	memset(&h, 0, offsetof(struct h, plain));
	h.healthy = fx_u8(&in) & 7;
	h.now = T0;
	h.cfg = (struct pool_session_config){
		.numbering = setup & 1 ? KE_NUMBERING_NTPDRS_V1 : KE_NUMBERING_IANA,
		.timeout_ms = TIMEOUT,
		.handshake_timeout_ms = setup & 32 ? 2000 : 0,
		.max_attempts = 1 + ((setup >> 1) & 15),
	};
	h.ups = (struct pool_session_upstreams){ .pick = fake_pick, .ud = &h };
	CHECK(pool_session_new(&h.s, fx_server_nopin, &h.cfg, &h.ups, &h.st, h.now) == 0);
	pool_session_admitted(h.s);
	pool_session_set_peer(h.s, "192.0.2.1:40000");
	CHECK(h.st.accepted == 1 && pool_session_handshaking(h.s));
	CHECK(pool_session_deadline(h.s) == T0 + (setup & 32 ? 2000 : TIMEOUT));

	h.cli = fx_client_session(setup & 64);
	for (int round = 0; round < 8 && tls_state(h.cli) == TLS_HANDSHAKING; round++) {
		tls_step(h.cli);
		deliver(&h, 0);
		const uint8_t *p;
		size_t len;
		pool_session_output(h.s, &p, &len);
		CHECK(tls_feed(h.cli, p, len) == 0);
		pool_session_output_consume(h.s, len);
	}
	CHECK(tls_state(h.cli) == TLS_ESTABLISHED);
	CHECK(!pool_session_handshaking(h.s) && !pool_session_done(h.s));
	CHECK(pool_session_deadline(h.s) == T0 + TIMEOUT);
	check_after(&h, T0 + TIMEOUT);

	while (fx_more(&in) && !h.done_seen) {
		uint64_t d0 = pool_session_deadline(h.s);
		size_t n;
		const uint8_t *p;
		uint8_t op = fx_u8(&in) % 12;
		switch (op) {
		case 0:
		case 1:
			p = fx_bytes(&in, fx_u16(&in), &n);
			if (n && !h.cli_closed && tls_write(h.cli, p, n) == 0 && op == 0)
				deliver(&h, 0);
			break;
		case 2:
			deliver(&h, fx_u16(&in));
			break;
		case 3:
			pool_session_eof(h.s, h.now);
			break;
		case 4:
			fire_timeout(&h);
			CHECK(pool_session_done(h.s));
			break;
		case 5:
			h.now += 50u * fx_u8(&in);
			if (h.now >= pool_session_deadline(h.s))
				fire_timeout(&h);
			break;
		case 6:
			if (tls_close(h.cli) == 0)
				h.cli_closed = true;
			deliver(&h, 0);
			break;
		case 7:
			p = fx_bytes(&in, fx_u16(&in), &n);
			input(&h, p, n);
			break;
		case 8:
			take(&h);
			break;
		case 9: {
			bool keys_sent = fx_u8(&in) & 1;
			if (h.outstanding) {
				h.outstanding = false;
				h.keys_gone |= keys_sent;
			}
			pool_session_upstream_failed(h.s, keys_sent, -ECONNRESET, h.now);
			break;
		}
		case 10:
			p = fx_bytes(&in, fx_u16(&in), &n);
			respond_raw(&h, p, n);
			break;
		case 11: {
			uint8_t f = fx_u8(&in);
			uint16_t len = fx_u16(&in);
			respond_ok(&h, f, len, fx_u8(&in));
			break;
		}
		}
		check_after(&h, d0);
	}
	if (!h.done_seen) {
		pool_session_timeout(h.s, h.now);
		check_after(&h, 0);
	}
	CHECK(h.done_seen);
	if (!h.cli_dead) {
		client_read(&h);
		CHECK(h.plain_len == 0);
		CHECK(h.st.completed == h.successes && h.st.no_overlap == h.no_overlaps);
		CHECK(h.st.failed_bad_request + h.st.failed_no_upstream + h.st.failed_upstream +
			      h.st.failed_timeout ==
		      h.errors);
	}
	CHECK(h.st.failovers + (h.takes > 0) >= h.takes);
	pool_session_free(h.s);
	tls_free(h.cli);
	return 0;
}
