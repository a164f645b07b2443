#include "clock.h"

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
	return (struct clock_candidate){ .id = id, .best = sample(0, offset, delay),
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
		.best = { .mono_s = 10, .delay_s = 0.02, .dispersion_s = 0.0005,
			  .root_delay_s = 0.01, .root_disp_s = 0.001, .stratum = 2 },
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

Test(clock_discipline, slews_small_and_steps_large_offsets)
{
	struct clock_sim c;
	clock_sim_init(&c, -0.05, 0);
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &base_cfg, &clock_sim_ops, &c), 0);
	cr_assert_eq(clock_discipline_update(d, 0.05, 1), CLOCK_DISCIPLINE_SLEWED);
	cr_assert_float_eq(c.slew_remaining_s, 0.05, 1e-12, "the first offset is slewed in full");
	cr_assert_eq(clock_discipline_update(d, 0.05, 1), CLOCK_DISCIPLINE_NONE,
		     "the same update twice");
	cr_assert_eq(clock_discipline_update(d, 0.05, 0.5), CLOCK_DISCIPLINE_NONE, "an older one");
	cr_assert_float_eq(clock_discipline_last_offset_s(d), 0.05, 1e-12);

	clock_sim_init(&c, -2, 0);
	cr_assert_eq(clock_discipline_update(d, 2, 17), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_float_eq(c.offset_s, 0, 1e-12);
	cr_assert_eq(c.steps, 1);
	cr_assert_float_eq(c.slew_remaining_s, 0, 1e-12, "a step cancels the slew");
	clock_discipline_free(d);
}

