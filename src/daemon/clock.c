#include "clock.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* RFC 5905 PHI: the frequency tolerance assumed of every clock, so a sample's error bound grows by
 * 15 us per second of age. */
#define PHI 15e-6

/* Floor of a root distance. A LAN source can report a delay and dispersion of a few microseconds;
 * without a floor its interval would be too narrow to intersect honest neighbours and its weight
 * 1/distance would swamp them. 1 ms is ntpd's default `tos mindist`. */
#define MIN_DISTANCE 1e-3

/* ---- Filter ------------------------------------------------------------------------------- */

void clock_filter_init(struct clock_filter *f)
{
	memset(f, 0, sizeof *f);
}

void clock_filter_add(struct clock_filter *f, const struct clock_sample *s)
{
	f->s[f->next] = *s;
	f->next = (f->next + 1) % CLOCK_FILTER_SIZE;
	if (f->n < CLOCK_FILTER_SIZE)
		f->n++;
}

bool clock_filter_best(const struct clock_filter *f, struct clock_sample *best, double *jitter_s)
{
	if (f->n == 0)
		return false;
	/* Walk from the newest sample back so that, among equal delays, the freshest wins: an older
	 * offset predates corrections already made to the clock. */
	const struct clock_sample *b = NULL;
	for (size_t k = 1; k <= f->n; k++) {
		const struct clock_sample *s =
			&f->s[(f->next + CLOCK_FILTER_SIZE - k) % CLOCK_FILTER_SIZE];
		if (!b || s->delay_s < b->delay_s)
			b = s;
	}
	/* RFC 5905's estimator: the best sample contributes zero, so dividing by n - 1 averages over
	 * the others. */
	double sum = 0;
	for (size_t i = 0; i < f->n; i++) {
		double d = f->s[i].offset_s - b->offset_s;
		sum += d * d;
	}
	*best = *b;
	*jitter_s = f->n > 1 ? sqrt(sum / (double)(f->n - 1)) : 0;
	return true;
}

bool clock_filter_last(const struct clock_filter *f, struct clock_sample *last)
{
	if (f->n == 0)
		return false;
	*last = f->s[(f->next + CLOCK_FILTER_SIZE - 1) % CLOCK_FILTER_SIZE];
	return true;
}

bool clock_filter_candidate(const struct clock_filter *f, uint32_t id, double poll_s,
			    struct clock_candidate *out)
{
	memset(out, 0, sizeof *out);
	out->id = id;
	out->poll_s = poll_s;
	return clock_filter_best(f, &out->best, &out->jitter_s) && clock_filter_last(f, &out->last);
}

/* ---- Selection ---------------------------------------------------------------------------- */

double clock_root_distance(const struct clock_candidate *c, double mono_s)
{
	const struct clock_sample *s = &c->best;
	double age = mono_s - s->mono_s;
	if (!(age > 0))
		age = 0;
	double growth = c->growth > 0 && c->growth < PHI ? c->growth : PHI;
	double d = (s->root_delay_s + s->delay_s) / 2 + s->root_disp_s + s->dispersion_s +
		   c->jitter_s + growth * age;
	return d > MIN_DISTANCE ? d : MIN_DISTANCE;
}

static bool selectable(const struct clock_candidate *c, double dist)
{
	const struct clock_sample *s = &c->best;
	return s->leap != 3 && s->stratum != 0 && s->stratum < 16 && isfinite(s->offset_s) &&
	       isfinite(dist);
}

struct endpoint {
	double v;
	int type; /* -1 lower end, 0 midpoint, +1 upper end */
};

static int endpoint_cmp(const void *a, const void *b)
{
	const struct endpoint *x = a, *y = b;
	if (x->v != y->v)
		return x->v < y->v ? -1 : 1;
	/* Closed intervals: at a shared value a lower end opens before an upper end closes. */
	return (x->type > y->type) - (x->type < y->type);
}

/* Marzullo's intersection as RFC 5905's clock select: the smallest number of falsetickers
 * `allow` (< m/2) for which m - allow intervals share a region containing at most `allow`
 * midpoints outside it. Returns false when no majority agrees. */
static bool intersect(struct endpoint *e, size_t m, double *lo, double *hi)
{
	qsort(e, 3 * m, sizeof *e, endpoint_cmp);
	for (size_t allow = 0; 2 * allow < m; allow++) {
		long need = (long)(m - allow);
		long chime = 0;
		size_t found = 0;
		double low = INFINITY, high = -INFINITY;
		for (size_t i = 0; i < 3 * m; i++) {
			chime -= e[i].type;
			if (chime >= need) {
				low = e[i].v;
				break;
			}
			if (e[i].type == 0)
				found++;
		}
		chime = 0;
		for (size_t i = 3 * m; i-- > 0;) {
			chime += e[i].type;
			if (chime >= need) {
				high = e[i].v;
				break;
			}
			if (e[i].type == 0)
				found++;
		}
		if (found > allow || low > high)
			continue;
		*lo = low;
		*hi = high;
		return true;
	}
	return false;
}

int clock_select(const struct clock_candidate *c, size_t n, unsigned min_agree, double mono_s,
		 bool *truechimer, struct clock_selection *sel)
{
	memset(sel, 0, sizeof *sel);
	for (size_t i = 0; i < n; i++)
		truechimer[i] = false;

	double *dist = calloc(n ? n : 1, sizeof *dist);
	struct endpoint *e = calloc(n ? 3 * n : 1, sizeof *e);
	if (!dist || !e) {
		free(dist);
		free(e);
		return -ENOMEM;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		dist[i] = clock_root_distance(&c[i], mono_s);
		if (!selectable(&c[i], dist[i]))
			continue;
		double o = c[i].best.offset_s;
		e[3 * m] = (struct endpoint){ o - dist[i], -1 };
		e[3 * m + 1] = (struct endpoint){ o, 0 };
		e[3 * m + 2] = (struct endpoint){ o + dist[i], +1 };
		m++;
	}
	double lo, hi;
	bool agreed = m > 0 && intersect(e, m, &lo, &hi);
	free(e);

	size_t peer = n;
	double wsum = 0, osum = 0;
	for (size_t i = 0; agreed && i < n; i++) {
		double o = c[i].best.offset_s;
		if (!selectable(&c[i], dist[i]) || o + dist[i] < lo || o - dist[i] > hi)
			continue;
		truechimer[i] = true;
		sel->n_true++;
		wsum += 1 / dist[i];
		osum += o / dist[i];
		if (peer == n || dist[i] < dist[peer])
			peer = i;
	}
	if (sel->n_true == 0 || sel->n_true < min_agree) {
		free(dist);
		return -EAGAIN;
	}
	sel->offset_s = osum / wsum;
	/* System jitter (RFC 5905 §11.2.3): the spread of the truechimers about the combined offset,
	 * added in quadrature to the system peer's own jitter. */
	double var = 0;
	for (size_t i = 0; i < n; i++) {
		if (!truechimer[i])
			continue;
		double d = c[i].best.offset_s - sel->offset_s;
		var += d * d / dist[i];
	}
	var /= wsum;
	sel->jitter_s = sqrt(var + c[peer].jitter_s * c[peer].jitter_s);
	sel->system_peer = c[peer].id;
	sel->peer = c[peer].best;
	free(dist);
	return 0;
}
