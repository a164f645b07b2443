/* Fuzz harness: ke_msg_parse_response, for both pool numberings and every request kind.
 * Contract checked: one of the documented return codes; -EMSGSIZE only over
 * KE_MSG_RESPONSE_MAX; -EREMOTEIO only with an Error or Warning recorded; an accepted response
 * respects every bound of ke_msg.h and has the shape expected for the kind asked. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ke_msg.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

static void check_name(const struct ke_msg_name *nm)
{
	CHECK(nm->len >= 1 && nm->len <= KE_MSG_NAME_MAX);
	CHECK(nm->name[nm->len] == '\0');
	for (size_t i = 0; i < nm->len; i++)
		CHECK(nm->name[i] > 0x20 && nm->name[i] < 0x7f);
}

static void check_response(const uint8_t *data, size_t size, enum ke_numbering n,
			   enum ke_msg_request_kind asked)
{
	/* On the heap so ASan sees a write past its end. */
	struct ke_msg_response *resp = malloc(sizeof *resp);
	CHECK(resp != NULL);
	memset(resp, 0xa5, sizeof *resp);
	int rc = ke_msg_parse_response(data, size, n, asked, resp);
	CHECK(rc == 0 || rc == -EREMOTEIO || rc == -EPROTO || rc == -EMSGSIZE || rc == -EBADMSG);
	if (rc == -EMSGSIZE)
		CHECK(size > KE_MSG_RESPONSE_MAX);
	if (rc == -EREMOTEIO)
		CHECK(resp->has_error || resp->n_warnings > 0);
	if (rc == 0 || rc == -EREMOTEIO) {
		CHECK(resp->n_cookies <= KE_MSG_MAX_COOKIES);
		CHECK(resp->extra_cookies == 0 || resp->n_cookies == KE_MSG_MAX_COOKIES);
		for (size_t i = 0; i < resp->n_cookies; i++)
			CHECK(resp->cookies[i].len >= 1 &&
			      resp->cookies[i].len <= KE_MSG_COOKIE_MAX);
		CHECK(resp->n_warnings <= KE_MSG_MAX_WARNINGS);
		CHECK(resp->n_supported_protocols <= KE_MSG_MAX_IDS);
		CHECK(resp->n_supported_algorithms <= KE_MSG_MAX_IDS);
		if (resp->has_server)
			check_name(&resp->server);
		CHECK(!resp->has_protocol || resp->has_protocol_record);
		CHECK(!resp->has_aead || resp->has_aead_record);
	}
	if (rc == 0) {
		CHECK(size <= KE_MSG_RESPONSE_MAX);
		CHECK(!resp->has_error && resp->n_warnings == 0);
		if (asked == KE_MSG_REQUEST_SUPPORT) {
			CHECK(!resp->has_protocol_record && !resp->has_aead_record);
			CHECK(resp->n_cookies == 0);
		} else {
			CHECK(resp->has_protocol_record);
			if (resp->has_protocol && resp->protocol == KE_MSG_PROTOCOL_NTPV4) {
				CHECK(resp->has_aead_record);
				if (resp->has_aead)
					CHECK(resp->n_cookies >= 1);
			}
		}
	}
	free(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum ke_numbering nums[] = { KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1 };
	static const enum ke_msg_request_kind kinds[] = {
		KE_MSG_REQUEST_PLAIN, KE_MSG_REQUEST_SUPPORT, KE_MSG_REQUEST_FIXED_KEY
	};
	for (size_t i = 0; i < 2; i++)
		for (size_t k = 0; k < 3; k++)
			check_response(data, size, nums[i], kinds[k]);
	return 0;
}
