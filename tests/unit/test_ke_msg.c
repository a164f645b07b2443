#include "ke_msg.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define IANA KE_NUMBERING_IANA
#define NTPDRS KE_NUMBERING_NTPDRS_V1

static const enum ke_numbering numberings[] = { KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1 };

/* ---- helpers: messages assembled record by record ------------------------------------------ */

struct mb {
	uint8_t buf[70000];
	struct wire_writer w;
};

static struct mb *mb_new(void)
{
	struct mb *m = malloc(sizeof *m);
	cr_assert(m);
	wire_writer_init(&m->w, m->buf, sizeof m->buf);
	return m;
}

static size_t mb_len(const struct mb *m)
{
	return wire_written(&m->w);
}

static void raw(struct mb *m, bool critical, uint16_t type, const char *hex)
{
	size_t len = 0;
	uint8_t *body = tu_hex(hex, &len);
	cr_assert_eq(ke_record_put_raw(&m->w, critical, type, body, len), 0);
	free(body);
}

static void raw_bytes(struct mb *m, bool critical, uint16_t type, const void *body, size_t len)
{
	cr_assert_eq(ke_record_put_raw(&m->w, critical, type, body, len), 0);
}

static uint16_t wire_type(enum ke_numbering n, enum ke_record_kind kind)
{
	uint16_t t = 0;
	cr_assert_eq(ke_record_wire_type(n, kind, &t), 0, "%s", ke_record_kind_name(kind));
	return t;
}

/* A record with the C bit we send. */
static void add(struct mb *m, enum ke_numbering n, enum ke_record_kind kind, const char *hex)
{
	uint16_t t = wire_type(n, kind);
	raw(m, t & KE_RECORD_CRITICAL, t & KE_RECORD_TYPE_MASK, hex);
}

static void end(struct mb *m, enum ke_numbering n)
{
	add(m, n, KE_RECORD_END, "");
}

/* Copies into an exact-size heap buffer so ASan sees any read past the end. */
static uint8_t *exact(const uint8_t *buf, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	cr_assert(p);
	if (len)
		memcpy(p, buf, len);
	return p;
}

static int parse_req(const struct mb *m, enum ke_numbering n, bool auth, struct ke_msg_request *req,
		     struct ke_msg_reject *rej)
{
	uint8_t *p = exact(m->buf, mb_len(m));
	int rc = ke_msg_parse_request(p, mb_len(m), n, auth, req, rej);
	free(p);
	return rc;
}

static void expect_code(struct mb *m, enum ke_numbering n, bool auth, uint16_t code)
{
	struct ke_msg_request req;
	struct ke_msg_reject rej = { 0xffff, NULL };
	int rc = parse_req(m, n, auth, &req, &rej);
	cr_assert_eq(rc, -EPROTO, "expected Error %u, request accepted", code);
	cr_assert_eq(rej.code, code, "expected Error %u, got %u (%s)", code, rej.code, rej.reason);
	cr_assert_not_null(rej.reason);
	cr_assert_eq(req.fixed_key_len, 0);
	free(m);
}

static void expect_ok(struct mb *m, enum ke_numbering n, bool auth, struct ke_msg_request *req)
{
	struct ke_msg_reject rej = { 0, NULL };
	int rc = parse_req(m, n, auth, req, &rej);
	cr_assert_eq(rc, 0, "rejected with Error %u: %s", rej.code, rej.reason ? rej.reason : "");
	free(m);
}

static int parse_resp(const struct mb *m, enum ke_numbering n, enum ke_msg_request_kind asked,
		      struct ke_msg_response *resp)
{
	uint8_t *p = exact(m->buf, mb_len(m));
	int rc = ke_msg_parse_response(p, mb_len(m), n, asked, resp);
	free(p);
	return rc;
}

static void expect_resp(struct mb *m, enum ke_numbering n, enum ke_msg_request_kind asked, int want)
{
	struct ke_msg_response resp;
	cr_assert_eq(parse_resp(m, n, asked, &resp), want);
	free(m);
}

/* NP[0], AEAD[15]: the body of every plain request. */
static struct mb *plain(enum ke_numbering n)
{
	struct mb *m = mb_new();
	add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
	add(m, n, KE_RECORD_AEAD, "000f");
	return m;
}

static uint8_t *vec(const char *name, size_t *len)
{
	return tu_vector_hex("ke-records.txt", name, len);
}

static void assert_bytes(const uint8_t *got, int got_len, const char *hex)
{
	size_t len;
	uint8_t *want = tu_hex(hex, &len);
	cr_assert_eq(got_len, (int)len, "length %d, want %zu", got_len, len);
	cr_assert_eq(memcmp(got, want, len), 0);
	free(want);
}

static void assert_vector(const uint8_t *got, int got_len, const char *name)
{
	char *hex = tu_vector("ke-records.txt", name);
	assert_bytes(got, got_len, hex);
	free(hex);
}

/* The RFC 8915 §4 size test: 1024 bytes with an unknown non-critical record. */
static size_t build_1024(uint8_t *buf)
{
	static const uint8_t zeros[1004];
	struct wire_writer w;
	wire_writer_init(&w, buf, 1024);
	static const uint16_t p = 0, a = 15;
	cr_assert_eq(ke_record_put_u16_list(&w, IANA, KE_RECORD_NEXT_PROTOCOL, &p, 1), 0);
	cr_assert_eq(ke_record_put_u16_list(&w, IANA, KE_RECORD_AEAD, &a, 1), 0);
	cr_assert_eq(ke_record_put_raw(&w, false, 0x0064, zeros, sizeof zeros), 0);
	cr_assert_eq(ke_record_put(&w, IANA, KE_RECORD_END, NULL, 0), 0);
	return wire_written(&w);
}

/* ---- vectors ------------------------------------------------------------------------------ */

Test(ke_msg, vector_client_request)
{
	size_t len;
	uint8_t *buf = vec("client_request", &len);
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	cr_assert_eq(ke_msg_frame(buf, len, KE_MSG_REQUEST_MAX), (int)len);
	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, false, &req, &rej), 0);
	cr_assert_eq(req.kind, KE_MSG_REQUEST_PLAIN);
	cr_assert_eq(req.n_protocols, 1);
	cr_assert_eq(req.protocols[0], 0);
	cr_assert_eq(req.n_aeads, 2);
	cr_assert_eq(req.aeads[0], 17);
	cr_assert_eq(req.aeads[1], 15);
	cr_assert_eq(req.n_deny, 0);
	cr_assert_not(req.keep_alive);

	/* We send AEAD with C=1; the vector's sender used C=0, which is the only difference. */
	uint8_t out[64];
	int n = ke_msg_build_request(out, sizeof out, IANA, req.protocols, req.n_protocols,
				     req.aeads, req.n_aeads, NULL, 0);
	cr_assert_eq(n, (int)len);
	buf[6] |= 0x80;
	cr_assert_eq(memcmp(out, buf, len), 0);
	free(buf);
}

Test(ke_msg, vector_client_request_deny_rebuilds_exactly)
{
	size_t len;
	uint8_t *buf = vec("client_request_deny_iana", &len);
	for (int auth = 0; auth < 2; auth++) {
		struct ke_msg_request req;
		struct ke_msg_reject rej;
		cr_assert_eq(ke_msg_parse_request(buf, len, IANA, auth, &req, &rej), 0);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_PLAIN);
		cr_assert_eq(req.n_deny, 1);
		cr_assert_str_eq(req.deny[0].name, "a.test");
		cr_assert(ke_msg_request_denies(&req, "A.Test"));
		cr_assert_not(ke_msg_request_denies(&req, "b.test"));
		uint8_t out[64];
		const char *deny[] = { req.deny[0].name };
		int n = ke_msg_build_request(out, sizeof out, IANA, req.protocols, req.n_protocols,
					     req.aeads, req.n_aeads, deny, 1);
		assert_vector(out, n, "client_request_deny_iana");
	}
	free(buf);
}

