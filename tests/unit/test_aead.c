#include "aead.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "siv_ref.h"
#include "testutil.h"
#include "wire.h"

#define V(name, lenp) tu_vector_hex("aes-siv.txt", name, lenp)

static struct aead *new_aead(uint16_t id, const uint8_t *key)
{
	struct aead *a = NULL;
	cr_assert_eq(aead_new(&a, id, key, aead_key_len(id)), 0);
	cr_assert_not_null(a);
	return a;
}

Test(siv_ref, rfc5297_a1_deterministic)
{
	size_t key_len, ad_len, pt_len, want_len;
	uint8_t *key = V("a1.key", &key_len);
	uint8_t *ad = V("a1.ad", &ad_len);
	uint8_t *pt = V("a1.plaintext", &pt_len);
	uint8_t *want = V("a1.output", &want_len);
	cr_assert_eq(want_len, pt_len + SIV_REF_TAG_LEN);

	struct siv_ref_vec comps[] = { { ad, ad_len } };
	uint8_t out[64];
	cr_assert_eq(siv_ref_seal(key, key_len, comps, 1, pt, pt_len, out), 0);
	cr_assert_arr_eq(out, want, want_len);
	free(key);
	free(ad);
	free(pt);
	free(want);
}

Test(siv_ref, rfc5297_a2_nonce_based)
{
	size_t key_len, ad1_len, ad2_len, nonce_len, pt_len, want_len;
	uint8_t *key = V("a2.key", &key_len);
	uint8_t *ad1 = V("a2.ad1", &ad1_len);
	uint8_t *ad2 = V("a2.ad2", &ad2_len);
	uint8_t *nonce = V("a2.nonce", &nonce_len);
	uint8_t *pt = V("a2.plaintext", &pt_len);
	uint8_t *want = V("a2.output", &want_len);
	cr_assert_eq(want_len, pt_len + SIV_REF_TAG_LEN);

	struct siv_ref_vec comps[] = { { ad1, ad1_len }, { ad2, ad2_len }, { nonce, nonce_len } };
	uint8_t out[128];
	cr_assert_eq(siv_ref_seal(key, key_len, comps, 3, pt, pt_len, out), 0);
	cr_assert_arr_eq(out, want, want_len);
	free(key);
	free(ad1);
	free(ad2);
	free(nonce);
	free(pt);
	free(want);
}

Test(siv_ref, refuses_other_key_lengths)
{
	uint8_t key[48] = { 0 };
	uint8_t out[16];
	cr_assert_eq(siv_ref_seal(key, sizeof key, NULL, 0, NULL, 0, out), -EINVAL);
}

Test(aead, key_lengths)
{
	cr_assert_eq(aead_key_len(AEAD_AES_SIV_CMAC_256), 32);
	cr_assert_eq(aead_key_len(AEAD_AES_SIV_CMAC_512), 64);
	cr_assert_eq(aead_key_len(16), 0);
	cr_assert_eq(aead_key_len(0), 0);
	cr_assert(aead_supported(15));
	cr_assert(aead_supported(17));
	cr_assert_not(aead_supported(30));
}

/* Random lengths with extra weight on the edges: empty, one block, just around a block. */
static size_t pick_len(struct tu_rng *rng, size_t max)
{
	switch (tu_rng_below(rng, 6)) {
	case 0:
		return 0;
	case 1:
		return 16;
	case 2:
		return 15 + tu_rng_below(rng, 3);
	default:
		return tu_rng_below(rng, (uint32_t)max + 1);
	}
}

/* The chain of evidence: the reference equals the RFC vectors, and here aead_seal equals the
 * reference on [ad, nonce, pt] for random inputs, with one handle re-keyed across both sizes. */
