#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <gnutls/gnutls.h>

#include "pool_proto.h"

static void report_add(struct config_report *r, int line, const char *text)
{
	if (r->count >= CONFIG_REPORT_MAX) {
		r->truncated = true;
		return;
	}
	if (r->count == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 8;
		struct config_msg *m = realloc(r->msgs, cap * sizeof *m);
		if (!m) {
			r->truncated = true;
			return;
		}
		r->msgs = m;
		r->cap = cap;
	}
	char *copy = strdup(text);
	if (!copy) {
		r->truncated = true;
		return;
	}
	r->msgs[r->count++] = (struct config_msg){ .line = line, .text = copy };
}

void config_report_sort(struct config_report *r)
{
	/* Insertion sort: stable, and reports are short. */
	for (size_t i = 1; i < r->count; i++) {
		struct config_msg m = r->msgs[i];
		size_t j = i;
		for (; j > 0 && r->msgs[j - 1].line > m.line; j--)
			r->msgs[j] = r->msgs[j - 1];
		r->msgs[j] = m;
	}
}

void config_report_free(struct config_report *r)
{
	for (size_t i = 0; i < r->count; i++)
		free(r->msgs[i].text);
	free(r->msgs);
	memset(r, 0, sizeof *r);
}

int config_error(struct config_ctx *ctx, int line, const char *fmt, ...)
{
	char msg[1024];
	int n = snprintf(msg, sizeof msg, "%s:%d: ", ctx->file, line);
	if (n >= 0 && (size_t)n < sizeof msg) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
		va_end(ap);
	}
	if (ctx->report)
		report_add(ctx->report, line, msg);
	/* The first found, as when a load stopped at it. */
	if (ctx->err && ctx->errlen && ctx->err[0] == '\0')
		snprintf(ctx->err, ctx->errlen, "%s", msg);
	return -EINVAL;
}

const char *config_prefix(char *buf, size_t len, const char *file, int line, const char *key,
			  const char *where)
{
	if (len > 0)
		snprintf(buf, len, "%s:%d: '%s' in %s", file, line, key, where);
	return buf;
}

void config_begin(struct config_ctx *ctx)
{
	if (ctx->err && ctx->errlen)
		ctx->err[0] = '\0';
}

int config_fail(struct config_ctx *ctx, int r)
{
	if (ctx->err && ctx->errlen && ctx->err[0] == '\0') {
		snprintf(ctx->err, ctx->errlen, "%s: %s", ctx->file, strerror(-r));
		if (ctx->report)
			report_add(ctx->report, 0, ctx->err);
	}
	if (ctx->report)
		config_report_sort(ctx->report);
	return r;
}

/* Configuration files are small; anything larger is a mistake (a log file passed by -c). */
#define MAX_FILE_SIZE (1024 * 1024)

int config_parse_file(const char *path, struct toml_value **root, char *err, size_t errlen)
{
	*root = NULL;
	FILE *f = fopen(path, "rb");
	if (!f) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	/* Reading a directory fails with EISDIR only at the first read, after a successful open;
	 * say what the operator passed instead of a bare read error. */
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: is a directory, not a configuration file", path);
		fclose(f);
		return -EISDIR;
	}
	char *buf = malloc(MAX_FILE_SIZE + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	size_t len = fread(buf, 1, MAX_FILE_SIZE + 1, f);
	int r = 0;
	if (ferror(f)) {
		r = -EIO;
		snprintf(err, errlen, "%s: %s", path, strerror(EIO));
	} else if (len > MAX_FILE_SIZE) {
		r = -EFBIG;
		snprintf(err, errlen, "%s: larger than %d bytes, not a configuration file", path,
			 MAX_FILE_SIZE);
	} else {
		*root = toml_parse(buf, len, path, err, errlen);
		if (!*root)
			r = -EINVAL;
	}
	/* The text may hold inline pool tokens. */
	gnutls_memset(buf, 0, len < MAX_FILE_SIZE + 1 ? len : MAX_FILE_SIZE + 1);
	free(buf);
	fclose(f);
	return r;
}

