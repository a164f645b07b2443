#include "pool_proto.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "slot.h"

/* ---- Generations ------------------------------------------------------------------------ */

static const char *const numbering_names[] = {
	[KE_NUMBERING_IANA] = "iana",
	[KE_NUMBERING_NTPDRS_V1] = "ntpd-rs-v1",
};

int pool_proto_numbering_parse(const char *name, enum ke_numbering *out)
{
	for (size_t i = 0; i < sizeof numbering_names / sizeof numbering_names[0]; i++) {
		if (strcmp(name, numbering_names[i]) == 0) {
			*out = (enum ke_numbering)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *pool_proto_numbering_name(enum ke_numbering n)
{
	return n == KE_NUMBERING_NTPDRS_V1 ? numbering_names[KE_NUMBERING_NTPDRS_V1]
					   : numbering_names[KE_NUMBERING_IANA];
}

/* ---- Accepted tokens -------------------------------------------------------------------- */

#define DIGEST_LEN 32 /* SHA-256 */

struct pool_tokens {
	atomic_uint refs;
	size_t count;
	size_t cap;
	uint8_t (*digests)[DIGEST_LEN];
};

int pool_tokens_new(struct pool_tokens **out)
{
	struct pool_tokens *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	atomic_init(&t->refs, 1);
	*out = t;
	return 0;
}

static int digest(const void *token, size_t len, uint8_t out[DIGEST_LEN])
{
	return gnutls_hash_fast(GNUTLS_DIG_SHA256, token, len, out) < 0 ? -EIO : 0;
}

/* Constant-time equality of two digests: every byte is looked at. */
static unsigned differs(const uint8_t *a, const uint8_t *b)
{
	volatile unsigned acc = 0;
	for (size_t i = 0; i < DIGEST_LEN; i++)
		acc |= (unsigned)(a[i] ^ b[i]);
	return acc;
}

int pool_tokens_add(struct pool_tokens *t, const void *token, size_t len)
{
	uint8_t d[DIGEST_LEN];
	if (len == 0 || len > KE_MSG_TOKEN_MAX)
		return -EINVAL;
	int rc = digest(token, len, d);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < t->count; i++) {
		if (!differs(t->digests[i], d)) {
			gnutls_memset(d, 0, sizeof d);
			return 0;
		}
	}
	if (t->count == POOL_TOKENS_MAX) {
		rc = -E2BIG;
		goto out;
	}
	if (t->count == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 4;
		void *p = calloc(cap, DIGEST_LEN);
		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		if (t->count) {
			memcpy(p, t->digests, t->count * DIGEST_LEN);
			gnutls_memset(t->digests, 0, t->count * DIGEST_LEN);
		}
		free(t->digests);
		t->digests = p;
		t->cap = cap;
	}
	memcpy(t->digests[t->count++], d, DIGEST_LEN);
out:
	gnutls_memset(d, 0, sizeof d);
	return rc;
}

size_t pool_tokens_count(const struct pool_tokens *t)
{
	return t ? t->count : 0;
}

struct pool_tokens *pool_tokens_ref(struct pool_tokens *t)
{
	if (t)
		atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
	return t;
}

SLOT_OF(pool_tokens, struct pool_tokens, pool_tokens_ref, pool_tokens_unref)

void pool_tokens_unref(struct pool_tokens *t)
{
	if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (t->digests)
		gnutls_memset(t->digests, 0, t->cap * DIGEST_LEN);
	free(t->digests);
	free(t);
}

bool pool_tokens_accepts(const struct pool_tokens *t, const void *token, size_t len)
{
	uint8_t d[DIGEST_LEN];
	if (!t || t->count == 0 || len == 0 || len > KE_MSG_TOKEN_MAX)
		return false;
	if (digest(token, len, d) < 0)
		return false;
	unsigned matched = 0;
	for (size_t i = 0; i < t->count; i++)
		matched |= differs(t->digests[i], d) == 0;
	gnutls_memset(d, 0, sizeof d);
	return matched != 0;
}

/* ---- Identity and rights ---------------------------------------------------------------- */

/* Which request shapes an identity may send, and whether its pool requests may be kept alive.
 * One row per identity; the order is that of enum pool_identity. */
static const struct {
	const char *name;
	bool plain;
	bool support;
	bool fixed_key;
	bool keep_alive;
} rights[] = {
	[POOL_IDENTITY_NONE] = { "none", true, false, false, false },
	[POOL_IDENTITY_CERTIFICATE] = { "certificate", true, true, true, true },
	[POOL_IDENTITY_TOKEN] = { "token", true, true, true, true },
};

const char *pool_identity_name(enum pool_identity id)
{
	return (size_t)id < sizeof rights / sizeof rights[0] ? rights[id].name : "unknown";
}

static bool may_send(enum pool_identity id, enum ke_msg_request_kind kind)
{
	switch (kind) {
	case KE_MSG_REQUEST_PLAIN:
		return rights[id].plain;
	case KE_MSG_REQUEST_SUPPORT:
		return rights[id].support;
	case KE_MSG_REQUEST_FIXED_KEY:
		return rights[id].fixed_key;
	}
	return false;
}

void pool_proto_authorise(const struct pool_tokens *tokens, bool cert_pinned,
			  const struct ke_msg_request *req, struct pool_proto_verdict *v)
{
	bool pool_shape = req->kind != KE_MSG_REQUEST_PLAIN;
	memset(v, 0, sizeof *v);
	v->identity = POOL_IDENTITY_NONE;
	if (cert_pinned) {
		v->identity = POOL_IDENTITY_CERTIFICATE;
	} else if (pool_shape) {
		if (req->has_token && pool_tokens_accepts(tokens, req->token, req->token_len))
			v->identity = POOL_IDENTITY_TOKEN;
		else if (req->has_token || req->token_misplaced)
			v->token_refused = true;
	}
	v->allowed = may_send(v->identity, req->kind);
	v->keep_alive = v->allowed && pool_shape && req->keep_alive &&
			rights[v->identity].keep_alive;
	if (!v->allowed) {
		v->error = KE_MSG_ERROR_BAD_REQUEST;
		v->reason = req->token_misplaced ? "pool request whose token is not first"
			    : v->token_refused	 ? "pool request with a token that is not accepted"
						 : "pool request without a pinned certificate or token";
	}
}

/* ---- Token derivation ------------------------------------------------------------------- */

int pool_proto_derive_token(const void *secret, size_t secret_len, const char *uuid,
			    const char *randomizer, char *out)
{
	static const char hex[] = "0123456789abcdef";
	gnutls_hash_hd_t h;
	uint8_t d[32];
	if (gnutls_hash_init(&h, GNUTLS_DIG_SHA3_256) < 0)
		return -EIO;
	int rc = gnutls_hash(h, secret, secret_len);
	if (rc >= 0)
		rc = gnutls_hash(h, uuid, strlen(uuid));
	if (rc >= 0 && randomizer[0])
		rc = gnutls_hash(h, randomizer, strlen(randomizer));
	gnutls_hash_deinit(h, d);
	if (rc < 0) {
		gnutls_memset(d, 0, sizeof d);
		return -EIO;
	}
	for (size_t i = 0; i < sizeof d; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[POOL_PROTO_DERIVED_TOKEN_LEN] = '\0';
	gnutls_memset(d, 0, sizeof d);
	return 0;
}
