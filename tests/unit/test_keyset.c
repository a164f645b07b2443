#include "keyset.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "keyset_task.h"
#include "log.h"
#include "testutil.h"
#include "wire.h"

static struct keyset *from_keys(uint32_t id_offset, uint32_t primary, uint32_t count,
				const uint8_t *keys, uint64_t created)
{
	struct keyset *ks = NULL;
	cr_assert_eq(keyset_from_keys(&ks, id_offset, primary, count, keys, created), 0);
	cr_assert_not_null(ks);
	return ks;
}

static struct keyset *random_keyset(struct tu_rng *rng, uint32_t id_offset, uint32_t count)
{
	uint8_t *keys = malloc((size_t)count * KEYSET_KEY_LEN);
	cr_assert_not_null(keys);
	tu_rng_fill(rng, keys, (size_t)count * KEYSET_KEY_LEN);
	struct keyset *ks = from_keys(id_offset, count - 1, count, keys, 1000);
	free(keys);
	return ks;
}

struct client_keys {
	uint16_t aead;
	size_t len;
	uint8_t c2s[AEAD_MAX_KEY_LEN];
	uint8_t s2c[AEAD_MAX_KEY_LEN];
};

static struct client_keys client_keys(struct tu_rng *rng, uint16_t aead)
{
	struct client_keys k = { .aead = aead, .len = aead_key_len(aead) };
	tu_rng_fill(rng, k.c2s, k.len);
	tu_rng_fill(rng, k.s2c, k.len);
	return k;
}

static size_t seal(struct keyset *ks, const struct client_keys *k, const uint8_t *nonce,
		   uint8_t *out)
{
	int n = keyset_seal_cookie(ks, k->aead, k->c2s, k->s2c, k->len, nonce, out,
				   KEYSET_COOKIE_MAX_LEN);
	cr_assert_eq(n, (int)keyset_cookie_len(k->aead), "seal: %d", n);
	return (size_t)n;
}

static int open_cookie(struct keyset *ks, const uint8_t *cookie, size_t len,
		       struct client_keys *got)
{
	memset(got, 0, sizeof *got);
	return keyset_open_cookie(ks, cookie, len, &got->aead, got->c2s, got->s2c, &got->len);
}

static void assert_opens_to(struct keyset *ks, const uint8_t *cookie, size_t len,
			    const struct client_keys *want)
{
	struct client_keys got;
	cr_assert_eq(open_cookie(ks, cookie, len, &got), 0);
	cr_assert_eq(got.aead, want->aead);
	cr_assert_eq(got.len, want->len);
	cr_assert_arr_eq(got.c2s, want->c2s, want->len);
	cr_assert_arr_eq(got.s2c, want->s2c, want->len);
}

Test(keyset, cookie_lengths)
{
	cr_assert_eq(keyset_cookie_len(AEAD_AES_SIV_CMAC_256), 104);
	cr_assert_eq(keyset_cookie_len(AEAD_AES_SIV_CMAC_512), 168);
	cr_assert_eq(keyset_cookie_len(16), 0);
	cr_assert_eq(KEYSET_COOKIE_MAX_LEN, 168);
}

Test(keyset, cookie_vector)
{
	size_t key_len, nonce_len, s2c_len, c2s_len, want_len;
	uint8_t *key = tu_vector_hex("cookie.txt", "master_key", &key_len);
	uint8_t *nonce = tu_vector_hex("cookie.txt", "nonce", &nonce_len);
	uint8_t *s2c = tu_vector_hex("cookie.txt", "s2c", &s2c_len);
	uint8_t *c2s = tu_vector_hex("cookie.txt", "c2s", &c2s_len);
	uint8_t *want = tu_vector_hex("cookie.txt", "cookie", &want_len);
	char *id_str = tu_vector("cookie.txt", "key_id");
	char *aead_str = tu_vector("cookie.txt", "aead");
	uint32_t key_id = (uint32_t)strtoul(id_str, NULL, 10);
	uint16_t aead = (uint16_t)strtoul(aead_str, NULL, 10);
	cr_assert_eq(key_len, KEYSET_KEY_LEN);
	cr_assert_eq(nonce_len, KEYSET_NONCE_LEN);

	struct keyset *ks = from_keys(key_id, 0, 1, key, 0);
	cr_assert_eq(keyset_primary_id(ks), key_id);
	uint8_t out[KEYSET_COOKIE_MAX_LEN];
	int n = keyset_seal_cookie(ks, aead, c2s, s2c, c2s_len, nonce, out, sizeof out);
	cr_assert_eq(n, (int)want_len);
	cr_assert_arr_eq(out, want, want_len);

	struct client_keys k = { .aead = aead, .len = c2s_len };
	memcpy(k.c2s, c2s, c2s_len);
	memcpy(k.s2c, s2c, s2c_len);
	assert_opens_to(ks, want, want_len, &k);

	keyset_unref(ks);
	free(id_str);
	free(aead_str);
	free(key);
	free(nonce);
	free(s2c);
	free(c2s);
	free(want);
}

Test(keyset, round_trip_both_aeads, .timeout = 60)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 42);
	struct keyset *ks = random_keyset(&rng, 7, 3);
	uint8_t nonce[KEYSET_NONCE_LEN], cookie[KEYSET_COOKIE_MAX_LEN];
	for (int i = 0; i < 10000; i++) {
		uint16_t aead = (i & 1) ? AEAD_AES_SIV_CMAC_512 : AEAD_AES_SIV_CMAC_256;
		struct client_keys k = client_keys(&rng, aead);
		tu_rng_fill(&rng, nonce, sizeof nonce);
		size_t n = seal(ks, &k, nonce, cookie);
		/* The primary is the newest key here: id_offset + count - 1. */
		cr_assert_eq(cookie[3], 9);
		assert_opens_to(ks, cookie, n, &k);
	}
	keyset_unref(ks);
}

Test(keyset, random_nonce_wrapper)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 43);
	struct keyset *ks = NULL;
	cr_assert_eq(keyset_new_random(&ks, 5), 0);
	struct client_keys k = client_keys(&rng, AEAD_AES_SIV_CMAC_512);
	uint8_t a[KEYSET_COOKIE_MAX_LEN], b[KEYSET_COOKIE_MAX_LEN];
	cr_assert_eq(keyset_seal_cookie_random(ks, k.aead, k.c2s, k.s2c, k.len, a, sizeof a), 168);
	cr_assert_eq(keyset_seal_cookie_random(ks, k.aead, k.c2s, k.s2c, k.len, b, sizeof b), 168);
	cr_assert(memcmp(a + 6, b + 6, KEYSET_NONCE_LEN) != 0, "nonces must differ");
	assert_opens_to(ks, a, sizeof a, &k);
	assert_opens_to(ks, b, sizeof b, &k);
	keyset_unref(ks);
}

