/* Fuzz harness: the NTS-KE client connection (ke_client) against a fuzzed server: a real TLS 1.3
 * handshake with an in-process server session, then application data from the input as the
 * server's response, driven by a sequence of events; a reference model of the documented state
 * machine (ke_client.h) runs alongside and every result is compared with it.
 * The first byte chooses the setup: bit 0 ntpd-rs-v1 record numbers (else IANA), bit 1 the client
 * presents the pool certificate, bit 2 the first request is queued during the handshake (else
 * sent once READY), bits 3-4 its kind (see SEND), bit 5 the client verifies another name (the
 * handshake fails). Then each event is one byte (its value mod 12) and its arguments:
 *   0 LEN16 DATA   the server writes DATA (one TLS record), delivered at once
 *   1 LEN16 DATA   the server writes DATA, held back
 *   2 N16          N bytes (0: all) of the held ciphertext are delivered
 *   3              the server sends close_notify, delivered with everything held
 *   4 LEN16 DATA   DATA is delivered as raw ciphertext (the stream is corrupt from then on:
 *                  only the model-free checks remain)
 *   5              the server closed the connection (ke_client_eof)
 *   6              the deadline passes: time jumps to it and ke_client_timeout runs
 *   7 D            D x 50 ms pass; the glue's timer fires if the deadline is reached
 *   8              the owner is done with the response (ke_client_response_done)
 *   9 K            ke_client_send of a request of kind K & 3: plain, Support, Support with Keep
 *                  Alive, Fixed Key with Keep Alive
 *  10              ke_client_close
 *  11 T16 L16      the server writes a record of type T with L zero bytes of body, in records of
 *                  16 KiB, delivered at once (responses past KE_MSG_RESPONSE_MAX)
 * Contract checked: the state, error, deadline and response always equal the model's: data
 * without a request, data after the response, a response over KE_MSG_RESPONSE_MAX, bad framing,
 * close_notify or EOF before the response is complete fail with the documented errors; the parse
 * result and fields of a response are those of ke_msg_parse_response on the bytes the server
 * sent; Keep Alive keeps the connection only when both sides asked and nothing closed it.
 * Whatever the stream: ke_client_response is taken only in KE_CLIENT_RESPONSE; errors are sticky
 * (FAILED stays FAILED with the same error, and ke_client_input returns it again); CLOSED is
 * final; a request is sent only once the handshake completed and reaches the server intact. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ke_client.h"
#include "ke_msg.h"
#include "ke_record.h"
#include "tls.h"

#include "tls_fixture.c"

#define T0 1000000
#define TIMEOUT 5000
#define REQ_TIMEOUT 2500
#define IN_CAP (KE_MSG_RESPONSE_MAX + 1024) /* the client's buffer, ke_client.c */
#define PLAIN_MAX (1024 * 1024)
#define WRITES_MAX 4096

/* What the model expects of the client. */
struct model {
	enum ke_client_state st;
	int err;
	bool queued;	  /* a request waits for the handshake */
	bool want_keep_alive;
	enum ke_msg_request_kind kind;
	uint64_t handshake_deadline, response_deadline;
	bool peer_closed; /* close_notify or EOF after the response */
	size_t consumed;  /* server plaintext taken as responses so far */
	size_t resp_len;
	int parse_rc;
	struct ke_msg_response resp;
};

struct h {
	struct ke_client *cli;
	struct tls_session *srv;
	enum ke_numbering n;
	uint64_t now;
	bool valid; /* the stream is the server's own: the model applies */
	struct model m;
	int sticky; /* the client's failure, once seen */
	bool closed_seen;

	/* The server's side: plaintext written, per write the end of its ciphertext and of its
	 * plaintext, what has been delivered, where close_notify is. */
	size_t plain_len;
	size_t n_writes, next_write;
	size_t cipher_end[WRITES_MAX], plain_end[WRITES_MAX];
	size_t cipher_total, delivered, avail;
	size_t close_at; /* 0: not sent */
	bool close_delivered;

	/* The client's requests as the server reads them. */
	size_t req_total, req_read;
	uint8_t reqs[64 * 1024]; /* last: not cleared between inputs */
};

static uint8_t plain[PLAIN_MAX];
static const uint8_t zeros[16384];

