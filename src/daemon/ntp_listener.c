#include "ntp_listener.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
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
	/* This worker's views, refreshed per datagram; ntp_server reads keyset through its slot
	 * pointer and gets clock as an argument. */
	struct slot_view keyset_view, clock_view;
	struct keyset *keyset;
	struct ntp_server *server;
	struct ntp_server_stats stats;
	struct net_udp *udp;
	uint8_t reply[REPLY_MAX];
};

/* An immutable copy of the announced clock, shared by reference. */
struct clock_pub {
	atomic_uint refs;
	struct ntp_server_clock c;
};

static void *clock_ref(void *p)
{
	struct clock_pub *c = p;
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

static void clock_unref(void *p)
{
	struct clock_pub *c = p;
	if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		free(c);
}

static struct clock_pub *clock_copy(const struct ntp_server_clock *c)
{
	struct clock_pub *p = malloc(sizeof *p);
	if (p) {
		atomic_init(&p->refs, 1);
		p->c = *c;
	}
	return p;
}

int ntp_clock_slot_init(struct slot *s, const struct ntp_server_clock *c)
{
	struct clock_pub *p = clock_copy(c);
	if (!p)
		return -ENOMEM;
	slot_init(s, p, clock_ref, clock_unref);
	return 0;
}

int ntp_clock_publish(struct slot *s, const struct ntp_server_clock *c)
{
	struct clock_pub *p = clock_copy(c);
	if (!p)
		return -ENOMEM;
	slot_publish(s, p);
	return 0;
}

static uint64_t realtime_ntp(void *ud)
{
	(void)ud;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ntp_packet_ts_from_timespec(&ts);
}

int ntp_listener_new(struct ntp_listener **out, uv_loop_t *loop,
		     const struct config_daemon_server *cfg, struct slot *keyset,
		     struct slot *clock)
{
	struct ntp_listener *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	int rc = ntp_server_new(&l->server, &l->keyset, &l->stats);
	if (rc < 0) {
		free(l);
		return rc;
	}
	l->loop = loop;
	l->cfg = cfg;
	slot_view_init(&l->keyset_view, keyset);
	slot_view_init(&l->clock_view, clock);
	*out = l;
	return 0;
}

static void on_datagram(struct net_udp *u, const uint8_t *buf, size_t len,
			const struct sockaddr *from, void *ud)
{
	struct ntp_listener *l = ud;
	/* The receive timestamp is taken before any parsing or cryptography. */
	uint64_t rx = realtime_ntp(NULL);
	l->keyset = slot_view_get(&l->keyset_view);
	const struct clock_pub *clock = slot_view_get(&l->clock_view);
	size_t n = ntp_server_handle(l->server, buf, len, rx, &clock->c, realtime_ntp, NULL,
				     l->reply, sizeof l->reply);
	if (n > 0)
		net_udp_send(u, l->reply, n, from);
}

int ntp_listener_start(struct ntp_listener *l, int fd, char *err, size_t errlen)
{
	return net_udp_adopt(&l->udp, l->loop, fd, on_datagram, l, err, errlen);
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
	slot_view_release(&l->keyset_view);
	slot_view_release(&l->clock_view);
	free(l);
}

void ntp_listener_counters(const struct ntp_listener *l, struct ntp_server_stats *out)
{
	*out = l->stats;
}

#define NTP_STAT_WORDS (sizeof(struct ntp_server_stats) / sizeof(uint64_t))
_Static_assert(sizeof(struct ntp_server_stats) % sizeof(uint64_t) == 0,
	       "ntp_server_stats holds uint64_t counters only");

static void sum_stats(const struct ntp_server_stats *per_worker, size_t n,
		      struct ntp_server_stats *out)
{
	memset(out, 0, sizeof *out);
	uint64_t *sum = (uint64_t *)out;
	for (size_t w = 0; w < n; w++) {
		const uint64_t *v = (const uint64_t *)&per_worker[w];
		for (size_t i = 0; i < NTP_STAT_WORDS; i++)
			sum[i] += v[i];
	}
}

json_t *ntp_listener_status(const struct config_daemon_server *cfg,
			    const struct ntp_server_stats *per_worker, size_t n)
{
	struct ntp_server_stats s;
	sum_stats(per_worker, n, &s);
	json_t *workers = json_array();
	for (size_t w = 0; w < n; w++)
		json_array_append_new(workers,
				      json_pack("{s:I, s:I, s:I}", "worker", (json_int_t)w,
						"received", (json_int_t)per_worker[w].received,
						"nts_accepted",
						(json_int_t)per_worker[w].nts_accepted));
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "listen", cfg->listen.text,
			 "received", (json_int_t)s.received, "plain", (json_int_t)s.plain,
			 "nts_accepted", (json_int_t)s.nts_accepted,
			 "nts_naks", (json_int_t)s.nts_naks,
			 "dropped_malformed", (json_int_t)s.dropped_malformed,
			 "dropped_other", (json_int_t)s.dropped_other,
			 "dropped_internal", (json_int_t)s.dropped_internal, "workers", workers);
}

void ntp_listener_metrics(const struct config_daemon_server *cfgs, size_t n_ntp,
			  const struct ntp_server_stats *counters, size_t n_workers,
			  struct status_text *out)
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
		for (size_t k = 0; k < n_ntp; k++) {
			struct ntp_server_stats sum;
			sum_stats(&counters[k * n_workers], n_workers, &sum);
			const uint64_t *v =
				(const uint64_t *)((const char *)&sum + metrics[m].offset);
			snprintf(labels, sizeof labels, "listen=\"%s\"",
				 status_label_escape(cfgs[k].listen.text, esc, sizeof esc));
			status_metric_value(out, metrics[m].name, labels, (double)*v);
		}
	}
	static const char per_worker[] = "ntp_daemon_ntp_worker_received_total";
	status_metric_header(out, per_worker, "counter", "NTP datagrams received, by worker");
	for (size_t k = 0; k < n_ntp; k++) {
		status_label_escape(cfgs[k].listen.text, esc, sizeof esc);
		for (size_t w = 0; w < n_workers; w++) {
			snprintf(labels, sizeof labels, "listen=\"%s\",worker=\"%zu\"", esc, w);
			status_metric_value(out, per_worker, labels,
					    (double)counters[k * n_workers + w].received);
		}
	}
}
