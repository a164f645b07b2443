#include "ke_record.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *const vectors[] = {
	"client_request", "client_request_deny_iana", "error_2",
	"support_request_iana", "support_response_iana", "support_request_ntpdrs",
	"fixed_key_request_token_iana", "support_request_token_iana",
	"fixed_key_request_token_experimental", "support_request_token_experimental",
	"support_response_kelb_test_iana",
};

/* PROTOCOL.md §2: wire type (without C) and C bit of each kind, per numbering. */
static const struct {
	enum ke_record_kind kind;
	int iana;
	int ntpdrs;
	bool critical;
} expected[] = {
	{ KE_RECORD_END, 0, 0, true },
	{ KE_RECORD_NEXT_PROTOCOL, 1, 1, true },
	{ KE_RECORD_ERROR, 2, 2, true },
	{ KE_RECORD_WARNING, 3, 3, true },
	{ KE_RECORD_AEAD, 4, 4, true },
	{ KE_RECORD_NEW_COOKIE, 5, 5, false },
	{ KE_RECORD_SERVER, 6, 6, true },
	{ KE_RECORD_PORT, 7, 7, true },
	{ KE_RECORD_KEEP_ALIVE, 8, 0x4000, false },
	{ KE_RECORD_SUPPORTED_PROTOCOLS, 9, 0x4004, true },
	{ KE_RECORD_SUPPORTED_ALGORITHMS, 10, 0x4001, true },
	{ KE_RECORD_FIXED_KEY, 12, 0x4002, true },
	{ KE_RECORD_SERVER_DENY, 13, 0x4003, false },
	{ KE_RECORD_AUTH_TOKEN, 14, 0x4005, false },
};

Test(ke_record, table_matches_protocol_for_both_numberings)
{
	for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
		for (int num = 0; num < 2; num++) {
			enum ke_numbering n = num ? KE_NUMBERING_NTPDRS_V1 : KE_NUMBERING_IANA;
			int want = num ? expected[i].ntpdrs : expected[i].iana;
			uint16_t type = 0xdead;
			int rc = ke_record_wire_type(n, expected[i].kind, &type);
			cr_assert_eq(rc, 0);
			cr_assert_eq(type & KE_RECORD_TYPE_MASK, want);
			cr_assert_eq((type & KE_RECORD_CRITICAL) != 0, expected[i].critical,
				     "C bit of %s", ke_record_kind_name(expected[i].kind));
			cr_assert_eq(ke_record_kind_of(n, (uint16_t)want), expected[i].kind);
			cr_assert_eq(ke_record_kind_of(n, type), expected[i].kind,
				     "the C bit does not change the kind");
		}
	}
	uint16_t t;
	cr_assert_eq(ke_record_wire_type(KE_NUMBERING_IANA, KE_RECORD_UNKNOWN, &t), -EINVAL);
}

Test(ke_record, other_numbering_types_are_unknown)
{
	static const uint16_t unused[] = { 11, 1024, 0x0064, 0x4006, 0x7fff, 15 };
	for (size_t i = 0; i < sizeof unused / sizeof unused[0]; i++) {
		cr_assert_eq(ke_record_kind_of(KE_NUMBERING_IANA, unused[i]), KE_RECORD_UNKNOWN);
		cr_assert_eq(ke_record_kind_of(KE_NUMBERING_NTPDRS_V1, unused[i]),
			     KE_RECORD_UNKNOWN);
	}
	for (uint16_t t = 0x4000; t <= 0x4005; t++)
		cr_assert_eq(ke_record_kind_of(KE_NUMBERING_IANA, t), KE_RECORD_UNKNOWN);
	for (uint16_t t = 8; t <= 14; t++)
		if (t != 11)
			cr_assert_eq(ke_record_kind_of(KE_NUMBERING_NTPDRS_V1, t),
				     KE_RECORD_UNKNOWN, "type %u", t);
}

/* The two records ntpd-rs-v1 gained (PROTOCOL.md §2): each has one number per generation and
 * the other generation's number means nothing, so a message can never mix them. */
