#include "config_pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_secret.h"
#include "pool_proto.h"

/* The documented defaults (pool.toml(5)); everything not listed is zero, NULL or absent. */
static const struct config_pool pool_defaults = {
	.key_exchange_timeout_ms = 5000,
	.handshake_timeout_ms = 2000,
	.upstream_timeout_ms = 2500,
	.max_connections = 512,
	.max_connections_per_address = 256,
	.max_upstream_attempts = 3,
	.pool_record_numbers = KE_NUMBERING_IANA,
	.probe_interval_s = 60,
	.support_cache_s = 300,
	.deep_check_interval_s = 300,
	.upstream_idle_s = 30,
	.upstream_max_age_s = 600,
	.fixed_key_failure_streak = 3,
	.upstream_connections = 4,
	.min_region_servers = 1,
	.healthy_after_passes = 2,
	.unhealthy_after_failures = 2,
};

#define UPSTREAM_DEFAULT_PORT 4460
#define UPSTREAM_DEFAULT_WEIGHT 1

static const char server_where[] = "[nts-pool-ke-server]";
static const char upstream_where[] = "[nts-pool-ke-server] key-exchange-servers entry";

/* A token file holds exactly one token; blank lines and '#' comments around it are allowed. */
static int read_token_file(struct config_ctx *ctx, const struct toml_value *t,
			   struct config_pool_upstream *out)
{
	static const char key[] = "authentication-token-path";
	int line = config_key_line(t, key);
	char *text;
	size_t len;
	int r = config_read_secret_file(ctx, line, key, upstream_where, out->token_path, 4096,
					&text, &len);
	if (r < 0)
		return r;
	const char *tok = NULL, *l;
	size_t tok_len = 0, n, pos = 0;
	int lineno = 0;
	unsigned found = 0;
	for (; config_secret_next_line(text, len, &pos, &l, &n, &lineno); found++) {
		tok = l;
		tok_len = n;
	}
	if (found != 1)
		r = config_error(ctx, line, "'%s' in %s: %s must hold exactly one token, not %u",
				 key, upstream_where, out->token_path, found);
	else if ((r = config_check_token(ctx, line, key, upstream_where, tok, tok_len)) == 0 &&
		 !(out->token = strndup(tok, tok_len)))
		r = -ENOMEM;
	config_secret_free(text);
	return r;
}

