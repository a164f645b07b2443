#include "ntp_server.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "log.h"
#include "ntp_packet.h"
#include "nts_ntp.h"

/* The poll we echo is only advice to the client; a value outside what any implementation uses
 * (chrony goes down to -6, RFC 5905's MAXPOLL is 17) is nonsense and is not repeated. */
#define POLL_MIN (-6)
#define POLL_MAX 17

/* A legacy symmetric-key MAC after the header: key id and MD5 (20) or SHA-1 (24). RFC 7822 §7.5
 * makes these remainders impossible for extension fields (a lone last field is >= 28 bytes). */
#define MAC_MD5_LEN 20
#define MAC_SHA1_LEN 24

/* One pair of cipher handles per AEAD we issue cookies for, so alternating clients never make
 * aead_rekey switch algorithms (which reallocates). */
enum { SLOT_SIV_256, SLOT_SIV_512, SLOTS };

struct ntp_server {
	struct keyset *const *keyset_slot;
	struct ntp_server_stats *stats;
	struct aead *c2s[SLOTS];
	struct aead *s2c[SLOTS];
	/* Separate buckets so a flood of hostile packets cannot hide our own failures. */
	struct log_ratelimit peer_rl;
	struct log_ratelimit fail_rl;
	const struct ntp_server_policy *policy; /* NULL: serve every client request */
};

/* Client keys out of a cookie; wiped before the packet's handling returns. */
struct client_keys {
	uint16_t aead_id;
	size_t key_len;
	uint8_t c2s[AEAD_MAX_KEY_LEN];
	uint8_t s2c[AEAD_MAX_KEY_LEN];
};

int ntp_server_new(struct ntp_server **out, struct keyset *const *keyset_slot,
		   struct ntp_server_stats *stats)
{
	static const uint8_t zero_key[AEAD_MAX_KEY_LEN];
	static const uint16_t ids[SLOTS] = { AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_512 };
	struct ntp_server *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->keyset_slot = keyset_slot;
	s->stats = stats;
	s->peer_rl = (struct log_ratelimit)LOG_RATELIMIT_INIT(10, 20);
	s->fail_rl = (struct log_ratelimit)LOG_RATELIMIT_INIT(1, 5);
	/* Keyed with zeros only so the handles exist; every packet re-keys before use. */
	for (int i = 0; i < SLOTS; i++) {
		size_t kl = aead_key_len(ids[i]);
		if (aead_new(&s->c2s[i], ids[i], zero_key, kl) < 0 ||
		    aead_new(&s->s2c[i], ids[i], zero_key, kl) < 0) {
			ntp_server_free(s);
			return -ENOMEM;
		}
	}
	*out = s;
	return 0;
}

void ntp_server_free(struct ntp_server *s)
{
	if (!s)
		return;
	for (int i = 0; i < SLOTS; i++) {
		aead_free(s->c2s[i]);
		aead_free(s->s2c[i]);
	}
	free(s);
}

void ntp_server_set_policy(struct ntp_server *s, const struct ntp_server_policy *policy)
{
	s->policy = policy;
}

static uint64_t ts_ms(uint64_t ntp_ts)
{
	return (uint64_t)ntp_packet_ts_seconds(ntp_ts) * 1000u +
	       (((uint64_t)ntp_packet_ts_fraction(ntp_ts) * 1000u) >> 32);
}

static void note_peer(struct ntp_server *s, uint64_t rx_ts, const char *what, size_t len, int rc)
{
	if (log_enabled(LOG_LEVEL_DEBUG) && log_ratelimit_allow(&s->peer_rl, ts_ms(rx_ts)))
		log_debug("ntp: %s (%zu bytes, %d)", what, len, rc);
}

static size_t drop_internal(struct ntp_server *s, uint64_t rx_ts, const char *what, int rc)
{
	s->stats->dropped_internal++;
	if (log_ratelimit_allow(&s->fail_rl, ts_ms(rx_ts)))
		log_error("ntp: dropping a reply: %s failed (%d)", what, rc);
	return 0;
}

/* Legacy MACs are answered without one: we hold no symmetric keys, a client that insists on
 * authentication discards the reply, and the reply is still no longer than the request. */
