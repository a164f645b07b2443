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

/* Short record names for msg(). */
static const struct {
	const char *name;
	enum ke_record_kind kind;
} spec_kinds[] = {
	{ "end", KE_RECORD_END },	{ "np", KE_RECORD_NEXT_PROTOCOL },
	{ "err", KE_RECORD_ERROR },	{ "warn", KE_RECORD_WARNING },
	{ "aead", KE_RECORD_AEAD },	{ "cookie", KE_RECORD_NEW_COOKIE },
	{ "server", KE_RECORD_SERVER }, { "port", KE_RECORD_PORT },
	{ "ka", KE_RECORD_KEEP_ALIVE }, { "sp", KE_RECORD_SUPPORTED_PROTOCOLS },
	{ "fk", KE_RECORD_FIXED_KEY },	{ "sa", KE_RECORD_SUPPORTED_ALGORITHMS },
	{ "deny", KE_RECORD_SERVER_DENY },
};

/* Appends the records of spec to m and returns m. spec: space-separated "kind" or
 * "kind:hexbody" with the names above (sent with our C bit), or "=TTTT:hexbody" for a raw
 * header type TTTT in hex, C bit included. E.g. "np:0000 aead:000f =8064: end". One line per
 * message keeps the many rule tests below readable side by side. */
static struct mb *more(struct mb *m, enum ke_numbering n, const char *spec)
{
	char copy[1024], *save = NULL;
	cr_assert_lt(strlen(spec), sizeof copy);
	strcpy(copy, spec);
	for (char *it = strtok_r(copy, " ", &save); it; it = strtok_r(NULL, " ", &save)) {
		char *colon = strchr(it, ':');
		const char *hex = colon ? colon + 1 : "";
		if (colon)
			*colon = '\0';
		if (it[0] == '=') {
			unsigned long t = strtoul(it + 1, NULL, 16);
			raw(m, t & KE_RECORD_CRITICAL, (uint16_t)(t & KE_RECORD_TYPE_MASK), hex);
			continue;
		}
		size_t k = 0;
		const size_t kinds = sizeof spec_kinds / sizeof spec_kinds[0];
		while (k < kinds && strcmp(spec_kinds[k].name, it) != 0)
			k++;
		cr_assert_lt(k, kinds, "no record kind %s", it);
		add(m, n, spec_kinds[k].kind, hex);
	}
	return m;
}

static struct mb *msg(enum ke_numbering n, const char *spec)
{
	return more(mb_new(), n, spec);
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

static int parse_req(const struct mb *m, enum ke_numbering n, struct ke_msg_request *req,
		     struct ke_msg_reject *rej)
{
	uint8_t *p = exact(m->buf, mb_len(m));
	int rc = ke_msg_parse_request(p, mb_len(m), n, req, rej);
	free(p);
	return rc;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* "On failure *req holds no key material and no token." */
static void assert_no_secret(const struct ke_msg_request *req)
{
	cr_assert_eq(req->fixed_key_len, 0);
	cr_assert(all_zero(req->fixed_c2s, sizeof req->fixed_c2s));
	cr_assert(all_zero(req->fixed_s2c, sizeof req->fixed_s2c));
	cr_assert_not(req->has_token);
	cr_assert_eq(req->token_len, 0);
	cr_assert(all_zero(req->token, sizeof req->token));
}

static void expect_code(struct mb *m, enum ke_numbering n, uint16_t code)
{
	struct ke_msg_request req;
	struct ke_msg_reject rej = { 0xffff, NULL };
	int rc = parse_req(m, n, &req, &rej);
	cr_assert_eq(rc, -EPROTO, "expected Error %u, request accepted", code);
	cr_assert_eq(rej.code, code, "expected Error %u, got %u (%s)", code, rej.code, rej.reason);
	cr_assert_not_null(rej.reason);
	assert_no_secret(&req);
	free(m);
}

static void expect_ok(struct mb *m, enum ke_numbering n, struct ke_msg_request *req)
{
	struct ke_msg_reject rej = { 0, NULL };
	int rc = parse_req(m, n, req, &rej);
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
	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, &req, &rej), 0);
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
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, &req, &rej), 0);
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

	/* Deny is 0x4003 in ntpd-rs-v1: type 13 with C=0 is an unknown record there, skipped. */
	cr_assert_eq(ke_msg_parse_request(buf, len, NTPDRS, &req, &rej), 0);
	cr_assert_eq(req.n_deny, 0);
	cr_assert_eq(req.ignored, 1);
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
		cr_assert_eq(ke_msg_parse_request(buf, len, numberings[i], &req, &rej), 0);
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
		int rc = ke_msg_parse_request(buf, total, IANA, &req, &rej);
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
		expect_code(msg(n, "np:0000 aead:000f =8064: end"), n, 0);
		/* A repeated Next Protocol is Error 1 on its own. */
		expect_code(msg(n, "np:0000 aead:000f np:0000 =800b: end"), n, 0);
	}
}

