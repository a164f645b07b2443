#include "nts_ntp.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "log.h"

/* The plaintext of a response we build: one cookie field per cookie. */
/* Largest encrypted part we open, request or response. */
#define PLAINTEXT_MAX 4096
#define RESPONSE_PT_MAX (NTS_NTP_MAX_COOKIES * (NTP_PACKET_EF_HEADER_LEN + NTS_NTP_COOKIE_MAX))

static size_t pad4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

static bool span_eq(struct nts_ntp_span a, const uint8_t *b, size_t b_len)
{
	return a.len == b_len && memcmp(a.data, b, b_len) == 0;
}

static size_t auth_field_size(size_t nonce_len, size_t ct_len)
{
	return NTP_PACKET_EF_HEADER_LEN + 4 + pad4(nonce_len) + pad4(ct_len);
}

/* Splits an authenticator body into nonce and ciphertext. Every length is checked against the
 * field here, so no malformed value ever reaches GnuTLS (which aborts on an empty nonce).
 * Bytes after the padded ciphertext are RFC 8915's "additional padding" and are allowed. */
static int parse_auth(const struct ntp_packet_ef *ef, struct nts_ntp_span *nonce,
		      struct nts_ntp_span *ct)
{
	struct wire_reader r;
	wire_reader_init(&r, ef->body, ef->body_len);
	uint16_t nonce_len = wire_get_u16(&r);
	uint16_t ct_len = wire_get_u16(&r);
	if (wire_error(&r) || nonce_len == 0 || ct_len < AEAD_TAG_LEN)
		return -EBADMSG;
	if (pad4(nonce_len) > wire_remaining(&r))
		return -EBADMSG;
	nonce->data = wire_get_bytes(&r, nonce_len);
	nonce->len = nonce_len;
	wire_skip(&r, pad4(nonce_len) - nonce_len);
	if (pad4(ct_len) > wire_remaining(&r))
		return -EBADMSG;
	ct->data = wire_get_bytes(&r, ct_len);
	ct->len = ct_len;
	return wire_error(&r);
}

/* Appends an authenticator sealing pt (borrowed) with a, over everything written so far. */
static int put_auth(struct wire_writer *w, struct aead *a, struct nts_ntp_span nonce,
		    const uint8_t *pt, size_t pt_len)
{
	static const uint8_t empty;
	if (nonce.len == 0 || nonce.len > UINT16_MAX)
		return -EINVAL;
	size_t ct_len = AEAD_TAG_LEN + pt_len;
	size_t field_len = auth_field_size(nonce.len, ct_len);
	if (field_len > UINT16_MAX)
		return -EMSGSIZE;
	size_t ad_len = wire_written(w);
	int rc = ntp_packet_put_ef_header(w, NTS_NTP_EF_AUTH, field_len);
	if (rc < 0)
		return rc;
	wire_put_u16(w, (uint16_t)nonce.len);
	wire_put_u16(w, (uint16_t)ct_len);
	wire_put_bytes(w, nonce.data, nonce.len);
	wire_put_zeros(w, pad4(nonce.len) - nonce.len);
	uint8_t *ct = wire_put_reserve(w, ct_len);
	wire_put_zeros(w, pad4(ct_len) - ct_len);
	if (wire_writer_error(w))
		return wire_writer_error(w);
	rc = aead_seal(a, nonce.data, nonce.len, w->buf, ad_len, pt_len ? pt : &empty, pt_len, ct,
		       ct_len);
	return rc < 0 ? rc : 0;
}

/* Opens the authenticator's ciphertext into pt (PLAINTEXT_MAX bytes, the caller's stack).
 * Encrypted fields longer than that are refused: no request we answer and no response we accept
 * needs more (eight cookies of the largest size fit), and a fixed buffer keeps the packet path
 * free of allocation. */
static int open_auth(struct aead *a, const uint8_t *ad, size_t ad_len, struct nts_ntp_span nonce,
		     struct nts_ntp_span ct, uint8_t *pt, size_t *pt_len)
{
	assert(nonce.len > 0 && ct.len >= AEAD_TAG_LEN);
	*pt_len = 0;
	if (ct.len - AEAD_TAG_LEN > PLAINTEXT_MAX)
		return -EMSGSIZE;
	int n = aead_open(a, nonce.data, nonce.len, ad, ad_len, ct.data, ct.len, pt, PLAINTEXT_MAX);
	if (n < 0)
		return n;
	*pt_len = (size_t)n;
	return 0;
}