static bool plain_length(size_t len)
{
	size_t rest = len - NTP_PACKET_HEADER_LEN;
	return rest == 0 || rest == MAC_MD5_LEN || rest == MAC_SHA1_LEN;
}

static int8_t clamp_poll(int8_t poll)
{
	return poll < POLL_MIN ? POLL_MIN : poll > POLL_MAX ? POLL_MAX : poll;
}

/* The reply header minus the transmit timestamp, which is read as late as possible. */
static struct ntp_packet_header reply_header(const struct ntp_packet_header *rq,
					     const struct ntp_server_clock *clk, uint64_t rx_ts)
{
	return (struct ntp_packet_header){
		.leap = clk->leap,
		.version = rq->version,
		.mode = NTP_PACKET_MODE_SERVER,
		.stratum = clk->stratum,
		.poll = clamp_poll(rq->poll),
		.precision = clk->precision,
		.root_delay = clk->root_delay,
		.root_dispersion = clk->root_disp,
		.refid = clk->refid,
		.reference_ts = clk->ref_ts,
		.origin_ts = rq->transmit_ts,
		.receive_ts = rx_ts,
	};
}

static size_t reply_plain(struct ntp_server *s, const struct ntp_packet_header *rq, uint64_t rx_ts,
			  const struct ntp_server_clock *clk, ntp_server_now_fn now, void *now_ud,
			  uint8_t *out, size_t cap)
{
	if (cap < NTP_PACKET_HEADER_LEN)
		return drop_internal(s, rx_ts, "plain reply (buffer)", -EMSGSIZE);
	struct ntp_packet_header h = reply_header(rq, clk, rx_ts);
	h.transmit_ts = now(now_ud);
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, &h);
	s->stats->plain++;
	return wire_written(&w);
}

/* Opens the cookie and checks the authenticator. -ENOKEY, -EBADMSG and -EPROTO are the client's
 * problem (answered with a NAK), and so is -EMSGSIZE (an oversize encrypted part, dropped);
 * anything else (aead_rekey's errors, -ENOMEM) is ours. */
static int open_request(struct ntp_server *s, struct keyset *ks, struct nts_ntp_request *q,
			struct client_keys *k, int *slot)
{
	if (!ks)
		return -ENOKEY;
	int rc = keyset_open_cookie(ks, q->cookie.data, q->cookie.len, &k->aead_id, k->c2s, k->s2c,
				    &k->key_len);
	if (rc < 0)
		return rc;
	/* Any other id still works: aead_rekey switches the handle's algorithm. */
	*slot = k->aead_id == AEAD_AES_SIV_CMAC_512 ? SLOT_SIV_512 : SLOT_SIV_256;
	rc = aead_rekey(s->c2s[*slot], k->aead_id, k->c2s, k->key_len);
	if (rc < 0)
		return rc;
	return nts_ntp_verify_request(q, s->c2s[*slot]);
}

static size_t reply_nak(struct ntp_server *s, const struct nts_ntp_request *q, uint64_t rx_ts,
			const struct ntp_server_clock *clk, uint8_t *out, size_t cap)
{
	/* A NAK carries no time (receive and transmit stay 0): a client that ignores the kiss code
	 * must not get an unauthenticated timestamp out of it. */
	struct ntp_packet_header h = {
		.leap = NTP_PACKET_LEAP_UNSYNC,
		.version = q->hdr.version,
		.poll = clamp_poll(q->hdr.poll),
		.precision = clk->precision,
	};
	int rc = nts_ntp_build_nak(q, &h, out, cap);
	if (rc < 0)
		return drop_internal(s, rx_ts, "NTS NAK", rc);
	s->stats->nts_naks++;
	return (size_t)rc;
}

