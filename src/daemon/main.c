/* ntp-daemon: command line, configuration, signals, the loop. */
#include <stdio.h>

#include <uv.h>

#include "config_daemon.h"
#include "daemon.h"
#include "log.h"
#include "notify.h"
#include "program.h"
#include "workers.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ntp-daemon [-c FILE] [-l LEVEL] [-w N]\n"
		"\n"
		"An NTP/NTS daemon: NTP server, NTS-KE server (with NTS pool support) and\n"
		"a rotating cookie keyset.\n"
		"\n"
		"  -c, --config FILE     configuration file (TOML; see ntp.toml(5)); default\n"
		"                        " PROGRAM_CONFIG_DIR "/ntp.toml\n"
		"  -l, --log-level LEVEL error, warn, info, debug or trace (overrides the file)\n"
		"  -w, --workers N       threads serving NTP and NTS-KE (overrides [daemon] workers;\n"
		"                        default: one per usable CPU)\n"
		"      --no-clock-control measure and serve time, never adjust the system clock\n"
		"  -h, --help            show this help\n"
		"  -V, --version         show the version\n"
		"\n"
		"Signals: SIGHUP reloads certificates and pool token files; SIGTERM and SIGINT\n"
		"stop gracefully.\n"
		"Exit status: 0 after a clean stop, 78 for configuration errors, 1 otherwise.\n");
}

static int start(void *ud, char *err, size_t errlen)
{
	return daemon_start(ud, err, errlen);
}

static void reload(void *ud)
{
	daemon_reload(ud);
}

static void stop(void *ud)
{
	daemon_stop(ud);
}

int main(int argc, char **argv)
{
	struct program_opts o;
	int rc = program_parse(argc, argv, "ntp-daemon", usage, true,
			       PROGRAM_CONFIG_DIR "/ntp.toml", &o);
	if (rc >= 0)
		return rc;

	char err[1024];
	struct config_daemon cfg;
	if ((rc = config_daemon_load(o.config_path, &cfg, err, sizeof err)) < 0) {
		fprintf(stderr, "%s\n", err);
		notify_failed(err, rc);
		return PROGRAM_EXIT_CONFIG;
	}
	log_set_level(o.has_level ? o.level : cfg.observability.log_level);
	if (o.no_clock_control)
		cfg.synchronization.clock_control = false;

	uv_loop_t *loop = uv_default_loop();
	struct daemon d;
	unsigned workers = o.workers   ? o.workers
			   : cfg.workers ? cfg.workers
					 : workers_default_count();
	if ((rc = daemon_prepare(&d, loop, o.config_path, &cfg, workers, err, sizeof err)) < 0) {
		log_error("%s", err);
		notify_failed(err, rc);
		daemon_free(&d);
		return PROGRAM_EXIT_CONFIG;
	}
	const struct program_hooks hooks = { .start = start, .reload = reload, .stop = stop,
					     .ud = &d };
	int status = program_run(loop, "ntp-daemon", &hooks);
	daemon_free(&d);
	return status;
}
