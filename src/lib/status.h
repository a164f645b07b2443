/* The status endpoint every program serves: GET /status (JSON) and GET /metrics (Prometheus text
 * format), over HTTP/1.1 on a TCP listener (loopback by default). Other paths are 404, other
 * methods 405, malformed requests 400; requests are bounded in size and time. The program
 * supplies the content; this module only serves it. */
#ifndef NTSPOOL_STATUS_H
#define NTSPOOL_STATUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>
#include <uv.h>

/* A growable text buffer for /metrics. */
struct status_text {
	char *buf;
	size_t len;
	size_t cap;
	int err; /* sticky -ENOMEM */
};

/* Appends "# HELP name help\n# TYPE name type\n" (type: "counter" or "gauge"). Once per name. */
void status_metric_header(struct status_text *t, const char *name, const char *type,
			  const char *help);

/* Appends "name{labels} value\n"; labels (borrowed) is the inside of the braces, already
 * escaped (see status_label_escape), or NULL for none. */
void status_metric_value(struct status_text *t, const char *name, const char *labels,
			 double value);

/* Escapes a label value (backslash, quote, newline) into buf; returns buf. */
const char *status_label_escape(const char *value, char *buf, size_t buflen);

struct status_provider {
	/* The /status document: a new reference (the server decrefs it). NULL -> 500. */
	json_t *(*status_json)(void *ud);
	/* Appends the /metrics text. */
	void (*metrics)(struct status_text *out, void *ud);
};

struct status_server;

/* Serves on addr (borrowed). provider is borrowed for the server's life. Returns 0 or a negative
 * errno with a message in err. */
int status_server_new(struct status_server **out, uv_loop_t *loop, const struct sockaddr *addr,
		      const struct status_provider *provider, void *ud, char *err, size_t errlen);

const struct sockaddr *status_server_addr(const struct status_server *s);

/* Stops serving; open requests are dropped; freed from the last close callback. */
void status_server_close(struct status_server *s);

#endif