static size_t reply_nts(struct ntp_server *s, struct nts_ntp_request *q, size_t len,
			uint64_t rx_ts, const struct ntp_server_clock *clk, ntp_server_now_fn now,
			void *now_ud, uint8_t *out, size_t cap)
{
	int rc;
	struct keyset *ks = *s->keyset_slot;
	struct client_keys k;
	int slot = SLOT_SIV_256;
	size_t n = 0;
	rc = open_request(s, ks, q, &k, &slot);
	if (rc == -EMSGSIZE) {
		/* An encrypted part larger than any request needs: the client's doing, not ours. */
		s->stats->dropped_malformed++;
		note_peer(s, rx_ts, "oversize NTS authenticator", len, rc);
		goto out;
	}
	if (rc == -ENOKEY || rc == -EBADMSG || rc == -EPROTO) {
		note_peer(s, rx_ts, "NTS NAK", len, rc);
		n = reply_nak(s, q, rx_ts, clk, out, cap);
		goto out;
	}
	if (rc < 0) {
		n = drop_internal(s, rx_ts, "opening an NTS request", rc);
		goto out;
	}
	rc = aead_rekey(s->s2c[slot], k.aead_id, k.s2c, k.key_len);
	if (rc < 0) {
		n = drop_internal(s, rx_ts, "keying S2C", rc);
		goto out;
	}

	/* One call to the generator per packet: the reply's nonce, then one per cookie. */
	unsigned want = nts_ntp_cookies_wanted(q);
	uint8_t rnd[NTS_NTP_NONCE_LEN + NTS_NTP_MAX_COOKIES * KEYSET_NONCE_LEN];
	if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, NTS_NTP_NONCE_LEN + want * KEYSET_NONCE_LEN) < 0) {
		n = drop_internal(s, rx_ts, "gnutls_rnd", -EIO);
		goto out;
	}
	uint8_t cookies[NTS_NTP_MAX_COOKIES][KEYSET_COOKIE_MAX_LEN];
	struct nts_ntp_span spans[NTS_NTP_MAX_COOKIES];
	for (unsigned i = 0; i < want; i++) {
		rc = keyset_seal_cookie(ks, k.aead_id, k.c2s, k.s2c, k.key_len,
					rnd + NTS_NTP_NONCE_LEN + i * KEYSET_NONCE_LEN, cookies[i],
					sizeof cookies[i]);
		if (rc < 0) {
			n = drop_internal(s, rx_ts, "sealing a cookie", rc);
			goto out;
		}
		spans[i] = (struct nts_ntp_span){ cookies[i], (size_t)rc };
	}
	struct nts_ntp_response_params p = {
		.hdr = reply_header(&q->hdr, clk, rx_ts),
		.cookies = spans,
		.n_cookies = want,
		.nonce = { rnd, NTS_NTP_NONCE_LEN },
	};
	p.hdr.transmit_ts = now(now_ud);
	rc = nts_ntp_build_response(q, &p, s->s2c[slot], out, cap, NULL);
	if (rc < 0) {
		n = drop_internal(s, rx_ts, "building an NTS response", rc);
		goto out;
	}
	s->stats->nts_accepted++;
	n = (size_t)rc;
out:
	gnutls_memset(&k, 0, sizeof k);
	return n;
}

/* A kiss-o'-death (RFC 5905 §7.4): stratum 0, the code as reference id, no time at all, so a
 * client that ignores the code learns nothing it could take for a measurement. */
static size_t reply_kiss(struct ntp_server *s, const struct ntp_packet_header *rq, uint64_t rx_ts,
			 uint32_t code, const struct ntp_server_clock *clk, uint8_t *out,
			 size_t cap)
{
	if (cap < NTP_PACKET_HEADER_LEN)
		return drop_internal(s, rx_ts, "kiss (buffer)", -EMSGSIZE);
	struct ntp_packet_header h = {
		.leap = NTP_PACKET_LEAP_UNSYNC,
		.version = rq->version,
		.mode = NTP_PACKET_MODE_SERVER,
		.stratum = 0,
		.poll = clamp_poll(rq->poll),
		.precision = clk->precision,
		.refid = code,
		.origin_ts = rq->transmit_ts,
	};
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, &h);
	return wire_written(&w);
}

static size_t refuse(struct ntp_server *s, const struct ntp_packet_header *rq, uint64_t rx_ts,
		     enum ntp_server_refusal how, const struct ntp_server_clock *clk, uint8_t *out,
		     size_t cap, size_t len, const char *why)
{
	note_peer(s, rx_ts, why, len, (int)how);
	if (how == NTP_SERVER_IGNORE) {
		s->stats->ignored++;
		return 0;
	}
	size_t n = reply_kiss(s, rq, rx_ts, NTP_PACKET_REFID_DENY, clk, out, cap);
	if (n)
		s->stats->denied++;
	return n;
}

