/* The TOML scanner: the lexical layer below the grammar in toml_doc.c.
 *
 * It reads the text through a cursor whose every access is checked against the length (peek
 * returns -1 past the end), so no byte outside the input is ever touched; the text need not be
 * NUL-terminated. It knows whitespace, comments, newlines, keys and strings, hands unquoted
 * scalars to toml_num, and formats the errors.
 *
 * Positions: lines and columns are 1-based; a column counts characters (UTF-8 code points, a tab
 * is one), so it matches what an editor shows. They are computed from byte offsets on demand,
 * with a cache that makes a forward-moving parse linear overall. */
#ifndef NTSPOOL_TOML_SCAN_H
#define NTSPOOL_TOML_SCAN_H

#include "toml_tree.h"

#include <stdbool.h>
#include <stddef.h>

struct toml_scan {
	const char *text;
	size_t len;
	size_t pos;
	const char *filename;
	char *err;
	size_t errlen;
	bool failed;
	size_t cache_off; /* line and column of the byte at cache_off */
	int cache_line, cache_col;
};

/* A growing byte string (for decoded strings and keys); p is malloc'd and NUL-terminated. */
struct toml_scan_str {
	char *p;
	size_t len, cap;
};

/* text, filename and err are borrowed and must outlive the scanner. */
void toml_scan_init(struct toml_scan *s, const char *text, size_t len, const char *filename,
		    char *err, size_t errlen);

/* Records "FILE:LINE:COL: message" for byte offset off, unless an error is already recorded
 * (the first error is the one worth reporting). Returns -EINVAL. */
int toml_scan_error(struct toml_scan *s, size_t off, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Records "out of memory" at the current position and returns -ENOMEM. */
int toml_scan_nomem(struct toml_scan *s);

/* Line and column of byte offset off (off <= len). */
void toml_scan_where(struct toml_scan *s, size_t off, int *line, int *col);

/* Byte at pos + ahead, or -1 past the end. */
static inline int toml_scan_peek(const struct toml_scan *s, size_t ahead)
{
	return ahead < s->len - s->pos ? (unsigned char)s->text[s->pos + ahead] : -1;
}

/* Checks that the whole text is UTF-8 (no overlong forms, surrogates or code points over
 * U+10FFFF), and skips a leading byte order mark. 0 or -EINVAL at the first bad byte. */
int toml_scan_utf8(struct toml_scan *s);

/* Skips spaces and tabs. */
void toml_scan_ws(struct toml_scan *s);

/* Skips whitespace, comments and newlines: what may separate expressions and array elements. */
int toml_scan_blank(struct toml_scan *s);

/* Skips whitespace and a comment, then requires a newline (consumed) or the end of the text. */
int toml_scan_eol(struct toml_scan *s);

/* Reads one simple key (bare, "basic" or 'literal') into out (which it resets; the caller frees
 * out->p even on failure). */
int toml_scan_key(struct toml_scan *s, struct toml_scan_str *out);

/* Value of hex digit c, or -1. */
int toml_scan_hex(int c);

/* True for the characters of bare keys: A-Z a-z 0-9 _ -. */
bool toml_scan_bare_char(int c);

/* Reads a string, number, boolean or date-time at the cursor into *out (new, caller frees). */
int toml_scan_scalar(struct toml_scan *s, struct toml_value **out);

/* Describes the character at the cursor for "expected X, found Y" messages: a quoted
 * character, "end of line", "end of file" or a control character; buf (>= 16 bytes) may be
 * used and is returned, or a static string. */
const char *toml_scan_found(const struct toml_scan *s, char *buf, size_t buflen);

/* Copies a printable, bounded form of key (control bytes as '?', long keys cut at a character
 * boundary with "...") into buf, for messages. */
void toml_scan_quote(const char *key, size_t keylen, char *buf, size_t buflen);

#endif
