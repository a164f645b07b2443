#include "keyset.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aead.h"
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

/* A file image with the given header and body bytes (which need not match count). */
static uint8_t *image(uint32_t id_offset, uint32_t primary, uint32_t count, size_t body,
		      size_t *len)
{
	*len = KEYSET_FILE_HEADER_LEN + body;
	uint8_t *buf = malloc(*len);
	cr_assert_not_null(buf);
	struct wire_writer w;
	wire_writer_init(&w, buf, *len);
	wire_put_u64(&w, 1234);
	wire_put_u32(&w, id_offset);
	wire_put_u32(&w, primary);
	wire_put_u32(&w, count);
	for (size_t i = 0; i < body; i++)
		wire_put_u8(&w, (uint8_t)i);
	cr_assert_eq(wire_writer_error(&w), 0);
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
	cr_assert_eq(st.st_size, KEYSET_FILE_HEADER_LEN + 3 * KEYSET_KEY_LEN);

	struct keyset *loaded = NULL;
	cr_assert_eq(keyset_load(t.path, &loaded, err, sizeof err), 0, "%s", err);
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
	struct keyset *reloaded = NULL;
	cr_assert_eq(keyset_load(t.path, &reloaded, err, sizeof err), 0, "%s", err);
	cr_assert_eq(keyset_primary_id(reloaded), 5);
	cr_assert_eq(keyset_created(reloaded), 801);

	keyset_unref(ks);
	keyset_unref(loaded);
	keyset_unref(rotated);
	keyset_unref(reloaded);
	tmp_free(&t);
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

Test(keyset_file, loader_accepts_a_handmade_file)
{
	struct tmp t = tmp_new();
	size_t len;
	uint8_t *buf = image(40, 1, 2, 2 * KEYSET_KEY_LEN, &len);
	write_file(t.path, buf, len, 0600);
	struct keyset *ks = NULL;
	char err[256] = "";
	cr_assert_eq(keyset_load(t.path, &ks, err, sizeof err), 0, "%s", err);
	cr_assert_eq(keyset_primary_id(ks), 41);
	cr_assert_eq(keyset_created(ks), 1234);
	/* 0400 is as private as 0600. */
	cr_assert_eq(chmod(t.path, 0400), 0);
	struct keyset *ro = NULL;
	cr_assert_eq(keyset_load(t.path, &ro, err, sizeof err), 0, "%s", err);
	keyset_unref(ro);
	keyset_unref(ks);
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
	expect_refused(t.path, buf, KEYSET_FILE_HEADER_LEN - 1, 0600, -EBADMSG, "header");
	expect_refused(t.path, buf, 0, 0600, -EBADMSG, "header");
	/* The header alone claims keys that are not there. */
	expect_refused(t.path, buf, KEYSET_FILE_HEADER_LEN, 0600, -EBADMSG, "bytes");
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