/* The address rules, judged before any cryptography is spent on the request. */
static bool admitted(struct ntp_server *s, const struct sockaddr *from,
		     enum ntp_server_refusal *how, const char **why)
{
	const struct ntp_server_policy *p = s->policy;
	if (p->has_allow && cidr_match(p->allow, p->n_allow, from) < 0) {
		*how = p->allow_action;
		*why = "client outside the allowlist";
		return false;
	}
	if (p->n_deny && cidr_match(p->deny, p->n_deny, from) >= 0) {
		*how = p->deny_action;
		*why = "client in the denylist";
		return false;
	}
	return true;
}

static size_t handle(struct ntp_server *s, const struct sockaddr *from, uint64_t now_ms,
		     const uint8_t *req, size_t len, uint64_t rx_ts,
		     const struct ntp_server_clock *clk, ntp_server_now_fn now, void *now_ud,
		     uint8_t *out, size_t cap)
{
	s->stats->received++;
	struct ntp_packet_header h;
	if (ntp_packet_parse_header(req, len, &h) < 0) {
		s->stats->dropped_malformed++;
		note_peer(s, rx_ts, "short packet", len, -EBADMSG);
		return 0;
	}
	/* Answering anything but a client request invites reflection and amplification. */
	if (h.version < 1 || h.version > 4 || h.mode != NTP_PACKET_MODE_CLIENT) {
		s->stats->dropped_other++;
		note_peer(s, rx_ts, "not a client request", len, h.mode);
		return 0;
	}
	const struct ntp_server_policy *p = from ? s->policy : NULL;
	enum ntp_server_refusal how;
	const char *why;
	if (p && !admitted(s, from, &how, &why))
		return refuse(s, &h, rx_ts, how, clk, out, cap, len, why);
	/* Extension fields exist only in NTPv4. Unknown ones are ignored and answered plain (RFC
	 * 7822 §7.2). Any NTS field, the placeholder included, commits the packet to the NTS path,
	 * so a broken NTS request is dropped rather than silently downgraded to unauthenticated
	 * time. One walk over the fields decides and checks both. */
	struct nts_ntp_request q;
	int rc = -ENOMSG;
	if (!plain_length(len))
		rc = h.version == 4 ? nts_ntp_parse_request_fields(&h, req, len, &q) : -EBADMSG;
	if (rc != 0 && rc != -ENOMSG) {
		s->stats->dropped_malformed++;
		note_peer(s, rx_ts,
			  rc == -EBADMSG ? "malformed extension fields" : "malformed NTS request",
			  len, rc);
		return 0;
	}
	if (p && p->require_nts && rc == -ENOMSG)
		return refuse(s, &h, rx_ts, p->nts_action, clk, out, cap, len,
			      "plain request where NTS is required");
	if (p && p->rate && !ratelimit_allow(p->rate, from, now_ms)) {
		note_peer(s, rx_ts, "rate limited", len, 0);
		size_t n = reply_kiss(s, &h, rx_ts, NTP_PACKET_REFID_RATE, clk, out, cap);
		if (n)
			s->stats->rate_limited++;
		return n;
	}
	if (rc == 0)
		return reply_nts(s, &q, len, rx_ts, clk, now, now_ud, out, cap);
	return reply_plain(s, &h, rx_ts, clk, now, now_ud, out, cap);
}

size_t ntp_server_handle(struct ntp_server *s, const uint8_t *req, size_t len, uint64_t rx_ts,
			 const struct ntp_server_clock *clk, ntp_server_now_fn now, void *now_ud,
			 uint8_t *out, size_t cap)
{
	return handle(s, NULL, 0, req, len, rx_ts, clk, now, now_ud, out, cap);
}

size_t ntp_server_handle_from(struct ntp_server *s, const struct sockaddr *from, uint64_t now_ms,
			      const uint8_t *req, size_t len, uint64_t rx_ts,
			      const struct ntp_server_clock *clk, ntp_server_now_fn now,
			      void *now_ud, uint8_t *out, size_t cap)
{
	return handle(s, from, now_ms, req, len, rx_ts, clk, now, now_ud, out, cap);
}
