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
	UPSTREAM_PROBING,   /* configured, no check counted yet: not selectable */
	UPSTREAM_HEALTHY,   /* in rotation: selectable while its support lists are fresh */
	UPSTREAM_UNHEALTHY, /* out of rotation: checks failed, or Fixed Key requests in sessions */
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
	unsigned rise;		    /* healthy-after-passes: checks passed in a row that bring an
				     * upstream back into rotation; 0 = 2 */
	unsigned fall;		    /* unhealthy-after-failures: checks failed in a row that take a
				     * healthy upstream out of rotation; 0 = 2 */
};

/* Configured upstreams at most (more is -EINVAL); as many again may be DRAINING at once, beyond
 * that the oldest draining ones are forgotten by upstream_registry_update. */
#define UPSTREAM_MAX 256

/* Regions per upstream at most, and the length of one. */
#define UPSTREAM_REGIONS_MAX 16
#define UPSTREAM_REGION_MAX 63

struct upstream_spec {
	const char *domain; /* DNS name or IP literal, 1..KE_MSG_NAME_MAX; borrowed, copied */
	uint16_t port;
	uint32_t weight;    /* >= 1 */
	enum ke_numbering numbering; /* its pool record numbers */
	const char *token;  /* authentication token (secret), 1..KE_MSG_TOKEN_MAX bytes, or NULL;
			     * borrowed, copied (and wiped when replaced or forgotten) */
	const char *const *regions; /* n_regions region names, each 1..UPSTREAM_REGION_MAX bytes of
				     * [A-Za-z0-9._-]; borrowed, copied in lower case */
	size_t n_regions;	    /* 0..UPSTREAM_REGIONS_MAX */
};

struct upstream_registry;

/* *out is new (upstream_registry_free). Every upstream starts PROBING with a probe due now.
 * -EINVAL for more than UPSTREAM_MAX specs, an empty or over-long domain, an empty or over-long
 * token, a weight of 0, the same (domain, port) twice, more than UPSTREAM_REGIONS_MAX regions or
 * one that is empty, over-long or has another character; -ENOMEM. */
int upstream_registry_new(struct upstream_registry **out, const struct upstream_spec *specs,
			  size_t n, const struct upstream_timing *timing, uint64_t now_ms);
void upstream_registry_free(struct upstream_registry *r);

/* Applies a new configuration (SIGHUP): upstreams with the same domain (ASCII case-insensitive)
 * and port keep their id, state, score, lists, deep results and counters (weight, numbering,
 * token and regions updated); a DRAINING one that comes back is PROBING again with a probe due
 * now and its score forgotten (its first counted pass admits it); new ones are added PROBING;
 * missing ones become DRAINING. Ids are never reused. Returns 0, or -EINVAL / -ENOMEM (as
 * upstream_registry_new) with the registry unchanged. */
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
 * regions, health, support lists, deep results, announced names; not the counters or the score
 * within a run), and upstream_registry_snapshot copies it (one reference, NULL without memory).
 * Each entry's algorithms and families_ok come from upstream_health_usable over the deep results:
 * while deep checks are off (deep_check_ms 0), every listed algorithm and families_ok =
 * families (both bits when unknown); families are those the deep checks saw (0: unknown). */
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

/* Health. A check is a probe or a complete deep check. Each upstream keeps a score, the run of
 * checks it passed or failed in a row (a pass ends a failure run, a failure a pass run): a
 * HEALTHY upstream becomes UNHEALTHY after timing.fall failures in a row, a PROBING or UNHEALTHY
 * one HEALTHY after timing.rise passes in a row, or at its first pass when no check was counted
 * since it was configured (a restarted broker serves at once). A PROBING upstream that fails a
 * check is UNHEALTHY at once (it was not selectable anyway). Every failed check puts the next
 * probe after an exponential back-off (backoff_min_ms doubling per consecutive failed check,
 * capped at backoff_max_ms); a pass that leaves an upstream out of rotation still puts it
 * backoff_min_ms away, so coming back takes rise - 1 short waits; otherwise probes come every
 * probe_interval_ms. A fixed-key failure streak (below) makes an upstream UNHEALTHY at once.
 *
 * Probing. upstream_probe_due: the next upstream (id) whose probe time has come, or -ENOENT;
 * upstream_next_probe_ms: the earliest probe time of all (UINT64_MAX if none), for the timer.
 * An upstream with a probe started is not due again until its result. DRAINING ones are never
 * probed, and results for them are dropped.
 * Results: a Support response (its lists are cached with now_ms; a pass; only algorithms whose
 * key length is the AEAD's are kept; no such algorithm is the failure "no usable algorithms", and
 * a protocol list without NTPv4 the failure "upstream does not offer NTPv4"; an answer without a
 * protocol list means NTPv4 only), or a failure (reason borrowed, copied; a connection refused or
 * timed out counts like any other). A Support answer is no proof while the last deep check failed
 * or the upstream must prove itself after a fixed-key streak: then the probe is not counted (nor
 * does it reset the back-off) but makes a deep check due at once, which decides. */
