/* NTS-KE records (RFC 8915 §4 and the pool extension): header codec, the wire type table for
 * both pool numberings, an iterator over the records of a buffer and a record writer.
 *
 * Above this module only logical record kinds are seen; which wire type (and C bit) a kind has is
 * decided here alone, so the two pool numberings of PROTOCOL.md §2 cannot leak into the message
 * layer. Sans-I/O: every function works on caller buffers. */
#ifndef NTSPOOL_KE_RECORD_H
#define NTSPOOL_KE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define KE_RECORD_HEADER_LEN 4
#define KE_RECORD_BODY_MAX 0xffffu
#define KE_RECORD_CRITICAL 0x8000u
#define KE_RECORD_TYPE_MASK 0x7fffu

/* Which wire numbers the pool extension records use (config `pool-record-numbers`). */
enum ke_numbering {
	KE_NUMBERING_IANA,
	KE_NUMBERING_NTPDRS_V1,
};

enum ke_record_kind {
	KE_RECORD_END,
	KE_RECORD_NEXT_PROTOCOL,
	KE_RECORD_ERROR,
	KE_RECORD_WARNING,
	KE_RECORD_AEAD,
	KE_RECORD_NEW_COOKIE,
	KE_RECORD_SERVER,
	KE_RECORD_PORT,
	KE_RECORD_KEEP_ALIVE,
	KE_RECORD_SUPPORTED_PROTOCOLS,
	KE_RECORD_SUPPORTED_ALGORITHMS,
	KE_RECORD_FIXED_KEY,
	KE_RECORD_SERVER_DENY,
	KE_RECORD_AUTH_TOKEN,
	KE_RECORD_UNKNOWN, /* a type this numbering does not define */
};

/* One record as found in a buffer. */
struct ke_record {
	enum ke_record_kind kind;
	bool critical;	     /* the C bit as sent */
	uint16_t type;	     /* wire type without the C bit */
	uint16_t len;	     /* body length */
	const uint8_t *body; /* borrowed from the iterated buffer; never NULL */
};

struct ke_record_iter {
	struct wire_reader r;
	enum ke_numbering numbering;
};

/* Logical kind of wire type `type` (the C bit is ignored) under numbering n. */
enum ke_record_kind ke_record_kind_of(enum ke_numbering n, uint16_t type);

/* Wire type of kind under numbering n, with the C bit we send set in it. Every kind exists in
 * both numberings (ntpd-rs-v1 includes 0x4004/0x4005); -EINVAL for KE_RECORD_UNKNOWN. */
int ke_record_wire_type(enum ke_numbering n, enum ke_record_kind kind, uint16_t *type_out);

/* Static name of a kind, for logs. */
const char *ke_record_kind_name(enum ke_record_kind kind);

/* Reads one 4-byte header from r (borrowed). 0, or the reader's sticky error (-EBADMSG) when
 * fewer than 4 bytes remain. Does not look at the body. */
int ke_record_read_header(struct wire_reader *r, bool *critical, uint16_t *type, uint16_t *len);

/* buf is borrowed and must outlive the iterator. */
void ke_record_iter_init(struct ke_record_iter *it, const void *buf, size_t len,
			 enum ke_numbering n);

/* Next record into *rec (its body borrowed from the buffer). Returns 1 for a record, 0 when the
 * buffer is exhausted exactly at a record boundary, -EBADMSG when a header is cut short or a
 * body overruns the buffer (and on every later call). */
int ke_record_iter_next(struct ke_record_iter *it, struct ke_record *rec);

/* Bytes consumed so far (the end of the last record returned). */
size_t ke_record_iter_offset(const struct ke_record_iter *it);

/* Writers. w is borrowed. Each returns 0, -EINVAL when the kind does not exist in numbering n or
 * the body is longer than 65535 bytes (nothing is written then), or -EMSGSIZE (the writer's
 * sticky error) when the record does not fit. body is borrowed; it may be NULL when len is 0. */
int ke_record_put(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
		  const void *body, size_t len);

/* A record whose body is one big-endian u16 (Error, Warning, Port). */
int ke_record_put_u16(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
		      uint16_t v);

/* A record whose body is a list of big-endian u16 (Next Protocol, AEAD, Supported Next
 * Protocol List). ids is borrowed; it may be NULL when count is 0. */
int ke_record_put_u16_list(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
			   const uint16_t *ids, size_t count);

/* Only the header of a record whose len body bytes the caller writes next. */
int ke_record_put_header(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
			 size_t len);

/* A record with an explicit C bit and wire type (tests, unknown records). -EINVAL when type
 * has the C bit set or len exceeds 65535. */
int ke_record_put_raw(struct wire_writer *w, bool critical, uint16_t type, const void *body,
		      size_t len);

#endif
