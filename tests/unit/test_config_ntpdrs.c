/* The ntpd-rs forms of a daemon configuration: pool sources, [source-defaults], the panic
 * thresholds, [[server]] access rules, the observation socket and metrics listener keys, and a
 * validation that reports every error in file order. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_daemon.h"
#include "config_validate.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
	dir = tu_tempdir();
}

static void teardown(void)
{
	tu_rmtree(dir);
	free(dir);
}

TestSuite(ntpdrs, .init = setup, .fini = teardown);

static char *write_file(const char *name, const char *text)
{
	return tu_write_file(dir, name, text);
}

static void load_ok(const char *text, struct config_daemon *cfg)
{
	char *path = write_file("ntp.toml", text);
	char err[1024] = "";
	int r = config_daemon_load(path, cfg, err, sizeof err);
	cr_assert_eq(r, 0, "load failed: %s\n%s", err, text);
	free(path);
}

/* The configuration Debian's ntpd-rs 1.4 package ships, its observation path aside. */
static const char shipped[] =
	"[observability]\n"
	"log-level = \"info\"\n"
	"observation-path = \"/run/test-observe\"\n"
	"[[source]]\n"
	"mode = \"pool\"\n"
	"address = \"ntpd-rs.pool.ntp.org\"\n"
	"count = 4\n"
	"[synchronization]\n"
	"single-step-panic-threshold = 1800\n"
	"startup-step-panic-threshold = { forward=\"inf\", backward = 86400 }\n";

Test(ntpdrs, shipped_configuration_loads)
{
	struct config_daemon cfg;
	load_ok(shipped, &cfg);
	cr_assert_eq(cfg.source_count, 1);
	const struct config_daemon_source *s = &cfg.sources[0];
	cr_assert_eq(s->mode, CONFIG_DAEMON_SOURCE_POOL);
	cr_assert_str_eq(s->address.host, "ntpd-rs.pool.ntp.org");
	cr_assert_eq(s->address.port, 123);
	cr_assert_eq(s->count, 4);
	cr_assert_str_eq(cfg.observability.observation_path, "/run/test-observe");
	cr_assert_eq(cfg.observability.observation_permissions, 0666);
	const struct config_daemon_sync *y = &cfg.synchronization;
	cr_assert_eq(y->single_step_panic_threshold_s, 1800);
	cr_assert(isinf(y->startup_step.forward_s));
	cr_assert_eq(y->startup_step.backward_s, 86400);
	/* One limit for both directions is the stricter one. */
	cr_assert(y->has_startup_step_panic_threshold);
	cr_assert_eq(y->startup_step_panic_threshold_s, 86400);
	cr_assert_not(y->has_accumulated_step_panic_threshold);
	config_daemon_free(&cfg);
}

Test(ntpdrs, pool_source_keys)
{
	struct config_daemon cfg;
	load_ok("[source-defaults]\npoll-interval-limits = { min = 5, max = 9 }\n"
		"initial-poll-interval = 6\n"
		"[[source]]\nmode = \"pool\"\naddress = \"pool.test:1123\"\n"
		"ignore = [\"192.0.2.1\", \"2001:db8::1\"]\nntp-version = \"auto\"\n"
		"[[source]]\nmode = \"pool\"\naddress = \"pool.test\"\n",
		&cfg);
	cr_assert_eq(cfg.sources[0].address.port, 1123);
	cr_assert_eq(cfg.sources[0].ignore_count, 2);
	cr_assert_eq(cfg.sources[0].ntp_version, 4);
	cr_assert_eq(cfg.sources[0].poll_interval_min, 5);
	cr_assert_eq(cfg.sources[0].poll_interval_max, 9);
	cr_assert_eq(cfg.sources[1].count, 4, "ntpd-rs's default count");
	cr_assert_eq(cfg.sources[1].address.port, 123);
	config_daemon_free(&cfg);
}