int upstream_probe_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id);
uint64_t upstream_next_probe_ms(const struct upstream_registry *r);
void upstream_probe_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms);
void upstream_probe_ok(struct upstream_registry *r, uint32_t id,
		       const struct ke_msg_response *support, uint64_t now_ms);
void upstream_probe_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			   uint64_t now_ms);
/* A probe the upstream answered with an Error or a list we cannot use: its own word rules it
 * out, so a healthy upstream leaves rotation at once instead of after `fall` failures (it would
 * refuse the clients' Fixed Key requests after their keys left). Otherwise as
 * upstream_probe_failed. */
void upstream_probe_refused(struct upstream_registry *r, uint32_t id, const char *reason,
			    uint64_t now_ms);

/* The AEADs one deep check covers at most (the broker implements far fewer), and so its results
 * (one per AEAD and address family). */
#define UPSTREAM_DEEP_AEADS_MAX 8
#define UPSTREAM_DEEP_OUTCOMES_MAX (2 * UPSTREAM_DEEP_AEADS_MAX)

/* One result of a deep check: AEAD aead over one address family of the NTP server. */
struct upstream_deep_outcome {
	uint16_t aead;
	uint8_t family;	    /* UPSTREAM_FAMILY_IPV4 or _IPV6 (upstream_snapshot.h); 0: failed
			     * before an address was tried (Fixed Key exchange, resolution) */
	bool ok;
	const char *reason; /* why not (borrowed, copied); unused when ok */
};

/* Deep checks (PROTOCOL.md §4.3): due like probes, for HEALTHY upstreams when enabled (at once on
 * becoming HEALTHY unless a deep check passed in the run that brought it back, then every
 * deep_check_ms), and for any upstream, enabled or not, whose Support answer was no proof (see
 * Probing). A deep check (upstream_check) runs for every AEAD the upstream lists that the broker
 * implements, on every address family of the NTP server each Fixed Key answer names, and
 * reports once: upstream_deep_result with the families seen (UPSTREAM_FAMILY_* bits, 0 if none
 * was) and the results v[0..n), or n = 0 and reason (borrowed, copied) when no AEAD could be
 * tried. It passes when some AEAD passed on some family. Then a failure only narrows what the
 * snapshot offers: an AEAD that passed on no family leaves its algorithms, a family on which no
 * AEAD passed leaves its families_ok (upstream_health_usable). With no pass it is a failed
 * check and the lists stay whole: the score decides. So an upstream whose KE works but NTP does
 * not leaves rotation after fall deep checks (each probe in between only makes the next one
 * due) and its back-off grows until one passes. The results replace the previous check's;
 * "last_deep_check_result" in the status summarises them: "ok", "ok except AEAD A over FAMILY:
 * REASON" (or "ok except AEAD A: REASON"), or the first failure's reason. */
int upstream_deep_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id);
uint64_t upstream_next_deep_ms(const struct upstream_registry *r);
void upstream_deep_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms);
void upstream_deep_result(struct upstream_registry *r, uint32_t id, uint8_t families,
			  const struct upstream_deep_outcome *v, size_t n, const char *reason,
			  uint64_t now_ms);

/* Session outcomes per upstream: served (cookies delivered; latency of the upstream exchange in
 * ms, kept for p50/p99 over the last 1024) or failed (an upstream failure during a session makes
 * a HEALTHY upstream due for a probe now, unless one is running, so a dead upstream leaves
 * rotation after fall quick probes; an UNHEALTHY one keeps its back-off). Sessions are not
 * checks. fixed_key_streak failures in a row (no session served between) make a HEALTHY
 * upstream UNHEALTHY at once with the reason "fixed-key requests fail: REASON" (counted as a
 * failed check); from then on a successful probe is not enough: it makes a deep check due at
 * once (whatever deep_check_ms), and only a passing deep check ends that (it is a counted pass;
 * rise passes in a row bring the upstream back as usual). "failures" in the status counts
 * session failures and failed probes and deep checks alike; "unhealthy_reason" says why an
 * UNHEALTHY upstream is (null otherwise). */
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

/* The JSON object of one upstream for /status (new reference): name, port, weight, regions,
 * state, score ({"passes", "failures", "rise", "fall"}: the current run), last probe time and
 * result, last deep check time and result, its results ("checks": [{"aead", "family": "ipv4",
 * "ipv6" or null, "ok", "at": Unix s, "reason": null when ok}]), the NTP server's families
 * ("families": ["ipv4", "ipv6"], [] unknown), supported protocols and algorithms, sessions
 * served, failures, p50/p99 latency. kept is the number of kept-alive connections (from
 * upstream_io). */
json_t *upstream_status_json(const struct upstream_registry *r, uint32_t id, unsigned kept,
			     uint64_t now_ms, uint64_t wall_now_s);

#endif
