#include "upstream_snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>

#include "geo.h"
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

/* The state of entry e of s, made (at 0) when new; entries of upstreams the snapshot no longer
 * has are reused first. NULL only when the table is full of live ids, which the registry's
 * bounds rule out. */
static struct wrr *wrr_of(struct upstream_picker *p, const struct upstream_snapshot *s,
			  const struct upstream_snapshot_entry *e)
{
	uint32_t id = e->id;
	/* States are made in the snapshot's order, and snapshots rarely reorder, so the state of
	 * the i-th entry is usually the i-th: a pick over n upstreams stays O(n), not O(n^2). */
	size_t hint = (size_t)(e - s->e);
	if (hint < p->n && p->v[hint].id == id)
		return &p->v[hint];
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

/* The client's request shares an AEAD with what passed at e. No request: any does. */
static bool shares_aead(const struct upstream_snapshot_entry *e, const struct ke_msg_request *req)
{
	if (!req)
		return true;
	for (size_t i = 0; i < req->n_aeads; i++) {
		size_t key_len = ke_msg_aead_key_len(req->aeads[i]);
		if (key_len == 0)
			continue;
		for (size_t j = 0; j < e->n_algorithms; j++)
			if (e->algorithms[j].id == req->aeads[i] && e->algorithms[j].key_len == key_len)
				return true;
	}
	return false;
}

static bool selectable(const struct upstream_snapshot *s, const struct upstream_snapshot_entry *e,
		       const struct upstream_pick_query *q)
{
	if (e->state != UPSTREAM_HEALTHY || !fresh(s, e, q->now_ms))
		return false;
	/* A client of a family the NTP server has is sent there only if that family works. */
	return !(q->family && (e->families & q->family) && !(e->families_ok & q->family));
}

/* Whether one of e's `regions` names the level: "country:de" only a country level, "de" any
 * level of that name (the configuration refuses unqualified codes a country and a continent
 * share). kind 0: unknown. */
static bool in_region(const struct upstream_snapshot_entry *e, const char *level, uint8_t kind)
{
	static const struct {
		const char *prefix;
		uint8_t kind;
	} kinds[] = { { "region:", GEO_KIND_REGION },
		      { "country:", GEO_KIND_COUNTRY },
		      { "continent:", GEO_KIND_CONTINENT } };
	for (size_t i = 0; i < e->n_regions; i++) {
		const char *name = e->regions[i];
		const char *colon = strchr(name, ':');
		if (colon) {
			/* The configuration admits only the three qualifiers. */
			size_t n = (size_t)(colon - name) + 1;
			bool same = false;
			for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
				if (strncasecmp(name, kinds[k].prefix, n) == 0 &&
				    kinds[k].prefix[n] == '\0')
					same = kinds[k].kind == kind;
			if (!same)
				continue;
			name = colon + 1;
		}
		if (strcasecmp(name, level) == 0)
			return true;
	}
	return false;
}

/* The quarters' fixed order: by domain (case-insensitively), then port, then id. */
static int entry_order(const void *a, const void *b)
{
	const struct upstream_snapshot_entry *x = *(const struct upstream_snapshot_entry *const *)a;
	const struct upstream_snapshot_entry *y = *(const struct upstream_snapshot_entry *const *)b;
	int c = strcasecmp(x->domain, y->domain);
	if (c)
		return c;
	if (x->port != y->port)
		return x->port < y->port ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* Heaviest first, the fixed order breaking ties. */
static int weight_order(const void *a, const void *b)
{
	const struct upstream_snapshot_entry *x = *(const struct upstream_snapshot_entry *const *)a;
	const struct upstream_snapshot_entry *y = *(const struct upstream_snapshot_entry *const *)b;
	if (x->weight != y->weight)
		return x->weight > y->weight ? -1 : 1;
	return entry_order(a, b);
}

/* Keeps in set[0..n) the members of quarter q (see upstream_snapshot_pick_for); returns how
 * many. */
static size_t keep_quarter(const struct upstream_snapshot_entry **set, size_t n, int q)
{
	if (n == 0)
		return 0;
	if (n < 4) {
		qsort(set, n, sizeof *set, entry_order);
		set[0] = set[(size_t)q % n];
		return 1;
	}
	qsort(set, n, sizeof *set, weight_order);
	uint64_t load[4] = { 0 };
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		int lightest = 0;
		for (int k = 1; k < 4; k++)
			if (load[k] < load[lightest])
				lightest = k;
		load[lightest] += set[i]->weight;
		if (lightest == q)
			set[kept++] = set[i];
	}
	return kept;
}

/* The preference class of e for the client (step 4): 0 shares an AEAD and is not denied, 1
 * shares one but is denied, 2 shares none. */
static int class_of(const struct upstream_snapshot_entry *e, const struct ke_msg_request *req)
{
	return !shares_aead(e, req) ? 2 : denied(e, req) ? 1 : 0;
}

/* Smooth weighted round-robin over the members of set[0..n) of class cls not tried. 1 with
 * *best set, 0 when there is none, -ENOMEM. */
static int round_robin(const struct upstream_snapshot *s, struct upstream_picker *p,
		       const struct upstream_pick_query *q,
		       const struct upstream_snapshot_entry *const *set, size_t n, int cls,
		       const struct upstream_snapshot_entry **best_out)
{
	const struct upstream_snapshot_entry *best = NULL;
	struct wrr *best_w = NULL;
	int64_t total = 0;
	for (size_t i = 0; i < n; i++) {
		const struct upstream_snapshot_entry *e = set[i];
		if (tried_before(e->id, q->tried, q->n_tried) || class_of(e, q->req) != cls)
			continue;
		struct wrr *w = wrr_of(p, s, e);
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
		return 0;
	best_w->current -= total;
	*best_out = best;
	return 1;
}

/* The candidate sets in the order they are tried (steps 2 and 3): for each level that qualifies,
 * its quarter (with a quarter asked) and then the whole level; the global level last. */
struct candidate_sets {
	const struct upstream_snapshot_entry **buf; /* every set's members, one after another */
	size_t start[2 * (GEO_LEVELS_MAX + 1)], len[2 * (GEO_LEVELS_MAX + 1)];
	size_t n;
};

/* Keeps in quarter[0..) the selectable members of quarter q of the level (the global level when
 * level is NULL); returns how many. The quarters are drawn over every configured upstream of the
 * level, whatever its health, so that one leaving rotation empties only its own quarter instead
 * of reshuffling all four, and brokers whose health views differ still agree on them. tmp has
 * room for s->n entries. */
static size_t selectable_quarter(const struct upstream_snapshot *s,
				 const struct upstream_pick_query *q, const char *level,
				 uint8_t kind, const struct upstream_snapshot_entry **tmp,
				 const struct upstream_snapshot_entry **quarter)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n; i++)
		if (!level || in_region(&s->e[i], level, kind))
			tmp[n++] = &s->e[i];
	size_t kept = keep_quarter(tmp, n, q->quarter), out = 0;
	for (size_t i = 0; i < kept; i++)
		if (selectable(s, tmp[i], q))
			quarter[out++] = tmp[i];
	return out;
}

