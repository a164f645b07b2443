/* Fuzz harness: nts_ntp_parse_request (the shape of an NTS client request), then, for a request
 * that parses, nts_ntp_verify_request with a fixed AEAD key (the c2s key of
 * tests/vectors/nts-packets.txt, so its client packet authenticates) and the NAK and response
 * builders. Most inputs fail authentication; that still runs the pre-crypto length checks.
 * Contract checked: every span lies inside the packet; UID >= 32 bytes, a non-empty cookie, a
 * non-empty nonce and a ciphertext of at least the tag; the authenticator is the last field;
 * mode 3; 1..8 cookies wanted; a NAK and a response are never longer than the request. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "nts_ntp.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

/* client.c2s of tests/vectors/nts-packets.txt (AEAD 17). */
static const uint8_t c2s_key[64] = {
	0xaa, 0x6f, 0xa1, 0x76, 0x07, 0xc8, 0xe8, 0x80, 0x91, 0xfa, 0xaa, 0xba, 0x57, 0x8f, 0xab,
	0xfc, 0x6e, 0xf1, 0xaa, 0xb3, 0x0d, 0x96, 0x86, 0x93, 0xd3, 0xf8, 0x3e, 0xcf, 0x7a, 0x9b,
	0xc6, 0x6d, 0xa7, 0x0f, 0x12, 0x76, 0x92, 0x3f, 0xba, 0x92, 0xd4, 0xbc, 0xaf, 0x1b, 0x59,
	0x03, 0xed, 0xd4, 0x34, 0x71, 0x1c, 0x15, 0xcb, 0xc8, 0xe6, 0x11, 0x08, 0xba, 0x7e, 0x01,
	0x34, 0xe6, 0x56, 0x28,
};

/* Built on first use and kept: the only state shared between inputs. */
static struct aead *c2s;

static bool inside(const uint8_t *pkt, size_t len, struct nts_ntp_span s)
{
	return s.data >= pkt && s.len <= len && (size_t)(s.data - pkt) <= len - s.len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (c2s == NULL && aead_new(&c2s, AEAD_AES_SIV_CMAC_512, c2s_key, sizeof c2s_key) != 0)
		abort();

	struct nts_ntp_request req;
	int rc = nts_ntp_parse_request(data, size, &req);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTO);
	if (rc < 0)
		return 0;

	CHECK(req.hdr.mode == NTP_PACKET_MODE_CLIENT);
	CHECK(req.packet.data == data && req.packet.len == size);
	CHECK(inside(data, size, req.uid) && req.uid.len >= NTS_NTP_UID_LEN);
	CHECK(inside(data, size, req.cookie) && req.cookie.len >= 1);
	CHECK(inside(data, size, req.nonce) && req.nonce.len >= 1);
	CHECK(inside(data, size, req.ciphertext) && req.ciphertext.len >= AEAD_TAG_LEN);
	CHECK(req.auth_offset >= NTP_PACKET_HEADER_LEN && req.auth_offset < size);
	/* The authenticator comes after UID and cookie, and its body holds nonce and ciphertext. */
	CHECK((size_t)(req.uid.data - data) < req.auth_offset);
	CHECK((size_t)(req.cookie.data - data) < req.auth_offset);
	CHECK((size_t)(req.nonce.data - data) > req.auth_offset);
	CHECK((size_t)(req.ciphertext.data - data) > req.auth_offset);
	unsigned wanted = nts_ntp_cookies_wanted(&req);
	CHECK(wanted >= 1 && wanted <= NTS_NTP_MAX_COOKIES);

	uint8_t out[4096];
	struct ntp_packet_header h = req.hdr;
	int n = nts_ntp_build_nak(&req, &h, out, sizeof out);
	CHECK(n > 0 && (size_t)n <= size);

	rc = nts_ntp_verify_request(&req, c2s);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTO);
	if (rc < 0)
		return 0;
	wanted = nts_ntp_cookies_wanted(&req);
	CHECK(wanted >= 1 && wanted <= NTS_NTP_MAX_COOKIES);

	/* Anti-amplification: as many 100-byte cookies as wanted, yet never a longer reply. */
	static const uint8_t cookie[100];
	static const uint8_t nonce[16] = { 1 };
	struct nts_ntp_span cookies[NTS_NTP_MAX_COOKIES];
	for (size_t i = 0; i < NTS_NTP_MAX_COOKIES; i++)
		cookies[i] = (struct nts_ntp_span){ cookie, sizeof cookie };
	struct nts_ntp_response_params p = {
		.hdr = req.hdr,
		.cookies = cookies,
		.n_cookies = wanted,
		.nonce = { nonce, sizeof nonce },
	};
	size_t sent = 99;
	n = nts_ntp_build_response(&req, &p, c2s, out, sizeof out, &sent);
	if (n == -EMSGSIZE) {
		CHECK(req.nonce.len < sizeof nonce); /* only for a nonce shorter than ours */
		return 0;
	}
	CHECK(n > 0 && (size_t)n <= size);
	CHECK(sent <= wanted);
	return 0;
}
