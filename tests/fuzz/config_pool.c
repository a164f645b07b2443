/* Fuzz harness: the broker's typed configuration over arbitrary TOML text: toml_parse, then
 * config_pool_from_tree on every tree that parses. Token files named by the text are served by
 * the sandbox of config_sandbox.c (fixed in-memory files; any other path is absent), so no input
 * touches the file system.
 * Contract checked (config_pool.h, pool.toml(5)): a failure is a negative errno with
 * "FILE:LINE: message" (the file name given, a line of the text) and leaves *cfg empty; a
 * success leaves no message and every value within its documented range: at least one listen
 * address, all distinct, with non-zero ports; both paths; timeouts 1..300000 ms with the
 * upstream's within the session's; connection and attempt bounds (max-upstream-attempts 1..16,
 * what pool_session accepts); workers <= 256; the probe, cache, check and idle intervals, with the
 * support cache at least the probe interval; 1..256 upstreams, distinct, each with a non-zero
 * port, a weight 1..65535, a valid numbering and a token of the visible-ASCII shape when it has
 * one (always when a token file is named). config_pool_free empties cfg and may be called
 * again. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config_pool.h"
#include "toml.h"

#include "config_sandbox.c"

static void check_upstream(const struct config_pool_upstream *u, long lines)
{
	CHECK(u->line >= 1 && u->line <= lines);
	check_host(&u->addr);
	CHECK(u->weight >= 1 && u->weight <= 65535);
	CHECK(u->numbering == KE_NUMBERING_IANA || u->numbering == KE_NUMBERING_NTPDRS_V1);
	if (u->token_path)
		CHECK(u->token_path[0] != '\0' && u->token);
	if (u->token)
		check_token(u->token);
}

static void check_pool(const struct config_pool *c, long lines)
{
	CHECK(c->listen_count >= 1 && c->listen);
	for (size_t i = 0; i < c->listen_count; i++) {
		check_listen(&c->listen[i]);
		const struct config_listen *l = &c->listen[i];
		for (size_t j = 0; j < i; j++)
			CHECK(l->addr_len != c->listen[j].addr_len ||
			      memcmp(&l->addr, &c->listen[j].addr, l->addr_len) != 0);
	}
	CHECK(c->certificate_chain_path && c->certificate_chain_path[0]);
	CHECK(c->private_key_path && c->private_key_path[0]);
	if (c->certificate_authority_path)
		CHECK(c->certificate_authority_path[0] != '\0');
	CHECK(c->key_exchange_timeout_ms >= 1 && c->key_exchange_timeout_ms <= 300000);
	CHECK(c->handshake_timeout_ms >= 1 && c->handshake_timeout_ms <= 300000);
	CHECK(c->upstream_timeout_ms >= 1 && c->upstream_timeout_ms <= c->key_exchange_timeout_ms);
	CHECK(c->max_connections >= 1 && c->max_connections <= 65535);
	CHECK(c->max_connections_per_address <= 65535);
	CHECK(c->max_upstream_attempts >= 1 && c->max_upstream_attempts <= 16);
	CHECK(c->workers <= CONFIG_WORKERS_MAX);
	CHECK(c->fixed_key_failure_streak <= 100);
	CHECK(c->pool_record_numbers == KE_NUMBERING_IANA ||
	      c->pool_record_numbers == KE_NUMBERING_NTPDRS_V1);
	CHECK(c->probe_interval_s >= 1 && c->probe_interval_s <= 86400);
	CHECK(c->support_cache_s >= c->probe_interval_s && c->support_cache_s <= 604800);
	CHECK(c->deep_check_interval_s <= 86400);
	CHECK(c->upstream_idle_s >= 1 && c->upstream_idle_s <= 3600);
	CHECK(c->upstream_max_age_s <= 86400);
	CHECK(c->upstream_connections >= 1 && c->upstream_connections <= 64);
	CHECK(c->key_exchange_server_count >= 1 &&
	      c->key_exchange_server_count <= CONFIG_POOL_MAX_UPSTREAMS && c->key_exchange_servers);
	for (size_t i = 0; i < c->key_exchange_server_count; i++) {
		check_upstream(&c->key_exchange_servers[i], lines);
		for (size_t j = 0; j < i; j++)
			CHECK(!config_host_equal(&c->key_exchange_servers[i].addr,
						 &c->key_exchange_servers[j].addr));
	}
	check_observability(&c->observability);
}

CONFIG_FUZZ_ENTRY(struct config_pool, config_pool_from_tree, config_pool_from_tree_report,
		  check_pool, config_pool_free)
