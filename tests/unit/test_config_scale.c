/* The configuration keys of the scale-out features: the PROXY protocol and its allowed senders,
 * the country database, regions ([[region]] and per-upstream names), health hysteresis and the
 * per-client rate limit, in pool.toml and in the daemon's [[nts-ke-server]]. Each is read back,
 * defaulted, and refused out of range with the line that is wrong. Key and certificate files
 * are opened only when a program starts, so none exist here. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config_daemon.h"
#include "config_pool.h"
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

TestSuite(config_scale, .init = setup, .fini = teardown);

static char *write_file(const char *name, const char *text)
{
	return tu_write_file(dir, name, text);
}

/* err is "PATH:LINE: " followed by a message containing needle (and needle2 unless NULL). */
static void check_error(const char *err, const char *path, int line, const char *needle,
			const char *needle2)
{
	char prefix[1024];
	snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "error '%s' lacks prefix '%s'", err,
		  prefix);
	cr_assert(strstr(err, needle), "error '%s' lacks '%s'", err, needle);
	if (needle2)
		cr_assert(strstr(err, needle2), "error '%s' lacks '%s'", err, needle2);
}

static void pool_ok(const char *text, struct config_pool *c)
{
	char *path = write_file("pool.toml", text);
	char err[1024] = "";
	cr_assert_eq(config_pool_load(path, c, err, sizeof err), 0, "%s\nfor:\n%s", err, text);
	free(path);
}

static void pool_error(const char *text, int line, const char *needle, const char *needle2)
{
	char *path = write_file("pool.toml", text);
	struct config_pool c;
	char err[1024] = "";
	int r = config_pool_load(path, &c, err, sizeof err);
	cr_assert_eq(r, -EINVAL, "load returned %d (%s) for:\n%s", r, err, text);
	check_error(err, path, line, needle, needle2);
	cr_assert_null(c.listen);
	cr_assert_null(c.proxy_protocol_from);
	cr_assert_null(c.regions);
	cr_assert_null(c.key_exchange_servers);
	config_pool_free(&c);
	free(path);
}

static void daemon_ok(const char *text, struct config_daemon *c)
{
	char *path = write_file("ntp.toml", text);
	char err[1024] = "";
	cr_assert_eq(config_daemon_load(path, c, err, sizeof err), 0, "%s\nfor:\n%s", err, text);
	free(path);
}

static void daemon_error(const char *text, int line, const char *needle, const char *needle2)
{
	char *path = write_file("ntp.toml", text);
	struct config_daemon c;
	char err[1024] = "";
	int r = config_daemon_load(path, &c, err, sizeof err);
	cr_assert_eq(r, -EINVAL, "load returned %d (%s) for:\n%s", r, err, text);
	check_error(err, path, line, needle, needle2);
	cr_assert_null(c.nts_ke_servers);
	config_daemon_free(&c);
	free(path);
}

/* Lines 1-5; what a test appends to the table starts at line 6. */
#define POOL_MINIMAL                                     \
	"[nts-pool-ke-server]\n"                         \
	"listen = \"127.0.0.1:4460\"\n"                  \
	"certificate-chain-path = \"pool.chain.pem\"\n" \
	"private-key-path = \"pool.key\"\n"              \
	"key-exchange-servers = [{ domain = \"a.test\" }]\n"

/* Lines 1-4, then key-exchange-servers on line 5 from the test. */
#define POOL_HEAD                                        \
	"[nts-pool-ke-server]\n"                         \
	"listen = \"127.0.0.1:4460\"\n"                  \
	"certificate-chain-path = \"pool.chain.pem\"\n" \
	"private-key-path = \"pool.key\"\n"

/* Lines 1-4; what a test appends starts at line 5. */
#define KE_HEAD                               \
	"[[nts-ke-server]]\n"                  \
	"listen = \"127.0.0.1:4460\"\n"        \
	"certificate-chain-path = \"c.pem\"\n" \
	"private-key-path = \"k.pem\"\n"

