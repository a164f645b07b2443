/* Bounded reader and writer: the only way untrusted bytes are read.
 *
 * Both carry a sticky error. Once a read or write would cross the end of the buffer the object
 * records the error, every later call is a no-op returning zero/NULL, and the caller checks the
 * error once at the end of a parse. No byte outside [buf, buf + len) is ever touched. */
#ifndef NTSPOOL_WIRE_H
#define NTSPOOL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wire_reader {
	const uint8_t *buf;
	size_t len;
	size_t off;
	int err; /* 0, or negative errno: -EBADMSG when a read ran past the end */
};

struct wire_writer {
	uint8_t *buf;
	size_t cap;
	size_t off;
	int err; /* 0, or -EMSGSIZE when a write did not fit */
};

/* buf is borrowed and must outlive the reader. buf may be NULL when len is 0. */
void wire_reader_init(struct wire_reader *r, const void *buf, size_t len);

uint8_t wire_get_u8(struct wire_reader *r);
uint16_t wire_get_u16(struct wire_reader *r); /* big-endian */
uint32_t wire_get_u32(struct wire_reader *r); /* big-endian */
uint64_t wire_get_u64(struct wire_reader *r); /* big-endian */

/* Returns a borrowed pointer to the next n bytes and advances, or NULL (error set) if fewer remain.
 * For n == 0 returns a non-NULL pointer into the buffer (or to a static empty byte). */
const uint8_t *wire_get_bytes(struct wire_reader *r, size_t n);

/* Copies the next n bytes into dst; 0 on success, the sticky error otherwise (dst untouched). */
int wire_copy(struct wire_reader *r, void *dst, size_t n);

/* Advances by n bytes; false (error set) if fewer remain. */
bool wire_skip(struct wire_reader *r, size_t n);

/* A reader over the next n bytes, advancing r past them. On underrun both are in error. */
struct wire_reader wire_sub(struct wire_reader *r, size_t n);

/* Marks the reader failed with err (negative errno) unless it already failed. */
void wire_reader_fail(struct wire_reader *r, int err);

static inline size_t wire_remaining(const struct wire_reader *r)
{
	return r->err ? 0 : r->len - r->off;
}

static inline size_t wire_offset(const struct wire_reader *r)
{
	return r->off;
}

static inline int wire_error(const struct wire_reader *r)
{
	return r->err;
}

/* True when no error occurred and every byte was consumed. */
static inline bool wire_done(const struct wire_reader *r)
{
	return r->err == 0 && r->off == r->len;
}

/* buf is borrowed; cap is its size. */
void wire_writer_init(struct wire_writer *w, void *buf, size_t cap);

void wire_put_u8(struct wire_writer *w, uint8_t v);
void wire_put_u16(struct wire_writer *w, uint16_t v);
void wire_put_u32(struct wire_writer *w, uint32_t v);
void wire_put_u64(struct wire_writer *w, uint64_t v);
void wire_put_bytes(struct wire_writer *w, const void *src, size_t n);
void wire_put_zeros(struct wire_writer *w, size_t n);

/* Reserves n bytes and returns a pointer to them for the caller to fill, or NULL (error set). */
uint8_t *wire_put_reserve(struct wire_writer *w, size_t n);

/* Writes v at an absolute offset already written (a length field filled in afterwards).
 * Sets -EMSGSIZE if [at, at + 2) is not inside the written part. */
void wire_patch_u16(struct wire_writer *w, size_t at, uint16_t v);

static inline size_t wire_written(const struct wire_writer *w)
{
	return w->off;
}

static inline int wire_writer_error(const struct wire_writer *w)
{
	return w->err;
}

#endif
