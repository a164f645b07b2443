#include "config_daemon.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_secret.h"
#include "pool_proto.h"

/* The documented defaults (ntp.toml(5)); everything not listed is zero, NULL or absent. */
static const struct config_daemon daemon_defaults = {
	.keyset = {
		.key_rotation_interval_s = 86400,
		.stale_key_count = 7,
	},
	.synchronization = {
		.local_stratum = 16,
		.clock_control = true,
		.minimum_agreeing_sources = 1,
		.single_step_panic_threshold_s = 1000,
		.single_step = { 1000, 1000 },
		.startup_step = { INFINITY, INFINITY },
	},
};

static const struct config_daemon_source source_defaults = {
	.count = 1,
	.poll_interval_min = 4,
	.poll_interval_max = 10,
	.ntp_version = 4,
};
/* ntpd-rs's default for a pool; the same for an NTS pool. */
#define NTS_POOL_DEFAULT_COUNT 4
#define POOL_DEFAULT_COUNT 4
#define NTP_PORT 123
/* The most client addresses a [[server]]'s rate limiting tracks (about 50 bytes each). */
#define RATELIMIT_TABLE_MAX 16777216
#define NTS_KE_PORT 4460

static const struct config_daemon_nts_ke_server nts_ke_defaults = {
	.key_exchange_timeout_ms = 1000,
	.handshake_timeout_ms = 1000,
	.concurrent_connections = 512,
	.max_connections_per_address = 256,
	.pool_record_numbers = KE_NUMBERING_IANA,
};

/* Step thresholds: at least 1 ms, at most about 300 years. */
#define THRESHOLD_MIN_S 0.001
#define THRESHOLD_MAX_S 1e10

static const char *const mode_names[] = { "server", "nts", "nts-pool", "pool", NULL };

static const char *const source_keys_all[] = {
	"mode", "address", "certificate-authority", "count", "poll-interval-min",
	"poll-interval-max", "ignore", "ntp-version", NULL
};
static const char *const source_keys_server[] = {
	"mode", "address", "poll-interval-min", "poll-interval-max", "ntp-version", NULL
};
static const char *const source_keys_nts[] = {
	"mode", "address", "certificate-authority", "poll-interval-min", "poll-interval-max",
	"ntp-version", NULL
};
static const char *const source_keys_nts_pool[] = {
	"mode", "address", "certificate-authority", "count", "poll-interval-min",
	"poll-interval-max", "ntp-version", NULL
};
static const char *const source_keys_pool[] = {
	"mode", "address", "count", "poll-interval-min", "poll-interval-max", "ignore",
	"ntp-version", NULL
};
static const char *const *const source_keys[] = {
	[CONFIG_DAEMON_SOURCE_SERVER] = source_keys_server,
	[CONFIG_DAEMON_SOURCE_NTS] = source_keys_nts,
	[CONFIG_DAEMON_SOURCE_NTS_POOL] = source_keys_nts_pool,
	[CONFIG_DAEMON_SOURCE_POOL] = source_keys_pool,
};

/* Keys that exist for other modes get a message that says so, rather than "unknown". */
static int check_source_keys(struct config_ctx *ctx, const struct toml_value *t,
			     enum config_daemon_source_mode mode)
{
	const char *const *valid = source_keys[mode];
	int acc = 0;
	for (size_t i = 0; i < toml_table_count(t); i++) {
		const char *key = toml_table_key(t, i);
		if (config_name_in(key, source_keys_all) && !config_name_in(key, valid))
			config_keep(&acc, config_error(ctx, toml_table_key_line(t, i),
						       "'%s' makes no sense for a [[source]] with "
						       "mode = \"%s\"",
						       key, mode_names[mode]));
	}
	config_keep(&acc, config_check_keys_except(ctx, t, "[[source]]", valid, source_keys_all));
	return acc;
}

