#include "histogram.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Exact binary fractions, so _sum prints exactly. */
static const double small_bounds[2] = { 0.125, 1 };

static void small_case(struct histogram *h)
{
	cr_assert_eq(histogram_init(h, small_bounds, 2), 0);
	cr_assert(histogram_observe(h, 0.0625));
	cr_assert(histogram_observe(h, 0.125), "a value on a bound is in that bound's bucket");
	cr_assert(histogram_observe(h, 0.5));
	cr_assert(histogram_observe(h, 2));
}

/* The index of the bucket (not cumulative) that one observation of v lands in. */
static size_t bucket_of(double v)
{
	struct histogram h;
	histogram_init_default(&h);
	cr_assert(histogram_observe(&h, v));
	size_t found = SIZE_MAX;
	for (size_t i = 0; i <= h.n_bounds; i++) {
		if (h.counts[i]) {
			cr_assert_eq(found, SIZE_MAX, "one observation, one bucket");
			found = i;
		}
	}
	cr_assert_eq(h.count, 1);
	return found;
}

Test(histogram, placement_at_and_around_every_bound)
{
	for (size_t i = 0; i < HISTOGRAM_DEFAULT_N; i++) {
		double b = histogram_default_bounds[i];
		cr_assert_eq(bucket_of(b), i, "on bound %zu (%g)", i, b);
		cr_assert_eq(bucket_of(nextafter(b, 0)), i, "just under bound %zu", i);
		cr_assert_eq(bucket_of(nextafter(b, INFINITY)), i + 1, "just over bound %zu", i);
	}
	cr_assert_eq(bucket_of(0), 0);
	cr_assert_eq(bucket_of(1e300), HISTOGRAM_DEFAULT_N, "above every bound: +Inf only");
	cr_assert_eq(bucket_of(0.003), 2);
}

Test(histogram, negative_clamps_to_zero_and_non_finite_is_not_counted)
{
	struct histogram h;
	histogram_init_default(&h);
	cr_assert(histogram_observe(&h, 0.5));
	cr_assert_not(histogram_observe(&h, NAN));
	cr_assert_not(histogram_observe(&h, INFINITY));
	cr_assert_not(histogram_observe(&h, -INFINITY));
	cr_assert_eq(h.count, 1, "NaN and infinities are dropped");
	cr_assert_eq(h.sum, 0.5);
	cr_assert(histogram_observe(&h, -3));
	cr_assert_eq(h.count, 2);
	cr_assert_eq(h.counts[0], 1, "a negative value counts as 0, in the first bucket");
	cr_assert_eq(h.sum, 0.5, "and adds nothing to the sum");
}

Test(histogram, exact_text_of_a_small_case)
{
	struct histogram h;
	small_case(&h);
	char buf[512];
	const char *want = "lat_bucket{le=\"0.125\"} 2\n"
			   "lat_bucket{le=\"1\"} 3\n"
			   "lat_bucket{le=\"+Inf\"} 4\n"
			   "lat_sum 2.6875\n"
			   "lat_count 4\n";
	cr_assert_eq(histogram_format(&h, "lat", NULL, buf, sizeof buf), strlen(want));
	cr_assert_str_eq(buf, want);
	cr_assert_eq(histogram_format(&h, "lat", "", buf, sizeof buf), strlen(want),
		     "empty labels are no labels");
	cr_assert_str_eq(buf, want);

	const char *with = "lat_bucket{worker=\"0\",le=\"0.125\"} 2\n"
			   "lat_bucket{worker=\"0\",le=\"1\"} 3\n"
			   "lat_bucket{worker=\"0\",le=\"+Inf\"} 4\n"
			   "lat_sum{worker=\"0\"} 2.6875\n"
			   "lat_count{worker=\"0\"} 4\n";
	cr_assert_eq(histogram_format(&h, "lat", "worker=\"0\"", buf, sizeof buf), strlen(with));
	cr_assert_str_eq(buf, with);
}

Test(histogram, empty_histogram_and_default_bounds_text)
{
	struct histogram h;
	histogram_init_default(&h);
	char buf[2048];
	histogram_format(&h, "x", NULL, buf, sizeof buf);
	const char *les[] = { "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
			      "0.25",  "0.5",	 "1",	  "2.5",  "5",	   "10",   "+Inf" };
	const char *p = buf;
	for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
		char line[64];
		snprintf(line, sizeof line, "x_bucket{le=\"%s\"} 0\n", les[i]);
		cr_assert(strncmp(p, line, strlen(line)) == 0, "line %zu: want %s at %s", i, line,
			  p);
		p += strlen(line);
	}
	cr_assert_str_eq(p, "x_sum 0\nx_count 0\n");

	struct histogram only_inf;
	cr_assert_eq(histogram_init(&only_inf, NULL, 0), 0);
	cr_assert(histogram_observe(&only_inf, 7));
	histogram_format(&only_inf, "y", NULL, buf, sizeof buf);
	cr_assert_str_eq(buf, "y_bucket{le=\"+Inf\"} 1\ny_sum 7\ny_count 1\n");
}

struct grow {
	char buf[4096];
	size_t len;
};

static void grow_append(void *ud, const char *s, size_t n)
{
	struct grow *g = ud;
	cr_assert_lt(g->len + n, sizeof g->buf);
	memcpy(g->buf + g->len, s, n);
	g->len += n;
	g->buf[g->len] = '\0';
}