static void check_cidr(const struct cidr *c, int family, unsigned bits, const char *addr)
{
	uint8_t want[16] = { 0 };
	cr_assert_eq(inet_pton(family, addr, want), 1);
	cr_assert_eq(c->family, family);
	cr_assert_eq(c->bits, bits);
	cr_assert_arr_eq(c->addr, want, family == AF_INET ? 4 : 16, "prefix %s", addr);
}

static void check_rate_defaults(const struct config_rate_limit *r)
{
	cr_assert_eq(r->rate, 0.0, "off by default");
	cr_assert_eq(r->burst, 20);
	cr_assert_eq(r->clients, 65536);
	cr_assert_eq(r->v4_bits, 32);
	cr_assert_eq(r->v6_bits, 64);
}

/* ---- nts-pool-ke ---- */

Test(config_scale, pool_defaults)
{
	struct config_pool c;
	pool_ok(POOL_MINIMAL, &c);
	cr_assert_eq(c.proxy_protocol, false);
	cr_assert_null(c.proxy_protocol_from);
	cr_assert_eq(c.proxy_protocol_from_count, 0);
	cr_assert_null(c.geoip_database_path);
	cr_assert_eq(c.min_region_servers, 1);
	cr_assert_eq(c.healthy_after_passes, 2);
	cr_assert_eq(c.unhealthy_after_failures, 2);
	check_rate_defaults(&c.rate_limit);
	cr_assert_eq(c.region_count, 0);
	cr_assert_eq(c.key_exchange_servers[0].region_count, 0);
	cr_assert_null(c.key_exchange_servers[0].regions);
	config_pool_free(&c);
}

Test(config_scale, pool_proxy_protocol_from_one_string)
{
	struct config_pool c;
	pool_ok(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = \"10.0.0.0/8\"\n", &c);
	cr_assert_eq(c.proxy_protocol, true);
	cr_assert_eq(c.proxy_protocol_from_count, 1);
	check_cidr(&c.proxy_protocol_from[0], AF_INET, 8, "10.0.0.0");
	config_pool_free(&c);

	pool_ok(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = \"2001:db8:1::/48\"\n",
		&c);
	cr_assert_eq(c.proxy_protocol_from_count, 1);
	check_cidr(&c.proxy_protocol_from[0], AF_INET6, 48, "2001:db8:1::");
	config_pool_free(&c);
}

Test(config_scale, pool_proxy_protocol_from_array)
{
	struct config_pool c;
	pool_ok(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\"192.0.2.7\", \"198.51.100.0/24\", \"::1\",\n"
			     "  \"2001:DB8::/32\", \"::ffff:203.0.113.0/120\"]\n",
		&c);
	cr_assert_eq(c.proxy_protocol_from_count, 5);
	check_cidr(&c.proxy_protocol_from[0], AF_INET, 32, "192.0.2.7");
	check_cidr(&c.proxy_protocol_from[1], AF_INET, 24, "198.51.100.0");
	check_cidr(&c.proxy_protocol_from[2], AF_INET6, 128, "::1");
	check_cidr(&c.proxy_protocol_from[3], AF_INET6, 32, "2001:db8::");
	/* An IPv4-mapped prefix is its IPv4 prefix. */
	check_cidr(&c.proxy_protocol_from[4], AF_INET, 24, "203.0.113.0");
	config_pool_free(&c);
}

