#include "upstream_io_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "log.h"
#include "net.h"
#include "ntp_packet.h"
#include "nts_ntp.h"
#include "upstream_snapshot.h"

#define NTP_BUF 1024

/* ---- Per-upstream memory --------------------------------------------------------------------- */

static struct ups *ups_get(struct upstream_io *io, uint32_t id, bool create)
{
	for (struct ups *u = io->ups; u; u = u->next)
		if (u->id == id)
			return u;
	if (!create)
		return NULL;
	struct ups *u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->id = id;
	u->next = io->ups;
	io->ups = u;
	return u;
}

/* The AEADs a deep check covers: those the upstream lists, in its order, that the broker both
 * implements and can put in a Fixed Key request with the listed key length. */
static void deep_aeads_of(const struct ke_msg_response *resp, struct ups *u)
{
	u->n_deep_aeads = 0;
	for (size_t i = 0; i < resp->n_supported_algorithms; i++) {
		const struct ke_msg_algorithm *a = &resp->supported_algorithms[i];
		bool seen = false;
		for (size_t j = 0; j < u->n_deep_aeads; j++)
			seen |= u->deep_aeads[j] == a->id;
		if (seen || u->n_deep_aeads == UPSTREAM_DEEP_AEADS_MAX || a->key_len == 0 ||
		    aead_key_len(a->id) != a->key_len || ke_msg_aead_key_len(a->id) != a->key_len)
			continue;
		u->deep_aeads[u->n_deep_aeads++] = a->id;
	}
}

/* ---- Probes ---------------------------------------------------------------------------------- */

/* Error 0 and 1 to a well-formed pool request mean the upstream does not accept us as a pool:
 * seed-era servers answer Error 0 (the pool records are unknown to an unauthorised peer),
 * current ones Error 1 (PROTOCOL.md §3.5). */
/* An Error 0 or 1 to a probe's Support request means our pool credentials were refused; to a
 * deep check's Fixed Key request, which only an accepted pool gets to send, it is the upstream's
 * answer and no more. */
static const char *remote_reason(int parse_rc, const struct ke_msg_response *resp, bool support,
				 char *buf, size_t len)
{
	if (parse_rc == -EREMOTEIO && resp->has_error && resp->error <= 1 && support)
		snprintf(buf, len, "authentication refused (upstream answered Error %u)",
			 resp->error);
	else if (parse_rc == -EREMOTEIO && resp->has_error)
		snprintf(buf, len, "upstream answered Error %u", resp->error);
	else if (parse_rc == -EREMOTEIO)
		snprintf(buf, len, "upstream sent a warning");
	else
		snprintf(buf, len, "malformed response: %s", strerror(-parse_rc));
	return buf;
}

static void start_probe(struct upstream_io *io, uint32_t id, bool without_list);

/* The Supported Next Protocol List is left out for an upstream known not to understand it in
 * its current numbering (a seed-era server). */
static bool asks_list(struct upstream_io *io, uint32_t id)
{
	const struct ups *u = ups_get(io, id, false);
	return !(u && u->no_protocol_list && u->no_list_numbering == upstream_numbering(io->reg, id));
}

static void probe_done(void *ud, const struct upstream_io_result *r)
{
	struct probe *pr = ud;
	struct upstream_io *io = pr->io;
	uint32_t id = pr->id;
	bool asked_list = pr->asked_list, retry = pr->retry;
	int err = r->err, parse_rc = r->parse_rc;
	const struct ke_msg_response *resp = r->resp;
	char buf[REASON_MAX];
	free(pr);
	if (io->closing)
		return;
	uint64_t now = upstream_io_now_ms(io);
	struct ups *u = ups_get(io, id, true);
	if (err == 0 && parse_rc == -EREMOTEIO && resp->has_error &&
	    resp->error == KE_MSG_ERROR_UNRECOGNIZED_CRITICAL && asked_list) {
		/* Perhaps a seed-era server that does not know the Supported Next Protocol List
		 * (it speaks NTPv4 only): ask again without it, and remember that only if that
		 * answer is good. Error 0 can also mean it does not accept us as a pool. */
		start_probe(io, id, true);
		upstream_io_rearm(io);
		return;
	}
	if (err < 0) {
		upstream_probe_failed(io->reg, id, r->reason, now);
	} else if (parse_rc < 0) {
		upstream_probe_refused(io->reg, id,
				       remote_reason(parse_rc, resp, true, buf, sizeof buf), now);
	} else {
		if (u) {
			deep_aeads_of(resp, u);
			if (retry && !u->no_protocol_list)
				log_info("upstream %s does not know the Supported Next Protocol List; "
					 "probing without it", upstream_io_name_of(io, id));
			if (retry) {
				u->no_protocol_list = true;
				u->no_list_numbering = upstream_numbering(io->reg, id);
			}
		}
		upstream_probe_ok(io->reg, id, resp, now);
	}
	upstream_io_rearm(io);
}

