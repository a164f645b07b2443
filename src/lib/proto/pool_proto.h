/* The pool protocol's policy (PROTOCOL.md §2, §3.2-§3.5), sans-I/O: the two record-numbering
 * generations by name, the set of tokens a time source accepts, how a peer's identity becomes
 * capabilities, and which request shapes each identity may send.
 *
 * ke_msg parses a request the same way for every peer; this module alone decides what the peer
 * may do with it. A new way for a pool to authorise itself is one new identity and one new row
 * of the rights table in pool_proto.c. */
#ifndef NTSPOOL_POOL_PROTO_H
#define NTSPOOL_POOL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_msg.h"
#include "ke_record.h"

/* ---- Generations ------------------------------------------------------------------------ */

/* "iana" or "ntpd-rs-v1" into *out: 0, or -EINVAL for any other name. */
int pool_proto_numbering_parse(const char *name, enum ke_numbering *out);

/* Static name of a numbering, as the config spells it. */
const char *pool_proto_numbering_name(enum ke_numbering n);

/* ---- Accepted tokens -------------------------------------------------------------------- */

/* At most this many tokens are accepted by one time source. */
#define POOL_TOKENS_MAX 4096

/* An immutable set of accepted tokens once built, shared by atomic references: a reload builds a
 * new set and swaps the pointer, and a request in progress keeps the set it started with. Only
 * SHA-256 digests of the tokens are kept, so a comparison costs the same whatever the token. */
struct pool_tokens;

/* An empty set (*out is new, one reference). 0 or -ENOMEM. */
int pool_tokens_new(struct pool_tokens **out);

/* Adds token[0, len) (borrowed; any bytes, 1..KE_MSG_TOKEN_MAX). A token already in the set is
 * not added twice. 0, -EINVAL for a bad length, -E2BIG past POOL_TOKENS_MAX, -ENOMEM. Only
 * before the set is shared. */
int pool_tokens_add(struct pool_tokens *t, const void *token, size_t len);

size_t pool_tokens_count(const struct pool_tokens *t);

/* References (atomic; NULL is allowed and ignored). The last unref wipes and frees. */
struct pool_tokens *pool_tokens_ref(struct pool_tokens *t);
void pool_tokens_unref(struct pool_tokens *t);

struct slot;
/* Makes s a slot of token sets (slot.h) holding t (its reference taken; may be NULL). */
void pool_tokens_slot_init(struct slot *s, struct pool_tokens *t);

/* True when token[0, len) is in t (NULL: the empty set). Constant time by construction: the
 * token is hashed once, every accepted digest is compared in full with no early exit, and the
 * result is only looked at after the last one, so neither the position nor the length of a
 * mismatch nor which entry matched changes the work done. */
bool pool_tokens_accepts(const struct pool_tokens *t, const void *token, size_t len);

/* ---- Identity and rights ---------------------------------------------------------------- */

enum pool_identity {
	POOL_IDENTITY_NONE,	   /* an ordinary client */
	POOL_IDENTITY_CERTIFICATE, /* the TLS peer's certificate is pinned (§3.4) */
	POOL_IDENTITY_TOKEN,	   /* the request's first record is an accepted token (§3.5) */
};

/* Static name for logs and status: "none", "certificate", "token". */
const char *pool_identity_name(enum pool_identity id);

struct pool_proto_verdict {
	enum pool_identity identity; /* who the peer proved to be for this request */
	bool allowed;		     /* the request's shape is open to that identity */
	bool keep_alive;	     /* answer with Keep Alive and keep the connection */
	bool token_refused;	     /* a token was offered and not accepted (or not first) */
	uint16_t error;		     /* when !allowed: the Error code to answer */
	const char *reason;	     /* when !allowed: static, for a debug log line */
};

/* The decision for one parsed request (borrowed). cert_pinned: the TLS peer presented a pinned
 * certificate on this connection; tokens: the accepted set now in force (NULL: none). The
 * certificate is checked first; a token is looked at only for Support and Fixed Key requests
 * (a token in a plain request is ignored, §3.5), on every request of a kept-alive connection.
 * Support or Fixed Key authorised by neither → not allowed, Error 1. Keep Alive is honoured
 * only on the pool shapes for an identity with that right (a plain request exports keys from
 * the session, so it is never kept alive). */
void pool_proto_authorise(const struct pool_tokens *tokens, bool cert_pinned,
			  const struct ke_msg_request *req, struct pool_proto_verdict *v);

/* ---- Token derivation ------------------------------------------------------------------- */

#define POOL_PROTO_DERIVED_TOKEN_LEN 64 /* lowercase hex of SHA3-256 */

/* The token the public pool derives for one time source: lowercase hex of
 * SHA3-256(secret ‖ uuid ‖ randomizer), into out (POOL_PROTO_DERIVED_TOKEN_LEN + 1 bytes,
 * NUL-terminated). All inputs borrowed; randomizer may be empty. 0, or -EIO when the digest is
 * unavailable. */
int pool_proto_derive_token(const void *secret, size_t secret_len, const char *uuid,
			    const char *randomizer, char *out);

#endif
