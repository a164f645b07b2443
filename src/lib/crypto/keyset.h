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
#include <sys/types.h>

#define KEYSET_KEY_LEN 64
#define KEYSET_NONCE_LEN 16
#define KEYSET_MAX_KEYS 1024
/* key_id(4) ‖ ct_len(2) ‖ nonce(16) */
#define KEYSET_COOKIE_HEADER_LEN 22
/* The cookie of AEAD 17: header ‖ tag(16) ‖ aead(2) ‖ two 64-byte keys. */
#define KEYSET_COOKIE_MAX_LEN 168

/* The key file, version 2 (doc/crypto.md), big-endian:
 *
 *   offset 0   magic, 8 bytes: 89 4e 54 53 4b 45 59 53 ("\x89NTSKEYS")
 *          8   u32 format version = 2
 *         12   u64 unix time of the store
 *         20   u32 id_offset
 *         24   u32 primary
 *         28   u32 count
 *         32   count × 64-byte keys
 *   32 + 64 × count   SHA-256 of every byte before it (32 bytes)
 *
 * Version 1 is bytes 12 .. 32 + 64 × count alone: no magic, version or checksum. A version 1
 * file starts with its store time, whose first byte is 0 for any time the loader accepts; the
 * magic's first byte is not, so the loader tells the two apart by that byte. */
#define KEYSET_FILE_MAGIC "\x89NTSKEYS"
#define KEYSET_FILE_MAGIC_LEN 8
#define KEYSET_FILE_VERSION 2
/* The fields of version 1: u64 time ‖ u32 id_offset ‖ u32 primary ‖ u32 count. */
#define KEYSET_FILE_V1_HEADER_LEN 20
/* magic ‖ u32 version ‖ the version 1 fields. */
#define KEYSET_FILE_HEADER_LEN (KEYSET_FILE_MAGIC_LEN + 4 + KEYSET_FILE_V1_HEADER_LEN)
#define KEYSET_FILE_DIGEST_LEN 32
#define KEYSET_FILE_LEN(count)                                                                    \
	(KEYSET_FILE_HEADER_LEN + (size_t)(count) * KEYSET_KEY_LEN + KEYSET_FILE_DIGEST_LEN)
#define KEYSET_FILE_MAX_LEN KEYSET_FILE_LEN(KEYSET_MAX_KEYS)
/* The latest store time accepted, 9999-12-31T23:59:59Z: far past any real clock, and below 2^53,
 * so the status output's JSON number is exact. */
#define KEYSET_FILE_MAX_TIME UINT64_C(253402300799)
/* Returned (non-negative: success) by keyset_parse and keyset_load for a file in the version 1
 * format: the keyset is loaded and the caller should store it again, in version 2. */
#define KEYSET_FILE_OLD_FORMAT 1
/* keyset_store's temporaries are path KEYSET_TEMP_INFIX and six letters or digits (mkostemp). */
#define KEYSET_TEMP_INFIX ".tmp."

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

struct slot;
/* Makes s a slot of keysets (slot.h) holding ks (its reference taken; may be NULL): the daemon
 * publishes each rotation there and every worker reads it through its own view. */
void keyset_slot_init(struct slot *s, struct keyset *ks);

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

/* Size of ks as a version 2 file: KEYSET_FILE_LEN(keyset_count(ks)). */
size_t keyset_file_len(const struct keyset *ks);

/* Writes ks as a version 2 file image with store time now into buf (borrowed, cap bytes): what
 * keyset_store writes. Returns the length, -EMSGSIZE if cap is below keyset_file_len(ks),
 * -ERANGE if now is past KEYSET_FILE_MAX_TIME (the loader would refuse the file), -EIO when the
 * hash fails. buf then holds key material: the caller wipes it. */
int keyset_serialize(const struct keyset *ks, uint64_t now, uint8_t *buf, size_t cap);

/* Writes ks to path atomically: a temp file (0600, O_EXCL, named path KEYSET_TEMP_INFIX XXXXXX)
 * in the same directory, fsync, rename over path, fsync the directory. The parent directory is
 * never created. now is recorded as the store time. The format is always version 2. On failure
 * returns a negative errno and puts a message naming the path into err (borrowed, errlen
 * bytes); -ERANGE for a time past KEYSET_FILE_MAX_TIME. */
int keyset_store(const struct keyset *ks, const char *path, uint64_t now, char *err,
		 size_t errlen);

/* Parses a key file image (buf borrowed, len bytes, untrusted) into *out (new). name (borrowed)
 * is what the messages call the file. A non-zero first byte means a versioned file: magic, then
 * version (only 2 is read), then minimum size and checksum (compared in constant time) before
 * any field; a zero first byte means version 1. Both then need 1 <= count <=
 * KEYSET_MAX_KEYS, the exact size of count keys, primary < count, ids that fit in 32 bits and a
 * store time of at most KEYSET_FILE_MAX_TIME, which becomes keyset_created.
 * Returns 0 for a version 2 file, KEYSET_FILE_OLD_FORMAT for a version 1 file (loaded as well),
 * -EBADMSG with the check that failed in err, -ENOMEM, -EIO. */
int keyset_parse(const uint8_t *buf, size_t len, const char *name, struct keyset **out,
		 char *err, size_t errlen);

/* Reads the file at path with keyset_parse; *out is new. Returns as keyset_parse (so 0 or
 * KEYSET_FILE_OLD_FORMAT on success), or -ENOENT when the file does not exist (the caller then
 * generates keys). A file not owned by the effective uid is refused (-EPERM) with the chown fix
 * in the message; one that grants any group/other permission is refused (-EPERM) with the chmod
 * fix; -EINVAL for something other than a regular file. err as for keyset_store. */
int keyset_load(const char *path, struct keyset **out, char *err, size_t errlen);

/* keyset_load for a file that must be owned by owner: the uid a process about to drop its
 * privileges will run as, checked before the drop. */
int keyset_load_owned(const char *path, uid_t owner, struct keyset **out, char *err,
		      size_t errlen);

/* Called for each removed temporary: dir and name (borrowed for the call), age in seconds. */
typedef void keyset_removed_fn(void *arg, const char *dir, const char *name, uint64_t age_s);

/* Removes the temporaries an interrupted keyset_store left beside path: names exactly path's
 * file name KEYSET_TEMP_INFIX and six letters or digits, regular files owned by the effective
 * uid, last modified at least min_age_s before now (unix seconds). Younger ones may be a store
 * in progress in another process and are left alone, as is anything else. removed (may be NULL)
 * hears of each removal, with arg. Returns how many were removed, or a negative errno with a
 * message in err when the directory cannot be read or a temporary cannot be removed (the scan
 * still goes on past the latter). */
int keyset_remove_stale_temps(const char *path, uint64_t now, uint64_t min_age_s,
			      keyset_removed_fn *removed, void *arg, char *err, size_t errlen);

#endif