static void start_probe(struct upstream_io *io, uint32_t id, bool retry)
{
	/* Authentication (up to 255 bytes), both Supported lists, Keep Alive and End. */
	uint8_t buf[320];
	bool list = !retry && asks_list(io, id);
	upstream_probe_started(io->reg, id, upstream_io_now_ms(io));
	int n = ke_msg_build_support_request(buf, sizeof buf, upstream_numbering(io->reg, id),
					     upstream_token(io->reg, id), list, true, true);
	struct probe *pr = n > 0 ? malloc(sizeof *pr) : NULL;
	if (!pr) {
		gnutls_memset(buf, 0, sizeof buf);
		upstream_probe_failed(io->reg, id, "cannot build a Support request",
				      upstream_io_now_ms(io));
		return;
	}
	pr->io = io;
	pr->id = id;
	pr->asked_list = list;
	pr->retry = retry;
	int rc = upstream_io_exchange(io, id, buf, (size_t)n, KE_MSG_REQUEST_SUPPORT, probe_done,
				      pr, NULL);
	gnutls_memset(buf, 0, sizeof buf);
	if (rc < 0) {
		free(pr);
		upstream_probe_failed(io->reg, id, strerror(-rc), upstream_io_now_ms(io));
	}
}

void upstream_check_start_probe(struct upstream_io *io, uint32_t id)
{
	start_probe(io, id, false);
}

/* ---- Deep checks ----------------------------------------------------------------------------- */

static const char *family_name(uint8_t family)
{
	return family == UPSTREAM_FAMILY_IPV4 ? "ipv4" : "ipv6";
}

static void deep_free(struct deep *d)
{
	struct upstream_io *io = d->io;
	gnutls_memset(d->c2s, 0, sizeof d->c2s);
	gnutls_memset(d->s2c, 0, sizeof d->s2c);
	free(d);
	upstream_io_release(io);
}

/* Records one result of the AEAD being checked (family 0: before any address). */
static void note(struct deep *d, uint8_t family, bool ok, const char *reason)
{
	if (d->n_out == UPSTREAM_DEEP_OUTCOMES_MAX)
		return;
	struct deep_outcome *o = &d->out[d->n_out++];
	o->aead = d->aeads[d->cur];
	o->family = family;
	o->ok = ok;
	/* Longer reasons are cut to what the result keeps. */
	snprintf(o->reason, sizeof o->reason, "%.*s", (int)(sizeof o->reason - 1), ok ? "" : reason);
}

static void close_ntp(struct deep *d)
{
	for (size_t i = 0; i < d->n_ntp; i++) {
		d->ntp[i].waiting = false;
		if (d->ntp[i].udp) {
			net_udp_close(d->ntp[i].udp);
			d->ntp[i].udp = NULL;
		}
	}
}

static void log_outcomes(struct deep *d, const char *reason)
{
	struct upstream_io *io = d->io;
	const char *name = upstream_io_name_of(io, d->id);
	uint16_t port = upstream_port(io->reg, d->id);
	if (d->n_out == 0)
		log_info("upstream %s:%u: deep check failed: %s", name, port,
			 reason ? reason : "failed");
	for (size_t i = 0; i < d->n_out; i++) {
		const struct deep_outcome *o = &d->out[i];
		if (o->ok)
			log_debug("upstream %s:%u: deep check of AEAD %u over %s passed", name,
				  port, o->aead, family_name(o->family));
		else if (o->family)
			log_info("upstream %s:%u: deep check of AEAD %u over %s failed: %s", name,
				 port, o->aead, family_name(o->family), o->reason);
		else
			log_info("upstream %s:%u: deep check of AEAD %u failed: %s", name, port,
				 o->aead, o->reason);
	}
}

/* Ends d: reports what it found (not while closing: shutdown says nothing about the upstream;
 * with no result, reason says why) and releases the stages still open. */
