/* The broker's selection on hand-built snapshots (upstream_snapshot_pick_for): region levels
 * and their minimum, SNI quarters (disjoint, weight-balanced, order-independent, overlapping
 * when small, failing over), AEAD and family health, the deny fallback, what is never
 * selectable, and upstream_sni_quarter. Requests are parsed from real bytes. */
#include "upstream_snapshot.h"

#include "geo.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1000000
#define CACHE 300000
#define BOTH (UPSTREAM_FAMILY_IPV4 | UPSTREAM_FAMILY_IPV6)
#define MAX_ID 32

/* n entries to be filled by ent(); one reference. */
static struct upstream_snapshot *snap_new(size_t n)
{
	struct upstream_snapshot *s = calloc(1, sizeof *s + n * sizeof s->e[0]);
	cr_assert(s);
	atomic_init(&s->refs, 1);
	s->support_cache_ms = CACHE;
	s->n = n;
	return s;
}

/* Entry i: upstream id at domain:port; healthy, lists fetched at NOW, NTPv4, AEADs 15, 17 and
 * 30, both families working, no region. */
static struct upstream_snapshot_entry *ent(struct upstream_snapshot *s, size_t i, uint32_t id,
					   const char *domain, uint16_t port, uint32_t weight)
{
	static const struct ke_msg_algorithm algs[] = { { 15, 32 }, { 17, 64 }, { 30, 16 } };
	cr_assert_lt(i, s->n);
	cr_assert_lt(id, MAX_ID);
	struct upstream_snapshot_entry *e = &s->e[i];
	e->id = id;
	e->domain = strdup(domain);
	cr_assert(e->domain);
	e->port = port;
	e->weight = weight;
	e->numbering = KE_NUMBERING_IANA;
	e->state = UPSTREAM_HEALTHY;
	e->protocols[0] = 0;
	e->n_protocols = 1;
	memcpy(e->algorithms, algs, sizeof algs);
	e->n_algorithms = 3;
	e->families = BOTH;
	e->families_ok = BOTH;
	e->fetched_ms = NOW;
	return e;
}

static void set_regions(struct upstream_snapshot_entry *e, const char *const *names, size_t n)
{
	e->regions = calloc(n, sizeof *e->regions);
	cr_assert(e->regions);
	for (size_t i = 0; i < n; i++) {
		e->regions[i] = strdup(names[i]);
		cr_assert(e->regions[i]);
	}
	e->n_regions = n;
}

#define REGIONS(e, ...)                                                                        \
	set_regions((e), (const char *const[]){ __VA_ARGS__ },                                 \
		    sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(const char *))

static void set_algorithms(struct upstream_snapshot_entry *e, const struct ke_msg_algorithm *a,
			   size_t n)
{
	memcpy(e->algorithms, a, n * sizeof *a);
	e->n_algorithms = n;
}

static struct upstream_picker *picker(void)
{
	struct upstream_picker *p = NULL;
	cr_assert_eq(upstream_picker_new(&p), 0);
	cr_assert(p);
	return p;
}

/* A new picker in place of p: shares counted from it are exact. */
static struct upstream_picker *fresh(struct upstream_picker *p)
{
	upstream_picker_free(p);
	return picker();
}

static struct upstream_pick_query query(void)
{
	return (struct upstream_pick_query){
		.now_ms = NOW, .min_region_servers = 1, .quarter = -1,
	};
}

/* A client's plain request for NTPv4 with these AEADs and deny names, as the session has it:
 * built as bytes and parsed back. */
static struct ke_msg_request request(const uint16_t *aeads, size_t n_aeads,
				     const char *const *deny, size_t n_deny)
{
	static const uint16_t ntpv4[] = { 0 };
	uint8_t buf[2048];
	int len = ke_msg_build_request(buf, sizeof buf, KE_NUMBERING_IANA, ntpv4, 1, aeads, n_aeads,
				       deny, n_deny);
	cr_assert_gt(len, 0);
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	cr_assert_eq(ke_msg_parse_request(buf, (size_t)len, KE_NUMBERING_IANA, &req, &rej), 0,
		     "%s", rej.reason);
	cr_assert_eq(req.n_aeads, n_aeads);
	cr_assert_eq(req.n_deny, n_deny);
	return req;
}

