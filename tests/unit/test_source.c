#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "aead.h"
#include "keyset.h"
#include "ntp_packet.h"
#include "ntp_server.h"
#include "nts_ntp.h"
#include "source.h"
#include "testutil.h"
#include "wire.h"

#define SEC(x) ((uint64_t)(x) << 32)
#define T0 SEC(3900000000u)
#define HALF 0x80000000u /* 0.5 s in the fraction */

static struct tu_rng rng;

static struct source_random rnd(void)
{
	struct source_random r;
	tu_rng_fill(&rng, &r, sizeof r);
	return r;
}

/* A plain server reply to the request in pkt, with the given header fields. */
static size_t plain_reply(const uint8_t *req, struct ntp_packet_header h, uint8_t *out)
{
	struct ntp_packet_header q;
	cr_assert_eq(ntp_packet_parse_header(req, NTP_PACKET_HEADER_LEN, &q), 0);
	h.version = NTP_PACKET_VERSION;
	h.mode = NTP_PACKET_MODE_SERVER;
	h.origin_ts = q.transmit_ts;
	struct wire_writer w;
	wire_writer_init(&w, out, NTP_PACKET_HEADER_LEN);
	ntp_packet_put_header(&w, &h);
	cr_assert_eq(wire_writer_error(&w), 0);
	return wire_written(&w);
}

static const struct ntp_packet_header good = {
	.stratum = 2, .precision = -20, .refid = 0x7f000001u, .root_delay = 0x00010000u /* 1 s */,
	.root_dispersion = 0x00008000u, .reference_ts = T0 - SEC(60), .receive_ts = T0 + SEC(1) + HALF,
	.transmit_ts = T0 + SEC(2),
};

static void setup(void)
{
	tu_rng_seed(&rng, 42);
}

TestSuite(source, .init = setup);

Test(source, offset_delay_math)
{
	double off, del;
	/* t1 = 0, t2 = 1.5, t3 = 2, t4 = 1: offset ((1.5) + (1)) / 2 = 1.25, delay 1 - 0.5. */
	source_offset_delay(T0, T0 + SEC(1) + HALF, T0 + SEC(2), T0 + SEC(1), &off, &del);
	cr_assert_float_eq(off, 1.25, 1e-9);
	cr_assert_float_eq(del, 0.5, 1e-9);
	/* Server behind: t2 = t3 = t1 - 10 + 0.05, t4 = t1 + 0.1. */
	source_offset_delay(T0, T0 - SEC(10) + (HALF / 10), T0 - SEC(10) + (HALF / 10), T0 + HALF / 5,
			    &off, &del);
	cr_assert_float_eq(off, -10.0, 1e-6);
	cr_assert_float_eq(del, 0.1, 1e-6);
	/* A negative delay (server timestamps inconsistent) clamps at 0. */
	source_offset_delay(T0, T0 + HALF, T0 + SEC(5), T0 + SEC(1), &off, &del);
	cr_assert_float_eq(del, 0.0, 1e-12);
}

Test(source, plain_exchange_sample)
{
	struct source *s;
	uint8_t req[SOURCE_PACKET_MAX], rep[64];
	struct clock_sample smp;
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	cr_assert_eq(source_handle_reply(s, rep, 0, T0, 0, &smp), -EALREADY);
	struct source_random r = rnd();
	int n = source_build_request(s, &r, T0, req, sizeof req);
	cr_assert_eq(n, NTP_PACKET_HEADER_LEN);
	struct ntp_packet_header q;
	ntp_packet_parse_header(req, (size_t)n, &q);
	cr_assert_eq(q.mode, NTP_PACKET_MODE_CLIENT);
	cr_assert_eq(q.transmit_ts, r.transmit, "the wire carries the random transmit");
	cr_assert_eq(q.origin_ts, 0);
	cr_assert_eq(q.receive_ts, 0);
	cr_assert_eq(source_reach(s), 0);

	size_t len = plain_reply(req, good, rep);
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 7.5, &smp), SOURCE_REPLY_SAMPLE);
	cr_assert_float_eq(smp.offset_s, 1.25, 1e-9);
	cr_assert_float_eq(smp.delay_s, 0.5, 1e-9);
	cr_assert_float_eq(smp.dispersion_s, 2.0 / 1048576 + 15e-6 * 0.5, 1e-12);
	cr_assert_float_eq(smp.root_delay_s, 1.0, 1e-9);
	cr_assert_float_eq(smp.root_disp_s, 0.5, 1e-9);
	cr_assert_float_eq(smp.mono_s, 7.5, 1e-12);
	cr_assert_eq(smp.stratum, 2);
	cr_assert_eq(smp.refid, 0x7f000001u);
	cr_assert_eq(source_reach(s), 1);
	cr_assert_eq(source_unanswered(s), 0);
	/* The same reply again is a replay. */
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 7.5, &smp), -EALREADY);
	cr_assert_not(source_needs_rekey(s));
	source_free(s);
}