Test(config_scale, pool_proxy_protocol_needs_both_keys)
{
	pool_error(POOL_MINIMAL "max-connections = 10\nproxy-protocol = true\n", 7,
		   "proxy-protocol = true in [nts-pool-ke-server] needs 'proxy-protocol-from'",
		   NULL);
	pool_error(POOL_MINIMAL "proxy-protocol-from = [\"10.0.0.0/8\"]\n", 6,
		   "'proxy-protocol-from' in [nts-pool-ke-server] has no effect without "
		   "proxy-protocol = true",
		   NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = false\nproxy-protocol-from = \"10.0.0.0/8\"\n", 7,
		   "has no effect without proxy-protocol = true", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = []\n", 7,
		   "'proxy-protocol-from' in [nts-pool-ke-server] must list at least 1 entry",
		   NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = \"yes\"\n", 6,
		   "'proxy-protocol' in [nts-pool-ke-server] must be true or false", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = 10\n", 7,
		   "must be a string or an array of strings, not integer", NULL);
}

/* A bad element of a list written over several lines is reported at its own line. */
Test(config_scale, pool_bad_prefix_names_its_line_and_reason)
{
	pool_error(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\n"
			     "  \"10.0.0.0/8\",\n"
			     "  \"10.0.0.0/33\",\n"
			     "]\n",
		   9, "'proxy-protocol-from' in [nts-pool-ke-server]: \"10.0.0.0/33\": "
		      "an IPv4 prefix length is at most 32",
		   NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\n"
			     "  \"2001:db8::/32\",\n"
			     "  \"2001:db8::/129\",\n"
			     "]\n",
		   9, "\"2001:db8::/129\": an IPv6 prefix length is at most 128", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\"10.0.0.0/8\",\n"
			     "  \"lb.example\"]\n",
		   8, "\"lb.example\": not an IP address or prefix", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = \"10.0.0.0/x\"\n", 7,
		   "\"10.0.0.0/x\": the prefix length is not a number", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = \"10.0.0.0/8 \"\n",
		   7, "\"10.0.0.0/8 \": text after the prefix length", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = \"fe80::1%eth0\"\n",
		   7, "'proxy-protocol-from' in [nts-pool-ke-server]: \"fe80::1%eth0\"", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\"10.0.0.0/8\", 1]\n",
		   7, "'proxy-protocol-from' in [nts-pool-ke-server] must be a string, not integer",
		   NULL);
}

Test(config_scale, pool_prefix_with_host_bits_set)
{
	pool_error(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\n"
			     "  \"192.0.2.0/24\",\n"
			     "  \"192.0.2.1/24\",\n"
			     "]\n",
		   9, "\"192.0.2.1/24\": address bits are set past the prefix length", NULL);
	pool_error(POOL_MINIMAL "proxy-protocol = true\nproxy-protocol-from = \"2001:db8::1/64\"\n",
		   7, "\"2001:db8::1/64\": address bits are set past the prefix length", NULL);
	/* The boundary: the last bit inside the prefix may be set, and /0 is everything. */
	struct config_pool c;
	pool_ok(POOL_MINIMAL "proxy-protocol = true\n"
			     "proxy-protocol-from = [\"192.0.2.128/25\", \"0.0.0.0/0\",\n"
			     "  \"::/0\"]\n",
		&c);
	check_cidr(&c.proxy_protocol_from[0], AF_INET, 25, "192.0.2.128");
	check_cidr(&c.proxy_protocol_from[1], AF_INET, 0, "0.0.0.0");
	check_cidr(&c.proxy_protocol_from[2], AF_INET6, 0, "::");
	config_pool_free(&c);
}

Test(config_scale, pool_geoip_and_hysteresis_read_back)
{
	struct config_pool c;
	pool_ok(POOL_MINIMAL "geoip-database-path = \"/var/lib/GeoIP/GeoLite2-Country.mmdb\"\n"
			     "min-region-servers = 3\n"
			     "healthy-after-passes = 5\n"
			     "unhealthy-after-failures = 7\n",
		&c);
	cr_assert_str_eq(c.geoip_database_path, "/var/lib/GeoIP/GeoLite2-Country.mmdb");
	cr_assert_eq(c.min_region_servers, 3);
	cr_assert_eq(c.healthy_after_passes, 5);
	cr_assert_eq(c.unhealthy_after_failures, 7);
	config_pool_free(&c);

	/* The ends of the ranges. */
	pool_ok(POOL_MINIMAL "min-region-servers = 256\nhealthy-after-passes = 1\n"
			     "unhealthy-after-failures = 100\n",
		&c);
	cr_assert_eq(c.min_region_servers, 256);
	cr_assert_eq(c.healthy_after_passes, 1);
	cr_assert_eq(c.unhealthy_after_failures, 100);
	config_pool_free(&c);

	pool_error(POOL_MINIMAL "geoip-database-path = 1\n", 6,
		   "'geoip-database-path' in [nts-pool-ke-server] must be a string", NULL);
}

