#include "upstream_io_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "log.h"
#include "net.h"
#include "ntp_packet.h"
#include "nts_ntp.h"

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

/* The AEAD a deep check uses: 15 if the upstream supports it, else 17, else none. */
static uint16_t deep_aead_of(const struct ke_msg_response *resp)
{
	static const uint16_t prefs[] = { AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_512 };
	for (size_t p = 0; p < sizeof prefs / sizeof prefs[0]; p++)
		for (size_t i = 0; i < resp->n_supported_algorithms; i++)
			if (resp->supported_algorithms[i].id == prefs[p] &&
			    resp->supported_algorithms[i].key_len == aead_key_len(prefs[p]))
				return prefs[p];
	return 0;
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
		upstream_probe_failed(io->reg, id, remote_reason(parse_rc, resp, true, buf, sizeof buf),
				      now);
	} else {
		if (u) {
			u->deep_aead = deep_aead_of(resp);
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

static void deep_free(struct deep *d)
{
	struct upstream_io *io = d->io;
	gnutls_memset(d->c2s, 0, sizeof d->c2s);
	gnutls_memset(d->s2c, 0, sizeof d->s2c);
	free(d);
	upstream_io_release(io);
}

/* Reports the result once (not while closing: shutdown says nothing about the upstream) and
 * releases the stages still open. */
void upstream_check_deep_finish(struct deep *d, bool ok, const char *reason)
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
	if (d->udp) {
		net_udp_close(d->udp);
		d->udp = NULL;
	}
	if (!io->closing) {
		if (ok)
			log_debug("upstream %s:%u: deep check passed",
				  upstream_io_name_of(io, d->id), upstream_port(io->reg, d->id));
		else
			log_info("upstream %s:%u: deep check failed: %s",
				 upstream_io_name_of(io, d->id), upstream_port(io->reg, d->id),
				 reason);
		upstream_deep_result(io->reg, d->id, ok, ok ? NULL : reason,
				     upstream_io_now_ms(io));
	}
	if (d->resolving)
		uv_cancel((uv_req_t *)&d->gai);
	else
		deep_free(d);
	if (!io->closing)
		upstream_io_rearm(io);
}

static void deep_recv(struct net_udp *u, const uint8_t *buf, size_t len,
		      const struct sockaddr *from, void *ud)
{
	struct deep *d = ud;
	struct aead *s2c = NULL;
	struct nts_ntp_response out;
	(void)u;
	/* Anyone can send us datagrams: a bad one is noted and the real reply still awaited. */
	if (!d->linked || !net_addr_equal(from, &d->to))
		return;
	int rc = aead_new(&s2c, d->aead, d->s2c, d->key_len);
	if (rc == 0)
		rc = nts_ntp_verify_response(buf, len, d->sent_ts, d->uid, sizeof d->uid, s2c, &out);
	aead_free(s2c);
	gnutls_memset(&out, 0, sizeof out);
	if (rc == NTS_NTP_RESPONSE_OK) {
		upstream_check_deep_finish(d, true, NULL);
		return;
	}
	if (rc == NTS_NTP_RESPONSE_NAK)
		snprintf(d->reason, sizeof d->reason, "NTS NAK for fresh cookies");
	else
		snprintf(d->reason, sizeof d->reason, "NTP reply refused: %s", strerror(-rc));
}

/* Sends the NTS-protected request to d->to. Returns 0, or a reason for the failure. */
static const char *deep_send(struct deep *d)
{
	struct upstream_io *io = d->io;
	struct sockaddr_storage local = { .ss_family = d->to.ss_family };
	uint8_t nonce[NTS_NTP_NONCE_LEN], pkt[NTP_BUF];
	char err[128];
	struct aead *c2s = NULL;

	if (net_udp_new(&d->udp, io->loop, (struct sockaddr *)&local, deep_recv, d, err,
			sizeof err) < 0) {
		d->udp = NULL;
		return "cannot open a UDP socket";
	}
	if (gnutls_rnd(GNUTLS_RND_NONCE, d->uid, sizeof d->uid) < 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, nonce, sizeof nonce) < 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, &d->sent_ts, sizeof d->sent_ts) < 0)
		return "no randomness";
	struct nts_ntp_request_params p = {
		.hdr = { .leap = NTP_PACKET_LEAP_UNSYNC, .version = NTP_PACKET_VERSION,
			 .mode = NTP_PACKET_MODE_CLIENT, .transmit_ts = d->sent_ts },
		.uid = { d->uid, sizeof d->uid },
		.cookie = { d->cookie.data, d->cookie.len },
		.placeholders = 0,
		.nonce = { nonce, sizeof nonce },
	};
	int n = aead_new(&c2s, d->aead, d->c2s, d->key_len);
	if (n == 0)
		n = nts_ntp_build_request(&p, c2s, pkt, sizeof pkt);
	aead_free(c2s);
	if (n < 0)
		return "cannot build the NTS request";
	if (net_udp_send(d->udp, pkt, (size_t)n, (struct sockaddr *)&d->to) < 0)
		return "cannot send the NTS request";
	d->deadline = upstream_io_now_ms(io) + io->cfg->upstream_timeout_ms;
	snprintf(d->reason, sizeof d->reason, "no NTP reply");
	upstream_io_rearm(io);
	return NULL;
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
	if (status < 0 || !res) {
		uv_freeaddrinfo(res);
		upstream_check_deep_finish(d, false, "cannot resolve the NTP server");
		return;
	}
	uint16_t port = ((struct sockaddr_in *)&d->to)->sin_port;
	memcpy(&d->to, res->ai_addr, res->ai_addrlen);
	uv_freeaddrinfo(res);
	if (d->to.ss_family == AF_INET)
		((struct sockaddr_in *)&d->to)->sin_port = port;
	else
		((struct sockaddr_in6 *)&d->to)->sin6_port = port;
	const char *why = deep_send(d);
	if (why)
		upstream_check_deep_finish(d, false, why);
}