Test(source, plain_rejects_without_consuming)
{
	struct source *s;
	uint8_t req[SOURCE_PACKET_MAX], rep[64];
	struct clock_sample smp;
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	struct source_random r = rnd();
	source_build_request(s, &r, T0, req, sizeof req);
	size_t len = plain_reply(req, good, rep);

	rep[24] ^= 1; /* origin */
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 0, &smp), -EPROTO);
	rep[24] ^= 1;
	rep[0] = (uint8_t)((rep[0] & ~7) | NTP_PACKET_MODE_CLIENT);
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 0, &smp), -EPROTO);
	rep[0] = (uint8_t)((rep[0] & ~7) | NTP_PACKET_MODE_SERVER);
	cr_assert_eq(source_handle_reply(s, rep, 47, T0 + SEC(1), 0, &smp), -EBADMSG);
	struct ntp_packet_header zero = good;
	zero.transmit_ts = 0;
	uint8_t z[64];
	size_t zl = plain_reply(req, zero, z);
	cr_assert_eq(source_handle_reply(s, z, zl, T0 + SEC(1), 0, &smp), -EPROTO);
	cr_assert_eq(source_reach(s), 0);
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 0, &smp), SOURCE_REPLY_SAMPLE);
	source_free(s);
}

Test(source, unsync_server_gives_no_sample)
{
	struct source *s;
	uint8_t req[SOURCE_PACKET_MAX], rep[64];
	struct clock_sample smp;
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	struct source_random r = rnd();
	source_build_request(s, &r, T0, req, sizeof req);
	struct ntp_packet_header h = good;
	h.leap = NTP_PACKET_LEAP_UNSYNC;
	size_t len = plain_reply(req, h, rep);
	cr_assert_eq(source_handle_reply(s, rep, len, T0, 0, &smp), SOURCE_REPLY_UNSYNC);
	cr_assert_eq(source_reach(s), 1, "answered, though not usable");
	cr_assert_str_eq(source_unsync_reason(s), "server unsynchronised (leap indicator 3)");
	source_free(s);
}

/* Each way a server says it has no time gives no sample and its own reason; a good reply after
 * one clears the reason. */
Test(source, unsync_reasons_and_recovery)
{
	static const struct {
		uint8_t leap, stratum;
		uint64_t reference;
		const char *why;
	} cases[] = {
		{ NTP_PACKET_LEAP_UNSYNC, 2, T0, "server unsynchronised (leap indicator 3)" },
		{ 0, 16, T0, "server unsynchronised (stratum 16)" },
		{ 0, 2, 0, "server has never been synchronised (zero reference time)" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct source *s;
		uint8_t req[SOURCE_PACKET_MAX], rep[64];
		struct clock_sample smp;
		cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
		struct source_random r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
		struct ntp_packet_header h = good;
		h.leap = cases[i].leap;
		h.stratum = cases[i].stratum;
		h.reference_ts = cases[i].reference;
		size_t len = plain_reply(req, h, rep);
		cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 0, &smp),
			     SOURCE_REPLY_UNSYNC, "case %zu", i);
		cr_assert_str_eq(source_unsync_reason(s), cases[i].why);
		r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
		len = plain_reply(req, good, rep);
		cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 0, &smp),
			     SOURCE_REPLY_SAMPLE);
		cr_assert_null(source_unsync_reason(s), "a sample clears the reason");
		source_free(s);
	}
}

