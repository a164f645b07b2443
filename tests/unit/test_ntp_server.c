#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aead.h"
#include "keyset.h"
#include "log.h"
#include "ntp_packet.h"
#include "ntp_server.h"
#include "nts_ntp.h"
#include "testutil.h"

#define RX_TS 0xe9a1b2c311223344ull
#define TX_TS 0xe9a1b2c355667788ull
#define CLIENT_TX 0x0123456789abcdefull

static const struct ntp_server_clock clk = {
	.leap = NTP_PACKET_LEAP_NONE,
	.stratum = 2,
	.precision = -23,
	.refid = 0xc0000201u,
	.ref_ts = 0xe9a1b2c000000000ull,
	.root_delay = 0x00000123u,
	.root_disp = 0x00000456u,
};

static struct ntp_server_stats stats;
static struct keyset *slot;
static struct ntp_server *srv;

struct test_clock {
	uint64_t t;
	unsigned calls;
};
static struct test_clock tclock;

static uint64_t now_cb(void *ud)
{
	struct test_clock *c = ud;
	c->calls++;
	return c->t;
}

static void setup(void)
{
	memset(&stats, 0, sizeof stats);
	tclock = (struct test_clock){ .t = TX_TS };
	cr_assert_eq(keyset_new_random(&slot, 1000), 0);
	cr_assert_eq(ntp_server_new(&srv, &slot, &stats), 0);
}

static void teardown(void)
{
	ntp_server_free(srv);
	keyset_unref(slot);
}

TestSuite(ntp_server, .init = setup, .fini = teardown);

static size_t handle_cap(const uint8_t *req, size_t len, uint8_t *out, size_t cap)
{
	return ntp_server_handle(srv, req, len, RX_TS, &clk, now_cb, &tclock, out, cap);
}

static size_t handle(const uint8_t *req, size_t len, uint8_t *out)
{
	return handle_cap(req, len, out, 2048);
}

/* Our own failures are logged at error; capturing shows they are, and keeps test output clean. */
struct capture {
	FILE *f;
	char *text;
	size_t len;
};

static void capture_start(struct capture *c)
{
	c->f = open_memstream(&c->text, &c->len);
	cr_assert_not_null(c->f);
	log_set_stream(c->f);
}

static void capture_expect(struct capture *c, const char *needle)
{
	log_set_stream(NULL);
	fclose(c->f);
	cr_assert(strstr(c->text, needle) != NULL, "log lacks \"%s\": %s", needle, c->text);
	free(c->text);
}

static size_t put_header(uint8_t *buf, size_t cap, uint8_t version, uint8_t mode, int8_t poll)
{
	struct wire_writer w;
	wire_writer_init(&w, buf, cap);
	struct ntp_packet_header h = { .version = version, .mode = mode, .poll = poll,
				       .transmit_ts = CLIENT_TX };
	ntp_packet_put_header(&w, &h);
	cr_assert_eq(wire_writer_error(&w), 0);
	return wire_written(&w);
}

static void check_plain_reply(const uint8_t *rep, size_t n, uint8_t version, int8_t poll)
{
	cr_assert_eq(n, NTP_PACKET_HEADER_LEN);
	struct ntp_packet_header h;
	cr_assert_eq(ntp_packet_parse_header(rep, n, &h), 0);
	cr_assert_eq(h.mode, NTP_PACKET_MODE_SERVER);
	cr_assert_eq(h.version, version);
	cr_assert_eq(h.leap, clk.leap);
	cr_assert_eq(h.stratum, clk.stratum);
	cr_assert_eq(h.poll, poll);
	cr_assert_eq(h.precision, clk.precision);
	cr_assert_eq(h.root_delay, clk.root_delay);
	cr_assert_eq(h.root_dispersion, clk.root_disp);
	cr_assert_eq(h.refid, clk.refid);
	cr_assert_eq(h.reference_ts, clk.ref_ts);
	cr_assert_eq(h.origin_ts, CLIENT_TX);
	cr_assert_eq(h.receive_ts, RX_TS);
	cr_assert_eq(h.transmit_ts, TX_TS);
}

Test(ntp_server, plain_reply_echoes_version_and_fills_from_clock)
{
	uint8_t req[64], out[2048];
	for (uint8_t v = 1; v <= 4; v++) {
		size_t len = put_header(req, sizeof req, v, NTP_PACKET_MODE_CLIENT, 6);
		size_t n = handle(req, len, out);
		check_plain_reply(out, n, v, 6);
	}
	cr_assert_eq(tclock.calls, 4, "now() is read once per reply");
	cr_assert_eq(stats.received, 4);
	cr_assert_eq(stats.plain, 4);
}

