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

#endif
