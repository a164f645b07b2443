/* The daemon's time core, sans-I/O: per-source clock filters, selection of agreeing sources,
 * combination, and the discipline loop that steers a clock backend. Time comes in as arguments
 * (mono_s: a monotonic clock in seconds); nothing here reads a clock or sleeps, so the whole loop
 * runs against a simulated clock in tests.
 *
 * Offsets are "source minus local clock" in seconds: positive means the local clock is behind. */
#ifndef NTSPOOL_CLOCK_H
#define NTSPOOL_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Samples and the per-source filter ---------------------------------------------------- */

struct clock_sample {
	double mono_s;	     /* when the reply arrived (local monotonic time) */
	double offset_s;     /* RFC 5905 theta */
	double delay_s;	     /* RFC 5905 delta (>= 0) */
	double dispersion_s; /* precision of both ends + a bound on the frequency error over delay */
	double root_delay_s; /* the source's own root delay and dispersion, from its header */
	double root_disp_s;
	uint8_t stratum;
	uint8_t leap;
	uint32_t refid;
};

#define CLOCK_FILTER_SIZE 8

/* The last CLOCK_FILTER_SIZE samples of one source; the best is the one of least delay. */
struct clock_filter {
	struct clock_sample s[CLOCK_FILTER_SIZE];
	size_t n;    /* valid samples, <= CLOCK_FILTER_SIZE */
	size_t next; /* ring position */
};

void clock_filter_init(struct clock_filter *f);
void clock_filter_add(struct clock_filter *f, const struct clock_sample *s);

/* The sample of least delay among those kept, and the jitter (RMS of the offsets of the kept
 * samples relative to it). Returns false when the filter is empty. */
bool clock_filter_best(const struct clock_filter *f, struct clock_sample *best, double *jitter_s);
/* The newest sample; false when the filter is empty. */
bool clock_filter_last(const struct clock_filter *f, struct clock_sample *last);

/* ---- Selection and combination ------------------------------------------------------------ */

struct clock_candidate {
	uint32_t id; /* the caller's source id */
	struct clock_sample best;
	double jitter_s;
	/* The newest sample, which the time core's estimation takes in once (every sample counts,
	 * not only the filter's best), and the source's current poll interval. */
	struct clock_sample last;
	double poll_s;
	/* How fast the interval grows with the age of best (s/s); 0: RFC 5905's PHI. The estimation
	 * sets what its frequency error justifies. */
	double growth;
};

/* A candidate from a filter: best, jitter and last; false when the filter is empty. */
bool clock_filter_candidate(const struct clock_filter *f, uint32_t id, double poll_s,
			    struct clock_candidate *out);

struct clock_selection {
	size_t n_true;		  /* truechimers (sources whose correctness intervals agree) */
	double offset_s;      /* combined offset of the truechimers, weighted by 1/root distance */
	double jitter_s;	  /* system jitter */
	uint32_t system_peer;	  /* id of the truechimer with the least root distance */
	struct clock_sample peer; /* its best sample (stratum, refid, root delay/dispersion) */
};

/* Root synchronisation distance of a candidate's sample at mono_s (RFC 5905 §11.2.1 style:
 * root_delay/2 + root_disp + delay/2 + dispersion + jitter + growth since the sample). */
double clock_root_distance(const struct clock_candidate *c, double mono_s);

/* Selects the sources whose correctness intervals [offset - dist, offset + dist] share a common
 * intersection held by a majority (Marzullo's algorithm, as RFC 5905's clock select), marks
 * truechimer[i] for each candidate, and combines them. Candidates with leap 3 or stratum 0/16 are
 * never truechimers. Returns 0 with *sel filled when at least min_agree truechimers exist,
 * -EAGAIN otherwise (sel->n_true still says how many agreed). */
int clock_select(const struct clock_candidate *c, size_t n, unsigned min_agree, double mono_s,
		 bool *truechimer, struct clock_selection *sel);

/* ---- Discipline --------------------------------------------------------------------------- */

/* What the discipline asks the clock backend to do. */
struct clock_backend_ops {
	/* Slew the clock by offset_s over time (the kernel's PLL offset, or the simulation). */
	int (*slew)(void *ud, double offset_s);
	/* Set the frequency correction (ppm, positive = run faster). */
	int (*set_frequency)(void *ud, double ppm);
	/* Step the clock by offset_s at once. */
	int (*step)(void *ud, double offset_s);
};

struct clock_discipline_config {
	double step_threshold_s;	       /* offsets beyond this are stepped, not slewed (0.128) */
	double panic_threshold_s; /* single-step-panic-threshold: refuse larger steps */
	bool has_startup_panic;	  /* startup-step-panic-threshold applies to the first */
	double startup_panic_threshold_s;
	/* Backward steps (a negative offset: the clock is ahead), when their limit differs
	 * (ntpd-rs's { forward, backward } form); 0: the limit above applies both ways. */
	double panic_backward_s;
	double startup_panic_backward_s;
	bool has_accumulated_panic; /* accumulated-step-panic-threshold */
	double accumulated_panic_threshold_s;
	double max_frequency_ppm; /* clamp of the frequency correction (500) */
};