static uint32_t pick(const struct upstream_snapshot *s, struct upstream_picker *p,
		     const struct upstream_pick_query *q)
{
	struct pool_upstream_info info;
	int rc = upstream_snapshot_pick_for(s, p, q, &info);
	cr_assert_eq(rc, 0, "pick returned %d", rc);
	const struct upstream_snapshot_entry *e = upstream_snapshot_find(s, info.id);
	cr_assert(e, "picked id %u is not in the snapshot", (unsigned)info.id);
	/* What the session is given points into the snapshot's entry. */
	cr_assert_eq(info.name, e->domain);
	cr_assert_eq(info.algorithms, e->algorithms);
	cr_assert_eq(info.n_algorithms, e->n_algorithms);
	cr_assert_eq(info.protocols, e->protocols);
	cr_assert_eq(info.n_protocols, e->n_protocols);
	return info.id;
}

static int pick_rc(const struct upstream_snapshot *s, struct upstream_picker *p,
		   const struct upstream_pick_query *q)
{
	struct pool_upstream_info info;
	return upstream_snapshot_pick_for(s, p, q, &info);
}

/* rounds picks counted by id into count[MAX_ID] (zeroed here). */
static void count_picks(const struct upstream_snapshot *s, struct upstream_picker *p,
			const struct upstream_pick_query *q, unsigned rounds, unsigned *count)
{
	memset(count, 0, MAX_ID * sizeof *count);
	for (unsigned i = 0; i < rounds; i++)
		count[pick(s, p, q)]++;
}

/* The ids picked over rounds picks, as a bit set. */
static uint32_t picked_set(const struct upstream_snapshot *s, struct upstream_picker *p,
			   const struct upstream_pick_query *q, unsigned rounds)
{
	uint32_t set = 0;
	for (unsigned i = 0; i < rounds; i++)
		set |= 1u << pick(s, p, q);
	return set;
}

#define BIT(id) (1u << (id))

/* ---- Regions ------------------------------------------------------------------------------ */

/* a: lan; b, c: de and eu; d: eu; e: none; f: us. */
static struct upstream_snapshot *regional(void)
{
	struct upstream_snapshot *s = snap_new(6);
	REGIONS(ent(s, 0, 0, "a.test", 4460, 1), "lan");
	REGIONS(ent(s, 1, 1, "b.test", 4460, 1), "de", "eu");
	REGIONS(ent(s, 2, 2, "c.test", 4460, 1), "de", "eu");
	REGIONS(ent(s, 3, 3, "d.test", 4460, 1), "eu");
	ent(s, 4, 4, "e.test", 4460, 1);
	REGIONS(ent(s, 5, 5, "f.test", 4460, 1), "us");
	return s;
}

static const char *const lan_de_eu[] = { "lan", "de", "eu" };

