#include "ke_msg.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <strings.h>

size_t ke_msg_aead_key_len(uint16_t aead_id)
{
	switch (aead_id) {
	case 15:
		return 32;
	case 17:
		return 64;
	default:
		return 0;
	}
}

/* Names go into logs and status output and are compared as DNS names, so only visible ASCII
 * is allowed: no space, no control byte, nothing a terminal would interpret. */
static bool valid_name(const void *p, size_t len)
{
	const uint8_t *s = p;
	if (len == 0 || len > KE_MSG_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

static void set_name(struct ke_msg_name *dst, const uint8_t *src, size_t len)
{
	memcpy(dst->name, src, len);
	dst->name[len] = '\0';
	dst->len = len;
}

/* Reads a u16 list body into out (room for KE_MSG_MAX_IDS). -EBADMSG for an odd length,
 * -E2BIG for more ids than fit. */
static int read_ids(const struct ke_record *rec, uint16_t *out, size_t *count)
{
	if (rec->len % 2)
		return -EBADMSG;
	if (rec->len / 2 > KE_MSG_MAX_IDS)
		return -E2BIG;
	struct wire_reader r;
	wire_reader_init(&r, rec->body, rec->len);
	for (size_t i = 0; i < rec->len / 2u; i++)
		out[i] = wire_get_u16(&r);
	*count = rec->len / 2u;
	return wire_error(&r);
}

static uint16_t read_u16(const struct ke_record *rec)
{
	struct wire_reader r;
	wire_reader_init(&r, rec->body, rec->len);
	return wire_get_u16(&r);
}

int ke_msg_frame(const void *buf, size_t len, size_t cap)
{
	if (cap > KE_MSG_RESPONSE_MAX)
		return -EINVAL;
	struct wire_reader r;
	wire_reader_init(&r, buf, len);
	for (;;) {
		size_t start = wire_offset(&r);
		if (start + KE_RECORD_HEADER_LEN > cap)
			return -EMSGSIZE;
		bool critical;
		uint16_t type, blen;
		if (ke_record_read_header(&r, &critical, &type, &blen) < 0)
			return 0;
		size_t end = start + KE_RECORD_HEADER_LEN + blen;
		if (end > cap)
			return -EMSGSIZE;
		/* End has the same type in both numberings. */
		if (ke_record_kind_of(KE_NUMBERING_IANA, type) == KE_RECORD_END) {
			if (blen != 0)
				return -EBADMSG;
			return (int)end;
		}
		if (!wire_skip(&r, blen))
			return 0;
	}
}

/* ---- Requests ----------------------------------------------------------------------------- */

struct req_state {
	bool seen_protocols, seen_aeads, seen_fixed;
	bool unknown_critical;
	bool ended;
	const char *bad; /* first Error 1 reason */
};

static void bad(struct req_state *st, const char *why)
{
	if (!st->bad)
		st->bad = why;
}

/* The first record may carry the pool's token; any other Authentication record spoils it. */
static void req_token(struct ke_msg_request *req, const struct ke_record *rec, bool first)
{
	if (!first || req->has_token || req->token_misplaced || rec->len == 0 ||
	    rec->len > KE_MSG_TOKEN_MAX) {
		/* A spoiled token is not kept either: it can never authorise. */
		gnutls_memset(req->token, 0, sizeof req->token);
		req->token_len = 0;
		req->token_misplaced = true;
		req->has_token = false;
		return;
	}
	memcpy(req->token, rec->body, rec->len);
	req->token_len = rec->len;
	req->has_token = true;
}

static void req_list(struct req_state *st, const struct ke_record *rec, bool *seen,
		     uint16_t *ids, size_t *count, const char *what)
{
	if (*seen) {
		bad(st, what);
		return;
	}
	*seen = true;
	int rc = read_ids(rec, ids, count);
	if (rc == -E2BIG)
		bad(st, "too many ids in a list");
	else if (rc < 0)
		bad(st, "odd list length");
	else if (*count == 0)
		bad(st, "empty Next Protocol or AEAD list");
}

static void req_deny(struct req_state *st, struct ke_msg_request *req, const struct ke_record *rec)
{
	if (!valid_name(rec->body, rec->len)) {
		bad(st, "invalid NTP Server Deny name");
		return;
	}
	for (size_t i = 0; i < req->n_deny; i++)
		if (req->deny[i].len == rec->len &&
		    strncasecmp(req->deny[i].name, (const char *)rec->body, rec->len) == 0)
			return;
	if (req->n_deny == KE_MSG_MAX_DENY) {
		bad(st, "too many NTP Server Deny names");
		return;
	}
	set_name(&req->deny[req->n_deny++], rec->body, rec->len);
}

static void req_fixed(struct req_state *st, struct ke_msg_request *req,
		      const struct ke_record *rec)
{
	if (st->seen_fixed) {
		bad(st, "repeated Fixed Key Request");
		return;
	}
	st->seen_fixed = true;
	size_t half = rec->len / 2u;
	if (rec->len == 0 || rec->len % 2 || half > KE_MSG_KEY_MAX) {
		bad(st, "bad Fixed Key Request length");
		return;
	}
	memcpy(req->fixed_c2s, rec->body, half);
	memcpy(req->fixed_s2c, rec->body + half, half);
	req->fixed_key_len = half;
}

/* A flag record: empty body, at most once. */
static void req_flag(struct req_state *st, const struct ke_record *rec, bool *flag)
{
	if (rec->len != 0)
		bad(st, "Keep Alive or Supported list request with a body");
	else if (*flag)
		bad(st, "repeated Keep Alive or Supported list request");
	*flag = true;
}

static void req_record(struct req_state *st, struct ke_msg_request *req,
		       const struct ke_record *rec, bool first)
{
	switch (rec->kind) {
	case KE_RECORD_END:
		st->ended = true;
		if (rec->len != 0)
			bad(st, "End of Message with a body");
		break;
	case KE_RECORD_NEXT_PROTOCOL:
		req_list(st, rec, &st->seen_protocols, req->protocols, &req->n_protocols,
			 "repeated Next Protocol");
		break;
	case KE_RECORD_AEAD:
		req_list(st, rec, &st->seen_aeads, req->aeads, &req->n_aeads, "repeated AEAD");
		break;
	case KE_RECORD_ERROR:
	case KE_RECORD_WARNING:
	case KE_RECORD_NEW_COOKIE:
		bad(st, "Error, Warning or New Cookie from a client");
		break;
	case KE_RECORD_SERVER:
		break;
	case KE_RECORD_AUTH_TOKEN:
		req_token(req, rec, first);
		break;
	case KE_RECORD_PORT:
		if (rec->len != 2)
			bad(st, "bad NTPv4 Port length");
		break;
	case KE_RECORD_KEEP_ALIVE:
		req_flag(st, rec, &req->keep_alive);
		break;
	case KE_RECORD_SUPPORTED_PROTOCOLS:
		req_flag(st, rec, &req->want_protocols);
		break;
	case KE_RECORD_SUPPORTED_ALGORITHMS:
		req_flag(st, rec, &req->want_algorithms);
		break;
	case KE_RECORD_FIXED_KEY:
		req_fixed(st, req, rec);
		break;
	case KE_RECORD_SERVER_DENY:
		req_deny(st, req, rec);
		break;
	case KE_RECORD_UNKNOWN:
		if (rec->critical)
			st->unknown_critical = true;
		else
			req->ignored++;
		break;
	}
}

static bool offers(const uint16_t *ids, size_t n, uint16_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* The §3.1–§3.3 shape rules, once every record is known. */
static void req_shape(struct req_state *st, struct ke_msg_request *req)
{
	bool support = req->want_protocols || req->want_algorithms;
	if (st->seen_fixed) {
		req->kind = KE_MSG_REQUEST_FIXED_KEY;
		if (support)
			bad(st, "Fixed Key Request with a Supported list");
		else if (req->n_protocols != 1 || req->n_aeads != 1)
			bad(st, "Fixed Key Request without exactly one protocol and one AEAD");
		else if (req->fixed_key_len != ke_msg_aead_key_len(req->aeads[0]))
			bad(st, "Fixed Key length does not match the AEAD");
	} else if (support) {
		req->kind = KE_MSG_REQUEST_SUPPORT;
		if (st->seen_protocols || st->seen_aeads)
			bad(st, "Supported list request with Next Protocol or AEAD");
	} else {
		req->kind = KE_MSG_REQUEST_PLAIN;
		if (!st->seen_protocols)
			bad(st, "no Next Protocol");
		else if (offers(req->protocols, req->n_protocols, KE_MSG_PROTOCOL_NTPV4) &&
			 !st->seen_aeads)
			bad(st, "NTPv4 offered without AEAD");
	}
}

int ke_msg_parse_request(const uint8_t *buf, size_t len, enum ke_numbering n,
			 struct ke_msg_request *req, struct ke_msg_reject *rej)
{
	struct req_state st = { 0 };
	struct ke_record_iter it;
	struct ke_record rec;
	int rc = 0;
	memset(req, 0, sizeof *req);
	if (len > KE_MSG_REQUEST_MAX) {
		bad(&st, "request over 4096 bytes");
		goto fail;
	}

	ke_record_iter_init(&it, buf, len, n);
	for (bool first = true; !st.ended && (rc = ke_record_iter_next(&it, &rec)) == 1;
	     first = false)
		req_record(&st, req, &rec, first);
	if (!st.ended)
		bad(&st, rc < 0 ? "record overruns the message" : "no End of Message");
	else if (ke_record_iter_offset(&it) != len)
		bad(&st, "data after End of Message");
	if (st.unknown_critical)
		goto fail;
	req_shape(&st, req);
	if (st.bad)
		goto fail;
	return 0;

fail:
	ke_msg_request_wipe(req);
	if (st.unknown_critical) {
		rej->code = KE_MSG_ERROR_UNRECOGNIZED_CRITICAL;
		rej->reason = "unrecognised critical record";
	} else {
		rej->code = KE_MSG_ERROR_BAD_REQUEST;
		rej->reason = st.bad;
	}
	return -EPROTO;
}

bool ke_msg_request_denies(const struct ke_msg_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_deny; i++)
		if (strcasecmp(req->deny[i].name, name) == 0)
			return true;
	return false;
}

void ke_msg_request_wipe(struct ke_msg_request *req)
{
	gnutls_memset(req->fixed_c2s, 0, sizeof req->fixed_c2s);
	gnutls_memset(req->fixed_s2c, 0, sizeof req->fixed_s2c);
	req->fixed_key_len = 0;
	gnutls_memset(req->token, 0, sizeof req->token);
	req->token_len = 0;
	req->has_token = false;
}

/* ---- Responses ---------------------------------------------------------------------------- */

struct resp_state {
	bool unknown_critical;
	bool malformed;
	bool ended;
};

/* A single u16 or empty list record (Next Protocol, AEAD in a response). */
static void resp_choice(struct resp_state *st, const struct ke_record *rec, bool *seen,
			bool *has, uint16_t *value)
{
	if (*seen || (rec->len != 0 && rec->len != 2)) {
		st->malformed = true;
		return;
	}
	*seen = true;
	*has = rec->len == 2;
	*value = *has ? read_u16(rec) : 0;
}

static void resp_single_u16(struct resp_state *st, const struct ke_record *rec, bool *seen,
			    uint16_t *value)
{
	if (*seen || rec->len != 2) {
		st->malformed = true;
		return;
	}
	*seen = true;
	*value = read_u16(rec);
}

static void resp_cookie(struct resp_state *st, struct ke_msg_response *resp,
			const struct ke_record *rec)
{
	if (rec->len == 0 || rec->len > KE_MSG_COOKIE_MAX) {
		st->malformed = true;
		return;
	}
	if (resp->n_cookies == KE_MSG_MAX_COOKIES) {
		resp->extra_cookies++;
		return;
	}
	struct ke_msg_cookie *c = &resp->cookies[resp->n_cookies++];
	memcpy(c->data, rec->body, rec->len);
	c->len = rec->len;
}

static void resp_algorithms(struct resp_state *st, struct ke_msg_response *resp,
			    const struct ke_record *rec)
{
	if (resp->has_supported_algorithms || rec->len % 4 ||
	    rec->len / 4u > KE_MSG_MAX_IDS) {
		st->malformed = true;
		return;
	}
	resp->has_supported_algorithms = true;
	struct wire_reader r;
	wire_reader_init(&r, rec->body, rec->len);
	for (size_t i = 0; i < rec->len / 4u; i++) {
		resp->supported_algorithms[i].id = wire_get_u16(&r);
		resp->supported_algorithms[i].key_len = wire_get_u16(&r);
	}
	resp->n_supported_algorithms = rec->len / 4u;
}

static void resp_record(struct resp_state *st, struct ke_msg_response *resp,
			const struct ke_record *rec)
{
	switch (rec->kind) {
	case KE_RECORD_END:
		st->ended = true;
		st->malformed |= rec->len != 0;
		break;
	case KE_RECORD_NEXT_PROTOCOL:
		resp_choice(st, rec, &resp->has_protocol_record, &resp->has_protocol,
			    &resp->protocol);
		break;
	case KE_RECORD_AEAD:
		resp_choice(st, rec, &resp->has_aead_record, &resp->has_aead, &resp->aead);
		break;
	case KE_RECORD_ERROR:
		resp_single_u16(st, rec, &resp->has_error, &resp->error);
		break;
	case KE_RECORD_WARNING:
		if (rec->len != 2 || resp->n_warnings == KE_MSG_MAX_WARNINGS)
			st->malformed = true;
		else
			resp->warnings[resp->n_warnings++] = read_u16(rec);
		break;
	case KE_RECORD_NEW_COOKIE:
		resp_cookie(st, resp, rec);
		break;
	case KE_RECORD_SERVER:
		if (resp->has_server || !valid_name(rec->body, rec->len))
			st->malformed = true;
		else {
			resp->has_server = true;
			set_name(&resp->server, rec->body, rec->len);
		}
		break;
	case KE_RECORD_PORT:
		resp_single_u16(st, rec, &resp->has_port, &resp->port);
		break;
	case KE_RECORD_KEEP_ALIVE:
		st->malformed |= rec->len != 0 || resp->keep_alive;
		resp->keep_alive = true;
		break;
	case KE_RECORD_SUPPORTED_PROTOCOLS:
		if (resp->has_supported_protocols ||
		    read_ids(rec, resp->supported_protocols, &resp->n_supported_protocols) < 0)
			st->malformed = true;
		resp->has_supported_protocols = true;
		break;
	case KE_RECORD_SUPPORTED_ALGORITHMS:
		resp_algorithms(st, resp, rec);
		break;
	case KE_RECORD_FIXED_KEY:
		st->malformed = true;
		break;
	case KE_RECORD_SERVER_DENY:
	case KE_RECORD_AUTH_TOKEN:
		resp->ignored++;
		break;
	case KE_RECORD_UNKNOWN:
		if (rec->critical)
			st->unknown_critical = true;
		else
			resp->ignored++;
		break;
	}
}

static bool resp_shape_ok(const struct ke_msg_response *resp, enum ke_msg_request_kind asked)
{
	if (asked == KE_MSG_REQUEST_SUPPORT)
		return !resp->has_protocol_record && !resp->has_aead_record &&
		       resp->n_cookies == 0 && resp->extra_cookies == 0;
	if (!resp->has_protocol_record)
		return false;
	if (!resp->has_protocol || resp->protocol != KE_MSG_PROTOCOL_NTPV4)
		return true;
	if (!resp->has_aead_record)
		return false;
	return !resp->has_aead || resp->n_cookies > 0;
}

int ke_msg_parse_response(const uint8_t *buf, size_t len, enum ke_numbering n,
			  enum ke_msg_request_kind asked, struct ke_msg_response *resp)
{
	struct resp_state st = { 0 };
	memset(resp, 0, sizeof *resp);
	if (len > KE_MSG_RESPONSE_MAX)
		return -EMSGSIZE;

	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, buf, len, n);
	while (!st.ended && ke_record_iter_next(&it, &rec) == 1)
		resp_record(&st, resp, &rec);
	if (st.unknown_critical)
		return -EPROTO;
	if (!st.ended || ke_record_iter_offset(&it) != len || st.malformed)
		return -EBADMSG;
	if (resp->has_error || resp->n_warnings > 0)
		return -EREMOTEIO;
	if (!resp_shape_ok(resp, asked))
		return -EBADMSG;
	return 0;
}

/* ---- Builders ----------------------------------------------------------------------------- */

/* Keeps the first failure of a sequence of record writes. */
static void keep(int *err, int rc)
{
	if (rc < 0 && *err == 0)
		*err = rc;
}

static int finish(struct wire_writer *w, enum ke_numbering n, int err)
{
	keep(&err, ke_record_put(w, n, KE_RECORD_END, NULL, 0));
	return err < 0 ? err : (int)wire_written(w);
}

static bool valid_ids(size_t count)
{
	return count >= 1 && count <= KE_MSG_MAX_IDS;
}

int ke_msg_build_request(void *buf, size_t cap, enum ke_numbering n, const uint16_t *protocols,
			 size_t n_protocols, const uint16_t *aeads, size_t n_aeads,
			 const char *const *deny, size_t n_deny)
{
	if (!valid_ids(n_protocols) || n_aeads > KE_MSG_MAX_IDS || n_deny > KE_MSG_MAX_DENY)
		return -EINVAL;
	if (n_aeads == 0 && offers(protocols, n_protocols, KE_MSG_PROTOCOL_NTPV4))
		return -EINVAL;
	for (size_t i = 0; i < n_deny; i++)
		if (!valid_name(deny[i], strlen(deny[i])))
			return -EINVAL;

	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_NEXT_PROTOCOL, protocols, n_protocols));
	if (n_aeads > 0)
		keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_AEAD, aeads, n_aeads));
	for (size_t i = 0; i < n_deny; i++)
		keep(&err, ke_record_put(&w, n, KE_RECORD_SERVER_DENY, deny[i], strlen(deny[i])));
	return finish(&w, n, err);
}