int nts_ntp_build_request(const struct nts_ntp_request_params *p, struct aead *c2s, uint8_t *out,
			  size_t cap)
{
	if (p->hdr.mode != NTP_PACKET_MODE_CLIENT || p->uid.len < NTS_NTP_UID_LEN ||
	    p->uid.len % 4 != 0 || p->cookie.len == 0 || p->cookie.len > NTS_NTP_COOKIE_MAX ||
	    p->cookie.len % 4 != 0 || p->placeholders > NTS_NTP_MAX_COOKIES - 1 || p->nonce.len == 0)
		return -EINVAL;
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, &p->hdr);
	int rc = ntp_packet_put_ef(&w, NTS_NTP_EF_UID, p->uid.data, p->uid.len);
	if (rc < 0)
		return rc;
	rc = ntp_packet_put_ef(&w, NTS_NTP_EF_COOKIE, p->cookie.data, p->cookie.len);
	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < p->placeholders; i++) {
		rc = ntp_packet_put_ef_header(&w, NTS_NTP_EF_PLACEHOLDER,
					      ntp_packet_ef_size(p->cookie.len));
		if (rc < 0)
			return rc;
		wire_put_zeros(&w, p->cookie.len);
	}
	rc = put_auth(&w, c2s, p->nonce, NULL, 0);
	if (rc < 0)
		return rc;
	return (int)wire_written(&w);
}

int nts_ntp_parse_request(const uint8_t *pkt, size_t len, struct nts_ntp_request *req)
{
	struct ntp_packet_header h;
	int rc = ntp_packet_parse_header(pkt, len, &h);
	if (rc < 0)
		return rc;
	rc = nts_ntp_parse_request_fields(&h, pkt, len, req);
	return rc == -ENOMSG ? -EPROTO : rc;
}

int nts_ntp_parse_request_fields(const struct ntp_packet_header *hdr, const uint8_t *pkt,
				 size_t len, struct nts_ntp_request *req)
{
	struct nts_ntp_request q;
	int rc;
	memset(&q, 0, sizeof q);
	q.hdr = *hdr;
	if (q.hdr.mode != NTP_PACKET_MODE_CLIENT)
		return -EPROTO;
	q.packet.data = pkt;
	q.packet.len = len;

	bool have_uid = false, have_cookie = false, have_auth = false, ph_mismatch = false;
	size_t ph_len = 0;
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	ntp_packet_ef_iter_init(&it, pkt, len, NTP_PACKET_HEADER_LEN);
	while ((rc = ntp_packet_ef_next(&it, &ef)) > 0) {
		/* Nothing after the authenticator is authenticated, so nothing may follow it. */
		if (have_auth)
			return -EPROTO;
		switch (ef.type) {
		case NTS_NTP_EF_UID:
			if (have_uid || ef.body_len < NTS_NTP_UID_LEN)
				return -EPROTO;
			q.uid.data = ef.body;
			q.uid.len = ef.body_len;
			have_uid = true;
			break;
		case NTS_NTP_EF_COOKIE:
			if (have_cookie || ef.body_len == 0)
				return -EPROTO;
			q.cookie.data = ef.body;
			q.cookie.len = ef.body_len;
			have_cookie = true;
			break;
		case NTS_NTP_EF_PLACEHOLDER:
			if (q.placeholders == 0)
				ph_len = ef.body_len;
			else if (ef.body_len != ph_len)
				ph_mismatch = true;
			q.placeholders++;
			break;
		case NTS_NTP_EF_AUTH:
			rc = parse_auth(&ef, &q.nonce, &q.ciphertext);
			if (rc < 0)
				return rc;
			q.auth_offset = ef.offset;
			have_auth = true;
			break;
		default:
			break;
		}
	}
	if (rc < 0)
		return rc;
	if (!have_uid && !have_cookie && !have_auth && q.placeholders == 0)
		return -ENOMSG;
	if (!have_uid || !have_cookie || !have_auth)
		return -EPROTO;
	if (ph_mismatch || (q.placeholders > 0 && ph_len != q.cookie.len))
		return -EPROTO;
	*req = q;
	return 0;
}