static void deep_end(struct deep *d, const char *reason)
{
	struct upstream_io *io = d->io;
	if (!d->linked)
		return;
	d->linked = false;
	for (struct deep **p = &io->deeps; *p; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	if (d->x) {
		upstream_io_cancel(d->x);
		d->x = NULL;
	}
	close_ntp(d);
	if (!io->closing) {
		struct upstream_deep_outcome v[UPSTREAM_DEEP_OUTCOMES_MAX];
		for (size_t i = 0; i < d->n_out; i++)
			v[i] = (struct upstream_deep_outcome){ .aead = d->out[i].aead,
							       .family = d->out[i].family,
							       .ok = d->out[i].ok,
							       .reason = d->out[i].reason };
		log_outcomes(d, reason);
		upstream_deep_result(io->reg, d->id, d->families, v, d->n_out, reason,
				     upstream_io_now_ms(io));
	}
	if (d->resolving)
		uv_cancel((uv_req_t *)&d->gai);
	else
		deep_free(d);
	if (!io->closing)
		upstream_io_rearm(io);
}

void upstream_check_deep_abort(struct deep *d)
{
	deep_end(d, NULL);
}

static void deep_ke_done(void *ud, const struct upstream_io_result *r);

/* Starts the Fixed Key exchange of aeads[cur], or of the next AEAD that can start; reports when
 * none is left. */
static void deep_next(struct deep *d)
{
	struct upstream_io *io = d->io;
	uint8_t req[KE_MSG_REQUEST_MAX];
	d->deadline = 0;
	for (; d->cur < d->n_aeads; d->cur++) {
		uint16_t aead = d->aeads[d->cur];
		d->key_len = aead_key_len(aead);
		if (gnutls_rnd(GNUTLS_RND_KEY, d->c2s, d->key_len) < 0 ||
		    gnutls_rnd(GNUTLS_RND_KEY, d->s2c, d->key_len) < 0) {
			note(d, 0, false, "no randomness");
			continue;
		}
		int n = ke_msg_build_fixed_key_request(
			req, sizeof req, upstream_numbering(io->reg, d->id),
			upstream_token(io->reg, d->id), d->c2s, d->s2c, d->key_len,
			KE_MSG_PROTOCOL_NTPV4, aead, true);
		if (n < 0) {
			gnutls_memset(req, 0, sizeof req);
			note(d, 0, false, "cannot build a Fixed Key request");
			continue;
		}
		int rc = upstream_io_exchange(io, d->id, req, (size_t)n, KE_MSG_REQUEST_FIXED_KEY,
					      deep_ke_done, d, &d->x);
		gnutls_memset(req, 0, sizeof req);
		if (rc == 0)
			return;
		char why[REASON_MAX];
		snprintf(why, sizeof why, "Fixed Key exchange: %s", strerror(-rc));
		note(d, 0, false, why);
	}
	deep_end(d, NULL);
}

/* The AEAD being checked is done: on to the next. */
static void deep_aead_done(struct deep *d)
{
	close_ntp(d);
	d->cur++;
	deep_next(d);
}

static bool any_waiting(const struct deep *d)
{
	for (size_t i = 0; i < d->n_ntp; i++)
		if (d->ntp[i].waiting)
			return true;
	return false;
}

void upstream_check_deep_expired(struct deep *d)
{
	if (d->resolving) {
		/* The resolver holds d->gai until it answers: the AEADs left would wait on it. */
		for (; d->cur < d->n_aeads; d->cur++)
			note(d, 0, false, "NTP server not resolved in time");
		deep_end(d, NULL);
		return;
	}
	for (size_t i = 0; i < d->n_ntp; i++)
		if (d->ntp[i].waiting)
			note(d, d->ntp[i].family, false, d->ntp[i].reason);
	deep_aead_done(d);
}

static void deep_recv(struct net_udp *u, const uint8_t *buf, size_t len,
		      const struct sockaddr *from, void *ud)
{
	struct deep_ntp *n = ud;
	struct deep *d = n->d;
	struct aead *s2c = NULL;
	struct nts_ntp_response out;
	(void)u;
	/* Anyone can send us datagrams: a bad one is noted and the real reply still awaited. */
	if (!d->linked || !n->waiting || !net_addr_equal(from, &n->to))
		return;
	int rc = aead_new(&s2c, d->aeads[d->cur], d->s2c, d->key_len);
	if (rc == 0)
		rc = nts_ntp_verify_response(buf, len, n->sent_ts, n->uid, sizeof n->uid, s2c,
					     &out);
	aead_free(s2c);
	gnutls_memset(&out, 0, sizeof out);
	if (rc == NTS_NTP_RESPONSE_OK) {
		note(d, n->family, true, NULL);
		n->waiting = false;
		net_udp_close(n->udp);
		n->udp = NULL;
		/* The last reply ends the stage, which may end d: nothing of n or d after it. */
		if (!any_waiting(d))
			deep_aead_done(d);
		return;
	}
	if (rc == NTS_NTP_RESPONSE_NAK)
		snprintf(n->reason, sizeof n->reason, "NTS NAK for fresh cookies");
	else
		snprintf(n->reason, sizeof n->reason, "NTP reply refused: %s", strerror(-rc));
}

/* Sends the NTS-protected request with cookie to n->to. Returns NULL, or why it failed. */
static const char *ntp_send(struct deep *d, struct deep_ntp *n, const struct ke_msg_cookie *cookie)
{
	struct upstream_io *io = d->io;
	struct sockaddr_storage local = { .ss_family = n->to.ss_family };
	uint8_t nonce[NTS_NTP_NONCE_LEN], pkt[NTP_BUF];
	char err[128];
	struct aead *c2s = NULL;

	if (net_udp_new(&n->udp, io->loop, (struct sockaddr *)&local, deep_recv, n, err,
			sizeof err) < 0) {
		n->udp = NULL;
		return "cannot open a UDP socket";
	}
	if (gnutls_rnd(GNUTLS_RND_NONCE, n->uid, sizeof n->uid) < 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, nonce, sizeof nonce) < 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, &n->sent_ts, sizeof n->sent_ts) < 0)
		return "no randomness";
	struct nts_ntp_request_params p = {
		.hdr = { .leap = NTP_PACKET_LEAP_UNSYNC, .version = NTP_PACKET_VERSION,
			 .mode = NTP_PACKET_MODE_CLIENT, .transmit_ts = n->sent_ts },
		.uid = { n->uid, sizeof n->uid },
		.cookie = { cookie->data, cookie->len },
		.placeholders = 0,
		.nonce = { nonce, sizeof nonce },
	};
	int len = aead_new(&c2s, d->aeads[d->cur], d->c2s, d->key_len);
	if (len == 0)
		len = nts_ntp_build_request(&p, c2s, pkt, sizeof pkt);
	aead_free(c2s);
	if (len < 0)
		return "cannot build the NTS request";
	if (net_udp_send(n->udp, pkt, (size_t)len, (struct sockaddr *)&n->to) < 0)
		return "cannot send the NTS request";
	snprintf(n->reason, sizeof n->reason, "no NTP reply");
	n->waiting = true;
	return NULL;
}