Test(ke_msg, request_of_1024_bytes_with_unknown_noncritical_record)
{
	uint8_t buf[1024];
	size_t len = build_1024(buf);
	cr_assert_eq(len, 1024);
	cr_assert_eq(ke_msg_frame(buf, len, KE_MSG_REQUEST_MAX), 1024);
	for (size_t i = 0; i < 2; i++) {
		struct ke_msg_request req;
		struct ke_msg_reject rej;
		cr_assert_eq(ke_msg_parse_request(buf, len, numberings[i], false, &req, &rej), 0);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_PLAIN);
		cr_assert_eq(req.ignored, 1);
		cr_assert_eq(req.aeads[0], 15);
	}
}

Test(ke_msg, vector_error_2)
{
	size_t len;
	uint8_t *buf = vec("error_2", &len);
	struct ke_msg_response resp;
	cr_assert_eq(ke_msg_frame(buf, len, KE_MSG_RESPONSE_MAX), (int)len);
	cr_assert_eq(ke_msg_parse_response(buf, len, IANA, KE_MSG_REQUEST_PLAIN, &resp),
		     -EREMOTEIO);
	cr_assert(resp.has_error);
	cr_assert_eq(resp.error, 2);
	uint8_t out[16];
	for (size_t i = 0; i < 2; i++) {
		int n = ke_msg_build_error(out, sizeof out, numberings[i], KE_MSG_ERROR_INTERNAL);
		assert_vector(out, n, "error_2");
	}
	free(buf);
}

Test(ke_msg, vector_support_request_iana)
{
	size_t len;
	uint8_t *buf = vec("support_request_iana", &len);
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, true, &req, &rej), 0);
	cr_assert_eq(req.kind, KE_MSG_REQUEST_SUPPORT);
	cr_assert(req.want_protocols);
	cr_assert(req.want_algorithms);
	cr_assert(req.keep_alive);
	uint8_t out[64];
	int n = ke_msg_build_support_request(out, sizeof out, IANA, true, true, true);
	assert_vector(out, n, "support_request_iana");

	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, false, &req, &rej), -EPROTO);
	cr_assert_eq(rej.code, 0, "unauthorised support request -> Error 0");
	cr_assert_eq(ke_msg_parse_request(buf, len, NTPDRS, true, &req, &rej), -EPROTO);
	cr_assert_eq(rej.code, 0, "types 9 and 10 are unknown critical in ntpd-rs-v1");
	free(buf);
}

Test(ke_msg, vector_support_response_iana)
{
	size_t len;
	uint8_t *buf = vec("support_response_iana", &len);
	struct ke_msg_response resp;
	cr_assert_eq(ke_msg_parse_response(buf, len, IANA, KE_MSG_REQUEST_SUPPORT, &resp), 0);
	cr_assert(resp.has_supported_protocols);
	cr_assert_eq(resp.n_supported_protocols, 1);
	cr_assert_eq(resp.supported_protocols[0], 0);
	cr_assert(resp.has_supported_algorithms);
	cr_assert_eq(resp.n_supported_algorithms, 2);
	cr_assert_eq(resp.supported_algorithms[0].id, 15);
	cr_assert_eq(resp.supported_algorithms[0].key_len, 32);
	cr_assert_eq(resp.supported_algorithms[1].id, 17);
	cr_assert_eq(resp.supported_algorithms[1].key_len, 64);
	cr_assert(resp.keep_alive);
	cr_assert_eq(ke_msg_parse_response(buf, len, IANA, KE_MSG_REQUEST_PLAIN, &resp), -EBADMSG,
		     "a support response is no answer to a plain request");

	struct ke_msg_support s = {
		.protocols = true,
		.protocol_ids = resp.supported_protocols,
		.n_protocols = resp.n_supported_protocols,
		.algorithms = true,
		.algs = resp.supported_algorithms,
		.n_algs = resp.n_supported_algorithms,
		.keep_alive = true,
	};
	uint8_t out[64];
	int n = ke_msg_build_support_response(out, sizeof out, IANA, &s);
	assert_vector(out, n, "support_response_iana");
	free(buf);
}

Test(ke_msg, vector_support_request_ntpdrs)
{
	size_t len;
	uint8_t *buf = vec("support_request_ntpdrs", &len);
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	cr_assert_eq(ke_msg_parse_request(buf, len, NTPDRS, true, &req, &rej), 0);
	cr_assert_eq(req.kind, KE_MSG_REQUEST_SUPPORT);
	cr_assert_not(req.want_protocols);
	cr_assert(req.want_algorithms);
	cr_assert_not(req.keep_alive);
	uint8_t out[64];
	int n = ke_msg_build_support_request(out, sizeof out, NTPDRS, false, true, false);
	assert_vector(out, n, "support_request_ntpdrs");

	cr_assert_eq(ke_msg_parse_request(buf, len, NTPDRS, false, &req, &rej), -EPROTO);
	cr_assert_eq(rej.code, 0);
	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, true, &req, &rej), -EPROTO);
	cr_assert_eq(rej.code, 0, "0x4001 is unknown critical under iana numbering");
	cr_assert_eq(ke_msg_build_support_request(out, sizeof out, NTPDRS, true, true, false),
		     -EINVAL, "ntpd-rs-v1 has no Supported Next Protocol List");
	free(buf);
}

/* ---- framing ------------------------------------------------------------------------------ */

Test(ke_msg, frame_complete_partial_and_trailing)
{
	size_t len;
	uint8_t *buf = vec("client_request_deny_iana", &len);
	uint8_t *more = malloc(len + 3);
	memcpy(more, buf, len);
	memcpy(more + len, "\x80\x01\x00", 3);
	cr_assert_eq(ke_msg_frame(more, len + 3, KE_MSG_REQUEST_MAX), (int)len,
		     "bytes after End belong to the next message");
	cr_assert_eq(ke_msg_frame(NULL, 0, KE_MSG_REQUEST_MAX), 0);
	cr_assert_eq(ke_msg_frame(buf, len, len), (int)len, "a message exactly at the cap");
	cr_assert_eq(ke_msg_frame(buf, len, len - 1), -EMSGSIZE);
	cr_assert_eq(ke_msg_frame(buf, len, KE_MSG_RESPONSE_MAX + 1), -EINVAL);
	free(more);
	free(buf);
}

Test(ke_msg, frame_rejects_oversize_request_from_a_header)
{
	/* The body length alone proves the request is too big: no need to wait for it. */
	static const uint8_t hdr[] = { 0x00, 0x64, 0x10, 0x00 };
	cr_assert_eq(ke_msg_frame(hdr, sizeof hdr, KE_MSG_REQUEST_MAX), -EMSGSIZE);
	cr_assert_eq(ke_msg_frame(hdr, sizeof hdr, KE_MSG_RESPONSE_MAX), 0);

	/* 4096 bytes of records without End: the End would be beyond the cap. */
	static uint8_t full[4096];
	struct wire_writer w;
	wire_writer_init(&w, full, sizeof full);
	static const uint8_t zeros[4092];
	cr_assert_eq(ke_record_put_raw(&w, false, 0x64, zeros, sizeof zeros), 0);
	cr_assert_eq(wire_written(&w), 4096);
	cr_assert_eq(ke_msg_frame(full, sizeof full, KE_MSG_REQUEST_MAX), -EMSGSIZE);

	static const uint8_t bad_end[] = { 0x80, 0x00, 0x00, 0x01, 0x00 };
	cr_assert_eq(ke_msg_frame(bad_end, sizeof bad_end, KE_MSG_REQUEST_MAX), -EBADMSG);
}

