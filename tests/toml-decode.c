/* Reads TOML on stdin and prints the toml-test JSON encoding of it on stdout: tables as objects,
 * arrays as arrays, each scalar as {"type": T, "value": "text"}. Exit 0 on success, 1 with the
 * parser's message on stderr for invalid TOML, 2 for usage or I/O errors.
 *
 * With --expect FILE.json it prints nothing on success and instead compares the decoded document
 * with the JSON in FILE (exit 1 and both forms on stderr when they differ), which lets the corpus
 * runner check results without another JSON tool. */
#include "toml.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *encode(const struct toml_value *v);

static json_t *scalar(const char *type, const char *value, size_t len)
{
	return json_pack("{s:s, s:s%}", "type", type, "value", value, len);
}

/* The shortest decimal form that reads back as the same double. */
static json_t *encode_float(double d)
{
	char buf[40];
	int prec;

	if (isnan(d))
		return scalar("float", "nan", 3);
	if (isinf(d))
		return d < 0 ? scalar("float", "-inf", 4) : scalar("float", "inf", 3);
	for (prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	if (!strpbrk(buf, ".e"))
		strcat(buf, ".0");
	return scalar("float", buf, strlen(buf));
}

static json_t *encode(const struct toml_value *v)
{
	const char *dtype = "datetime";
	char buf[64];
	json_t *j;
	size_t i, len;
	const char *str;

	switch (toml_type(v)) {
	case TOML_TABLE:
		j = json_object();
		for (i = 0; j && i < toml_table_count(v); i++) {
			if (json_object_setn_new(j, toml_table_key(v, i), toml_table_key_len(v, i),
						 encode(toml_table_value(v, i))) < 0) {
				json_decref(j);
				return NULL;
			}
		}
		return j;
	case TOML_ARRAY:
		j = json_array();
		for (i = 0; j && i < toml_array_count(v); i++) {
			if (json_array_append_new(j, encode(toml_array_get(v, i))) < 0) {
				json_decref(j);
				return NULL;
			}
		}
		return j;
	case TOML_STRING:
		str = toml_string(v, &len);
		return scalar("string", str, len);
	case TOML_INTEGER:
		snprintf(buf, sizeof(buf), "%lld", (long long)toml_integer(v));
		return scalar("integer", buf, strlen(buf));
	case TOML_FLOAT:
		return encode_float(toml_float(v));
	case TOML_BOOLEAN:
		return toml_boolean(v) ? scalar("bool", "true", 4) : scalar("bool", "false", 5);
	case TOML_DATETIME_LOCAL:
		dtype = "datetime-local";
		break;
	case TOML_DATE_LOCAL:
		dtype = "date-local";
		break;
	case TOML_TIME_LOCAL:
		dtype = "time-local";
		break;
	case TOML_DATETIME:
		break;
	}
	if (toml_datetime_format(v, buf, sizeof(buf)) < 0)
		return NULL;
	return scalar(dtype, buf, strlen(buf));
}

static char *read_all(FILE *f, size_t *len)
{
	size_t cap = 4096, n = 0, r;
	char *buf = malloc(cap), *p;

	while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap) {
			p = realloc(buf, cap * 2);
			if (!p) {
				free(buf);
				return NULL;
			}
			buf = p;
			cap *= 2;
		}
	}
	if (buf && ferror(f)) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	const char *expect = NULL;
	struct toml_value *root;
	json_t *got, *want;
	json_error_t jerr;
	char err[512];
	size_t len;
	char *text;
	int ret = 0;

	if (argc == 3 && strcmp(argv[1], "--expect") == 0) {
		expect = argv[2];
	} else if (argc != 1) {
		fprintf(stderr, "usage: %s [--expect FILE.json] < FILE.toml\n", argv[0]);
		return 2;
	}
	text = read_all(stdin, &len);
	if (!text) {
		perror("toml-decode: stdin");
		return 2;
	}
	root = toml_parse(text, len, "<stdin>", err, sizeof(err));
	free(text);
	if (!root) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	got = encode(root);
	toml_free(root);
	if (!got) {
		fprintf(stderr, "toml-decode: out of memory\n");
		return 2;
	}
	if (!expect) {
		json_dumpf(got, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		want = json_load_file(expect, JSON_ALLOW_NUL, &jerr);
		if (!want) {
			fprintf(stderr, "%s:%d: %s\n", expect, jerr.line, jerr.text);
			ret = 2;
		} else if (!json_equal(got, want)) {
			fprintf(stderr, "decoded:\n");
			json_dumpf(got, stderr, JSON_INDENT(2));
			fprintf(stderr, "\nexpected:\n");
			json_dumpf(want, stderr, JSON_INDENT(2));
			fprintf(stderr, "\n");
			ret = 1;
		}
		json_decref(want);
	}
	json_decref(got);
	return ret;
}