Test(ntp_server, plain_reply_clamps_poll)
{
	uint8_t req[64], out[2048];
	const int8_t in[] = { 127, 18, 17, -6, -7, -128 }, want[] = { 17, 17, 17, -6, -6, -6 };
	for (size_t i = 0; i < sizeof in; i++) {
		size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, in[i]);
		check_plain_reply(out, handle(req, len, out), 4, want[i]);
	}
}

Test(ntp_server, legacy_mac_is_answered_plain_without_it)
{
	uint8_t req[128], out[2048];
	struct tu_rng rng;
	tu_rng_seed(&rng, 7);
	const size_t macs[] = { 20, 24 };
	for (uint8_t v = 3; v <= 4; v++)
		for (size_t i = 0; i < 2; i++) {
			size_t len = put_header(req, sizeof req, v, NTP_PACKET_MODE_CLIENT, 6);
			tu_rng_fill(&rng, req + len, macs[i]);
			check_plain_reply(out, handle(req, len + macs[i], out), v, 6);
		}
	cr_assert_eq(stats.plain, 4);
}

Test(ntp_server, unknown_extension_fields_are_ignored)
{
	uint8_t req[256], out[2048], body[40] = { 1, 2, 3 };
	size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	struct wire_writer w;
	wire_writer_init(&w, req + len, sizeof req - len);
	cr_assert_eq(ntp_packet_put_ef(&w, 0x2005, body, 24), 0);
	cr_assert_eq(ntp_packet_put_ef(&w, 0x0105, body, sizeof body), 0);
	len += wire_written(&w);
	check_plain_reply(out, handle(req, len, out), 4, 6);
	cr_assert_eq(stats.plain, 1);
	cr_assert_eq(stats.dropped_malformed, 0);
}

Test(ntp_server, drops_what_is_not_a_client_request)
{
	uint8_t req[128] = { 0 }, out[2048];
	size_t len;
	cr_assert_eq(handle(req, 0, out), 0);
	len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	cr_assert_eq(handle(req, len - 1, out), 0);
	cr_assert_eq(stats.dropped_malformed, 2);

	const uint8_t modes[] = { 0, 1, 2, 4, 5, 6, 7 };
	for (size_t i = 0; i < sizeof modes; i++) {
		len = put_header(req, sizeof req, 4, modes[i], 6);
		cr_assert_eq(handle(req, len, out), 0, "mode %u answered", modes[i]);
	}
	const uint8_t versions[] = { 0, 5, 6, 7 };
	for (size_t i = 0; i < sizeof versions; i++) {
		len = put_header(req, sizeof req, versions[i], NTP_PACKET_MODE_CLIENT, 6);
		cr_assert_eq(handle(req, len, out), 0, "version %u answered", versions[i]);
	}
	cr_assert_eq(stats.dropped_other, sizeof modes + sizeof versions);
	cr_assert_eq(stats.received, 2 + sizeof modes + sizeof versions);
	cr_assert_eq(stats.plain + stats.nts_accepted + stats.nts_naks, 0);
	cr_assert_eq(tclock.calls, 0);
}

