/* Fuzz harness: ke_msg_frame (NTS-KE stream framing), with the request and the response cap.
 * Contract checked: the result is one of N > 0, 0, -EMSGSIZE, -EBADMSG; a framed length never
 * exceeds the input or the cap; a framed message is a whole number of records ending with End,
 * and more bytes never un-frame it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "ke_msg.h"
#include "ke_record.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

static void check_frame(const uint8_t *data, size_t size, size_t cap)
{
	int rc = ke_msg_frame(data, size, cap);
	CHECK(rc == 0 || rc > 0 || rc == -EMSGSIZE || rc == -EBADMSG);
	if (rc <= 0)
		return;
	size_t n = (size_t)rc;
	CHECK(n <= size);
	CHECK(n <= cap);

	/* The framed bytes iterate cleanly and the last record is End. */
	struct ke_record_iter it;
	struct ke_record rec;
	enum ke_record_kind last = KE_RECORD_UNKNOWN;
	int r;
	ke_record_iter_init(&it, data, n, KE_NUMBERING_IANA);
	while ((r = ke_record_iter_next(&it, &rec)) == 1)
		last = rec.kind;
	CHECK(r == 0);
	CHECK(last == KE_RECORD_END);
	CHECK(ke_record_iter_offset(&it) == n);

	/* Framing looks at the prefix only: the same bytes frame the same way alone. */
	CHECK(ke_msg_frame(data, n, cap) == rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_frame(data, size, KE_MSG_REQUEST_MAX);
	check_frame(data, size, KE_MSG_RESPONSE_MAX);
	CHECK(ke_msg_frame(data, size, KE_MSG_RESPONSE_MAX + 1) == -EINVAL);
	return 0;
}
