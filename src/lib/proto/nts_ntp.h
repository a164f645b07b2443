/* NTS extension fields in NTPv4 packets (RFC 8915 §5): Unique Identifier, Cookie, Cookie
 * Placeholder, Authenticator and Encrypted Extension Fields. Sans-I/O: the caller supplies every
 * random value (UID, nonce, transmit timestamp) and a keyed struct aead; nothing here reads a
 * clock or a socket.
 *
 * Authenticator (0x0404) body: u16 nonce_len, u16 ct_len, nonce (zero-padded to 4), ciphertext
 * (zero-padded to 4), optional additional padding. AEAD associated data is every packet byte
 * before the 0x0404 field; ciphertext = 16-byte SIV tag ‖ encrypted extension fields.
 *
 * Error codes: -EINVAL bad arguments from our own caller; -EMSGSIZE output does not fit;
 * -EBADMSG malformed bytes or failed authentication; -EPROTO well-formed bytes that break an NTS
 * rule (wrong mode, missing or duplicate field, field after the authenticator, mismatched
 * origin or UID); -ENOMEM; -EIO a GnuTLS failure while sealing.
 *
 * Pointer arguments, keys included, are borrowed for the duration of the call unless a comment
 * says otherwise; nothing here keeps a key or frees one. */
#ifndef NTSPOOL_NTS_NTP_H
#define NTSPOOL_NTS_NTP_H

#include <stddef.h>
#include <stdint.h>

#include "aead.h"
#include "ntp_packet.h"

#define NTS_NTP_EF_UID 0x0104
#define NTS_NTP_EF_COOKIE 0x0204
#define NTS_NTP_EF_PLACEHOLDER 0x0304
#define NTS_NTP_EF_AUTH 0x0404

#define NTS_NTP_UID_LEN 32    /* what we send, and the minimum we accept */
#define NTS_NTP_NONCE_LEN 16  /* what we send */
#define NTS_NTP_MAX_COOKIES 8 /* cookies asked for in one request, or kept from one response */
#define NTS_NTP_COOKIE_MAX 256

/* A borrowed byte range. */
struct nts_ntp_span {
	const uint8_t *data;
	size_t len;
};

/* A cookie copied out of a response. */
struct nts_ntp_cookie {
	uint8_t data[NTS_NTP_COOKIE_MAX];
	size_t len;
};

/* ---- Client: request ---- */

struct nts_ntp_request_params {
	struct ntp_packet_header hdr; /* mode must be 3; transmit_ts is the caller's random value */
	struct nts_ntp_span uid;      /* >= 32 random bytes */
	struct nts_ntp_span cookie;   /* 1..NTS_NTP_COOKIE_MAX bytes, a multiple of 4 */
	unsigned placeholders;        /* 1 + placeholders <= NTS_NTP_MAX_COOKIES */
	struct nts_ntp_span nonce;    /* non-empty; we use 16 random bytes */
};

/* Builds header, UID, cookie, placeholders (each as long as the cookie, zero body) and an
 * authenticator sealed with c2s (borrowed, keyed by the caller) over everything before it, with
 * an empty plaintext. All spans are borrowed. Returns the packet length written to out. */
int nts_ntp_build_request(const struct nts_ntp_request_params *p, struct aead *c2s, uint8_t *out,
			  size_t cap);

/* ---- Server: request, response, NAK ---- */

/* A parsed request. Every span borrows from the packet given to nts_ntp_parse_request, which
 * must outlive this struct. */
struct nts_ntp_request {
	struct ntp_packet_header hdr;
	struct nts_ntp_span packet;
	struct nts_ntp_span uid;
	struct nts_ntp_span cookie;   /* for the caller to open with its keyset */
	unsigned placeholders;        /* placeholders seen (the encrypted ones added by verify) */
	size_t auth_offset;           /* offset of the 0x0404 field = length of the AD */
	struct nts_ntp_span nonce;
	struct nts_ntp_span ciphertext; /* tag ‖ encrypted fields, >= 16 bytes */
};

/* Checks the shape of a request: header with mode 3 (the version is the caller's check: NTS
 * needs NTPv4), exactly one UID (>= 32 bytes), exactly
 * one cookie, placeholders each as long as the cookie, unknown fields allowed, and an
 * authenticator that is present, last and whose lengths fit its field. No cryptography.
 * pkt is borrowed by *req. */
