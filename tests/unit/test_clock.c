#include "clock.h"
#include "clock_stats.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "testutil.h"

static struct clock_sample sample(double mono, double offset, double delay)
{
	return (struct clock_sample){
		.mono_s = mono,
		.offset_s = offset,
		.delay_s = delay,
		.dispersion_s = 1e-5,
		.root_disp_s = 1e-4,
		.stratum = 1,
	};
}

static struct clock_candidate cand(uint32_t id, double offset, double delay)
{
	return (struct clock_candidate){ .id = id,
					 .best = sample(0, offset, delay),
					 .jitter_s = 5e-4 };
}

/* ---- Filter ------------------------------------------------------------------------------- */

Test(clock_filter, empty_has_no_best)
{
	struct clock_filter f;
	struct clock_sample b;
	double j;
	clock_filter_init(&f);
	cr_assert_not(clock_filter_best(&f, &b, &j));
}

Test(clock_filter, best_is_least_delay)
{
	struct clock_filter f;
	clock_filter_init(&f);
	struct clock_sample s[] = { sample(1, 0.1, 0.03), sample(2, 0.2, 0.01),
				    sample(3, 0.3, 0.02) };
	for (size_t i = 0; i < 3; i++)
		clock_filter_add(&f, &s[i]);
	struct clock_sample b;
	double j;
	cr_assert(clock_filter_best(&f, &b, &j));
	cr_assert_float_eq(b.offset_s, 0.2, 1e-12);
	cr_assert_float_eq(b.mono_s, 2, 1e-12);
}

Test(clock_filter, equal_delays_prefer_the_newest)
{
	struct clock_filter f;
	clock_filter_init(&f);
	for (int i = 0; i < 5; i++) {
		struct clock_sample s = sample(i, i * 0.001, 0.01);
		clock_filter_add(&f, &s);
	}
	struct clock_sample b;
	double j;
	cr_assert(clock_filter_best(&f, &b, &j));
	cr_assert_float_eq(b.mono_s, 4, 1e-12);
}

Test(clock_filter, ring_overwrites_the_oldest)
{
	struct clock_filter f;
	clock_filter_init(&f);
	struct clock_sample first = sample(0, -1, 0.001);
	clock_filter_add(&f, &first);
	for (int i = 1; i < CLOCK_FILTER_SIZE; i++) {
		struct clock_sample s = sample(i, i, 0.01 + i * 0.001);
		clock_filter_add(&f, &s);
	}
	struct clock_sample b;
	double j;
	cr_assert(clock_filter_best(&f, &b, &j));
	cr_assert_float_eq(b.offset_s, -1, 1e-12, "the least delay is still held");
	cr_assert_eq(f.n, CLOCK_FILTER_SIZE);

	struct clock_sample next = sample(100, 5, 0.5);
	clock_filter_add(&f, &next);
	cr_assert_eq(f.n, CLOCK_FILTER_SIZE);
	cr_assert(clock_filter_best(&f, &b, &j));
	cr_assert_float_eq(b.offset_s, 1, 1e-12, "the first sample was overwritten");
	cr_assert_float_eq(b.delay_s, 0.011, 1e-12);
}

Test(clock_filter, jitter_of_known_samples)
{
	struct clock_filter f;
	clock_filter_init(&f);
	struct clock_sample one = sample(0, 0.001, 0.01);
	clock_filter_add(&f, &one);
	struct clock_sample b;
	double j = -1;
	cr_assert(clock_filter_best(&f, &b, &j));
	cr_assert_eq(j, 0, "one sample has no jitter");

	struct clock_sample more[] = { sample(1, 0.003, 0.02), sample(2, -0.001, 0.02) };
	clock_filter_add(&f, &more[0]);
	clock_filter_add(&f, &more[1]);
	cr_assert(clock_filter_best(&f, &b, &j));
	/* Deviations from the best (0.001): 0, +0.002, -0.002 → sqrt(8e-6 / 2). */
	cr_assert_float_eq(j, 0.002, 1e-12);
}

/* ---- Selection ---------------------------------------------------------------------------- */

Test(clock_select, root_distance)
{
	struct clock_candidate c = {
		.best = { .mono_s = 10,
			  .delay_s = 0.02,
			  .dispersion_s = 0.0005,
			  .root_delay_s = 0.01,
			  .root_disp_s = 0.001,
			  .stratum = 2 },
		.jitter_s = 0.0002,
	};
	/* 0.03/2 + 0.001 + 0.0005 + 0.0002 + 15e-6 * 100 */
	cr_assert_float_eq(clock_root_distance(&c, 110), 0.0182, 1e-12);
	struct clock_candidate zero = { .best = { .stratum = 1 } };
	cr_assert_float_eq(clock_root_distance(&zero, 0), 0.001, 1e-12, "distance has a floor");
}

