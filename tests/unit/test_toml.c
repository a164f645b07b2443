#include "toml.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char err[512];

static struct toml_value *parse(const char *text)
{
	return toml_parse(text, strlen(text), "t.toml", err, sizeof(err));
}

/* The document must parse; returns the root (caller frees). */
static struct toml_value *ok(const char *text)
{
	struct toml_value *root = parse(text);

	cr_assert_not_null(root, "rejected: %s\n(%s)", text, err);
	return root;
}

/* The document must fail with an error starting with want ("t.toml:L:C: message" or a
 * prefix of it). */
static void fails(const char *text, const char *want)
{
	struct toml_value *root = parse(text);

	cr_assert_null(root, "accepted: %s", text);
	toml_free(root);
	cr_assert(strncmp(err, want, strlen(want)) == 0, "input %s\nerror  %s\nwanted %s", text,
		  err, want);
}

static void invalid(const char *text)
{
	fails(text, "t.toml:");
}

/* Parses "k = VALUE" and returns the value of k; *root to free. */
static const struct toml_value *value_of(const char *text, struct toml_value **root)
{
	const struct toml_value *v;

	*root = ok(text);
	v = toml_table_get(*root, "k");
	cr_assert_not_null(v, "no key k in %s", text);
	return v;
}

static void expect_string(const char *text, const char *want, size_t wantlen)
{
	struct toml_value *root;
	const struct toml_value *v = value_of(text, &root);
	size_t len;
	const char *s;

	cr_assert_eq(toml_type(v), TOML_STRING, "%s", text);
	s = toml_string(v, &len);
	cr_assert_eq(len, wantlen, "%s: length %zu, wanted %zu", text, len, wantlen);
	cr_assert(memcmp(s, want, len) == 0, "%s: got \"%s\"", text, s);
	cr_assert_eq(s[len], '\0');
	toml_free(root);
}

#define STR(text, want) expect_string(text, want, sizeof(want) - 1)

static void expect_int(const char *text, int64_t want)
{
	struct toml_value *root;
	const struct toml_value *v = value_of(text, &root);

	cr_assert_eq(toml_type(v), TOML_INTEGER, "%s", text);
	cr_assert_eq(toml_integer(v), want, "%s: got %lld", text, (long long)toml_integer(v));
	toml_free(root);
}

static void expect_float(const char *text, double want)
{
	struct toml_value *root;
	const struct toml_value *v = value_of(text, &root);

	cr_assert_eq(toml_type(v), TOML_FLOAT, "%s", text);
	if (isnan(want))
		cr_assert(isnan(toml_float(v)), "%s", text);
	else
		cr_assert(toml_float(v) == want && signbit(toml_float(v)) == signbit(want),
			  "%s: got %.17g", text, toml_float(v));
	toml_free(root);
}

/* Parses "k = VALUE", checks the type and the RFC 3339 form. */
static void expect_dt(const char *text, enum toml_type type, const char *form)
{
	struct toml_value *root;
	const struct toml_value *v = value_of(text, &root);
	char buf[64];

	cr_assert_eq(toml_type(v), type, "%s: type %s", text, toml_type_name(toml_type(v)));
	cr_assert_eq(toml_datetime_format(v, buf, sizeof(buf)), (int)strlen(form));
	cr_assert_str_eq(buf, form, "%s", text);
	toml_free(root);
}

Test(toml, basic_strings)
{
	STR("k = \"hello\"", "hello");
	STR("k = \"\"", "");
	STR("k = \"tab\there\"", "tab\there");
	STR("k = \"\\b\\t\\n\\f\\r\\\"\\\\\"", "\b\t\n\f\r\"\\");
	STR("k = \"\\u00E9\\u00e9\"", "\xc3\xa9\xc3\xa9");
	STR("k = \"\\U0001F600\"", "\xf0\x9f\x98\x80");
	STR("k = \"\\u20AC\"", "\xe2\x82\xac");
	STR("k = \"\\U0010FFFF\"", "\xf4\x8f\xbf\xbf");
	STR("k = \"\\u0000x\"", "\0x");
	STR("k = \"J\xc3\xb8s\xc3\xa9 \xe2\x82\xac\"", "J\xc3\xb8s\xc3\xa9 \xe2\x82\xac");
	STR("k = \"# not a comment\" # comment", "# not a comment");
	STR("k = \"\xc2\x80 C1 controls are fine\"", "\xc2\x80 C1 controls are fine");
}

Test(toml, basic_string_errors)
{
	fails("k = \"\\q\"", "t.toml:1:6: invalid escape sequence: backslash followed by 'q'");
	invalid("k = \"\\e\"");
	invalid("k = \"\\x41\"");
	invalid("k = \"\\ \"");
	invalid("k = \"\\");
	fails("k = \"\\uD800\"", "t.toml:1:6: \\uD800 is not a Unicode scalar value");
	invalid("k = \"\\uDFFF\"");
	invalid("k = \"\\U0000D800\"");
	fails("k = \"\\U00110000\"", "t.toml:1:6: \\U00110000 is not a Unicode scalar value");
	invalid("k = \"\\UFFFFFFFF\"");
	STR("k = \"\\uFFFFx\"", "\xef\xbf\xbfx");
	fails("k = \"\\u12\"", "t.toml:1:6: \\u needs 4 hex digits");
	invalid("k = \"\\U1234567\"");
	invalid("k = \"\\u12G4\"");
	fails("k = \"abc", "t.toml:1:5: unterminated string");
	fails("k = \"abc\ndef\"", "t.toml:1:5: unterminated string");
	fails("k = \"a\x01\"", "t.toml:1:7: control character U+0001 in string");
	invalid("k = \"a\x7f\"");
	invalid("k = \"a\x1f\"");
	invalid("k = \"a\rb\"");
	invalid("k = \"a\" \"b\"");
}

Test(toml, multiline_basic_strings)
{
	STR("k = \"\"\"\nRoses are red\nViolets are blue\"\"\"", "Roses are red\nViolets are blue");
	STR("k = \"\"\"\r\nfirst\r\nsecond\"\"\"", "first\nsecond");
	STR("k = \"\"\"\n\nblank first\"\"\"", "\nblank first");
	STR("k = \"\"\"The quick brown \\\n\n\n  fox jumps over \\\n    the lazy dog.\"\"\"",
	    "The quick brown fox jumps over the lazy dog.");
	STR("k = \"\"\"\\\n       trimmed\\\n       \"\"\"", "trimmed");
	STR("k = \"\"\"a \\   \t\n   b\"\"\"", "a b");
	STR("k = \"\"\"a \\\r\n   b\"\"\"", "a b");
	STR("k = \"\"\"two \"\" quotes\"\"\"", "two \"\" quotes");
	STR("k = \"\"\"three \"\"\\\" quotes\"\"\"", "three \"\"\" quotes");
	STR("k = \"\"\"\"quoted\"\"\"\"", "\"quoted\"");
	STR("k = \"\"\"\"\"quoted\"\"\"\"\"", "\"\"quoted\"\"");
	STR("k = \"\"\"tab\there \\u0041\"\"\"", "tab\there A");
	STR("k = \"\"\"\"\"\"", "");
	fails("k = \"\"\"a\"\"\"\"\"\"", "t.toml:1:14: too many quotes");
	fails("k = \"\"\"abc\n", "t.toml:1:5: unterminated multi-line string");
	invalid("k = \"\"\"a\x00\"\"\"");
	invalid("k = \"\"\"a\rb\"\"\"");
	invalid("k = \"\"\"\\q\"\"\"");
	invalid("k = \"\"\"a \\ b\"\"\"");
}

