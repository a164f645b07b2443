/* The upstream registry with explicit time: selection shares and order, deny fallback, what is
 * never selectable, probe and deep-check scheduling with back-off, reloads, latency percentiles
 * and the /status object. */
#include "upstream.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "upstream_snapshot.h"

#define T0 1000000
#define INTERVAL 60000
#define CACHE 300000
#define BMIN 1000
#define BMAX 600000
#define DEEP 3600000
#define WALL 1795000000

static FILE *devnull;

static void setup(void)
{
	/* Every debug line is formatted, so its arguments are checked under the sanitizers. */
	devnull = fopen("/dev/null", "w");
	cr_assert(devnull);
	log_set_stream(devnull);
	log_set_level(LOG_LEVEL_DEBUG);
}

static void teardown(void)
{
	log_set_stream(NULL);
	fclose(devnull);
}

TestSuite(upstream, .init = setup, .fini = teardown);

/* An upstream speaking the IANA numbering, without a token; one with numbering and token. */
#define SPEC(domain, port, weight) SPEC_T(domain, port, weight, KE_NUMBERING_IANA, NULL)
#define SPEC_T(domain_, port_, weight_, numbering_, token_)                                  \
	{ .domain = (domain_), .port = (port_), .weight = (weight_), .numbering = (numbering_),   \
	  .token = (token_) }

static const struct upstream_timing timing = {
	.probe_interval_ms = INTERVAL,
	.support_cache_ms = CACHE,
	.backoff_min_ms = BMIN,
	.backoff_max_ms = BMAX,
	.deep_check_ms = 0,
};

static struct ke_msg_response support(void)
{
	struct ke_msg_response s = {
		.has_supported_protocols = true,
		.supported_protocols = { 0 },
		.n_supported_protocols = 1,
		.has_supported_algorithms = true,
		.supported_algorithms = { { 15, 32 }, { 17, 64 } },
		.n_supported_algorithms = 2,
	};
	return s;
}

static struct upstream_registry *make(const struct upstream_spec *specs, size_t n,
				      const struct upstream_timing *t)
{
	struct upstream_registry *r = NULL;
	cr_assert_eq(upstream_registry_new(&r, specs, n, t, T0), 0);
	cr_assert_eq(upstream_count(r), n);
	return r;
}

static void make_healthy(struct upstream_registry *r, uint32_t id, uint64_t now)
{
	struct ke_msg_response s = support();
	upstream_probe_started(r, id, now);
	upstream_probe_ok(r, id, &s, now);
	cr_assert_eq(upstream_state(r, id), UPSTREAM_HEALTHY);
}

/* A complete deep check with one result per (AEAD, family) in v. */
static void deep_report(struct upstream_registry *r, uint32_t id, uint8_t families,
			const struct upstream_deep_outcome *v, size_t n, uint64_t now)
{
	upstream_deep_result(r, id, families, v, n, NULL, now);
}

/* A deep check where AEADs 15 and 17 passed, or failed with reason, over IPv4. */
static void deep_ok(struct upstream_registry *r, uint32_t id, uint64_t now)
{
	const struct upstream_deep_outcome v[] = { { 15, UPSTREAM_FAMILY_IPV4, true, NULL },
						   { 17, UPSTREAM_FAMILY_IPV4, true, NULL } };
	deep_report(r, id, UPSTREAM_FAMILY_IPV4, v, 2, now);
}

static void deep_fail(struct upstream_registry *r, uint32_t id, const char *reason,
		      uint64_t now)
{
	const struct upstream_deep_outcome v[] = { { 15, UPSTREAM_FAMILY_IPV4, false, reason },
						   { 17, UPSTREAM_FAMILY_IPV4, false, reason } };
	deep_report(r, id, UPSTREAM_FAMILY_IPV4, v, 2, now);
}

static uint32_t pick(struct upstream_registry *r, const struct ke_msg_request *req,
		     const uint32_t *tried, size_t n_tried, uint64_t now)
{
	struct pool_upstream_info info;
	cr_assert_eq(upstream_pick(r, req, tried, n_tried, now, &info), 0);
	return info.id;
}

static int pick_rc(struct upstream_registry *r, uint64_t now)
{
	struct pool_upstream_info info;
	return upstream_pick(r, NULL, NULL, 0, now, &info);
}

/* A client's request as selection sees it: NTPv4 with AEAD 15, denying nobody yet. */
static struct ke_msg_request client_request(void)
{
	struct ke_msg_request req = { .n_protocols = 1, .aeads = { 15 }, .n_aeads = 1 };
	return req;
}

static void deny(struct ke_msg_request *req, const char *name)
{
	struct ke_msg_name *d = &req->deny[req->n_deny++];
	d->len = strlen(name);
	snprintf(d->name, sizeof d->name, "%s", name);
}

Test(upstream, wrr_shares_follow_weights_exactly)
{
	const struct upstream_spec specs[] = {
		SPEC("a.test", 4460, 1), SPEC("b.test", 4460, 2), SPEC("c.test", 4460, 3) };
	struct upstream_registry *r = make(specs, 3, &timing);
	for (size_t i = 0; i < 3; i++)
		make_healthy(r, upstream_id_at(r, i), T0);
	unsigned count[3] = { 0 };
	for (int i = 0; i < 600; i++) {
		uint32_t id = pick(r, NULL, NULL, 0, T0 + 1);
		cr_assert_lt(id, 3);
		count[id]++;
	}
	cr_assert_eq(count[0], 100);
	cr_assert_eq(count[1], 200);
	cr_assert_eq(count[2], 300);
	upstream_registry_free(r);
}

Test(upstream, wrr_is_smooth)
{
	const struct upstream_spec specs[] = {
		SPEC("a.test", 4460, 5), SPEC("b.test", 4460, 5), SPEC("c.test", 4460, 5) };
	struct upstream_registry *r = make(specs, 3, &timing);
	for (size_t i = 0; i < 3; i++)
		make_healthy(r, upstream_id_at(r, i), T0);
	uint32_t prev = pick(r, NULL, NULL, 0, T0);
	for (int i = 0; i < 300; i++) {
		uint32_t id = pick(r, NULL, NULL, 0, T0);
		cr_assert_neq(id, prev, "picked %u twice in a row at %d", id, i);
		prev = id;
	}
	upstream_registry_free(r);

	/* Weights 5,1,1: the heavy one is interleaved (nginx: a a b a c a a), not 5 in a row. */
	const struct upstream_spec skew[] = {
		SPEC("a.test", 1, 5), SPEC("b.test", 1, 1), SPEC("c.test", 1, 1) };
	r = make(skew, 3, &timing);
	for (size_t i = 0; i < 3; i++)
		make_healthy(r, upstream_id_at(r, i), T0);
	const uint32_t want[] = { 0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0 };
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		cr_assert_eq(pick(r, NULL, NULL, 0, T0), want[i], "pick %zu", i);
	upstream_registry_free(r);
}

Test(upstream, pick_fills_info)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	struct ke_msg_response s = support();
	/* 16 with a wrong key length and an unknown AEAD are not usable for Fixed Key. */
	s.supported_algorithms[0] = (struct ke_msg_algorithm){ 16, 32 };
	s.supported_algorithms[1] = (struct ke_msg_algorithm){ 15, 32 };
	s.supported_algorithms[2] = (struct ke_msg_algorithm){ 17, 32 };
	s.n_supported_algorithms = 3;
	upstream_probe_ok(r, 0, &s, T0);
	struct pool_upstream_info info;
	cr_assert_eq(upstream_pick(r, NULL, NULL, 0, T0, &info), 0);
	cr_assert_eq(info.id, 0);
	cr_assert_str_eq(info.name, "a.test");
	cr_assert_eq(info.n_protocols, 1);
	cr_assert_eq(info.protocols[0], 0);
	cr_assert_eq(info.n_algorithms, 1);
	cr_assert_eq(info.algorithms[0].id, 15);
	cr_assert_eq(info.algorithms[0].key_len, 32);
	upstream_registry_free(r);
}

