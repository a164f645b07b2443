/* Fuzz harness: keyset_parse, the key file loader's parser, on arbitrary bytes.
 * Contract checked: 0 (version 2), KEYSET_FILE_OLD_FORMAT (version 1) or -EBADMSG; a keyset
 * exactly on success and a message naming the file on failure; what is accepted has the shape
 * the header promises (1 <= count <= KEYSET_MAX_KEYS, the exact size, ids in 32 bits, a store
 * time of at most KEYSET_FILE_MAX_TIME) and round-trips through keyset_serialize, the image
 * keyset_store writes: a version 2 input comes back byte for byte; a version 1 input comes back
 * as magic ‖ version 2 ‖ the input ‖ SHA-256, which parses again as version 2. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "keyset.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

#define NAME "fuzz-input"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keyset *ks = NULL;
	char err[512] = "";
	int rc = keyset_parse(data, size, NAME, &ks, err, sizeof err);
	if (rc < 0) {
		CHECK(rc == -EBADMSG);
		CHECK(ks == NULL);
		CHECK(strstr(err, NAME) != NULL);
		return 0;
	}
	CHECK(rc == 0 || rc == KEYSET_FILE_OLD_FORMAT);
	CHECK(ks != NULL);
	uint32_t count = keyset_count(ks);
	CHECK(count >= 1 && count <= KEYSET_MAX_KEYS);
	CHECK(keyset_primary_id(ks) >= keyset_id_offset(ks));
	CHECK((uint64_t)keyset_id_offset(ks) + count - 1 <= UINT32_MAX);
	CHECK(keyset_primary_id(ks) - keyset_id_offset(ks) < count);
	CHECK(keyset_created(ks) <= KEYSET_FILE_MAX_TIME);
	size_t len = keyset_file_len(ks);
	CHECK(len == KEYSET_FILE_LEN(count));
	if (rc == 0) {
		CHECK(size == len);
		CHECK(memcmp(data, KEYSET_FILE_MAGIC, KEYSET_FILE_MAGIC_LEN) == 0);
	} else {
		CHECK(size == KEYSET_FILE_V1_HEADER_LEN + (size_t)count * KEYSET_KEY_LEN);
		CHECK(data[0] == 0);
	}

	uint8_t *img = malloc(len);
	CHECK(img != NULL);
	CHECK(keyset_serialize(ks, keyset_created(ks), img, len) == (int)len);
	if (rc == 0) {
		CHECK(memcmp(img, data, size) == 0);
	} else {
		size_t body = KEYSET_FILE_HEADER_LEN - KEYSET_FILE_V1_HEADER_LEN;
		CHECK(memcmp(img, KEYSET_FILE_MAGIC, KEYSET_FILE_MAGIC_LEN) == 0);
		CHECK(memcmp(img + body, data, size) == 0);
		uint8_t digest[KEYSET_FILE_DIGEST_LEN];
		CHECK(gnutls_hash_fast(GNUTLS_DIG_SHA256, img, len - sizeof digest, digest) == 0);
		CHECK(memcmp(img + len - sizeof digest, digest, sizeof digest) == 0);
		struct keyset *again = NULL;
		CHECK(keyset_parse(img, len, NAME, &again, err, sizeof err) == 0);
		CHECK(keyset_created(again) == keyset_created(ks));
		CHECK(keyset_primary_id(again) == keyset_primary_id(ks));
		CHECK(keyset_count(again) == count);
		keyset_unref(again);
	}
	gnutls_memset(img, 0, len);
	free(img);
	keyset_unref(ks);
	return 0;
}
