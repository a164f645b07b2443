/* Fuzz harness: nts_ntp_verify_response (the client's check of a server reply) with a fixed AEAD
 * key, transmit timestamp and UID: those of tests/vectors/nts-packets.txt, so its server packet
 * authenticates. Most inputs fail authentication; that still runs the pre-crypto checks (mode,
 * origin, field shapes, authenticator lengths) and the NAK path.
 * Contract checked: OK, NAK or a negative errno; no cookie kept on error or for a NAK; at most
 * NTS_NTP_MAX_COOKIES cookies of 1..NTS_NTP_COOKIE_MAX bytes; the header of an answer is mode 4
 * with our origin, and a NAK's is stratum 0 "NTSN". */
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

/* server.s2c of tests/vectors/nts-packets.txt (AEAD 17). */
static const uint8_t s2c_key[64] = {
	0xf4, 0x06, 0x3f, 0x0d, 0x2f, 0xe2, 0xb4, 0x19, 0x68, 0xd4, 0x2f, 0x0e, 0xba, 0x46, 0xbb,
	0x5d, 0x86, 0x8c, 0x02, 0x52, 0xee, 0xfe, 0x71, 0x4f, 0x5a, 0x1f, 0x87, 0x8a, 0x7b, 0xd2,
	0x79, 0x2f, 0xe4, 0xd0, 0xf3, 0x4c, 0x7e, 0xd5, 0xc4, 0xe9, 0x41, 0x0f, 0x21, 0xa3, 0xc4,
	0x1e, 0x06, 0xc5, 0xde, 0x69, 0x28, 0x0e, 0x49, 0x8a, 0xc8, 0x2d, 0xeb, 0x7f, 0x30, 0xf8,
	0xab, 0x08, 0x8d, 0xb4,
};

/* The client packet's transmit timestamp and UID. */
#define SENT_TS 0x6287db473ff75f58ull
static const uint8_t uid[32] = {
	0xe4, 0x83, 0x3a, 0x8d, 0x60, 0x0e, 0x13, 0x42, 0x43, 0x5c, 0xb2, 0x9d, 0xe5, 0x50, 0xac, 0xc0,
	0xf8, 0xd8, 0xfa, 0x16, 0xe5, 0xc5, 0x37, 0x0a, 0x62, 0x0b, 0x15, 0x5f, 0x58, 0x6a, 0xda, 0xd6,
};

/* Built on first use and kept: the only state shared between inputs. */
static struct aead *s2c;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (s2c == NULL && aead_new(&s2c, AEAD_AES_SIV_CMAC_512, s2c_key, sizeof s2c_key) != 0)
		abort();

	struct nts_ntp_response *out = malloc(sizeof *out);
	CHECK(out != NULL);
	memset(out, 0xa5, sizeof *out);
	int rc = nts_ntp_verify_response(data, size, SENT_TS, uid, sizeof uid, s2c, out);
	if (rc < 0) {
		CHECK(rc == -EBADMSG || rc == -EPROTO);
		CHECK(out->n_cookies == 0);
	} else if (rc == NTS_NTP_RESPONSE_NAK) {
		CHECK(out->hdr.mode == NTP_PACKET_MODE_SERVER && out->hdr.origin_ts == SENT_TS);
		CHECK(out->hdr.stratum == 0 && out->hdr.refid == NTP_PACKET_REFID_NTSN);
		CHECK(out->n_cookies == 0);
	} else {
		CHECK(rc == NTS_NTP_RESPONSE_OK);
		CHECK(out->hdr.mode == NTP_PACKET_MODE_SERVER && out->hdr.origin_ts == SENT_TS);
		CHECK(out->n_cookies <= NTS_NTP_MAX_COOKIES);
		for (size_t i = 0; i < out->n_cookies; i++)
			CHECK(out->cookies[i].len >= 1 && out->cookies[i].len <= NTS_NTP_COOKIE_MAX);
	}
	free(out);
	return 0;
}
