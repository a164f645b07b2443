#include "aead.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

struct aead {
	gnutls_aead_cipher_hd_t hd;
	uint16_t id;
	bool keyed;
};

size_t aead_key_len(uint16_t aead_id)
{
	switch (aead_id) {
	case AEAD_AES_SIV_CMAC_256:
		return 32;
	case AEAD_AES_SIV_CMAC_512:
		return 64;
	default:
		return 0;
	}
}

static gnutls_cipher_algorithm_t cipher_of(uint16_t aead_id)
{
	/* GnuTLS names SIV by the AES half of the key: 256-bit SIV key = AES-128. */
	return aead_id == AEAD_AES_SIV_CMAC_256 ? GNUTLS_CIPHER_AES_128_SIV
						 : GNUTLS_CIPHER_AES_256_SIV;
}

static int check_key(uint16_t aead_id, size_t key_len)
{
	size_t want = aead_key_len(aead_id);
	if (want == 0)
		return -ENOTSUP;
	if (key_len != want)
		return -EINVAL;
	return 0;
}

int aead_new(struct aead **out, uint16_t aead_id, const uint8_t *key, size_t key_len)
{
	int rc = check_key(aead_id, key_len);
	if (rc < 0)
		return rc;
	struct aead *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	gnutls_datum_t k = { (unsigned char *)key, (unsigned int)key_len };
	if (gnutls_aead_cipher_init(&a->hd, cipher_of(aead_id), &k) < 0) {
		free(a);
		return -ENOMEM;
	}
	a->id = aead_id;
	a->keyed = true;
	*out = a;
	return 0;
}

int aead_rekey(struct aead *a, uint16_t aead_id, const uint8_t *key, size_t key_len)
{
	int rc = check_key(aead_id, key_len);
	if (rc < 0) {
		a->keyed = false;
		return rc;
	}
	gnutls_datum_t k = { (unsigned char *)key, (unsigned int)key_len };
	if (aead_id == a->id) {
		if (gnutls_aead_cipher_set_key(a->hd, &k) < 0) {
			a->keyed = false;
			return -EIO;
		}
	} else {
		gnutls_aead_cipher_hd_t hd;
		if (gnutls_aead_cipher_init(&hd, cipher_of(aead_id), &k) < 0) {
			a->keyed = false;
			return -ENOMEM;
		}
		gnutls_aead_cipher_deinit(a->hd);
		a->hd = hd;
		a->id = aead_id;
	}
	a->keyed = true;
	return 0;
}

void aead_free(struct aead *a)
{
	if (!a)
		return;
	gnutls_aead_cipher_deinit(a->hd);
	free(a);
}

uint16_t aead_id(const struct aead *a)
{
	return a->id;
}

int aead_seal(struct aead *a, const uint8_t *nonce, size_t nonce_len, const uint8_t *ad,
	      size_t ad_len, const uint8_t *pt, size_t pt_len, uint8_t *out, size_t out_cap)
{
	if (!a->keyed || nonce_len == 0)
		return -EINVAL;
	/* The result is returned as an int. */
	if (pt_len > INT_MAX - AEAD_TAG_LEN)
		return -EMSGSIZE;
	if (out_cap < AEAD_TAG_LEN || out_cap - AEAD_TAG_LEN < pt_len)
		return -EMSGSIZE;
	size_t out_len = out_cap;
	if (gnutls_aead_cipher_encrypt(a->hd, nonce, nonce_len, ad, ad_len, AEAD_TAG_LEN, pt,
				       pt_len, out, &out_len) < 0)
		return -EIO;
	return (int)out_len;
}

int aead_open(struct aead *a, const uint8_t *nonce, size_t nonce_len, const uint8_t *ad,
	      size_t ad_len, const uint8_t *ct, size_t ct_len, uint8_t *pt, size_t pt_cap)
{
	if (!a->keyed || nonce_len == 0)
		return -EINVAL;
	if (ct_len < AEAD_TAG_LEN)
		return -EBADMSG;
	if (ct_len - AEAD_TAG_LEN > INT_MAX)
		return -EMSGSIZE;
	if (pt_cap < ct_len - AEAD_TAG_LEN)
		return -EMSGSIZE;
	size_t pt_len = pt_cap;
	if (gnutls_aead_cipher_decrypt(a->hd, nonce, nonce_len, ad, ad_len, AEAD_TAG_LEN, ct,
				       ct_len, pt, &pt_len) < 0) {
		gnutls_memset(pt, 0, ct_len - AEAD_TAG_LEN);
		return -EBADMSG;
	}
	return (int)pt_len;
}