/* Workers seal and open cookies with one published keyset at once: its AES-SIV handles are only
 * read by seal and open (see aead.h). Two threads each sealing and opening thousands of cookies
 * with their own keys must always get their own keys back. */
struct sealer {
	struct keyset *ks;
	uint64_t seed;
	int bad;
};

static void *seal_and_open(void *arg)
{
	struct sealer *w = arg;
	struct tu_rng rng;
	tu_rng_seed(&rng, w->seed);
	for (int i = 0; i < 20000; i++) {
		struct client_keys k =
			client_keys(&rng, i % 2 ? AEAD_AES_SIV_CMAC_512 : AEAD_AES_SIV_CMAC_256);
		uint8_t cookie[KEYSET_COOKIE_MAX_LEN], c2s[AEAD_MAX_KEY_LEN], s2c[AEAD_MAX_KEY_LEN];
		int n = keyset_seal_cookie_random(w->ks, k.aead, k.c2s, k.s2c, k.len, cookie,
						  sizeof cookie);
		uint16_t aead = 0;
		size_t len = 0;
		if (n <= 0 || keyset_open_cookie(w->ks, cookie, (size_t)n, &aead, c2s, s2c, &len) != 0 ||
		    aead != k.aead || len != k.len || memcmp(c2s, k.c2s, len) != 0 ||
		    memcmp(s2c, k.s2c, len) != 0)
			w->bad++;
	}
	return NULL;
}

Test(keyset, one_keyset_sealed_and_opened_by_two_threads_at_once, .timeout = 120)
{
	struct keyset *ks = NULL;
	cr_assert_eq(keyset_new_random(&ks, 5), 0);
	struct sealer w[2] = { { .ks = ks, .seed = 1 }, { .ks = ks, .seed = 2 } };
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, seal_and_open, &w[i]), 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].bad, 0, "thread %d: %d cookies did not open to their keys", i,
			     w[i].bad);
	}
	keyset_unref(ks);
}

Test(keyset, seal_argument_errors)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 44);
	struct keyset *ks = random_keyset(&rng, 0, 1);
	uint8_t keys[AEAD_MAX_KEY_LEN] = { 0 }, nonce[KEYSET_NONCE_LEN] = { 0 };
	uint8_t out[KEYSET_COOKIE_MAX_LEN];
	cr_assert_eq(keyset_seal_cookie(ks, 16, keys, keys, 32, nonce, out, sizeof out), -EINVAL);
	cr_assert_eq(keyset_seal_cookie(ks, 15, keys, keys, 64, nonce, out, sizeof out), -EINVAL);
	cr_assert_eq(keyset_seal_cookie(ks, 17, keys, keys, 32, nonce, out, sizeof out), -EINVAL);
	cr_assert_eq(keyset_seal_cookie(ks, 15, keys, keys, 32, nonce, out, 103), -EMSGSIZE);
	cr_assert_eq(keyset_seal_cookie(ks, 17, keys, keys, 64, nonce, out, 167), -EMSGSIZE);
	cr_assert_eq(keyset_seal_cookie(ks, 15, keys, keys, 32, nonce, out, 104), 104);
	keyset_unref(ks);
}

static void check_truncations_and_flips(uint16_t aead)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, aead);
	/* One key, id 1: any change to the id names a key this keyset does not hold. */
	struct keyset *ks = random_keyset(&rng, 1, 1);
	struct client_keys k = client_keys(&rng, aead), got;
	uint8_t nonce[KEYSET_NONCE_LEN], cookie[KEYSET_COOKIE_MAX_LEN + 1];
	tu_rng_fill(&rng, nonce, sizeof nonce);
	size_t n = seal(ks, &k, nonce, cookie);
	assert_opens_to(ks, cookie, n, &k);

	for (size_t len = 0; len < n; len++)
		cr_assert_eq(open_cookie(ks, cookie, len, &got), -EBADMSG, "length %zu", len);
	cookie[n] = 0;
	cr_assert_eq(open_cookie(ks, cookie, n + 1, &got), -EBADMSG);

	static const uint8_t zero[AEAD_MAX_KEY_LEN];
	for (size_t bit = 0; bit < n * 8; bit++) {
		cookie[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		int rc = open_cookie(ks, cookie, n, &got);
		cr_assert_eq(rc, bit < 32 ? -ENOKEY : -EBADMSG, "bit %zu: %d", bit, rc);
		cr_assert_arr_eq(got.c2s, zero, sizeof zero, "key material left on failure");
		cr_assert_arr_eq(got.s2c, zero, sizeof zero, "key material left on failure");
		cookie[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	assert_opens_to(ks, cookie, n, &k);
	keyset_unref(ks);
}

Test(keyset, every_truncation_and_bit_flip_rejected_15)
{
	check_truncations_and_flips(AEAD_AES_SIV_CMAC_256);
}

Test(keyset, every_truncation_and_bit_flip_rejected_17)
{
	check_truncations_and_flips(AEAD_AES_SIV_CMAC_512);
}

/* Builds a cookie around an arbitrary plaintext with the real master key, so the tag is valid
 * and only the plaintext rules can reject it. */
static size_t forge(const uint8_t *master, uint32_t key_id, const uint8_t *pt, size_t pt_len,
		    uint8_t *out)
{
	static const uint8_t nonce[KEYSET_NONCE_LEN] = { 9, 9, 9 };
	struct aead *a = NULL;
	cr_assert_eq(aead_new(&a, AEAD_AES_SIV_CMAC_512, master, KEYSET_KEY_LEN), 0);
	size_t ct_len = pt_len + AEAD_TAG_LEN;
	struct wire_writer w;
	wire_writer_init(&w, out, KEYSET_COOKIE_MAX_LEN);
	wire_put_u32(&w, key_id);
	wire_put_u16(&w, (uint16_t)ct_len);
	wire_put_bytes(&w, nonce, sizeof nonce);
	uint8_t *ct = wire_put_reserve(&w, ct_len);
	cr_assert_eq(wire_writer_error(&w), 0);
	cr_assert_eq(aead_seal(a, nonce, sizeof nonce, NULL, 0, pt, pt_len, ct, ct_len),
		     (int)ct_len);
	aead_free(a);
	return KEYSET_COOKIE_HEADER_LEN + ct_len;
}

Test(keyset, authentic_but_malformed_plaintext_rejected)
{
	uint8_t master[KEYSET_KEY_LEN];
	memset(master, 0x5c, sizeof master);
	struct keyset *ks = from_keys(3, 0, 1, master, 0);
	uint8_t pt[2 + 2 * AEAD_MAX_KEY_LEN], cookie[KEYSET_COOKIE_MAX_LEN];
	struct client_keys got;
	memset(pt, 0x11, sizeof pt);

	/* Control: a well-formed forged plaintext does open, so the rejections below are due to
	 * the plaintext alone. */
	pt[0] = 0;
	pt[1] = 15;
	size_t n = forge(master, 3, pt, 66, cookie);
	cr_assert_eq(open_cookie(ks, cookie, n, &got), 0);
	cr_assert_eq(got.aead, 15);

	/* Unknown AEAD at the length of 15 and of 17. */
	pt[1] = 16;
	n = forge(master, 3, pt, 66, cookie);
	cr_assert_eq(open_cookie(ks, cookie, n, &got), -EBADMSG);
	n = forge(master, 3, pt, 130, cookie);
	cr_assert_eq(open_cookie(ks, cookie, n, &got), -EBADMSG);
	/* AEAD 15 inside a cookie of the size of 17, and the reverse. */
	pt[1] = 15;
	n = forge(master, 3, pt, 130, cookie);
	cr_assert_eq(open_cookie(ks, cookie, n, &got), -EBADMSG);
	pt[1] = 17;
	n = forge(master, 3, pt, 66, cookie);
	cr_assert_eq(open_cookie(ks, cookie, n, &got), -EBADMSG);
	/* ct_len of no AEAD at all, though authentic. */
	n = forge(master, 3, pt, 67, cookie);
	cr_assert_eq(open_cookie(ks, cookie, n, &got), -EBADMSG);
	keyset_unref(ks);
}

Test(keyset, unknown_key_id)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 45);
	struct keyset *a = random_keyset(&rng, 10, 2);
	struct keyset *b = random_keyset(&rng, 12, 2);
	struct keyset *low = random_keyset(&rng, 0, 2);
	struct client_keys k = client_keys(&rng, AEAD_AES_SIV_CMAC_256), got;
	uint8_t nonce[KEYSET_NONCE_LEN] = { 1 }, cookie[KEYSET_COOKIE_MAX_LEN];
	size_t n = seal(a, &k, nonce, cookie);
	cr_assert_eq(keyset_primary_id(a), 11);
	cr_assert_eq(open_cookie(b, cookie, n, &got), -ENOKEY);
	cr_assert_eq(open_cookie(low, cookie, n, &got), -ENOKEY);
	/* A held id with the wrong key behind it is a forgery, not an unknown key. */
	struct keyset *same_ids = random_keyset(&rng, 10, 2);
	cr_assert_eq(open_cookie(same_ids, cookie, n, &got), -EBADMSG);
	keyset_unref(a);
	keyset_unref(b);
	keyset_unref(low);
	keyset_unref(same_ids);
}

