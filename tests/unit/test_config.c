#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_daemon.h"
#include "config_pool.h"
#include "config_validate.h"
#include "pool_proto.h"
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

TestSuite(config, .init = setup, .fini = teardown);

static char *write_file(const char *name, const char *text)
{
	return tu_write_file(dir, name, text);
}

/* A secret file: text written to DIR/name, then given exactly `mode` (the umask does not
 * decide what the test sees). Returns the path (caller frees). */
static char *write_secret(const char *name, const char *text, mode_t mode)
{
	char *path = write_file(name, text);
	cr_assert_eq(chmod(path, mode), 0);
	return path;
}

/* Checks err begins with "PATH:LINE: " and contains every needle. */
static void check_error(const char *err, const char *path, int line, const char *needle,
			const char *needle2)
{
	char prefix[1024];
	snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "error '%s' lacks prefix '%s'", err,
		  prefix);
	cr_assert(strstr(err, needle), "error '%s' lacks '%s'", err, needle);
	if (needle2)
		cr_assert(strstr(err, needle2), "error '%s' lacks '%s'", err, needle2);
}

static void pool_error(const char *text, int line, const char *needle, const char *needle2)
{
	char *path = write_file("pool.toml", text);
	struct config_pool cfg;
	char err[1024] = "";
	int r = config_pool_load(path, &cfg, err, sizeof(err));
	cr_assert_eq(r, -EINVAL, "load returned %d (%s) for:\n%.400s", r, err, text);
	check_error(err, path, line, needle, needle2);
	cr_assert_null(cfg.listen);
	cr_assert_null(cfg.key_exchange_servers);
	config_pool_free(&cfg);
	free(path);
}

static void daemon_error(const char *text, int line, const char *needle, const char *needle2)
{
	char *path = write_file("ntp.toml", text);
	struct config_daemon cfg;
	char err[1024] = "";
	int r = config_daemon_load(path, &cfg, err, sizeof(err));
	cr_assert_eq(r, -EINVAL, "load returned %d (%s) for:\n%.400s", r, err, text);
	check_error(err, path, line, needle, needle2);
	cr_assert_null(cfg.sources);
	config_daemon_free(&cfg);
	free(path);
}

#define POOL_HEAD                                        \
	"[nts-pool-ke-server]\n"                         \
	"listen = \"127.0.0.1:4460\"\n"                  \
	"certificate-chain-path = \"pool.chain.pem\"\n" \
	"private-key-path = \"pool.key\"\n"
#define POOL_MINIMAL POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\" }]\n"

/* ---- nts-pool-ke ---- */

Test(config, pool_minimal_has_documented_defaults)
{
	char *path = write_file("pool.toml", POOL_MINIMAL);
	struct config_pool c;
	char err[512];
	cr_assert_eq(config_pool_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.listen_count, 1);
	cr_assert_str_eq(c.listen[0].text, "127.0.0.1:4460");
	cr_assert_eq(c.listen[0].addr.ss_family, AF_INET);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&c.listen[0].addr;
	cr_assert_eq(ntohs(sin->sin_port), 4460);
	cr_assert_eq(ntohl(sin->sin_addr.s_addr), 0x7f000001u);
	cr_assert_eq(c.listen[0].addr_len, sizeof(struct sockaddr_in));
	cr_assert_str_eq(c.certificate_chain_path, "pool.chain.pem");
	cr_assert_str_eq(c.private_key_path, "pool.key");
	cr_assert_null(c.certificate_authority_path);
	cr_assert_eq(c.key_exchange_timeout_ms, 5000);
	cr_assert_eq(c.handshake_timeout_ms, 2000);
	cr_assert_eq(c.max_connections_per_address, 256);
	cr_assert_eq(c.upstream_timeout_ms, 2500);
	cr_assert_eq(c.max_connections, 512);
	cr_assert_eq(c.max_upstream_attempts, 3);
	cr_assert_eq(c.pool_record_numbers, KE_NUMBERING_IANA);
	cr_assert_eq(c.probe_interval_s, 60);
	cr_assert_eq(c.support_cache_s, 300);
	cr_assert_eq(c.deep_check_interval_s, 300);
	cr_assert_eq(c.upstream_idle_s, 30);
	cr_assert_eq(c.upstream_max_age_s, 600);
	cr_assert_eq(c.fixed_key_failure_streak, 3);
	cr_assert_eq(c.workers, 0, "absent: one worker per usable CPU");
	cr_assert_null(c.user, "absent: the default account");
	cr_assert_eq(c.upstream_connections, 4);
	cr_assert_eq(c.key_exchange_server_count, 1);
	cr_assert_str_eq(c.key_exchange_servers[0].addr.host, "a.test");
	cr_assert_eq(c.key_exchange_servers[0].addr.port, 4460);
	cr_assert_eq(c.key_exchange_servers[0].addr.is_ip, false);
	cr_assert_eq(c.key_exchange_servers[0].weight, 1);
	cr_assert_eq(c.observability.log_level, LOG_LEVEL_INFO);
	cr_assert_eq(c.observability.has_status_listen, false);
	config_pool_free(&c);
	cr_assert_null(c.listen);
	free(path);
}

Test(config, pool_every_option_read_back)
{
	char *path = write_file("pool.toml",
				"[nts-pool-ke-server]\n"
				"listen = [\"127.0.0.2:14460\", \"[::1]:14461\"]\n"
				"certificate-chain-path = \"/etc/pool/chain.pem\"\n"
				"private-key-path = \"/etc/pool/key.pem\"\n"
				"certificate-authority-path = \"/etc/pool/ca.pem\"\n"
				"key-exchange-timeout-ms = 7000\n"
				"handshake-timeout-ms = 1500\n"
				"upstream-timeout-ms = 3000\n"
				"max-connections = 1000\n"
				"max-connections-per-address = 0\n"
				"max-upstream-attempts = 5\n"
				"pool-record-numbers = \"ntpd-rs-v1\"\n"
				"probe-interval-s = 30\n"
				"support-cache-s = 600\n"
				"deep-check-interval-s = 0\n"
				"upstream-idle-s = 10\n"
				"upstream-connections = 2\n"
				"key-exchange-servers = [\n"
				"  { domain = \"ke1.test\", port = 14470, weight = 3 },\n"
				"  { domain = \"127.0.0.3\" },\n"
				"  { domain = \"::1\", port = 4461 },\n"
				"]\n"
				"upstream-max-age-s = 120\n"
				"workers = 3\n"
				"user = \"ntp-pool\"\n"
				"fixed-key-failure-streak = 0\n"
				"allow-world-readable-private-key = false\n"
				"[observability]\n"
				"log-level = \"debug\"\n"
				"status-listen = \"127.0.0.1:9100\"\n");
	struct config_pool c;
	char err[512];
	cr_assert_eq(config_pool_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.listen_count, 2);
	cr_assert_str_eq(c.listen[0].text, "127.0.0.2:14460");
	cr_assert_str_eq(c.listen[1].text, "[::1]:14461");
	cr_assert_eq(c.listen[1].addr.ss_family, AF_INET6);
	cr_assert_eq(ntohs(((const struct sockaddr_in6 *)&c.listen[1].addr)->sin6_port), 14461);
	cr_assert_eq(c.listen[1].line, 2);
	cr_assert_str_eq(c.certificate_chain_path, "/etc/pool/chain.pem");
	cr_assert_str_eq(c.private_key_path, "/etc/pool/key.pem");
	cr_assert_str_eq(c.certificate_authority_path, "/etc/pool/ca.pem");
	cr_assert_eq(c.key_exchange_timeout_ms, 7000);
	cr_assert_eq(c.handshake_timeout_ms, 1500);
	cr_assert_eq(c.max_connections_per_address, 0, "0 turns the limit off");
	cr_assert_eq(c.upstream_timeout_ms, 3000);
	cr_assert_eq(c.max_connections, 1000);
	cr_assert_eq(c.max_upstream_attempts, 5);
	cr_assert_eq(c.pool_record_numbers, KE_NUMBERING_NTPDRS_V1);
	cr_assert_eq(c.probe_interval_s, 30);
	cr_assert_eq(c.support_cache_s, 600);
	cr_assert_eq(c.deep_check_interval_s, 0);
	cr_assert_eq(c.upstream_idle_s, 10);
	cr_assert_eq(c.upstream_max_age_s, 120);
	cr_assert_eq(c.workers, 3);
	cr_assert_str_eq(c.user, "ntp-pool");
	cr_assert_eq(c.fixed_key_failure_streak, 0, "0 turns it off");
	cr_assert_not(c.allow_world_readable_private_key);
	cr_assert_eq(c.upstream_connections, 2);
	cr_assert_eq(c.key_exchange_server_count, 3);
	cr_assert_str_eq(c.key_exchange_servers[0].addr.host, "ke1.test");
	cr_assert_eq(c.key_exchange_servers[0].addr.port, 14470);
	cr_assert_eq(c.key_exchange_servers[0].weight, 3);
	cr_assert_eq(c.key_exchange_servers[0].line, 19);
	cr_assert_str_eq(c.key_exchange_servers[1].addr.host, "127.0.0.3");
	cr_assert_eq(c.key_exchange_servers[1].addr.is_ip, true);
	cr_assert_eq(c.key_exchange_servers[1].addr.port, 4460);
	cr_assert_str_eq(c.key_exchange_servers[2].addr.host, "::1");
	cr_assert_eq(c.key_exchange_servers[2].addr.is_ip, true);
	cr_assert_eq(c.key_exchange_servers[2].addr.port, 4461);
	cr_assert_eq(c.observability.log_level, LOG_LEVEL_DEBUG);
	cr_assert_eq(c.observability.has_status_listen, true);
	cr_assert_str_eq(c.observability.status_listen.text, "127.0.0.1:9100");
	config_pool_free(&c);
	free(path);
}

