#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "nts_ntp.h"
#include "testutil.h"

#define CLIENT_TX 0x6287db473ff75f58ull

static uint8_t *vector(const char *name, size_t *len)
{
	return tu_vector_hex("nts-packets.txt", name, len);
}

static struct aead *vector_key(const char *name)
{
	size_t len;
	uint8_t *key = vector(name, &len);
	struct aead *a = NULL;
	cr_assert_eq(aead_new(&a, AEAD_AES_SIV_CMAC_512, key, len), 0);
	free(key);
	return a;
}

static struct aead *random_key(struct tu_rng *rng, uint16_t id)
{
	uint8_t key[AEAD_MAX_KEY_LEN];
	tu_rng_fill(rng, key, sizeof key);
	struct aead *a = NULL;
	cr_assert_eq(aead_new(&a, id, key, aead_key_len(id)), 0);
	return a;
}

/* ---- Packets crafted independently of the module: header, fields, and an authenticator
 * sealed here with aead_seal, so malformed shapes can be tested with valid cryptography. */
struct craft {
	uint8_t buf[4096];
	struct wire_writer w;
};

static void craft_init(struct craft *c, uint8_t mode, uint8_t stratum, uint32_t refid,
		       uint64_t origin, uint64_t transmit)
{
	wire_writer_init(&c->w, c->buf, sizeof c->buf);
	struct ntp_packet_header h = { .version = 4, .mode = mode, .stratum = stratum,
				       .refid = refid, .origin_ts = origin,
				       .transmit_ts = transmit };
	ntp_packet_put_header(&c->w, &h);
}

static void craft_ef(struct craft *c, uint16_t type, const void *body, size_t len)
{
	cr_assert_eq(ntp_packet_put_ef(&c->w, type, body, len), 0);
}

static void craft_auth(struct craft *c, struct aead *a, const uint8_t *pt, size_t pt_len)
{
	static const uint8_t nonce[16] = "0123456789abcdef";
	size_t ad_len = wire_written(&c->w);
	wire_put_u16(&c->w, NTS_NTP_EF_AUTH);
	wire_put_u16(&c->w, (uint16_t)(4 + 4 + 16 + 16 + pt_len));
	wire_put_u16(&c->w, 16);
	wire_put_u16(&c->w, (uint16_t)(16 + pt_len));
	wire_put_bytes(&c->w, nonce, 16);
	uint8_t *ct = wire_put_reserve(&c->w, 16 + pt_len);
	cr_assert_not_null(ct);
	static const uint8_t none;
	cr_assert_eq(aead_seal(a, nonce, 16, c->buf, ad_len, pt_len ? pt : &none, pt_len, ct,
			       16 + pt_len),
		     (int)(16 + pt_len));
}

static size_t craft_len(const struct craft *c)
{
	cr_assert_eq(wire_writer_error(&c->w), 0);
	return wire_written(&c->w);
}

/* ---- Test vectors ---- */

Test(nts_ntp, vector_client_request)
{
	size_t len;
	uint8_t *pkt = vector("client.packet", &len);
	struct aead *c2s = vector_key("client.c2s");
	struct nts_ntp_request req;
	cr_assert_eq(nts_ntp_parse_request(pkt, len, &req), 0);
	cr_assert_eq(req.hdr.transmit_ts, CLIENT_TX);
	cr_assert_eq(req.uid.len, 32);
	cr_assert_eq(req.uid.data, pkt + 52);
	cr_assert_eq(req.cookie.len, 168);
	cr_assert_eq(req.cookie.data, pkt + 88);
	cr_assert_eq(req.placeholders, 0);
	cr_assert_eq(req.auth_offset, 256);
	cr_assert_eq(req.nonce.len, 16);
	cr_assert_eq(req.ciphertext.len, 16);
	cr_assert_eq(nts_ntp_cookies_wanted(&req), 1);
	cr_assert_eq(nts_ntp_verify_request(&req, c2s), 0);
	cr_assert_eq(req.placeholders, 0);

	/* The server key does not open it. */
	struct aead *s2c = vector_key("server.s2c");
	cr_assert_eq(nts_ntp_verify_request(&req, s2c), -EBADMSG);
	aead_free(s2c);
	aead_free(c2s);
	free(pkt);
}