Test(ke_msg, unknown_noncritical_is_ignored)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct ke_msg_request req;
		expect_ok(msg(n, "np:0000 aead:000f =0064:0102 =0400: end"), n, &req);
		cr_assert_eq(req.ignored, 2);
	}
}

/* The parse no longer depends on the peer: pool shapes come out as what they are, and
 * pool_proto alone decides who may send them (test_pool_proto.c). */
Test(ke_msg, pool_records_parse_alike_for_every_peer)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		uint8_t key[32];
		memset(key, 0x33, sizeof key);
		uint8_t buf[256];
		int len = ke_msg_build_fixed_key_request(buf, sizeof buf, n, NULL, key, key, 32, 0,
							 15, false);
		cr_assert_gt(len, 0);
		struct ke_msg_request req;
		struct ke_msg_reject rej;
		cr_assert_eq(ke_msg_parse_request(buf, (size_t)len, n, &req, &rej), 0);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_FIXED_KEY);
		cr_assert_eq(req.fixed_key_len, 32);
		cr_assert_eq(req.fixed_s2c[31], 0x33);

		expect_ok(msg(n, "sa end"), n, &req);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_SUPPORT);
		cr_assert(req.want_algorithms && !req.want_protocols);
		expect_ok(msg(n, "sp end"), n, &req);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_SUPPORT);
		cr_assert(req.want_protocols && !req.want_algorithms);

		/* NTP Server Deny is parsed from anyone: the broker serves ordinary clients. */
		expect_ok(msg(n, "np:0000 aead:000f deny:782e79 end"), n, &req);
		cr_assert_eq(req.n_deny, 1);
		cr_assert_str_eq(req.deny[0].name, "x.y");
	}
}

Test(ke_msg, keep_alive_on_plain_request_is_parsed)
{
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct ke_msg_request req;
		expect_ok(msg(n, "np:0000 aead:000f ka end"), n, &req);
		cr_assert(req.keep_alive);
		cr_assert_eq(req.ignored, 0);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_PLAIN);
		expect_code(msg(n, "np:0000 aead:000f ka:00 end"), n, 1);
		expect_code(msg(n, "np:0000 aead:000f ka ka end"), n, 1);
	}
}

Test(ke_msg, server_records_from_a_client_are_error_1)
{
	static const char *const bad[] = {
		"np:0000 aead:000f err:0000 end",
		"np:0000 aead:000f warn:0000 end",
		"np:0000 aead:000f cookie:0102030405060708 end",
	};
	for (size_t i = 0; i < 2; i++)
		for (size_t k = 0; k < 3; k++)
			expect_code(msg(numberings[i], bad[k]), numberings[i], 1);
}

Test(ke_msg, next_protocol_rules)
{
	expect_code(msg(IANA, "aead:000f end"), IANA, 1);		  /* missing */
	expect_code(msg(IANA, "np:0000 aead:000f np:0000 end"), IANA, 1); /* duplicate */
	expect_code(msg(IANA, "np: aead:000f end"), IANA, 1);		  /* empty */
	expect_code(msg(IANA, "np:000000 aead:000f end"), IANA, 1);	  /* odd */

	/* Next Protocol with C=0 is still Next Protocol. */
	struct ke_msg_request req;
	expect_ok(msg(IANA, "=0001:0000 aead:000f end"), IANA, &req);
	cr_assert_eq(req.n_protocols, 1);
}

