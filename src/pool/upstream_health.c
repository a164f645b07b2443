#include "upstream_health.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "upstream_snapshot.h"

#define BOTH_FAMILIES (UPSTREAM_FAMILY_IPV4 | UPSTREAM_FAMILY_IPV6)

void upstream_health_init(struct upstream_health *h, const char *domain, uint16_t port,
			  uint64_t now_ms)
{
	*h = (struct upstream_health){ .domain = domain,
				       .port = port,
				       .state = UPSTREAM_PROBING,
				       .next_probe_ms = now_ms };
}

void upstream_health_restart(struct upstream_health *h, uint64_t now_ms)
{
	h->state = UPSTREAM_PROBING;
	h->passes = 0;
	h->failures = 0;
	h->judged = false;
	if (!h->probe_running)
		h->next_probe_ms = now_ms;
}

unsigned upstream_health_rise(const struct upstream_timing *t)
{
	return t->rise ? t->rise : UPSTREAM_HEALTH_RISE;
}

unsigned upstream_health_fall(const struct upstream_timing *t)
{
	return t->fall ? t->fall : UPSTREAM_HEALTH_FALL;
}

bool upstream_health_deep_wanted(const struct upstream_health *h,
				 const struct upstream_timing *t)
{
	if (h->state == UPSTREAM_DRAINING)
		return false;
	return (h->state == UPSTREAM_HEALTHY && t->deep_check_ms) || h->deep_decides;
}

static void set_text(char *dst, const char *src)
{
	snprintf(dst, UPSTREAM_HEALTH_REASON_MAX, "%s", src ? src : "failed");
}

static uint64_t backoff_ms(const struct upstream_timing *t, unsigned streak)
{
	uint64_t b = t->backoff_min_ms;
	for (unsigned i = 1; i < streak && b < t->backoff_max_ms; i++)
		b *= 2;
	return b < t->backoff_max_ms ? b : t->backoff_max_ms;
}

/* Counts one check into the score; says whether the upstream belongs in rotation after it. */
static bool count(struct upstream_health *h, bool pass, const struct upstream_timing *t)
{
	bool first = !h->judged;
	h->judged = true;
	if (pass) {
		h->failures = 0;
		if (h->passes < UINT_MAX)
			h->passes++;
	} else {
		h->passes = 0;
		if (h->failures < UINT_MAX)
			h->failures++;
	}
	if (h->state == UPSTREAM_HEALTHY)
		return pass || h->failures < upstream_health_fall(t);
	return pass && (first || h->passes >= upstream_health_rise(t));
}

/* A failed check; at_once: one that ends rotation whatever the score. */
static bool failed(struct upstream_health *h, const struct upstream_timing *t,
		   const char *reason, uint64_t now_ms, bool at_once)
{
	bool shown = false;
	reason = reason ? reason : "failed";
	h->failures_total++;
	h->fail_streak++;
	h->deep_in_run = false;
	/* While it must prove itself, the Fixed Key failures stay the reason; what failed since
	 * (the recovery deep check, a probe) is said after them. */
	if (h->needs_deep && strcmp(reason, h->streak_reason) != 0)
		snprintf(h->health_reason, sizeof h->health_reason, "%s; since then: %s",
			 h->streak_reason, reason);
	else
		snprintf(h->health_reason, sizeof h->health_reason, "%s", reason);
	bool keep = count(h, false, t) && !at_once;
	if (h->state == UPSTREAM_HEALTHY && keep) {
		log_debug("upstream %s:%u failed a check (%u in a row of %u that end rotation): %s",
			  h->domain, h->port, h->failures, upstream_health_fall(t), reason);
	} else if (h->state != UPSTREAM_UNHEALTHY) {
		log_warn("upstream %s:%u unhealthy: %s", h->domain, h->port, reason);
		h->state = UPSTREAM_UNHEALTHY;
		shown = true;
	}
	if (!h->probe_running)
		h->next_probe_ms = now_ms + backoff_ms(t, h->fail_streak);
	return shown;
}

/* A passed check: into rotation once the score says so, until then the next probe soon. */
static bool passed(struct upstream_health *h, const struct upstream_timing *t, uint64_t now_ms)
{
	if (!count(h, true, t)) {
		uint64_t soon = now_ms + t->backoff_min_ms;
		if (!h->probe_running && h->next_probe_ms > soon)
			h->next_probe_ms = soon;
		return false;
	}
	if (h->state == UPSTREAM_HEALTHY)
		return false;
	log_info("upstream %s:%u healthy", h->domain, h->port);
	h->state = UPSTREAM_HEALTHY;
	if (!h->deep_running)
		h->next_deep_ms = h->deep_in_run ? h->last_deep_ms + t->deep_check_ms : now_ms;
	return true;
}

