/* Test-only reference AES-SIV (RFC 5297), written straight from the RFC's pseudocode so that the
 * GnuTLS fast path in aead.c can be checked against something independent of it.
 *
 * Unlike GnuTLS's AEAD API it takes any number of S2V components, which is what the RFC's own
 * vectors need (A.1 has no nonce, A.2 has two AD components and a nonce). Slow on purpose: every
 * AES block is a separate GnuTLS call. */
#ifndef NTSPOOL_SIV_REF_H
#define NTSPOOL_SIV_REF_H

#include <stddef.h>
#include <stdint.h>

#define SIV_REF_TAG_LEN 16

/* One S2V input string; data is borrowed and may be NULL when len is 0. */
struct siv_ref_vec {
	const uint8_t *data;
	size_t len;
};

/* SIV-Encrypt(key, comps[0..n_comps-1], pt): S2V runs over the components followed by pt.
 * key (borrowed) is 32 or 64 bytes; out (borrowed) receives V(16) ‖ C and must hold
 * pt_len + 16 bytes. Returns 0, -EINVAL for another key length, -EIO on a GnuTLS failure. */
int siv_ref_seal(const uint8_t *key, size_t key_len, const struct siv_ref_vec *comps,
		 size_t n_comps, const uint8_t *pt, size_t pt_len, uint8_t *out);

#endif