Test(ke_msg, aead_rules)
{
	expect_code(msg(NTPDRS, "np:0000 aead:000f aead:0011 end"), NTPDRS, 1); /* duplicate */
	expect_code(msg(IANA, "np:00050000 end"), IANA, 1); /* NTPv4 offered without AEAD */
	expect_code(msg(IANA, "np:0000 aead: end"), IANA, 1);	    /* empty AEAD */
	expect_code(msg(IANA, "np:0000 aead:000f00 end"), IANA, 1); /* odd */

	/* A protocol other than NTPv4 needs no AEAD; the server answers no overlap. */
	struct ke_msg_request req;
	expect_ok(msg(IANA, "np:0005 end"), IANA, &req);
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
			expect_ok(m, IANA, &req);
			cr_assert_eq(req.n_aeads, 64);
		} else {
			expect_code(m, IANA, 1);
		}
		m = mb_new();
		add(m, IANA, KE_RECORD_NEXT_PROTOCOL, hex);
		end(m, IANA);
		if (count == 64)
			free(m);
		else
			expect_code(m, IANA, 1);
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
		expect_ok(m, n, &req);
		cr_assert_eq(req.n_deny, 16);
		cr_assert(ke_msg_request_denies(&req, "s15.test"));

		m = plain(n);
		for (int k = 0; k < 17; k++) {
			char name[16];
			snprintf(name, sizeof name, "s%d.test", k);
			raw_bytes(m, false, t, name, strlen(name));
		}
		end(m, n);
		expect_code(m, n, 1);

		char longname[256];
		memset(longname, 'a', sizeof longname);
		m = plain(n);
		raw_bytes(m, false, t, longname, 255);
		end(m, n);
		expect_ok(m, n, &req);
		cr_assert_eq(req.deny[0].len, 255);
		cr_assert_eq(strlen(req.deny[0].name), 255);

		m = plain(n);
		raw_bytes(m, false, t, longname, 256);
		end(m, n);
		expect_code(m, n, 1);

		/* "", "a b", "a\tb", "a\x7f", "\xc3\xa9" (UTF-8), "a\0b" */
		static const char *const badnames[] = {
			"deny: end",	 "deny:612062 end", "deny:610962 end",
			"deny:617f end", "deny:c3a9 end",   "deny:610062 end",
		};
		for (size_t b = 0; b < sizeof badnames / sizeof badnames[0]; b++)
			expect_code(more(plain(n), n, badnames[b]), n, 1);
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

		expect_ok(more(fixed_req(n, 128, "0000", "0011"), n, "ka end"), n, &req);
		cr_assert_eq(req.kind, KE_MSG_REQUEST_FIXED_KEY);
		cr_assert_eq(req.fixed_key_len, 64);
		cr_assert_eq(req.fixed_c2s[0], 0x5a);
		cr_assert_eq(req.fixed_s2c[63], 0x5a);
		cr_assert(req.keep_alive);
		ke_msg_request_wipe(&req);
		cr_assert_eq(req.fixed_key_len, 0);
		cr_assert_eq(req.fixed_c2s[0], 0);

		expect_ok(more(fixed_req(n, 64, "0000", "000f"), n, "end"), n, &req);
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
		for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
			expect_code(more(fixed_req(n, bad[b].body, bad[b].protocols, bad[b].aeads),
					 n, "end"),
				    n, 1);
		/* mixed with a Supported list */
		expect_code(more(fixed_req(n, 64, "0000", "000f"), n, "sa end"), n, 1);

		struct mb *m = fixed_req(n, 64, "0000", "000f");
		raw_bytes(m, true, wire_type(n, KE_RECORD_FIXED_KEY) & KE_RECORD_TYPE_MASK,
			  m->buf + 4, 64);
		end(m, n);
		expect_code(m, n, 1); /* repeated */
	}
}

Test(ke_msg, support_request_shape)
{
	static const char *const bad[] = {
		"sa np:0000 end", "aead:000f sa end", "sa:0000 end", "sa sa end", "sp:00 sa end",
		"sp sp end", "ka end", /* Keep Alive alone is no request */
	};
	for (size_t i = 0; i < 2; i++)
		for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
			expect_code(msg(numberings[i], bad[b]), numberings[i], 1);
	struct ke_msg_request req;
	expect_ok(msg(IANA, "sp end"), IANA, &req);
	cr_assert(req.want_protocols);
	cr_assert_not(req.want_algorithms);
}

Test(ke_msg, message_structure_rules)
{
	static const char *const bad[] = {
		"np:0000 aead:000f",		    /* no End */
		"np:0000 aead:000f end np:0000",    /* record after End */
		"np:0000 aead:000f end =0064:",	    /* even an ignorable one */
		"np:0000 aead:000f end:00",	    /* End with a body */
		"",				    /* empty */
		"np:0000 aead:000f port:007b00 end", /* Port not 2 bytes */
	};
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
			expect_code(msg(n, bad[b]), n, 1);

		struct mb *m = msg(n, "np:0000 aead:000f end");
		m->w.off -= 1; /* End header cut: overrun */
		expect_code(m, n, 1);

		/* Hints a client may add, and a late Authentication record, fail no request. */
		struct ke_msg_request req;
		expect_ok(msg(n, "np:0000 aead:000f port:007b server:6e74702e74657374 "
				 "=000e:746f6b656e end"),
			  n, &req);
		cr_assert_eq(req.ignored, n == IANA ? 0 : 1, "type 14 is unknown in ntpd-rs-v1");
		cr_assert_eq(req.token_misplaced, n == IANA, "a token that is not first");
		cr_assert_not(req.has_token);
	}
}

/* ---- pool requests and the Authentication token (PROTOCOL.md §3.2, §3.3, §3.5) ----------- */

