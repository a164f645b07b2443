/* Fuzz harness: ke_msg_parse_request, for both pool numberings and for a peer that is and is
 * not an authorised pool. The whole input is one request (the parser owns the "no End / bytes
 * after End" rules).
 * Contract checked: 0 or -EPROTO; a refusal carries Error 0 or 1 and a reason and no key
 * material; an accepted request respects every bound of ke_msg.h (ids, deny names, key length)
 * and has a shape allowed to its peer (Supported lists, Fixed Key and Keep Alive only from an
 * authorised pool). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ke_msg.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void check_name(const struct ke_msg_name *nm)
{
	CHECK(nm->len >= 1 && nm->len <= KE_MSG_NAME_MAX);
	CHECK(nm->name[nm->len] == '\0');
	for (size_t i = 0; i < nm->len; i++)
		CHECK(nm->name[i] > 0x20 && nm->name[i] < 0x7f);
}

static void check_request(const uint8_t *data, size_t size, enum ke_numbering n, bool authorised)
{
	struct ke_msg_request req;
	struct ke_msg_reject rej = { .code = 0xffff, .reason = NULL };
	memset(&req, 0xa5, sizeof req); /* "fully rewritten": stale bytes must not survive */
	int rc = ke_msg_parse_request(data, size, n, authorised, &req, &rej);
	if (rc < 0) {
		CHECK(rc == -EPROTO);
		CHECK(rej.code == KE_MSG_ERROR_UNRECOGNIZED_CRITICAL ||
		      rej.code == KE_MSG_ERROR_BAD_REQUEST);
		CHECK(rej.reason != NULL && rej.reason[0] != '\0');
		CHECK(all_zero(req.fixed_c2s, sizeof req.fixed_c2s));
		CHECK(all_zero(req.fixed_s2c, sizeof req.fixed_s2c));
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
	CHECK(!req.keep_alive || authorised);
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
		CHECK(authorised);
		CHECK(req.want_protocols || req.want_algorithms);
		CHECK(req.n_protocols == 0 && req.n_aeads == 0);
		CHECK(req.fixed_key_len == 0);
		break;
	case KE_MSG_REQUEST_FIXED_KEY:
		CHECK(authorised);
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
	ke_msg_request_wipe(&req);
	CHECK(all_zero(req.fixed_c2s, sizeof req.fixed_c2s));
	CHECK(all_zero(req.fixed_s2c, sizeof req.fixed_s2c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_request(data, size, KE_NUMBERING_IANA, false);
	check_request(data, size, KE_NUMBERING_IANA, true);
	check_request(data, size, KE_NUMBERING_NTPDRS_V1, false);
	check_request(data, size, KE_NUMBERING_NTPDRS_V1, true);
	return 0;
}