Test(clock_select, rejects_a_falseticker)
{
	struct clock_candidate c[] = { cand(1, 0.010, 0.004), cand(2, 0.0105, 0.004),
				       cand(3, 0.060, 0.004), cand(4, 0.0095, 0.003) };
	bool tc[4];
	struct clock_selection sel;
	cr_assert_eq(clock_select(c, 4, 3, 0, tc, &sel), 0);
	cr_assert_eq(sel.n_true, 3);
	cr_assert(tc[0] && tc[1] && tc[3]);
	cr_assert_not(tc[2], "50 ms off is a falseticker");
	cr_assert_float_eq(sel.offset_s, 0.010, 5e-4);
	cr_assert_eq(sel.system_peer, 4, "least delay, so least distance");
	cr_assert_float_eq(sel.peer.offset_s, 0.0095, 1e-12);
	cr_assert(sel.jitter_s >= 5e-4 && sel.jitter_s < 1e-3);
}

Test(clock_select, two_agreeing)
{
	struct clock_candidate c[] = { cand(1, 0.010, 0.004), cand(2, 0.011, 0.004) };
	bool tc[2];
	struct clock_selection sel;
	cr_assert_eq(clock_select(c, 2, 2, 0, tc, &sel), 0);
	cr_assert_eq(sel.n_true, 2);
	cr_assert(tc[0] && tc[1]);
	cr_assert_float_eq(sel.offset_s, 0.0105, 1e-9, "equal distances weigh equally");
}

Test(clock_select, one_against_one_disagrees)
{
	struct clock_candidate c[] = { cand(1, 0.010, 0.004), cand(2, 0.100, 0.004) };
	bool tc[2] = { true, true };
	struct clock_selection sel;
	cr_assert_eq(clock_select(c, 2, 2, 0, tc, &sel), -EAGAIN);
	cr_assert_eq(sel.n_true, 0);
	cr_assert_not(tc[0] || tc[1]);
	cr_assert_eq(clock_select(c, 2, 1, 0, tc, &sel), -EAGAIN, "no majority either");
}

Test(clock_select, single_source)
{
	struct clock_candidate c = cand(7, -0.2, 0.004);
	bool tc;
	struct clock_selection sel;
	cr_assert_eq(clock_select(&c, 1, 1, 0, &tc, &sel), 0);
	cr_assert(tc);
	cr_assert_eq(sel.system_peer, 7);
	cr_assert_float_eq(sel.offset_s, -0.2, 1e-12);
	cr_assert_eq(clock_select(&c, 1, 2, 0, &tc, &sel), -EAGAIN);
	cr_assert_eq(sel.n_true, 1);
}

Test(clock_select, unsynchronised_sources_are_excluded)
{
	/* The three bad sources agree with one another; counted, they would outvote the two good. */
	struct clock_candidate c[] = { cand(1, 0.010, 0.004), cand(2, 0.500, 0.004),
				       cand(3, 0.500, 0.004), cand(4, 0.011, 0.004),
				       cand(5, 0.500, 0.004) };
	c[1].best.leap = 3;
	c[2].best.stratum = 16;
	c[4].best.stratum = 0;
	bool tc[5];
	struct clock_selection sel;
	cr_assert_eq(clock_select(c, 5, 2, 0, tc, &sel), 0);
	cr_assert_eq(sel.n_true, 2);
	cr_assert(tc[0] && tc[3]);
	cr_assert_not(tc[1] || tc[2] || tc[4]);
	cr_assert_float_eq(sel.offset_s, 0.0105, 1e-9);
}

Test(clock_select, min_agree_is_honoured)
{
	struct clock_candidate c[] = { cand(1, 0.010, 0.004), cand(2, 0.011, 0.004),
				       cand(3, 0.0105, 0.004) };
	bool tc[3];
	struct clock_selection sel;
	cr_assert_eq(clock_select(c, 3, 4, 0, tc, &sel), -EAGAIN);
	cr_assert_eq(sel.n_true, 3, "the count is reported even when short");
	cr_assert(tc[0] && tc[1] && tc[2]);
	cr_assert_eq(clock_select(c, 3, 3, 0, tc, &sel), 0);
}

