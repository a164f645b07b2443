#include "clock.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>

/* RFC 5905 PHI: the frequency tolerance assumed of every clock, so a sample's error bound grows by
 * 15 us per second of age. */
#define PHI 15e-6

/* Floor of a root distance. A LAN source can report a delay and dispersion of a few microseconds;
 * without a floor its interval would be too narrow to intersect honest neighbours and its weight
 * 1/distance would swamp them. 1 ms is ntpd's default `tos mindist`. */
#define MIN_DISTANCE 1e-3

/* The rate at which the backends slew (the kernel's adjtime rate, and the simulation's). */
#define SLEW_RATE 500e-6

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

/* ---- Selection ---------------------------------------------------------------------------- */

double clock_root_distance(const struct clock_candidate *c, double mono_s)
{
	const struct clock_sample *s = &c->best;
	double age = mono_s - s->mono_s;
	if (!(age > 0))
		age = 0;
	double d = (s->root_delay_s + s->delay_s) / 2 + s->root_disp_s + s->dispersion_s +
		   c->jitter_s + PHI * age;
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

/* ---- Discipline --------------------------------------------------------------------------- */

/* The loop is a type-II PLL (phase and frequency) with damping 1 and time constant tau: each
 * update of interval dt slews 2*dt/tau of the offset and adds offset*dt/tau^2 to the frequency,
 * which places both poles of the sampled loop at 1 - dt/tau.
 *
 * tau starts at TAU_MIN so that a fresh frequency error (up to hundreds of ppm) is learnt within
 * minutes, and doubles once the offsets have stayed within PGATE times the clock jitter for
 * TC_HOLD time constants; it halves when they do not. A longer tau filters more measurement
 * noise (the phase error left by white noise of deviation s is about s*sqrt(dt/tau)) at the cost
 * of slower tracking; TAU_MAX (about half an hour) still follows the thermal wander of a
 * crystal. */
#define TAU_MIN 64.0
#define TAU_MAX 2048.0
#define TC_HOLD 4.0
/* ntpd's CLOCK_PGATE and its averaging constant for the clock jitter. */
#define PGATE 4.0
#define JITTER_AVG 4.0

struct clock_discipline {
	struct clock_discipline_config cfg;
	const struct clock_backend_ops *ops;
	void *ud;
	double freq_ppm;
	double tau_s;
	double tc_count_s; /* time with small offsets at this tau (negative: large ones) */
	double jitter_s;   /* RMS of the differences between successive offsets */
	double last_offset_s;
	double last_slew_s;
	double last_mono_s;
	bool have_last;
	bool stepped;
	double accumulated_s;
};

int clock_discipline_new(struct clock_discipline **out, const struct clock_discipline_config *cfg,
			 const struct clock_backend_ops *ops, void *ud)
{
	if (!(cfg->step_threshold_s > 0) || !(cfg->max_frequency_ppm > 0))
		return -EINVAL;
	struct clock_discipline *d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	d->cfg = *cfg;
	d->ops = ops;
	d->ud = ud;
	d->tau_s = TAU_MIN;
	*out = d;
	return 0;
}

void clock_discipline_free(struct clock_discipline *d)
{
	free(d);
}

static enum clock_discipline_action step(struct clock_discipline *d, double offset, double mono_s)
{
	double mag = fabs(offset);
	if (!d->stepped) {
		if (d->cfg.has_startup_panic && mag > d->cfg.startup_panic_threshold_s)
			return CLOCK_DISCIPLINE_PANIC;
	} else if (mag > d->cfg.panic_threshold_s) {
		return CLOCK_DISCIPLINE_PANIC;
	}
	if (d->cfg.has_accumulated_panic &&
	    d->accumulated_s + mag > d->cfg.accumulated_panic_threshold_s)
		return CLOCK_DISCIPLINE_PANIC;
	if (d->ops->step(d->ud, offset) < 0)
		return CLOCK_DISCIPLINE_NONE;
	/* A slew still running was meant for the clock before the step. */
	d->ops->slew(d->ud, 0);
	d->stepped = true;
	d->accumulated_s += mag;
	d->tau_s = TAU_MIN;
	d->tc_count_s = 0;
	d->have_last = true;
	d->last_mono_s = mono_s;
	d->last_slew_s = 0;
	return CLOCK_DISCIPLINE_STEPPED;
}

static void adapt_tau(struct clock_discipline *d, double offset, double prev_offset, double dt)
{
	double diff = offset - prev_offset;
	d->jitter_s = sqrt(d->jitter_s * d->jitter_s +
			   (diff * diff - d->jitter_s * d->jitter_s) / JITTER_AVG);
	if (fabs(offset) < PGATE * d->jitter_s) {
		d->tc_count_s += dt;
		if (d->tc_count_s >= TC_HOLD * d->tau_s && d->tau_s < TAU_MAX) {
			d->tau_s *= 2;
			d->tc_count_s = 0;
		}
	} else {
		d->tc_count_s -= 2 * dt;
		if (d->tc_count_s <= -TC_HOLD * d->tau_s && d->tau_s > TAU_MIN) {
			d->tau_s /= 2;
			d->tc_count_s = 0;
		}
	}
}

enum clock_discipline_action clock_discipline_update(struct clock_discipline *d, double offset_s,
						     double mono_s)
{
	if (!isfinite(offset_s) || !isfinite(mono_s) || (d->have_last && !(mono_s > d->last_mono_s)))
		return CLOCK_DISCIPLINE_NONE;
	double prev_offset = d->last_offset_s;
	d->last_offset_s = offset_s;
	if (fabs(offset_s) > d->cfg.step_threshold_s)
		return step(d, offset_s, mono_s);

	/* While the previous slew cannot have finished, the offset measures the slew's progress, not
	 * the frequency error: integrating it would wind the frequency up, so only the phase is
	 * corrected until the clock has caught up. The other sources' filters may still hold samples
	 * from before the slew began, which overstate the offset; extending the slew by them would
	 * overshoot, so the slew in progress is only ever shortened, never lengthened. */
	double dt = d->have_last ? mono_s - d->last_mono_s : 0;
	double left = fabs(d->last_slew_s) - SLEW_RATE * dt;
	double slew = offset_s;
	if (d->have_last && left > 0) {
		if (offset_s * d->last_slew_s > 0 && fabs(offset_s) > left)
			slew = copysign(left, offset_s);
	} else if (d->have_last) {
		adapt_tau(d, offset_s, prev_offset, dt);
		double tau = fmax(d->tau_s, 2 * dt);
		double lim = d->cfg.max_frequency_ppm;
		d->freq_ppm = fmin(lim, fmax(-lim, d->freq_ppm + 1e6 * offset_s * dt / (tau * tau)));
		if (d->ops->set_frequency(d->ud, d->freq_ppm) < 0)
			return CLOCK_DISCIPLINE_NONE;
		slew = 2 * dt / tau * offset_s;
	}
	if (d->ops->slew(d->ud, slew) < 0)
		return CLOCK_DISCIPLINE_NONE;
	d->last_slew_s = slew;
	d->last_mono_s = mono_s;
	d->have_last = true;
	return CLOCK_DISCIPLINE_SLEWED;
}

double clock_discipline_frequency_ppm(const struct clock_discipline *d)
{
	return d->freq_ppm;
}

double clock_discipline_last_offset_s(const struct clock_discipline *d)
{
	return d->last_offset_s;
}

/* ---- Simulated clock ---------------------------------------------------------------------- */

void clock_sim_init(struct clock_sim *c, double offset_s, double freq_error_ppm)
{
	memset(c, 0, sizeof *c);
	c->offset_s = offset_s;
	c->freq_error_ppm = freq_error_ppm;
}

void clock_sim_advance(struct clock_sim *c, double dt_s)
{
	double max = SLEW_RATE * dt_s;
	double slew = fmin(max, fmax(-max, c->slew_remaining_s));
	c->slew_remaining_s -= slew;
	c->offset_s += slew + (c->freq_error_ppm + c->correction_ppm) * 1e-6 * dt_s;
}

/* The clock is ahead by offset_s, so correcting "source minus local" by offset_s means moving
 * the simulated clock forward by it. Like adjtime, a new slew replaces the one in progress. */
static int sim_slew(void *ud, double offset_s)
{
	struct clock_sim *c = ud;
	c->slew_remaining_s = offset_s;
	return 0;
}

static int sim_set_frequency(void *ud, double ppm)
{
	struct clock_sim *c = ud;
	c->correction_ppm = ppm;
	return 0;
}

static int sim_step(void *ud, double offset_s)
{
	struct clock_sim *c = ud;
	c->offset_s += offset_s;
	c->steps++;
	return 0;
}

const struct clock_backend_ops clock_sim_ops = {
	.slew = sim_slew,
	.set_frequency = sim_set_frequency,
	.step = sim_step,
};

/* ---- Kernel backend ----------------------------------------------------------------------- */

static int adjust(struct timex *tx)
{
	return clock_adjtime(CLOCK_REALTIME, tx) < 0 ? -errno : 0;
}

/* ADJ_OFFSET_SINGLESHOT is adjtime(): a linear slew at 500 ppm that a new call replaces, the
 * model the discipline and the simulation assume. ADJ_OFFSET with STA_PLL would run the kernel's
 * own PLL, which also integrates the frequency and would fight the discipline's estimate. */
static int kernel_slew(void *ud, double offset_s)
{
	struct timex tx = { .modes = ADJ_OFFSET_SINGLESHOT, .offset = lround(offset_s * 1e6) };
	return adjust(&tx);
}

/* The kernel takes the frequency in ppm scaled by 2^16 and refuses more than 500 ppm. */
static int kernel_set_frequency(void *ud, double ppm)
{
	struct timex tx = { .modes = ADJ_FREQUENCY, .freq = lround(fmin(500, fmax(-500, ppm)) * 65536) };
	return adjust(&tx);
}

static int kernel_step(void *ud, double offset_s)
{
	double sec = floor(offset_s);
	long nsec = lround((offset_s - sec) * 1e9);
	if (nsec >= 1000000000L) {
		sec += 1;
		nsec -= 1000000000L;
	}
	struct timex tx = { .modes = ADJ_SETOFFSET | ADJ_NANO };
	tx.time.tv_sec = (time_t)sec;
	tx.time.tv_usec = nsec; /* nanoseconds under ADJ_NANO */
	return adjust(&tx);
}

const struct clock_backend_ops clock_kernel_ops = {
	.slew = kernel_slew,
	.set_frequency = kernel_set_frequency,
	.step = kernel_step,
};
