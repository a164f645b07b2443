#include "program.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "notify.h"

int program_parse(int argc, char **argv, const char *name, void (*usage)(FILE *),
		  bool allow_no_clock_control, const char *default_config,
		  struct program_opts *out)
{
	/* Under systemd with stderr connected to the journal, lines carry syslog priorities. */
	log_detect_journal();
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "no-clock-control", no_argument, NULL, 'n' },
		{ "workers", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *level = NULL;
	int c;
	memset(out, 0, sizeof *out);
	while ((c = getopt_long(argc, argv, "c:l:w:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'w': {
			char *end;
			errno = 0;
			unsigned long n = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || n < 1 ||
			    n > WORKERS_MAX) {
				fprintf(stderr, "%s: --workers '%s': a number from 1 to %u\n", name,
					optarg, WORKERS_MAX);
				return PROGRAM_EXIT_USAGE;
			}
			out->workers = (unsigned)n;
			break;
		}
		case 'c':
			out->config_path = optarg;
			break;
		case 'l':
			level = optarg;
			break;
		case 'n':
			if (!allow_no_clock_control) {
				usage(stderr);
				return PROGRAM_EXIT_USAGE;
			}
			out->no_clock_control = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s %s\n", name, PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return PROGRAM_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return PROGRAM_EXIT_USAGE;
	}
	if (!out->config_path)
		out->config_path = default_config;
	if (level) {
		if (log_level_parse(level, &out->level) < 0) {
			fprintf(stderr, "%s: unknown log level '%s' (error, warn, info, debug, trace)\n",
				name, level);
			return PROGRAM_EXIT_USAGE;
		}
		out->has_level = true;
	}
	return -1;
}

unsigned program_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			log_info("descriptor limit raised from %llu to %llu (the hard limit)",
				 (unsigned long long)was, (unsigned long long)rl.rlim_cur);
		else if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return 1024;
	}
	return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > UINT_MAX ? UINT_MAX
								       : (unsigned)rl.rlim_cur;
}

unsigned program_conn_cap(const char *option, unsigned wanted, unsigned n, unsigned workers,
			  unsigned fixed)
{
	unsigned limit = program_fd_limit();
	if (workers == 0)
		workers = 1;
	unsigned share = (wanted + workers - 1) / workers;
	if (n == 0)
		return share;
	unsigned long long need = (unsigned long long)share * workers * n + fixed;
	if (need <= limit)
		return share;
	unsigned cap = limit > fixed ? (limit - fixed) / n / workers : 0;
	if (cap == 0)
		cap = 1;
	log_warn("%s = %u on %u listener(s) needs about %llu descriptors but the limit is %u: "
		 "each listener serves at most %u connections; raise the limit (ulimit -n, or "
		 "LimitNOFILE= in the service) or lower %s",
		 option, wanted, n, need, limit, cap * workers, option);
	return cap;
}

/* err becomes "HEAD: err[; hint]" (hint may be empty). */
static void rewrite(char *err, size_t errlen, const char *head, const char *hint)
{
	char was[1024];
	snprintf(was, sizeof was, "%s", err);
	snprintf(err, errlen, "%s: %s%s%s", head, was, hint[0] ? "; " : "", hint);
}

int program_listen_error(int rc, const char *file, const struct config_listen *l,
			 const char *key, const char *where, char *err, size_t errlen)
{
	if (!err || errlen == 0)
		return rc;
	const struct sockaddr *sa = (const struct sockaddr *)&l->addr;
	unsigned port = ntohs(sa->sa_family == AF_INET6
				      ? ((const struct sockaddr_in6 *)sa)->sin6_port
				      : ((const struct sockaddr_in *)sa)->sin_port);
	char hint[256] = "";
	switch (rc) {
	case -EACCES:
	case -EPERM:
		if (port < 1024)
			snprintf(hint, sizeof hint,
				 "a port below 1024 needs root or the CAP_NET_BIND_SERVICE "
				 "capability (AmbientCapabilities= in a systemd unit)");
		else
			snprintf(hint, sizeof hint,
				 "the system keeps this port from this user (sysctl "
				 "net.ipv4.ip_unprivileged_port_start, or a security policy)");
		break;
	case -EADDRINUSE:
		snprintf(hint, sizeof hint,
			 "another instance of this program or another server holds port %u (ss "
			 "-lntup 'sport = :%u' shows which)",
			 port, port);
		break;
	case -EADDRNOTAVAIL:
		snprintf(hint, sizeof hint,
			 "the address is on none of this machine's interfaces (ip address lists "
			 "them)");
		break;
	default:
		break;
	}
	char head[512];
	rewrite(err, errlen, config_prefix(head, sizeof head, file, l->line, key, where), hint);
	return rc;
}