static int build_sets(const struct upstream_snapshot *s, const struct upstream_pick_query *q,
		      const struct upstream_snapshot_entry *const *all, size_t n_all,
		      struct candidate_sets *cs)
{
	size_t levels = q->n_levels < GEO_LEVELS_MAX ? q->n_levels : GEO_LEVELS_MAX;
	bool quartered = q->quarter >= 0 && q->quarter < 4;
	/* Each level's set, and its quarter, take at most s->n entries (n_all <= s->n). */
	size_t per_level = s->n ? s->n : 1;
	cs->buf = malloc(per_level * 2 * (levels + 1) * sizeof *cs->buf);
	const struct upstream_snapshot_entry **tmp =
		quartered ? malloc(per_level * sizeof *tmp) : NULL;
	if (!cs->buf || (quartered && !tmp)) {
		free(cs->buf);
		free(tmp);
		return -ENOMEM;
	}
	cs->n = 0;
	size_t used = 0;
	for (size_t l = 0; l <= levels; l++) {
		const char *level = l < levels ? q->levels[l] : NULL;
		uint8_t kind = level && q->level_kinds ? q->level_kinds[l] : 0;
		const struct upstream_snapshot_entry **set = cs->buf + used;
		size_t n = 0;
		for (size_t i = 0; i < n_all; i++)
			if (!level || in_region(all[i], level, kind))
				set[n++] = all[i];
		if (level && (n == 0 || n < q->min_region_servers))
			continue;
		size_t room = n;
		if (quartered) {
			const struct upstream_snapshot_entry **quarter = set + n;
			size_t k = selectable_quarter(s, q, level, kind, tmp, quarter);
			cs->start[cs->n] = used + n;
			cs->len[cs->n++] = k;
			room += k;
		}
		cs->start[cs->n] = used;
		cs->len[cs->n++] = n;
		used += room;
	}
	free(tmp);
	return 0;
}

int upstream_snapshot_pick_for(const struct upstream_snapshot *s, struct upstream_picker *p,
			       const struct upstream_pick_query *q,
			       struct pool_upstream_info *out)
{
	if (!s)
		return -ENOENT;
	/* An upstream out of rotation starts afresh when it returns, instead of with a credit
	 * earned while it was not selectable. */
	for (size_t i = 0; i < s->n; i++) {
		if (s->e[i].state == UPSTREAM_HEALTHY)
			continue;
		struct wrr *w = wrr_of(p, s, &s->e[i]);
		if (w)
			w->current = 0;
	}
	const struct upstream_snapshot_entry **all = malloc((s->n ? s->n : 1) * sizeof *all);
	if (!all)
		return -ENOMEM;
	size_t n_all = 0;
	for (size_t i = 0; i < s->n; i++)
		if (selectable(s, &s->e[i], q))
			all[n_all++] = &s->e[i];
	struct candidate_sets cs;
	int rc = build_sets(s, q, all, n_all, &cs);
	free(all);
	if (rc < 0)
		return rc;
	/* The class decides first: a better candidate anywhere beats a worse one near the client
	 * (a client's deny list holds whenever a healthy server it does not deny exists). */
	const struct upstream_snapshot_entry *best = NULL;
	for (int cls = 0; cls < 3 && rc == 0; cls++)
		for (size_t k = 0; k < cs.n && rc == 0; k++)
			rc = round_robin(s, p, q, cs.buf + cs.start[k], cs.len[k], cls, &best);
	free(cs.buf);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return -ENOENT;
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

int upstream_snapshot_pick(const struct upstream_snapshot *s, struct upstream_picker *p,
			   const struct ke_msg_request *req, const uint32_t *tried, size_t n_tried,
			   uint64_t now_ms, struct pool_upstream_info *out)
{
	const struct upstream_pick_query q = {
		.req = req, .tried = tried, .n_tried = n_tried, .now_ms = now_ms, .quarter = -1,
	};
	return upstream_snapshot_pick_for(s, p, &q, out);
}

int upstream_sni_quarter(const char *sni)
{
	if (!sni || sni[0] < '0' || sni[0] > '3' || sni[1] != '.')
		return -1;
	return sni[0] - '0';
}