Test(nts_ntp, vector_server_response)
{
	size_t len, clen;
	uint8_t *pkt = vector("server.packet", &len);
	uint8_t *cpkt = vector("client.packet", &clen);
	struct aead *s2c = vector_key("server.s2c");

	/* Its plaintext, opened directly, is exactly one 172-byte cookie field. */
	uint8_t pt[256];
	int n = aead_open(s2c, pkt + 92, 16, pkt, 84, pkt + 108, 188, pt, sizeof pt);
	cr_assert_eq(n, 172);
	cr_assert_eq(pt[0], 0x02);
	cr_assert_eq(pt[1], 0x04);
	cr_assert_eq(pt[2] << 8 | pt[3], 172);

	struct nts_ntp_response resp;
	cr_assert_eq(nts_ntp_verify_response(pkt, len, CLIENT_TX, cpkt + 52, 32, s2c, &resp),
		     NTS_NTP_RESPONSE_OK);
	cr_assert_eq(resp.n_cookies, 1);
	cr_assert_eq(resp.cookies[0].len, 168);
	cr_assert_arr_eq(resp.cookies[0].data, pt + 4, 168);
	cr_assert_eq(resp.hdr.stratum, 1);
	cr_assert_eq(resp.hdr.transmit_ts, 0xe84948b2b644bff8ull);
	/* The response is exactly as long as the request: the limit holds with equality. */
	cr_assert_eq(len, clen);

	cr_assert_eq(nts_ntp_verify_response(pkt, len, CLIENT_TX + 1, cpkt + 52, 32, s2c, &resp),
		     -EPROTO);
	cr_assert_eq(resp.n_cookies, 0);
	uint8_t other_uid[32] = { 0 };
	cr_assert_eq(nts_ntp_verify_response(pkt, len, CLIENT_TX, other_uid, 32, s2c, &resp),
		     -EPROTO);
	struct aead *c2s = vector_key("client.c2s");
	cr_assert_eq(nts_ntp_verify_response(pkt, len, CLIENT_TX, cpkt + 52, 32, c2s, &resp),
		     -EBADMSG);
	cr_assert_eq(resp.n_cookies, 0);
	aead_free(c2s);
	aead_free(s2c);
	free(cpkt);
	free(pkt);
}

/* Every single-byte change anywhere in either vector is rejected. */
Test(nts_ntp, vector_tamper_every_byte)
{
	size_t len, slen;
	uint8_t *pkt = vector("client.packet", &len);
	uint8_t *spkt = vector("server.packet", &slen);
	struct aead *c2s = vector_key("client.c2s");
	struct aead *s2c = vector_key("server.s2c");
	uint8_t uid[32];
	memcpy(uid, pkt + 52, 32);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			pkt[i] ^= (uint8_t)(1 << bit);
			struct nts_ntp_request req;
			int rc = nts_ntp_parse_request(pkt, len, &req);
			if (rc == 0)
				rc = nts_ntp_verify_request(&req, c2s);
			cr_assert_lt(rc, 0, "request byte %zu bit %d accepted", i, bit);
			pkt[i] ^= (uint8_t)(1 << bit);
		}
	}
	for (size_t i = 0; i < slen; i++) {
		spkt[i] ^= 0x01;
		struct nts_ntp_response resp;
		int rc = nts_ntp_verify_response(spkt, slen, CLIENT_TX, uid, 32, s2c, &resp);
		cr_assert_lt(rc, 0, "response byte %zu accepted", i);
		cr_assert_eq(resp.n_cookies, 0);
		spkt[i] ^= 0x01;
	}
	aead_free(c2s);
	aead_free(s2c);
	free(spkt);
	free(pkt);
}

/* ---- Round trips ---- */

struct exchange {
	uint8_t uid[32];
	uint8_t cookie[NTS_NTP_COOKIE_MAX];
	size_t cookie_len;
	uint8_t req[4096];
	int req_len;
	uint64_t tx;
};

static void client_request(struct tu_rng *rng, struct aead *c2s, struct exchange *x,
			   size_t cookie_len, unsigned placeholders, size_t nonce_len)
{
	uint8_t nonce[64];
	tu_rng_fill(rng, x->uid, sizeof x->uid);
	tu_rng_fill(rng, x->cookie, sizeof x->cookie);
	tu_rng_fill(rng, nonce, sizeof nonce);
	x->cookie_len = cookie_len;
	x->tx = tu_rng_next(rng);
	struct nts_ntp_request_params p = {
		.hdr = { .version = 4, .mode = NTP_PACKET_MODE_CLIENT, .transmit_ts = x->tx },
		.uid = { x->uid, sizeof x->uid },
		.cookie = { x->cookie, cookie_len },
		.placeholders = placeholders,
		.nonce = { nonce, nonce_len },
	};
	x->req_len = nts_ntp_build_request(&p, c2s, x->req, sizeof x->req);
	cr_assert_gt(x->req_len, 0);
	cr_assert_eq((size_t)x->req_len,
		     48 + 36 + (1 + placeholders) * (4 + cookie_len) + 8 + ((nonce_len + 3) & ~3u) +
			     16);
}