/* The Authentication record that opens a pool request, when there is a token. */
static int put_token(struct wire_writer *w, enum ke_numbering n, const char *token)
{
	if (!token)
		return 0;
	size_t len = strlen(token);
	if (len == 0 || len > KE_MSG_TOKEN_MAX)
		return -EINVAL;
	return ke_record_put(w, n, KE_RECORD_AUTH_TOKEN, token, len);
}

int ke_msg_build_support_request(void *buf, size_t cap, enum ke_numbering n, const char *token,
				 bool protocols, bool algorithms, bool keep_alive)
{
	if (!protocols && !algorithms)
		return -EINVAL;
	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	keep(&err, put_token(&w, n, token));
	if (protocols)
		keep(&err, ke_record_put(&w, n, KE_RECORD_SUPPORTED_PROTOCOLS, NULL, 0));
	if (algorithms)
		keep(&err, ke_record_put(&w, n, KE_RECORD_SUPPORTED_ALGORITHMS, NULL, 0));
	if (keep_alive)
		keep(&err, ke_record_put(&w, n, KE_RECORD_KEEP_ALIVE, NULL, 0));
	return finish(&w, n, err);
}

int ke_msg_build_fixed_key_request(void *buf, size_t cap, enum ke_numbering n, const char *token,
				   const uint8_t *c2s, const uint8_t *s2c, size_t key_len,
				   uint16_t protocol, uint16_t aead, bool keep_alive)
{
	if (key_len == 0 || key_len != ke_msg_aead_key_len(aead))
		return -EINVAL;
	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	keep(&err, put_token(&w, n, token));
	keep(&err, ke_record_put_header(&w, n, KE_RECORD_FIXED_KEY, 2 * key_len));
	wire_put_bytes(&w, c2s, key_len);
	wire_put_bytes(&w, s2c, key_len);
	keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_NEXT_PROTOCOL, &protocol, 1));
	keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_AEAD, &aead, 1));
	if (keep_alive)
		keep(&err, ke_record_put(&w, n, KE_RECORD_KEEP_ALIVE, NULL, 0));
	return finish(&w, n, err);
}

