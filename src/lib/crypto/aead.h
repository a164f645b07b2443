/* AES-SIV-CMAC (RFC 5297) for NTS: AEAD 15 (AES-SIV-CMAC-256, 32-byte key) and AEAD 17
 * (AES-SIV-CMAC-512, 64-byte key).
 *
 * A leaf module: no I/O, no state beyond a GnuTLS cipher handle, so the sans-I/O NTS code may use
 * it. The S2V input vector of aead_seal/aead_open is [ad, nonce, plaintext], which is what NTS
 * uses for both packets (RFC 8915 §5.6) and cookies. Output is tag(16) ‖ ciphertext.
 *
 * Threads: aead_seal and aead_open only read the handle (GnuTLS runs AES-SIV through nettle's
 * one-shot message functions, which take the key schedule const), so one keyset's handles serve
 * every worker at once; aead_rekey changes the handle and belongs to its one owner
 * (tests/unit/test_keyset.c seals and opens with one keyset from two threads). */
#ifndef NTSPOOL_AEAD_H
#define NTSPOOL_AEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AEAD_AES_SIV_CMAC_256 15
#define AEAD_AES_SIV_CMAC_512 17
#define AEAD_TAG_LEN 16
#define AEAD_MAX_KEY_LEN 64

/* Key length in bytes of an AEAD id, or 0 if we do not implement it. */
size_t aead_key_len(uint16_t aead_id);

static inline bool aead_supported(uint16_t aead_id)
{
	return aead_key_len(aead_id) != 0;
}

struct aead;

/* Creates a cipher for aead_id keyed with key (borrowed, copied into GnuTLS). *out is new (caller
 * frees with aead_free). -ENOTSUP for an unknown id, -EINVAL for a wrong key length, -ENOMEM. */
int aead_new(struct aead **out, uint16_t aead_id, const uint8_t *key, size_t key_len);

/* Replaces the key, keeping the handle when the algorithm is unchanged (the hot path re-keys a
 * handle per packet instead of creating one). Same errors as aead_new; on error the handle keeps
 * no usable key and must be re-keyed before use. */
int aead_rekey(struct aead *a, uint16_t aead_id, const uint8_t *key, size_t key_len);

void aead_free(struct aead *a);

uint16_t aead_id(const struct aead *a);

/* Seals pt into out (tag ‖ ciphertext, pt_len + 16 bytes). nonce_len must be > 0 (GnuTLS aborts
 * the process on an empty nonce, so we refuse it first). Returns the bytes written, -EINVAL for
 * an empty nonce, -EMSGSIZE if out_cap is too small, -EIO on a GnuTLS failure.
 * pt and out may not overlap. */
int aead_seal(struct aead *a, const uint8_t *nonce, size_t nonce_len, const uint8_t *ad,
	      size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *out, size_t out_cap);

/* Opens ct (tag ‖ ciphertext) into pt. Returns the plaintext length, -EBADMSG when
 * authentication fails or ct is shorter than the tag, -EINVAL for an empty nonce, -EMSGSIZE if
 * pt_cap is too small. On failure pt holds no plaintext. */
int aead_open(struct aead *a, const uint8_t *nonce, size_t nonce_len, const uint8_t *ad,
	      size_t ad_len, const uint8_t *ct, size_t ct_len, uint8_t *pt, size_t pt_cap);

#endif