Test(config_scale, pool_hysteresis_out_of_range)
{
	pool_error(POOL_MINIMAL "min-region-servers = 0\n", 6,
		   "'min-region-servers' in [nts-pool-ke-server] must be between 1 and 256 (got 0)",
		   NULL);
	pool_error(POOL_MINIMAL "min-region-servers = 257\n", 6, "'min-region-servers'",
		   "(got 257)");
	pool_error(POOL_MINIMAL "healthy-after-passes = 0\n", 6,
		   "'healthy-after-passes' in [nts-pool-ke-server] must be between 1 and 100 "
		   "(got 0)",
		   NULL);
	pool_error(POOL_MINIMAL "healthy-after-passes = 101\n", 6, "'healthy-after-passes'",
		   "(got 101)");
	pool_error(POOL_MINIMAL "unhealthy-after-failures = 0\n", 6,
		   "'unhealthy-after-failures' in [nts-pool-ke-server] must be between 1 and 100 "
		   "(got 0)",
		   NULL);
	pool_error(POOL_MINIMAL "unhealthy-after-failures = 101\n", 6,
		   "'unhealthy-after-failures'", "(got 101)");
	pool_error(POOL_MINIMAL "min-region-servers = 1.5\n", 6, "'min-region-servers'",
		   "must be an integer");
}

Test(config_scale, pool_rate_limit_read_back)
{
	struct config_pool c;
	pool_ok(POOL_MINIMAL "rate-limit-per-second = 2.5\n"
			     "rate-limit-burst = 5\n"
			     "rate-limit-clients = 1000\n"
			     "rate-limit-ipv4-prefix = 24\n"
			     "rate-limit-ipv6-prefix = 48\n",
		&c);
	cr_assert_float_eq(c.rate_limit.rate, 2.5, 1e-12);
	cr_assert_eq(c.rate_limit.burst, 5);
	cr_assert_eq(c.rate_limit.clients, 1000);
	cr_assert_eq(c.rate_limit.v4_bits, 24);
	cr_assert_eq(c.rate_limit.v6_bits, 48);
	config_pool_free(&c);

	/* An integer rate, and the ends of every range. */
	pool_ok(POOL_MINIMAL "rate-limit-per-second = 1000000\nrate-limit-burst = 1000000\n"
			     "rate-limit-clients = 16777216\nrate-limit-ipv4-prefix = 8\n"
			     "rate-limit-ipv6-prefix = 128\n",
		&c);
	cr_assert_float_eq(c.rate_limit.rate, 1e6, 1e-6);
	cr_assert_eq(c.rate_limit.burst, 1000000);
	cr_assert_eq(c.rate_limit.clients, 16777216);
	cr_assert_eq(c.rate_limit.v4_bits, 8);
	cr_assert_eq(c.rate_limit.v6_bits, 128);
	config_pool_free(&c);

	pool_ok(POOL_MINIMAL "rate-limit-per-second = 0.001\nrate-limit-burst = 1\n"
			     "rate-limit-clients = 16\nrate-limit-ipv4-prefix = 32\n"
			     "rate-limit-ipv6-prefix = 16\n",
		&c);
	cr_assert_float_eq(c.rate_limit.rate, 0.001, 1e-15);
	cr_assert_eq(c.rate_limit.burst, 1);
	cr_assert_eq(c.rate_limit.clients, 16);
	cr_assert_eq(c.rate_limit.v6_bits, 16);
	config_pool_free(&c);

	/* 0 written out is off, like the default. */
	pool_ok(POOL_MINIMAL "rate-limit-per-second = 0\n", &c);
	check_rate_defaults(&c.rate_limit);
	config_pool_free(&c);
}