Test(config, pool_upstreams_as_array_of_tables)
{
	char *path = write_file("pool.toml", POOL_HEAD
				"[[nts-pool-ke-server.key-exchange-servers]]\n"
				"domain = \"b.test\"\n"
				"weight = 2\n");
	struct config_pool c;
	char err[512];
	cr_assert_eq(config_pool_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.key_exchange_server_count, 1);
	cr_assert_str_eq(c.key_exchange_servers[0].addr.host, "b.test");
	cr_assert_eq(c.key_exchange_servers[0].weight, 2);
	config_pool_free(&c);
	free(path);
}

Test(config, pool_unknown_key_lists_valid_keys)
{
	pool_error(POOL_MINIMAL "lissen = \"127.0.0.1:1\"\n", 6,
		   "unknown key 'lissen' in [nts-pool-ke-server]; valid keys: listen, "
		   "certificate-chain-path, private-key-path,",
		   "key-exchange-servers");
}

Test(config, pool_unknown_key_in_upstream_entry)
{
	pool_error(POOL_HEAD "key-exchange-servers = [\n"
			     "  { domain = \"a.test\" },\n"
			     "  { domain = \"b.test\", wieght = 2 },\n"
			     "]\n",
		   7, "unknown key 'wieght'", "valid keys: domain, port, weight");
}

Test(config, pool_unknown_table)
{
	pool_error(POOL_MINIMAL "[observabilty]\nlog-level = \"info\"\n", 6,
		   "unknown key 'observabilty'", "valid keys: nts-pool-ke-server, observability");
}

Test(config, pool_wrong_type)
{
	pool_error(POOL_MINIMAL "max-connections = \"many\"\n", 6,
		   "'max-connections' in [nts-pool-ke-server] must be an integer, not string", NULL);
	pool_error("[nts-pool-ke-server]\nlisten = 4460\n", 2,
		   "'listen' in [nts-pool-ke-server] must be a string or an array of strings, not "
		   "integer",
		   NULL);
	pool_error(POOL_HEAD "key-exchange-servers = \"a.test\"\n", 5,
		   "'key-exchange-servers' in [nts-pool-ke-server] must be an array of tables",
		   NULL);
}

Test(config, pool_out_of_range)
{
	pool_error(POOL_MINIMAL "upstream-connections = 0\n", 6,
		   "'upstream-connections' in [nts-pool-ke-server] must be between 1 and 64 (got 0)",
		   NULL);
	pool_error(POOL_MINIMAL "key-exchange-timeout-ms = -5\n", 6, "must be between 1 and",
		   "(got -5)");
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", weight = 0 }]\n", 5,
		   "'weight'", "must be between 1 and 65535 (got 0)");
	pool_error(POOL_MINIMAL "workers = 0\n", 6,
		   "'workers' in [nts-pool-ke-server] must be between 1 and 256 (got 0)", NULL);
	pool_error(POOL_MINIMAL "workers = 257\n", 6, "'workers'", "(got 257)");
	pool_error(POOL_MINIMAL "upstream-max-age-s = 86401\n", 6,
		   "'upstream-max-age-s' in [nts-pool-ke-server] must be between 0 and 86400", NULL);
}

Test(config, pool_cross_checks)
{
	pool_error(POOL_MINIMAL "upstream-timeout-ms = 6000\n", 6,
		   "upstream-timeout-ms (6000) must not exceed key-exchange-timeout-ms (5000)", NULL);
	pool_error(POOL_MINIMAL "probe-interval-s = 600\n", 6,
		   "support-cache-s (300) must be at least probe-interval-s (600)", NULL);
}

Test(config, pool_missing_required)
{
	pool_error("[nts-pool-ke-server]\n"
		   "listen = \"127.0.0.1:4460\"\n"
		   "certificate-chain-path = \"c.pem\"\n"
		   "key-exchange-servers = [{ domain = \"a.test\" }]\n",
		   1, "[nts-pool-ke-server] is missing required key 'private-key-path'", NULL);
	pool_error(POOL_HEAD, 1, "missing required key 'key-exchange-servers'", NULL);
	pool_error(POOL_HEAD "key-exchange-servers = []\n", 5, "at least one upstream", NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ port = 4460 }]\n", 5,
		   "missing required key 'domain'", NULL);
	pool_error("[observability]\nlog-level = \"info\"\n", 1,
		   "missing table [nts-pool-ke-server]", NULL);
}

Test(config, pool_bad_listen_addresses)
{
	pool_error("[nts-pool-ke-server]\nlisten = \"127.0.0.1\"\n", 2,
		   "'listen' in [nts-pool-ke-server]: '127.0.0.1' needs a port", NULL);
	pool_error("[nts-pool-ke-server]\nlisten = \"[::1\"\n", 2, "unterminated '[' in '[::1'",
		   NULL);
	pool_error("[nts-pool-ke-server]\nlisten = [\"127.0.0.1:1\",\n  \"127.0.0.1:0\"]\n", 3,
		   "port 0 in '127.0.0.1:0' is out of range 1..65535", NULL);
	pool_error("[nts-pool-ke-server]\nlisten = \"[::1]:70000\"\n", 2,
		   "port 70000 in '[::1]:70000' is out of range 1..65535", NULL);
	pool_error("[nts-pool-ke-server]\nlisten = \"localhost:4460\"\n", 2, "no host names",
		   NULL);
	pool_error("[nts-pool-ke-server]\nlisten = \"::1:4460\"\n", 2, "[IPv6]:PORT", NULL);
	pool_error("[nts-pool-ke-server]\nlisten = \"127.0.0.1:44a\"\n", 2, "is not a number",
		   NULL);
	pool_error("[nts-pool-ke-server]\nlisten = []\n", 2, "at least 1 entry", NULL);
	pool_error("[nts-pool-ke-server]\nlisten = [\"[::1]:1\", \"[0::1]:1\"]\n", 2,
		   "'listen' in [nts-pool-ke-server] lists [::1]:1 twice", NULL);
	pool_error(POOL_MINIMAL "[observability]\nstatus-listen = \"127.0.0.1\"\n", 7,
		   "'status-listen' in [observability]", "needs a port");
}