Test(ke_msg, request_at_and_over_the_cap)
{
	static uint8_t buf[KE_MSG_REQUEST_MAX + 1];
	for (size_t total = KE_MSG_REQUEST_MAX; total <= KE_MSG_REQUEST_MAX + 1; total++) {
		struct wire_writer w;
		static const uint16_t p = 0, a = 15;
		static const uint8_t zeros[KE_MSG_REQUEST_MAX];
		wire_writer_init(&w, buf, total);
		ke_record_put_u16_list(&w, IANA, KE_RECORD_NEXT_PROTOCOL, &p, 1);
		ke_record_put_u16_list(&w, IANA, KE_RECORD_AEAD, &a, 1);
		ke_record_put_raw(&w, false, 0x64, zeros, total - 6 - 6 - 4 - 4);
		cr_assert_eq(ke_record_put(&w, IANA, KE_RECORD_END, NULL, 0), 0);
		cr_assert_eq(wire_written(&w), total);
		struct ke_msg_request req;
		struct ke_msg_reject rej;
		int rc = ke_msg_parse_request(buf, total, IANA, false, &req, &rej);
		if (total == KE_MSG_REQUEST_MAX) {
			cr_assert_eq(ke_msg_frame(buf, total, KE_MSG_REQUEST_MAX), (int)total);
			cr_assert_eq(rc, 0);
		} else {
			cr_assert_eq(ke_msg_frame(buf, total, KE_MSG_REQUEST_MAX), -EMSGSIZE);
			cr_assert_eq(rc, -EPROTO);
			cr_assert_eq(rej.code, 1);
		}
	}
}

/* ---- request validation rules ------------------------------------------------------------- */

Test(ke_msg, unknown_critical_is_error_0_and_wins)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct mb *m = plain(n);
		raw(m, true, 0x0064, "");
		end(m, n);
		expect_code(m, n, true, 0);

		m = plain(n);
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000"); /* Error 1 on its own */
		raw(m, true, 11, "");
		end(m, n);
		expect_code(m, n, false, 0);
	}
}

Test(ke_msg, unknown_noncritical_is_ignored)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct mb *m = plain(n);
		raw(m, false, 0x0064, "0102");
		raw(m, false, 1024, "");
		end(m, n);
		struct ke_msg_request req;
		expect_ok(m, n, false, &req);
		cr_assert_eq(req.ignored, 2);
	}
}

Test(ke_msg, unauthorised_pool_records)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		uint8_t key[64] = { 0 };
		uint8_t buf[256];
		int len = ke_msg_build_fixed_key_request(buf, sizeof buf, n, key, key, 32, 0, 15,
							 false);
		cr_assert_gt(len, 0);
		struct ke_msg_request req;
		struct ke_msg_reject rej;
		cr_assert_eq(ke_msg_parse_request(buf, (size_t)len, n, false, &req, &rej), -EPROTO);
		cr_assert_eq(rej.code, 0, "unauthorised Fixed Key -> Error 0");
		cr_assert_eq(ke_msg_parse_request(buf, (size_t)len, n, true, &req, &rej), 0);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_FIXED_KEY);

		struct mb *m = mb_new();
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "");
		end(m, n);
		expect_code(m, n, false, 0);

		/* Keep Alive is unknown non-critical to an unauthorised peer: ignored. */
		m = plain(n);
		add(m, n, KE_RECORD_KEEP_ALIVE, "");
		end(m, n);
		expect_ok(m, n, false, &req);
		cr_assert_not(req.keep_alive);
		cr_assert_eq(req.ignored, 1);

		/* NTP Server Deny is parsed from anyone. */
		m = plain(n);
		add(m, n, KE_RECORD_SERVER_DENY, "782e79");
		end(m, n);
		expect_ok(m, n, false, &req);
		cr_assert_eq(req.n_deny, 1);
		cr_assert_str_eq(req.deny[0].name, "x.y");
	}
	struct mb *m = mb_new();
	add(m, IANA, KE_RECORD_SUPPORTED_PROTOCOLS, "");
	end(m, IANA);
	expect_code(m, IANA, false, 0);
}

Test(ke_msg, authorised_keep_alive_on_plain_request)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct mb *m = plain(n);
		add(m, n, KE_RECORD_KEEP_ALIVE, "");
		end(m, n);
		struct ke_msg_request req;
		expect_ok(m, n, true, &req);
		cr_assert(req.keep_alive);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_PLAIN);

		m = plain(n);
		add(m, n, KE_RECORD_KEEP_ALIVE, "00");
		end(m, n);
		expect_code(m, n, true, 1);

		m = plain(n);
		add(m, n, KE_RECORD_KEEP_ALIVE, "");
		add(m, n, KE_RECORD_KEEP_ALIVE, "");
		end(m, n);
		expect_code(m, n, true, 1);
	}
}

Test(ke_msg, server_records_from_a_client_are_error_1)
{
	static const enum ke_record_kind kinds[] = { KE_RECORD_ERROR, KE_RECORD_WARNING,
						     KE_RECORD_NEW_COOKIE };
	for (size_t i = 0; i < 2; i++)
		for (size_t k = 0; k < 3; k++) {
			struct mb *m = plain(numberings[i]);
			add(m, numberings[i], kinds[k], k == 2 ? "0102030405060708" : "0000");
			end(m, numberings[i]);
			expect_code(m, numberings[i], true, 1);
		}
}

Test(ke_msg, next_protocol_rules)
{
	struct mb *m = mb_new();
	add(m, IANA, KE_RECORD_AEAD, "000f");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* missing */

	m = plain(IANA);
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "0000");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* duplicate */

	m = mb_new();
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "");
	add(m, IANA, KE_RECORD_AEAD, "000f");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* empty */

	m = mb_new();
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "000000");
	add(m, IANA, KE_RECORD_AEAD, "000f");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* odd */

	/* Next Protocol with C=0 is still Next Protocol. */
	m = mb_new();
	raw(m, false, 1, "0000");
	add(m, IANA, KE_RECORD_AEAD, "000f");
	end(m, IANA);
	struct ke_msg_request req;
	expect_ok(m, IANA, false, &req);
	cr_assert_eq(req.n_protocols, 1);
}

Test(ke_msg, aead_rules)
{
	struct mb *m = plain(NTPDRS);
	add(m, NTPDRS, KE_RECORD_AEAD, "0011");
	end(m, NTPDRS);
	expect_code(m, NTPDRS, false, 1); /* duplicate */

	m = mb_new();
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "00050000");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* NTPv4 offered without AEAD */

	m = mb_new();
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "0000");
	add(m, IANA, KE_RECORD_AEAD, "");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* empty AEAD */

	m = mb_new();
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "0000");
	add(m, IANA, KE_RECORD_AEAD, "000f00");
	end(m, IANA);
	expect_code(m, IANA, false, 1); /* odd */

	/* A protocol other than NTPv4 needs no AEAD; the server answers no overlap. */
	m = mb_new();
	add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "0005");
	end(m, IANA);
	struct ke_msg_request req;
	expect_ok(m, IANA, false, &req);
	cr_assert_eq(req.n_aeads, 0);
	cr_assert_eq(req.protocols[0], 5);
}

Test(ke_msg, list_bounds)
{
	char hex[4 * 66 + 1];
	for (size_t count = 64; count <= 65; count++) {
		for (size_t i = 0; i < count; i++)
			memcpy(hex + 4 * i, "000f", 4);
		hex[4 * count] = '\0';
		struct mb *m = mb_new();
		add(m, IANA, KE_RECORD_NEXT_PROTOCOL, "0000");
		add(m, IANA, KE_RECORD_AEAD, hex);
		end(m, IANA);
		if (count == 64) {
			struct ke_msg_request req;
			expect_ok(m, IANA, false, &req);
			cr_assert_eq(req.n_aeads, 64);
		} else {
			expect_code(m, IANA, false, 1);
		}
		m = mb_new();
		add(m, IANA, KE_RECORD_NEXT_PROTOCOL, hex);
		end(m, IANA);
		if (count == 64)
			free(m);
		else
			expect_code(m, IANA, false, 1);
	}
}