static int read_upstream(struct config_ctx *ctx, const struct toml_value *t,
			 struct config_pool_upstream *out, enum ke_numbering numbering)
{
	static const char *const keys[] = {
		"domain", "port", "weight", "pool-record-numbers", "authentication-token",
		"authentication-token-path", "regions", NULL,
	};
	char *domain = NULL;
	int64_t port = UPSTREAM_DEFAULT_PORT;
	out->weight = UPSTREAM_DEFAULT_WEIGHT;
	out->numbering = numbering;
	out->line = toml_line(t);
	int r;
	if ((r = config_check_keys(ctx, t, upstream_where, keys)) < 0 ||
	    (r = config_get_string(ctx, t, "domain", upstream_where, true, &domain)) < 0 ||
	    (r = config_get_int(ctx, t, "port", upstream_where, 1, 65535, &port)) < 0 ||
	    (r = config_get_u32(ctx, t, "weight", upstream_where, 1, 65535, &out->weight)) < 0 ||
	    (r = config_get_record_numbers(ctx, t, upstream_where, &out->numbering)) < 0 ||
	    (r = config_get_string(ctx, t, "authentication-token", upstream_where, false,
				   &out->token)) < 0 ||
	    (r = config_get_string(ctx, t, "authentication-token-path", upstream_where, false,
				   &out->token_path)) < 0)
		goto out;
	if ((r = config_get_strings(ctx, t, "regions", upstream_where, 0, &out->regions,
				    &out->region_count)) < 0)
		goto out;
	if (out->region_count > CONFIG_POOL_MAX_REGIONS) {
		r = config_error(ctx, config_key_line(t, "regions"),
				 "'regions' in %s lists %zu regions; at most %d", upstream_where,
				 out->region_count, CONFIG_POOL_MAX_REGIONS);
		goto out;
	}
	for (size_t i = 0; i < out->region_count; i++) {
		bool ambiguous;
		if (config_region_token_ok(out->regions[i], &ambiguous))
			continue;
		if (ambiguous)
			r = config_error(ctx, config_key_line(t, "regions"),
					 "'regions' in %s: \"%s\" is both a country's and a "
					 "continent's code; write \"country:%s\" or \"continent:%s\"",
					 upstream_where, out->regions[i], out->regions[i],
					 out->regions[i]);
		else
			r = config_error(ctx, config_key_line(t, "regions"),
					 "'regions' in %s: \"%s\" is not a region name (1-63 "
					 "letters, digits, '.', '_' or '-', optionally after "
					 "\"region:\", \"country:\" or \"continent:\")",
					 upstream_where, out->regions[i]);
		goto out;
	}
	if (out->token && out->token_path) {
		r = config_error(ctx, config_key_line(t, "authentication-token-path"),
				 "%s sets both 'authentication-token' and "
				 "'authentication-token-path'; choose one",
				 upstream_where);
		goto out;
	}
	if (out->token &&
	    (r = config_check_token(ctx, config_key_line(t, "authentication-token"),
				    "authentication-token", upstream_where, out->token,
				    strlen(out->token))) < 0)
		goto out;
	if (out->token_path && (r = read_token_file(ctx, t, out)) < 0)
		goto out;
	char why[192];
	if (config_parse_hostname(domain, &out->addr, why, sizeof(why)) < 0) {
		r = config_error(ctx, toml_line(toml_table_get(t, "domain")),
				 "'domain' in %s: %s", upstream_where, why);
		goto out;
	}
	out->addr.port = (uint16_t)port;
	r = 0;
out:
	free(domain);
	return r;
}

static int read_upstreams(struct config_ctx *ctx, const struct toml_value *server,
			  struct config_pool *cfg)
{
	const struct toml_value *v = toml_table_get(server, "key-exchange-servers");
	if (!v)
		return config_error(ctx, toml_line(server), "%s is missing required key '%s'",
				    server_where, "key-exchange-servers");
	if (toml_type(v) != TOML_ARRAY)
		return config_error(ctx, toml_line(v),
				    "'key-exchange-servers' in %s must be an array of tables "
				    "({ domain = \"...\", port = N, weight = W }), not %s",
				    server_where, toml_type_name(toml_type(v)));
	size_t n = toml_array_count(v);
	if (n == 0)
		return config_error(ctx, toml_line(v),
				    "'key-exchange-servers' in %s must list at least one upstream",
				    server_where);
	if (n > CONFIG_POOL_MAX_UPSTREAMS)
		return config_error(ctx, toml_line(v),
				    "'key-exchange-servers' in %s lists %zu upstreams; at most %d "
				    "are supported", server_where, n, CONFIG_POOL_MAX_UPSTREAMS);
	cfg->key_exchange_servers = calloc(n, sizeof(*cfg->key_exchange_servers));
	if (!cfg->key_exchange_servers)
		return -ENOMEM;
	/* Entries are freed up to the count, so one that fails half-read is counted too. */
	for (size_t i = 0; i < n; i++) {
		const struct toml_value *e = toml_array_get(v, i);
		if (toml_type(e) != TOML_TABLE)
			return config_error(ctx, toml_line(e),
					    "entries of 'key-exchange-servers' in %s must be tables, "
					    "not %s",
					    server_where, toml_type_name(toml_type(e)));
		struct config_pool_upstream *u = &cfg->key_exchange_servers[i];
		cfg->key_exchange_server_count = i + 1;
		int r = read_upstream(ctx, e, u, cfg->pool_record_numbers);
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++) {
			const struct config_pool_upstream *prev = &cfg->key_exchange_servers[j];
			if (config_host_equal(&prev->addr, &u->addr))
				return config_error(ctx, u->line,
						    "duplicate key-exchange-servers entry '%s' "
						    "port %u (first at line %d)",
						    u->addr.host, (unsigned)u->addr.port,
						    prev->line);
		}
	}
	return 0;
}

