/* NTPv4 packet header (RFC 5905), timestamps and RFC 7822 extension fields. Sans-I/O.
 *
 * Extension field rule we apply on input: the length counts the 4-byte header, is at least 4, is
 * a multiple of 4 and never reaches past the end of the packet; bytes after the header that do
 * not form such a field make the packet malformed. We do not enforce RFC 7822's 16-octet minimum
 * (28 for the last field) on input: it exists so a receiver can tell an extension field from a
 * legacy MAC, NTS packets carry no MAC, and each NTS field has its own stricter minimum checked by
 * nts_ntp. Everything we build meets the RFC 7822 minimums anyway (the smallest NTS field we send,
 * the UID, is 36 octets). A legacy symmetric-key MAC is therefore not recognised here.
 *
 * Pointer arguments are borrowed for the duration of the call unless a comment says otherwise. */
#ifndef NTSPOOL_NTP_PACKET_H
#define NTSPOOL_NTP_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "wire.h"

#define NTP_PACKET_HEADER_LEN 48
#define NTP_PACKET_EF_HEADER_LEN 4
#define NTP_PACKET_VERSION 4

/* Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch. */
#define NTP_PACKET_UNIX_OFFSET 2208988800u

enum ntp_packet_mode {
	NTP_PACKET_MODE_SYMMETRIC_ACTIVE = 1,
	NTP_PACKET_MODE_SYMMETRIC_PASSIVE = 2,
	NTP_PACKET_MODE_CLIENT = 3,
	NTP_PACKET_MODE_SERVER = 4,
	NTP_PACKET_MODE_BROADCAST = 5,
};

enum ntp_packet_leap {
	NTP_PACKET_LEAP_NONE = 0,
	NTP_PACKET_LEAP_INSERT = 1,
	NTP_PACKET_LEAP_DELETE = 2,
	NTP_PACKET_LEAP_UNSYNC = 3,
};

/* Reference ids of the kiss codes we act on, as the four ASCII bytes read big-endian. */
#define NTP_PACKET_REFID_RATE 0x52415445u /* "RATE" */
#define NTP_PACKET_REFID_RSTR 0x52535452u /* "RSTR" */
#define NTP_PACKET_REFID_DENY 0x44454e59u /* "DENY" */
#define NTP_PACKET_REFID_NTSN 0x4e54534eu /* "NTSN" */

enum ntp_packet_kiss {
	NTP_PACKET_KISS_NONE = 0, /* not a kiss-o'-death: stratum is not 0 */
	NTP_PACKET_KISS_RATE,
	NTP_PACKET_KISS_RSTR,
	NTP_PACKET_KISS_DENY,
	NTP_PACKET_KISS_NTSN,
	NTP_PACKET_KISS_OTHER, /* stratum 0 with a code we do not act on */
};

/* The header, decoded. Timestamps are raw 32.32 NTP values; root delay and dispersion are the raw
 * 16.16 short format. */
struct ntp_packet_header {
	uint8_t leap;    /* 0..3 */
	uint8_t version; /* 0..7 */
	uint8_t mode;    /* 0..7 */
	uint8_t stratum;
	int8_t poll;
	int8_t precision;
	uint32_t root_delay;
	uint32_t root_dispersion;
	uint32_t refid;
	uint64_t reference_ts;
	uint64_t origin_ts;
	uint64_t receive_ts;
	uint64_t transmit_ts;
};

/* Reads the 48-byte header from r (borrowed). 0, or the reader's error (-EBADMSG when short). */
int ntp_packet_get_header(struct wire_reader *r, struct ntp_packet_header *h);

/* Decodes the header at the start of pkt (borrowed; extension fields after it are not looked at).
 * -EBADMSG if len < 48. */
int ntp_packet_parse_header(const uint8_t *pkt, size_t len, struct ntp_packet_header *h);

/* Writes the 48-byte header to w (borrowed). leap <= 3, version and mode <= 7 (asserted: a wider
 * value is the caller's bug). Errors are left in w's sticky error. */