static void round_trip(uint16_t aead_id, uint64_t seed)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, seed);
	struct aead *c2s = random_key(&rng, aead_id);
	struct aead *s2c = random_key(&rng, aead_id);
	size_t cookie_len = aead_id == AEAD_AES_SIV_CMAC_256 ? 104 : 168;
	for (unsigned ph = 0; ph < NTS_NTP_MAX_COOKIES; ph++) {
		struct exchange x;
		client_request(&rng, c2s, &x, cookie_len, ph, NTS_NTP_NONCE_LEN);

		struct nts_ntp_request req;
		cr_assert_eq(nts_ntp_parse_request(x.req, (size_t)x.req_len, &req), 0);
		cr_assert_eq(req.cookie.len, cookie_len);
		cr_assert_arr_eq(req.cookie.data, x.cookie, cookie_len);
		cr_assert_arr_eq(req.uid.data, x.uid, 32);
		cr_assert_eq(req.placeholders, ph);
		cr_assert_eq(nts_ntp_verify_request(&req, c2s), 0);
		cr_assert_eq(nts_ntp_cookies_wanted(&req), ph + 1);

		uint8_t fresh[NTS_NTP_MAX_COOKIES][168];
		struct nts_ntp_span spans[NTS_NTP_MAX_COOKIES];
		for (unsigned i = 0; i <= ph; i++) {
			tu_rng_fill(&rng, fresh[i], cookie_len);
			spans[i].data = fresh[i];
			spans[i].len = cookie_len;
		}
		uint8_t nonce[16];
		tu_rng_fill(&rng, nonce, sizeof nonce);
		struct nts_ntp_response_params rp = {
			.hdr = { .version = 4, .stratum = 2, .receive_ts = 77, .transmit_ts = 78 },
			.cookies = spans,
			.n_cookies = ph + 1,
			.nonce = { nonce, sizeof nonce },
		};
		uint8_t out[2048];
		size_t sent = 99;
		int n = nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent);
		cr_assert_gt(n, 0);
		cr_assert_leq(n, x.req_len);
		cr_assert_eq(sent, ph + 1);

		struct nts_ntp_response resp;
		cr_assert_eq(nts_ntp_verify_response(out, (size_t)n, x.tx, x.uid, 32, s2c, &resp),
			     NTS_NTP_RESPONSE_OK);
		cr_assert_eq(resp.hdr.mode, NTP_PACKET_MODE_SERVER);
		cr_assert_eq(resp.hdr.origin_ts, x.tx);
		cr_assert_eq(resp.hdr.stratum, 2);
		cr_assert_eq(resp.hdr.transmit_ts, 78);
		cr_assert_eq(resp.n_cookies, ph + 1);
		for (unsigned i = 0; i <= ph; i++) {
			cr_assert_eq(resp.cookies[i].len, cookie_len);
			cr_assert_arr_eq(resp.cookies[i].data, fresh[i], cookie_len);
		}
		/* Keys are directional. */
		cr_assert_eq(nts_ntp_verify_response(out, (size_t)n, x.tx, x.uid, 32, c2s, &resp),
			     -EBADMSG);
	}
	aead_free(c2s);
	aead_free(s2c);
}

Test(nts_ntp, round_trip_aead15)
{
	round_trip(AEAD_AES_SIV_CMAC_256, 15);
}

Test(nts_ntp, round_trip_aead17)
{
	round_trip(AEAD_AES_SIV_CMAC_512, 17);
}

Test(nts_ntp, build_request_rejects_bad_arguments)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 3);
	struct aead *c2s = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	uint8_t uid[32] = { 1 }, cookie[104] = { 2 }, nonce[16] = { 3 }, out[1024];
	struct nts_ntp_request_params p = {
		.hdr = { .version = 4, .mode = NTP_PACKET_MODE_CLIENT },
		.uid = { uid, 32 },
		.cookie = { cookie, 104 },
		.placeholders = 7,
		.nonce = { nonce, 16 },
	};
	cr_assert_gt(nts_ntp_build_request(&p, c2s, out, sizeof out), 0);
	struct nts_ntp_request_params q = p;
	q.placeholders = 8;
	cr_assert_eq(nts_ntp_build_request(&q, c2s, out, sizeof out), -EINVAL);
	q = p;
	q.nonce.len = 0;
	cr_assert_eq(nts_ntp_build_request(&q, c2s, out, sizeof out), -EINVAL);
	q = p;
	q.uid.len = 28;
	cr_assert_eq(nts_ntp_build_request(&q, c2s, out, sizeof out), -EINVAL);
	q = p;
	q.cookie.len = 0;
	cr_assert_eq(nts_ntp_build_request(&q, c2s, out, sizeof out), -EINVAL);
	q = p;
	q.cookie.len = 103;
	cr_assert_eq(nts_ntp_build_request(&q, c2s, out, sizeof out), -EINVAL);
	q = p;
	q.hdr.mode = NTP_PACKET_MODE_SERVER;
	cr_assert_eq(nts_ntp_build_request(&q, c2s, out, sizeof out), -EINVAL);
	cr_assert_eq(nts_ntp_build_request(&p, c2s, out, 200), -EMSGSIZE);
	aead_free(c2s);
}

