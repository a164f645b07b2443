#include "siv_ref.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define BLOCK 16

/* gnutls_hmac_fast wants a valid pointer even for an empty message. */
static const uint8_t empty;

static int cmac(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t len,
		uint8_t out[BLOCK])
{
	gnutls_mac_algorithm_t alg =
		key_len == 16 ? GNUTLS_MAC_AES_CMAC_128 : GNUTLS_MAC_AES_CMAC_256;
	if (gnutls_hmac_fast(alg, key, key_len, len ? msg : &empty, len, out) < 0)
		return -EIO;
	return 0;
}

/* Multiplication by x in GF(2^128) with the RFC's polynomial (0x87 feedback). */
static void dbl(uint8_t b[BLOCK])
{
	uint8_t carry = b[0] >> 7;
	for (size_t i = 0; i < BLOCK - 1; i++)
		b[i] = (uint8_t)(b[i] << 1 | b[i + 1] >> 7);
	b[BLOCK - 1] = (uint8_t)(b[BLOCK - 1] << 1);
	if (carry)
		b[BLOCK - 1] ^= 0x87;
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] ^= src[i];
}

/* RFC 5297 §2.4 for n >= 1 strings; the last string is the plaintext. */
static int s2v(const uint8_t *k1, size_t k1_len, const struct siv_ref_vec *comps, size_t n_comps,
	       const uint8_t *pt, size_t pt_len, uint8_t v[BLOCK])
{
	uint8_t d[BLOCK];
	uint8_t zero[BLOCK] = { 0 };
	uint8_t mac[BLOCK];
	int rc = cmac(k1, k1_len, zero, BLOCK, d);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n_comps; i++) {
		rc = cmac(k1, k1_len, comps[i].data, comps[i].len, mac);
		if (rc < 0)
			return rc;
		dbl(d);
		xor_into(d, mac, BLOCK);
	}
	if (pt_len >= BLOCK) {
		/* xorend: D goes onto the last 16 bytes of the plaintext. */
		uint8_t *t = malloc(pt_len);
		if (!t)
			return -ENOMEM;
		memcpy(t, pt, pt_len);
		xor_into(t + pt_len - BLOCK, d, BLOCK);
		rc = cmac(k1, k1_len, t, pt_len, v);
		free(t);
		return rc;
	}
	uint8_t t[BLOCK] = { 0 };
	if (pt_len)
		memcpy(t, pt, pt_len);
	t[pt_len] = 0x80;
	dbl(d);
	xor_into(t, d, BLOCK);
	return cmac(k1, k1_len, t, BLOCK, v);
}

static void increment(uint8_t ctr[BLOCK])
{
	for (size_t i = BLOCK; i-- > 0;)
		if (++ctr[i] != 0)
			break;
}

/* CTR mode from a bare AES block function: CBC over a single block with a zero IV is AES itself,
 * so the IV is reset before every block to stop the chaining. */
static int ctr(const uint8_t *k2, size_t k2_len, const uint8_t v[BLOCK], const uint8_t *in,
	       size_t len, uint8_t *out)
{
	uint8_t zero_iv[BLOCK] = { 0 };
	uint8_t q[BLOCK];
	uint8_t ks[BLOCK];
	memcpy(q, v, BLOCK);
	/* RFC 5297 §2.5: clear the 31st and 63rd bits from the right so that implementations
	 * may use 32- and 64-bit counters without carries. */
	q[8] &= 0x7f;
	q[12] &= 0x7f;
	gnutls_cipher_algorithm_t alg =
		k2_len == 16 ? GNUTLS_CIPHER_AES_128_CBC : GNUTLS_CIPHER_AES_256_CBC;
	gnutls_datum_t key = { (unsigned char *)k2, (unsigned int)k2_len };
	gnutls_datum_t iv = { zero_iv, BLOCK };
	gnutls_cipher_hd_t hd;
	if (gnutls_cipher_init(&hd, alg, &key, &iv) < 0)
		return -EIO;
	int rc = 0;
	for (size_t off = 0; off < len; off += BLOCK) {
		gnutls_cipher_set_iv(hd, zero_iv, BLOCK);
		if (gnutls_cipher_encrypt2(hd, q, BLOCK, ks, BLOCK) < 0) {
			rc = -EIO;
			break;
		}
		size_t n = len - off < BLOCK ? len - off : BLOCK;
		for (size_t i = 0; i < n; i++)
			out[off + i] = in[off + i] ^ ks[i];
		increment(q);
	}
	gnutls_cipher_deinit(hd);
	return rc;
}

int siv_ref_seal(const uint8_t *key, size_t key_len, const struct siv_ref_vec *comps,
		 size_t n_comps, const uint8_t *pt, size_t pt_len, uint8_t *out)
{
	if (key_len != 32 && key_len != 64)
		return -EINVAL;
	size_t half = key_len / 2;
	uint8_t v[BLOCK];
	int rc = s2v(key, half, comps, n_comps, pt, pt_len, v);
	if (rc < 0)
		return rc;
	memcpy(out, v, BLOCK);
	return ctr(key + half, half, v, pt, pt_len, out + BLOCK);
}