/* ---- The requests ---------------------------------------------------------------------------- */

static int build_request(enum ke_numbering n, unsigned k, uint8_t *buf, size_t cap,
			 enum ke_msg_request_kind *kind)
{
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	static const uint16_t aeads[] = { 15, 17 };
	static const uint8_t c2s[32] = { 1 }, s2c[32] = { 2 };
	switch (k & 3) {
	case 0:
		*kind = KE_MSG_REQUEST_PLAIN;
		return ke_msg_build_request(buf, cap, n, protocols, 1, aeads, 2, NULL, 0);
	case 1:
	case 2:
		*kind = KE_MSG_REQUEST_SUPPORT;
		return ke_msg_build_support_request(buf, cap, n, "pool-token", true, true,
						    (k & 3) == 2);
	default:
		*kind = KE_MSG_REQUEST_FIXED_KEY;
		return ke_msg_build_fixed_key_request(buf, cap, n, "pool-token", c2s, s2c, 32,
						      KE_MSG_PROTOCOL_NTPV4, 15, true);
	}
}

/* ---- The model ------------------------------------------------------------------------------- */

static void m_fail(struct model *m, int err)
{
	if (m->st == KE_CLIENT_FAILED)
		return;
	m->st = KE_CLIENT_FAILED;
	m->err = err;
	m->queued = false;
}

/* The client has read everything delivered: the new plaintext and, after it, close_notify. */
static void m_read(struct h *h)
{
	struct model *m = &h->m;
	if (m->st == KE_CLIENT_WAITING) {
		size_t len = h->avail - m->consumed;
		const uint8_t *t = plain + m->consumed;
		int f = ke_msg_frame(t, len, KE_MSG_RESPONSE_MAX);
		if (f == -EMSGSIZE || (f == 0 && len >= IN_CAP)) {
			m_fail(m, -EMSGSIZE);
		} else if (f < 0) {
			m_fail(m, f);
		} else if (f > 0 && (size_t)f < len) {
			m_fail(m, -EPROTO); /* data after the response */
		} else if (f > 0) {
			m->st = KE_CLIENT_RESPONSE;
			m->resp_len = (size_t)f;
			m->parse_rc = ke_msg_parse_response(t, (size_t)f, h->n, m->kind, &m->resp);
			m->consumed += (size_t)f;
		}
	}
	if ((m->st == KE_CLIENT_READY || m->st == KE_CLIENT_RESPONSE) && h->avail > m->consumed)
		m_fail(m, -EPROTO); /* data without a request, or after the response */
	if (!h->close_delivered)
		return;
	if (m->st == KE_CLIENT_WAITING)
		m_fail(m, -ECONNRESET);
	else if (m->st == KE_CLIENT_READY)
		m->st = KE_CLIENT_CLOSED;
	else if (m->st == KE_CLIENT_RESPONSE)
		m->peer_closed = true;
}

static uint64_t m_deadline(const struct model *m)
{
	switch (m->st) {
	case KE_CLIENT_HANDSHAKING:
		if (m->queued && m->response_deadline < m->handshake_deadline)
			return m->response_deadline;
		return m->handshake_deadline;
	case KE_CLIENT_WAITING:
		return m->response_deadline;
	default:
		return 0;
	}
}

/* ---- Checks ---------------------------------------------------------------------------------- */

static void check_response_equal(const struct ke_msg_response *a, const struct ke_msg_response *b)
{
	CHECK(a->has_protocol_record == b->has_protocol_record);
	CHECK(a->has_protocol == b->has_protocol);
	CHECK(!a->has_protocol || a->protocol == b->protocol);
	CHECK(a->has_aead_record == b->has_aead_record && a->has_aead == b->has_aead);
	CHECK(!a->has_aead || a->aead == b->aead);
	CHECK(a->n_cookies == b->n_cookies && a->extra_cookies == b->extra_cookies);
	for (size_t i = 0; i < a->n_cookies; i++)
		CHECK(a->cookies[i].len == b->cookies[i].len &&
		      memcmp(a->cookies[i].data, b->cookies[i].data, a->cookies[i].len) == 0);
	CHECK(a->has_error == b->has_error && (!a->has_error || a->error == b->error));
	CHECK(a->n_warnings == b->n_warnings && a->keep_alive == b->keep_alive);
	CHECK(a->has_port == b->has_port && (!a->has_port || a->port == b->port));
	CHECK(a->has_server == b->has_server);
	if (a->has_server)
		CHECK(strcmp(a->server.name, b->server.name) == 0);
}

