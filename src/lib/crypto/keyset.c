#include "keyset.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "slot.h"
#include "wire.h"

/* Master keys are AES-SIV-CMAC-512 keys, whatever the client uses. */
#define MASTER_AEAD AEAD_AES_SIV_CMAC_512
/* aead(u16) ‖ S2C ‖ C2S at the largest key size. */
#define PLAINTEXT_MAX (2 + 2 * AEAD_MAX_KEY_LEN)

struct key {
	uint8_t bytes[KEYSET_KEY_LEN];
	/* Made once per key: the cookie path only re-uses it. */
	struct aead *aead;
};

struct keyset {
	atomic_uint refs;
	uint32_t id_offset;
	uint32_t primary;
	uint32_t count;
	uint64_t created;
	struct key keys[];
};

static void destroy(struct keyset *ks)
{
	for (uint32_t i = 0; i < ks->count; i++) {
		aead_free(ks->keys[i].aead);
		gnutls_memset(ks->keys[i].bytes, 0, sizeof ks->keys[i].bytes);
	}
	free(ks);
}

/* The caller fills keys[i].bytes and then calls make_handles. */
static struct keyset *alloc_keyset(uint32_t id_offset, uint32_t primary, uint32_t count,
				   uint64_t created)
{
	struct keyset *ks = calloc(1, sizeof *ks + (size_t)count * sizeof ks->keys[0]);
	if (!ks)
		return NULL;
	atomic_init(&ks->refs, 1);
	ks->id_offset = id_offset;
	ks->primary = primary;
	ks->count = count;
	ks->created = created;
	return ks;
}