Test(upstream, deny_skips_and_falls_back)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1), SPEC("b.test", 4460, 1),
					       SPEC("c.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 3, &timing);
	for (size_t i = 0; i < 3; i++)
		make_healthy(r, upstream_id_at(r, i), T0);
	struct ke_msg_request req = client_request();
	deny(&req, "A.TEST");
	deny(&req, "b.Test");
	for (int i = 0; i < 10; i++)
		cr_assert_eq(pick(r, &req, NULL, 0, T0), 2);

	/* The not-denied one tried already: a denied one beats none. */
	const uint32_t tried[] = { 2 };
	unsigned seen[3] = { 0 };
	for (int i = 0; i < 10; i++)
		seen[pick(r, &req, tried, 1, T0)]++;
	cr_assert_eq(seen[0], 5);
	cr_assert_eq(seen[1], 5);
	cr_assert_eq(seen[2], 0);

	deny(&req, "c.test");
	seen[0] = seen[1] = seen[2] = 0;
	for (int i = 0; i < 30; i++)
		seen[pick(r, &req, NULL, 0, T0)]++;
	cr_assert_eq(seen[0], 10);
	cr_assert_eq(seen[1], 10);
	cr_assert_eq(seen[2], 10);
	upstream_registry_free(r);
}

Test(upstream, deny_matches_announced_server)
{
	const struct upstream_spec specs[] = { SPEC("ke1.test", 4460, 1),
					       SPEC("ke2.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 2, &timing);
	make_healthy(r, 0, T0);
	make_healthy(r, 1, T0);
	upstream_server_announced(r, 0, "ntp1.test");
	struct ke_msg_request req = client_request();
	deny(&req, "NTP1.test");
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pick(r, &req, NULL, 0, T0), 1);
	upstream_server_announced(r, 0, NULL);
	unsigned seen[2] = { 0 };
	for (int i = 0; i < 4; i++)
		seen[pick(r, &req, NULL, 0, T0)]++;
	cr_assert_eq(seen[0], 2);
	upstream_registry_free(r);
}

Test(upstream, tried_excluded)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 100), SPEC("b.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 2, &timing);
	make_healthy(r, 0, T0);
	make_healthy(r, 1, T0);
	const uint32_t tried[] = { 0 };
	for (int i = 0; i < 5; i++)
		cr_assert_eq(pick(r, NULL, tried, 1, T0), 1);
	const uint32_t both[] = { 1, 0 };
	struct pool_upstream_info info;
	cr_assert_eq(upstream_pick(r, NULL, both, 2, T0, &info), -ENOENT);
	upstream_registry_free(r);
}

Test(upstream, never_picked_unless_healthy_and_fresh)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_PROBING);
	cr_assert_eq(pick_rc(r, T0), -ENOENT);

	make_healthy(r, 0, T0);
	cr_assert_eq(pick_rc(r, T0 + CACHE), 0);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 1), -ENOENT, "stale lists");

	struct ke_msg_response s = support();
	upstream_probe_ok(r, 0, &s, T0 + CACHE + 1);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 1), 0);
	/* Two failed checks in a row (the default fall) take it out, two passes bring it back. */
	upstream_probe_failed(r, 0, "connection refused", T0 + CACHE + 2);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 2), 0, "one failure is not enough");
	upstream_probe_failed(r, 0, "connection refused", T0 + CACHE + 3);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 3), -ENOENT);

	upstream_probe_ok(r, 0, &s, T0 + CACHE + 4);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 4), -ENOENT, "one pass is not enough");
	upstream_probe_ok(r, 0, &s, T0 + CACHE + 5);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 5), 0);
	cr_assert_eq(upstream_registry_update(r, NULL, 0, T0 + CACHE + 6), 0);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_DRAINING);
	cr_assert_eq(pick_rc(r, T0 + CACHE + 6), -ENOENT);
	upstream_registry_free(r);
}

Test(upstream, unusable_support_is_a_failure)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	struct ke_msg_response s = support();
	s.n_supported_protocols = 0;
	upstream_probe_ok(r, 0, &s, T0);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);

	s = support();
	s.supported_algorithms[0] = (struct ke_msg_algorithm){ 30, 32 };
	s.n_supported_algorithms = 1;
	upstream_probe_ok(r, 0, &s, T0 + 1);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 1, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_probe_result")),
			 "no usable algorithms");
	cr_assert_eq(json_integer_value(json_object_get(j, "failures")), 2);
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, probe_scheduling_and_backoff)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	uint32_t id = 99;
	cr_assert_eq(upstream_next_probe_ms(r), T0);
	cr_assert_eq(upstream_probe_due(r, T0 - 1, &id), -ENOENT);
	cr_assert_eq(upstream_probe_due(r, T0, &id), 0);
	cr_assert_eq(id, 0);
	upstream_probe_started(r, 0, T0);
	cr_assert_eq(upstream_probe_due(r, T0 + 10 * BMAX, &id), -ENOENT, "in flight");
	cr_assert_eq(upstream_next_probe_ms(r), UINT64_MAX);

	/* 1, 2, 4 … s, capped at 10 min. */
	uint64_t now = T0, want = BMIN;
	for (int i = 0; i < 14; i++) {
		upstream_probe_failed(r, 0, "timeout", now);
		cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
		cr_assert_eq(upstream_next_probe_ms(r), now + want, "failure %d", i);
		cr_assert_eq(upstream_probe_due(r, now + want - 1, &id), -ENOENT);
		now += want;
		cr_assert_eq(upstream_probe_due(r, now, &id), 0);
		upstream_probe_started(r, 0, now);
		want = want * 2 > BMAX ? BMAX : want * 2;
	}
	cr_assert_eq(want, BMAX);

	/* The first pass resets the back-off and confirms soon; the second one admits it, and then
	 * probes come at the interval. */
	struct ke_msg_response s = support();
	upstream_probe_ok(r, 0, &s, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_next_probe_ms(r), now + BMIN);
	now += BMIN;
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &s, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(upstream_next_probe_ms(r), now + INTERVAL);
	upstream_probe_failed(r, 0, "timeout", now + INTERVAL);
	cr_assert_eq(upstream_next_probe_ms(r), now + INTERVAL + BMIN, "back-off reset by ok");
	upstream_registry_free(r);
}

Test(upstream, session_failure_triggers_probe)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	make_healthy(r, 0, T0);
	uint32_t id;
	cr_assert_eq(upstream_probe_due(r, T0 + 5, &id), -ENOENT);
	upstream_session_failed(r, 0, "reset", T0 + 5);
	cr_assert_eq(upstream_next_probe_ms(r), T0 + 5);
	cr_assert_eq(upstream_probe_due(r, T0 + 5, &id), 0);
	upstream_probe_started(r, 0, T0 + 5);
	upstream_session_failed(r, 0, "reset", T0 + 6);
	cr_assert_eq(upstream_probe_due(r, T0 + 6, &id), -ENOENT, "not twice in flight");
	upstream_probe_failed(r, 0, "reset", T0 + 7);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "one failed probe of two");
	cr_assert_eq(upstream_next_probe_ms(r), T0 + 7 + BMIN);
	/* Still in rotation: the next session failure makes the second probe due at once. */
	upstream_session_failed(r, 0, "reset", T0 + 8);
	cr_assert_eq(upstream_next_probe_ms(r), T0 + 8);
	upstream_probe_started(r, 0, T0 + 8);
	upstream_probe_failed(r, 0, "reset", T0 + 9);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_next_probe_ms(r), T0 + 9 + 2 * BMIN);
	/* Unhealthy: session failures leave the back-off alone. */
	upstream_session_failed(r, 0, "reset", T0 + 10);
	cr_assert_eq(upstream_next_probe_ms(r), T0 + 9 + 2 * BMIN);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 10, WALL);
	cr_assert_eq(json_integer_value(json_object_get(j, "failures")), 6);
	json_decref(j);
	upstream_registry_free(r);
}

