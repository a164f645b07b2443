#include "pool_proto.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define IANA KE_NUMBERING_IANA
#define NTPDRS KE_NUMBERING_NTPDRS_V1

static const enum ke_numbering numberings[] = { KE_NUMBERING_IANA, KE_NUMBERING_NTPDRS_V1 };

/* ---- generations ------------------------------------------------------------------------ */

Test(pool_proto, numbering_names_round_trip)
{
	enum ke_numbering n;
	cr_assert_eq(pool_proto_numbering_parse("iana", &n), 0);
	cr_assert_eq(n, KE_NUMBERING_IANA);
	cr_assert_eq(pool_proto_numbering_parse("ntpd-rs-v1", &n), 0);
	cr_assert_eq(n, KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(pool_proto_numbering_name(KE_NUMBERING_IANA), "iana");
	cr_assert_str_eq(pool_proto_numbering_name(KE_NUMBERING_NTPDRS_V1), "ntpd-rs-v1");
	for (size_t i = 0; i < 2; i++) {
		const char *name = pool_proto_numbering_name(numberings[i]);
		cr_assert_eq(pool_proto_numbering_parse(name, &n), 0);
		cr_assert_eq(n, numberings[i]);
	}
	/* The config spells them exactly: no case folding, no prefixes, no padding. */
	static const char *const bad[] = { "IANA", "", "ntpd-rs", "ntpd-rs-v2", "iana ", " iana",
					   "ntpd_rs_v1", "ntpdrs" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(pool_proto_numbering_parse(bad[i], &n), -EINVAL, "\"%s\"", bad[i]);
}

Test(pool_proto, identity_names)
{
	cr_assert_str_eq(pool_identity_name(POOL_IDENTITY_NONE), "none");
	cr_assert_str_eq(pool_identity_name(POOL_IDENTITY_CERTIFICATE), "certificate");
	cr_assert_str_eq(pool_identity_name(POOL_IDENTITY_TOKEN), "token");
	cr_assert_str_eq(pool_identity_name((enum pool_identity)3), "unknown");
	cr_assert_str_eq(pool_identity_name((enum pool_identity)-1), "unknown");
}

/* ---- accepted tokens -------------------------------------------------------------------- */

static struct pool_tokens *tokens_of(const char *const *list, size_t count)
{
	struct pool_tokens *t = NULL;
	cr_assert_eq(pool_tokens_new(&t), 0);
	cr_assert_not_null(t);
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(pool_tokens_add(t, list[i], strlen(list[i])), 0, "%s", list[i]);
	return t;
}

static bool accepts_str(const struct pool_tokens *t, const char *s)
{
	return pool_tokens_accepts(t, s, strlen(s));
}

Test(pool_proto, tokens_add_count_and_duplicates)
{
	struct pool_tokens *t = tokens_of(NULL, 0);
	cr_assert_eq(pool_tokens_count(t), 0);
	cr_assert_not(accepts_str(t, "a"), "the empty set accepts nothing");
	cr_assert_eq(pool_tokens_add(t, "alpha", 5), 0);
	cr_assert_eq(pool_tokens_count(t), 1);
	cr_assert_eq(pool_tokens_add(t, "alpha", 5), 0, "a duplicate is not an error");
	cr_assert_eq(pool_tokens_count(t), 1, "and is not added twice");
	cr_assert_eq(pool_tokens_add(t, "alphA", 5), 0);
	cr_assert_eq(pool_tokens_add(t, "alpha\0", 6), 0, "a trailing NUL is another token");
	cr_assert_eq(pool_tokens_count(t), 3);
	cr_assert(accepts_str(t, "alpha"));
	cr_assert(accepts_str(t, "alphA"));
	cr_assert(pool_tokens_accepts(t, "alpha\0", 6));
	cr_assert_eq(pool_tokens_count(NULL), 0);
	pool_tokens_unref(t);
}

Test(pool_proto, tokens_length_bounds)
{
	uint8_t big[KE_MSG_TOKEN_MAX + 1];
	memset(big, 'b', sizeof big);
	struct pool_tokens *t = tokens_of(NULL, 0);
	cr_assert_eq(pool_tokens_add(t, big, 0), -EINVAL);
	cr_assert_eq(pool_tokens_add(t, big, KE_MSG_TOKEN_MAX + 1), -EINVAL);
	cr_assert_eq(pool_tokens_count(t), 0, "a refused token is not added");
	cr_assert_eq(pool_tokens_add(t, big, 1), 0);
	cr_assert_eq(pool_tokens_add(t, big, KE_MSG_TOKEN_MAX), 0);
	cr_assert_eq(pool_tokens_count(t), 2);
	cr_assert(pool_tokens_accepts(t, big, 1));
	cr_assert(pool_tokens_accepts(t, big, KE_MSG_TOKEN_MAX));
	cr_assert_not(pool_tokens_accepts(t, big, 0));
	cr_assert_not(pool_tokens_accepts(t, big, 2));
	/* A request can never carry more, so such a length is refused, not hashed. */
	cr_assert_not(pool_tokens_accepts(t, big, KE_MSG_TOKEN_MAX + 1));
	pool_tokens_unref(t);
}

Test(pool_proto, tokens_set_is_bounded)
{
	struct pool_tokens *t = tokens_of(NULL, 0);
	char tok[16];
	for (unsigned i = 0; i < POOL_TOKENS_MAX; i++) {
		int len = snprintf(tok, sizeof tok, "tok-%u", i);
		cr_assert_eq(pool_tokens_add(t, tok, (size_t)len), 0, "%s", tok);
	}
	cr_assert_eq(pool_tokens_count(t), POOL_TOKENS_MAX);
	cr_assert_eq(pool_tokens_add(t, "one-too-many", 12), -E2BIG);
	cr_assert_eq(pool_tokens_count(t), POOL_TOKENS_MAX);
	cr_assert_eq(pool_tokens_add(t, "tok-17", 6), 0, "a duplicate of a full set is no error");
	cr_assert(accepts_str(t, "tok-0"));
	cr_assert(accepts_str(t, "tok-4095"));
	cr_assert_not(accepts_str(t, "one-too-many"));
	pool_tokens_unref(t);
}

/* Only the exact token: every near miss of a 64-character token, and NULL sets. */
Test(pool_proto, tokens_accept_the_exact_token_only)
{
	static const char token[] = "0123456789abcdef0123456789abcdef"
				    "0123456789abcdef0123456789abcdef";
	const char *list[] = { token };
	struct pool_tokens *t = tokens_of(list, 1);
	char near[sizeof token + 1];
	cr_assert(accepts_str(t, token));
	for (size_t len = 1; len < 64; len++)
		cr_assert_not(pool_tokens_accepts(t, token, len), "prefix of %zu bytes", len);
	memcpy(near, token, 64);
	near[64] = 'x';
	cr_assert_not(pool_tokens_accepts(t, near, 65), "a longer string");
	near[64] = '\0';
	cr_assert_not(pool_tokens_accepts(t, near, 65), "a trailing NUL");
	static const size_t at[] = { 0, 31, 32, 63 };
	for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
		memcpy(near, token, 64);
		near[at[i]] ^= 0x01;
		cr_assert_not(pool_tokens_accepts(t, near, 64), "one byte changed at %zu", at[i]);
		near[at[i]] ^= 0x21; /* bit 5 alone: a letter in the other case */
		cr_assert_not(pool_tokens_accepts(t, near, 64), "byte %zu in another case", at[i]);
	}
	cr_assert_not(pool_tokens_accepts(NULL, token, 64), "NULL is the empty set");
	cr_assert_not(pool_tokens_accepts(NULL, "", 0));
	pool_tokens_unref(t);
}

/* Constant time cannot be measured in a unit test (no timing here); what can be checked is the
 * construction the header promises: the verdict depends on the whole token and on no entry's
 * position, so tokens differing only in length, in the place of a mismatch, or in where they
 * sit in the set behave alike. */
Test(pool_proto, tokens_many_random_entries_each_accepted)
{
	enum { N = 600 };
	static uint8_t toks[N][KE_MSG_TOKEN_MAX];
	static size_t lens[N];
	struct tu_rng rng;
	tu_rng_seed(&rng, 0x746f6b656e736574ull);
	struct pool_tokens *t = tokens_of(NULL, 0);
	for (size_t i = 0; i < N; i++) {
		lens[i] = 1 + tu_rng_below(&rng, KE_MSG_TOKEN_MAX);
		tu_rng_fill(&rng, toks[i], lens[i]); /* any bytes, NUL included */
		cr_assert_eq(pool_tokens_add(t, toks[i], lens[i]), 0);
	}
	cr_assert_eq(pool_tokens_count(t), N, "random tokens do not collide");
	uint8_t near[KE_MSG_TOKEN_MAX + 1];
	for (size_t i = 0; i < N; i++) {
		cr_assert(pool_tokens_accepts(t, toks[i], lens[i]), "entry %zu", i);
		memcpy(near, toks[i], lens[i]);
		size_t at = tu_rng_below(&rng, (uint32_t)lens[i]);
		near[at] ^= (uint8_t)(1 + tu_rng_below(&rng, 255));
		cr_assert_not(pool_tokens_accepts(t, near, lens[i]), "entry %zu changed at %zu", i,
			      at);
		near[at] = toks[i][at];
		if (lens[i] > 1)
			cr_assert_not(pool_tokens_accepts(t, near, lens[i] - 1), "prefix %zu", i);
		if (lens[i] < KE_MSG_TOKEN_MAX) {
			near[lens[i]] = (uint8_t)tu_rng_next(&rng);
			cr_assert_not(pool_tokens_accepts(t, near, lens[i] + 1), "longer %zu", i);
		}
	}
	pool_tokens_unref(t);

	/* Tokens that are prefixes of each other: only the lengths in the set count. */
	char a[KE_MSG_TOKEN_MAX];
	memset(a, 'a', sizeof a);
	t = tokens_of(NULL, 0);
	for (size_t len = 1; len <= KE_MSG_TOKEN_MAX; len += 2)
		cr_assert_eq(pool_tokens_add(t, a, len), 0);
	for (size_t len = 1; len <= KE_MSG_TOKEN_MAX; len++)
		cr_assert_eq(pool_tokens_accepts(t, a, len), len % 2 == 1, "length %zu", len);
	pool_tokens_unref(t);
}

Test(pool_proto, tokens_references)
{
	const char *list[] = { "shared" };
	struct pool_tokens *t = tokens_of(list, 1);
	cr_assert_eq(pool_tokens_ref(t), t);
	pool_tokens_unref(t);
	/* One reference left: the set is still whole (ASan would report a use after free). */
	cr_assert_eq(pool_tokens_count(t), 1);
	cr_assert(accepts_str(t, "shared"));
	pool_tokens_unref(t); /* the last one frees (LeakSanitizer would report otherwise) */
	cr_assert_null(pool_tokens_ref(NULL));
	pool_tokens_unref(NULL);
}

/* ---- identity and rights ---------------------------------------------------------------- */

#define GOOD_TOKEN "pool-token-accepted-0123456789"
#define WRONG_TOKEN "pool-token-accepted-0123456788"

enum token_state { TOK_ABSENT, TOK_ACCEPTED, TOK_WRONG, TOK_MISPLACED, TOK_STATES };

static uint8_t c2s[32], s2c[32];

/* Inserts one record into the message buf[0, *len) at offset at. */
static void insert_record(uint8_t *buf, size_t *len, size_t cap, size_t at, enum ke_numbering n,
			  enum ke_record_kind kind, const char *body)
{
	uint8_t rec[4 + KE_MSG_TOKEN_MAX];
	struct wire_writer w;
	wire_writer_init(&w, rec, sizeof rec);
	cr_assert_eq(ke_record_put(&w, n, kind, body, body ? strlen(body) : 0), 0);
	size_t rl = wire_written(&w);
	cr_assert_leq(*len + rl, cap);
	memmove(buf + at + rl, buf + at, *len - at);
	memcpy(buf + at, rec, rl);
	*len += rl;
}

/* A request of the given kind built by the real builders: the Authentication record first
 * (the builders' place for it), second (after the first record), or absent. The builders put a
 * token only in pool requests and Keep Alive only in pool requests, so for a plain request
 * those are inserted where a pool client would put them. */
static size_t build(uint8_t *buf, size_t cap, enum ke_numbering n, enum ke_msg_request_kind kind,
		    enum token_state ts, bool keep_alive)
{
	static const uint16_t protocol = 0, aead = 15;
	const char *token = ts == TOK_WRONG ? WRONG_TOKEN : GOOD_TOKEN;
	const char *first = ts == TOK_ACCEPTED || ts == TOK_WRONG ? token : NULL;
	int rc = -1;
	switch (kind) {
	case KE_MSG_REQUEST_PLAIN:
		rc = ke_msg_build_request(buf, cap, n, &protocol, 1, &aead, 1, NULL, 0);
		break;
	case KE_MSG_REQUEST_SUPPORT:
		rc = ke_msg_build_support_request(buf, cap, n, first, true, true, keep_alive);
		break;
	case KE_MSG_REQUEST_FIXED_KEY:
		rc = ke_msg_build_fixed_key_request(buf, cap, n, first, c2s, s2c, 32, 0, 15,
						    keep_alive);
		break;
	}
	cr_assert_gt(rc, 0);
	size_t len = (size_t)rc;
	if (kind == KE_MSG_REQUEST_PLAIN) {
		if (keep_alive)
			insert_record(buf, &len, cap, len - 4, n, KE_RECORD_KEEP_ALIVE, NULL);
		if (first)
			insert_record(buf, &len, cap, 0, n, KE_RECORD_AUTH_TOKEN, first);
	}
	if (ts == TOK_MISPLACED) {
		size_t after_first = 4 + ((size_t)buf[2] << 8 | buf[3]);
		insert_record(buf, &len, cap, after_first, n, KE_RECORD_AUTH_TOKEN, token);
	}
	return len;
}

static void parse(const uint8_t *buf, size_t len, enum ke_numbering n,
		  struct ke_msg_request *req)
{
	struct ke_msg_reject rej = { 0xffff, NULL };
	cr_assert_eq(ke_msg_parse_request(buf, len, n, req, &rej), 0, "Error %u: %s", rej.code,
		     rej.reason);
}

/* Builds, parses and authorises one request; the verdict is pre-filled with garbage so a
 * field the decision forgets to write shows. */
static void decide(const struct pool_tokens *t, bool cert, enum ke_numbering n,
		   enum ke_msg_request_kind kind, enum token_state ts, bool keep_alive,
		   struct pool_proto_verdict *v)
{
	uint8_t buf[512];
	struct ke_msg_request req;
	parse(buf, build(buf, sizeof buf, n, kind, ts, keep_alive), n, &req);
	cr_assert_eq(req.kind, kind);
	cr_assert_eq(req.keep_alive, keep_alive);
	cr_assert_eq(req.has_token, ts == TOK_ACCEPTED || ts == TOK_WRONG);
	cr_assert_eq(req.token_misplaced, ts == TOK_MISPLACED);
	memset(v, 0xa5, sizeof *v);
	pool_proto_authorise(t, cert, &req, v);
	ke_msg_request_wipe(&req);
}

static struct pool_tokens *accepted_set(void)
{
	const char *list[] = { "some-other-pool", GOOD_TOKEN, "yet-another-pool" };
	return tokens_of(list, 3);
}

/* The whole rights table (PROTOCOL.md §3.4, §3.5), every combination, against expectations
 * spelled out from the protocol text rather than from the table in pool_proto.c. */
Test(pool_proto, rights_table_every_combination)
{
	struct pool_tokens *t = accepted_set();
	unsigned allowed = 0, refused = 0;
	/* 2 numberings x 2 certificate states x 3 kinds x 2 keep-alive asks x 4 token states. */
	for (unsigned c = 0; c < 2 * 2 * 3 * 2 * TOK_STATES; c++) {
		enum ke_numbering n = numberings[c % 2];
		bool cert = c / 2 % 2;
		enum ke_msg_request_kind kind = (enum ke_msg_request_kind)(c / 4 % 3);
		bool ka = c / 12 % 2;
		enum token_state ts = (enum token_state)(c / 24);
		bool pool = kind != KE_MSG_REQUEST_PLAIN;
		struct pool_proto_verdict v;
		decide(t, cert, n, kind, ts, ka, &v);

		/* The certificate is looked at first; a token only on pool shapes. */
		enum pool_identity want_id = POOL_IDENTITY_NONE;
		if (cert)
			want_id = POOL_IDENTITY_CERTIFICATE;
		else if (pool && ts == TOK_ACCEPTED)
			want_id = POOL_IDENTITY_TOKEN;
		/* Anyone may send a plain request; pool shapes need an identity. */
		bool want_allowed = !pool || want_id != POOL_IDENTITY_NONE;
		/* A plain request exports keys from the session: never kept alive. */
		bool want_ka = want_allowed && pool && ka;
		bool want_refused = !cert && pool && (ts == TOK_WRONG || ts == TOK_MISPLACED);

		cr_assert_eq(v.identity, want_id, "case %u: cert %d kind %d ka %d token %d", c,
			     cert, kind, ka, ts);
		cr_assert_eq(v.allowed, want_allowed, "case %u", c);
		cr_assert_eq(v.keep_alive, want_ka, "case %u", c);
		cr_assert_eq(v.token_refused, want_refused, "case %u", c);
		if (v.allowed) {
			allowed++;
			cr_assert_eq(v.error, 0, "case %u", c);
			cr_assert_null(v.reason, "case %u", c);
		} else {
			refused++;
			cr_assert_eq(v.error, KE_MSG_ERROR_BAD_REQUEST, "Error 1, both numberings");
			cr_assert_not_null(v.reason, "case %u", c);
			cr_assert_neq(v.reason[0], '\0');
		}
	}
	/* Refused: no certificate, a pool shape, the token absent, wrong or misplaced. */
	cr_assert_eq(refused, 2 * 1 * 2 * 2 * 3);
	cr_assert_eq(allowed, 2 * 2 * 3 * 2 * TOK_STATES - refused);
	pool_tokens_unref(t);
}

/* Each refusal names its cause (for the debug log line), and the three differ. */
Test(pool_proto, refusal_reasons_differ_by_cause)
{
	struct pool_tokens *t = accepted_set();
	struct pool_proto_verdict absent, wrong, misplaced;
	decide(t, false, IANA, KE_MSG_REQUEST_FIXED_KEY, TOK_ABSENT, false, &absent);
	decide(t, false, IANA, KE_MSG_REQUEST_FIXED_KEY, TOK_WRONG, false, &wrong);
	decide(t, false, IANA, KE_MSG_REQUEST_FIXED_KEY, TOK_MISPLACED, false, &misplaced);
	cr_assert_not(absent.allowed || wrong.allowed || misplaced.allowed);
	cr_assert_str_neq(absent.reason, wrong.reason);
	cr_assert_str_neq(absent.reason, misplaced.reason);
	cr_assert_str_neq(wrong.reason, misplaced.reason);
	cr_assert_not(absent.token_refused);
	pool_tokens_unref(t);
}

Test(pool_proto, plain_request_token_is_ignored_and_never_kept_alive)
{
	struct pool_tokens *t = accepted_set();
	for (size_t i = 0; i < 2; i++)
		for (int ts = 0; ts < TOK_STATES; ts++) {
			struct pool_proto_verdict v;
			decide(t, false, numberings[i], KE_MSG_REQUEST_PLAIN, (enum token_state)ts,
			       true, &v);
			cr_assert(v.allowed, "a wrong token does not spoil a plain request");
			cr_assert_eq(v.identity, POOL_IDENTITY_NONE, "even an accepted one is not");
			cr_assert_not(v.token_refused);
			cr_assert_not(v.keep_alive);
			decide(t, true, numberings[i], KE_MSG_REQUEST_PLAIN, (enum token_state)ts,
			       true, &v);
			cr_assert(v.allowed);
			cr_assert_eq(v.identity, POOL_IDENTITY_CERTIFICATE);
			cr_assert_not(v.keep_alive, "not even for a pinned pool");
		}
	pool_tokens_unref(t);
}

Test(pool_proto, certificate_wins_when_both_are_present)
{
	struct pool_tokens *t = accepted_set();
	static const enum token_state states[] = { TOK_ACCEPTED, TOK_WRONG, TOK_MISPLACED };
	for (size_t s = 0; s < 3; s++) {
		struct pool_proto_verdict v;
		decide(t, true, NTPDRS, KE_MSG_REQUEST_SUPPORT, states[s], true, &v);
		cr_assert_eq(v.identity, POOL_IDENTITY_CERTIFICATE);
		cr_assert(v.allowed);
		cr_assert(v.keep_alive);
		cr_assert_not(v.token_refused, "the token is not looked at");
	}
	pool_tokens_unref(t);
}

/* No set, or an empty one: a token authorises nothing, whatever it is. */
Test(pool_proto, no_accepted_tokens_refuses_every_token)
{
	struct pool_tokens *empty = tokens_of(NULL, 0);
	const struct pool_tokens *sets[] = { NULL, empty };
	for (size_t s = 0; s < 2; s++) {
		struct pool_proto_verdict v;
		decide(sets[s], false, IANA, KE_MSG_REQUEST_SUPPORT, TOK_ACCEPTED, true, &v);
		cr_assert_not(v.allowed);
		cr_assert(v.token_refused);
		cr_assert_not(v.keep_alive);
		cr_assert_eq(v.error, 1);
		decide(sets[s], true, IANA, KE_MSG_REQUEST_SUPPORT, TOK_ACCEPTED, true, &v);
		cr_assert(v.allowed, "a pinned certificate needs no token");
	}
	pool_tokens_unref(empty);
}

/* §3.5: the token is on every request of a kept-alive connection; the decision keeps no
 * state, so a later request without it is refused even after an accepted one. */
Test(pool_proto, every_request_is_decided_on_its_own)
{
	struct pool_tokens *t = accepted_set();
	struct pool_proto_verdict v;
	decide(t, false, IANA, KE_MSG_REQUEST_SUPPORT, TOK_ACCEPTED, true, &v);
	cr_assert(v.allowed && v.keep_alive);
	cr_assert_eq(v.identity, POOL_IDENTITY_TOKEN);
	decide(t, false, IANA, KE_MSG_REQUEST_FIXED_KEY, TOK_ABSENT, true, &v);
	cr_assert_not(v.allowed);
	cr_assert_not(v.keep_alive);
	decide(t, false, IANA, KE_MSG_REQUEST_FIXED_KEY, TOK_ACCEPTED, true, &v);
	cr_assert(v.allowed && v.keep_alive);
	pool_tokens_unref(t);
}

/* The token vectors (token "0123456789abcdef" x 4) are accepted by a set holding that token,
 * and by no set without it. */
Test(pool_proto, token_vectors_authorise)
{
	static const struct {
		const char *name;
		enum ke_numbering n;
	} vectors[] = {
		{ "support_request_token_iana", IANA },
		{ "fixed_key_request_token_iana", IANA },
		{ "support_request_token_experimental", NTPDRS },
		{ "fixed_key_request_token_experimental", NTPDRS },
	};
#define HEX32 "0123456789abcdef0123456789abcdef"
	const char *list[] = { HEX32 HEX32 };
	/* One byte short, and the last byte in the other case. */
	const char *others[] = { HEX32 "0123456789abcdef0123456789abcde",
				 HEX32 "0123456789abcdef0123456789abcdeF" };
#undef HEX32
	struct pool_tokens *t = tokens_of(list, 1), *u = tokens_of(others, 2);
	for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
		size_t len;
		uint8_t *buf = tu_vector_hex("ke-records.txt", vectors[i].name, &len);
		struct ke_msg_request req;
		struct pool_proto_verdict v;
		parse(buf, len, vectors[i].n, &req);
		pool_proto_authorise(t, false, &req, &v);
		cr_assert(v.allowed, "%s", vectors[i].name);
		cr_assert_eq(v.identity, POOL_IDENTITY_TOKEN);
		cr_assert(v.keep_alive, "the vectors ask for Keep Alive");
		pool_proto_authorise(u, false, &req, &v);
		cr_assert_not(v.allowed, "%s", vectors[i].name);
		cr_assert(v.token_refused);
		ke_msg_request_wipe(&req);
		free(buf);
	}
	pool_tokens_unref(t);
	pool_tokens_unref(u);
}