/* The panic thresholds over the steps made so far: what the discipline checks before it asks for
 * a step, and what the clock helper checks again before it makes one, since it does not trust the
 * process that asks. Both record only the steps that were made, so the two stay in step. */
struct clock_step_guard {
	struct clock_discipline_config cfg;
	bool stepped;	      /* a step was made: the startup limit no longer applies */
	double accumulated_s; /* the magnitudes of the steps made */
};

void clock_step_guard_init(struct clock_step_guard *g, const struct clock_discipline_config *cfg);
/* True when a step by offset_s is within the thresholds that apply now. */
bool clock_step_guard_allows(const struct clock_step_guard *g, double offset_s);
/* Counts a step by offset_s that was made. */
void clock_step_guard_record(struct clock_step_guard *g, double offset_s);

enum clock_discipline_action {
	CLOCK_DISCIPLINE_NONE,	  /* nothing done (bad input, or the backend failed) */
	CLOCK_DISCIPLINE_SLEWED,  /* frequency set to the estimate plus a phase correction */
	CLOCK_DISCIPLINE_STEPPED, /* stepped */
	CLOCK_DISCIPLINE_PANIC,	  /* a step beyond a panic threshold was refused */
};

struct clock_discipline;

/* ops/ud: the backend (borrowed for the discipline's life). *out is new. The discipline only ever
 * uses set_frequency and step: an offset is slewed by running the clock faster or slower than the
 * frequency estimate for a computed time (doc/timekeeping.md). */
int clock_discipline_new(struct clock_discipline **out, const struct clock_discipline_config *cfg,
			 const struct clock_backend_ops *ops, void *ud);
void clock_discipline_free(struct clock_discipline *d);

/* What the estimation hands to the discipline. */
struct clock_steer {
	double offset_s;  /* the clock's offset now (source minus local, as samples) */
	bool has_freq;	  /* freq is known; otherwise the previous estimate stays */
	double freq;	  /* d(raw offset)/dt in s/s: the frequency correction that cancels the
			   * oscillator's error is freq * 1e6 ppm */
	double horizon_s; /* remove offset_s over this time (the caller's next update is due well
			   * before it ends); at least 1 s */
};

/* Steers the clock at mono_s: steps when |offset| passes the step threshold (subject to the panic
 * thresholds), else sets the frequency to the estimate plus offset/horizon until the offset is
 * gone. Times must not go backwards (NONE). */
enum clock_discipline_action clock_discipline_steer(struct clock_discipline *d,
						    const struct clock_steer *st, double mono_s);

/* Ends a phase correction whose time is up (call at clock_discipline_deadline, or any time: it does
 * nothing early). */
void clock_discipline_tick(struct clock_discipline *d, double mono_s);
/* When the running phase correction must end (monotonic s), INFINITY when none runs. */
double clock_discipline_deadline(const struct clock_discipline *d);

/* The sum of every correction applied to the clock up to mono_s (phase slewed by frequency and
 * steps), relative to the start: adding it to an offset measured at mono_s gives the offset against
 * the uncorrected oscillator. Exact for the last CLOCK_DISCIPLINE_HISTORY changes of frequency;
 * older times are extrapolated from the oldest one kept. */
#define CLOCK_DISCIPLINE_HISTORY 32
double clock_discipline_correction_s(const struct clock_discipline *d, double mono_s);

/* The frequency correction now in force (ppm, including a phase correction), the estimate of the
 * oscillator's error alone (ppm), the last offset fed in, and the steps made (for status). */
double clock_discipline_frequency_ppm(const struct clock_discipline *d);
double clock_discipline_base_ppm(const struct clock_discipline *d);
double clock_discipline_last_offset_s(const struct clock_discipline *d);
unsigned clock_discipline_steps(const struct clock_discipline *d);

/* ---- A simulated clock, for tests and for measuring without touching the system clock ----- */

/* A free-running clock with a frequency error and a phase, driven by the discipline through the
 * same backend operations the kernel backend implements. */
struct clock_sim {
	double offset_s;	 /* simulated clock minus true time */
	double freq_error_ppm;	 /* the oscillator's own error */
	double correction_ppm;	 /* what the discipline set */
	double slew_remaining_s; /* slew in progress, applied at the kernel's 500 ppm rate */
	unsigned steps;
	unsigned frequency_sets;
};

void clock_sim_init(struct clock_sim *c, double offset_s, double freq_error_ppm);
/* Advances true time by dt_s (the caller changes freq_error_ppm between calls to model an
 * oscillator's wander). */
void clock_sim_advance(struct clock_sim *c, double dt_s);
/* Backend operations over a struct clock_sim (pass it as ud). */
extern const struct clock_backend_ops clock_sim_ops;

/* The kernel backend (clock_adjtime on CLOCK_REALTIME); ud is unused. Only used when
 * [synchronization] clock-control is true; tests never use it. */
extern const struct clock_backend_ops clock_kernel_ops;

#endif
