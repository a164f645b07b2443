#include "config_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

void config_filter_free(struct config_filter *f)
{
	free(f->prefixes);
	memset(f, 0, sizeof *f);
}

int config_get_filter(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, struct config_filter *out)
{
	static const char *const keys[] = { "filter", "action", NULL };
	static const char *const actions[] = { "ignore", "deny", NULL };
	const struct toml_value *v = toml_table_get(table, key);
	if (!v)
		return 0;
	if (toml_type(v) != TOML_TABLE)
		return config_error(ctx, toml_line(v),
				    "'%s' in %s must be a table { filter = [ \"CIDR\", ... ], "
				    "action = \"ignore\" | \"deny\" }, not %s",
				    key, where, toml_type_name(toml_type(v)));
	char inner[96];
	snprintf(inner, sizeof inner, "'%s' of %s", key, where);
	struct config_filter f = { .set = true, .line = toml_line(v) };
	int action = -1, acc = 0;
	config_keep(&acc, config_check_keys(ctx, v, inner, keys));
	int r = config_keep(&acc, config_get_enum(ctx, v, "action", inner, actions, &action));
	if (r == 0)
		config_keep(&acc, config_error(ctx, toml_line(v),
					       "%s is missing required key 'action' (\"ignore\" "
					       "or \"deny\")",
					       inner));
	const struct toml_value *list = toml_table_get(v, "filter");
	if (!list) {
		config_keep(&acc, config_error(ctx, toml_line(v),
					       "%s is missing required key 'filter' (a list of "
					       "address prefixes)",
					       inner));
	} else if (toml_type(list) == TOML_ARRAY && toml_array_count(list) == 0) {
		/* An empty list is a rule too: an empty allowlist admits nobody. */
	} else {
		config_keep(&acc,
			    config_get_prefixes(ctx, v, "filter", inner, &f.prefixes, &f.count));
	}
	if (acc < 0) {
		config_filter_free(&f);
		return acc;
	}
	f.action = (enum config_filter_action)action;
	config_filter_free(out);
	*out = f;
	return 1;
}

int config_get_require_nts(struct config_ctx *ctx, const struct toml_value *table,
			   const char *where, enum config_require_nts *out)
{
	const struct toml_value *v = toml_table_get(table, "require-nts");
	if (!v)
		return 0;
	if (toml_type(v) == TOML_BOOLEAN) {
		*out = toml_boolean(v) ? CONFIG_REQUIRE_NTS_IGNORE : CONFIG_REQUIRE_NTS_OFF;
		return 1;
	}
	static const char *const names[] = { "ignore", "deny", NULL };
	if (toml_type(v) == TOML_STRING) {
		int i = 0;
		int r = config_get_enum(ctx, table, "require-nts", where, names, &i);
		if (r > 0)
			*out = i == 0 ? CONFIG_REQUIRE_NTS_IGNORE : CONFIG_REQUIRE_NTS_DENY;
		return r;
	}
	return config_error(ctx, toml_line(v),
			    "'require-nts' in %s must be true, false, \"ignore\" or \"deny\", not "
			    "%s",
			    where, toml_type_name(toml_type(v)));
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

bool config_region_token_ok(char *token, bool *ambiguous)
{
	static const char *const kinds[] = { "region:", "country:", "continent:" };
	static const char *const both[] = { "af", "as", "na", "sa" };
	*ambiguous = false;
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		size_t n = strlen(kinds[k]);
		if (strncasecmp(token, kinds[k], n) == 0) {
			for (size_t i = 0; i < n; i++)
				token[i] = kinds[k][i];
			return config_region_name_ok(token + n);
		}
	}
	if (!config_region_name_ok(token))
		return false;
	for (size_t i = 0; i < sizeof both / sizeof both[0]; i++)
		if (strcmp(token, both[i]) == 0)
			*ambiguous = true;
	return !*ambiguous;
}
