/* A strict TOML 1.0 parser producing a tree.
 *
 * Sans-I/O apart from toml_parse_file (a convenience that reads the whole file and calls
 * toml_parse). Every error is reported as "FILE:LINE:COL: message" (1-based line and column).
 * Every value remembers where it was defined, so the typed config layer can report
 * "FILE:LINE: message" for values that parse but make no sense.
 *
 * Columns count characters (UTF-8 code points; a tab is one). Hostile input is bounded: tables
 * and arrays nest at most 64 levels below the root, keys have at most 64 parts. Choices where
 * TOML 1.0 leaves room: a leading UTF-8 byte order mark is skipped; newlines inside multi-line
 * strings are returned as "\n" even when the file has CRLF; seconds may be 60 (RFC 3339 leap
 * second); year 0000 is refused; fractional seconds beyond nanoseconds are truncated; a float
 * that overflows to infinity (1e999) is refused. */
#ifndef NTSPOOL_TOML_H
#define NTSPOOL_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type {
	TOML_TABLE,
	TOML_ARRAY,
	TOML_STRING,
	TOML_INTEGER,
	TOML_FLOAT,
	TOML_BOOLEAN,
	TOML_DATETIME,       /* offset date-time: 1979-05-27T07:32:00Z */
	TOML_DATETIME_LOCAL, /* 1979-05-27T07:32:00 */
	TOML_DATE_LOCAL,     /* 1979-05-27 */
	TOML_TIME_LOCAL,     /* 07:32:00 */
};

struct toml_datetime {
	int year, month, day;            /* date part, when present */
	int hour, minute, second;        /* time part, when present */
	uint32_t nanosecond;             /* fractional seconds, truncated to nanoseconds */
	int offset_minutes;              /* for TOML_DATETIME: offset east of UTC; Z is 0 */
	bool offset_unknown;             /* for TOML_DATETIME: written as -00:00 */
};

struct toml_value;

/* Parses text (len bytes, need not be NUL-terminated; must be UTF-8). filename is only used in
 * messages (borrowed). Returns the root table (new, caller frees with toml_free), or NULL with
 * "FILE:LINE:COL: message" in err (always NUL-terminated when errlen > 0). */
struct toml_value *toml_parse(const char *text, size_t len, const char *filename, char *err,
			      size_t errlen);

/* Reads and parses a file. Errors include the path; I/O errors read "PATH: strerror". Files over
 * 1 MiB are refused ("PATH: file larger than ..."). */
struct toml_value *toml_parse_file(const char *path, char *err, size_t errlen);

void toml_free(struct toml_value *v);

enum toml_type toml_type(const struct toml_value *v);
const char *toml_type_name(enum toml_type t); /* "table", "array", "string", "integer", ... */

/* Where the value (for a table: its header or first key) was defined, 1-based. */
int toml_line(const struct toml_value *v);
int toml_col(const struct toml_value *v);

/* Tables keep keys in document order. The returned key and value are borrowed from the tree. */
size_t toml_table_count(const struct toml_value *table);
const char *toml_table_key(const struct toml_value *table, size_t i);
struct toml_value *toml_table_value(const struct toml_value *table, size_t i);
struct toml_value *toml_table_get(const struct toml_value *table, const char *key); /* or NULL */
/* Line where key i of the table was written (the key, not its value). */
int toml_table_key_line(const struct toml_value *table, size_t i);
int toml_table_key_col(const struct toml_value *table, size_t i);
/* Length of key i: quoted keys may hold NUL bytes (from \u0000), which strlen would miss. */
size_t toml_table_key_len(const struct toml_value *table, size_t i);

size_t toml_array_count(const struct toml_value *array);
struct toml_value *toml_array_get(const struct toml_value *array, size_t i);

/* Scalar accessors; the value must have the matching type (our bug otherwise: asserts).
 * toml_string returns the decoded UTF-8 (borrowed), *len set if len != NULL; it may contain NUL
 * bytes (from \u0000), which the config layer rejects. */
const char *toml_string(const struct toml_value *v, size_t *len);
int64_t toml_integer(const struct toml_value *v);
double toml_float(const struct toml_value *v);
bool toml_boolean(const struct toml_value *v);
const struct toml_datetime *toml_datetime(const struct toml_value *v);

/* Formats a date/time value as RFC 3339 text (the form toml-test expects), into buf.
 * Returns the length written (excluding NUL) or -EMSGSIZE. */
int toml_datetime_format(const struct toml_value *v, char *buf, size_t buflen);

#endif