Test(ke_msg, deny_names)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		uint16_t t = wire_type(n, KE_RECORD_SERVER_DENY);
		struct ke_msg_request req;

		/* 16 distinct names, repeats in other case collapse. */
		struct mb *m = plain(n);
		for (int k = 0; k < 16; k++) {
			char name[16];
			snprintf(name, sizeof name, "s%d.test", k);
			raw_bytes(m, false, t, name, strlen(name));
			snprintf(name, sizeof name, "S%d.TEST", k);
			raw_bytes(m, false, t, name, strlen(name));
		}
		end(m, n);
		expect_ok(m, n, false, &req);
		cr_assert_eq(req.n_deny, 16);
		cr_assert(ke_msg_request_denies(&req, "s15.test"));

		m = plain(n);
		for (int k = 0; k < 17; k++) {
			char name[16];
			snprintf(name, sizeof name, "s%d.test", k);
			raw_bytes(m, false, t, name, strlen(name));
		}
		end(m, n);
		expect_code(m, n, false, 1);

		char longname[256];
		memset(longname, 'a', sizeof longname);
		m = plain(n);
		raw_bytes(m, false, t, longname, 255);
		end(m, n);
		expect_ok(m, n, false, &req);
		cr_assert_eq(req.deny[0].len, 255);
		cr_assert_eq(strlen(req.deny[0].name), 255);

		m = plain(n);
		raw_bytes(m, false, t, longname, 256);
		end(m, n);
		expect_code(m, n, false, 1);

		static const char *const badnames[] = { "", "a b", "a\tb", "a\x7f", "\xc3\xa9" };
		for (size_t b = 0; b < sizeof badnames / sizeof badnames[0]; b++) {
			m = plain(n);
			raw_bytes(m, false, t, badnames[b], strlen(badnames[b]));
			end(m, n);
			expect_code(m, n, false, 1);
		}
		m = plain(n);
		raw(m, false, t, "610062"); /* embedded NUL */
		end(m, n);
		expect_code(m, n, false, 1);
	}
}

static struct mb *fixed_req(enum ke_numbering n, size_t body_len, const char *protocols,
			    const char *aeads)
{
	uint8_t key[130];
	memset(key, 0x5a, sizeof key);
	struct mb *m = mb_new();
	raw_bytes(m, true, wire_type(n, KE_RECORD_FIXED_KEY) & KE_RECORD_TYPE_MASK, key, body_len);
	if (protocols)
		add(m, n, KE_RECORD_NEXT_PROTOCOL, protocols);
	if (aeads)
		add(m, n, KE_RECORD_AEAD, aeads);
	return m;
}

Test(ke_msg, fixed_key_rules)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct ke_msg_request req;

		struct mb *m = fixed_req(n, 128, "0000", "0011");
		add(m, n, KE_RECORD_KEEP_ALIVE, "");
		end(m, n);
		expect_ok(m, n, true, &req);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_FIXED_KEY);
		cr_assert_eq(req.fixed_key_len, 64);
		cr_assert_eq(req.fixed_c2s[0], 0x5a);
		cr_assert_eq(req.fixed_s2c[63], 0x5a);
		cr_assert(req.keep_alive);
		ke_msg_request_wipe(&req);
		cr_assert_eq(req.fixed_key_len, 0);
		cr_assert_eq(req.fixed_c2s[0], 0);

		m = fixed_req(n, 64, "0000", "000f");
		end(m, n);
		expect_ok(m, n, true, &req);
		cr_assert_eq(req.fixed_key_len, 32);

		static const struct {
			size_t body;
			const char *protocols, *aeads;
		} bad[] = {
			{ 64, "0000", "0011" },	    /* halves 32, AEAD 17 needs 64 */
			{ 128, "0000", "000f" },    /* halves 64, AEAD 15 needs 32 */
			{ 63, "0000", "000f" },	    /* unequal halves */
			{ 0, "0000", "000f" },	    /* no key */
			{ 130, "0000", "0011" },    /* halves over the longest key */
			{ 64, "0000", "001e" },	    /* AEAD we have no key length for */
			{ 64, "00000000", "000f" }, /* two protocols */
			{ 64, "0000", "000f0011" }, /* two AEADs */
			{ 64, "0000", NULL },	    /* no AEAD */
			{ 64, NULL, "000f" },	    /* no Next Protocol */
		};
		for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
			m = fixed_req(n, bad[b].body, bad[b].protocols, bad[b].aeads);
			end(m, n);
			expect_code(m, n, true, 1);
		}

		m = fixed_req(n, 64, "0000", "000f");
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "");
		end(m, n);
		expect_code(m, n, true, 1); /* mixed with a Supported list */

		m = fixed_req(n, 64, "0000", "000f");
		raw_bytes(m, true, wire_type(n, KE_RECORD_FIXED_KEY) & KE_RECORD_TYPE_MASK,
			  m->buf + 4, 64);
		end(m, n);
		expect_code(m, n, true, 1); /* repeated */
	}
}

Test(ke_msg, support_request_shape)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct mb *m = mb_new();
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "");
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
		end(m, n);
		expect_code(m, n, true, 1);

		m = mb_new();
		add(m, n, KE_RECORD_AEAD, "000f");
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "");
		end(m, n);
		expect_code(m, n, true, 1);

		m = mb_new();
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "0000");
		end(m, n);
		expect_code(m, n, true, 1);

		m = mb_new();
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "");
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "");
		end(m, n);
		expect_code(m, n, true, 1);

		m = mb_new();
		add(m, n, KE_RECORD_KEEP_ALIVE, "");
		end(m, n);
		expect_code(m, n, true, 1); /* Keep Alive alone is no request */
	}
	struct mb *m = mb_new();
	add(m, IANA, KE_RECORD_SUPPORTED_PROTOCOLS, "");
	end(m, IANA);
	struct ke_msg_request req;
	expect_ok(m, IANA, true, &req);
	cr_assert(req.want_protocols);
	cr_assert_not(req.want_algorithms);
}

Test(ke_msg, message_structure_rules)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct mb *m = plain(n);
		expect_code(m, n, false, 1); /* no End */

		m = plain(n);
		end(m, n);
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
		expect_code(m, n, false, 1); /* record after End */

		m = plain(n);
		end(m, n);
		raw(m, false, 0x64, "");
		expect_code(m, n, false, 1); /* even an ignorable one */

		m = plain(n);
		add(m, n, KE_RECORD_END, "00");
		expect_code(m, n, false, 1); /* End with a body */

		m = plain(n);
		end(m, n);
		m->w.off -= 1; /* End header cut: overrun */
		expect_code(m, n, false, 1);

		m = mb_new();
		expect_code(m, n, false, 1); /* empty */

		m = plain(n);
		add(m, n, KE_RECORD_PORT, "007b00");
		end(m, n);
		expect_code(m, n, false, 1);

		/* Hints a client may add and an Authentication token are accepted. */
		struct ke_msg_request req;
		m = plain(n);
		add(m, n, KE_RECORD_PORT, "007b");
		add(m, n, KE_RECORD_SERVER, "6e74702e74657374");
		raw(m, false, 14, "746f6b656e");
		end(m, n);
		expect_ok(m, n, false, &req);
		cr_assert_eq(req.ignored, n == IANA ? 0 : 1, "type 14 is unknown in ntpd-rs-v1");
	}
}

