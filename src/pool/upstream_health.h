/* The health of one upstream (PROTOCOL.md §4.3), embedded in the registry's record of it: its
 * state and score, the probe and deep-check schedule with the back-off, the fixed-key failure
 * streak, and the latest deep check's results per (AEAD, address family), from which a
 * snapshot learns which of the upstream's algorithms and families work. The rules are those
 * upstream.h documents; the registry feeds results in and reads the fields. Sans-I/O: times are
 * the loop's milliseconds. */
#ifndef NTSPOOL_POOL_UPSTREAM_HEALTH_H
#define NTSPOOL_POOL_UPSTREAM_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ke_msg.h"
#include "upstream.h"

/* What upstream_timing.rise and .fall mean when 0. */
#define UPSTREAM_HEALTH_RISE 2
#define UPSTREAM_HEALTH_FALL 2

/* Reasons are our own short texts; a longer one is cut, never refused. */
#define UPSTREAM_HEALTH_REASON_MAX 128

struct upstream_health_check {
	uint16_t aead;
	uint8_t family; /* UPSTREAM_FAMILY_*; 0: failed before an address was tried */
	bool ok;
	uint64_t at_ms;
	char reason[UPSTREAM_HEALTH_REASON_MAX]; /* "" when ok */
};

struct upstream_health {
	const char *domain; /* the upstream's, for log lines: borrowed */
	uint16_t port;
	enum upstream_state state;

	/* The score: the current run of checks, at most one of the two not 0. */
	unsigned passes, failures;
	bool judged; /* a check was counted since the upstream was configured */

	bool probe_running;
	uint64_t next_probe_ms;
	bool probed;
	uint64_t last_probe_ms;
	char probe_result[UPSTREAM_HEALTH_REASON_MAX];
	unsigned fail_streak; /* failed checks in a row, not ended by a probe that was no proof:
			       * the back-off exponent */

	bool deep_running;
	bool deep_failed;  /* the last deep check failed: a probe ok is no proof */
	bool deep_in_run;  /* a deep check passed since the last failed check */
	bool deep_decides; /* a probe that was no proof passed: a deep check is due and decides */
	uint64_t next_deep_ms;
	bool deep_checked;
	uint64_t last_deep_ms;
	char deep_result[UPSTREAM_HEALTH_REASON_MAX];

	/* Fixed Key requests failed fixed_key_streak times in a row: unhealthy until a deep check
	 * (not only a probe, which a half-broken upstream passes) says it works again. */
	unsigned session_streak;
	bool needs_deep;
	char streak_reason[UPSTREAM_HEALTH_REASON_MAX]; /* why it left rotation, while needs_deep */
	char health_reason[2 * UPSTREAM_HEALTH_REASON_MAX]; /* why it is unhealthy */
	uint64_t failures_total; /* session failures, failed probes and deep checks */

	uint8_t families; /* UPSTREAM_FAMILY_* bits its NTP server was seen with; 0: unknown */
	struct upstream_health_check checks[UPSTREAM_DEEP_OUTCOMES_MAX]; /* the latest deep check */
	size_t n_checks;
};

/* PROBING with a probe due at now_ms, nothing known. domain (borrowed) and port name the
 * upstream in log lines. */
void upstream_health_init(struct upstream_health *h, const char *domain, uint16_t port,
			  uint64_t now_ms);

/* A DRAINING upstream configured again: PROBING, its score forgotten (its next counted pass
 * admits it), a probe due now unless one runs. Deep results, counters and what still has to be
 * proved by a deep check (a fixed-key streak, a failed deep check) stay. */
void upstream_health_restart(struct upstream_health *h, uint64_t now_ms);

/* The timing's rise and fall, 0 read as the default. */
unsigned upstream_health_rise(const struct upstream_timing *t);
unsigned upstream_health_fall(const struct upstream_timing *t);

/* Whether a deep check is wanted now (due at next_deep_ms) with timing t. */
bool upstream_health_deep_wanted(const struct upstream_health *h,
				 const struct upstream_timing *t);

/* Results, for an upstream that is not DRAINING. Each returns true when the state or the deep
 * results changed (what a snapshot shows). probe_ok: the Support answer was usable (the
 * registry took its lists); reason: borrowed, copied, NULL for "failed"; refused: the upstream
 * answered, and its answer rules it out (no fall to wait for). deep_result: as
 * upstream_deep_result. */
bool upstream_health_probe_ok(struct upstream_health *h, const struct upstream_timing *t,
			      uint64_t now_ms);
bool upstream_health_probe_failed(struct upstream_health *h, const struct upstream_timing *t,
				  const char *reason, bool refused, uint64_t now_ms);
bool upstream_health_deep_result(struct upstream_health *h, const struct upstream_timing *t,
				 uint8_t families, const struct upstream_deep_outcome *v, size_t n,
				 const char *reason, uint64_t now_ms);
void upstream_health_session_ok(struct upstream_health *h);
bool upstream_health_session_failed(struct upstream_health *h, const struct upstream_timing *t,
				    const char *reason, uint64_t now_ms);

/* What a client may be sent to, from the supported algorithms in[0..n): into out (n entries of
 * room) those whose AEAD passed on some family or has no result (listed since the last deep
 * check), returning how many, and in *families_ok the families on which some listed AEAD passed.
 * Everything listed, and the known families (both when unknown), while deep checks are off
 * (deep_on false), before the first deep check, and after one in which no listed AEAD passed: a
 * failure of the whole upstream is for the score to judge. */
size_t upstream_health_usable(const struct upstream_health *h, bool deep_on,
			      const struct ke_msg_algorithm *in, size_t n,
			      struct ke_msg_algorithm *out, uint8_t *families_ok);

/* Sets the health members of an upstream's /status object o (upstream_status_json documents
 * them); false without memory. now_ms and wall_now_s are the same instant on the loop's and the
 * wall clock. */
bool upstream_health_status(const struct upstream_health *h, const struct upstream_timing *t,
			    json_t *o, uint64_t now_ms, uint64_t wall_now_s);

#endif