Test(pick, most_specific_level_with_enough_servers_wins)
{
	struct upstream_snapshot *s = regional();
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	q.levels = lan_de_eu;
	q.n_levels = 3;

	unsigned count[MAX_ID];
	q.min_region_servers = 1;
	count_picks(s, p, &q, 100, count);
	cr_assert_eq(count[0], 100, "min 1: only the one lan upstream (got %u)", count[0]);

	/* One in lan is too few for 2: the level falls to de, shared evenly. Each share is
	 * counted from a fresh picker, so it is exact. */
	q.min_region_servers = 2;
	p = fresh(p);
	count_picks(s, p, &q, 100, count);
	cr_assert_eq(count[1], 50);
	cr_assert_eq(count[2], 50);

	/* de has 2, eu has 3 (b, c, d). */
	q.min_region_servers = 3;
	p = fresh(p);
	count_picks(s, p, &q, 99, count);
	cr_assert_eq(count[1], 33);
	cr_assert_eq(count[2], 33);
	cr_assert_eq(count[3], 33);

	/* No level has 4: every selectable upstream, in and out of regions. */
	q.min_region_servers = 4;
	p = fresh(p);
	count_picks(s, p, &q, 60, count);
	for (uint32_t id = 0; id < 6; id++)
		cr_assert_eq(count[id], 10, "global share of %u: %u", (unsigned)id, count[id]);

	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

Test(pick, no_matching_level_or_no_levels_means_global)
{
	static const char *const far[] = { "jp", "asia" };
	struct upstream_snapshot *s = regional();
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	q.levels = far;
	q.n_levels = 2;
	cr_assert_eq(picked_set(s, p, &q, 60), 0x3fu);
	q.levels = NULL;
	q.n_levels = 0;
	cr_assert_eq(picked_set(s, p, &q, 60), 0x3fu);
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* Only selectable upstreams count toward min-region-servers: an unhealthy, a stale or a
 * family-broken one in "lan" leaves lan with one, so the level falls to de. */
Test(pick, unselectable_region_members_do_not_count)
{
	for (int how = 0; how < 4; how++) {
		struct upstream_snapshot *s = snap_new(4);
		REGIONS(ent(s, 0, 0, "a.test", 4460, 1), "lan");
		struct upstream_snapshot_entry *b = ent(s, 1, 1, "b.test", 4460, 1);
		REGIONS(b, "lan");
		REGIONS(ent(s, 2, 2, "c.test", 4460, 1), "de");
		REGIONS(ent(s, 3, 3, "d.test", 4460, 1), "de");
		if (how == 1)
			b->state = UPSTREAM_UNHEALTHY;
		else if (how == 2)
			b->fetched_ms = NOW - CACHE - 1;
		else if (how == 3)
			b->families_ok = UPSTREAM_FAMILY_IPV4;
		struct upstream_picker *p = picker();
		struct upstream_pick_query q = query();
		q.levels = lan_de_eu;
		q.n_levels = 3;
		q.min_region_servers = 2;
		q.family = UPSTREAM_FAMILY_IPV6;
		uint32_t want = how == 0 ? BIT(0) | BIT(1) : BIT(2) | BIT(3);
		cr_assert_eq(picked_set(s, p, &q, 40), want, "case %d", how);
		upstream_picker_free(p);
		upstream_snapshot_unref(s);
	}
}

Test(pick, region_names_match_case_insensitively)
{
	static const char *const upper[] = { "LAN", "De" };
	struct upstream_snapshot *s = snap_new(3);
	REGIONS(ent(s, 0, 0, "a.test", 4460, 1), "eu");
	REGIONS(ent(s, 1, 1, "b.test", 4460, 1), "de");
	ent(s, 2, 2, "c.test", 4460, 1);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	q.levels = upper;
	q.n_levels = 2;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(1));
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* NA is Namibia's code and North America's: a qualified entry matches its kind only, an
 * unqualified one any level of its name. */
Test(pick, qualified_regions_match_their_kind_only)
{
	static const char *const namibia[] = { "na", "af" };
	static const uint8_t namibia_kinds[] = { GEO_KIND_COUNTRY, GEO_KIND_CONTINENT };
	static const char *const usa[] = { "us", "na" };
	static const uint8_t usa_kinds[] = { GEO_KIND_COUNTRY, GEO_KIND_CONTINENT };
	struct upstream_snapshot *s = snap_new(3);
	REGIONS(ent(s, 0, 0, "us1.test", 4460, 1), "country:us", "continent:na");
	REGIONS(ent(s, 1, 1, "za1.test", 4460, 1), "continent:af");
	REGIONS(ent(s, 2, 2, "na1.test", 4460, 1), "country:na");
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	q.levels = namibia;
	q.level_kinds = namibia_kinds;
	q.n_levels = 2;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(2), "a Namibian client: Namibia's server");
	s->e[2].state = UPSTREAM_UNHEALTHY;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(1), "then Africa's, never North America's");
	q.levels = usa;
	q.level_kinds = usa_kinds;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(0));
	s->e[0].state = UPSTREAM_UNHEALTHY;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(1), "North America has none left: global");
	/* Without kinds (unknown), a qualified entry matches nothing. */
	s->e[0].state = s->e[2].state = UPSTREAM_HEALTHY;
	q.levels = namibia;
	q.level_kinds = NULL;
	cr_assert_eq(picked_set(s, p, &q, 30), BIT(0) | BIT(1) | BIT(2), "global");
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* ---- SNI quarters ------------------------------------------------------------------------- */

static const char *const letters[] = { "a", "b", "c", "d", "e", "f", "g", "h",
				       "i", "j", "k", "l", "m" };

/* n upstreams "X.test" (X = letters[id]), weights w[id], placed in the order given by
 * order[] (a permutation of 0..n-1; NULL: by id). */