/* An upstream that answers probes but fails its Fixed Key requests: the streak makes it unhealthy
 * at once, with the reason in words; a probe alone does not bring it back (even with periodic deep
 * checks off), a deep check does; a served session resets the streak. */
Test(upstream, fixed_key_failure_streak_needs_a_deep_check)
{
	struct upstream_timing t = timing;
	t.fixed_key_streak = 3;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	make_healthy(r, 0, T0);
	uint64_t v = upstream_registry_version(r);
	upstream_session_failed(r, 0, "upstream answered Error 1", T0 + 1);
	upstream_session_failed(r, 0, "upstream answered Error 1", T0 + 2);
	upstream_session_ok(r, 0, 5);
	upstream_session_failed(r, 0, "upstream answered Error 1", T0 + 3);
	upstream_session_failed(r, 0, "upstream answered Error 1", T0 + 4);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "a served session broke the streak");
	upstream_session_failed(r, 0, "timed out after 2.5 s", T0 + 5);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY, "three in a row");
	cr_assert_gt(upstream_registry_version(r), v, "the workers' snapshot must change");
	cr_assert_eq(pick_rc(r, T0 + 5), -ENOENT);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 5, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "unhealthy_reason")),
			 "fixed-key requests fail: timed out after 2.5 s");
	cr_assert_eq(json_integer_value(json_object_get(j, "failures")), 5);
	json_decref(j);
	uint32_t id;
	cr_assert_eq(upstream_deep_due(r, T0 + 5, &id), -ENOENT, "no deep check before a probe");

	/* The probe passes: still unhealthy, a deep check due at once although they are off. */
	uint64_t now = T0 + 5 + BMIN;
	struct ke_msg_response sup = support();
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &sup, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_deep_due(r, now, &id), 0);
	cr_assert_eq(id, 0);
	upstream_deep_started(r, 0, now);
	deep_fail(r, 0, "NTP authentication failed", now + 10);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_deep_due(r, now + 10, &id), -ENOENT, "the next probe first");
	j = upstream_status_json(r, 0, 0, now + 10, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "unhealthy_reason")),
			 "fixed-key requests fail: timed out after 2.5 s; since then: NTP "
			 "authentication failed",
			 "the Fixed Key failures stay the reason while it must prove itself");
	json_decref(j);

	/* Next probe, next deep check: it passes, which counts; the probe after it (soon) makes
	 * the second pass in a row, and the upstream is back. */
	now = upstream_next_probe_ms(r);
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &sup, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_deep_due(r, now, &id), 0);
	upstream_deep_started(r, 0, now);
	deep_ok(r, 0, now + 10);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY, "one pass of two");
	cr_assert_eq(upstream_next_probe_ms(r), now + 10 + BMIN);
	now += 10 + BMIN;
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &sup, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(pick_rc(r, now), 0);
	cr_assert_eq(upstream_deep_due(r, now + DEEP, &id), -ENOENT,
		     "periodic deep checks stay off");
	j = upstream_status_json(r, 0, 0, now, WALL);
	cr_assert(json_is_null(json_object_get(j, "unhealthy_reason")));
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, earliest_due_first)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 1, 1), SPEC("b.test", 1, 1) };
	struct upstream_registry *r = make(specs, 2, &timing);
	make_healthy(r, 0, T0);
	make_healthy(r, 1, T0 + 10);
	cr_assert_eq(upstream_next_probe_ms(r), T0 + INTERVAL);
	uint32_t id;
	cr_assert_eq(upstream_probe_due(r, T0 + INTERVAL + 10, &id), 0);
	cr_assert_eq(id, 0);
	upstream_probe_started(r, 0, T0 + INTERVAL + 10);
	cr_assert_eq(upstream_probe_due(r, T0 + INTERVAL + 10, &id), 0);
	cr_assert_eq(id, 1);
	upstream_registry_free(r);
}

Test(upstream, deep_check)
{
	struct upstream_timing t = timing;
	t.deep_check_ms = DEEP;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	uint32_t id;
	cr_assert_eq(upstream_deep_due(r, T0, &id), -ENOENT, "only healthy ones");
	make_healthy(r, 0, T0);
	cr_assert_eq(upstream_next_deep_ms(r), T0);
	cr_assert_eq(upstream_deep_due(r, T0, &id), 0);
	upstream_deep_started(r, 0, T0);
	cr_assert_eq(upstream_deep_due(r, T0, &id), -ENOENT, "in flight");
	deep_ok(r, 0, T0 + 100);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(upstream_next_deep_ms(r), T0 + 100 + DEEP);

	/* A failed deep check is one of the two failures that end rotation; the probe after it
	 * (after the back-off) is no proof but makes the next deep check due at once. */
	uint64_t now = T0 + 100 + DEEP;
	cr_assert_eq(upstream_deep_due(r, now, &id), 0);
	upstream_deep_started(r, 0, now);
	deep_fail(r, 0, "NTP authentication failed", now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "one failure of two");
	cr_assert_eq(upstream_next_probe_ms(r), now + BMIN);
	cr_assert_eq(upstream_deep_due(r, now + BMIN, &id), -ENOENT, "the probe first");
	now += BMIN;
	struct ke_msg_response s = support();
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &s, now);
	cr_assert_eq(upstream_deep_due(r, now, &id), 0);
	upstream_deep_started(r, 0, now);
	deep_fail(r, 0, "NTP authentication failed", now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(pick_rc(r, now), -ENOENT);
	cr_assert_eq(upstream_next_probe_ms(r), now + 2 * BMIN);

	/* Out of rotation, a passing probe does not count while deep checks fail, and the
	 * back-off keeps doubling. */
	now += 2 * BMIN;
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &s, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_deep_due(r, now, &id), 0, "the deep check decides");
	upstream_deep_started(r, 0, now);
	deep_fail(r, 0, "NTP authentication failed", now);
	cr_assert_eq(upstream_next_probe_ms(r), now + 4 * BMIN);

	/* NTP works again: the deep check passes (one), the probe soon after (two): back, with no
	 * deep check due at once since one just passed; the back-off is reset. */
	now += 4 * BMIN;
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &s, now);
	upstream_deep_started(r, 0, now);
	deep_ok(r, 0, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_next_probe_ms(r), now + BMIN);
	uint64_t passed_at = now;
	now += BMIN;
	upstream_probe_started(r, 0, now);
	upstream_probe_ok(r, 0, &s, now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(upstream_next_deep_ms(r), passed_at + DEEP);
	upstream_probe_failed(r, 0, "timeout", now + 1);
	cr_assert_eq(upstream_next_probe_ms(r), now + 1 + BMIN, "reset by a passed deep check");

	json_t *j = upstream_status_json(r, 0, 0, passed_at, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_deep_check_result")), "ok");
	cr_assert_eq(json_integer_value(json_object_get(j, "last_deep_check")), WALL);
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, deep_check_off)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	make_healthy(r, 0, T0);
	uint32_t id;
	cr_assert_eq(upstream_deep_due(r, T0 + 10 * DEEP, &id), -ENOENT);
	cr_assert_eq(upstream_next_deep_ms(r), UINT64_MAX);
	upstream_registry_free(r);
}

