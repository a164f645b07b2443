/* Fuzz harness: the TLS-over-queues layer (tls.h) as a server, driven by a sequence of events
 * decoded from the input. The first byte chooses the setup: bit 0 a real TLS 1.3 handshake with an
 * in-process client first (else the server starts cold and every byte it gets is the fuzzer's,
 * from the ClientHello on), bit 1 server credentials that pin nothing (else the pool certificate
 * is pinned), bit 2 the client presents the pool certificate. Then each event is one byte (its
 * value mod 10) and its arguments:
 *   0 LEN16 DATA   the client writes DATA (a valid record) and it is delivered, then the server
 *                  steps and reads (an event byte of 10..19 mod 20: the record is held back)
 *   1 LEN16 DATA   DATA is fed to the server as raw ciphertext, then it steps and reads
 *   2 N            N bytes of the client's pending ciphertext are delivered (a record cut short)
 *   3              the client sends close_notify (delivered)
 *   4 LEN16 DATA   the server writes DATA
 *   5 K            the server writes K (0..31) 16 KiB blocks without anything being sent: the
 *                  output queue fills up to TLS_OUT_MAX
 *   6              the server sends close_notify
 *   7 LEN16        LEN16 bytes (0: all) of the server's output reach the client, which reads
 *   8              the server steps again
 *   9 P16 A16 L    both ends export NTS keys (protocol P, AEAD A, L bytes)
 * Contract checked: no crash; the state and tls_reason agree with every result; failures are
 * sticky (once tls_step returned a negative errno, it and tls_read, tls_write and tls_close keep
 * returning that errno and the state stays TLS_FAILED); nothing works before the handshake
 * (-ENOTCONN, zeroed export buffers); the output never exceeds TLS_OUT_MAX, a write that would
 * overflow queues nothing and fails nothing; the server reads exactly a prefix of what the
 * client wrote, in order, and close_notify only after the client sent one (and then keeps
 * reading 0); the client reads a prefix of what the server wrote; a write after tls_close is
 * -EPIPE; both ends export the same keys; a pool is authorised only by a pinned certificate it
 * presented. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#include "tls_fixture.c"

/* What one end wrote and the other has read back so far. */
#define TRACK_MAX (TLS_OUT_MAX + 64 * 1024)
struct track {
	uint8_t buf[TRACK_MAX];
	size_t written;
	size_t read;
};

static struct track c2s, s2c;
static const uint8_t zeros[16384];

struct h {
	struct tls_session *srv, *cli;
	bool handshake; /* a real handshake was made */
	int err;	/* the server's sticky failure, 0 while none */
	bool srv_closed; /* the server sent close_notify */
	bool peer_closed; /* the server read close_notify */
	bool cli_closed;  /* the client sent close_notify */
	bool cli_dead;	  /* the client failed (a server alert): it reads nothing more */
};

static void track_write(struct track *t, const uint8_t *p, size_t n)
{
	CHECK(n <= TRACK_MAX - t->written);
	memcpy(t->buf + t->written, p, n);
	t->written += n;
}

static void track_read(struct track *t, const uint8_t *p, size_t n)
{
	CHECK(n <= t->written - t->read);
	CHECK(memcmp(t->buf + t->read, p, n) == 0);
	t->read += n;
}

static size_t out_len(struct tls_session *s)
{
	const uint8_t *p;
	size_t n;
	tls_output(s, &p, &n);
	CHECK(n <= TLS_OUT_MAX);
	CHECK((n == 0) == (p == NULL));
	return n;
}

/* A result of the server: after a failure, the failure again. */
static void check_result(struct h *h, int rc)
{
	if (h->err) {
		CHECK(rc == h->err);
		return;
	}
	if (rc < 0 && tls_state(h->srv) == TLS_FAILED) {
		CHECK(rc == -EACCES || rc == -EPROTO || rc == -ECONNRESET || rc == -EMSGSIZE ||
		      rc == -ENOMEM || rc == -EIO);
		h->err = rc;
	}
}

static void check_server(struct h *h)
{
	out_len(h->srv);
	enum tls_state st = tls_state(h->srv);
	if (h->err) {
		CHECK(st == TLS_FAILED);
		CHECK(tls_reason(h->srv)[0] != '\0');
		CHECK(tls_step(h->srv) == h->err);
		return;
	}
	CHECK(st != TLS_FAILED);
	CHECK(tls_reason(h->srv)[0] == '\0');
	if (!h->handshake)
		CHECK(st == TLS_HANDSHAKING);
	else
		CHECK(st == (h->srv_closed || h->peer_closed ? TLS_CLOSED : TLS_ESTABLISHED));
	if (st == TLS_HANDSHAKING)
		CHECK(!tls_peer_is_authorised_pool(h->srv));
}