static struct upstream_snapshot *lettered(size_t n, const uint32_t *w, const size_t *order)
{
	struct upstream_snapshot *s = snap_new(n);
	for (size_t i = 0; i < n; i++) {
		size_t id = order ? order[i] : i;
		char name[16];
		snprintf(name, sizeof name, "%s.test", letters[id]);
		ent(s, i, (uint32_t)id, name, 4460, w ? w[id] : 1);
	}
	return s;
}

/* The members of each quarter, as seen over many picks from a fresh picker. */
static void quarters_of(const struct upstream_snapshot *s, uint32_t members[4])
{
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	for (int k = 0; k < 4; k++) {
		q.quarter = k;
		members[k] = picked_set(s, p, &q, 200);
	}
	upstream_picker_free(p);
}

Test(pick, eight_equal_upstreams_make_four_disjoint_pairs)
{
	struct upstream_snapshot *s = lettered(8, NULL, NULL);
	uint32_t m[4];
	quarters_of(s, m);
	uint32_t all = 0;
	for (int k = 0; k < 4; k++) {
		cr_assert_eq(__builtin_popcount(m[k]), 2, "quarter %d has %#x", k, m[k]);
		cr_assert_eq(all & m[k], 0, "quarter %d (%#x) overlaps another", k, m[k]);
		all |= m[k];
	}
	cr_assert_eq(all, 0xffu);

	/* Stable: later picks, interleaved over the quarters, stay in the same members. */
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	for (int i = 0; i < 400; i++) {
		q.quarter = i % 4;
		uint32_t id = pick(s, p, &q);
		cr_assert(m[q.quarter] & BIT(id), "quarter %d picked %u", q.quarter, (unsigned)id);
	}
	/* Within a pair, the two share evenly. */
	unsigned count[MAX_ID];
	q.quarter = 2;
	p = fresh(p);
	count_picks(s, p, &q, 100, count);
	for (uint32_t id = 0; id < 8; id++)
		cr_assert_eq(count[id], (m[2] & BIT(id)) ? 50u : 0u);
	upstream_picker_free(p);

	/* The same upstreams listed in another order split the same way: the order is (domain,
	 * port), not the snapshot's. */
	static const size_t shuffled[] = { 5, 2, 7, 0, 3, 6, 1, 4 };
	static const size_t reversed[] = { 7, 6, 5, 4, 3, 2, 1, 0 };
	const size_t *orders[] = { shuffled, reversed };
	for (size_t o = 0; o < 2; o++) {
		struct upstream_snapshot *t = lettered(8, NULL, orders[o]);
		uint32_t m2[4];
		quarters_of(t, m2);
		for (int k = 0; k < 4; k++)
			cr_assert_eq(m2[k], m[k], "order %zu, quarter %d: %#x, was %#x", o, k,
				     m2[k], m[k]);
		upstream_snapshot_unref(t);
	}
	upstream_snapshot_unref(s);
}

/* The split is over the configured upstreams, not the healthy ones: one leaving rotation
 * empties its own quarter (which then falls over to the level) and moves no other, so brokers
 * whose health views differ never put one server behind two names. */
Test(pick, quarters_do_not_move_when_one_leaves_rotation)
{
	struct upstream_snapshot *s = lettered(5, NULL, NULL);
	uint32_t m[4];
	quarters_of(s, m);
	int single = -1;
	for (int k = 0; k < 4; k++)
		if (__builtin_popcount(m[k]) == 1)
			single = k;
	cr_assert_geq(single, 0, "five equal upstreams: some quarter holds one");
	uint32_t gone = (uint32_t)__builtin_ctz(m[single]);
	for (size_t i = 0; i < s->n; i++)
		if (s->e[i].id == gone)
			s->e[i].state = UPSTREAM_UNHEALTHY;
	uint32_t m2[4];
	quarters_of(s, m2);
	for (int k = 0; k < 4; k++) {
		if (k == single)
			cr_assert_eq(m2[k], 0x1fu & ~BIT(gone), "its quarter falls over: %#x", m2[k]);
		else
			cr_assert_eq(m2[k], m[k], "quarter %d moved: %#x, was %#x", k, m2[k], m[k]);
	}
	upstream_snapshot_unref(s);
}