/* "ntp-version" = 4 | "auto" (ntpd-rs's values); NTPv5 is a draft this daemon does not speak. */
static int read_ntp_version(struct config_ctx *ctx, const struct toml_value *t, const char *w,
			    int *out)
{
	const struct toml_value *v = toml_table_get(t, "ntp-version");
	if (!v)
		return 0;
	if (toml_type(v) == TOML_STRING && strcmp(toml_string(v, NULL), "auto") == 0) {
		*out = 4;
		return 1;
	}
	if (toml_type(v) == TOML_INTEGER && toml_integer(v) == 4) {
		*out = 4;
		return 1;
	}
	if (toml_type(v) == TOML_INTEGER && toml_integer(v) == 5)
		return config_error(ctx, toml_line(v),
				    "'ntp-version' in %s: NTPv5 (a draft) is not supported; use 4 "
				    "or \"auto\"",
				    w);
	return config_error(ctx, toml_line(v), "'ntp-version' in %s must be 4 or \"auto\"", w);
}

/* The source-wide defaults of [source-defaults], the ntpd-rs spelling of the poll limits. */
struct source_defaults {
	int poll_min, poll_max;
};

static int read_source(struct config_ctx *ctx, const struct toml_value *t,
		       const struct source_defaults *sd, struct config_daemon_source *s)
{
	static const char w[] = "[[source]]";
	*s = source_defaults;
	s->poll_interval_min = sd->poll_min;
	s->poll_interval_max = sd->poll_max;
	s->line = toml_line(t);
	int mode = -1;
	int64_t pmin = s->poll_interval_min, pmax = s->poll_interval_max;
	char *address = NULL;
	int r = config_get_enum(ctx, t, "mode", w, mode_names, &mode);
	if (r < 0)
		return r;
	if (r == 0)
		return config_error(ctx, toml_line(t), "%s is missing required key 'mode'", w);
	s->mode = (enum config_daemon_source_mode)mode;
	if (s->mode == CONFIG_DAEMON_SOURCE_NTS_POOL)
		s->count = NTS_POOL_DEFAULT_COUNT;
	if (s->mode == CONFIG_DAEMON_SOURCE_POOL)
		s->count = POOL_DEFAULT_COUNT;
	int acc = 0;
	config_keep(&acc, check_source_keys(ctx, t, s->mode));
	int ra = config_keep(&acc, config_get_string(ctx, t, "address", w, true, &address));
	config_keep(&acc, config_get_string(ctx, t, "certificate-authority", w, false,
					    &s->certificate_authority));
	config_keep(&acc, config_get_u32(ctx, t, "count", w, 1, 16, &s->count));
	int rmin = config_keep(&acc, config_get_int(ctx, t, "poll-interval-min", w, 0, 17, &pmin));
	int rmax = config_keep(&acc, config_get_int(ctx, t, "poll-interval-max", w, 0, 17, &pmax));
	config_keep(&acc, read_ntp_version(ctx, t, w, &s->ntp_version));
	if (s->mode == CONFIG_DAEMON_SOURCE_POOL)
		config_keep(&acc,
			    config_get_prefixes(ctx, t, "ignore", w, &s->ignore, &s->ignore_count));
	char why[192];
	uint16_t port =
		s->mode == CONFIG_DAEMON_SOURCE_SERVER || s->mode == CONFIG_DAEMON_SOURCE_POOL
			? NTP_PORT
			: NTS_KE_PORT;
	if (ra > 0 && config_parse_host(address, port, &s->address, why, sizeof(why)) < 0)
		config_keep(&acc, config_error(ctx, config_key_line(t, "address"),
					       "'address' in %s: %s", w, why));
	if (ra > 0 && s->mode == CONFIG_DAEMON_SOURCE_POOL && s->address.is_ip)
		config_keep(&acc, config_error(ctx, config_key_line(t, "address"),
					       "'address' in %s: a pool is a DNS name that "
					       "resolves to several servers, not the address %s; "
					       "use mode = \"server\" for one server",
					       w, s->address.host));
	if (rmin >= 0 && rmax >= 0 && pmin > pmax)
		config_keep(&acc,
			    config_error(ctx,
					 config_key_line(t, toml_table_get(t, "poll-interval-min")
								    ? "poll-interval-min"
								    : "poll-interval-max"),
					 "poll-interval-min (%d) must not exceed "
					 "poll-interval-max (%d)",
					 (int)pmin, (int)pmax));
	s->poll_interval_min = (int)pmin;
	s->poll_interval_max = (int)pmax;
	s->certificate_authority_line = config_key_line(t, "certificate-authority");
	free(address);
	return acc;
}