Test(ntp_server, drops_garbage_extension_fields)
{
	uint8_t req[256], out[2048];
	size_t hl = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	memset(req + hl, 0, sizeof req - hl);
	/* 7 trailing bytes; a length not a multiple of 4; a length below the field header; a field
	 * reaching past the end; a field that is fine followed by 3 stray bytes. */
	struct {
		uint16_t type, len;
		size_t total;
	} cases[] = {
		{ 0x2005, 8, 7 }, { 0x2005, 30, 32 }, { 0x2005, 0, 32 }, { 0x2005, 64, 32 },
		{ 0x2005, 28, 31 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		req[hl] = (uint8_t)(cases[i].type >> 8);
		req[hl + 1] = (uint8_t)cases[i].type;
		req[hl + 2] = (uint8_t)(cases[i].len >> 8);
		req[hl + 3] = (uint8_t)cases[i].len;
		cr_assert_eq(handle(req, hl + cases[i].total, out), 0, "case %zu answered", i);
	}
	/* Extension fields in NTPv3, beyond a legacy MAC, are not a thing. */
	hl = put_header(req, sizeof req, 3, NTP_PACKET_MODE_CLIENT, 6);
	req[hl + 1] = 0x05;
	req[hl + 3] = 28;
	cr_assert_eq(handle(req, hl + 28, out), 0);
	cr_assert_eq(stats.dropped_malformed, 6);
	cr_assert_eq(stats.plain, 0);
}

Test(ntp_server, peer_events_log_at_debug_rate_limited)
{
	uint8_t req[64] = { 0 }, out[2048];
	enum log_level old = log_get_level();
	log_set_level(LOG_LEVEL_DEBUG);
	struct capture cap;
	capture_start(&cap);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(handle(req, 40, out), 0);
	fflush(cap.f);
	size_t lines = 0;
	for (size_t i = 0; i < cap.len; i++)
		lines += cap.text[i] == '\n';
	capture_expect(&cap, "debug ntp: short packet");
	log_set_level(old);
	/* The clock (rx_ts) stands still, so only the burst gets through. */
	cr_assert_gt(lines, 0);
	cr_assert_lt(lines, 100);
	cr_assert_eq(stats.dropped_malformed, 100);
}

Test(ntp_server, plain_reply_needs_room)
{
	uint8_t req[64], out[2048];
	size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	struct capture cap;
	capture_start(&cap);
	cr_assert_eq(handle_cap(req, len, out, NTP_PACKET_HEADER_LEN - 1), 0);
	capture_expect(&cap, "error ntp: dropping a reply: plain reply");
	cr_assert_eq(stats.dropped_internal, 1);
	cr_assert_eq(stats.plain, 0);
	cr_assert_eq(handle_cap(req, len, out, NTP_PACKET_HEADER_LEN), NTP_PACKET_HEADER_LEN);
}

/* ---- NTS: a client with keys from NTS-KE and a cookie sealed by a keyset. ---- */

struct client {
	uint16_t aead;
	size_t key_len;
	uint8_t c2s[AEAD_MAX_KEY_LEN], s2c[AEAD_MAX_KEY_LEN];
	struct aead *ac2s, *as2c;
	uint8_t uid[NTS_NTP_UID_LEN];
	uint8_t cookie[KEYSET_COOKIE_MAX_LEN];
	size_t cookie_len;
	uint64_t tx;
	uint8_t req[2048];
	size_t req_len;
};

static void client_init(struct client *c, struct tu_rng *rng, uint16_t aead, struct keyset *ks)
{
	memset(c, 0, sizeof *c);
	c->aead = aead;
	c->key_len = aead_key_len(aead);
	tu_rng_fill(rng, c->c2s, c->key_len);
	tu_rng_fill(rng, c->s2c, c->key_len);
	cr_assert_eq(aead_new(&c->ac2s, aead, c->c2s, c->key_len), 0);
	cr_assert_eq(aead_new(&c->as2c, aead, c->s2c, c->key_len), 0);
	uint8_t nonce[KEYSET_NONCE_LEN];
	tu_rng_fill(rng, nonce, sizeof nonce);
	int rc = keyset_seal_cookie(ks, aead, c->c2s, c->s2c, c->key_len, nonce, c->cookie,
				    sizeof c->cookie);
	cr_assert_eq(rc, (int)keyset_cookie_len(aead));
	c->cookie_len = (size_t)rc;
}

static void client_free(struct client *c)
{
	aead_free(c->ac2s);
	aead_free(c->as2c);
}

static void client_request(struct client *c, struct tu_rng *rng, unsigned placeholders)
{
	uint8_t nonce[NTS_NTP_NONCE_LEN];
	tu_rng_fill(rng, c->uid, sizeof c->uid);
	tu_rng_fill(rng, nonce, sizeof nonce);
	c->tx = tu_rng_next(rng);
	struct nts_ntp_request_params p = {
		.hdr = { .version = 4, .mode = NTP_PACKET_MODE_CLIENT, .poll = 4,
			 .transmit_ts = c->tx },
		.uid = { c->uid, sizeof c->uid },
		.cookie = { c->cookie, c->cookie_len },
		.placeholders = placeholders,
		.nonce = { nonce, sizeof nonce },
	};
	int rc = nts_ntp_build_request(&p, c->ac2s, c->req, sizeof c->req);
	cr_assert_gt(rc, 0);
	c->req_len = (size_t)rc;
}

/* The reply authenticates for the client, carries `want` cookies that open with ks to the
 * client's own keys under ks's primary key, and is no longer than the request. */
static void check_accepted(const struct client *c, const uint8_t *rep, size_t n, size_t want,
			   struct keyset *ks)
{
	cr_assert_gt(n, 0);
	cr_assert_leq(n, c->req_len);
	struct nts_ntp_response r;
	int rc = nts_ntp_verify_response(rep, n, c->tx, c->uid, sizeof c->uid, c->as2c, &r);
	cr_assert_eq(rc, NTS_NTP_RESPONSE_OK, "verify: %d", rc);
	cr_assert_eq(r.hdr.stratum, clk.stratum);
	cr_assert_eq(r.hdr.refid, clk.refid);
	cr_assert_eq(r.hdr.version, 4);
	cr_assert_eq(r.hdr.receive_ts, RX_TS);
	cr_assert_eq(r.hdr.transmit_ts, TX_TS);
	cr_assert_eq(r.n_cookies, want);
	for (size_t i = 0; i < r.n_cookies; i++) {
		uint16_t aead;
		size_t kl;
		uint8_t c2s[AEAD_MAX_KEY_LEN], s2c[AEAD_MAX_KEY_LEN];
		cr_assert_eq(r.cookies[i].len, c->cookie_len);
		const uint8_t *ck = r.cookies[i].data;
		uint32_t id = (uint32_t)ck[0] << 24 | (uint32_t)ck[1] << 16 | (uint32_t)ck[2] << 8 |
			      ck[3];
		cr_assert_eq(id, keyset_primary_id(ks));
		cr_assert_eq(keyset_open_cookie(ks, ck, r.cookies[i].len, &aead, c2s, s2c, &kl), 0);
		cr_assert_eq(aead, c->aead);
		cr_assert_eq(kl, c->key_len);
		cr_assert_arr_eq(c2s, c->c2s, kl);
		cr_assert_arr_eq(s2c, c->s2c, kl);
		for (size_t j = 0; j < i; j++)
			cr_assert(memcmp(ck, r.cookies[j].data, c->cookie_len) != 0,
				  "cookies %zu and %zu are identical", i, j);
	}
}

static void check_nak(const struct client *c, const uint8_t *rep, size_t n)
{
	cr_assert_gt(n, 0);
	cr_assert_leq(n, c->req_len);
	struct nts_ntp_response r;
	int rc = nts_ntp_verify_response(rep, n, c->tx, c->uid, sizeof c->uid, c->as2c, &r);
	cr_assert_eq(rc, NTS_NTP_RESPONSE_NAK, "verify: %d", rc);
	cr_assert_eq(r.hdr.stratum, 0);
	cr_assert_eq(r.hdr.refid, NTP_PACKET_REFID_NTSN);
	cr_assert_eq(r.hdr.leap, NTP_PACKET_LEAP_UNSYNC);
	cr_assert_eq(r.hdr.receive_ts, 0, "a NAK carries no time");
	cr_assert_eq(r.hdr.transmit_ts, 0, "a NAK carries no time");
}

static void accepted_for(uint16_t aead)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, aead);
	struct client c;
	client_init(&c, &rng, aead, slot);
	uint8_t out[2048];
	for (unsigned ph = 0; ph < NTS_NTP_MAX_COOKIES; ph++) {
		client_request(&c, &rng, ph);
		check_accepted(&c, out, handle(c.req, c.req_len, out), 1 + ph, slot);
	}
	cr_assert_eq(stats.nts_accepted, NTS_NTP_MAX_COOKIES);
	cr_assert_eq(stats.received, NTS_NTP_MAX_COOKIES);
	cr_assert_eq(stats.nts_naks + stats.plain + stats.dropped_malformed + stats.dropped_other +
			     stats.dropped_internal,
		     0);
	cr_assert_eq(tclock.calls, NTS_NTP_MAX_COOKIES);
	client_free(&c);
}