static int read_server(struct config_ctx *ctx, const struct toml_value *t,
		       struct config_pool *cfg)
{
	static const char *const keys[] = {
		"listen",
		"certificate-chain-path",
		"private-key-path",
		"certificate-authority-path",
		"key-exchange-timeout-ms",
		"handshake-timeout-ms",
		"upstream-timeout-ms",
		"max-connections",
		"max-connections-per-address",
		"max-upstream-attempts",
		"pool-record-numbers",
		"probe-interval-s",
		"support-cache-s",
		"deep-check-interval-s",
		"upstream-idle-s",
		"upstream-max-age-s",
		"upstream-connections",
		"key-exchange-servers",
		"workers",
		"user",
		"fixed-key-failure-streak",
		"allow-world-readable-private-key",
		"proxy-protocol",
		"proxy-protocol-from",
		"geoip-database-path",
		"min-region-servers",
		"healthy-after-passes",
		"unhealthy-after-failures",
		CONFIG_RATE_LIMIT_KEYS,
		NULL,
	};
	const char *w = server_where;
	int r;
	if ((r = config_check_keys(ctx, t, w, keys)) < 0 ||
	    (r = config_get_listens(ctx, t, "listen", w, &cfg->listen, &cfg->listen_count)) < 0 ||
	    (r = config_get_string(ctx, t, "certificate-chain-path", w, true,
				   &cfg->certificate_chain_path)) < 0 ||
	    (r = config_get_string(ctx, t, "private-key-path", w, true, &cfg->private_key_path)) <
		    0 ||
	    (r = config_get_string(ctx, t, "certificate-authority-path", w, false,
				   &cfg->certificate_authority_path)) < 0 ||
	    (r = config_get_u32(ctx, t, "key-exchange-timeout-ms", w, 1, 300000,
				&cfg->key_exchange_timeout_ms)) < 0 ||
	    (r = config_get_u32(ctx, t, "handshake-timeout-ms", w, 1, 300000,
				&cfg->handshake_timeout_ms)) < 0 ||
	    (r = config_get_u32(ctx, t, "upstream-timeout-ms", w, 1, 300000,
				&cfg->upstream_timeout_ms)) < 0 ||
	    (r = config_get_u32(ctx, t, "max-connections", w, 1, 65535, &cfg->max_connections)) <
		    0 ||
	    (r = config_get_u32(ctx, t, "max-connections-per-address", w, 0, 65535,
				&cfg->max_connections_per_address)) < 0 ||
	    (r = config_get_u32(ctx, t, "max-upstream-attempts", w, 1, 16,
				&cfg->max_upstream_attempts)) < 0 ||
	    (r = config_get_u32(ctx, t, "workers", w, 1, CONFIG_WORKERS_MAX, &cfg->workers)) < 0 ||
	    (r = config_get_string(ctx, t, "user", w, false, &cfg->user)) < 0 ||
	    (r = config_get_u32(ctx, t, "fixed-key-failure-streak", w, 0, 100,
				&cfg->fixed_key_failure_streak)) < 0 ||
	    (r = config_get_bool(ctx, t, "allow-world-readable-private-key", w,
				 &cfg->allow_world_readable_private_key)) < 0 ||
	    (r = config_get_record_numbers(ctx, t, w, &cfg->pool_record_numbers)) < 0 ||
	    (r = config_get_u32(ctx, t, "probe-interval-s", w, 1, 86400, &cfg->probe_interval_s)) <
		    0 ||
	    (r = config_get_u32(ctx, t, "support-cache-s", w, 1, 604800, &cfg->support_cache_s)) <
		    0 ||
	    (r = config_get_u32(ctx, t, "deep-check-interval-s", w, 0, 86400,
				&cfg->deep_check_interval_s)) < 0 ||
	    (r = config_get_u32(ctx, t, "upstream-max-age-s", w, 0, 86400,
				&cfg->upstream_max_age_s)) < 0 ||
	    (r = config_get_u32(ctx, t, "upstream-idle-s", w, 1, 3600, &cfg->upstream_idle_s)) <
		    0 ||
	    (r = config_get_u32(ctx, t, "upstream-connections", w, 1, 64,
				&cfg->upstream_connections)) < 0 ||
	    (r = config_get_bool(ctx, t, "proxy-protocol", w, &cfg->proxy_protocol)) < 0 ||
	    (r = config_get_prefixes(ctx, t, "proxy-protocol-from", w, &cfg->proxy_protocol_from,
				     &cfg->proxy_protocol_from_count)) < 0 ||
	    (r = config_get_string(ctx, t, "geoip-database-path", w, false,
				   &cfg->geoip_database_path)) < 0 ||
	    (r = config_get_u32(ctx, t, "min-region-servers", w, 1, CONFIG_POOL_MAX_UPSTREAMS,
				&cfg->min_region_servers)) < 0 ||
	    (r = config_get_u32(ctx, t, "healthy-after-passes", w, 1, 100,
				&cfg->healthy_after_passes)) < 0 ||
	    (r = config_get_u32(ctx, t, "unhealthy-after-failures", w, 1, 100,
				&cfg->unhealthy_after_failures)) < 0 ||
	    (r = config_get_rate_limit(ctx, t, w, &cfg->rate_limit)) < 0)
		return r;
	cfg->certificate_chain_path_line = config_key_line(t, "certificate-chain-path");
	cfg->user_line = config_key_line(t, "user");
	cfg->private_key_path_line = config_key_line(t, "private-key-path");
	cfg->certificate_authority_path_line = config_key_line(t, "certificate-authority-path");
	cfg->geoip_database_path_line = config_key_line(t, "geoip-database-path");