Test(toml, literal_strings)
{
	STR("k = 'C:\\Users\\nodejs\\templates'", "C:\\Users\\nodejs\\templates");
	STR("k = 'Tom \"Dubs\" Preston-Werner'", "Tom \"Dubs\" Preston-Werner");
	STR("k = ''", "");
	STR("k = 'tab\there'", "tab\there");
	STR("k = '''I [dw]on't need \\d{2} apples'''", "I [dw]on't need \\d{2} apples");
	STR("k = '''\nThe first newline is\ntrimmed.\n'''", "The first newline is\ntrimmed.\n");
	STR("k = ''''That,' she said.''''", "'That,' she said.'");
	STR("k = '''a''b'''", "a''b");
	STR("k = '''\r\na\r\nb'''", "a\nb");
	STR("k = '''\\n stays'''", "\\n stays");
	fails("k = 'a\nb'", "t.toml:1:5: unterminated string");
	invalid("k = 'a\x01'");
	invalid("k = 'a\x7f'");
	invalid("k = '''a''''''");
	invalid("k = '''a\x00'''");
	invalid("k = '''abc");
	invalid("k = 'abc");
}

Test(toml, utf8_validation)
{
	STR("k = \"\xf0\x9f\x98\x80\"", "\xf0\x9f\x98\x80");
	fails("k = \"\xc0\xaf\"", "t.toml:1:6: invalid UTF-8 byte 0xC0");
	fails("k = \"\xe0\x80\xaf\"", "t.toml:1:6: invalid UTF-8 sequence");
	invalid("k = \"\xed\xa0\x80\"");
	invalid("k = \"\xf4\x90\x80\x80\"");
	invalid("k = \"\xf8\x88\x80\x80\x80\"");
	invalid("k = \"\xe2\x82\"");
	invalid("k = \"\x80\"");
	invalid("# \xff comment");
	invalid("k = 1 # \xe2\x28\xa1");
	/* The truncated sequence at the very end must not be read past. */
	invalid("k = 1 # \xf0\x9f");
	/* A byte order mark is skipped. */
	STR("\xef\xbb\xbfk = 'bom'", "bom");
	invalid("k = 1\n\xef\xbb\xbfj = 2");
}

Test(toml, integers)
{
	expect_int("k = 0", 0);
	expect_int("k = +99", 99);
	expect_int("k = -17", -17);
	expect_int("k = -0", 0);
	expect_int("k = +0", 0);
	expect_int("k = 1_000", 1000);
	expect_int("k = 5_349_221", 5349221);
	expect_int("k = 1_2_3_4_5", 12345);
	expect_int("k = 0xDEADBEEF", 0xDEADBEEF);
	expect_int("k = 0xdead_beef", 0xDEADBEEF);
	expect_int("k = 0x00ff", 255);
	expect_int("k = 0o755", 0755);
	expect_int("k = 0o01234567", 01234567);
	expect_int("k = 0b11010110", 214);
	expect_int("k = 0b1_0", 2);
	expect_int("k = 9223372036854775807", INT64_MAX);
	expect_int("k = -9223372036854775808", INT64_MIN);
	expect_int("k = 0x7fffffffffffffff", INT64_MAX);
	expect_int("k = 0o777777777777777777777", INT64_MAX);
}

Test(toml, integer_errors)
{
	fails("k = 01", "t.toml:1:5: leading zeros are not allowed");
	fails("k = +01", "t.toml:1:5: leading zeros are not allowed");
	invalid("k = -01");
	invalid("k = 00");
	invalid("k = 0_0");
	fails("k = 1__2", "t.toml:1:5: '_' must sit between two digits");
	invalid("k = 1_");
	invalid("k = _1");
	invalid("k = +_1");
	fails("k = 9223372036854775808", "t.toml:1:5: integer out of range");
	invalid("k = -9223372036854775809");
	invalid("k = 99999999999999999999999");
	invalid("k = 0x8000000000000000");
	invalid("k = 0xffffffffffffffff");
	invalid("k = +0xff");
	invalid("k = -0xff");
	invalid("k = 0XFF");
	invalid("k = 0x");
	invalid("k = 0x_1");
	invalid("k = 0x1_");
	invalid("k = 0xg");
	invalid("k = 0o8");
	invalid("k = 0b2");
	invalid("k = 0b");
	invalid("k = 1x");
	invalid("k = 12a");
	invalid("k = +");
	invalid("k = -");
	invalid("k = 1 2");
	invalid("k = 1-2");
}

Test(toml, floats)
{
	expect_float("k = +1.0", 1.0);
	expect_float("k = 3.1415", 3.1415);
	expect_float("k = -0.01", -0.01);
	expect_float("k = 5e+22", 5e22);
	expect_float("k = 1e06", 1e6);
	expect_float("k = -2E-2", -2e-2);
	expect_float("k = 6.626e-34", 6.626e-34);
	expect_float("k = 224_617.445_991_228", 224617.445991228);
	expect_float("k = 1_0e1_0", 10e10);
	expect_float("k = 0.0", 0.0);
	expect_float("k = -0.0", -0.0);
	expect_float("k = +0.0", 0.0);
	expect_float("k = 0e0", 0.0);
	expect_float("k = 0.1e-1", 0.01);
	expect_float("k = 1e-400", 0.0);
	expect_float("k = inf", INFINITY);
	expect_float("k = +inf", INFINITY);
	expect_float("k = -inf", -INFINITY);
	expect_float("k = nan", NAN);
	expect_float("k = +nan", NAN);
	expect_float("k = -nan", NAN);
	expect_float("k = 1.7976931348623157e308", 1.7976931348623157e308);
}

Test(toml, float_errors)
{
	invalid("k = 1.");
	invalid("k = .1");
	invalid("k = 1e");
	invalid("k = 1e+");
	invalid("k = 1.e5");
	invalid("k = 3.e+20");
	fails("k = 03.14", "t.toml:1:5: leading zeros are not allowed");
	invalid("k = -03.14");
	invalid("k = 00.1");
	invalid("k = 1_.5");
	invalid("k = 1._5");
	invalid("k = 1.5_");
	invalid("k = 1e_5");
	invalid("k = 1e5_");
	invalid("k = 1.2.3");
	invalid("k = 1e2e3");
	invalid("k = 1e2.5");
	fails("k = 1e999", "t.toml:1:5: float out of range");
	invalid("k = -1e999");
	invalid("k = Inf");
	invalid("k = NaN");
	invalid("k = infinity");
	invalid("k = nan1");
	invalid("k = ++1.0");
}