int nts_ntp_parse_request(const uint8_t *pkt, size_t len, struct nts_ntp_request *req);

/* As nts_ntp_parse_request, for a server that has already parsed the header (hdr, borrowed and
 * copied into *req) of pkt: one walk over the extension fields both tells an NTS request from a
 * plain one and checks it. Returns 0, -ENOMSG when the fields are well formed and none is an NTS
 * field (a plain request, answered without NTS), -EBADMSG when the fields themselves are
 * malformed, or -EPROTO for an NTS request of the wrong shape. */
int nts_ntp_parse_request_fields(const struct ntp_packet_header *hdr, const uint8_t *pkt,
				 size_t len, struct nts_ntp_request *req);

/* Checks the authenticator with c2s (borrowed, keyed with the key from the cookie). Encrypted
 * fields are parsed; encrypted placeholders (each as long as the cookie) are added to
 * req->placeholders. -EBADMSG if authentication fails or the plaintext is malformed. */
int nts_ntp_verify_request(struct nts_ntp_request *req, struct aead *c2s);

/* How many cookies the client asked for: 1 + placeholders, capped at NTS_NTP_MAX_COOKIES. */
unsigned nts_ntp_cookies_wanted(const struct nts_ntp_request *req);

struct nts_ntp_response_params {
	/* Header of the reply: mode is set to 4 and origin_ts to the request's transmit_ts here;
	 * every other field is the caller's. */
	struct ntp_packet_header hdr;
	const struct nts_ntp_span *cookies; /* fresh cookies, each 1..NTS_NTP_COOKIE_MAX bytes */
	size_t n_cookies;                   /* the first NTS_NTP_MAX_COOKIES are used at most */
	struct nts_ntp_span nonce;          /* non-empty fresh random nonce */
};

/* Builds the reply to a verified request: header, the request's UID, and an authenticator sealed
 * with s2c (borrowed) whose plaintext is one cookie field per cookie. The reply is never longer
 * than the request (anti-amplification): trailing cookies are dropped until it fits, and
 * -EMSGSIZE is returned only if even a reply without cookies would be longer (a nonce longer than
 * the client's). *cookies_sent (may be NULL) gets the number of cookies included. Returns the
 * length written to out. */
int nts_ntp_build_response(const struct nts_ntp_request *req,
			   const struct nts_ntp_response_params *p, struct aead *s2c, uint8_t *out,
			   size_t cap, size_t *cookies_sent);

/* Builds an NTS NAK for a parsed request whose cookie or authenticator failed: the caller's hdr
 * with mode 4, stratum 0, reference id "NTSN" and origin = the request's transmit forced here;
 * the request's UID only. Returns the length written. */
int nts_ntp_build_nak(const struct nts_ntp_request *req, const struct ntp_packet_header *hdr,
		      uint8_t *out, size_t cap);

/* ---- Client: response ---- */

enum nts_ntp_result {
	NTS_NTP_RESPONSE_OK = 0,  /* authenticated; out->hdr and out->cookies valid */
	NTS_NTP_RESPONSE_NAK = 1, /* an NTS NAK for our request: re-key; out->hdr valid */
};

struct nts_ntp_response {
	struct ntp_packet_header hdr;
	struct nts_ntp_cookie cookies[NTS_NTP_MAX_COOKIES];
	size_t n_cookies;
};

/* Validates a reply to a request sent with transmit timestamp sent_ts and UID uid (borrowed):
 * mode 4, origin equal to sent_ts, then either an authenticator that opens with s2c (borrowed)
 * over a packet whose authenticated UID (before the authenticator or inside the ciphertext)
 * matches, or a NAK (stratum 0, "NTSN", matching UID, no authenticator). All encrypted fields are
 * parsed before any cookie is copied to out; cookies beyond NTS_NTP_MAX_COOKIES or longer than
 * NTS_NTP_COOKIE_MAX are skipped, cookies outside the ciphertext are ignored. Returns an
 * enum nts_ntp_result or a negative errno; on error out->n_cookies is 0. */
int nts_ntp_verify_response(const uint8_t *pkt, size_t len, uint64_t sent_ts,
			    const uint8_t *uid, size_t uid_len, struct aead *s2c,
			    struct nts_ntp_response *out);

#endif
