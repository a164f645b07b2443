/* The clock backends: the simulated clock of the tests and the kernel's. */
#include "clock.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>

/* The rate at which slew() runs (the kernel's adjtime rate, and the simulation's). */
#define SLEW_RATE 500e-6

/* ---- Simulated clock ------------------------------------------------------------------------- */

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

/* The clock is ahead by offset_s, so correcting "source minus local" by offset_s means moving the
 * simulated clock forward by it. Like adjtime, a new slew replaces the one in progress. */
static int sim_slew(void *ud, double offset_s)
{
	struct clock_sim *c = ud;
	c->slew_remaining_s = offset_s;
	return 0;
}

/* Like the kernel, refuses nothing but clamps to 500 ppm. */
static int sim_set_frequency(void *ud, double ppm)
{
	struct clock_sim *c = ud;
	c->correction_ppm = fmin(500, fmax(-500, ppm));
	c->frequency_sets++;
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

/* ---- Kernel backend -------------------------------------------------------------------------- */

static int adjust(struct timex *tx)
{
	return clock_adjtime(CLOCK_REALTIME, tx) < 0 ? -errno : 0;
}

/* ADJ_OFFSET_SINGLESHOT is adjtime(): a linear slew at 500 ppm that a new call replaces. The
 * discipline does not use it (it slews by frequency); it stays for the backend's contract. */
static int kernel_slew(void *ud, double offset_s)
{
	(void)ud;
	struct timex tx = { .modes = ADJ_OFFSET_SINGLESHOT, .offset = lround(offset_s * 1e6) };
	return adjust(&tx);
}

/* The kernel takes the frequency in ppm scaled by 2^16 and refuses more than 500 ppm. */
static int kernel_set_frequency(void *ud, double ppm)
{
	(void)ud;
	struct timex tx = { .modes = ADJ_FREQUENCY,
			    .freq = lround(fmin(500, fmax(-500, ppm)) * 65536) };
	return adjust(&tx);
}

static int kernel_step(void *ud, double offset_s)
{
	(void)ud;
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