Test(histogram, the_appender_gets_the_same_text)
{
	struct histogram h;
	small_case(&h);
	struct grow g = { .len = 0 };
	histogram_write(&h, "lat", "a=\"b\"", grow_append, &g);
	char buf[512];
	cr_assert_eq(histogram_format(&h, "lat", "a=\"b\"", buf, sizeof buf), g.len);
	cr_assert_str_eq(buf, g.buf);
}

Test(histogram, sum_prints_the_shortest_exact_form)
{
	struct histogram h;
	histogram_init_default(&h);
	histogram_observe(&h, 0.1);
	histogram_observe(&h, 0.2);
	char buf[2048];
	histogram_format(&h, "x", NULL, buf, sizeof buf);
	const char *sum = strstr(buf, "x_sum ");
	cr_assert_not_null(sum);
	cr_assert_eq(strtod(sum + 6, NULL), 0.1 + 0.2, "reads back exactly: %s", sum);
	cr_assert(strncmp(sum, "x_sum 0.30000000000000004\n", 26) == 0, "%s", sum);
}

Test(histogram, too_small_buffer_is_cut_and_never_overrun)
{
	struct histogram h;
	small_case(&h);
	char full[512];
	size_t n = histogram_format(&h, "lat", "worker=\"1\"", full, sizeof full);
	cr_assert_lt(n, sizeof full);
	cr_assert_eq(histogram_format(&h, "lat", "worker=\"1\"", NULL, 0), n,
		     "no buffer: just the length");
	for (size_t len = 1; len <= n + 1; len++) {
		char buf[600];
		memset(buf, 0x5a, sizeof buf);
		cr_assert_eq(histogram_format(&h, "lat", "worker=\"1\"", buf, len), n);
		size_t kept = len - 1 < n ? len - 1 : n;
		cr_assert(memcmp(buf, full, kept) == 0, "len %zu: the start of the text", len);
		cr_assert_eq(buf[kept], '\0', "len %zu: terminated", len);
		for (size_t i = len; i < sizeof buf; i++)
			cr_assert_eq(buf[i], 0x5a, "len %zu: byte %zu written", len, i);
	}
}

Test(histogram, merge_adds_and_refuses_other_bounds)
{
	struct histogram a, b;
	small_case(&a);
	small_case(&b);
	cr_assert(histogram_observe(&b, 0.25));
	cr_assert_eq(histogram_merge(&a, &b), 0);
	cr_assert_eq(a.count, 9);
	cr_assert_eq(a.counts[0], 4);
	cr_assert_eq(a.counts[1], 3);
	cr_assert_eq(a.counts[2], 2);
	cr_assert_eq(a.sum, 2 * 2.6875 + 0.25);
	char buf[512];
	histogram_format(&a, "lat", NULL, buf, sizeof buf);
	cr_assert_str_eq(buf, "lat_bucket{le=\"0.125\"} 4\n"
			      "lat_bucket{le=\"1\"} 7\n"
			      "lat_bucket{le=\"+Inf\"} 9\n"
			      "lat_sum 5.625\n"
			      "lat_count 9\n");

	/* Equal bounds in another array are the same bounds. */
	static const double copy[2] = { 0.125, 1 };
	struct histogram c;
	cr_assert_eq(histogram_init(&c, copy, 2), 0);
	cr_assert(histogram_observe(&c, 3));
	cr_assert_eq(histogram_merge(&a, &c), 0);
	cr_assert_eq(a.count, 10);

	struct histogram d, before = a;
	histogram_init_default(&d);
	cr_assert(histogram_observe(&d, 1));
	cr_assert_eq(histogram_merge(&a, &d), -EINVAL, "other bounds");
	static const double other[2] = { 0.125, 2 };
	cr_assert_eq(histogram_init(&d, other, 2), 0);
	cr_assert(histogram_observe(&d, 1));
	cr_assert_eq(histogram_merge(&a, &d), -EINVAL, "same count, other values");
	cr_assert(memcmp(&a, &before, sizeof a) == 0, "a refused merge leaves the target alone");

	/* Workers' histograms summed into a fresh one, as the status read does. */
	struct histogram total;
	cr_assert_eq(histogram_init(&total, small_bounds, 2), 0);
	cr_assert_eq(histogram_merge(&total, &b), 0);
	cr_assert_eq(histogram_merge(&total, &c), 0);
	cr_assert_eq(total.count, 6);
	cr_assert_eq(total.counts[2], 2);
}

Test(histogram, bad_bounds_refused)
{
	struct histogram h;
	static const double equal[3] = { 0.1, 0.2, 0.2 };
	static const double down[2] = { 1, 0.5 };
	static const double nan_b[2] = { 0.1, NAN };
	static const double inf_b[2] = { 0.1, INFINITY };
	static const double many[HISTOGRAM_MAX_BOUNDS + 1] = { 0 };
	double ok[HISTOGRAM_MAX_BOUNDS];
	for (size_t i = 0; i < HISTOGRAM_MAX_BOUNDS; i++)
		ok[i] = (double)i - 3;
	cr_assert_eq(histogram_init(&h, equal, 3), -EINVAL);
	cr_assert_eq(histogram_init(&h, down, 2), -EINVAL);
	cr_assert_eq(histogram_init(&h, nan_b, 2), -EINVAL);
	cr_assert_eq(histogram_init(&h, inf_b, 2), -EINVAL);
	cr_assert_eq(histogram_init(&h, many, HISTOGRAM_MAX_BOUNDS + 1), -EINVAL);
	cr_assert_eq(histogram_init(&h, ok, HISTOGRAM_MAX_BOUNDS), 0, "the most bounds");
	cr_assert(histogram_observe(&h, 1e9));
	cr_assert_eq(h.counts[HISTOGRAM_MAX_BOUNDS], 1);
}
