#include "toml_num.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Characters that can make up an unquoted value (number, boolean, date-time). */
static bool is_token(int c)
{
	return toml_scan_bare_char(c) || c == '+' || c == '.' || c == ':';
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Reads a run of digits of the given base with single underscores between digits, advancing *i.
 * 0 on success, -1 when there is no digit at *i, -2 for a misplaced underscore. */
static int digits(const char *t, size_t n, size_t *i, int base)
{
	size_t p = *i;

	if (p >= n || toml_scan_hex(t[p]) < 0 || toml_scan_hex(t[p]) >= base)
		return -1;
	for (p++; p < n; p++) {
		if (t[p] == '_') {
			if (p + 1 >= n || toml_scan_hex(t[p + 1]) < 0 ||
			    toml_scan_hex(t[p + 1]) >= base)
				return -2;
			continue;
		}
		if (toml_scan_hex(t[p]) < 0 || toml_scan_hex(t[p]) >= base)
			break;
	}
	*i = p;
	return 0;
}

/* Accumulates the digits t[from, to) (underscores skipped); false past limit. */
static bool accumulate(const char *t, size_t from, size_t to, int base, uint64_t limit,
		       uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	for (i = from; i < to; i++) {
		uint64_t d;

		if (t[i] == '_')
			continue;
		d = (uint64_t)toml_scan_hex(t[i]);
		if (v > (limit - d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + d;
	}
	*out = v;
	return true;
}

static int number(struct toml_scan *s, size_t start, size_t end, struct toml_value *v)
{
	const char *t = s->text + start;
	size_t n = end - start, i = 0, ip;
	bool neg = false, is_float = false;
	uint64_t mag;
	int r, base;

	if (n > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'o' || t[1] == 'b')) {
		base = t[1] == 'x' ? 16 : t[1] == 'o' ? 8 : 2;
		i = 2;
		r = digits(t, n, &i, base);
		if (r == -2)
			return toml_scan_error(s, start, "'_' must sit between two digits");
		if (r < 0 || i != n)
			return toml_scan_error(s, start, "invalid base-%d integer", base);
		if (!accumulate(t, 2, n, base, INT64_MAX, &mag))
			return toml_scan_error(s, start, "integer out of range");
		v->type = TOML_INTEGER;
		v->u.integer = (int64_t)mag;
		return 0;
	}
	if (t[0] == '+' || t[0] == '-') {
		neg = t[0] == '-';
		i++;
	}
	ip = i;
	r = digits(t, n, &i, 10);
	if (r == 0 && i - ip > 1 && t[ip] == '0')
		return toml_scan_error(s, start, "leading zeros are not allowed");
	if (r == 0 && i < n && t[i] == '.') {
		i++;
		is_float = true;
		r = digits(t, n, &i, 10);
	}
	if (r == 0 && i < n && (t[i] == 'e' || t[i] == 'E')) {
		i++;
		is_float = true;
		if (i < n && (t[i] == '+' || t[i] == '-'))
			i++;
		r = digits(t, n, &i, 10);
	}
	if (r == -2)
		return toml_scan_error(s, start, "'_' must sit between two digits");
	if (r < 0 || i != n) {
		char buf[48];

		toml_scan_quote(t, n, buf, sizeof(buf));
		return toml_scan_error(s, start, "invalid value '%s'", buf);
	}
	if (!is_float) {
		if (!accumulate(t, ip, n, 10, neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &mag))
			return toml_scan_error(s, start, "integer out of range");
		v->type = TOML_INTEGER;
		v->u.integer = neg ? (int64_t)(0 - mag) : (int64_t)mag;
		return 0;
	}
	{
		char *buf = malloc(n + 1), *e;
		size_t o = 0;
		double d;

		if (!buf)
			return toml_scan_nomem(s);
		for (i = 0; i < n; i++)
			if (t[i] != '_')
				buf[o++] = t[i];
		buf[o] = '\0';
		d = strtod(buf, &e);
		free(buf);
		/* The grammar above already matched; strtod only converts. 1e999 becomes inf,
		 * which is certainly not what the author meant. */
		if (isinf(d))
			return toml_scan_error(s, start, "float out of range");
		v->type = TOML_FLOAT;
		v->u.flt = d;
	}
	return 0;
}

/* Two digits at t[0..1]; -1 if they are not digits. */
static int two(const char *t)
{
	return is_digit(t[0]) && is_digit(t[1]) ? (t[0] - '0') * 10 + (t[1] - '0') : -1;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);

	return m == 2 && leap ? 29 : days[m - 1];
}

/* HH:MM:SS[.frac] at t[*p]. Seconds go to 60: RFC 3339, which TOML follows, allows a leap
 * second; whether one occurred at that minute is not checked. Fraction digits beyond
 * nanoseconds are dropped (truncated, not rounded). */
static int time_part(struct toml_scan *s, size_t start, const char *t, size_t n, size_t *p,
		     struct toml_datetime *dt)
{
	size_t i = *p, k;
	uint32_t scale = 100000000;

	if (n - i < 8 || t[i + 2] != ':' || t[i + 5] != ':' || two(t + i) < 0 ||
	    two(t + i + 3) < 0 || two(t + i + 6) < 0)
		return toml_scan_error(s, start, "invalid time: expected HH:MM:SS");
	dt->hour = two(t + i);
	dt->minute = two(t + i + 3);
	dt->second = two(t + i + 6);
	if (dt->hour > 23 || dt->minute > 59 || dt->second > 60)
		return toml_scan_error(s, start, "time out of range");
	i += 8;
	if (i < n && t[i] == '.') {
		i++;
		if (i >= n || !is_digit(t[i]))
			return toml_scan_error(s, start, "expected digits after the decimal point");
		for (k = 0; i < n && is_digit(t[i]); i++, k++) {
			if (k < 9) {
				dt->nanosecond += (uint32_t)(t[i] - '0') * scale;
				scale /= 10;
			}
		}
	}
	*p = i;
	return 0;
}

static int datetime(struct toml_scan *s, size_t start, size_t end, struct toml_value *v)
{
	const char *t = s->text + start;
	size_t n = end - start, i = 0;
	struct toml_datetime *dt = &v->u.dt;
	int r;

	if (n >= 3 && t[2] == ':') {
		r = time_part(s, start, t, n, &i, dt);
		if (r < 0)
			return r;
		if (i != n)
			return toml_scan_error(s, start, "invalid local time");
		v->type = TOML_TIME_LOCAL;
		return 0;
	}
	if (n < 10 || t[4] != '-' || t[7] != '-' || two(t) < 0 || two(t + 2) < 0 ||
	    two(t + 5) < 0 || two(t + 8) < 0)
		return toml_scan_error(s, start, "invalid date: expected YYYY-MM-DD");
	dt->year = two(t) * 100 + two(t + 2);
	dt->month = two(t + 5);
	dt->day = two(t + 8);
	if (dt->year < 1 || dt->month < 1 || dt->month > 12 || dt->day < 1 ||
	    dt->day > days_in_month(dt->year, dt->month))
		return toml_scan_error(s, start, "date out of range");
	if (n == 10) {
		v->type = TOML_DATE_LOCAL;
		return 0;
	}
	if (t[10] != 'T' && t[10] != 't' && t[10] != ' ')
		return toml_scan_error(s, start, "invalid date-time");
	i = 11;
	r = time_part(s, start, t, n, &i, dt);
	if (r < 0)
		return r;
	v->type = TOML_DATETIME_LOCAL;
	if (i == n)
		return 0;
	v->type = TOML_DATETIME;
	if (t[i] == 'Z' || t[i] == 'z') {
		i++;
	} else if ((t[i] == '+' || t[i] == '-') && n - i >= 6 && two(t + i + 1) >= 0 &&
		   t[i + 3] == ':' && two(t + i + 4) >= 0) {
		int h = two(t + i + 1), m = two(t + i + 4);

		if (h > 23 || m > 59)
			return toml_scan_error(s, start, "time offset out of range");
		dt->offset_minutes = (t[i] == '-' ? -1 : 1) * (h * 60 + m);
		dt->offset_unknown = t[i] == '-' && h == 0 && m == 0;
		i += 6;
	}
	if (i != n)
		return toml_scan_error(s, start, "invalid date-time offset");
	return 0;
}

static bool token_is(const char *t, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(t, word, n) == 0;
}

/* The token is every character that could belong to an unquoted value, so that "1x" is reported
 * as a bad value rather than as junk after the value "1". */
int toml_num_parse(struct toml_scan *s, struct toml_value *v)
{
	size_t start = s->pos, end = s->pos;
	const char *t;
	char buf[32];
	int r;

	while (end < s->len && is_token((unsigned char)s->text[end]))
		end++;
	t = s->text + start;
	/* "1979-05-27 07:32:00": a space may stand for the T, and only between date and time. */
	if (end - start == 10 && t[4] == '-' && t[7] == '-' && s->len - end >= 2 &&
	    s->text[end] == ' ' && is_digit((unsigned char)s->text[end + 1])) {
		end++;
		while (end < s->len && is_token((unsigned char)s->text[end]))
			end++;
	}
	if (end == start)
		return toml_scan_error(s, start, "expected a value, found %s",
				       toml_scan_found(s, buf, sizeof(buf)));
	if (token_is(t, end - start, "true") || token_is(t, end - start, "false")) {
		v->type = TOML_BOOLEAN;
		v->u.boolean = t[0] == 't';
	} else if (token_is(t, end - start, "inf") || token_is(t, end - start, "+inf") ||
		   token_is(t, end - start, "-inf")) {
		v->type = TOML_FLOAT;
		v->u.flt = t[0] == '-' ? -INFINITY : INFINITY;
	} else if (token_is(t, end - start, "nan") || token_is(t, end - start, "+nan") ||
		   token_is(t, end - start, "-nan")) {
		v->type = TOML_FLOAT;
		v->u.flt = t[0] == '-' ? -NAN : NAN;
	} else if ((end - start >= 5 && two(t) >= 0 && two(t + 2) >= 0 && t[4] == '-') ||
		   (end - start >= 3 && two(t) >= 0 && t[2] == ':')) {
		r = datetime(s, start, end, v);
		if (r < 0)
			return r;
	} else {
		r = number(s, start, end, v);
		if (r < 0)
			return r;
	}
	s->pos = end;
	return 0;
}