/* ---- response parsing --------------------------------------------------------------------- */

static struct mb *success_prefix(enum ke_numbering n)
{
	struct mb *m = mb_new();
	add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
	add(m, n, KE_RECORD_AEAD, "000f");
	add(m, n, KE_RECORD_NEW_COOKIE, "0102030405060708");
	return m;
}

Test(ke_msg, response_rules)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct ke_msg_response resp;
		const enum ke_msg_request_kind P = KE_MSG_REQUEST_PLAIN;

		struct mb *m = success_prefix(n);
		raw(m, false, 0x64, "00");
		raw(m, false, wire_type(n, KE_RECORD_SERVER_DENY) & KE_RECORD_TYPE_MASK, "61");
		end(m, n);
		cr_assert_eq(parse_resp(m, n, KE_MSG_REQUEST_FIXED_KEY, &resp), 0);
		cr_assert_eq(resp.ignored, 2);
		cr_assert_eq(resp.n_cookies, 1);
		cr_assert_eq(resp.cookies[0].len, 8);
		cr_assert_eq(resp.cookies[0].data[7], 8);
		cr_assert_not(resp.has_port);
		cr_assert_not(resp.has_server);
		free(m);

		m = success_prefix(n);
		raw(m, true, 0x64, "");
		end(m, n);
		expect_resp(m, n, P, -EPROTO);

		m = success_prefix(n);
		add(m, n, KE_RECORD_WARNING, "0001");
		end(m, n);
		cr_assert_eq(parse_resp(m, n, P, &resp), -EREMOTEIO);
		cr_assert_eq(resp.n_warnings, 1);
		cr_assert_not(resp.has_error);
		free(m);

		m = success_prefix(n);
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* repeated */

		m = mb_new();
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "00000000");
		add(m, n, KE_RECORD_AEAD, "000f");
		add(m, n, KE_RECORD_NEW_COOKIE, "01");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* two protocols chosen */

		m = success_prefix(n);
		add(m, n, KE_RECORD_NEW_COOKIE, "");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* empty cookie */

		uint8_t big[257];
		memset(big, 7, sizeof big);
		uint16_t ct = wire_type(n, KE_RECORD_NEW_COOKIE) & KE_RECORD_TYPE_MASK;
		m = success_prefix(n);
		raw_bytes(m, false, ct, big, 257);
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		for (int k = 0; k < 9; k++)
			raw_bytes(m, false, ct, big, 256);
		end(m, n);
		cr_assert_eq(parse_resp(m, n, P, &resp), 0);
		cr_assert_eq(resp.n_cookies, 8);
		cr_assert_eq(resp.extra_cookies, 2);
		cr_assert_eq(resp.cookies[7].len, 256);
		free(m);

		m = success_prefix(n);
		add(m, n, KE_RECORD_SERVER, "6120620a");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* server name with space and newline */

		m = success_prefix(n);
		add(m, n, KE_RECORD_SERVER, "");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		add(m, n, KE_RECORD_PORT, "01");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		add(m, n, KE_RECORD_PORT, "1000");
		add(m, n, KE_RECORD_PORT, "1000");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		add(m, n, KE_RECORD_FIXED_KEY, "0000");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		add(m, n, KE_RECORD_KEEP_ALIVE, "00");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		add(m, n, KE_RECORD_SUPPORTED_ALGORITHMS, "000f00");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = success_prefix(n);
		expect_resp(m, n, P, -EBADMSG); /* no End */

		m = success_prefix(n);
		end(m, n);
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* after End */

		m = mb_new();
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
		add(m, n, KE_RECORD_AEAD, "000f");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* success without a cookie */

		m = mb_new();
		add(m, n, KE_RECORD_NEXT_PROTOCOL, "0000");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* NTPv4 without AEAD record */

		m = mb_new();
		add(m, n, KE_RECORD_AEAD, "000f");
		add(m, n, KE_RECORD_NEW_COOKIE, "01");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* no Next Protocol */

		m = success_prefix(n);
		end(m, n);
		expect_resp(m, n, KE_MSG_REQUEST_SUPPORT, -EBADMSG);

		m = mb_new();
		for (int k = 0; k < 9; k++)
			add(m, n, KE_RECORD_WARNING, "0005");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG); /* too many warnings */

		m = mb_new();
		add(m, n, KE_RECORD_ERROR, "0001");
		add(m, n, KE_RECORD_ERROR, "0001");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = mb_new();
		add(m, n, KE_RECORD_ERROR, "000100");
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);
	}
}

Test(ke_msg, response_size_cap)
{
	static uint8_t buf[KE_MSG_RESPONSE_MAX + 1];
	struct ke_msg_response resp;
	cr_assert_eq(ke_msg_parse_response(buf, sizeof buf, IANA, KE_MSG_REQUEST_PLAIN, &resp),
		     -EMSGSIZE);
}

/* ---- builders ----------------------------------------------------------------------------- */

Test(ke_msg, success_layout)
{
	struct ke_msg_cookie cookies[2] = { { 4, { 1, 2, 3, 4 } }, { 1, { 0xaa } } };
	struct ke_msg_success s = {
		.protocol = 0,
		.aead = 15,
		.cookies = cookies,
		.n_cookies = 2,
		.port = 4123,
		.server = "ntp.test",
		.keep_alive = true,
	};
	uint8_t out[256];
	int len = ke_msg_build_success(out, sizeof out, IANA, &s);
	assert_bytes(out, len,
		     "800100020000"
		     "80040002000f"
		     "0005000401020304"
		     "00050001aa"
		     "80070002101b"
		     "800600086e74702e74657374"
		     "00080000"
		     "80000000");
	len = ke_msg_build_success(out, sizeof out, NTPDRS, &s);
	cr_assert_eq(out[len - 8], 0x40, "ntpd-rs-v1 Keep Alive is 0x4000");
	cr_assert_eq(out[len - 7], 0x00);

	s.port = 123;
	s.server = NULL;
	s.keep_alive = false;
	len = ke_msg_build_success(out, sizeof out, IANA, &s);
	assert_bytes(out, len,
		     "800100020000"
		     "80040002000f"
		     "0005000401020304"
		     "00050001aa"
		     "80000000");
	struct ke_msg_response resp;
	cr_assert_eq(ke_msg_parse_response(out, (size_t)len, IANA, KE_MSG_REQUEST_PLAIN, &resp), 0);
	cr_assert_not(resp.has_port);

	for (size_t cap = 0; cap < (size_t)len; cap++)
		cr_assert_eq(ke_msg_build_success(out, cap, IANA, &s), -EMSGSIZE);

	s.n_cookies = 0;
	cr_assert_eq(ke_msg_build_success(out, sizeof out, IANA, &s), -EINVAL);
	s.n_cookies = 9;
	cr_assert_eq(ke_msg_build_success(out, sizeof out, IANA, &s), -EINVAL);
	s.n_cookies = 1;
	s.server = "bad name";
	cr_assert_eq(ke_msg_build_success(out, sizeof out, IANA, &s), -EINVAL);
}

Test(ke_msg, no_overlap_layouts)
{
	uint8_t out[32];
	struct ke_msg_response resp;
	for (size_t i = 0; i < 2; i++) {
		int len = ke_msg_build_no_overlap(out, sizeof out, numberings[i], false, 0);
		assert_bytes(out, len, "8001000080000000");
		cr_assert_eq(ke_msg_parse_response(out, (size_t)len, numberings[i],
						   KE_MSG_REQUEST_PLAIN, &resp),
			     0);
		cr_assert(resp.has_protocol_record);
		cr_assert_not(resp.has_protocol);

		len = ke_msg_build_no_overlap(out, sizeof out, numberings[i], true, 0);
		assert_bytes(out, len, "80010002000080040000" "80000000");
		cr_assert_eq(ke_msg_parse_response(out, (size_t)len, numberings[i],
						   KE_MSG_REQUEST_FIXED_KEY, &resp),
			     0);
		cr_assert(resp.has_protocol);
		cr_assert(resp.has_aead_record);
		cr_assert_not(resp.has_aead);
	}
}

