/* The daemon's synchronisation state: after each sample it reruns selection over every source,
 * feeds the discipline (only with clock control), and updates what the daemon's own NTP server
 * announces (leap, stratum, reference, root delay and dispersion). Without a selectable source the
 * server falls back to [synchronization] local-stratum. */
#ifndef NTSPOOL_SYNC_H
#define NTSPOOL_SYNC_H

#include <stdbool.h>

#include <jansson.h>

#include "clock.h"
#include "config_daemon.h"
#include "ntp_server.h"

struct sync;

/* Selection considers at most this many sources. */
#define SYNC_MAX_SOURCES 256

/* cfg and clock are borrowed for the object's life; *clock is what the NTP server reads and is
 * rewritten here. ops/ud: the clock backend the discipline drives, or NULL ops when clock control
 * is off (then offsets are measured and reported, never applied). *out is new. */
int sync_new(struct sync **out, const struct config_daemon_sync *cfg,
	     struct ntp_server_clock *clock, const struct clock_backend_ops *ops, void *ud);
void sync_free(struct sync *s);

/* The discipline's limits for cfg: the thresholds sync_new's discipline keeps, for the clock
 * helper to keep as well. */
void sync_discipline_config(const struct config_daemon_sync *cfg,
			    struct clock_discipline_config *out);

/* Takes in each candidate's newest sample (cand[i].last, once: a sample seen before is not counted
 * again), refits each source's estimate, and reruns selection over the estimates of cand[0, n) with
 * their names names[0, n) (both borrowed for the call; at most SYNC_MAX_SOURCES are considered) at
 * monotonic time mono_s; now_ntp is the current NTP time (the reference timestamp when
 * synchronised). Returns true when the discipline stepped the clock: the caller then clears the
 * sources' filters, whose samples predate the step. The time core knows nothing of how samples are
 * obtained. */
bool sync_update(struct sync *s, const struct clock_candidate *cand, const char *const *names,
		 size_t n, double mono_s, uint64_t now_ntp);

/* The discipline slews an offset by running the clock off its frequency estimate for a computed
 * time. The daemon arms a timer at sync_next_event (monotonic s, INFINITY: none) and calls
 * sync_tick then; sync_update ticks too, so a late timer only lengthens the correction. */
double sync_next_event(const struct sync *s);
void sync_tick(struct sync *s, double mono_s);

/* Whether source id is a truechimer / the system peer of the last selection. */
bool sync_selected(const struct sync *s, uint32_t id);
bool sync_is_peer(const struct sync *s, uint32_t id);

/* The system state as /status and /metrics show it. */
struct sync_report {
	bool synchronised;
	bool clock_control;
	double offset_s;      /* 0 when not synchronised */
	double frequency_ppm; /* 0 without clock control */
	double jitter_s;
	unsigned stratum;
	size_t truechimers;
	double frequency_estimate_ppm; /* the oscillator's correction alone, 0 without control */
	double error_s;		       /* standard error of the combined offset estimate */
	size_t samples;		       /* samples in the truechimers' estimation windows */
	unsigned steps;		       /* clock steps made */
};
void sync_report(const struct sync *s, struct sync_report *out);

/* The "system" object of doc/status.md (new reference). */
json_t *sync_status(const struct sync *s);

#endif
