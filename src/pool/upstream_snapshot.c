#include "upstream_snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "slot.h"

struct upstream_snapshot *upstream_snapshot_ref(struct upstream_snapshot *s)
{
	if (s)
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void upstream_snapshot_unref(struct upstream_snapshot *s)
{
	if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->e[i].domain);
		for (size_t r = 0; r < s->e[i].n_regions; r++)
			free(s->e[i].regions[r]);
		free(s->e[i].regions);
		if (s->e[i].token) {
			gnutls_memset(s->e[i].token, 0, strlen(s->e[i].token));
			free(s->e[i].token);
		}
	}
	free(s);
}

SLOT_OF(upstream_snapshot, struct upstream_snapshot, upstream_snapshot_ref,
	upstream_snapshot_unref)

const struct upstream_snapshot_entry *upstream_snapshot_find(const struct upstream_snapshot *s,
							     uint32_t id)
{
	for (size_t i = 0; s && i < s->n; i++)
		if (s->e[i].id == id)
			return &s->e[i];
	return NULL;
}

/* Smooth weighted round-robin (nginx) state per upstream id: signed, since a pick subtracts the
 * total. Bounded by the upstreams a registry can hold (configured plus draining). */
struct wrr {
	uint32_t id;
	int64_t current;
};

struct upstream_picker {
	struct wrr v[2 * UPSTREAM_MAX];
	size_t n;
};

int upstream_picker_new(struct upstream_picker **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? 0 : -ENOMEM;
}

void upstream_picker_free(struct upstream_picker *p)
{
	free(p);
}

/* The state of id, made (at 0) when new; entries of upstreams the snapshot no longer has are
 * reused first. NULL only when the table is full of live ids, which the registry's bounds
 * rule out. */
static struct wrr *wrr_of(struct upstream_picker *p, const struct upstream_snapshot *s,
			  uint32_t id)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->v[i].id == id)
			return &p->v[i];
	if (p->n < sizeof p->v / sizeof p->v[0]) {
		p->v[p->n] = (struct wrr){ .id = id };
		return &p->v[p->n++];
	}
	for (size_t i = 0; i < p->n; i++) {
		if (!upstream_snapshot_find(s, p->v[i].id)) {
			p->v[i] = (struct wrr){ .id = id };
			return &p->v[i];
		}
	}
	return NULL;
}

static bool fresh(const struct upstream_snapshot *s, const struct upstream_snapshot_entry *e,
		  uint64_t now_ms)
{
	return now_ms <= e->fetched_ms || now_ms - e->fetched_ms <= s->support_cache_ms;
}

static bool tried_before(uint32_t id, const uint32_t *tried, size_t n_tried)
{
	for (size_t i = 0; i < n_tried; i++)
		if (tried[i] == id)
			return true;
	return false;
}

static bool denied(const struct upstream_snapshot_entry *e, const struct ke_msg_request *req)
{
	if (!req)
		return false;
	return ke_msg_request_denies(req, e->domain) ||
	       (e->announced[0] && ke_msg_request_denies(req, e->announced));
}

int upstream_snapshot_pick(const struct upstream_snapshot *s, struct upstream_picker *p,
			   const struct ke_msg_request *req, const uint32_t *tried, size_t n_tried,
			   uint64_t now_ms, struct pool_upstream_info *out)
{
	if (!s)
		return -ENOENT;
	/* An upstream out of rotation starts afresh when it returns, instead of with a credit
	 * earned while it was not selectable. */
	for (size_t i = 0; i < s->n; i++) {
		if (s->e[i].state == UPSTREAM_HEALTHY)
			continue;
		struct wrr *w = wrr_of(p, s, s->e[i].id);
		if (w)
			w->current = 0;
	}
	/* First the upstreams the client does not deny; only if there is none, the denied ones. */
	for (int pass = 0; pass < 2; pass++) {
		bool want_denied = pass == 1;
		const struct upstream_snapshot_entry *best = NULL;
		struct wrr *best_w = NULL;
		int64_t total = 0;
		for (size_t i = 0; i < s->n; i++) {
			const struct upstream_snapshot_entry *e = &s->e[i];
			if (e->state != UPSTREAM_HEALTHY || !fresh(s, e, now_ms) ||
			    tried_before(e->id, tried, n_tried) || denied(e, req) != want_denied)
				continue;
			struct wrr *w = wrr_of(p, s, e->id);
			if (!w)
				return -ENOMEM;
			w->current += e->weight;
			total += e->weight;
			if (!best || w->current > best_w->current) {
				best = e;
				best_w = w;
			}
		}
		if (!best)
			continue;
		best_w->current -= total;
		*out = (struct pool_upstream_info){
			.id = best->id,
			.name = best->domain,
			.protocols = best->protocols,
			.n_protocols = best->n_protocols,
			.algorithms = best->algorithms,
			.n_algorithms = best->n_algorithms,
			.numbering = best->numbering,
			.token = best->token,
		};
		return 0;
	}
	return -ENOENT;
}
