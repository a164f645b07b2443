/* Fuzz harness: the NTS-KE server's connection state machine (ke_server_conn, src/daemon) after
 * a real TLS 1.3 handshake with an in-process client, driven by a sequence of events decoded from
 * the input, so the fuzzed bytes reach the request parser as TLS application data.
 * The first byte chooses the setup: bit 0 ntpd-rs-v1 record numbers (else IANA), bit 1 the
 * client presents the pool certificate, bit 2 a slot of accepted tokens ("pool", "t" and the
 * 64-hex token of the vectors), bit 3 NTPv4 Port 4123 and Server "ntp.example" announced, bit 4
 * a credentials slot that pins nothing (a reload that unpinned the pool; else the session's own
 * pins apply), bit 5 a 2 s handshake deadline, bit 6 no cookie keyset loaded. Then each event is
 * one byte (its value mod 10) and its arguments:
 *   0 LEN16 DATA   the client writes DATA, delivered to the machine at once
 *   1 LEN16 DATA   the client writes DATA, held back
 *   2 N16          N bytes (0: all) of the client's held ciphertext are delivered
 *   3              the peer closed its side (ke_server_conn_eof)
 *   4              the deadline passes: time jumps to it and ke_server_conn_timeout runs
 *   5 D            D x 50 ms pass; the glue's timer fires if the deadline is reached
 *   6              the client sends close_notify, delivered
 *   7 LEN16 DATA   DATA is delivered as raw ciphertext (a corrupt stream)
 *   8 N16          N bytes (0: all) of the machine's output are consumed (handed to the socket)
 *   9              a reload swaps the accepted token set (the slot holds the set or NULL)
 * Whatever the machine outputs reaches the client at once, which decrypts it and parses every
 * response (the output queue itself is only emptied by event 8).
 * Contract checked (ke_server.h, PROTOCOL.md §1-§4): the client always decrypts the output and
 * it frames into whole responses that ke_msg_parse_response accepts (Error responses as
 * -EREMOTEIO, the Supported lists as a Support answer) and that end before close_notify; once an
 * Error was sent nothing follows, and the machine is done; cookies (at most 8) only in a
 * response without an Error; Keep Alive only for a pool authorised by a pinned certificate or an
 * accepted token, and a second response only after one with Keep Alive; no output at all once the
 * machine says done (its deadline is then 0); while it runs the deadline lies ahead and never
 * moves backwards except when a kept-alive connection that sat idle starts a new request; input
 * fails only with the machine done; the counters match what the client received. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "ke_server.h"
#include "keyset.h"
#include "pool_proto.h"
#include "tls.h"

#include "tls_fixture.c"

#define T0 1000000
#define TIMEOUT 5000

static const char *const accepted[] = {
	"pool",
	"t",
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
};

static struct keyset *ks;
static struct pool_tokens *tokens;

struct h {
	struct ke_server_conn *srv;
	struct tls_session *cli;
	struct ke_server_stats st;
	struct ke_server_config cfg;
	struct keyset *ks_slot;
	struct pool_tokens *tokens_slot;
	struct tls_creds *creds_slot;
	uint64_t now;
	bool pinned;	  /* the client's certificate is pinned by the creds in force */
	bool tokens_ever; /* an accepted token set was in the slot at some point */

	/* The machine's output: bytes mirrored to the client (from the queue's head) and the
	 * total ever produced. */
	size_t mirrored;
	uint64_t produced;
	bool done_seen;
	uint64_t produced_at_done;

	/* The client's view. */
	bool cli_closed; /* it sent close_notify */
	bool cli_dead;	 /* its session failed (an alert of the failed server) */
	bool got_close;	 /* it read close_notify */
	unsigned responses, errors, cookie_responses, no_overlaps, supports;
	bool error_seen, last_keep_alive;
	size_t plain_len;
	uint8_t plain[KE_MSG_RESPONSE_MAX + 16384]; /* last: not cleared between inputs */
};