/* Sends one request to each address in ntp[], a cookie each (the last one again if the answer
 * had fewer), and waits for the replies up to upstream_timeout_ms. */
static void deep_send_all(struct deep *d)
{
	struct upstream_io *io = d->io;
	d->deadline = upstream_io_now_ms(io) + io->cfg->upstream_timeout_ms;
	for (size_t i = 0; i < d->n_ntp; i++) {
		struct deep_ntp *n = &d->ntp[i];
		if (n->to.ss_family == AF_INET)
			((struct sockaddr_in *)&n->to)->sin_port = htons(d->port);
		else
			((struct sockaddr_in6 *)&n->to)->sin6_port = htons(d->port);
		size_t c = i < d->n_cookies ? i : d->n_cookies - 1;
		const char *why = ntp_send(d, n, &d->cookies[c]);
		if (why) {
			note(d, n->family, false, why);
			if (n->udp) {
				net_udp_close(n->udp);
				n->udp = NULL;
			}
		}
	}
	if (!any_waiting(d)) {
		deep_aead_done(d);
		return;
	}
	upstream_io_rearm(io);
}

/* Takes addr as the address of its family in ntp[] unless that family has one already. */
static void add_address(struct deep *d, const struct sockaddr *addr, size_t addr_len)
{
	uint8_t family = addr->sa_family == AF_INET	 ? UPSTREAM_FAMILY_IPV4
			 : addr->sa_family == AF_INET6 ? UPSTREAM_FAMILY_IPV6
						       : 0;
	if (!family || addr_len > sizeof d->ntp[0].to)
		return;
	for (size_t i = 0; i < d->n_ntp; i++)
		if (d->ntp[i].family == family)
			return;
	struct deep_ntp *n = &d->ntp[d->n_ntp++];
	*n = (struct deep_ntp){ .d = d, .family = family };
	memcpy(&n->to, addr, addr_len);
	d->families |= family;
}