static int kiss(struct source *s, uint32_t code, int8_t poll)
{
	uint8_t req[SOURCE_PACKET_MAX], rep[64];
	struct clock_sample smp;
	struct source_random r = rnd();
	cr_assert_gt(source_build_request(s, &r, T0, req, sizeof req), 0);
	struct ntp_packet_header h = good;
	h.stratum = 0;
	h.refid = code;
	h.poll = poll;
	size_t len = plain_reply(req, h, rep);
	return source_handle_reply(s, rep, len, T0, 0, &smp);
}

Test(source, rate_backs_off)
{
	struct source *s;
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	cr_assert_eq(source_poll(s), 4);
	cr_assert_str_eq(source_poll_reason(s), "start");
	cr_assert_eq(kiss(s, NTP_PACKET_REFID_RATE, 0), SOURCE_REPLY_RATE);
	cr_assert_eq(source_poll(s), 5);
	cr_assert_str_eq(source_poll_reason(s), "the server sent a RATE kiss");
	cr_assert_float_eq(source_poll_interval_s(s), 32.0, 1e-9, "the burst ends too");
	cr_assert_eq(kiss(s, NTP_PACKET_REFID_RATE, 8), SOURCE_REPLY_RATE);
	cr_assert_eq(source_poll(s), 8, "at least the server's poll");
	cr_assert_eq(kiss(s, NTP_PACKET_REFID_RATE, 17), SOURCE_REPLY_RATE);
	cr_assert_eq(source_poll(s), 10, "never beyond the configured maximum");
	cr_assert_not(source_must_replace(s));
	source_free(s);
}

Test(source, rstr_deny_replace)
{
	struct source *s;
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	cr_assert_eq(kiss(s, 0x41424344u /* "ABCD" */, 0), SOURCE_REPLY_KISS);
	cr_assert_not(source_must_replace(s));
	cr_assert_eq(kiss(s, NTP_PACKET_REFID_RSTR, 0), SOURCE_REPLY_REPLACE);
	cr_assert(source_must_replace(s));
	source_free(s);
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	cr_assert_eq(kiss(s, NTP_PACKET_REFID_DENY, 0), SOURCE_REPLY_REPLACE);
	cr_assert(source_must_replace(s));
	source_free(s);
}

/* A reply to the request in req that measures the given offset (in NTP fraction units) over a
 * 2 ms round trip: t1 = T0, t2 = t3 = T0 + 1 ms + offset, t4 = T0 + 2 ms. */
#define MS (SEC(1) / 1000)
static int answer(struct source *s, uint8_t *req, uint64_t offset, struct clock_sample *smp)
{
	uint8_t rep[64];
	struct ntp_packet_header h = good;
	h.receive_ts = h.transmit_ts = T0 + MS + offset;
	size_t len = plain_reply(req, h, rep);
	return source_handle_reply(s, rep, len, T0 + 2 * MS, 0, smp);
}