/* Port breaks a tie of domains, so two upstreams on one host have a fixed place. */
Test(pick, same_domain_other_port_has_a_fixed_order)
{
	struct upstream_snapshot *s = snap_new(2);
	ent(s, 0, 0, "a.test", 4461, 1);
	ent(s, 1, 1, "a.test", 4460, 1);
	struct upstream_snapshot *t = snap_new(2);
	ent(t, 0, 1, "a.test", 4460, 1);
	ent(t, 1, 0, "a.test", 4461, 1);
	uint32_t m[4], m2[4];
	quarters_of(s, m);
	quarters_of(t, m2);
	/* Fewer than four: quarter k is the (k mod 2)-th by (domain, port): port 4460 first. */
	for (int k = 0; k < 4; k++) {
		cr_assert_eq(m[k], BIT(k % 2 ? 0 : 1), "quarter %d: %#x", k, m[k]);
		cr_assert_eq(m2[k], m[k]);
	}
	upstream_snapshot_unref(s);
	upstream_snapshot_unref(t);
}

/* Weights 4 and twelve 1s (16 in all): greedy by weight puts the 4 alone in the first
 * quarter it reaches; the 1s then always go to the lightest of the other three, which end at
 * four each: every quarter weighs 4. */
Test(pick, weighted_quarters_are_balanced_by_weight)
{
	uint32_t w[13];
	for (size_t i = 0; i < 13; i++)
		w[i] = 1;
	w[6] = 4; /* "g": in the middle of the domain order */
	struct upstream_snapshot *s = lettered(13, w, NULL);
	uint32_t m[4];
	quarters_of(s, m);
	uint32_t all = 0;
	int heavy = -1;
	for (int k = 0; k < 4; k++) {
		cr_assert_eq(all & m[k], 0, "quarter %d (%#x) overlaps another", k, m[k]);
		all |= m[k];
		unsigned weight = 0;
		for (uint32_t id = 0; id < 13; id++)
			if (m[k] & BIT(id))
				weight += w[id];
		cr_assert_eq(weight, 4, "quarter %d (%#x) weighs %u", k, m[k], weight);
		if (m[k] & BIT(6))
			heavy = k;
	}
	cr_assert_eq(all, 0x1fffu);
	cr_assert_geq(heavy, 0);
	cr_assert_eq(m[heavy], BIT(6), "the heavy one is alone: %#x", m[heavy]);
	upstream_snapshot_unref(s);
}

Test(pick, fewer_than_four_upstreams_overlap)
{
	/* Listed b before a: the order is by domain. */
	static const size_t ba[] = { 1, 0 };
	struct upstream_snapshot *s = lettered(2, NULL, ba);
	uint32_t m[4];
	quarters_of(s, m);
	cr_assert_eq(m[0], BIT(0));
	cr_assert_eq(m[1], BIT(1));
	cr_assert_eq(m[2], BIT(0));
	cr_assert_eq(m[3], BIT(1));
	upstream_snapshot_unref(s);

	s = lettered(3, NULL, NULL);
	quarters_of(s, m);
	cr_assert_eq(m[0], BIT(0));
	cr_assert_eq(m[1], BIT(1));
	cr_assert_eq(m[2], BIT(2));
	cr_assert_eq(m[3], BIT(0));
	upstream_snapshot_unref(s);

	s = lettered(1, NULL, NULL);
	quarters_of(s, m);
	for (int k = 0; k < 4; k++)
		cr_assert_eq(m[k], BIT(0), "quarter %d: %#x", k, m[k]);
	upstream_snapshot_unref(s);
}

/* Tried members stay in the split; once all of a quarter's are tried, the rest of the level
 * follows, then the global set. */