Test(keyset, from_keys_validates_shape)
{
	uint8_t keys[2 * KEYSET_KEY_LEN] = { 0 };
	struct keyset *ks = NULL;
	cr_assert_eq(keyset_from_keys(&ks, 0, 0, 0, keys, 0), -EINVAL);
	cr_assert_eq(keyset_from_keys(&ks, 0, 2, 2, keys, 0), -EINVAL);
	cr_assert_eq(keyset_from_keys(&ks, 0, 0, KEYSET_MAX_KEYS + 1, keys, 0), -EINVAL);
	cr_assert_eq(keyset_from_keys(&ks, UINT32_MAX, 0, 2, keys, 0), -EINVAL);
	cr_assert_null(ks);
	cr_assert_eq(keyset_from_keys(&ks, UINT32_MAX - 1, 1, 2, keys, 0), 0);
	cr_assert_eq(keyset_primary_id(ks), UINT32_MAX);
	/* The next id would not fit. */
	struct keyset *next = NULL;
	cr_assert_eq(keyset_rotate(&next, ks, 7, 1), -EOVERFLOW);
	cr_assert_null(next);
	keyset_unref(ks);
}

#define GENERATIONS 12

Test(keyset, rotation_keeps_stale_key_count)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 46);
	const uint32_t stale = 3;
	struct keyset *gen[GENERATIONS];
	uint8_t cookies[GENERATIONS][KEYSET_COOKIE_MAX_LEN];
	size_t lens[GENERATIONS];
	struct client_keys keys[GENERATIONS];
	uint8_t nonce[KEYSET_NONCE_LEN] = { 0 };

	cr_assert_eq(keyset_new_random(&gen[0], 100), 0);
	cr_assert_eq(keyset_count(gen[0]), 1);
	cr_assert_eq(keyset_primary_id(gen[0]), 0);
	cr_assert_eq(keyset_created(gen[0]), 100);
	for (uint32_t g = 0; g < GENERATIONS; g++) {
		if (g > 0) {
			cr_assert_eq(keyset_rotate(&gen[g], gen[g - 1], stale, 100 + g), 0);
			cr_assert_eq(keyset_created(gen[g]), 100 + g);
		}
		uint32_t want_count = g < stale ? g + 1 : stale + 1;
		cr_assert_eq(keyset_count(gen[g]), want_count, "generation %u", g);
		cr_assert_eq(keyset_primary_id(gen[g]), g);
		cr_assert_eq(keyset_id_offset(gen[g]), g + 1 - want_count);
		keys[g] = client_keys(&rng, (g & 1) ? 15 : 17);
		lens[g] = seal(gen[g], &keys[g], nonce, cookies[g]);

		/* Cookies of the last stale_key_count + 1 generations open, rotated ones are
		 * unknown. */
		for (uint32_t c = 0; c <= g; c++) {
			if (g - c <= stale) {
				assert_opens_to(gen[g], cookies[c], lens[c], &keys[c]);
			} else {
				struct client_keys got;
				cr_assert_eq(open_cookie(gen[g], cookies[c], lens[c], &got), -ENOKEY,
					     "gen %u cookie %u", g, c);
			}
		}
	}
	/* Old keysets are untouched by rotation: each still opens its own cookies. */
	for (uint32_t g = 0; g < GENERATIONS; g++) {
		assert_opens_to(gen[g], cookies[g], lens[g], &keys[g]);
		keyset_unref(gen[g]);
	}
}

Test(keyset, rotation_trims_and_zero_stale)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 47);
	struct keyset *big = random_keyset(&rng, 20, 9);
	struct keyset *a = NULL, *b = NULL;
	cr_assert_eq(keyset_rotate(&a, big, 2, 5), 0);
	cr_assert_eq(keyset_count(a), 3);
	cr_assert_eq(keyset_id_offset(a), 27);
	cr_assert_eq(keyset_primary_id(a), 29);
	cr_assert_eq(keyset_rotate(&b, a, 0, 6), 0);
	cr_assert_eq(keyset_count(b), 1);
	cr_assert_eq(keyset_primary_id(b), 30);
	keyset_unref(big);
	keyset_unref(a);
	keyset_unref(b);
}

Test(keyset, references)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 48);
	struct keyset *ks = random_keyset(&rng, 0, 1);
	struct keyset *held = keyset_ref(ks);
	cr_assert_eq(held, ks);
	keyset_unref(ks);
	/* The listener's reference keeps the keyset usable after the publisher let go. */
	struct client_keys k = client_keys(&rng, 15);
	uint8_t nonce[KEYSET_NONCE_LEN] = { 3 }, cookie[KEYSET_COOKIE_MAX_LEN];
	size_t n = seal(held, &k, nonce, cookie);
	assert_opens_to(held, cookie, n, &k);
	keyset_unref(held);
	keyset_unref(NULL);
}

