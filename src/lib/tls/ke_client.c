#include "ke_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

/* Room for the largest response a client accepts plus one TLS record read beyond it, so a full
 * buffer always lets ke_msg_frame decide between a message and -EMSGSIZE. */
#define IN_CAP (KE_MSG_RESPONSE_MAX + 1024)

struct ke_client {
	struct tls_session *tls;
	enum ke_numbering numbering;
	enum ke_client_state state;
	enum ke_msg_request_kind kind;
	uint64_t handshake_deadline;
	uint64_t response_deadline;
	int error;
	int parse_rc;
	bool sent;	     /* the request went to TLS */
	bool want_keep_alive; /* the request carries a Keep Alive record */
	bool peer_closed;    /* close_notify or EOF seen after the response */
	char reason[160];
	uint8_t *req; /* the queued request until it is written (may carry keys) */
	size_t req_len;
	struct ke_msg_response resp;
	size_t in_len;
	uint8_t in[IN_CAP];
};

static void drop_request(struct ke_client *c)
{
	if (c->req) {
		gnutls_memset(c->req, 0, c->req_len);
		free(c->req);
	}
	c->req = NULL;
	c->req_len = 0;
}

static void fail(struct ke_client *c, int error, const char *reason)
{
	if (c->state == KE_CLIENT_FAILED)
		return;
	c->state = KE_CLIENT_FAILED;
	c->error = error;
	snprintf(c->reason, sizeof c->reason, "%s", reason[0] ? reason : strerror(-error));
	drop_request(c);
}

static void fail_tls(struct ke_client *c, int error)
{
	fail(c, error, tls_reason(c->tls));
}

/* The server ended the connection mid-response. How much had arrived tells a server that truncated
 * its response from records that reached us but were never read out of TLS. */
static void fail_incomplete(struct ke_client *c, const char *how)
{
	char reason[sizeof c->reason];
	snprintf(reason, sizeof reason,
		 "server %s before the response was complete (%zu bytes of it received)", how,
		 c->in_len);
	fail(c, -ECONNRESET, reason);
}

static void close_session(struct ke_client *c)
{
	tls_close(c->tls);
	c->state = KE_CLIENT_CLOSED;
	drop_request(c);
}

int ke_client_new(struct ke_client **out, struct tls_creds *creds, const char *server_name,
		  enum ke_numbering numbering, uint64_t now_ms, uint64_t timeout_ms)
{
	struct ke_client *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	int rc = tls_session_new_client(&c->tls, creds, server_name);
	if (rc < 0)
		goto fail;
	/* The ClientHello goes into the output at once. */
	rc = tls_step(c->tls);
	if (rc < 0)
		goto fail;
	c->numbering = numbering;
	c->state = KE_CLIENT_HANDSHAKING;
	c->handshake_deadline = now_ms + timeout_ms;
	*out = c;
	return 0;

fail:
	tls_free(c->tls);
	free(c);
	return rc;
}

void ke_client_free(struct ke_client *c)
{
	if (!c)
		return;
	drop_request(c);
	tls_free(c->tls);
	free(c);
}

/* Hands the queued request to TLS in one write (some servers need the whole message at once). */
static void write_request(struct ke_client *c)
{
	int rc = tls_write(c->tls, c->req, c->req_len);
	drop_request(c);
	if (rc < 0) {
		fail_tls(c, rc);
		return;
	}
	c->sent = true;
	c->state = KE_CLIENT_WAITING;
}

/* A complete response of len bytes is at the start of the buffer. */
static void take_response(struct ke_client *c, size_t len)
{
	if (len < c->in_len) {
		fail(c, -EPROTO, "data after the response");
		return;
	}
	c->parse_rc = ke_msg_parse_response(c->in, len, c->numbering, c->kind, &c->resp);
	c->in_len = 0;
	c->state = KE_CLIENT_RESPONSE;
}

/* Reads every decrypted byte TLS has: the response while WAITING, close_notify any time. Session
 * tickets and KeyUpdate never surface here (tls_read consumes them), so they are allowed in every
 * state, idle ones included: servers send them unasked. */
static void read_all(struct ke_client *c)
{
	for (;;) {
		if (c->state != KE_CLIENT_READY && c->state != KE_CLIENT_WAITING &&
		    c->state != KE_CLIENT_RESPONSE)
			return;
		ssize_t n = tls_read(c->tls, c->in + c->in_len, sizeof c->in - c->in_len);
		if (n == -EAGAIN)
			return;
		if (n < 0) {
			fail_tls(c, (int)n);
			return;
		}
		if (n == 0) {
			if (c->state == KE_CLIENT_WAITING)
				fail_incomplete(c, "sent close_notify");
			else if (c->state == KE_CLIENT_READY)
				close_session(c);
			else
				c->peer_closed = true;
			return;
		}
		if (c->state != KE_CLIENT_WAITING) {
			fail(c, -EPROTO, c->state == KE_CLIENT_READY ? "data without a request"
								     : "data after the response");
			return;
		}
		c->in_len += (size_t)n;
		int framed = ke_msg_frame(c->in, c->in_len, KE_MSG_RESPONSE_MAX);
		if (framed == -EMSGSIZE || (framed == 0 && c->in_len == sizeof c->in)) {
			fail(c, -EMSGSIZE, "response over 65536 bytes");
			return;
		}
		if (framed < 0) {
			fail(c, framed, "malformed response framing");
			return;
		}
		if (framed > 0)
			take_response(c, (size_t)framed);
	}
}