Test(upstream, readded_while_probing_is_probed_again)
{
	/* Removed while its probe ran, the result arriving while it drains, then configured again:
	 * it must be probed, not left waiting for a probe nobody runs. */
	const struct upstream_spec v1[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(v1, 1, &timing);
	uint32_t id;
	cr_assert_eq(upstream_probe_due(r, T0, &id), 0);
	upstream_probe_started(r, id, T0);
	const struct upstream_spec none[] = { SPEC("z.test", 4460, 1) };
	cr_assert_eq(upstream_registry_update(r, none, 1, T0 + 1), 0);
	cr_assert_eq(upstream_state(r, id), UPSTREAM_DRAINING);
	struct ke_msg_response s = support();
	upstream_probe_ok(r, id, &s, T0 + 2);
	cr_assert_eq(upstream_registry_update(r, v1, 1, T0 + 3), 0);
	cr_assert_eq(upstream_state(r, id), UPSTREAM_PROBING);
	cr_assert_neq(upstream_next_probe_ms(r), UINT64_MAX);
	uint32_t due = UINT32_MAX;
	for (int i = 0; i < 2 && due != id; i++) {
		cr_assert_eq(upstream_probe_due(r, T0 + 3, &due), 0);
		upstream_probe_started(r, due, T0 + 3);
	}
	cr_assert_eq(due, id, "the re-added upstream is due for a probe");
	upstream_registry_free(r);
}

Test(upstream, update_keeps_adds_drains)
{
	const struct upstream_spec v1[] = { SPEC("a.test", 4460, 1), SPEC("b.test", 4460, 1),
					    SPEC("c.test", 4460, 1) };
	struct upstream_registry *r = make(v1, 3, &timing);
	make_healthy(r, 0, T0);
	make_healthy(r, 1, T0);
	upstream_session_ok(r, 0, 7);
	upstream_session_ok(r, 0, 8);

	const struct upstream_spec v2[] = { SPEC("A.TEST", 4460, 4), SPEC("b.test", 4461, 1),
					    SPEC("d.test", 4460, 1) };
	cr_assert_eq(upstream_registry_update(r, v2, 3, T0 + 10), 0);
	cr_assert_eq(upstream_count(r), 5);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(upstream_state(r, 1), UPSTREAM_DRAINING, "another port is another upstream");
	cr_assert_eq(upstream_state(r, 2), UPSTREAM_DRAINING);
	cr_assert_eq(upstream_id_at(r, 3), 3);
	cr_assert_eq(upstream_port(r, 3), 4461);
	cr_assert_eq(upstream_state(r, 3), UPSTREAM_PROBING);
	cr_assert_str_eq(upstream_domain(r, 4), "d.test");

	json_t *j = upstream_status_json(r, 0, 0, T0 + 10, WALL);
	cr_assert_eq(json_integer_value(json_object_get(j, "weight")), 4);
	cr_assert_eq(json_integer_value(json_object_get(j, "sessions_served")), 2);
	cr_assert_str_eq(json_string_value(json_object_get(j, "name")), "a.test");
	json_decref(j);

	/* Draining ones are neither probed nor moved by results. */
	uint32_t id, due[2];
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(upstream_probe_due(r, T0 + 10, &id), 0);
		due[i] = id;
		upstream_probe_started(r, id, T0 + 10);
	}
	cr_assert(due[0] >= 3 && due[1] >= 3 && due[0] != due[1]);
	cr_assert_eq(upstream_probe_due(r, T0 + 10 * BMAX, &id), 0);
	cr_assert_eq(id, 0);
	struct ke_msg_response s = support();
	upstream_probe_ok(r, 1, &s, T0 + 11);
	cr_assert_eq(upstream_state(r, 1), UPSTREAM_DRAINING);

	/* c.test comes back with its id; a forgotten one is gone for good, its id not reused. */
	upstream_forget(r, 1);
	upstream_forget(r, 0);
	cr_assert_eq(upstream_count(r), 4);
	cr_assert_null(upstream_domain(r, 1));
	cr_assert_null(upstream_status_json(r, 1, 0, T0, WALL));
	upstream_session_ok(r, 1, 5);
	const struct upstream_spec v3[] = { SPEC("c.test", 4460, 1), SPEC("b.test", 4460, 1) };
	cr_assert_eq(upstream_registry_update(r, v3, 2, T0 + 20), 0);
	cr_assert_eq(upstream_state(r, 2), UPSTREAM_PROBING);
	cr_assert_eq(upstream_id_at(r, upstream_count(r) - 1), 5);
	cr_assert_str_eq(upstream_domain(r, 5), "b.test");
	upstream_registry_free(r);
}

Test(upstream, invalid_specs_leave_registry_unchanged)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	const struct upstream_spec dup[] = { SPEC("x.test", 1, 1), SPEC("X.test", 1, 2) };
	const struct upstream_spec zero[] = { SPEC("x.test", 1, 0) };
	const struct upstream_spec empty[] = { SPEC("", 1, 1) };
	char longname[KE_MSG_NAME_MAX + 2];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	const struct upstream_spec toolong[] = { SPEC(longname, 1, 1) };
	cr_assert_eq(upstream_registry_update(r, dup, 2, T0), -EINVAL);
	cr_assert_eq(upstream_registry_update(r, zero, 1, T0), -EINVAL);
	cr_assert_eq(upstream_registry_update(r, empty, 1, T0), -EINVAL);
	cr_assert_eq(upstream_registry_update(r, toolong, 1, T0), -EINVAL);
	cr_assert_eq(upstream_count(r), 1);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_PROBING);
	struct upstream_registry *r2 = NULL;
	cr_assert_eq(upstream_registry_new(&r2, dup, 2, &timing, T0), -EINVAL);
	cr_assert_null(r2);
	upstream_registry_free(r);
}

/* ---- Numbering and token per upstream (PROTOCOL.md §2, §3.5) ---- */