	/* Without a list anyone could claim any address; a list without the protocol would be
	 * ignored silently. */
	if (cfg->proxy_protocol && cfg->proxy_protocol_from_count == 0)
		return config_error(ctx, config_key_line(t, "proxy-protocol"),
				    "proxy-protocol = true in %s needs 'proxy-protocol-from': the "
				    "addresses of the load balancers that send the header",
				    w);
	if (!cfg->proxy_protocol && cfg->proxy_protocol_from_count > 0)
		return config_error(ctx, config_key_line(t, "proxy-protocol-from"),
				    "'proxy-protocol-from' in %s has no effect without "
				    "proxy-protocol = true",
				    w);

	/* A per-upstream deadline beyond the whole-session deadline could never fire. */
	if (cfg->upstream_timeout_ms > cfg->key_exchange_timeout_ms)
		return config_error(ctx,
				    config_key_line(t, toml_table_get(t, "upstream-timeout-ms")
							       ? "upstream-timeout-ms"
							       : "key-exchange-timeout-ms"),
				    "upstream-timeout-ms (%u) must not exceed key-exchange-timeout-ms "
				    "(%u)",
				    (unsigned)cfg->upstream_timeout_ms,
				    (unsigned)cfg->key_exchange_timeout_ms);
	/* Otherwise the cached lists expire before the next probe can refresh them. */
	if (cfg->support_cache_s < cfg->probe_interval_s)
		return config_error(ctx,
				    config_key_line(t, toml_table_get(t, "support-cache-s")
							       ? "support-cache-s"
							       : "probe-interval-s"),
				    "support-cache-s (%u) must be at least probe-interval-s (%u)",
				    (unsigned)cfg->support_cache_s, (unsigned)cfg->probe_interval_s);
	return read_upstreams(ctx, t, cfg);
}

static const char region_where[] = "[[region]]";

static int read_region(struct config_ctx *ctx, const struct toml_value *t,
		       struct config_region *out)
{
	static const char *const keys[] = { "name", "prefixes", NULL };
	out->line = toml_line(t);
	int r;
	if ((r = config_check_keys(ctx, t, region_where, keys)) < 0 ||
	    (r = config_get_string(ctx, t, "name", region_where, true, &out->name)) < 0 ||
	    (r = config_get_prefixes(ctx, t, "prefixes", region_where, &out->prefixes,
				     &out->prefix_count)) < 0)
		return r;
	if (!config_region_name_ok(out->name))
		return config_error(ctx, config_key_line(t, "name"),
				    "'name' in %s: \"%s\" is not a region name (1-63 letters, "
				    "digits, '.', '_' or '-')",
				    region_where, out->name);
	if (out->prefix_count == 0)
		return config_error(ctx, toml_line(t), "%s '%s' is missing required key '%s'",
				    region_where, out->name, "prefixes");
	return 0;
}

