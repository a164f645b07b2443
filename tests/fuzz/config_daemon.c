/* Fuzz harness: the daemon's typed configuration over arbitrary TOML text: toml_parse, then
 * config_daemon_from_tree on every tree that parses. Token files named by the text are served by
 * the sandbox of config_sandbox.c (fixed in-memory files; any other path is absent), so no input
 * touches the file system.
 * Contract checked (config_daemon.h, ntp.toml(5)): a failure is a negative errno with
 * "FILE:LINE: message" (the file name given, a line of the text) and leaves *cfg empty; a
 * success leaves no message and every value within its documented range: at least one section,
 * source counts 1..16 (1 unless nts-pool or pool; a pool is a name), poll intervals 0..17 and
 * ordered, non-zero ports, [[server]] access rules, step thresholds per direction (a number in
 * range or unlimited, the single limits the stricter side),
 * timeouts 1..300000 ms, connection limits, tokens of the visible-ASCII shape and a token set
 * exactly when tokens are configured (which the SIGHUP reload, config_daemon_load_tokens, finds
 * again), distinct listen addresses, keyset and synchronization bounds, workers <= 256.
 * config_daemon_free empties cfg and may be called again. The report of the same load
 * (config_daemon_from_tree_report) has the same result and its messages in line order, the
 * load's message among them. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config_daemon.h"
#include "toml.h"

#include "config_sandbox.c"

static bool same_listen(const struct config_listen *a, const struct config_listen *b)
{
	return a->addr_len == b->addr_len && memcmp(&a->addr, &b->addr, a->addr_len) == 0;
}

static void check_source(const struct config_daemon_source *s, long lines)
{
	CHECK(s->line >= 1 && s->line <= lines);
	check_host(&s->address);
	CHECK(s->poll_interval_min >= 0 && s->poll_interval_max <= 17);
	CHECK(s->poll_interval_min <= s->poll_interval_max);
	switch (s->mode) {
	case CONFIG_DAEMON_SOURCE_SERVER:
		CHECK(s->count == 1 && !s->certificate_authority);
		break;
	case CONFIG_DAEMON_SOURCE_NTS:
		CHECK(s->count == 1);
		break;
	case CONFIG_DAEMON_SOURCE_NTS_POOL:
		CHECK(s->count >= 1 && s->count <= 16);
		break;
	case CONFIG_DAEMON_SOURCE_POOL:
		CHECK(s->count >= 1 && s->count <= 16 && !s->certificate_authority);
		CHECK(!s->address.is_ip && s->address.port != 0);
		break;
	default:
		CHECK(0);
	}
	CHECK(s->mode == CONFIG_DAEMON_SOURCE_POOL || s->ignore_count == 0);
	CHECK(!s->ignore_count || s->ignore);
	for (size_t i = 0; i < s->ignore_count; i++)
		CHECK(s->ignore[i].family == AF_INET || s->ignore[i].family == AF_INET6);
	CHECK(s->ntp_version == 4);
	if (s->certificate_authority)
		CHECK(s->certificate_authority[0] != '\0');
}

static void check_filter(const struct config_filter *f)
{
	if (!f->set) {
		CHECK(f->count == 0 && !f->prefixes);
		return;
	}
	CHECK(f->action == CONFIG_FILTER_IGNORE || f->action == CONFIG_FILTER_DENY);
	CHECK(f->count <= CONFIG_PREFIXES_MAX && (!f->count || f->prefixes));
	for (size_t i = 0; i < f->count; i++)
		CHECK(f->prefixes[i].bits <= (f->prefixes[i].family == AF_INET ? 32 : 128));
}

static void check_server_rules(const struct config_daemon_server *s)
{
	check_filter(&s->allowlist);
	check_filter(&s->denylist);
	CHECK(s->require_nts == CONFIG_REQUIRE_NTS_OFF ||
	      s->require_nts == CONFIG_REQUIRE_NTS_IGNORE ||
	      s->require_nts == CONFIG_REQUIRE_NTS_DENY);
	CHECK(s->rate_limiting_cache_size <= 16777216 && s->rate_limiting_cutoff_ms <= 86400000);
}

/* One limit per direction: a number in range or unlimited. */
static void check_threshold(double v)
{
	CHECK(!isnan(v));
	CHECK(isinf(v) ? v > 0 : v >= 0.001 && v <= 1e10);
}