#define TOKEN64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* Every pool request vector, in the numbering its name says (_iana, or ntpd-rs-v1 for _ntpdrs
 * and _experimental). Fixed Key vectors all carry C2S = 32 x 0x11, S2C = 32 x 0x22, NTPv4 and
 * AEAD 15. */
static const struct {
	const char *name;
	enum ke_numbering n;
	const char *token;
	enum ke_msg_request_kind kind;
	bool protocols, algorithms; /* Support: the lists asked for */
	bool keep_alive;
} pool_vectors[] = {
	{ "support_request_iana", IANA, NULL, KE_MSG_REQUEST_SUPPORT, true, true, true },
	{ "support_request_ntpdrs", NTPDRS, NULL, KE_MSG_REQUEST_SUPPORT, false, true, false },
	{ "support_request_token_iana", IANA, TOKEN64, KE_MSG_REQUEST_SUPPORT, true, true, true },
	{ "support_request_token_experimental", NTPDRS, TOKEN64, KE_MSG_REQUEST_SUPPORT, true, true,
	  true },
	{ "fixed_key_request_token_iana", IANA, TOKEN64, KE_MSG_REQUEST_FIXED_KEY, false, false,
	  true },
	{ "fixed_key_request_token_experimental", NTPDRS, TOKEN64, KE_MSG_REQUEST_FIXED_KEY, false,
	  false, true },
};

Test(ke_msg, pool_request_vectors_parse_and_rebuild_exactly)
{
	uint8_t c2s[32], s2c[32];
	memset(c2s, 0x11, sizeof c2s);
	memset(s2c, 0x22, sizeof s2c);
	for (size_t v = 0; v < sizeof pool_vectors / sizeof pool_vectors[0]; v++) {
		const char *name = pool_vectors[v].name;
		enum ke_numbering n = pool_vectors[v].n;
		const char *token = pool_vectors[v].token;
		size_t len;
		uint8_t *buf = vec(name, &len);
		struct ke_msg_request req;
		struct ke_msg_reject rej = { 0xffff, NULL };
		cr_assert_eq(ke_msg_frame(buf, len, KE_MSG_REQUEST_MAX), (int)len, "%s", name);
		cr_assert_eq(ke_msg_parse_request(buf, len, n, &req, &rej), 0, "%s: %s", name,
			     rej.reason);
		cr_assert_eq(req.kind, pool_vectors[v].kind, "%s", name);
		cr_assert_eq(req.keep_alive, pool_vectors[v].keep_alive, "%s", name);
		cr_assert_eq(req.ignored, 0, "%s", name);
		cr_assert_not(req.token_misplaced, "%s", name);
		cr_assert_eq(req.has_token, token != NULL, "%s", name);
		if (token) {
			cr_assert_eq(req.token_len, strlen(token));
			cr_assert_eq(memcmp(req.token, token, req.token_len), 0, "%s", name);
		}
		uint8_t out[256], bare[256];
		int built, untokened;
		if (req.kind == KE_MSG_REQUEST_SUPPORT) {
			cr_assert_eq(req.want_protocols, pool_vectors[v].protocols, "%s", name);
			cr_assert_eq(req.want_algorithms, pool_vectors[v].algorithms, "%s", name);
			cr_assert_eq(req.n_protocols + req.n_aeads + req.fixed_key_len, 0);
			built = ke_msg_build_support_request(out, sizeof out, n, token,
							     pool_vectors[v].protocols,
							     pool_vectors[v].algorithms,
							     pool_vectors[v].keep_alive);
			untokened = ke_msg_build_support_request(bare, sizeof bare, n, NULL,
								 pool_vectors[v].protocols,
								 pool_vectors[v].algorithms,
								 pool_vectors[v].keep_alive);
		} else {
			cr_assert_not(req.want_protocols || req.want_algorithms);
			cr_assert_eq(req.n_protocols, 1);
			cr_assert_eq(req.protocols[0], KE_MSG_PROTOCOL_NTPV4);
			cr_assert_eq(req.n_aeads, 1);
			cr_assert_eq(req.aeads[0], 15);
			cr_assert_eq(req.fixed_key_len, 32);
			cr_assert_eq(memcmp(req.fixed_c2s, c2s, 32), 0, "%s", name);
			cr_assert_eq(memcmp(req.fixed_s2c, s2c, 32), 0, "%s", name);
			built = ke_msg_build_fixed_key_request(out, sizeof out, n, token, c2s, s2c,
							       32, 0, 15,
							       pool_vectors[v].keep_alive);
			untokened = ke_msg_build_fixed_key_request(bare, sizeof bare, n,
								   NULL, c2s, s2c, 32, 0, 15,
								   pool_vectors[v].keep_alive);
		}
		assert_vector(out, built, name);
		/* The token only adds its record in front: the rest is the same request. */
		size_t tok = token ? 4 + strlen(token) : 0;
		cr_assert_eq((size_t)untokened, len - tok, "%s", name);
		cr_assert_eq(memcmp(bare, buf + tok, len - tok), 0, "%s", name);

		/* Never mix numberings: the other one lacks the critical pool records (Error 0),
		 * and the refusal leaves neither the keys nor the token behind. */
		cr_assert_eq(ke_msg_parse_request(buf, len, n == IANA ? NTPDRS : IANA, &req, &rej),
			     -EPROTO, "%s", name);
		cr_assert_eq(rej.code, 0, "%s", name);
		assert_no_secret(&req);
		free(buf);
	}
}