Test(upstream, pick_gives_numbering_and_token)
{
	char tok[] = "kelb-token-of-a";
	const struct upstream_spec specs[] = {
		SPEC_T("a.test", 4460, 1, KE_NUMBERING_NTPDRS_V1, tok),
		SPEC("b.test", 4460, 1),
	};
	struct upstream_registry *r = make(specs, 2, &timing);
	/* The registry keeps its own copy: the caller's buffer may be wiped after the call. */
	memset(tok, 'x', sizeof tok - 1);
	make_healthy(r, 0, T0);
	make_healthy(r, 1, T0);
	struct pool_upstream_info info;
	const uint32_t not_b[] = { 1 }, not_a[] = { 0 };
	cr_assert_eq(upstream_pick(r, NULL, not_b, 1, T0, &info), 0);
	cr_assert_eq(info.id, 0);
	cr_assert_eq(info.numbering, KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(info.token, "kelb-token-of-a");
	cr_assert_eq(upstream_numbering(r, 0), KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(upstream_token(r, 0), "kelb-token-of-a");
	cr_assert_eq(upstream_pick(r, NULL, not_a, 1, T0, &info), 0);
	cr_assert_eq(info.id, 1);
	cr_assert_eq(info.numbering, KE_NUMBERING_IANA);
	cr_assert_null(info.token);
	cr_assert_eq(upstream_numbering(r, 1), KE_NUMBERING_IANA);
	cr_assert_null(upstream_token(r, 1));

	/* A secret: never in the status object. */
	json_t *j = upstream_status_json(r, 0, 0, T0, WALL);
	char *text = json_dumps(j, 0);
	cr_assert(text);
	cr_assert_null(strstr(text, "kelb-token-of-a"), "%s", text);
	free(text);
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, update_changes_token_and_numbering)
{
	char tok[] = "token-1";
	struct upstream_spec spec = SPEC_T("a.test", 4460, 1, KE_NUMBERING_IANA, tok);
	struct upstream_registry *r = make(&spec, 1, &timing);
	make_healthy(r, 0, T0);
	upstream_session_ok(r, 0, 5);

	spec.numbering = KE_NUMBERING_NTPDRS_V1;
	spec.token = "token-2";
	cr_assert_eq(upstream_registry_update(r, &spec, 1, T0 + 1), 0);
	cr_assert_eq(upstream_count(r), 1);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "the same upstream, kept");
	cr_assert_eq(upstream_numbering(r, 0), KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(upstream_token(r, 0), "token-2");
	struct pool_upstream_info info;
	cr_assert_eq(upstream_pick(r, NULL, NULL, 0, T0 + 1, &info), 0);
	cr_assert_eq(info.id, 0);
	cr_assert_eq(info.numbering, KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(info.token, "token-2");
	json_t *j = upstream_status_json(r, 0, 0, T0 + 1, WALL);
	cr_assert_eq(json_integer_value(json_object_get(j, "sessions_served")), 1);
	json_decref(j);

	/* The token removed, the numbering back: both follow the configuration. */
	spec.numbering = KE_NUMBERING_IANA;
	spec.token = NULL;
	cr_assert_eq(upstream_registry_update(r, &spec, 1, T0 + 2), 0);
	cr_assert_null(upstream_token(r, 0));
	cr_assert_eq(upstream_numbering(r, 0), KE_NUMBERING_IANA);
	cr_assert_eq(upstream_pick(r, NULL, NULL, 0, T0 + 2, &info), 0);
	cr_assert_null(info.token);
	cr_assert_eq(info.numbering, KE_NUMBERING_IANA);

	/* And added again. */
	spec.token = tok;
	cr_assert_eq(upstream_registry_update(r, &spec, 1, T0 + 3), 0);
	cr_assert_str_eq(upstream_token(r, 0), "token-1");
	upstream_registry_free(r);
}

Test(upstream, invalid_token_lengths_leave_registry_unchanged)
{
	char longest[KE_MSG_TOKEN_MAX + 1], toolong[KE_MSG_TOKEN_MAX + 2];
	memset(longest, 't', sizeof longest - 1);
	longest[sizeof longest - 1] = '\0';
	memset(toolong, 't', sizeof toolong - 1);
	toolong[sizeof toolong - 1] = '\0';
	const struct upstream_spec good = SPEC_T("a.test", 4460, 1, KE_NUMBERING_NTPDRS_V1, "tok");
	struct upstream_registry *r = make(&good, 1, &timing);
	const struct upstream_spec bad[] = {
		SPEC_T("a.test", 4460, 1, KE_NUMBERING_IANA, ""),
		SPEC_T("a.test", 4460, 1, KE_NUMBERING_IANA, toolong),
	};
	for (size_t i = 0; i < 2; i++) {
		/* With a valid new upstream beside it: nothing of the update is applied. */
		const struct upstream_spec both[] = { SPEC("n.test", 1, 1), bad[i] };
		cr_assert_eq(upstream_registry_update(r, both, 2, T0), -EINVAL, "spec %zu", i);
		cr_assert_eq(upstream_count(r), 1);
		cr_assert_str_eq(upstream_token(r, 0), "tok");
		cr_assert_eq(upstream_numbering(r, 0), KE_NUMBERING_NTPDRS_V1);
		cr_assert_eq(upstream_state(r, 0), UPSTREAM_PROBING);
		struct upstream_registry *r2 = NULL;
		cr_assert_eq(upstream_registry_new(&r2, &bad[i], 1, &timing, T0), -EINVAL);
		cr_assert_null(r2);
	}
	const struct upstream_spec edge = SPEC_T("a.test", 4460, 1, KE_NUMBERING_IANA, longest);
	cr_assert_eq(upstream_registry_update(r, &edge, 1, T0), 0, "255 bytes is allowed");
	cr_assert_str_eq(upstream_token(r, 0), longest);
	upstream_registry_free(r);
}

Test(upstream, numbering_and_token_of_an_unknown_id)
{
	const struct upstream_spec specs[] = {
		SPEC_T("a.test", 4460, 1, KE_NUMBERING_NTPDRS_V1, "tok"),
	};
	struct upstream_registry *r = make(specs, 1, &timing);
	cr_assert_eq(upstream_numbering(r, 7), KE_NUMBERING_IANA);
	cr_assert_null(upstream_token(r, 7));
	cr_assert_eq(upstream_numbering(r, UINT32_MAX), KE_NUMBERING_IANA);
	cr_assert_null(upstream_token(r, UINT32_MAX));
	/* Forgotten after draining: as unknown as any other id. */
	cr_assert_eq(upstream_registry_update(r, NULL, 0, T0), 0);
	cr_assert_str_eq(upstream_token(r, 0), "tok", "kept while draining");
	upstream_forget(r, 0);
	cr_assert_eq(upstream_count(r), 0);
	cr_assert_eq(upstream_numbering(r, 0), KE_NUMBERING_IANA);
	cr_assert_null(upstream_token(r, 0));
	upstream_registry_free(r);
}

Test(upstream, bounded_under_reloads)
{
	struct upstream_registry *r = make(NULL, 0, &timing);
	char name[32];
	struct upstream_spec spec = SPEC(name, 1, 1);
	/* Each reload replaces the only upstream; nothing ever releases the draining ones. */
	for (int i = 0; i < 3 * UPSTREAM_MAX; i++) {
		snprintf(name, sizeof name, "u%d.test", i);
		cr_assert_eq(upstream_registry_update(r, &spec, 1, T0 + i), 0);
		cr_assert_leq(upstream_count(r), UPSTREAM_MAX + 1);
	}
	cr_assert_eq(upstream_count(r), UPSTREAM_MAX + 1);
	/* The oldest went first; the newest is the configured one. */
	cr_assert_eq(upstream_id_at(r, 0), 2 * UPSTREAM_MAX - 1);
	cr_assert_eq(upstream_state(r, 3 * UPSTREAM_MAX - 1), UPSTREAM_PROBING);

	struct upstream_spec many[UPSTREAM_MAX + 1];
	for (size_t i = 0; i < UPSTREAM_MAX + 1; i++)
		many[i] = (struct upstream_spec)SPEC("m.test", (uint16_t)i, 1);
	cr_assert_eq(upstream_registry_update(r, many, UPSTREAM_MAX + 1, T0), -EINVAL);
	cr_assert_eq(upstream_registry_update(r, many, UPSTREAM_MAX, T0), 0);
	upstream_registry_free(r);
}

Test(upstream, latency_percentiles_over_last_1024)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	json_t *j = upstream_status_json(r, 0, 0, T0, WALL);
	cr_assert(json_is_null(json_object_get(j, "latency_ms")));
	json_decref(j);

	/* 1..100 shuffled: nearest rank gives p50 = 50, p99 = 99. */
	for (unsigned i = 0; i < 100; i++)
		upstream_session_ok(r, 0, (i * 37) % 100 + 1);
	j = upstream_status_json(r, 0, 0, T0, WALL);
	json_t *lat = json_object_get(j, "latency_ms");
	cr_assert(json_is_real(json_object_get(lat, "p50")));
	cr_assert_float_eq(json_real_value(json_object_get(lat, "p50")), 50.0, 1e-9);
	cr_assert_float_eq(json_real_value(json_object_get(lat, "p99")), 99.0, 1e-9);
	json_decref(j);

	/* 1000 of 5 ms, then 1024 of 1000 ms: only the last 1024 count. */
	for (unsigned i = 0; i < 1000; i++)
		upstream_session_ok(r, 0, 5);
	for (unsigned i = 0; i < 1024; i++)
		upstream_session_ok(r, 0, 1000);
	j = upstream_status_json(r, 0, 0, T0, WALL);
	lat = json_object_get(j, "latency_ms");
	cr_assert_float_eq(json_real_value(json_object_get(lat, "p50")), 1000.0, 1e-9);
	cr_assert_float_eq(json_real_value(json_object_get(lat, "p99")), 1000.0, 1e-9);
	cr_assert_eq(json_integer_value(json_object_get(j, "sessions_served")), 2124);
	json_decref(j);

	/* Half replaced by 1 ms samples: p50 is now 1. */
	for (unsigned i = 0; i < 512; i++)
		upstream_session_ok(r, 0, 1);
	j = upstream_status_json(r, 0, 0, T0, WALL);
	lat = json_object_get(j, "latency_ms");
	cr_assert_float_eq(json_real_value(json_object_get(lat, "p50")), 1.0, 1e-9);
	cr_assert_float_eq(json_real_value(json_object_get(lat, "p99")), 1000.0, 1e-9);
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, status_json_fields_and_types)
{
	const struct upstream_spec specs[] = { SPEC("127.0.0.2", 4460, 3) };
	struct upstream_registry *r = make(specs, 1, &timing);
	json_t *j = upstream_status_json(r, 0, 2, T0, WALL);
	cr_assert(json_is_object(j));
	cr_assert_eq(json_integer_value(json_object_get(j, "id")), 0);
	cr_assert_str_eq(json_string_value(json_object_get(j, "name")), "127.0.0.2");
	cr_assert_eq(json_integer_value(json_object_get(j, "port")), 4460);
	cr_assert_eq(json_integer_value(json_object_get(j, "weight")), 3);
	cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "probing");
	cr_assert(json_is_null(json_object_get(j, "last_probe")));
	cr_assert(json_is_null(json_object_get(j, "last_probe_result")));
	cr_assert(json_is_null(json_object_get(j, "last_deep_check")));
	cr_assert(json_is_null(json_object_get(j, "last_deep_check_result")));
	cr_assert_eq(json_array_size(json_object_get(j, "protocols")), 0);
	cr_assert(json_is_array(json_object_get(j, "algorithms")));
	cr_assert_eq(json_integer_value(json_object_get(j, "kept_connections")), 2);
	cr_assert(json_is_integer(json_object_get(j, "sessions_served")));
	cr_assert(json_is_integer(json_object_get(j, "failures")));
	cr_assert(json_is_null(json_object_get(j, "unhealthy_reason")), "not unhealthy: null");
	cr_assert_eq(json_array_size(json_object_get(j, "regions")), 0);
	cr_assert_eq(json_array_size(json_object_get(j, "checks")), 0);
	cr_assert_eq(json_array_size(json_object_get(j, "families")), 0);
	json_t *score = json_object_get(j, "score");
	cr_assert_eq(json_integer_value(json_object_get(score, "passes")), 0);
	cr_assert_eq(json_integer_value(json_object_get(score, "failures")), 0);
	cr_assert_eq(json_integer_value(json_object_get(score, "rise")), 2, "0 means 2");
	cr_assert_eq(json_integer_value(json_object_get(score, "fall")), 2, "0 means 2");
	cr_assert_eq(json_object_size(j), 20);
	json_decref(j);

	/* The probe result 2.5 s before a status taken at WALL. */
	make_healthy(r, 0, T0);
	j = upstream_status_json(r, 0, 0, T0 + 2500, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "state")), "healthy");
	cr_assert_eq(json_integer_value(json_object_get(j, "last_probe")), WALL - 2);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_probe_result")), "ok");
	json_t *p = json_object_get(j, "protocols");
	cr_assert_eq(json_array_size(p), 1);
	cr_assert_eq(json_integer_value(json_array_get(p, 0)), 0);
	json_t *a = json_object_get(j, "algorithms");
	cr_assert_eq(json_array_size(a), 2);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(a, 1), "id")), 17);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(a, 1), "key_length")), 64);
	json_decref(j);

	cr_assert_str_eq(upstream_state_name(UPSTREAM_UNHEALTHY), "unhealthy");
	cr_assert_str_eq(upstream_state_name(UPSTREAM_DRAINING), "draining");
	upstream_registry_free(r);
}