/* ---- NAK ---- */

Test(nts_ntp, nak_built_and_recognised)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 4);
	struct aead *c2s = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	struct aead *s2c = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	struct exchange x;
	client_request(&rng, c2s, &x, 104, 2, 16);
	struct nts_ntp_request req;
	cr_assert_eq(nts_ntp_parse_request(x.req, (size_t)x.req_len, &req), 0);

	struct ntp_packet_header h = { .leap = 3, .version = 4, .stratum = 5, .refid = 1,
				       .origin_ts = 9, .transmit_ts = 1234 };
	uint8_t out[256];
	int n = nts_ntp_build_nak(&req, &h, out, sizeof out);
	cr_assert_eq(n, 48 + 36);
	cr_assert_leq(n, x.req_len);
	struct ntp_packet_header got;
	cr_assert_eq(ntp_packet_parse_header(out, (size_t)n, &got), 0);
	cr_assert_eq(got.mode, NTP_PACKET_MODE_SERVER);
	cr_assert_eq(got.stratum, 0);
	cr_assert_eq(got.leap, 3);
	cr_assert_eq(got.origin_ts, x.tx);
	cr_assert_eq(ntp_packet_kiss(&got), NTP_PACKET_KISS_NTSN);
	cr_assert_eq(out[48] << 8 | out[49], NTS_NTP_EF_UID);
	cr_assert_arr_eq(out + 52, x.uid, 32);

	struct nts_ntp_response resp;
	cr_assert_eq(nts_ntp_verify_response(out, (size_t)n, x.tx, x.uid, 32, s2c, &resp),
		     NTS_NTP_RESPONSE_NAK);
	cr_assert_eq(resp.n_cookies, 0);
	cr_assert_eq(resp.hdr.transmit_ts, 1234);
	/* A NAK for someone else's request, or with the wrong origin, is not ours. */
	uint8_t other[32] = { 0 };
	cr_assert_eq(nts_ntp_verify_response(out, (size_t)n, x.tx, other, 32, s2c, &resp), -EPROTO);
	cr_assert_eq(nts_ntp_verify_response(out, (size_t)n, x.tx ^ 1, x.uid, 32, s2c, &resp),
		     -EPROTO);
	/* Without a UID, or without the NTSN kiss, an unauthenticated reply is refused. */
	cr_assert_eq(nts_ntp_verify_response(out, 48, x.tx, x.uid, 32, s2c, &resp), -EPROTO);
	memcpy(out + 12, "RATE", 4);
	cr_assert_eq(nts_ntp_verify_response(out, (size_t)n, x.tx, x.uid, 32, s2c, &resp), -EPROTO);
	aead_free(c2s);
	aead_free(s2c);
}

/* ---- Server-side rejections ---- */

static int parse_vector_with(size_t at, uint16_t value)
{
	size_t len;
	uint8_t *pkt = vector("client.packet", &len);
	pkt[at] = (uint8_t)(value >> 8);
	pkt[at + 1] = (uint8_t)value;
	struct nts_ntp_request req;
	int rc = nts_ntp_parse_request(pkt, len, &req);
	free(pkt);
	return rc;
}

Test(nts_ntp, authenticator_lengths_rejected)
{
	/* The vector's authenticator: field at 256, nonce_len at 260, ct_len at 262, body 36. */
	cr_assert_eq(parse_vector_with(260, 16), 0);
	cr_assert_eq(parse_vector_with(260, 0), -EBADMSG);
	cr_assert_eq(parse_vector_with(260, 17), -EBADMSG); /* pads to 20: ct then overruns */
	cr_assert_eq(parse_vector_with(260, 33), -EBADMSG); /* nonce alone overruns */
	cr_assert_eq(parse_vector_with(260, 0xffff), -EBADMSG);
	cr_assert_eq(parse_vector_with(262, 15), -EBADMSG); /* shorter than the tag */
	cr_assert_eq(parse_vector_with(262, 0), -EBADMSG);
	cr_assert_eq(parse_vector_with(262, 17), -EBADMSG); /* pads to 20 > 16 */
	cr_assert_eq(parse_vector_with(262, 0xffff), -EBADMSG);
	/* Field too short to hold the two lengths. */
	cr_assert_eq(parse_vector_with(258, 4), -EBADMSG);
}