Test(ke_msg, vector_support_response_kelb_test)
{
	size_t len;
	uint8_t *buf = vec("support_response_kelb_test_iana", &len);
	struct ke_msg_response resp;
	cr_assert_eq(ke_msg_frame(buf, len, KE_MSG_RESPONSE_MAX), (int)len);
	cr_assert_eq(ke_msg_parse_response(buf, len, IANA, KE_MSG_REQUEST_SUPPORT, &resp), 0);
	cr_assert(resp.has_supported_protocols);
	cr_assert_eq(resp.n_supported_protocols, 3);
	for (uint16_t i = 0; i < 3; i++)
		cr_assert_eq(resp.supported_protocols[i], i);
	/* Ids and key lengths we do not implement are data here: choosing is the pool's job. */
	cr_assert(resp.has_supported_algorithms);
	cr_assert_eq(resp.n_supported_algorithms, 2);
	cr_assert_eq(resp.supported_algorithms[0].id, 0);
	cr_assert_eq(resp.supported_algorithms[0].key_len, 16);
	cr_assert_eq(resp.supported_algorithms[1].id, 1);
	cr_assert_eq(resp.supported_algorithms[1].key_len, 32);
	cr_assert(resp.keep_alive);
	cr_assert_eq(resp.ignored, 0);
	cr_assert_not(resp.has_protocol_record || resp.has_aead_record || resp.has_error);

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
	assert_vector(out, ke_msg_build_support_response(out, sizeof out, IANA, &s),
		      "support_response_kelb_test_iana");
	cr_assert_eq(ke_msg_parse_response(buf, len, NTPDRS, KE_MSG_REQUEST_SUPPORT, &resp),
		     -EPROTO, "types 9 and 10 are unknown critical in ntpd-rs-v1");
	free(buf);
}

/* An Authentication record whose body is len bytes of 't': any bytes make a token. */
static struct mb *token_rec(struct mb *m, enum ke_numbering n, size_t len)
{
	uint8_t body[KE_MSG_TOKEN_MAX + 1];
	memset(body, 't', sizeof body);
	uint16_t t = wire_type(n, KE_RECORD_AUTH_TOKEN);
	raw_bytes(m, t & KE_RECORD_CRITICAL, t & KE_RECORD_TYPE_MASK, body, len);
	return m;
}

/* token_len 0: the request parses with a spoiled token. */
static void expect_token(struct mb *m, enum ke_numbering n, enum ke_msg_request_kind kind,
			 size_t token_len)
{
	struct ke_msg_request req;
	expect_ok(m, n, &req);
	cr_assert_eq(req.kind, kind);
	cr_assert_eq(req.has_token, token_len != 0);
	cr_assert_eq(req.token_misplaced, token_len == 0);
	if (token_len) {
		cr_assert_eq(req.token_len, token_len);
		cr_assert_eq(req.token[0], 't');
		cr_assert_eq(req.token[token_len - 1], 't');
	}
}

/* PROTOCOL.md §3.5: the token is the first record, 1..255 bytes, once. Anything else spoils it
 * (token_misplaced, never a token) without failing the request: whether the peer may send what
 * it sent is pool_proto's decision, and a spoiled token must not authorise there. */
