/* The broker's upstream registry (PROTOCOL.md §4.3): the configured NTS-KE servers, their health,
 * cached support lists, counters and latency, and the weighted round-robin choice among them.
 * Sans-I/O: times come in as now_ms; the I/O that probes upstreams (upstream_io) reports here. */
#ifndef NTSPOOL_POOL_UPSTREAM_H
#define NTSPOOL_POOL_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ke_msg.h"
#include "session.h"

enum upstream_state {
	UPSTREAM_PROBING,   /* configured, no probe result yet: not selectable */
	UPSTREAM_HEALTHY,   /* selectable while its support lists are fresh */
	UPSTREAM_UNHEALTHY, /* last probe, deep check or too many session failures went wrong */
	UPSTREAM_DRAINING,  /* removed from the configuration: not selectable, kept until idle */
};

struct upstream_timing {
	uint64_t probe_interval_ms; /* probe-interval-s */
	uint64_t support_cache_ms;  /* support-cache-s: lists older than this are not used */
	uint64_t backoff_min_ms;    /* first retry after a failure (e.g. 1 s) */
	uint64_t backoff_max_ms;    /* cap of the exponential back-off (10 min) */
	uint64_t deep_check_ms;     /* deep-check-interval-s, 0 = off */
};

struct upstream_spec {
	const char *domain; /* DNS name or IP literal; borrowed, copied */
	uint16_t port;
	uint32_t weight;    /* >= 1 */
};

struct upstream_registry;

/* *out is new (upstream_registry_free). Every upstream starts PROBING with a probe due now. */
int upstream_registry_new(struct upstream_registry **out, const struct upstream_spec *specs,
			  size_t n, const struct upstream_timing *timing, uint64_t now_ms);
void upstream_registry_free(struct upstream_registry *r);

/* Applies a new configuration (SIGHUP): upstreams with the same domain and port keep their id,
 * state, lists and counters (weight updated); new ones are added PROBING; missing ones become
 * DRAINING. Ids are never reused. Returns 0 or -ENOMEM. */
int upstream_registry_update(struct upstream_registry *r, const struct upstream_spec *specs,
			     size_t n, uint64_t now_ms);

/* Iteration over every upstream ever configured that is not forgotten: ids via index. */
size_t upstream_count(const struct upstream_registry *r);
uint32_t upstream_id_at(const struct upstream_registry *r, size_t index);
const char *upstream_domain(const struct upstream_registry *r, uint32_t id);
uint16_t upstream_port(const struct upstream_registry *r, uint32_t id);
enum upstream_state upstream_state(const struct upstream_registry *r, uint32_t id);
const char *upstream_state_name(enum upstream_state s);

/* Selection for a session: smooth weighted round-robin among HEALTHY upstreams with fresh lists,
 * not in tried, not denied by req (by domain, ASCII case-insensitive; also by the Server name the
 * upstream last announced); if every candidate is denied, among the denied ones. Fills *out with
 * pointers into the registry (valid until the next call that changes the registry). 0 or
 * -ENOENT. Matches pool_session_upstreams.pick (pass the registry as ud through a wrapper that
 * supplies now_ms). */
int upstream_pick(struct upstream_registry *r, const struct ke_msg_request *req,
		  const uint32_t *tried, size_t n_tried, uint64_t now_ms,
		  struct pool_upstream_info *out);

/* Probing. upstream_probe_due: the next upstream (id) whose probe time has come, or -ENOENT;
 * upstream_next_probe_ms: the earliest probe time of all (UINT64_MAX if none), for the timer.
 * Results: a Support response (its lists are cached with now_ms; HEALTHY), or a failure (reason
 * borrowed, copied; UNHEALTHY; next probe after an exponential back-off). */
int upstream_probe_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id);
uint64_t upstream_next_probe_ms(const struct upstream_registry *r);
void upstream_probe_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms);
void upstream_probe_ok(struct upstream_registry *r, uint32_t id,
		       const struct ke_msg_response *support, uint64_t now_ms);
void upstream_probe_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			   uint64_t now_ms);

/* Deep checks (PROTOCOL.md §4.3): due like probes, only for HEALTHY upstreams when enabled. A
 * failure makes the upstream UNHEALTHY (with back-off); success leaves it as it is. */
int upstream_deep_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id);
uint64_t upstream_next_deep_ms(const struct upstream_registry *r);
void upstream_deep_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms);
void upstream_deep_result(struct upstream_registry *r, uint32_t id, bool ok, const char *reason,
			  uint64_t now_ms);

/* Session outcomes per upstream: served (cookies delivered; latency of the upstream exchange in
 * ms, kept for p50/p99 over the last 1024) or failed (an upstream failure during a session makes
 * the upstream due for a probe now, so a dead upstream leaves rotation quickly). */
void upstream_session_ok(struct upstream_registry *r, uint32_t id, uint64_t latency_ms);
void upstream_session_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			     uint64_t now_ms);

/* The JSON object of one upstream for /status (new reference): name, port, weight, state, last
 * probe time and result, supported protocols and algorithms, sessions served, failures, p50/p99
 * latency. kept is the number of kept-alive connections (from upstream_io). */
json_t *upstream_status_json(const struct upstream_registry *r, uint32_t id, unsigned kept,
			     uint64_t now_ms, uint64_t wall_now_s);

#endif