Test(ntp_server, nts_accepted_aead_15)
{
	accepted_for(AEAD_AES_SIV_CMAC_256);
}

Test(ntp_server, nts_accepted_aead_17)
{
	accepted_for(AEAD_AES_SIV_CMAC_512);
}

Test(ntp_server, nts_alternating_aeads_rekey_correctly)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 99);
	struct client a, b;
	client_init(&a, &rng, AEAD_AES_SIV_CMAC_256, slot);
	client_init(&b, &rng, AEAD_AES_SIV_CMAC_512, slot);
	uint8_t out[2048];
	for (int i = 0; i < 6; i++) {
		struct client *c = i % 3 == 1 ? &b : &a;
		client_request(c, &rng, 2);
		check_accepted(c, out, handle(c->req, c->req_len, out), 3, slot);
	}
	cr_assert_eq(stats.nts_accepted, 6);
	client_free(&a);
	client_free(&b);
}

Test(ntp_server, nts_cookie_of_another_keyset_gets_a_nak)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 3);
	uint8_t keys[KEYSET_KEY_LEN], out[2048];
	tu_rng_fill(&rng, keys, sizeof keys);
	/* Same key id 0 as slot's, different key: the cookie fails to decrypt. */
	struct keyset *other = NULL, *unknown = NULL;
	cr_assert_eq(keyset_from_keys(&other, 0, 0, 1, keys, 0), 0);
	/* A key id slot never issued. */
	cr_assert_eq(keyset_from_keys(&unknown, 500, 0, 1, keys, 0), 0);
	struct keyset *sets[] = { other, unknown };
	for (size_t i = 0; i < 2; i++) {
		struct client c;
		client_init(&c, &rng, AEAD_AES_SIV_CMAC_512, sets[i]);
		client_request(&c, &rng, 3);
		check_nak(&c, out, handle(c.req, c.req_len, out));
		client_free(&c);
	}
	cr_assert_eq(stats.nts_naks, 2);
	cr_assert_eq(stats.nts_accepted, 0);
	cr_assert_eq(tclock.calls, 0, "a NAK reads no clock");
	keyset_unref(other);
	keyset_unref(unknown);
}

