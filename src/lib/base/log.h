/* Levelled logging to stderr. Messages below the current level are not even formatted. */
#ifndef NTSPOOL_LOG_H
#define NTSPOOL_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_TRACE,
};

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "error", "warn", "info", "debug", "trace" (case-insensitive); -EINVAL otherwise. */
int log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);

/* Redirects output (tests capture it); NULL restores stderr. The stream is borrowed. */
void log_set_stream(FILE *stream);

/* Journal mode: each line starts with its syslog priority ("<3>" error, "<4>" warn, "<6>" info,
 * "<7>" debug and trace) and carries no timestamp, as the journal stamps lines itself. */
void log_set_journal(bool on);
bool log_get_journal(void);

/* True if `env` (the value of JOURNAL_STREAM, "DEVICE:INODE" in decimal, sd-daemon(3)) names
 * exactly the file with this device and inode. NULL, empty or malformed values are false. */
bool log_journal_stream_matches(const char *env, unsigned long long dev, unsigned long long ino);

/* Turns journal mode on if JOURNAL_STREAM names the file behind stderr, off otherwise. Returns
 * the mode chosen. Called once at start, before any thread. */
bool log_detect_journal(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static inline bool log_enabled(enum log_level level)
{
	return level <= log_get_level();
}

/* A token bucket for messages a peer can trigger: at most `burst` messages, refilled at `per_s`
 * per second. Embed one per call site (static). now_ms is the caller's monotonic clock. */
struct log_ratelimit {
	uint32_t per_s;
	uint32_t burst;
	double tokens;
	uint64_t last_ms;
	uint64_t suppressed;
	bool started;
};

#define LOG_RATELIMIT_INIT(per_s_, burst_) { .per_s = (per_s_), .burst = (burst_) }

/* True if a message may be written now. Counts the ones refused in rl->suppressed. */
bool log_ratelimit_allow(struct log_ratelimit *rl, uint64_t now_ms);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) \
	do { if (log_enabled(LOG_LEVEL_WARN)) log_msg(LOG_LEVEL_WARN, __VA_ARGS__); } while (0)
#define log_info(...) \
	do { if (log_enabled(LOG_LEVEL_INFO)) log_msg(LOG_LEVEL_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) \
	do { if (log_enabled(LOG_LEVEL_DEBUG)) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)
#define log_trace(...) \
	do { if (log_enabled(LOG_LEVEL_TRACE)) log_msg(LOG_LEVEL_TRACE, __VA_ARGS__); } while (0)

#endif