bool config_name_in(const char *name, const char *const *names)
{
	for (size_t i = 0; names[i]; i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

int config_check_keys(struct config_ctx *ctx, const struct toml_value *table, const char *where,
		      const char *const *valid)
{
	return config_check_keys_except(ctx, table, where, valid, NULL);
}

int config_check_keys_except(struct config_ctx *ctx, const struct toml_value *table,
			     const char *where, const char *const *valid,
			     const char *const *reported)
{
	size_t n = toml_table_count(table);
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		const char *key = toml_table_key(table, i);
		if (config_name_in(key, valid) || (reported && config_name_in(key, reported)))
			continue;
		char list[512];
		size_t used = 0;
		list[0] = '\0';
		for (size_t k = 0; valid[k] && used < sizeof(list); k++) {
			int w = snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "",
					 valid[k]);
			if (w < 0)
				break;
			used += (size_t)w;
		}
		r = config_error(ctx, toml_table_key_line(table, i),
				 "unknown key '%s' in %s; valid keys: %s", key, where, list);
	}
	return r;
}

int config_key_line(const struct toml_value *table, const char *key)
{
	size_t n = toml_table_count(table);
	for (size_t i = 0; i < n; i++)
		if (strcmp(toml_table_key(table, i), key) == 0)
			return toml_table_key_line(table, i);
	return toml_line(table);
}

/* Looks the key up and checks its type; 1 with *v set, 0 if absent, negative on error. */
static int lookup(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		  const char *where, bool required, enum toml_type want, const char *want_name,
		  const struct toml_value **v)
{
	*v = toml_table_get(table, key);
	if (!*v) {
		if (required)
			return config_error(ctx, toml_line(table), "%s is missing required key '%s'",
					    where, key);
		return 0;
	}
	if (toml_type(*v) != want)
		return config_error(ctx, toml_line(*v), "'%s' in %s must be %s, not %s", key,
				    where, want_name, toml_type_name(toml_type(*v)));
	return 1;
}

/* Checks one string value (a key's or an array element's) and copies it. */
static int string_value(struct config_ctx *ctx, const struct toml_value *v, const char *key,
			const char *where, char **out)
{
	if (toml_type(v) != TOML_STRING)
		return config_error(ctx, toml_line(v), "'%s' in %s must be a string, not %s", key,
				    where, toml_type_name(toml_type(v)));
	size_t len;
	const char *s = toml_string(v, &len);
	if (len == 0)
		return config_error(ctx, toml_line(v), "'%s' in %s must not be empty", key, where);
	if (strlen(s) != len)
		return config_error(ctx, toml_line(v), "'%s' in %s must not contain a NUL character",
				    key, where);
	*out = strdup(s);
	return *out ? 1 : -ENOMEM;
}

int config_get_string(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, bool required, char **out)
{
	const struct toml_value *v;
	int r = lookup(ctx, table, key, where, required, TOML_STRING, "a string", &v);
	if (r <= 0)
		return r;
	char *s = NULL;
	r = string_value(ctx, v, key, where, &s);
	if (r < 0)
		return r;
	free(*out);
	*out = s;
	return 1;
}

int config_get_int(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		   const char *where, int64_t min, int64_t max, int64_t *out)
{
	const struct toml_value *v;
	int r = lookup(ctx, table, key, where, false, TOML_INTEGER, "an integer", &v);
	if (r <= 0)
		return r;
	int64_t x = toml_integer(v);
	if (x < min || x > max)
		return config_error(ctx, toml_line(v),
				    "'%s' in %s must be between %lld and %lld (got %lld)", key,
				    where, (long long)min, (long long)max, (long long)x);
	*out = x;
	return 1;
}