Test(clock_select, stale_samples_widen_their_interval)
{
	/* Two sources 10 ms apart do not agree when fresh; after 1000 s each interval has grown by
	 * 15 ms and they do. */
	struct clock_candidate c[] = { cand(1, 0.000, 0.004), cand(2, 0.010, 0.004) };
	bool tc[2];
	struct clock_selection sel;
	cr_assert_eq(clock_select(c, 2, 1, 0, tc, &sel), -EAGAIN);
	cr_assert_eq(clock_select(c, 2, 2, 1000, tc, &sel), 0);
}

/* ---- Simulated clock ---------------------------------------------------------------------- */

Test(clock_sim, slews_at_500_ppm_and_drifts)
{
	struct clock_sim c;
	clock_sim_init(&c, 0, 0);
	cr_assert_eq(clock_sim_ops.slew(&c, 0.01), 0);
	clock_sim_advance(&c, 10);
	cr_assert_float_eq(c.offset_s, 0.005, 1e-12);
	cr_assert_float_eq(c.slew_remaining_s, 0.005, 1e-12);
	clock_sim_advance(&c, 100);
	cr_assert_float_eq(c.offset_s, 0.01, 1e-12, "the slew stops when done");
	cr_assert_float_eq(c.slew_remaining_s, 0, 1e-12);

	clock_sim_init(&c, 0, 50);
	clock_sim_ops.set_frequency(&c, -20);
	clock_sim_advance(&c, 100);
	cr_assert_float_eq(c.offset_s, 30e-6 * 100, 1e-12);
	clock_sim_ops.step(&c, -1);
	cr_assert_float_eq(c.offset_s, -1 + 30e-6 * 100, 1e-12);
	cr_assert_eq(c.steps, 1);
}

/* ---- Discipline --------------------------------------------------------------------------- */

static const struct clock_discipline_config base_cfg = {
	.step_threshold_s = 0.128,
	.panic_threshold_s = 10,
	.max_frequency_ppm = 500,
};

Test(clock_discipline, rejects_a_bad_config)
{
	struct clock_sim c;
	struct clock_discipline *d;
	struct clock_discipline_config cfg = base_cfg;
	cfg.step_threshold_s = 0;
	cr_assert_eq(clock_discipline_new(&d, &cfg, &clock_sim_ops, &c), -EINVAL);
}

static enum clock_discipline_action steer(struct clock_discipline *d, double offset, double mono)
{
	struct clock_steer st = { .offset_s = offset, .horizon_s = 64 };
	return clock_discipline_steer(d, &st, mono);
}

Test(clock_discipline, slews_by_frequency_and_steps_large_offsets)
{
	struct clock_sim c;
	clock_sim_init(&c, -0.01, 0);
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &base_cfg, &clock_sim_ops, &c), 0);
	/* 10 ms over 64 s: 156.25 ppm on top of a frequency estimate of -20 ppm. */
	struct clock_steer st = {
		.offset_s = 0.01, .has_freq = true, .freq = -20e-6, .horizon_s = 64
	};
	cr_assert_eq(clock_discipline_steer(d, &st, 100), CLOCK_DISCIPLINE_SLEWED);
	cr_assert_float_eq(c.correction_ppm, -20 + 156.25, 1e-9);
	cr_assert_float_eq(c.slew_remaining_s, 0, 1e-12, "no adjtime-style slew");
	cr_assert_float_eq(clock_discipline_deadline(d), 164, 1e-9);
	cr_assert_float_eq(clock_discipline_base_ppm(d), -20, 1e-9);
	clock_discipline_tick(d, 150);
	cr_assert_float_eq(c.correction_ppm, -20 + 156.25, 1e-9, "too early: nothing changes");
	clock_discipline_tick(d, 164);
	cr_assert_float_eq(c.correction_ppm, -20, 1e-9, "back on the estimate at the deadline");
	cr_assert(isinf(clock_discipline_deadline(d)));
	/* What was applied: 136.25 ppm for 64 s, then -20 ppm. */
	cr_assert_float_eq(clock_discipline_correction_s(d, 164), 64 * 136.25e-6, 1e-12);
	cr_assert_float_eq(clock_discipline_correction_s(d, 200), 64 * 136.25e-6 - 36 * 20e-6,
			   1e-12);
	cr_assert_float_eq(clock_discipline_correction_s(d, 120), 20 * 136.25e-6, 1e-12,
			   "earlier times read from the history");
	cr_assert_float_eq(clock_discipline_correction_s(d, 50), 0, 1e-12, "before any change");

	cr_assert_eq(steer(d, 0.05, 90), CLOCK_DISCIPLINE_NONE, "time went backwards");
	cr_assert_eq(steer(d, NAN, 300), CLOCK_DISCIPLINE_NONE);
	cr_assert_float_eq(clock_discipline_last_offset_s(d), 0.01, 1e-12);

	double before = clock_discipline_correction_s(d, 300);
	clock_sim_init(&c, -2, 0);
	cr_assert_eq(steer(d, 2, 300), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_float_eq(c.offset_s, 0, 1e-12);
	cr_assert_eq(c.steps, 1);
	cr_assert_eq(clock_discipline_steps(d), 1);
	cr_assert_float_eq(clock_discipline_correction_s(d, 300), before + 2, 1e-9,
			   "the step is part of the correction record");
	clock_discipline_free(d);
}

