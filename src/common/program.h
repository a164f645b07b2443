/* What ntp-daemon and nts-pool-ke share around their loop: the common command-line options, the
 * signals (SIGHUP reloads, SIGTERM and SIGINT stop) and the run-to-exit sequence. */
#ifndef NTSPOOL_PROGRAM_H
#define NTSPOOL_PROGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <uv.h>

#include "config.h"
#include "log.h"
#include "workers.h"

#define PROGRAM_EXIT_FAILURE 1
#define PROGRAM_EXIT_USAGE 2
#define PROGRAM_EXIT_CONFIG 78 /* sysexits.h EX_CONFIG */

struct program_opts {
	const char *config_path;
	bool has_level; /* -l given: level overrides the file's log-level */
	enum log_level level;
	bool no_clock_control; /* --no-clock-control (only where allowed) */
	unsigned workers;      /* --workers N (1..WORKERS_MAX), 0 when not given */
};

/* Parses -c/--config FILE, -l/--log-level LEVEL, -w/--workers N, -h/--help, -V/--version and, when
 * allow_no_clock_control, --no-clock-control. name is the program's name for messages; usage
 * prints the help to the given stream; without -c the configuration is default_config (under
 * sysconfdir, PROGRAM_CONFIG_DIR). Returns -1 to go on, or the exit status to return at once
 * (0 after --help/--version, PROGRAM_EXIT_USAGE on misuse). */
int program_parse(int argc, char **argv, const char *name, void (*usage)(FILE *),
		  bool allow_no_clock_control, const char *default_config,
		  struct program_opts *out);

/* Where the installed programs look for their configuration without -c. */
#define PROGRAM_CONFIG_DIR SYSCONFDIR "/ntspool"

/* Descriptors a program keeps for itself beyond its connection limits: the loop, signals, timers,
 * files, DNS, logs. */
#define PROGRAM_FD_RESERVE 64

/* Raises the soft RLIMIT_NOFILE to the hard one (logged when it changes) and returns the soft
 * limit then in force (RLIM_INFINITY reads as UINT_MAX). */
unsigned program_fd_limit(void);

/* The connection limit each worker's socket of each of n listeners may really use when `option`
 * (the config key, for the message) asks for `wanted` per listener, shared by `workers`, and
 * `fixed` more descriptors are spoken for (UDP sockets, upstream connections,
 * PROGRAM_FD_RESERVE): each worker's share of wanted (rounded up) when the descriptor limit
 * allows, else the share that fits (at least 1), with a warning naming the numbers and the
 * fix. */
unsigned program_conn_cap(const char *option, unsigned wanted, unsigned n, unsigned workers,
			  unsigned fixed);

/* Rewrites err, the message of a failed bind of l (borrowed), the address option `key` of
 * `where` in the configuration `file` ("ADDR: reason", as net and status write it), as
 * "FILE:LINE: 'key' in where: ADDR: reason; FIX", naming the likely fix for rc: root or
 * CAP_NET_BIND_SERVICE for a port below 1024, the other program that holds the address, an
 * address that is on none of the machine's interfaces. Returns rc. */
int program_listen_error(int rc, const char *file, const struct config_listen *l,
			 const char *key, const char *where, char *err, size_t errlen);

/* As program_listen_error for a file the option names ("PATH: reason" in err): the head
 * "FILE:LINE: 'key' in where: ", and for -EACCES that the program's user needs access to the
 * file and the directories above it. Returns rc. */
int program_file_error(int rc, const char *file, int line, const char *key, const char *where,
		       char *err, size_t errlen);

/* After the drop: warns ("FILE:LINE: 'key' in where: PATH: ...", or "PATH: ..." without a key,
 * for the configuration file itself) when path (NULL: nothing) is a file a reload re-reads that
 * this program's user cannot read, which it could at start. Returns whether it warned. */
bool program_warn_unreadable(const char *path, const char *file, int line, const char *key,
			     const char *where);

struct program_hooks {
	int (*start)(void *ud, char *err, size_t errlen); /* bind and start; negative errno */
	void (*reload)(void *ud);			  /* SIGHUP */
	void (*stop)(void *ud);				  /* SIGTERM, SIGINT, or a failed start */
	void *ud;
};

/* Stops the running program from inside, for a failure it cannot serve on with (the clock
 * helper gone): the stop a SIGTERM makes, after which program_run returns PROGRAM_EXIT_FAILURE so
 * that a service manager restarts it. why is logged. Call from the main loop's thread. */
void program_fail(const char *why);

/* Ignores SIGPIPE, installs the signal handlers, calls start, and runs the loop until every
 * handle closed. Returns 0 after a stop by signal, PROGRAM_EXIT_FAILURE when start failed (its
 * message is logged). The loop is closed before returning. */
int program_run(uv_loop_t *loop, const char *name, const struct program_hooks *hooks);

#endif