/* ---- storage ---- */

struct tmp {
	char *dir;
	char *path;
};

static struct tmp tmp_new(void)
{
	struct tmp t = { .dir = tu_tempdir() };
	cr_assert_not_null(t.dir);
	cr_assert(asprintf(&t.path, "%s/keys.bin", t.dir) >= 0);
	return t;
}

static void tmp_free(struct tmp *t)
{
	tu_rmtree(t->dir);
	free(t->dir);
	free(t->path);
}

static void write_file(const char *path, const uint8_t *buf, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	/* fchmod, not the open mode, so the umask cannot mask the bits under test. */
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

/* A new buffer (caller frees) with the whole file; *len gets its size. */
static uint8_t *read_whole(const char *path, size_t *len)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "%s", path);
	uint8_t *buf = malloc((size_t)st.st_size + 1);
	cr_assert_not_null(buf);
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(read(fd, buf, (size_t)st.st_size + 1), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static const uint8_t magic_bytes[8] = { 0x89, 'N', 'T', 'S', 'K', 'E', 'Y', 'S' };

/* Key byte j of every handmade image: a pattern, so a misplaced key is visible. */
static uint8_t key_byte(size_t j)
{
	return (uint8_t)(j * 13 + 1);
}

/* A version 1 file image with the given fields and body bytes (which need not match count). */
static uint8_t *image_time(uint64_t time, uint32_t id_offset, uint32_t primary, uint32_t count,
			   size_t body, size_t *len)
{
	*len = KEYSET_FILE_V1_HEADER_LEN + body;
	uint8_t *buf = malloc(*len);
	cr_assert_not_null(buf);
	struct wire_writer w;
	wire_writer_init(&w, buf, *len);
	wire_put_u64(&w, time);
	wire_put_u32(&w, id_offset);
	wire_put_u32(&w, primary);
	wire_put_u32(&w, count);
	for (size_t i = 0; i < body; i++)
		wire_put_u8(&w, key_byte(i));
	cr_assert_eq(wire_writer_error(&w), 0);
	return buf;
}

static uint8_t *image(uint32_t id_offset, uint32_t primary, uint32_t count, size_t body,
		      size_t *len)
{
	return image_time(1234, id_offset, primary, count, body, len);
}

/* A version 2 image built here, independently of keyset_serialize: magic and version as given,
 * count keys, and a SHA-256 over everything before it, so only the field under test is wrong. */
static uint8_t *v2_image(const uint8_t magic[8], uint32_t version, uint64_t time,
			 uint32_t id_offset, uint32_t primary, uint32_t count, size_t *len)
{
	size_t v1_len;
	uint8_t *v1 = image_time(time, id_offset, primary, count, (size_t)count * KEYSET_KEY_LEN,
				 &v1_len);
	*len = 12 + v1_len + 32;
	uint8_t *buf = malloc(*len);
	cr_assert_not_null(buf);
	memcpy(buf, magic, 8);
	buf[8] = (uint8_t)(version >> 24);
	buf[9] = (uint8_t)(version >> 16);
	buf[10] = (uint8_t)(version >> 8);
	buf[11] = (uint8_t)version;
	memcpy(buf + 12, v1, v1_len);
	cr_assert_eq(gnutls_hash_fast(GNUTLS_DIG_SHA256, buf, *len - 32, buf + *len - 32), 0);
	free(v1);
	return buf;
}

static void expect_refused(const char *path, const uint8_t *buf, size_t len, mode_t mode,
			   int want_rc, const char *want_text)
{
	write_file(path, buf, len, mode);
	struct keyset *ks = NULL;
	char err[512] = "";
	int rc = keyset_load(path, &ks, err, sizeof err);
	cr_assert_eq(rc, want_rc, "rc %d: %s", rc, err);
	cr_assert_null(ks);
	cr_assert_not_null(strstr(err, want_text), "message \"%s\" lacks \"%s\"", err, want_text);
	cr_assert_not_null(strstr(err, path), "message \"%s\" does not name the file", err);
}

static struct keyset *expect_loads(const char *path, int want_rc)
{
	struct keyset *ks = NULL;
	char err[512] = "";
	int rc = keyset_load(path, &ks, err, sizeof err);
	cr_assert_eq(rc, want_rc, "rc %d: %s", rc, err);
	cr_assert_not_null(ks);
	return ks;
}

Test(keyset_file, store_load_round_trip)
{
	struct tmp t = tmp_new();
	struct tu_rng rng;
	tu_rng_seed(&rng, 49);
	struct keyset *ks = NULL, *next = NULL;
	cr_assert_eq(keyset_new_random(&ks, 10), 0);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(keyset_rotate(&next, ks, 2, 20 + (uint64_t)i), 0);
		keyset_unref(ks);
		ks = next;
	}
	cr_assert_eq(keyset_count(ks), 3);
	cr_assert_eq(keyset_primary_id(ks), 4);

	struct keyset *rotated = NULL;
	struct client_keys k = client_keys(&rng, 17);
	uint8_t nonce[KEYSET_NONCE_LEN] = { 8 }, cookie[KEYSET_COOKIE_MAX_LEN];
	size_t n = seal(ks, &k, nonce, cookie);

	char err[512] = "";
	cr_assert_eq(keyset_store(ks, t.path, 777, err, sizeof err), 0, "%s", err);
	struct stat st;
	cr_assert_eq(stat(t.path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(st.st_size, 12 + 20 + 3 * KEYSET_KEY_LEN + 32);
	cr_assert_eq(keyset_file_len(ks), (size_t)st.st_size);

	struct keyset *loaded = expect_loads(t.path, 0);
	cr_assert_eq(keyset_count(loaded), 3);
	cr_assert_eq(keyset_id_offset(loaded), 2);
	cr_assert_eq(keyset_primary_id(loaded), 4);
	cr_assert_eq(keyset_created(loaded), 777);
	assert_opens_to(loaded, cookie, n, &k);

	/* Sealing is deterministic for a nonce, so equal cookies mean equal primary keys. */
	uint8_t again[KEYSET_COOKIE_MAX_LEN];
	cr_assert_eq(seal(loaded, &k, nonce, again), n);
	cr_assert_arr_eq(again, cookie, n);

	/* Rotation after loading continues the id sequence. */
	cr_assert_eq(keyset_rotate(&rotated, loaded, 2, 800), 0);
	cr_assert_eq(keyset_primary_id(rotated), 5);
	cr_assert_eq(keyset_id_offset(rotated), 3);
	assert_opens_to(rotated, cookie, n, &k);

	/* Storing again replaces the file and leaves no temporary behind. */
	cr_assert_eq(keyset_store(rotated, t.path, 801, err, sizeof err), 0, "%s", err);
	DIR *d = opendir(t.dir);
	cr_assert_not_null(d);
	int entries = 0;
	for (struct dirent *e; (e = readdir(d));)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			entries++;
	closedir(d);
	cr_assert_eq(entries, 1);
	struct keyset *reloaded = expect_loads(t.path, 0);
	cr_assert_eq(keyset_primary_id(reloaded), 5);
	cr_assert_eq(keyset_created(reloaded), 801);

	keyset_unref(ks);
	keyset_unref(loaded);
	keyset_unref(rotated);
	keyset_unref(reloaded);
	tmp_free(&t);
}

Test(keyset_file, v2_layout_is_byte_exact)
{
	struct tmp t = tmp_new();
	uint8_t keys[2 * KEYSET_KEY_LEN];
	for (size_t j = 0; j < sizeof keys; j++)
		keys[j] = key_byte(j);
	struct keyset *ks = from_keys(0x01020304, 1, 2, keys, 5);
	const uint64_t when = UINT64_C(0x0000000123456789);
	char err[512] = "";
	cr_assert_eq(keyset_store(ks, t.path, when, err, sizeof err), 0, "%s", err);

	size_t len;
	uint8_t *f = read_whole(t.path, &len);
	cr_assert_eq(len, 8 + 4 + 8 + 4 + 4 + 4 + 2 * 64 + 32);
	cr_assert_arr_eq(f, magic_bytes, 8, "magic");
	cr_assert_eq(be(f + 8, 4), 2, "version");
	cr_assert_eq(be(f + 12, 8), when, "store time");
	cr_assert_eq(be(f + 20, 4), 0x01020304, "id_offset");
	cr_assert_eq(be(f + 24, 4), 1, "primary");
	cr_assert_eq(be(f + 28, 4), 2, "count");
	cr_assert_arr_eq(f + 32, keys, sizeof keys, "keys");
	uint8_t digest[32];
	cr_assert_eq(gnutls_hash_fast(GNUTLS_DIG_SHA256, f, len - 32, digest), 0);
	cr_assert_arr_eq(f + len - 32, digest, 32, "checksum");

	/* The same image from the buffer API, and the handmade builder agrees byte for byte. */
	uint8_t img[KEYSET_FILE_LEN(2)];
	cr_assert_eq(keyset_serialize(ks, when, img, sizeof img), (int)len);
	cr_assert_arr_eq(img, f, len);
	size_t hand_len;
	uint8_t *hand = v2_image(magic_bytes, 2, when, 0x01020304, 1, 2, &hand_len);
	cr_assert_eq(hand_len, len);
	cr_assert_arr_eq(hand, f, len);

	struct keyset *loaded = expect_loads(t.path, 0);
	cr_assert_eq(keyset_created(loaded), when);
	keyset_unref(loaded);
	keyset_unref(ks);
	free(hand);
	free(f);
	tmp_free(&t);
}

Test(keyset_file, serialize_bounds)
{
	uint8_t key[KEYSET_KEY_LEN] = { 1 };
	struct keyset *ks = from_keys(0, 0, 1, key, 0);
	uint8_t img[KEYSET_FILE_LEN(1)];
	cr_assert_eq(keyset_serialize(ks, 1, img, sizeof img - 1), -EMSGSIZE);
	cr_assert_eq(keyset_serialize(ks, KEYSET_FILE_MAX_TIME + 1, img, sizeof img), -ERANGE);
	cr_assert_eq(keyset_serialize(ks, KEYSET_FILE_MAX_TIME, img, sizeof img), (int)sizeof img);

	/* A store the loader would refuse is not made, and leaves nothing behind. */
	struct tmp t = tmp_new();
	char err[512] = "";
	cr_assert_eq(keyset_store(ks, t.path, KEYSET_FILE_MAX_TIME + 1, err, sizeof err), -ERANGE);
	cr_assert_not_null(strstr(err, "year 9999"), "%s", err);
	DIR *d = opendir(t.dir);
	cr_assert_not_null(d);
	for (struct dirent *e; (e = readdir(d));)
		cr_assert(e->d_name[0] == '.', "left behind: %s", e->d_name);
	closedir(d);
	keyset_unref(ks);
	tmp_free(&t);
}

/* What the loader must say when bit `bit` of a stored one-key file is flipped. */
static const char *flip_reason(size_t bit)
{
	if (bit < 64)
		return "bad magic";
	if (bit < 96)
		return "format version";
	return "checksum mismatch: the file is corrupt";
}

Test(keyset_file, every_bit_flip_refused, .timeout = 60)
{
	struct tmp t = tmp_new();
	struct tu_rng rng;
	tu_rng_seed(&rng, 50);
	struct keyset *ks = random_keyset(&rng, 3, 1);
	char err[512] = "";
	cr_assert_eq(keyset_store(ks, t.path, 1700000000, err, sizeof err), 0, "%s", err);
	size_t len;
	uint8_t *f = read_whole(t.path, &len);
	cr_assert_eq(len, 128);
	for (size_t bit = 0; bit < len * 8; bit++) {
		f[bit / 8] ^= (uint8_t)(0x80u >> (bit % 8));
		expect_refused(t.path, f, len, 0600, -EBADMSG, flip_reason(bit));
		f[bit / 8] ^= (uint8_t)(0x80u >> (bit % 8));
	}
	/* Control: the unflipped file still loads. */
	write_file(t.path, f, len, 0600);
	keyset_unref(expect_loads(t.path, 0));
	keyset_unref(ks);
	free(f);
	tmp_free(&t);
}

Test(keyset_file, every_truncation_refused)
{
	struct tmp t = tmp_new();
	uint8_t keys[2 * KEYSET_KEY_LEN] = { 7 };
	struct keyset *ks = from_keys(0, 0, 2, keys, 1);
	char err[512] = "";
	cr_assert_eq(keyset_store(ks, t.path, 99, err, sizeof err), 0, "%s", err);
	size_t len;
	uint8_t *f = read_whole(t.path, &len);
	uint8_t *longer = calloc(1, len + 1);
	cr_assert_not_null(longer);
	memcpy(longer, f, len);
	for (size_t n = 0; n < len; n++) {
		/* An empty file has no magic and is too short for version 1. */
		const char *why = n == 0 ? "header" : n < 8 ? "bad magic" : n < 12 ? "version" :
				  n < 64 ? "shorter than" : "checksum mismatch";
		expect_refused(t.path, f, n, 0600, -EBADMSG, why);
	}
	expect_refused(t.path, longer, len + 1, 0600, -EBADMSG, "checksum mismatch");
	keyset_unref(ks);
	free(longer);
	free(f);
	tmp_free(&t);
}

Test(keyset_file, each_v2_refusal_has_its_own_message)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf;
	const uint8_t wrong[8] = { 0x89, 'N', 'T', 'S', 'K', 'E', 'Y', 'Z' };
	buf = v2_image(wrong, 2, 1234, 0, 0, 1, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "bad magic: not a key file");
	free(buf);

	buf = v2_image(magic_bytes, 3, 1234, 0, 0, 1, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG,
		       "format version 3; this program reads versions 1 and 2");
	free(buf);
	buf = v2_image(magic_bytes, 1, 1234, 0, 0, 1, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "format version 1;");
	free(buf);

	buf = v2_image(magic_bytes, 2, 1234, 0, 0, 1, &len);
	buf[len - 1] ^= 1;
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "checksum mismatch: the file is corrupt");
	free(buf);

	/* Authentic files (right checksum) whose fields are wrong. */
	buf = v2_image(magic_bytes, 2, UINT64_C(1) << 63, 0, 0, 1, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG,
		       "does not fit in a signed 64-bit count of seconds");
	free(buf);
	buf = v2_image(magic_bytes, 2, KEYSET_FILE_MAX_TIME + 1, 0, 0, 1, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "past the end of year 9999");
	free(buf);
	buf = v2_image(magic_bytes, 2, 1234, 0, 1, 1, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "primary key index 1");
	free(buf);
	buf = v2_image(magic_bytes, 2, 1234, UINT32_MAX, 0, 2, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "overflow");
	free(buf);
	buf = v2_image(magic_bytes, 2, 1234, 0, 0, 0, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "key count is 0");
	free(buf);

	/* The last accepted second. */
	buf = v2_image(magic_bytes, 2, KEYSET_FILE_MAX_TIME, 0, 0, 1, &len);
	write_file(t.path, buf, len, 0600);
	struct keyset *ks = expect_loads(t.path, 0);
	cr_assert_eq(keyset_created(ks), KEYSET_FILE_MAX_TIME);
	keyset_unref(ks);
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, randomised_parse_round_trips, .timeout = 60)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 51);
	uint8_t img[KEYSET_FILE_LEN(8)], again[KEYSET_FILE_LEN(8)];
	uint8_t keys[8 * KEYSET_KEY_LEN];
	for (int i = 0; i < 10000; i++) {
		uint32_t count = 1 + tu_rng_below(&rng, 8);
		uint32_t id_offset = (uint32_t)tu_rng_next(&rng) >> tu_rng_below(&rng, 32);
		if ((uint64_t)id_offset + count - 1 > UINT32_MAX)
			id_offset = 0;
		uint64_t when = tu_rng_next(&rng) % (KEYSET_FILE_MAX_TIME + 1);
		tu_rng_fill(&rng, keys, (size_t)count * KEYSET_KEY_LEN);
		struct keyset *ks = from_keys(id_offset, tu_rng_below(&rng, count), count, keys, 0);
		int n = keyset_serialize(ks, when, img, sizeof img);
		cr_assert_eq(n, (int)KEYSET_FILE_LEN(count));
		/* A random mutation of one byte of every other image must be refused. */
		size_t at = tu_rng_below(&rng, (uint32_t)n);
		uint8_t delta = (uint8_t)(1 + tu_rng_below(&rng, 255));
		if (i & 1)
			img[at] ^= delta;
		struct keyset *back = NULL;
		char err[256] = "";
		int rc = keyset_parse(img, (size_t)n, "image", &back, err, sizeof err);
		if (i & 1) {
			cr_assert_eq(rc, -EBADMSG, "byte %zu ^ %02x: %d", at, delta, rc);
			cr_assert_null(back);
		} else {
			cr_assert_eq(rc, 0, "%s", err);
			cr_assert_eq(keyset_created(back), when);
			cr_assert_eq(keyset_id_offset(back), id_offset);
			cr_assert_eq(keyset_count(back), count);
			cr_assert_eq(keyset_primary_id(back), keyset_primary_id(ks));
			cr_assert_eq(keyset_serialize(back, when, again, sizeof again), n);
			cr_assert_arr_eq(again, img, (size_t)n);
		}
		keyset_unref(back);
		keyset_unref(ks);
	}
}