bool upstream_health_probe_ok(struct upstream_health *h, const struct upstream_timing *t,
			      uint64_t now_ms)
{
	h->probe_running = false;
	h->probed = true;
	h->last_probe_ms = now_ms;
	set_text(h->probe_result, "ok");
	h->next_probe_ms = now_ms + t->probe_interval_ms;
	if (!h->deep_failed)
		h->fail_streak = 0;
	if (h->needs_deep || h->deep_failed) {
		/* The Support answer is no proof: Fixed Key requests or the deep check failed. */
		if (!h->deep_decides)
			log_debug("upstream %s:%u probe ok; a deep check decides", h->domain,
				  h->port);
		h->deep_decides = true;
		if (!h->deep_running)
			h->next_deep_ms = now_ms;
		return false;
	}
	return passed(h, t, now_ms);
}

bool upstream_health_probe_failed(struct upstream_health *h, const struct upstream_timing *t,
				  const char *reason, bool refused, uint64_t now_ms)
{
	h->probe_running = false;
	h->probed = true;
	h->last_probe_ms = now_ms;
	set_text(h->probe_result, reason);
	log_debug("upstream %s:%u probe failed: %s", h->domain, h->port, h->probe_result);
	return failed(h, t, h->probe_result, now_ms, refused);
}

static const char *family_name(uint8_t family)
{
	if (family == UPSTREAM_FAMILY_IPV4)
		return "ipv4";
	return family == UPSTREAM_FAMILY_IPV6 ? "ipv6" : NULL;
}

/* Replaces the deep results; returns whether some AEAD passed, with the summary in deep_result. */
static bool record(struct upstream_health *h, uint8_t families,
		   const struct upstream_deep_outcome *v, size_t n, uint64_t now_ms)
{
	const struct upstream_deep_outcome *fail = NULL;
	bool pass = false;
	if (n > UPSTREAM_DEEP_OUTCOMES_MAX)
		n = UPSTREAM_DEEP_OUTCOMES_MAX;
	for (size_t i = 0; i < n; i++) {
		struct upstream_health_check *c = &h->checks[i];
		*c = (struct upstream_health_check){
			.aead = v[i].aead, .family = v[i].family, .ok = v[i].ok, .at_ms = now_ms
		};
		if (!v[i].ok)
			set_text(c->reason, v[i].reason);
		pass |= v[i].ok;
		if (!v[i].ok && !fail)
			fail = &v[i];
	}
	h->n_checks = n;
	if (families)
		h->families = families;
	if (!fail) {
		set_text(h->deep_result, "ok");
	} else if (!pass) {
		set_text(h->deep_result, fail->reason);
	} else {
		const char *fam = family_name(fail->family);
		snprintf(h->deep_result, sizeof h->deep_result, "ok except AEAD %u%s%s: %s",
			 fail->aead, fam ? " over " : "", fam ? fam : "",
			 fail->reason ? fail->reason : "failed");
	}
	return pass;
}

bool upstream_health_deep_result(struct upstream_health *h, const struct upstream_timing *t,
				 uint8_t families, const struct upstream_deep_outcome *v, size_t n,
				 const char *reason, uint64_t now_ms)
{
	bool ok = false, shown = n > 0;
	if (n > 0)
		ok = record(h, families, v, n, now_ms);
	else
		set_text(h->deep_result, reason);
	h->deep_running = false;
	h->deep_checked = true;
	h->last_deep_ms = now_ms;
	h->next_deep_ms = now_ms + t->deep_check_ms;
	h->deep_failed = !ok;
	h->deep_decides = false;
	if (!ok) {
		log_debug("upstream %s:%u deep check failed: %s", h->domain, h->port,
			  h->deep_result);
		return failed(h, t, h->deep_result, now_ms, false) || shown;
	}
	h->fail_streak = 0;
	h->deep_in_run = true;
	if (h->needs_deep) {
		log_info("upstream %s:%u passed a deep check after its Fixed Key requests failed",
			 h->domain, h->port);
		h->needs_deep = false;
	}
	return passed(h, t, now_ms) || shown;
}

void upstream_health_session_ok(struct upstream_health *h)
{
	h->session_streak = 0;
}

