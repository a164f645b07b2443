/* One NTP time source, sans-I/O (PROTOCOL.md §5 and §7): builds the next request (plain NTPv4,
 * or NTS with a cookie from its stash and placeholders for the cookies it lacks), validates a
 * reply against the request it sent, turns a good reply into a clock sample, and keeps what
 * decides the source's future: the reachability register, the unanswered count, the cookie
 * stash, the poll interval, and the verdicts "needs a new key exchange" and "must be replaced".
 *
 * No socket, clock or random generator inside: the caller supplies the random transmit
 * timestamp, UID and nonce, the local send and receive times (NTP timestamps of the daemon's
 * clock) and the monotonic time of a sample. The I/O manager is sources.c. */
#ifndef NTSPOOL_SOURCE_H
#define NTSPOOL_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "ke_msg.h"
#include "nts_ntp.h"

/* Interop limits on cookies (PROTOCOL.md §5: NTPsec accepts no longer ones). */
#define SOURCE_COOKIE_MAX 192
#define SOURCE_MAX_COOKIES 8
/* Polls without a valid reply after which an NTS source needs a new key exchange. */
#define SOURCE_MAX_UNANSWERED 8
/* Requests sent at SOURCE_BURST_INTERVAL_S after (re)start, so the filter fills quickly. */
#define SOURCE_BURST_POLLS 4
#define SOURCE_BURST_INTERVAL_S 2
/* Room for any request we build: header, UID, 8 cookie-sized fields, authenticator. */
#define SOURCE_PACKET_MAX 2048

struct source;

/* poll_min/poll_max: log2 seconds, 0 <= poll_min <= poll_max <= 17 (from the configuration).
 * local_precision: log2 seconds of the daemon's clock reading. nts: an NTS source, unusable until
 * source_set_keys. *out is new (source_free). Returns 0, -EINVAL or -ENOMEM. */
int source_new(struct source **out, bool nts, int poll_min, int poll_max, int local_precision);
/* Wipes the keys and cookies and frees s. NULL is a no-op. */
void source_free(struct source *s);

/* Installs the result of a key exchange: AEAD id, keys (borrowed, copied, key_len bytes each)
 * and the cookies of the response (borrowed, copied). Every cookie must be 1..SOURCE_COOKIE_MAX
 * bytes and a multiple of 4, else the whole exchange is refused (-EBADMSG); no cookie: -ENODATA;
 * an AEAD we lack or a key length not its own: -ENOTSUP. On success the old keys and cookies are
 * gone, a request still out is forgotten (it was sealed with the old keys), the unanswered count
 * is 0 and the initial burst starts again. On failure s is unchanged. */
int source_set_keys(struct source *s, uint16_t aead, const uint8_t *c2s, const uint8_t *s2c,
		    size_t key_len, const struct ke_msg_cookie *cookies, size_t n_cookies);

/* The caller's random values for one request (from gnutls_rnd in the daemon, fixed in tests). */
struct source_random {
	uint64_t transmit; /* sent as the transmit timestamp; the reply's origin must echo it */
	uint8_t uid[NTS_NTP_UID_LEN];
	uint8_t nonce[NTS_NTP_NONCE_LEN];
};

/* Builds the next request into out (cap bytes, borrowed) and records it as the one outstanding:
 * the reachability register shifts, and a request still unanswered counts as unanswered. NTS:
 * the oldest cookie is taken out of the stash (each cookie is used once) and one placeholder is
 * added per cookie missing from a full stash. local_tx: the daemon's clock (NTP timestamp) as
 * close to the send as possible; it never goes on the wire (the transmit field carries
 * rnd->transmit, so the request reveals nothing of our clock). Returns the length, -ENOKEY for
 * an NTS source without keys or cookies (it needs a key exchange), -EMSGSIZE, or -EIO/-ENOMEM
 * from sealing. */
int source_build_request(struct source *s, const struct source_random *rnd, uint64_t local_tx,
			 uint8_t *out, size_t cap);

enum source_reply {
	SOURCE_REPLY_SAMPLE = 0, /* *sample filled */
	SOURCE_REPLY_UNSYNC,	 /* valid, but the server has no time to give: leap 3, stratum 16+
				  * or a zero reference timestamp (source_unsync_reason says which) */
	SOURCE_REPLY_NAK,	 /* NTS NAK with our UID: source_needs_rekey is now true */
	SOURCE_REPLY_RATE,	 /* kiss RATE: the poll interval backed off */
	SOURCE_REPLY_REPLACE,	 /* kiss RSTR or DENY: source_must_replace is now true */
	SOURCE_REPLY_KISS,	 /* another kiss code: ignored, as RFC 5905 allows */
};

/* Validates pkt[0, len) (borrowed, untrusted) as the reply to the outstanding request: mode 4,
 * origin = our random transmit, and for NTS an authenticator that opens with the S2C key over
 * our UID (or a NAK with our UID). Unauthenticated kiss codes of an NTS source fail
 * authentication like any forged packet. local_rx: the daemon's clock when the datagram arrived;
 * mono_s: the monotonic time stamped on the sample. A valid reply marks the poll answered,
 * stashes the fresh cookies (those breaking the SOURCE_COOKIE_MAX rule are skipped), and ends
 * the outstanding request so a replay is refused.
 * Returns an enum source_reply, or a negative errno with s untouched: -EALREADY no request
 * outstanding (late, duplicate or unsolicited), -EPROTO wrong mode or origin, a mismatched UID,
 * or zero server timestamps, -EBADMSG malformed or not authentic, -ENOMEM. */
int source_handle_reply(struct source *s, const uint8_t *pkt, size_t len, uint64_t local_rx,
			double mono_s, struct clock_sample *sample);

/* An NTS source that cannot poll any more without a key exchange: no cookie left, a NAK, or
 * SOURCE_MAX_UNANSWERED polls in a row without a valid reply. Always false for plain sources. */
bool source_needs_rekey(const struct source *s);
/* The server asked us to go away (RSTR or DENY). */
bool source_must_replace(const struct source *s);

/* Current poll exponent (log2 s) and the delay before the next request in seconds: 2^poll, or
 * SOURCE_BURST_INTERVAL_S (if shorter) for the first SOURCE_BURST_POLLS requests. The caller adds
 * its own random jitter. The exponent starts at poll_min; it rises one step after 8 offsets within
 * the error their delays allow (doc/timekeeping.md) and falls one step on each offset beyond 4
 * times it, within [poll_min, poll_max] (a RATE kiss also raises it). */
int source_poll(const struct source *s);
double source_poll_interval_s(const struct source *s);
/* Why the poll exponent last changed (a static string, for status). */
const char *source_poll_reason(const struct source *s);
/* After the clock was stepped: the next SOURCE_BURST_POLLS requests go at the burst interval and
 * the poll control starts over (the exponent stays). */
void source_restart_burst(struct source *s);

/* Why the last genuine reply gave no sample (a static string), NULL once one did. */
const char *source_unsync_reason(const struct source *s);

uint8_t source_reach(const struct source *s);
unsigned source_unanswered(const struct source *s);
unsigned source_cookies(const struct source *s);
bool source_is_nts(const struct source *s);

/* RFC 5905 on-wire arithmetic, exposed for tests: t1 local send, t2 server receive, t3 server
 * transmit, t4 local receive (NTP timestamps). offset = ((t2-t1)+(t3-t4))/2, delay =
 * (t4-t1)-(t3-t2), clamped at 0. */
void source_offset_delay(uint64_t t1, uint64_t t2, uint64_t t3, uint64_t t4, double *offset_s,
			 double *delay_s);

#endif