Test(ke_msg, fixed_key_request_layout)
{
	uint8_t c2s[32], s2c[32];
	memset(c2s, 0x11, sizeof c2s);
	memset(s2c, 0x22, sizeof s2c);
	uint8_t out[128];
	int len = ke_msg_build_fixed_key_request(out, sizeof out, IANA, c2s, s2c, 32, 0, 15, true);
	cr_assert_eq(len, 4 + 64 + 6 + 6 + 4 + 4);
	assert_bytes(out, 4, "800c0040");
	cr_assert_eq(out[4], 0x11);
	cr_assert_eq(out[35], 0x11);
	cr_assert_eq(out[36], 0x22);
	cr_assert_eq(out[67], 0x22);
	assert_bytes(out + 68, len - 68, "80010002000080040002000f0008000080000000");
	len = ke_msg_build_fixed_key_request(out, sizeof out, NTPDRS, c2s, s2c, 32, 0, 15, false);
	assert_bytes(out, 4, "c0020040");
	assert_bytes(out + 68, len - 68, "80010002000080040002000f80000000");
	cr_assert_eq(ke_msg_build_fixed_key_request(out, sizeof out, IANA, c2s, s2c, 32, 0, 17,
						    false),
		     -EINVAL);
	cr_assert_eq(ke_msg_build_fixed_key_request(out, 50, IANA, c2s, s2c, 32, 0, 15, false),
		     -EMSGSIZE);
}

Test(ke_msg, request_builder_refusals)
{
	uint8_t out[64];
	static const uint16_t p0 = 0, a = 15;
	const char *bad[] = { "a b" };
	cr_assert_eq(ke_msg_build_request(out, sizeof out, IANA, &p0, 1, NULL, 0, NULL, 0),
		     -EINVAL, "NTPv4 needs an AEAD");
	cr_assert_eq(ke_msg_build_request(out, sizeof out, IANA, NULL, 0, &a, 1, NULL, 0),
		     -EINVAL);
	cr_assert_eq(ke_msg_build_request(out, sizeof out, IANA, &p0, 1, &a, 1, bad, 1), -EINVAL);
	cr_assert_eq(ke_msg_build_request(out, 15, IANA, &p0, 1, &a, 1, NULL, 0), -EMSGSIZE);
	cr_assert_eq(ke_msg_build_request(out, 16, IANA, &p0, 1, &a, 1, NULL, 0), 16);
	cr_assert_eq(ke_msg_build_support_request(out, sizeof out, IANA, false, false, true),
		     -EINVAL);
	struct ke_msg_support s = { .protocols = true, .n_protocols = 0 };
	cr_assert_eq(ke_msg_build_support_response(out, sizeof out, NTPDRS, &s), -EINVAL);
	cr_assert_eq(ke_msg_build_error(out, 9, IANA, 1), -EMSGSIZE);
}

/* ---- randomised: generated messages, their truncations and mutations ---------------------- */

enum gen_type {
	GEN_PLAIN,
	GEN_SUPPORT,
	GEN_FIXED,
	GEN_SUCCESS,
	GEN_NO_OVERLAP,
	GEN_ERROR,
	GEN_SUPPORT_RESPONSE,
	GEN_TYPES,
};

/* A message built from random fields, and the fields. */
struct gen {
	enum gen_type type;
	enum ke_numbering n;
	uint8_t buf[8192];
	size_t len;
	uint16_t protocols[KE_MSG_MAX_IDS], aeads[KE_MSG_MAX_IDS];
	size_t n_protocols, n_aeads;
	char names[KE_MSG_MAX_DENY][201];
	size_t n_names;
	bool want_protocols, want_algorithms, keep_alive, has_protocol;
	uint8_t c2s[64], s2c[64];
	size_t key_len;
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	size_t n_cookies;
	uint16_t port, code;
	char server[KE_MSG_NAME_MAX + 1];
	bool has_server;
	struct ke_msg_algorithm algs[KE_MSG_MAX_IDS];
	size_t n_algs;
};

static void random_name(struct tu_rng *rng, char *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (char)(0x21 + tu_rng_below(rng, 94));
	out[len] = '\0';
}

static uint16_t random_id(struct tu_rng *rng)
{
	switch (tu_rng_below(rng, 4)) {
	case 0:
		return 15;
	case 1:
		return 17;
	case 2:
		return 0;
	default:
		return (uint16_t)tu_rng_next(rng);
	}
}

static void gen_ids(struct tu_rng *rng, uint16_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ids[i] = random_id(rng);
}

static bool has_ntpv4(const uint16_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == 0)
			return true;
	return false;
}