/* [source-defaults]: poll-interval-limits = { min, max } and initial-poll-interval, as in
 * ntpd-rs. A source starts polling at its minimum; an initial interval is checked to lie within
 * the limits. */
static int read_source_defaults(struct config_ctx *ctx, const struct toml_value *root,
				struct source_defaults *sd)
{
	static const char *const keys[] = { "poll-interval-limits", "initial-poll-interval", NULL };
	static const char *const limit_keys[] = { "min", "max", NULL };
	static const char w[] = "[source-defaults]";
	static const char lw[] = "'poll-interval-limits' of [source-defaults]";
	const struct toml_value *t;
	int r = config_get_table(ctx, root, "source-defaults", &t);
	if (r < 0 || !t)
		return r;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, w, keys));
	int64_t pmin = sd->poll_min, pmax = sd->poll_max, initial = -1;
	const struct toml_value *lim = toml_table_get(t, "poll-interval-limits");
	if (lim && toml_type(lim) != TOML_TABLE) {
		config_keep(&acc, config_error(ctx, toml_line(lim),
					       "'poll-interval-limits' in %s must be a table "
					       "{ min = ..., max = ... }, not %s",
					       w, toml_type_name(toml_type(lim))));
	} else if (lim) {
		config_keep(&acc, config_check_keys(ctx, lim, lw, limit_keys));
		config_keep(&acc, config_get_int(ctx, lim, "min", lw, 0, 17, &pmin));
		config_keep(&acc, config_get_int(ctx, lim, "max", lw, 0, 17, &pmax));
		if (pmin > pmax)
			config_keep(&acc, config_error(ctx, toml_line(lim),
						       "%s: min (%d) must not exceed max (%d)", lw,
						       (int)pmin, (int)pmax));
	}
	r = config_keep(&acc, config_get_int(ctx, t, "initial-poll-interval", w, 0, 17, &initial));
	if (r > 0 && (initial < pmin || initial > pmax))
		config_keep(&acc, config_error(ctx, config_key_line(t, "initial-poll-interval"),
					       "'initial-poll-interval' in %s (%d) must lie within "
					       "the poll interval limits %d..%d",
					       w, (int)initial, (int)pmin, (int)pmax));
	if (acc < 0)
		return acc;
	sd->poll_min = (int)pmin;
	sd->poll_max = (int)pmax;
	return 0;
}

static bool same_listen(const struct config_listen *a, const struct config_listen *b)
{
	return a->addr_len == b->addr_len && memcmp(&a->addr, &b->addr, a->addr_len) == 0;
}

static int read_server(struct config_ctx *ctx, const struct toml_value *t,
		       struct config_daemon_server *s)
{
	static const char *const keys[] = {
		"listen",
		"allowlist",
		"denylist",
		"require-nts",
		"rate-limiting-cache-size",
		"rate-limiting-cutoff-ms",
		NULL,
	};
	static const char w[] = "[[server]]";
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, w, keys));
	config_keep(&acc, config_get_listen(ctx, t, "listen", w, true, &s->listen));
	config_keep(&acc, config_get_filter(ctx, t, "allowlist", w, &s->allowlist));
	config_keep(&acc, config_get_filter(ctx, t, "denylist", w, &s->denylist));
	config_keep(&acc, config_get_require_nts(ctx, t, w, &s->require_nts));
	config_keep(&acc, config_get_u32(ctx, t, "rate-limiting-cache-size", w, 0,
					 RATELIMIT_TABLE_MAX, &s->rate_limiting_cache_size));
	config_keep(&acc, config_get_u32(ctx, t, "rate-limiting-cutoff-ms", w, 0, 86400000,
					 &s->rate_limiting_cutoff_ms));
	return acc;
}

static void server_free(struct config_daemon_server *s)
{
	config_filter_free(&s->allowlist);
	config_filter_free(&s->denylist);
}

static void nts_ke_server_free(struct config_daemon_nts_ke_server *s)
{
	free(s->certificate_chain_path);
	free(s->private_key_path);
	free(s->ntp_server);
	config_strings_free(s->authorized_pool_server_certificates,
			    s->authorized_pool_server_certificate_count);
	for (size_t i = 0; i < s->accepted_pool_authentication_token_count; i++) {
		config_secret_free(s->accepted_pool_authentication_tokens[i]);
		s->accepted_pool_authentication_tokens[i] = NULL;
	}
	config_strings_free(s->accepted_pool_authentication_tokens,
			    s->accepted_pool_authentication_token_count);
	free(s->accepted_pool_authentication_tokens_path);
	pool_tokens_unref(s->tokens);
	s->tokens = NULL;
}