void ntp_packet_put_header(struct wire_writer *w, const struct ntp_packet_header *h);

/* Classifies a kiss-o'-death: NTP_PACKET_KISS_NONE unless stratum is 0. */
enum ntp_packet_kiss ntp_packet_kiss(const struct ntp_packet_header *h);

/* Timestamps. An NTP timestamp carries seconds modulo 2^32 (the era is not on the wire), so
 * conversion to Unix time needs a pivot: the result is the Unix time within [pivot - 2^31,
 * pivot + 2^31) whose NTP seconds match. Callers pass their current time (or any time known to
 * be within 68 years of the timestamp). */
static inline uint64_t ntp_packet_ts_make(uint32_t seconds, uint32_t fraction)
{
	return (uint64_t)seconds << 32 | fraction;
}

static inline uint32_t ntp_packet_ts_seconds(uint64_t ts)
{
	return (uint32_t)(ts >> 32);
}

static inline uint32_t ntp_packet_ts_fraction(uint64_t ts)
{
	return (uint32_t)ts;
}

/* Unix time -> NTP timestamp (seconds wrap into the era; fraction rounded to nearest).
 * ts->tv_nsec must be in [0, 1e9). */
uint64_t ntp_packet_ts_from_timespec(const struct timespec *ts);

/* NTP timestamp -> Unix time nearest pivot_unix_s (see above); exact inverse of the above for
 * times within the pivot window. */
void ntp_packet_ts_to_timespec(uint64_t ntp_ts, int64_t pivot_unix_s, struct timespec *out);

/* a - b in nanoseconds, taking the difference modulo 2^32 seconds so it is right across an era
 * boundary as long as |a - b| < 68 years. */
int64_t ntp_packet_ts_diff_ns(uint64_t a, uint64_t b);

/* NTP short format (16.16 seconds) <-> nanoseconds; from_ns saturates at 0xffffffff. */
uint64_t ntp_packet_short_to_ns(uint32_t v);
uint32_t ntp_packet_short_from_ns(uint64_t ns);

/* Extension fields. */
struct ntp_packet_ef {
	uint16_t type;
	uint16_t len;        /* whole field, header included */
	size_t offset;       /* of the field's first byte in the packet */
	const uint8_t *body; /* borrowed, len - 4 bytes (padding included) */
	size_t body_len;
};

struct ntp_packet_ef_iter {
	struct wire_reader r; /* over the whole buffer, so offsets are packet offsets */
};

/* Iterates the fields of buf[start, len). pkt is borrowed and must outlive the iterator; for a
 * whole packet start = NTP_PACKET_HEADER_LEN (a packet shorter than that fails on the first next).
 * Also used over a decrypted plaintext with start = 0, where offsets are within the plaintext. */
void ntp_packet_ef_iter_init(struct ntp_packet_ef_iter *it, const uint8_t *buf, size_t len,
			     size_t start);

/* 1 and *ef filled (body borrowed from the packet), 0 at the clean end, -EBADMSG for a malformed
 * field or trailing bytes; errors are sticky. */
int ntp_packet_ef_next(struct ntp_packet_ef_iter *it, struct ntp_packet_ef *ef);

/* Size on the wire of a field with a body of body_len bytes (zero-padded to a multiple of 4). */
static inline size_t ntp_packet_ef_size(size_t body_len)
{
	return NTP_PACKET_EF_HEADER_LEN + ((body_len + 3) & ~(size_t)3);
}

/* Writes a field header for a field of field_len bytes (header included); the caller writes the
 * body. -EINVAL if field_len is not a multiple of 4, < 4 or > 65535; else w's sticky error. */
int ntp_packet_put_ef_header(struct wire_writer *w, uint16_t type, size_t field_len);

/* Writes a whole field: header, body (borrowed) and zero padding to a multiple of 4.
 * -EINVAL if it would exceed 65535 bytes; else w's sticky error. */
int ntp_packet_put_ef(struct wire_writer *w, uint16_t type, const void *body, size_t body_len);

#endif