static void init_once(void)
{
	fx_init();
	if (ks)
		return;
	uint8_t key[KEYSET_KEY_LEN];
	memset(key, 0x42, sizeof key);
	CHECK(keyset_from_keys(&ks, 7, 0, 1, key, 0) == 0);
	CHECK(pool_tokens_new(&tokens) == 0);
	for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++)
		CHECK(pool_tokens_add(tokens, accepted[i], strlen(accepted[i])) == 0);
}

/* ---- The client reading responses ------------------------------------------------------------ */

static void check_response(struct h *h, const uint8_t *m, size_t len)
{
	enum ke_numbering n = h->cfg.numbering;
	CHECK(!h->error_seen);			      /* nothing after an Error */
	CHECK(h->responses == 0 || h->last_keep_alive); /* one response unless kept alive */
	struct ke_record_iter it;
	struct ke_record rec;
	unsigned errs = 0, cookies = 0, keep = 0, supported = 0, records = 0;
	bool end = false, empty_list = false;
	ke_record_iter_init(&it, m, len, n);
	int rc;
	while ((rc = ke_record_iter_next(&it, &rec)) > 0) {
		CHECK(!end);
		records++;
		switch (rec.kind) {
		case KE_RECORD_END:
			end = true;
			break;
		case KE_RECORD_ERROR:
			CHECK(rec.len == 2);
			CHECK((rec.body[0] << 8 | rec.body[1]) <= KE_MSG_ERROR_INTERNAL);
			errs++;
			break;
		case KE_RECORD_NEW_COOKIE:
			cookies++;
			break;
		case KE_RECORD_KEEP_ALIVE:
			keep++;
			break;
		case KE_RECORD_SUPPORTED_PROTOCOLS:
		case KE_RECORD_SUPPORTED_ALGORITHMS:
			supported++;
			break;
		case KE_RECORD_NEXT_PROTOCOL:
		case KE_RECORD_AEAD:
			empty_list |= rec.len == 0;
			break;
		case KE_RECORD_SERVER:
		case KE_RECORD_PORT:
			break;
		default:
			CHECK(!"a record no server response carries");
		}
	}
	CHECK(rc == 0 && end);
	CHECK(errs <= 1 && keep <= 1);
	if (errs) {
		CHECK(records == 2 && cookies == 0 && keep == 0);
		h->error_seen = true;
		h->errors++;
	}
	CHECK(cookies == 0 || cookies == KE_MSG_MAX_COOKIES);
	if (keep)
		CHECK(h->pinned || h->tokens_ever);
	struct ke_msg_response resp;
	enum ke_msg_request_kind kind = supported ? KE_MSG_REQUEST_SUPPORT : KE_MSG_REQUEST_PLAIN;
	rc = ke_msg_parse_response(m, len, n, kind, &resp);
	CHECK(rc == (errs ? -EREMOTEIO : 0));
	if (!errs) {
		CHECK(resp.n_cookies == cookies && resp.extra_cookies == 0);
		CHECK(resp.keep_alive == (keep == 1));
		if (cookies) {
			CHECK(resp.has_protocol && resp.protocol == KE_MSG_PROTOCOL_NTPV4);
			CHECK(resp.has_aead && ke_msg_aead_key_len(resp.aead) != 0);
			CHECK(resp.has_port == (h->cfg.ntp_port != 0));
			CHECK(resp.has_server == (h->cfg.ntp_server != NULL));
			h->cookie_responses++;
		} else if (supported) {
			h->supports++;
		} else {
			CHECK(empty_list); /* no overlap */
			h->no_overlaps++;
		}
	}
	h->responses++;
	h->last_keep_alive = keep;
}