static void deep_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct deep *d = req->data;
	d->resolving = false;
	if (!d->linked) {
		uv_freeaddrinfo(res);
		deep_free(d);
		return;
	}
	d->n_ntp = 0;
	for (const struct addrinfo *a = status < 0 ? NULL : res; a; a = a->ai_next)
		add_address(d, a->ai_addr, a->ai_addrlen);
	uv_freeaddrinfo(res);
	if (d->n_ntp == 0) {
		d->server[0] = '\0';
		note(d, 0, false, "cannot resolve the NTP server");
		deep_aead_done(d);
		return;
	}
	deep_send_all(d);
}

static void deep_ke_done(void *ud, const struct upstream_io_result *r)
{
	struct deep *d = ud;
	struct upstream_io *io = d->io;
	const struct ke_msg_response *resp = r->resp;
	char buf[REASON_MAX + 32];
	d->x = NULL;
	if (r->err < 0) {
		snprintf(buf, sizeof buf, "Fixed Key exchange: %s", r->reason);
		note(d, 0, false, buf);
		deep_aead_done(d);
		return;
	}
	if (r->parse_rc < 0) {
		note(d, 0, false, remote_reason(r->parse_rc, resp, false, buf, sizeof buf));
		deep_aead_done(d);
		return;
	}
	if (!resp->has_protocol || resp->protocol != KE_MSG_PROTOCOL_NTPV4 || !resp->has_aead ||
	    resp->aead != d->aeads[d->cur] || resp->n_cookies == 0) {
		note(d, 0, false, "Fixed Key answer without the protocol, AEAD or cookies asked");
		deep_aead_done(d);
		return;
	}
	d->n_cookies = resp->n_cookies < 2 ? resp->n_cookies : 2;
	memcpy(d->cookies, resp->cookies, d->n_cookies * sizeof d->cookies[0]);
	const char *server = resp->has_server ? resp->server.name : upstream_io_name_of(io, d->id);
	d->port = resp->has_port ? resp->port : KE_MSG_PORT_DEFAULT;
	if (d->n_ntp > 0 && strcasecmp(d->server, server) == 0) {
		deep_send_all(d);
		return;
	}
	snprintf(d->server, sizeof d->server, "%s", server);
	d->n_ntp = 0;
	struct sockaddr_storage ss;
	if (net_addr_parse_ip(server, &ss)) {
		add_address(d, (struct sockaddr *)&ss,
			    ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
						    : sizeof(struct sockaddr_in6));
		deep_send_all(d);
		return;
	}
	/* Every family the name has, reachable from here or not: one the broker cannot reach is a
	 * failure of that family as far as the broker can tell. */
	d->gai.data = d;
	if (upstream_io_resolve(io->loop, &d->gai, deep_resolved, server, SOCK_DGRAM, 0) < 0) {
		d->server[0] = '\0';
		note(d, 0, false, "cannot resolve the NTP server");
		deep_aead_done(d);
		return;
	}
	d->resolving = true;
	d->deadline = upstream_io_now_ms(io) + io->cfg->upstream_timeout_ms;
	upstream_io_rearm(io);
}

void upstream_check_start_deep(struct upstream_io *io, uint32_t id)
{
	const struct ups *u = ups_get(io, id, false);
	upstream_deep_started(io->reg, id, upstream_io_now_ms(io));
	struct deep *d = calloc(1, sizeof *d);
	if (!d) {
		upstream_deep_result(io->reg, id, 0, NULL, 0, "out of memory",
				     upstream_io_now_ms(io));
		return;
	}
	d->io = io;
	d->id = id;
	d->linked = true;
	d->next = io->deeps;
	io->deeps = d;
	io->pending++;
	if (u) {
		memcpy(d->aeads, u->deep_aeads, u->n_deep_aeads * sizeof d->aeads[0]);
		d->n_aeads = u->n_deep_aeads;
	}
	if (d->n_aeads == 0) {
		deep_end(d, "upstream lists no AEAD the broker implements");
		return;
	}
	deep_next(d);
}