static void generate(struct tu_rng *rng, struct gen *g, enum gen_type type)
{
	memset(g, 0, sizeof *g);
	g->type = type;
	g->n = numberings[tu_rng_below(rng, 2)];
	int len = 0;
	switch (type) {
	case GEN_PLAIN: {
		g->n_protocols = 1 + tu_rng_below(rng, KE_MSG_MAX_IDS);
		gen_ids(rng, g->protocols, g->n_protocols);
		bool need = has_ntpv4(g->protocols, g->n_protocols);
		g->n_aeads = tu_rng_below(rng, KE_MSG_MAX_IDS + 1);
		if (need && g->n_aeads == 0)
			g->n_aeads = 1;
		gen_ids(rng, g->aeads, g->n_aeads);
		g->n_names = tu_rng_below(rng, KE_MSG_MAX_DENY + 1);
		const char *deny[KE_MSG_MAX_DENY];
		for (size_t i = 0; i < g->n_names; i++) {
			random_name(rng, g->names[i], 2 + tu_rng_below(rng, 199));
			/* A distinct two-digit prefix keeps the names distinct in any case. */
			g->names[i][0] = (char)('0' + i / 10);
			g->names[i][1] = (char)('0' + i % 10);
			deny[i] = g->names[i];
		}
		len = ke_msg_build_request(g->buf, sizeof g->buf, g->n, g->protocols,
					   g->n_protocols, g->aeads, g->n_aeads, deny, g->n_names);
		break;
	}
	case GEN_SUPPORT:
		g->want_protocols = g->n == IANA && tu_rng_below(rng, 2);
		g->want_algorithms = !g->want_protocols || tu_rng_below(rng, 2);
		g->keep_alive = tu_rng_below(rng, 2);
		len = ke_msg_build_support_request(g->buf, sizeof g->buf, g->n, g->want_protocols,
						   g->want_algorithms, g->keep_alive);
		break;
	case GEN_FIXED:
		g->n_protocols = g->n_aeads = 1;
		g->protocols[0] = tu_rng_below(rng, 2) ? 0 : (uint16_t)tu_rng_next(rng);
		g->aeads[0] = tu_rng_below(rng, 2) ? 15 : 17;
		g->key_len = ke_msg_aead_key_len(g->aeads[0]);
		tu_rng_fill(rng, g->c2s, g->key_len);
		tu_rng_fill(rng, g->s2c, g->key_len);
		g->keep_alive = tu_rng_below(rng, 2);
		len = ke_msg_build_fixed_key_request(g->buf, sizeof g->buf, g->n, g->c2s, g->s2c,
						     g->key_len, g->protocols[0], g->aeads[0],
						     g->keep_alive);
		break;
	case GEN_SUCCESS: {
		g->protocols[0] = tu_rng_below(rng, 4) ? 0 : random_id(rng);
		g->aeads[0] = random_id(rng);
		g->n_cookies = 1 + tu_rng_below(rng, KE_MSG_MAX_COOKIES);
		for (size_t i = 0; i < g->n_cookies; i++) {
			g->cookies[i].len = 1 + tu_rng_below(rng, KE_MSG_COOKIE_MAX);
			tu_rng_fill(rng, g->cookies[i].data, g->cookies[i].len);
		}
		uint32_t p = tu_rng_below(rng, 3);
		g->port = p == 0 ? 0 : p == 1 ? 123 : (uint16_t)tu_rng_next(rng);
		g->has_server = tu_rng_below(rng, 2);
		if (g->has_server)
			random_name(rng, g->server, 1 + tu_rng_below(rng, KE_MSG_NAME_MAX));
		g->keep_alive = tu_rng_below(rng, 2);
		struct ke_msg_success s = {
			.protocol = g->protocols[0],
			.aead = g->aeads[0],
			.cookies = g->cookies,
			.n_cookies = g->n_cookies,
			.port = g->port,
			.server = g->has_server ? g->server : NULL,
			.keep_alive = g->keep_alive,
		};
		len = ke_msg_build_success(g->buf, sizeof g->buf, g->n, &s);
		break;
	}
	case GEN_NO_OVERLAP:
		g->has_protocol = tu_rng_below(rng, 2);
		g->protocols[0] = random_id(rng);
		len = ke_msg_build_no_overlap(g->buf, sizeof g->buf, g->n, g->has_protocol,
					      g->protocols[0]);
		break;
	case GEN_ERROR:
		g->code = (uint16_t)tu_rng_below(rng, 4);
		len = ke_msg_build_error(g->buf, sizeof g->buf, g->n, g->code);
		break;
	case GEN_SUPPORT_RESPONSE: {
		g->want_protocols = g->n == IANA && tu_rng_below(rng, 2);
		g->want_algorithms = tu_rng_below(rng, 2);
		g->n_protocols = tu_rng_below(rng, KE_MSG_MAX_IDS + 1);
		gen_ids(rng, g->protocols, g->n_protocols);
		g->n_algs = tu_rng_below(rng, KE_MSG_MAX_IDS + 1);
		for (size_t i = 0; i < g->n_algs; i++) {
			g->algs[i].id = random_id(rng);
			g->algs[i].key_len = (uint16_t)tu_rng_next(rng);
		}
		g->keep_alive = tu_rng_below(rng, 2);
		struct ke_msg_support s = {
			.protocols = g->want_protocols,
			.protocol_ids = g->protocols,
			.n_protocols = g->n_protocols,
			.algorithms = g->want_algorithms,
			.algs = g->algs,
			.n_algs = g->n_algs,
			.keep_alive = g->keep_alive,
		};
		len = ke_msg_build_support_response(g->buf, sizeof g->buf, g->n, &s);
		break;
	}
	case GEN_TYPES:
		cr_assert_fail();
	}
	cr_assert_gt(len, 0, "type %d: %d", type, len);
	g->len = (size_t)len;
}

static bool is_request(enum gen_type t)
{
	return t == GEN_PLAIN || t == GEN_SUPPORT || t == GEN_FIXED;
}

static void check_request(const struct gen *g, const struct ke_msg_request *req)
{
	cr_assert_eq(req->keep_alive, g->keep_alive);
	cr_assert_eq(req->ignored, 0);
	switch (g->type) {
	case GEN_PLAIN:
		cr_assert_eq(req->kind, KE_MSG_REQUEST_PLAIN);
		cr_assert_eq(req->n_protocols, g->n_protocols);
		cr_assert_eq(memcmp(req->protocols, g->protocols, 2 * g->n_protocols), 0);
		cr_assert_eq(req->n_aeads, g->n_aeads);
		cr_assert_eq(memcmp(req->aeads, g->aeads, 2 * g->n_aeads), 0);
		cr_assert_eq(req->n_deny, g->n_names);
		for (size_t i = 0; i < g->n_names; i++)
			cr_assert_str_eq(req->deny[i].name, g->names[i]);
		break;
	case GEN_SUPPORT:
		cr_assert_eq(req->kind, KE_MSG_REQUEST_SUPPORT);
		cr_assert_eq(req->want_protocols, g->want_protocols);
		cr_assert_eq(req->want_algorithms, g->want_algorithms);
		break;
	case GEN_FIXED:
		cr_assert_eq(req->kind, KE_MSG_REQUEST_FIXED_KEY);
		cr_assert_eq(req->protocols[0], g->protocols[0]);
		cr_assert_eq(req->aeads[0], g->aeads[0]);
		cr_assert_eq(req->fixed_key_len, g->key_len);
		cr_assert_eq(memcmp(req->fixed_c2s, g->c2s, g->key_len), 0);
		cr_assert_eq(memcmp(req->fixed_s2c, g->s2c, g->key_len), 0);
		break;
	default:
		cr_assert_fail();
	}
}

static void check_response(const struct gen *g, int rc, const struct ke_msg_response *r)
{
	switch (g->type) {
	case GEN_SUCCESS:
		cr_assert_eq(rc, 0);
		cr_assert(r->has_protocol);
		cr_assert_eq(r->protocol, g->protocols[0]);
		cr_assert(r->has_aead);
		cr_assert_eq(r->aead, g->aeads[0]);
		cr_assert_eq(r->n_cookies, g->n_cookies);
		for (size_t i = 0; i < g->n_cookies; i++) {
			cr_assert_eq(r->cookies[i].len, g->cookies[i].len);
			cr_assert_eq(memcmp(r->cookies[i].data, g->cookies[i].data,
					    g->cookies[i].len),
				     0);
		}
		cr_assert_eq(r->has_port, g->port != 0 && g->port != 123);
		if (r->has_port)
			cr_assert_eq(r->port, g->port);
		cr_assert_eq(r->has_server, g->has_server);
		if (g->has_server)
			cr_assert_str_eq(r->server.name, g->server);
		cr_assert_eq(r->keep_alive, g->keep_alive);
		break;
	case GEN_NO_OVERLAP:
		cr_assert_eq(rc, 0);
		cr_assert(r->has_protocol_record);
		cr_assert_eq(r->has_protocol, g->has_protocol);
		cr_assert_eq(r->has_aead_record, g->has_protocol);
		cr_assert_not(r->has_aead);
		if (g->has_protocol)
			cr_assert_eq(r->protocol, g->protocols[0]);
		break;
	case GEN_ERROR:
		cr_assert_eq(rc, -EREMOTEIO);
		cr_assert(r->has_error);
		cr_assert_eq(r->error, g->code);
		break;
	case GEN_SUPPORT_RESPONSE:
		cr_assert_eq(rc, 0);
		cr_assert_eq(r->has_supported_protocols, g->want_protocols);
		cr_assert_eq(r->has_supported_algorithms, g->want_algorithms);
		if (g->want_protocols) {
			cr_assert_eq(r->n_supported_protocols, g->n_protocols);
			cr_assert_eq(memcmp(r->supported_protocols, g->protocols,
					    2 * g->n_protocols),
				     0);
		}
		if (g->want_algorithms) {
			cr_assert_eq(r->n_supported_algorithms, g->n_algs);
			for (size_t i = 0; i < g->n_algs; i++) {
				cr_assert_eq(r->supported_algorithms[i].id, g->algs[i].id);
				cr_assert_eq(r->supported_algorithms[i].key_len,
					     g->algs[i].key_len);
			}
		}
		cr_assert_eq(r->keep_alive, g->keep_alive);
		break;
	default:
		cr_assert_fail();
	}
}