Test(toml, booleans)
{
	struct toml_value *root = ok("t = true\nf = false");

	cr_assert_eq(toml_type(toml_table_get(root, "t")), TOML_BOOLEAN);
	cr_assert(toml_boolean(toml_table_get(root, "t")));
	cr_assert_not(toml_boolean(toml_table_get(root, "f")));
	toml_free(root);
	invalid("k = True");
	invalid("k = FALSE");
	invalid("k = truer");
	invalid("k = t");
	invalid("k = yes");
}

Test(toml, datetimes)
{
	struct toml_value *root;
	const struct toml_datetime *dt;
	const struct toml_value *v;

	expect_dt("k = 1979-05-27T07:32:00Z", TOML_DATETIME, "1979-05-27T07:32:00Z");
	expect_dt("k = 1979-05-27T00:32:00-07:00", TOML_DATETIME, "1979-05-27T00:32:00-07:00");
	expect_dt("k = 1979-05-27T00:32:00.999999-07:00", TOML_DATETIME,
		  "1979-05-27T00:32:00.999999-07:00");
	expect_dt("k = 1979-05-27 07:32:00Z", TOML_DATETIME, "1979-05-27T07:32:00Z");
	expect_dt("k = 1979-05-27t07:32:00z", TOML_DATETIME, "1979-05-27T07:32:00Z");
	expect_dt("k = 1979-05-27T07:32:00+05:30", TOML_DATETIME, "1979-05-27T07:32:00+05:30");
	expect_dt("k = 1979-05-27T07:32:00-00:00", TOML_DATETIME, "1979-05-27T07:32:00-00:00");
	expect_dt("k = 1979-05-27T07:32:00+00:00", TOML_DATETIME, "1979-05-27T07:32:00Z");
	expect_dt("k = 1979-05-27T07:32:00", TOML_DATETIME_LOCAL, "1979-05-27T07:32:00");
	expect_dt("k = 1979-05-27 07:32:00.5", TOML_DATETIME_LOCAL, "1979-05-27T07:32:00.5");
	expect_dt("k = 1979-05-27", TOML_DATE_LOCAL, "1979-05-27");
	expect_dt("k = 1979-05-27 # a date, then a comment", TOML_DATE_LOCAL, "1979-05-27");
	expect_dt("k = 07:32:00", TOML_TIME_LOCAL, "07:32:00");
	expect_dt("k = 00:32:00.999999", TOML_TIME_LOCAL, "00:32:00.999999");
	/* Nanoseconds are kept, further digits truncated (not rounded). */
	expect_dt("k = 00:00:00.1234567899999", TOML_TIME_LOCAL, "00:00:00.123456789");
	expect_dt("k = 00:00:00.000000001", TOML_TIME_LOCAL, "00:00:00.000000001");
	expect_dt("k = 2000-02-29", TOML_DATE_LOCAL, "2000-02-29");
	expect_dt("k = 2024-02-29", TOML_DATE_LOCAL, "2024-02-29");
	expect_dt("k = 0001-01-01", TOML_DATE_LOCAL, "0001-01-01");
	expect_dt("k = 9999-12-31T23:59:59.999999999+23:59", TOML_DATETIME,
		  "9999-12-31T23:59:59.999999999+23:59");
	/* Second 60: RFC 3339 leap second. */
	expect_dt("k = 1990-12-31T23:59:60Z", TOML_DATETIME, "1990-12-31T23:59:60Z");

	v = value_of("k = 1979-05-27T00:32:00.25-07:30", &root);
	dt = toml_datetime(v);
	cr_assert_eq(dt->year, 1979);
	cr_assert_eq(dt->month, 5);
	cr_assert_eq(dt->day, 27);
	cr_assert_eq(dt->hour, 0);
	cr_assert_eq(dt->minute, 32);
	cr_assert_eq(dt->second, 0);
	cr_assert_eq(dt->nanosecond, 250000000u);
	cr_assert_eq(dt->offset_minutes, -450);
	cr_assert_not(dt->offset_unknown);
	toml_free(root);
	v = value_of("k = 1979-05-27T00:32:00-00:00", &root);
	cr_assert(toml_datetime(v)->offset_unknown);
	cr_assert_eq(toml_datetime(v)->offset_minutes, 0);
	toml_free(root);
}

Test(toml, datetime_errors)
{
	fails("k = 2006-13-01", "t.toml:1:5: date out of range");
	invalid("k = 2006-00-01");
	invalid("k = 2006-01-00");
	invalid("k = 2006-01-32");
	invalid("k = 2006-04-31");
	invalid("k = 2001-02-29");
	invalid("k = 1900-02-29");
	invalid("k = 0000-01-01");
	fails("k = 2006-01-01T24:00:00Z", "t.toml:1:5: time out of range");
	invalid("k = 2006-01-01T00:60:00Z");
	invalid("k = 2006-01-01T00:00:61Z");
	invalid("k = 24:00:00");
	invalid("k = 1987-07-05T17:45Z");
	invalid("k = 1987-07-05T17:45");
	invalid("k = 17:45");
	invalid("k = 1987-07-5");
	invalid("k = 1987-7-05");
	invalid("k = 87-07-05");
	invalid("k = 1987-07-05T7:45:00");
	invalid("k = 1987-07-05T17:45:00.");
	invalid("k = 1987-07-05T17:45:00.Z");
	invalid("k = 1987-07-05T17:45:00+24:00");
	invalid("k = 1987-07-05T17:45:00+05:60");
	invalid("k = 1987-07-05T17:45:00+05");
	invalid("k = 1987-07-05T17:45:00+0500");
	invalid("k = 1987-07-05T17:45:00ZZ");
	invalid("k = 1987-07-05x17:45:00");
	invalid("k = 1987-07-05T");
	invalid("k = 1987-07-05  17:45:00");
	invalid("k = 17:45:00Z");
	invalid("k = 17:45:00+01:00");
	invalid("k = 1987-07-05_");
}

