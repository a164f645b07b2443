/* Typed configuration of ntp-daemon (ntp.toml): [[source]], [[server]], [[nts-ke-server]],
 * [keyset], [observability], [synchronization]. */
#ifndef NTSPOOL_CONFIG_DAEMON_H
#define NTSPOOL_CONFIG_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "config.h"
#include "config_client.h"

enum config_daemon_source_mode {
	CONFIG_DAEMON_SOURCE_SERVER,   /* plain NTPv4 */
	CONFIG_DAEMON_SOURCE_NTS,      /* NTS with a fixed NTS-KE server */
	CONFIG_DAEMON_SOURCE_NTS_POOL, /* NTS via an NTS-KE pool, `count` servers */
	CONFIG_DAEMON_SOURCE_POOL,     /* plain NTPv4, `count` addresses of one DNS name */
};

struct config_daemon_source {
	enum config_daemon_source_mode mode;
	struct config_host address;
	char *certificate_authority; /* NULL: system trust; only set for the NTS modes */
	int certificate_authority_line; /* where it was configured, for messages */
	uint32_t count;			/* servers to keep: 1, or 4 for nts-pool and pool */
	int poll_interval_min;       /* log2 seconds */
	int poll_interval_max;
	/* pool: "ignore", addresses the name resolves to that are never used; new (free()). */
	struct cidr *ignore;
	size_t ignore_count;
	int ntp_version; /* "ntp-version": 4 ("auto" is 4 too: NTPv5 is not spoken) */
	int line;
};

struct config_daemon_server {
	struct config_listen listen;
	struct config_filter allowlist; /* ntpd-rs's: a request from outside is refused */
	struct config_filter denylist;	/* a request from inside is refused */
	enum config_require_nts require_nts;
	/* ntpd-rs's rate limiting: requests from one client address closer together than
	 * cutoff_ms get a RATE kiss; the last request of at most cache_size addresses is kept.
	 * Off when either is 0 (the default). */
	uint32_t rate_limiting_cache_size;
	uint32_t rate_limiting_cutoff_ms;
};

struct pool_tokens;

struct config_daemon_nts_ke_server {
	struct config_listen listen;
	char *certificate_chain_path;
	bool allow_world_readable_private_key; /* its key readable by all: a warning, no error */
	char *private_key_path;
	/* Where the files' options were configured, for messages about the files. */
	int certificate_chain_path_line, private_key_path_line;
	int authorized_pool_server_certificates_line;
	uint32_t key_exchange_timeout_ms;
	uint32_t handshake_timeout_ms; /* the TLS handshake's own, shorter bound */
	uint32_t concurrent_connections;
	uint32_t max_connections_per_address; /* per IPv4 /32 or IPv6 /64; 0: no limit */
	struct config_rate_limit rate_limit;   /* key exchanges per client prefix */
	uint16_t ntp_port;  /* 0: not announced (clients use 123) */
	char *ntp_server;   /* NULL: not announced (clients use the KE server's address) */
	char **authorized_pool_server_certificates; /* paths */
	size_t authorized_pool_server_certificate_count;
	char **accepted_pool_authentication_tokens; /* secrets, checked for shape at load */
	size_t accepted_pool_authentication_token_count;
	char *accepted_pool_authentication_tokens_path; /* NULL: none; read (and re-read on
							  * SIGHUP) by config_daemon_load_tokens */
	struct pool_tokens *tokens; /* the accepted set as loaded with the configuration (one
				     * reference), NULL when none is configured */
	int tokens_line;      /* where the inline tokens and the token file were configured */
	int tokens_path_line;
	enum ke_numbering pool_record_numbers;
};

struct config_daemon_keyset {
	char *key_storage_path; /* NULL: keys live in memory only */
	int key_storage_path_line; /* where it was configured, for messages */
	uint32_t key_rotation_interval_s;
	uint32_t stale_key_count;
};

/* A step threshold per direction, in seconds; INFINITY: unlimited. */
struct config_step_threshold {
	double forward_s;
	double backward_s;
};

/* Step thresholds are in seconds, as in ntpd-rs, which also allows a limit per direction and
 * "inf". The per-direction values are what was configured and what the time core applies; the
 * single values are the stricter direction (INFINITY: unlimited), for messages and for code
 * that builds a configuration without directions. */
struct config_daemon_sync {
	int local_stratum; /* 16: unsynchronised */
	bool clock_control;
	uint32_t minimum_agreeing_sources;
	double single_step_panic_threshold_s;
	struct config_step_threshold single_step; /* both 1000 by default */
	bool has_startup_step_panic_threshold;	  /* absent or "inf" both ways: unlimited */
	double startup_step_panic_threshold_s;
	struct config_step_threshold startup_step; /* both INFINITY by default */
	bool has_accumulated_step_panic_threshold; /* absent or 0: no limit */
	double accumulated_step_panic_threshold_s;
};

struct config_daemon {
	struct config_daemon_source *sources;
	size_t source_count;
	struct config_daemon_server *servers;
	size_t server_count;
	struct config_daemon_nts_ke_server *nts_ke_servers;
	size_t nts_ke_server_count;
	struct config_daemon_keyset keyset;
	struct config_observability observability;
	struct config_daemon_sync synchronization;
	uint32_t workers; /* [daemon] workers: threads serving [[server]] and [[nts-ke-server]];
			   * 0 (absent): one per usable CPU */
	char *user;	  /* [daemon] user: the account to run as once started as root; NULL
			   * (absent): CONFIG_DEFAULT_USER */
	int user_line;	  /* where it was configured (the table's line when absent) */
};

/* Reads and checks the file at path (borrowed) into *cfg, which owns everything it points to
 * afterwards (free with config_daemon_free). On failure returns negative errno with
 * "FILE:LINE: message" in err and leaves *cfg empty (config_daemon_free is still safe). */
int config_daemon_load(const char *path, struct config_daemon *cfg, char *err, size_t errlen);

/* As config_daemon_load, on a tree already parsed from `file` (both borrowed). */
int config_daemon_from_tree(const struct toml_value *root, const char *file,
			    struct config_daemon *cfg, char *err, size_t errlen);

/* As config_daemon_from_tree, also adding every error found to report (borrowed; sorted by
 * line on failure), for `ntp-ctl validate`. */
int config_daemon_from_tree_report(const struct toml_value *root, const char *file,
				   struct config_daemon *cfg, struct config_report *report,
				   char *err, size_t errlen);

/* Frees what cfg owns and empties it; cfg itself is the caller's. */
void config_daemon_free(struct config_daemon *cfg);

/* The accepted pool tokens of one [[nts-ke-server]] (borrowed): the inline list and, when a
 * path is configured, the token file read now (one token per line, '#' comments, mode 0600):
 * what SIGHUP reloads; the load itself keeps the set in s->tokens.
 * *out is new (pool_tokens_unref), or NULL when neither is configured. file (borrowed) names
 * the configuration in errors ("FILE:LINE: message" in err). Returns 0 or negative errno. */
int config_daemon_load_tokens(const struct config_daemon_nts_ke_server *s, const char *file,
			      struct pool_tokens **out, char *err, size_t errlen);

#endif