static void check_nts_ke(const struct config_daemon_nts_ke_server *s)
{
	check_listen(&s->listen);
	CHECK(s->certificate_chain_path && s->certificate_chain_path[0]);
	CHECK(s->private_key_path && s->private_key_path[0]);
	CHECK(s->key_exchange_timeout_ms >= 1 && s->key_exchange_timeout_ms <= 300000);
	CHECK(s->handshake_timeout_ms >= 1 && s->handshake_timeout_ms <= 300000);
	CHECK(s->concurrent_connections >= 1 && s->concurrent_connections <= 65535);
	CHECK(s->max_connections_per_address <= 65535);
	if (s->ntp_server)
		CHECK(s->ntp_server[0] != '\0' && strlen(s->ntp_server) <= 253);
	CHECK(s->pool_record_numbers == KE_NUMBERING_IANA ||
	      s->pool_record_numbers == KE_NUMBERING_NTPDRS_V1);
	CHECK(!s->authorized_pool_server_certificate_count ||
	      s->authorized_pool_server_certificates);
	for (size_t i = 0; i < s->authorized_pool_server_certificate_count; i++)
		CHECK(s->authorized_pool_server_certificates[i] &&
		      s->authorized_pool_server_certificates[i][0]);
	for (size_t i = 0; i < s->accepted_pool_authentication_token_count; i++)
		check_token(s->accepted_pool_authentication_tokens[i]);
	if (s->accepted_pool_authentication_tokens_path)
		CHECK(s->accepted_pool_authentication_tokens_path[0] != '\0');

	bool configured = s->accepted_pool_authentication_token_count > 0 ||
			  s->accepted_pool_authentication_tokens_path;
	CHECK((s->tokens != NULL) == configured);
	if (!s->tokens)
		return;
	size_t n = pool_tokens_count(s->tokens);
	CHECK(n <= POOL_TOKENS_MAX);
	CHECK(n >= 1 || s->accepted_pool_authentication_token_count == 0);
	/* What SIGHUP re-reads: the same files (the sandbox's are fixed), the same set. */
	struct pool_tokens *again = NULL;
	char err[512];
	CHECK(config_daemon_load_tokens(s, FILENAME, &again, err, sizeof err) == 0);
	CHECK(again && pool_tokens_count(again) == n);
	pool_tokens_unref(again);
}

static void check_daemon(const struct config_daemon *c, long lines)
{
	CHECK(c->source_count + c->server_count + c->nts_ke_server_count >= 1);
	CHECK(!c->source_count || c->sources);
	CHECK(!c->server_count || c->servers);
	CHECK(!c->nts_ke_server_count || c->nts_ke_servers);
	for (size_t i = 0; i < c->source_count; i++)
		check_source(&c->sources[i], lines);
	for (size_t i = 0; i < c->server_count; i++) {
		check_listen(&c->servers[i].listen);
		check_server_rules(&c->servers[i]);
		for (size_t j = 0; j < i; j++)
			CHECK(!same_listen(&c->servers[i].listen, &c->servers[j].listen));
	}
	for (size_t i = 0; i < c->nts_ke_server_count; i++) {
		check_nts_ke(&c->nts_ke_servers[i]);
		for (size_t j = 0; j < i; j++)
			CHECK(!same_listen(&c->nts_ke_servers[i].listen,
					   &c->nts_ke_servers[j].listen));
	}
	if (c->keyset.key_storage_path)
		CHECK(c->keyset.key_storage_path[0] != '\0');
	CHECK(c->keyset.key_rotation_interval_s >= 1 &&
	      c->keyset.key_rotation_interval_s <= 31536000);
	CHECK(c->keyset.stale_key_count <= 1000);
	const struct config_daemon_sync *y = &c->synchronization;
	CHECK(y->local_stratum >= 1 && y->local_stratum <= 16);
	CHECK(y->minimum_agreeing_sources >= 1 && y->minimum_agreeing_sources <= 64);
	check_threshold(y->single_step.forward_s);
	check_threshold(y->single_step.backward_s);
	check_threshold(y->startup_step.forward_s);
	check_threshold(y->startup_step.backward_s);
	/* The single limits are the stricter direction. */
	CHECK(y->single_step_panic_threshold_s ==
	      fmin(y->single_step.forward_s, y->single_step.backward_s));
	CHECK(y->has_startup_step_panic_threshold ==
	      !isinf(fmin(y->startup_step.forward_s, y->startup_step.backward_s)));
	if (y->has_startup_step_panic_threshold)
		CHECK(y->startup_step_panic_threshold_s ==
		      fmin(y->startup_step.forward_s, y->startup_step.backward_s));
	if (y->has_accumulated_step_panic_threshold)
		CHECK(y->accumulated_step_panic_threshold_s >= 0.001 &&
		      y->accumulated_step_panic_threshold_s <= 1e10);
	CHECK(c->workers <= CONFIG_WORKERS_MAX);
	check_observability(&c->observability);
}

CONFIG_FUZZ_ENTRY(struct config_daemon, config_daemon_from_tree, config_daemon_from_tree_report,
		  check_daemon, config_daemon_free)