static const char nts_ke_where[] = "[[nts-ke-server]]";
static const char tokens_key[] = "accepted-pool-authentication-tokens";
static const char tokens_path_key[] = "accepted-pool-authentication-tokens-path";

/* A token file: at most POOL_TOKENS_MAX lines of a token and its line end. */
#define TOKEN_FILE_MAX (POOL_TOKENS_MAX * (KE_MSG_TOKEN_MAX + 2))

static int tokens_from_file(struct config_ctx *ctx, const struct config_daemon_nts_ke_server *s,
			    struct pool_tokens *t)
{
	const char *path = s->accepted_pool_authentication_tokens_path;
	int line = s->tokens_path_line;
	char *text;
	size_t len;
	int r = config_read_secret_file(ctx, line, tokens_path_key, nts_ke_where, path,
					TOKEN_FILE_MAX, &text, &len);
	if (r < 0)
		return r;
	const char *tok;
	size_t tok_len, pos = 0;
	int lineno = 0;
	while (r == 0 && config_secret_next_line(text, len, &pos, &tok, &tok_len, &lineno)) {
		char where[64];
		snprintf(where, sizeof where, "%s (token file line %d)", nts_ke_where, lineno);
		r = config_check_token(ctx, line, tokens_path_key, where, tok, tok_len);
		if (r == 0 && (r = pool_tokens_add(t, tok, tok_len)) == -E2BIG)
			r = config_error(ctx, line, "'%s' in %s: %s holds more than %d tokens",
					 tokens_path_key, nts_ke_where, path, POOL_TOKENS_MAX);
	}
	config_secret_free(text);
	return r;
}

static int load_tokens(struct config_ctx *ctx, const struct config_daemon_nts_ke_server *s,
		       struct pool_tokens **out)
{
	*out = NULL;
	if (s->accepted_pool_authentication_token_count == 0 &&
	    !s->accepted_pool_authentication_tokens_path)
		return 0;
	struct pool_tokens *t;
	int r = pool_tokens_new(&t);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s->accepted_pool_authentication_token_count && r == 0; i++) {
		const char *tok = s->accepted_pool_authentication_tokens[i];
		r = pool_tokens_add(t, tok, strlen(tok));
		if (r == -E2BIG)
			r = config_error(ctx, s->tokens_line, "'%s' in %s lists more than %d tokens",
					 tokens_key, nts_ke_where, POOL_TOKENS_MAX);
	}
	if (r == 0 && s->accepted_pool_authentication_tokens_path)
		r = tokens_from_file(ctx, s, t);
	if (r < 0) {
		pool_tokens_unref(t);
		return r;
	}
	*out = t;
	return 0;
}

int config_daemon_load_tokens(const struct config_daemon_nts_ke_server *s, const char *file,
			      struct pool_tokens **out, char *err, size_t errlen)
{
	struct config_ctx ctx = { .file = file, .err = err, .errlen = errlen };
	config_begin(&ctx);
	int r = load_tokens(&ctx, s, out);
	return r < 0 ? config_fail(&ctx, r) : r;
}

