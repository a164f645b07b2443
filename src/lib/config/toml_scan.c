#include "toml_scan.h"

#include "toml_num.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void toml_scan_init(struct toml_scan *s, const char *text, size_t len, const char *filename,
		    char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	s->text = text;
	s->len = text ? len : 0;
	s->filename = filename;
	s->err = err;
	s->errlen = errlen;
	s->cache_line = 1;
	s->cache_col = 1;
	if (errlen)
		err[0] = '\0';
}

void toml_scan_where(struct toml_scan *s, size_t off, int *line, int *col)
{
	size_t i;

	if (off > s->len)
		off = s->len;
	/* Only error reports look backwards, so restarting from the top costs little. */
	if (off < s->cache_off) {
		s->cache_off = 0;
		s->cache_line = 1;
		s->cache_col = 1;
	}
	for (i = s->cache_off; i < off; i++) {
		unsigned char c = (unsigned char)s->text[i];

		if (c == '\n') {
			s->cache_line++;
			s->cache_col = 1;
		} else if ((c & 0xC0) != 0x80) {
			s->cache_col++;
		}
	}
	s->cache_off = off;
	*line = s->cache_line;
	*col = s->cache_col;
}

__attribute__((format(printf, 4, 0))) static int verror(struct toml_scan *s, size_t off, int ret,
							 const char *fmt, va_list ap)
{
	int line, col, n;

	if (s->failed)
		return ret;
	s->failed = true;
	if (!s->errlen)
		return ret;
	toml_scan_where(s, off, &line, &col);
	n = snprintf(s->err, s->errlen, "%s:%d:%d: ", s->filename, line, col);
	if (n >= 0 && (size_t)n < s->errlen)
		vsnprintf(s->err + n, s->errlen - (size_t)n, fmt, ap);
	return ret;
}

int toml_scan_error(struct toml_scan *s, size_t off, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = verror(s, off, -EINVAL, fmt, ap);
	va_end(ap);
	return ret;
}