int ke_client_input(struct ke_client *c, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	(void)now_ms;
	if (c->state == KE_CLIENT_FAILED)
		return c->error;
	if (c->state == KE_CLIENT_CLOSED)
		return 0;
	int rc = tls_feed(c->tls, buf, len);
	if (rc < 0) {
		fail(c, rc, "input over the TLS queue limit");
		return rc;
	}
	if (c->state == KE_CLIENT_HANDSHAKING) {
		rc = tls_step(c->tls);
		if (rc < 0) {
			fail_tls(c, rc);
			return rc;
		}
		if (rc == TLS_HANDSHAKING)
			return 0;
		if (rc != TLS_ESTABLISHED) {
			fail(c, -ECONNRESET, "server closed during the handshake");
			return c->error;
		}
		c->state = KE_CLIENT_READY;
		if (c->req)
			write_request(c);
	}
	read_all(c);
	return c->state == KE_CLIENT_FAILED ? c->error : 0;
}

void ke_client_eof(struct ke_client *c, uint64_t now_ms)
{
	(void)now_ms;
	switch (c->state) {
	case KE_CLIENT_HANDSHAKING:
		fail(c, -ECONNRESET, "server closed during the handshake");
		break;
	case KE_CLIENT_WAITING:
		fail_incomplete(c, "closed");
		break;
	case KE_CLIENT_READY:
		close_session(c);
		break;
	case KE_CLIENT_RESPONSE:
		c->peer_closed = true;
		break;
	case KE_CLIENT_CLOSED:
	case KE_CLIENT_FAILED:
		break;
	}
}

void ke_client_timeout(struct ke_client *c, uint64_t now_ms)
{
	(void)now_ms;
	switch (c->state) {
	case KE_CLIENT_HANDSHAKING:
		fail(c, -ETIMEDOUT, "timed out in the handshake");
		break;
	case KE_CLIENT_WAITING:
		fail(c, -ETIMEDOUT, "timed out waiting for the response");
		break;
	case KE_CLIENT_READY:
		close_session(c);
		break;
	case KE_CLIENT_RESPONSE:
	case KE_CLIENT_CLOSED:
	case KE_CLIENT_FAILED:
		break;
	}
}

void ke_client_output(const struct ke_client *c, const uint8_t **ptr, size_t *len)
{
	tls_output(c->tls, ptr, len);
}

void ke_client_output_consume(struct ke_client *c, size_t n)
{
	tls_output_consume(c->tls, n);
}

uint64_t ke_client_deadline(const struct ke_client *c)
{
	switch (c->state) {
	case KE_CLIENT_HANDSHAKING:
		if (c->req && c->response_deadline < c->handshake_deadline)
			return c->response_deadline;
		return c->handshake_deadline;
	case KE_CLIENT_WAITING:
		return c->response_deadline;
	default:
		return 0;
	}
}

enum ke_client_state ke_client_state(const struct ke_client *c)
{
	return c->state;
}

/* Whether the request asks for Keep Alive: the response may only keep the connection if so. */
static bool asks_keep_alive(const uint8_t *req, size_t len, enum ke_numbering n)
{
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, req, len, n);
	while (ke_record_iter_next(&it, &rec) > 0)
		if (rec.kind == KE_RECORD_KEEP_ALIVE)
			return true;
	return false;
}

int ke_client_send(struct ke_client *c, const uint8_t *req, size_t len,
		   enum ke_msg_request_kind kind, uint64_t now_ms, uint64_t timeout_ms)
{
	switch (c->state) {
	case KE_CLIENT_HANDSHAKING:
		if (c->req)
			return -EBUSY;
		break;
	case KE_CLIENT_READY:
		break;
	case KE_CLIENT_WAITING:
	case KE_CLIENT_RESPONSE:
		return -EBUSY;
	case KE_CLIENT_CLOSED:
	case KE_CLIENT_FAILED:
		return -ENOTCONN;
	}
	if (len == 0 || len > KE_MSG_REQUEST_MAX)
		return -EINVAL;
	c->req = malloc(len);
	if (!c->req)
		return -ENOMEM;
	memcpy(c->req, req, len);
	c->req_len = len;
	c->kind = kind;
	c->want_keep_alive = asks_keep_alive(req, len, c->numbering);
	c->sent = false;
	c->response_deadline = now_ms + timeout_ms;
	if (c->state == KE_CLIENT_READY)
		write_request(c);
	return c->state == KE_CLIENT_FAILED ? c->error : 0;
}

bool ke_client_request_sent(const struct ke_client *c)
{
	return c->sent;
}

int ke_client_response(const struct ke_client *c, const struct ke_msg_response **resp)
{
	*resp = &c->resp;
	return c->parse_rc;
}

void ke_client_response_done(struct ke_client *c, uint64_t now_ms)
{
	(void)now_ms;
	if (c->state != KE_CLIENT_RESPONSE)
		return;
	if (c->want_keep_alive && c->resp.keep_alive && c->parse_rc == 0 && !c->peer_closed) {
		c->state = KE_CLIENT_READY;
		return;
	}
	close_session(c);
}

void ke_client_close(struct ke_client *c)
{
	if (c->state == KE_CLIENT_CLOSED || c->state == KE_CLIENT_FAILED)
		return;
	close_session(c);
}

int ke_client_export(struct ke_client *c, uint16_t protocol, uint16_t aead, size_t key_len,
		     uint8_t *c2s, uint8_t *s2c)
{
	return tls_export_nts_keys(c->tls, protocol, aead, key_len, c2s, s2c);
}

int ke_client_error(const struct ke_client *c)
{
	return c->error;
}

const char *ke_client_reason(const struct ke_client *c)
{
	return c->reason;
}
