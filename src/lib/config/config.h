/* Machinery shared by the typed configurations (config_pool, config_daemon): typed getters over
 * the TOML tree, "FILE:LINE: message" errors, unknown-key rejection and address parsing.
 *
 * Ownership: every pointer argument is borrowed unless its comment says otherwise; results
 * described as "new" belong to the caller. */
#ifndef NTSPOOL_CONFIG_H
#define NTSPOOL_CONFIG_H

#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "ke_record.h"
#include "log.h"
#include "toml.h"

/* The most workers (threads serving clients) either program runs. */
#define CONFIG_WORKERS_MAX 256

/* The account either program runs as when started as root and `user` is not configured; the
 * install creates it (systemd-sysusers). */
#define CONFIG_DEFAULT_USER "ntspool"

/* A listening address: an IP literal and a port, resolved without DNS. */

struct config_listen {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char text[64]; /* normalised "IP:PORT" or "[IPv6]:PORT", for messages and status */
	int line;      /* where it was configured */
};

/* A remote endpoint: a DNS name or an IP literal (IPv6 without brackets) and a port. */
struct config_host {
	char host[254];
	uint16_t port;
	bool is_ip;
};

/* The longest observation-path: what a Unix socket address holds, less its NUL. */
#define CONFIG_UNIX_PATH_MAX 107
/* ntpd-rs's default mode of the observation socket. */
#define CONFIG_OBSERVATION_PERMISSIONS 0666

/* [observability], shared by both programs. Plain values: a copy stays valid after the
 * configuration is freed. */
struct config_observability {
	enum log_level log_level;           /* "log-level" */
	bool has_status_listen;
	struct config_listen status_listen; /* "status-listen", when has_status_listen */
	/* "observation-path": the same endpoint on a Unix stream socket; "" when absent. */
	char observation_path[CONFIG_UNIX_PATH_MAX + 1];
	int observation_path_line;
	uint32_t observation_permissions; /* "observation-permissions": the socket's mode */
	/* "metrics-exporter-listen": a TCP listener serving /metrics only. */
	bool has_metrics_listen;
	struct config_listen metrics_listen;
	bool ansi_colors; /* "ansi-colors": accepted for ntpd-rs; logs carry no colours */
};

/* Every error one load found, each "FILE:LINE: message", for `ntp-ctl validate`. All zeros is
 * an empty report. */
struct config_msg {
	int line;
	char *text; /* new */
};
struct config_report {
	struct config_msg *msgs;
	size_t count, cap;
	bool truncated; /* more than CONFIG_REPORT_MAX errors, or out of memory: some are missing */
};
#define CONFIG_REPORT_MAX 200

/* Sorts the messages by line (stable: one line's messages keep their order). */
void config_report_sort(struct config_report *r);
void config_report_free(struct config_report *r);

/* Where errors go while one file is being read. A reader goes on after an error where it can
 * (the next key, the next table), so one load finds every error; err holds the first one found
 * (what a load that stopped there said), report (when not NULL) all of them. */
struct config_ctx {
	const char *file; /* borrowed */
	char *err;
	size_t errlen;
	struct config_report *report; /* borrowed, may be NULL */
};

