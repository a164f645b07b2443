#include "ntp_listener.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>

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
	struct ntp_server_policy policy;
	struct ratelimit *own_rate; /* the listener's own table when none is shared */
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

int ntp_rate_limit_new(const struct config_daemon_server *cfg, struct ratelimit **out)
{
	*out = NULL;
	if (cfg->rate_limiting_cache_size == 0 || cfg->rate_limiting_cutoff_ms == 0)
		return 0;
	/* ntpd-rs's "one request per cutoff" is a bucket of one token refilled once per cutoff,
	 * per client address (IPv6 too: /128). */
	const struct ratelimit_config rl = {
		.rate = 1000.0 / cfg->rate_limiting_cutoff_ms,
		.burst = 1,
		.max_clients = cfg->rate_limiting_cache_size,
		.v4_bits = 32,
		.v6_bits = 128,
	};
	uint64_t key;
	if (gnutls_rnd(GNUTLS_RND_NONCE, &key, sizeof key) < 0)
		return -EIO;
	return ratelimit_new(out, &rl, key);
}

static void policy_from(struct ntp_server_policy *p, const struct config_daemon_server *cfg,
			struct ratelimit *rate)
{
	*p = (struct ntp_server_policy){
		.has_allow = cfg->allowlist.set,
		.allow = cfg->allowlist.prefixes,
		.n_allow = cfg->allowlist.count,
		.allow_action = cfg->allowlist.action == CONFIG_FILTER_DENY ? NTP_SERVER_DENY
									    : NTP_SERVER_IGNORE,
		.deny = cfg->denylist.set ? cfg->denylist.prefixes : NULL,
		.n_deny = cfg->denylist.set ? cfg->denylist.count : 0,
		.deny_action = cfg->denylist.action == CONFIG_FILTER_DENY ? NTP_SERVER_DENY
									  : NTP_SERVER_IGNORE,
		.require_nts = cfg->require_nts != CONFIG_REQUIRE_NTS_OFF,
		.nts_action = cfg->require_nts == CONFIG_REQUIRE_NTS_DENY ? NTP_SERVER_DENY
									  : NTP_SERVER_IGNORE,
		.rate = rate,
	};
}

int ntp_listener_new_shared(struct ntp_listener **out, uv_loop_t *loop,
			    const struct config_daemon_server *cfg, struct slot *keyset,
			    struct slot *clock, struct ratelimit *rate)
{
	struct ntp_listener *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	int rc = ntp_server_new(&l->server, &l->keyset, &l->stats);
	if (rc < 0) {
		free(l);
		return rc;
	}
	if (!rate && (rc = ntp_rate_limit_new(cfg, &l->own_rate)) < 0) {
		ntp_server_free(l->server);
		free(l);
		return rc;
	}
	policy_from(&l->policy, cfg, rate ? rate : l->own_rate);
	ntp_server_set_policy(l->server, &l->policy);
	l->loop = loop;
	l->cfg = cfg;
	slot_view_init(&l->keyset_view, keyset);
	slot_view_init(&l->clock_view, clock);
	*out = l;
	return 0;
}

int ntp_listener_new(struct ntp_listener **out, uv_loop_t *loop,
		     const struct config_daemon_server *cfg, struct slot *keyset,
		     struct slot *clock)
{
	return ntp_listener_new_shared(out, loop, cfg, keyset, clock, NULL);
}

static void on_datagram(struct net_udp *u, const uint8_t *buf, size_t len,
			const struct sockaddr *from, void *ud)
{
	struct ntp_listener *l = ud;
	/* The receive timestamp is taken before any parsing or cryptography. */
	uint64_t rx = realtime_ntp(NULL);
	l->keyset = slot_view_get(&l->keyset_view);
	const struct clock_pub *clock = slot_view_get(&l->clock_view);
	size_t n = ntp_server_handle_from(l->server, from, uv_now(l->loop), buf, len, rx, &clock->c,
					  realtime_ntp, NULL, l->reply, sizeof l->reply);
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
	ratelimit_free(l->own_rate);
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
	return json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "listen",
		cfg->listen.text, "received", (json_int_t)s.received, "plain", (json_int_t)s.plain,
		"nts_accepted", (json_int_t)s.nts_accepted, "nts_naks", (json_int_t)s.nts_naks,
		"dropped_malformed", (json_int_t)s.dropped_malformed, "dropped_other",
		(json_int_t)s.dropped_other, "dropped_internal", (json_int_t)s.dropped_internal,
		"denied", (json_int_t)s.denied, "ignored", (json_int_t)s.ignored, "rate_limited",
		(json_int_t)s.rate_limited, "workers", workers);
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
		{ "ntp_daemon_ntp_dropped_internal_total",
		  "Replies not sent because of our own failure",
		  offsetof(struct ntp_server_stats, dropped_internal) },
		{ "ntp_daemon_ntp_denied_total",
		  "Requests refused by the access rules with a DENY kiss",
		  offsetof(struct ntp_server_stats, denied) },
		{ "ntp_daemon_ntp_ignored_total", "Requests the access rules dropped unanswered",
		  offsetof(struct ntp_server_stats, ignored) },
		{ "ntp_daemon_ntp_rate_limited_total", "Requests answered with a RATE kiss",
		  offsetof(struct ntp_server_stats, rate_limited) },
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