Test(aead, seal_matches_reference_and_open_inverts, .timeout = 60)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x5157u);
	uint8_t key[AEAD_MAX_KEY_LEN], nonce[40], ad[80], pt[100];
	uint8_t got[sizeof pt + AEAD_TAG_LEN], want[sizeof pt + AEAD_TAG_LEN], back[sizeof pt];
	struct aead *a = NULL;
	size_t count[2] = { 0, 0 };

	for (int i = 0; i < 20000; i++) {
		uint16_t id = (i & 1) ? AEAD_AES_SIV_CMAC_512 : AEAD_AES_SIV_CMAC_256;
		size_t key_len = aead_key_len(id);
		tu_rng_fill(&rng, key, key_len);
		size_t nonce_len = 1 + tu_rng_below(&rng, sizeof nonce);
		size_t ad_len = pick_len(&rng, sizeof ad);
		size_t pt_len = pick_len(&rng, sizeof pt);
		tu_rng_fill(&rng, nonce, nonce_len);
		tu_rng_fill(&rng, ad, ad_len);
		tu_rng_fill(&rng, pt, pt_len);

		if (!a)
			a = new_aead(id, key);
		else
			cr_assert_eq(aead_rekey(a, id, key, key_len), 0);
		cr_assert_eq(aead_id(a), id);

		struct siv_ref_vec comps[] = { { ad, ad_len }, { nonce, nonce_len } };
		cr_assert_eq(siv_ref_seal(key, key_len, comps, 2, pt, pt_len, want), 0);
		int n = aead_seal(a, nonce, nonce_len, ad, ad_len, pt, pt_len, got, sizeof got);
		cr_assert_eq(n, (int)(pt_len + AEAD_TAG_LEN), "iteration %d: %d", i, n);
		cr_assert_arr_eq(got, want, (size_t)n, "iteration %d: id %u ad %zu nonce %zu pt %zu",
				 i, id, ad_len, nonce_len, pt_len);

		memset(back, 0xa5, sizeof back);
		int m = aead_open(a, nonce, nonce_len, ad, ad_len, got, (size_t)n, back, sizeof back);
		cr_assert_eq(m, (int)pt_len, "iteration %d", i);
		if (pt_len)
			cr_assert_arr_eq(back, pt, pt_len);
		count[i & 1]++;
	}
	cr_assert_geq(count[0], 10000);
	cr_assert_geq(count[1], 10000);
	aead_free(a);
}

static void flip(uint8_t *buf, size_t bit)
{
	buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
}

static void check_all_flips(uint16_t id)
{
	uint8_t key[AEAD_MAX_KEY_LEN];
	uint8_t nonce[16], ad[24], pt[33], ct[sizeof pt + AEAD_TAG_LEN], back[sizeof pt];
	struct tu_rng rng;
	tu_rng_seed(&rng, id);
	tu_rng_fill(&rng, key, sizeof key);
	tu_rng_fill(&rng, nonce, sizeof nonce);
	tu_rng_fill(&rng, ad, sizeof ad);
	tu_rng_fill(&rng, pt, sizeof pt);
	struct aead *a = new_aead(id, key);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, ad, sizeof ad, pt, sizeof pt, ct, sizeof ct),
		     (int)sizeof ct);

	struct {
		uint8_t *buf;
		size_t len;
	} parts[] = { { ct, sizeof ct }, { ad, sizeof ad }, { nonce, sizeof nonce } };
	static const uint8_t zero[sizeof pt];
	for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
		for (size_t bit = 0; bit < parts[p].len * 8; bit++) {
			flip(parts[p].buf, bit);
			memset(back, 0xa5, sizeof back);
			int rc = aead_open(a, nonce, sizeof nonce, ad, sizeof ad, ct, sizeof ct, back,
					   sizeof back);
			cr_assert_eq(rc, -EBADMSG, "part %zu bit %zu: %d", p, bit, rc);
			cr_assert_arr_eq(back, zero, sizeof back, "plaintext left after failure");
			flip(parts[p].buf, bit);
		}
	}
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, ad, sizeof ad, ct, sizeof ct, back,
			       sizeof back),
		     (int)sizeof pt);
	cr_assert_arr_eq(back, pt, sizeof pt);
	aead_free(a);
}

