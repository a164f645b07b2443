/* The server's cookie keyset (PROTOCOL.md §6): master keys, rotation, cookies, storage file.
 *
 * A keyset is immutable once made: rotation builds a new one from the old, and keysets are
 * reference counted, so a listener keeps the keyset it started a packet with while the keyset
 * task publishes the next. The reference count is atomic; sealing and opening use per-key GnuTLS
 * handles, so one keyset is used for cookies by one thread at a time.
 *
 * Key i of a keyset has id id_offset + i; ids only grow, so a cookie names its key forever and a
 * rotated-out key is recognised as unknown (-ENOKEY), not as a forgery. Master keys are 64 bytes
 * (AES-SIV-CMAC-512) whatever AEAD the client negotiated. */
#ifndef NTSPOOL_KEYSET_H
#define NTSPOOL_KEYSET_H

#include <stddef.h>
#include <stdint.h>

#define KEYSET_KEY_LEN 64
#define KEYSET_NONCE_LEN 16
#define KEYSET_MAX_KEYS 1024
/* key_id(4) ‖ ct_len(2) ‖ nonce(16) */
#define KEYSET_COOKIE_HEADER_LEN 22
/* The cookie of AEAD 17: header ‖ tag(16) ‖ aead(2) ‖ two 64-byte keys. */
#define KEYSET_COOKIE_MAX_LEN 168
/* Storage file header: u64 time ‖ u32 id_offset ‖ u32 primary ‖ u32 count. */
#define KEYSET_FILE_HEADER_LEN 20

struct keyset;

/* A keyset of one fresh random key (id 0), created at now. *out is new (release with
 * keyset_unref). 0, -ENOMEM, or -EIO when the random generator fails. */
int keyset_new_random(struct keyset **out, uint64_t now);

/* A keyset from explicit keys: count × 64 bytes at keys (borrowed, copied), key i having id
 * id_offset + i, the primary (sealing) key at index primary. For the loader and for tests.
 * *out is new. -EINVAL unless 1 <= count <= KEYSET_MAX_KEYS, primary < count and the ids fit in
 * 32 bits; -ENOMEM. */
int keyset_from_keys(struct keyset **out, uint32_t id_offset, uint32_t primary, uint32_t count,
		     const uint8_t *keys, uint64_t created);

/* A new keyset whose primary is a fresh random key with the next id, keeping at most
 * stale_key_count of old's newest keys (the config's stale-key-count; a loaded keyset with more
 * keys is trimmed here). old is borrowed and unchanged; *out is new, created at now.
 * -EOVERFLOW when the key ids are exhausted, -ENOMEM, -EIO. */
int keyset_rotate(struct keyset **out, const struct keyset *old, uint32_t stale_key_count,
		  uint64_t now);

/* Returns ks with one more reference (ks borrowed; the result is released with keyset_unref). */
struct keyset *keyset_ref(struct keyset *ks);

/* Drops one reference (takes ownership of it); the last one wipes the keys and frees. NULL ok. */
void keyset_unref(struct keyset *ks);

uint32_t keyset_primary_id(const struct keyset *ks);
uint32_t keyset_count(const struct keyset *ks);
/* Id of the oldest key held; the keys are ids id_offset .. id_offset + count - 1. */
uint32_t keyset_id_offset(const struct keyset *ks);
/* When the keyset was made by keyset_new_random/keyset_rotate, or the store time of a loaded
 * file: what the next rotation is scheduled from. */
uint64_t keyset_created(const struct keyset *ks);

/* Cookie length for a client AEAD (104 for 15, 168 for 17), 0 if unsupported. */
size_t keyset_cookie_len(uint16_t aead_id);

/* Seals a cookie for the client keys c2s and s2c (borrowed, key_len bytes each, key_len must be
 * aead_key_len(aead_id)) under the primary key with the given 16-byte nonce (borrowed; tests use
 * this, servers use keyset_seal_cookie_random). Writes into out (borrowed, cap bytes). Returns
 * the cookie length, -EINVAL for an unsupported AEAD or wrong key_len, -EMSGSIZE if cap is too
 * small, -EIO on a GnuTLS failure. */
int keyset_seal_cookie(struct keyset *ks, uint16_t aead_id, const uint8_t *c2s,
		       const uint8_t *s2c, size_t key_len, const uint8_t *nonce, uint8_t *out,
		       size_t cap);

/* keyset_seal_cookie with a nonce from gnutls_rnd(GNUTLS_RND_NONCE). */
int keyset_seal_cookie_random(struct keyset *ks, uint16_t aead_id, const uint8_t *c2s,
			      const uint8_t *s2c, size_t key_len, uint8_t *out, size_t cap);

/* Opens a cookie (borrowed, untrusted). On success returns 0 and fills *aead_id, *key_len and
 * the first *key_len bytes of c2s and s2c (borrowed, AEAD_MAX_KEY_LEN bytes each). -EBADMSG for a
 * bad length, structure, tag or plaintext; -ENOKEY when the key id is not held (rotated out or
 * never issued). On failure the outputs hold no key material. */
int keyset_open_cookie(struct keyset *ks, const uint8_t *cookie, size_t len, uint16_t *aead_id,
		       uint8_t *c2s, uint8_t *s2c, size_t *key_len);

/* Writes ks to path atomically: a temp file (0600, O_EXCL) in the same directory, fsync,
 * rename over path, fsync the directory. The parent directory is never created. now is recorded
 * as the store time. On failure returns a negative errno and puts a message naming the path
 * into err (borrowed, errlen bytes). */
int keyset_store(const struct keyset *ks, const char *path, uint64_t now, char *err,
		 size_t errlen);

/* Reads a keyset stored by keyset_store; *out is new. -ENOENT when the file does not exist (the
 * caller then generates keys). A file that grants any group/other permission is refused
 * (-EPERM) with the chmod fix in the message; a malformed file is refused (-EBADMSG) with the
 * check that failed. err as for keyset_store. */
int keyset_load(const char *path, struct keyset **out, char *err, size_t errlen);

#endif
