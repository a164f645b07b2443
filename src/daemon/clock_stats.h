/* Per-source sample statistics, sans-I/O: the offsets of one source measured against the free
 * running ("raw") timescale of the local oscillator, and a weighted linear regression over them
 * that gives the source's offset now, the oscillator's frequency error relative to it, and how far
 * both can be trusted (doc/timekeeping.md).
 *
 * Raw timescale: the local clock minus every correction the discipline applied to it, so that a
 * correction made after a sample does not change what the sample says. The caller converts
 * (clock_discipline_correction_s). */
#ifndef NTSPOOL_CLOCK_STATS_H
#define NTSPOOL_CLOCK_STATS_H

#include <stdbool.h>
#include <stddef.h>

/* Samples kept per source: at the 1024 s poll this is 18 hours; the runs test usually trims the
 * window well before that. */
#define CLOCK_STATS_MAX 64
/* Below this many samples the runs test is not applied. */
#define CLOCK_STATS_MIN_RUNS_TEST 8

struct clock_stats {
	double t[CLOCK_STATS_MAX];     /* sample time (monotonic seconds), oldest first */
	double u[CLOCK_STATS_MAX];     /* raw offset: source minus the uncorrected local clock */
	double delay[CLOCK_STATS_MAX]; /* round-trip delay of the sample */
	size_t n;
};

struct clock_estimate {
	double t_s;	    /* time of the newest sample, where offset_s is given */
	double offset_s;    /* regression's raw offset at t_s */
	double freq;	    /* d(raw offset)/dt (s/s): minus the oscillator's frequency error */
	double offset_sd_s; /* standard error of offset_s */
	double freq_sd;	    /* standard error of freq; INFINITY with fewer than 3 samples */
	double jitter_s;    /* RMS of the residuals about the regression line */
	double min_delay_s; /* least delay in the window */
	size_t n;	    /* samples in the window */
};

void clock_stats_init(struct clock_stats *st);

/* Adds a sample; times must increase (an older or equal time is ignored, returns false), and a
 * non-finite value is refused. A full window drops its oldest sample. */
bool clock_stats_add(struct clock_stats *st, double t_s, double raw_offset_s, double delay_s);

/* Fits the window. Samples that the runs test shows no longer lie on one line with the newer ones
 * (the frequency changed) are dropped for good. Returns false when empty. */
bool clock_stats_estimate(struct clock_stats *st, struct clock_estimate *out);

/* The estimate's raw offset extrapolated to t_s (the frequency is used only once known). */
double clock_estimate_at(const struct clock_estimate *e, double t_s);

#endif