static int read_nts_ke_server(struct config_ctx *ctx, const struct toml_value *t,
			      struct config_daemon_nts_ke_server *s)
{
	static const char *const keys[] = {
		"listen",
		"certificate-chain-path",
		"private-key-path",
		"key-exchange-timeout-ms",
		"handshake-timeout-ms",
		"concurrent-connections",
		"max-connections-per-address",
		"ntp-port",
		"ntp-server",
		"authorized-pool-server-certificates",
		"accepted-pool-authentication-tokens",
		"accepted-pool-authentication-tokens-path",
		"pool-record-numbers",
		"allow-world-readable-private-key",
		CONFIG_RATE_LIMIT_KEYS,
		NULL,
	};
	static const char w[] = "[[nts-ke-server]]";
	*s = nts_ke_defaults;
	s->rate_limit = config_rate_limit_defaults;
	int64_t ntp_port = 0;
	int r;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, w, keys));
	config_keep(&acc, config_get_listen(ctx, t, "listen", w, true, &s->listen));
	config_keep(&acc, config_get_string(ctx, t, "certificate-chain-path", w, true,
					    &s->certificate_chain_path));
	config_keep(&acc,
		    config_get_string(ctx, t, "private-key-path", w, true, &s->private_key_path));
	config_keep(&acc, config_get_u32(ctx, t, "key-exchange-timeout-ms", w, 1, 300000,
					 &s->key_exchange_timeout_ms));
	config_keep(&acc, config_get_u32(ctx, t, "handshake-timeout-ms", w, 1, 300000,
					 &s->handshake_timeout_ms));
	config_keep(&acc, config_get_u32(ctx, t, "concurrent-connections", w, 1, 65535,
					 &s->concurrent_connections));
	config_keep(&acc, config_get_bool(ctx, t, "allow-world-readable-private-key", w,
					  &s->allow_world_readable_private_key));
	config_keep(&acc, config_get_u32(ctx, t, "max-connections-per-address", w, 0, 65535,
					 &s->max_connections_per_address));
	config_keep(&acc, config_get_int(ctx, t, "ntp-port", w, 1, 65535, &ntp_port));
	config_keep(&acc, config_get_string(ctx, t, "ntp-server", w, false, &s->ntp_server));
	config_keep(&acc, config_get_strings(ctx, t, "authorized-pool-server-certificates", w, 0,
					     &s->authorized_pool_server_certificates,
					     &s->authorized_pool_server_certificate_count));
	config_keep(&acc, config_get_strings(ctx, t, tokens_key, w, 0,
					     &s->accepted_pool_authentication_tokens,
					     &s->accepted_pool_authentication_token_count));
	config_keep(&acc, config_get_string(ctx, t, tokens_path_key, w, false,
					    &s->accepted_pool_authentication_tokens_path));
	config_keep(&acc, config_get_record_numbers(ctx, t, w, &s->pool_record_numbers));
	config_keep(&acc, config_get_rate_limit(ctx, t, w, &s->rate_limit));
	if (acc < 0)
		return acc;
	s->tokens_line = config_key_line(t, tokens_key);
	s->tokens_path_line = config_key_line(t, tokens_path_key);
	s->certificate_chain_path_line = config_key_line(t, "certificate-chain-path");
	s->private_key_path_line = config_key_line(t, "private-key-path");
	s->authorized_pool_server_certificates_line =
		config_key_line(t, "authorized-pool-server-certificates");
	for (size_t i = 0; i < s->accepted_pool_authentication_token_count; i++) {
		const char *tok = s->accepted_pool_authentication_tokens[i];
		if ((r = config_check_token(ctx, config_key_line(t, tokens_key), tokens_key, w, tok,
					    strlen(tok))) < 0)
			return r;
	}
	/* The token file is read with the configuration, so a bad one stops the start and
	 * `validate`; the listener starts with this set. */
	if ((r = load_tokens(ctx, s, &s->tokens)) < 0)
		return r;
	s->ntp_port = (uint16_t)ntp_port;
	if (s->ntp_server) {
		/* It goes into the NTPv4 Server record: a name or an address, never a port. */
		struct config_host h;
		char why[192];
		if (config_parse_hostname(s->ntp_server, &h, why, sizeof(why)) < 0)
			return config_error(ctx, config_key_line(t, "ntp-server"),
					    "'ntp-server' in %s: %s", w, why);
	}
	return 0;
}

static int read_keyset(struct config_ctx *ctx, const struct toml_value *root,
		       struct config_daemon_keyset *k)
{
	static const char *const keys[] = {
		"key-storage-path", "key-rotation-interval", "stale-key-count", NULL,
	};
	static const char w[] = "[keyset]";
	const struct toml_value *t;
	int r = config_get_table(ctx, root, "keyset", &t);
	if (r < 0 || !t)
		return r;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, w, keys));
	config_keep(&acc,
		    config_get_string(ctx, t, "key-storage-path", w, false, &k->key_storage_path));
	config_keep(&acc, config_get_u32(ctx, t, "key-rotation-interval", w, 1, 31536000,
					 &k->key_rotation_interval_s));
	config_keep(&acc,
		    config_get_u32(ctx, t, "stale-key-count", w, 0, 1000, &k->stale_key_count));
	if (acc < 0)
		return acc;
	k->key_storage_path_line = config_key_line(t, "key-storage-path");
	return 0;
}

