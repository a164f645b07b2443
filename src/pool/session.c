#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

#include "log.h"
#include "pool_proto.h"

/* Authentication (255), Fixed Key(2 × 64), Next Protocol, AEAD, Keep Alive and End come to
 * 411 bytes. */
#define FIXED_KEY_CAP 512
/* Next Protocol, AEAD, 8 cookies of 256 bytes, Port, a 255-byte Server and End: 2361 bytes. */
#define RESPONSE_CAP 2400

enum phase {
	PHASE_REQUEST, /* handshake, then reading the client's request */
	PHASE_OFFERED, /* a Fixed Key request waits for the glue to take it */
	PHASE_WAITING, /* the glue runs the exchange; its report is due */
	PHASE_DONE,
};

struct pool_session {
	struct tls_session *tls;
	const struct pool_session_config *cfg;
	const struct pool_session_upstreams *ups;
	struct pool_session_stats *stats; /* &uncounted until pool_session_admitted */
	struct pool_session_stats *admitted_stats;
	struct pool_session_stats uncounted;
	uint64_t deadline;
	uint64_t session_deadline; /* the deadline once the handshake is done */
	enum phase phase;
	bool established;
	bool rate_limited; /* answer Error 2 without asking an upstream */
	char sni[KE_MSG_NAME_MAX + 1]; /* "" when the client sent none */
	const char *why; /* how the session ended, for logs; "" until then */
	char peer[64];

	uint32_t tried[POOL_SESSION_MAX_ATTEMPTS];
	size_t n_tried;
	uint32_t upstream_id; /* the candidate whose exchange the glue took */

	/* The current candidate: what was asked of it and its configured name, copied because the
	 * registry's pointers do not outlive the pick. */
	uint32_t cand_id;
	uint16_t protocol;
	uint16_t aead;
	char cand_name[KE_MSG_NAME_MAX + 1];
	size_t fixed_len;
	uint8_t fixed[FIXED_KEY_CAP]; /* secret: the client's keys while an exchange is out */

	struct ke_msg_request req; /* parsed; kept for every pick (deny set, client order) */
	/* A full buffer always lets ke_msg_frame decide (a message or -EMSGSIZE). */
	size_t req_len;
	uint8_t req_buf[KE_MSG_REQUEST_MAX];
};

