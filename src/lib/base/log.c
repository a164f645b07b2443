#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static FILE *out_stream;
static bool journal;

/* syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const char *const level_prio[] = {
	[LOG_LEVEL_ERROR] = "<3>",
	[LOG_LEVEL_WARN] = "<4>",
	[LOG_LEVEL_INFO] = "<6>",
	[LOG_LEVEL_DEBUG] = "<7>",
	[LOG_LEVEL_TRACE] = "<7>",
};

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_TRACE] = "trace",
};

void log_set_level(enum log_level level)
{
	if (level > LOG_LEVEL_TRACE)
		level = LOG_LEVEL_TRACE;
	current_level = level;
}

enum log_level log_get_level(void)
{
	return current_level;
}

int log_level_parse(const char *name, enum log_level *out)
{
	if (!name)
		return -EINVAL;
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(name, "warning") == 0) {
		*out = LOG_LEVEL_WARN;
		return 0;
	}
	return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
	return level <= LOG_LEVEL_TRACE ? level_names[level] : "?";
}

void log_set_stream(FILE *stream)
{
	out_stream = stream;
}

void log_set_journal(bool on)
{
	journal = on;
}

bool log_get_journal(void)
{
	return journal;
}

/* One unsigned decimal number ending at `end` (':' or NUL): no sign, no blanks, no overflow. */
static bool parse_decimal(const char **p, char end, unsigned long long *out)
{
	const char *s = *p;
	unsigned long long v = 0;
	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (~0ULL - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (*s != end)
		return false;
	*out = v;
	*p = s;
	return true;
}

bool log_journal_stream_matches(const char *env, unsigned long long dev, unsigned long long ino)
{
	if (!env)
		return false;
	unsigned long long d, i;
	const char *p = env;
	if (!parse_decimal(&p, ':', &d))
		return false;
	p++;
	if (!parse_decimal(&p, '\0', &i))
		return false;
	return d == dev && i == ino;
}

bool log_detect_journal(void)
{
	struct stat st;
	const char *env = getenv("JOURNAL_STREAM");
	journal = env && fstat(STDERR_FILENO, &st) == 0 &&
		  log_journal_stream_matches(env, (unsigned long long)st.st_dev,
					     (unsigned long long)st.st_ino);
	return journal;
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	if (!log_enabled(level))
		return;
	FILE *f = out_stream ? out_stream : stderr;
	if (journal) {
		/* log_enabled() bounds level by LOG_LEVEL_TRACE, so the table lookup is safe. */
		flockfile(f);
		fprintf(f, "%s%-5s ", level_prio[level], log_level_name(level));
		vfprintf(f, fmt, ap);
		fputc('\n', f);
		funlockfile(f);
		fflush(f);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char stamp[40] = "";
	if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm)) {
		size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(stamp + n, sizeof stamp - n, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
	}
	/* One fprintf per part under the stream lock, so lines from threads do not interleave. */
	flockfile(f);
	fprintf(f, "%s %-5s ", stamp, log_level_name(level));
	vfprintf(f, fmt, ap);
	fputc('\n', f);
	funlockfile(f);
	fflush(f);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

bool log_ratelimit_allow(struct log_ratelimit *rl, uint64_t now_ms)
{
	if (!rl->started) {
		rl->started = true;
		rl->tokens = rl->burst;
		rl->last_ms = now_ms;
	}
	if (now_ms > rl->last_ms) {
		rl->tokens += (double)(now_ms - rl->last_ms) * rl->per_s / 1000.0;
		if (rl->tokens > rl->burst)
			rl->tokens = rl->burst;
		rl->last_ms = now_ms;
	}
	if (rl->tokens >= 1.0) {
		rl->tokens -= 1.0;
		return true;
	}
	rl->suppressed++;
	return false;
}