static void check(struct h *h)
{
	enum ke_client_state st = ke_client_state(h->cli);
	int err = ke_client_error(h->cli);
	if (h->sticky) {
		CHECK(st == KE_CLIENT_FAILED && err == h->sticky);
	} else if (st == KE_CLIENT_FAILED) {
		CHECK(err < 0);
		h->sticky = err;
	}
	if (h->closed_seen)
		CHECK(st == KE_CLIENT_CLOSED);
	h->closed_seen = st == KE_CLIENT_CLOSED;
	CHECK((ke_client_reason(h->cli)[0] != '\0') == (st == KE_CLIENT_FAILED));
	if (st != KE_CLIENT_FAILED)
		CHECK(err == 0);
	if (st == KE_CLIENT_WAITING || st == KE_CLIENT_RESPONSE)
		CHECK(ke_client_request_sent(h->cli));
	uint64_t d = ke_client_deadline(h->cli);
	CHECK((d == 0) == (st != KE_CLIENT_HANDSHAKING && st != KE_CLIENT_WAITING));
	if (!h->valid)
		return;
	const struct model *m = &h->m;
	CHECK(st == m->st && err == m->err);
	CHECK(d == m_deadline(m));
	if (st == KE_CLIENT_RESPONSE) {
		const struct ke_msg_response *r = NULL;
		CHECK(ke_client_response(h->cli, &r) == m->parse_rc && r);
		check_response_equal(r, &m->resp);
	}
}

/* ---- Moving bytes ---------------------------------------------------------------------------- */

/* The server reads what the client sent: exactly its requests, in order. */
static void server_read(struct h *h)
{
	const uint8_t *p;
	size_t len;
	ke_client_output(h->cli, &p, &len);
	if (len) {
		CHECK(tls_feed(h->srv, p, len) == 0);
		ke_client_output_consume(h->cli, len);
	}
	tls_step(h->srv);
	uint8_t buf[4096];
	ssize_t n;
	while ((n = tls_read(h->srv, buf, sizeof buf)) > 0) {
		CHECK((size_t)n <= h->req_total - h->req_read);
		CHECK(memcmp(buf, h->reqs + h->req_read, (size_t)n) == 0);
		h->req_read += (size_t)n;
	}
	/* The server fails only when the client refused the handshake (and said so). */
	CHECK(n == 0 || n == -EAGAIN || n == -ENOTCONN || tls_state(h->srv) == TLS_FAILED);
}

static void input(struct h *h, const uint8_t *p, size_t n)
{
	enum ke_client_state before = ke_client_state(h->cli);
	int rc = ke_client_input(h->cli, p, n, h->now);
	if (before == KE_CLIENT_FAILED)
		CHECK(rc == h->sticky);
	else if (before == KE_CLIENT_CLOSED)
		CHECK(rc == 0);
	else
		CHECK(rc == 0 || (rc == ke_client_error(h->cli) && rc < 0));
	if (rc < 0)
		CHECK(ke_client_state(h->cli) == KE_CLIENT_FAILED);
	if (ke_client_state(h->cli) == KE_CLIENT_FAILED && !h->sticky)
		h->sticky = ke_client_error(h->cli);
}

/* Up to n bytes (0: all) of the server's ciphertext reach the client, a socket read at a time. */
static void deliver(struct h *h, size_t n)
{
	const uint8_t *p;
	size_t len;
	tls_output(h->srv, &p, &len);
	if (n == 0 || n > len)
		n = len;
	while (n > 0) {
		size_t take = n < 16384 ? n : 16384;
		tls_output(h->srv, &p, &len);
		bool takes_input = ke_client_state(h->cli) != KE_CLIENT_FAILED &&
				   ke_client_state(h->cli) != KE_CLIENT_CLOSED;
		input(h, p, take);
		tls_output_consume(h->srv, take);
		n -= take;
		h->delivered += take;
		if (!h->valid || !takes_input)
			continue;
		while (h->next_write < h->n_writes && h->cipher_end[h->next_write] <= h->delivered)
			h->avail = h->plain_end[h->next_write++];
		if (h->close_at && h->delivered >= h->close_at)
			h->close_delivered = true;
		m_read(h);
		check(h);
	}
	server_read(h);
}