/* The server steps and reads everything it can. */
static void server_turn(struct h *h)
{
	int rc = tls_step(h->srv);
	check_result(h, rc);
	if (!h->err)
		CHECK(rc == (int)tls_state(h->srv));
	uint8_t buf[4096];
	for (;;) {
		ssize_t n = tls_read(h->srv, buf, sizeof buf);
		if (n > 0) {
			CHECK(h->handshake && !h->peer_closed && !h->err);
			CHECK((size_t)n <= sizeof buf);
			track_read(&c2s, buf, (size_t)n);
			continue;
		}
		if (n == 0) {
			CHECK(h->handshake && h->cli_closed && !h->err);
			h->peer_closed = true;
			CHECK(tls_read(h->srv, buf, sizeof buf) == 0);
		} else if (n == -ENOTCONN) {
			CHECK(!h->handshake && !h->err);
		} else if (n != -EAGAIN) {
			check_result(h, (int)n);
			CHECK(h->err == (int)n);
		} else {
			CHECK(h->handshake && !h->err && !h->peer_closed);
		}
		break;
	}
	check_server(h);
}

/* Hands the server up to n bytes of the client's ciphertext (all when n is 0). */
static void deliver_c2s(struct h *h, size_t n)
{
	const uint8_t *p;
	size_t len;
	tls_output(h->cli, &p, &len);
	if (n == 0 || n > len)
		n = len;
	if (n == 0)
		return;
	int rc = tls_feed(h->srv, p, n);
	CHECK(rc == 0 || rc == -EMSGSIZE);
	if (rc == 0)
		tls_output_consume(h->cli, n);
}

/* The client gets up to n bytes of the server's output (all when n is 0), a socket read at a
 * time, and reads what it can after each. */
static void deliver_s2c(struct h *h, size_t n)
{
	const uint8_t *p;
	size_t len;
	tls_output(h->srv, &p, &len);
	if (n == 0 || n > len)
		n = len;
	do {
		size_t take = n < 16384 ? n : 16384;
		tls_output(h->srv, &p, &len);
		if (h->cli && !h->cli_dead && take)
			CHECK(tls_feed(h->cli, p, take) == 0);
		tls_output_consume(h->srv, take);
		n -= take;
		if (!h->cli || h->cli_dead)
			continue;
		uint8_t buf[16384];
		for (;;) {
			ssize_t r = tls_read(h->cli, buf, sizeof buf);
			if (r > 0) {
				track_read(&s2c, buf, (size_t)r);
				continue;
			}
			if (r == 0)
				CHECK(h->srv_closed);
			else if (r != -EAGAIN)
				h->cli_dead = true;
			break;
		}
		/* Only an alert of the failed server makes its peer fail. */
		if (h->cli_dead)
			CHECK(h->err);
	} while (n > 0);
}

static void server_write(struct h *h, const uint8_t *p, size_t n)
{
	size_t before = out_len(h->srv);
	int rc = tls_write(h->srv, p, n);
	/* A write that does not fit is refused up front; it never fails the session. */
	CHECK(!(rc == -EMSGSIZE && tls_state(h->srv) == TLS_FAILED && !h->err));
	check_result(h, rc);
	if (h->err)
		return;
	if (!h->handshake) {
		CHECK(rc == -ENOTCONN);
	} else if (h->srv_closed) {
		CHECK(rc == -EPIPE);
	} else if (rc == -EMSGSIZE) {
		CHECK(out_len(h->srv) == before); /* all or nothing */
		CHECK(before + n > TLS_OUT_MAX / 2);
	} else {
		CHECK(rc == 0);
		CHECK(n == 0 || out_len(h->srv) > before);
		track_write(&s2c, p, n);
	}
}

static void export_keys(struct h *h, uint16_t protocol, uint16_t aead, size_t key_len)
{
	uint8_t a[2][128], b[2][128];
	memset(a, 0x5a, sizeof a);
	int rc = tls_export_nts_keys(h->srv, protocol, aead, key_len, a[0], a[1]);
	if (key_len == 0) {
		CHECK(rc == -EINVAL);
		return;
	}
	if (!h->handshake || h->err) {
		CHECK(rc == -ENOTCONN);
		for (size_t i = 0; i < key_len; i++)
			CHECK(a[0][i] == 0 && a[1][i] == 0);
		return;
	}
	CHECK(rc == 0);
	if (h->cli_dead)
		return;
	CHECK(tls_export_nts_keys(h->cli, protocol, aead, key_len, b[0], b[1]) == 0);
	CHECK(memcmp(a[0], b[0], key_len) == 0 && memcmp(a[1], b[1], key_len) == 0);
	if (key_len >= 16)
		CHECK(memcmp(a[0], a[1], key_len) != 0);
}

