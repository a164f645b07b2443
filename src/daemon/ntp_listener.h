/* One [[server]]: a UDP socket answering NTP and NTS-protected NTP with ntp_server. */
#ifndef NTSPOOL_NTP_LISTENER_H
#define NTSPOOL_NTP_LISTENER_H

#include <jansson.h>
#include <uv.h>

#include "config_daemon.h"
#include "ntp_server.h"
#include "status.h"

struct ntp_listener;

/* cfg, keyset_slot and clock are borrowed for the listener's life. *out is new. */
int ntp_listener_new(struct ntp_listener **out, uv_loop_t *loop,
		     const struct config_daemon_server *cfg, struct keyset *const *keyset_slot,
		     const struct ntp_server_clock *clock);

/* Binds and starts answering. Returns 0 or negative errno with err. */
int ntp_listener_start(struct ntp_listener *l, char *err, size_t errlen);
void ntp_listener_stop(struct ntp_listener *l);
void ntp_listener_free(struct ntp_listener *l);

json_t *ntp_listener_status(const struct ntp_listener *l);
void ntp_listener_metrics(const struct ntp_listener *const *ls, size_t n, struct status_text *out);

#endif
