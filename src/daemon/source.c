#include "source.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "aead.h"
#include "ntp_packet.h"
#include "wire.h"

/* Frequency tolerance of both clocks over the round trip (RFC 5905's PHI). */
#define PHI 15e-6

/* Poll control (doc/timekeeping.md). Each sample's offset is what the clock, steered to the
 * estimate, still errs by, plus the sample's own error. That error is bounded by half its excess
 * delay over the least recent one (queueing on one way and not the other); for a sample of at most
 * the mean excess delay it is typically a quarter of it. An offset within GATE_EXCESS times the
 * sample's excess plus GATE_MEAN times the mean excess counts towards a longer interval;
 * RAISE_AFTER of them raise it one step. An offset beyond LOWER_GATE times that bound lowers the
 * interval at once: the frequency changed, or the estimate is off, and samples are needed soon.
 * Samples of more than the mean excess say too little to count towards a raise. */
#define RAISE_AFTER 8
#define LOWER_GATE 4.0
#define GATE_EXCESS 0.25
#define GATE_MEAN 0.05
/* Samples before the controller judges (the initial burst). */
#define POLL_WARMUP 4

struct source {
	bool nts;
	int poll_min, poll_max, poll;
	int local_precision;
	uint8_t reach;
	unsigned unanswered;
	unsigned burst_left; /* requests still sent at the burst interval */
	bool nak;
	bool replace;
	const char *unsync; /* why the last genuine reply gave no sample; NULL after a sample */

	/* Poll control. */
	double delays[CLOCK_FILTER_SIZE]; /* recent delays, for the least one */
	unsigned n_samples;
	int good; /* offsets within the bound since the last change */
	const char *poll_reason;

	/* The outstanding request. */
	bool outstanding;
	uint64_t sent_transmit; /* random, on the wire */
	uint64_t local_tx;	/* our clock at send */
	uint8_t uid[NTS_NTP_UID_LEN];

	/* NTS: keys and the cookie stash, oldest first. */
	struct aead *c2s, *s2c;
	struct nts_ntp_cookie cookies[SOURCE_MAX_COOKIES];
	size_t n_cookies;
};

int source_new(struct source **out, bool nts, int poll_min, int poll_max, int local_precision)
{
	if (poll_min < 0 || poll_max > 17 || poll_min > poll_max)
		return -EINVAL;
	struct source *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->nts = nts;
	s->poll_min = poll_min;
	s->poll_max = poll_max;
	s->poll = poll_min;
	s->local_precision = local_precision;
	s->burst_left = SOURCE_BURST_POLLS;
	s->poll_reason = "start";
	*out = s;
	return 0;
}

static void drop_keys(struct source *s)
{
	aead_free(s->c2s);
	aead_free(s->s2c);
	s->c2s = s->s2c = NULL;
	gnutls_memset(s->cookies, 0, sizeof s->cookies);
	s->n_cookies = 0;
}

void source_free(struct source *s)
{
	if (!s)
		return;
	drop_keys(s);
	gnutls_memset(s, 0, sizeof *s);
	free(s);
}

static bool cookie_ok(size_t len)
{
	return len > 0 && len <= SOURCE_COOKIE_MAX && len % 4 == 0;
}

int source_set_keys(struct source *s, uint16_t aead, const uint8_t *c2s, const uint8_t *s2c,
		    size_t key_len, const struct ke_msg_cookie *cookies, size_t n_cookies)
{
	if (!s->nts || !aead_supported(aead) || key_len != aead_key_len(aead))
		return -ENOTSUP;
	if (n_cookies == 0)
		return -ENODATA;
	for (size_t i = 0; i < n_cookies; i++)
		if (!cookie_ok(cookies[i].len))
			return -EBADMSG;
	struct aead *a = NULL, *b = NULL;
	int rc = aead_new(&a, aead, c2s, key_len);
	if (rc == 0)
		rc = aead_new(&b, aead, s2c, key_len);
	if (rc < 0) {
		aead_free(a);
		return rc;
	}
	drop_keys(s);
	s->c2s = a;
	s->s2c = b;
	if (n_cookies > SOURCE_MAX_COOKIES)
		n_cookies = SOURCE_MAX_COOKIES;
	for (size_t i = 0; i < n_cookies; i++) {
		memcpy(s->cookies[i].data, cookies[i].data, cookies[i].len);
		s->cookies[i].len = cookies[i].len;
	}
	s->n_cookies = n_cookies;
	s->outstanding = false;
	s->unanswered = 0;
	s->nak = false;
	s->replace = false;
	s->burst_left = SOURCE_BURST_POLLS;
	return 0;
}

static int build_plain(const struct ntp_packet_header *h, uint8_t *out, size_t cap)
{
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, h);
	return wire_writer_error(&w) < 0 ? -EMSGSIZE : (int)wire_written(&w);
}