Test(toml, arrays)
{
	struct toml_value *root = ok("a = [ 1, 2, 3 ]\n"
				     "mixed = [ 1, 'two', 3.0, [4], { five = 5 }, 1979-05-27 ]\n"
				     "multi = [\n  1, # one\n  # alone\n  2,\n]\n"
				     "empty = []\n"
				     "blank = [ # c\n\n ]\n"
				     "nested = [[1, 2], [\"a\", [\"b\"]]]\n"
				     "trailing = [1,]\n"
				     "crlf = [\r\n1,\r\n2\r\n]\n");
	const struct toml_value *a = toml_table_get(root, "a"), *m = toml_table_get(root, "mixed");

	cr_assert_eq(toml_type(a), TOML_ARRAY);
	cr_assert_eq(toml_array_count(a), 3);
	cr_assert_eq(toml_integer(toml_array_get(a, 2)), 3);
	cr_assert_eq(toml_array_count(m), 6);
	cr_assert_eq(toml_type(toml_array_get(m, 0)), TOML_INTEGER);
	cr_assert_eq(toml_type(toml_array_get(m, 1)), TOML_STRING);
	cr_assert_eq(toml_type(toml_array_get(m, 2)), TOML_FLOAT);
	cr_assert_eq(toml_type(toml_array_get(m, 3)), TOML_ARRAY);
	cr_assert_eq(toml_type(toml_array_get(m, 4)), TOML_TABLE);
	cr_assert_eq(toml_type(toml_array_get(m, 5)), TOML_DATE_LOCAL);
	cr_assert_eq(toml_integer(toml_table_get(toml_array_get(m, 4), "five")), 5);
	cr_assert_eq(toml_array_count(toml_table_get(root, "multi")), 2);
	cr_assert_eq(toml_array_count(toml_table_get(root, "empty")), 0);
	cr_assert_eq(toml_array_count(toml_table_get(root, "blank")), 0);
	cr_assert_eq(toml_array_count(toml_table_get(root, "trailing")), 1);
	cr_assert_eq(toml_array_count(toml_table_get(root, "crlf")), 2);
	a = toml_array_get(toml_array_get(toml_table_get(root, "nested"), 1), 1);
	cr_assert_str_eq(toml_string(toml_array_get(a, 0), NULL), "b");
	toml_free(root);

	fails("k = [1 2]", "t.toml:1:8: expected ',' or ']' in array, found '2'");
	fails("k = [,1]", "t.toml:1:6: expected a value, found ','");
	invalid("k = [1,,2]");
	invalid("k = [,]");
	fails("k = [1, 2", "t.toml:1:10: expected ',' or ']' in array, found end of file");
	invalid("k = [1, 2\nj = 3");
	invalid("k = [1 # comment ]");
	invalid("k = [1]]");
	invalid("k = [\x01]");
}

Test(toml, inline_tables)
{
	struct toml_value *root = ok("name = { first = \"Tom\", last = \"Preston-Werner\" }\n"
				     "animal = { type.name = \"pug\", type.age = 3 }\n"
				     "empty = {}\n"
				     "spaced = {   }\n"
				     "nested = { a = { b = [ { c = 1 } ] } }\n");
	const struct toml_value *n = toml_table_get(root, "name"), *t;

	cr_assert_eq(toml_type(n), TOML_TABLE);
	cr_assert_eq(toml_table_count(n), 2);
	cr_assert_str_eq(toml_table_key(n, 0), "first");
	cr_assert_str_eq(toml_string(toml_table_value(n, 1), NULL), "Preston-Werner");
	t = toml_table_get(toml_table_get(root, "animal"), "type");
	cr_assert_str_eq(toml_string(toml_table_get(t, "name"), NULL), "pug");
	cr_assert_eq(toml_integer(toml_table_get(t, "age")), 3);
	cr_assert_eq(toml_table_count(toml_table_get(root, "empty")), 0);
	cr_assert_eq(toml_table_count(toml_table_get(root, "spaced")), 0);
	toml_free(root);

	fails("k = { a = 1,\n b = 2 }", "t.toml:1:13: expected a key, found end of line");
	fails("k = {\n}", "t.toml:1:6: expected a key, found end of line");
	fails("k = { a = 1, }", "t.toml:1:14: trailing comma in inline table");
	fails("k = { a = 1 b = 2 }", "t.toml:1:13: expected ',' or '}' in inline table, found 'b'");
	fails("k = { a = 1, a = 2 }", "t.toml:1:14: duplicate key 'a'");
	invalid("k = { a = 1");
	invalid("k = { a = 1 # c\n}");
	invalid("k = { , }");
	invalid("k = { a.b = 1, a = 2 }");
	/* Inline tables are complete: no later key, dotted key or header may add to them. */
	fails("k = { b = { c = 1 }, b.d = 2 }", "t.toml:1:22: inline table 'b' cannot be extended");
	fails("[product]\ntype = { name = \"Nail\" }\ntype.edible = false",
	      "t.toml:3:1: inline table 'type' cannot be extended");
	fails("[product]\ntype = { name = \"Nail\" }\n[product.type.edible]",
	      "t.toml:3:10: inline table 'type' cannot be extended");
	fails("[product]\ntype = { name = \"Nail\" }\n[product.type]",
	      "t.toml:3:10: inline table 'type' cannot be extended");
	invalid("a = { b = 1 }\n[[a]]");
	invalid("a = { b = {} }\n[a.b]");
	invalid("a = [ { b = 1 } ]\n[a.c]");
}

Test(toml, keys)
{
	struct toml_value *root = ok("bare_key-1 = 1\n"
				     "1234 = 2\n"
				     "\"127.0.0.1\" = 3\n"
				     "\"\xca\x8e\xc7\x9d\xca\x9e\" = 4\n"
				     "'quoted \"value\"' = 5\n"
				     "\"\" = 6\n"
				     "true = 7\n"
				     "3.14 = 8\n"
				     "a . b\t.\"c.d\" . 'e' = 9\n"
				     "\"esc\\u0041\" = 10\n");
	const struct toml_value *t;

	cr_assert_eq(toml_integer(toml_table_get(root, "bare_key-1")), 1);
	cr_assert_eq(toml_integer(toml_table_get(root, "1234")), 2);
	cr_assert_eq(toml_integer(toml_table_get(root, "127.0.0.1")), 3);
	cr_assert_eq(toml_integer(toml_table_get(root, "\xca\x8e\xc7\x9d\xca\x9e")), 4);
	cr_assert_eq(toml_integer(toml_table_get(root, "quoted \"value\"")), 5);
	cr_assert_eq(toml_integer(toml_table_get(root, "")), 6);
	cr_assert_eq(toml_integer(toml_table_get(root, "true")), 7);
	cr_assert_eq(toml_integer(toml_table_get(toml_table_get(root, "3"), "14")), 8);
	t = toml_table_get(toml_table_get(toml_table_get(root, "a"), "b"), "c.d");
	cr_assert_eq(toml_integer(toml_table_get(t, "e")), 9);
	cr_assert_eq(toml_integer(toml_table_get(root, "escA")), 10);
	cr_assert_null(toml_table_get(root, "missing"));
	toml_free(root);

	root = ok("\"a\\u0000b\" = 1");
	cr_assert_eq(toml_table_key_len(root, 0), 3);
	cr_assert(memcmp(toml_table_key(root, 0), "a\0b", 3) == 0);
	toml_free(root);

	fails("= 1", "t.toml:1:1: expected a key, found '='");
	fails("a = 1\nb", "t.toml:2:2: expected '=' after a key, found end of file");
	fails("a\n= 1", "t.toml:1:2: expected '=' after a key, found end of line");
	fails("a..b = 1", "t.toml:1:3: expected a key, found '.'");
	invalid("a. = 1");
	invalid(".a = 1");
	invalid("a b = 1");
	fails("\"\"\"k\"\"\" = 1", "t.toml:1:1: a key cannot be a multi-line string");
	invalid("'''k''' = 1");
	invalid("k\xc3\xa9 = 1");
	invalid("\"k = 1");
	invalid("a = 1 b = 2");
	invalid("a = ");
	fails("a =\nb = 1", "t.toml:1:4: expected a value, found end of line");
	fails("name = \"Tom\"\nname = \"Pradyun\"", "t.toml:2:1: duplicate key 'name'");
	fails("spelling = 1\n\"spelling\" = 2", "t.toml:2:1: duplicate key 'spelling'");
	fails("a.b = 1\na.b = 2", "t.toml:2:3: duplicate key 'b'");
	fails("a.b = 1\na = 2", "t.toml:2:1: duplicate key 'a'");
	fails("a = 1\na.b = 2", "t.toml:2:1: key 'a' is not a table");
	fails("a = [1]\na.b = 2", "t.toml:2:1: key 'a' is not a table");
	/* Keys in messages are printable and bounded. */
	fails("\"a\\u0001\\u007fb\" = 1\n\"a\\u0001\\u007fb\" = 2",
	      "t.toml:2:1: duplicate key 'a??b'");
	fails("\"\xe2\x82\xac\" = 1\n\"\xe2\x82\xac\" = 2",
	      "t.toml:2:1: duplicate key '\xe2\x82\xac'");
	{
		char text[300], want[128];

		memset(text, 'a', 100);
		memcpy(text + 100, " = 1\n", 5);
		memset(text + 105, 'a', 100);
		strcpy(text + 205, " = 2");
		strcpy(want, "t.toml:2:1: duplicate key '");
		memset(want + strlen(want), 'a', 76);
		strcpy(want + 27 + 76, "...'");
		fails(text, want);
		cr_assert_eq(strlen(err), strlen(want));
	}
	invalid("fruit.apple.smooth = true\nfruit.apple = 1");
}

