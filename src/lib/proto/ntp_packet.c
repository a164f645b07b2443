#include "ntp_packet.h"

#include <assert.h>
#include <errno.h>

#define NS_PER_S 1000000000ull

int ntp_packet_get_header(struct wire_reader *r, struct ntp_packet_header *h)
{
	uint8_t first = wire_get_u8(r);
	h->leap = first >> 6;
	h->version = (first >> 3) & 7;
	h->mode = first & 7;
	h->stratum = wire_get_u8(r);
	h->poll = (int8_t)wire_get_u8(r);
	h->precision = (int8_t)wire_get_u8(r);
	h->root_delay = wire_get_u32(r);
	h->root_dispersion = wire_get_u32(r);
	h->refid = wire_get_u32(r);
	h->reference_ts = wire_get_u64(r);
	h->origin_ts = wire_get_u64(r);
	h->receive_ts = wire_get_u64(r);
	h->transmit_ts = wire_get_u64(r);
	return wire_error(r);
}

int ntp_packet_parse_header(const uint8_t *pkt, size_t len, struct ntp_packet_header *h)
{
	struct wire_reader r;
	wire_reader_init(&r, pkt, len);
	return ntp_packet_get_header(&r, h);
}

void ntp_packet_put_header(struct wire_writer *w, const struct ntp_packet_header *h)
{
	assert(h->leap <= 3 && h->version <= 7 && h->mode <= 7);
	wire_put_u8(w, (uint8_t)(h->leap << 6 | h->version << 3 | h->mode));
	wire_put_u8(w, h->stratum);
	wire_put_u8(w, (uint8_t)h->poll);
	wire_put_u8(w, (uint8_t)h->precision);
	wire_put_u32(w, h->root_delay);
	wire_put_u32(w, h->root_dispersion);
	wire_put_u32(w, h->refid);
	wire_put_u64(w, h->reference_ts);
	wire_put_u64(w, h->origin_ts);
	wire_put_u64(w, h->receive_ts);
	wire_put_u64(w, h->transmit_ts);
}

enum ntp_packet_kiss ntp_packet_kiss(const struct ntp_packet_header *h)
{
	if (h->stratum != 0)
		return NTP_PACKET_KISS_NONE;
	switch (h->refid) {
	case NTP_PACKET_REFID_RATE:
		return NTP_PACKET_KISS_RATE;
	case NTP_PACKET_REFID_RSTR:
		return NTP_PACKET_KISS_RSTR;
	case NTP_PACKET_REFID_DENY:
		return NTP_PACKET_KISS_DENY;
	case NTP_PACKET_REFID_NTSN:
		return NTP_PACKET_KISS_NTSN;
	default:
		return NTP_PACKET_KISS_OTHER;
	}
}

uint64_t ntp_packet_ts_from_timespec(const struct timespec *ts)
{
	assert(ts->tv_nsec >= 0 && (uint64_t)ts->tv_nsec < NS_PER_S);
	/* Unsigned arithmetic wraps the seconds into the era, also for times before 1970. */
	uint32_t sec = (uint32_t)((uint64_t)ts->tv_sec + NTP_PACKET_UNIX_OFFSET);
	/* Round to nearest; ns < 1e9 keeps the result below 2^32. */
	uint64_t frac = (((uint64_t)ts->tv_nsec << 32) + NS_PER_S / 2) / NS_PER_S;
	return ntp_packet_ts_make(sec, (uint32_t)frac);
}

/* v interpreted as a two's-complement 32-bit number, without implementation-defined casts. */
static int64_t signed32(uint32_t v)
{
	return v >= 0x80000000u ? (int64_t)v - 0x100000000ll : (int64_t)v;
}

void ntp_packet_ts_to_timespec(uint64_t ntp_ts, int64_t pivot_unix_s, struct timespec *out)
{
	uint32_t pivot_ntp = (uint32_t)((uint64_t)pivot_unix_s + NTP_PACKET_UNIX_OFFSET);
	int64_t delta = signed32(ntp_packet_ts_seconds(ntp_ts) - pivot_ntp);
	uint64_t ns = ((uint64_t)ntp_packet_ts_fraction(ntp_ts) * NS_PER_S + (1ull << 31)) >> 32;
	int64_t sec = pivot_unix_s + delta;
	/* A fraction just below 1 s rounds up to a whole second. */
	if (ns == NS_PER_S) {
		ns = 0;
		sec++;
	}
	out->tv_sec = (time_t)sec;
	out->tv_nsec = (long)ns;
}

int64_t ntp_packet_ts_diff_ns(uint64_t a, uint64_t b)
{
	uint64_t d = a - b;
	int64_t sec = signed32((uint32_t)(d >> 32));
	int64_t frac_ns = (int64_t)(((d & 0xffffffffull) * NS_PER_S + (1ull << 31)) >> 32);
	return sec * (int64_t)NS_PER_S + frac_ns;
}

uint64_t ntp_packet_short_to_ns(uint32_t v)
{
	return ((uint64_t)v * NS_PER_S + (1ull << 15)) >> 16;
}

uint32_t ntp_packet_short_from_ns(uint64_t ns)
{
	uint64_t limit = ((uint64_t)0xffffffffu * NS_PER_S) >> 16;
	if (ns >= limit)
		return 0xffffffffu;
	return (uint32_t)(((ns << 16) + NS_PER_S / 2) / NS_PER_S);
}

void ntp_packet_ef_iter_init(struct ntp_packet_ef_iter *it, const uint8_t *buf, size_t len,
			     size_t start)
{
	wire_reader_init(&it->r, buf, len);
	wire_skip(&it->r, start);
}

int ntp_packet_ef_next(struct ntp_packet_ef_iter *it, struct ntp_packet_ef *ef)
{
	struct wire_reader *r = &it->r;
	if (wire_error(r))
		return wire_error(r);
	if (wire_remaining(r) == 0)
		return 0;
	size_t offset = wire_offset(r);
	uint16_t type = wire_get_u16(r);
	uint16_t len = wire_get_u16(r);
	if (wire_error(r))
		return wire_error(r);
	if (len < NTP_PACKET_EF_HEADER_LEN || len % 4 != 0 ||
	    (size_t)(len - NTP_PACKET_EF_HEADER_LEN) > wire_remaining(r)) {
		wire_reader_fail(r, -EBADMSG);
		return -EBADMSG;
	}
	ef->type = type;
	ef->len = len;
	ef->offset = offset;
	ef->body_len = len - NTP_PACKET_EF_HEADER_LEN;
	ef->body = wire_get_bytes(r, ef->body_len);
	return 1;
}

int ntp_packet_put_ef_header(struct wire_writer *w, uint16_t type, size_t field_len)
{
	if (field_len < NTP_PACKET_EF_HEADER_LEN || field_len % 4 != 0 || field_len > UINT16_MAX)
		return -EINVAL;
	wire_put_u16(w, type);
	wire_put_u16(w, (uint16_t)field_len);
	return wire_writer_error(w);
}

int ntp_packet_put_ef(struct wire_writer *w, uint16_t type, const void *body, size_t body_len)
{
	if (body_len > UINT16_MAX - NTP_PACKET_EF_HEADER_LEN)
		return -EINVAL;
	size_t field_len = ntp_packet_ef_size(body_len);
	int rc = ntp_packet_put_ef_header(w, type, field_len);
	if (rc < 0)
		return rc;
	wire_put_bytes(w, body, body_len);
	wire_put_zeros(w, field_len - NTP_PACKET_EF_HEADER_LEN - body_len);
	return wire_writer_error(w);
}