static struct aead *test_key(void)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 5);
	return random_key(&rng, AEAD_AES_SIV_CMAC_256);
}

static const uint8_t UID[32] = "uid-uid-uid-uid-uid-uid-uid-uid";
static const uint8_t COOKIE[104] = "cookie";
static const uint8_t PH[104];

static int parse_crafted(struct craft *c, struct aead *a)
{
	struct nts_ntp_request req;
	int rc = nts_ntp_parse_request(c->buf, craft_len(c), &req);
	if (rc == 0)
		rc = nts_ntp_verify_request(&req, a);
	return rc;
}

/* The server's one walk: parse_request_fields on an already parsed header. */
static int fields_of(struct craft *c)
{
	struct ntp_packet_header h;
	struct nts_ntp_request req;
	size_t len = craft_len(c);
	cr_assert_eq(ntp_packet_parse_header(c->buf, len, &h), 0);
	return nts_ntp_parse_request_fields(&h, c->buf, len, &req);
}

Test(nts_ntp, request_fields_tell_plain_from_nts)
{
	struct aead *a = test_key();
	struct craft c;
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, 0x7777, "xyz", 3);
	craft_ef(&c, 0x2005, "abcdefgh", 8);
	cr_assert_eq(fields_of(&c), -ENOMSG, "only unknown fields: a plain request");
	cr_assert_eq(parse_crafted(&c, a), -EPROTO, "not an NTS request for the client API");

	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, 0x7777, "xyz", 3);
	craft_ef(&c, NTS_NTP_EF_PLACEHOLDER, PH, 104);
	cr_assert_eq(fields_of(&c), -EPROTO, "a placeholder alone commits to NTS");

	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(fields_of(&c), 0);

	/* A field running past the end of the packet. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, 0x7777, "xyz", 3);
	size_t len = craft_len(&c);
	c.buf[len - 6] = 0x01; /* its length now claims 256+ bytes */
	struct ntp_packet_header h;
	struct nts_ntp_request req;
	cr_assert_eq(ntp_packet_parse_header(c.buf, len, &h), 0);
	cr_assert_eq(nts_ntp_parse_request_fields(&h, c.buf, len, &req), -EBADMSG);
	aead_free(a);
}