Test(ntpdrs, thresholds_in_every_form)
{
	struct config_daemon cfg;
	load_ok("[[server]]\nlisten = \"127.0.0.1:123\"\n[synchronization]\n"
		"single-step-panic-threshold = \"inf\"\n"
		"startup-step-panic-threshold = { forward = 10, backward = \"inf\" }\n"
		"accumulated-step-panic-threshold = 0\n",
		&cfg);
	const struct config_daemon_sync *y = &cfg.synchronization;
	cr_assert(isinf(y->single_step_panic_threshold_s));
	cr_assert_eq(y->startup_step.forward_s, 10);
	cr_assert(isinf(y->startup_step.backward_s));
	cr_assert_eq(y->startup_step_panic_threshold_s, 10);
	cr_assert_not(y->has_accumulated_step_panic_threshold, "0 means no limit in ntpd-rs");
	config_daemon_free(&cfg);
	load_ok("[[server]]\nlisten = \"127.0.0.1:123\"\n[synchronization]\n"
		"startup-step-panic-threshold = \"inf\"\naccumulated-step-panic-threshold = 60\n",
		&cfg);
	cr_assert_not(cfg.synchronization.has_startup_step_panic_threshold);
	cr_assert(cfg.synchronization.has_accumulated_step_panic_threshold);
	cr_assert_eq(cfg.synchronization.accumulated_step_panic_threshold_s, 60);
	config_daemon_free(&cfg);
}

Test(ntpdrs, server_access_rules)
{
	struct config_daemon cfg;
	load_ok("[[server]]\nlisten = \"127.0.0.1:123\"\n"
		"allowlist = { filter = [\"127.0.0.0/8\", \"::1/128\"], action = \"deny\" }\n"
		"denylist = { filter = [\"127.0.0.9/32\"], action = \"ignore\" }\n"
		"require-nts = \"deny\"\nrate-limiting-cache-size = 1000\n"
		"rate-limiting-cutoff-ms = 500\n"
		"[[server]]\nlisten = \"127.0.0.1:124\"\nrequire-nts = true\n"
		"allowlist = { filter = [], action = \"ignore\" }\n",
		&cfg);
	const struct config_daemon_server *s = &cfg.servers[0];
	cr_assert(s->allowlist.set);
	cr_assert_eq(s->allowlist.count, 2);
	cr_assert_eq(s->allowlist.action, CONFIG_FILTER_DENY);
	cr_assert_eq(s->denylist.count, 1);
	cr_assert_eq(s->denylist.action, CONFIG_FILTER_IGNORE);
	cr_assert_eq(s->require_nts, CONFIG_REQUIRE_NTS_DENY);
	cr_assert_eq(s->rate_limiting_cache_size, 1000);
	cr_assert_eq(s->rate_limiting_cutoff_ms, 500);
	cr_assert_eq(cfg.servers[1].require_nts, CONFIG_REQUIRE_NTS_IGNORE);
	cr_assert(cfg.servers[1].allowlist.set);
	cr_assert_eq(cfg.servers[1].allowlist.count, 0);
	config_daemon_free(&cfg);
}

Test(ntpdrs, observability_keys)
{
	struct config_daemon cfg;
	load_ok("[[server]]\nlisten = \"127.0.0.1:123\"\n[observability]\n"
		"observation-path = \"/tmp/x/observe\"\nobservation-permissions = 0o660\n"
		"metrics-exporter-listen = \"127.0.0.1:9975\"\nstatus-listen = \"127.0.0.1:9976\"\n"
		"ansi-colors = true\n",
		&cfg);
	const struct config_observability *o = &cfg.observability;
	cr_assert_eq(o->observation_permissions, 0660);
	cr_assert(o->has_metrics_listen);
	cr_assert_str_eq(o->metrics_listen.text, "127.0.0.1:9975");
	cr_assert(o->has_status_listen);
	config_daemon_free(&cfg);
}