static void debug(const struct pool_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void debug(const struct pool_session *s, const char *fmt, ...)
{
	if (!log_enabled(LOG_LEVEL_DEBUG))
		return;
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_debug("pool %s: %s", s->peer[0] ? s->peer : "client", msg);
}

int pool_session_new(struct pool_session **out, struct tls_creds *creds,
		     const struct pool_session_config *cfg,
		     const struct pool_session_upstreams *ups, struct pool_session_stats *stats,
		     uint64_t now_ms)
{
	if (cfg->max_attempts == 0 || cfg->max_attempts > POOL_SESSION_MAX_ATTEMPTS || !ups->pick)
		return -EINVAL;
	struct pool_session *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	int rc = tls_session_new_server(&s->tls, creds);
	if (rc < 0)
		goto fail;
	s->cfg = cfg;
	s->ups = ups;
	s->admitted_stats = stats;
	s->stats = &s->uncounted;
	s->session_deadline = now_ms + cfg->timeout_ms;
	s->deadline = s->session_deadline;
	if (cfg->handshake_timeout_ms && now_ms + cfg->handshake_timeout_ms < s->deadline)
		s->deadline = now_ms + cfg->handshake_timeout_ms;
	s->phase = PHASE_REQUEST;
	s->why = "";
	s->upstream_id = UINT32_MAX;
	s->cand_id = UINT32_MAX;
	*out = s;
	return 0;

fail:
	free(s);
	return rc;
}

static void wipe_fixed(struct pool_session *s)
{
	gnutls_memset(s->fixed, 0, sizeof s->fixed);
	s->fixed_len = 0;
}

void pool_session_free(struct pool_session *s)
{
	if (!s)
		return;
	tls_free(s->tls);
	wipe_fixed(s);
	ke_msg_request_wipe(&s->req);
	gnutls_memset(s->req_buf, 0, sizeof s->req_buf);
	free(s);
}

void pool_session_admitted(struct pool_session *s)
{
	if (s->stats != &s->uncounted)
		return;
	s->stats = s->admitted_stats;
	s->stats->accepted++;
}

void pool_session_set_peer(struct pool_session *s, const char *peer)
{
	snprintf(s->peer, sizeof s->peer, "%s", peer);
}

void pool_session_refuse_rate_limited(struct pool_session *s)
{
	s->rate_limited = true;
}

const char *pool_session_upstream_name(const struct pool_session *s)
{
	return s->upstream_id == UINT32_MAX ? "" : s->cand_name;
}

static void finish(struct pool_session *s, const char *why)
{
	s->phase = PHASE_DONE;
	s->why = why;
	/* The glue copied the request when it took it; a late report has nothing to read. */
	wipe_fixed(s);
}

/* One whole message in a single TLS write, then close_notify: the session is done either way.
 * Returns 0 or the negative errno of the write. */
static int respond(struct pool_session *s, const uint8_t *msg, size_t len, const char *why)
{
	finish(s, why);
	int rc = tls_write(s->tls, msg, len);
	if (rc < 0) {
		debug(s, "response not sent: %s", strerror(-rc));
		return rc;
	}
	rc = tls_close(s->tls);
	if (rc < 0)
		debug(s, "close_notify not sent: %s", strerror(-rc));
	return 0;
}

/* Error(code), End; *counter records why. Our own failures after a candidate was chosen count
 * as failed_upstream: the client sees the same Error 2. */
static void send_error(struct pool_session *s, uint16_t code, uint64_t *counter, const char *why)
{
	uint8_t msg[16];
	(*counter)++;
	int len = ke_msg_build_error(msg, sizeof msg, s->cfg->numbering, code);
	if (len < 0) {
		log_error("pool: cannot build Error %u: %s", code, strerror(-len));
		finish(s, why);
		return;
	}
	debug(s, "Error %u: %s", code, why);
	respond(s, msg, (size_t)len, why);
}

static void send_no_overlap(struct pool_session *s, bool has_protocol, uint16_t protocol)
{
	uint8_t msg[32];
	int len = ke_msg_build_no_overlap(msg, sizeof msg, s->cfg->numbering, has_protocol,
					  protocol);
	if (len < 0) {
		log_error("pool: cannot build a no-overlap response: %s", strerror(-len));
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_upstream, "internal error");
		return;
	}
	s->stats->no_overlap++;
	debug(s, "no common %s with upstream %u", has_protocol ? "AEAD" : "protocol", s->cand_id);
	respond(s, msg, (size_t)len, "no overlap");
}