Test(keyset_file, missing_file_is_enoent)
{
	struct tmp t = tmp_new();
	struct keyset *ks = NULL;
	char err[256] = "";
	cr_assert_eq(keyset_load(t.path, &ks, err, sizeof err), -ENOENT);
	cr_assert_null(ks);
	tmp_free(&t);
}

Test(keyset_file, store_never_creates_directories)
{
	struct tmp t = tmp_new();
	struct keyset *ks = NULL;
	cr_assert_eq(keyset_new_random(&ks, 1), 0);
	char *missing = NULL, *path = NULL;
	cr_assert(asprintf(&missing, "%s/absent", t.dir) >= 0);
	cr_assert(asprintf(&path, "%s/keys.bin", missing) >= 0);
	char err[512] = "";
	cr_assert_eq(keyset_store(ks, path, 1, err, sizeof err), -ENOENT);
	cr_assert_not_null(strstr(err, missing), "message \"%s\" does not name the directory", err);
	cr_assert_not_null(strstr(err, "does not exist"), "%s", err);
	struct stat st;
	cr_assert_eq(stat(missing, &st), -1);
	cr_assert_eq(errno, ENOENT);
	keyset_unref(ks);
	free(missing);
	free(path);
	tmp_free(&t);
}

Test(keyset_file, v1_file_loads_and_is_reported_old)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image(40, 1, 2, 2 * KEYSET_KEY_LEN, &len);
	write_file(t.path, buf, len, 0600);
	struct keyset *ks = expect_loads(t.path, KEYSET_FILE_OLD_FORMAT);
	cr_assert_eq(keyset_primary_id(ks), 41);
	cr_assert_eq(keyset_created(ks), 1234);
	/* 0400 is as private as 0600. */
	cr_assert_eq(chmod(t.path, 0400), 0);
	keyset_unref(expect_loads(t.path, KEYSET_FILE_OLD_FORMAT));

	/* Its keys are the file's: storing it gives a version 2 file around the same bytes. */
	uint8_t img[KEYSET_FILE_LEN(2)];
	cr_assert_eq(keyset_serialize(ks, keyset_created(ks), img, sizeof img), (int)sizeof img);
	cr_assert_arr_eq(img + 12, buf, len);
	keyset_unref(ks);
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, v1_time_out_of_range_refused)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image_time(KEYSET_FILE_MAX_TIME + 1, 0, 0, 1, KEYSET_KEY_LEN, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "past the end of year 9999");
	free(buf);
	/* The time of a corrupt file from the review: a version 1 file cannot reach 2^63. */
	buf = image_time(UINT64_C(0x8000000000000000) + 1000, 0, 0, 1, KEYSET_KEY_LEN, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "bad magic");
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, loader_refuses_wrong_sizes)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image(0, 0, 2, 2 * KEYSET_KEY_LEN + 1, &len);
	expect_refused(t.path, buf, len - 2, 0600, -EBADMSG, "bytes");
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "bytes");
	expect_refused(t.path, buf, KEYSET_FILE_V1_HEADER_LEN - 1, 0600, -EBADMSG, "header");
	expect_refused(t.path, buf, 0, 0600, -EBADMSG, "header");
	/* The header alone claims keys that are not there. */
	expect_refused(t.path, buf, KEYSET_FILE_V1_HEADER_LEN, 0600, -EBADMSG, "bytes");
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, loader_refuses_bad_header_fields)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image(0, 0, 0, 0, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "key count is 0");
	free(buf);

	buf = image(0, 2, 2, 2 * KEYSET_KEY_LEN, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "primary key index 2");
	free(buf);

	buf = image(0, 0, KEYSET_MAX_KEYS + 1, 0, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "limit");
	free(buf);

	buf = image(UINT32_MAX, 0, 2, 2 * KEYSET_KEY_LEN, &len);
	expect_refused(t.path, buf, len, 0600, -EBADMSG, "overflow");
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, loader_refuses_open_modes)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image(0, 0, 1, KEYSET_KEY_LEN, &len);
	static const mode_t modes[] = { 0640, 0604, 0660, 0602, 0610, 0644 };
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
		expect_refused(t.path, buf, len, modes[i], -EPERM, "chmod 600");
	}
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, loader_refuses_other_owners)
{
	char want[128];
	if (geteuid() == 0) {
		struct tmp t = tmp_new();
		size_t len;
		uint8_t *buf = image(0, 0, 1, KEYSET_KEY_LEN, &len);
		write_file(t.path, buf, len, 0600);
		keyset_unref(expect_loads(t.path, KEYSET_FILE_OLD_FORMAT));
		cr_assert_eq(chown(t.path, 65534, (gid_t)-1), 0);
		snprintf(want, sizeof want, "owned by uid 65534, not by uid 0");
		struct keyset *ks = NULL;
		char err[512] = "";
		cr_assert_eq(keyset_load(t.path, &ks, err, sizeof err), -EPERM, "%s", err);
		cr_assert_null(ks);
		cr_assert_not_null(strstr(err, want), "message \"%s\" lacks \"%s\"", err, want);
		cr_assert_not_null(strstr(err, "run chown 0 "), "%s", err);
		cr_assert_not_null(strstr(err, t.path), "%s", err);
		/* Owned by us again, it loads: the refusal was about the owner alone. */
		cr_assert_eq(chown(t.path, 0, (gid_t)-1), 0);
		keyset_unref(expect_loads(t.path, KEYSET_FILE_OLD_FORMAT));
		free(buf);
		tmp_free(&t);
		return;
	}
	/* Not root: a file we cannot chown away is one we do not own. /etc/passwd belongs to root
	 * and is readable, so the owner check is what refuses it (before its mode and contents). */
	struct stat st;
	cr_assert_eq(stat("/etc/passwd", &st), 0);
	cr_assert_neq(st.st_uid, geteuid());
	snprintf(want, sizeof want, "owned by uid %ju, not by uid %ju", (uintmax_t)st.st_uid,
		 (uintmax_t)geteuid());
	struct keyset *ks = NULL;
	char err[512] = "";
	cr_assert_eq(keyset_load("/etc/passwd", &ks, err, sizeof err), -EPERM, "%s", err);
	cr_assert_null(ks);
	cr_assert_not_null(strstr(err, want), "message \"%s\" lacks \"%s\"", err, want);
	cr_assert_not_null(strstr(err, "run chown"), "%s", err);
}