Test(aead, every_bit_flip_rejected_256)
{
	check_all_flips(AEAD_AES_SIV_CMAC_256);
}

Test(aead, every_bit_flip_rejected_512)
{
	check_all_flips(AEAD_AES_SIV_CMAC_512);
}

Test(aead, wrong_length_ad_or_nonce_rejected)
{
	uint8_t key[32] = { 1 }, nonce[16] = { 2 }, ad[8] = { 3 }, pt[5] = { 4 };
	uint8_t ct[sizeof pt + AEAD_TAG_LEN], back[sizeof pt];
	struct aead *a = new_aead(AEAD_AES_SIV_CMAC_256, key);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, ad, sizeof ad, pt, sizeof pt, ct, sizeof ct),
		     (int)sizeof ct);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce - 1, ad, sizeof ad, ct, sizeof ct, back,
			       sizeof back),
		     -EBADMSG);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, ad, sizeof ad - 1, ct, sizeof ct, back,
			       sizeof back),
		     -EBADMSG);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, NULL, 0, ct, sizeof ct, back, sizeof back),
		     -EBADMSG);
	aead_free(a);
}

/* Reaching GnuTLS with an empty nonce aborts the process, so merely returning proves the check
 * comes first. */
Test(aead, empty_nonce_refused)
{
	uint8_t key[64] = { 0 }, nonce[1] = { 0 }, pt[4] = { 0 }, ct[sizeof pt + AEAD_TAG_LEN];
	uint8_t back[sizeof pt];
	struct aead *a = new_aead(AEAD_AES_SIV_CMAC_512, key);
	cr_assert_eq(aead_seal(a, nonce, 0, NULL, 0, pt, sizeof pt, ct, sizeof ct), -EINVAL);
	cr_assert_eq(aead_seal(a, NULL, 0, NULL, 0, pt, sizeof pt, ct, sizeof ct), -EINVAL);
	cr_assert_eq(aead_seal(a, nonce, 1, NULL, 0, pt, sizeof pt, ct, sizeof ct), (int)sizeof ct);
	cr_assert_eq(aead_open(a, nonce, 0, NULL, 0, ct, sizeof ct, back, sizeof back), -EINVAL);
	cr_assert_eq(aead_open(a, NULL, 0, NULL, 0, ct, sizeof ct, back, sizeof back), -EINVAL);
	aead_free(a);
}

Test(aead, short_buffers)
{
	uint8_t key[32] = { 7 }, nonce[16] = { 1 }, pt[20] = { 9 };
	uint8_t ct[sizeof pt + AEAD_TAG_LEN], back[sizeof pt];
	struct aead *a = new_aead(AEAD_AES_SIV_CMAC_256, key);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, sizeof pt, ct, sizeof ct - 1),
		     -EMSGSIZE);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, sizeof pt, ct, AEAD_TAG_LEN - 1),
		     -EMSGSIZE);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, sizeof pt, ct, 0), -EMSGSIZE);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, NULL, 0, ct, AEAD_TAG_LEN - 1),
		     -EMSGSIZE);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, NULL, 0, ct, AEAD_TAG_LEN),
		     AEAD_TAG_LEN);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, sizeof pt, ct, sizeof ct),
		     (int)sizeof ct);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, NULL, 0, ct, sizeof ct, back, sizeof back - 1),
		     -EMSGSIZE);
	/* Shorter than a tag cannot be a sealed message at all. */
	for (size_t n = 0; n < AEAD_TAG_LEN; n++)
		cr_assert_eq(aead_open(a, nonce, sizeof nonce, NULL, 0, ct, n, back, sizeof back),
			     -EBADMSG, "length %zu", n);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, NULL, 0, ct, sizeof ct, back, sizeof back),
		     (int)sizeof pt);
	cr_assert_arr_eq(back, pt, sizeof pt);

	/* Lengths whose result would not fit the int return are refused before any byte is
	 * read (the buffers here are far shorter than claimed; ASan would see a read). */
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, (size_t)INT_MAX, ct, SIZE_MAX),
		     -EMSGSIZE);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, NULL, 0, ct, (size_t)INT_MAX + AEAD_TAG_LEN + 1,
			       back, SIZE_MAX),
		     -EMSGSIZE);
	aead_free(a);
}

