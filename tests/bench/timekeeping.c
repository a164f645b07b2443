/* Prints the true time error of the daemon's time core in the five simulated scenarios of
 * doc/timekeeping.md: RMS and maximum over the scored part, clock steps, the falseticker's
 * selections, and the samples taken, over several seeds. tests/bench/timekeeping [SEEDS [POLL_MAX]]
 * (default 5 seeds, the scenarios' poll) */
#include <math.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sim_time.h"

int main(int argc, char **argv)
{
	unsigned seeds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 5;
	int poll_max = argc > 2 ? atoi(argv[2]) : 0;
	bool no_timer = argc > 3 && strcmp(argv[3], "notimer") == 0;
	log_set_level(LOG_LEVEL_ERROR);
	if (seeds == 0 || seeds > 1000) {
		fprintf(stderr, "usage: %s [SEEDS (1..1000)]\n", argv[0]);
		return 2;
	}
	printf("| scenario (one-way delay) | RMS | max | steps | falseticker "
	       "selected | samples "
	       "| poll range | frequency error at the end "
	       "|\n|---|---|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < SIM_SCENARIOS; i++) {
		struct sim_scenario scv = sim_scenarios[i];
		const struct sim_scenario *sc = &scv;
		if (poll_max >= scv.poll_min && poll_max <= 17)
			scv.poll_max = poll_max;
		scv.no_timer = no_timer;
		double sum2 = 0, max = 0, fmax_ppm = 0;
		unsigned steps = 0, falses = 0, samples = 0;
		int pmax = 0, pmin = 99;
		for (unsigned k = 1; k <= seeds; k++) {
			struct sim_result r;
			if (sim_run(sc, k, &r) < 0) {
				fprintf(stderr, "%s: seed %u failed\n", sc->name, k);
				return 1;
			}
			sum2 += r.rms_s * r.rms_s;
			fmax_ppm = fabs(r.freq_error_ppm) > fmax_ppm ? fabs(r.freq_error_ppm)
								     : fmax_ppm;
			max = r.max_s > max ? r.max_s : max;
			steps += r.steps;
			falses += r.false_selected;
			samples += r.samples;
			pmax = r.poll_max_reached > pmax ? r.poll_max_reached : pmax;
			if (r.poll_after_step >= 0 && r.poll_after_step < pmin)
				pmin = r.poll_after_step;
		}
		char range[64];
		if (pmin != 99)
			snprintf(range, sizeof range, "up to 2^%d, 2^%d after the step", pmax,
				 pmin);
		else
			snprintf(range, sizeof range, "up to 2^%d", pmax);
		printf("| %s | %.1f us | %.1f us | %u | %u | %u | %s | %.3f ppm |\n", sc->name,
		       1e6 * sqrt(sum2 / seeds), 1e6 * max, steps, falses, samples / seeds, range,
		       fmax_ppm);
	}
	printf("\n%u seeds; 16 h each, scored over the last 8 h; RMS is the root "
	       "mean square over "
	       "the seeds' RMS, max the worst; samples per run; the frequency error "
	       "is the worst of the "
	       "estimate's at the end of a run.\n",
	       seeds);
	return 0;
}
