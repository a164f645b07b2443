#include "config_daemon.h"

#include <errno.h>
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
	},
};

static const struct config_daemon_source source_defaults = {
	.count = 1,
	.poll_interval_min = 4,
	.poll_interval_max = 10,
};
#define NTS_POOL_DEFAULT_COUNT 4
#define NTP_PORT 123
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

static const char *const mode_names[] = { "server", "nts", "nts-pool", NULL };

static const char *const source_keys_all[] = {
	"mode", "address", "certificate-authority", "count", "poll-interval-min",
	"poll-interval-max", NULL,
};
static const char *const source_keys_server[] = {
	"mode", "address", "poll-interval-min", "poll-interval-max", NULL,
};
static const char *const source_keys_nts[] = {
	"mode", "address", "certificate-authority", "poll-interval-min", "poll-interval-max", NULL,
};
static const char *const *const source_keys[] = {
	[CONFIG_DAEMON_SOURCE_SERVER] = source_keys_server,
	[CONFIG_DAEMON_SOURCE_NTS] = source_keys_nts,
	[CONFIG_DAEMON_SOURCE_NTS_POOL] = source_keys_all,
};

/* Keys that exist for other modes get a message that says so, rather than "unknown". */
static int check_source_keys(struct config_ctx *ctx, const struct toml_value *t,
			     enum config_daemon_source_mode mode)
{
	const char *const *valid = source_keys[mode];
	for (size_t i = 0; i < toml_table_count(t); i++) {
		const char *key = toml_table_key(t, i);
		if (config_name_in(key, source_keys_all) && !config_name_in(key, valid))
			return config_error(ctx, toml_table_key_line(t, i),
					    "'%s' makes no sense for a [[source]] with mode = \"%s\"",
					    key, mode_names[mode]);
	}
	return config_check_keys(ctx, t, "[[source]]", valid);
}

static int read_source(struct config_ctx *ctx, const struct toml_value *t,
		       struct config_daemon_source *s)
{
	static const char w[] = "[[source]]";
	*s = source_defaults;
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
	if ((r = check_source_keys(ctx, t, s->mode)) < 0 ||
	    (r = config_get_string(ctx, t, "address", w, true, &address)) < 0 ||
	    (r = config_get_string(ctx, t, "certificate-authority", w, false,
				   &s->certificate_authority)) < 0 ||
	    (r = config_get_u32(ctx, t, "count", w, 1, 16, &s->count)) < 0 ||
	    (r = config_get_int(ctx, t, "poll-interval-min", w, 0, 17, &pmin)) < 0 ||
	    (r = config_get_int(ctx, t, "poll-interval-max", w, 0, 17, &pmax)) < 0)
		goto out;
	char why[192];
	uint16_t port = s->mode == CONFIG_DAEMON_SOURCE_SERVER ? NTP_PORT : NTS_KE_PORT;
	if (config_parse_host(address, port, &s->address, why, sizeof(why)) < 0) {
		r = config_error(ctx, config_key_line(t, "address"), "'address' in %s: %s", w, why);
		goto out;
	}
	if (pmin > pmax) {
		r = config_error(ctx,
				 config_key_line(t, toml_table_get(t, "poll-interval-min")
							    ? "poll-interval-min"
							    : "poll-interval-max"),
				 "poll-interval-min (%d) must not exceed poll-interval-max (%d)",
				 (int)pmin, (int)pmax);
		goto out;
	}
	s->poll_interval_min = (int)pmin;
	s->poll_interval_max = (int)pmax;
	s->certificate_authority_line = config_key_line(t, "certificate-authority");
	r = 0;
out:
	free(address);
	return r;
}

static bool same_listen(const struct config_listen *a, const struct config_listen *b)
{
	return a->addr_len == b->addr_len && memcmp(&a->addr, &b->addr, a->addr_len) == 0;
}