Test(ke_msg, token_must_be_first_single_and_1_to_255_bytes)
{
	const enum ke_msg_request_kind S = KE_MSG_REQUEST_SUPPORT, F = KE_MSG_REQUEST_FIXED_KEY;
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		expect_token(more(token_rec(mb_new(), n, 1), n, "sa end"), n, S, 1);
		expect_token(more(token_rec(mb_new(), n, 64), n, "sa end"), n, S, 64);
		expect_token(more(token_rec(mb_new(), n, 255), n, "sa end"), n, S, 255);
		expect_token(more(token_rec(mb_new(), n, 0), n, "sa end"), n, S, 0);
		expect_token(more(token_rec(mb_new(), n, 256), n, "sa end"), n, S, 0);

		expect_token(more(token_rec(msg(n, "sa"), n, 64), n, "end"), n, S, 0); /* second */
		/* Repeated: neither copy counts. */
		struct mb *m = token_rec(token_rec(mb_new(), n, 64), n, 64);
		expect_token(more(m, n, "sa end"), n, S, 0);
		m = token_rec(more(token_rec(mb_new(), n, 64), n, "sa"), n, 0); /* late empty one */
		expect_token(more(m, n, "end"), n, S, 0);
		m = fixed_req(n, 64, "0000", "000f"); /* Fixed Key first, token second */
		expect_token(more(token_rec(m, n, 64), n, "end"), n, F, 0);

		/* On a plain request the token is parsed; pool_proto ignores it there. */
		m = token_rec(mb_new(), n, 64);
		expect_token(more(m, n, "np:0000 aead:000f end"), n, KE_MSG_REQUEST_PLAIN, 64);

		/* A refused request keeps no token (expect_code checks the bytes are gone). */
		expect_code(more(token_rec(mb_new(), n, 64), n, "sa np:0000 end"), n, 1);
		expect_code(more(token_rec(mb_new(), n, 64), n, "sa =8064: end"), n, 0);
	}
}

Test(ke_msg, token_builder_bounds)
{
	char token[KE_MSG_TOKEN_MAX + 2];
	memset(token, 'k', sizeof token);
	token[KE_MSG_TOKEN_MAX + 1] = '\0'; /* 256 bytes */
	uint8_t key[32] = { 0 };
	uint8_t out[512];
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		const char *bad[] = { "", token };
		for (size_t b = 0; b < 2; b++) {
			cr_assert_eq(ke_msg_build_support_request(out, sizeof out, n, bad[b], true,
								  true, false),
				     -EINVAL);
			cr_assert_eq(ke_msg_build_fixed_key_request(out, sizeof out, n, bad[b], key,
								    key, 32, 0, 15, false),
				     -EINVAL);
		}
		token[KE_MSG_TOKEN_MAX] = '\0'; /* the longest token there is */
		struct ke_msg_request req;
		struct ke_msg_reject rej;
		int len = ke_msg_build_fixed_key_request(out, sizeof out, n, token, key, key, 32, 0,
							 15, false);
		cr_assert_eq(len, 4 + KE_MSG_TOKEN_MAX + 4 + 64 + 6 + 6 + 4);
		cr_assert_eq(ke_msg_parse_request(out, (size_t)len, n, &req, &rej), 0);
		cr_assert_eq(req.token_len, KE_MSG_TOKEN_MAX);
		cr_assert_eq(memcmp(req.token, token, KE_MSG_TOKEN_MAX), 0);
		for (int cap = 0; cap < len; cap++)
			cr_assert_eq(ke_msg_build_fixed_key_request(out, (size_t)cap, n, token, key,
								    key, 32, 0, 15, false),
				     -EMSGSIZE);
		len = ke_msg_build_support_request(out, sizeof out, n, token, false, true, false);
		cr_assert_eq(len, 4 + KE_MSG_TOKEN_MAX + 4 + 4);
		cr_assert_eq(ke_msg_parse_request(out, (size_t)len, n, &req, &rej), 0);
		cr_assert(req.has_token);
		token[KE_MSG_TOKEN_MAX] = 'k';
	}
}

Test(ke_msg, wipe_clears_token_and_keys)
{
	size_t len;
	uint8_t *buf = vec("fixed_key_request_token_iana", &len);
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	cr_assert_eq(ke_msg_parse_request(buf, len, IANA, &req, &rej), 0);
	cr_assert(req.has_token);
	cr_assert_eq(req.fixed_key_len, 32);
	ke_msg_request_wipe(&req);
	assert_no_secret(&req);
	/* What is not secret stays, so a wiped request can still be logged. */
	cr_assert_eq(req.kind, KE_MSG_REQUEST_FIXED_KEY);
	cr_assert_eq(req.aeads[0], 15);
	cr_assert(req.keep_alive);
	free(buf);
}

/* ---- response parsing --------------------------------------------------------------------- */

/* NP[0], AEAD[15] and one cookie: the start of every success below. */
#define OK_PREFIX "np:0000 aead:000f cookie:0102030405060708 "

