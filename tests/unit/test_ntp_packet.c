#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ntp_packet.h"
#include "testutil.h"

static uint8_t *vector(const char *name, size_t *len)
{
	return tu_vector_hex("nts-packets.txt", name, len);
}

Test(ntp_packet, header_of_vector)
{
	size_t len;
	uint8_t *pkt = vector("server.packet", &len);
	struct ntp_packet_header h;
	cr_assert_eq(ntp_packet_parse_header(pkt, len, &h), 0);
	cr_assert_eq(h.leap, 0);
	cr_assert_eq(h.version, 4);
	cr_assert_eq(h.mode, NTP_PACKET_MODE_SERVER);
	cr_assert_eq(h.stratum, 1);
	cr_assert_eq(h.poll, 4);
	cr_assert_eq(h.precision, -24);
	cr_assert_eq(h.root_delay, 0);
	cr_assert_eq(h.root_dispersion, 0x60);
	cr_assert_eq(h.refid, 0x544d4e4cu);
	cr_assert_eq(h.reference_ts, 0xe8494892f929579eull);
	cr_assert_eq(h.origin_ts, 0x6287db473ff75f58ull);
	cr_assert_eq(h.receive_ts, 0xe84948b2b640d701ull);
	cr_assert_eq(h.transmit_ts, 0xe84948b2b644bff8ull);
	cr_assert_eq(ntp_packet_kiss(&h), NTP_PACKET_KISS_NONE);

	uint8_t out[NTP_PACKET_HEADER_LEN];
	struct wire_writer w;
	wire_writer_init(&w, out, sizeof out);
	ntp_packet_put_header(&w, &h);
	cr_assert_eq(wire_writer_error(&w), 0);
	cr_assert_eq(wire_written(&w), NTP_PACKET_HEADER_LEN);
	cr_assert_arr_eq(out, pkt, NTP_PACKET_HEADER_LEN);
	free(pkt);
}

Test(ntp_packet, header_short_rejected)
{
	uint8_t buf[NTP_PACKET_HEADER_LEN] = { 0x23 };
	struct ntp_packet_header h;
	for (size_t n = 0; n < NTP_PACKET_HEADER_LEN; n++)
		cr_assert_eq(ntp_packet_parse_header(buf, n, &h), -EBADMSG, "len %zu", n);
	cr_assert_eq(ntp_packet_parse_header(buf, sizeof buf, &h), 0);
	cr_assert_eq(h.mode, NTP_PACKET_MODE_CLIENT);
}

Test(ntp_packet, header_writer_too_small)
{
	uint8_t out[NTP_PACKET_HEADER_LEN - 1];
	struct ntp_packet_header h = { .version = 4, .mode = 3 };
	struct wire_writer w;
	wire_writer_init(&w, out, sizeof out);
	ntp_packet_put_header(&w, &h);
	cr_assert_eq(wire_writer_error(&w), -EMSGSIZE);
}

Test(ntp_packet, header_random_round_trip)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x4e5450);
	for (int i = 0; i < 10000; i++) {
		uint8_t in[NTP_PACKET_HEADER_LEN], out[NTP_PACKET_HEADER_LEN];
		tu_rng_fill(&rng, in, sizeof in);
		struct ntp_packet_header h;
		cr_assert_eq(ntp_packet_parse_header(in, sizeof in, &h), 0);
		cr_assert_eq(h.leap, in[0] >> 6);
		cr_assert_eq(h.mode, in[0] & 7);
		struct wire_writer w;
		wire_writer_init(&w, out, sizeof out);
		ntp_packet_put_header(&w, &h);
		cr_assert_eq(wire_writer_error(&w), 0);
		cr_assert_arr_eq(in, out, sizeof in);
	}
}