static int read_server(struct config_ctx *ctx, const struct toml_value *t,
		       struct config_daemon_server *s)
{
	static const char *const keys[] = { "listen", NULL };
	int r = config_check_keys(ctx, t, "[[server]]", keys);
	if (r < 0)
		return r;
	r = config_get_listen(ctx, t, "listen", "[[server]]", true, &s->listen);
	return r < 0 ? r : 0;
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
	if ((r = config_check_keys(ctx, t, w, keys)) < 0 ||
	    (r = config_get_listen(ctx, t, "listen", w, true, &s->listen)) < 0 ||
	    (r = config_get_string(ctx, t, "certificate-chain-path", w, true,
				   &s->certificate_chain_path)) < 0 ||
	    (r = config_get_string(ctx, t, "private-key-path", w, true, &s->private_key_path)) < 0 ||
	    (r = config_get_u32(ctx, t, "key-exchange-timeout-ms", w, 1, 300000,
				&s->key_exchange_timeout_ms)) < 0 ||
	    (r = config_get_u32(ctx, t, "handshake-timeout-ms", w, 1, 300000,
				&s->handshake_timeout_ms)) < 0 ||
	    (r = config_get_u32(ctx, t, "concurrent-connections", w, 1, 65535,
				&s->concurrent_connections)) < 0 ||
	    (r = config_get_bool(ctx, t, "allow-world-readable-private-key", w,
				 &s->allow_world_readable_private_key)) < 0 ||
	    (r = config_get_u32(ctx, t, "max-connections-per-address", w, 0, 65535,
				&s->max_connections_per_address)) < 0 ||
	    (r = config_get_int(ctx, t, "ntp-port", w, 1, 65535, &ntp_port)) < 0 ||
	    (r = config_get_string(ctx, t, "ntp-server", w, false, &s->ntp_server)) < 0 ||
	    (r = config_get_strings(ctx, t, "authorized-pool-server-certificates", w, 0,
				    &s->authorized_pool_server_certificates,
				    &s->authorized_pool_server_certificate_count)) < 0 ||
	    (r = config_get_strings(ctx, t, tokens_key, w, 0,
				    &s->accepted_pool_authentication_tokens,
				    &s->accepted_pool_authentication_token_count)) < 0 ||
	    (r = config_get_string(ctx, t, tokens_path_key, w, false,
				   &s->accepted_pool_authentication_tokens_path)) < 0 ||
	    (r = config_get_record_numbers(ctx, t, w, &s->pool_record_numbers)) < 0 ||
	    (r = config_get_rate_limit(ctx, t, w, &s->rate_limit)) < 0)
		return r;
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
	if ((r = config_check_keys(ctx, t, w, keys)) < 0 ||
	    (r = config_get_string(ctx, t, "key-storage-path", w, false, &k->key_storage_path)) <
		    0 ||
	    (r = config_get_u32(ctx, t, "key-rotation-interval", w, 1, 31536000,
				&k->key_rotation_interval_s)) < 0 ||
	    (r = config_get_u32(ctx, t, "stale-key-count", w, 0, 1000, &k->stale_key_count)) < 0)
		return r;
	k->key_storage_path_line = config_key_line(t, "key-storage-path");
	return 0;
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
	if ((r = config_check_keys(ctx, t, w, keys)) < 0 ||
	    (r = config_get_int(ctx, t, "local-stratum", w, 1, 16, &stratum)) < 0 ||
	    (r = config_get_bool(ctx, t, "clock-control", w, &s->clock_control)) < 0 ||
	    (r = config_get_u32(ctx, t, "minimum-agreeing-sources", w, 1, 64,
				&s->minimum_agreeing_sources)) < 0 ||
	    (r = config_get_number(ctx, t, "single-step-panic-threshold", w, THRESHOLD_MIN_S,
				   THRESHOLD_MAX_S, &s->single_step_panic_threshold_s)) < 0)
		return r;
	s->local_stratum = (int)stratum;
	r = config_get_number(ctx, t, "startup-step-panic-threshold", w, THRESHOLD_MIN_S,
			      THRESHOLD_MAX_S, &s->startup_step_panic_threshold_s);
	if (r < 0)
		return r;
	s->has_startup_step_panic_threshold = r > 0;
	r = config_get_number(ctx, t, "accumulated-step-panic-threshold", w, THRESHOLD_MIN_S,
			      THRESHOLD_MAX_S, &s->accumulated_step_panic_threshold_s);
	if (r < 0)
		return r;
	s->has_accumulated_step_panic_threshold = r > 0;
	return 0;
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
	if ((r = config_check_keys(ctx, t, w, keys)) < 0 ||
	    (r = config_get_u32(ctx, t, "workers", w, 1, CONFIG_WORKERS_MAX, &cfg->workers)) < 0 ||
	    (r = config_get_string(ctx, t, "user", w, false, &cfg->user)) < 0)
		return r;
	cfg->user_line = config_key_line(t, "user");
	return 0;
}

