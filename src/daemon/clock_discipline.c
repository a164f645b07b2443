/* The discipline: turns an estimate (offset now, frequency of the oscillator) into backend
 * operations, and keeps the record of what it did so that samples can be read on the uncorrected
 * timescale (clock_discipline_correction_s). doc/timekeeping.md has the reasoning. */
#include "clock.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One period of constant correction: from start_s the clock runs rate (s/s) faster than the
 * oscillator, and the correction accumulated at start_s was p0_s. */
struct segment {
	double start_s, p0_s, rate;
};

struct clock_discipline {
	struct clock_discipline_config cfg;
	const struct clock_backend_ops *ops;
	void *ud;
	double base_ppm;   /* the estimate of the correction that cancels the oscillator */
	double rate_ppm;   /* what is set now (base + a phase correction) */
	double deadline_s; /* end of the phase correction, INFINITY when none runs */
	double last_offset_s;
	double last_mono_s;
	bool have_last;
	struct clock_step_guard guard;
	unsigned steps;
	struct segment seg[CLOCK_DISCIPLINE_HISTORY]; /* ring, newest at head */
	size_t head, n_seg;
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
	clock_step_guard_init(&d->guard, cfg);
	d->ops = ops;
	d->ud = ud;
	d->deadline_s = INFINITY;
	/* Until the first change the clock runs as the backend had it: no correction of ours. */
	d->seg[0] = (struct segment){ -INFINITY, 0, 0 };
	d->n_seg = 1;
	*out = d;
	return 0;
}

void clock_discipline_free(struct clock_discipline *d)
{
	free(d);
}

static const struct segment *segment_at(const struct clock_discipline *d, double mono_s)
{
	for (size_t k = 0; k < d->n_seg; k++) {
		const struct segment *s = &d->seg[(d->head + CLOCK_DISCIPLINE_HISTORY - k) %
						  CLOCK_DISCIPLINE_HISTORY];
		if (mono_s >= s->start_s || k + 1 == d->n_seg)
			return s;
	}
	return &d->seg[d->head]; /* n_seg >= 1: not reached */
}

double clock_discipline_correction_s(const struct clock_discipline *d, double mono_s)
{
	const struct segment *s = segment_at(d, mono_s);
	if (!isfinite(s->start_s))
		return s->p0_s;
	return s->p0_s + s->rate * (mono_s - s->start_s);
}

/* Starts a new segment at mono_s: rate from now on, jump added to the accumulated correction. */
static void new_segment(struct clock_discipline *d, double mono_s, double rate_ppm, double jump_s)
{
	double p = clock_discipline_correction_s(d, mono_s) + jump_s;
	d->head = (d->head + 1) % CLOCK_DISCIPLINE_HISTORY;
	d->seg[d->head] = (struct segment){ mono_s, p, rate_ppm * 1e-6 };
	if (d->n_seg < CLOCK_DISCIPLINE_HISTORY)
		d->n_seg++;
	d->rate_ppm = rate_ppm;
}

static int set_rate(struct clock_discipline *d, double mono_s, double ppm)
{
	int rc = d->ops->set_frequency(d->ud, ppm);
	if (rc < 0)
		return rc;
	new_segment(d, mono_s, ppm, 0);
	return 0;
}

void clock_step_guard_init(struct clock_step_guard *g, const struct clock_discipline_config *cfg)
{
	memset(g, 0, sizeof *g);
	g->cfg = *cfg;
}

bool clock_step_guard_allows(const struct clock_step_guard *g, double offset_s)
{
	if (!isfinite(offset_s))
		return false;
	double mag = fabs(offset_s);
	bool back = offset_s < 0;
	if (!g->stepped) {
		double limit = back && g->cfg.startup_panic_backward_s > 0
				       ? g->cfg.startup_panic_backward_s
				       : g->cfg.startup_panic_threshold_s;
		if (g->cfg.has_startup_panic && mag > limit)
			return false;
	} else {
		double limit = back && g->cfg.panic_backward_s > 0 ? g->cfg.panic_backward_s
								    : g->cfg.panic_threshold_s;
		if (mag > limit)
			return false;
	}
	return !(g->cfg.has_accumulated_panic &&
		 g->accumulated_s + mag > g->cfg.accumulated_panic_threshold_s);
}

void clock_step_guard_record(struct clock_step_guard *g, double offset_s)
{
	g->stepped = true;
	g->accumulated_s += fabs(offset_s);
}

static enum clock_discipline_action step(struct clock_discipline *d, double offset, double mono_s)
{
	if (!clock_step_guard_allows(&d->guard, offset))
		return CLOCK_DISCIPLINE_PANIC;
	if (d->ops->step(d->ud, offset) < 0)
		return CLOCK_DISCIPLINE_NONE;
	/* The step is a correction like any other: samples before it stay comparable. A phase
	 * correction in progress was for the clock before the step. */
	new_segment(d, mono_s, d->rate_ppm, offset);
	d->deadline_s = INFINITY;
	if (d->rate_ppm != d->base_ppm)
		set_rate(d, mono_s, d->base_ppm);
	clock_step_guard_record(&d->guard, offset);
	d->steps++;
	return CLOCK_DISCIPLINE_STEPPED;
}

void clock_discipline_tick(struct clock_discipline *d, double mono_s)
{
	if (!(mono_s >= d->deadline_s))
		return;
	/* Ended at the deadline if the caller was on time; the record says when it really did. */
	if (set_rate(d, mono_s, d->base_ppm) == 0)
		d->deadline_s = INFINITY;
}

double clock_discipline_deadline(const struct clock_discipline *d)
{
	return d->deadline_s;
}

enum clock_discipline_action clock_discipline_steer(struct clock_discipline *d,
						    const struct clock_steer *st, double mono_s)
{
	if (!isfinite(st->offset_s) || !isfinite(mono_s) || (st->has_freq && !isfinite(st->freq)) ||
	    (d->have_last && mono_s < d->last_mono_s))
		return CLOCK_DISCIPLINE_NONE;
	clock_discipline_tick(d, mono_s);
	d->last_offset_s = st->offset_s;
	d->last_mono_s = mono_s;
	d->have_last = true;
	double lim = d->cfg.max_frequency_ppm;
	if (st->has_freq)
		d->base_ppm = fmin(lim, fmax(-lim, st->freq * 1e6));
	if (fabs(st->offset_s) > d->cfg.step_threshold_s)
		return step(d, st->offset_s, mono_s);

	/* offset/horizon on top of the estimate, within what the backend may run; at the clamp the
	 * correction takes longer, and ends when the offset is gone. */
	double horizon = fmax(1, isfinite(st->horizon_s) ? st->horizon_s : 1);
	double rate = fmin(lim, fmax(-lim, d->base_ppm + 1e6 * st->offset_s / horizon));
	double extra = (rate - d->base_ppm) * 1e-6;
	if (set_rate(d, mono_s, rate) < 0)
		return CLOCK_DISCIPLINE_NONE;
	d->deadline_s = extra != 0 ? mono_s + st->offset_s / extra : INFINITY;
	return CLOCK_DISCIPLINE_SLEWED;
}

double clock_discipline_frequency_ppm(const struct clock_discipline *d)
{
	return d->rate_ppm;
}

double clock_discipline_base_ppm(const struct clock_discipline *d)
{
	return d->base_ppm;
}

double clock_discipline_last_offset_s(const struct clock_discipline *d)
{
	return d->last_offset_s;
}

unsigned clock_discipline_steps(const struct clock_discipline *d)
{
	return d->steps;
}
