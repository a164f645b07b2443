/* NTS-KE messages (RFC 8915 §4 and PROTOCOL.md §3): stream framing, request parsing with the
 * validation rules that decide the Error code to answer, response parsing, and the builders of
 * every message the server, the broker and the daemon's client send. Sans-I/O: bytes in, bytes
 * and plain structs out. Everything a peer sends is bounded here; nothing it sends is truncated
 * silently. */
#ifndef NTSPOOL_KE_MSG_H
#define NTSPOOL_KE_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_record.h"

#define KE_MSG_REQUEST_MAX 4096	  /* we answer Error 1 above this (PROTOCOL.md §1) */
#define KE_MSG_RESPONSE_MAX 65536 /* clients accept at least this much (RFC 8915 §4) */
#define KE_MSG_MAX_IDS 64	  /* ids in one list record, pairs in an algorithm list */
#define KE_MSG_MAX_DENY 16	  /* distinct NTP Server Deny names in a request */
#define KE_MSG_NAME_MAX 255	  /* server and deny name length, like a DNS name */
#define KE_MSG_MAX_COOKIES 8
#define KE_MSG_COOKIE_MAX 256
#define KE_MSG_MAX_WARNINGS 8
#define KE_MSG_KEY_MAX 64 /* one Fixed Key half: the longest AEAD key (AEAD 17) */
#define KE_MSG_TOKEN_MAX 255 /* an Authentication token's bytes (PROTOCOL.md §3.5) */

#define KE_MSG_PROTOCOL_NTPV4 0
#define KE_MSG_PORT_DEFAULT 123

/* RFC 8915 §4.1.3 error codes. */
#define KE_MSG_ERROR_UNRECOGNIZED_CRITICAL 0
#define KE_MSG_ERROR_BAD_REQUEST 1
#define KE_MSG_ERROR_INTERNAL 2

/* Key length in bytes of an AEAD id we can use (15 -> 32, 17 -> 64), 0 for any other. This
 * layer sits below aead, so it keeps its own copy of the two numbers. */
size_t ke_msg_aead_key_len(uint16_t aead_id);

/* ---- Framing ------------------------------------------------------------------------------ */

/* Finds the end of the first message in buf[0, len) (borrowed), i.e. the End record.
 * cap is the largest message accepted (KE_MSG_REQUEST_MAX or KE_MSG_RESPONSE_MAX).
 * Returns N > 0 when a complete message of N bytes is there (bytes after it are the next
 * message's), 0 when more bytes are needed, -EMSGSIZE as soon as the headers seen prove the
 * message exceeds cap (a server answers Error 1), -EBADMSG for an End record with a body,
 * -EINVAL for a cap above KE_MSG_RESPONSE_MAX.
 * Only headers are looked at; the body rules are the parsers'. */
int ke_msg_frame(const void *buf, size_t len, size_t cap);

/* ---- Requests ----------------------------------------------------------------------------- */

enum ke_msg_request_kind {
	KE_MSG_REQUEST_PLAIN,	  /* §3.1: Next Protocol, AEAD, [Deny...] */
	KE_MSG_REQUEST_SUPPORT,	  /* §3.2: Supported lists, [Keep Alive] */
	KE_MSG_REQUEST_FIXED_KEY, /* §3.3: Fixed Key, one protocol, one AEAD, [Keep Alive] */
};

struct ke_msg_name {
	size_t len;
	char name[KE_MSG_NAME_MAX + 1]; /* NUL-terminated; printable ASCII without space */
};

struct ke_msg_request {
	enum ke_msg_request_kind kind;
	uint16_t protocols[KE_MSG_MAX_IDS]; /* client order */
	size_t n_protocols;
	uint16_t aeads[KE_MSG_MAX_IDS]; /* client order; n_aeads == 0: no AEAD record */
	size_t n_aeads;
	struct ke_msg_name deny[KE_MSG_MAX_DENY]; /* distinct, ASCII case-insensitively */
	size_t n_deny;
	uint8_t fixed_c2s[KE_MSG_KEY_MAX]; /* secret: wipe with ke_msg_request_wipe */
	uint8_t fixed_s2c[KE_MSG_KEY_MAX];
	size_t fixed_key_len; /* 0 unless kind is KE_MSG_REQUEST_FIXED_KEY */
	bool keep_alive;      /* asked for; honoured only for an authorised pool (pool_proto) */
	bool want_protocols;  /* Supported Next Protocol List asked for */
	bool want_algorithms; /* Supported Algorithm List asked for */
	unsigned ignored;     /* unknown non-critical records skipped */
	/* An Authentication record as the first record, with a body of 1..KE_MSG_TOKEN_MAX bytes.
	 * Secret: wiped by ke_msg_request_wipe. Any other Authentication record (not first,
	 * repeated, empty or too long) sets token_misplaced and clears has_token, so it can never
	 * authorise (PROTOCOL.md §3.5: the token comes first). */
	bool has_token;
	bool token_misplaced;
	size_t token_len;
	uint8_t token[KE_MSG_TOKEN_MAX];
};

