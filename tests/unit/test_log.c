#include "log.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *captured;
static size_t captured_len;
static FILE *capture;

static void start_capture(void)
{
	capture = open_memstream(&captured, &captured_len);
	cr_assert(capture);
	log_set_stream(capture);
}

static void stop_capture(void)
{
	log_set_stream(NULL);
	fclose(capture);
}

Test(log, parse_levels)
{
	enum log_level l;
	cr_assert_eq(log_level_parse("error", &l), 0);
	cr_assert_eq(l, LOG_LEVEL_ERROR);
	cr_assert_eq(log_level_parse("WARN", &l), 0);
	cr_assert_eq(l, LOG_LEVEL_WARN);
	cr_assert_eq(log_level_parse("warning", &l), 0);
	cr_assert_eq(l, LOG_LEVEL_WARN);
	cr_assert_eq(log_level_parse("info", &l), 0);
	cr_assert_eq(l, LOG_LEVEL_INFO);
	cr_assert_eq(log_level_parse("debug", &l), 0);
	cr_assert_eq(l, LOG_LEVEL_DEBUG);
	cr_assert_eq(log_level_parse("trace", &l), 0);
	cr_assert_eq(l, LOG_LEVEL_TRACE);
	cr_assert_eq(log_level_parse("verbose", &l), -EINVAL);
	cr_assert_eq(log_level_parse("", &l), -EINVAL);
	cr_assert_eq(log_level_parse(NULL, &l), -EINVAL);
	cr_assert_str_eq(log_level_name(LOG_LEVEL_DEBUG), "debug");
}

Test(log, filters_by_level)
{
	start_capture();
	log_set_level(LOG_LEVEL_WARN);
	log_debug("hidden %d", 1);
	log_info("hidden %d", 2);
	log_warn("shown %d", 3);
	log_error("shown %s", "four");
	stop_capture();
	cr_assert_null(strstr(captured, "hidden"));
	cr_assert_not_null(strstr(captured, "warn  shown 3\n"));
	cr_assert_not_null(strstr(captured, "error shown four\n"));
	free(captured);
}

static int evaluations;

static int counted(void)
{
	return ++evaluations;
}

Test(log, disabled_levels_do_not_evaluate_arguments)
{
	log_set_level(LOG_LEVEL_INFO);
	evaluations = 0;
	log_debug("%d", counted());
	cr_assert_eq(evaluations, 0);
	start_capture();
	log_info("%d", counted());
	stop_capture();
	cr_assert_eq(evaluations, 1);
	free(captured);
}

Test(log, lines_have_timestamp)
{
	start_capture();
	log_set_level(LOG_LEVEL_INFO);
	log_info("x");
	stop_capture();
	/* 2026-11-22T05:02:36.123Z info  x */
	cr_assert_geq(captured_len, 25);
	cr_assert_eq(captured[4], '-');
	cr_assert_eq(captured[10], 'T');
	cr_assert_eq(captured[23], 'Z');
	free(captured);
}

Test(log, ratelimit)
{
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(2, 3);
	int allowed = 0;
	for (int i = 0; i < 10; i++)
		allowed += log_ratelimit_allow(&rl, 1000);
	cr_assert_eq(allowed, 3, "the burst is spent at once");
	cr_assert_eq(rl.suppressed, 7);
	cr_assert_not(log_ratelimit_allow(&rl, 1400), "0.4 s refills less than one token");
	cr_assert(log_ratelimit_allow(&rl, 1600), "0.6 s at 2/s refills one token");
	cr_assert_not(log_ratelimit_allow(&rl, 1600));
	allowed = 0;
	for (int i = 0; i < 10; i++)
		allowed += log_ratelimit_allow(&rl, 100000);
	cr_assert_eq(allowed, 3, "a long pause refills no more than the burst");
}