Test(source, poll_burst_and_control)
{
	struct source *s;
	uint8_t req[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	cr_assert_eq(source_new(&s, false, 6, 7, -20), 0);
	for (int i = 0; i < SOURCE_BURST_POLLS; i++) {
		cr_assert_float_eq(source_poll_interval_s(s), SOURCE_BURST_INTERVAL_S, 1e-9);
		struct source_random r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
	}
	cr_assert_float_eq(source_poll_interval_s(s), 64.0, 1e-9);
	/* 4 samples of warm-up, then 8 within the bound their delays allow. */
	for (int i = 0; i < 12; i++) {
		cr_assert_eq(source_poll(s), 6, "sample %d: too early to raise the poll", i);
		struct source_random r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
		cr_assert_eq(answer(s, req, 0, &smp), SOURCE_REPLY_SAMPLE);
		cr_assert_float_eq(smp.offset_s, 0, 1e-9);
	}
	cr_assert_eq(source_poll(s), 7, "a steady source polls less often");
	for (int i = 0; i < 12; i++) {
		struct source_random r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
		cr_assert_eq(answer(s, req, 0, &smp), SOURCE_REPLY_SAMPLE);
	}
	cr_assert_eq(source_poll(s), 7, "never beyond the maximum");
	/* 10 ms off at the least delay: the clock is no longer where the estimate put it. */
	struct source_random r = rnd();
	source_build_request(s, &r, T0, req, sizeof req);
	cr_assert_eq(answer(s, req, 10 * MS, &smp), SOURCE_REPLY_SAMPLE);
	cr_assert_float_eq(smp.offset_s, 0.01, 1e-6);
	cr_assert_eq(source_poll(s), 6, "an offset beyond the noise lowers the poll");
	cr_assert_str_eq(source_poll_reason(s), "offset beyond the bound its delay allows");
	source_build_request(s, &r, T0, req, sizeof req);
	cr_assert_eq(answer(s, req, 10 * MS, &smp), SOURCE_REPLY_SAMPLE);
	cr_assert_eq(source_poll(s), 6, "never below the minimum");
	source_restart_burst(s);
	cr_assert_float_eq(source_poll_interval_s(s), SOURCE_BURST_INTERVAL_S, 1e-9,
			   "a burst after a step");
	source_free(s);
	cr_assert_eq(source_new(&s, false, 5, 4, -20), -EINVAL);
	cr_assert_eq(source_new(&s, false, 0, 18, -20), -EINVAL);
}

Test(source, plain_unanswered_counts_but_never_rekeys)
{
	struct source *s;
	uint8_t req[SOURCE_PACKET_MAX];
	cr_assert_eq(source_new(&s, false, 4, 10, -20), 0);
	for (int i = 0; i < 10; i++) {
		struct source_random r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
	}
	cr_assert_eq(source_unanswered(s), 10);
	cr_assert_eq(source_reach(s), 0);
	cr_assert_not(source_needs_rekey(s));
	source_free(s);
}

/* ---- NTS against the daemon's own NTP server ------------------------------------------------ */

static const struct ntp_server_clock clk = {
	.leap = 0, .stratum = 1, .precision = -20, .refid = 0x4c4f434cu, .ref_ts = T0,
	.root_delay = 0, .root_disp = 0x100,
};

struct nts_fix {
	struct keyset *ks;
	struct ntp_server *srv;
	struct ntp_server_stats stats;
	uint8_t c2s[32], s2c[32];
	struct ke_msg_cookie cookies[8];
};

static uint64_t srv_now(void *ud)
{
	(void)ud;
	return T0 + SEC(2);
}

static void nts_init(struct nts_fix *f)
{
	memset(f, 0, sizeof *f);
	cr_assert_eq(keyset_new_random(&f->ks, 1000), 0);
	cr_assert_eq(ntp_server_new(&f->srv, &f->ks, &f->stats), 0);
	tu_rng_fill(&rng, f->c2s, sizeof f->c2s);
	tu_rng_fill(&rng, f->s2c, sizeof f->s2c);
	for (int i = 0; i < 8; i++) {
		uint8_t nonce[16];
		tu_rng_fill(&rng, nonce, sizeof nonce);
		int n = keyset_seal_cookie(f->ks, AEAD_AES_SIV_CMAC_256, f->c2s, f->s2c, 32, nonce,
					   f->cookies[i].data, sizeof f->cookies[i].data);
		cr_assert_eq(n, 104);
		f->cookies[i].len = (size_t)n;
	}
}

static void nts_fini(struct nts_fix *f)
{
	ntp_server_free(f->srv);
	keyset_unref(f->ks);
}

static struct source *nts_source(struct nts_fix *f, size_t n_cookies)
{
	struct source *s;
	cr_assert_eq(source_new(&s, true, 4, 10, -20), 0);
	cr_assert(source_needs_rekey(s), "no keys yet");
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_256, f->c2s, f->s2c, 32, f->cookies,
				     n_cookies),
		     0);
	cr_assert_eq(source_cookies(s), n_cookies);
	return s;
}

