#include "sources_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "log.h"


static void slot_start(struct slot *sl);
static void poll_cb(uv_timer_t *t);

void sources_release(struct sources *m)
{
	if (--m->pending > 0)
		return;
	for (size_t i = 0; i < m->n_entries; i++) {
		tls_creds_unref(m->entries[i].creds);
		free(m->entries[i].slots);
	}
	free(m->entries);
	free(m);
}

static uint32_t random_u32(void)
{
	uint32_t v = 0;
	if (gnutls_rnd(GNUTLS_RND_NONCE, &v, sizeof v) < 0)
		v = 0x80000000u;
	return v;
}

static void arm_ms(struct slot *sl, uint64_t ms)
{
	uv_timer_start(&sl->timer, poll_cb, ms, 0);
}

/* ---- Tearing down and failing -------------------------------------------------------------- */

static void drop_lookup(struct slot *sl)
{
	if (!sl->lookup)
		return;
	sl->lookup->slot = NULL;
	uv_cancel((uv_req_t *)&sl->lookup->req);
	sl->lookup = NULL;
}

static void drop_udp(struct slot *sl)
{
	if (sl->udp)
		net_udp_close(sl->udp);
	sl->udp = NULL;
}

/* Forgets the server: the time core sees its id go, and the next server starts a clean filter. */
void sources_drop_server(struct slot *sl)
{
	drop_udp(sl);
	source_free(sl->src);
	sl->src = NULL;
	sl->host[0] = sl->name[0] = '\0';
	clock_filter_init(&sl->filter);
}

/* Starts the next queued slot of an nts-pool entry once no key exchange of it runs, so each
 * exchange can deny the servers the previous ones obtained. */
void sources_entry_kick(struct entry *e)
{
	if (e->m->closing)
		return;
	for (size_t i = 0; i < e->n_slots; i++)
		if (e->slots[i].state == SLOT_KE)
			return;
	for (size_t i = 0; i < e->n_slots; i++) {
		if (e->slots[i].queued) {
			e->slots[i].queued = false;
			slot_start(&e->slots[i]);
			return;
		}
	}
}

/* Ends the current attempt and tries again after the slot's back-off. failure: counted, logged
 * and doubling the back-off; otherwise (a routine re-key) the next attempt starts at once. */
void sources_slot_retry(struct slot *sl, bool failure, const char *reason)
{
	struct entry *e = sl->e;
	bool was_ke = sl->state == SLOT_KE;
	drop_lookup(sl);
	sources_ke_drop(sl);
	sl->state = SLOT_WAIT;
	uint64_t delay_ms = 0;
	if (failure) {
		sl->errors++;
		snprintf(sl->last_error, sizeof sl->last_error, "%s", reason);
		delay_ms = (uint64_t)sl->backoff_s * 1000;
		log_warn("source %s (%s): %s; retrying in %u s", e->address, e->mode, reason,
			 sl->backoff_s);
		sl->backoff_s = sl->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : sl->backoff_s * 2;
	} else {
		log_info("source %s (%s): %s", e->address, e->mode, reason);
	}
	arm_ms(sl, delay_ms);
	if (was_ke)
		sources_entry_kick(e);
}

/* A server that must go: nts-pool slots replace it through the pool (denying it once);
 * the other modes keep their one server and retry it. */
static void slot_replace(struct slot *sl, bool failure, const char *reason)
{
	char why[REASON_MAX + KE_MSG_NAME_MAX + 16];
	snprintf(why, sizeof why, "server %s: %s", sl->host, reason);
	if (sources_is_pool(sl->e)) {
		snprintf(sl->denied, sizeof sl->denied, "%s", sl->host);
		sources_drop_server(sl);
	} else if (!sources_is_nts(sl->e)) {
		sources_drop_server(sl);
	}
	sources_slot_retry(sl, failure, why);
}

/* ---- NTP ------------------------------------------------------------------------------------ */