Test(ntp_server, nts_rotation_keeps_stale_keys_and_forgets_old_ones)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 4);
	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_256, slot);
	struct keyset *first = keyset_ref(slot), *kept = NULL, *mid = NULL, *gone = NULL;
	uint8_t out[2048];

	cr_assert_eq(keyset_rotate(&kept, first, 7, 2000), 0);
	keyset_unref(slot);
	slot = kept;
	client_request(&c, &rng, 1);
	check_accepted(&c, out, handle(c.req, c.req_len, out), 2, kept);
	cr_assert_neq(keyset_primary_id(kept), keyset_primary_id(first));

	cr_assert_eq(keyset_rotate(&mid, first, 0, 2000), 0);
	cr_assert_eq(keyset_rotate(&gone, mid, 0, 3000), 0);
	slot = gone;
	client_request(&c, &rng, 1);
	check_nak(&c, out, handle(c.req, c.req_len, out));

	cr_assert_eq(stats.nts_accepted, 1);
	cr_assert_eq(stats.nts_naks, 1);
	keyset_unref(kept);
	keyset_unref(mid);
	keyset_unref(first);
	client_free(&c);
}

Test(ntp_server, nts_without_a_keyset_gets_a_nak)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 5);
	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_256, slot);
	struct keyset *held = slot;
	slot = NULL;
	uint8_t out[2048];
	client_request(&c, &rng, 0);
	check_nak(&c, out, handle(c.req, c.req_len, out));
	cr_assert_eq(stats.nts_naks, 1);
	slot = held;
	client_free(&c);
}

Test(ntp_server, nts_tampering_gets_a_nak)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 6);
	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_512, slot);
	uint8_t out[2048];
	/* 0 stands for the last byte, the tag's; 60 is in the UID (authenticated data); 90 in the
	 * cookie's key id, 120 in its ciphertext. */
	const size_t offsets[] = { 0, 60, 90, 120 };
	for (size_t i = 0; i < 4; i++) {
		client_request(&c, &rng, 2);
		size_t at = offsets[i] ? offsets[i] : c.req_len - 1;
		c.req[at] ^= 0x40;
		size_t n = handle(c.req, c.req_len, out);
		if (at == 60) {
			/* The NAK echoes the UID it got, which is no longer the client's. */
			cr_assert_gt(n, 0);
			cr_assert_leq(n, c.req_len);
			struct ntp_packet_header h;
			cr_assert_eq(ntp_packet_parse_header(out, n, &h), 0);
			cr_assert_eq(ntp_packet_kiss(&h), NTP_PACKET_KISS_NTSN);
			cr_assert_eq(h.origin_ts, c.tx);
		} else {
			check_nak(&c, out, n);
		}
	}
	cr_assert_eq(stats.nts_naks, 4);
	cr_assert_eq(stats.nts_accepted, 0);
	client_free(&c);
}

Test(ntp_server, nts_broken_shape_is_dropped)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 8);
	uint8_t req[256], out[2048], uid[NTS_NTP_UID_LEN];
	tu_rng_fill(&rng, uid, sizeof uid);
	size_t hl = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	struct wire_writer w;
	/* A UID alone, and a placeholder alone: NTS fields without a cookie or authenticator. */
	wire_writer_init(&w, req + hl, sizeof req - hl);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_UID, uid, sizeof uid), 0);
	cr_assert_eq(handle(req, hl + wire_written(&w), out), 0);
	wire_writer_init(&w, req + hl, sizeof req - hl);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_PLACEHOLDER, uid, sizeof uid), 0);
	cr_assert_eq(handle(req, hl + wire_written(&w), out), 0);
	cr_assert_eq(stats.dropped_malformed, 2);
	cr_assert_eq(stats.plain + stats.nts_naks, 0);
}