/* Before a drop the daemon checks the file for the account it will run as: a file of ours is
 * then another owner's, and the fix names that account's uid. */
Test(keyset_file, loader_checks_the_owner_it_is_given)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image(0, 0, 1, KEYSET_KEY_LEN, &len);
	write_file(t.path, buf, len, 0600);
	uid_t other = geteuid() == 65534 ? 65533 : 65534;
	struct keyset *ks = NULL;
	char err[512] = "";
	cr_assert_eq(keyset_load_owned(t.path, other, &ks, err, sizeof err), -EPERM, "%s", err);
	cr_assert_null(ks);
	char want[128];
	snprintf(want, sizeof want, "not by uid %ju this program runs as; run chown %ju ",
		 (uintmax_t)other, (uintmax_t)other);
	cr_assert_not_null(strstr(err, want), "message \"%s\" lacks \"%s\"", err, want);
	cr_assert_eq(keyset_load_owned(t.path, geteuid(), &ks, err, sizeof err),
		     KEYSET_FILE_OLD_FORMAT, "%s", err);
	keyset_unref(ks);
	free(buf);
	tmp_free(&t);
}

Test(keyset_file, loader_refuses_directories)
{
	struct tmp t = tmp_new();
	struct keyset *ks = NULL;
	char err[256] = "";
	cr_assert_eq(chmod(t.dir, 0700), 0);
	cr_assert_lt(keyset_load(t.dir, &ks, err, sizeof err), 0);
	cr_assert_null(ks);
	cr_assert_neq(err[0], '\0');
	tmp_free(&t);
}