/* One request through the server; returns the reply length (0: no reply). */
static size_t exchange(struct nts_fix *f, struct source *s, uint8_t *rep, unsigned *placeholders)
{
	uint8_t req[SOURCE_PACKET_MAX];
	struct source_random r = rnd();
	int n = source_build_request(s, &r, T0, req, sizeof req);
	cr_assert_gt(n, 0);
	if (placeholders) {
		struct nts_ntp_request pr;
		cr_assert_eq(nts_ntp_parse_request(req, (size_t)n, &pr), 0);
		cr_assert_eq(pr.uid.len, NTS_NTP_UID_LEN);
		cr_assert_eq(memcmp(pr.uid.data, r.uid, NTS_NTP_UID_LEN), 0);
		*placeholders = pr.placeholders;
	}
	return ntp_server_handle(f->srv, req, (size_t)n, T0 + SEC(1) + HALF, &clk, srv_now, NULL,
				 rep, SOURCE_PACKET_MAX);
}

Test(source, nts_exchange_with_real_server)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s = nts_source(&f, 8);
	uint8_t rep[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	unsigned ph;
	size_t len = exchange(&f, s, rep, &ph);
	cr_assert_eq(ph, 0, "a full stash asks for one cookie back");
	cr_assert_eq(source_cookies(s), 7, "the cookie sent is spent");
	cr_assert_gt(len, 0);
	cr_assert_eq(f.stats.nts_accepted, 1);
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 3.0, &smp), SOURCE_REPLY_SAMPLE);
	cr_assert_eq(source_cookies(s), 8);
	cr_assert_float_eq(smp.offset_s, 1.25, 1e-9);
	cr_assert_eq(smp.stratum, 1);
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_placeholders_for_missing_cookies)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s = nts_source(&f, 3);
	uint8_t rep[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	unsigned ph;
	size_t len = exchange(&f, s, rep, &ph);
	cr_assert_eq(ph, 5, "8 - 3 cookies missing");
	cr_assert_eq(source_cookies(s), 2);
	cr_assert_eq(source_handle_reply(s, rep, len, T0 + SEC(1), 0, &smp), SOURCE_REPLY_SAMPLE);
	cr_assert_eq(source_cookies(s), 8, "2 kept + 6 fresh");
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_tampered_or_wrong_reply_keeps_state)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s = nts_source(&f, 8);
	uint8_t rep[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	size_t len = exchange(&f, s, rep, NULL);
	rep[len - 1] ^= 0x40; /* inside the ciphertext */
	cr_assert_eq(source_handle_reply(s, rep, len, T0, 0, &smp), -EBADMSG);
	rep[len - 1] ^= 0x40;
	rep[24] ^= 1; /* origin */
	cr_assert_lt(source_handle_reply(s, rep, len, T0, 0, &smp), 0);
	rep[24] ^= 1;
	rep[1] = 0; /* an unauthenticated change to the header */
	cr_assert_eq(source_handle_reply(s, rep, len, T0, 0, &smp), -EBADMSG);
	rep[1] = 1;
	cr_assert_eq(source_cookies(s), 7);
	cr_assert_eq(source_reach(s), 0);
	cr_assert_eq(source_handle_reply(s, rep, len, T0, 0, &smp), SOURCE_REPLY_SAMPLE);
	cr_assert_eq(source_reach(s), 1);
	cr_assert_eq(source_cookies(s), 8);
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_unauthenticated_kiss_ignored)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s = nts_source(&f, 8);
	uint8_t req[SOURCE_PACKET_MAX], rep[64];
	struct clock_sample smp;
	struct source_random r = rnd();
	cr_assert_gt(source_build_request(s, &r, T0, req, sizeof req), 0);
	struct ntp_packet_header h = good;
	h.stratum = 0;
	h.refid = NTP_PACKET_REFID_DENY;
	size_t len = plain_reply(req, h, rep);
	cr_assert_lt(source_handle_reply(s, rep, len, T0, 0, &smp), 0);
	cr_assert_not(source_must_replace(s));
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_nak_needs_rekey)
{
	struct nts_fix f;
	nts_init(&f);
	/* A cookie the server cannot open: it answers with a NAK. */
	tu_rng_fill(&rng, f.cookies[0].data, f.cookies[0].len);
	struct source *s = nts_source(&f, 1);
	uint8_t rep[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	size_t len = exchange(&f, s, rep, NULL);
	cr_assert_gt(len, 0);
	cr_assert_eq(f.stats.nts_naks, 1);
	cr_assert_eq(source_handle_reply(s, rep, len, T0, 0, &smp), SOURCE_REPLY_NAK);
	cr_assert(source_needs_rekey(s));
	/* New keys clear the verdict. */
	nts_fini(&f);
	nts_init(&f);
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_256, f.c2s, f.s2c, 32, f.cookies, 8), 0);
	cr_assert_not(source_needs_rekey(s));
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_nak_with_other_uid_refused)
{
	struct nts_fix f;
	nts_init(&f);
	tu_rng_fill(&rng, f.cookies[0].data, f.cookies[0].len);
	struct source *s = nts_source(&f, 2);
	uint8_t rep[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	size_t len = exchange(&f, s, rep, NULL);
	/* The UID's body starts after the header and the field header. */
	rep[NTP_PACKET_HEADER_LEN + 4] ^= 1;
	cr_assert_lt(source_handle_reply(s, rep, len, T0, 0, &smp), 0);
	cr_assert_not(source_needs_rekey(s));
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_unanswered_and_out_of_cookies)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s = nts_source(&f, 8);
	uint8_t req[SOURCE_PACKET_MAX];
	for (int i = 0; i < SOURCE_MAX_UNANSWERED - 1; i++) {
		struct source_random r = rnd();
		cr_assert_gt(source_build_request(s, &r, T0, req, sizeof req), 0);
	}
	cr_assert_eq(source_unanswered(s), 7);
	cr_assert_not(source_needs_rekey(s));
	struct source_random r = rnd();
	cr_assert_gt(source_build_request(s, &r, T0, req, sizeof req), 0);
	cr_assert_eq(source_unanswered(s), 8);
	cr_assert(source_needs_rekey(s));
	cr_assert_eq(source_build_request(s, &r, T0, req, sizeof req), -ENOKEY);
	source_free(s);
	nts_fini(&f);
}