Test(ntp_server, nts_oversize_authenticator_is_the_peers_fault)
{
	/* A valid cookie with an encrypted part far beyond any real request: dropped as malformed,
	 * never counted or logged as our own failure. */
	struct tu_rng rng;
	tu_rng_seed(&rng, 12);
	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_256, slot);
	static uint8_t req[8192], out[8192];
	size_t hl = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	struct wire_writer w;
	wire_writer_init(&w, req + hl, sizeof req - hl);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_UID, c.uid, sizeof c.uid), 0);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, c.cookie, c.cookie_len), 0);
	const size_t ct_len = 5016;
	cr_assert_eq(ntp_packet_put_ef_header(&w, NTS_NTP_EF_AUTH, 4 + 4 + 16 + ct_len), 0);
	wire_put_u16(&w, 16);
	wire_put_u16(&w, (uint16_t)ct_len);
	wire_put_zeros(&w, 16 + ct_len);
	cr_assert_eq(wire_writer_error(&w), 0);
	struct capture cap;
	capture_start(&cap);
	cr_assert_eq(handle_cap(req, hl + wire_written(&w), out, sizeof out), 0);
	log_set_stream(NULL);
	fclose(cap.f);
	cr_assert_eq(stats.dropped_malformed, 1);
	cr_assert_eq(stats.dropped_internal + stats.nts_naks + stats.nts_accepted, 0);
	cr_assert_null(strstr(cap.text ? cap.text : "", "error"), "no error-level line: %s", cap.text);
	free(cap.text);
	client_free(&c);
}

Test(ntp_server, nts_daemons_sharing_keys_accept_each_others_cookies)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 9);
	uint8_t keys[3 * KEYSET_KEY_LEN], out[2048];
	tu_rng_fill(&rng, keys, sizeof keys);
	struct keyset *a = NULL, *b = NULL;
	cr_assert_eq(keyset_from_keys(&a, 40, 2, 3, keys, 0), 0);
	cr_assert_eq(keyset_from_keys(&b, 40, 2, 3, keys, 0), 0);
	struct ntp_server_stats stats_b = { 0 };
	struct ntp_server *srv_b = NULL;
	cr_assert_eq(ntp_server_new(&srv_b, &b, &stats_b), 0);
	keyset_unref(slot);
	slot = a;

	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_256, a);
	client_request(&c, &rng, 1);
	size_t n = ntp_server_handle(srv_b, c.req, c.req_len, RX_TS, &clk, now_cb, &tclock, out,
				     sizeof out);
	check_accepted(&c, out, n, 2, a);
	client_free(&c);

	client_init(&c, &rng, AEAD_AES_SIV_CMAC_512, b);
	client_request(&c, &rng, 0);
	check_accepted(&c, out, handle(c.req, c.req_len, out), 1, b);
	client_free(&c);

	cr_assert_eq(stats_b.nts_accepted, 1);
	cr_assert_eq(stats.nts_accepted, 1);
	ntp_server_free(srv_b);
	keyset_unref(b);
}

Test(ntp_server, nts_reply_needs_room)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 10);
	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_256, slot);
	client_request(&c, &rng, 1);
	uint8_t out[2048];
	struct capture cap;
	capture_start(&cap);
	cr_assert_eq(handle_cap(c.req, c.req_len, out, 100), 0);
	capture_expect(&cap, "error ntp: dropping a reply: building an NTS response");
	cr_assert_eq(stats.dropped_internal, 1);
	cr_assert_eq(stats.nts_accepted, 0);
	client_request(&c, &rng, 1);
	check_accepted(&c, out, handle(c.req, c.req_len, out), 2, slot);
	client_free(&c);
}

static void mutate(struct tu_rng *rng, uint8_t *buf, size_t *len, size_t cap)
{
	switch (tu_rng_below(rng, 6)) {
	case 0:
		buf[tu_rng_below(rng, (uint32_t)*len)] ^= (uint8_t)(1u << tu_rng_below(rng, 8));
		break;
	case 1:
		buf[tu_rng_below(rng, (uint32_t)*len)] = (uint8_t)tu_rng_next(rng);
		break;
	case 2:
		*len = tu_rng_below(rng, (uint32_t)*len + 1);
		break;
	case 3: {
		/* Lengths and counts are what parsers get wrong: small or extreme u16 values. */
		static const uint16_t vals[] = { 0, 1, 3, 4, 16, 28, 0x7fff, 0xffff };
		if (*len < 2)
			break;
		size_t at = tu_rng_below(rng, (uint32_t)*len - 1);
		uint16_t v = vals[tu_rng_below(rng, sizeof vals / sizeof vals[0])];
		buf[at] = (uint8_t)(v >> 8);
		buf[at + 1] = (uint8_t)v;
		break;
	}
	case 4: {
		size_t add = tu_rng_below(rng, 64);
		if (*len + add > cap)
			add = cap - *len;
		tu_rng_fill(rng, buf + *len, add);
		*len += add;
		break;
	}
	default: {
		/* Duplicate a 4-aligned chunk: repeated fields. */
		if (*len < 4)
			break;
		size_t from = tu_rng_below(rng, (uint32_t)*len / 4) * 4;
		size_t n = tu_rng_below(rng, 64);
		if (from + n > *len)
			n = *len - from;
		if (*len + n > cap)
			n = cap - *len;
		memmove(buf + from + n, buf + from, *len - from);
		*len += n;
		break;
	}
	}
}

