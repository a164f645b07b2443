/* What the data plane knows of the upstreams: an immutable copy of the registry's selection
 * state (names, ports, weights, numbering, tokens, health, support lists, announced names),
 * built by the control plane whenever that state changes (upstream_registry_version) and
 * published in a slot. Each worker picks from the snapshot it holds with its own smooth weighted
 * round-robin state (upstream_picker) and connects with what the snapshot says; outcomes go back
 * to the control plane, which alone changes the registry. Sans-I/O. */
#ifndef NTSPOOL_POOL_UPSTREAM_SNAPSHOT_H
#define NTSPOOL_POOL_UPSTREAM_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_msg.h"
#include "session.h"
#include "upstream.h"

#define UPSTREAM_FAMILY_IPV4 1u
#define UPSTREAM_FAMILY_IPV6 2u

struct upstream_snapshot_entry {
	uint32_t id;
	char *domain;
	uint16_t port;
	uint32_t weight;
	enum ke_numbering numbering;
	char *token; /* secret or NULL; wiped when the snapshot goes */
	enum upstream_state state;
	uint16_t protocols[KE_MSG_MAX_IDS];
	size_t n_protocols;
	/* The algorithms a client may be sent here with: the upstream's supported ones that
	 * passed their latest deep check (every supported one while deep checks are off). */
	struct ke_msg_algorithm algorithms[KE_MSG_MAX_IDS];
	size_t n_algorithms;
	/* Address families of its NTP server (UPSTREAM_FAMILY_* bits; 0: not known yet) and those
	 * whose latest deep check passed (all of families while deep checks are off). */
	uint8_t families, families_ok;
	char **regions; /* the configured regions (lower case), n_regions of them */
	size_t n_regions;
	uint64_t fetched_ms;		     /* when the lists were fetched (the loop's clock) */
	char announced[KE_MSG_NAME_MAX + 1]; /* "" when none */
};

struct upstream_snapshot {
	atomic_uint refs;
	uint64_t version;	   /* the registry's version it copies */
	uint64_t support_cache_ms; /* lists older than this are not used */
	size_t n;
	struct upstream_snapshot_entry e[];
};

/* A new snapshot of r (one reference), or NULL without memory. Forgotten upstreams are absent;
 * every other one is present whatever its state, so workers can still name and reach it. */
struct upstream_snapshot *upstream_snapshot_new(const struct upstream_registry *r);
struct upstream_snapshot *upstream_snapshot_ref(struct upstream_snapshot *s);
void upstream_snapshot_unref(struct upstream_snapshot *s);

struct slot;
/* Makes s a slot of snapshots holding snap (its reference taken; may be NULL). */
void upstream_snapshot_slot_init(struct slot *s, struct upstream_snapshot *snap);

/* The entry of upstream id (borrowed from s), or NULL when s does not know it. */
const struct upstream_snapshot_entry *upstream_snapshot_find(const struct upstream_snapshot *s,
							     uint32_t id);

/* One worker's round-robin state, by upstream id (it survives new snapshots). */
struct upstream_picker;
int upstream_picker_new(struct upstream_picker **out);
void upstream_picker_free(struct upstream_picker *p);

/* Selection for a session (PROTOCOL.md §4 step 3): smooth weighted round-robin among HEALTHY
 * upstreams with fresh lists, not in tried, not denied by req (by domain, ASCII
 * case-insensitive, or by the Server name the upstream last announced); if every candidate is
 * denied, among the denied ones. req may be NULL. Fills *out with pointers into s (valid while
 * the caller holds s). 0, or -ENOENT when no upstream qualifies, -ENOMEM. */
int upstream_snapshot_pick(const struct upstream_snapshot *s, struct upstream_picker *p,
			   const struct ke_msg_request *req, const uint32_t *tried, size_t n_tried,
			   uint64_t now_ms, struct pool_upstream_info *out);

/* Everything a pick for one client may weigh; all borrowed for the call. */
struct upstream_pick_query {
	const struct ke_msg_request *req; /* may be NULL */
	const uint32_t *tried;
	size_t n_tried;
	uint64_t now_ms;
	/* The client's region levels, most specific first (a configured region, its country,
	 * its continent, lower case); the global level is implied after them. */
	const char *const *levels;
	const uint8_t *level_kinds; /* enum geo_kind of each level; NULL: unknown, so only
				     * unqualified region names match */
	size_t n_levels;
	unsigned min_region_servers; /* a level with fewer selectable upstreams is skipped */
	int quarter;		     /* the SNI sub-pool 0..3, or -1 for none */
	uint8_t family;		     /* the client's UPSTREAM_FAMILY_*, 0: unknown */
};

/* Selection with geography, sub-pools and health per AEAD and family:
 *   1. selectable: HEALTHY with fresh lists, and, when the client's family is one the
 *      upstream's NTP server has, a family whose deep check passed;
 *   2. the first level of q->levels with at least min_region_servers selectable upstreams
 *      configured for it (regions, ASCII case-insensitive), else every selectable upstream;
 *   3. with a quarter, every upstream configured for the level (whatever its health, tried
 *      ones included, so the split moves neither on failover nor when one leaves rotation,
 *      and brokers with different health views agree) is split into four weight-balanced
 *      quarters in a fixed order (domain, port): greedily by weight, each to the lightest
 *      quarter; with fewer than four, quarter q is the (q mod n)-th, so the sub-pools overlap
 *      instead of leaving one empty; the quarter keeps its selectable members. The sets
 *      are tried in this order: the level's quarter, the level, the next qualifying levels
 *      (each quarter first), the global set;
 *   4. the classes come first: an upstream that shares an AEAD with the client's request (whose
 *      deep check passed for it) and that the request does not deny, in the first set of
 *      step 3 that has one not tried; only when no set has one, a denied one; only then one
 *      without a shared AEAD (so the client still gets its "no overlap" answer);
 *   5. smooth weighted round-robin within that set and class.
 * 0 and *out (pointers into s), -ENOENT, or -ENOMEM. */
int upstream_snapshot_pick_for(const struct upstream_snapshot *s, struct upstream_picker *p,
			       const struct upstream_pick_query *q,
			       struct pool_upstream_info *out);

/* The quarter (0..3) a TLS SNI selects: "0." to "3." at its start; -1 otherwise. */
int upstream_sni_quarter(const char *sni);

#endif