int config_get_u32(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		   const char *where, uint32_t min, uint32_t max, uint32_t *out)
{
	int64_t x = 0;
	int r = config_get_int(ctx, table, key, where, min, max, &x);
	if (r > 0)
		*out = (uint32_t)x;
	return r;
}

int config_get_number(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, double min, double max, double *out)
{
	const struct toml_value *v = toml_table_get(table, key);
	if (!v)
		return 0;
	double x;
	if (toml_type(v) == TOML_INTEGER)
		x = (double)toml_integer(v);
	else if (toml_type(v) == TOML_FLOAT)
		x = toml_float(v);
	else
		return config_error(ctx, toml_line(v), "'%s' in %s must be a number, not %s", key,
				    where, toml_type_name(toml_type(v)));
	if (!isfinite(x) || x < min || x > max)
		return config_error(ctx, toml_line(v), "'%s' in %s must be between %g and %g (got %g)",
				    key, where, min, max, x);
	*out = x;
	return 1;
}

int config_get_bool(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		    const char *where, bool *out)
{
	const struct toml_value *v;
	int r = lookup(ctx, table, key, where, false, TOML_BOOLEAN, "true or false", &v);
	if (r <= 0)
		return r;
	*out = toml_boolean(v);
	return 1;
}

int config_get_enum(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		    const char *where, const char *const *names, int *out)
{
	const struct toml_value *v;
	int r = lookup(ctx, table, key, where, false, TOML_STRING, "a string", &v);
	if (r <= 0)
		return r;
	const char *s = toml_string(v, NULL);
	for (int i = 0; names[i]; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return 1;
		}
	}
	char list[256];
	size_t used = 0;
	list[0] = '\0';
	for (size_t k = 0; names[k] && used < sizeof(list); k++) {
		int w = snprintf(list + used, sizeof(list) - used, "%s\"%s\"", k ? ", " : "",
				 names[k]);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	return config_error(ctx, toml_line(v), "'%s' in %s must be one of %s (got \"%s\")", key,
			    where, list, s);
}

void config_strings_free(char **v, size_t count)
{
	if (!v)
		return;
	/* Some are secrets (accepted pool tokens); wiping the rest costs nothing that matters. */
	for (size_t i = 0; i < count; i++) {
		if (v[i])
			gnutls_memset(v[i], 0, strlen(v[i]));
		free(v[i]);
	}
	free(v);
}

/* The elements of a "string or array of strings" value: a lone string counts as one. */
static size_t element_count(const struct toml_value *v)
{
	return toml_type(v) == TOML_ARRAY ? toml_array_count(v) : 1;
}

static const struct toml_value *element(const struct toml_value *v, size_t i)
{
	return toml_type(v) == TOML_ARRAY ? toml_array_get(v, i) : v;
}

static int string_or_array(struct config_ctx *ctx, const struct toml_value *v, const char *key,
			   const char *where, size_t min_count)
{
	if (toml_type(v) != TOML_STRING && toml_type(v) != TOML_ARRAY)
		return config_error(ctx, toml_line(v),
				    "'%s' in %s must be a string or an array of strings, not %s",
				    key, where, toml_type_name(toml_type(v)));
	if (element_count(v) < min_count)
		return config_error(ctx, toml_line(v), "'%s' in %s must list at least %zu entr%s",
				    key, where, min_count, min_count == 1 ? "y" : "ies");
	return 0;
}

int config_get_strings(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		       const char *where, size_t min_count, char ***out, size_t *count)
{
	const struct toml_value *v = toml_table_get(table, key);
	if (!v)
		return 0;
	int r = string_or_array(ctx, v, key, where, min_count);
	if (r < 0)
		return r;
	size_t n = element_count(v);
	char **list = calloc(n ? n : 1, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		r = string_value(ctx, element(v, i), key, where, &list[i]);
		if (r < 0) {
			config_strings_free(list, i);
			return r;
		}
	}
	config_strings_free(*out, *count);
	*out = list;
	*count = n;
	return 1;
}