Test(ntp_server, nts_mutations_never_crash_or_amplify)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 11);
	struct client c[2];
	client_init(&c[0], &rng, AEAD_AES_SIV_CMAC_256, slot);
	client_init(&c[1], &rng, AEAD_AES_SIV_CMAC_512, slot);
	uint8_t buf[2048], out[2048];
	const unsigned iterations = 10000;
	for (unsigned i = 0; i < iterations; i++) {
		struct client *cl = &c[i & 1];
		client_request(cl, &rng, tu_rng_below(&rng, NTS_NTP_MAX_COOKIES));
		size_t len = cl->req_len;
		memcpy(buf, cl->req, len);
		unsigned rounds = 1 + tu_rng_below(&rng, 4);
		for (unsigned r = 0; r < rounds && len > 0; r++)
			mutate(&rng, buf, &len, sizeof buf);
		size_t n = handle(buf, len, out);
		cr_assert_leq(n, len, "iteration %u: %zu-byte reply to %zu bytes", i, n, len);
	}
	cr_assert_eq(stats.received, iterations);
	cr_assert_eq(stats.plain + stats.nts_accepted + stats.nts_naks + stats.dropped_malformed +
			     stats.dropped_other + stats.dropped_internal,
		     iterations, "every packet is counted once");
	cr_assert_gt(stats.nts_naks, 0);
	cr_assert_gt(stats.dropped_malformed, 0);
	cr_assert_eq(stats.dropped_internal, 0);
	client_free(&c[0]);
	client_free(&c[1]);
}

/* Not a timed test: prints a figure for the record, asserts only correctness. */
Test(ntp_server, nts_cost_per_packet)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 12);
	const uint16_t aeads[] = { AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_512 };
	for (size_t a = 0; a < 2; a++) {
		struct client c;
		client_init(&c, &rng, aeads[a], slot);
		client_request(&c, &rng, 0);
		uint8_t out[2048];
		const unsigned rounds = 2000;
		size_t n = 0;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (unsigned i = 0; i < rounds; i++)
			n = handle(c.req, c.req_len, out);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		check_accepted(&c, out, n, 1, slot);
		double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
		printf("ntp_server: AEAD %u, 1 cookie, %zu -> %zu bytes: %.0f ns/packet\n", aeads[a],
		       c.req_len, n, ns / rounds);
		client_free(&c);
	}
	cr_assert_eq(stats.nts_accepted, 4000);
}

/* ---- Access rules: allowlist, denylist, require-nts, rate limiting ---- */

static struct sockaddr_storage addr_of(const char *ip)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *a = (struct sockaddr_in *)&ss;
	a->sin_family = AF_INET;
	a->sin_port = htons(40000);
	cr_assert_eq(inet_pton(AF_INET, ip, &a->sin_addr), 1);
	return ss;
}

static size_t handle_from(const char *ip, uint64_t now_ms, const uint8_t *req, size_t len,
			  uint8_t *out)
{
	struct sockaddr_storage from = addr_of(ip);
	return ntp_server_handle_from(srv, (const struct sockaddr *)&from, now_ms, req, len, RX_TS,
				      &clk, now_cb, &tclock, out, 2048);
}

/* A kiss: stratum 0, the code as reference id, no time, the client's transmit echoed. */
static void check_kiss(const uint8_t *rep, size_t n, uint32_t code)
{
	cr_assert_eq(n, NTP_PACKET_HEADER_LEN);
	struct ntp_packet_header h;
	cr_assert_eq(ntp_packet_parse_header(rep, n, &h), 0);
	cr_assert_eq(h.mode, NTP_PACKET_MODE_SERVER);
	cr_assert_eq(h.stratum, 0);
	cr_assert_eq(h.leap, NTP_PACKET_LEAP_UNSYNC);
	cr_assert_eq(h.refid, code);
	cr_assert_eq(h.origin_ts, CLIENT_TX);
	cr_assert_eq(h.receive_ts, 0);
	cr_assert_eq(h.transmit_ts, 0);
}

static struct cidr prefix(const char *text)
{
	struct cidr c;
	char why[128];
	cr_assert_eq(cidr_parse(text, &c, why, sizeof why), 0, "%s", why);
	return c;
}