Test(ntp_packet, kiss_codes)
{
	struct ntp_packet_header h = { .stratum = 0 };
	const struct {
		uint32_t refid;
		enum ntp_packet_kiss kiss;
	} cases[] = {
		{ 0x52415445u, NTP_PACKET_KISS_RATE },	{ 0x52535452u, NTP_PACKET_KISS_RSTR },
		{ 0x44454e59u, NTP_PACKET_KISS_DENY },	{ 0x4e54534eu, NTP_PACKET_KISS_NTSN },
		{ 0x494e4954u, NTP_PACKET_KISS_OTHER }, /* INIT */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		h.refid = cases[i].refid;
		cr_assert_eq(ntp_packet_kiss(&h), cases[i].kiss);
	}
	/* The refid constants are the ASCII codes as they appear on the wire. */
	uint8_t buf[NTP_PACKET_HEADER_LEN] = { 0x24, 0 };
	memcpy(buf + 12, "NTSN", 4);
	cr_assert_eq(ntp_packet_parse_header(buf, sizeof buf, &h), 0);
	cr_assert_eq(ntp_packet_kiss(&h), NTP_PACKET_KISS_NTSN);
	h.stratum = 2;
	cr_assert_eq(ntp_packet_kiss(&h), NTP_PACKET_KISS_NONE);
}

Test(ntp_packet, ef_iter_vector)
{
	size_t len;
	uint8_t *pkt = vector("client.packet", &len);
	const struct {
		uint16_t type, len;
		size_t offset;
	} want[] = { { 0x0104, 36, 48 }, { 0x0204, 172, 84 }, { 0x0404, 40, 256 } };
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	ntp_packet_ef_iter_init(&it, pkt, len, NTP_PACKET_HEADER_LEN);
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(ntp_packet_ef_next(&it, &ef), 1);
		cr_assert_eq(ef.type, want[i].type);
		cr_assert_eq(ef.len, want[i].len);
		cr_assert_eq(ef.offset, want[i].offset);
		cr_assert_eq(ef.body_len, want[i].len - 4u);
		cr_assert_eq(ef.body, pkt + want[i].offset + 4);
	}
	cr_assert_eq(ntp_packet_ef_next(&it, &ef), 0);
	cr_assert_eq(ntp_packet_ef_next(&it, &ef), 0);
	free(pkt);
}

/* Runs the iterator over a 48-byte zero header followed by tail; returns the final result. */
static int iterate_tail(const uint8_t *tail, size_t tail_len, int *fields)
{
	uint8_t buf[256] = { 0 };
	cr_assert_leq(tail_len, sizeof buf - NTP_PACKET_HEADER_LEN);
	memcpy(buf + NTP_PACKET_HEADER_LEN, tail, tail_len);
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	ntp_packet_ef_iter_init(&it, buf, NTP_PACKET_HEADER_LEN + tail_len, NTP_PACKET_HEADER_LEN);
	int rc;
	*fields = 0;
	while ((rc = ntp_packet_ef_next(&it, &ef)) > 0)
		(*fields)++;
	/* Errors are sticky. */
	cr_assert_eq(ntp_packet_ef_next(&it, &ef), rc);
	return rc;
}

Test(ntp_packet, ef_iter_rules)
{
	int fields;
	static const uint8_t ok_min[] = { 0x12, 0x34, 0x00, 0x04 };
	cr_assert_eq(iterate_tail(ok_min, sizeof ok_min, &fields), 0);
	cr_assert_eq(fields, 1);
	static const uint8_t ok_two[] = { 0, 1, 0, 8, 1, 2, 3, 4, 0, 2, 0, 4 };
	cr_assert_eq(iterate_tail(ok_two, sizeof ok_two, &fields), 0);
	cr_assert_eq(fields, 2);

	static const uint8_t len0[] = { 0, 1, 0, 0, 0, 0, 0, 0 };
	cr_assert_eq(iterate_tail(len0, sizeof len0, &fields), -EBADMSG);
	static const uint8_t len2[] = { 0, 1, 0, 2, 0, 0, 0, 0 };
	cr_assert_eq(iterate_tail(len2, sizeof len2, &fields), -EBADMSG);
	static const uint8_t len6[] = { 0, 1, 0, 6, 0, 0, 0, 0 };
	cr_assert_eq(iterate_tail(len6, sizeof len6, &fields), -EBADMSG);
	static const uint8_t past_end[] = { 0, 1, 0, 12, 0, 0, 0, 0 };
	cr_assert_eq(iterate_tail(past_end, sizeof past_end, &fields), -EBADMSG);
	cr_assert_eq(fields, 0);
	static const uint8_t huge[] = { 0, 1, 0xff, 0xfc, 0, 0, 0, 0 };
	cr_assert_eq(iterate_tail(huge, sizeof huge, &fields), -EBADMSG);
	for (size_t trail = 1; trail < 4; trail++) {
		uint8_t t[8] = { 0, 1, 0, 4, 9, 9, 9 };
		cr_assert_eq(iterate_tail(t, 4 + trail, &fields), -EBADMSG);
		cr_assert_eq(fields, 1);
	}
}

