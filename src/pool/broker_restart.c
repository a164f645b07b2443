/* What a SIGHUP cannot change. A reload takes over the certificates, the upstreams, the region
 * table, the country database and min-region-servers; every other key keeps its running value
 * until a restart. A changed one is said, key by key, instead of a reload that seems to have
 * taken it. */
#include "broker_int.h"

#include <math.h>
#include <string.h>

#include "log.h"

static void say(const char *key)
{
	log_warn("reload: '%s' changed; it takes a restart (the running value stays)", key);
}

static bool text_differs(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static bool listens_differ(const struct config_listen *a, size_t na,
			   const struct config_listen *b, size_t nb)
{
	if (na != nb)
		return true;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i].text, b[i].text) != 0)
			return true;
	return false;
}

static bool one_listen_differs(bool has_a, const struct config_listen *a, bool has_b,
			       const struct config_listen *b)
{
	return has_a != has_b || (has_a && strcmp(a->text, b->text) != 0);
}

static bool prefixes_differ(const struct cidr *a, size_t na, const struct cidr *b, size_t nb)
{
	if (na != nb)
		return true;
	for (size_t i = 0; i < na; i++)
		if (a[i].family != b[i].family || a[i].bits != b[i].bits ||
		    memcmp(a[i].addr, b[i].addr, sizeof a[i].addr) != 0)
			return true;
	return false;
}

static bool rate_limits_differ(const struct config_rate_limit *a,
			       const struct config_rate_limit *b)
{
	return a->rate != b->rate || a->burst != b->burst || a->clients != b->clients ||
	       a->v4_bits != b->v4_bits || a->v6_bits != b->v6_bits;
}

void broker_warn_restart_keys(const struct config_pool *run, const struct config_pool *next)
{
	const struct {
		const char *key;
		bool changed;
	} keys[] = {
		{ "listen", listens_differ(run->listen, run->listen_count, next->listen,
					   next->listen_count) },
		{ "proxy-protocol", run->proxy_protocol != next->proxy_protocol },
		{ "proxy-protocol-from",
		  prefixes_differ(run->proxy_protocol_from, run->proxy_protocol_from_count,
				  next->proxy_protocol_from, next->proxy_protocol_from_count) },
		{ "rate-limit-*", rate_limits_differ(&run->rate_limit, &next->rate_limit) },
		{ "healthy-after-passes", run->healthy_after_passes != next->healthy_after_passes },
		{ "unhealthy-after-failures",
		  run->unhealthy_after_failures != next->unhealthy_after_failures },
		{ "fixed-key-failure-streak",
		  run->fixed_key_failure_streak != next->fixed_key_failure_streak },
		{ "probe-interval-s", run->probe_interval_s != next->probe_interval_s },
		{ "support-cache-s", run->support_cache_s != next->support_cache_s },
		{ "deep-check-interval-s", run->deep_check_interval_s != next->deep_check_interval_s },
		{ "upstream-idle-s", run->upstream_idle_s != next->upstream_idle_s },
		{ "upstream-max-age-s", run->upstream_max_age_s != next->upstream_max_age_s },
		{ "upstream-connections", run->upstream_connections != next->upstream_connections },
		{ "key-exchange-timeout-ms",
		  run->key_exchange_timeout_ms != next->key_exchange_timeout_ms },
		{ "handshake-timeout-ms", run->handshake_timeout_ms != next->handshake_timeout_ms },
		{ "upstream-timeout-ms", run->upstream_timeout_ms != next->upstream_timeout_ms },
		{ "max-connections", run->max_connections != next->max_connections },
		{ "max-connections-per-address",
		  run->max_connections_per_address != next->max_connections_per_address },
		{ "max-upstream-attempts", run->max_upstream_attempts != next->max_upstream_attempts },
		{ "pool-record-numbers", run->pool_record_numbers != next->pool_record_numbers },
		{ "workers", run->workers != next->workers },
		{ "user", text_differs(run->user, next->user) },
		{ "allow-world-readable-private-key",
		  run->allow_world_readable_private_key != next->allow_world_readable_private_key },
		{ "log-level", run->observability.log_level != next->observability.log_level },
		{ "status-listen",
		  one_listen_differs(run->observability.has_status_listen,
				     &run->observability.status_listen,
				     next->observability.has_status_listen,
				     &next->observability.status_listen) },
		{ "metrics-exporter-listen",
		  one_listen_differs(run->observability.has_metrics_listen,
				     &run->observability.metrics_listen,
				     next->observability.has_metrics_listen,
				     &next->observability.metrics_listen) },
		{ "observation-path", strcmp(run->observability.observation_path,
					     next->observability.observation_path) != 0 },
	};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (keys[i].changed)
			say(keys[i].key);
}