/* ---- Health with hysteresis, per AEAD and family ---- */

static void probe_pass(struct upstream_registry *r, uint32_t id, uint64_t now)
{
	struct ke_msg_response s = support();
	upstream_probe_started(r, id, now);
	upstream_probe_ok(r, id, &s, now);
}

static void probe_fail(struct upstream_registry *r, uint32_t id, uint64_t now)
{
	upstream_probe_started(r, id, now);
	upstream_probe_failed(r, id, "connection refused", now);
}

static long score_of(struct upstream_registry *r, uint32_t id, const char *field)
{
	json_t *j = upstream_status_json(r, id, 0, T0, WALL);
	long v = (long)json_integer_value(json_object_get(json_object_get(j, "score"), field));
	json_decref(j);
	return v;
}

Test(upstream, rise_and_fall_count_checks_in_a_row)
{
	struct upstream_timing t = timing;
	t.rise = 3;
	t.fall = 4;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	make_healthy(r, 0, T0);
	cr_assert_eq(score_of(r, 0, "passes"), 1);
	cr_assert_eq(score_of(r, 0, "rise"), 3);
	cr_assert_eq(score_of(r, 0, "fall"), 4);
	uint64_t now = T0;
	for (int i = 1; i <= 3; i++) {
		probe_fail(r, 0, ++now);
		cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "failure %d of 4", i);
		cr_assert_eq(pick_rc(r, now), 0);
		cr_assert_eq(score_of(r, 0, "failures"), i);
		cr_assert_eq(score_of(r, 0, "passes"), 0);
	}
	uint64_t v = upstream_registry_version(r);
	probe_fail(r, 0, ++now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY, "the fourth");
	cr_assert_gt(upstream_registry_version(r), v, "the workers' snapshot must change");
	cr_assert_eq(pick_rc(r, now), -ENOENT);
	for (int i = 1; i <= 2; i++) {
		probe_pass(r, 0, ++now);
		cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY, "pass %d of 3", i);
		cr_assert_eq(score_of(r, 0, "passes"), i);
		cr_assert_eq(score_of(r, 0, "failures"), 0);
	}
	probe_pass(r, 0, ++now);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "the third");
	cr_assert_eq(pick_rc(r, now), 0);
	upstream_registry_free(r);
}

Test(upstream, a_failure_among_passes_resets_the_run)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	make_healthy(r, 0, T0);
	probe_fail(r, 0, T0 + 1);
	probe_fail(r, 0, T0 + 2);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	/* pass, fail, pass: never two in a row, so it stays out. */
	probe_pass(r, 0, T0 + 3);
	probe_fail(r, 0, T0 + 4);
	cr_assert_eq(score_of(r, 0, "passes"), 0);
	probe_pass(r, 0, T0 + 5);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	probe_pass(r, 0, T0 + 6);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	/* And the other way: fail, pass, fail keeps it in. */
	probe_fail(r, 0, T0 + 7);
	probe_pass(r, 0, T0 + 8);
	probe_fail(r, 0, T0 + 9);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(score_of(r, 0, "failures"), 1);
	upstream_registry_free(r);
}

Test(upstream, first_pass_admits_at_once_only_without_history)
{
	struct upstream_timing t = timing;
	t.rise = 5;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1), SPEC("b.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 2, &t);
	probe_pass(r, 0, T0);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "a restarted broker serves at once");
	/* A failure first: PROBING becomes UNHEALTHY at once, and then rise passes it takes. */
	probe_fail(r, 1, T0);
	cr_assert_eq(upstream_state(r, 1), UPSTREAM_UNHEALTHY);
	for (int i = 1; i < 5; i++) {
		probe_pass(r, 1, T0 + (uint64_t)i);
		cr_assert_eq(upstream_state(r, 1), UPSTREAM_UNHEALTHY, "pass %d", i);
	}
	probe_pass(r, 1, T0 + 5);
	cr_assert_eq(upstream_state(r, 1), UPSTREAM_HEALTHY);

	/* Removed and configured again: a fresh start, so its first pass admits it again. */
	const struct upstream_spec only_b[] = { SPEC("b.test", 4460, 1) };
	cr_assert_eq(upstream_registry_update(r, only_b, 1, T0 + 6), 0);
	probe_fail(r, 0, T0 + 7);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_DRAINING);
	cr_assert_eq(upstream_registry_update(r, specs, 2, T0 + 8), 0);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_PROBING);
	cr_assert_eq(score_of(r, 0, "passes"), 0);
	probe_pass(r, 0, T0 + 9);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	upstream_registry_free(r);
}

/* A session failure makes a probe due now, and the second probe comes backoff_min_ms later: a
 * dead upstream is out of rotation within that. */