Test(toml, comments_and_whitespace)
{
	struct toml_value *root = ok("# full line\n"
				     "\t a \t= \t1 \t# trailing\n"
				     "\n\n   \n"
				     "b = \"# not a comment\"\n"
				     "# tab\tand unicode \xe2\x82\xac in comment\n"
				     "[t] # after header\n"
				     "c = 2 #\n"
				     "#");

	cr_assert_eq(toml_integer(toml_table_get(root, "a")), 1);
	cr_assert_str_eq(toml_string(toml_table_get(root, "b"), NULL), "# not a comment");
	cr_assert_eq(toml_integer(toml_table_get(toml_table_get(root, "t"), "c")), 2);
	toml_free(root);

	root = ok("a = 1\r\n# c\r\n[t]\r\nb = 2\r\n");
	cr_assert_eq(toml_integer(toml_table_get(toml_table_get(root, "t"), "b")), 2);
	toml_free(root);
	root = ok("");
	cr_assert_eq(toml_table_count(root), 0);
	toml_free(root);
	root = ok("\n\n# only comments\n");
	cr_assert_eq(toml_table_count(root), 0);
	toml_free(root);

	fails("# bell \x07", "t.toml:1:8: control character U+0007 in comment");
	invalid("# del \x7f");
	cr_assert_null(toml_parse("# nul \0 after", 14, "t.toml", err, sizeof(err)));
	cr_assert_str_eq(err, "t.toml:1:7: control character U+0000 in comment");
	fails("a = 1\rb = 2", "t.toml:1:6: expected end of line, found control character U+000D");
	invalid("a = 1 # c\rb = 2");
	invalid("\r");
	invalid("a = 1\n\x01");
	fails("a = 1 x", "t.toml:1:7: expected end of line, found 'x'");
}

Test(toml, tables)
{
	struct toml_value *root = ok("top = 0\n"
				     "[table-1]\nkey1 = \"some string\"\nkey2 = 123\n"
				     "[dog.\"tater.man\"]\ntype.name = \"pug\"\n"
				     "[ j . \"\xca\x9e\" . 'l' ]\n"
				     "[x.y.z.w]\n[x]\nx = 1\n"
				     "[fruit]\napple.color = \"red\"\napple.taste.sweet = true\n"
				     "[fruit.apple.texture]\nsmooth = true\n"
				     "[a.b.c]\nz = 1\n[a]\nb.d = 2\n"
				     "[empty]\n");
	const struct toml_value *t;

	cr_assert_eq(toml_integer(toml_table_get(root, "top")), 0);
	cr_assert_eq(toml_integer(toml_table_get(toml_table_get(root, "table-1"), "key2")), 123);
	t = toml_table_get(toml_table_get(root, "dog"), "tater.man");
	cr_assert_str_eq(toml_string(toml_table_get(toml_table_get(t, "type"), "name"), NULL),
			 "pug");
	t = toml_table_get(toml_table_get(root, "j"), "\xca\x9e");
	cr_assert_eq(toml_type(toml_table_get(t, "l")), TOML_TABLE);
	t = toml_table_get(root, "x");
	cr_assert_eq(toml_table_count(t), 2);
	cr_assert_eq(toml_integer(toml_table_get(t, "x")), 1);
	t = toml_table_get(toml_table_get(root, "fruit"), "apple");
	cr_assert(toml_boolean(toml_table_get(toml_table_get(t, "texture"), "smooth")));
	cr_assert(toml_boolean(toml_table_get(toml_table_get(t, "taste"), "sweet")));
	t = toml_table_get(toml_table_get(root, "a"), "b");
	cr_assert_eq(toml_integer(toml_table_get(t, "d")), 2);
	cr_assert_eq(toml_integer(toml_table_get(toml_table_get(t, "c"), "z")), 1);
	cr_assert_eq(toml_table_count(toml_table_get(root, "empty")), 0);
	toml_free(root);

	fails("[fruit]\napple = \"red\"\n[fruit]\norange = 1",
	      "t.toml:3:2: table 'fruit' defined twice");
	fails("[a]\n[a]", "t.toml:2:2: table 'a' defined twice");
	fails("[fruit]\napple = \"red\"\n[fruit.apple]",
	      "t.toml:3:8: key 'apple' already has a value");
	fails("[fruit]\napple.color = \"red\"\n[fruit.apple]",
	      "t.toml:3:8: table 'apple' was already defined by dotted keys");
	fails("[fruit]\napple.taste.sweet = true\n[fruit.apple.taste]",
	      "t.toml:3:14: table 'taste' was already defined by dotted keys");
	fails("a.b = 1\n[a]", "t.toml:2:2: table 'a' was already defined by dotted keys");
	invalid("[a.b]\n[a]\n[a]");
	invalid("[a]\nb = 1\n[a.b]");
	invalid("[a.b]\n[a.b]");
	invalid("[a]\nb.c = 1\n[a.b]");
	fails("[a.b.c]\nz = 9\n[a]\nb.c.t = 1",
	      "t.toml:4:3: dotted keys cannot extend [header] table 'c'");
	invalid("[a.b.c.d]\nz = 9\n[a]\nb.c.d.k.t = 1");
	invalid("[a]\nb.c = 1\n[a.b.c]\n[x]\n[a]");
	/* Dotted tables of one section cannot be reopened by another. */
	invalid("[a.b.c]\n[a]\nb.d = 1\n[a.b]");
	fails("[]", "t.toml:1:2: expected a key, found ']'");
	invalid("[a.]");
	invalid("[.a]");
	invalid("[a..b]");
	fails("[a", "t.toml:1:3: expected ']' after the table name, found end of file");
	invalid("[a\nb = 1");
	fails("[a] b = 1", "t.toml:1:5: expected end of line, found 'b'");
	invalid("[a]]");
	invalid("[\"\"\"a\"\"\"]");
	invalid("[a = 1]");
}