Test(source, nts_unanswered_rekey_with_cookies_left)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s = nts_source(&f, 8);
	uint8_t req[SOURCE_PACKET_MAX], rep[SOURCE_PACKET_MAX];
	struct clock_sample smp;
	/* Answered polls keep the stash full; then 8 go unanswered with cookies still held. */
	size_t len = exchange(&f, s, rep, NULL);
	cr_assert_eq(source_handle_reply(s, rep, len, T0, 0, &smp), SOURCE_REPLY_SAMPLE);
	for (int i = 0; i < 7; i++) {
		struct source_random r = rnd();
		source_build_request(s, &r, T0, req, sizeof req);
	}
	len = exchange(&f, s, rep, NULL); /* the 8th unanswered: its reply gets lost */
	cr_assert_gt(len, 0);
	cr_assert_eq(source_cookies(s), 0);
	cr_assert(source_needs_rekey(s));
	source_free(s);
	nts_fini(&f);
}

Test(source, cookie_length_rules)
{
	struct nts_fix f;
	nts_init(&f);
	struct source *s;
	cr_assert_eq(source_new(&s, true, 4, 10, -20), 0);
	struct ke_msg_cookie c[2] = { f.cookies[0], f.cookies[1] };
	c[1].len = 196;
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_256, f.c2s, f.s2c, 32, c, 2), -EBADMSG);
	c[1].len = 102;
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_256, f.c2s, f.s2c, 32, c, 2), -EBADMSG);
	cr_assert_eq(source_cookies(s), 0, "a refused exchange installs nothing");
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_256, f.c2s, f.s2c, 32, c, 0), -ENODATA);
	cr_assert_eq(source_set_keys(s, 30, f.c2s, f.s2c, 32, c, 1), -ENOTSUP);
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_512, f.c2s, f.s2c, 32, c, 1), -ENOTSUP);
	c[1].len = 192;
	cr_assert_eq(source_set_keys(s, AEAD_AES_SIV_CMAC_256, f.c2s, f.s2c, 32, c, 2), 0);
	cr_assert_eq(source_cookies(s), 2);
	source_free(s);

	struct source *p;
	cr_assert_eq(source_new(&p, false, 4, 10, -20), 0);
	cr_assert_eq(source_set_keys(p, AEAD_AES_SIV_CMAC_256, f.c2s, f.s2c, 32, c, 1), -ENOTSUP,
		     "a plain source takes no keys");
	source_free(p);
	nts_fini(&f);
}