/* Parses a decimal port 1..65535 for `text`'s messages. */
static int parse_port(const char *s, const char *text, uint16_t *port, char *why, size_t whylen)
{
	if (*s == '\0') {
		snprintf(why, whylen, "empty port in '%s'", text);
		return -EINVAL;
	}
	unsigned long v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9') {
			snprintf(why, whylen, "port '%s' in '%s' is not a number", s, text);
			return -EINVAL;
		}
		if (v <= 65535)
			v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v < 1 || v > 65535) {
		snprintf(why, whylen, "port %s in '%s' is out of range 1..65535", s, text);
		return -EINVAL;
	}
	*port = (uint16_t)v;
	return 0;
}

/* Splits "[v6]rest" into the literal (in buf) and what follows ']'. */
static int split_bracket(const char *text, char *buf, size_t buflen, const char **rest,
			 char *why, size_t whylen)
{
	const char *end = strchr(text, ']');
	if (!end) {
		snprintf(why, whylen, "unterminated '[' in '%s'", text);
		return -EINVAL;
	}
	size_t len = (size_t)(end - text - 1);
	struct in6_addr a6;
	if (len >= buflen) {
		snprintf(why, whylen, "'%s' does not hold an IPv6 address in brackets", text);
		return -EINVAL;
	}
	memcpy(buf, text + 1, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET6, buf, &a6) != 1) {
		snprintf(why, whylen, "'%s' does not hold an IPv6 address in brackets", text);
		return -EINVAL;
	}
	*rest = end + 1;
	if (**rest != '\0' && **rest != ':') {
		snprintf(why, whylen, "unexpected text after ']' in '%s'", text);
		return -EINVAL;
	}
	return 0;
}

int config_parse_listen(const char *text, struct config_listen *out, char *why, size_t whylen)
{
	char host[INET6_ADDRSTRLEN];
	const char *port_text;
	uint16_t port;
	bool v6;
	if (text[0] == '[') {
		const char *rest;
		int r = split_bracket(text, host, sizeof(host), &rest, why, whylen);
		if (r < 0)
			return r;
		if (*rest == '\0') {
			snprintf(why, whylen, "'%s' needs a port ([IPv6]:PORT)", text);
			return -EINVAL;
		}
		port_text = rest + 1;
		v6 = true;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon) {
			snprintf(why, whylen, "'%s' needs a port (IP:PORT or [IPv6]:PORT)", text);
			return -EINVAL;
		}
		if (strchr(text, ':') != colon) {
			snprintf(why, whylen, "write IPv6 listen addresses as [IPv6]:PORT, not '%s'",
				 text);
			return -EINVAL;
		}
		size_t len = (size_t)(colon - text);
		struct in_addr a4;
		if (len >= sizeof(host)) {
			snprintf(why, whylen, "'%s' is not an IP address and port", text);
			return -EINVAL;
		}
		memcpy(host, text, len);
		host[len] = '\0';
		if (inet_pton(AF_INET, host, &a4) != 1) {
			snprintf(why, whylen,
				 "'%s' is not an IP address and port (listen addresses take no "
				 "host names)",
				 text);
			return -EINVAL;
		}
		port_text = colon + 1;
		v6 = false;
	}
	int r = parse_port(port_text, text, &port, why, whylen);
	if (r < 0)
		return r;

	memset(out, 0, sizeof(*out));
	char norm[INET6_ADDRSTRLEN];
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->addr;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		inet_pton(AF_INET6, host, &s6->sin6_addr);
		out->addr_len = sizeof(*s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, norm, sizeof(norm));
		snprintf(out->text, sizeof(out->text), "[%s]:%u", norm, (unsigned)port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->addr;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		inet_pton(AF_INET, host, &s4->sin_addr);
		out->addr_len = sizeof(*s4);
		inet_ntop(AF_INET, &s4->sin_addr, norm, sizeof(norm));
		snprintf(out->text, sizeof(out->text), "%s:%u", norm, (unsigned)port);
	}
	return 0;
}