static void on_udp(struct net_udp *u, const uint8_t *buf, size_t len, const struct sockaddr *from,
		   void *ud)
{
	struct slot *sl = ud;
	struct sources *m = sl->e->m;
	uint64_t rx = m->now(m->ud);
	struct clock_sample sample;
	(void)u;
	if (m->closing || sl->state != SLOT_POLL || !net_addr_equal(from, &sl->to))
		return;
	int rc = source_handle_reply(sl->src, buf, len, rx, (double)uv_now(m->loop) / 1e3, &sample);
	if (rc < 0) {
		/* Anyone can send us datagrams: noted, and the real reply still awaited. */
		if (log_ratelimit_allow(&m->recv_log, uv_now(m->loop)))
			log_debug("source %s: reply refused: %s", sl->name, strerror(-rc));
		return;
	}
	switch ((enum source_reply)rc) {
	case SOURCE_REPLY_SAMPLE:
		sl->backoff_s = 1;
		sl->last_rx_ms = uv_now(m->loop);
		clock_filter_add(&sl->filter, &sample);
		m->on_sample(m->ud, sl->id, &sample);
		break;
	case SOURCE_REPLY_NAK:
		sources_slot_retry(sl, true, "NTS NAK: the server refused our cookie");
		break;
	case SOURCE_REPLY_REPLACE:
		slot_replace(sl, true, "the server sent a RSTR/DENY kiss");
		break;
	case SOURCE_REPLY_RATE:
		log_info("source %s: RATE kiss, poll interval now %d", sl->name,
			 source_poll(sl->src));
		break;
	case SOURCE_REPLY_UNSYNC: {
		/* Its earlier samples say nothing about its time now: it leaves selection at once,
		 * and the reason shows in the status. */
		const char *why = source_unsync_reason(sl->src);
		if (strcmp(sl->last_error, why) != 0)
			log_info("source %s: %s; not used", sl->name, why);
		snprintf(sl->last_error, sizeof sl->last_error, "%s", why);
		clock_filter_init(&sl->filter);
		m->on_sample(m->ud, sl->id, NULL);
		break;
	}
	case SOURCE_REPLY_KISS:
		break;
	}
}

static void do_poll(struct slot *sl)
{
	struct sources *m = sl->e->m;
	if (source_must_replace(sl->src)) {
		slot_replace(sl, true, "the server sent a RSTR/DENY kiss");
		return;
	}
	if (sources_is_dns_pool(sl->e) && source_unanswered(sl->src) >= SOURCE_MAX_UNANSWERED) {
		/* Another address of the name takes its place. */
		slot_replace(sl, true, "8 polls without a valid reply");
		return;
	}
	if (source_needs_rekey(sl->src)) {
		if (source_unanswered(sl->src) >= SOURCE_MAX_UNANSWERED)
			slot_replace(sl, true, "8 polls without a valid reply");
		else if (sources_is_pool(sl->e))
			slot_replace(sl, false, "cookies used up, replacing the server");
		else
			sources_slot_retry(sl, false, "cookies used up, new key exchange");
		return;
	}
	struct source_random rnd;
	uint8_t pkt[SOURCE_PACKET_MAX];
	int n = -EIO;
	uint8_t reach_before = source_reach(sl->src);
	if (gnutls_rnd(GNUTLS_RND_NONCE, &rnd, sizeof rnd) == 0)
		n = source_build_request(sl->src, &rnd, m->now(m->ud), pkt, sizeof pkt);
	gnutls_memset(&rnd, 0, sizeof rnd);
	if (reach_before != 0 && source_reach(sl->src) == 0) {
		/* No valid reply in the last 8 polls: out of selection now, not when its last
		 * samples age out. */
		snprintf(sl->last_error, sizeof sl->last_error, "no reply to the last 8 polls");
		log_info("source %s: unreachable (no reply to the last 8 polls)", sl->name);
		m->on_sample(m->ud, sl->id, NULL);
	}
	if (n < 0) {
		sources_slot_retry(sl, true, "cannot build a request");
		return;
	}
	int rc = net_udp_send(sl->udp, pkt, (size_t)n, (const struct sockaddr *)&sl->to);
	if (rc < 0 && log_ratelimit_allow(&m->recv_log, uv_now(m->loop)))
		log_debug("source %s: send failed: %s", sl->name, strerror(-rc));
	/* ±1/16 of the interval, so sources started together drift apart. */
	double s = source_poll_interval_s(sl->src);
	double jitter = ((double)random_u32() / 4294967296.0 - 0.5) / 8;
	arm_ms(sl, (uint64_t)(s * (1 + jitter) * 1000));
}

static void poll_cb(uv_timer_t *t)
{
	struct slot *sl = t->data;
	switch (sl->state) {
	case SLOT_WAIT:
		slot_start(sl);
		break;
	case SLOT_KE:
	case SLOT_RESOLVE:
		sources_slot_retry(sl, true, "timed out acquiring the server");
		break;
	case SLOT_POLL:
		do_poll(sl);
		break;
	}
}