/* Why a request was refused: the RFC 8915 error code to answer and a static reason for a
 * debug log line. */
struct ke_msg_reject {
	uint16_t code;
	const char *reason;
};

/* Parses and validates one complete request buf[0, len) (borrowed; len as returned by
 * ke_msg_frame) into *req (caller-owned; fully rewritten). The parse is the same for every peer:
 * who may send which shape is pool_proto's decision, taken on the parsed request.
 *
 * Returns 0 for a valid request, or -EPROTO with *rej filled. The code answered:
 *   Error 0 — any record with the C bit set whose type the numbering lacks. Error 0 wins over
 *     every other rule below, since the peer speaks something we do not understand.
 *   Error 1 — everything else that is wrong: over KE_MSG_REQUEST_MAX; no End, or bytes after it,
 *     or a body overrunning the buffer; End with a body; Error, Warning or New Cookie records;
 *     Next Protocol missing, repeated or empty; AEAD repeated or empty; NTPv4 offered without
 *     AEAD; odd list lengths; Keep Alive or a Supported-list request with a body; a Port body not
 *     2 bytes; more than KE_MSG_MAX_IDS ids; a deny name empty, longer than KE_MSG_NAME_MAX or not
 *     printable ASCII, or more than KE_MSG_MAX_DENY distinct names; Fixed Key halves unequal or
 *     not the key length of the chosen AEAD (an AEAD we do not know has none); mixed shapes:
 *     Fixed Key with a Supported list, a Supported list with Next Protocol or AEAD, Fixed Key
 *     with other than exactly one protocol and one AEAD; a repeated Fixed Key, Keep Alive or
 *     Supported list.
 * Ignored: unknown records with C=0 (counted), Server and Port records a client may add as hints
 * (RFC 8915 §4.1.7/8). Authentication records are kept as described at has_token. NTP Server
 * Deny is parsed from any peer: the broker serves ordinary clients.
 * On failure *req holds no key material and no token. */
int ke_msg_parse_request(const uint8_t *buf, size_t len, enum ke_numbering n,
			 struct ke_msg_request *req, struct ke_msg_reject *rej);

/* True when name (borrowed, NUL-terminated) is in the request's deny set (ASCII
 * case-insensitive, as DNS names are). */
bool ke_msg_request_denies(const struct ke_msg_request *req, const char *name);

/* Wipes the fixed key halves and the token (gnutls_memset). */
void ke_msg_request_wipe(struct ke_msg_request *req);

/* ---- Responses ---------------------------------------------------------------------------- */

struct ke_msg_cookie {
	size_t len; /* 1..KE_MSG_COOKIE_MAX */
	uint8_t data[KE_MSG_COOKIE_MAX];
};

struct ke_msg_algorithm {
	uint16_t id;
	uint16_t key_len;
};

struct ke_msg_response {
	bool has_protocol_record; /* Next Protocol present (possibly empty) */
	bool has_protocol;	  /* false: empty list, no common protocol */
	uint16_t protocol;
	bool has_aead_record;
	bool has_aead; /* false with has_aead_record: empty list, no common AEAD */
	uint16_t aead;
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	size_t n_cookies;
	unsigned extra_cookies; /* cookies beyond KE_MSG_MAX_COOKIES, not kept */
	bool has_server;
	struct ke_msg_name server;
	bool has_port;
	uint16_t port;
	bool has_error;
	uint16_t error;
	uint16_t warnings[KE_MSG_MAX_WARNINGS];
	size_t n_warnings;
	bool keep_alive;
	bool has_supported_protocols;
	uint16_t supported_protocols[KE_MSG_MAX_IDS];
	size_t n_supported_protocols;
	bool has_supported_algorithms;
	struct ke_msg_algorithm supported_algorithms[KE_MSG_MAX_IDS];
	size_t n_supported_algorithms;
	unsigned ignored; /* unknown non-critical records and request-only hints skipped */
};

