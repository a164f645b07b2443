#include "clock_stats.h"

#include <math.h>
#include <string.h>

/* The noise floor of one sample beside queueing (the oscillator's wander within the window, the
 * clocks' reading resolution): a sample of the least delay is not trusted beyond it. */
#define FLOOR_S 1e-6
/* Residuals below this are rounding, not measurement. */
#define EXACT_S 1e-10

void clock_stats_init(struct clock_stats *st)
{
	memset(st, 0, sizeof *st);
}

bool clock_stats_add(struct clock_stats *st, double t_s, double raw_offset_s, double delay_s)
{
	if (!isfinite(t_s) || !isfinite(raw_offset_s) || !isfinite(delay_s) || delay_s < 0)
		return false;
	if (st->n > 0 && !(t_s > st->t[st->n - 1]))
		return false;
	if (st->n == CLOCK_STATS_MAX) {
		memmove(st->t, st->t + 1, (CLOCK_STATS_MAX - 1) * sizeof st->t[0]);
		memmove(st->u, st->u + 1, (CLOCK_STATS_MAX - 1) * sizeof st->u[0]);
		memmove(st->delay, st->delay + 1, (CLOCK_STATS_MAX - 1) * sizeof st->delay[0]);
		st->n--;
	}
	st->t[st->n] = t_s;
	st->u[st->n] = raw_offset_s;
	st->delay[st->n] = delay_s;
	st->n++;
	return true;
}

static void drop_oldest(struct clock_stats *st, size_t k)
{
	if (k >= st->n) {
		st->n = 0;
		return;
	}
	memmove(st->t, st->t + k, (st->n - k) * sizeof st->t[0]);
	memmove(st->u, st->u + k, (st->n - k) * sizeof st->u[0]);
	memmove(st->delay, st->delay + k, (st->n - k) * sizeof st->delay[0]);
	st->n -= k;
}

/* Weights. The offset of a sample errs by half the asymmetry of its queueing; with excess delay D
 * over the least one the asymmetry is anywhere in [-D, D] (uniform for exponential queues), so the
 * error has variance D^2/12. Added to it is a floor (a tenth of the mean excess, at least FLOOR_S)
 * standing for everything else, so the least-delay sample leads without being the only one
 * counted. */
static void weights(const struct clock_stats *st, double *w, double *min_delay)
{
	double dmin = INFINITY, dsum = 0;
	for (size_t i = 0; i < st->n; i++)
		dmin = fmin(dmin, st->delay[i]);
	for (size_t i = 0; i < st->n; i++)
		dsum += st->delay[i] - dmin;
	double s0 = fmax(FLOOR_S, dsum / (double)st->n / 10);
	for (size_t i = 0; i < st->n; i++) {
		double d = st->delay[i] - dmin;
		w[i] = 1 / (s0 * s0 + d * d / 12);
	}
	*min_delay = dmin;
}

struct fit {
	double tbar, ubar, b, s2, W, Sxx;
};

static void fit(const struct clock_stats *st, const double *w, struct fit *f)
{
	double W = 0, tw = 0, uw = 0;
	/* Times relative to the newest, so the sums keep their precision. */
	double t0 = st->t[st->n - 1];
	for (size_t i = 0; i < st->n; i++) {
		W += w[i];
		tw += w[i] * (st->t[i] - t0);
		uw += w[i] * st->u[i];
	}
	f->W = W;
	f->tbar = tw / W;
	f->ubar = uw / W;
	double Sxx = 0, Sxy = 0;
	for (size_t i = 0; i < st->n; i++) {
		double dt = st->t[i] - t0 - f->tbar;
		Sxx += w[i] * dt * dt;
		Sxy += w[i] * dt * (st->u[i] - f->ubar);
	}
	f->Sxx = Sxx;
	f->b = st->n >= 2 && Sxx > 0 ? Sxy / Sxx : 0;
	double rss = 0;
	for (size_t i = 0; i < st->n; i++) {
		double r = st->u[i] - (f->ubar + f->b * (st->t[i] - t0 - f->tbar));
		rss += w[i] * r * r;
	}
	/* Residual variance in units of the weights (1 if the weights were exact inverse
	 * variances); with too few samples to tell, the weights are taken as they are. */
	f->s2 = st->n > 2 ? rss / (double)(st->n - 2) : 1;
}

/* Runs of equal residual signs. A line through samples that follow one has residuals whose signs
 * change at random: about (n + 1) / 2 runs, with a standard deviation of sqrt(n - 1) / 2. Fewer
 * than 1.5 deviations below that (about 7 % of windows that do follow a line are cut needlessly,
 * which costs only old samples) mean the samples bend away from any one line: the oscillator's
 * frequency moved within the window. */
static bool runs_ok(const struct clock_stats *st, const struct fit *f)
{
	double t0 = st->t[st->n - 1];
	size_t runs = 0;
	int last = 0;
	double worst = 0;
	for (size_t i = 0; i < st->n; i++)
		worst = fmax(worst, fabs(st->u[i] - (f->ubar + f->b * (st->t[i] - t0 - f->tbar))));
	if (worst < EXACT_S)
		return true; /* on the line to rounding: signs say nothing */
	for (size_t i = 0; i < st->n; i++) {
		double r = st->u[i] - (f->ubar + f->b * (st->t[i] - t0 - f->tbar));
		int sign = r >= 0 ? 1 : -1;
		if (sign != last)
			runs++;
		last = sign;
	}
	double n = (double)st->n;
	double critical = (n + 1) / 2 - 1.5 * sqrt(n - 1) / 2;
	return (double)runs >= critical;
}

bool clock_stats_estimate(struct clock_stats *st, struct clock_estimate *out)
{
	double w[CLOCK_STATS_MAX], dmin;
	struct fit f;
	if (st->n == 0)
		return false;
	for (;;) {
		weights(st, w, &dmin);
		fit(st, w, &f);
		if (st->n < CLOCK_STATS_MIN_RUNS_TEST || runs_ok(st, &f))
			break;
		drop_oldest(st, st->n / 4);
	}
	double t0 = st->t[st->n - 1];
	double rms = 0;
	for (size_t i = 0; i < st->n; i++) {
		double r = st->u[i] - (f.ubar + f.b * (st->t[i] - t0 - f.tbar));
		rms += r * r;
	}
	*out = (struct clock_estimate){
		.t_s = t0,
		.offset_s = f.ubar - f.b * f.tbar,
		.freq = f.b,
		.offset_sd_s = sqrt(f.s2 * (1 / f.W + (f.Sxx > 0 ? f.tbar * f.tbar / f.Sxx : 0))),
		.freq_sd = st->n >= 3 && f.Sxx > 0 ? sqrt(f.s2 / f.Sxx) : INFINITY,
		.jitter_s = st->n > 1 ? sqrt(rms / (double)(st->n - 1)) : 0,
		.min_delay_s = dmin,
		.n = st->n,
	};
	return true;
}

double clock_estimate_at(const struct clock_estimate *e, double t_s)
{
	if (!isfinite(e->freq_sd))
		return e->offset_s;
	return e->offset_s + e->freq * (t_s - e->t_s);
}