/* Validation: every error, in file order, each "FILE:LINE: ..." naming its key. */
Test(ntpdrs, validate_reports_every_error_in_file_order)
{
	char *path = write_file("bad.toml", "[observability]\n"				  /* 1 */
					    "observation-path = \"/run/\"\n"		  /* 2 */
					    "[[source]]\n"				  /* 3 */
					    "mode = \"pool\"\n"				  /* 4 */
					    "address = \"192.0.2.1\"\n"			  /* 5 */
					    "count = 99\n"				  /* 6 */
					    "[[server]]\n"				  /* 7 */
					    "listen = \"127.0.0.1:123\"\n"		  /* 8 */
					    "require-nts = \"maybe\"\n"			  /* 9 */
					    "allowlist = { filter = [\"10.0.0.1/8\"] }\n" /* 10 */
					    "[synchronization]\n"			  /* 11 */
					    "single-step-panic-threshold = -5\n"	  /* 12 */
					    "startup-step-panic-threshold = { up = 1 }\n" /* 13 */
					    "[keyset]\n"				  /* 14 */
					    "stale-key-count = \"x\"\n");		  /* 15 */
	struct config_report rep = { 0 };
	char err[1024];
	int r = config_validate_file_report(path, &rep, err, sizeof err);
	cr_assert_eq(r, -EINVAL);
	static const struct {
		int line;
		const char *needle;
	} want[] = {
		{ 2, "'observation-path' in [observability]" },
		{ 5, "a pool is a DNS name" },
		{ 6, "'count' in [[source]] must be between 1 and 16" },
		{ 9, "'require-nts' in [[server]] must be one of" },
		{ 10, "missing required key 'action'" },
		{ 10, "'filter'" },
		{ 12, "'single-step-panic-threshold' in [synchronization] must be between" },
		{ 13, "unknown key 'up'" },
		{ 15, "'stale-key-count' in [keyset] must be an integer" },
	};
	size_t n = sizeof want / sizeof want[0];
	cr_assert_eq(rep.count, n, "%zu errors, first: %s", rep.count,
		     rep.count ? rep.msgs[0].text : "");
	int last = 0;
	for (size_t i = 0; i < rep.count; i++) {
		char prefix[512];
		snprintf(prefix, sizeof prefix, "%s:%d: ", path, want[i].line);
		cr_assert(strncmp(rep.msgs[i].text, prefix, strlen(prefix)) == 0, "%s",
			  rep.msgs[i].text);
		cr_assert(strstr(rep.msgs[i].text, want[i].needle), "%s", rep.msgs[i].text);
		cr_assert_geq(rep.msgs[i].line, last);
		last = rep.msgs[i].line;
	}
	/* The load for a start reports the first it found, which is one of them. */
	bool found = false;
	for (size_t i = 0; i < rep.count; i++)
		found = found || strcmp(err, rep.msgs[i].text) == 0;
	cr_assert(found, "%s", err);
	config_report_free(&rep);
	free(path);
}

Test(ntpdrs, ntpv5_is_refused_with_the_fix)
{
	char *path = write_file("v5.toml", "[[source]]\nmode = \"server\"\naddress = \"a.test\"\n"
					   "ntp-version = 5\n");
	struct config_daemon cfg;
	char err[1024];
	cr_assert_eq(config_daemon_load(path, &cfg, err, sizeof err), -EINVAL);
	cr_assert(strstr(err, ":4: 'ntp-version' in [[source]]: NTPv5"), "%s", err);
	cr_assert(strstr(err, "use 4 or \"auto\""), "%s", err);
	free(path);
}

/* A token file that cannot be read names the option, its line and the fix. */
Test(ntpdrs, unreadable_token_file_names_option_line_and_fix)
{
	char *text;
	cr_assert(asprintf(&text,
			   "[[nts-ke-server]]\nlisten = \"127.0.0.1:4460\"\n"
			   "certificate-chain-path = \"c\"\nprivate-key-path = \"k\"\n"
			   "accepted-pool-authentication-tokens-path = \"%s/missing.tokens\"\n",
			   dir) >= 0);
	char *path = write_file("tok.toml", text);
	struct config_daemon cfg;
	char err[1024];
	cr_assert_eq(config_daemon_load(path, &cfg, err, sizeof err), -EINVAL);
	char prefix[512];
	snprintf(prefix, sizeof prefix,
		 "%s:5: 'accepted-pool-authentication-tokens-path' in [[nts-ke-server]]: ", path);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "%s", err);
	cr_assert(strstr(err, "create it (mode 600) or correct the path"), "%s", err);
	free(path);
	free(text);
}