/* The NTP server's address is known: open the socket and start polling. */
static void start_polling(struct slot *sl, const struct sockaddr *addr)
{
	struct sources *m = sl->e->m;
	char err[128];
	memcpy(&sl->to, addr, addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
							 : sizeof(struct sockaddr_in6));
	if (sl->to.ss_family == AF_INET)
		((struct sockaddr_in *)&sl->to)->sin_port = htons(sl->port);
	else
		((struct sockaddr_in6 *)&sl->to)->sin6_port = htons(sl->port);
	drop_udp(sl);
	struct sockaddr_storage local = { .ss_family = sl->to.ss_family };
	if (net_udp_new(&sl->udp, m->loop, (struct sockaddr *)&local, on_udp, sl, err,
			sizeof err) < 0) {
		sl->udp = NULL;
		sources_slot_retry(sl, true, "cannot open a UDP socket");
		return;
	}
	char a[NET_ADDR_STRLEN];
	snprintf(sl->name, sizeof sl->name, "%s:%u", sl->host, sl->port);
	log_info("source %s (%s): polling %s (%s), id %u", sl->e->address, sl->e->mode, sl->name,
		 net_addr_str((const struct sockaddr *)&sl->to, a, sizeof a), sl->id);
	sl->state = SLOT_POLL;
	arm_ms(sl, random_u32() % 500);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct lookup *l = req->data;
	struct sources *m = l->m;
	struct slot *sl = l->slot;
	if (sl) {
		sl->lookup = NULL;
		if (status < 0 || !res) {
			char why[REASON_MAX];
			snprintf(why, sizeof why, "cannot sources_resolve %s: %s",
				 l->for_ke ? sl->e->cfg->address.host : sl->host,
				 uv_strerror(status));
			sources_slot_retry(sl, true, why);
		} else if (l->for_ke) {
			struct sockaddr_storage ss;
			memcpy(&ss, res->ai_addr, res->ai_addrlen);
			sources_ke_begin(sl, (struct sockaddr *)&ss);
		} else if (sources_is_dns_pool(sl->e)) {
			struct sockaddr_storage ss;
			char why[REASON_MAX];
			if (sources_pool_choose(sl, res, &ss, why, sizeof why))
				start_polling(sl, (struct sockaddr *)&ss);
			else
				sources_slot_retry(sl, true, why);
		} else {
			start_polling(sl, res->ai_addr);
		}
	}
	uv_freeaddrinfo(res);
	free(l);
	sources_release(m);
}

/* Resolves name for the KE (for_ke) or the NTP stage; literals need no resolver. */
void sources_resolve(struct slot *sl, const char *name, bool for_ke)
{
	struct sources *m = sl->e->m;
	struct sockaddr_storage ss;
	if (net_addr_parse_ip(name, &ss)) {
		if (for_ke)
			sources_ke_begin(sl, (struct sockaddr *)&ss);
		else
			start_polling(sl, (struct sockaddr *)&ss);
		return;
	}
	struct lookup *l = calloc(1, sizeof *l);
	if (!l) {
		sources_slot_retry(sl, true, "out of memory");
		return;
	}
	l->m = m;
	l->slot = sl;
	l->for_ke = for_ke;
	l->req.data = l;
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = for_ke ? SOCK_STREAM : SOCK_DGRAM,
				  .ai_flags = AI_ADDRCONFIG };
	int rc = uv_getaddrinfo(m->loop, &l->req, on_resolved, name, NULL, &hints);
	if (rc < 0) {
		free(l);
		char why[REASON_MAX];
		snprintf(why, sizeof why, "cannot sources_resolve %s: %s", name, uv_strerror(rc));
		sources_slot_retry(sl, true, why);
		return;
	}
	m->pending++;
	sl->lookup = l;
}