Test(config_scale, pool_rate_limit_out_of_range)
{
	pool_error(POOL_MINIMAL "rate-limit-per-second = 0.0005\n", 6,
		   "'rate-limit-per-second' in [nts-pool-ke-server] must be 0 (off) or at least "
		   "0.001",
		   NULL);
	pool_error(POOL_MINIMAL "max-connections = 9\nrate-limit-per-second = 1e-9\n", 7,
		   "must be 0 (off) or at least 0.001", NULL);
	pool_error(POOL_MINIMAL "rate-limit-per-second = -1\n", 6,
		   "'rate-limit-per-second' in [nts-pool-ke-server] must be between 0 and 1e+06 "
		   "(got -1)",
		   NULL);
	pool_error(POOL_MINIMAL "rate-limit-per-second = 1000001\n", 6,
		   "'rate-limit-per-second'", "(got 1e+06)");
	pool_error(POOL_MINIMAL "rate-limit-per-second = nan\n", 6, "'rate-limit-per-second'",
		   "must be between 0 and");
	pool_error(POOL_MINIMAL "rate-limit-per-second = inf\n", 6, "'rate-limit-per-second'",
		   "must be between 0 and");
	pool_error(POOL_MINIMAL "rate-limit-per-second = \"5\"\n", 6,
		   "'rate-limit-per-second' in [nts-pool-ke-server] must be a number, not string",
		   NULL);
	pool_error(POOL_MINIMAL "rate-limit-burst = 0\n", 6,
		   "'rate-limit-burst' in [nts-pool-ke-server] must be between 1 and 1000000 "
		   "(got 0)",
		   NULL);
	pool_error(POOL_MINIMAL "rate-limit-burst = 1000001\n", 6, "'rate-limit-burst'",
		   "(got 1000001)");
	pool_error(POOL_MINIMAL "rate-limit-clients = 15\n", 6,
		   "'rate-limit-clients' in [nts-pool-ke-server] must be between 16 and 16777216 "
		   "(got 15)",
		   NULL);
	pool_error(POOL_MINIMAL "rate-limit-clients = 16777217\n", 6, "'rate-limit-clients'",
		   "(got 16777217)");
	pool_error(POOL_MINIMAL "rate-limit-ipv4-prefix = 7\n", 6,
		   "'rate-limit-ipv4-prefix' in [nts-pool-ke-server] must be between 8 and 32 "
		   "(got 7)",
		   NULL);
	pool_error(POOL_MINIMAL "rate-limit-ipv4-prefix = 33\n", 6, "'rate-limit-ipv4-prefix'",
		   "(got 33)");
	pool_error(POOL_MINIMAL "rate-limit-ipv6-prefix = 15\n", 6,
		   "'rate-limit-ipv6-prefix' in [nts-pool-ke-server] must be between 16 and 128 "
		   "(got 15)",
		   NULL);
	pool_error(POOL_MINIMAL "rate-limit-ipv6-prefix = 129\n", 6, "'rate-limit-ipv6-prefix'",
		   "(got 129)");
}