int ke_msg_build_success(void *buf, size_t cap, enum ke_numbering n,
			 const struct ke_msg_success *s)
{
	if (s->n_cookies == 0 || s->n_cookies > KE_MSG_MAX_COOKIES)
		return -EINVAL;
	for (size_t i = 0; i < s->n_cookies; i++)
		if (s->cookies[i].len == 0 || s->cookies[i].len > KE_MSG_COOKIE_MAX)
			return -EINVAL;
	if (s->server && !valid_name(s->server, strlen(s->server)))
		return -EINVAL;

	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_NEXT_PROTOCOL, &s->protocol, 1));
	keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_AEAD, &s->aead, 1));
	for (size_t i = 0; i < s->n_cookies; i++)
		keep(&err, ke_record_put(&w, n, KE_RECORD_NEW_COOKIE, s->cookies[i].data,
					 s->cookies[i].len));
	if (s->port != 0 && s->port != KE_MSG_PORT_DEFAULT)
		keep(&err, ke_record_put_u16(&w, n, KE_RECORD_PORT, s->port));
	if (s->server)
		keep(&err, ke_record_put(&w, n, KE_RECORD_SERVER, s->server, strlen(s->server)));
	if (s->keep_alive)
		keep(&err, ke_record_put(&w, n, KE_RECORD_KEEP_ALIVE, NULL, 0));
	return finish(&w, n, err);
}