/* Starts acquiring a server for the slot: key exchange (NTS modes) or name lookup (server). */
static void slot_start(struct slot *sl)
{
	struct entry *e = sl->e;
	if (e->m->closing)
		return;
	if (!sources_is_nts(e)) {
		if (!sl->src) {
			if (source_new(&sl->src, false, e->cfg->poll_interval_min,
				       e->cfg->poll_interval_max, SOURCES_LOCAL_PRECISION) < 0) {
				sources_slot_retry(sl, true, "out of memory");
				return;
			}
			if (sl->id_used)
				sl->id = ++e->m->next_id;
			sl->id_used = true;
		}
		snprintf(sl->host, sizeof sl->host, "%s", e->cfg->address.host);
		sl->port = e->cfg->address.port;
		sl->state = SLOT_RESOLVE;
		arm_ms(sl, ACQUIRE_TIMEOUT_MS);
		sources_resolve(sl, sl->host, false);
		return;
	}
	if (sources_is_pool(e)) {
		for (size_t i = 0; i < e->n_slots; i++) {
			if (&e->slots[i] != sl && e->slots[i].state == SLOT_KE) {
				sl->state = SLOT_WAIT;
				sl->queued = true;
				uv_timer_stop(&sl->timer);
				return;
			}
		}
	}
	sl->state = SLOT_KE;
	arm_ms(sl, ACQUIRE_TIMEOUT_MS);
	sources_resolve(sl, e->cfg->address.host, true);
}

/* ---- Life cycle and views ------------------------------------------------------------------- */

static const char *mode_name(enum config_daemon_source_mode mode)
{
	switch (mode) {
	case CONFIG_DAEMON_SOURCE_SERVER:
		return "server";
	case CONFIG_DAEMON_SOURCE_NTS:
		return "nts";
	case CONFIG_DAEMON_SOURCE_NTS_POOL:
		return "nts-pool";
	case CONFIG_DAEMON_SOURCE_POOL:
		return "pool";
	}
	return "?";
}

static int entry_init(struct sources *m, struct entry *e, const struct config_daemon_source *c,
		      char *err, size_t errlen)
{
	e->m = m;
	e->cfg = c;
	e->mode = mode_name(c->mode);
	snprintf(e->address, sizeof e->address, c->address.is_ip && strchr(c->address.host, ':')
							 ? "[%s]:%u" : "%s:%u",
		 c->address.host, c->address.port);
	if (sources_is_nts(e)) {
		struct tls_client_options o = { .ca_file = c->certificate_authority };
		char why[TLS_CREDS_ERR_MAX];
		int rc = tls_creds_new_client(&e->creds, &o, why, sizeof why);
		if (rc < 0) {
			snprintf(err, errlen, "source %s (line %d): %s", e->address, c->line, why);
			return rc;
		}
	}
	e->n_slots = sources_is_pool(e) && c->count > 0 ? c->count : 1;
	e->slots = calloc(e->n_slots, sizeof *e->slots);
	if (!e->slots) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void timer_closed(uv_handle_t *h)
{
	sources_release(((struct slot *)h->data)->e->m);
}

int sources_new(struct sources **out, uv_loop_t *loop, const struct config_daemon *cfg,
		sources_sample_cb on_sample, sources_now_fn now, void *ud, char *err,
		size_t errlen)
{
	struct sources *m = calloc(1, sizeof *m);
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->recv_log = (struct log_ratelimit)LOG_RATELIMIT_INIT(5, 20);
	m->loop = loop;
	m->cfg = cfg;
	m->on_sample = on_sample;
	m->now = now;
	m->ud = ud;
	m->pending = 1;
	m->entries = calloc(cfg->source_count + 1, sizeof *m->entries);
	int rc = m->entries ? 0 : -ENOMEM;
	if (rc < 0)
		snprintf(err, errlen, "out of memory");
	for (size_t i = 0; rc == 0 && i < cfg->source_count; i++) {
		rc = entry_init(m, &m->entries[i], &cfg->sources[i], err, errlen);
		m->n_entries = i + 1;
	}
	if (rc < 0) {
		sources_release(m);
		return rc;
	}
	for (size_t i = 0; i < m->n_entries; i++) {
		struct entry *e = &m->entries[i];
		for (size_t j = 0; j < e->n_slots; j++) {
			struct slot *sl = &e->slots[j];
			sl->e = e;
			sl->id = ++m->next_id;
			sl->backoff_s = 1;
			clock_filter_init(&sl->filter);
			uv_timer_init(loop, &sl->timer);
			sl->timer.data = sl;
			m->pending++;
			sl->state = SLOT_WAIT;
			arm_ms(sl, 0);
		}
	}
	*out = m;
	return 0;
}

size_t sources_count(const struct sources *m)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n_entries; i++)
		n += m->entries[i].n_slots;
	return n;
}

