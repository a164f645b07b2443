/* Typed configuration of nts-pool-ke (pool.toml): [nts-pool-ke-server] and [observability]. */
#ifndef NTSPOOL_CONFIG_POOL_H
#define NTSPOOL_CONFIG_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "config_client.h"

/* One entry of key-exchange-servers: an upstream NTS-KE server. */
/* Upstreams one pool may list (the broker's registry is sized for this many). */
#define CONFIG_POOL_MAX_UPSTREAMS 256

struct config_pool_upstream {
	struct config_host addr; /* "domain" and "port" */
	uint32_t weight;
	enum ke_numbering numbering; /* "pool-record-numbers", default the broker's */
	char *token;		     /* secret: "authentication-token" or the token read from
				      * "authentication-token-path"; NULL: none */
	char *token_path;	     /* "authentication-token-path", re-read on every load */
	char **regions;		     /* "regions": lower-case names, region_count of them */
	size_t region_count;
	int line; /* where the entry was written */
};

/* Regions an upstream may name at most. */
#define CONFIG_POOL_MAX_REGIONS 16

/* One [[region]]: clients whose address is in prefixes are in this region. */
struct config_region {
	char *name; /* lower case */
	struct cidr *prefixes;
	size_t prefix_count;
	int line;
};

struct config_pool {
	struct config_listen *listen; /* >= 1 */
	size_t listen_count;
	char *certificate_chain_path;
	char *private_key_path;
	char *certificate_authority_path; /* NULL: system trust only */
	/* Where the files' options were configured, for messages about the files. */
	int certificate_chain_path_line, private_key_path_line, certificate_authority_path_line;
	int geoip_database_path_line;
	uint32_t key_exchange_timeout_ms;
	uint32_t handshake_timeout_ms; /* the client's TLS handshake's own, shorter bound */
	uint32_t upstream_timeout_ms;
	uint32_t max_connections;
	uint32_t max_connections_per_address; /* per IPv4 /32 or IPv6 /64; 0: no limit */
	uint32_t max_upstream_attempts;
	uint32_t workers; /* threads serving clients; 0 (absent): one per usable CPU */
	char *user;	  /* the account to run as once started as root; NULL (absent):
			   * CONFIG_DEFAULT_USER */
	int user_line;	  /* where it was configured (the table's line when absent) */
	bool allow_world_readable_private_key; /* the key readable by all: a warning, no error */
	uint32_t fixed_key_failure_streak; /* failed sessions in a row that make an upstream
					    * unhealthy until a deep check passes; 0: off */
	enum ke_numbering pool_record_numbers;
	uint32_t probe_interval_s;
	uint32_t support_cache_s;
	uint32_t deep_check_interval_s; /* 0: no deep checks */
	uint32_t upstream_idle_s;
	uint32_t upstream_max_age_s; /* kept upstream connections are not reused once this old */
	uint32_t upstream_connections;
	bool proxy_protocol;		 /* listeners expect a PROXY protocol header */
	struct cidr *proxy_protocol_from; /* the load balancers allowed to send one */
	size_t proxy_protocol_from_count;
	char *geoip_database_path;	 /* MaxMind-format country database, or NULL */
	uint32_t min_region_servers;	 /* fewer healthy upstreams in a region: next level */
	uint32_t healthy_after_passes;	 /* consecutive passing checks to return to rotation */
	uint32_t unhealthy_after_failures; /* consecutive failing checks to leave it */
	struct config_rate_limit rate_limit;
	struct config_region *regions; /* [[region]] */
	size_t region_count;
	struct config_pool_upstream *key_exchange_servers; /* >= 1 */
	size_t key_exchange_server_count;
	struct config_observability observability;
};

/* Reads and checks the file at path (borrowed) into *cfg, which owns everything it points to
 * afterwards (free with config_pool_free). On failure returns negative errno with
 * "FILE:LINE: message" in err and leaves *cfg empty (config_pool_free is still safe). */
int config_pool_load(const char *path, struct config_pool *cfg, char *err, size_t errlen);

/* As config_pool_load, on a tree already parsed from `file` (both borrowed). */
int config_pool_from_tree(const struct toml_value *root, const char *file,
			  struct config_pool *cfg, char *err, size_t errlen);

/* As config_pool_from_tree, also adding every error found to report (borrowed; sorted by line
 * on failure), for `ntp-ctl validate`. */
int config_pool_from_tree_report(const struct toml_value *root, const char *file,
				 struct config_pool *cfg, struct config_report *report, char *err,
				 size_t errlen);

/* Frees what cfg owns and empties it; cfg itself is the caller's. */
void config_pool_free(struct config_pool *cfg);

#endif