/* ---- ntpd-rs's forms of the step thresholds ---- */

/* One direction's value: a number in range, or unlimited. */
static int threshold_value(struct config_ctx *ctx, const struct toml_value *v, const char *key,
			   const char *where, double min_s, double max_s, double *out)
{
	double x;
	switch (toml_type(v)) {
	case TOML_INTEGER:
		x = (double)toml_integer(v);
		break;
	case TOML_FLOAT:
		x = toml_float(v);
		break;
	case TOML_STRING:
		if (strcmp(toml_string(v, NULL), "inf") == 0) {
			*out = INFINITY;
			return 0;
		}
		/* ntpd-rs's own documentation writes numbers in quotes ("86400"). */
		{
			const char *s = toml_string(v, NULL);
			char *end;
			errno = 0;
			x = strtod(s, &end);
			if (*s == '\0' || *end != '\0' || errno || isnan(x))
				return config_error(ctx, toml_line(v),
						    "'%s' in %s must be a number of seconds or "
						    "\"inf\" (got \"%s\")",
						    key, where, s);
		}
		break;
	default:
		return config_error(ctx, toml_line(v),
				    "'%s' in %s must be a number of seconds, \"inf\", or "
				    "{ forward = ..., backward = ... }, not %s",
				    key, where, toml_type_name(toml_type(v)));
	}
	if (isinf(x) && x > 0) {
		*out = INFINITY;
		return 0;
	}
	if (!isfinite(x) || x < min_s || x > max_s)
		return config_error(ctx, toml_line(v),
				    "'%s' in %s must be between %g and %g seconds or \"inf\" (got "
				    "%g)",
				    key, where, min_s, max_s, x);
	*out = x;
	return 0;
}

static int get_step_threshold(struct config_ctx *ctx, const struct toml_value *table,
			      const char *key, const char *where, double min_s, double max_s,
			      struct config_step_threshold *out)
{
	const struct toml_value *v = toml_table_get(table, key);
	if (!v)
		return 0;
	struct config_step_threshold t = { INFINITY, INFINITY };
	if (toml_type(v) != TOML_TABLE) {
		int r = threshold_value(ctx, v, key, where, min_s, max_s, &t.forward_s);
		if (r < 0)
			return r;
		t.backward_s = t.forward_s;
		*out = t;
		return 1;
	}
	static const char *const sides[] = { "forward", "backward", NULL };
	char inner[96];
	snprintf(inner, sizeof inner, "'%s' of %s", key, where);
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, v, inner, sides));
	const struct toml_value *f = toml_table_get(v, "forward");
	const struct toml_value *b = toml_table_get(v, "backward");
	if (f)
		config_keep(&acc,
			    threshold_value(ctx, f, "forward", inner, min_s, max_s, &t.forward_s));
	if (b)
		config_keep(&acc, threshold_value(ctx, b, "backward", inner, min_s, max_s,
						  &t.backward_s));
	if (acc < 0)
		return acc;
	*out = t;
	return 1;
}

static double step_threshold_min(const struct config_step_threshold *t)
{
	return t->forward_s < t->backward_s ? t->forward_s : t->backward_s;
}