/* The client reads all it can and takes every whole response out of its buffer. */
static void client_read(struct h *h)
{
	ssize_t r = fx_read_all(h->cli, h->plain, &h->plain_len, sizeof h->plain);
	CHECK(r != -ENOBUFS);
	for (;;) {
		int framed = ke_msg_frame(h->plain, h->plain_len, KE_MSG_RESPONSE_MAX);
		CHECK(framed >= 0);
		if (framed == 0)
			break;
		check_response(h, h->plain, (size_t)framed);
		memmove(h->plain, h->plain + framed, h->plain_len - (size_t)framed);
		h->plain_len -= (size_t)framed;
	}
	if (r == 0) {
		CHECK(h->plain_len == 0); /* a response is written whole before close_notify */
		h->got_close = true;
	} else if (r != -EAGAIN) {
		h->cli_dead = true;
	}
}

/* Everything new in the machine's output reaches the client. */
static void mirror(struct h *h)
{
	const uint8_t *p;
	size_t len;
	ke_server_conn_output(h->srv, &p, &len);
	CHECK(len >= h->mirrored && len <= TLS_OUT_MAX);
	h->produced += len - h->mirrored;
	while (h->mirrored < len) {
		size_t take = len - h->mirrored < 16384 ? len - h->mirrored : 16384;
		if (!h->cli_dead) {
			CHECK(tls_feed(h->cli, p + h->mirrored, take) == 0);
			client_read(h);
		}
		h->mirrored += take;
	}
}

static void consume(struct h *h, size_t n)
{
	const uint8_t *p;
	size_t len;
	ke_server_conn_output(h->srv, &p, &len);
	if (n == 0 || n > len)
		n = len;
	ke_server_conn_output_consume(h->srv, n);
	h->mirrored -= n;
}

/* ---- Driving the machine --------------------------------------------------------------------- */

static void input(struct h *h, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	int rc = ke_server_conn_input(h->srv, p, n, h->now);
	CHECK(rc == 0 || (rc < 0 && ke_server_conn_done(h->srv)));
}

/* Up to n bytes (0: all) of the client's ciphertext reach the machine, a socket read at a time. */
static void deliver(struct h *h, size_t n)
{
	const uint8_t *p;
	size_t len;
	tls_output(h->cli, &p, &len);
	if (n == 0 || n > len)
		n = len;
	while (n > 0) {
		size_t take = n < 16384 ? n : 16384;
		tls_output(h->cli, &p, &len);
		input(h, p, take);
		tls_output_consume(h->cli, take);
		n -= take;
	}
}

static void fire_timeout(struct h *h)
{
	uint64_t d = ke_server_conn_deadline(h->srv);
	if (d > h->now)
		h->now = d;
	ke_server_conn_timeout(h->srv, h->now);
}