Test(aead, empty_plaintext_is_a_bare_tag)
{
	uint8_t key[64] = { 3 }, nonce[16] = { 4 }, ad[48] = { 5 }, tag[AEAD_TAG_LEN];
	uint8_t back[1];
	struct aead *a = new_aead(AEAD_AES_SIV_CMAC_512, key);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, ad, sizeof ad, NULL, 0, tag, sizeof tag),
		     AEAD_TAG_LEN);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, ad, sizeof ad, tag, sizeof tag, back, 0), 0);
	tag[0] ^= 1;
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, ad, sizeof ad, tag, sizeof tag, back, 0),
		     -EBADMSG);
	aead_free(a);
}

static void seal_fixed(struct aead *a, uint8_t out[AEAD_TAG_LEN + 8])
{
	static const uint8_t nonce[12] = { 1, 2, 3 }, pt[8] = { 'c', 'o', 'o', 'k', 'i', 'e' };
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, sizeof pt, out,
			       AEAD_TAG_LEN + sizeof pt),
		     AEAD_TAG_LEN + (int)sizeof pt);
}

Test(aead, rekey)
{
	uint8_t k1[64], k2[64], k3[32];
	memset(k1, 0x11, sizeof k1);
	memset(k2, 0x22, sizeof k2);
	memset(k3, 0x33, sizeof k3);
	uint8_t a_out[24], b_out[24], fresh[24];

	struct aead *a = new_aead(AEAD_AES_SIV_CMAC_512, k1);
	seal_fixed(a, a_out);

	/* Same algorithm, new key: output must be what a fresh handle with that key gives. */
	cr_assert_eq(aead_rekey(a, AEAD_AES_SIV_CMAC_512, k2, sizeof k2), 0);
	seal_fixed(a, b_out);
	cr_assert(memcmp(a_out, b_out, sizeof a_out) != 0);
	struct aead *b = new_aead(AEAD_AES_SIV_CMAC_512, k2);
	seal_fixed(b, fresh);
	cr_assert_arr_eq(b_out, fresh, sizeof fresh);
	aead_free(b);

	/* Different algorithm. */
	cr_assert_eq(aead_rekey(a, AEAD_AES_SIV_CMAC_256, k3, sizeof k3), 0);
	cr_assert_eq(aead_id(a), AEAD_AES_SIV_CMAC_256);
	seal_fixed(a, b_out);
	b = new_aead(AEAD_AES_SIV_CMAC_256, k3);
	seal_fixed(b, fresh);
	cr_assert_arr_eq(b_out, fresh, sizeof fresh);
	aead_free(b);

	/* And back. */
	cr_assert_eq(aead_rekey(a, AEAD_AES_SIV_CMAC_512, k1, sizeof k1), 0);
	seal_fixed(a, b_out);
	cr_assert_arr_eq(b_out, a_out, sizeof a_out);

	/* A refused rekey leaves the handle unusable rather than keyed with the old key. */
	uint8_t nonce[4] = { 0 }, out[32];
	cr_assert_eq(aead_rekey(a, AEAD_AES_SIV_CMAC_512, k1, 32), -EINVAL);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, NULL, 0, out, sizeof out), -EINVAL);
	cr_assert_eq(aead_open(a, nonce, sizeof nonce, NULL, 0, out, AEAD_TAG_LEN, out, 0), -EINVAL);
	cr_assert_eq(aead_rekey(a, AEAD_AES_SIV_CMAC_512, k1, sizeof k1), 0);
	seal_fixed(a, b_out);
	cr_assert_arr_eq(b_out, a_out, sizeof a_out);
	cr_assert_eq(aead_rekey(a, 16, k1, 16), -ENOTSUP);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, NULL, 0, out, sizeof out), -EINVAL);
	cr_assert_eq(aead_rekey(a, AEAD_AES_SIV_CMAC_256, k1, 64), -EINVAL);
	aead_free(a);
}