Test(upstream, dead_upstream_leaves_after_two_quick_probes)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	make_healthy(r, 0, T0);
	upstream_session_failed(r, 0, "connection refused", T0 + 100);
	uint32_t id;
	cr_assert_eq(upstream_probe_due(r, T0 + 100, &id), 0);
	probe_fail(r, 0, T0 + 100);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	cr_assert_eq(upstream_next_probe_ms(r), T0 + 100 + BMIN);
	probe_fail(r, 0, T0 + 100 + BMIN);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 100 + BMIN, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "unhealthy_reason")),
			 "connection refused");
	json_decref(j);
	upstream_registry_free(r);
}

/* An answer that rules the upstream out (an Error to the pool's Support request: a refused
 * token, say) takes it out at once: it would refuse the clients' keys too. */
Test(upstream, refused_probe_leaves_at_once)
{
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &timing);
	make_healthy(r, 0, T0);
	upstream_probe_started(r, 0, T0 + 100);
	upstream_probe_refused(r, 0, "authentication refused (upstream answered Error 1)",
			       T0 + 100);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 100, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "unhealthy_reason")),
			 "authentication refused (upstream answered Error 1)");
	json_decref(j);
	upstream_registry_free(r);
}

static struct upstream_snapshot_entry *entry(struct upstream_snapshot *s, uint32_t id)
{
	cr_assert(s);
	const struct upstream_snapshot_entry *e = upstream_snapshot_find(s, id);
	cr_assert(e);
	return (struct upstream_snapshot_entry *)e;
}

static bool has_alg(const struct upstream_snapshot_entry *e, uint16_t aead)
{
	for (size_t i = 0; i < e->n_algorithms; i++)
		if (e->algorithms[i].id == aead)
			return true;
	return false;
}

Test(upstream, failed_aead_leaves_only_that_aead_out)
{
	struct upstream_timing t = timing;
	t.deep_check_ms = DEEP;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	make_healthy(r, 0, T0);
	struct upstream_snapshot *s = upstream_registry_snapshot(r);
	cr_assert_eq(entry(s, 0)->n_algorithms, 2, "no deep result yet: all listed");
	cr_assert_eq(entry(s, 0)->families, 0);
	cr_assert_eq(entry(s, 0)->families_ok, UPSTREAM_FAMILY_IPV4 | UPSTREAM_FAMILY_IPV6);
	upstream_snapshot_unref(s);

	uint64_t v = upstream_registry_version(r);
	upstream_deep_started(r, 0, T0);
	const struct upstream_deep_outcome out[] = {
		{ 15, UPSTREAM_FAMILY_IPV4, true, NULL },
		{ 17, 0, false, "upstream answered Error 1" },
	};
	deep_report(r, 0, UPSTREAM_FAMILY_IPV4, out, 2, T0 + 2000);
	cr_assert_gt(upstream_registry_version(r), v);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY, "the check passed");
	cr_assert_eq(score_of(r, 0, "passes"), 2);
	s = upstream_registry_snapshot(r);
	const struct upstream_snapshot_entry *e = entry(s, 0);
	cr_assert_eq(e->n_algorithms, 1);
	cr_assert_eq(e->algorithms[0].id, 15);
	cr_assert_eq(e->algorithms[0].key_len, 32);
	cr_assert_eq(e->families, UPSTREAM_FAMILY_IPV4);
	cr_assert_eq(e->families_ok, UPSTREAM_FAMILY_IPV4);
	upstream_snapshot_unref(s);
	struct pool_upstream_info info;
	cr_assert_eq(upstream_pick(r, NULL, NULL, 0, T0 + 2000, &info), 0);
	cr_assert_eq(info.n_algorithms, 1);
	cr_assert_eq(info.algorithms[0].id, 15);

	json_t *j = upstream_status_json(r, 0, 0, T0 + 4000, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_deep_check_result")),
			 "ok except AEAD 17: upstream answered Error 1");
	json_t *checks = json_object_get(j, "checks");
	cr_assert_eq(json_array_size(checks), 2);
	json_t *c0 = json_array_get(checks, 0), *c1 = json_array_get(checks, 1);
	cr_assert_eq(json_integer_value(json_object_get(c0, "aead")), 15);
	cr_assert_str_eq(json_string_value(json_object_get(c0, "family")), "ipv4");
	cr_assert(json_is_true(json_object_get(c0, "ok")));
	cr_assert_eq(json_integer_value(json_object_get(c0, "at")), WALL - 2);
	cr_assert(json_is_null(json_object_get(c0, "reason")));
	cr_assert_eq(json_integer_value(json_object_get(c1, "aead")), 17);
	cr_assert(json_is_null(json_object_get(c1, "family")), "failed before any address");
	cr_assert(json_is_false(json_object_get(c1, "ok")));
	cr_assert_str_eq(json_string_value(json_object_get(c1, "reason")),
			 "upstream answered Error 1");
	json_t *fam = json_object_get(j, "families");
	cr_assert_eq(json_array_size(fam), 1);
	cr_assert_str_eq(json_string_value(json_array_get(fam, 0)), "ipv4");
	json_decref(j);

	/* 17 passes in the next check: back in the snapshot. An AEAD the latest check has no
	 * result for (listed since) stays too. */
	deep_ok(r, 0, T0 + 3000);
	s = upstream_registry_snapshot(r);
	cr_assert(has_alg(entry(s, 0), 15) && has_alg(entry(s, 0), 17));
	upstream_snapshot_unref(s);
	const struct upstream_deep_outcome only15[] = { { 15, UPSTREAM_FAMILY_IPV4, true, NULL } };
	deep_report(r, 0, UPSTREAM_FAMILY_IPV4, only15, 1, T0 + 4000);
	s = upstream_registry_snapshot(r);
	cr_assert(has_alg(entry(s, 0), 15) && has_alg(entry(s, 0), 17));
	upstream_snapshot_unref(s);
	upstream_registry_free(r);
}

Test(upstream, families_ok_are_the_families_where_an_aead_passed)
{
	struct upstream_timing t = timing;
	t.deep_check_ms = DEEP;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	make_healthy(r, 0, T0);
	const uint8_t both = UPSTREAM_FAMILY_IPV4 | UPSTREAM_FAMILY_IPV6;
	const struct upstream_deep_outcome out[] = {
		{ 15, UPSTREAM_FAMILY_IPV4, false, "no NTP reply" },
		{ 15, UPSTREAM_FAMILY_IPV6, true, NULL },
		{ 17, UPSTREAM_FAMILY_IPV4, false, "no NTP reply" },
		{ 17, UPSTREAM_FAMILY_IPV6, true, NULL },
	};
	upstream_deep_started(r, 0, T0);
	deep_report(r, 0, both, out, 4, T0 + 1);
	struct upstream_snapshot *s = upstream_registry_snapshot(r);
	const struct upstream_snapshot_entry *e = entry(s, 0);
	cr_assert_eq(e->families, both);
	cr_assert_eq(e->families_ok, UPSTREAM_FAMILY_IPV6);
	cr_assert_eq(e->n_algorithms, 2, "each AEAD passed on a family");
	upstream_snapshot_unref(s);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 1, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_deep_check_result")),
			 "ok except AEAD 15 over ipv4: no NTP reply");
	cr_assert_eq(json_array_size(json_object_get(j, "families")), 2);
	json_decref(j);

	/* A check that saw no address keeps the families known; AEAD 17 failing over IPv4 and
	 * passing nowhere leaves it out, and only IPv4 works. */
	const struct upstream_deep_outcome v4[] = {
		{ 15, UPSTREAM_FAMILY_IPV4, true, NULL },
		{ 17, UPSTREAM_FAMILY_IPV4, false, "NTS NAK for fresh cookies" },
	};
	deep_report(r, 0, 0, v4, 2, T0 + 2);
	s = upstream_registry_snapshot(r);
	e = entry(s, 0);
	cr_assert_eq(e->families, both);
	cr_assert_eq(e->families_ok, UPSTREAM_FAMILY_IPV4);
	cr_assert_eq(e->n_algorithms, 1);
	cr_assert_eq(e->algorithms[0].id, 15);
	upstream_snapshot_unref(s);
	upstream_registry_free(r);
}