Test(clock_discipline, clamps_to_the_maximum_frequency)
{
	struct clock_sim c;
	clock_sim_init(&c, 0.1, 50);
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &base_cfg, &clock_sim_ops, &c), 0);
	struct clock_steer st = {
		.offset_s = -0.1, .has_freq = true, .freq = -50e-6, .horizon_s = 4
	};
	cr_assert_eq(clock_discipline_steer(d, &st, 1), CLOCK_DISCIPLINE_SLEWED);
	cr_assert_float_eq(c.correction_ppm, -500, 1e-9);
	/* The extra -450 ppm removes 0.1 s in 222.2 s, not in the 4 s asked. */
	cr_assert_float_eq(clock_discipline_deadline(d), 1 + 0.1 / 450e-6, 1e-6);
	clock_sim_advance(&c, 0.1 / 450e-6);
	cr_assert_float_eq(c.offset_s, 0, 1e-9, "the oscillator error cancelled, the offset gone");
	clock_discipline_free(d);
}

Test(clock_discipline, panic_refuses_and_leaves_the_clock_alone)
{
	struct clock_sim c;
	clock_sim_init(&c, 0, 0);
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &base_cfg, &clock_sim_ops, &c), 0);
	/* No startup threshold: the first step is unlimited. */
	cr_assert_eq(steer(d, 100, 1), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(steer(d, 20, 2), CLOCK_DISCIPLINE_PANIC);
	cr_assert_float_eq(c.offset_s, 100, 1e-9);
	cr_assert_eq(c.steps, 1);
	cr_assert_float_eq(c.correction_ppm, 0, 1e-12);
	cr_assert_eq(steer(d, -9, 3), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(c.steps, 2);
	clock_discipline_free(d);
}

Test(clock_discipline, startup_threshold_applies_to_the_first_step_only)
{
	struct clock_sim c;
	clock_sim_init(&c, 0, 0);
	struct clock_discipline_config cfg = base_cfg;
	cfg.has_startup_panic = true;
	cfg.startup_panic_threshold_s = 1;
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &cfg, &clock_sim_ops, &c), 0);
	cr_assert_eq(steer(d, 5, 1), CLOCK_DISCIPLINE_PANIC);
	cr_assert_eq(c.steps, 0);
	cr_assert_eq(steer(d, 0.5, 2), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(steer(d, 5, 3), CLOCK_DISCIPLINE_STEPPED,
		     "later steps answer to the single-step threshold");
	cr_assert_eq(c.steps, 2);
	clock_discipline_free(d);
}

/* ntpd-rs's shipped { forward = "inf", backward = 86400 }: a clock a year behind may be stepped
 * forward at start, one a year ahead may not be stepped back. */
Test(clock_discipline, thresholds_per_direction)
{
	struct clock_sim c;
	clock_sim_init(&c, 0, 0);
	struct clock_discipline_config cfg = base_cfg;
	cfg.has_startup_panic = true;
	cfg.startup_panic_threshold_s = INFINITY;
	cfg.startup_panic_backward_s = 86400;
	cfg.panic_threshold_s = 10;
	cfg.panic_backward_s = 2;
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &cfg, &clock_sim_ops, &c), 0);
	cr_assert_eq(steer(d, -365 * 86400.0, 1), CLOCK_DISCIPLINE_PANIC, "a year back: refused");
	cr_assert_eq(c.steps, 0);
	cr_assert_eq(steer(d, 365 * 86400.0, 2), CLOCK_DISCIPLINE_STEPPED, "a year forward: taken");
	cr_assert_eq(steer(d, -3, 3), CLOCK_DISCIPLINE_PANIC, "later: 3 s back is past 2");
	cr_assert_eq(steer(d, 3, 4), CLOCK_DISCIPLINE_STEPPED, "3 s forward is within 10");
	cr_assert_eq(c.steps, 2);
	clock_discipline_free(d);
}