/* ---- stale temporaries ---- */

static void touch_aged(const char *dir, const char *name, time_t mtime)
{
	char *p = tu_path(dir, name);
	write_file(p, (const uint8_t *)"k", 1, 0600);
	struct timespec ts[2] = { { .tv_sec = mtime }, { .tv_sec = mtime } };
	cr_assert_eq(utimensat(AT_FDCWD, p, ts, 0), 0, "%s", p);
	free(p);
}

static bool exists(const char *dir, const char *name)
{
	char *p = tu_path(dir, name);
	struct stat st;
	bool there = lstat(p, &st) == 0;
	free(p);
	return there;
}

struct removals {
	int n;
	char names[8][64];
};

static void record_removal(void *arg, const char *dir, const char *name, uint64_t age_s)
{
	(void)dir;
	(void)age_s;
	struct removals *r = arg;
	cr_assert_lt(r->n, 8);
	snprintf(r->names[r->n++], sizeof r->names[0], "%s", name);
}

Test(keyset_file, stale_temporaries_removed_exactly)
{
	char *dir = tu_tempdir();
	char *path = tu_path(dir, "keys");
	const time_t t0 = 1700000000;
	/* Each stale by age; only the first two are keyset_store's. */
	touch_aged(dir, "keys.tmp.Ab3xY9", t0 - 61);
	touch_aged(dir, "keys.tmp.000000", t0 - 60);
	touch_aged(dir, "keys.tmp.notours", t0 - 3600);
	touch_aged(dir, "keys.tmpX", t0 - 3600);
	touch_aged(dir, "keys.tmp.abc12", t0 - 3600);
	touch_aged(dir, "keys.tmp.abc1234", t0 - 3600);
	touch_aged(dir, "keys.tmp.ab-123", t0 - 3600);
	touch_aged(dir, "other.tmp.ABCDEF", t0 - 3600);
	touch_aged(dir, "xkeys.tmp.ABCDEF", t0 - 3600);
	/* Young: a store in progress. */
	touch_aged(dir, "keys.tmp.Fresh1", t0 - 59);
	/* The right name but not a regular file. */
	char *sub = tu_path(dir, "keys.tmp.DirDir");
	cr_assert_eq(mkdir(sub, 0700), 0);
	char *link = tu_path(dir, "keys.tmp.Link01");
	char *target = tu_path(dir, "keys.tmp.notours");
	cr_assert_eq(symlink(target, link), 0);
	struct timespec lts[2] = { { .tv_sec = t0 - 3600 }, { .tv_sec = t0 - 3600 } };
	cr_assert_eq(utimensat(AT_FDCWD, link, lts, AT_SYMLINK_NOFOLLOW), 0);
	/* Someone else's. */
	if (geteuid() == 0) {
		touch_aged(dir, "keys.tmp.Nobody", t0 - 3600);
		char *p = tu_path(dir, "keys.tmp.Nobody");
		cr_assert_eq(chown(p, 65534, (gid_t)-1), 0);
		free(p);
	}

	struct removals r = { 0 };
	char err[512] = "";
	int rc = keyset_remove_stale_temps(path, (uint64_t)t0, 60, record_removal, &r, err,
					   sizeof err);
	cr_assert_eq(rc, 2, "rc %d: %s", rc, err);
	cr_assert_eq(r.n, 2);
	cr_assert(!exists(dir, "keys.tmp.Ab3xY9"));
	cr_assert(!exists(dir, "keys.tmp.000000"));
	/* The callback hears each name (readdir order is the file system's). */
	bool first = strcmp(r.names[0], "keys.tmp.Ab3xY9") == 0;
	cr_assert_str_eq(r.names[first ? 0 : 1], "keys.tmp.Ab3xY9");
	cr_assert_str_eq(r.names[first ? 1 : 0], "keys.tmp.000000");
	static const char *const kept[] = {
		"keys.tmp.notours", "keys.tmpX", "keys.tmp.abc12", "keys.tmp.abc1234",
		"keys.tmp.ab-123", "other.tmp.ABCDEF", "xkeys.tmp.ABCDEF", "keys.tmp.Fresh1",
		"keys.tmp.DirDir", "keys.tmp.Link01",
	};
	for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
		cr_assert(exists(dir, kept[i]), "%s was removed", kept[i]);
	if (geteuid() == 0)
		cr_assert(exists(dir, "keys.tmp.Nobody"), "another user's temporary was removed");

	/* A missing directory is an error the caller can tell apart. */
	char *nowhere = tu_path(dir, "absent/keys");
	cr_assert_eq(keyset_remove_stale_temps(nowhere, (uint64_t)t0, 60, NULL, NULL, err,
					       sizeof err),
		     -ENOENT);
	free(nowhere);
	free(sub);
	free(link);
	free(target);
	free(path);
	tu_rmtree(dir);
	free(dir);
}