static void check_after(struct h *h, uint64_t d0, bool idle0)
{
	mirror(h);
	bool done = ke_server_conn_done(h->srv);
	uint64_t d = ke_server_conn_deadline(h->srv);
	if (h->done_seen) {
		CHECK(done);
		CHECK(h->produced == h->produced_at_done); /* no output after done */
	} else if (done) {
		h->done_seen = true;
		h->produced_at_done = h->produced;
	}
	if (done) {
		CHECK(d == 0 && !ke_server_conn_idle(h->srv) &&
		      !ke_server_conn_handshaking(h->srv));
		return;
	}
	CHECK(!h->error_seen && !h->got_close); /* Error and close_notify end the connection */
	CHECK(d > h->now);
	if (!(idle0 && !ke_server_conn_idle(h->srv)))
		CHECK(d >= d0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	static struct h h;
	struct fx_in in = { data, size };
	uint8_t setup = fx_u8(&in);
	memset(&h, 0, offsetof(struct h, plain));
	h.now = T0;
	h.ks_slot = setup & 64 ? NULL : ks;
	h.tokens_slot = setup & 4 ? tokens : NULL;
	h.tokens_ever = h.tokens_slot != NULL;
	h.creds_slot = fx_server_nopin;
	h.cfg = (struct ke_server_config){
		.numbering = setup & 1 ? KE_NUMBERING_NTPDRS_V1 : KE_NUMBERING_IANA,
		.timeout_ms = TIMEOUT,
		.handshake_timeout_ms = setup & 32 ? 2000 : 0,
		.ntp_port = setup & 8 ? 4123 : 0,
		.ntp_server = setup & 8 ? "ntp.example" : NULL,
		.tokens = &h.tokens_slot,
		.creds = setup & 16 ? &h.creds_slot : NULL,
	};
	h.pinned = (setup & 2) && !(setup & 16);
	CHECK(ke_server_conn_new(&h.srv, fx_server, &h.cfg, &h.ks_slot, &h.st, h.now) == 0);
	ke_server_conn_set_peer(h.srv, "192.0.2.1:40000");
	CHECK(ke_server_conn_handshaking(h.srv) && !ke_server_conn_done(h.srv));
	uint64_t d_start = ke_server_conn_deadline(h.srv);
	CHECK(d_start == T0 + (setup & 32 ? 2000 : TIMEOUT));

	/* The handshake: the client's flights go through the machine. */
	h.cli = fx_client_session(setup & 2);
	for (int round = 0; round < 8 && tls_state(h.cli) == TLS_HANDSHAKING; round++) {
		tls_step(h.cli);
		deliver(&h, 0);
		const uint8_t *p;
		size_t len;
		ke_server_conn_output(h.srv, &p, &len);
		CHECK(tls_feed(h.cli, p, len) == 0);
		ke_server_conn_output_consume(h.srv, len);
	}
	CHECK(tls_state(h.cli) == TLS_ESTABLISHED && tls_step(h.cli) == TLS_ESTABLISHED);
	CHECK(!ke_server_conn_handshaking(h.srv) && !ke_server_conn_done(h.srv));
	CHECK(ke_server_conn_deadline(h.srv) == T0 + TIMEOUT);
	check_after(&h, d_start, false);

	while (fx_more(&in) && !h.done_seen) {
		uint64_t d0 = ke_server_conn_deadline(h.srv);
		bool idle0 = ke_server_conn_idle(h.srv);
		size_t n;
		const uint8_t *p;
		switch (fx_u8(&in) % 10) {
		case 0:
		case 1: {
			bool now = in.p[-1] % 10 == 0;
			p = fx_bytes(&in, fx_u16(&in), &n);
			if (n && !h.cli_closed && tls_write(h.cli, p, n) == 0 && now)
				deliver(&h, 0);
			break;
		}
		case 2:
			deliver(&h, fx_u16(&in));
			break;
		case 3:
			ke_server_conn_eof(h.srv, h.now);
			CHECK(ke_server_conn_done(h.srv));
			break;
		case 4:
			fire_timeout(&h);
			CHECK(ke_server_conn_done(h.srv));
			break;
		case 5:
			h.now += 50u * fx_u8(&in);
			if (h.now >= ke_server_conn_deadline(h.srv))
				fire_timeout(&h);
			break;
		case 6:
			if (tls_close(h.cli) == 0)
				h.cli_closed = true;
			deliver(&h, 0);
			break;
		case 7:
			p = fx_bytes(&in, fx_u16(&in), &n);
			input(&h, p, n);
			break;
		case 8:
			consume(&h, fx_u16(&in));
			break;
		case 9:
			h.tokens_slot = h.tokens_slot ? NULL : tokens;
			h.tokens_ever = true;
			break;
		}
		check_after(&h, d0, idle0);
	}
	/* The rest goes out; then the counters must match what the client read. */
	if (!h.done_seen) {
		ke_server_conn_timeout(h.srv, h.now);
		check_after(&h, 0, false);
	}
	CHECK(h.st.sessions == 1);
	if (!h.cli_dead) {
		client_read(&h);
		CHECK(h.st.errors[0] + h.st.errors[1] + h.st.errors[2] == h.errors);
		CHECK(h.st.completed == h.cookie_responses);
		CHECK(h.st.no_overlap == h.no_overlaps);
		CHECK(h.st.pool_support == h.supports);
		CHECK(h.plain_len == 0);
	}
	CHECK(h.st.keep_alive_reuse <= h.responses);
	ke_server_conn_free(h.srv);
	tls_free(h.cli);
	return 0;
}