static int error_code(struct toml_scan *s, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int error_code(struct toml_scan *s, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ret = verror(s, s->pos, ret, fmt, ap);
	va_end(ap);
	return ret;
}

int toml_scan_nomem(struct toml_scan *s)
{
	return error_code(s, -ENOMEM, "out of memory");
}

void toml_scan_quote(const char *key, size_t keylen, char *buf, size_t buflen)
{
	size_t i = 0, o = 0;

	if (!buflen)
		return;
	while (i < keylen) {
		unsigned char c = (unsigned char)key[i];
		size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;

		if (n > keylen - i)
			n = keylen - i;
		if (o + n + 4 > buflen) {
			if (o + 4 <= buflen) {
				memcpy(buf + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (c < 0x20 || c == 0x7f)
			buf[o] = '?';
		else
			memcpy(buf + o, key + i, n);
		o += c < 0x20 || c == 0x7f ? 1 : n;
		i += n;
	}
	buf[o] = '\0';
}

static const char *found_at(const struct toml_scan *s, size_t ahead, char *buf, size_t buflen)
{
	int c = toml_scan_peek(s, ahead);

	if (c < 0)
		return "end of file";
	if (c == '\n' || (c == '\r' && toml_scan_peek(s, ahead + 1) == '\n'))
		return "end of line";
	if (c < 0x20 || c == 0x7f) {
		snprintf(buf, buflen, "control character U+%04X", (unsigned)c);
		return buf;
	}
	buf[0] = '\'';
	toml_scan_quote(s->text + s->pos + ahead, 1 + (c >= 0x80) + (c >= 0xE0) + (c >= 0xF0),
			buf + 1, buflen - 2);
	strcat(buf, "'");
	return buf;
}

const char *toml_scan_found(const struct toml_scan *s, char *buf, size_t buflen)
{
	return found_at(s, 0, buf, buflen);
}

int toml_scan_utf8(struct toml_scan *s)
{
	const unsigned char *t = (const unsigned char *)s->text;
	size_t i = 0, n = s->len, need, k;

	while (i < n) {
		unsigned char c = t[i], lo = 0x80, hi = 0xBF;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			lo = c == 0xE0 ? 0xA0 : 0x80; /* E0 80..9F would be overlong */
			hi = c == 0xED ? 0x9F : 0xBF; /* ED A0..BF would be a surrogate */
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			lo = c == 0xF0 ? 0x90 : 0x80;
			hi = c == 0xF4 ? 0x8F : 0xBF; /* beyond U+10FFFF */
		} else {
			return toml_scan_error(s, i, "invalid UTF-8 byte 0x%02X", c);
		}
		if (n - i - 1 < need || t[i + 1] < lo || t[i + 1] > hi)
			return toml_scan_error(s, i, "invalid UTF-8 sequence");
		for (k = 2; k <= need; k++)
			if ((t[i + k] & 0xC0) != 0x80)
				return toml_scan_error(s, i, "invalid UTF-8 sequence");
		i += need + 1;
	}
	if (n >= 3 && t[0] == 0xEF && t[1] == 0xBB && t[2] == 0xBF)
		s->pos = 3;
	return 0;
}

static bool is_control(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

void toml_scan_ws(struct toml_scan *s)
{
	int c;

	while ((c = toml_scan_peek(s, 0)) == ' ' || c == '\t')
		s->pos++;
}

/* Consumes "\n" or "\r\n"; true if it did. */
static bool newline(struct toml_scan *s)
{
	int c = toml_scan_peek(s, 0);

	if (c == '\n') {
		s->pos++;
		return true;
	}
	if (c == '\r' && toml_scan_peek(s, 1) == '\n') {
		s->pos += 2;
		return true;
	}
	return false;
}

/* Skips a comment up to (not including) its newline. */
static int comment(struct toml_scan *s)
{
	int c;

	if (toml_scan_peek(s, 0) != '#')
		return 0;
	s->pos++;
	while ((c = toml_scan_peek(s, 0)) >= 0 && c != '\n') {
		if (c == '\r' && toml_scan_peek(s, 1) == '\n')
			break;
		if (is_control(c))
			return toml_scan_error(s, s->pos, "control character U+%04X in comment",
					       (unsigned)c);
		s->pos++;
	}
	return 0;
}

int toml_scan_blank(struct toml_scan *s)
{
	int r;

	for (;;) {
		toml_scan_ws(s);
		r = comment(s);
		if (r < 0)
			return r;
		if (!newline(s))
			return 0;
	}
}

int toml_scan_eol(struct toml_scan *s)
{
	char buf[32];
	int r;

	toml_scan_ws(s);
	r = comment(s);
	if (r < 0)
		return r;
	if (toml_scan_peek(s, 0) < 0 || newline(s))
		return 0;
	return toml_scan_error(s, s->pos, "expected end of line, found %s",
			       toml_scan_found(s, buf, sizeof(buf)));
}

static int str_add(struct toml_scan_str *str, const char *p, size_t n)
{
	if (str->cap - str->len <= n) {
		size_t cap = str->cap ? str->cap : 16;
		char *q;

		while (cap - str->len <= n) {
			if (cap > SIZE_MAX / 2)
				return -ENOMEM;
			cap *= 2;
		}
		q = realloc(str->p, cap);
		if (!q)
			return -ENOMEM;
		str->p = q;
		str->cap = cap;
	}
	memcpy(str->p + str->len, p, n);
	str->len += n;
	str->p[str->len] = '\0';
	return 0;
}

static int add(struct toml_scan *s, struct toml_scan_str *str, const char *p, size_t n)
{
	return str_add(str, p, n) < 0 ? toml_scan_nomem(s) : 0;
}

/* Appends code point cp as UTF-8. */
static int add_utf8(struct toml_scan *s, struct toml_scan_str *str, uint32_t cp)
{
	char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xC0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xE0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (char)(0xF0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return add(s, str, b, n);
}

int toml_scan_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes the escape sequence at the cursor (a backslash) in a basic string. */
static int escape(struct toml_scan *s, struct toml_scan_str *str)
{
	size_t at = s->pos, digits, i;
	int c = toml_scan_peek(s, 1);
	uint32_t cp = 0;
	char buf[32];

	switch (c) {
	case 'b': cp = '\b'; break;
	case 't': cp = '\t'; break;
	case 'n': cp = '\n'; break;
	case 'f': cp = '\f'; break;
	case 'r': cp = '\r'; break;
	case '"': cp = '"'; break;
	case '\\': cp = '\\'; break;
	case 'u':
	case 'U':
		digits = c == 'u' ? 4 : 8;
		for (i = 0; i < digits; i++) {
			int h = toml_scan_hex(toml_scan_peek(s, 2 + i));

			if (h < 0)
				return toml_scan_error(s, at, "\\%c needs %zu hex digits", c,
						       digits);
			cp = cp << 4 | (uint32_t)h;
		}
		if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
			return toml_scan_error(s, at, "\\%c%0*X is not a Unicode scalar value", c,
					       (int)digits, cp);
		s->pos += 2 + digits;
		return add_utf8(s, str, cp);
	default:
		return toml_scan_error(s, at, "invalid escape sequence: backslash followed by %s",
				       found_at(s, 1, buf, sizeof(buf)));
	}
	s->pos += 2;
	return add_utf8(s, str, cp);
}

/* "basic" or 'literal' on one line; the cursor is on the opening quote. */
static int string1(struct toml_scan *s, struct toml_scan_str *str)
{
	int q = toml_scan_peek(s, 0), c, r;
	size_t start = s->pos;

	s->pos++;
	for (;;) {
		c = toml_scan_peek(s, 0);
		if (c < 0 || c == '\n' || (c == '\r' && toml_scan_peek(s, 1) == '\n'))
			return toml_scan_error(s, start, "unterminated string");
		if (c == q) {
			s->pos++;
			return 0;
		}
		if (c == '\\' && q == '"') {
			r = escape(s, str);
			if (r < 0)
				return r;
			continue;
		}
		if (is_control(c))
			return toml_scan_error(s, s->pos, "control character U+%04X in string",
					       (unsigned)c);
		r = add(s, str, s->text + s->pos, 1);
		if (r < 0)
			return r;
		s->pos++;
	}
}

/* True when a backslash at the cursor is the last non-blank character of its line. */
static bool line_ending_backslash(const struct toml_scan *s)
{
	size_t k = 1;
	int c;

	while ((c = toml_scan_peek(s, k)) == ' ' || c == '\t')
		k++;
	return c == '\n' || (c == '\r' && toml_scan_peek(s, k + 1) == '\n');
}

/* """multi-line basic""" or '''multi-line literal'''; the cursor is on the first quote.
 * Newlines are stored as "\n" whatever the file used. */
static int string3(struct toml_scan *s, struct toml_scan_str *str)
{
	int q = toml_scan_peek(s, 0), c, r;
	size_t start = s->pos, n;

	s->pos += 3;
	newline(s); /* a newline right after the opening delimiter is not part of the string */
	for (;;) {
		c = toml_scan_peek(s, 0);
		if (c < 0)
			return toml_scan_error(s, start, "unterminated multi-line string");
		if (c == q) {
			for (n = 1; toml_scan_peek(s, n) == q; n++)
				;
			/* Up to two quotes may sit right before the closing three. */
			if (n > 5)
				return toml_scan_error(s, s->pos + 5,
						       "too many quotes at the end of a string");
			r = add(s, str, s->text + s->pos, n >= 3 ? n - 3 : n);
			if (r < 0)
				return r;
			s->pos += n;
			if (n >= 3)
				return 0;
			continue;
		}
		if (c == '\\' && q == '"') {
			if (line_ending_backslash(s)) {
				s->pos++;
				do
					toml_scan_ws(s);
				while (newline(s));
				continue;
			}
			r = escape(s, str);
			if (r < 0)
				return r;
			continue;
		}
		if (newline(s)) {
			r = add(s, str, "\n", 1);
			if (r < 0)
				return r;
			continue;
		}
		if (is_control(c))
			return toml_scan_error(s, s->pos, "control character U+%04X in string",
					       (unsigned)c);
		r = add(s, str, s->text + s->pos, 1);
		if (r < 0)
			return r;
		s->pos++;
	}
}

bool toml_scan_bare_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* Makes sure an empty string still has a buffer, so that keys and values are never NULL. */
static int str_done(struct toml_scan *s, struct toml_scan_str *str)
{
	return str->p ? 0 : add(s, str, "", 0);
}

int toml_scan_key(struct toml_scan *s, struct toml_scan_str *out)
{
	size_t start = s->pos;
	int c = toml_scan_peek(s, 0), r;
	char buf[32];

	out->len = 0;
	if (out->p)
		out->p[0] = '\0';
	if (c == '"' || c == '\'') {
		if (toml_scan_peek(s, 1) == c && toml_scan_peek(s, 2) == c)
			return toml_scan_error(s, start, "a key cannot be a multi-line string");
		r = string1(s, out);
		return r < 0 ? r : str_done(s, out);
	}
	while (toml_scan_bare_char(toml_scan_peek(s, 0)))
		s->pos++;
	if (s->pos == start)
		return toml_scan_error(s, start, "expected a key, found %s",
				       toml_scan_found(s, buf, sizeof(buf)));
	return add(s, out, s->text + start, s->pos - start);
}

int toml_scan_scalar(struct toml_scan *s, struct toml_value **out)
{
	struct toml_scan_str str = {0};
	struct toml_value *v;
	int line, col, r, c = toml_scan_peek(s, 0);

	toml_scan_where(s, s->pos, &line, &col);
	/* Until toml_num_parse settles the type, the node must not look like it owns a string: a
	 * half-parsed date shares the union with the string pointer. */
	v = toml_tree_new(c == '"' || c == '\'' ? TOML_STRING : TOML_BOOLEAN, line, col);
	if (!v)
		return toml_scan_nomem(s);
	if (c == '"' || c == '\'') {
		if (toml_scan_peek(s, 1) == c && toml_scan_peek(s, 2) == c)
			r = string3(s, &str);
		else
			r = string1(s, &str);
		if (r == 0)
			r = str_done(s, &str);
		v->u.string.ptr = str.p;
		v->u.string.len = str.len;
	} else {
		r = toml_num_parse(s, v);
	}
	if (r < 0) {
		toml_tree_free(v);
		return r;
	}
	*out = v;
	return 0;
}
