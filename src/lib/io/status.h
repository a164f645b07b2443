/* The status endpoint every program serves: GET /status (JSON) and GET /metrics (Prometheus text
 * format), over HTTP/1.1 on a TCP listener (loopback by default). Other paths are 404, other
 * methods 405, malformed requests 400; requests are bounded in size and time. The program
 * supplies the content; this module only serves it. */
#ifndef NTSPOOL_STATUS_H
#define NTSPOOL_STATUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "status_http.h"

/* Bounds on one request: its bytes (over this is 400), the wait for its first byte and its
 * connection's whole life (then it is cut without an answer), and the connections served at
 * once: a new connection beyond them closes the oldest one that has not sent a whole request (it
 * gets 503), so idle connections cannot keep monitoring out. */
#define STATUS_IDLE_MS 1000
#define STATUS_TIMEOUT_MS 3000
#define STATUS_MAX_CONNS 16

/* A growable text buffer for /metrics. All zeros is a valid empty text. Once an allocation fails,
 * err is -ENOMEM and every later append is a no-op; buf is always NUL-terminated when non-NULL. */
struct status_text {
	char *buf;
	size_t len;
	size_t cap;
	int err; /* sticky: -ENOMEM (or -EINVAL from a bad format) */
};

void status_text_init(struct status_text *t);
/* Frees buf and empties t. */
void status_text_deinit(struct status_text *t);
/* Appends len bytes of s (borrowed). */
void status_text_append(struct status_text *t, const char *s, size_t len);
void status_text_printf(struct status_text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends "# HELP name help\n# TYPE name type\n" (type: "counter" or "gauge"). Once per name.
 * Backslashes and newlines in help are escaped as the format requires. */
void status_metric_header(struct status_text *t, const char *name, const char *type,
			  const char *help);

/* Appends "name{labels} value\n"; labels (borrowed) is the inside of the braces, already
 * escaped (see status_label_escape), or NULL for none. Integral values print as integers
 * (no exponent, no decimals), others in the shortest form that reads back exactly; NaN and
 * infinities as "NaN", "+Inf", "-Inf". */
void status_metric_value(struct status_text *t, const char *name, const char *labels,
			 double value);

/* Escapes a label value (backslash, quote, newline) into buf; returns buf, always NUL-terminated
 * when buflen > 0. A value that does not fit is cut at a character boundary of the escaped
 * form (never in the middle of an escape). */
const char *status_label_escape(const char *value, char *buf, size_t buflen);

struct status_provider {
	/* The /status document: a new reference (the server decrefs it). NULL -> 500. */
	json_t *(*status_json)(void *ud);
	/* Appends the /metrics text. */
	void (*metrics)(struct status_text *out, void *ud);
};

struct status_server;

/* Serves on addr (borrowed). provider is borrowed for the server's life. GET and HEAD are served
 * (HEAD: the same headers, no body); any other method on a known path is 405 with "Allow: GET,
 * HEAD"; unknown paths are 404 whatever the method. The query string is ignored for routing.
 * Every answer has Content-Length and "Connection: close", and the connection closes after it.
 * *out is owned by the loop: release it with status_server_close. Returns 0 or a negative errno
 * with a message in err. */
int status_server_new(struct status_server **out, uv_loop_t *loop, const struct sockaddr *addr,
		      const struct status_provider *provider, void *ud, char *err, size_t errlen);

/* status_server_new_flags: answer /metrics only (/status is 404), for a listener that faces a
 * Prometheus server rather than the operator. */
#define STATUS_SERVE_METRICS_ONLY 1u

/* As status_server_new, with STATUS_SERVE_* flags. */
int status_server_new_flags(struct status_server **out, uv_loop_t *loop,
			    const struct sockaddr *addr, unsigned flags,
			    const struct status_provider *provider, void *ud, char *err,
			    size_t errlen);

/* As status_server_new_flags on a stream socket already bound and listening (taken over, closed
 * on failure too): the Unix socket of status_endpoints_open. */
int status_server_adopt(struct status_server **out, uv_loop_t *loop, int fd, unsigned flags,
			const struct status_provider *provider, void *ud, char *err, size_t errlen);

/* The bound address (borrowed, valid for the server's life), e.g. the port after binding port 0. */
const struct sockaddr *status_server_addr(const struct status_server *s);

/* Stops serving; open requests are dropped; freed from the last close callback. */
void status_server_close(struct status_server *s);

/* ---- Every endpoint of an [observability] table ---------------------------------------------- */

/* The endpoints one program serves: status-listen (TCP, /status and /metrics), observation-path
 * (the same on a Unix stream socket) and metrics-exporter-listen (TCP, /metrics only). */
struct status_endpoints {
	struct status_server *status;  /* NULL when not configured */
	struct status_server *observe; /* the Unix socket's */
	struct status_server *metrics;
	char observe_path[CONFIG_UNIX_PATH_MAX + 1]; /* "" when none was created */
	dev_t observe_dev;			     /* the socket file we made, so that close */
	ino_t observe_ino;			     /* removes ours and nobody else's */
};

/* Which endpoint status_endpoints_open could not open: a TCP one names its listen address and
 * key, for the program's own message about a listen address (err holds the socket's reason);
 * listen NULL means err holds the whole message already, "FILE:LINE: 'key' in WHERE: ...". */
struct status_endpoint_failure {
	const char *key;		    /* "status-listen", "metrics-exporter-listen", ... */
	const struct config_listen *listen; /* borrowed from obs */
};

/* Opens every endpoint obs (borrowed; it must outlive *eps) configures, serving provider and ud
 * (borrowed for the endpoints' life). The Unix socket is created with obs's permissions; a stale
 * socket at the path (one nobody accepts on) is removed first, anything else there is an error,
 * and so is a socket another process still serves. file and where (borrowed) name the
 * configuration in messages. On failure nothing stays open or created, *failed says which
 * endpoint failed and err why. Returns 0 or negative errno. */
int status_endpoints_open(struct status_endpoints *eps, uv_loop_t *loop,
			  const struct config_observability *obs, const char *file,
			  const char *where, const struct status_provider *provider, void *ud,
			  struct status_endpoint_failure *failed, char *err, size_t errlen);

/* Closes every endpoint (each is freed from its last close callback) and removes the socket
 * file it created, if it is still the one it created. *eps is empty afterwards. */
void status_endpoints_close(struct status_endpoints *eps);

/* The connections the endpoints of obs hold at most (for a program's descriptor budget). */
unsigned status_endpoints_max_fds(const struct config_observability *obs);

#endif
