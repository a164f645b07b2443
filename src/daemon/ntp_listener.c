#include "ntp_listener.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "net.h"
#include "ntp_packet.h"

/* Large enough for any NTS request we answer: replies are never longer than requests, and a
 * request can only be as long as a datagram net_udp accepts. */
#define REPLY_MAX 65536

struct ntp_listener {
	uv_loop_t *loop;
	const struct config_daemon_server *cfg;
	const struct ntp_server_clock *clock;
	struct ntp_server *server;
	struct ntp_server_stats stats;
	struct net_udp *udp;
	uint8_t reply[REPLY_MAX];
};

static uint64_t realtime_ntp(void *ud)
{
	(void)ud;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ntp_packet_ts_from_timespec(&ts);
}

int ntp_listener_new(struct ntp_listener **out, uv_loop_t *loop,
		     const struct config_daemon_server *cfg, struct keyset *const *keyset_slot,
		     const struct ntp_server_clock *clock)
{
	struct ntp_listener *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	int rc = ntp_server_new(&l->server, keyset_slot, &l->stats);
	if (rc < 0) {
		free(l);
		return rc;
	}
	l->loop = loop;
	l->cfg = cfg;
	l->clock = clock;
	*out = l;
	return 0;
}

static void on_datagram(struct net_udp *u, const uint8_t *buf, size_t len,
			const struct sockaddr *from, void *ud)
{
	struct ntp_listener *l = ud;
	/* The receive timestamp is taken before any parsing or cryptography. */
	uint64_t rx = realtime_ntp(NULL);
	size_t n = ntp_server_handle(l->server, buf, len, rx, l->clock, realtime_ntp, NULL,
				     l->reply, sizeof l->reply);
	if (n > 0)
		net_udp_send(u, l->reply, n, from);
}

int ntp_listener_start(struct ntp_listener *l, char *err, size_t errlen)
{
	int rc = net_udp_new(&l->udp, l->loop, (const struct sockaddr *)&l->cfg->listen.addr,
			     on_datagram, l, err, errlen);
	if (rc < 0)
		return rc;
	log_info("ntp server listening on %s", l->cfg->listen.text);
	return 0;
}

void ntp_listener_stop(struct ntp_listener *l)
{
	if (l->udp) {
		net_udp_close(l->udp);
		l->udp = NULL;
	}
}

void ntp_listener_free(struct ntp_listener *l)
{
	if (!l)
		return;
	ntp_server_free(l->server);
	free(l);
}

json_t *ntp_listener_status(const struct ntp_listener *l)
{
	const struct ntp_server_stats *s = &l->stats;
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "listen", l->cfg->listen.text,
			 "received", (json_int_t)s->received, "plain", (json_int_t)s->plain,
			 "nts_accepted", (json_int_t)s->nts_accepted,
			 "nts_naks", (json_int_t)s->nts_naks,
			 "dropped_malformed", (json_int_t)s->dropped_malformed,
			 "dropped_other", (json_int_t)s->dropped_other,
			 "dropped_internal", (json_int_t)s->dropped_internal);
}

void ntp_listener_metrics(const struct ntp_listener *const *ls, size_t n, struct status_text *out)
{
	static const struct {
		const char *name;
		const char *help;
		size_t offset;
	} metrics[] = {
		{ "ntp_daemon_ntp_received_total", "NTP datagrams received",
		  offsetof(struct ntp_server_stats, received) },
		{ "ntp_daemon_ntp_plain_total", "Plain NTP requests answered",
		  offsetof(struct ntp_server_stats, plain) },
		{ "ntp_daemon_ntp_nts_accepted_total", "NTS requests answered",
		  offsetof(struct ntp_server_stats, nts_accepted) },
		{ "ntp_daemon_ntp_nts_naks_total", "NTS NAKs sent",
		  offsetof(struct ntp_server_stats, nts_naks) },
		{ "ntp_daemon_ntp_dropped_malformed_total", "Malformed datagrams dropped",
		  offsetof(struct ntp_server_stats, dropped_malformed) },
		{ "ntp_daemon_ntp_dropped_other_total", "Datagrams that were not client requests",
		  offsetof(struct ntp_server_stats, dropped_other) },
		{ "ntp_daemon_ntp_dropped_internal_total", "Replies not sent because of our own failure",
		  offsetof(struct ntp_server_stats, dropped_internal) },
	};
	char esc[128], labels[192];
	for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
		status_metric_header(out, metrics[m].name, "counter", metrics[m].help);
		for (size_t i = 0; i < n; i++) {
			const uint64_t *v = (const uint64_t *)((const char *)&ls[i]->stats +
							       metrics[m].offset);
			snprintf(labels, sizeof labels, "listen=\"%s\"",
				 status_label_escape(ls[i]->cfg->listen.text, esc, sizeof esc));
			status_metric_value(out, metrics[m].name, labels, (double)*v);
		}
	}
}