Test(clock_discipline, accumulated_threshold_sums_magnitudes)
{
	struct clock_sim c;
	clock_sim_init(&c, 0, 0);
	struct clock_discipline_config cfg = base_cfg;
	cfg.has_accumulated_panic = true;
	cfg.accumulated_panic_threshold_s = 10;
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &cfg, &clock_sim_ops, &c), 0);
	cr_assert_eq(steer(d, 4, 1), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(steer(d, -4, 2), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(steer(d, 4, 3), CLOCK_DISCIPLINE_PANIC,
		     "4 + 4 + 4 > 10 although the net step is 4");
	cr_assert_eq(c.steps, 2);
	clock_discipline_free(d);
}

/* ---- Statistics ------------------------------------------------------------------------------ */

Test(clock_stats, recovers_a_line_exactly)
{
	struct clock_stats st;
	clock_stats_init(&st);
	struct clock_estimate e;
	cr_assert_not(clock_stats_estimate(&st, &e));
	for (int i = 0; i < 20; i++)
		cr_assert(clock_stats_add(&st, 100 + 64.0 * i, 0.002 - 30e-6 * 64 * i,
					  0.001 + (i % 3) * 1e-4));
	cr_assert_not(clock_stats_add(&st, 100, 0, 0.001), "time must increase");
	cr_assert_not(clock_stats_add(&st, 5000, NAN, 0.001));
	cr_assert_not(clock_stats_add(&st, 5000, 0, -1));
	cr_assert(clock_stats_estimate(&st, &e));
	cr_assert_eq(e.n, 20);
	cr_assert_float_eq(e.t_s, 100 + 64.0 * 19, 1e-9);
	cr_assert_float_eq(e.freq, -30e-6, 1e-12);
	cr_assert_float_eq(e.offset_s, 0.002 - 30e-6 * 64 * 19, 1e-12);
	cr_assert_float_eq(clock_estimate_at(&e, e.t_s + 100), e.offset_s - 30e-6 * 100, 1e-12);
	cr_assert_float_eq(e.min_delay_s, 0.001, 1e-12);
	cr_assert_lt(e.jitter_s, 1e-12);
}

Test(clock_stats, low_delay_samples_lead)
{
	struct clock_stats st;
	clock_stats_init(&st);
	/* Alternating: exact samples at the least delay, and samples 1 ms later one way (offset
	 * +0.5 ms, delay +1 ms). The estimate stays near the exact ones. */
	for (int i = 0; i < 16; i++) {
		bool slow = i % 2;
		cr_assert(clock_stats_add(&st, 64.0 * i, slow ? 0.5e-3 : 0, slow ? 2e-3 : 1e-3));
	}
	struct clock_estimate e;
	cr_assert(clock_stats_estimate(&st, &e));
	cr_assert_lt(fabs(e.offset_s), 0.05e-3, "estimate %g", e.offset_s);
}

Test(clock_stats, a_frequency_change_trims_the_window)
{
	struct clock_stats st;
	clock_stats_init(&st);
	struct tu_rng r;
	tu_rng_seed(&r, 7);
	/* 48 samples at 0 ppm, then 16 at +10 ppm, with 10 us of noise. */
	double u = 0;
	for (int i = 0; i < 64; i++) {
		if (i >= 48)
			u += 10e-6 * 64;
		double noise = ((double)tu_rng_below(&r, 2001) - 1000) * 1e-8;
		cr_assert(clock_stats_add(&st, 64.0 * i, u + noise, 1e-3));
	}
	struct clock_estimate e;
	cr_assert(clock_stats_estimate(&st, &e));
	cr_assert_lt(e.n, 48, "the samples before the change are dropped (%zu kept)", e.n);
	cr_assert_float_eq(e.freq, 10e-6, 1e-6, "frequency %g", e.freq);
	cr_assert_float_eq(e.offset_s, u, 30e-6);
}

/* The closed loop (sources, estimation, selection, discipline, poll control against simulated
 * servers and a simulated clock) is tested in test_time.c. */