Test(config, pool_bad_upstream_domain_and_port)
{
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"bad..test\" }]\n", 5,
		   "'domain' in [nts-pool-ke-server] key-exchange-servers entry",
		   "neither an IP address nor a valid DNS name");
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test:4460\" }]\n", 5,
		   "neither an IP address nor a valid DNS name", NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"10.0.0.256\" }]\n", 5,
		   "neither an IP address nor a valid DNS name", NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", port = 70000 }]\n",
		   5, "'port'", "between 1 and 65535 (got 70000)");
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"\" }]\n", 5,
		   "'domain' in [nts-pool-ke-server] key-exchange-servers entry must not be empty",
		   NULL);
}

Test(config, pool_bad_enum)
{
	pool_error(POOL_MINIMAL "pool-record-numbers = \"ntpd-rs\"\n", 6,
		   "'pool-record-numbers' in [nts-pool-ke-server] must be one of \"iana\", "
		   "\"ntpd-rs-v1\" (got \"ntpd-rs\")",
		   NULL);
	pool_error(POOL_MINIMAL "[observability]\nlog-level = \"verbose\"\n", 7,
		   "'log-level' in [observability] must be one of", "(got \"verbose\")");
}

Test(config, pool_duplicate_upstream)
{
	pool_error(POOL_HEAD "key-exchange-servers = [\n"
			     "  { domain = \"A.test\" },\n"
			     "  { domain = \"b.test\" },\n"
			     "  { domain = \"a.test\", port = 4460 },\n"
			     "]\n",
		   8, "duplicate key-exchange-servers entry 'a.test' port 4460 (first at line 6)",
		   NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [\n"
			     "  { domain = \"::1\" },\n"
			     "  { domain = \"0:0::1\" },\n"
			     "]\n",
		   7, "duplicate key-exchange-servers entry", NULL);
}

Test(config, pool_too_many_upstreams)
{
	/* One entry more than the registry holds: refused at the array's line, not later. */
	size_t cap = 64 + (size_t)(CONFIG_POOL_MAX_UPSTREAMS + 1) * 40;
	char *text = malloc(cap);
	cr_assert(text);
	size_t n = (size_t)snprintf(text, cap, "%skey-exchange-servers = [\n", POOL_HEAD);
	for (int i = 0; i <= CONFIG_POOL_MAX_UPSTREAMS; i++)
		n += (size_t)snprintf(text + n, cap - n, "  { domain = \"u%d.test\" },\n", i);
	snprintf(text + n, cap - n, "]\n");
	pool_error(text, 5, "lists 257 upstreams; at most 256 are supported", NULL);
	free(text);
}

Test(config, pool_same_domain_other_port_is_not_duplicate)
{
	char *path = write_file("pool.toml", POOL_HEAD "key-exchange-servers = [\n"
							"  { domain = \"a.test\" },\n"
							"  { domain = \"a.test\", port = 4461 },\n"
							"]\n");
	struct config_pool c;
	char err[512];
	cr_assert_eq(config_pool_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.key_exchange_server_count, 2);
	config_pool_free(&c);
	free(path);
}

static void expect_syntax_error(int (*load)(const char *, char *, size_t), const char *text,
				int line)
{
	char *path = write_file("bad.toml", text);
	char err[1024] = "";
	cr_assert_lt(load(path, err, sizeof(err)), 0);
	char pattern[1200];
	snprintf(pattern, sizeof(pattern), "^%s:%d:[0-9]+: ", path, line);
	regex_t re;
	cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	cr_assert_eq(regexec(&re, err, 0, NULL, 0), 0, "error '%s' lacks FILE:%d:COL:", err,
		     line);
	regfree(&re);
	free(path);
}

static int load_pool(const char *path, char *err, size_t errlen)
{
	struct config_pool c;
	int r = config_pool_load(path, &c, err, errlen);
	config_pool_free(&c);
	return r;
}

static int load_daemon(const char *path, char *err, size_t errlen)
{
	struct config_daemon c;
	int r = config_daemon_load(path, &c, err, errlen);
	config_daemon_free(&c);
	return r;
}

Test(config, toml_syntax_errors_pass_through)
{
	expect_syntax_error(load_pool, "[nts-pool-ke-server]\nlisten = \"127.0.0.1:4460\n", 2);
	expect_syntax_error(load_daemon, "[[source]]\nmode = \"server\"\nmode = \"nts\"\n", 3);
	expect_syntax_error(config_validate_file, "\n\n[[source]\n", 3);
}

Test(config, missing_file_reports_errno)
{
	char *path = NULL;
	cr_assert(asprintf(&path, "%s/absent.toml", dir) >= 0);
	char err[512] = "";
	cr_assert_eq(load_pool(path, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, path) == err, "%s", err);
	cr_assert(strstr(err, strerror(ENOENT)), "%s", err);
	cr_assert_eq(config_validate_file(path, err, sizeof(err)), -ENOENT);
	free(path);
}

/* ---- ntp-daemon ---- */

Test(config, daemon_minimal_has_documented_defaults)
{
	char *path = write_file("ntp.toml", "[[source]]\nmode = \"server\"\naddress = \"127.0.0.1\"\n");
	struct config_daemon c;
	char err[512];
	cr_assert_eq(config_daemon_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.source_count, 1);
	const struct config_daemon_source *s = &c.sources[0];
	cr_assert_eq(s->mode, CONFIG_DAEMON_SOURCE_SERVER);
	cr_assert_str_eq(s->address.host, "127.0.0.1");
	cr_assert_eq(s->address.port, 123);
	cr_assert_eq(s->address.is_ip, true);
	cr_assert_null(s->certificate_authority);
	cr_assert_eq(s->count, 1);
	cr_assert_eq(s->poll_interval_min, 4);
	cr_assert_eq(s->poll_interval_max, 10);
	cr_assert_eq(c.server_count, 0);
	cr_assert_eq(c.nts_ke_server_count, 0);
	cr_assert_null(c.keyset.key_storage_path);
	cr_assert_eq(c.keyset.key_rotation_interval_s, 86400);
	cr_assert_eq(c.keyset.stale_key_count, 7);
	cr_assert_eq(c.observability.log_level, LOG_LEVEL_INFO);
	cr_assert_eq(c.observability.has_status_listen, false);
	cr_assert_eq(c.synchronization.local_stratum, 16);
	cr_assert_eq(c.synchronization.clock_control, true);
	cr_assert_eq(c.synchronization.minimum_agreeing_sources, 1);
	cr_assert_float_eq(c.synchronization.single_step_panic_threshold_s, 1000.0, 1e-9);
	cr_assert_eq(c.synchronization.has_startup_step_panic_threshold, false);
	cr_assert_eq(c.synchronization.has_accumulated_step_panic_threshold, false);
	config_daemon_free(&c);
	free(path);
}

Test(config, daemon_mode_defaults)
{
	char *path = write_file("ntp.toml", "[[source]]\nmode = \"nts\"\naddress = \"nts.test\"\n"
					    "[[source]]\nmode = \"nts-pool\"\naddress = \"pool.test\"\n"
					    "[[server]]\nlisten = \"[::1]:123\"\n"
					    "[[nts-ke-server]]\nlisten = \"127.0.0.1:4460\"\n"
					    "certificate-chain-path = \"c.pem\"\n"
					    "private-key-path = \"k.pem\"\n");
	struct config_daemon c;
	char err[512];
	cr_assert_eq(config_daemon_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.source_count, 2);
	cr_assert_eq(c.sources[0].mode, CONFIG_DAEMON_SOURCE_NTS);
	cr_assert_eq(c.sources[0].address.port, 4460);
	cr_assert_eq(c.sources[0].address.is_ip, false);
	cr_assert_eq(c.sources[0].count, 1);
	cr_assert_eq(c.sources[1].mode, CONFIG_DAEMON_SOURCE_NTS_POOL);
	cr_assert_eq(c.sources[1].address.port, 4460);
	cr_assert_eq(c.sources[1].count, 4);
	cr_assert_eq(c.server_count, 1);
	cr_assert_str_eq(c.servers[0].listen.text, "[::1]:123");
	cr_assert_eq(c.nts_ke_server_count, 1);
	const struct config_daemon_nts_ke_server *k = &c.nts_ke_servers[0];
	cr_assert_eq(k->key_exchange_timeout_ms, 1000);
	cr_assert_eq(k->concurrent_connections, 512);
	cr_assert_eq(k->max_connections_per_address, 256);
	cr_assert_eq(k->handshake_timeout_ms, 1000);
	cr_assert_eq(k->ntp_port, 0);
	cr_assert_null(k->ntp_server);
	cr_assert_eq(k->authorized_pool_server_certificate_count, 0);
	cr_assert_eq(k->accepted_pool_authentication_token_count, 0);
	cr_assert_null(k->accepted_pool_authentication_tokens_path);
	cr_assert_eq(k->pool_record_numbers, KE_NUMBERING_IANA);
	/* Nothing configured: no set at all, so the server accepts no token. (Any non-NULL
	 * start value shows that *out is written.) */
	struct pool_tokens *t = (struct pool_tokens *)&c;
	cr_assert_eq(config_daemon_load_tokens(k, path, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_null(t);
	config_daemon_free(&c);
	free(path);
}

Test(config, daemon_every_option_read_back)
{
	char *path = write_file(
		"ntp.toml",
		"[[source]]\n"
		"mode = \"nts-pool\"\n"
		"address = \"pool.test:14460\"\n"
		"certificate-authority = \"ca.pem\"\n"
		"count = 2\n"
		"poll-interval-min = 0\n"
		"poll-interval-max = 17\n"
		"[[source]]\n"
		"mode = \"server\"\n"
		"address = \"[2001:db8::1]:1123\"\n"
		"poll-interval-min = 6\n"
		"poll-interval-max = 6\n"
		"[[source]]\n"
		"mode = \"nts\"\n"
		"address = \"::1\"\n"
		"certificate-authority = \"ca2.pem\"\n"
		"[[server]]\n"
		"listen = \"127.0.0.1:1123\"\n"
		"[[server]]\n"
		"listen = \"127.0.0.2:1123\"\n"
		"[[nts-ke-server]]\n"
		"listen = \"127.0.0.1:14460\"\n"
		"certificate-chain-path = \"chain.pem\"\n"
		"private-key-path = \"key.pem\"\n"
		"key-exchange-timeout-ms = 2000\n"
		"handshake-timeout-ms = 300\n"
		"concurrent-connections = 64\n"
		"allow-world-readable-private-key = true\n"
		"max-connections-per-address = 5\n"
		"ntp-port = 1123\n"
		"ntp-server = \"ntp.test\"\n"
		"authorized-pool-server-certificates = [\"pool1.pem\", \"pool2.pem\"]\n"
		"pool-record-numbers = \"ntpd-rs-v1\"\n"
		"[keyset]\n"
		"key-storage-path = \"/var/lib/ntp/keys\"\n"
		"key-rotation-interval = 3600\n"
		"stale-key-count = 0\n"
		"[observability]\n"
		"log-level = \"TRACE\"\n"
		"status-listen = \"[::1]:9101\"\n"
		"[synchronization]\n"
		"local-stratum = 2\n"
		"clock-control = false\n"
		"minimum-agreeing-sources = 3\n"
		"single-step-panic-threshold = 0.5\n"
		"startup-step-panic-threshold = 86400\n"
		"accumulated-step-panic-threshold = 1800.5\n"
		"[daemon]\n"
		"workers = 4\n"
		"user = \"nobody\"\n");
	struct config_daemon c;
	char err[512];
	cr_assert_eq(config_daemon_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.source_count, 3);
	const struct config_daemon_source *s = c.sources;
	cr_assert_eq(s[0].mode, CONFIG_DAEMON_SOURCE_NTS_POOL);
	cr_assert_str_eq(s[0].address.host, "pool.test");
	cr_assert_eq(s[0].address.port, 14460);
	cr_assert_str_eq(s[0].certificate_authority, "ca.pem");
	cr_assert_eq(s[0].count, 2);
	cr_assert_eq(s[0].poll_interval_min, 0);
	cr_assert_eq(s[0].poll_interval_max, 17);
	cr_assert_eq(s[0].line, 1);
	cr_assert_str_eq(c.user, "nobody");
	cr_assert_eq(s[1].mode, CONFIG_DAEMON_SOURCE_SERVER);
	cr_assert_str_eq(s[1].address.host, "2001:db8::1");
	cr_assert_eq(s[1].address.is_ip, true);
	cr_assert_eq(s[1].address.port, 1123);
	cr_assert_eq(s[1].poll_interval_min, 6);
	cr_assert_eq(s[1].poll_interval_max, 6);
	cr_assert_str_eq(s[2].address.host, "::1");
	cr_assert_eq(s[2].address.port, 4460);
	cr_assert_str_eq(s[2].certificate_authority, "ca2.pem");
	cr_assert_eq(c.server_count, 2);
	cr_assert_str_eq(c.servers[1].listen.text, "127.0.0.2:1123");
	cr_assert_eq(c.nts_ke_server_count, 1);
	const struct config_daemon_nts_ke_server *k = &c.nts_ke_servers[0];
	cr_assert_str_eq(k->listen.text, "127.0.0.1:14460");
	cr_assert_str_eq(k->certificate_chain_path, "chain.pem");
	cr_assert_str_eq(k->private_key_path, "key.pem");
	cr_assert_eq(k->key_exchange_timeout_ms, 2000);
	cr_assert_eq(k->handshake_timeout_ms, 300);
	cr_assert_eq(k->max_connections_per_address, 5);
	cr_assert_eq(k->concurrent_connections, 64);
	cr_assert(k->allow_world_readable_private_key);
	cr_assert_eq(k->ntp_port, 1123);
	cr_assert_str_eq(k->ntp_server, "ntp.test");
	cr_assert_eq(k->authorized_pool_server_certificate_count, 2);
	cr_assert_str_eq(k->authorized_pool_server_certificates[0], "pool1.pem");
	cr_assert_str_eq(k->authorized_pool_server_certificates[1], "pool2.pem");
	cr_assert_eq(k->pool_record_numbers, KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(c.keyset.key_storage_path, "/var/lib/ntp/keys");
	cr_assert_eq(c.keyset.key_rotation_interval_s, 3600);
	cr_assert_eq(c.keyset.stale_key_count, 0);
	cr_assert_eq(c.observability.log_level, LOG_LEVEL_TRACE);
	cr_assert_eq(c.observability.has_status_listen, true);
	cr_assert_str_eq(c.observability.status_listen.text, "[::1]:9101");
	cr_assert_eq(c.synchronization.local_stratum, 2);
	cr_assert_eq(c.synchronization.clock_control, false);
	cr_assert_eq(c.workers, 4);
	cr_assert_eq(c.synchronization.minimum_agreeing_sources, 3);
	cr_assert_float_eq(c.synchronization.single_step_panic_threshold_s, 0.5, 1e-12);
	cr_assert_eq(c.synchronization.has_startup_step_panic_threshold, true);
	cr_assert_float_eq(c.synchronization.startup_step_panic_threshold_s, 86400.0, 1e-9);
	cr_assert_eq(c.synchronization.has_accumulated_step_panic_threshold, true);
	cr_assert_float_eq(c.synchronization.accumulated_step_panic_threshold_s, 1800.5, 1e-9);
	config_daemon_free(&c);
	free(path);
}

#define SERVER_SOURCE "[[source]]\nmode = \"server\"\naddress = \"ntp.test\"\n"
#define KE_HEAD                               \
	"[[nts-ke-server]]\n"                  \
	"listen = \"127.0.0.1:4460\"\n"        \
	"certificate-chain-path = \"c.pem\"\n" \
	"private-key-path = \"k.pem\"\n"

Test(config, daemon_with_nothing_to_do)
{
	daemon_error("", 1, "no [[source]], [[server]] or [[nts-ke-server]]", NULL);
	daemon_error("[observability]\nlog-level = \"debug\"\n[keyset]\n", 1,
		     "the daemon would have nothing to do", NULL);
}

Test(config, daemon_mode_specific_keys)
{
	daemon_error(SERVER_SOURCE "count = 4\n", 4,
		     "'count' makes no sense for a [[source]] with mode = \"server\"", NULL);
	daemon_error(SERVER_SOURCE "certificate-authority = \"ca.pem\"\n", 4,
		     "'certificate-authority' makes no sense", "mode = \"server\"");
	daemon_error("[[source]]\nmode = \"nts\"\naddress = \"a.test\"\ncount = 2\n", 4,
		     "'count' makes no sense for a [[source]] with mode = \"nts\"", NULL);
	daemon_error(SERVER_SOURCE "poll-interval = 4\n", 4, "unknown key 'poll-interval' in "
							     "[[source]]; valid keys: mode, address, "
							     "poll-interval-min, poll-interval-max",
		     NULL);
}

Test(config, daemon_source_errors)
{
	daemon_error("\n[[source]]\naddress = \"a.test\"\n", 2,
		     "[[source]] is missing required key 'mode'", NULL);
	daemon_error("[[source]]\nmode = \"server\"\n", 1,
		     "[[source]] is missing required key 'address'", NULL);
	daemon_error("[[source]]\nmode = \"peer\"\naddress = \"a.test\"\n", 2,
		     "'mode' in [[source]] must be one of \"server\", \"nts\", \"nts-pool\", "
		     "\"pool\" (got \"peer\")",
		     NULL);
	daemon_error(SERVER_SOURCE "poll-interval-min = 18\n", 4,
		     "'poll-interval-min' in [[source]] must be between 0 and 17 (got 18)", NULL);
	daemon_error(SERVER_SOURCE "poll-interval-min = 8\npoll-interval-max = 6\n", 4,
		     "poll-interval-min (8) must not exceed poll-interval-max (6)", NULL);
	daemon_error(SERVER_SOURCE "poll-interval-min = 11\n", 4,
		     "poll-interval-min (11) must not exceed poll-interval-max (10)", NULL);
	daemon_error("[[source]]\nmode = \"nts-pool\"\naddress = \"a.test\"\ncount = 17\n", 4,
		     "'count' in [[source]] must be between 1 and 16 (got 17)", NULL);
	daemon_error("[source]\nmode = \"server\"\naddress = \"a.test\"\n", 1,
		     "'source' must be an array of tables ([[source]]), not table", NULL);
	daemon_error("source = [1]\n", 1, "entries of 'source' must be tables", NULL);
}

Test(config, daemon_source_addresses)
{
	daemon_error("[[source]]\nmode = \"server\"\naddress = \"[::1\"\n", 3,
		     "'address' in [[source]]: unterminated '[' in '[::1'", NULL);
	daemon_error("[[source]]\nmode = \"server\"\naddress = \"a.test:0\"\n", 3,
		     "port 0 in 'a.test:0' is out of range 1..65535", NULL);
	daemon_error("[[source]]\nmode = \"nts\"\naddress = \"a.test:70000\"\n", 3,
		     "port 70000 in 'a.test:70000' is out of range 1..65535", NULL);
	daemon_error("[[source]]\nmode = \"nts\"\naddress = \"2001:db8::1:4460x\"\n", 3,
		     "write IPv6 with a port as [IPv6]:PORT", NULL);
	daemon_error("[[source]]\nmode = \"nts\"\naddress = \"[::1]x\"\n", 3,
		     "unexpected text after ']'", NULL);
	daemon_error("[[source]]\nmode = \"nts\"\naddress = \"-bad.test\"\n", 3,
		     "neither an IP address nor a valid DNS name", NULL);
	daemon_error("[[source]]\nmode = \"nts\"\naddress = 123\n", 3,
		     "'address' in [[source]] must be a string, not integer", NULL);
}

Test(config, daemon_server_and_ke_errors)
{
	daemon_error("[[server]]\nlisten = \"ntp.test:123\"\n", 2, "no host names", NULL);
	daemon_error("[[server]]\n", 1, "[[server]] is missing required key 'listen'", NULL);
	daemon_error("[[server]]\nlisten = \"127.0.0.1:123\"\n[[server]]\n"
		     "listen = \"127.0.0.1:123\"\n",
		     4, "[[server]] listen address 127.0.0.1:123 is already used at line 2", NULL);
	daemon_error("[[nts-ke-server]]\nlissen = \"127.0.0.1:4460\"\n", 2,
		     "unknown key 'lissen' in [[nts-ke-server]]; valid keys: listen, "
		     "certificate-chain-path, private-key-path, key-exchange-timeout-ms, "
		     "handshake-timeout-ms, concurrent-connections, max-connections-per-address, "
		     "ntp-port, ntp-server, "
		     "authorized-pool-server-certificates, accepted-pool-authentication-tokens, "
		     "accepted-pool-authentication-tokens-path, pool-record-numbers, "
		     "allow-world-readable-private-key",
		     NULL);
	daemon_error(KE_HEAD "ntp-port = 0\n", 5,
		     "'ntp-port' in [[nts-ke-server]] must be between 1 and 65535 (got 0)", NULL);
	daemon_error(KE_HEAD "ntp-server = \"ntp.test:123\"\n", 5,
		     "'ntp-server' in [[nts-ke-server]]", "neither an IP address");
	daemon_error(KE_HEAD "authorized-pool-server-certificates = [\"a.pem\", 3]\n", 5,
		     "'authorized-pool-server-certificates' in [[nts-ke-server]] must be a string, "
		     "not integer",
		     NULL);
	daemon_error(KE_HEAD "pool-record-numbers = \"IANA\"\n", 5,
		     "must be one of \"iana\", \"ntpd-rs-v1\"", NULL);
	daemon_error(KE_HEAD "key-exchange-timeout-ms = 0\n", 5, "between 1 and 300000", NULL);
	daemon_error("[[nts-ke-server]]\nlisten = \"127.0.0.1:4460\"\nprivate-key-path = \"k\"\n",
		     1, "[[nts-ke-server]] is missing required key 'certificate-chain-path'", NULL);
	daemon_error(KE_HEAD KE_HEAD, 6, "[[nts-ke-server]] listen address 127.0.0.1:4460 is "
					 "already used at line 2",
		     NULL);
}

/* ---- pool authentication tokens (PROTOCOL.md §3.5) ---- */

/* 64 characters, as KELB derives them; a 255-byte one is the longest allowed. */
#define TOK_A "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	cr_assert(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

Test(config, daemon_tokens_read_back)
{
	/* Comments, blank lines, blanks around tokens, CRLF line ends, no final newline, and
	 * tokens also listed inline (counted once). */
	char *longest = repeat('z', 255);
	char *text = NULL;
	cr_assert(asprintf(&text,
			   "# accepted pool tokens\r\n"
			   "\r\n"
			   "tok-1\r\n"
			   "   \t tok-2 \t\r\n"
			   "#tok-not\n"
			   "\n"
			   "%s\r\n"
			   TOK_A,
			   longest) >= 0);
	char *tokens = write_secret("tokens", text, 0600);
	char *conf = NULL;
	cr_assert(asprintf(&conf,
			   KE_HEAD "accepted-pool-authentication-tokens = [\"tok-1\", \"%s\"]\n"
				   "accepted-pool-authentication-tokens-path = \"%s\"\n",
			   longest, tokens) >= 0);
	char *path = write_file("ntp.toml", conf);
	struct config_daemon c;
	char err[1024];
	cr_assert_eq(config_daemon_load(path, &c, err, sizeof(err)), 0, "%s", err);
	const struct config_daemon_nts_ke_server *k = &c.nts_ke_servers[0];
	cr_assert_eq(k->accepted_pool_authentication_token_count, 2);
	cr_assert_str_eq(k->accepted_pool_authentication_tokens[0], "tok-1");
	cr_assert_str_eq(k->accepted_pool_authentication_tokens[1], longest);
	cr_assert_str_eq(k->accepted_pool_authentication_tokens_path, tokens);
	cr_assert_eq(k->tokens_path_line, 6);

	struct pool_tokens *t = NULL;
	cr_assert_eq(config_daemon_load_tokens(k, path, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(t);
	cr_assert_eq(pool_tokens_count(t), 4, "tok-1, tok-2, the 255-byte one and TOK_A");
	const char *const yes[] = { "tok-1", "tok-2", longest, TOK_A };
	for (size_t i = 0; i < 4; i++)
		cr_assert(pool_tokens_accepts(t, yes[i], strlen(yes[i])), "token %zu", i);
	const char *const no[] = { "tok-1\r", "#tok-not", "tok-not", "tok-", "tok-3", "" };
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
		cr_assert_not(pool_tokens_accepts(t, no[i], strlen(no[i])), "'%s'", no[i]);
	pool_tokens_unref(t);

	/* Re-read (SIGHUP): the file's new content is what counts. */
	FILE *f = fopen(tokens, "w");
	cr_assert(f);
	cr_assert(fputs("tok-3\n", f) >= 0);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(config_daemon_load_tokens(k, path, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(pool_tokens_count(t), 3);
	cr_assert(pool_tokens_accepts(t, "tok-3", 5));
	cr_assert_not(pool_tokens_accepts(t, "tok-2", 5));
	pool_tokens_unref(t);

	/* Removed in between: the reload fails with the option named, and no set comes out. */
	cr_assert_eq(unlink(tokens), 0);
	t = (struct pool_tokens *)&c; /* any non-NULL start value: *out must be written */
	cr_assert_eq(config_daemon_load_tokens(k, path, &t, err, sizeof(err)), -EINVAL);
	cr_assert_null(t);
	check_error(err, path, 6, "'accepted-pool-authentication-tokens-path' in [[nts-ke-server]]",
		    "No such file or directory");
	config_daemon_free(&c);
	free(path);
	free(conf);
	free(tokens);
	free(text);
	free(longest);
}

Test(config, daemon_inline_tokens_only)
{
	char *path = write_file("ntp.toml", KE_HEAD "accepted-pool-authentication-tokens = [\n"
						    "  \"" TOK_A "\",\n"
						    "  \"b\",\n"
						    "]\n");
	struct config_daemon c;
	char err[512];
	cr_assert_eq(config_daemon_load(path, &c, err, sizeof(err)), 0, "%s", err);
	const struct config_daemon_nts_ke_server *k = &c.nts_ke_servers[0];
	cr_assert_null(k->accepted_pool_authentication_tokens_path);
	struct pool_tokens *t = NULL;
	cr_assert_eq(config_daemon_load_tokens(k, path, &t, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(pool_tokens_count(t), 2);
	cr_assert(pool_tokens_accepts(t, "b", 1));
	cr_assert(pool_tokens_accepts(t, TOK_A, strlen(TOK_A)));
	pool_tokens_unref(t);
	config_daemon_free(&c);
	free(path);
}

/* A daemon configuration whose token file DIR/tokens holds text with the given mode. */
static void daemon_token_file_error(const char *text, mode_t mode, const char *needle,
				    const char *needle2)
{
	char *tokens = write_secret("tokens", text, mode);
	char *conf = NULL;
	cr_assert(asprintf(&conf, KE_HEAD "\naccepted-pool-authentication-tokens-path = \"%s\"\n",
			   tokens) >= 0);
	daemon_error(conf, 6, needle, needle2);
	cr_assert_eq(unlink(tokens), 0);
	free(conf);
	free(tokens);
}

Test(config, daemon_token_errors)
{
	static const char key[] = "'accepted-pool-authentication-tokens' in [[nts-ke-server]]";
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens = [\"ok\", \"a b\"]\n", 5, key,
		     "visible ASCII without spaces (byte 2 is 0x20)");
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens = [\"a\\tb\"]\n", 5, key,
		     "(byte 2 is 0x09)");
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens = [\"ab\\u007f\"]\n", 5, key,
		     "(byte 3 is 0x7f)");
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens = [\"caf\u00e9\"]\n", 5, key,
		     "(byte 4 is 0xc3)");
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens = [\"ok\", \"\"]\n", 5, key,
		     "must not be empty");
	char *big = repeat('x', 256), *conf = NULL;
	cr_assert(asprintf(&conf, KE_HEAD "accepted-pool-authentication-tokens = [\"%s\"]\n",
			   big) >= 0);
	daemon_error(conf, 5, key, "a token must be 1 to 255 bytes, not 256");
	free(conf);
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens = 5\n", 5,
		     "'accepted-pool-authentication-tokens' in [[nts-ke-server]] must be a "
		     "string or an array of strings, not integer",
		     NULL);
	daemon_error(KE_HEAD "accepted-pool-authentication-tokens-path = [\"f\"]\n", 5,
		     "'accepted-pool-authentication-tokens-path' in [[nts-ke-server]] must be a "
		     "string",
		     NULL);

	static const char path_key[] =
		"'accepted-pool-authentication-tokens-path' in [[nts-ke-server]]";
	char *missing = tu_path(dir, "absent-tokens");
	cr_assert(asprintf(&conf, KE_HEAD "\naccepted-pool-authentication-tokens-path = \"%s\"\n",
			   missing) >= 0);
	daemon_error(conf, 6, path_key, "No such file or directory");
	free(conf);
	free(missing);
	daemon_token_file_error("tok\n", 0644, path_key, "chmod 600");
	daemon_token_file_error("tok\n", 0640, path_key, "chmod 600");
	daemon_token_file_error("tok\n", 0604, path_key, "chmod 600");
	daemon_token_file_error("ok\n# fine\n\nbad token\n", 0600,
				"[[nts-ke-server]] (token file line 4)", "without spaces");
	char *text = NULL;
	cr_assert(asprintf(&text, "ok\n%s\n", big) >= 0);
	daemon_token_file_error(text, 0600, "(token file line 2)", "not 256");
	free(text);
	free(big);

	/* A directory is no token file, whatever its mode. */
	char *sub = tu_path(dir, "tokens.d");
	cr_assert_eq(mkdir(sub, 0700), 0);
	cr_assert(asprintf(&conf, KE_HEAD "\naccepted-pool-authentication-tokens-path = \"%s\"\n",
			   sub) >= 0);
	daemon_error(conf, 6, path_key, "is not a regular file");
	free(conf);
	free(sub);

	/* Nor is a FIFO, and opening one must not wait for a writer (it would block the loop on
	 * SIGHUP): refused at once. */
	char *fifo = tu_path(dir, "tokens.fifo");
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	cr_assert(asprintf(&conf, KE_HEAD "\naccepted-pool-authentication-tokens-path = \"%s\"\n",
			   fifo) >= 0);
	daemon_error(conf, 6, path_key, "is not a regular file");
	free(conf);
	free(fifo);
}

/* One past POOL_TOKENS_MAX distinct tokens, "t0" up to "t4096", each followed by sep. */
static char *many_tokens(const char *quote, const char *sep)
{
	size_t cap = (size_t)(POOL_TOKENS_MAX + 1) * 12;
	char *text = malloc(cap);
	cr_assert(text);
	size_t n = 0;
	for (int i = 0; i <= POOL_TOKENS_MAX; i++)
		n += (size_t)snprintf(text + n, cap - n, "%st%d%s%s", quote, i, quote, sep);
	return text;
}

Test(config, daemon_too_many_inline_tokens)
{
	/* Refused at load like every other configuration error: FILE:LINE and the option. */
	char *list = many_tokens("\"", ","), *conf = NULL;
	cr_assert(asprintf(&conf, KE_HEAD "accepted-pool-authentication-tokens = [%s]\n", list) >=
		  0);
	daemon_error(conf, 5, "'accepted-pool-authentication-tokens' in [[nts-ke-server]]",
		     "4096");
	free(conf);
	free(list);
}

Test(config, daemon_too_many_tokens_in_the_file)
{
	char *text = many_tokens("", "\n");
	daemon_token_file_error(text, 0600,
				"'accepted-pool-authentication-tokens-path' in [[nts-ke-server]]",
				"holds more than 4096 tokens");
	free(text);
}

Test(config, pool_upstream_tokens_and_numbering_read_back)
{
	char *tok_file = write_secret("b.token", "# b.test's token\r\n\r\n  " TOK_A " \r\n", 0600);
	char *conf = NULL;
	cr_assert(asprintf(&conf,
			   POOL_HEAD
			   "key-exchange-servers = [\n"
			   "  { domain = \"a.test\", authentication-token = \"tok-a\", "
			   "pool-record-numbers = \"ntpd-rs-v1\" },\n"
			   "  { domain = \"b.test\", authentication-token-path = \"%s\" },\n"
			   "  { domain = \"c.test\", pool-record-numbers = \"iana\" },\n"
			   "]\n",
			   tok_file) >= 0);
	char *path = write_file("pool.toml", conf);
	struct config_pool c;
	char err[1024];
	cr_assert_eq(config_pool_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.key_exchange_server_count, 3);
	const struct config_pool_upstream *u = c.key_exchange_servers;
	cr_assert_eq(u[0].numbering, KE_NUMBERING_NTPDRS_V1);
	cr_assert_str_eq(u[0].token, "tok-a");
	cr_assert_null(u[0].token_path);
	cr_assert_eq(u[1].numbering, KE_NUMBERING_IANA, "the broker's own by default");
	cr_assert_str_eq(u[1].token, TOK_A, "read from the file, blanks and comments dropped");
	cr_assert_str_eq(u[1].token_path, tok_file);
	cr_assert_eq(u[2].numbering, KE_NUMBERING_IANA);
	cr_assert_null(u[2].token);
	cr_assert_null(u[2].token_path);
	config_pool_free(&c);
	free(path);
	free(conf);

	/* The broker's numbering is every upstream's default, wherever the key is written. */
	path = write_file("pool.toml",
			  POOL_HEAD "key-exchange-servers = [\n"
				    "  { domain = \"a.test\" },\n"
				    "  { domain = \"b.test\", pool-record-numbers = \"iana\" },\n"
				    "]\n"
				    "pool-record-numbers = \"ntpd-rs-v1\"\n");
	cr_assert_eq(config_pool_load(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.pool_record_numbers, KE_NUMBERING_NTPDRS_V1);
	cr_assert_eq(c.key_exchange_servers[0].numbering, KE_NUMBERING_NTPDRS_V1);
	cr_assert_eq(c.key_exchange_servers[1].numbering, KE_NUMBERING_IANA);
	cr_assert_null(c.key_exchange_servers[0].token);
	config_pool_free(&c);
	free(path);
	free(tok_file);
}

/* A pool configuration whose only upstream reads its token from DIR/up.token. */
static void pool_token_file_error(const char *text, mode_t mode, const char *needle,
				  const char *needle2)
{
	char *tok_file = write_secret("up.token", text, mode);
	char *conf = NULL;
	cr_assert(asprintf(&conf,
			   POOL_HEAD
			   "key-exchange-servers = [\n"
			   "  { domain = \"a.test\" },\n"
			   "  { domain = \"b.test\", authentication-token-path = \"%s\" },\n"
			   "]\n",
			   tok_file) >= 0);
	pool_error(conf, 7, needle, needle2);
	cr_assert_eq(unlink(tok_file), 0);
	free(conf);
	free(tok_file);
}

Test(config, pool_token_errors)
{
	static const char entry[] = "[nts-pool-ke-server] key-exchange-servers entry";
	static const char path_key[] =
		"'authentication-token-path' in [nts-pool-ke-server] key-exchange-servers entry";
	pool_token_file_error("# nothing but a comment\n\n", 0600, path_key,
			      "must hold exactly one token, not 0");
	pool_token_file_error("", 0600, path_key, "must hold exactly one token, not 0");
	pool_token_file_error("tok-1\ntok-2\n", 0600, path_key,
			      "must hold exactly one token, not 2");
	pool_token_file_error("tok-1\n", 0644, path_key, "chmod 600");
	pool_token_file_error("bad\x01tok\n", 0600, path_key, "(byte 4 is 0x01)");
	pool_token_file_error("two words\n", 0600, path_key, "without spaces");
	char *big = repeat('y', 256);
	pool_token_file_error(big, 0600, path_key, "a token must be 1 to 255 bytes, not 256");

	char *conf = NULL;
	cr_assert(asprintf(&conf, POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", "
					    "authentication-token = \"%s\" }]\n",
			   big) >= 0);
	pool_error(conf, 5, "'authentication-token' in [nts-pool-ke-server] key-exchange-servers "
			    "entry", "not 256");
	free(conf);
	free(big);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", "
			     "authentication-token = \"\" }]\n",
		   5, "'authentication-token' in [nts-pool-ke-server] key-exchange-servers entry",
		   "must not be empty");
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", "
			     "authentication-token = \"a b\" }]\n",
		   5, "'authentication-token'", "(byte 2 is 0x20)");
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", "
			     "authentication-token = 5 }]\n",
		   5, "'authentication-token' in [nts-pool-ke-server] key-exchange-servers entry "
		      "must be a string", NULL);

	char *missing = tu_path(dir, "absent.token");
	cr_assert(asprintf(&conf, POOL_HEAD "[[nts-pool-ke-server.key-exchange-servers]]\n"
					    "domain = \"a.test\"\n"
					    "authentication-token-path = \"%s\"\n",
			   missing) >= 0);
	pool_error(conf, 7, path_key, "No such file or directory");
	free(conf);
	free(missing);

	char *sub = tu_path(dir, "token.d");
	cr_assert_eq(mkdir(sub, 0700), 0);
	cr_assert(asprintf(&conf, POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", "
					    "authentication-token-path = \"%s\" }]\n",
			   sub) >= 0);
	pool_error(conf, 5, path_key, "is not a regular file");
	free(conf);
	free(sub);

	pool_error(POOL_HEAD "[[nts-pool-ke-server.key-exchange-servers]]\n"
			     "domain = \"a.test\"\n"
			     "authentication-token = \"t\"\n"
			     "authentication-token-path = \"/nonexistent\"\n",
		   8, entry, "sets both 'authentication-token' and 'authentication-token-path'");
	pool_error(POOL_HEAD "key-exchange-servers = [\n"
			     "  { domain = \"a.test\" },\n"
			     "  { domain = \"b.test\", pool-record-numbers = \"v2\" },\n"
			     "]\n",
		   7, "'pool-record-numbers' in [nts-pool-ke-server] key-exchange-servers entry "
		      "must be one of \"iana\", \"ntpd-rs-v1\" (got \"v2\")",
		   NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", "
			     "pool-record-numbers = 1 }]\n",
		   5, "'pool-record-numbers' in [nts-pool-ke-server] key-exchange-servers entry "
		      "must be a string",
		   NULL);
}

Test(config, daemon_keyset_sync_observability_errors)
{
	daemon_error(SERVER_SOURCE "[keyset]\nstale-key-count = 1001\n", 5,
		     "'stale-key-count' in [keyset] must be between 0 and 1000 (got 1001)", NULL);
	daemon_error(SERVER_SOURCE "[keyset]\nkey-rotation-interval = 0\n", 5,
		     "'key-rotation-interval' in [keyset] must be between 1 and", NULL);
	daemon_error(SERVER_SOURCE "[keyset]\nkey-storage-path = 5\n", 5,
		     "'key-storage-path' in [keyset] must be a string, not integer", NULL);
	daemon_error(SERVER_SOURCE "[synchronization]\nclock-control = \"no\"\n", 5,
		     "'clock-control' in [synchronization] must be true or false, not string",
		     NULL);
	daemon_error(SERVER_SOURCE "[synchronization]\nlocal-stratum = 0\n", 5,
		     "'local-stratum' in [synchronization] must be between 1 and 16 (got 0)", NULL);
	daemon_error(SERVER_SOURCE "[synchronization]\nminimum-agreeing-sources = 0\n", 5,
		     "'minimum-agreeing-sources'", "(got 0)");
	daemon_error(SERVER_SOURCE "[synchronization]\nsingle-step-panic-threshold = -1.0\n", 5,
		     "'single-step-panic-threshold' in [synchronization] must be between", NULL);
	daemon_error(SERVER_SOURCE "[synchronization]\nsingle-step-panic-threshold = -inf\n", 5,
		     "'single-step-panic-threshold'", "must be between");
	daemon_error(SERVER_SOURCE "[synchronization]\naccumulated-step-panic-threshold = \"1s\"\n",
		     5, "must be a number, not string", NULL);
	daemon_error(SERVER_SOURCE "[synchronization]\nstep-panic = 1\n", 5,
		     "unknown key 'step-panic' in [synchronization]; valid keys: local-stratum, "
		     "clock-control",
		     NULL);
	daemon_error(SERVER_SOURCE "[observability]\nlog-level = 3\n", 5,
		     "'log-level' in [observability] must be a string, not integer", NULL);
	daemon_error("observability = 3\n" SERVER_SOURCE, 1,
		     "'observability' must be a table ([observability]), not integer", NULL);
	daemon_error(SERVER_SOURCE "[clock]\n", 4, "unknown key 'clock'",
		     "valid keys: source, server, nts-ke-server, keyset, observability, "
		     "synchronization, daemon");
	daemon_error(SERVER_SOURCE "[daemon]\nworkers = 0\n", 5,
		     "'workers' in [daemon] must be between 1 and 256 (got 0)", NULL);
	daemon_error(SERVER_SOURCE "[daemon]\nthreads = 2\n", 5,
		     "unknown key 'threads' in [daemon]; valid keys: workers, user", NULL);
	daemon_error(SERVER_SOURCE "[daemon]\nuser = \"\"\n", 5,
		     "'user' in [daemon] must not be empty", NULL);
}

Test(config, strings_with_nul_are_rejected)
{
	pool_error("[nts-pool-ke-server]\nlisten = \"127.0.0.1:4460\"\n"
		   "certificate-chain-path = \"a\\u0000b\"\n",
		   3, "must not contain a NUL character", NULL);
}

/* ---- addresses ---- */

Test(config, parse_host_forms)
{
	struct config_host h;
	char why[256];
	cr_assert_eq(config_parse_host("ntp.test", 123, &h, why, sizeof(why)), 0, "%s", why);
	cr_assert_str_eq(h.host, "ntp.test");
	cr_assert_eq(h.port, 123);
	cr_assert_eq(h.is_ip, false);
	cr_assert_eq(config_parse_host("[fe80::1]", 4460, &h, why, sizeof(why)), 0, "%s", why);
	cr_assert_str_eq(h.host, "fe80::1");
	cr_assert_eq(h.port, 4460);
	cr_assert_eq(h.is_ip, true);
	cr_assert_eq(config_parse_host("192.0.2.1:99", 123, &h, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(h.port, 99);
	cr_assert_eq(h.is_ip, true);
	cr_assert_eq(config_parse_host("a.test:", 123, &h, why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "empty port"), "%s", why);
	cr_assert_eq(config_parse_host("", 123, &h, why, sizeof(why)), -EINVAL);
	cr_assert_eq(config_parse_host("[]:1", 123, &h, why, sizeof(why)), -EINVAL);
	cr_assert_eq(config_parse_host("under_score.test", 1, &h, why, sizeof(why)), 0);
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cr_assert_eq(config_parse_host(longname, 1, &h, why, sizeof(why)), -EINVAL);
}

Test(config, host_equality)
{
	struct config_host a, b;
	char why[256];
	cr_assert_eq(config_parse_host("[2001:db8::1]:5", 1, &a, why, sizeof(why)), 0);
	cr_assert_eq(config_parse_host("[2001:0db8:0::1]:5", 1, &b, why, sizeof(why)), 0);
	cr_assert(config_host_equal(&a, &b));
	cr_assert_eq(config_parse_host("[2001:db8::1]:6", 1, &b, why, sizeof(why)), 0);
	cr_assert_not(config_host_equal(&a, &b));
	cr_assert_eq(config_parse_host("127.0.0.1:5", 1, &a, why, sizeof(why)), 0);
	cr_assert_eq(config_parse_host("[::ffff:127.0.0.1]:5", 1, &b, why, sizeof(why)), 0);
	cr_assert_not(config_host_equal(&a, &b));
	cr_assert_eq(config_parse_host("NTP.test", 1, &a, why, sizeof(why)), 0);
	cr_assert_eq(config_parse_host("ntp.TEST", 1, &b, why, sizeof(why)), 0);
	cr_assert(config_host_equal(&a, &b));
}

/* ---- ntp-ctl validate ---- */

Test(config, validate_picks_the_program)
{
	char err[512];
	char *pool = write_file("pool.toml", POOL_MINIMAL);
	cr_assert_eq(config_validate_file(pool, err, sizeof(err)), CONFIG_VALIDATE_POOL, "%s",
		     err);
	char *daemon = write_file("ntp.toml", KE_HEAD);
	cr_assert_eq(config_validate_file(daemon, err, sizeof(err)), CONFIG_VALIDATE_DAEMON, "%s",
		     err);
	free(pool);
	free(daemon);
}

Test(config, validate_reports_errors_of_the_right_program)
{
	char err[512];
	char *pool = write_file("pool.toml", POOL_HEAD);
	cr_assert_eq(config_validate_file(pool, err, sizeof(err)), -EINVAL);
	check_error(err, pool, 1, "[nts-pool-ke-server] is missing required key "
				  "'key-exchange-servers'",
		    NULL);
	char *daemon = write_file("ntp.toml", SERVER_SOURCE "[[server]]\nlisten = \"[::1\"\n");
	cr_assert_eq(config_validate_file(daemon, err, sizeof(err)), -EINVAL);
	check_error(err, daemon, 5, "'listen' in [[server]]: unterminated '['", NULL);
	char *empty = write_file("empty.toml", "# nothing\n");
	cr_assert_eq(config_validate_file(empty, err, sizeof(err)), -EINVAL);
	check_error(err, empty, 1, "nothing to do", NULL);
	free(pool);
	free(daemon);
	free(empty);
}

/* A directory passed as the configuration is named as such, not as a read error. */
Test(config, directory_as_configuration_file)
{
	char err[512] = "";
	struct toml_value *root = NULL;
	cr_assert_eq(config_parse_file(dir, &root, err, sizeof(err)), -EISDIR);
	cr_assert_null(root);
	char want[1024];
	snprintf(want, sizeof(want), "%s: is a directory, not a configuration file", dir);
	cr_assert_str_eq(err, want);
	cr_assert_eq(load_daemon(dir, err, sizeof(err)), -EISDIR);
	cr_assert_str_eq(err, want);
	cr_assert_eq(load_pool(dir, err, sizeof(err)), -EISDIR);
	cr_assert_str_eq(err, want);
	cr_assert_eq(config_validate_file(dir, err, sizeof(err)), -EISDIR);
	cr_assert_str_eq(err, want);
}