/* ---- token derivation ------------------------------------------------------------------- */

static void assert_hex64(const char *out)
{
	cr_assert_eq(strlen(out), POOL_PROTO_DERIVED_TOKEN_LEN);
	for (size_t i = 0; i < POOL_PROTO_DERIVED_TOKEN_LEN; i++)
		cr_assert((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f'),
			  "lowercase hex at %zu: %c", i, out[i]);
}

/* Known answers computed independently with Python's hashlib:
 *   python3 -c 'import hashlib;print(hashlib.sha3_256(SECRET+UUID+RANDOMIZER).hexdigest())'
 * The empty-input one is also the published SHA3-256("") of FIPS 202's examples. */
Test(pool_proto, derive_token_known_answers)
{
	static const struct {
		const char *secret;
		size_t secret_len;
		const char *uuid, *randomizer, *want;
	} kat[] = {
		{ "secret", 6, "uuid", "rand",
		  "6caac21214873a217a9b0362aafcf33a22b7f9f50208e582ed82fbc5f38ea103" },
		{ "secret", 6, "uuid", "",
		  "2f7432902ac22648fe187f1736960e5f38ee20d14b08ffef600c1cbb34756f8d" },
		{ "", 0, "0b6e7f2c-8a1d-4c5e-9f3a-2d4b6c8e0a1f", "",
		  "cb67556bba2b4ff8e03ac5c4e05a7388da31a5f5e60f658cd42a612cab1db95a" },
		{ "kelb-base-secret", 16, "0b6e7f2c-8a1d-4c5e-9f3a-2d4b6c8e0a1f", "r1",
		  "5aa99466af72ffdf0fd7c6737d463b5583e65185b8af573ce778596d87199bd5" },
		{ "", 0, "", "",
		  "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a" },
		/* The secret is bytes: its length is secret_len, a NUL inside counts. */
		{ "se\0cret", 7, "uuid", "rand",
		  "a0f9babfb9b9f0701a43a407862c0661500faa762fcecb078c1a1739c546d0ba" },
		/* A plain concatenation, as KELB has it: the same bytes split elsewhere. */
		{ "secretuu", 8, "id", "rand",
		  "6caac21214873a217a9b0362aafcf33a22b7f9f50208e582ed82fbc5f38ea103" },
	};
	for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
		char out[POOL_PROTO_DERIVED_TOKEN_LEN + 16];
		memset(out, 'X', sizeof out);
		cr_assert_eq(pool_proto_derive_token(kat[i].secret, kat[i].secret_len, kat[i].uuid,
						     kat[i].randomizer, out),
			     0);
		cr_assert_eq(out[POOL_PROTO_DERIVED_TOKEN_LEN], '\0', "NUL-terminated");
		cr_assert_eq(out[POOL_PROTO_DERIVED_TOKEN_LEN + 1], 'X', "nothing written past it");
		assert_hex64(out);
		cr_assert_str_eq(out, kat[i].want, "answer %zu", i);
	}
}

