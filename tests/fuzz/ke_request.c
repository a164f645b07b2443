/* Fuzz harness: ke_msg_parse_request for both pool numberings, then pool_proto_authorise on
 * every request that parses, with a small fixed token set and with and without a pinned
 * certificate. The whole input is one request (the parser owns the "no End / bytes after End"
 * rules).
 * Contract checked: 0 or -EPROTO; a refusal carries Error 0 or 1 and a reason and neither key
 * material nor token; an accepted request respects every bound of ke_msg.h (ids, deny names, key
 * length, token length) and its kind matches its records; a token is kept only when the
 * Authentication record is the first record, and is its body. The verdict (pool_proto.h): a
 * refusal is Error 1 with a reason; a plain request is always allowed and never kept alive;
 * Keep Alive only for an allowed pool shape; a pool shape is allowed only to a certificate or
 * an accepted token. After ke_msg_request_wipe no key or token byte is left. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "pool_proto.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

/* The token of the ke-records.txt vectors (so the seeds reach the token identity) and two
 * short ones the fuzzer can find by mutation. */
static const char *const accepted[] = {
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"pool",
	"t",
};

/* Built on first use and kept for the whole run, like the other harnesses' fixed keys. */
static const struct pool_tokens *token_set(void)
{
	static struct pool_tokens *set;
	if (!set) {
		CHECK(pool_tokens_new(&set) == 0);
		for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
			CHECK(pool_tokens_add(set, accepted[i], strlen(accepted[i])) == 0);
	}
	return set;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void check_no_secret(const struct ke_msg_request *req)
{
	CHECK(req->fixed_key_len == 0);
	CHECK(all_zero(req->fixed_c2s, sizeof req->fixed_c2s));
	CHECK(all_zero(req->fixed_s2c, sizeof req->fixed_s2c));
	CHECK(!req->has_token && req->token_len == 0);
	CHECK(all_zero(req->token, sizeof req->token));
}

static void check_name(const struct ke_msg_name *nm)
{
	CHECK(nm->len >= 1 && nm->len <= KE_MSG_NAME_MAX);
	CHECK(nm->name[nm->len] == '\0');
	for (size_t i = 0; i < nm->len; i++)
		CHECK(nm->name[i] > 0x20 && nm->name[i] < 0x7f);
}

/* A kept token is the body of the first record, an Authentication record in this numbering. */
static void check_token(const uint8_t *data, size_t size, enum ke_numbering n,
			const struct ke_msg_request *req)
{
	CHECK(!(req->has_token && req->token_misplaced));
	if (!req->has_token)
		return;
	CHECK(req->token_len >= 1 && req->token_len <= KE_MSG_TOKEN_MAX);
	CHECK(size >= 4 + req->token_len);
	uint16_t type = (uint16_t)(data[0] << 8 | data[1]);
	CHECK(ke_record_kind_of(n, type) == KE_RECORD_AUTH_TOKEN);
	CHECK((size_t)(data[2] << 8 | data[3]) == req->token_len);
	CHECK(memcmp(data + 4, req->token, req->token_len) == 0);
}

static void check_verdict(const struct ke_msg_request *req, bool cert_pinned)
{
	struct pool_proto_verdict v;
	memset(&v, 0xa5, sizeof v);
	pool_proto_authorise(token_set(), cert_pinned, req, &v);
	bool pool = req->kind != KE_MSG_REQUEST_PLAIN;
	if (!v.allowed) {
		CHECK(v.error == KE_MSG_ERROR_BAD_REQUEST);
		CHECK(v.reason != NULL && v.reason[0] != '\0');
	}
	CHECK(!v.keep_alive || (v.allowed && pool && req->keep_alive));
	if (!pool)
		CHECK(v.allowed && !v.keep_alive && !v.token_refused);
	if (cert_pinned)
		CHECK(v.allowed && v.identity == POOL_IDENTITY_CERTIFICATE && !v.token_refused);
	if (pool && v.allowed)
		CHECK(v.identity != POOL_IDENTITY_NONE);
	if (v.identity == POOL_IDENTITY_TOKEN)
		CHECK(!cert_pinned && pool && req->has_token);
	if (v.token_refused)
		CHECK(!v.allowed && (req->has_token || req->token_misplaced));
	if (pool && !cert_pinned && !req->has_token)
		CHECK(!v.allowed);
}

static void check_request(const uint8_t *data, size_t size, enum ke_numbering n)
{
	struct ke_msg_request req;
	struct ke_msg_reject rej = { .code = 0xffff, .reason = NULL };
	memset(&req, 0xa5, sizeof req); /* "fully rewritten": stale bytes must not survive */
	int rc = ke_msg_parse_request(data, size, n, &req, &rej);
	if (rc < 0) {
		CHECK(rc == -EPROTO);
		CHECK(rej.code == KE_MSG_ERROR_UNRECOGNIZED_CRITICAL ||
		      rej.code == KE_MSG_ERROR_BAD_REQUEST);
		CHECK(rej.reason != NULL && rej.reason[0] != '\0');
		check_no_secret(&req);
		if (size > KE_MSG_REQUEST_MAX) /* "we answer Error 1 above this" */
			CHECK(rej.code == KE_MSG_ERROR_BAD_REQUEST);
		return;
	}
	CHECK(rc == 0);
	CHECK(size <= KE_MSG_REQUEST_MAX);
	CHECK(req.n_protocols <= KE_MSG_MAX_IDS);
	CHECK(req.n_aeads <= KE_MSG_MAX_IDS);
	CHECK(req.n_deny <= KE_MSG_MAX_DENY);
	for (size_t i = 0; i < req.n_deny; i++) {
		check_name(&req.deny[i]);
		CHECK(ke_msg_request_denies(&req, req.deny[i].name));
		for (size_t j = 0; j < i; j++)
			CHECK(strcasecmp(req.deny[i].name, req.deny[j].name) != 0);
	}
	switch (req.kind) {
	case KE_MSG_REQUEST_PLAIN:
		CHECK(req.n_protocols >= 1);
		CHECK(req.fixed_key_len == 0);
		CHECK(!req.want_protocols && !req.want_algorithms);
		for (size_t i = 0; i < req.n_protocols; i++)
			if (req.protocols[i] == KE_MSG_PROTOCOL_NTPV4)
				CHECK(req.n_aeads >= 1);
		break;
	case KE_MSG_REQUEST_SUPPORT:
		CHECK(req.want_protocols || req.want_algorithms);
		CHECK(req.n_protocols == 0 && req.n_aeads == 0);
		CHECK(req.fixed_key_len == 0);
		break;
	case KE_MSG_REQUEST_FIXED_KEY:
		CHECK(req.n_protocols == 1 && req.n_aeads == 1);
		CHECK(req.fixed_key_len != 0 && req.fixed_key_len <= KE_MSG_KEY_MAX);
		CHECK(req.fixed_key_len == ke_msg_aead_key_len(req.aeads[0]));
		CHECK(!req.want_protocols && !req.want_algorithms);
		break;
	default:
		CHECK(0);
	}
	if (req.kind != KE_MSG_REQUEST_FIXED_KEY) {
		CHECK(all_zero(req.fixed_c2s, sizeof req.fixed_c2s));
		CHECK(all_zero(req.fixed_s2c, sizeof req.fixed_s2c));
	}
	check_token(data, size, n, &req);
	check_verdict(&req, false);
	check_verdict(&req, true);
	ke_msg_request_wipe(&req);
	check_no_secret(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_request(data, size, KE_NUMBERING_IANA);
	check_request(data, size, KE_NUMBERING_NTPDRS_V1);
	return 0;
}