int source_build_request(struct source *s, const struct source_random *rnd, uint64_t local_tx,
			 uint8_t *out, size_t cap)
{
	/* Only what a client must send: no clock, reference or stratum of ours (RFC 9109). */
	struct ntp_packet_header h = {
		.leap = NTP_PACKET_LEAP_UNSYNC,
		.version = NTP_PACKET_VERSION,
		.mode = NTP_PACKET_MODE_CLIENT,
		.transmit_ts = rnd->transmit,
	};
	int n;
	if (!s->nts) {
		n = build_plain(&h, out, cap);
	} else {
		if (!s->c2s || s->n_cookies == 0)
			return -ENOKEY;
		const struct nts_ntp_cookie *c = &s->cookies[0];
		struct nts_ntp_request_params p = {
			.hdr = h,
			.uid = { rnd->uid, sizeof rnd->uid },
			.cookie = { c->data, c->len },
			.placeholders = (unsigned)(SOURCE_MAX_COOKIES - s->n_cookies),
			.nonce = { rnd->nonce, sizeof rnd->nonce },
		};
		n = nts_ntp_build_request(&p, s->c2s, out, cap);
		if (n >= 0) {
			/* Spent: a cookie sent twice would link our requests. */
			memmove(&s->cookies[0], &s->cookies[1],
				(s->n_cookies - 1) * sizeof s->cookies[0]);
			s->n_cookies--;
			gnutls_memset(&s->cookies[s->n_cookies], 0, sizeof s->cookies[0]);
		}
	}
	if (n < 0)
		return n;
	s->reach = (uint8_t)(s->reach << 1);
	s->unanswered++;
	if (s->burst_left > 0)
		s->burst_left--;
	s->outstanding = true;
	s->sent_transmit = rnd->transmit;
	s->local_tx = local_tx;
	memcpy(s->uid, rnd->uid, sizeof s->uid);
	return n;
}

void source_offset_delay(uint64_t t1, uint64_t t2, uint64_t t3, uint64_t t4, double *offset_s,
			 double *delay_s)
{
	/* Differences first, in integer nanoseconds, so 64-bit timestamps lose no precision. */
	double a = (double)ntp_packet_ts_diff_ns(t2, t1) / 1e9;
	double b = (double)ntp_packet_ts_diff_ns(t3, t4) / 1e9;
	double d = (double)(ntp_packet_ts_diff_ns(t4, t1) - ntp_packet_ts_diff_ns(t3, t2)) / 1e9;
	*offset_s = (a + b) / 2;
	*delay_s = d > 0 ? d : 0;
}

/* 2^e for the small exponents of poll and precision fields (no libm needed). */
static double pow2(int e)
{
	double v = 1.0;
	for (; e > 0; e--)
		v *= 2;
	for (; e < 0; e++)
		v /= 2;
	return v;
}

/* The poll interval a RATE kiss asks for: one step longer, at least the server's own poll field,
 * never beyond the configured maximum. */
static void back_off(struct source *s, int8_t server_poll)
{
	int p = s->poll + 1;
	if (server_poll > p)
		p = server_poll;
	s->poll = p > s->poll_max ? s->poll_max : p;
	s->burst_left = 0;
	s->poll_reason = "the server sent a RATE kiss";
}

/* Stashes the fresh cookies of an authenticated reply behind the ones held. */
static void stash(struct source *s, const struct nts_ntp_response *r)
{
	for (size_t i = 0; i < r->n_cookies && s->n_cookies < SOURCE_MAX_COOKIES; i++) {
		if (!cookie_ok(r->cookies[i].len))
			continue;
		s->cookies[s->n_cookies++] = r->cookies[i];
	}
}

/* Decides the poll interval from what the last sample says of the clock (see the top). */
static void poll_control(struct source *s, double offset, double delay)
{
	s->delays[s->n_samples % CLOCK_FILTER_SIZE] = delay;
	s->n_samples++;
	unsigned nd = s->n_samples < CLOCK_FILTER_SIZE ? s->n_samples : CLOCK_FILTER_SIZE;
	double dmin = delay, dsum = 0;
	for (unsigned i = 0; i < nd; i++)
		dmin = s->delays[i] < dmin ? s->delays[i] : dmin;
	for (unsigned i = 0; i < nd; i++)
		dsum += s->delays[i] - dmin;
	if (s->n_samples <= POLL_WARMUP)
		return;
	double excess = delay - dmin, mean_excess = dsum / nd;
	double bound = GATE_MEAN * mean_excess + GATE_EXCESS * excess + pow2(s->local_precision);
	double mag = fabs(offset);
	if (mag > LOWER_GATE * bound) {
		s->good = 0;
		if (s->poll > s->poll_min) {
			s->poll--;
			s->poll_reason = "offset beyond the bound its delay allows";
		}
	} else if (mag < bound && excess <= mean_excess && ++s->good >= RAISE_AFTER) {
		s->good = 0;
		if (s->poll < s->poll_max) {
			s->poll++;
			s->poll_reason = "offsets within the bound their delays allow";
		}
	}
}