static int read_regions(struct config_ctx *ctx, const struct toml_value *root,
			struct config_pool *cfg)
{
	const struct toml_value *arr;
	int r = config_get_table_array(ctx, root, "region", &arr);
	if (r < 0 || !arr)
		return r;
	size_t n = toml_array_count(arr);
	if (n > 1024)
		return config_error(ctx, toml_line(arr), "%zu [[region]] tables; at most 1024", n);
	cfg->regions = calloc(n ? n : 1, sizeof *cfg->regions);
	if (!cfg->regions)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct config_region *g = &cfg->regions[i];
		cfg->region_count = i + 1;
		if ((r = read_region(ctx, toml_array_get(arr, i), g)) < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (strcmp(cfg->regions[j].name, g->name) == 0)
				return config_error(ctx, g->line,
						    "duplicate %s '%s' (first at line %d)",
						    region_where, g->name, cfg->regions[j].line);
	}
	return 0;
}

int config_pool_from_tree_report(const struct toml_value *root, const char *file,
				 struct config_pool *cfg, struct config_report *report, char *err,
				 size_t errlen)
{
	static const char *const tables[] = { "nts-pool-ke-server", "observability", "region",
					      NULL };
	struct config_ctx ctx = { .file = file, .err = err, .errlen = errlen, .report = report };
	config_begin(&ctx);
	*cfg = pool_defaults;
	cfg->rate_limit = config_rate_limit_defaults;
	const struct toml_value *server;
	int acc = 0;
	/* Every part is read even after an error, so one run reports them all. */
	config_keep(&acc,
		    config_check_keys(&ctx, root, "the top level of a pool configuration", tables));
	config_keep(&acc, config_get_table(&ctx, root, "nts-pool-ke-server", &server));
	if (!server && acc == 0)
		config_keep(&acc, config_error(&ctx, toml_line(root),
					       "missing table [nts-pool-ke-server]"));
	if (server && config_keep(&acc, read_server(&ctx, server, cfg)) == -ENOMEM)
		goto fail;
	config_keep(&acc, read_regions(&ctx, root, cfg));
	config_keep(&acc, config_read_observability(&ctx, root, &cfg->observability));
	if (acc == 0)
		return 0;
fail:
	config_pool_free(cfg);
	return config_fail(&ctx, acc);
}

int config_pool_from_tree(const struct toml_value *root, const char *file, struct config_pool *cfg,
			  char *err, size_t errlen)
{
	return config_pool_from_tree_report(root, file, cfg, NULL, err, errlen);
}

int config_pool_load(const char *path, struct config_pool *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	struct toml_value *root;
	int r = config_parse_file(path, &root, err, errlen);
	if (r < 0)
		return r;
	r = config_pool_from_tree(root, path, cfg, err, errlen);
	toml_free(root);
	return r;
}

void config_pool_free(struct config_pool *cfg)
{
	free(cfg->listen);
	free(cfg->user);
	free(cfg->certificate_chain_path);
	free(cfg->private_key_path);
	free(cfg->certificate_authority_path);
	for (size_t i = 0; i < cfg->key_exchange_server_count; i++) {
		config_secret_free(cfg->key_exchange_servers[i].token);
		free(cfg->key_exchange_servers[i].token_path);
		config_strings_free(cfg->key_exchange_servers[i].regions,
				    cfg->key_exchange_servers[i].region_count);
	}
	free(cfg->key_exchange_servers);
	free(cfg->proxy_protocol_from);
	free(cfg->geoip_database_path);
	for (size_t i = 0; i < cfg->region_count; i++) {
		free(cfg->regions[i].name);
		free(cfg->regions[i].prefixes);
	}
	free(cfg->regions);
	memset(cfg, 0, sizeof(*cfg));
}
