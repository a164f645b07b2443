/* Fuzz harness: the NTS-KE record iterator (ke_record_iter_*), for both pool numberings.
 * Contract checked: every record returned lies inside the buffer, right after the previous one;
 * its kind is ke_record_kind_of(type) and the type has no C bit; the end is reported exactly at
 * the end of the buffer; errors are sticky; rewriting the records with ke_record_put_raw
 * reproduces the input bytes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ke_record.h"
#include "wire.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

static void check_iter(const uint8_t *data, size_t size, enum ke_numbering n)
{
	uint8_t *copy = malloc(size ? size : 1);
	CHECK(copy != NULL);
	struct wire_writer w;
	wire_writer_init(&w, copy, size);

	struct ke_record_iter it;
	struct ke_record rec;
	size_t off = 0;
	int rc;
	ke_record_iter_init(&it, data, size, n);
	while ((rc = ke_record_iter_next(&it, &rec)) == 1) {
		CHECK(rec.body == data + off + KE_RECORD_HEADER_LEN);
		CHECK(off + KE_RECORD_HEADER_LEN + rec.len <= size);
		CHECK((rec.type & KE_RECORD_CRITICAL) == 0);
		CHECK(rec.kind == ke_record_kind_of(n, rec.type));
		CHECK(ke_record_kind_name(rec.kind) != NULL);
		off += KE_RECORD_HEADER_LEN + rec.len;
		CHECK(ke_record_iter_offset(&it) == off);
		CHECK(ke_record_put_raw(&w, rec.critical, rec.type, rec.body, rec.len) == 0);
		if (rec.kind != KE_RECORD_UNKNOWN) {
			uint16_t t;
			CHECK(ke_record_wire_type(n, rec.kind, &t) == 0);
			CHECK((t & KE_RECORD_TYPE_MASK) == rec.type);
		}
	}
	if (rc == 0) {
		CHECK(off == size);
		CHECK(ke_record_iter_next(&it, &rec) == 0);
	} else {
		CHECK(rc == -EBADMSG);
		CHECK(size - off > 0);
		CHECK(ke_record_iter_next(&it, &rec) == -EBADMSG);
	}
	CHECK(wire_writer_error(&w) == 0);
	CHECK(wire_written(&w) == off);
	CHECK(memcmp(copy, data, off) == 0);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_iter(data, size, KE_NUMBERING_IANA);
	check_iter(data, size, KE_NUMBERING_NTPDRS_V1);
	return 0;
}