Test(ntp_packet, ef_iter_bounds)
{
	uint8_t buf[NTP_PACKET_HEADER_LEN] = { 0 };
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	ntp_packet_ef_iter_init(&it, buf, sizeof buf, NTP_PACKET_HEADER_LEN);
	cr_assert_eq(ntp_packet_ef_next(&it, &ef), 0);
	ntp_packet_ef_iter_init(&it, buf, 20, NTP_PACKET_HEADER_LEN);
	cr_assert_eq(ntp_packet_ef_next(&it, &ef), -EBADMSG);
	ntp_packet_ef_iter_init(&it, NULL, 0, 0);
	cr_assert_eq(ntp_packet_ef_next(&it, &ef), 0);
}

/* Every truncation of a valid packet is either a clean end at a field boundary or an error. */
Test(ntp_packet, ef_iter_every_truncation)
{
	const char *names[] = { "client.packet", "server.packet" };
	for (size_t v = 0; v < 2; v++) {
		size_t len;
		uint8_t *pkt = vector(names[v], &len);
		for (size_t cut = 0; cut <= len; cut++) {
			uint8_t *copy = malloc(cut ? cut : 1);
			cr_assert_not_null(copy);
			memcpy(copy, pkt, cut);
			struct ntp_packet_ef_iter it;
			struct ntp_packet_ef ef;
			ntp_packet_ef_iter_init(&it, copy, cut, NTP_PACKET_HEADER_LEN);
			int rc;
			size_t end = NTP_PACKET_HEADER_LEN;
			while ((rc = ntp_packet_ef_next(&it, &ef)) > 0) {
				cr_assert_leq(ef.offset + ef.len, cut);
				end = ef.offset + ef.len;
			}
			if (rc == 0)
				cr_assert_eq(end, cut, "cut %zu", cut);
			else
				cr_assert_eq(rc, -EBADMSG);
			free(copy);
		}
		free(pkt);
	}
}

Test(ntp_packet, put_ef)
{
	uint8_t out[64];
	struct wire_writer w;
	wire_writer_init(&w, out, sizeof out);
	memset(out, 0xee, sizeof out);
	cr_assert_eq(ntp_packet_put_ef(&w, 0x0104, "abcde", 5), 0);
	cr_assert_eq(wire_written(&w), 12);
	cr_assert_eq(ntp_packet_ef_size(5), 12);
	static const uint8_t want[] = { 0x01, 0x04, 0x00, 0x0c, 'a', 'b', 'c', 'd', 'e', 0, 0, 0 };
	cr_assert_arr_eq(out, want, sizeof want);
	cr_assert_eq(ntp_packet_put_ef(&w, 0x0204, NULL, 0), 0);
	cr_assert_eq(wire_written(&w), 16);

	cr_assert_eq(ntp_packet_put_ef_header(&w, 1, 6), -EINVAL);
	cr_assert_eq(ntp_packet_put_ef_header(&w, 1, 0), -EINVAL);
	cr_assert_eq(ntp_packet_put_ef_header(&w, 1, 65536), -EINVAL);
	cr_assert_eq(ntp_packet_put_ef(&w, 1, out, 65532), -EINVAL);
	cr_assert_eq(wire_written(&w), 16);

	cr_assert_eq(ntp_packet_put_ef(&w, 1, out, 45), -EMSGSIZE);

	/* The largest field is 65532 bytes: 65535 rounded down to a multiple of 4. */
	static uint8_t big[65529];
	uint8_t *huge = malloc(65536);
	cr_assert_not_null(huge);
	wire_writer_init(&w, huge, 65536);
	cr_assert_eq(ntp_packet_put_ef(&w, 1, big, 65529), -EINVAL);
	cr_assert_eq(ntp_packet_put_ef(&w, 1, big, 65528), 0);
	cr_assert_eq(wire_written(&w), 65532);
	free(huge);
}