static bool dns_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Letter-digit-hyphen labels of 1..63 octets; the last label not all digits, so that a
 * mistyped IPv4 address ("10.0.0.256") is not taken for a name. */
static bool valid_dns_name(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > 253)
		return false;
	const char *label = name;
	bool all_digits = true;
	for (const char *p = name;; p++) {
		if (*p == '.' || *p == '\0') {
			size_t ll = (size_t)(p - label);
			if (ll == 0 || ll > 63 || label[0] == '-' || p[-1] == '-')
				return false;
			if (*p == '\0')
				return !all_digits;
			label = p + 1;
			all_digits = true;
			continue;
		}
		if (!dns_char(*p))
			return false;
		if (*p < '0' || *p > '9')
			all_digits = false;
	}
}

int config_parse_hostname(const char *name, struct config_host *out, char *why, size_t whylen)
{
	unsigned char buf[sizeof(struct in6_addr)];
	if (*name == '\0') {
		snprintf(why, whylen, "empty host name");
		return -EINVAL;
	}
	bool ip = inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
	if (!ip && !valid_dns_name(name)) {
		snprintf(why, whylen, "'%s' is neither an IP address nor a valid DNS name", name);
		return -EINVAL;
	}
	if (strlen(name) >= sizeof(out->host)) {
		snprintf(why, whylen, "host name '%s' is too long", name);
		return -EINVAL;
	}
	snprintf(out->host, sizeof(out->host), "%s", name);
	out->is_ip = ip;
	return 0;
}

int config_parse_host(const char *text, uint16_t default_port, struct config_host *out,
		      char *why, size_t whylen)
{
	char host[256];
	const char *port_text = NULL;
	if (text[0] == '[') {
		const char *rest;
		int r = split_bracket(text, host, sizeof(host), &rest, why, whylen);
		if (r < 0)
			return r;
		if (*rest == ':')
			port_text = rest + 1;
	} else {
		const char *colon = strchr(text, ':');
		size_t len = strlen(text);
		if (colon && strchr(colon + 1, ':')) {
			unsigned char a6[sizeof(struct in6_addr)];
			if (len >= sizeof(host) || inet_pton(AF_INET6, text, a6) != 1) {
				snprintf(why, whylen,
					 "'%s' is not an address; write IPv6 with a port as "
					 "[IPv6]:PORT",
					 text);
				return -EINVAL;
			}
		} else if (colon) {
			len = (size_t)(colon - text);
			port_text = colon + 1;
		}
		if (len >= sizeof(host)) {
			snprintf(why, whylen, "host name in '%s' is too long", text);
			return -EINVAL;
		}
		memcpy(host, text, len);
		host[len] = '\0';
	}
	struct config_host h;
	h.port = default_port;
	if (port_text) {
		int r = parse_port(port_text, text, &h.port, why, whylen);
		if (r < 0)
			return r;
	}
	int r = config_parse_hostname(host, &h, why, whylen);
	if (r < 0)
		return r;
	*out = h;
	return 0;
}

bool config_host_equal(const struct config_host *a, const struct config_host *b)
{
	if (a->port != b->port || a->is_ip != b->is_ip)
		return false;
	if (!a->is_ip)
		return strcasecmp(a->host, b->host) == 0;
	unsigned char x[sizeof(struct in6_addr)] = { 0 }, y[sizeof(struct in6_addr)] = { 0 };
	int fx = inet_pton(AF_INET, a->host, x) == 1 ? AF_INET : AF_INET6;
	int fy = inet_pton(AF_INET, b->host, y) == 1 ? AF_INET : AF_INET6;
	if (fx != fy)
		return false;
	if (fx == AF_INET6) {
		inet_pton(AF_INET6, a->host, x);
		inet_pton(AF_INET6, b->host, y);
	}
	return memcmp(x, y, sizeof(x)) == 0;
}

