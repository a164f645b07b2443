/* A simulated network for the daemon's time core: a client whose oscillator has a frequency error
 * that wanders, perfect stratum-1 servers (one of them may be a falseticker), and one-way delays
 * drawn independently each way. The real source objects build the requests and check the replies,
 * which a simulated server builds as real NTP packets; the real filter, sync (estimation,
 * selection) and discipline steer a struct clock_sim. Nothing reads or sets a real clock, so runs
 * are deterministic per seed and take no wall-clock time beyond computing. */
#ifndef NTSPOOL_SIM_TIME_H
#define NTSPOOL_SIM_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_SERVERS 8

struct sim_scenario {
	const char *name;
	double base_delay_s; /* one-way delay: base + exponential of mean exp_mean_s */
	double exp_mean_s;
	size_t n_servers;
	double false_offset_s; /* the last server's time is off by this (0: all honest) */
	double freq_step_ppm;  /* added to the oscillator's error at freq_step_at_s */
	double freq_step_at_s;
	double offset0_s; /* client clock minus true time at the start */
	double freq0_ppm; /* oscillator error at the start (positive: runs fast) */
	double wander;	  /* random walk of the fractional frequency per sqrt(second) */
	int poll_min, poll_max;
	double duration_s;
	double score_from_s; /* the time error is scored from here to the end */
	bool no_timer;	     /* never call sync_tick: the daemon without a timer at sync_next_event
			      * (a phase correction ends with the next sample) */
};

struct sim_result {
	double rms_s, max_s;	 /* true time error of the client over the scored part */
	unsigned steps;		 /* clock steps in the whole run */
	unsigned false_selected; /* updates after which the falseticker was a truechimer or peer */
	unsigned samples;	 /* replies that gave a sample */
	int poll_max_reached;	 /* highest poll exponent of an honest source (before a step) */
	int poll_after_step;	 /* lowest one within 2 h after the frequency step (or -1) / */
	int poll_before_step;	 /* highest poll of source 0 in the 2 h before the step (or -1) */
	double max_after_1h_s;	 /* worst time error from 1 h on */
	double freq_error_ppm;	 /* oscillator error plus the frequency estimate at the end */
};

/* The five scenarios of doc/timekeeping.md: LAN 100 us, LAN 1 ms, WAN, LAN with a +10 ppm frequency
 * step at 8 h, LAN with three servers of which one is 50 ms off. */
#define SIM_SCENARIOS 5
extern const struct sim_scenario sim_scenarios[SIM_SCENARIOS];

/* Runs sc with the given seed. Returns 0, or a negative errno if an object could not be made. */
int sim_run(const struct sim_scenario *sc, uint64_t seed, struct sim_result *out);

#endif