static void deep_ke_done(void *ud, const struct upstream_io_result *r)
{
	struct deep *d = ud;
	struct upstream_io *io = d->io;
	int err = r->err, parse_rc = r->parse_rc;
	const struct ke_msg_response *resp = r->resp;
	char buf[REASON_MAX + 32];
	d->x = NULL;
	if (err < 0) {
		snprintf(buf, sizeof buf, "Fixed Key exchange: %s", r->reason);
		upstream_check_deep_finish(d, false, buf);
		return;
	}
	if (parse_rc < 0) {
		upstream_check_deep_finish(d, false,
					   remote_reason(parse_rc, resp, false, buf, sizeof buf));
		return;
	}
	if (!resp->has_protocol || resp->protocol != KE_MSG_PROTOCOL_NTPV4 || !resp->has_aead ||
	    resp->aead != d->aead || resp->n_cookies == 0) {
		upstream_check_deep_finish(
			d, false, "Fixed Key answer without the protocol, AEAD or cookies asked");
		return;
	}
	d->cookie = resp->cookies[0];
	const char *server = resp->has_server ? resp->server.name : upstream_io_name_of(io, d->id);
	uint16_t port = resp->has_port ? resp->port : KE_MSG_PORT_DEFAULT;
	d->deadline = upstream_io_now_ms(io) + io->cfg->upstream_timeout_ms;
	if (net_addr_parse_ip(server, &d->to)) {
		if (d->to.ss_family == AF_INET)
			((struct sockaddr_in *)&d->to)->sin_port = htons(port);
		else
			((struct sockaddr_in6 *)&d->to)->sin6_port = htons(port);
		const char *why = deep_send(d);
		if (why)
			upstream_check_deep_finish(d, false, why);
		return;
	}
	/* Keep the port where deep_resolved finds it (same offset in both families). */
	memset(&d->to, 0, sizeof d->to);
	((struct sockaddr_in *)&d->to)->sin_port = htons(port);
	d->gai.data = d;
	if (upstream_io_resolve(io->loop, &d->gai, deep_resolved, server, SOCK_DGRAM) < 0) {
		upstream_check_deep_finish(d, false, "cannot resolve the NTP server");
		return;
	}
	d->resolving = true;
	upstream_io_rearm(io);
}

void upstream_check_start_deep(struct upstream_io *io, uint32_t id)
{
	uint8_t req[KE_MSG_REQUEST_MAX];
	const struct ups *u = ups_get(io, id, false);
	upstream_deep_started(io->reg, id, upstream_io_now_ms(io));
	struct deep *d = calloc(1, sizeof *d);
	if (!d) {
		upstream_deep_result(io->reg, id, false, "out of memory", upstream_io_now_ms(io));
		return;
	}
	d->io = io;
	d->id = id;
	d->linked = true;
	d->next = io->deeps;
	io->deeps = d;
	io->pending++;
	d->aead = u ? u->deep_aead : 0;
	d->key_len = aead_key_len(d->aead);
	if (d->key_len == 0) {
		upstream_check_deep_finish(d, false, "upstream supports neither AEAD 15 nor 17");
		return;
	}
	if (gnutls_rnd(GNUTLS_RND_KEY, d->c2s, d->key_len) < 0 ||
	    gnutls_rnd(GNUTLS_RND_KEY, d->s2c, d->key_len) < 0) {
		upstream_check_deep_finish(d, false, "no randomness");
		return;
	}
	int n = ke_msg_build_fixed_key_request(req, sizeof req, upstream_numbering(io->reg, id),
					       upstream_token(io->reg, id), d->c2s, d->s2c,
					       d->key_len, KE_MSG_PROTOCOL_NTPV4, d->aead, true);
	if (n < 0) {
		gnutls_memset(req, 0, sizeof req);
		upstream_check_deep_finish(d, false, "cannot build a Fixed Key request");
		return;
	}
	int rc = upstream_io_exchange(io, id, req, (size_t)n, KE_MSG_REQUEST_FIXED_KEY,
				      deep_ke_done, d, &d->x);
	gnutls_memset(req, 0, sizeof req);
	if (rc < 0) {
		char why[REASON_MAX + 32];
		snprintf(why, sizeof why, "Fixed Key exchange: %s", strerror(-rc));
		upstream_check_deep_finish(d, false, why);
	}
}
