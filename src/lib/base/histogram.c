#include "histogram.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double histogram_default_bounds[HISTOGRAM_DEFAULT_N] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

int histogram_init(struct histogram *h, const double *bounds, size_t n)
{
	if (n > HISTOGRAM_MAX_BOUNDS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
			return -EINVAL;
	memset(h, 0, sizeof *h);
	h->bounds = bounds;
	h->n_bounds = n;
	return 0;
}

void histogram_init_default(struct histogram *h)
{
	histogram_init(h, histogram_default_bounds, HISTOGRAM_DEFAULT_N);
}

bool histogram_observe(struct histogram *h, double seconds)
{
	if (!isfinite(seconds))
		return false;
	if (seconds < 0)
		seconds = 0;
	/* The first bound >= seconds: "le" includes the bound itself. */
	size_t lo = 0, hi = h->n_bounds;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (h->bounds[mid] < seconds)
			lo = mid + 1;
		else
			hi = mid;
	}
	h->counts[lo]++;
	h->count++;
	h->sum += seconds;
	return true;
}

int histogram_merge(struct histogram *into, const struct histogram *from)
{
	if (into->n_bounds != from->n_bounds)
		return -EINVAL;
	for (size_t i = 0; i < into->n_bounds; i++)
		if (into->bounds[i] != from->bounds[i])
			return -EINVAL;
	for (size_t i = 0; i <= into->n_bounds; i++)
		into->counts[i] += from->counts[i];
	into->count += from->count;
	into->sum += from->sum;
	return 0;
}

/* The shortest text that reads back as v (v finite): "0.0025" rather than
 * "0.0025000000000000001", "1" rather than "1.000000", and "10" rather than "1e+01". */
static void format_double(char *buf, size_t len, double v)
{
	if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {
		snprintf(buf, len, "%lld", (long long)v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

struct writer {
	void (*append)(void *ud, const char *s, size_t len);
	void *ud;
};

static void put(const struct writer *w, const char *s)
{
	w->append(w->ud, s, strlen(s));
}

/* "name<suffix>{labels<,le="le">} value\n", the braces left out when there is nothing in them. */
static void line(const struct writer *w, const char *name, const char *suffix, const char *labels,
		 const char *le, const char *value)
{
	put(w, name);
	put(w, suffix);
	if (labels || le) {
		put(w, "{");
		if (labels)
			put(w, labels);
		if (labels && le)
			put(w, ",");
		if (le) {
			put(w, "le=\"");
			put(w, le);
			put(w, "\"");
		}
		put(w, "}");
	}
	put(w, " ");
	put(w, value);
	put(w, "\n");
}

void histogram_write(const struct histogram *h, const char *name, const char *labels,
		     void (*append)(void *ud, const char *s, size_t len), void *ud)
{
	const struct writer w = { append, ud };
	char le[32], value[32];
	uint64_t cumulative = 0;
	if (labels && !*labels)
		labels = NULL;
	for (size_t i = 0; i < h->n_bounds; i++) {
		cumulative += h->counts[i];
		format_double(le, sizeof le, h->bounds[i]);
		snprintf(value, sizeof value, "%" PRIu64, cumulative);
		line(&w, name, "_bucket", labels, le, value);
	}
	/* +Inf is every observation: the count itself, so the two lines can never disagree. */
	snprintf(value, sizeof value, "%" PRIu64, h->count);
	line(&w, name, "_bucket", labels, "+Inf", value);
	format_double(value, sizeof value, h->sum);
	line(&w, name, "_sum", labels, NULL, value);
	snprintf(value, sizeof value, "%" PRIu64, h->count);
	line(&w, name, "_count", labels, NULL, value);
}

/* A fixed buffer behind the appender: keeps what fits, counts everything. */
struct fixed {
	char *buf;
	size_t len;
	size_t total;
};

static void fixed_append(void *ud, const char *s, size_t n)
{
	struct fixed *f = ud;
	if (f->len > 0 && f->total < f->len - 1) {
		size_t room = f->len - 1 - f->total;
		memcpy(f->buf + f->total, s, n < room ? n : room);
	}
	f->total += n;
}

size_t histogram_format(const struct histogram *h, const char *name, const char *labels,
			char *buf, size_t len)
{
	struct fixed f = { buf, len, 0 };
	histogram_write(h, name, labels, fixed_append, &f);
	if (len > 0)
		buf[f.total < len ? f.total : len - 1] = '\0';
	return f.total;
}