static bool contains(const uint16_t *ids, size_t n, uint16_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

enum verdict {
	CANDIDATE_OK,	    /* s->fixed holds the request for it */
	CANDIDATE_BROKEN,   /* unusable lists or name: try the next one */
	CANDIDATE_ANSWERED, /* the client got its final answer (no overlap, Error 2) */
};

/* Negotiates against the candidate's support lists in the client's order (PROTOCOL.md §4 step
 * 4) and builds the Fixed Key request with keys exported from the client's session (step 5). */
static enum verdict prepare(struct pool_session *s, const struct pool_upstream_info *up)
{
	const struct ke_msg_request *req = &s->req;
	size_t i;

	if (!up->name || strlen(up->name) > KE_MSG_NAME_MAX) {
		log_warn("pool: upstream %u has no usable name", up->id);
		return CANDIDATE_BROKEN;
	}
	snprintf(s->cand_name, sizeof s->cand_name, "%s", up->name);
	s->cand_id = up->id;

	for (i = 0; i < req->n_protocols; i++)
		if (contains(up->protocols, up->n_protocols, req->protocols[i]))
			break;
	if (i == req->n_protocols) {
		send_no_overlap(s, false, 0);
		return CANDIDATE_ANSWERED;
	}
	s->protocol = req->protocols[i];

	const struct ke_msg_algorithm *alg = NULL;
	for (i = 0; i < req->n_aeads && !alg; i++) {
		if (ke_msg_aead_key_len(req->aeads[i]) == 0)
			continue;
		for (size_t j = 0; j < up->n_algorithms; j++)
			if (up->algorithms[j].id == req->aeads[i]) {
				alg = &up->algorithms[j];
				break;
			}
	}
	if (!alg) {
		send_no_overlap(s, true, s->protocol);
		return CANDIDATE_ANSWERED;
	}
	s->aead = alg->id;
	size_t key_len = ke_msg_aead_key_len(alg->id);
	if (alg->key_len != key_len) {
		debug(s, "upstream %u lists AEAD %u with %u-byte keys, not %zu", up->id, alg->id,
		      alg->key_len, key_len);
		return CANDIDATE_BROKEN;
	}

	uint8_t c2s[KE_MSG_KEY_MAX], s2c[KE_MSG_KEY_MAX];
	int rc = tls_export_nts_keys(s->tls, s->protocol, s->aead, key_len, c2s, s2c);
	if (rc == 0)
		rc = ke_msg_build_fixed_key_request(s->fixed, sizeof s->fixed, up->numbering,
						    up->token, c2s, s2c, key_len, s->protocol,
						    s->aead, true);
	gnutls_memset(c2s, 0, sizeof c2s);
	gnutls_memset(s2c, 0, sizeof s2c);
	if (rc < 0) {
		log_error("pool: cannot prepare the Fixed Key request: %s", strerror(-rc));
		wipe_fixed(s);
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_upstream, "internal error");
		return CANDIDATE_ANSWERED;
	}
	s->fixed_len = (size_t)rc;
	return CANDIDATE_OK;
}

/* Picks candidates until one gets a Fixed Key request or the client gets its answer. */
static void next_candidate(struct pool_session *s, uint64_t now_ms)
{
	while (s->n_tried < s->cfg->max_attempts) {
		struct pool_upstream_info up;
		memset(&up, 0, sizeof up);
		const struct pool_pick_query q = { .req = &s->req,
						   .tried = s->tried,
						   .n_tried = s->n_tried,
						   .sni = s->sni[0] ? s->sni : NULL,
						   .now_ms = now_ms };
		int rc = s->ups->pick(s->ups->ud, &q, &up);
		if (rc < 0)
			break;
		s->tried[s->n_tried++] = up.id;
		switch (prepare(s, &up)) {
		case CANDIDATE_OK:
			debug(s, "upstream %u (%s): protocol %u, AEAD %u", up.id, s->cand_name,
			      s->protocol, s->aead);
			s->phase = PHASE_OFFERED;
			return;
		case CANDIDATE_ANSWERED:
			return;
		case CANDIDATE_BROKEN:
			s->stats->failovers++;
			break;
		}
	}
	send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_no_upstream,
		   s->n_tried ? "no upstream left to try" : "no healthy upstream");
}

/* One complete request of len bytes at the start of the buffer. */
static void handle_request(struct pool_session *s, size_t len, uint64_t now_ms)
{
	struct ke_msg_reject rej;
	struct pool_proto_verdict v;
	int rc = ke_msg_parse_request(s->req_buf, len, s->cfg->numbering, &s->req, &rej);
	gnutls_memset(s->req_buf, 0, sizeof s->req_buf);
	s->req_len = 0;
	if (rc < 0) {
		debug(s, "request refused: %s", rej.reason);
		send_error(s, rej.code, &s->stats->failed_bad_request, "bad request");
		return;
	}
	if (s->rate_limited) {
		ke_msg_request_wipe(&s->req);
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->rate_limited, "rate limited");
		return;
	}
	/* The broker accepts no pool: a client is never authorised for pool requests. */
	pool_proto_authorise(NULL, false, &s->req, &v);
	if (!v.allowed) {
		debug(s, "request refused: %s", v.reason);
		ke_msg_request_wipe(&s->req);
		send_error(s, v.error, &s->stats->failed_bad_request, "bad request");
		return;
	}
	next_candidate(s, now_ms);
}