static void handshake(struct h *h, bool pool_cert, bool pinned)
{
	h->cli = fx_client_session(pool_cert);
	struct fx_end c = fx_session_end(h->cli), s = fx_session_end(h->srv);
	fx_pump(&c, &s);
	CHECK(tls_state(h->cli) == TLS_ESTABLISHED && tls_state(h->srv) == TLS_ESTABLISHED);
	CHECK(tls_peer_is_authorised_pool(h->srv) == (pool_cert && pinned));
	CHECK(tls_peer_is_pinned_by(h->srv, fx_server) == pool_cert);
	CHECK(tls_peer_is_pinned_by(h->srv, fx_server_nopin) == false);
	CHECK(!tls_peer_is_authorised_pool(h->cli));
	h->handshake = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fx_init();
	struct fx_in in = { data, size };
	uint8_t setup = fx_u8(&in);
	struct h h = { 0 };
	bool pinned = !(setup & 2);
	CHECK(tls_session_new_server(&h.srv, pinned ? fx_server : fx_server_nopin) == 0);
	c2s.written = c2s.read = s2c.written = s2c.read = 0;
	if (setup & 1)
		handshake(&h, setup & 4, pinned);
	else
		CHECK(tls_step(h.srv) == TLS_HANDSHAKING && out_len(h.srv) == 0);
	check_server(&h);

	while (fx_more(&in)) {
		size_t n;
		const uint8_t *p;
		uint8_t ev = fx_u8(&in);
		switch (ev % 10) {
		case 0:
			p = fx_bytes(&in, fx_u16(&in), &n);
			bool can = h.cli && !h.cli_closed && !h.cli_dead &&
				   tls_state(h.cli) != TLS_FAILED && n <= TRACK_MAX - c2s.written;
			if (can && tls_write(h.cli, p, n) == 0) {
				track_write(&c2s, p, n);
				if (ev % 20 < 10)
					deliver_c2s(&h, 0);
			}
			server_turn(&h);
			break;
		case 1:
			p = fx_bytes(&in, fx_u16(&in), &n);
			{
				int rc = tls_feed(h.srv, p, n);
				CHECK(rc == 0 || rc == -EMSGSIZE);
			}
			server_turn(&h);
			break;
		case 2:
			n = fx_u8(&in);
			if (h.cli)
				deliver_c2s(&h, n ? n : 1);
			server_turn(&h);
			break;
		case 3:
			if (h.cli && !h.cli_dead && tls_close(h.cli) == 0) {
				h.cli_closed = true;
				deliver_c2s(&h, 0);
			}
			server_turn(&h);
			break;
		case 4:
			p = fx_bytes(&in, fx_u16(&in), &n);
			if (n <= TRACK_MAX - s2c.written)
				server_write(&h, p, n);
			break;
		case 5:
			for (unsigned k = fx_u8(&in) % 32; k > 0; k--) {
				if (sizeof zeros > TRACK_MAX - s2c.written)
					break;
				size_t before = out_len(h.srv);
				server_write(&h, zeros, sizeof zeros);
				if (out_len(h.srv) == before)
					break;
			}
			break;
		case 6: {
			int rc = tls_close(h.srv);
			check_result(&h, rc);
			if (!h.err && !h.handshake)
				CHECK(rc == -ENOTCONN);
			else if (!h.err) {
				CHECK(rc == 0 || rc == -EMSGSIZE);
				if (rc == 0)
					h.srv_closed = true;
			}
			break;
		}
		case 7:
			deliver_s2c(&h, fx_u16(&in));
			break;
		case 8:
			server_turn(&h);
			break;
		case 9: {
			uint16_t protocol = fx_u16(&in), aead = fx_u16(&in);
			export_keys(&h, protocol, aead, fx_u8(&in) % 129);
			break;
		}
		}
		check_server(&h);
		if (h.err) {
			uint8_t b[16];
			CHECK(tls_read(h.srv, b, sizeof b) == h.err);
			CHECK(tls_write(h.srv, b, sizeof b) == h.err);
			CHECK(tls_close(h.srv) == h.err);
		}
	}
	/* Whatever is still queued reaches the client, which reads a prefix of what was written. */
	deliver_s2c(&h, 0);
	tls_free(h.cli);
	tls_free(h.srv);
	return 0;
}
