/* ntp-daemon: command line, configuration, signals, the loop. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config_daemon.h"
#include "daemon.h"
#include "log.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ntp-daemon -c FILE [-l LEVEL]\n"
		"\n"
		"An NTP/NTS daemon: NTP server, NTS-KE server (with NTS pool support) and\n"
		"a rotating cookie keyset.\n"
		"\n"
		"  -c, --config FILE     configuration file (TOML; see ntp.toml(5))\n"
		"  -l, --log-level LEVEL error, warn, info, debug or trace (overrides the file)\n"
		"      --no-clock-control measure and serve time, never adjust the system clock\n"
		"  -h, --help            show this help\n"
		"  -V, --version         show the version\n"
		"\n"
		"Signals: SIGHUP reloads certificates; SIGTERM and SIGINT stop gracefully.\n"
		"Exit status: 0 after a clean stop, 78 for configuration errors, 1 otherwise.\n");
}

struct signals {
	uv_signal_t term, intr, hup;
	struct daemon *d;
};

static void close_signals(struct signals *s)
{
	uv_close((uv_handle_t *)&s->term, NULL);
	uv_close((uv_handle_t *)&s->intr, NULL);
	uv_close((uv_handle_t *)&s->hup, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct signals *s = h->data;
	if (signum == SIGHUP) {
		daemon_reload(s->d);
		return;
	}
	log_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	daemon_stop(s->d);
	close_signals(s);
}

static int start_signals(uv_loop_t *loop, struct signals *s, struct daemon *d)
{
	s->d = d;
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "no-clock-control", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *level_arg = NULL;
	bool no_clock_control = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:l:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'l':
			level_arg = optarg;
			break;
		case 'n':
			no_clock_control = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("ntp-daemon %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	enum log_level cli_level = LOG_LEVEL_INFO;
	if (level_arg && log_level_parse(level_arg, &cli_level) < 0) {
		fprintf(stderr, "ntp-daemon: unknown log level '%s' (error, warn, info, debug, trace)\n",
			level_arg);
		return 2;
	}

	char err[1024];
	struct config_daemon cfg;
	if (config_daemon_load(config_path, &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return DAEMON_EXIT_CONFIG;
	}
	log_set_level(level_arg ? cli_level : cfg.observability.log_level);
	if (no_clock_control)
		cfg.synchronization.clock_control = false;

	/* A peer that resets a connection must not kill the process on the next write. */
	signal(SIGPIPE, SIG_IGN);

	uv_loop_t *loop = uv_default_loop();
	struct daemon d;
	int status = 0;
	if (daemon_prepare(&d, loop, config_path, &cfg, err, sizeof err) < 0) {
		log_error("%s", err);
		daemon_free(&d);
		return DAEMON_EXIT_CONFIG;
	}
	struct signals sig;
	int rc = start_signals(loop, &sig, &d);
	if (rc < 0)
		snprintf(err, sizeof err, "signal handlers: %s", uv_strerror(rc));
	else
		rc = daemon_start(&d, err, sizeof err);
	if (rc < 0)
		close_signals(&sig);
	if (rc < 0) {
		log_error("%s", err);
		daemon_stop(&d);
		status = DAEMON_EXIT_FAILURE;
	} else {
		log_info("ntp-daemon %s running", PACKAGE_VERSION);
	}
	uv_run(loop, UV_RUN_DEFAULT);
	daemon_free(&d);
	if (uv_loop_close(loop) != 0)
		log_error("handles left open at exit");
	if (status == 0)
		log_info("stopped");
	return status;
}