Test(ke_record, supported_protocols_and_token_per_numbering)
{
	const enum ke_numbering I = KE_NUMBERING_IANA, X = KE_NUMBERING_NTPDRS_V1;
	cr_assert_eq(ke_record_kind_of(X, 0x4004), KE_RECORD_SUPPORTED_PROTOCOLS);
	cr_assert_eq(ke_record_kind_of(X, 0xc004), KE_RECORD_SUPPORTED_PROTOCOLS);
	cr_assert_eq(ke_record_kind_of(X, 0x4005), KE_RECORD_AUTH_TOKEN);
	cr_assert_eq(ke_record_kind_of(X, 0xc005), KE_RECORD_AUTH_TOKEN);
	cr_assert_eq(ke_record_kind_of(I, 0x4004), KE_RECORD_UNKNOWN);
	cr_assert_eq(ke_record_kind_of(I, 0x4005), KE_RECORD_UNKNOWN);
	cr_assert_eq(ke_record_kind_of(X, 9), KE_RECORD_UNKNOWN);
	cr_assert_eq(ke_record_kind_of(X, 0x8009), KE_RECORD_UNKNOWN);
	cr_assert_eq(ke_record_kind_of(X, 14), KE_RECORD_UNKNOWN);
	cr_assert_eq(ke_record_kind_of(I, 9), KE_RECORD_SUPPORTED_PROTOCOLS);
	cr_assert_eq(ke_record_kind_of(I, 14), KE_RECORD_AUTH_TOKEN);

	/* The token vectors open with the token in their own numbering only. */
	static const struct {
		const char *name;
		enum ke_numbering n;
	} tv[] = {
		{ "support_request_token_iana", KE_NUMBERING_IANA },
		{ "fixed_key_request_token_iana", KE_NUMBERING_IANA },
		{ "support_request_token_experimental", KE_NUMBERING_NTPDRS_V1 },
		{ "fixed_key_request_token_experimental", KE_NUMBERING_NTPDRS_V1 },
	};
	for (size_t v = 0; v < sizeof tv / sizeof tv[0]; v++) {
		size_t len;
		uint8_t *buf = tu_vector_hex("ke-records.txt", tv[v].name, &len);
		struct ke_record_iter it;
		struct ke_record rec;
		ke_record_iter_init(&it, buf, len, tv[v].n);
		cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
		cr_assert_eq(rec.kind, KE_RECORD_AUTH_TOKEN, "%s", tv[v].name);
		cr_assert_not(rec.critical);
		cr_assert_eq(rec.len, 64);
		cr_assert_eq(memcmp(rec.body, "0123456789abcdef", 16), 0);
		if (strstr(tv[v].name, "support")) {
			cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
			cr_assert_eq(rec.kind, KE_RECORD_SUPPORTED_PROTOCOLS, "%s", tv[v].name);
			cr_assert(rec.critical);
		}
		ke_record_iter_init(&it, buf, len, tv[v].n == I ? X : I);
		cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
		cr_assert_eq(rec.kind, KE_RECORD_UNKNOWN, "%s in the other numbering", tv[v].name);
		cr_assert_eq(rec.type, tv[v].n == I ? 14 : 0x4005);
		free(buf);
	}
}

Test(ke_record, kind_names)
{
	cr_assert_str_eq(ke_record_kind_name(KE_RECORD_FIXED_KEY), "Fixed Key Request");
	cr_assert_str_eq(ke_record_kind_name(KE_RECORD_UNKNOWN), "unknown");
}

Test(ke_record, iterates_client_request_vector)
{
	size_t len;
	uint8_t *buf = tu_vector_hex("ke-records.txt", "client_request", &len);
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, buf, len, KE_NUMBERING_IANA);

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_NEXT_PROTOCOL);
	cr_assert(rec.critical);
	cr_assert_eq(rec.len, 2);
	cr_assert_eq(rec.body[0], 0);
	cr_assert_eq(rec.body[1], 0);

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_AEAD);
	cr_assert_not(rec.critical);
	cr_assert_eq(rec.len, 4);
	cr_assert_eq(rec.body[1], 17);
	cr_assert_eq(rec.body[3], 15);

	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_END);
	cr_assert(rec.critical);
	cr_assert_eq(rec.len, 0);
	cr_assert_not_null(rec.body);

	cr_assert_eq(ke_record_iter_next(&it, &rec), 0);
	cr_assert_eq(ke_record_iter_offset(&it), len);
	free(buf);
}

