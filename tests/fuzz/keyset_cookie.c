/* Fuzz harness: keyset_open_cookie with a fixed keyset of two all-zero master keys, ids 1 and 2
 * (id 1, the primary, is the master key of tests/vectors/cookie.txt, so its cookie opens).
 * Contract checked: 0, -EBADMSG or -ENOKEY; an opened cookie has the length of its AEAD's cookie
 * and keys of that AEAD's length, and resealing its keys with its nonce under the same key gives
 * the same bytes back; a failure leaves no key material in the outputs. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "keyset.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

#define FIRST_ID 1

/* Built on first use and kept: the only state shared between inputs. */
static struct keyset *ks;

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (ks == NULL) {
		static const uint8_t keys[2 * KEYSET_KEY_LEN];
		if (keyset_from_keys(&ks, FIRST_ID, 0, 2, keys, 0) != 0)
			abort();
	}

	uint8_t c2s[AEAD_MAX_KEY_LEN], s2c[AEAD_MAX_KEY_LEN];
	uint16_t aead_id = 0xffff;
	size_t key_len = 0xffff;
	memset(c2s, 0, sizeof c2s);
	memset(s2c, 0, sizeof s2c);
	int rc = keyset_open_cookie(ks, data, size, &aead_id, c2s, s2c, &key_len);
	if (rc < 0) {
		CHECK(rc == -EBADMSG || rc == -ENOKEY);
		CHECK(all_zero(c2s, sizeof c2s) && all_zero(s2c, sizeof s2c));
		return 0;
	}
	CHECK(rc == 0);
	CHECK(aead_id == AEAD_AES_SIV_CMAC_256 || aead_id == AEAD_AES_SIV_CMAC_512);
	CHECK(key_len == aead_key_len(aead_id));
	CHECK(size == keyset_cookie_len(aead_id));
	CHECK(size >= KEYSET_COOKIE_HEADER_LEN);

	uint32_t id = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
		      data[3];
	CHECK(id >= FIRST_ID && id < FIRST_ID + 2);
	if (id == keyset_primary_id(ks)) {
		uint8_t again[KEYSET_COOKIE_MAX_LEN];
		int n = keyset_seal_cookie(ks, aead_id, c2s, s2c, key_len, data + 6, again,
					   sizeof again);
		CHECK(n > 0 && (size_t)n == size && memcmp(again, data, size) == 0);
	}
	return 0;
}
