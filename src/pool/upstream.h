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
	unsigned fixed_key_streak;  /* fixed-key-failure-streak: failed sessions in a row that make
				     * a healthy upstream unhealthy at once, 0 = off */
};

/* Configured upstreams at most (more is -EINVAL); as many again may be DRAINING at once, beyond
 * that the oldest draining ones are forgotten by upstream_registry_update. */
#define UPSTREAM_MAX 256

struct upstream_spec {
	const char *domain; /* DNS name or IP literal, 1..KE_MSG_NAME_MAX; borrowed, copied */
	uint16_t port;
	uint32_t weight;    /* >= 1 */
	enum ke_numbering numbering; /* its pool record numbers */
	const char *token;  /* authentication token (secret), 1..KE_MSG_TOKEN_MAX bytes, or NULL;
			     * borrowed, copied (and wiped when replaced or forgotten) */
};

struct upstream_registry;

/* *out is new (upstream_registry_free). Every upstream starts PROBING with a probe due now.
 * -EINVAL for more than UPSTREAM_MAX specs, an empty or over-long domain, an empty or over-long
 * token, a weight of 0 or the same (domain, port) twice; -ENOMEM. */
int upstream_registry_new(struct upstream_registry **out, const struct upstream_spec *specs,
			  size_t n, const struct upstream_timing *timing, uint64_t now_ms);
void upstream_registry_free(struct upstream_registry *r);

/* Applies a new configuration (SIGHUP): upstreams with the same domain (ASCII case-insensitive)
 * and port keep their id, state, lists and counters (weight, numbering and token updated); a
 * DRAINING one that comes back is PROBING again with a probe due now; new ones are added
 * PROBING; missing ones become DRAINING. Ids are never reused. Returns 0, or -EINVAL / -ENOMEM
 * (as upstream_registry_new) with the registry unchanged. */
int upstream_registry_update(struct upstream_registry *r, const struct upstream_spec *specs,
			     size_t n, uint64_t now_ms);

/* A DRAINING upstream leaves the registry: upstream_io calls this once no connection or exchange
 * of it remains. Ignored for any other state or an unknown id. */
void upstream_forget(struct upstream_registry *r, uint32_t id);

/* Iteration over every upstream ever configured that is not forgotten: ids via index. Every
 * function taking an id ignores an unknown one (a session may outlive a forgotten upstream):
 * upstream_domain gives NULL, upstream_port 0, upstream_state UPSTREAM_DRAINING,
 * upstream_status_json NULL. */
size_t upstream_count(const struct upstream_registry *r);
uint32_t upstream_id_at(const struct upstream_registry *r, size_t index);
const char *upstream_domain(const struct upstream_registry *r, uint32_t id);
/* The upstream's record numbering (IANA for an unknown id) and token (borrowed until the next
 * registry update; NULL when none or for an unknown id). */
enum ke_numbering upstream_numbering(const struct upstream_registry *r, uint32_t id);
const char *upstream_token(const struct upstream_registry *r, uint32_t id);
uint16_t upstream_port(const struct upstream_registry *r, uint32_t id);
enum upstream_state upstream_state(const struct upstream_registry *r, uint32_t id);
const char *upstream_state_name(enum upstream_state s);

/* The registry as the data plane sees it (upstream_snapshot.h): upstream_registry_version
 * changes whenever something a snapshot shows changes (membership, weights, numbering, tokens,
 * health, support lists, announced names; not the counters), and upstream_registry_snapshot
 * copies it (one reference, NULL without memory). */
struct upstream_snapshot;
uint64_t upstream_registry_version(const struct upstream_registry *r);
struct upstream_snapshot *upstream_registry_snapshot(const struct upstream_registry *r);

/* Selection on the registry's own thread: upstream_snapshot_pick over a snapshot the registry
 * keeps current, with the registry's own round-robin state. Fills *out with pointers valid
 * until the next call that changes the registry. 0, -ENOENT or -ENOMEM. Matches
 * pool_session_upstreams.pick (pass the registry as ud through a wrapper that supplies
 * now_ms). */