Test(ke_record, every_vector_iterates_to_its_end)
{
	for (size_t v = 0; v < sizeof vectors / sizeof vectors[0]; v++) {
		size_t len;
		uint8_t *buf = tu_vector_hex("ke-records.txt", vectors[v], &len);
		for (int num = 0; num < 2; num++) {
			struct ke_record_iter it;
			struct ke_record rec;
			int rc, count = 0;
			enum ke_record_kind last = KE_RECORD_UNKNOWN;
			ke_record_iter_init(&it, buf, len,
					    num ? KE_NUMBERING_NTPDRS_V1 : KE_NUMBERING_IANA);
			while ((rc = ke_record_iter_next(&it, &rec)) == 1) {
				last = rec.kind;
				count++;
			}
			cr_assert_eq(rc, 0, "%s", vectors[v]);
			cr_assert_gt(count, 1);
			cr_assert_eq(last, KE_RECORD_END, "%s ends with End", vectors[v]);
			cr_assert_eq(ke_record_iter_offset(&it), len);
		}
		free(buf);
	}
}

Test(ke_record, pool_vectors_map_per_numbering)
{
	size_t len;
	uint8_t *buf = tu_vector_hex("ke-records.txt", "support_request_ntpdrs", &len);
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, buf, len, KE_NUMBERING_NTPDRS_V1);
	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_SUPPORTED_ALGORITHMS);
	cr_assert(rec.critical);
	ke_record_iter_init(&it, buf, len, KE_NUMBERING_IANA);
	cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_UNKNOWN);
	cr_assert_eq(rec.type, 0x4001);
	free(buf);

	buf = tu_vector_hex("ke-records.txt", "client_request_deny_iana", &len);
	ke_record_iter_init(&it, buf, len, KE_NUMBERING_IANA);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
	cr_assert_eq(rec.kind, KE_RECORD_SERVER_DENY);
	cr_assert_eq(rec.len, 6);
	cr_assert_eq(memcmp(rec.body, "a.test", 6), 0);
	free(buf);
}

Test(ke_record, overrunning_body_is_rejected_and_sticky)
{
	static const uint8_t msg[] = { 0x80, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00 };
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, msg, sizeof msg, KE_NUMBERING_IANA);
	cr_assert_eq(ke_record_iter_next(&it, &rec), -EBADMSG);
	cr_assert_eq(ke_record_iter_next(&it, &rec), -EBADMSG);
}

Test(ke_record, every_truncation_of_a_header_or_body_fails)
{
	size_t len;
	uint8_t *buf = tu_vector_hex("ke-records.txt", "support_response_iana", &len);
	for (size_t cut = 0; cut < len; cut++) {
		struct ke_record_iter it;
		struct ke_record rec;
		int rc;
		bool saw_end = false;
		ke_record_iter_init(&it, buf, cut, KE_NUMBERING_IANA);
		while ((rc = ke_record_iter_next(&it, &rec)) == 1)
			saw_end |= rec.kind == KE_RECORD_END;
		cr_assert_not(saw_end, "a cut message has no End");
		cr_assert(rc == 0 || rc == -EBADMSG);
		if (rc == 0)
			cr_assert_eq(ke_record_iter_offset(&it), cut,
				     "clean stop only at a boundary");
	}
	free(buf);
}

Test(ke_record, empty_buffer_has_no_records)
{
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, NULL, 0, KE_NUMBERING_IANA);
	cr_assert_eq(ke_record_iter_next(&it, &rec), 0);
}

Test(ke_record, read_header_splits_c_bit)
{
	static const uint8_t h[] = { 0xc0, 0x02, 0x01, 0x02 };
	struct wire_reader r;
	bool c;
	uint16_t type, len;
	wire_reader_init(&r, h, sizeof h);
	cr_assert_eq(ke_record_read_header(&r, &c, &type, &len), 0);
	cr_assert(c);
	cr_assert_eq(type, 0x4002);
	cr_assert_eq(len, 0x0102);
	wire_reader_init(&r, h, 3);
	cr_assert_eq(ke_record_read_header(&r, &c, &type, &len), -EBADMSG);
}