/* ---- the daemon's keyset task ----
 *
 * The task is daemon code, not part of libntspool; this program links it (mk/crypto.am) so
 * keyset_task_load is driven exactly as the daemon runs it (its uv calls are never reached). */

/* Runs keyset_task_load on path with the log captured; returns the log text (caller frees). */
static char *task_load(const char *path, struct keyset_task *task)
{
	char *logbuf = NULL;
	size_t loglen = 0;
	FILE *log = open_memstream(&logbuf, &loglen);
	cr_assert_not_null(log);
	log_set_stream(log);
	log_set_level(LOG_LEVEL_INFO);
	struct config_daemon_keyset cfg = {
		.key_storage_path = (char *)path,
		.key_rotation_interval_s = 86400,
		.stale_key_count = 7,
	};
	char err[512] = "";
	memset(task, 0, sizeof *task);
	int rc = keyset_task_load(task, &cfg, err, sizeof err);
	log_set_stream(NULL);
	fclose(log);
	cr_assert_eq(rc, 0, "keyset_task_load: %d: %s\nlog:\n%s", rc, err, logbuf);
	/* cfg lives on this stack: the task must not keep it. */
	task->cfg = NULL;
	return logbuf;
}

Test(keyset_task, rewrites_a_v1_file_as_v2)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *v1 = image(40, 1, 2, 2 * KEYSET_KEY_LEN, &len);
	write_file(t.path, v1, len, 0600);
	struct keyset_task task;
	char *log = task_load(t.path, &task);
	cr_assert_not_null(strstr(log, "rewrote"), "%s", log);
	cr_assert_not_null(strstr(log, t.path), "%s", log);
	cr_assert_eq(keyset_created(task.keyset), 1234);

	size_t flen;
	uint8_t *f = read_whole(t.path, &flen);
	cr_assert_eq(flen, 12 + len + 32);
	cr_assert_arr_eq(f, magic_bytes, 8, "the file does not start with the magic");
	cr_assert_eq(be(f + 8, 4), 2);
	/* The same time, ids and keys: the version 1 bytes, inside the version 2 frame. */
	cr_assert_arr_eq(f + 12, v1, len);
	struct keyset *again = expect_loads(t.path, 0);
	cr_assert_eq(keyset_created(again), 1234);
	cr_assert_eq(keyset_primary_id(again), 41);
	keyset_unref(again);
	keyset_task_deinit(&task);
	free(log);

	/* A version 2 file is left as it is. */
	struct stat before, after;
	cr_assert_eq(stat(t.path, &before), 0);
	log = task_load(t.path, &task);
	cr_assert_null(strstr(log, "rewrote"), "%s", log);
	cr_assert_eq(stat(t.path, &after), 0);
	cr_assert_eq(before.st_ino, after.st_ino, "a version 2 file was stored again");
	keyset_task_deinit(&task);
	free(log);
	free(f);
	free(v1);
	tmp_free(&t);
}

Test(keyset_task, removes_stale_temporaries_at_start)
{
	char *dir = tu_tempdir();
	char *path = tu_path(dir, "keys");
	time_t now = time(NULL);
	touch_aged(dir, "keys.tmp.OLD123", now - 3600);
	touch_aged(dir, "keys.tmp.new123", now);
	touch_aged(dir, "keys.tmp.notours", now - 3600);
	touch_aged(dir, "keys.tmpX", now - 3600);
	struct keyset_task task;
	char *log = task_load(path, &task);
	cr_assert(!exists(dir, "keys.tmp.OLD123"), "the stale temporary is still there");
	cr_assert_not_null(strstr(log, "keys.tmp.OLD123"), "removal not logged:\n%s", log);
	cr_assert(exists(dir, "keys.tmp.new123"));
	cr_assert(exists(dir, "keys.tmp.notours"));
	cr_assert(exists(dir, "keys.tmpX"));
	cr_assert_null(strstr(log, "new123"), "%s", log);
	/* The missing key file was then created, in version 2. */
	size_t flen;
	uint8_t *f = read_whole(path, &flen);
	cr_assert_arr_eq(f, magic_bytes, 8);
	keyset_task_deinit(&task);
	free(f);
	free(log);
	free(path);
	tu_rmtree(dir);
	free(dir);
}