/* Reads application data until one whole request is there or TLS has no more. Bytes after the
 * request are never read: one request per session. */
static void read_request(struct pool_session *s, uint64_t now_ms)
{
	for (;;) {
		int framed = ke_msg_frame(s->req_buf, s->req_len, KE_MSG_REQUEST_MAX);
		if (framed < 0) {
			send_error(s, KE_MSG_ERROR_BAD_REQUEST, &s->stats->failed_bad_request,
				   framed == -EMSGSIZE ? "request over 4096 bytes"
						       : "End of Message with a body");
			return;
		}
		if (framed > 0) {
			handle_request(s, (size_t)framed, now_ms);
			return;
		}
		ssize_t got = tls_read(s->tls, s->req_buf + s->req_len,
				       sizeof s->req_buf - s->req_len);
		if (got == -EAGAIN)
			return;
		if (got == 0) {
			pool_session_eof(s, now_ms);
			return;
		}
		if (got < 0) {
			debug(s, "TLS read failed: %s", tls_reason(s->tls));
			finish(s, "TLS read failed");
			return;
		}
		s->req_len += (size_t)got;
	}
}

int pool_session_input(struct pool_session *s, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	if (s->phase == PHASE_DONE)
		return 0;
	int rc = tls_feed(s->tls, buf, len);
	if (rc < 0) {
		debug(s, "input over the TLS queue limit");
		finish(s, "input over the TLS queue limit");
		return rc;
	}
	if (!s->established) {
		rc = tls_step(s->tls);
		if (rc < 0) {
			s->stats->failed_tls++;
			debug(s, "TLS handshake failed: %s", tls_reason(s->tls));
			finish(s, tls_reason(s->tls));
			return 0;
		}
		if (rc == TLS_HANDSHAKING)
			return 0;
		s->established = true;
		s->deadline = s->session_deadline;
		/* The SNI selects a sub-pool; a name that does not fit is no name. */
		if (tls_server_name(s->tls, s->sni, sizeof s->sni) < 0)
			s->sni[0] = '\0';
	}
	if (s->phase == PHASE_REQUEST)
		read_request(s, now_ms);
	return 0;
}

void pool_session_eof(struct pool_session *s, uint64_t now_ms)
{
	(void)now_ms;
	/* Once the request is in, the client may have closed only its sending side: the answer
	 * still goes out. */
	if (s->phase != PHASE_REQUEST)
		return;
	if (!s->established) {
		finish(s, "client left in the handshake");
		return;
	}
	if (s->req_len > 0) {
		send_error(s, KE_MSG_ERROR_BAD_REQUEST, &s->stats->failed_bad_request,
			   "request cut short");
		return;
	}
	debug(s, "client left without a request");
	tls_close(s->tls);
	finish(s, "client left without a request");
}

void pool_session_timeout(struct pool_session *s, uint64_t now_ms)
{
	(void)now_ms;
	switch (s->phase) {
	case PHASE_DONE:
		return;
	case PHASE_REQUEST:
		if (!s->established) {
			s->stats->failed_timeout++;
			debug(s, "timed out in the handshake");
			finish(s, "timed out in the handshake");
			return;
		}
		send_error(s, KE_MSG_ERROR_BAD_REQUEST, &s->stats->failed_timeout,
			   "timed out reading the request");
		return;
	case PHASE_OFFERED:
	case PHASE_WAITING:
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_timeout,
			   "timed out waiting for the upstream");
		return;
	}
}

void pool_session_output(const struct pool_session *s, const uint8_t **ptr, size_t *len)
{
	tls_output(s->tls, ptr, len);
}