/* A derived token goes through the whole path: the broker sends it in a request, the time
 * source that derived the same token accepts it. */
Test(pool_proto, derived_token_authorises_a_request)
{
	char token[POOL_PROTO_DERIVED_TOKEN_LEN + 1], other[POOL_PROTO_DERIVED_TOKEN_LEN + 1];
	static const char uuid[] = "0b6e7f2c-8a1d-4c5e-9f3a-2d4b6c8e0a1f";
	cr_assert_eq(pool_proto_derive_token("base", 4, uuid, "r2", token), 0);
	cr_assert_eq(pool_proto_derive_token("base", 4, uuid, "r3", other), 0);
	cr_assert_str_neq(token, other, "a new randomizer is a new token");
	struct pool_tokens *t = tokens_of(NULL, 0);
	cr_assert_eq(pool_tokens_add(t, token, strlen(token)), 0);
	for (size_t i = 0; i < 2; i++) {
		uint8_t buf[256];
		int len = ke_msg_build_fixed_key_request(buf, sizeof buf, numberings[i], token, c2s,
							 s2c, 32, 0, 15, false);
		cr_assert_gt(len, 0);
		struct ke_msg_request req;
		struct pool_proto_verdict v;
		parse(buf, (size_t)len, numberings[i], &req);
		pool_proto_authorise(t, false, &req, &v);
		cr_assert(v.allowed);
		cr_assert_eq(v.identity, POOL_IDENTITY_TOKEN);
		len = ke_msg_build_fixed_key_request(buf, sizeof buf, numberings[i], other, c2s,
						     s2c, 32, 0, 15, false);
		parse(buf, (size_t)len, numberings[i], &req);
		pool_proto_authorise(t, false, &req, &v);
		cr_assert_not(v.allowed, "the token of the old randomizer");
	}
	pool_tokens_unref(t);
}
