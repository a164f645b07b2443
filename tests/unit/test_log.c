#include "log.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

Test(log, journal_stream_values)
{
	cr_assert(log_journal_stream_matches("2049:1234", 2049, 1234));
	cr_assert_not(log_journal_stream_matches("2049:1235", 2049, 1234), "another inode");
	cr_assert_not(log_journal_stream_matches("2048:1234", 2049, 1234), "another device");
	cr_assert_not(log_journal_stream_matches(NULL, 2049, 1234));
	cr_assert_not(log_journal_stream_matches("", 0, 0));
	cr_assert_not(log_journal_stream_matches(":", 0, 0));
	cr_assert_not(log_journal_stream_matches("2049:", 2049, 0));
	cr_assert_not(log_journal_stream_matches(":1234", 0, 1234));
	cr_assert_not(log_journal_stream_matches("2049:1234x", 2049, 1234), "trailing garbage");
	cr_assert_not(log_journal_stream_matches(" 2049:1234", 2049, 1234), "leading blank");
	cr_assert_not(log_journal_stream_matches("-1:1234", ~0ULL, 1234), "no sign");
	cr_assert_not(log_journal_stream_matches("2049:1234:5", 2049, 1234));
	cr_assert_not(log_journal_stream_matches("99999999999999999999:1", 0, 1), "overflow");
	cr_assert(log_journal_stream_matches("18446744073709551615:0", ~0ULL, 0));
}

Test(log, journal_detection_compares_stderr)
{
	struct stat st;
	cr_assert_eq(fstat(STDERR_FILENO, &st), 0);
	char env[64];
	snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	cr_assert_eq(setenv("JOURNAL_STREAM", env, 1), 0);
	cr_assert(log_detect_journal(), "JOURNAL_STREAM names stderr");
	cr_assert(log_get_journal());
	snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino + 1);
	cr_assert_eq(setenv("JOURNAL_STREAM", env, 1), 0);
	cr_assert_not(log_detect_journal(), "a stream inherited from elsewhere is not ours");
	cr_assert_eq(unsetenv("JOURNAL_STREAM"), 0);
	cr_assert_not(log_detect_journal());
}

Test(log, journal_lines_carry_priorities)
{
	start_capture();
	log_set_level(LOG_LEVEL_TRACE);
	log_set_journal(true);
	log_error("e%d", 1);
	log_warn("w%d", 2);
	log_info("i%d", 3);
	log_debug("d%d", 4);
	log_trace("t%d", 5);
	log_set_journal(false);
	log_info("plain");
	stop_capture();
	const char *expect = "<3>error e1\n<4>warn  w2\n<6>info  i3\n<7>debug d4\n<7>trace t5\n";
	cr_assert_eq(strncmp(captured, expect, strlen(expect)), 0, "got: %s", captured);
	const char *plain = captured + strlen(expect);
	cr_assert_neq(plain[0], '<', "journal mode off: no prefix");
	cr_assert_eq(plain[10], 'T', "and the timestamp back");
	cr_assert_not_null(strstr(plain, "info  plain\n"));
	free(captured);
}
