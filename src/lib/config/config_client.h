/* What a configuration says about clients, shared by both programs: address prefix lists, the
 * per-client key-exchange rate limit, a [[server]]'s access rules in ntpd-rs's form (allowlist,
 * denylist, require-nts), and names of regions. Typed getters in the style of
 * config.h (1: set, 0: absent and *out untouched, negative after reporting). */
#ifndef NTSPOOL_CONFIG_CLIENT_H
#define NTSPOOL_CONFIG_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "config.h"

/* Prefixes one list may hold. */
#define CONFIG_PREFIXES_MAX 4096

/* A string or an array of strings, each an address prefix (cidr.h); at least one. *out is new
 * (free()). */
int config_get_prefixes(struct config_ctx *ctx, const struct toml_value *table, const char *key,
			const char *where, struct cidr **out, size_t *count);

/* The per-client key-exchange rate limit: a token bucket per IPv4 or IPv6 prefix of the client's
 * real address. rate 0: off (the default). */
struct config_rate_limit {
	double rate;	     /* "rate-limit-per-second": key exchanges per second, 0: off */
	uint32_t burst;	     /* "rate-limit-burst": bucket size */
	uint32_t clients;    /* "rate-limit-clients": prefixes tracked at most (bounded memory) */
	uint32_t v4_bits;    /* "rate-limit-ipv4-prefix" */
	uint32_t v6_bits;    /* "rate-limit-ipv6-prefix" */
};

/* The defaults: off, burst 20, 65536 clients, /32 and /64. */
extern const struct config_rate_limit config_rate_limit_defaults;

/* The keys config_get_rate_limit reads, for a caller's list of valid keys. */
#define CONFIG_RATE_LIMIT_KEYS                                                                 \
	"rate-limit-per-second", "rate-limit-burst", "rate-limit-clients",                     \
		"rate-limit-ipv4-prefix", "rate-limit-ipv6-prefix"

/* Reads the rate-limit keys of table into *out (which holds the defaults or earlier values). */
int config_get_rate_limit(struct config_ctx *ctx, const struct toml_value *table,
			  const char *where, struct config_rate_limit *out);

/* What a [[server]] does with a request its rules refuse: drop it, or answer a DENY kiss. */
enum config_filter_action {
	CONFIG_FILTER_IGNORE,
	CONFIG_FILTER_DENY,
};

/* allowlist / denylist = { filter = [ "CIDR", ... ], action = "ignore" | "deny" }. */
struct config_filter {
	bool set;
	struct cidr *prefixes; /* new (config_filter_free); NULL when count is 0 */
	size_t count;	       /* an empty allowlist admits nobody */
	enum config_filter_action action;
	int line;
};

int config_get_filter(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, struct config_filter *out);
void config_filter_free(struct config_filter *f);

/* require-nts = false | true | "ignore" | "deny": plain (not NTS) requests are answered
 * (false), dropped (true, "ignore") or answered with a DENY kiss ("deny"). */
enum config_require_nts {
	CONFIG_REQUIRE_NTS_OFF,
	CONFIG_REQUIRE_NTS_IGNORE,
	CONFIG_REQUIRE_NTS_DENY,
};

int config_get_require_nts(struct config_ctx *ctx, const struct toml_value *table,
			   const char *where, enum config_require_nts *out);

/* A region name: 1..63 bytes of letters, digits, '.', '_' or '-'; lower-cased in place. False
 * otherwise. */
bool config_region_name_ok(char *name);

/* An upstream's `regions` entry: a name as above, optionally qualified "region:", "country:"
 * or "continent:"; lower-cased in place. An unqualified code that is both a country's and a
 * continent's (af, as, na, sa: Afghanistan and Africa, American Samoa and Asia, Namibia and
 * North America, Saudi Arabia and South America) is refused, since which one is meant cannot be
 * told: *ambiguous is then set. */
bool config_region_token_ok(char *token, bool *ambiguous);

#endif