static int make_handles(struct keyset *ks)
{
	for (uint32_t i = 0; i < ks->count; i++) {
		int rc = aead_new(&ks->keys[i].aead, MASTER_AEAD, ks->keys[i].bytes,
				  sizeof ks->keys[i].bytes);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int random_key(uint8_t key[KEYSET_KEY_LEN])
{
	return gnutls_rnd(GNUTLS_RND_KEY, key, KEYSET_KEY_LEN) < 0 ? -EIO : 0;
}

int keyset_new_random(struct keyset **out, uint64_t now)
{
	struct keyset *ks = alloc_keyset(0, 0, 1, now);
	if (!ks)
		return -ENOMEM;
	int rc = random_key(ks->keys[0].bytes);
	if (rc < 0)
		goto fail;
	rc = make_handles(ks);
	if (rc < 0)
		goto fail;
	*out = ks;
	return 0;
fail:
	destroy(ks);
	return rc;
}

static bool valid_shape(uint32_t id_offset, uint32_t primary, uint32_t count)
{
	return count >= 1 && count <= KEYSET_MAX_KEYS && primary < count &&
	       (uint64_t)id_offset + count - 1 <= UINT32_MAX;
}

int keyset_from_keys(struct keyset **out, uint32_t id_offset, uint32_t primary, uint32_t count,
		     const uint8_t *keys, uint64_t created)
{
	if (!valid_shape(id_offset, primary, count))
		return -EINVAL;
	struct keyset *ks = alloc_keyset(id_offset, primary, count, created);
	if (!ks)
		return -ENOMEM;
	for (uint32_t i = 0; i < count; i++)
		memcpy(ks->keys[i].bytes, keys + (size_t)i * KEYSET_KEY_LEN, KEYSET_KEY_LEN);
	int rc = make_handles(ks);
	if (rc < 0) {
		destroy(ks);
		return rc;
	}
	*out = ks;
	return 0;
}

int keyset_rotate(struct keyset **out, const struct keyset *old, uint32_t stale_key_count,
		  uint64_t now)
{
	uint64_t next_id = (uint64_t)old->id_offset + old->count;
	if (next_id > UINT32_MAX)
		return -EOVERFLOW;
	uint32_t kept = stale_key_count < old->count ? stale_key_count : old->count;
	if (kept > KEYSET_MAX_KEYS - 1)
		kept = KEYSET_MAX_KEYS - 1;
	uint32_t first = old->count - kept;
	struct keyset *ks = alloc_keyset(old->id_offset + first, kept, kept + 1, now);
	if (!ks)
		return -ENOMEM;
	for (uint32_t i = 0; i < kept; i++)
		memcpy(ks->keys[i].bytes, old->keys[first + i].bytes, KEYSET_KEY_LEN);
	int rc = random_key(ks->keys[kept].bytes);
	if (rc < 0)
		goto fail;
	rc = make_handles(ks);
	if (rc < 0)
		goto fail;
	*out = ks;
	return 0;
fail:
	destroy(ks);
	return rc;
}

struct keyset *keyset_ref(struct keyset *ks)
{
	if (ks)
		atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
	return ks;
}

SLOT_OF(keyset, struct keyset, keyset_ref, keyset_unref)

void keyset_unref(struct keyset *ks)
{
	if (!ks)
		return;
	if (atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) == 1)
		destroy(ks);
}

uint32_t keyset_primary_id(const struct keyset *ks)
{
	return ks->id_offset + ks->primary;
}

uint32_t keyset_count(const struct keyset *ks)
{
	return ks->count;
}

uint32_t keyset_id_offset(const struct keyset *ks)
{
	return ks->id_offset;
}

uint64_t keyset_created(const struct keyset *ks)
{
	return ks->created;
}

/* SIV output length: tag ‖ aead(u16) ‖ S2C ‖ C2S. */
static size_t sealed_len(size_t key_len)
{
	return AEAD_TAG_LEN + 2 + 2 * key_len;
}

size_t keyset_cookie_len(uint16_t aead_id)
{
	size_t key_len = aead_key_len(aead_id);
	return key_len ? KEYSET_COOKIE_HEADER_LEN + sealed_len(key_len) : 0;
}

int keyset_seal_cookie(struct keyset *ks, uint16_t aead_id, const uint8_t *c2s,
		       const uint8_t *s2c, size_t key_len, const uint8_t *nonce, uint8_t *out,
		       size_t cap)
{
	size_t want = aead_key_len(aead_id);
	if (want == 0 || key_len != want)
		return -EINVAL;
	size_t cookie_len = keyset_cookie_len(aead_id);
	if (cap < cookie_len)
		return -EMSGSIZE;

	uint8_t pt[PLAINTEXT_MAX];
	struct wire_writer p;
	wire_writer_init(&p, pt, sizeof pt);
	wire_put_u16(&p, aead_id);
	wire_put_bytes(&p, s2c, key_len);
	wire_put_bytes(&p, c2s, key_len);

	const struct key *k = &ks->keys[ks->primary];
	size_t ct_len = sealed_len(key_len);
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	wire_put_u32(&w, ks->id_offset + ks->primary);
	wire_put_u16(&w, (uint16_t)ct_len);
	wire_put_bytes(&w, nonce, KEYSET_NONCE_LEN);
	uint8_t *ct = wire_put_reserve(&w, ct_len);
	/* pt and cap were sized above. */
	assert(ct && wire_writer_error(&p) == 0);
	int rc = aead_seal(k->aead, nonce, KEYSET_NONCE_LEN, NULL, 0, pt, wire_written(&p), ct,
			   ct_len);
	if (rc >= 0)
		rc = (int)wire_written(&w);
	gnutls_memset(pt, 0, sizeof pt);
	return rc;
}

int keyset_seal_cookie_random(struct keyset *ks, uint16_t aead_id, const uint8_t *c2s,
			      const uint8_t *s2c, size_t key_len, uint8_t *out, size_t cap)
{
	uint8_t nonce[KEYSET_NONCE_LEN];
	if (gnutls_rnd(GNUTLS_RND_NONCE, nonce, sizeof nonce) < 0)
		return -EIO;
	return keyset_seal_cookie(ks, aead_id, c2s, s2c, key_len, nonce, out, cap);
}

int keyset_open_cookie(struct keyset *ks, const uint8_t *cookie, size_t len, uint16_t *aead_id,
		       uint8_t *c2s, uint8_t *s2c, size_t *key_len)
{
	struct wire_reader r;
	wire_reader_init(&r, cookie, len);
	uint32_t key_id = wire_get_u32(&r);
	uint16_t ct_len = wire_get_u16(&r);
	const uint8_t *nonce = wire_get_bytes(&r, KEYSET_NONCE_LEN);
	const uint8_t *ct = wire_get_bytes(&r, ct_len);
	if (!wire_done(&r))
		return -EBADMSG;
	if (ct_len != sealed_len(aead_key_len(AEAD_AES_SIV_CMAC_256)) &&
	    ct_len != sealed_len(aead_key_len(AEAD_AES_SIV_CMAC_512)))
		return -EBADMSG;

	/* Unsigned wrap-around sends ids below id_offset past count too. */
	uint32_t idx = key_id - ks->id_offset;
	if (idx >= ks->count)
		return -ENOKEY;

	uint8_t pt[PLAINTEXT_MAX];
	int rc = aead_open(ks->keys[idx].aead, nonce, KEYSET_NONCE_LEN, NULL, 0, ct, ct_len, pt,
			   sizeof pt);
	if (rc < 0)
		goto fail;

	struct wire_reader p;
	wire_reader_init(&p, pt, (size_t)rc);
	uint16_t id = wire_get_u16(&p);
	size_t kl = aead_key_len(id);
	if (kl == 0) {
		rc = -EBADMSG;
		goto fail;
	}
	const uint8_t *p_s2c = wire_get_bytes(&p, kl);
	const uint8_t *p_c2s = wire_get_bytes(&p, kl);
	if (!wire_done(&p)) {
		rc = -EBADMSG;
		goto fail;
	}
	memcpy(s2c, p_s2c, kl);
	memcpy(c2s, p_c2s, kl);
	*aead_id = id;
	*key_len = kl;
	rc = 0;
fail:
	gnutls_memset(pt, 0, sizeof pt);
	return rc;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

size_t keyset_file_len(const struct keyset *ks)
{
	return KEYSET_FILE_LEN(ks->count);
}

int keyset_serialize(const struct keyset *ks, uint64_t now, uint8_t *buf, size_t cap)
{
	size_t len = KEYSET_FILE_LEN(ks->count);
	if (now > KEYSET_FILE_MAX_TIME)
		return -ERANGE;
	if (cap < len)
		return -EMSGSIZE;
	struct wire_writer w;
	wire_writer_init(&w, buf, len);
	wire_put_bytes(&w, KEYSET_FILE_MAGIC, KEYSET_FILE_MAGIC_LEN);
	wire_put_u32(&w, KEYSET_FILE_VERSION);
	wire_put_u64(&w, now);
	wire_put_u32(&w, ks->id_offset);
	wire_put_u32(&w, ks->primary);
	wire_put_u32(&w, ks->count);
	for (uint32_t i = 0; i < ks->count; i++)
		wire_put_bytes(&w, ks->keys[i].bytes, KEYSET_KEY_LEN);
	uint8_t *digest = wire_put_reserve(&w, KEYSET_FILE_DIGEST_LEN);
	/* len was computed from the same fields. */
	assert(digest && wire_writer_error(&w) == 0 && wire_written(&w) == len);
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, buf, len - KEYSET_FILE_DIGEST_LEN, digest) < 0) {
		gnutls_memset(buf, 0, len);
		return -EIO;
	}
	return (int)len;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* New string (caller frees): the directory part of path, "." when there is none. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

int keyset_store(const struct keyset *ks, const char *path, uint64_t now, char *err,
		 size_t errlen)
{
	int rc;
	int fd = -1;
	char *tmp = NULL;
	char *dir = dir_of(path);
	size_t len = KEYSET_FILE_LEN(ks->count);
	uint8_t *buf = malloc(len);
	if (!dir || !buf || asprintf(&tmp, "%s" KEYSET_TEMP_INFIX "XXXXXX", path) < 0) {
		tmp = NULL;
		rc = -ENOMEM;
		set_err(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	rc = keyset_serialize(ks, now, buf, len);
	if (rc < 0) {
		if (rc == -ERANGE)
			set_err(err, errlen,
				"%s: store time %" PRIu64
				" is past the end of year 9999; is the clock wrong?",
				path, now);
		else
			set_err(err, errlen, "%s: cannot compute the checksum", path);
		free(tmp);
		tmp = NULL;
		goto fail;
	}

	/* mkostemp opens with O_EXCL and mode 0600, so the keys are never readable by others,
	 * not even for a moment. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		free(tmp);
		tmp = NULL;
		if (rc == -ENOENT)
			set_err(err, errlen,
				"%s: directory %s does not exist (it is not created automatically)",
				path, dir);
		else
			set_err(err, errlen, "%s: cannot create a temporary file in %s: %s", path,
				dir, strerror(-rc));
		goto fail;
	}
	rc = write_all(fd, buf, len);
	if (rc < 0) {
		set_err(err, errlen, "%s: cannot write %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	if (fsync(fd) < 0) {
		rc = -errno;
		set_err(err, errlen, "%s: cannot fsync %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = -errno;
		set_err(err, errlen, "%s: cannot close %s: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		set_err(err, errlen, "%s: cannot rename %s over it: %s", path, tmp, strerror(-rc));
		goto fail;
	}
	free(tmp);
	tmp = NULL;

	/* The rename is durable only once the directory entry is. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		rc = -errno;
		set_err(err, errlen, "%s: cannot fsync directory %s: %s", path, dir, strerror(-rc));
		goto fail;
	}
	rc = 0;
fail:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	if (buf) {
		gnutls_memset(buf, 0, len);
		free(buf);
	}
	free(dir);
	return rc;
}

/* The fields both versions share, in r, which holds exactly them and the keys; file_len and
 * extra (magic, version and checksum: what a file of this version has besides them) only word
 * the size message. */
static int parse_fields(struct wire_reader *r, const char *name, size_t file_len, size_t extra,
			struct keyset **out, char *err, size_t errlen)
{
	uint64_t stored = wire_get_u64(r);
	uint32_t id_offset = wire_get_u32(r);
	uint32_t primary = wire_get_u32(r);
	uint32_t count = wire_get_u32(r);
	if (wire_error(r)) {
		set_err(err, errlen, "%s: file is %zu bytes, shorter than its %zu-byte header",
			name, file_len, extra + KEYSET_FILE_V1_HEADER_LEN);
		return -EBADMSG;
	}
	if (count == 0) {
		set_err(err, errlen, "%s: key count is 0; at least one key is required", name);
		return -EBADMSG;
	}
	if (count > KEYSET_MAX_KEYS) {
		set_err(err, errlen, "%s: key count %" PRIu32 " is over the limit of %d", name,
			count, KEYSET_MAX_KEYS);
		return -EBADMSG;
	}
	if (wire_remaining(r) != (size_t)count * KEYSET_KEY_LEN) {
		set_err(err, errlen,
			"%s: file is %zu bytes but a file of %" PRIu32 " keys is %zu bytes", name,
			file_len, count,
			extra + KEYSET_FILE_V1_HEADER_LEN + (size_t)count * KEYSET_KEY_LEN);
		return -EBADMSG;
	}
	if (primary >= count) {
		set_err(err, errlen,
			"%s: primary key index %" PRIu32 " is not below the key count %" PRIu32,
			name, primary, count);
		return -EBADMSG;
	}
	if (!valid_shape(id_offset, primary, count)) {
		set_err(err, errlen,
			"%s: key ids from %" PRIu32 " for %" PRIu32 " keys overflow 32 bits", name,
			id_offset, count);
		return -EBADMSG;
	}
	/* The next rotation is scheduled from this time and /status shows it as a signed number:
	 * a time past these bounds would stop rotation or print nonsense. */
	if (stored > INT64_MAX) {
		set_err(err, errlen,
			"%s: store time %" PRIu64
			" does not fit in a signed 64-bit count of seconds",
			name, stored);
		return -EBADMSG;
	}
	if (stored > KEYSET_FILE_MAX_TIME) {
		set_err(err, errlen,
			"%s: store time %" PRIu64
			" is past the end of year 9999 (the latest accepted is %" PRIu64 ")",
			name, stored, KEYSET_FILE_MAX_TIME);
		return -EBADMSG;
	}
	const uint8_t *keys = wire_get_bytes(r, (size_t)count * KEYSET_KEY_LEN);
	/* The remaining length was checked above. */
	assert(keys && wire_done(r));
	int rc = keyset_from_keys(out, id_offset, primary, count, keys, stored);
	if (rc < 0)
		set_err(err, errlen, "%s: cannot set up the keys: %s", name, strerror(-rc));
	return rc;
}

/* The checksum comes first after magic and version: whatever byte a corruption hit, the file is
 * reported as corrupt rather than by whichever field the damage happens to break. */
static int parse_v2(const uint8_t *buf, size_t len, const char *name, struct keyset **out,
		    char *err, size_t errlen)
{
	struct wire_reader r;
	wire_reader_init(&r, buf, len);
	const uint8_t *magic = wire_get_bytes(&r, KEYSET_FILE_MAGIC_LEN);
	if (!magic || memcmp(magic, KEYSET_FILE_MAGIC, KEYSET_FILE_MAGIC_LEN) != 0) {
		set_err(err, errlen,
			"%s: bad magic: not a key file of this program (version 2 starts with the "
			"bytes 89 4e 54 53 4b 45 59 53, version 1 with a zero byte)",
			name);
		return -EBADMSG;
	}
	uint32_t version = wire_get_u32(&r);
	if (wire_error(&r)) {
		set_err(err, errlen, "%s: file is %zu bytes, too short to hold a format version",
			name, len);
		return -EBADMSG;
	}
	if (version != KEYSET_FILE_VERSION) {
		set_err(err, errlen,
			"%s: format version %" PRIu32 "; this program reads versions 1 and %d",
			name, version, KEYSET_FILE_VERSION);
		return -EBADMSG;
	}
	if (len < KEYSET_FILE_HEADER_LEN + KEYSET_FILE_DIGEST_LEN) {
		set_err(err, errlen,
			"%s: file is %zu bytes, shorter than the %d-byte header and "
			"%d-byte checksum",
			name, len, KEYSET_FILE_HEADER_LEN, KEYSET_FILE_DIGEST_LEN);
		return -EBADMSG;
	}
	struct wire_reader fields = wire_sub(&r, wire_remaining(&r) - KEYSET_FILE_DIGEST_LEN);
	const uint8_t *stored = wire_get_bytes(&r, KEYSET_FILE_DIGEST_LEN);
	/* Both lengths were checked above. */
	assert(stored && wire_done(&r));
	uint8_t digest[KEYSET_FILE_DIGEST_LEN];
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, buf, len - KEYSET_FILE_DIGEST_LEN, digest) < 0) {
		set_err(err, errlen, "%s: cannot compute the checksum", name);
		return -EIO;
	}
	/* The checksum is not secret, but a constant-time comparison leaves nothing to argue. */
	if (gnutls_memcmp(digest, stored, sizeof digest) != 0) {
		set_err(err, errlen, "%s: checksum mismatch: the file is corrupt", name);
		return -EBADMSG;
	}
	/* What a version 2 file has besides the version 1 fields and keys. */
	size_t extra = KEYSET_FILE_HEADER_LEN - KEYSET_FILE_V1_HEADER_LEN + KEYSET_FILE_DIGEST_LEN;
	return parse_fields(&fields, name, len, extra, out, err, errlen);
}

int keyset_parse(const uint8_t *buf, size_t len, const char *name, struct keyset **out,
		 char *err, size_t errlen)
{
	/* A version 1 file starts with its store time, and any time it may hold (at most
	 * KEYSET_FILE_MAX_TIME, under 2^38) has a zero first byte; the magic's is 0x89. An empty
	 * buffer reads as 0 and fails as a short version 1 file. */
	struct wire_reader r;
	wire_reader_init(&r, buf, len);
	if (wire_get_u8(&r) != 0)
		return parse_v2(buf, len, name, out, err, errlen);
	wire_reader_init(&r, buf, len);
	int rc = parse_fields(&r, name, len, 0, out, err, errlen);
	return rc < 0 ? rc : KEYSET_FILE_OLD_FORMAT;
}

int keyset_load(const char *path, struct keyset **out, char *err, size_t errlen)
{
	return keyset_load_owned(path, geteuid(), out, err, errlen);
}

int keyset_load_owned(const char *path, uid_t owner, struct keyset **out, char *err,
		      size_t errlen)
{
	int rc;
	uint8_t *buf = NULL;
	size_t len = 0;
	size_t cap = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			set_err(err, errlen, "%s: no such file", path);
		else
			set_err(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
		return rc;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		set_err(err, errlen, "%s: cannot stat: %s", path, strerror(-rc));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		set_err(err, errlen, "%s: not a regular file", path);
		goto fail;
	}
	/* Whoever owns the file can change its mode and contents, so the mode check below is
	 * worth something only when the owner is us. */
	if (st.st_uid != owner) {
		rc = -EPERM;
		set_err(err, errlen,
			"%s: owned by uid %ju, not by uid %ju this program runs as; "
			"run chown %ju %s",
			path, (uintmax_t)st.st_uid, (uintmax_t)owner, (uintmax_t)owner, path);
		goto fail;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = -EPERM;
		set_err(err, errlen,
			"%s: mode %04o lets group or others access the keys; run chmod 600 %s",
			path, (unsigned)(st.st_mode & 07777), path);
		goto fail;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > KEYSET_FILE_MAX_LEN) {
		rc = -EBADMSG;
		set_err(err, errlen, "%s: file is %jd bytes, more than %d keys can take", path,
			(intmax_t)st.st_size, KEYSET_MAX_KEYS);
		goto fail;
	}
	/* One spare byte shows a file that grew since fstat. */
	cap = (size_t)st.st_size + 1;
	buf = malloc(cap);
	if (!buf) {
		rc = -ENOMEM;
		set_err(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			set_err(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len != (size_t)st.st_size) {
		rc = -EAGAIN;
		set_err(err, errlen, "%s: file changed while being read", path);
		goto fail;
	}
	rc = keyset_parse(buf, len, path, out, err, errlen);
fail:
	if (buf) {
		gnutls_memset(buf, 0, cap);
		free(buf);
	}
	close(fd);
	return rc;
}

/* Exactly what keyset_store's mkostemp makes of base: base ".tmp." and six letters or digits. */
static bool is_our_temp(const char *name, const char *base)
{
	size_t n = strlen(base), infix = strlen(KEYSET_TEMP_INFIX);
	if (strncmp(name, base, n) != 0 || strncmp(name + n, KEYSET_TEMP_INFIX, infix) != 0)
		return false;
	const char *s = name + n + infix;
	for (int i = 0; i < 6; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return false;
	}
	return s[6] == '\0';
}

int keyset_remove_stale_temps(const char *path, uint64_t now, uint64_t min_age_s,
			      keyset_removed_fn *removed, void *arg, char *err, size_t errlen)
{
	int rc = 0, found = 0;
	char *dir = dir_of(path);
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (!dir) {
		set_err(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	DIR *d = opendir(dir);
	if (!d) {
		rc = -errno;
		set_err(err, errlen, "%s: cannot list directory %s: %s", path, dir, strerror(-rc));
		free(dir);
		return rc;
	}
	for (struct dirent *e; (errno = 0, e = readdir(d));) {
		struct stat st;
		if (!is_our_temp(e->d_name, base) ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		/* keyset_store in this uid makes regular files only: a directory, a symlink or
		 * another user's file of that name is not a leftover of ours. */
		if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
			continue;
		uint64_t mtime = st.st_mtime > 0 ? (uint64_t)st.st_mtime : 0;
		uint64_t age = now > mtime ? now - mtime : 0;
		if (age < min_age_s)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) < 0) {
			if (rc == 0) {
				rc = -errno;
				set_err(err, errlen,
					"%s: cannot remove the stale temporary %s/%s: %s", path,
					dir, e->d_name, strerror(-rc));
			}
			continue;
		}
		found++;
		if (removed)
			removed(arg, dir, e->d_name, age);
	}
	if (errno != 0 && rc == 0) {
		rc = -errno;
		set_err(err, errlen, "%s: cannot list directory %s: %s", path, dir, strerror(-rc));
	}
	closedir(d);
	free(dir);
	return rc < 0 ? rc : found;
}