int source_handle_reply(struct source *s, const uint8_t *pkt, size_t len, uint64_t local_rx,
			double mono_s, struct clock_sample *sample)
{
	struct nts_ntp_response r;
	int rc;
	if (!s->outstanding)
		return -EALREADY;
	if (s->nts) {
		rc = nts_ntp_verify_response(pkt, len, s->sent_transmit, s->uid, sizeof s->uid,
					     s->s2c, &r);
		if (rc < 0)
			return rc;
	} else {
		r.n_cookies = 0;
		rc = ntp_packet_parse_header(pkt, len, &r.hdr);
		if (rc < 0)
			return rc;
		if (r.hdr.mode != NTP_PACKET_MODE_SERVER || r.hdr.origin_ts != s->sent_transmit)
			return -EPROTO;
	}
	/* A copy: r is wiped once its cookies are stashed. */
	const struct ntp_packet_header hdr = r.hdr, *h = &hdr;
	enum ntp_packet_kiss kiss = ntp_packet_kiss(h);
	if (rc == NTS_NTP_RESPONSE_OK && kiss == NTP_PACKET_KISS_NONE &&
	    (h->receive_ts == 0 || h->transmit_ts == 0)) {
		gnutls_memset(&r, 0, sizeof r);
		return -EPROTO;
	}

	/* From here the reply is genuine and answers our request. */
	s->outstanding = false;
	if (rc == NTS_NTP_RESPONSE_NAK) {
		s->nak = true;
		return SOURCE_REPLY_NAK;
	}
	s->reach |= 1;
	s->unanswered = 0;
	stash(s, &r);
	gnutls_memset(&r, 0, sizeof r);
	switch (kiss) {
	case NTP_PACKET_KISS_NONE:
		break;
	case NTP_PACKET_KISS_RATE:
		back_off(s, h->poll);
		return SOURCE_REPLY_RATE;
	case NTP_PACKET_KISS_RSTR:
	case NTP_PACKET_KISS_DENY:
		s->replace = true;
		return SOURCE_REPLY_REPLACE;
	case NTP_PACKET_KISS_NTSN:
	case NTP_PACKET_KISS_OTHER:
		return SOURCE_REPLY_KISS;
	}
	/* A server that is not synchronised itself has no time to give (RFC 5905 §8-9). */
	if (h->leap == NTP_PACKET_LEAP_UNSYNC) {
		s->unsync = "server unsynchronised (leap indicator 3)";
		return SOURCE_REPLY_UNSYNC;
	}
	if (h->stratum >= 16) {
		s->unsync = "server unsynchronised (stratum 16)";
		return SOURCE_REPLY_UNSYNC;
	}
	if (h->reference_ts == 0) {
		s->unsync = "server has never been synchronised (zero reference time)";
		return SOURCE_REPLY_UNSYNC;
	}
	s->unsync = NULL;

	double offset, delay;
	source_offset_delay(s->local_tx, h->receive_ts, h->transmit_ts, local_rx, &offset, &delay);
	*sample = (struct clock_sample){
		.mono_s = mono_s,
		.offset_s = offset,
		.delay_s = delay,
		.dispersion_s = pow2(h->precision) + pow2(s->local_precision) + PHI * delay,
		.root_delay_s = (double)ntp_packet_short_to_ns(h->root_delay) / 1e9,
		.root_disp_s = (double)ntp_packet_short_to_ns(h->root_dispersion) / 1e9,
		.stratum = h->stratum,
		.leap = h->leap,
		.refid = h->refid,
	};
	poll_control(s, offset, delay);
	return SOURCE_REPLY_SAMPLE;
}

bool source_needs_rekey(const struct source *s)
{
	return s->nts && (s->c2s == NULL || s->n_cookies == 0 || s->nak ||
			  s->unanswered >= SOURCE_MAX_UNANSWERED);
}

bool source_must_replace(const struct source *s)
{
	return s->replace;
}

int source_poll(const struct source *s)
{
	return s->poll;
}

const char *source_poll_reason(const struct source *s)
{
	return s->poll_reason;
}

void source_restart_burst(struct source *s)
{
	s->burst_left = SOURCE_BURST_POLLS;
	s->n_samples = 0;
	s->good = 0;
}

double source_poll_interval_s(const struct source *s)
{
	double full = pow2(s->poll);
	if (s->burst_left > 0 && full > SOURCE_BURST_INTERVAL_S)
		return SOURCE_BURST_INTERVAL_S;
	return full;
}

const char *source_unsync_reason(const struct source *s)
{
	return s->unsync;
}

uint8_t source_reach(const struct source *s)
{
	return s->reach;
}

unsigned source_unanswered(const struct source *s)
{
	return s->unanswered;
}

unsigned source_cookies(const struct source *s)
{
	return (unsigned)s->n_cookies;
}

bool source_is_nts(const struct source *s)
{
	return s->nts;
}
