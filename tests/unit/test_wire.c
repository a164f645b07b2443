#include "wire.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "testutil.h"

static const uint8_t sample[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a };

Test(wire, reads_big_endian)
{
	struct wire_reader r;
	wire_reader_init(&r, sample, sizeof sample);
	cr_assert_eq(wire_get_u8(&r), 0x01);
	cr_assert_eq(wire_get_u16(&r), 0x0203);
	cr_assert_eq(wire_get_u32(&r), 0x04050607u);
	cr_assert_eq(wire_remaining(&r), 3);
	cr_assert_eq(wire_error(&r), 0);
	cr_assert_not(wire_done(&r));
	cr_assert(wire_skip(&r, 3));
	cr_assert(wire_done(&r));
}

Test(wire, u64)
{
	struct wire_reader r;
	wire_reader_init(&r, sample, 8);
	cr_assert_eq(wire_get_u64(&r), 0x0102030405060708ull);
	cr_assert(wire_done(&r));
}

Test(wire, underrun_is_sticky)
{
	struct wire_reader r;
	wire_reader_init(&r, sample, 3);
	cr_assert_eq(wire_get_u16(&r), 0x0102);
	cr_assert_eq(wire_get_u16(&r), 0, "a short read returns zero");
	cr_assert_eq(wire_error(&r), -EBADMSG);
	cr_assert_eq(wire_offset(&r), 2, "a failed read does not advance");
	/* Later reads that would fit still fail: the error is sticky. */
	cr_assert_eq(wire_get_u8(&r), 0);
	cr_assert_null(wire_get_bytes(&r, 0));
	cr_assert_eq(wire_remaining(&r), 0);
	cr_assert_not(wire_done(&r));
}

Test(wire, every_read_at_every_length)
{
	/* For each prefix length, each read either fits exactly or fails without moving. */
	for (size_t len = 0; len <= sizeof sample; len++) {
		struct wire_reader r;
		wire_reader_init(&r, sample, len);
		uint64_t v = wire_get_u64(&r);
		if (len >= 8) {
			cr_assert_eq(v, 0x0102030405060708ull);
			cr_assert_eq(wire_remaining(&r), len - 8);
		} else {
			cr_assert_eq(wire_error(&r), -EBADMSG);
		}
	}
}

Test(wire, bytes_and_copy)
{
	struct wire_reader r;
	uint8_t out[4];
	wire_reader_init(&r, sample, sizeof sample);
	const uint8_t *p = wire_get_bytes(&r, 2);
	cr_assert_eq(p, sample);
	cr_assert_eq(wire_copy(&r, out, 4), 0);
	cr_assert_arr_eq(out, sample + 2, 4);
	memset(out, 0xee, sizeof out);
	cr_assert_eq(wire_copy(&r, out, 5), -EBADMSG);
	cr_assert_eq(out[0], 0xee, "a failed copy leaves the destination untouched");
}

Test(wire, huge_length_does_not_wrap)
{
	struct wire_reader r;
	wire_reader_init(&r, sample, sizeof sample);
	wire_skip(&r, 4);
	cr_assert_null(wire_get_bytes(&r, SIZE_MAX));
	cr_assert_null(wire_get_bytes(&r, SIZE_MAX - 2));
	cr_assert_eq(wire_error(&r), -EBADMSG);
}

Test(wire, empty_buffer)
{
	struct wire_reader r;
	wire_reader_init(&r, NULL, 5);
	cr_assert_eq(wire_remaining(&r), 0, "a NULL buffer has no bytes whatever the length");
	cr_assert_not_null(wire_get_bytes(&r, 0));
	cr_assert(wire_done(&r));
	cr_assert_eq(wire_get_u8(&r), 0);
	cr_assert_eq(wire_error(&r), -EBADMSG);
}

Test(wire, sub_reader)
{
	struct wire_reader r, s;
	wire_reader_init(&r, sample, sizeof sample);
	wire_skip(&r, 1);
	s = wire_sub(&r, 4);
	cr_assert_eq(wire_get_u32(&s), 0x02030405u);
	cr_assert(wire_done(&s));
	cr_assert_eq(wire_get_u8(&s), 0, "a sub-reader stops at its own end");
	cr_assert_eq(wire_error(&s), -EBADMSG);
	cr_assert_eq(wire_error(&r), 0, "the parent is unaffected by the sub-reader's error");
	cr_assert_eq(wire_get_u8(&r), 0x06);

	struct wire_reader t = wire_sub(&r, 100);
	cr_assert_eq(wire_error(&r), -EBADMSG);
	cr_assert_eq(wire_error(&t), -EBADMSG);
	cr_assert_eq(wire_remaining(&t), 0);
}