static int read_sync(struct config_ctx *ctx, const struct toml_value *root,
		     struct config_daemon_sync *s)
{
	static const char *const keys[] = {
		"local-stratum",
		"clock-control",
		"minimum-agreeing-sources",
		"single-step-panic-threshold",
		"startup-step-panic-threshold",
		"accumulated-step-panic-threshold",
		NULL,
	};
	static const char w[] = "[synchronization]";
	const struct toml_value *t;
	int64_t stratum = s->local_stratum;
	int r = config_get_table(ctx, root, "synchronization", &t);
	if (r < 0 || !t)
		return r;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, w, keys));
	config_keep(&acc, config_get_int(ctx, t, "local-stratum", w, 1, 16, &stratum));
	config_keep(&acc, config_get_bool(ctx, t, "clock-control", w, &s->clock_control));
	config_keep(&acc, config_get_u32(ctx, t, "minimum-agreeing-sources", w, 1, 64,
					 &s->minimum_agreeing_sources));
	s->local_stratum = (int)stratum;
	config_keep(&acc, get_step_threshold(ctx, t, "single-step-panic-threshold", w,
					     THRESHOLD_MIN_S, THRESHOLD_MAX_S, &s->single_step));
	s->single_step_panic_threshold_s = step_threshold_min(&s->single_step);
	config_keep(&acc, get_step_threshold(ctx, t, "startup-step-panic-threshold", w,
					     THRESHOLD_MIN_S, THRESHOLD_MAX_S, &s->startup_step));
	s->startup_step_panic_threshold_s = step_threshold_min(&s->startup_step);
	s->has_startup_step_panic_threshold = !isinf(s->startup_step_panic_threshold_s);
	/* 0 is ntpd-rs's way to say "no limit", as is leaving it out. */
	double accumulated = 0;
	r = config_keep(&acc, config_get_number(ctx, t, "accumulated-step-panic-threshold", w, 0,
						THRESHOLD_MAX_S, &accumulated));
	if (r > 0 && accumulated > 0 && accumulated < THRESHOLD_MIN_S)
		r = config_keep(&acc, config_error(ctx,
						   config_key_line(t, "accumulated-step-panic-"
								      "threshold"),
						   "'accumulated-step-panic-threshold' in %s must "
						   "be 0 (no limit) or at least %g seconds",
						   w, THRESHOLD_MIN_S));
	s->has_accumulated_step_panic_threshold = r > 0 && accumulated > 0;
	s->accumulated_step_panic_threshold_s =
		s->has_accumulated_step_panic_threshold ? accumulated : 0;
	return acc;
}

/* [daemon]: how the process runs, apart from what it serves. */
static int read_daemon(struct config_ctx *ctx, const struct toml_value *root,
		       struct config_daemon *cfg)
{
	static const char *const keys[] = { "workers", "user", NULL };
	static const char w[] = "[daemon]";
	const struct toml_value *t;
	int r = config_get_table(ctx, root, "daemon", &t);
	if (r < 0 || !t)
		return r;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, t, w, keys));
	config_keep(&acc,
		    config_get_u32(ctx, t, "workers", w, 1, CONFIG_WORKERS_MAX, &cfg->workers));
	config_keep(&acc, config_get_string(ctx, t, "user", w, false, &cfg->user));
	if (acc < 0)
		return acc;
	cfg->user_line = config_key_line(t, "user");
	return 0;
}

static bool same_listen_set(const struct config_listen *a, const struct config_listen *b)
{
	return a->addr_len != 0 && same_listen(a, b);
}

static int read_sections(struct config_ctx *ctx, const struct toml_value *root,
			 struct config_daemon *cfg)
{
	const struct toml_value *sources, *servers, *ke;
	int acc = 0;
	config_keep(&acc, config_get_table_array(ctx, root, "source", &sources));
	config_keep(&acc, config_get_table_array(ctx, root, "server", &servers));
	config_keep(&acc, config_get_table_array(ctx, root, "nts-ke-server", &ke));
	size_t ns = sources ? toml_array_count(sources) : 0;
	size_t nv = servers ? toml_array_count(servers) : 0;
	size_t nk = ke ? toml_array_count(ke) : 0;
	if (acc == 0 && ns + nv + nk == 0)
		return config_error(ctx, 1,
				    "no [[source]], [[server]] or [[nts-ke-server]]: the daemon "
				    "would have nothing to do");

	struct source_defaults sd = { source_defaults.poll_interval_min,
				      source_defaults.poll_interval_max };
	config_keep(&acc, read_source_defaults(ctx, root, &sd));
	if (ns && !(cfg->sources = calloc(ns, sizeof(*cfg->sources))))
		return -ENOMEM;
	for (size_t i = 0; i < ns; i++) {
		config_keep(&acc,
			    read_source(ctx, toml_array_get(sources, i), &sd, &cfg->sources[i]));
		cfg->source_count = i + 1;
	}