Test(ke_msg, response_rules)
{
	const enum ke_msg_request_kind P = KE_MSG_REQUEST_PLAIN;
	static const struct {
		const char *spec;
		int want;
	} cases[] = {
		{ OK_PREFIX "=8064: end", -EPROTO },
		{ OK_PREFIX "np:0000 end", -EBADMSG }, /* repeated */
		{ "np:00000000 aead:000f cookie:01 end", -EBADMSG }, /* two protocols chosen */
		{ OK_PREFIX "cookie: end", -EBADMSG },		      /* empty cookie */
		{ OK_PREFIX "server:6120620a end", -EBADMSG }, /* server name: space, newline */
		{ OK_PREFIX "server: end", -EBADMSG },
		{ OK_PREFIX "port:01 end", -EBADMSG },
		{ OK_PREFIX "port:1000 port:1000 end", -EBADMSG },
		{ OK_PREFIX "fk:0000 end", -EBADMSG },
		{ OK_PREFIX "ka:00 end", -EBADMSG },
		{ OK_PREFIX "sa:000f00 end", -EBADMSG },
		{ OK_PREFIX, -EBADMSG },			   /* no End */
		{ OK_PREFIX "end end", -EBADMSG },		   /* after End */
		{ "np:0000 aead:000f end", -EBADMSG },		   /* success without a cookie */
		{ "np:0000 end", -EBADMSG },			   /* NTPv4 without AEAD record */
		{ "aead:000f cookie:01 end", -EBADMSG },	   /* no Next Protocol */
		{ "err:0001 err:0001 end", -EBADMSG },
		{ "err:000100 end", -EBADMSG },
		{ "warn:0005 warn:0005 warn:0005 warn:0005 warn:0005 warn:0005 warn:0005 "
		  "warn:0005 warn:0005 end", -EBADMSG }, /* too many warnings */
	};
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct ke_msg_response resp;
		for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
			struct mb *m = msg(n, cases[c].spec);
			cr_assert_eq(parse_resp(m, n, P, &resp), cases[c].want, "%s",
				     cases[c].spec);
			free(m);
		}
		expect_resp(msg(n, OK_PREFIX "end"), n, KE_MSG_REQUEST_SUPPORT, -EBADMSG);

		struct mb *m = msg(n, OK_PREFIX "=0064:00");
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

		m = msg(n, OK_PREFIX "warn:0001 end");
		cr_assert_eq(parse_resp(m, n, P, &resp), -EREMOTEIO);
		cr_assert_eq(resp.n_warnings, 1);
		cr_assert_not(resp.has_error);
		free(m);

		uint8_t big[257];
		memset(big, 7, sizeof big);
		uint16_t ct = wire_type(n, KE_RECORD_NEW_COOKIE) & KE_RECORD_TYPE_MASK;
		m = msg(n, OK_PREFIX);
		raw_bytes(m, false, ct, big, 257);
		end(m, n);
		expect_resp(m, n, P, -EBADMSG);

		m = msg(n, OK_PREFIX);
		for (int k = 0; k < 9; k++)
			raw_bytes(m, false, ct, big, 256);
		end(m, n);
		cr_assert_eq(parse_resp(m, n, P, &resp), 0);
		cr_assert_eq(resp.n_cookies, 8);
		cr_assert_eq(resp.extra_cookies, 2);
		cr_assert_eq(resp.cookies[7].len, 256);
		free(m);
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

Test(ke_msg, request_builder_refusals)
{
	uint8_t out[64], key[32] = { 0 };
	static const uint16_t p0 = 0, a = 15;
	const char *bad[] = { "a b" };
	cr_assert_eq(ke_msg_build_request(out, sizeof out, IANA, &p0, 1, NULL, 0, NULL, 0),
		     -EINVAL, "NTPv4 needs an AEAD");
	cr_assert_eq(ke_msg_build_request(out, sizeof out, IANA, NULL, 0, &a, 1, NULL, 0),
		     -EINVAL);
	cr_assert_eq(ke_msg_build_request(out, sizeof out, IANA, &p0, 1, &a, 1, bad, 1), -EINVAL);
	cr_assert_eq(ke_msg_build_request(out, 15, IANA, &p0, 1, &a, 1, NULL, 0), -EMSGSIZE);
	cr_assert_eq(ke_msg_build_request(out, 16, IANA, &p0, 1, &a, 1, NULL, 0), 16);
	cr_assert_eq(ke_msg_build_support_request(out, sizeof out, IANA, NULL, false, false, true),
		     -EINVAL);
	cr_assert_eq(ke_msg_build_fixed_key_request(out, sizeof out, IANA, NULL, key, key, 0, 0, 30,
						    false),
		     -EINVAL, "an AEAD without a key length");
	cr_assert_eq(ke_msg_build_fixed_key_request(out, sizeof out, IANA, NULL, key, key, 32, 0,
						    17, false),
		     -EINVAL, "AEAD 17 takes 64-byte halves");
	cr_assert_eq(ke_msg_build_fixed_key_request(out, 50, IANA, NULL, key, key, 32, 0, 15,
						    false),
		     -EMSGSIZE);
	/* An empty list is a valid answer (nothing in common); more ids than fit is not. */
	struct ke_msg_support s = { .protocols = true, .n_protocols = 0 };
	int n = ke_msg_build_support_response(out, sizeof out, NTPDRS, &s);
	assert_bytes(out, n, "c004000080000000");
	s.n_protocols = KE_MSG_MAX_IDS + 1;
	cr_assert_eq(ke_msg_build_support_response(out, sizeof out, NTPDRS, &s), -EINVAL);
	s = (struct ke_msg_support){ .algorithms = true, .n_algs = KE_MSG_MAX_IDS + 1 };
	cr_assert_eq(ke_msg_build_support_response(out, sizeof out, IANA, &s), -EINVAL);
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
	char token[KE_MSG_TOKEN_MAX + 1]; /* "": no Authentication record */
};

