#include "toml.h"

#include "toml_doc.h"
#include "toml_tree.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Configuration files are small; anything bigger is a mistake (or an attack on memory). */
#define TOML_FILE_MAX (1024 * 1024)

struct toml_value *toml_parse(const char *text, size_t len, const char *filename, char *err,
			      size_t errlen)
{
	struct toml_value *root = NULL;
	struct toml_scan s;

	toml_scan_init(&s, text, len, filename ? filename : "<input>", err, errlen);
	/* Lines and columns are ints. */
	if (len > INT_MAX) {
		toml_scan_error(&s, 0, "input larger than %d bytes", INT_MAX);
		return NULL;
	}
	if (toml_doc_parse(&s, &root) < 0)
		return NULL;
	return root;
}

__attribute__((format(printf, 3, 4))) static void file_error(char *err, size_t errlen,
							      const char *fmt, ...)
{
	va_list ap;

	if (!errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

struct toml_value *toml_parse_file(const char *path, char *err, size_t errlen)
{
	struct toml_value *root = NULL;
	size_t n = 0;
	char *buf;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		file_error(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	/* One byte more than the limit tells an over-long file from one exactly at it. */
	buf = malloc(TOML_FILE_MAX + 1);
	if (!buf) {
		file_error(err, errlen, "%s: %s", path, strerror(ENOMEM));
		goto out;
	}
	while (n < TOML_FILE_MAX + 1) {
		ssize_t r = read(fd, buf + n, TOML_FILE_MAX + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			file_error(err, errlen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > TOML_FILE_MAX) {
		file_error(err, errlen, "%s: file larger than %d bytes (1 MiB)", path,
			   TOML_FILE_MAX);
		goto out;
	}
	root = toml_parse(buf, n, path, err, errlen);
out:
	free(buf);
	close(fd);
	return root;
}

void toml_free(struct toml_value *v)
{
	toml_tree_free(v);
}

enum toml_type toml_type(const struct toml_value *v)
{
	return v->type;
}

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_TABLE: return "table";
	case TOML_ARRAY: return "array";
	case TOML_STRING: return "string";
	case TOML_INTEGER: return "integer";
	case TOML_FLOAT: return "float";
	case TOML_BOOLEAN: return "boolean";
	case TOML_DATETIME: return "offset date-time";
	case TOML_DATETIME_LOCAL: return "local date-time";
	case TOML_DATE_LOCAL: return "local date";
	case TOML_TIME_LOCAL: return "local time";
	}
	return "unknown";
}

int toml_line(const struct toml_value *v)
{
	return v->line;
}

int toml_col(const struct toml_value *v)
{
	return v->col;
}

size_t toml_table_count(const struct toml_value *table)
{
	assert(table->type == TOML_TABLE);
	return table->u.table.count;
}

static const struct toml_tree_entry *entry(const struct toml_value *table, size_t i)
{
	assert(table->type == TOML_TABLE && i < table->u.table.count);
	return &table->u.table.items[i];
}

const char *toml_table_key(const struct toml_value *table, size_t i)
{
	return entry(table, i)->key;
}

size_t toml_table_key_len(const struct toml_value *table, size_t i)
{
	return entry(table, i)->keylen;
}

struct toml_value *toml_table_value(const struct toml_value *table, size_t i)
{
	return entry(table, i)->val;
}

struct toml_value *toml_table_get(const struct toml_value *table, const char *key)
{
	struct toml_tree_entry *e;

	assert(table->type == TOML_TABLE);
	e = toml_tree_find(table, key, strlen(key));
	return e ? e->val : NULL;
}

int toml_table_key_line(const struct toml_value *table, size_t i)
{
	return entry(table, i)->line;
}

int toml_table_key_col(const struct toml_value *table, size_t i)
{
	return entry(table, i)->col;
}

size_t toml_array_count(const struct toml_value *array)
{
	assert(array->type == TOML_ARRAY);
	return array->u.array.count;
}

struct toml_value *toml_array_get(const struct toml_value *array, size_t i)
{
	assert(array->type == TOML_ARRAY && i < array->u.array.count);
	return array->u.array.items[i];
}

const char *toml_string(const struct toml_value *v, size_t *len)
{
	assert(v->type == TOML_STRING);
	if (len)
		*len = v->u.string.len;
	return v->u.string.ptr;
}

int64_t toml_integer(const struct toml_value *v)
{
	assert(v->type == TOML_INTEGER);
	return v->u.integer;
}

double toml_float(const struct toml_value *v)
{
	assert(v->type == TOML_FLOAT);
	return v->u.flt;
}

bool toml_boolean(const struct toml_value *v)
{
	assert(v->type == TOML_BOOLEAN);
	return v->u.boolean;
}

const struct toml_datetime *toml_datetime(const struct toml_value *v)
{
	assert(v->type >= TOML_DATETIME && v->type <= TOML_TIME_LOCAL);
	return &v->u.dt;
}

/* HH:MM:SS with the fraction, if any, without trailing zeros. */
static int format_time(const struct toml_datetime *dt, char *p, size_t n)
{
	char frac[16] = "";
	int i;

	if (dt->nanosecond) {
		snprintf(frac, sizeof(frac), ".%09u", (unsigned)dt->nanosecond);
		for (i = (int)strlen(frac) - 1; frac[i] == '0'; i--)
			frac[i] = '\0';
	}
	return snprintf(p, n, "%02d:%02d:%02d%s", dt->hour, dt->minute, dt->second, frac);
}

int toml_datetime_format(const struct toml_value *v, char *buf, size_t buflen)
{
	const struct toml_datetime *dt = toml_datetime(v);
	char tmp[64];
	size_t n = 0;

	if (v->type != TOML_TIME_LOCAL)
		n += (size_t)snprintf(tmp, sizeof(tmp), "%04d-%02d-%02d", dt->year, dt->month,
				      dt->day);
	if (v->type == TOML_DATETIME || v->type == TOML_DATETIME_LOCAL)
		tmp[n++] = 'T';
	if (v->type != TOML_DATE_LOCAL)
		n += (size_t)format_time(dt, tmp + n, sizeof(tmp) - n);
	if (v->type == TOML_DATETIME && dt->offset_minutes == 0 && !dt->offset_unknown)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "Z");
	else if (v->type == TOML_DATETIME)
		n += (size_t)snprintf(tmp + n, sizeof(tmp) - n, "%c%02d:%02d",
				      dt->offset_minutes < 0 || dt->offset_unknown ? '-' : '+',
				      abs(dt->offset_minutes) / 60, abs(dt->offset_minutes) % 60);
	if (n >= buflen)
		return -EMSGSIZE;
	memcpy(buf, tmp, n + 1);
	return (int)n;
}