void pool_session_output_consume(struct pool_session *s, size_t n)
{
	tls_output_consume(s->tls, n);
}

uint64_t pool_session_deadline(const struct pool_session *s)
{
	return s->phase == PHASE_DONE ? 0 : s->deadline;
}

bool pool_session_done(const struct pool_session *s)
{
	return s->phase == PHASE_DONE;
}

const char *pool_session_reason(const struct pool_session *s)
{
	return s->why;
}

bool pool_session_upstream_request(struct pool_session *s, uint32_t *id, const uint8_t **req,
				   size_t *len)
{
	if (s->phase != PHASE_OFFERED)
		return false;
	s->phase = PHASE_WAITING;
	s->upstream_id = s->cand_id;
	*id = s->cand_id;
	*req = s->fixed;
	*len = s->fixed_len;
	return true;
}

void pool_session_upstream_failed(struct pool_session *s, bool keys_sent, int err,
				  uint64_t now_ms)
{
	if (s->phase != PHASE_WAITING)
		return;
	wipe_fixed(s);
	debug(s, "upstream %u failed%s: %s", s->cand_id, keys_sent ? " after the keys left" : "",
	      strerror(err < 0 ? -err : err));
	if (keys_sent) {
		/* Keys of one client session reach at most one upstream. */
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_upstream,
			   "upstream failed after the keys left");
		return;
	}
	s->stats->failovers++;
	next_candidate(s, now_ms);
}

/* Whether a parsed Fixed Key answer is the one asked for and carries cookies. */
static const char *unusable(const struct pool_session *s, const struct ke_msg_response *r)
{
	if (!r->has_protocol || r->protocol != s->protocol)
		return "upstream chose another protocol";
	if (!r->has_aead || r->aead != s->aead)
		return "upstream chose another AEAD";
	if (r->n_cookies == 0)
		return "upstream sent no cookie";
	return NULL;
}

void pool_session_upstream_response(struct pool_session *s, int parse_rc,
				    const struct ke_msg_response *resp, uint64_t now_ms)
{
	(void)now_ms;
	if (s->phase != PHASE_WAITING)
		return;
	wipe_fixed(s);
	/* The upstream saw the keys: whatever went wrong, no other upstream may see them. */
	if (parse_rc != 0 || !resp) {
		debug(s, "upstream %u answer refused: %s", s->cand_id,
		      parse_rc == -EREMOTEIO ? "Error or Warning" : strerror(-parse_rc));
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_upstream,
			   "upstream answer refused");
		return;
	}
	const char *bad = unusable(s, resp);
	if (bad) {
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_upstream, bad);
		return;
	}
	/* Built from parsed fields only: no Keep Alive and no unknown record reaches the client. */
	struct ke_msg_success ok = {
		.protocol = s->protocol,
		.aead = s->aead,
		.cookies = resp->cookies,
		.n_cookies = resp->n_cookies,
		.port = resp->has_port ? resp->port : KE_MSG_PORT_DEFAULT,
		.server = resp->has_server ? resp->server.name : s->cand_name,
		.keep_alive = false,
	};
	uint8_t msg[RESPONSE_CAP];
	int len = ke_msg_build_success(msg, sizeof msg, s->cfg->numbering, &ok);
	if (len < 0) {
		log_error("pool: cannot build the response: %s", strerror(-len));
		send_error(s, KE_MSG_ERROR_INTERNAL, &s->stats->failed_upstream,
			   "internal error");
		return;
	}
	if (respond(s, msg, (size_t)len, "completed") == 0) {
		s->stats->completed++;
		debug(s, "%zu cookies from upstream %u, NTP at %s", resp->n_cookies, s->cand_id,
		      ok.server);
	}
}

uint32_t pool_session_upstream_id(const struct pool_session *s)
{
	return s->upstream_id;
}

bool pool_session_handshaking(const struct pool_session *s)
{
	return !s->established && s->phase != PHASE_DONE;
}