bool upstream_health_session_failed(struct upstream_health *h, const struct upstream_timing *t,
				    const char *reason, uint64_t now_ms)
{
	reason = reason ? reason : "failed";
	log_debug("upstream %s:%u failed in a session: %s", h->domain, h->port, reason);
	unsigned streak = t->fixed_key_streak;
	if (h->state == UPSTREAM_HEALTHY && streak && ++h->session_streak >= streak) {
		/* An upstream that answers probes but fails its Fixed Key requests leaves rotation
		 * at once; only a deep check lets it come back. */
		char why[UPSTREAM_HEALTH_REASON_MAX];
		snprintf(why, sizeof why, "fixed-key requests fail: %s", reason);
		h->session_streak = 0;
		h->needs_deep = true;
		set_text(h->streak_reason, why);
		return failed(h, t, why, now_ms, true);
	}
	h->failures_total++;
	if (h->state == UPSTREAM_HEALTHY && !h->probe_running && h->next_probe_ms > now_ms)
		h->next_probe_ms = now_ms;
	return false;
}

static bool listed(const struct ke_msg_algorithm *in, size_t n, uint16_t aead)
{
	for (size_t i = 0; i < n; i++)
		if (in[i].id == aead)
			return true;
	return false;
}

size_t upstream_health_usable(const struct upstream_health *h, bool deep_on,
			      const struct ke_msg_algorithm *in, size_t n,
			      struct ke_msg_algorithm *out, uint8_t *families_ok)
{
	uint8_t ok = 0;
	for (size_t i = 0; deep_on && i < h->n_checks; i++)
		if (h->checks[i].ok && listed(in, n, h->checks[i].aead))
			ok |= h->checks[i].family;
	if (ok == 0) {
		memcpy(out, in, n * sizeof in[0]);
		*families_ok = h->families ? h->families : BOTH_FAMILIES;
		return n;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		bool tried = false, pass = false;
		for (size_t c = 0; c < h->n_checks; c++) {
			if (h->checks[c].aead == in[i].id) {
				tried = true;
				pass |= h->checks[c].ok;
			}
		}
		if (pass || !tried)
			out[m++] = in[i];
	}
	*families_ok = ok;
	return m;
}

/* ---- Status ------------------------------------------------------------------------------- */

static json_t *wall_time(uint64_t t_ms, uint64_t now_ms, uint64_t wall_now_s)
{
	uint64_t age_s = now_ms > t_ms ? (now_ms - t_ms) / 1000 : 0;
	return json_integer((json_int_t)(wall_now_s > age_s ? wall_now_s - age_s : 0));
}

static json_t *checks_json(const struct upstream_health *h, uint64_t now_ms,
			   uint64_t wall_now_s)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < h->n_checks; i++) {
		const struct upstream_health_check *c = &h->checks[i];
		/* "s?" gives null for NULL; json_pack releases "o" even when it fails. */
		json_t *o = json_pack("{s:i, s:s?, s:b, s:o, s:s?}", "aead", (int)c->aead, "family",
				      family_name(c->family), "ok", c->ok, "at",
				      wall_time(c->at_ms, now_ms, wall_now_s), "reason",
				      c->ok ? NULL : c->reason);
		if (json_array_append_new(a, o) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *families_json(const struct upstream_health *h)
{
	static const uint8_t bits[] = { UPSTREAM_FAMILY_IPV4, UPSTREAM_FAMILY_IPV6 };
	json_t *a = json_array();
	for (size_t i = 0; a && i < sizeof bits / sizeof bits[0]; i++) {
		if ((h->families & bits[i]) &&
		    json_array_append_new(a, json_string(family_name(bits[i]))) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

bool upstream_health_status(const struct upstream_health *h, const struct upstream_timing *t,
			    json_t *o, uint64_t now_ms, uint64_t wall_now_s)
{
	json_t *v[] = {
		json_string(upstream_state_name(h->state)),
		h->state == UPSTREAM_UNHEALTHY ? json_string(h->health_reason) : json_null(),
		json_pack("{s:I, s:I, s:I, s:I}", "passes", (json_int_t)h->passes, "failures",
			  (json_int_t)h->failures, "rise", (json_int_t)upstream_health_rise(t),
			  "fall", (json_int_t)upstream_health_fall(t)),
		h->probed ? wall_time(h->last_probe_ms, now_ms, wall_now_s) : json_null(),
		h->probed ? json_string(h->probe_result) : json_null(),
		h->deep_checked ? wall_time(h->last_deep_ms, now_ms, wall_now_s) : json_null(),
		h->deep_checked ? json_string(h->deep_result) : json_null(),
		checks_json(h, now_ms, wall_now_s),
		families_json(h),
	};
	static const char *const keys[] = { "state",	      "unhealthy_reason",
					    "score",	      "last_probe",
					    "last_probe_result", "last_deep_check",
					    "last_deep_check_result", "checks",
					    "families" };
	bool ok = true;
	/* json_object_set_new takes every value, also when it fails or the value is NULL. */
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		ok &= json_object_set_new(o, keys[i], v[i]) == 0;
	return ok;
}