/* Two regions after the server table: the first [[region]] is on line 6. */
Test(config_scale, pool_regions_read_back)
{
	struct config_pool c;
	pool_ok(POOL_MINIMAL "[[region]]\n"
			     "name = \"LAN\"\n"
			     "prefixes = [\"192.168.0.0/16\", \"fd00::/8\"]\n"
			     "\n"
			     "[[region]]\n"
			     "name = \"Office-2.b_x\"\n"
			     "prefixes = \"10.1.2.0/24\"\n",
		&c);
	cr_assert_eq(c.region_count, 2);
	cr_assert_str_eq(c.regions[0].name, "lan");
	cr_assert_eq(c.regions[0].line, 6);
	cr_assert_eq(c.regions[0].prefix_count, 2);
	check_cidr(&c.regions[0].prefixes[0], AF_INET, 16, "192.168.0.0");
	check_cidr(&c.regions[0].prefixes[1], AF_INET6, 8, "fd00::");
	cr_assert_str_eq(c.regions[1].name, "office-2.b_x");
	cr_assert_eq(c.regions[1].line, 10);
	cr_assert_eq(c.regions[1].prefix_count, 1);
	check_cidr(&c.regions[1].prefixes[0], AF_INET, 24, "10.1.2.0");
	/* The server table is untouched by what follows it. */
	cr_assert_eq(c.key_exchange_server_count, 1);
	config_pool_free(&c);

	/* A region may stand before the server table. */
	pool_ok("[[region]]\nname = \"x\"\nprefixes = \"::/0\"\n" POOL_MINIMAL, &c);
	cr_assert_eq(c.region_count, 1);
	cr_assert_str_eq(c.regions[0].name, "x");
	cr_assert_eq(c.regions[0].line, 1);
	config_pool_free(&c);
}

Test(config_scale, pool_region_errors)
{
	/* The same name in another case is the same region: reported at the second, naming the
	 * first. */
	pool_error(POOL_MINIMAL "[[region]]\nname = \"lan\"\nprefixes = \"10.0.0.0/8\"\n"
			     "[[region]]\nname = \"LAN\"\nprefixes = \"10.1.0.0/16\"\n",
		   9, "duplicate [[region]] 'lan' (first at line 6)", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = \"lan\"\n", 6,
		   "[[region]] 'lan' is missing required key 'prefixes'", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nprefixes = \"10.0.0.0/8\"\n", 6,
		   "[[region]] is missing required key 'name'", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nprefixes = \"10.0.0.0/8\"\nname = \"a b\"\n", 8,
		   "'name' in [[region]]: \"a b\" is not a region name", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = \"\"\nprefixes = \"10.0.0.0/8\"\n", 7,
		   "'name' in [[region]] must not be empty", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = \"é\"\nprefixes = \"10.0.0.0/8\"\n", 7,
		   "is not a region name", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = \"lan\"\nprefixes = \"10.0.0.0/8\"\n"
			     "country = \"de\"\n",
		   9, "unknown key 'country' in [[region]]; valid keys: name, prefixes", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = \"lan\"\nprefixes = []\n", 8,
		   "'prefixes' in [[region]] must list at least 1 entry", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = \"lan\"\nprefixes = [\n\"10.0.0.0/8\",\n"
			     "\"10.0.0.1/8\"]\n",
		   10, "'prefixes' in [[region]]: \"10.0.0.1/8\": address bits are set", NULL);
	pool_error(POOL_MINIMAL "[[region]]\nname = 5\nprefixes = \"10.0.0.0/8\"\n", 7,
		   "'name' in [[region]] must be a string", NULL);
	pool_error(POOL_MINIMAL "[region]\nname = \"lan\"\nprefixes = \"10.0.0.0/8\"\n", 6,
		   "'region' must be an array of tables ([[region]]), not table", NULL);
}

Test(config_scale, pool_region_name_length)
{
	char name[70];
	memset(name, 'a', 63);
	name[63] = '\0';
	char text[512];
	snprintf(text, sizeof text, POOL_MINIMAL "[[region]]\nname = \"%s\"\nprefixes = \"::/0\"\n",
		 name);
	struct config_pool c;
	pool_ok(text, &c);
	cr_assert_str_eq(c.regions[0].name, name);
	config_pool_free(&c);
	snprintf(text, sizeof text,
		 POOL_MINIMAL "[[region]]\nname = \"%sa\"\nprefixes = \"::/0\"\n", name);
	pool_error(text, 7, "is not a region name (1-63 letters", NULL);
}

