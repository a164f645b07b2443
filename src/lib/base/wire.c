#include "wire.h"

#include <errno.h>
#include <string.h>

static const uint8_t empty_byte;

void wire_reader_init(struct wire_reader *r, const void *buf, size_t len)
{
	r->buf = buf ? buf : &empty_byte;
	r->len = buf ? len : 0;
	r->off = 0;
	r->err = 0;
}

void wire_reader_fail(struct wire_reader *r, int err)
{
	if (r->err == 0)
		r->err = err;
}

/* Checks for n more bytes without advancing; records the error on underrun. */
static bool have(struct wire_reader *r, size_t n)
{
	if (r->err)
		return false;
	if (n > r->len - r->off) {
		r->err = -EBADMSG;
		return false;
	}
	return true;
}

uint8_t wire_get_u8(struct wire_reader *r)
{
	if (!have(r, 1))
		return 0;
	return r->buf[r->off++];
}

uint16_t wire_get_u16(struct wire_reader *r)
{
	if (!have(r, 2))
		return 0;
	const uint8_t *p = r->buf + r->off;
	r->off += 2;
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t wire_get_u32(struct wire_reader *r)
{
	if (!have(r, 4))
		return 0;
	const uint8_t *p = r->buf + r->off;
	r->off += 4;
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t wire_get_u64(struct wire_reader *r)
{
	uint64_t hi = wire_get_u32(r);
	uint64_t lo = wire_get_u32(r);
	return r->err ? 0 : hi << 32 | lo;
}

const uint8_t *wire_get_bytes(struct wire_reader *r, size_t n)
{
	if (!have(r, n))
		return NULL;
	const uint8_t *p = r->buf + r->off;
	r->off += n;
	return p;
}

int wire_copy(struct wire_reader *r, void *dst, size_t n)
{
	const uint8_t *p = wire_get_bytes(r, n);
	if (!p)
		return r->err;
	if (n)
		memcpy(dst, p, n);
	return 0;
}

bool wire_skip(struct wire_reader *r, size_t n)
{
	return wire_get_bytes(r, n) != NULL;
}

struct wire_reader wire_sub(struct wire_reader *r, size_t n)
{
	struct wire_reader sub;
	const uint8_t *p = wire_get_bytes(r, n);
	wire_reader_init(&sub, p, p ? n : 0);
	if (!p)
		sub.err = r->err;
	return sub;
}

void wire_writer_init(struct wire_writer *w, void *buf, size_t cap)
{
	w->buf = buf;
	w->cap = buf ? cap : 0;
	w->off = 0;
	w->err = 0;
}

uint8_t *wire_put_reserve(struct wire_writer *w, size_t n)
{
	if (w->err)
		return NULL;
	if (n > w->cap - w->off) {
		w->err = -EMSGSIZE;
		return NULL;
	}
	uint8_t *p = w->buf + w->off;
	w->off += n;
	return p;
}

void wire_put_u8(struct wire_writer *w, uint8_t v)
{
	uint8_t *p = wire_put_reserve(w, 1);
	if (p)
		p[0] = v;
}

void wire_put_u16(struct wire_writer *w, uint16_t v)
{
	uint8_t *p = wire_put_reserve(w, 2);
	if (p) {
		p[0] = (uint8_t)(v >> 8);
		p[1] = (uint8_t)v;
	}
}

void wire_put_u32(struct wire_writer *w, uint32_t v)
{
	uint8_t *p = wire_put_reserve(w, 4);
	if (p) {
		p[0] = (uint8_t)(v >> 24);
		p[1] = (uint8_t)(v >> 16);
		p[2] = (uint8_t)(v >> 8);
		p[3] = (uint8_t)v;
	}
}

void wire_put_u64(struct wire_writer *w, uint64_t v)
{
	wire_put_u32(w, (uint32_t)(v >> 32));
	wire_put_u32(w, (uint32_t)v);
}

void wire_put_bytes(struct wire_writer *w, const void *src, size_t n)
{
	uint8_t *p = wire_put_reserve(w, n);
	if (p && n)
		memcpy(p, src, n);
}

void wire_put_zeros(struct wire_writer *w, size_t n)
{
	uint8_t *p = wire_put_reserve(w, n);
	if (p && n)
		memset(p, 0, n);
}

void wire_patch_u16(struct wire_writer *w, size_t at, uint16_t v)
{
	if (w->err)
		return;
	if (at > w->off || w->off - at < 2) {
		w->err = -EMSGSIZE;
		return;
	}
	w->buf[at] = (uint8_t)(v >> 8);
	w->buf[at + 1] = (uint8_t)v;
}
