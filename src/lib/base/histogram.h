/* Latency histograms for /metrics, in seconds, with Prometheus's meaning: the bucket of upper
 * bound b counts the observations <= b, the last (+Inf) counts all of them, and _sum and _count
 * go with them. A plain value with no lock and no heap: each worker keeps its own in its
 * counters (not thread-safe by itself: one thread writes it, or the owner's lock covers it), and
 * the status read copies them and adds them up with histogram_merge. */
#ifndef NTSPOOL_BASE_HISTOGRAM_H
#define NTSPOOL_BASE_HISTOGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most finite upper bounds a histogram takes (+Inf comes on top). */
#define HISTOGRAM_MAX_BOUNDS 24

/* The default bounds, for key exchange latencies: 1 ms to 10 s. */
#define HISTOGRAM_DEFAULT_N 13
extern const double histogram_default_bounds[HISTOGRAM_DEFAULT_N];

struct histogram {
	const double *bounds; /* borrowed: finite, increasing, outliving the histogram */
	size_t n_bounds;
	uint64_t counts[HISTOGRAM_MAX_BOUNDS + 1]; /* per bucket, not cumulative; [n_bounds]: above
						      every bound */
	uint64_t count;
	double sum; /* seconds */
};

/* An empty histogram over bounds (borrowed for h's life; a static array, typically). 0, or
 * -EINVAL when n exceeds HISTOGRAM_MAX_BOUNDS or the bounds are not finite and strictly
 * increasing. n == 0 is a histogram of +Inf alone. */
int histogram_init(struct histogram *h, const double *bounds, size_t n);
/* An empty histogram over histogram_default_bounds. */
void histogram_init_default(struct histogram *h);

/* Counts one observation of `seconds`. A negative value counts as 0 (the caller subtracted two
 * clock reads the wrong way round; the event still happened); NaN and infinities are not counted
 * at all, since they would make _sum NaN or +Inf for good. True when counted. */
bool histogram_observe(struct histogram *h, double seconds);

/* Adds from's observations into into. 0, or -EINVAL (into unchanged) when their bounds differ. */
int histogram_merge(struct histogram *into, const struct histogram *from);

/* Writes the sample lines of h as metric `name`:
 *   name_bucket{LABELS,le="0.001"} 3   (cumulative, one line per bound, then le="+Inf")
 *   name_sum{LABELS} 0.0042
 *   name_count{LABELS} 3
 * labels (borrowed) is the inside of the braces, already escaped, or NULL (or "") for none. The
 * "# HELP" and "# TYPE name histogram" lines are the caller's (once per name, for every label
 * set). The text goes out through append(ud, bytes, len), e.g. into the status text buffer. */
void histogram_write(const struct histogram *h, const char *name, const char *labels,
		     void (*append)(void *ud, const char *s, size_t len), void *ud);

/* The same text into buf, snprintf-style: at most len - 1 bytes and a NUL (when len > 0), never
 * past buf + len. Returns the length of the whole text; a value >= len means it was cut. */
size_t histogram_format(const struct histogram *h, const char *name, const char *labels,
			char *buf, size_t len);

#endif