static int read_sections(struct config_ctx *ctx, const struct toml_value *root,
			 struct config_daemon *cfg)
{
	const struct toml_value *sources, *servers, *ke;
	int r;
	if ((r = config_get_table_array(ctx, root, "source", &sources)) < 0 ||
	    (r = config_get_table_array(ctx, root, "server", &servers)) < 0 ||
	    (r = config_get_table_array(ctx, root, "nts-ke-server", &ke)) < 0)
		return r;
	size_t ns = sources ? toml_array_count(sources) : 0;
	size_t nv = servers ? toml_array_count(servers) : 0;
	size_t nk = ke ? toml_array_count(ke) : 0;
	if (ns + nv + nk == 0)
		return config_error(ctx, 1,
				    "no [[source]], [[server]] or [[nts-ke-server]]: the daemon "
				    "would have nothing to do");

	if (ns && !(cfg->sources = calloc(ns, sizeof(*cfg->sources))))
		return -ENOMEM;
	for (size_t i = 0; i < ns; i++) {
		r = read_source(ctx, toml_array_get(sources, i), &cfg->sources[i]);
		cfg->source_count = i + 1;
		if (r < 0)
			return r;
	}

	if (nv && !(cfg->servers = calloc(nv, sizeof(*cfg->servers))))
		return -ENOMEM;
	for (size_t i = 0; i < nv; i++) {
		struct config_daemon_server *s = &cfg->servers[i];
		if ((r = read_server(ctx, toml_array_get(servers, i), s)) < 0)
			return r;
		cfg->server_count = i + 1;
		for (size_t j = 0; j < i; j++)
			if (same_listen(&cfg->servers[j].listen, &s->listen))
				return config_error(ctx, s->listen.line,
						    "[[server]] listen address %s is already used "
						    "at line %d",
						    s->listen.text, cfg->servers[j].listen.line);
	}

	if (nk && !(cfg->nts_ke_servers = calloc(nk, sizeof(*cfg->nts_ke_servers))))
		return -ENOMEM;
	for (size_t i = 0; i < nk; i++) {
		struct config_daemon_nts_ke_server *s = &cfg->nts_ke_servers[i];
		r = read_nts_ke_server(ctx, toml_array_get(ke, i), s);
		cfg->nts_ke_server_count = i + 1;
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (same_listen(&cfg->nts_ke_servers[j].listen, &s->listen))
				return config_error(ctx, s->listen.line,
						    "[[nts-ke-server]] listen address %s is already "
						    "used at line %d",
						    s->listen.text,
						    cfg->nts_ke_servers[j].listen.line);
	}
	return 0;
}

int config_daemon_from_tree(const struct toml_value *root, const char *file,
			    struct config_daemon *cfg, char *err, size_t errlen)
{
	static const char *const tables[] = {
		"source", "server", "nts-ke-server", "keyset", "observability", "synchronization",
		"daemon", NULL,
	};
	struct config_ctx ctx = { .file = file, .err = err, .errlen = errlen };
	config_begin(&ctx);
	*cfg = daemon_defaults;
	int r;
	if ((r = config_check_keys(&ctx, root, "the top level of a daemon configuration",
				   tables)) < 0 ||
	    (r = read_sections(&ctx, root, cfg)) < 0 ||
	    (r = read_keyset(&ctx, root, &cfg->keyset)) < 0 ||
	    (r = config_read_observability(&ctx, root, &cfg->observability)) < 0 ||
	    (r = read_sync(&ctx, root, &cfg->synchronization)) < 0 ||
	    (r = read_daemon(&ctx, root, cfg)) < 0) {
		config_daemon_free(cfg);
		return config_fail(&ctx, r);
	}
	return 0;
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
	for (size_t i = 0; i < cfg->source_count; i++)
		free(cfg->sources[i].certificate_authority);
	free(cfg->sources);
	free(cfg->servers);
	for (size_t i = 0; i < cfg->nts_ke_server_count; i++)
		nts_ke_server_free(&cfg->nts_ke_servers[i]);
	free(cfg->nts_ke_servers);
	free(cfg->keyset.key_storage_path);
	free(cfg->user);
	memset(cfg, 0, sizeof(*cfg));
}