Test(ntp_server, allowlist_denies_or_ignores_outsiders)
{
	struct cidr allow[] = { prefix("192.0.2.0/24") };
	struct ntp_server_policy p = {
		.has_allow = true, .allow = allow, .n_allow = 1, .allow_action = NTP_SERVER_DENY
	};
	ntp_server_set_policy(srv, &p);
	uint8_t req[NTP_PACKET_HEADER_LEN], out[2048];
	size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	check_plain_reply(out, handle_from("192.0.2.9", 0, req, len, out), 4, 6);
	check_kiss(out, handle_from("198.51.100.1", 0, req, len, out), NTP_PACKET_REFID_DENY);
	cr_assert_eq(stats.denied, 1);
	p.allow_action = NTP_SERVER_IGNORE;
	cr_assert_eq(handle_from("198.51.100.1", 0, req, len, out), 0);
	cr_assert_eq(stats.ignored, 1);
	/* An empty allowlist admits nobody. */
	p.n_allow = 0;
	cr_assert_eq(handle_from("192.0.2.9", 0, req, len, out), 0);
	cr_assert_eq(stats.plain, 1);
	/* The plain entry point knows no client address and applies no rule. */
	check_plain_reply(out, handle(req, len, out), 4, 6);
}

Test(ntp_server, denylist_refuses_insiders_only)
{
	struct cidr deny[] = { prefix("203.0.113.0/24"), prefix("192.0.2.7") };
	struct ntp_server_policy p = { .deny = deny, .n_deny = 2, .deny_action = NTP_SERVER_DENY };
	ntp_server_set_policy(srv, &p);
	uint8_t req[NTP_PACKET_HEADER_LEN], out[2048];
	size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	check_kiss(out, handle_from("203.0.113.200", 0, req, len, out), NTP_PACKET_REFID_DENY);
	check_kiss(out, handle_from("192.0.2.7", 0, req, len, out), NTP_PACKET_REFID_DENY);
	check_plain_reply(out, handle_from("192.0.2.8", 0, req, len, out), 4, 6);
	cr_assert_eq(stats.denied, 2);
	cr_assert_eq(stats.plain, 1);
	/* Not a client request: dropped before any rule, never answered with a kiss. */
	len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_SERVER, 6);
	cr_assert_eq(handle_from("203.0.113.200", 0, req, len, out), 0);
	cr_assert_eq(stats.dropped_other, 1);
	cr_assert_eq(stats.denied, 2);
}

Test(ntp_server, require_nts_refuses_plain_and_serves_nts)
{
	struct ntp_server_policy p = { .require_nts = true, .nts_action = NTP_SERVER_IGNORE };
	ntp_server_set_policy(srv, &p);
	uint8_t req[NTP_PACKET_HEADER_LEN], out[2048];
	size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	cr_assert_eq(handle_from("192.0.2.1", 0, req, len, out), 0);
	cr_assert_eq(stats.ignored, 1);
	p.nts_action = NTP_SERVER_DENY;
	check_kiss(out, handle_from("192.0.2.1", 0, req, len, out), NTP_PACKET_REFID_DENY);
	cr_assert_eq(stats.plain, 0);

	struct tu_rng rng;
	tu_rng_seed(&rng, 7);
	struct client c;
	client_init(&c, &rng, AEAD_AES_SIV_CMAC_256, slot);
	client_request(&c, &rng, 0);
	struct sockaddr_storage from = addr_of("192.0.2.1");
	size_t n = ntp_server_handle_from(srv, (const struct sockaddr *)&from, 0, c.req, c.req_len,
					  RX_TS, &clk, now_cb, &tclock, out, sizeof out);
	check_accepted(&c, out, n, 1, slot);
	cr_assert_eq(stats.nts_accepted, 1);
	client_free(&c);
}

Test(ntp_server, rate_limit_answers_rate_kisses_per_client)
{
	/* ntpd-rs's cutoff of 1000 ms: a bucket of one token refilled each second. */
	const struct ratelimit_config cfg = {
		.rate = 1, .burst = 1, .max_clients = 16, .v4_bits = 32, .v6_bits = 128
	};
	struct ratelimit *rl;
	cr_assert_eq(ratelimit_new(&rl, &cfg, 42), 0);
	struct ntp_server_policy p = { .rate = rl };
	ntp_server_set_policy(srv, &p);
	uint8_t req[NTP_PACKET_HEADER_LEN], out[2048];
	size_t len = put_header(req, sizeof req, 4, NTP_PACKET_MODE_CLIENT, 6);
	check_plain_reply(out, handle_from("192.0.2.1", 1000, req, len, out), 4, 6);
	check_kiss(out, handle_from("192.0.2.1", 1500, req, len, out), NTP_PACKET_REFID_RATE);
	/* Another client has its own budget; the first one's refills after the cutoff. */
	check_plain_reply(out, handle_from("192.0.2.2", 1500, req, len, out), 4, 6);
	check_plain_reply(out, handle_from("192.0.2.1", 2000, req, len, out), 4, 6);
	cr_assert_eq(stats.rate_limited, 1);
	cr_assert_eq(stats.plain, 3);
	ntp_server_set_policy(srv, NULL);
	ratelimit_free(rl);
}