Test(nts_ntp, request_shapes)
{
	struct aead *a = test_key();
	struct craft c;

	/* Reference: a valid request built by hand, with an unknown field before the
	 * authenticator and an encrypted placeholder. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, 0x7777, "xyz", 3);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_ef(&c, NTS_NTP_EF_PLACEHOLDER, PH, 104);
	uint8_t enc_ph[108] = { 0x03, 0x04, 0x00, 108 };
	craft_auth(&c, a, enc_ph, sizeof enc_ph);
	struct nts_ntp_request req;
	cr_assert_eq(nts_ntp_parse_request(c.buf, craft_len(&c), &req), 0);
	cr_assert_eq(req.placeholders, 1);
	cr_assert_eq(nts_ntp_verify_request(&req, a), 0);
	cr_assert_eq(req.placeholders, 2);
	cr_assert_eq(nts_ntp_cookies_wanted(&req), 3);

	/* Two cookies. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* No cookie. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* Missing UID. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* UID shorter than 32 bytes. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 28);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* Two UIDs. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* Placeholder of another length than the cookie, in clear and encrypted. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_ef(&c, NTS_NTP_EF_PLACEHOLDER, PH, 100);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	enc_ph[3] = 104;
	craft_auth(&c, a, enc_ph, 104);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* Malformed encrypted fields. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	static const uint8_t bad_pt[8] = { 0x12, 0x34, 0x00, 0x02 };
	craft_auth(&c, a, bad_pt, sizeof bad_pt);
	cr_assert_eq(parse_crafted(&c, a), -EBADMSG);

	/* No authenticator. */
	craft_init(&c, 3, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* A field after the authenticator, known or not. */
	uint16_t after[] = { 0x7777, NTS_NTP_EF_PLACEHOLDER, NTS_NTP_EF_AUTH };
	for (size_t i = 0; i < 3; i++) {
		craft_init(&c, 3, 0, 0, 0, 1);
		craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
		craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
		craft_auth(&c, a, NULL, 0);
		craft_ef(&c, after[i], PH, 104);
		cr_assert_eq(parse_crafted(&c, a), -EPROTO);
	}

	/* Not a client request. */
	craft_init(&c, 4, 0, 0, 0, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(parse_crafted(&c, a), -EPROTO);

	/* Header only, and shorter. */
	uint8_t hdr_only[48] = { 0x23 };
	cr_assert_eq(nts_ntp_parse_request(hdr_only, 48, &req), -EPROTO);
	cr_assert_eq(nts_ntp_parse_request(hdr_only, 47, &req), -EBADMSG);
	aead_free(a);
}

/* ---- Client-side rejections ---- */

static int verify_crafted(struct craft *c, struct aead *a, struct nts_ntp_response *resp)
{
	return nts_ntp_verify_response(c->buf, craft_len(c), 42, UID, 32, a, resp);
}

Test(nts_ntp, response_shapes)
{
	struct aead *a = test_key();
	struct craft c;
	struct nts_ntp_response resp;
	uint8_t pt[512];
	struct wire_writer w;

	/* UID only inside the ciphertext is authenticated too; unknown fields are ignored, and
	 * a cookie outside the ciphertext is not kept. */
	wire_writer_init(&w, pt, sizeof pt);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_UID, UID, 32), 0);
	cr_assert_eq(ntp_packet_put_ef(&w, 0x7777, "q", 1), 0);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, COOKIE, 104), 0);
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_COOKIE, PH, 104);
	craft_auth(&c, a, pt, wire_written(&w));
	cr_assert_eq(verify_crafted(&c, a, &resp), NTS_NTP_RESPONSE_OK);
	cr_assert_eq(resp.n_cookies, 1);
	cr_assert_arr_eq(resp.cookies[0].data, COOKIE, 104);

	/* UID inside the ciphertext that does not match. */
	uint8_t wrong[32];
	memcpy(wrong, UID, 32);
	wrong[31] ^= 1;
	wire_writer_init(&w, pt, sizeof pt);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_UID, wrong, 32), 0);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, COOKIE, 104), 0);
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, pt, wire_written(&w));
	cr_assert_eq(verify_crafted(&c, a, &resp), -EPROTO);
	cr_assert_eq(resp.n_cookies, 0);

	/* No UID anywhere. */
	wire_writer_init(&w, pt, sizeof pt);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, COOKIE, 104), 0);
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_auth(&c, a, pt, wire_written(&w));
	cr_assert_eq(verify_crafted(&c, a, &resp), -EPROTO);

	/* A valid cookie followed by a malformed encrypted field: no cookie handed out. */
	wire_writer_init(&w, pt, sizeof pt);
	cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, COOKIE, 104), 0);
	wire_put_u16(&w, 0x1234);
	wire_put_u16(&w, 64);
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, pt, wire_written(&w));
	cr_assert_eq(verify_crafted(&c, a, &resp), -EBADMSG);
	cr_assert_eq(resp.n_cookies, 0);

	/* More than eight cookies: the first eight are kept. */
	wire_writer_init(&w, pt, sizeof pt);
	for (int i = 0; i < 10; i++) {
		uint8_t ck[8] = { (uint8_t)i };
		cr_assert_eq(ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, ck, 8), 0);
	}
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, pt, wire_written(&w));
	cr_assert_eq(verify_crafted(&c, a, &resp), NTS_NTP_RESPONSE_OK);
	cr_assert_eq(resp.n_cookies, 8);
	cr_assert_eq(resp.cookies[7].data[0], 7);

	/* A field after the authenticator. */
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, NULL, 0);
	craft_ef(&c, NTS_NTP_EF_COOKIE, COOKIE, 104);
	cr_assert_eq(verify_crafted(&c, a, &resp), -EPROTO);

	/* Two UIDs in the clear. */
	craft_init(&c, 4, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(verify_crafted(&c, a, &resp), -EPROTO);

	/* Wrong mode, wrong origin. */
	craft_init(&c, 3, 1, 0, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(verify_crafted(&c, a, &resp), -EPROTO);
	craft_init(&c, 4, 1, 0, 43, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(verify_crafted(&c, a, &resp), -EPROTO);

	/* An authenticated NTSN kiss is an ordinary authenticated reply. */
	craft_init(&c, 4, 0, NTP_PACKET_REFID_NTSN, 42, 1);
	craft_ef(&c, NTS_NTP_EF_UID, UID, 32);
	craft_auth(&c, a, NULL, 0);
	cr_assert_eq(verify_crafted(&c, a, &resp), NTS_NTP_RESPONSE_OK);
	cr_assert_eq(ntp_packet_kiss(&resp.hdr), NTP_PACKET_KISS_NTSN);
	aead_free(a);
}

/* ---- Anti-amplification ---- */

Test(nts_ntp, response_never_longer_than_request)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 0xa3);
	struct aead *c2s = random_key(&rng, AEAD_AES_SIV_CMAC_512);
	struct aead *s2c = random_key(&rng, AEAD_AES_SIV_CMAC_512);
	static uint8_t cookie_bytes[NTS_NTP_MAX_COOKIES][NTS_NTP_COOKIE_MAX];
	tu_rng_fill(&rng, cookie_bytes, sizeof cookie_bytes);
	unsigned dropped = 0, refused = 0;
	for (int i = 0; i < 3000; i++) {
		struct exchange x;
		unsigned ph = tu_rng_below(&rng, NTS_NTP_MAX_COOKIES);
		size_t req_cookie = 4 * (1 + tu_rng_below(&rng, NTS_NTP_COOKIE_MAX / 4));
		size_t req_nonce = 1 + tu_rng_below(&rng, 32);
		client_request(&rng, c2s, &x, req_cookie, ph, req_nonce);
		struct nts_ntp_request req;
		cr_assert_eq(nts_ntp_parse_request(x.req, (size_t)x.req_len, &req), 0);

		/* The server's cookies may be longer than the client's. */
		size_t n = 1 + tu_rng_below(&rng, NTS_NTP_MAX_COOKIES);
		struct nts_ntp_span spans[NTS_NTP_MAX_COOKIES];
		for (size_t k = 0; k < n; k++) {
			spans[k].data = cookie_bytes[k];
			spans[k].len = 4 * (1 + tu_rng_below(&rng, NTS_NTP_COOKIE_MAX / 4));
		}
		uint8_t nonce[32];
		tu_rng_fill(&rng, nonce, sizeof nonce);
		struct nts_ntp_response_params rp = {
			.hdr = { .version = 4 },
			.cookies = spans,
			.n_cookies = n,
			.nonce = { nonce, 1 + tu_rng_below(&rng, 32) },
		};
		uint8_t out[4096];
		size_t sent = 0;
		int len = nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent);
		if (len == -EMSGSIZE) {
			/* Only when even a cookie-less reply with this nonce would be longer. */
			cr_assert_gt((rp.nonce.len + 3) & ~3u, (req_nonce + 3) & ~3u);
			refused++;
			continue;
		}
		cr_assert_gt(len, 0);
		cr_assert_leq(len, x.req_len);
		cr_assert_leq(sent, n);
		if (sent < n)
			dropped++;
		struct nts_ntp_response resp;
		cr_assert_eq(nts_ntp_verify_response(out, (size_t)len, x.tx, x.uid, 32, s2c, &resp),
			     NTS_NTP_RESPONSE_OK);
		cr_assert_eq(resp.n_cookies, sent);
		for (size_t k = 0; k < sent; k++)
			cr_assert_eq(resp.cookies[k].len, spans[k].len);
	}
	cr_assert_gt(dropped, 0);
	cr_assert_lt(refused, 3000);
	aead_free(c2s);
	aead_free(s2c);
}

