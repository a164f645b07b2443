#include "config_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct config_rate_limit config_rate_limit_defaults = {
	.rate = 0,
	.burst = 20,
	.clients = 65536,
	.v4_bits = 32,
	.v6_bits = 64,
};

int config_get_prefixes(struct config_ctx *ctx, const struct toml_value *table, const char *key,
			const char *where, struct cidr **out, size_t *count)
{
	char **texts = NULL;
	size_t n = 0;
	int r = config_get_strings(ctx, table, key, where, 1, &texts, &n);
	if (r <= 0)
		return r;
	const struct toml_value *v = toml_table_get(table, key);
	struct cidr *list = NULL;
	if (n > CONFIG_PREFIXES_MAX) {
		r = config_error(ctx, toml_line(v), "'%s' in %s lists %zu prefixes; at most %d",
				 key, where, n, CONFIG_PREFIXES_MAX);
		goto out;
	}
	list = calloc(n, sizeof *list);
	if (!list) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char why[160];
		if (cidr_parse(texts[i], &list[i], why, sizeof why) < 0) {
			const struct toml_value *e =
				toml_type(v) == TOML_ARRAY ? toml_array_get(v, i) : v;
			r = config_error(ctx, toml_line(e), "'%s' in %s: %s", key, where, why);
			goto out;
		}
	}
	free(*out);
	*out = list;
	*count = n;
	list = NULL;
	r = 1;
out:
	free(list);
	config_strings_free(texts, n);
	return r;
}

int config_get_rate_limit(struct config_ctx *ctx, const struct toml_value *table,
			  const char *where, struct config_rate_limit *out)
{
	int r;
	if ((r = config_get_number(ctx, table, "rate-limit-per-second", where, 0, 1e6,
				   &out->rate)) < 0 ||
	    (r = config_get_u32(ctx, table, "rate-limit-burst", where, 1, 1000000, &out->burst)) <
		    0 ||
	    (r = config_get_u32(ctx, table, "rate-limit-clients", where, 16, 16777216,
				&out->clients)) < 0 ||
	    (r = config_get_u32(ctx, table, "rate-limit-ipv4-prefix", where, 8, 32,
				&out->v4_bits)) < 0 ||
	    (r = config_get_u32(ctx, table, "rate-limit-ipv6-prefix", where, 16, 128,
				&out->v6_bits)) < 0)
		return r;
	/* A rate that small would leave a limited client waiting hours for one token. */
	if (out->rate != 0 && out->rate < 0.001)
		return config_error(ctx, config_key_line(table, "rate-limit-per-second"),
				    "'rate-limit-per-second' in %s must be 0 (off) or at least "
				    "0.001",
				    where);
	return 0;
}

bool config_region_name_ok(char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (c >= 'A' && c <= 'Z')
			name[i] = (char)(c - 'A' + 'a');
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
			   c == '_' || c == '-'))
			return false;
	}
	return true;
}