int ke_msg_build_no_overlap(void *buf, size_t cap, enum ke_numbering n, bool has_protocol,
			    uint16_t protocol)
{
	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_NEXT_PROTOCOL, &protocol,
					  has_protocol ? 1 : 0));
	if (has_protocol)
		keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_AEAD, NULL, 0));
	return finish(&w, n, err);
}

int ke_msg_build_error(void *buf, size_t cap, enum ke_numbering n, uint16_t code)
{
	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	keep(&err, ke_record_put_u16(&w, n, KE_RECORD_ERROR, code));
	return finish(&w, n, err);
}

int ke_msg_build_support_response(void *buf, size_t cap, enum ke_numbering n,
				  const struct ke_msg_support *s)
{
	if ((s->protocols && s->n_protocols > KE_MSG_MAX_IDS) ||
	    (s->algorithms && s->n_algs > KE_MSG_MAX_IDS))
		return -EINVAL;
	struct wire_writer w;
	int err = 0;
	wire_writer_init(&w, buf, cap);
	if (s->protocols)
		keep(&err, ke_record_put_u16_list(&w, n, KE_RECORD_SUPPORTED_PROTOCOLS,
						  s->protocol_ids, s->n_protocols));
	if (s->algorithms) {
		keep(&err, ke_record_put_header(&w, n, KE_RECORD_SUPPORTED_ALGORITHMS,
						4 * s->n_algs));
		for (size_t i = 0; i < s->n_algs; i++) {
			wire_put_u16(&w, s->algs[i].id);
			wire_put_u16(&w, s->algs[i].key_len);
		}
	}
	if (s->keep_alive)
		keep(&err, ke_record_put(&w, n, KE_RECORD_KEEP_ALIVE, NULL, 0));
	return finish(&w, n, err);
}