	if (nv && !(cfg->servers = calloc(nv, sizeof(*cfg->servers))))
		return -ENOMEM;
	for (size_t i = 0; i < nv; i++) {
		struct config_daemon_server *s = &cfg->servers[i];
		config_keep(&acc, read_server(ctx, toml_array_get(servers, i), s));
		cfg->server_count = i + 1;
		for (size_t j = 0; j < i; j++)
			if (same_listen_set(&cfg->servers[j].listen, &s->listen)) {
				config_keep(&acc, config_error(ctx, s->listen.line,
							       "[[server]] listen address %s is "
							       "already used at line %d",
							       s->listen.text,
							       cfg->servers[j].listen.line));
				break;
			}
	}

	if (nk && !(cfg->nts_ke_servers = calloc(nk, sizeof(*cfg->nts_ke_servers))))
		return -ENOMEM;
	for (size_t i = 0; i < nk; i++) {
		struct config_daemon_nts_ke_server *s = &cfg->nts_ke_servers[i];
		config_keep(&acc, read_nts_ke_server(ctx, toml_array_get(ke, i), s));
		cfg->nts_ke_server_count = i + 1;
		for (size_t j = 0; j < i; j++)
			if (same_listen_set(&cfg->nts_ke_servers[j].listen, &s->listen)) {
				config_keep(&acc, config_error(ctx, s->listen.line,
							       "[[nts-ke-server]] listen address "
							       "%s is already used at line %d",
							       s->listen.text,
							       cfg->nts_ke_servers[j].listen.line));
				break;
			}
	}
	return acc;
}

static int from_tree(const struct toml_value *root, struct config_ctx *ctx,
		     struct config_daemon *cfg)
{
	static const char *const tables[] = {
		"source",	   "server", "nts-ke-server",	"keyset", "observability",
		"synchronization", "daemon", "source-defaults", NULL,
	};
	*cfg = daemon_defaults;
	int acc = 0;
	config_keep(&acc, config_check_keys(ctx, root, "the top level of a daemon configuration",
					    tables));
	/* Every section is read even after an error, so one run reports them all. */
	if (config_keep(&acc, read_sections(ctx, root, cfg)) == -ENOMEM)
		goto out;
	config_keep(&acc, read_keyset(ctx, root, &cfg->keyset));
	config_keep(&acc, config_read_observability(ctx, root, &cfg->observability));
	config_keep(&acc, read_sync(ctx, root, &cfg->synchronization));
	config_keep(&acc, read_daemon(ctx, root, cfg));
out:
	if (acc < 0) {
		config_daemon_free(cfg);
		return config_fail(ctx, acc);
	}
	return 0;
}

int config_daemon_from_tree(const struct toml_value *root, const char *file,
			    struct config_daemon *cfg, char *err, size_t errlen)
{
	struct config_ctx ctx = { .file = file, .err = err, .errlen = errlen };
	config_begin(&ctx);
	return from_tree(root, &ctx, cfg);
}

int config_daemon_from_tree_report(const struct toml_value *root, const char *file,
				   struct config_daemon *cfg, struct config_report *report,
				   char *err, size_t errlen)
{
	struct config_ctx ctx = { .file = file, .err = err, .errlen = errlen, .report = report };
	config_begin(&ctx);
	return from_tree(root, &ctx, cfg);
}

int config_daemon_load(const char *path, struct config_daemon *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	struct toml_value *root;
	int r = config_parse_file(path, &root, err, errlen);
	if (r < 0)
		return r;
	r = config_daemon_from_tree(root, path, cfg, err, errlen);
	toml_free(root);
	return r;
}

void config_daemon_free(struct config_daemon *cfg)
{
	for (size_t i = 0; i < cfg->source_count; i++) {
		free(cfg->sources[i].certificate_authority);
		free(cfg->sources[i].ignore);
	}
	free(cfg->sources);
	for (size_t i = 0; i < cfg->server_count; i++)
		server_free(&cfg->servers[i]);
	free(cfg->servers);
	for (size_t i = 0; i < cfg->nts_ke_server_count; i++)
		nts_ke_server_free(&cfg->nts_ke_servers[i]);
	free(cfg->nts_ke_servers);
	free(cfg->keyset.key_storage_path);
	free(cfg->user);
	memset(cfg, 0, sizeof(*cfg));
}