static int listen_value(struct config_ctx *ctx, const struct toml_value *v, const char *key,
			const char *where, struct config_listen *out)
{
	char *s = NULL;
	int r = string_value(ctx, v, key, where, &s);
	if (r < 0)
		return r;
	char why[192];
	r = config_parse_listen(s, out, why, sizeof(why));
	free(s);
	if (r < 0)
		return config_error(ctx, toml_line(v), "'%s' in %s: %s", key, where, why);
	out->line = toml_line(v);
	return 0;
}

int config_get_listen(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, bool required, struct config_listen *out)
{
	const struct toml_value *v;
	int r = lookup(ctx, table, key, where, required, TOML_STRING, "a string", &v);
	if (r <= 0)
		return r;
	r = listen_value(ctx, v, key, where, out);
	return r < 0 ? r : 1;
}

int config_get_listens(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		       const char *where, struct config_listen **out, size_t *count)
{
	const struct toml_value *v = toml_table_get(table, key);
	if (!v)
		return config_error(ctx, toml_line(table), "%s is missing required key '%s'", where,
				    key);
	int r = string_or_array(ctx, v, key, where, 1);
	if (r < 0)
		return r;
	size_t n = element_count(v);
	struct config_listen *list = calloc(n, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		r = listen_value(ctx, element(v, i), key, where, &list[i]);
		for (size_t j = 0; r == 0 && j < i; j++)
			if (list[j].addr_len == list[i].addr_len &&
			    memcmp(&list[j].addr, &list[i].addr, list[i].addr_len) == 0)
				r = config_error(ctx, list[i].line, "'%s' in %s lists %s twice", key,
						 where, list[i].text);
		if (r < 0) {
			free(list);
			return r;
		}
	}
	free(*out);
	*out = list;
	*count = n;
	return 1;
}

int config_get_log_level(struct config_ctx *ctx, const struct toml_value *table,
			 const char *where, enum log_level *out)
{
	const struct toml_value *v;
	int r = lookup(ctx, table, "log-level", where, false, TOML_STRING, "a string", &v);
	if (r <= 0)
		return r;
	const char *s = toml_string(v, NULL);
	if (log_level_parse(s, out) < 0)
		return config_error(ctx, toml_line(v),
				    "'log-level' in %s must be one of \"error\", \"warn\", "
				    "\"info\", \"debug\", \"trace\" (got \"%s\")",
				    where, s);
	return 1;
}

int config_get_record_numbers(struct config_ctx *ctx, const struct toml_value *table,
			      const char *where, enum ke_numbering *out)
{
	const char *const names[] = { pool_proto_numbering_name(KE_NUMBERING_IANA),
				      pool_proto_numbering_name(KE_NUMBERING_NTPDRS_V1), NULL };
	int i = 0;
	int r = config_get_enum(ctx, table, "pool-record-numbers", where, names, &i);
	if (r > 0 && pool_proto_numbering_parse(names[i], out) < 0)
		return config_error(ctx, config_key_line(table, "pool-record-numbers"),
				    "'pool-record-numbers' in %s: unknown numbering", where);
	return r;
}

int config_get_table(struct config_ctx *ctx, const struct toml_value *root, const char *name,
		     const struct toml_value **out)
{
	const struct toml_value *v = toml_table_get(root, name);
	*out = NULL;
	if (!v)
		return 0;
	if (toml_type(v) != TOML_TABLE)
		return config_error(ctx, config_key_line(root, name),
				    "'%s' must be a table ([%s]), not %s", name, name,
				    toml_type_name(toml_type(v)));
	*out = v;
	return 0;
}