/* When nothing passed, the check failed: the score decides, the lists are not emptied under a
 * healthy upstream (which would send its clients a "no overlap" answer). */
Test(upstream, a_failed_check_leaves_the_lists_to_the_score)
{
	struct upstream_timing t = timing;
	t.deep_check_ms = DEEP;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	make_healthy(r, 0, T0);
	deep_ok(r, 0, T0);
	deep_fail(r, 0, "no NTP reply", T0 + 1);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_HEALTHY);
	struct upstream_snapshot *s = upstream_registry_snapshot(r);
	cr_assert_eq(entry(s, 0)->n_algorithms, 2);
	cr_assert_eq(entry(s, 0)->families_ok, UPSTREAM_FAMILY_IPV4);
	upstream_snapshot_unref(s);
	json_t *j = upstream_status_json(r, 0, 0, T0 + 1, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_deep_check_result")),
			 "no NTP reply");
	json_decref(j);

	/* No AEAD could even be tried: a failure with its reason, the results of before kept. */
	upstream_deep_result(r, 0, 0, NULL, 0, "upstream lists no AEAD the broker implements",
			     T0 + 2);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	j = upstream_status_json(r, 0, 0, T0 + 2, WALL);
	cr_assert_str_eq(json_string_value(json_object_get(j, "last_deep_check_result")),
			 "upstream lists no AEAD the broker implements");
	cr_assert_eq(json_array_size(json_object_get(j, "checks")), 2);
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, deep_checks_off_all_algorithms)
{
	struct upstream_timing t = timing;
	t.fixed_key_streak = 1;
	const struct upstream_spec specs[] = { SPEC("a.test", 4460, 1) };
	struct upstream_registry *r = make(specs, 1, &t);
	make_healthy(r, 0, T0);
	struct upstream_snapshot *s = upstream_registry_snapshot(r);
	cr_assert_eq(entry(s, 0)->n_algorithms, 2);
	cr_assert_eq(entry(s, 0)->families, 0);
	cr_assert_eq(entry(s, 0)->families_ok, UPSTREAM_FAMILY_IPV4 | UPSTREAM_FAMILY_IPV6);
	upstream_snapshot_unref(s);

	/* A recovery deep check runs even so, and its per-AEAD results are shown, but with
	 * periodic deep checks off the algorithms stay those listed, families_ok those seen. */
	upstream_session_failed(r, 0, "upstream answered Error 1", T0 + 1);
	cr_assert_eq(upstream_state(r, 0), UPSTREAM_UNHEALTHY);
	probe_pass(r, 0, T0 + 2);
	uint32_t id;
	cr_assert_eq(upstream_deep_due(r, T0 + 2, &id), 0);
	upstream_deep_started(r, 0, T0 + 2);
	const struct upstream_deep_outcome out[] = {
		{ 15, UPSTREAM_FAMILY_IPV6, true, NULL },
		{ 17, UPSTREAM_FAMILY_IPV6, false, "NTS NAK for fresh cookies" },
	};
	deep_report(r, 0, UPSTREAM_FAMILY_IPV6, out, 2, T0 + 3);
	s = upstream_registry_snapshot(r);
	cr_assert_eq(entry(s, 0)->n_algorithms, 2);
	cr_assert_eq(entry(s, 0)->families, UPSTREAM_FAMILY_IPV6);
	cr_assert_eq(entry(s, 0)->families_ok, UPSTREAM_FAMILY_IPV6);
	upstream_snapshot_unref(s);
	upstream_registry_free(r);
}

Test(upstream, regions_copied_lower_case_and_updated)
{
	const char *const ra[] = { "EU", "de-Berlin" };
	const char *const rb[] = { "us.west_2" };
	struct upstream_spec specs[] = { SPEC("a.test", 4460, 1), SPEC("b.test", 4460, 1) };
	specs[0].regions = ra;
	specs[0].n_regions = 2;
	struct upstream_registry *r = make(specs, 2, &timing);
	struct upstream_snapshot *s = upstream_registry_snapshot(r);
	const struct upstream_snapshot_entry *e = entry(s, 0);
	cr_assert_eq(e->n_regions, 2);
	cr_assert_str_eq(e->regions[0], "eu");
	cr_assert_str_eq(e->regions[1], "de-berlin");
	cr_assert_eq(entry(s, 1)->n_regions, 0);
	cr_assert_null(entry(s, 1)->regions);
	upstream_snapshot_unref(s);

	specs[0].regions = rb;
	specs[0].n_regions = 1;
	specs[1].regions = ra;
	specs[1].n_regions = 1;
	uint64_t v = upstream_registry_version(r);
	cr_assert_eq(upstream_registry_update(r, specs, 2, T0 + 1), 0);
	cr_assert_gt(upstream_registry_version(r), v);
	s = upstream_registry_snapshot(r);
	cr_assert_eq(entry(s, 0)->n_regions, 1);
	cr_assert_str_eq(entry(s, 0)->regions[0], "us.west_2");
	cr_assert_eq(entry(s, 1)->n_regions, 1);
	cr_assert_str_eq(entry(s, 1)->regions[0], "eu");
	upstream_snapshot_unref(s);
	json_t *j = upstream_status_json(r, 1, 0, T0, WALL);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "regions"), 0)), "eu");
	json_decref(j);
	upstream_registry_free(r);
}

Test(upstream, invalid_regions_leave_registry_unchanged)
{
	const char *const ok[] = { "eu" };
	struct upstream_spec spec = SPEC("a.test", 4460, 1);
	spec.regions = ok;
	spec.n_regions = 1;
	struct upstream_registry *r = make(&spec, 1, &timing);

	char longest[UPSTREAM_REGION_MAX + 1], toolong[UPSTREAM_REGION_MAX + 2];
	memset(longest, 'r', sizeof longest - 1);
	longest[sizeof longest - 1] = '\0';
	memset(toolong, 'r', sizeof toolong - 1);
	toolong[sizeof toolong - 1] = '\0';
	const char *many[UPSTREAM_REGIONS_MAX + 1];
	for (size_t i = 0; i < UPSTREAM_REGIONS_MAX + 1; i++)
		many[i] = "x";
	const char *const empty[] = { "" }, *const space[] = { "eu west" },
			  *const slash[] = { "eu/west" }, *const null[] = { NULL },
			  *const too_long[] = { toolong };
	const struct {
		const char *const *v;
		size_t n;
	} bad[] = { { empty, 1 },    { space, 1 }, { slash, 1 },
		    { null, 1 },     { too_long, 1 }, { many, UPSTREAM_REGIONS_MAX + 1 },
		    { NULL, 1 } };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct upstream_spec b = SPEC("a.test", 4460, 1);
		b.regions = bad[i].v;
		b.n_regions = bad[i].n;
		cr_assert_eq(upstream_registry_update(r, &b, 1, T0), -EINVAL, "case %zu", i);
		struct upstream_registry *r2 = NULL;
		cr_assert_eq(upstream_registry_new(&r2, &b, 1, &timing, T0), -EINVAL);
		cr_assert_null(r2);
	}
	struct upstream_snapshot *s = upstream_registry_snapshot(r);
	cr_assert_eq(entry(s, 0)->n_regions, 1);
	cr_assert_str_eq(entry(s, 0)->regions[0], "eu");
	upstream_snapshot_unref(s);

	const char *const edge[] = { longest };
	spec.regions = edge;
	cr_assert_eq(upstream_registry_update(r, &spec, 1, T0), 0, "63 bytes is allowed");
	spec.regions = many;
	spec.n_regions = UPSTREAM_REGIONS_MAX;
	cr_assert_eq(upstream_registry_update(r, &spec, 1, T0), 0, "16 regions are allowed");
	upstream_registry_free(r);
}