static const struct slot *slot_at(const struct sources *m, size_t index)
{
	for (size_t i = 0; i < m->n_entries; i++) {
		if (index < m->entries[i].n_slots)
			return &m->entries[i].slots[index];
		index -= m->entries[i].n_slots;
	}
	return NULL;
}

void sources_get(const struct sources *m, size_t index, struct source_info *out)
{
	const struct slot *sl = slot_at(m, index);
	memset(out, 0, sizeof *out);
	if (!sl)
		return;
	out->id = sl->id;
	out->name = sl->name;
	out->mode = sl->e->mode;
	out->last_ke_wall_s = sl->last_ke_wall_s;
	out->last_error = sl->last_error;
	out->candidate.id = sl->id;
	if (sl->src) {
		out->poll_reason = source_poll_reason(sl->src);
		out->reach = source_reach(sl->src);
		out->poll = source_poll(sl->src);
		out->cookies = source_cookies(sl->src);
	}
	out->last_rx_ms = sl->last_rx_ms;
	out->errors = sl->errors;
	out->pool = sources_is_pool(sl->e) ? sl->e->address : NULL;
	/* Selectable only while reachable and synchronised; the filter may still hold samples. */
	out->has_best = sl->state == SLOT_POLL && out->reach != 0 &&
			!source_unsync_reason(sl->src) &&
			clock_filter_candidate(&sl->filter, sl->id, source_poll_interval_s(sl->src),
					       &out->candidate);
}

void sources_clear_filters(struct sources *m)
{
	for (size_t i = 0; i < m->n_entries; i++)
		for (size_t j = 0; j < m->entries[i].n_slots; j++) {
			struct slot *sl = &m->entries[i].slots[j];
			clock_filter_init(&sl->filter);
			if (sl->src && sl->state == SLOT_POLL) {
				/* A burst refills the filters soon after the step. */
				source_restart_burst(sl->src);
				arm_ms(sl, random_u32() % 500);
			}
		}
}

json_t *sources_status(const struct sources *m)
{
	json_t *arr = json_array();
	size_t n = sources_count(m);
	for (size_t i = 0; arr && i < n; i++) {
		const struct slot *sl = slot_at(m, i);
		if (!sl)
			break; /* i < sources_count: cannot happen */
		struct source_info in;
		sources_get(m, i, &in);
		bool nts = sources_is_nts(sl->e);
		uint64_t now = uv_now(m->loop);
		json_t *o = json_pack(
			"{s:I, s:o, s:o, s:s, s:s, s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, "
			"s:o}",
			"id", (json_int_t)in.id, "name", in.name[0] ? json_string(in.name) : json_null(),
			"pool", in.pool ? json_string(in.pool) : json_null(),
			"mode", in.mode, "address", sl->e->address, "reach", in.reach, "poll", in.poll,
			"offset_s", in.has_best ? json_real(in.candidate.best.offset_s) : json_null(),
			"delay_s", in.has_best ? json_real(in.candidate.best.delay_s) : json_null(),
			"jitter_s", in.has_best ? json_real(in.candidate.jitter_s) : json_null(),
			"stratum", in.has_best ? json_integer(in.candidate.best.stratum) : json_null(),
			"cookies", nts ? json_integer(in.cookies) : json_null(), "last_key_exchange",
			nts && in.last_ke_wall_s ? json_integer((json_int_t)in.last_ke_wall_s)
						 : json_null(),
			"errors", (json_int_t)sl->errors, "last_error",
			in.last_error[0] ? json_string(in.last_error) : json_null(), "last_rx_s",
			in.last_rx_ms ? json_real((double)(now - in.last_rx_ms) / 1000.0)
				      : json_null());
		if (o && in.poll_reason)
			json_object_set_new(o, "poll_reason", json_string(in.poll_reason));
		json_array_append_new(arr, o);
	}
	return arr;
}

void sources_close(struct sources *m)
{
	if (!m || m->closing)
		return;
	m->closing = true;
	for (size_t i = 0; i < m->n_entries; i++) {
		struct entry *e = &m->entries[i];
		for (size_t j = 0; j < e->n_slots && e->slots[j].e; j++) {
			struct slot *sl = &e->slots[j];
			drop_lookup(sl);
			sources_ke_drop(sl);
			sources_drop_server(sl);
			uv_timer_stop(&sl->timer);
			uv_close((uv_handle_t *)&sl->timer, timer_closed);
		}
	}
	sources_release(m);
}