Test(config_scale, pool_upstream_regions)
{
	struct config_pool c;
	pool_ok(POOL_HEAD "key-exchange-servers = [\n"
			  "  { domain = \"a.test\", regions = [\"EU\", \"de\"] },\n"
			  "  { domain = \"b.test\", regions = \"Lan\" },\n"
			  "  { domain = \"c.test\", regions = [] },\n"
			  "]\n",
		&c);
	cr_assert_eq(c.key_exchange_server_count, 3);
	const struct config_pool_upstream *u = c.key_exchange_servers;
	cr_assert_eq(u[0].region_count, 2);
	cr_assert_str_eq(u[0].regions[0], "eu");
	cr_assert_str_eq(u[0].regions[1], "de");
	cr_assert_eq(u[1].region_count, 1);
	cr_assert_str_eq(u[1].regions[0], "lan");
	cr_assert_eq(u[2].region_count, 0);
	config_pool_free(&c);

	/* 16 is the most one upstream may name. */
	char list[512] = "";
	for (int i = 0; i < 16; i++)
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"r%d\"",
			 i ? ", " : "", i);
	char text[1024];
	snprintf(text, sizeof text, POOL_HEAD "key-exchange-servers = [\n"
					      "  { domain = \"a.test\", regions = [%s] },\n]\n",
		 list);
	pool_ok(text, &c);
	cr_assert_eq(c.key_exchange_servers[0].region_count, 16);
	cr_assert_str_eq(c.key_exchange_servers[0].regions[15], "r15");
	config_pool_free(&c);

	snprintf(text, sizeof text,
		 POOL_HEAD "key-exchange-servers = [\n"
			   "  { domain = \"a.test\", regions = [%s, \"r16\"] },\n]\n",
		 list);
	pool_error(text, 6, "'regions' in [nts-pool-ke-server] key-exchange-servers entry lists 17 "
			    "regions; at most 16",
		   NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [\n"
			     "  { domain = \"a.test\" },\n"
			     "  { domain = \"b.test\", regions = [\"eu\", \"north america\"] },\n"
			     "]\n",
		   7, "'regions' in [nts-pool-ke-server] key-exchange-servers entry: "
		      "\"north america\" is not a region name",
		   NULL);
	/* A code both a country and a continent have must say which. */
	pool_ok(POOL_HEAD "key-exchange-servers = [\n"
			  "  { domain = \"a.test\", regions = [\"Country:NA\", \"continent:af\", "
			  "\"region:lab\"] },\n]\n",
		&c);
	u = c.key_exchange_servers;
	cr_assert_str_eq(u[0].regions[0], "country:na");
	cr_assert_str_eq(u[0].regions[1], "continent:af");
	cr_assert_str_eq(u[0].regions[2], "region:lab");
	config_pool_free(&c);
	static const char *const both[] = { "na", "SA", "as", "af" };
	for (size_t i = 0; i < 4; i++) {
		char want[256];
		snprintf(text, sizeof text,
			 POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", regions = "
				   "[\"%s\"] }]\n",
			 both[i]);
		char lower[3] = { (char)(both[i][0] | 0x20), (char)(both[i][1] | 0x20), 0 };
		snprintf(want, sizeof want,
			 "\"%s\" is both a country's and a continent's code; write "
			 "\"country:%s\" or \"continent:%s\"",
			 lower, lower, lower);
		pool_error(text, 5, want, NULL);
	}
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", regions = "
			     "[\"planet:earth\"] }]\n",
		   5, "\"planet:earth\" is not a region name", NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", regions = "
			     "[\"country:\"] }]\n",
		   5, "\"country:\" is not a region name", NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", regions = [\"\"] }]\n",
		   5, "'regions' in [nts-pool-ke-server] key-exchange-servers entry must not be "
		      "empty",
		   NULL);
	pool_error(POOL_HEAD "key-exchange-servers = [{ domain = \"a.test\", regions = [1] }]\n", 5,
		   "'regions' in [nts-pool-ke-server] key-exchange-servers entry must be a string",
		   NULL);
}