Test(nts_ntp, response_drops_cookies_or_refuses)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 6);
	struct aead *c2s = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	struct aead *s2c = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	static const uint8_t big[NTS_NTP_COOKIE_MAX];
	struct nts_ntp_span spans[2] = { { big, 104 }, { big, 104 } };
	uint8_t nonce[64] = { 1 }, out[1024];
	struct nts_ntp_response_params rp = { .hdr = { .version = 4 }, .cookies = spans,
					      .n_cookies = 2, .nonce = { nonce, 16 } };
	struct exchange x;
	client_request(&rng, c2s, &x, 104, 0, 16);
	struct nts_ntp_request req;
	cr_assert_eq(nts_ntp_parse_request(x.req, (size_t)x.req_len, &req), 0);
	size_t sent = 9;
	/* Two cookies asked for one: the second is dropped, the reply is as long as the request. */
	cr_assert_eq(nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent), x.req_len);
	cr_assert_eq(sent, 1);
	/* A cookie longer than the client's does not fit at all. */
	spans[0].len = 168;
	int n = nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent);
	cr_assert_eq(sent, 0);
	cr_assert_eq(n, x.req_len - 108);
	/* A tiny request and a long nonce: even a cookie-less reply would be longer. */
	client_request(&rng, c2s, &x, 4, 0, 1);
	cr_assert_eq(nts_ntp_parse_request(x.req, (size_t)x.req_len, &req), 0);
	rp.nonce.len = 64;
	cr_assert_eq(nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent), -EMSGSIZE);
	/* Caller's bad arguments. */
	rp.nonce.len = 0;
	cr_assert_eq(nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent), -EINVAL);
	rp.nonce.len = 1;
	spans[0].len = 6;
	cr_assert_eq(nts_ntp_build_response(&req, &rp, s2c, out, sizeof out, &sent), -EINVAL);
	spans[0].len = 4;
	cr_assert_eq(nts_ntp_build_response(&req, &rp, s2c, out, 60, &sent), -EMSGSIZE);
	aead_free(c2s);
	aead_free(s2c);
}