Test(pick, quarter_fails_over_to_its_level_then_to_global)
{
	static const char *const de[] = { "de" };
	struct upstream_snapshot *s = snap_new(9);
	for (uint32_t id = 0; id < 8; id++) {
		char name[16];
		snprintf(name, sizeof name, "%s.test", letters[id]);
		REGIONS(ent(s, id, id, name, 4460, 1), "de");
	}
	ent(s, 8, 8, "z.test", 4460, 1);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	q.levels = de;
	q.n_levels = 1;
	q.quarter = 1;
	uint32_t members = picked_set(s, p, &q, 100);
	cr_assert_eq(__builtin_popcount(members), 2, "%#x", members);
	cr_assert_eq(members & BIT(8), 0, "z is not in de");
	uint32_t first = (uint32_t)__builtin_ctz(members);
	uint32_t second = (uint32_t)(31 - __builtin_clz(members));

	/* One member tried: the other one, every time. */
	uint32_t tried[9] = { first };
	q.tried = tried;
	q.n_tried = 1;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(second));

	/* Both tried: the six others of de, never z, never a tried one. */
	tried[1] = second;
	q.n_tried = 2;
	cr_assert_eq(picked_set(s, p, &q, 120), 0xffu & ~members);

	/* All of de tried: z. */
	size_t n = 2;
	for (uint32_t id = 0; id < 8; id++)
		if (!(members & BIT(id)))
			tried[n++] = id;
	q.n_tried = n;
	cr_assert_eq(picked_set(s, p, &q, 10), BIT(8));
	tried[n++] = 8;
	q.n_tried = n;
	cr_assert_eq(pick_rc(s, p, &q), -ENOENT);
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* Even with one upstream, a failover in its quarter goes on to the global set. */
Test(pick, quarter_of_one_fails_over)
{
	static const size_t ba[] = { 1, 0 };
	struct upstream_snapshot *s = lettered(2, NULL, ba);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	const uint32_t tried[] = { 0 };
	q.quarter = 2; /* a */
	q.tried = tried;
	q.n_tried = 1;
	cr_assert_eq(pick(s, p, &q), 1);
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

Test(pick, no_quarter_is_the_whole_set_by_weight)
{
	static const uint32_t w[] = { 3, 1 };
	struct upstream_snapshot *s = lettered(2, w, NULL);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	unsigned count[MAX_ID];
	count_picks(s, p, &q, 400, count);
	cr_assert_eq(count[0], 300);
	cr_assert_eq(count[1], 100);
	/* Smooth: never more than three of the heavy one in a row. */
	unsigned run = 0;
	for (int i = 0; i < 40; i++) {
		run = pick(s, p, &q) == 0 ? run + 1 : 0;
		cr_assert_leq(run, 3);
	}
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* ---- AEADs, deny, families ---------------------------------------------------------------- */

/* a lists only AEAD 15 (its deep check for 17 failed), b lists 15 and 17. A client asking only
 * for 17 goes to b while b is selectable, and to a (for its "no overlap") when it is not. */
Test(pick, aead_goes_where_its_check_passed)
{
	static const struct ke_msg_algorithm only15[] = { { 15, 32 } };
	static const struct ke_msg_algorithm both[] = { { 15, 32 }, { 17, 64 } };
	static const uint16_t want17[] = { 17 };
	static const uint16_t want15[] = { 15 };
	struct upstream_snapshot *s = snap_new(2);
	set_algorithms(ent(s, 0, 0, "a.test", 4460, 5), only15, 1);
	struct upstream_snapshot_entry *b = ent(s, 1, 1, "b.test", 4460, 1);
	set_algorithms(b, both, 2);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	struct ke_msg_request req = request(want17, 1, NULL, 0);
	q.req = &req;
	cr_assert_eq(picked_set(s, p, &q, 50), BIT(1));

	/* Asking for 15 too: both share one, by weight. */
	static const uint16_t want17_15[] = { 17, 15 };
	struct ke_msg_request req2 = request(want17_15, 2, NULL, 0);
	q.req = &req2;
	p = fresh(p);
	unsigned count[MAX_ID];
	count_picks(s, p, &q, 60, count);
	cr_assert_eq(count[0], 50);
	cr_assert_eq(count[1], 10);

	/* The id alone is not enough: the key length must match. */
	static const struct ke_msg_algorithm wrong_len[] = { { 15, 32 }, { 17, 32 } };
	set_algorithms(b, wrong_len, 2);
	q.req = &req;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(0) | BIT(1), "no one shares 17 now");

	/* None shares it: an upstream is still returned. */
	set_algorithms(b, only15, 1);
	cr_assert_eq(picked_set(s, p, &q, 60), BIT(0) | BIT(1));

	/* b, the only one with 17, out of rotation: a, for the "no overlap" answer. */
	set_algorithms(b, both, 2);
	b->state = UPSTREAM_UNHEALTHY;
	cr_assert_eq(picked_set(s, p, &q, 10), BIT(0));

	/* A client asking for 15 is never held back by b's absence. */
	struct ke_msg_request req15 = request(want15, 1, NULL, 0);
	q.req = &req15;
	cr_assert_eq(picked_set(s, p, &q, 10), BIT(0));
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* AEAD 30 (AES-128-GCM-SIV) is one the broker cannot key (ke_msg_aead_key_len is 0), so no
 * upstream shares it even when it lists it: a client asking only for it still gets an
 * upstream, whose answer to the session is then "no overlap". */
Test(pick, aead_the_broker_cannot_use_shares_with_none)
{
	static const struct ke_msg_algorithm no30[] = { { 15, 32 }, { 17, 64 } };
	static const uint16_t want30[] = { 30 };
	struct upstream_snapshot *s = snap_new(2);
	set_algorithms(ent(s, 0, 0, "a.test", 4460, 1), no30, 2);
	ent(s, 1, 1, "b.test", 4460, 1); /* lists 30 */
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	struct ke_msg_request req = request(want30, 1, NULL, 0);
	q.req = &req;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(0) | BIT(1));
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

Test(pick, denied_only_when_every_other_is_denied)
{
	static const uint16_t aead15[] = { 15 };
	struct upstream_snapshot *s = snap_new(3);
	ent(s, 0, 0, "a.test", 4460, 1);
	ent(s, 1, 1, "b.test", 4460, 1);
	struct upstream_snapshot_entry *c = ent(s, 2, 2, "c.test", 4460, 1);
	snprintf(c->announced, sizeof c->announced, "ntp.c.example");
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();

	/* By domain (any case) and by the announced Server name. */
	static const char *const deny_ac[] = { "A.TEST", "NTP.C.example" };
	struct ke_msg_request req = request(aead15, 1, deny_ac, 2);
	q.req = &req;
	cr_assert_eq(picked_set(s, p, &q, 30), BIT(1));

	/* b tried: only denied ones remain, so denied ones are picked. */
	const uint32_t tried_b[] = { 1 };
	q.tried = tried_b;
	q.n_tried = 1;
	cr_assert_eq(picked_set(s, p, &q, 30), BIT(0) | BIT(2));

	/* Every one denied: still an answer. */
	static const char *const deny_all[] = { "a.test", "b.test", "c.test" };
	struct ke_msg_request all = request(aead15, 1, deny_all, 3);
	q.req = &all;
	q.n_tried = 0;
	cr_assert_eq(picked_set(s, p, &q, 30), BIT(0) | BIT(1) | BIT(2));
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

/* A denied upstream that shares an AEAD comes before one that shares none (step 4's order). */
Test(pick, denied_with_aead_before_undenied_without)
{
	static const struct ke_msg_algorithm only15[] = { { 15, 32 } };
	static const uint16_t want17[] = { 17 };
	static const char *const deny_b[] = { "b.test" };
	struct upstream_snapshot *s = snap_new(2);
	set_algorithms(ent(s, 0, 0, "a.test", 4460, 1), only15, 1);
	ent(s, 1, 1, "b.test", 4460, 1);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	struct ke_msg_request req = request(want17, 1, deny_b, 1);
	q.req = &req;
	cr_assert_eq(picked_set(s, p, &q, 20), BIT(1));
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

Test(pick, client_family_needs_a_working_family)
{
	struct upstream_snapshot *s = snap_new(4);
	struct upstream_snapshot_entry *a = ent(s, 0, 0, "a.test", 4460, 1);
	a->families_ok = UPSTREAM_FAMILY_IPV4; /* its IPv6 deep check failed */
	struct upstream_snapshot_entry *b = ent(s, 1, 1, "b.test", 4460, 1);
	b->families = b->families_ok = UPSTREAM_FAMILY_IPV4; /* has no IPv6 at all */
	struct upstream_snapshot_entry *c = ent(s, 2, 2, "c.test", 4460, 1);
	c->families = c->families_ok = 0; /* not known yet */
	ent(s, 3, 3, "d.test", 4460, 1);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();

	q.family = UPSTREAM_FAMILY_IPV6;
	cr_assert_eq(picked_set(s, p, &q, 60), BIT(1) | BIT(2) | BIT(3), "a is broken for IPv6");
	q.family = UPSTREAM_FAMILY_IPV4;
	cr_assert_eq(picked_set(s, p, &q, 60), 0xfu);
	q.family = 0;
	cr_assert_eq(picked_set(s, p, &q, 60), 0xfu);

	/* Nothing else works for IPv6: a is not picked anyway. */
	const uint32_t tried[] = { 1, 2, 3 };
	q.family = UPSTREAM_FAMILY_IPV6;
	q.tried = tried;
	q.n_tried = 3;
	cr_assert_eq(pick_rc(s, p, &q), -ENOENT);
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

Test(pick, stale_or_unhealthy_never_picked)
{
	struct upstream_snapshot *s = snap_new(7);
	ent(s, 0, 0, "a.test", 4460, 1)->fetched_ms = NOW - CACHE - 1;   /* stale */
	ent(s, 1, 1, "b.test", 4460, 1)->fetched_ms = NOW - CACHE;	 /* just fresh */
	ent(s, 2, 2, "c.test", 4460, 1)->state = UPSTREAM_PROBING;
	ent(s, 3, 3, "d.test", 4460, 1)->state = UPSTREAM_UNHEALTHY;
	ent(s, 4, 4, "e.test", 4460, 1)->state = UPSTREAM_DRAINING;
	ent(s, 5, 5, "f.test", 4460, 1)->fetched_ms = NOW + 5000; /* a clock behind the fetch */
	ent(s, 6, 6, "g.test", 4460, 100)->fetched_ms = 0;	   /* never: stale at NOW */
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	cr_assert_eq(picked_set(s, p, &q, 40), BIT(1) | BIT(5));
	for (int k = 0; k < 4; k++) {
		q.quarter = k;
		cr_assert_eq(picked_set(s, p, &q, 10) & ~(BIT(1) | BIT(5)), 0);
	}
	const uint32_t tried[] = { 1, 5 };
	q.quarter = -1;
	q.tried = tried;
	q.n_tried = 2;
	cr_assert_eq(pick_rc(s, p, &q), -ENOENT);
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}

Test(pick, nothing_to_pick)
{
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	cr_assert_eq(pick_rc(NULL, p, &q), -ENOENT);
	struct upstream_snapshot *s = snap_new(0);
	cr_assert_eq(pick_rc(s, p, &q), -ENOENT);
	q.quarter = 0;
	cr_assert_eq(pick_rc(s, p, &q), -ENOENT);
	upstream_snapshot_unref(s);
	upstream_picker_free(p);
}

/* ---- upstream_sni_quarter ----------------------------------------------------------------- */

Test(pick, sni_quarter)
{
	cr_assert_eq(upstream_sni_quarter("0.pool.test"), 0);
	cr_assert_eq(upstream_sni_quarter("1.pool.test"), 1);
	cr_assert_eq(upstream_sni_quarter("2.pool.test"), 2);
	cr_assert_eq(upstream_sni_quarter("3.x"), 3);
	static const char *const none[] = { "4.x", "0", ".x", "", "00.x", "0x", "9.pool.test",
					    "a.pool.test", "pool.test", "-1.x" };
	for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
		cr_assert_eq(upstream_sni_quarter(none[i]), -1, "\"%s\"", none[i]);
	cr_assert_eq(upstream_sni_quarter(NULL), -1);
}

/* A quarter is preferred only among equally good candidates: when the client denies both members
 * of its quarter, or they lack the one AEAD it asks for, the rest of the level serves it. */
Test(pick, quarter_yields_to_a_better_class_elsewhere)
{
	static const uint16_t aead15[] = { 15 }, want17[] = { 17 };
	static const struct ke_msg_algorithm only15[] = { { 15, 32 } };
	struct upstream_snapshot *s = lettered(8, NULL, NULL);
	uint32_t m[4];
	quarters_of(s, m);
	const char *deny[2];
	size_t n = 0;
	for (uint32_t id = 0; id < 8; id++)
		if (m[0] & BIT(id))
			deny[n++] = s->e[id].domain;
	cr_assert_eq(n, 2);
	struct upstream_picker *p = picker();
	struct upstream_pick_query q = query();
	q.quarter = 0;
	struct ke_msg_request req = request(aead15, 1, deny, 2);
	q.req = &req;
	cr_assert_eq(picked_set(s, p, &q, 60), 0xffu & ~m[0]);

	for (uint32_t id = 0; id < 8; id++)
		if (m[0] & BIT(id))
			set_algorithms(&s->e[id], only15, 1);
	struct ke_msg_request req17 = request(want17, 1, NULL, 0);
	q.req = &req17;
	cr_assert_eq(picked_set(s, p, &q, 60), 0xffu & ~m[0]);
	upstream_picker_free(p);
	upstream_snapshot_unref(s);
}