Test(clock_discipline, panic_refuses_and_leaves_the_clock_alone)
{
	struct clock_sim c;
	clock_sim_init(&c, 0, 0);
	struct clock_discipline *d;
	cr_assert_eq(clock_discipline_new(&d, &base_cfg, &clock_sim_ops, &c), 0);
	/* No startup threshold: the first step is unlimited. */
	cr_assert_eq(clock_discipline_update(d, 100, 1), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(clock_discipline_update(d, 20, 2), CLOCK_DISCIPLINE_PANIC);
	cr_assert_float_eq(c.offset_s, 100, 1e-9);
	cr_assert_eq(c.steps, 1);
	cr_assert_float_eq(c.correction_ppm, 0, 1e-12);
	cr_assert_eq(clock_discipline_update(d, -9, 3), CLOCK_DISCIPLINE_STEPPED);
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
	cr_assert_eq(clock_discipline_update(d, 5, 1), CLOCK_DISCIPLINE_PANIC);
	cr_assert_eq(c.steps, 0);
	cr_assert_eq(clock_discipline_update(d, 0.5, 2), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(clock_discipline_update(d, 5, 3), CLOCK_DISCIPLINE_STEPPED,
		     "later steps answer to the single-step threshold");
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
	cr_assert_eq(clock_discipline_update(d, 4, 1), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(clock_discipline_update(d, -4, 2), CLOCK_DISCIPLINE_STEPPED);
	cr_assert_eq(clock_discipline_update(d, 4, 3), CLOCK_DISCIPLINE_PANIC,
		     "4 + 4 + 4 > 10 although the net step is 4");
	cr_assert_eq(c.steps, 2);
	clock_discipline_free(d);
}

/* ---- Closed loop against the simulated clock ---------------------------------------------- */

/* Uniform in (0, 1). */
static double uniform(struct tu_rng *r)
{
	return ((double)(tu_rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
}

/* Box-Muller. */
static double gauss(struct tu_rng *r, double sigma)
{
	return sigma * sqrt(-2 * log(uniform(r))) * cos(2 * M_PI * uniform(r));
}

#define POLL_S 16.0
#define RUN_S (6 * 3600.0)
#define SETTLED_S (RUN_S - 3600.0)
#define NOISE_S 1e-3
#define FALSE_OFFSET_S 0.05

struct run {
	double worst_offset_s; /* over the last hour */
	double worst_freq_err_ppm;
	unsigned panics, steps, failed_selections;
	bool false_selected;
};

/* n sources measure the true offset through a network of 20 ms base delay with exponential
 * queueing (mean 0.5 ms each way, whose asymmetry biases the offset by half the difference, as
 * on a real path) and 1 ms of Gaussian jitter. Source 0 is a falseticker when `with_false`. */
static void simulate(double offset0, size_t n, bool with_false, uint64_t seed, struct run *r)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, seed);
	struct clock_sim c;
	clock_sim_init(&c, offset0, 50);
	struct clock_discipline *d;
	struct clock_discipline_config cfg = base_cfg;
	cfg.has_startup_panic = true;
	cfg.startup_panic_threshold_s = 0.05;
	cr_assert_eq(clock_discipline_new(&d, &cfg, &clock_sim_ops, &c), 0);
	struct clock_filter f[8];
	struct clock_candidate cands[8];
	bool tc[8];
	cr_assert(n <= 8);
	for (size_t i = 0; i < n; i++)
		clock_filter_init(&f[i]);
	memset(r, 0, sizeof *r);

	for (double t = 0; t < RUN_S; t += POLL_S) {
		for (size_t i = 0; i < n; i++) {
			double out = -0.5e-3 * log(uniform(&rng));
			double back = -0.5e-3 * log(uniform(&rng));
			struct clock_sample s = sample(t, -c.offset_s + (out - back) / 2 +
								   gauss(&rng, NOISE_S),
						       0.02 + out + back);
			if (with_false && i == 0)
				s.offset_s += FALSE_OFFSET_S;
			clock_filter_add(&f[i], &s);
			cands[i].id = (uint32_t)i;
			cr_assert(clock_filter_best(&f[i], &cands[i].best, &cands[i].jitter_s));
		}
		struct clock_selection sel;
		if (clock_select(cands, n, 2, t, tc, &sel) < 0) {
			if (t >= SETTLED_S)
				r->failed_selections++;
		} else {
			if (with_false && (tc[0] || sel.system_peer == 0))
				r->false_selected = true;
			if (clock_discipline_update(d, sel.offset_s, sel.peer.mono_s) ==
			    CLOCK_DISCIPLINE_PANIC)
				r->panics++;
		}
		cr_assert_float_eq(c.correction_ppm, clock_discipline_frequency_ppm(d), 1e-12);
		clock_sim_advance(&c, POLL_S);
		if (t >= SETTLED_S) {
			r->worst_offset_s = fmax(r->worst_offset_s, fabs(c.offset_s));
			r->worst_freq_err_ppm =
				fmax(r->worst_freq_err_ppm, fabs(c.correction_ppm + 50));
		}
	}
	r->steps = c.steps;
	clock_discipline_free(d);
}

/* Bounds. The combined measurement noise is about 1 ms / sqrt(4) = 0.5 ms (each source: 1 ms
 * Gaussian plus ~0.35 ms of queueing asymmetry, four sources averaged). The loop passes white
 * phase noise of deviation s as a clock error of about s*sqrt(dt/tau): 0.5 ms at tau = 64 s
 * (the smallest), 0.045 ms at tau = 2048 s. 1 ms is twice the worst of those and ~20 sigma of the
 * settled loop, so it fails only if the loop does not settle or does not lengthen tau.
 * The frequency estimate's noise in the settled loop is about s/tau * sqrt(dt/tau) ~ 0.02 ppm;
 * 0.5 ppm leaves room for the slower residual decay of the initial 50 ppm error while still
 * proving the error was learnt (an unlearnt error is 50 ppm). */
#define OFFSET_BOUND_S 1e-3
#define FREQ_BOUND_PPM 0.5

static void check_converged(const struct run *r)
{
	cr_assert_eq(r->panics, 0);
	cr_assert_eq(r->steps, 0, "100 ms is below the step threshold: slewed, never stepped");
	cr_assert_eq(r->failed_selections, 0);
	cr_assert_lt(r->worst_offset_s, OFFSET_BOUND_S, "worst offset in the last hour: %g s",
		     r->worst_offset_s);
	cr_assert_lt(r->worst_freq_err_ppm, FREQ_BOUND_PPM,
		     "worst frequency error in the last hour: %g ppm", r->worst_freq_err_ppm);
}

Test(clock_loop, converges_from_plus_100ms_and_50ppm)
{
	struct run r;
	simulate(0.1, 4, false, 1, &r);
	check_converged(&r);
}

Test(clock_loop, converges_from_minus_100ms_and_50ppm)
{
	struct run r;
	simulate(-0.1, 4, false, 2, &r);
	check_converged(&r);
}

/* From 10 ms rather than 100 ms: while a long slew runs, each filter holds samples spread over
 * the clock's own motion, so its jitter (and every correctness interval) widens until it covers
 * a source 50 ms away. A 10 ms offset is slewed within one poll. */
Test(clock_loop, falseticker_is_never_selected)
{
	struct run r;
	simulate(0.01, 4, true, 3, &r);
	cr_assert_not(r.false_selected, "a source 50 ms off was a truechimer or system peer");
	check_converged(&r);
}