int upstream_pick(struct upstream_registry *r, const struct ke_msg_request *req,
		  const uint32_t *tried, size_t n_tried, uint64_t now_ms,
		  struct pool_upstream_info *out);

/* Probing. upstream_probe_due: the next upstream (id) whose probe time has come, or -ENOENT;
 * upstream_next_probe_ms: the earliest probe time of all (UINT64_MAX if none), for the timer.
 * An upstream with a probe started is not due again until its result. DRAINING ones are never
 * probed, and results for them are dropped.
 * Results: a Support response (its lists are cached with now_ms; HEALTHY; only algorithms whose
 * key length is the AEAD's are kept; no such algorithm is the failure "no usable algorithms", and
 * a protocol list without NTPv4 the failure "upstream does not offer NTPv4"; an answer without a
 * protocol list means NTPv4 only), or a failure (reason borrowed, copied; UNHEALTHY; next
 * probe after an exponential back-off: backoff_min_ms doubling per consecutive failure, capped
 * at backoff_max_ms). A successful probe resets the back-off unless the last deep check failed
 * (see below). */
int upstream_probe_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id);
uint64_t upstream_next_probe_ms(const struct upstream_registry *r);
void upstream_probe_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms);
void upstream_probe_ok(struct upstream_registry *r, uint32_t id,
		       const struct ke_msg_response *support, uint64_t now_ms);
void upstream_probe_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			   uint64_t now_ms);

/* Deep checks (PROTOCOL.md §4.3): due like probes, only for HEALTHY upstreams when enabled: at
 * once on becoming HEALTHY, then every deep_check_ms. A failure makes the upstream UNHEALTHY
 * with the probe back-off; the next successful probe makes it HEALTHY again (so it is checked
 * again at once), but the back-off keeps growing until a deep check passes, so an upstream whose
 * KE works but NTP does not spends ever less time selectable. Success leaves the state as it is. */
int upstream_deep_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id);
uint64_t upstream_next_deep_ms(const struct upstream_registry *r);
void upstream_deep_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms);
void upstream_deep_result(struct upstream_registry *r, uint32_t id, bool ok, const char *reason,
			  uint64_t now_ms);

/* Session outcomes per upstream: served (cookies delivered; latency of the upstream exchange in
 * ms, kept for p50/p99 over the last 1024) or failed (an upstream failure during a session makes
 * a HEALTHY upstream due for a probe now, unless one is running, so a dead upstream leaves
 * rotation quickly; an UNHEALTHY one keeps its back-off). fixed_key_streak failures in a row
 * (no session served between) make a HEALTHY upstream UNHEALTHY at once with the reason
 * "fixed-key requests fail: REASON"; from then on a successful probe is not enough: it makes a
 * deep check due at once (whatever deep_check_ms), and only that check passing makes the
 * upstream HEALTHY again (a failing one backs off like any failure). "failures" in the status
 * counts session failures and failed probes and deep checks alike; "unhealthy_reason" says why
 * an UNHEALTHY upstream is (null otherwise). */
void upstream_session_ok(struct upstream_registry *r, uint32_t id, uint64_t latency_ms);
void upstream_session_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			     uint64_t now_ms);

/* The Server name the upstream announced in its last Fixed Key response (borrowed, copied), or
 * NULL when it sent none; clients deny the names they were given, so pick matches it too. */
void upstream_server_announced(struct upstream_registry *r, uint32_t id, const char *server);

/* Sessions served and failures counted for upstream id (0 and 0 for an unknown one), for the
 * metrics, which read the registry directly rather than its JSON. */
void upstream_counters(const struct upstream_registry *r, uint32_t id, uint64_t *served,
		       uint64_t *failures);

/* The JSON object of one upstream for /status (new reference): name, port, weight, state, last
 * probe time and result, supported protocols and algorithms, sessions served, failures, p50/p99
 * latency. kept is the number of kept-alive connections (from upstream_io). */
json_t *upstream_status_json(const struct upstream_registry *r, uint32_t id, unsigned kept,
			     uint64_t now_ms, uint64_t wall_now_s);

#endif