Test(aead, new_refuses_bad_keys)
{
	uint8_t key[64] = { 0 };
	struct aead *a = NULL;
	cr_assert_eq(aead_new(&a, AEAD_AES_SIV_CMAC_256, key, 64), -EINVAL);
	cr_assert_eq(aead_new(&a, AEAD_AES_SIV_CMAC_512, key, 32), -EINVAL);
	cr_assert_eq(aead_new(&a, AEAD_AES_SIV_CMAC_512, key, 0), -EINVAL);
	cr_assert_eq(aead_new(&a, 16, key, 32), -ENOTSUP);
	cr_assert_eq(aead_new(&a, 0, key, 0), -ENOTSUP);
	cr_assert_null(a);
	aead_free(NULL);
}

/* The cookie's SIV part (PROTOCOL.md §6) is aead_seal with an empty AD and the cookie nonce. */
Test(aead, cookie_vector_ciphertext)
{
	size_t key_len, nonce_len, s2c_len, c2s_len, cookie_len;
	uint8_t *key = tu_vector_hex("cookie.txt", "master_key", &key_len);
	uint8_t *nonce = tu_vector_hex("cookie.txt", "nonce", &nonce_len);
	uint8_t *s2c = tu_vector_hex("cookie.txt", "s2c", &s2c_len);
	uint8_t *c2s = tu_vector_hex("cookie.txt", "c2s", &c2s_len);
	uint8_t *cookie = tu_vector_hex("cookie.txt", "cookie", &cookie_len);
	char *aead_str = tu_vector("cookie.txt", "aead");
	uint16_t cookie_aead = (uint16_t)strtoul(aead_str, NULL, 10);
	free(aead_str);
	cr_assert_eq(key_len, 64);
	cr_assert_eq(nonce_len, 16);
	cr_assert_eq(s2c_len, aead_key_len(cookie_aead));
	cr_assert_eq(c2s_len, s2c_len);

	uint8_t pt[2 + 2 * AEAD_MAX_KEY_LEN];
	struct wire_writer w;
	wire_writer_init(&w, pt, sizeof pt);
	wire_put_u16(&w, cookie_aead);
	wire_put_bytes(&w, s2c, s2c_len);
	wire_put_bytes(&w, c2s, c2s_len);
	cr_assert_eq(wire_writer_error(&w), 0);
	size_t pt_len = wire_written(&w);

	const size_t header = 4 + 2 + 16;
	cr_assert_eq(cookie_len, header + AEAD_TAG_LEN + pt_len);
	cr_assert_arr_eq(cookie + 6, nonce, nonce_len);

	struct aead *a = new_aead(AEAD_AES_SIV_CMAC_512, key);
	uint8_t ct[sizeof pt + AEAD_TAG_LEN];
	cr_assert_eq(aead_seal(a, nonce, nonce_len, NULL, 0, pt, pt_len, ct, sizeof ct),
		     (int)(pt_len + AEAD_TAG_LEN));
	cr_assert_arr_eq(ct, cookie + header, pt_len + AEAD_TAG_LEN);

	/* Independent confirmation that the vector's AD really is one empty component. */
	uint8_t ref[sizeof ct];
	struct siv_ref_vec comps[] = { { NULL, 0 }, { nonce, nonce_len } };
	cr_assert_eq(siv_ref_seal(key, key_len, comps, 2, pt, pt_len, ref), 0);
	cr_assert_arr_eq(ref, ct, pt_len + AEAD_TAG_LEN);

	uint8_t back[sizeof pt];
	cr_assert_eq(aead_open(a, nonce, nonce_len, NULL, 0, cookie + header, cookie_len - header,
			       back, sizeof back),
		     (int)pt_len);
	cr_assert_arr_eq(back, pt, pt_len);
	aead_free(a);
	free(key);
	free(nonce);
	free(s2c);
	free(c2s);
	free(cookie);
}