static void server_write(struct h *h, const uint8_t *p, size_t n)
{
	if (n == 0 || h->close_at || h->n_writes == WRITES_MAX || n > PLAIN_MAX - h->plain_len)
		return;
	const uint8_t *q;
	size_t before;
	tls_output(h->srv, &q, &before);
	if (tls_write(h->srv, p, n) != 0)
		return;
	size_t after;
	tls_output(h->srv, &q, &after);
	memcpy(plain + h->plain_len, p, n);
	h->plain_len += n;
	h->cipher_total += after - before;
	h->cipher_end[h->n_writes] = h->cipher_total;
	h->plain_end[h->n_writes++] = h->plain_len;
}

static void send_request(struct h *h, unsigned k)
{
	uint8_t req[KE_MSG_REQUEST_MAX];
	enum ke_msg_request_kind kind;
	int len = build_request(h->n, k, req, sizeof req, &kind);
	CHECK(len > 0);
	enum ke_client_state st = ke_client_state(h->cli);
	bool queued = h->m.queued; /* the model's, valid or not: only the state matters */
	int rc = ke_client_send(h->cli, req, (size_t)len, kind, h->now, REQ_TIMEOUT);
	switch (st) {
	case KE_CLIENT_HANDSHAKING:
		CHECK(rc == (queued ? -EBUSY : 0));
		break;
	case KE_CLIENT_READY:
		CHECK(rc == 0);
		break;
	case KE_CLIENT_WAITING:
	case KE_CLIENT_RESPONSE:
		CHECK(rc == -EBUSY);
		break;
	default:
		CHECK(rc == -ENOTCONN);
	}
	if (rc != 0)
		return;
	/* The server will read it once it is written. */
	CHECK((size_t)len <= sizeof h->reqs - h->req_total);
	memcpy(h->reqs + h->req_total, req, (size_t)len);
	h->req_total += (size_t)len;
	struct model *m = &h->m;
	m->kind = kind;
	m->want_keep_alive = (k & 3) >= 2;
	m->response_deadline = h->now + REQ_TIMEOUT;
	if (st == KE_CLIENT_HANDSHAKING) {
		m->queued = true;
		CHECK(!ke_client_request_sent(h->cli));
	} else {
		m->st = KE_CLIENT_WAITING;
		CHECK(ke_client_request_sent(h->cli));
	}
}

static void fire_timeout(struct h *h)
{
	uint64_t d = ke_client_deadline(h->cli);
	if (d > h->now)
		h->now = d;
	ke_client_timeout(h->cli, h->now);
	struct model *m = &h->m;
	if (m->st == KE_CLIENT_HANDSHAKING || m->st == KE_CLIENT_WAITING)
		m_fail(m, -ETIMEDOUT);
	else if (m->st == KE_CLIENT_READY)
		m->st = KE_CLIENT_CLOSED;
}

static void handshake(struct h *h, bool pool, bool wrong_name)
{
	struct tls_creds *cc = pool ? fx_client_pool : fx_client;
	CHECK(ke_client_new(&h->cli, cc, wrong_name ? "other.test" : FX_SERVER_NAME, h->n, h->now,
			    TIMEOUT) == 0);
	h->m.st = KE_CLIENT_HANDSHAKING;
	h->m.handshake_deadline = h->now + TIMEOUT;
	check(h);
}