int nts_ntp_verify_request(struct nts_ntp_request *req, struct aead *c2s)
{
	uint8_t pt[PLAINTEXT_MAX];
	size_t pt_len;
	int rc = open_auth(c2s, req->packet.data, req->auth_offset, req->nonce, req->ciphertext,
			   pt, &pt_len);
	if (rc < 0)
		goto fail;
	unsigned extra = 0;
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	ntp_packet_ef_iter_init(&it, pt, pt_len, 0);
	while ((rc = ntp_packet_ef_next(&it, &ef)) > 0) {
		if (ef.type != NTS_NTP_EF_PLACEHOLDER)
			continue;
		if (ef.body_len != req->cookie.len) {
			rc = -EPROTO;
			goto fail;
		}
		extra++;
	}
	if (rc < 0)
		goto fail;
	req->placeholders += extra;
	rc = 0;
fail:
	gnutls_memset(pt, 0, pt_len);
	return rc;
}

unsigned nts_ntp_cookies_wanted(const struct nts_ntp_request *req)
{
	if (req->placeholders >= NTS_NTP_MAX_COOKIES - 1)
		return NTS_NTP_MAX_COOKIES;
	return 1 + req->placeholders;
}

/* Length of a response with a UID of uid_len bytes and pt_len bytes of (4-aligned) plaintext. */
static size_t response_size(size_t uid_len, size_t nonce_len, size_t pt_len)
{
	return NTP_PACKET_HEADER_LEN + ntp_packet_ef_size(uid_len) +
	       auth_field_size(nonce_len, AEAD_TAG_LEN + pt_len);
}

int nts_ntp_build_response(const struct nts_ntp_request *req,
			   const struct nts_ntp_response_params *p, struct aead *s2c, uint8_t *out,
			   size_t cap, size_t *cookies_sent)
{
	if (p->nonce.len == 0 || p->nonce.len > UINT16_MAX)
		return -EINVAL;
	size_t n = p->n_cookies < NTS_NTP_MAX_COOKIES ? p->n_cookies : NTS_NTP_MAX_COOKIES;
	size_t pt_len = 0;
	for (size_t i = 0; i < n; i++) {
		size_t cl = p->cookies[i].len;
		if (cl == 0 || cl > NTS_NTP_COOKIE_MAX || cl % 4 != 0)
			return -EINVAL;
		pt_len += ntp_packet_ef_size(cl);
	}
	/* Anti-amplification: drop trailing cookies until the reply is no longer than the request. */
	while (n > 0 && response_size(req->uid.len, p->nonce.len, pt_len) > req->packet.len) {
		n--;
		pt_len -= ntp_packet_ef_size(p->cookies[n].len);
	}
	if (response_size(req->uid.len, p->nonce.len, pt_len) > req->packet.len)
		return -EMSGSIZE;

	uint8_t pt[RESPONSE_PT_MAX];
	struct wire_writer pw;
	wire_writer_init(&pw, pt, sizeof pt);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = ntp_packet_put_ef(&pw, NTS_NTP_EF_COOKIE, p->cookies[i].data, p->cookies[i].len);
	assert(rc < 0 || wire_written(&pw) == pt_len);
	if (rc < 0)
		goto fail;

	struct ntp_packet_header hdr = p->hdr;
	hdr.mode = NTP_PACKET_MODE_SERVER;
	hdr.origin_ts = req->hdr.transmit_ts;
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, &hdr);
	rc = ntp_packet_put_ef(&w, NTS_NTP_EF_UID, req->uid.data, req->uid.len);
	if (rc < 0)
		goto fail;
	rc = put_auth(&w, s2c, p->nonce, pt, pt_len);
	if (rc < 0)
		goto fail;
	assert(wire_written(&w) <= req->packet.len);
	if (cookies_sent)
		*cookies_sent = n;
	rc = (int)wire_written(&w);
fail:
	gnutls_memset(pt, 0, sizeof pt);
	return rc;
}

int nts_ntp_build_nak(const struct nts_ntp_request *req, const struct ntp_packet_header *hdr,
		      uint8_t *out, size_t cap)
{
	struct ntp_packet_header h = *hdr;
	h.mode = NTP_PACKET_MODE_SERVER;
	h.stratum = 0;
	h.refid = NTP_PACKET_REFID_NTSN;
	h.origin_ts = req->hdr.transmit_ts;
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, &h);
	int rc = ntp_packet_put_ef(&w, NTS_NTP_EF_UID, req->uid.data, req->uid.len);
	if (rc < 0)
		return rc;
	return (int)wire_written(&w);
}