Test(ntp_packet, timestamps_known)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = 500000000 };
	uint64_t ntp = ntp_packet_ts_from_timespec(&ts);
	cr_assert_eq(ntp_packet_ts_seconds(ntp), 2208988800u);
	cr_assert_eq(ntp_packet_ts_fraction(ntp), 0x80000000u);
	cr_assert_eq(ntp_packet_ts_make(2208988800u, 0x80000000u), ntp);

	/* 2036-02-07T06:28:16Z ends era 0: NTP seconds wrap to 0. */
	ts.tv_sec = 2085978496;
	ts.tv_nsec = 0;
	ntp = ntp_packet_ts_from_timespec(&ts);
	cr_assert_eq(ntp, 0);
	struct timespec back;
	ntp_packet_ts_to_timespec(ntp, 2085978496 - 1000, &back);
	cr_assert_eq(back.tv_sec, 2085978496);
	ntp_packet_ts_to_timespec(0xffffffff00000000ull, 2085978496 + 1000, &back);
	cr_assert_eq(back.tv_sec, 2085978495);
	/* The same bits near 1900 with an old pivot. */
	ntp_packet_ts_to_timespec(0, -2208988800ll + 5, &back);
	cr_assert_eq(back.tv_sec, -2208988800ll);

	/* The vector's server transmit time is in 2023. */
	ntp_packet_ts_to_timespec(0xe84948b2b644bff8ull, 1700000000, &back);
	cr_assert_eq(back.tv_sec, 0xe84948b2ll - 2208988800ll);
	cr_assert_eq(back.tv_nsec, 711986540);

	ntp_packet_ts_to_timespec(0x00000001ffffffffull, 2085978496, &back);
	cr_assert_eq(back.tv_sec, 2085978498);
	cr_assert_eq(back.tv_nsec, 0);
}

Test(ntp_packet, timestamps_random_round_trip)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 1234);
	for (int i = 0; i < 10000; i++) {
		/* Any time within 68 years of a pivot anywhere in 1900..2200. */
		int64_t pivot = (int64_t)(tu_rng_next(&rng) % 9467280000ull) - 2208988800ll;
		int64_t off = (int64_t)(tu_rng_next(&rng) % 0xfffffffeull) - 0x7fffffffll;
		struct timespec ts = { .tv_sec = (time_t)(pivot + off),
				       .tv_nsec = (long)tu_rng_below(&rng, 1000000000u) };
		struct timespec back;
		ntp_packet_ts_to_timespec(ntp_packet_ts_from_timespec(&ts), pivot, &back);
		cr_assert_eq(back.tv_sec, ts.tv_sec);
		cr_assert_eq(back.tv_nsec, ts.tv_nsec);
	}
}

Test(ntp_packet, timestamp_diff)
{
	cr_assert_eq(ntp_packet_ts_diff_ns(ntp_packet_ts_make(10, 0x80000000u),
					   ntp_packet_ts_make(9, 0)), 1500000000ll);
	cr_assert_eq(ntp_packet_ts_diff_ns(ntp_packet_ts_make(9, 0),
					   ntp_packet_ts_make(10, 0x80000000u)), -1500000000ll);
	/* Across the era boundary: 1 s after the wrap minus 1 s before it. */
	cr_assert_eq(ntp_packet_ts_diff_ns(ntp_packet_ts_make(1, 0),
					   ntp_packet_ts_make(0xffffffffu, 0)), 2000000000ll);
	cr_assert_eq(ntp_packet_ts_diff_ns(ntp_packet_ts_make(0xffffffffu, 0),
					   ntp_packet_ts_make(1, 0)), -2000000000ll);
	cr_assert_eq(ntp_packet_ts_diff_ns(5, 5), 0);
}

Test(ntp_packet, short_format)
{
	cr_assert_eq(ntp_packet_short_to_ns(0x00010000u), 1000000000ull);
	cr_assert_eq(ntp_packet_short_to_ns(0x00008000u), 500000000ull);
	cr_assert_eq(ntp_packet_short_to_ns(0x60), 1464844ull);
	cr_assert_eq(ntp_packet_short_from_ns(1000000000ull), 0x00010000u);
	cr_assert_eq(ntp_packet_short_from_ns(250000000ull), 0x00004000u);
	cr_assert_eq(ntp_packet_short_from_ns(UINT64_MAX), 0xffffffffu);
	cr_assert_eq(ntp_packet_short_from_ns(70000ull * 1000000000ull), 0xffffffffu);
}
