/* nts-pool-ke: command line, configuration, signals, the loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "broker.h"
#include "config_pool.h"
#include "log.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: nts-pool-ke -c FILE [-l LEVEL]\n"
		"\n"
		"The NTS pool's key-exchange broker: serves NTS-KE to clients and obtains their\n"
		"cookies from upstream NTS-KE servers with the pool's certificate.\n"
		"\n"
		"  -c, --config FILE     configuration file (TOML; see pool.toml(5))\n"
		"  -l, --log-level LEVEL error, warn, info, debug or trace (overrides the file)\n"
		"  -h, --help            show this help\n"
		"  -V, --version         show the version\n"
		"\n"
		"Signals: SIGHUP reloads the certificate, key and upstream list; SIGTERM and\n"
		"SIGINT stop gracefully.\n"
		"Exit status: 0 after a clean stop, 78 for configuration errors, 1 otherwise.\n");
}

struct signals {
	uv_signal_t term, intr, hup;
	struct broker *b;
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
		broker_reload(s->b);
		return;
	}
	log_info("received %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	broker_stop(s->b);
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *level_arg = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "c:l:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'l':
			level_arg = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("nts-pool-ke %s\n", PACKAGE_VERSION);
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
		fprintf(stderr, "nts-pool-ke: unknown log level '%s' (error, warn, info, debug, trace)\n",
			level_arg);
		return 2;
	}

	char err[1024];
	struct config_pool cfg;
	if (config_pool_load(config_path, &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return BROKER_EXIT_CONFIG;
	}
	log_set_level(level_arg ? cli_level : cfg.observability.log_level);
	/* A peer that resets a connection must not kill the process on the next write. */
	signal(SIGPIPE, SIG_IGN);

	uv_loop_t *loop = uv_default_loop();
	struct broker *b = NULL;
	if (broker_prepare(&b, loop, config_path, &cfg, err, sizeof err) < 0) {
		log_error("%s", err);
		broker_free(b);
		config_pool_free(&cfg);
		return BROKER_EXIT_CONFIG;
	}
	int status = 0;
	struct signals sig = { .b = b };
	int rc = start_signals(loop, &sig);
	if (rc < 0)
		snprintf(err, sizeof err, "signal handlers: %s", uv_strerror(rc));
	else
		rc = broker_start(b, err, sizeof err);
	if (rc < 0) {
		log_error("%s", err);
		close_signals(&sig);
		broker_stop(b);
		status = BROKER_EXIT_FAILURE;
	} else {
		log_info("nts-pool-ke %s running", PACKAGE_VERSION);
	}
	uv_run(loop, UV_RUN_DEFAULT);
	broker_free(b);
	if (uv_loop_close(loop) != 0)
		log_error("handles left open at exit");
	if (status == 0)
		log_info("stopped");
	return status;
}