/* Parses one complete response buf[0, len) (borrowed) into *resp (caller-owned; fully
 * rewritten), for a request of kind `asked`.
 * Returns:
 *   0           a usable response of the expected shape: for PLAIN and FIXED_KEY a Next Protocol
 *               record (one id, or empty for no overlap) and, when it names NTPv4, an AEAD record
 *               (one id, or empty); for SUPPORT no Next Protocol, AEAD or cookie. Whether the
 *               choices were among those offered is the caller's check.
 *   -EREMOTEIO  the server sent Error and/or Warning records (no warning codes are defined, so
 *               every warning is unknown and fatal, RFC 8915 §4.1.4); resp->has_error/error and
 *               resp->warnings say which. The other fields are filled but must not be used.
 *   -EPROTO     a record with the C bit set that this numbering does not define.
 *   -EMSGSIZE   over KE_MSG_RESPONSE_MAX.
 *   -EBADMSG    anything else malformed: no End or bytes after it, body overrun, wrong body
 *               lengths, repeated single records, more than one id chosen, a cookie of 0 or more
 *               than KE_MSG_COOKIE_MAX bytes, a server name empty, too long or not printable
 *               ASCII, more than KE_MSG_MAX_WARNINGS warnings or KE_MSG_MAX_IDS list entries, or
 *               a Fixed Key record (request-only), or the wrong shape for `asked` (including
 *               NTPv4 and an AEAD chosen but no cookie).
 * Cookies beyond KE_MSG_MAX_COOKIES are counted in extra_cookies and dropped; unknown records
 * with C=0 are counted and skipped. */
int ke_msg_parse_response(const uint8_t *buf, size_t len, enum ke_numbering n,
			  enum ke_msg_request_kind asked, struct ke_msg_response *resp);

/* ---- Builders ----------------------------------------------------------------------------- */
/* Each writes one whole message into buf[0, cap) (borrowed) and returns its length, -EMSGSIZE
 * when it does not fit (buf contents then unspecified), or -EINVAL for arguments no valid message
 * carries (a record the numbering lacks, an empty or over-long list or name, a key length that
 * is not the AEAD's). Record order and C bits are those of PROTOCOL.md §2/§3. All pointer
 * arguments are borrowed. */

/* Next Protocol[protocols], AEAD[aeads] (omitted when n_aeads is 0), one NTP Server Deny per
 * name (printable ASCII, 1..255 bytes), End. */
int ke_msg_build_request(void *buf, size_t cap, enum ke_numbering n, const uint16_t *protocols,
			 size_t n_protocols, const uint16_t *aeads, size_t n_aeads,
			 const char *const *deny, size_t n_deny);

/* The pool requests below start with an Authentication record when token is not NULL
 * (PROTOCOL.md §3.5): a NUL-terminated secret of 1..KE_MSG_TOKEN_MAX bytes, copied into buf
 * only. */

/* [Authentication], [Supported Next Protocol List], [Supported Algorithm List], [Keep Alive],
 * End; at least one list must be asked for. */
int ke_msg_build_support_request(void *buf, size_t cap, enum ke_numbering n, const char *token,
				 bool protocols, bool algorithms, bool keep_alive);

/* [Authentication], Fixed Key(c2s ‖ s2c), Next Protocol[protocol], AEAD[aead], [Keep Alive],
 * End. key_len must be ke_msg_aead_key_len(aead). The keys are copied into buf only. */
int ke_msg_build_fixed_key_request(void *buf, size_t cap, enum ke_numbering n, const char *token,
				   const uint8_t *c2s, const uint8_t *s2c, size_t key_len,
				   uint16_t protocol, uint16_t aead, bool keep_alive);

struct ke_msg_success {
	uint16_t protocol;
	uint16_t aead;
	const struct ke_msg_cookie *cookies; /* 1..KE_MSG_MAX_COOKIES, borrowed */
	size_t n_cookies;
	uint16_t port;	    /* 0 or KE_MSG_PORT_DEFAULT: no Port record */
	const char *server; /* NULL: no Server record */
	bool keep_alive;
};

/* Next Protocol[p], AEAD[a], New Cookie × n, [Port], [Server], [Keep Alive], End. */
int ke_msg_build_success(void *buf, size_t cap, enum ke_numbering n,
			 const struct ke_msg_success *s);

/* No overlap (§3.1): Next Protocol[], End when has_protocol is false; otherwise
 * Next Protocol[protocol], AEAD[], End. */
int ke_msg_build_no_overlap(void *buf, size_t cap, enum ke_numbering n, bool has_protocol,
			    uint16_t protocol);

/* Error(code), End. */
int ke_msg_build_error(void *buf, size_t cap, enum ke_numbering n, uint16_t code);

struct ke_msg_support {
	bool protocols; /* answer the Supported Next Protocol List */
	const uint16_t *protocol_ids;
	size_t n_protocols;
	bool algorithms; /* answer the Supported Algorithm List */
	const struct ke_msg_algorithm *algs;
	size_t n_algs;
	bool keep_alive;
};

/* [Supported Next Protocol List], [Supported Algorithm List], [Keep Alive], End. */
int ke_msg_build_support_response(void *buf, size_t cap, enum ke_numbering n,
				  const struct ke_msg_support *s);

#endif
