#include "ke_server.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_msg.h"
#include "log.h"
#include "pool_proto.h"
#include "ratelimit.h"

/* The largest response we build: Next Protocol, AEAD, 8 cookies of AEAD 17, Port, a 255-byte
 * Server name, Keep Alive and End come to about 1.7 KB. */
#define RESPONSE_CAP 2048

struct ke_server_conn {
	struct tls_session *tls;
	const struct ke_server_config *cfg;
	struct keyset *const *keyset_slot;
	struct ke_server_stats *stats;
	uint64_t deadline;
	uint64_t session_deadline; /* the deadline once the handshake is done */
	bool established;
	bool done;
	bool kept_alive; /* a response with Keep Alive went out: later requests are reuse */
	struct ratelimit *rate_limit; /* borrowed; NULL: plain requests are not limited */
	struct sockaddr_storage peer_addr;
	char peer[64];
	/* A full buffer always lets ke_msg_frame decide (a message or -EMSGSIZE), so no slack is
	 * needed to detect an oversize request. */
	size_t req_len;
	uint8_t req[KE_MSG_REQUEST_MAX];
};

static void debug(const struct ke_server_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void debug(const struct ke_server_conn *c, const char *fmt, ...)
{
	if (!log_enabled(LOG_LEVEL_DEBUG))
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_debug("nts-ke %s: %s", c->peer[0] ? c->peer : "peer", msg);
}

int ke_server_conn_new(struct ke_server_conn **out, struct tls_creds *creds,
		       const struct ke_server_config *cfg, struct keyset *const *keyset_slot,
		       struct ke_server_stats *stats, uint64_t now_ms)
{
	struct ke_server_conn *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	int rc = tls_session_new_server(&c->tls, creds);
	if (rc < 0)
		goto fail;
	c->cfg = cfg;
	c->keyset_slot = keyset_slot;
	c->stats = stats;
	c->session_deadline = now_ms + cfg->timeout_ms;
	c->deadline = c->session_deadline;
	if (cfg->handshake_timeout_ms && now_ms + cfg->handshake_timeout_ms < c->deadline)
		c->deadline = now_ms + cfg->handshake_timeout_ms;
	stats->sessions++;
	*out = c;
	return 0;

fail:
	free(c);
	return rc;
}

void ke_server_conn_free(struct ke_server_conn *c)
{
	if (!c)
		return;
	tls_free(c->tls);
	/* A pool's Fixed Key request may still sit in the buffer. */
	gnutls_memset(c->req, 0, sizeof c->req);
	free(c);
}

void ke_server_conn_set_rate_limit(struct ke_server_conn *c, struct ratelimit *rl,
				   const struct sockaddr *peer)
{
	c->rate_limit = rl;
	memset(&c->peer_addr, 0, sizeof c->peer_addr);
	memcpy(&c->peer_addr, peer,
	       peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					   : sizeof(struct sockaddr_in));
}

void ke_server_conn_set_peer(struct ke_server_conn *c, const char *peer)
{
	snprintf(c->peer, sizeof c->peer, "%s", peer);
}

/* Sends one whole message with a single TLS write; without keep-alive the session is closed
 * after it and the connection is done. Returns 0 or the negative errno of the write. */
static int respond(struct ke_server_conn *c, const uint8_t *msg, size_t len, bool keep_alive)
{
	int rc = tls_write(c->tls, msg, len);
	if (rc < 0) {
		debug(c, "response not sent: %s", strerror(-rc));
		c->done = true;
		return rc;
	}
	if (keep_alive) {
		c->kept_alive = true;
		return 0;
	}
	rc = tls_close(c->tls);
	if (rc < 0)
		debug(c, "close_notify not sent: %s", strerror(-rc));
	c->done = true;
	return 0;
}

static void send_error(struct ke_server_conn *c, uint16_t code)
{
	uint8_t msg[16];
	int len = ke_msg_build_error(msg, sizeof msg, c->cfg->numbering, code);
	if (len < 0) {
		log_error("nts-ke: cannot build Error %u: %s", code, strerror(-len));
		c->done = true;
		return;
	}
	if (respond(c, msg, (size_t)len, false) == 0)
		c->stats->errors[code]++;
}

/* The first client protocol and AEAD we implement, in the client's order (PROTOCOL.md §3.1).
 * Answers no overlap itself and returns false then. */
static bool negotiate(struct ke_server_conn *c, const struct ke_msg_request *req,
		      uint16_t *protocol, uint16_t *aead)
{
	uint8_t msg[32];
	int len;
	size_t i;
	for (i = 0; i < req->n_protocols; i++)
		if (req->protocols[i] == KE_MSG_PROTOCOL_NTPV4)
			break;
	if (i == req->n_protocols) {
		debug(c, "no common protocol");
		len = ke_msg_build_no_overlap(msg, sizeof msg, c->cfg->numbering, false, 0);
		goto no_overlap;
	}
	*protocol = req->protocols[i];
	for (i = 0; i < req->n_aeads; i++)
		if (aead_supported(req->aeads[i]))
			break;
	if (i == req->n_aeads) {
		debug(c, "no common AEAD");
		len = ke_msg_build_no_overlap(msg, sizeof msg, c->cfg->numbering, true, *protocol);
		goto no_overlap;
	}
	*aead = req->aeads[i];
	return true;

no_overlap:
	if (len < 0) {
		log_error("nts-ke: cannot build a no-overlap response: %s", strerror(-len));
		send_error(c, KE_MSG_ERROR_INTERNAL);
		return false;
	}
	if (respond(c, msg, (size_t)len, false) == 0)
		c->stats->no_overlap++;
	return false;
}

/* Eight cookies for the keys c2s/s2c and the success response, sent. Returns 0, or a negative
 * errno after which the caller answers Error 2. */
static int send_cookies(struct ke_server_conn *c, uint16_t protocol, uint16_t aead,
			const uint8_t *c2s, const uint8_t *s2c, size_t key_len, bool keep_alive)
{
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	uint8_t msg[RESPONSE_CAP];
	if (!*c->keyset_slot) {
		log_error("nts-ke: no cookie keyset loaded");
		return -ENOKEY;
	}
	struct keyset *ks = keyset_ref(*c->keyset_slot);
	int rc = 0;
	for (size_t i = 0; i < KE_MSG_MAX_COOKIES; i++) {
		rc = keyset_seal_cookie_random(ks, aead, c2s, s2c, key_len, cookies[i].data,
					       sizeof cookies[i].data);
		if (rc < 0) {
			log_error("nts-ke: sealing a cookie failed: %s", strerror(-rc));
			goto out;
		}
		cookies[i].len = (size_t)rc;
	}
	struct ke_msg_success s = { .protocol = protocol, .aead = aead, .cookies = cookies,
				    .n_cookies = KE_MSG_MAX_COOKIES, .port = c->cfg->ntp_port,
				    .server = c->cfg->ntp_server, .keep_alive = keep_alive };
	rc = ke_msg_build_success(msg, sizeof msg, c->cfg->numbering, &s);
	if (rc < 0) {
		log_error("nts-ke: cannot build the response: %s", strerror(-rc));
		goto out;
	}
	if (respond(c, msg, (size_t)rc, keep_alive) == 0)
		c->stats->completed++;
	rc = 0;
out:
	keyset_unref(ks);
	return rc;
}

static void answer_plain(struct ke_server_conn *c, const struct ke_msg_request *req)
{
	uint16_t protocol, aead;
	uint8_t c2s[AEAD_MAX_KEY_LEN], s2c[AEAD_MAX_KEY_LEN];
	if (!negotiate(c, req, &protocol, &aead))
		return;
	size_t key_len = aead_key_len(aead);
	int rc = tls_export_nts_keys(c->tls, protocol, aead, key_len, c2s, s2c);
	if (rc < 0)
		log_error("nts-ke: key export failed: %s", strerror(-rc));
	else
		rc = send_cookies(c, protocol, aead, c2s, s2c, key_len, false);
	gnutls_memset(c2s, 0, sizeof c2s);
	gnutls_memset(s2c, 0, sizeof s2c);
	if (rc < 0)
		send_error(c, KE_MSG_ERROR_INTERNAL);
	else
		debug(c, "key exchange done: protocol %u, AEAD %u", protocol, aead);
}

static void answer_fixed_key(struct ke_server_conn *c, const struct ke_msg_request *req,
			     bool keep_alive)
{
	uint16_t protocol, aead;
	c->stats->pool_fixed_key++;
	if (!negotiate(c, req, &protocol, &aead))
		return;
	if (send_cookies(c, protocol, aead, req->fixed_c2s, req->fixed_s2c, req->fixed_key_len,
			 keep_alive) < 0)
		send_error(c, KE_MSG_ERROR_INTERNAL);
	else
		debug(c, "pool Fixed Key answered: AEAD %u%s", aead,
		      keep_alive ? ", kept alive" : "");
}

static void answer_support(struct ke_server_conn *c, const struct ke_msg_request *req,
			   bool keep_alive)
{
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	static const struct ke_msg_algorithm algs[] = {
		{ AEAD_AES_SIV_CMAC_256, 32 },
		{ AEAD_AES_SIV_CMAC_512, 64 },
	};
	struct ke_msg_support s = { .protocols = req->want_protocols, .protocol_ids = protocols,
				    .n_protocols = 1, .algorithms = req->want_algorithms,
				    .algs = algs, .n_algs = 2, .keep_alive = keep_alive };
	uint8_t msg[128];
	c->stats->pool_support++;
	int len = ke_msg_build_support_response(msg, sizeof msg, c->cfg->numbering, &s);
	if (len < 0) {
		log_error("nts-ke: cannot build the Support response: %s", strerror(-len));
		send_error(c, KE_MSG_ERROR_INTERNAL);
		return;
	}
	respond(c, msg, (size_t)len, keep_alive);
	debug(c, "pool Support answered%s", keep_alive ? ", kept alive" : "");
}

/* Counts who a pool request was authorised as, or why it was refused. */
static bool authorised(struct ke_server_conn *c, const struct ke_msg_request *req,
		       struct pool_proto_verdict *v)
{
	const struct pool_tokens *tokens = c->cfg->tokens ? *c->cfg->tokens : NULL;
	bool pinned = c->cfg->creds ? tls_peer_is_pinned_by(c->tls, *c->cfg->creds)
				    : tls_peer_is_authorised_pool(c->tls);
	pool_proto_authorise(tokens, pinned, req, v);
	if (v->token_refused)
		c->stats->token_refused++;
	if (!v->allowed) {
		c->stats->unauthorised++;
		debug(c, "request refused with Error %u: %s", v->error, v->reason);
		send_error(c, v->error);
		return false;
	}
	if (req->kind != KE_MSG_REQUEST_PLAIN) {
		if (v->identity == POOL_IDENTITY_TOKEN)
			c->stats->pool_auth_token++;
		else
			c->stats->pool_auth_certificate++;
	}
	return true;
}

/* One complete request of len bytes at the start of the buffer. */
static void handle_request(struct ke_server_conn *c, size_t len, uint64_t now_ms)
{
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	struct pool_proto_verdict v;
	if (c->kept_alive)
		c->stats->keep_alive_reuse++;
	if (ke_msg_parse_request(c->req, len, c->cfg->numbering, &req, &rej) < 0) {
		debug(c, "request refused with Error %u: %s", rej.code, rej.reason);
		send_error(c, rej.code);
		return;
	}
	if (!authorised(c, &req, &v)) {
		ke_msg_request_wipe(&req);
		return;
	}
	switch (req.kind) {
	case KE_MSG_REQUEST_PLAIN:
		/* Keys come from the TLS exporter, so a second plain exchange on one session would
		 * hand out the same keys again (PROTOCOL.md §4.4: no export on kept connections). */
		if (c->kept_alive) {
			debug(c, "plain request on a kept-alive connection refused with Error 1");
			send_error(c, KE_MSG_ERROR_BAD_REQUEST);
			break;
		}
		/* Only plain key exchanges take a token: the pool's own requests (its probes and
		 * Fixed Key requests, all from the broker's address) must not use up the clients'
		 * share of that address, nor be refused by it. */
		if (c->rate_limit &&
		    !ratelimit_allow(c->rate_limit, (const struct sockaddr *)&c->peer_addr, now_ms)) {
			c->stats->rate_limited++;
			debug(c, "over the client rate limit: Error 2");
			send_error(c, KE_MSG_ERROR_INTERNAL);
			break;
		}
		answer_plain(c, &req);
		break;
	case KE_MSG_REQUEST_SUPPORT:
		answer_support(c, &req, v.keep_alive);
		break;
	case KE_MSG_REQUEST_FIXED_KEY:
		answer_fixed_key(c, &req, v.keep_alive);
		break;
	}
	ke_msg_request_wipe(&req);
}

/* Answers every complete request buffered and reads more application data until TLS has none. */
static void serve(struct ke_server_conn *c, uint64_t now_ms)
{
	while (!c->done) {
		int framed = ke_msg_frame(c->req, c->req_len, KE_MSG_REQUEST_MAX);
		if (framed < 0) {
			debug(c, "request refused with Error 1: %s",
			      framed == -EMSGSIZE ? "over 4096 bytes"
						  : "End of Message with a body");
			send_error(c, KE_MSG_ERROR_BAD_REQUEST);
			return;
		}
		if (framed > 0) {
			size_t n = (size_t)framed;
			handle_request(c, n, now_ms);
			if (c->done)
				return;
			/* Pipelined bytes of the next request move up; no stale copy stays. */
			memmove(c->req, c->req + n, c->req_len - n);
			c->req_len -= n;
			gnutls_memset(c->req + c->req_len, 0, n);
			c->deadline = now_ms + (c->req_len > 0 ? c->cfg->timeout_ms
							     : KE_SERVER_KEEP_ALIVE_IDLE_MS);
			continue;
		}
		ssize_t got = tls_read(c->tls, c->req + c->req_len, sizeof c->req - c->req_len);
		if (got == -EAGAIN)
			return;
		if (got == 0) {
			ke_server_conn_eof(c, now_ms);
			return;
		}
		if (got < 0) {
			debug(c, "TLS read failed: %s", tls_reason(c->tls));
			c->done = true;
			return;
		}
		/* The first byte of a request on an idle kept-alive connection starts its deadline. */
		if (c->kept_alive && c->req_len == 0)
			c->deadline = now_ms + c->cfg->timeout_ms;
		c->req_len += (size_t)got;
	}
}

int ke_server_conn_input(struct ke_server_conn *c, const uint8_t *buf, size_t len,
			 uint64_t now_ms)
{
	if (c->done)
		return 0;
	int rc = tls_feed(c->tls, buf, len);
	if (rc < 0) {
		debug(c, "input over the TLS queue limit");
		c->done = true;
		return rc;
	}
	if (!c->established) {
		rc = tls_step(c->tls);
		if (rc < 0) {
			c->stats->tls_failures++;
			debug(c, "TLS handshake failed: %s", tls_reason(c->tls));
			c->done = true;
			return 0;
		}
		if (rc == TLS_HANDSHAKING)
			return 0;
		c->established = true;
		c->deadline = c->session_deadline;
		debug(c, "TLS 1.3 established%s",
		      tls_peer_is_authorised_pool(c->tls) ? " with an authorised pool" : "");
	}
	serve(c, now_ms);
	return 0;
}

/* Error 1 for a request cut short, else a plain close_notify; either way the end. */
static void finish(struct ke_server_conn *c)
{
	if (c->req_len > 0) {
		send_error(c, KE_MSG_ERROR_BAD_REQUEST);
		return;
	}
	tls_close(c->tls);
	c->done = true;
}

void ke_server_conn_eof(struct ke_server_conn *c, uint64_t now_ms)
{
	(void)now_ms;
	if (c->done)
		return;
	debug(c, "peer closed%s", c->req_len ? " in the middle of a request" : "");
	if (c->established)
		finish(c);
	c->done = true;
}

void ke_server_conn_timeout(struct ke_server_conn *c, uint64_t now_ms)
{
	(void)now_ms;
	if (c->done)
		return;
	/* An idle kept-alive connection has answered everything: its end is no timeout. */
	if (!c->kept_alive || c->req_len > 0) {
		c->stats->timeouts++;
		debug(c, "timed out %s", !c->established ? "in the handshake"
					 : c->req_len ? "in the middle of a request"
						      : "waiting for a request");
	}
	if (c->established)
		finish(c);
	c->done = true;
}

void ke_server_conn_output(const struct ke_server_conn *c, const uint8_t **ptr, size_t *len)
{
	tls_output(c->tls, ptr, len);
}

void ke_server_conn_output_consume(struct ke_server_conn *c, size_t n)
{
	tls_output_consume(c->tls, n);
}

uint64_t ke_server_conn_deadline(const struct ke_server_conn *c)
{
	return c->done ? 0 : c->deadline;
}

bool ke_server_conn_handshaking(const struct ke_server_conn *c)
{
	return !c->established && !c->done;
}

bool ke_server_conn_idle(const struct ke_server_conn *c)
{
	return !c->done && c->kept_alive && c->req_len == 0;
}

bool ke_server_conn_done(const struct ke_server_conn *c)
{
	return c->done;
}

const char *ke_server_conn_reason(const struct ke_server_conn *c)
{
	return tls_reason(c->tls);
}