/* Formats "FILE:LINE: message", keeps it (see config_ctx) and returns -EINVAL. */
int config_error(struct config_ctx *ctx, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Keeps the first failure of a sequence of reads in *acc and returns r, so that a reader can go
 * on to its next key after a bad one. */
static inline int config_keep(int *acc, int r)
{
	if (r < 0 && *acc >= 0)
		*acc = r;
	return r;
}

/* Writes "FILE:LINE: 'key' in where" into buf (len bytes; truncated to fit) and returns buf:
 * the head of a message about a value of the configuration that a program checks after the
 * load (a file it names, an address it binds), in config_error's form. All borrowed. */
const char *config_prefix(char *buf, size_t len, const char *file, int line, const char *key,
			  const char *where);

/* Starts a load with an empty message, so a failure can be told from one that reported. */
void config_begin(struct config_ctx *ctx);

/* Returns r (negative), first writing "FILE: reason" when nothing reported yet (out of memory,
 * a failure deep in a helper): a caller always has a message to print. */
int config_fail(struct config_ctx *ctx, int r);

/* Reads and parses the file at path; *root is new (caller frees with toml_free). TOML syntax
 * errors go to err unchanged ("FILE:LINE:COL: message"), I/O errors as "FILE: reason" (a
 * directory: -EISDIR). Returns 0 or negative errno. */
int config_parse_file(const char *path, struct toml_value **root, char *err, size_t errlen);

/* True when name is one of names (NULL-terminated). */
bool config_name_in(const char *name, const char *const *names);

/* Rejects any key of `table` not in `valid` (NULL-terminated), naming the table as `where`
 * (e.g. "[[nts-ke-server]]") and listing the valid keys. All arguments borrowed. */
int config_check_keys(struct config_ctx *ctx, const struct toml_value *table, const char *where,
		      const char *const *valid);

/* As config_check_keys, skipping the keys of `reported` (NULL-terminated, or NULL): keys the
 * caller has reported an error of its own for. */
int config_check_keys_except(struct config_ctx *ctx, const struct toml_value *table,
			     const char *where, const char *const *valid,
			     const char *const *reported);

/* Checks that root.name is a table ([name]); *out is borrowed, NULL when absent. Returns 0 or
 * negative after reporting. */
int config_get_table(struct config_ctx *ctx, const struct toml_value *root, const char *name,
		     const struct toml_value **out);

/* Checks that root.name is an array of tables ([[name]]); *out is borrowed, NULL when absent. */
int config_get_table_array(struct config_ctx *ctx, const struct toml_value *root,
			   const char *name, const struct toml_value **out);

/* Fills obs with the defaults, then reads root's optional [observability] table. */
int config_read_observability(struct config_ctx *ctx, const struct toml_value *root,
			      struct config_observability *obs);

/* Line of `key` in `table`, or the table's own line when the key is absent. */
int config_key_line(const struct toml_value *table, const char *key);

/* The typed getters below return 1 when the key was set (and *out written), 0 when it is
 * absent (and *out untouched, so it keeps its default), negative errno after reporting an
 * error. When `required` is true an absent key is an error. `where` names the table. */

/* *out is a new string (caller frees); it is non-empty and contains no NUL byte. */
int config_get_string(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, bool required, char **out);

int config_get_int(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		   const char *where, int64_t min, int64_t max, int64_t *out);

int config_get_u32(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		   const char *where, uint32_t min, uint32_t max, uint32_t *out);

/* Accepts an integer or a float, finite and within [min, max]. */
int config_get_number(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, double min, double max, double *out);

int config_get_bool(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		    const char *where, bool *out);

/* Matches a string against `names` (NULL-terminated, exact match); *out is its index. */
int config_get_enum(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		    const char *where, const char *const *names, int *out);

/* A string or an array of strings. *out is a new array of new strings (caller frees with
 * config_strings_free); *count >= min_count when the key is present. */
int config_get_strings(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		       const char *where, size_t min_count, char ***out, size_t *count);
void config_strings_free(char **v, size_t count);

int config_get_listen(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		      const char *where, bool required, struct config_listen *out);

/* A string or an array of strings, each a listening address; at least one. *out is new
 * (caller frees with free()). */
int config_get_listens(struct config_ctx *ctx, const struct toml_value *table, const char *key,
		       const char *where, struct config_listen **out, size_t *count);

/* "log-level" on top of config_get_enum, accepting the names log_level_parse knows. */
int config_get_log_level(struct config_ctx *ctx, const struct toml_value *table,
			 const char *where, enum log_level *out);

/* "pool-record-numbers": a generation name pool_proto knows ("iana", "ntpd-rs-v1"). */
int config_get_record_numbers(struct config_ctx *ctx, const struct toml_value *table,
			      const char *where, enum ke_numbering *out);

/* Parses "IP:PORT" or "[IPv6]:PORT" (no DNS). Returns 0 or -EINVAL with a reason (no file or
 * line) in why. */
int config_parse_listen(const char *text, struct config_listen *out, char *why, size_t whylen);

/* Parses "host", "host:port", "[IPv6]", "[IPv6]:port" or a bare IPv6 literal; a missing port
 * becomes default_port. The host is a DNS name or an IP literal. Returns 0 or -EINVAL with a
 * reason in why. */
int config_parse_host(const char *text, uint16_t default_port, struct config_host *out,
		      char *why, size_t whylen);

/* Validates `name` as a DNS name or IP literal (no port) into out->host / out->is_ip. */
int config_parse_hostname(const char *name, struct config_host *out, char *why, size_t whylen);

/* True when both name the same endpoint (DNS names compared case-insensitively, IP literals
 * by address). */
bool config_host_equal(const struct config_host *a, const struct config_host *b);

#endif