Test(toml, arrays_of_tables)
{
	struct toml_value *root = ok("[[products]]\nname = \"Hammer\"\n"
				     "[[products]]\n"
				     "[[products]]\nname = \"Nail\"\n"
				     "[[fruits]]\nname = \"apple\"\n"
				     "[fruits.physical]\ncolor = \"red\"\n"
				     "[[fruits.varieties]]\nname = \"red delicious\"\n"
				     "[[fruits.varieties]]\nname = \"granny smith\"\n"
				     "[[fruits]]\nname = \"banana\"\n"
				     "[[fruits.varieties]]\nname = \"plantain\"\n"
				     "[fruits.physical]\ncolor = \"yellow\"\n"
				     "[[ spaced . aot ]]\n");
	const struct toml_value *p = toml_table_get(root, "products"), *f, *v;

	cr_assert_eq(toml_type(p), TOML_ARRAY);
	cr_assert_eq(toml_array_count(p), 3);
	cr_assert_eq(toml_table_count(toml_array_get(p, 1)), 0);
	cr_assert_str_eq(toml_string(toml_table_get(toml_array_get(p, 2), "name"), NULL), "Nail");
	f = toml_table_get(root, "fruits");
	cr_assert_eq(toml_array_count(f), 2);
	v = toml_table_get(toml_array_get(f, 0), "varieties");
	cr_assert_eq(toml_array_count(v), 2);
	cr_assert_str_eq(toml_string(toml_table_get(toml_array_get(v, 1), "name"), NULL),
			 "granny smith");
	v = toml_table_get(toml_array_get(f, 1), "varieties");
	cr_assert_eq(toml_array_count(v), 1);
	v = toml_table_get(toml_array_get(f, 1), "physical");
	cr_assert_str_eq(toml_string(toml_table_get(v, "color"), NULL), "yellow");
	cr_assert_eq(toml_array_count(toml_table_get(toml_table_get(root, "spaced"), "aot")), 1);
	toml_free(root);

	fails("fruits = []\n[[fruits]]", "t.toml:2:3: 'fruits' is a static array");
	fails("fruits = [{}]\n[fruits.x]", "t.toml:2:2: 'fruits' is a static array");
	fails("[a]\n[[a]]", "t.toml:2:3: 'a' is a table, not an array of tables");
	fails("[[a]]\n[a]", "t.toml:2:2: 'a' is an array of tables");
	fails("a = 1\n[[a]]", "t.toml:2:3: key 'a' already has a value");
	invalid("a = 1\n[a.b]");
	invalid("[[fruits]]\n[[fruits.varieties]]\n[fruits.varieties]");
	invalid("[[fruits]]\n[fruits.physical]\n[[fruits.physical]]");
	invalid("[[a]\n");
	invalid("[[a] ]");
	invalid("[ [a]]");
	invalid("[[a]]]");
	invalid("[[]]");
}

Test(toml, error_positions)
{
	/* Columns count characters, not bytes: the euro sign is one column. */
	fails("k = \"\xe2\x82\xac\\q\"", "t.toml:1:7: invalid escape");
	fails("\xe2\x82\xac = 1", "t.toml:1:1: expected a key, found '\xe2\x82\xac'");
	fails("a = 1\nb = 2\nc = [\n  1,\n  2 3]",
	      "t.toml:5:5: expected ',' or ']' in array, found '3'");
	fails("a = 1\n\tb = 01", "t.toml:2:6: leading zeros");
	fails("a = 1\r\nb = @", "t.toml:2:5: expected a value, found '@'");
	fails("x = \"\"\"\nline\nline \\q\"\"\"", "t.toml:3:6: invalid escape");
	fails("[a]\n[b]\n[ a ]", "t.toml:3:3: table 'a' defined twice");
	fails("a = 1\nb = 2\na = 3", "t.toml:3:1: duplicate key 'a'");
	fails("k = 1979-02-30", "t.toml:1:5: date out of range");
	fails("k = [[[\n1]]\n", "t.toml:3:1: expected ',' or ']' in array, found end of file");
}

Test(toml, error_buffer_bounds)
{
	char small[12];
	struct toml_value *root;

	memset(small, 'x', sizeof(small));
	root = toml_parse("a = 01", 6, "a-very-long-file-name.toml", small, sizeof(small));
	cr_assert_null(root);
	cr_assert_eq(strlen(small), sizeof(small) - 1);
	cr_assert(strncmp(small, "a-very-long", 11) == 0);
	/* errlen 0: the buffer is never touched. */
	memset(small, 'x', sizeof(small));
	root = toml_parse("a = 01", 6, "f", small, 0);
	cr_assert_null(root);
	cr_assert_eq(small[0], 'x');
	/* Not NUL-terminated input: the parser must stop at len. */
	root = toml_parse("a = 12345", 6, "f", err, sizeof(err));
	cr_assert_not_null(root);
	cr_assert_eq(toml_integer(toml_table_get(root, "a")), 12);
	toml_free(root);
	root = toml_parse("a = \"abc\"", 7, "f", err, sizeof(err));
	cr_assert_null(root);
	cr_assert_str_eq(err, "f:1:5: unterminated string");
	root = toml_parse(NULL, 0, NULL, err, sizeof(err));
	cr_assert_not_null(root);
	cr_assert_eq(toml_table_count(root), 0);
	toml_free(root);
}

