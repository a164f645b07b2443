/* Secrets named by a configuration: token files read with the same care as key files, and the
 * shape every pool authentication token must have (PROTOCOL.md §3.5). */
#ifndef NTSPOOL_CONFIG_SECRET_H
#define NTSPOOL_CONFIG_SECRET_H

#include <stddef.h>

#include "config.h"

/* Reads the secret file at path (borrowed): a regular file of at most max bytes that neither
 * group nor others may access, without NUL bytes. *out is new and NUL-terminated (free with
 * config_secret_free), *len its length. Returns 0, or negative errno with a reason naming the
 * file (and for a mode problem, the chmod fix) in why. */
int config_secret_read(const char *path, size_t max, char **out, size_t *len, char *why,
		       size_t whylen);

/* Reads a secret file named by option `key` of `where` (configured at `line`): a regular file
 * of at most max bytes that neither group nor others may access (else an error naming the
 * chmod fix). *out is new, NUL-terminated, *len its length; free it with config_secret_free,
 * which wipes it. Returns 0 or negative errno after reporting "FILE:LINE: ..." in ctx. */
int config_read_secret_file(struct config_ctx *ctx, int line, const char *key,
			    const char *where, const char *path, size_t max, char **out,
			    size_t *len);
void config_secret_free(char *s);

/* The next content line of a secret file's text[0, len) (borrowed) from *pos on: blanks (space,
 * tab, CR) around it trimmed, empty lines and lines starting with '#' skipped. Returns 1 with
 * *line (borrowed, not NUL-terminated), *line_len and *lineno (1-based; start it at 0), or 0 at
 * the end of the text. */
int config_secret_next_line(const char *text, size_t len, size_t *pos, const char **line,
			    size_t *line_len, int *lineno);

/* Checks that a token (1..255 bytes) is visible ASCII without spaces, as PROTOCOL.md §3.5
 * tokens are; reports an error for option `key` at line otherwise. */
int config_check_token(struct config_ctx *ctx, int line, const char *key, const char *where,
		       const char *token, size_t len);

#endif
