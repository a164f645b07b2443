/* nts-pool-ke: command line, configuration, signals, the loop. */
#include <stdio.h>

#include <uv.h>

#include "broker.h"
#include "config_pool.h"
#include "derive_token.h"
#include "log.h"
#include "notify.h"
#include "program.h"
#include "workers.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: nts-pool-ke [-c FILE] [-l LEVEL] [-w N]\n"
		"       nts-pool-ke --derive-token --secret-file FILE --uuid UUID [--randomizer R]\n"
		"\n"
		"The NTS pool's key-exchange broker: serves NTS-KE to clients and obtains their\n"
		"cookies from upstream NTS-KE servers with the pool's certificate.\n"
		"\n"
		"  -c, --config FILE     configuration file (TOML; see pool.toml(5)); default\n"
		"                        " PROGRAM_CONFIG_DIR "/pool.toml\n"
		"  -l, --log-level LEVEL error, warn, info, debug or trace (overrides the file)\n"
		"  -w, --workers N       threads serving clients (overrides workers in\n"
		"                        [nts-pool-ke-server]; default: one per usable CPU)\n"
		"  -h, --help            show this help\n"
		"  -V, --version         show the version\n"
		"      --derive-token    print the token for one time source: lowercase hex of\n"
		"                        SHA3-256(secret || uuid || randomizer), the secret being\n"
		"                        the first line of --secret-file (mode 0600)\n"
		"\n"
		"Signals: SIGHUP reloads the certificate, key, upstream list and token files;\n"
		"SIGTERM and SIGINT stop gracefully.\n"
		"Exit status: 0 after a clean stop, 78 for configuration errors, 1 otherwise.\n");
}

static int start(void *ud, char *err, size_t errlen)
{
	return broker_start(ud, err, errlen);
}

static void reload(void *ud)
{
	broker_reload(ud);
}

static void stop(void *ud)
{
	broker_stop(ud);
}

int main(int argc, char **argv)
{
	if (derive_token_wanted(argc, argv))
		return derive_token_main(argc, argv);
	struct program_opts o;
	int rc = program_parse(argc, argv, "nts-pool-ke", usage, false,
			       PROGRAM_CONFIG_DIR "/pool.toml", &o);
	if (rc >= 0)
		return rc;

	char err[1024];
	struct config_pool cfg;
	if ((rc = config_pool_load(o.config_path, &cfg, err, sizeof err)) < 0) {
		fprintf(stderr, "%s\n", err);
		notify_failed(err, rc);
		return PROGRAM_EXIT_CONFIG;
	}
	log_set_level(o.has_level ? o.level : cfg.observability.log_level);

	uv_loop_t *loop = uv_default_loop();
	struct broker *b = NULL;
	unsigned workers = o.workers   ? o.workers
			   : cfg.workers ? cfg.workers
					 : workers_default_count();
	if ((rc = broker_prepare(&b, loop, o.config_path, &cfg, workers, err, sizeof err)) < 0) {
		log_error("%s", err);
		notify_failed(err, rc);
		broker_free(b);
		config_pool_free(&cfg);
		return PROGRAM_EXIT_CONFIG;
	}
	const struct program_hooks hooks = { .start = start, .reload = reload, .stop = stop,
					     .ud = b };
	int status = program_run(loop, "nts-pool-ke", &hooks);
	broker_free(b);
	return status;
}