/* Parses a response plaintext completely, so a malformed one yields no cookie at all. At most
 * NTS_NTP_MAX_COOKIES cookie spans (borrowed from pt) are kept in cookies. */
static int parse_response_pt(const uint8_t *pt, size_t pt_len, struct nts_ntp_span *uid,
			     struct nts_ntp_span *cookies, size_t *n_cookies)
{
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	int rc;
	*n_cookies = 0;
	uid->data = NULL;
	uid->len = 0;
	ntp_packet_ef_iter_init(&it, pt, pt_len, 0);
	while ((rc = ntp_packet_ef_next(&it, &ef)) > 0) {
		switch (ef.type) {
		case NTS_NTP_EF_UID:
			if (uid->data)
				return -EPROTO;
			uid->data = ef.body;
			uid->len = ef.body_len;
			break;
		case NTS_NTP_EF_COOKIE:
			if (ef.body_len == 0)
				return -EPROTO;
			if (ef.body_len > NTS_NTP_COOKIE_MAX) {
				log_debug("nts: skipping a %zu-byte cookie", ef.body_len);
				break;
			}
			if (*n_cookies < NTS_NTP_MAX_COOKIES) {
				cookies[*n_cookies].data = ef.body;
				cookies[*n_cookies].len = ef.body_len;
				(*n_cookies)++;
			}
			break;
		default:
			break;
		}
	}
	return rc;
}

int nts_ntp_verify_response(const uint8_t *pkt, size_t len, uint64_t sent_ts,
			    const uint8_t *uid, size_t uid_len, struct aead *s2c,
			    struct nts_ntp_response *out)
{
	out->n_cookies = 0;
	struct ntp_packet_header hdr;
	int rc = ntp_packet_parse_header(pkt, len, &hdr);
	if (rc < 0)
		return rc;
	if (hdr.mode != NTP_PACKET_MODE_SERVER || hdr.origin_ts != sent_ts)
		return -EPROTO;

	struct nts_ntp_span clear_uid = { NULL, 0 }, nonce = { NULL, 0 }, ct = { NULL, 0 };
	size_t auth_offset = 0;
	bool have_auth = false;
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	ntp_packet_ef_iter_init(&it, pkt, len, NTP_PACKET_HEADER_LEN);
	while ((rc = ntp_packet_ef_next(&it, &ef)) > 0) {
		if (have_auth)
			return -EPROTO;
		if (ef.type == NTS_NTP_EF_UID) {
			if (clear_uid.data)
				return -EPROTO;
			clear_uid.data = ef.body;
			clear_uid.len = ef.body_len;
		} else if (ef.type == NTS_NTP_EF_AUTH) {
			rc = parse_auth(&ef, &nonce, &ct);
			if (rc < 0)
				return rc;
			auth_offset = ef.offset;
			have_auth = true;
		}
	}
	if (rc < 0)
		return rc;
	if (clear_uid.data && !span_eq(clear_uid, uid, uid_len))
		return -EPROTO;
	if (!have_auth) {
		/* Unauthenticated by nature: only the UID ties a NAK to our request. */
		if (ntp_packet_kiss(&hdr) != NTP_PACKET_KISS_NTSN || !clear_uid.data)
			return -EPROTO;
		out->hdr = hdr;
		return NTS_NTP_RESPONSE_NAK;
	}

	uint8_t pt[PLAINTEXT_MAX];
	size_t pt_len;
	struct nts_ntp_span inner_uid, cookies[NTS_NTP_MAX_COOKIES];
	size_t n_cookies;
	rc = open_auth(s2c, pkt, auth_offset, nonce, ct, pt, &pt_len);
	if (rc < 0)
		goto fail;
	rc = parse_response_pt(pt, pt_len, &inner_uid, cookies, &n_cookies);
	if (rc < 0)
		goto fail;
	if (inner_uid.data && !span_eq(inner_uid, uid, uid_len)) {
		rc = -EPROTO;
		goto fail;
	}
	if (!clear_uid.data && !inner_uid.data) {
		rc = -EPROTO;
		goto fail;
	}
	for (size_t i = 0; i < n_cookies; i++) {
		memcpy(out->cookies[i].data, cookies[i].data, cookies[i].len);
		out->cookies[i].len = cookies[i].len;
	}
	out->n_cookies = n_cookies;
	out->hdr = hdr;
	rc = NTS_NTP_RESPONSE_OK;
fail:
	gnutls_memset(pt, 0, pt_len);
	return rc;
}