int config_get_table_array(struct config_ctx *ctx, const struct toml_value *root,
			   const char *name, const struct toml_value **out)
{
	const struct toml_value *v = toml_table_get(root, name);
	*out = NULL;
	if (!v)
		return 0;
	if (toml_type(v) != TOML_ARRAY)
		return config_error(ctx, config_key_line(root, name),
				    "'%s' must be an array of tables ([[%s]]), not %s", name, name,
				    toml_type_name(toml_type(v)));
	for (size_t i = 0; i < toml_array_count(v); i++) {
		const struct toml_value *e = toml_array_get(v, i);
		if (toml_type(e) != TOML_TABLE)
			return config_error(ctx, toml_line(e),
					    "entries of '%s' must be tables ([[%s]]), not %s", name,
					    name, toml_type_name(toml_type(e)));
	}
	*out = v;
	return 0;
}

static const struct config_observability observability_defaults = {
	.log_level = LOG_LEVEL_INFO,
	.has_status_listen = false,
	.observation_permissions = CONFIG_OBSERVATION_PERMISSIONS,
};

static int read_observation_path(struct config_ctx *ctx, const struct toml_value *t,
				 const char *where, struct config_observability *obs)
{
	char *path = NULL;
	int r = config_get_string(ctx, t, "observation-path", where, false, &path);
	if (r <= 0)
		return r;
	int line = config_key_line(t, "observation-path");
	if (strlen(path) > CONFIG_UNIX_PATH_MAX)
		r = config_error(ctx, line,
				 "'observation-path' in %s: a Unix socket path holds at most %d "
				 "bytes, '%s' has %zu; choose a shorter path",
				 where, CONFIG_UNIX_PATH_MAX, path, strlen(path));
	else if (path[strlen(path) - 1] == '/')
		r = config_error(ctx, line,
				 "'observation-path' in %s: '%s' names a directory; give the "
				 "socket's own name (e.g. %sobserve)",
				 where, path, path);
	else
		snprintf(obs->observation_path, sizeof obs->observation_path, "%s", path);
	obs->observation_path_line = line;
	free(path);
	return r;
}

int config_read_observability(struct config_ctx *ctx, const struct toml_value *root,
			      struct config_observability *obs)
{
	static const char *const keys[] = {
		"log-level",
		"status-listen",
		"observation-path",
		"observation-permissions",
		"metrics-exporter-listen",
		"ansi-colors",
		NULL,
	};
	static const char where[] = "[observability]";
	*obs = observability_defaults;
	const struct toml_value *t;
	int r = config_get_table(ctx, root, "observability", &t);
	if (r < 0 || !t)
		return r;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, where, keys));
	config_keep(&acc, config_get_log_level(ctx, t, where, &obs->log_level));
	r = config_keep(&acc, config_get_listen(ctx, t, "status-listen", where, false,
						&obs->status_listen));
	obs->has_status_listen = r > 0;
	r = config_keep(&acc, config_get_listen(ctx, t, "metrics-exporter-listen", where, false,
						&obs->metrics_listen));
	obs->has_metrics_listen = r > 0;
	config_keep(&acc, read_observation_path(ctx, t, where, obs));
	config_keep(&acc, config_get_u32(ctx, t, "observation-permissions", where, 0, 0777,
					 &obs->observation_permissions));
	config_keep(&acc, config_get_bool(ctx, t, "ansi-colors", where, &obs->ansi_colors));
	if (obs->has_status_listen && obs->has_metrics_listen &&
	    obs->status_listen.addr_len == obs->metrics_listen.addr_len &&
	    memcmp(&obs->status_listen.addr, &obs->metrics_listen.addr,
		   obs->status_listen.addr_len) == 0)
		config_keep(&acc,
			    config_error(ctx, obs->metrics_listen.line,
					 "'metrics-exporter-listen' in %s: %s is also the "
					 "status-listen address (line %d); the status "
					 "endpoint serves /metrics already",
					 where, obs->metrics_listen.text, obs->status_listen.line));
	return acc;
}