static void random_name(struct tu_rng *rng, char *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (char)(0x21 + tu_rng_below(rng, 94));
	out[len] = '\0';
}

/* Half the pool requests carry a token of any non-NUL bytes (the builder takes a C string). */
static const char *random_token(struct tu_rng *rng, char *out)
{
	if (tu_rng_below(rng, 2))
		return NULL;
	size_t len = 1 + tu_rng_below(rng, KE_MSG_TOKEN_MAX);
	for (size_t i = 0; i < len; i++)
		out[i] = (char)(1 + tu_rng_below(rng, 255));
	out[len] = '\0';
	return out;
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
		len = ke_msg_build_support_request(g->buf, sizeof g->buf, g->n,
						   random_token(rng, g->token), g->want_protocols,
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
		len = ke_msg_build_fixed_key_request(g->buf, sizeof g->buf, g->n,
						     random_token(rng, g->token), g->c2s, g->s2c,
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
	cr_assert_not(req->token_misplaced);
	cr_assert_eq(req->has_token, g->token[0] != '\0');
	if (req->has_token) {
		cr_assert_eq(req->token_len, strlen(g->token));
		cr_assert_eq(memcmp(req->token, g->token, req->token_len), 0);
	}
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
			int rc = ke_msg_parse_request(p, g.len, g.n, &req, &rej);
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
	/* A mutated length can announce a body past the response cap too. */
	cr_assert(fs == 0 || fs == -EMSGSIZE || fs == -EBADMSG || (fs > 0 && (size_t)fs <= len));
	for (size_t i = 0; i < 2; i++) {
		enum ke_numbering n = numberings[i];
		struct ke_msg_request req;
		struct ke_msg_reject rej = { 0xffff, NULL };
		int rc = ke_msg_parse_request(p, len, n, &req, &rej);
		if (rc < 0) {
			cr_assert_eq(rc, -EPROTO);
			cr_assert(rej.code <= 1 && rej.reason);
			assert_no_secret(&req);
		} else {
			accepted++;
			cr_assert_eq(fr, (int)len, "a valid request frames whole");
			cr_assert(req.n_protocols <= KE_MSG_MAX_IDS);
			cr_assert(req.n_aeads <= KE_MSG_MAX_IDS);
			cr_assert(req.n_deny <= KE_MSG_MAX_DENY);
			for (size_t d = 0; d < req.n_deny; d++)
				cr_assert_eq(strlen(req.deny[d].name), req.deny[d].len);
			if (req.kind == KE_MSG_REQUEST_FIXED_KEY)
				cr_assert_eq(req.fixed_key_len, ke_msg_aead_key_len(req.aeads[0]));
			else
				cr_assert_eq(req.fixed_key_len, 0);
			cr_assert_eq(req.kind == KE_MSG_REQUEST_SUPPORT,
				     req.want_protocols || req.want_algorithms);
			cr_assert(!(req.has_token && req.token_misplaced));
			if (req.has_token)
				cr_assert(req.token_len >= 1 && req.token_len <= KE_MSG_TOKEN_MAX);
			ke_msg_request_wipe(&req);
			assert_no_secret(&req);
		}
		for (int asked = 0; asked < 3; asked++) {
			struct ke_msg_response r;
			rc = ke_msg_parse_response(p, len, n, (enum ke_msg_request_kind)asked, &r);
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
			struct ke_msg_request req;
			struct ke_msg_reject rej;
			cr_assert_eq(ke_msg_parse_request(p, cut, numberings[i], &req, &rej),
				     -EPROTO);
			assert_no_secret(&req);
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
		"fixed_key_request_token_iana", "support_request_token_iana",
		"fixed_key_request_token_experimental", "support_request_token_experimental",
		"support_response_kelb_test_iana",
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