Test(ke_record, writers_produce_exact_bytes)
{
	uint8_t buf[64];
	struct wire_writer w;
	static const uint16_t ids[] = { 17, 15 };
	wire_writer_init(&w, buf, sizeof buf);
	cr_assert_eq(ke_record_put_u16_list(&w, KE_NUMBERING_IANA, KE_RECORD_AEAD, ids, 2), 0);
	cr_assert_eq(ke_record_put_u16(&w, KE_NUMBERING_IANA, KE_RECORD_PORT, 4123), 0);
	cr_assert_eq(ke_record_put(&w, KE_NUMBERING_NTPDRS_V1, KE_RECORD_KEEP_ALIVE, NULL, 0), 0);
	cr_assert_eq(ke_record_put(&w, KE_NUMBERING_NTPDRS_V1, KE_RECORD_SERVER_DENY, "x", 1), 0);
	cr_assert_eq(ke_record_put_header(&w, KE_NUMBERING_IANA, KE_RECORD_FIXED_KEY, 2), 0);
	cr_assert_eq(ke_record_put_raw(&w, false, 0x0064, "\x01", 1), 0);
	cr_assert_eq(ke_record_put(&w, KE_NUMBERING_IANA, KE_RECORD_END, NULL, 0), 0);
	size_t want_len;
	uint8_t *want = tu_hex("800400040011000f"
			       "80070002101b"
			       "40000000"
			       "4003000178"
			       "800c0002"
			       "0064000101"
			       "80000000",
			       &want_len);
	cr_assert_eq(wire_written(&w), want_len);
	cr_assert_eq(memcmp(buf, want, want_len), 0);
	free(want);
}

Test(ke_record, writer_refusals)
{
	uint8_t buf[8];
	struct wire_writer w;
	wire_writer_init(&w, buf, sizeof buf);
	cr_assert_eq(ke_record_put(&w, KE_NUMBERING_NTPDRS_V1, KE_RECORD_UNKNOWN, NULL, 0),
		     -EINVAL);
	cr_assert_eq(ke_record_put_header(&w, KE_NUMBERING_IANA, KE_RECORD_NEW_COOKIE, 65536),
		     -EINVAL);
	cr_assert_eq(ke_record_put_raw(&w, true, 0x8001, NULL, 0), -EINVAL);
	cr_assert_eq(wire_written(&w), 0, "refused records write nothing");
	cr_assert_eq(ke_record_put(&w, KE_NUMBERING_IANA, KE_RECORD_NEW_COOKIE, "abcdef", 6),
		     -EMSGSIZE);
	cr_assert_eq(ke_record_put(&w, KE_NUMBERING_IANA, KE_RECORD_END, NULL, 0), -EMSGSIZE,
		     "the writer error is sticky");
}

Test(ke_record, random_records_round_trip)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x6b655f7265636f72ull);
	static uint8_t buf[8 * (4 + 300)];
	for (int iter = 0; iter < 10000; iter++) {
		struct {
			bool c;
			uint16_t type;
			uint16_t len;
			uint8_t body[300];
		} recs[8];
		size_t count = 1 + tu_rng_below(&rng, 8);
		struct wire_writer w;
		wire_writer_init(&w, buf, sizeof buf);
		for (size_t i = 0; i < count; i++) {
			recs[i].c = tu_rng_below(&rng, 2);
			recs[i].type = (uint16_t)tu_rng_below(&rng, 0x8000);
			recs[i].len = (uint16_t)tu_rng_below(&rng, 300);
			tu_rng_fill(&rng, recs[i].body, recs[i].len);
			cr_assert_eq(ke_record_put_raw(&w, recs[i].c, recs[i].type, recs[i].body,
						       recs[i].len),
				     0);
		}
		enum ke_numbering n = tu_rng_below(&rng, 2) ? KE_NUMBERING_NTPDRS_V1
							    : KE_NUMBERING_IANA;
		struct ke_record_iter it;
		struct ke_record rec;
		ke_record_iter_init(&it, buf, wire_written(&w), n);
		for (size_t i = 0; i < count; i++) {
			cr_assert_eq(ke_record_iter_next(&it, &rec), 1);
			cr_assert_eq(rec.critical, recs[i].c);
			cr_assert_eq(rec.type, recs[i].type);
			cr_assert_eq(rec.kind, ke_record_kind_of(n, recs[i].type));
			cr_assert_eq(rec.len, recs[i].len);
			cr_assert_eq(memcmp(rec.body, recs[i].body, rec.len), 0);
		}
		cr_assert_eq(ke_record_iter_next(&it, &rec), 0);
	}
}
