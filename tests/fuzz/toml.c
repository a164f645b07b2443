/* Fuzz harness: toml_parse over arbitrary bytes (the parser validates UTF-8 itself), then a walk
 * of the whole tree through the public accessors.
 * Contract checked: NULL comes with "FILE:LINE:COL: message" (NUL-terminated, starting with the
 * filename, positive line and column); a tree is a table whose nesting stays within the
 * documented 64 levels, whose positions are positive, whose key lengths are consistent and whose
 * date-times format. Every tree is freed (LeakSanitizer checks). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toml.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

#define FILENAME "fuzz.toml"
/* Tables and arrays nest at most 64 levels below the root (depth 0), so no value sits deeper. */
#define MAX_DEPTH 64

static void walk(const struct toml_value *v, int depth)
{
	CHECK(depth <= MAX_DEPTH);
	CHECK(toml_line(v) >= 1 && toml_col(v) >= 1);
	enum toml_type t = toml_type(v);
	CHECK(toml_type_name(t) != NULL);
	switch (t) {
	case TOML_TABLE:
		for (size_t i = 0; i < toml_table_count(v); i++) {
			const char *key = toml_table_key(v, i);
			CHECK(key != NULL);
			size_t klen = toml_table_key_len(v, i);
			CHECK(strlen(key) <= klen && key[klen] == '\0');
			CHECK(toml_table_key_line(v, i) >= 1 && toml_table_key_col(v, i) >= 1);
			const struct toml_value *child = toml_table_value(v, i);
			CHECK(child != NULL);
			if (strlen(key) == klen)
				CHECK(toml_table_get(v, key) != NULL);
			walk(child, depth + 1);
		}
		break;
	case TOML_ARRAY:
		for (size_t i = 0; i < toml_array_count(v); i++) {
			const struct toml_value *child = toml_array_get(v, i);
			CHECK(child != NULL);
			walk(child, depth + 1);
		}
		break;
	case TOML_STRING: {
		size_t len = 0;
		const char *s = toml_string(v, &len);
		CHECK(s != NULL && s[len] == '\0');
		break;
	}
	case TOML_INTEGER:
		(void)toml_integer(v);
		break;
	case TOML_FLOAT:
		(void)toml_float(v);
		break;
	case TOML_BOOLEAN:
		(void)toml_boolean(v);
		break;
	case TOML_DATETIME:
	case TOML_DATETIME_LOCAL:
	case TOML_DATE_LOCAL:
	case TOML_TIME_LOCAL: {
		const struct toml_datetime *dt = toml_datetime(v);
		CHECK(dt != NULL);
		char buf[64];
		int n = toml_datetime_format(v, buf, sizeof buf);
		CHECK(n > 0 && (size_t)n < sizeof buf && buf[n] == '\0');
		CHECK(toml_datetime_format(v, buf, 4) == -EMSGSIZE);
		break;
	}
	default:
		CHECK(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	memset(err, 'x', sizeof err);
	struct toml_value *root =
		toml_parse((const char *)data, size, FILENAME, err, sizeof err);
	if (root == NULL) {
		CHECK(memchr(err, '\0', sizeof err) != NULL);
		CHECK(strncmp(err, FILENAME ":", strlen(FILENAME ":")) == 0);
		char *end;
		long line = strtol(err + strlen(FILENAME ":"), &end, 10);
		CHECK(line >= 1 && *end == ':');
		long col = strtol(end + 1, &end, 10);
		CHECK(col >= 1 && end[0] == ':' && end[1] == ' ');
		/* A tiny buffer still gets a NUL-terminated prefix. */
		char small[8];
		memset(small, 'x', sizeof small);
		root = toml_parse((const char *)data, size, FILENAME, small, sizeof small);
		CHECK(root == NULL && memchr(small, '\0', sizeof small) != NULL);
		return 0;
	}
	CHECK(toml_type(root) == TOML_TABLE);
	walk(root, 0);
	toml_free(root);
	return 0;
}