int program_file_error(int rc, const char *file, int line, const char *key, const char *where,
		       char *err, size_t errlen)
{
	if (!err || errlen == 0)
		return rc;
	char hint[160] = "";
	if (rc == -EACCES)
		snprintf(hint, sizeof hint,
			 "the user this program runs as (uid %u) needs access to it and to every "
			 "directory above it",
			 (unsigned)geteuid());
	char head[512];
	rewrite(err, errlen, config_prefix(head, sizeof head, file, line, key, where), hint);
	return rc;
}

bool program_warn_unreadable(const char *path, const char *file, int line, const char *key,
			     const char *where)
{
	if (!path || access(path, R_OK) == 0)
		return false;
	int e = errno;
	char head[512] = "";
	if (key) {
		config_prefix(head, sizeof head - 2, file, line, key, where);
		strcat(head, ": ");
	}
	log_warn("%s%s: the user this program runs as (uid %u) cannot read it (%s); the next "
		 "reload (SIGHUP) will fail until it can",
		 head, path, (unsigned)geteuid(), strerror(e));
	return true;
}

struct signals {
	uv_signal_t term, intr, hup;
	const struct program_hooks *hooks;
};

static void close_signals(struct signals *s)
{
	uv_close((uv_handle_t *)&s->term, NULL);
	uv_close((uv_handle_t *)&s->intr, NULL);
	uv_close((uv_handle_t *)&s->hup, NULL);
}

/* Set by program_fail: the stop that follows is a failure. One program runs per process. */
static volatile sig_atomic_t failed;

void program_fail(const char *why)
{
	if (failed)
		return;
	failed = 1;
	log_error("%s: stopping", why);
	notify_failed(why, -EIO);
	/* Delivered through the loop like any SIGTERM, after the caller returned. */
	kill(getpid(), SIGTERM);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct signals *s = h->data;
	if (signum == SIGHUP) {
		notify_reloading();
		s->hooks->reload(s->hooks->ud);
		notify_ready();
		return;
	}
	if (!failed)
		log_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	notify_stopping();
	s->hooks->stop(s->hooks->ud);
	close_signals(s);
}

static int start_signals(uv_loop_t *loop, struct signals *s)
{
	uv_signal_t *hs[] = { &s->term, &s->intr, &s->hup };
	int nums[] = { SIGTERM, SIGINT, SIGHUP };
	for (int i = 0; i < 3; i++) {
		uv_signal_init(loop, hs[i]);
		hs[i]->data = s;
	}
	for (int i = 0; i < 3; i++) {
		int rc = uv_signal_start(hs[i], on_signal, nums[i]);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int program_run(uv_loop_t *loop, const char *name, const struct program_hooks *hooks)
{
	char err[1024];
	int status = 0;
	/* A peer that resets a connection must not kill the process on the next write. */
	signal(SIGPIPE, SIG_IGN);
	struct signals sig = { .hooks = hooks };
	int rc = start_signals(loop, &sig);
	if (rc < 0)
		snprintf(err, sizeof err, "signal handlers: %s", uv_strerror(rc));
	else
		rc = hooks->start(hooks->ud, err, sizeof err);
	if (rc < 0) {
		log_error("%s", err);
		notify_failed(err, rc);
		close_signals(&sig);
		hooks->stop(hooks->ud);
		status = PROGRAM_EXIT_FAILURE;
	} else {
		log_info("%s %s running", name, PACKAGE_VERSION);
		notify_ready();
	}
	uv_run(loop, UV_RUN_DEFAULT);
	if (uv_loop_close(loop) != 0)
		log_error("handles left open at exit");
	if (status == 0 && failed)
		status = PROGRAM_EXIT_FAILURE;
	if (status == 0)
		log_info("stopped");
	return status;
}