/* ---- Randomised mutation ---- */

static void mutate(struct tu_rng *rng, uint8_t *buf, size_t *len, size_t cap)
{
	switch (tu_rng_below(rng, 4)) {
	case 0: /* flip bytes */
		for (unsigned k = 1 + tu_rng_below(rng, 4); k > 0; k--)
			buf[tu_rng_below(rng, (uint32_t)*len)] ^= (uint8_t)(1 + tu_rng_below(rng, 255));
		break;
	case 1: /* truncate */
		*len = tu_rng_below(rng, (uint32_t)*len);
		break;
	case 2: /* append garbage */
	{
		size_t extra = 1 + tu_rng_below(rng, 64);
		if (*len + extra > cap)
			extra = cap - *len;
		tu_rng_fill(rng, buf + *len, extra);
		*len += extra;
		break;
	}
	default: /* overwrite a length-looking u16 with something extreme */
	{
		static const uint16_t vals[] = { 0, 1, 2, 3, 4, 5, 15, 16, 17, 0x7fff, 0xffff };
		size_t at = tu_rng_below(rng, (uint32_t)*len - 1);
		uint16_t v = vals[tu_rng_below(rng, sizeof vals / sizeof vals[0])];
		buf[at] = (uint8_t)(v >> 8);
		buf[at + 1] = (uint8_t)v;
		break;
	}
	}
}

Test(nts_ntp, random_mutations)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x6d757461);
	struct aead *c2s = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	struct aead *s2c = random_key(&rng, AEAD_AES_SIV_CMAC_256);
	struct exchange x;
	client_request(&rng, c2s, &x, 104, 3, 16);
	struct nts_ntp_request req;
	cr_assert_eq(nts_ntp_parse_request(x.req, (size_t)x.req_len, &req), 0);
	uint8_t cookies[4][104];
	struct nts_ntp_span spans[4];
	for (int i = 0; i < 4; i++) {
		tu_rng_fill(&rng, cookies[i], 104);
		spans[i].data = cookies[i];
		spans[i].len = 104;
	}
	uint8_t nonce[16] = { 9 };
	struct nts_ntp_response_params rp = { .hdr = { .version = 4 }, .cookies = spans,
					      .n_cookies = 4, .nonce = { nonce, 16 } };
	uint8_t resp_pkt[1024];
	int resp_len = nts_ntp_build_response(&req, &rp, s2c, resp_pkt, sizeof resp_pkt, NULL);
	cr_assert_gt(resp_len, 0);

	unsigned req_ok = 0, resp_ok = 0;
	for (int i = 0; i < 10000; i++) {
		uint8_t buf[2048];
		size_t len;
		int rc;
		if (i % 2 == 0) {
			memcpy(buf, x.req, (size_t)x.req_len);
			len = (size_t)x.req_len;
			mutate(&rng, buf, &len, sizeof buf);
			struct nts_ntp_request q;
			rc = nts_ntp_parse_request(buf, len, &q);
			if (rc == 0)
				rc = nts_ntp_verify_request(&q, c2s);
			bool same = len == (size_t)x.req_len && memcmp(buf, x.req, len) == 0;
			/* Every byte is authenticated or structural: only the original passes. */
			cr_assert_eq(rc == 0, same, "iteration %d rc %d", i, rc);
			req_ok += rc == 0;
		} else {
			memcpy(buf, resp_pkt, (size_t)resp_len);
			len = (size_t)resp_len;
			mutate(&rng, buf, &len, sizeof buf);
			struct nts_ntp_response r;
			rc = nts_ntp_verify_response(buf, len, x.tx, x.uid, 32, s2c, &r);
			bool same = len == (size_t)resp_len && memcmp(buf, resp_pkt, len) == 0;
			cr_assert_eq(rc == NTS_NTP_RESPONSE_OK, same, "iteration %d rc %d", i, rc);
			cr_assert(rc == NTS_NTP_RESPONSE_OK || r.n_cookies == 0);
			resp_ok += rc == NTS_NTP_RESPONSE_OK;
		}
	}
	cr_assert_lt(req_ok + resp_ok, 100);
	aead_free(c2s);
	aead_free(s2c);
}