Test(toml, positions_of_values_and_keys)
{
	struct toml_value *root = ok("a = 1\n"
				     "  b   =   \"x\"\n"
				     "[t]\n"
				     "\"\xe2\x82\xac\" = [ 1,\n   2 ]\n"
				     "d.e = { f = 3 }\n"
				     "[[arr]]\n"
				     "[[arr]]\n"
				     "g = 1979-05-27\n");
	const struct toml_value *t, *arr, *v;

	cr_assert_eq(toml_line(root), 1);
	cr_assert_eq(toml_col(root), 1);
	cr_assert_eq(toml_line(toml_table_get(root, "a")), 1);
	cr_assert_eq(toml_col(toml_table_get(root, "a")), 5);
	cr_assert_eq(toml_line(toml_table_get(root, "b")), 2);
	cr_assert_eq(toml_col(toml_table_get(root, "b")), 11);
	cr_assert_eq(toml_table_key_line(root, 1), 2);
	cr_assert_eq(toml_table_key_col(root, 1), 3);

	t = toml_table_get(root, "t");
	cr_assert_eq(toml_line(t), 3);
	cr_assert_eq(toml_col(t), 1);
	cr_assert_eq(toml_table_key_line(root, 2), 3);
	cr_assert_eq(toml_table_key_col(root, 2), 2);
	/* Bare keys are ASCII only, so the euro key is written quoted. */
	v = toml_table_get(t, "\xe2\x82\xac");
	cr_assert_not_null(v);
	cr_assert_eq(toml_line(v), 4);
	cr_assert_eq(toml_col(v), 7);
	cr_assert_eq(toml_line(toml_array_get(v, 1)), 5);
	cr_assert_eq(toml_col(toml_array_get(v, 1)), 4);
	v = toml_table_get(t, "d");
	cr_assert_eq(toml_line(v), 6);
	cr_assert_eq(toml_col(v), 1);
	v = toml_table_get(v, "e");
	cr_assert_eq(toml_col(v), 7);
	cr_assert_eq(toml_col(toml_table_get(v, "f")), 13);

	arr = toml_table_get(root, "arr");
	cr_assert_eq(toml_line(arr), 7);
	cr_assert_eq(toml_col(arr), 3);
	cr_assert_eq(toml_line(toml_array_get(arr, 0)), 7);
	cr_assert_eq(toml_col(toml_array_get(arr, 0)), 1);
	cr_assert_eq(toml_line(toml_array_get(arr, 1)), 8);
	v = toml_table_get(toml_array_get(arr, 1), "g");
	cr_assert_eq(toml_line(v), 9);
	cr_assert_eq(toml_table_key_line(toml_array_get(arr, 1), 0), 9);
	toml_free(root);
}

Test(toml, euro_key_is_not_bare)
{
	invalid("[t]\n\xe2\x82\xac = 1");
}

Test(toml, implicit_table_takes_header_position)
{
	struct toml_value *root = ok("[a.b]\nx = 1\n\n[a]\ny = 2\n");
	const struct toml_value *a = toml_table_get(root, "a");

	cr_assert_eq(toml_line(a), 4);
	cr_assert_eq(toml_table_key_line(root, 0), 1);
	cr_assert_str_eq(toml_table_key(a, 0), "b");
	cr_assert_str_eq(toml_table_key(a, 1), "y");
	toml_free(root);
}

Test(toml, document_order)
{
	struct toml_value *root = ok("zeta = 1\nalpha = 2\nmid.z = 3\nmid.a = 4\nbeta = 5\n"
				     "[zz]\n[aa]\n[mm]\nc = 1\nb = 2\na = 3\n");
	static const char *const top[] = {"zeta", "alpha", "mid", "beta", "zz", "aa", "mm"};
	const struct toml_value *mm;
	size_t i;

	cr_assert_eq(toml_table_count(root), 7);
	for (i = 0; i < 7; i++)
		cr_assert_str_eq(toml_table_key(root, i), top[i]);
	cr_assert_str_eq(toml_table_key(toml_table_get(root, "mid"), 0), "z");
	cr_assert_str_eq(toml_table_key(toml_table_get(root, "mid"), 1), "a");
	mm = toml_table_get(root, "mm");
	cr_assert_str_eq(toml_table_key(mm, 0), "c");
	cr_assert_str_eq(toml_table_key(mm, 2), "a");
	cr_assert_eq(toml_integer(toml_table_value(mm, 2)), 3);
	toml_free(root);
}

Test(toml, many_keys_use_the_index)
{
	char *text = malloc(20 * 2000 + 32), *p = text;
	struct toml_value *root;
	char key[16];
	int i;

	for (i = 0; i < 2000; i++)
		p += sprintf(p, "k%d = %d\n", i, i);
	strcpy(p, "k1999 = 0\n");
	root = parse(text);
	cr_assert_null(root);
	cr_assert_str_eq(err, "t.toml:2001:1: duplicate key 'k1999'");
	*p = '\0';
	root = ok(text);
	cr_assert_eq(toml_table_count(root), 2000);
	for (i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(toml_integer(toml_table_get(root, key)), i);
		cr_assert_str_eq(toml_table_key(root, (size_t)i), key);
	}
	cr_assert_null(toml_table_get(root, "k2000"));
	toml_free(root);
	free(text);
}

/* Text of n nested arrays around a 1, or n nested inline tables. */
static char *nest(int n, bool tables)
{
	char *text = malloc((size_t)n * 8 + 16), *p = text;
	int i;

	p += sprintf(p, "k = ");
	for (i = 0; i < n; i++)
		p += sprintf(p, tables ? "{ a = " : "[");
	*p++ = '1';
	for (i = 0; i < n; i++)
		*p++ = tables ? '}' : ']';
	*p = '\0';
	return text;
}

