/* pick-cost: what one broker pick costs (upstream_snapshot_pick_for) with N upstreams, with and
 * without region levels and an SNI quarter, in nanoseconds per pick on one core; then what one
 * region lookup (geo_lookup, once per admitted connection) costs with up to the configuration's
 * most prefixes (1024 regions of 4096). A session picks once (more on failover) next to a TLS
 * handshake of about a millisecond, so this shows how far selection is from mattering. Prints
 * one line per case.
 * Usage: pick-cost [PICKS]   (default 200000 per case) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>

#include "geo.h"
#include "upstream_snapshot.h"

static const char *const region_names[] = { "de", "fr", "us", "jp" };

/* n upstreams "uK.test", weights 1..4, a quarter of them in each of four regions, all healthy
 * with AEAD 15 and fresh lists. */
static struct upstream_snapshot *build(size_t n)
{
	struct upstream_snapshot *s = calloc(1, sizeof *s + n * sizeof s->e[0]);
	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	s->support_cache_ms = 1u << 30;
	s->n = n;
	for (size_t i = 0; i < n; i++) {
		struct upstream_snapshot_entry *e = &s->e[i];
		char name[32];
		snprintf(name, sizeof name, "u%zu.test", i);
		e->id = (uint32_t)i;
		e->domain = strdup(name);
		e->port = 4460;
		e->weight = 1 + (uint32_t)(i % 4);
		e->state = UPSTREAM_HEALTHY;
		e->n_protocols = 1;
		e->algorithms[0] = (struct ke_msg_algorithm){ .id = 15, .key_len = 32 };
		e->n_algorithms = 1;
		e->families = e->families_ok = UPSTREAM_FAMILY_IPV4;
		e->regions = calloc(1, sizeof *e->regions);
		if (!e->domain || !e->regions || !(e->regions[0] = strdup(region_names[i % 4]))) {
			upstream_snapshot_unref(s);
			return NULL;
		}
		e->n_regions = 1;
	}
	return s;
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Regions of 4096 IPv4 /24s each (10.0.0.0 on), and the cost of building and of a lookup. */
static int geo_case(size_t n_regions, long lookups)
{
	enum { PER = 4096 };
	struct geo_region *r = calloc(n_regions, sizeof *r);
	struct cidr *all = calloc(n_regions * PER, sizeof *all);
	char (*names)[24] = calloc(n_regions, sizeof *names);
	if (!r || !all || !names)
		return -ENOMEM;
	for (size_t i = 0; i < n_regions; i++) {
		for (size_t k = 0; k < PER; k++) {
			struct cidr *c = &all[i * PER + k];
			uint32_t a = htonl((uint32_t)(0x0a000000u + ((i * PER + k) << 8)));
			c->family = AF_INET;
			c->bits = 24;
			memcpy(c->addr, &a, 4);
		}
		snprintf(names[i], sizeof names[i], "r%zu", i);
		r[i] = (struct geo_region){ names[i], &all[i * PER], PER };
	}
	struct geo *g;
	char err[256];
	double t0 = now_ns();
	if (geo_new(&g, r, n_regions, NULL, err, sizeof err) < 0) {
		fprintf(stderr, "pick-cost: %s\n", err);
		return -EINVAL;
	}
	double built = now_ns() - t0;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct geo_levels lv;
	size_t found = 0;
	t0 = now_ns();
	for (long i = 0; i < lookups; i++) {
		/* Inside the table and past it, in turn. */
		uint32_t a = 0x0a000001u + (uint32_t)((unsigned long)i * 2654435761u % 0x50000000u);
		sin.sin_addr.s_addr = htonl(a);
		geo_lookup(g, (const struct sockaddr *)&sin, &lv);
		found += lv.n;
	}
	double per = (now_ns() - t0) / (double)lookups;
	printf("%10zu %28s %14.0f   (built in %.1f ms, %zu found)\n", n_regions * PER,
	       "prefixes: geo_lookup", per, built / 1e6, found);
	geo_unref(g);
	free(r);
	free(all);
	free(names);
	return 0;
}

int main(int argc, char **argv)
{
	long picks = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
	if (picks <= 0) {
		fprintf(stderr, "usage: pick-cost [PICKS]\n");
		return 2;
	}
	static const size_t sizes[] = { 8, 64, 256 };
	const char *levels[] = { "lab", "de", "eu" };
	printf("%10s %28s %14s\n", "upstreams", "query", "ns/pick");
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		struct upstream_snapshot *s = build(sizes[k]);
		struct upstream_picker *p = NULL;
		if (!s || upstream_picker_new(&p) < 0) {
			fprintf(stderr, "pick-cost: out of memory\n");
			return 1;
		}
		for (int c = 0; c < 3; c++) {
			struct upstream_pick_query q = { .now_ms = 1, .min_region_servers = 1,
							 .quarter = -1,
							 .family = UPSTREAM_FAMILY_IPV4 };
			const char *what = "global";
			if (c >= 1) {
				q.levels = levels;
				q.n_levels = 3;
				what = "3 levels, \"de\" matches";
			}
			if (c == 2) {
				q.quarter = 2;
				what = "3 levels + SNI quarter";
			}
			struct pool_upstream_info info;
			uint64_t sum = 0;
			double t0 = now_ns();
			for (long i = 0; i < picks; i++) {
				if (upstream_snapshot_pick_for(s, p, &q, &info) < 0) {
					fprintf(stderr, "pick-cost: pick failed\n");
					return 1;
				}
				sum += info.id;
			}
			double per = (now_ns() - t0) / (double)picks;
			printf("%10zu %28s %14.0f\n", sizes[k], what, per);
			if (sum == UINT64_MAX)
				puts("");
		}
		upstream_picker_free(p);
		upstream_snapshot_unref(s);
	}
	static const size_t region_counts[] = { 1, 25, 1024 };
	for (size_t k = 0; k < sizeof region_counts / sizeof region_counts[0]; k++)
		if (geo_case(region_counts[k], picks) < 0)
			return 1;
	return 0;
}