static void finish_handshake(struct h *h)
{
	for (int round = 0; round < 8; round++) {
		if (ke_client_state(h->cli) != KE_CLIENT_HANDSHAKING)
			break;
		server_read(h);
		const uint8_t *p;
		size_t len;
		tls_output(h->srv, &p, &len);
		if (len == 0)
			break;
		input(h, p, len);
		tls_output_consume(h->srv, len);
	}
	server_read(h);
	enum ke_client_state st = ke_client_state(h->cli);
	struct model *m = &h->m;
	if (st == KE_CLIENT_FAILED) {
		CHECK(ke_client_error(h->cli) == -EACCES);
		m_fail(m, -EACCES);
		return;
	}
	CHECK(tls_state(h->srv) == TLS_ESTABLISHED);
	m->st = m->queued ? KE_CLIENT_WAITING : KE_CLIENT_READY;
	m->queued = false;
	CHECK(ke_client_request_sent(h->cli) == (m->st == KE_CLIENT_WAITING));
	CHECK(h->req_read == h->req_total);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fx_init();
	static struct h h;
	struct fx_in in = { data, size };
	uint8_t setup = fx_u8(&in);
	memset(&h, 0, offsetof(struct h, reqs));
	h.n = setup & 1 ? KE_NUMBERING_NTPDRS_V1 : KE_NUMBERING_IANA;
	h.now = T0;
	h.valid = true;
	CHECK(tls_session_new_server(&h.srv, fx_server) == 0);
	handshake(&h, setup & 2, setup & 32);
	if (setup & 4)
		send_request(&h, setup >> 3);
	check(&h);
	finish_handshake(&h);
	check(&h);
	if (!(setup & 4) && ke_client_state(h.cli) == KE_CLIENT_READY) {
		send_request(&h, setup >> 3);
		server_read(&h);
	}
	check(&h);

	while (fx_more(&in)) {
		size_t n;
		const uint8_t *p;
		uint8_t op = fx_u8(&in) % 12;
		switch (op) {
		case 0:
		case 1:
			p = fx_bytes(&in, fx_u16(&in) & 0x3fff, &n);
			server_write(&h, p, n);
			if (op == 0)
				deliver(&h, 0);
			break;
		case 2:
			deliver(&h, fx_u16(&in));
			break;
		case 3:
			if (!h.close_at && tls_close(h.srv) == 0) {
				const uint8_t *q;
				size_t len;
				tls_output(h.srv, &q, &len);
				h.cipher_total = h.delivered + len;
				h.close_at = h.cipher_total;
			}
			deliver(&h, 0);
			break;
		case 4:
			p = fx_bytes(&in, fx_u16(&in), &n);
			input(&h, p, n);
			h.valid = false;
			break;
		case 5: {
			ke_client_eof(h.cli, h.now);
			struct model *m = &h.m;
			if (m->st == KE_CLIENT_HANDSHAKING || m->st == KE_CLIENT_WAITING)
				m_fail(m, -ECONNRESET);
			else if (m->st == KE_CLIENT_READY)
				m->st = KE_CLIENT_CLOSED;
			else if (m->st == KE_CLIENT_RESPONSE)
				m->peer_closed = true;
			break;
		}
		case 6:
			fire_timeout(&h);
			break;
		case 7:
			h.now += 50u * fx_u8(&in);
			if (ke_client_deadline(h.cli) && h.now >= ke_client_deadline(h.cli))
				fire_timeout(&h);
			break;
		case 8: {
			ke_client_response_done(h.cli, h.now);
			struct model *m = &h.m;
			if (m->st == KE_CLIENT_RESPONSE) {
				bool keep = m->want_keep_alive && m->resp.keep_alive &&
					    m->parse_rc == 0 && !m->peer_closed;
				m->st = keep ? KE_CLIENT_READY : KE_CLIENT_CLOSED;
			}
			server_read(&h);
			break;
		}
		case 9:
			send_request(&h, fx_u8(&in));
			server_read(&h);
			break;
		case 10:
			ke_client_close(h.cli);
			if (h.m.st != KE_CLIENT_CLOSED && h.m.st != KE_CLIENT_FAILED)
				h.m.st = KE_CLIENT_CLOSED;
			server_read(&h);
			break;
		case 11: {
			uint16_t type = fx_u16(&in);
			size_t body = fx_u16(&in);
			uint8_t hdr[4] = { (uint8_t)(type >> 8), (uint8_t)type,
					   (uint8_t)(body >> 8), (uint8_t)body };
			server_write(&h, hdr, sizeof hdr);
			while (body > 0) {
				size_t take = body < sizeof zeros ? body : sizeof zeros;
				server_write(&h, zeros, take);
				body -= take;
			}
			deliver(&h, 0);
			break;
		}
		}
		check(&h);
	}
	ke_client_free(h.cli);
	tls_free(h.srv);
	return 0;
}