Test(toml, depth_bound)
{
	struct toml_value *root;
	char *text, *p;
	int i;

	/* k sits at depth 1, so 63 more levels reach the limit of 64 and 64 exceed it. */
	text = nest(63, false);
	root = ok(text);
	toml_free(root);
	free(text);
	text = nest(64, false);
	fails(text, "t.toml:1:69: values nested deeper than 64 levels");
	free(text);
	text = nest(62, true);
	root = ok(text);
	toml_free(root);
	free(text);
	text = nest(64, true);
	invalid(text);
	free(text);
	text = nest(100000, false);
	invalid(text);
	free(text);

	text = malloc(8192);
	for (p = text, i = 0; i < 64; i++)
		p += sprintf(p, "%sa", i ? "." : "[");
	strcpy(p, "]");
	root = ok(text);
	toml_free(root);
	for (p = text, i = 0; i < 65; i++)
		p += sprintf(p, "%sa", i ? "." : "[");
	strcpy(p, "]");
	fails(text, "t.toml:1:130: key has more than 64 parts");
	for (p = text, i = 0; i < 40; i++)
		p += sprintf(p, "%sa", i ? "." : "");
	strcpy(p, " = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
	invalid(text);
	/* Arrays of tables add a level per array: 40 nested [[...]] headers go too deep. */
	for (p = text, i = 0; i < 40; i++)
		p += sprintf(p, "%s[[%.*s]]", i ? "\n" : "", 2 * i + 1,
			     "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a."
			     "a.a.a.a.a.a");
	cr_assert_null(parse(text));
	cr_assert(strstr(err, "nested deeper than 64 levels"), "%s", err);
	free(text);
}

Test(toml, type_names_and_format)
{
	struct toml_value *root = ok("d = 1979-05-27T07:32:00.5+01:00");
	char buf[64];

	cr_assert_str_eq(toml_type_name(TOML_TABLE), "table");
	cr_assert_str_eq(toml_type_name(TOML_ARRAY), "array");
	cr_assert_str_eq(toml_type_name(TOML_STRING), "string");
	cr_assert_str_eq(toml_type_name(TOML_INTEGER), "integer");
	cr_assert_str_eq(toml_type_name(TOML_FLOAT), "float");
	cr_assert_str_eq(toml_type_name(TOML_BOOLEAN), "boolean");
	cr_assert_str_eq(toml_type_name(TOML_DATE_LOCAL), "local date");
	cr_assert_str_eq(toml_type_name(TOML_DATETIME), "offset date-time");
	cr_assert_str_eq(toml_type_name(TOML_DATETIME_LOCAL), "local date-time");
	cr_assert_str_eq(toml_type_name(TOML_TIME_LOCAL), "local time");
	cr_assert_eq(toml_type(root), TOML_TABLE);
	cr_assert_eq(toml_datetime_format(toml_table_get(root, "d"), buf, 30), 27);
	cr_assert_str_eq(buf, "1979-05-27T07:32:00.5+01:00");
	cr_assert_eq(toml_datetime_format(toml_table_get(root, "d"), buf, 27), -EMSGSIZE);
	cr_assert_eq(toml_datetime_format(toml_table_get(root, "d"), buf, 28), 27);
	toml_free(root);
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

Test(toml, parse_file)
{
	char *dir = tu_tempdir(), path[512], want[600];
	struct toml_value *root;
	char *big;

	snprintf(path, sizeof(path), "%s/good.toml", dir);
	write_file(path, "[server]\nport = 4460\n", 21);
	root = toml_parse_file(path, err, sizeof(err));
	cr_assert_not_null(root, "%s", err);
	cr_assert_eq(toml_integer(toml_table_get(toml_table_get(root, "server"), "port")), 4460);
	toml_free(root);

	snprintf(path, sizeof(path), "%s/bad.toml", dir);
	write_file(path, "a = 1\nb = 01\n", 13);
	cr_assert_null(toml_parse_file(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s:2:5: leading zeros are not allowed", path);
	cr_assert_str_eq(err, want);

	snprintf(path, sizeof(path), "%s/missing.toml", dir);
	cr_assert_null(toml_parse_file(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: %s", path, strerror(ENOENT));
	cr_assert_str_eq(err, want);

	cr_assert_null(toml_parse_file(dir, err, sizeof(err)));
	cr_assert(strncmp(err, dir, strlen(dir)) == 0, "%s", err);

	/* Exactly 1 MiB is accepted, one byte more is refused. */
	big = malloc(1024 * 1024 + 1);
	memset(big, '\n', 1024 * 1024 + 1);
	memcpy(big, "a = 1", 5);
	snprintf(path, sizeof(path), "%s/limit.toml", dir);
	write_file(path, big, 1024 * 1024);
	root = toml_parse_file(path, err, sizeof(err));
	cr_assert_not_null(root, "%s", err);
	toml_free(root);
	snprintf(path, sizeof(path), "%s/big.toml", dir);
	write_file(path, big, 1024 * 1024 + 1);
	cr_assert_null(toml_parse_file(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: file larger than", path);
	cr_assert(strncmp(err, want, strlen(want)) == 0, "%s", err);
	free(big);

	tu_rmtree(dir);
	free(dir);
}

static const char *const seeds[] = {
	"# config\nname = \"pool\"\nport = 4460\n[tls]\ncert = 'a.pem'\nkey = \"k\\u00e9y\"\n"
	"[[upstream]]\nhost = \"a.example\"\nweight = 1.5\n[[upstream]]\nhost = 'b'\n",
	"a.b.c = [1, 2, [3, 4], { x = 1979-05-27T07:32:00Z, y = 07:32:00 }]\n"
	"s = \"\"\"\nmulti \\\n  line\"\"\"\nl = '''raw\n'''\n",
	"[x.y.z]\n[x]\nq = -0x1\nf = +1e-3\ni = inf\nn = -nan\nb = true\nd = 2000-02-29\n"
	"\"quoted key\" = { a.b = 1, c = [] }\n",
	"t = 1979-05-27 07:32:00.123456789+05:30\nu = 0b1010_1010\nv = 0o7_7\nw = 1_000.5e1_0\n"
	"arr = [\n  # comment\n  'x', # more\n  \"y\",\n]\n[[a.b]]\n[a.b.c]\nd = {}\n",
};

/* Mutations: byte edits biased to TOML's punctuation, plus splices from other seeds. */
static size_t mutate(struct tu_rng *r, char *buf, size_t len, size_t cap)
{
	static const char alphabet[] = "[]{}=.,\"'#\n\r\t _-+:0123456789xobeEZT\\u"
				       "\x00\x7f\xc3\xa9\xff";
	int edits = 1 + (int)tu_rng_below(r, 4), i;

	for (i = 0; i < edits; i++) {
		size_t pos = len ? tu_rng_below(r, (uint32_t)len) : 0;
		char c = alphabet[tu_rng_below(r, sizeof(alphabet) - 1)];

		switch (tu_rng_below(r, 5)) {
		case 0: /* insert */
			if (len < cap) {
				memmove(buf + pos + 1, buf + pos, len - pos);
				buf[pos] = c;
				len++;
			}
			break;
		case 1: /* delete */
			if (len) {
				memmove(buf + pos, buf + pos + 1, len - pos - 1);
				len--;
			}
			break;
		case 2: /* replace */
			if (len)
				buf[pos] = c;
			break;
		case 3: /* truncate */
			len = pos;
			break;
		default: { /* duplicate a slice in place */
			size_t n = tu_rng_below(r, 24);

			if (pos + n <= len && len + n <= cap) {
				memmove(buf + pos + n, buf + pos, len - pos);
				len += n;
			}
			break;
		}
		}
	}
	return len;
}

Test(toml, randomised_mutations)
{
	struct tu_rng r;
	char buf[1024];
	int i, good = 0, bad = 0;

	tu_rng_seed(&r, 0x746f6d6c);
	for (i = 0; i < 20000; i++) {
		const char *seed = seeds[tu_rng_below(&r, sizeof(seeds) / sizeof(seeds[0]))];
		size_t len = strlen(seed);
		struct toml_value *root;
		char *copy;

		memcpy(buf, seed, len);
		len = mutate(&r, buf, len, sizeof(buf));
		/* An exact-size heap copy lets ASan catch any read past the end. */
		copy = malloc(len ? len : 1);
		memcpy(copy, buf, len);
		root = toml_parse(copy, len, "fuzz.toml", err, sizeof(err));
		if (root) {
			good++;
		} else {
			bad++;
			cr_assert(strncmp(err, "fuzz.toml:", 10) == 0, "error: %s", err);
			cr_assert(strlen(err) > 14);
		}
		toml_free(root);
		free(copy);
	}
	/* Both outcomes must occur, or the mutations test nothing. */
	cr_assert_gt(good, 100);
	cr_assert_gt(bad, 100);
}