static enum ke_msg_request_kind asked_for(const struct gen *g)
{
	if (g->type == GEN_SUPPORT_RESPONSE)
		return KE_MSG_REQUEST_SUPPORT;
	return g->type == GEN_NO_OVERLAP ? KE_MSG_REQUEST_FIXED_KEY : KE_MSG_REQUEST_PLAIN;
}

Test(ke_msg, random_round_trips)
{
	static struct gen g;
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x726f756e64747269ull);
	for (int iter = 0; iter < 10000; iter++) {
		generate(&rng, &g, (enum gen_type)(iter % GEN_TYPES));
		uint8_t *p = exact(g.buf, g.len);
		size_t cap = is_request(g.type) ? KE_MSG_REQUEST_MAX : KE_MSG_RESPONSE_MAX;
		cr_assert_eq(ke_msg_frame(p, g.len, cap), (int)g.len);
		if (is_request(g.type)) {
			struct ke_msg_request req;
			struct ke_msg_reject rej = { 0, "" };
			int rc = ke_msg_parse_request(p, g.len, g.n, true, &req, &rej);
			cr_assert_eq(rc, 0, "type %d: Error %u %s", g.type, rej.code, rej.reason);
			check_request(&g, &req);
		} else {
			struct ke_msg_response resp;
			int rc = ke_msg_parse_response(p, g.len, g.n, asked_for(&g), &resp);
			check_response(&g, rc, &resp);
		}
		free(p);
	}
}

/* Runs every parser over buf[0, len) and checks what a success promises. Returns how many
 * parses accepted the bytes. */
static unsigned parse_everything(const uint8_t *buf, size_t len)
{
	unsigned accepted = 0;
	uint8_t *p = exact(buf, len);
	int fr = ke_msg_frame(p, len, KE_MSG_REQUEST_MAX);
	cr_assert(fr == 0 || fr == -EMSGSIZE || fr == -EBADMSG || (fr > 0 && (size_t)fr <= len));
	int fs = ke_msg_frame(p, len, KE_MSG_RESPONSE_MAX);
	cr_assert(fs == 0 || fs == -EBADMSG || (fs > 0 && (size_t)fs <= len));
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		for (int auth = 0; auth < 2; auth++) {
			struct ke_msg_request req;
			struct ke_msg_reject rej = { 0xffff, NULL };
			int rc = ke_msg_parse_request(p, len, n, auth, &req, &rej);
			if (rc < 0) {
				cr_assert_eq(rc, -EPROTO);
				cr_assert(rej.code <= 1 && rej.reason);
				cr_assert_eq(req.fixed_key_len, 0);
				continue;
			}
			accepted++;
			cr_assert_eq(fr, (int)len, "a valid request frames whole");
			cr_assert(req.n_protocols <= KE_MSG_MAX_IDS);
			cr_assert(req.n_aeads <= KE_MSG_MAX_IDS);
			cr_assert(req.n_deny <= KE_MSG_MAX_DENY);
			for (size_t d = 0; d < req.n_deny; d++)
				cr_assert_eq(strlen(req.deny[d].name), req.deny[d].len);
			if (req.kind == KE_MSG_REQUEST_FIXED_KEY)
				cr_assert_eq(req.fixed_key_len, ke_msg_aead_key_len(req.aeads[0]));
			if (!auth) {
				cr_assert_eq(req.kind, KE_MSG_REQUEST_PLAIN);
				cr_assert_not(req.keep_alive);
			}
		}
		for (int asked = 0; asked < 3; asked++) {
			struct ke_msg_response r;
			int rc = ke_msg_parse_response(p, len, n, (enum ke_msg_request_kind)asked,
						       &r);
			cr_assert(rc == 0 || rc == -EREMOTEIO || rc == -EPROTO || rc == -EBADMSG);
			if (rc != 0 && rc != -EREMOTEIO)
				continue;
			accepted++;
			cr_assert_eq(fs, (int)len, "a valid response frames whole");
			cr_assert(r.n_cookies <= KE_MSG_MAX_COOKIES);
			for (size_t c = 0; c < r.n_cookies; c++)
				cr_assert(r.cookies[c].len >= 1 &&
					  r.cookies[c].len <= KE_MSG_COOKIE_MAX);
			if (r.has_server)
				cr_assert_eq(strlen(r.server.name), r.server.len);
			cr_assert(r.n_warnings <= KE_MSG_MAX_WARNINGS);
			cr_assert(rc == 0 || r.has_error || r.n_warnings > 0);
		}
	}
	free(p);
	return accepted;
}

/* Every proper prefix of a valid message: framing wants more, every parser refuses. */
static void check_truncations(const uint8_t *buf, size_t len)
{
	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *p = exact(buf, cut);
		cr_assert_eq(ke_msg_frame(p, cut, KE_MSG_REQUEST_MAX > len ? KE_MSG_REQUEST_MAX
									   : KE_MSG_RESPONSE_MAX),
			     0, "prefix %zu of %zu", cut, len);
		for (size_t i = 0; i < 2; i++) {
			for (int auth = 0; auth < 2; auth++) {
				struct ke_msg_request req;
				struct ke_msg_reject rej;
				cr_assert_eq(ke_msg_parse_request(p, cut, numberings[i], auth, &req,
								  &rej),
					     -EPROTO);
			}
			for (int asked = 0; asked < 3; asked++) {
				struct ke_msg_response r;
				int rc = ke_msg_parse_response(p, cut, numberings[i],
							       (enum ke_msg_request_kind)asked, &r);
				cr_assert(rc == -EBADMSG || rc == -EPROTO, "prefix %zu: %d", cut,
					  rc);
			}
		}
		free(p);
	}
}

Test(ke_msg, every_truncation_of_every_valid_message_is_rejected)
{
	static const char *const names[] = {
		"client_request", "client_request_deny_iana", "error_2",
		"support_request_iana", "support_response_iana", "support_request_ntpdrs",
	};
	for (size_t v = 0; v < sizeof names / sizeof names[0]; v++) {
		size_t len;
		uint8_t *buf = vec(names[v], &len);
		check_truncations(buf, len);
		free(buf);
	}
	uint8_t big[1024];
	check_truncations(big, build_1024(big));

	static struct gen g;
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x7472756e63617465ull);
	for (int t = 0; t < GEN_TYPES; t++)
		for (int k = 0; k < 3; k++) {
			generate(&rng, &g, (enum gen_type)t);
			check_truncations(g.buf, g.len);
		}
}

Test(ke_msg, random_mutations_never_crash)
{
	static struct gen g;
	static uint8_t buf[sizeof g.buf + 8];
	struct tu_rng rng;
	unsigned accepted = 0;
	tu_rng_seed(&rng, 0x6d75746174696f6eull);
	for (int iter = 0; iter < 10000; iter++) {
		generate(&rng, &g, (enum gen_type)tu_rng_below(&rng, GEN_TYPES));
		size_t len = g.len;
		memcpy(buf, g.buf, len);
		uint32_t ops = 1 + tu_rng_below(&rng, 4);
		for (uint32_t o = 0; o < ops; o++) {
			size_t at = tu_rng_below(&rng, (uint32_t)len + 1);
			switch (tu_rng_below(&rng, 3)) {
			case 0:
				if (at < len)
					buf[at] ^= (uint8_t)(1u << tu_rng_below(&rng, 8));
				break;
			case 1:
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = (uint8_t)tu_rng_next(&rng);
				len++;
				break;
			default:
				if (at < len) {
					memmove(buf + at, buf + at + 1, len - at - 1);
					len--;
				}
				break;
			}
		}
		accepted += parse_everything(buf, len);
	}
	/* Mutations that keep a message valid (a flipped cookie byte) reach the success paths. */
	cr_assert_gt(accepted, 1000, "only %u accepting parses", accepted);
}