Test(wire, reader_fail_keeps_first_error)
{
	struct wire_reader r;
	wire_reader_init(&r, sample, sizeof sample);
	wire_reader_fail(&r, -EPROTO);
	wire_reader_fail(&r, -EINVAL);
	cr_assert_eq(wire_error(&r), -EPROTO);
	cr_assert_eq(wire_get_u8(&r), 0);
}

Test(wire, writer_round_trip)
{
	uint8_t buf[32];
	struct wire_writer w;
	wire_writer_init(&w, buf, sizeof buf);
	wire_put_u8(&w, 0xab);
	wire_put_u16(&w, 0xcdef);
	wire_put_u32(&w, 0x01234567u);
	wire_put_u64(&w, 0x89abcdef01234567ull);
	wire_put_bytes(&w, "xy", 2);
	wire_put_zeros(&w, 3);
	cr_assert_eq(wire_writer_error(&w), 0);
	cr_assert_eq(wire_written(&w), 1 + 2 + 4 + 8 + 2 + 3);

	struct wire_reader r;
	wire_reader_init(&r, buf, wire_written(&w));
	cr_assert_eq(wire_get_u8(&r), 0xab);
	cr_assert_eq(wire_get_u16(&r), 0xcdef);
	cr_assert_eq(wire_get_u32(&r), 0x01234567u);
	cr_assert_eq(wire_get_u64(&r), 0x89abcdef01234567ull);
	cr_assert_eq(memcmp(wire_get_bytes(&r, 2), "xy", 2), 0);
	const uint8_t *z = wire_get_bytes(&r, 3);
	cr_assert(z && z[0] == 0 && z[1] == 0 && z[2] == 0);
	cr_assert(wire_done(&r));
}

Test(wire, writer_overflow_is_sticky_and_bounded)
{
	uint8_t buf[8];
	memset(buf, 0x55, sizeof buf);
	struct wire_writer w;
	wire_writer_init(&w, buf, 5);
	wire_put_u32(&w, 0xffffffffu);
	wire_put_u16(&w, 0x1234);
	cr_assert_eq(wire_writer_error(&w), -EMSGSIZE);
	cr_assert_eq(wire_written(&w), 4);
	wire_put_u8(&w, 0x77);
	cr_assert_eq(wire_written(&w), 4, "nothing is written after an error");
	cr_assert_eq(buf[4], 0x55);
	cr_assert_eq(buf[5], 0x55, "no byte past the capacity is touched");
	cr_assert_null(wire_put_reserve(&w, 0));
}

Test(wire, patch_u16)
{
	uint8_t buf[8];
	struct wire_writer w;
	wire_writer_init(&w, buf, sizeof buf);
	wire_put_u16(&w, 0);
	wire_put_u16(&w, 0);
	wire_patch_u16(&w, 2, 0xbeef);
	cr_assert_eq(buf[2], 0xbe);
	cr_assert_eq(buf[3], 0xef);
	cr_assert_eq(wire_writer_error(&w), 0);
	wire_patch_u16(&w, 3, 1);
	cr_assert_eq(wire_writer_error(&w), -EMSGSIZE, "patching beyond what was written fails");
}

Test(wire, random_reads_never_escape)
{
	/* Random sequences of reads over random lengths: the reader's offset never exceeds its
	 * length and a failed reader reports nothing remaining. ASan checks the reads themselves. */
	struct tu_rng rng;
	tu_rng_seed(&rng, 42);
	uint8_t buf[64];
	tu_rng_fill(&rng, buf, sizeof buf);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = tu_rng_below(&rng, sizeof buf + 1);
		struct wire_reader r;
		wire_reader_init(&r, buf, len);
		for (int op = 0; op < 12; op++) {
			switch (tu_rng_below(&rng, 6)) {
			case 0: wire_get_u8(&r); break;
			case 1: wire_get_u16(&r); break;
			case 2: wire_get_u32(&r); break;
			case 3: wire_get_u64(&r); break;
			case 4: wire_get_bytes(&r, tu_rng_below(&rng, 20)); break;
			default: {
				struct wire_reader s = wire_sub(&r, tu_rng_below(&rng, 16));
				wire_get_u32(&s);
				cr_assert_leq(s.off, s.len);
			}
			}
			cr_assert_leq(r.off, r.len);
			if (wire_error(&r))
				cr_assert_eq(wire_remaining(&r), 0);
		}
	}
}