/* ---- ntp-daemon ---- */

Test(config_scale, daemon_ke_server_rate_limit)
{
	struct config_daemon c;
	daemon_ok(KE_HEAD, &c);
	cr_assert_eq(c.nts_ke_server_count, 1);
	check_rate_defaults(&c.nts_ke_servers[0].rate_limit);
	config_daemon_free(&c);

	daemon_ok(KE_HEAD "rate-limit-per-second = 0.5\n"
			  "rate-limit-burst = 3\n"
			  "rate-limit-clients = 4096\n"
			  "rate-limit-ipv4-prefix = 28\n"
			  "rate-limit-ipv6-prefix = 56\n"
			  "[[nts-ke-server]]\n"
			  "listen = \"127.0.0.1:4461\"\n"
			  "certificate-chain-path = \"c.pem\"\n"
			  "private-key-path = \"k.pem\"\n"
			  "rate-limit-burst = 9\n",
		  &c);
	cr_assert_eq(c.nts_ke_server_count, 2);
	const struct config_rate_limit *r = &c.nts_ke_servers[0].rate_limit;
	cr_assert_float_eq(r->rate, 0.5, 1e-12);
	cr_assert_eq(r->burst, 3);
	cr_assert_eq(r->clients, 4096);
	cr_assert_eq(r->v4_bits, 28);
	cr_assert_eq(r->v6_bits, 56);
	/* Each listener has its own limit; what the second leaves out is the default. */
	r = &c.nts_ke_servers[1].rate_limit;
	cr_assert_eq(r->rate, 0.0);
	cr_assert_eq(r->burst, 9);
	cr_assert_eq(r->clients, 65536);
	cr_assert_eq(r->v4_bits, 32);
	cr_assert_eq(r->v6_bits, 64);
	config_daemon_free(&c);
}

Test(config_scale, daemon_ke_server_rate_limit_errors)
{
	daemon_error(KE_HEAD "rate-limit-per-second = 0.0001\n", 5,
		     "'rate-limit-per-second' in [[nts-ke-server]] must be 0 (off) or at least "
		     "0.001",
		     NULL);
	daemon_error(KE_HEAD "rate-limit-burst = 0\n", 5,
		     "'rate-limit-burst' in [[nts-ke-server]] must be between 1 and 1000000 "
		     "(got 0)",
		     NULL);
	daemon_error(KE_HEAD "rate-limit-clients = 1\n", 5,
		     "'rate-limit-clients' in [[nts-ke-server]] must be between 16 and", NULL);
	daemon_error(KE_HEAD "rate-limit-ipv4-prefix = 0\n", 5,
		     "'rate-limit-ipv4-prefix' in [[nts-ke-server]] must be between 8 and 32",
		     NULL);
	daemon_error(KE_HEAD "rate-limit-ipv6-prefix = 200\n", 5,
		     "'rate-limit-ipv6-prefix' in [[nts-ke-server]] must be between 16 and 128",
		     NULL);
	daemon_error(KE_HEAD "rate-limit-per-second = true\n", 5,
		     "'rate-limit-per-second' in [[nts-ke-server]] must be a number, not boolean",
		     NULL);
	/* The rate-limit keys belong to [[nts-ke-server]], not to [[server]]. */
	daemon_error(KE_HEAD "[[server]]\nlisten = \"127.0.0.1:10123\"\nrate-limit-burst = 3\n", 7,
		     "unknown key 'rate-limit-burst' in [[server]]", NULL);
}
