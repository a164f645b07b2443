/* Fuzz harness: the NTPv4 header parser and the RFC 7822 extension-field iterator, over a whole
 * packet (start 48) and over a decrypted plaintext (start 0).
 * Contract checked: the header parses iff there are 48 bytes, with every field in range, and
 * re-encodes to the same 48 bytes; kiss codes only at stratum 0; every field returned has a
 * length >= 4, a multiple of 4, lies inside the buffer right after the previous one; the clean end
 * is exactly the end of the buffer; errors are sticky. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ntp_packet.h"
#include "wire.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

static void check_header(const uint8_t *data, size_t size)
{
	struct ntp_packet_header h;
	int rc = ntp_packet_parse_header(data, size, &h);
	if (size < NTP_PACKET_HEADER_LEN) {
		CHECK(rc == -EBADMSG);
		return;
	}
	CHECK(rc == 0);
	CHECK(h.leap <= 3 && h.version <= 7 && h.mode <= 7);
	enum ntp_packet_kiss k = ntp_packet_kiss(&h);
	CHECK((h.stratum == 0) == (k != NTP_PACKET_KISS_NONE));

	uint8_t out[NTP_PACKET_HEADER_LEN];
	struct wire_writer w;
	wire_writer_init(&w, out, sizeof out);
	ntp_packet_put_header(&w, &h);
	CHECK(wire_writer_error(&w) == 0 && wire_written(&w) == NTP_PACKET_HEADER_LEN);
	CHECK(memcmp(out, data, NTP_PACKET_HEADER_LEN) == 0);
}

static void check_fields(const uint8_t *data, size_t size, size_t start)
{
	struct ntp_packet_ef_iter it;
	struct ntp_packet_ef ef;
	size_t off = start;
	int rc;
	ntp_packet_ef_iter_init(&it, data, size, start);
	while ((rc = ntp_packet_ef_next(&it, &ef)) == 1) {
		CHECK(ef.offset == off);
		CHECK(ef.len >= NTP_PACKET_EF_HEADER_LEN && ef.len % 4 == 0);
		CHECK(ef.offset + ef.len <= size);
		CHECK(ef.body == data + ef.offset + NTP_PACKET_EF_HEADER_LEN);
		CHECK(ef.body_len == (size_t)ef.len - NTP_PACKET_EF_HEADER_LEN);
		off += ef.len;
	}
	if (rc == 0) {
		CHECK(off == size);
		CHECK(ntp_packet_ef_next(&it, &ef) == 0);
	} else {
		CHECK(rc == -EBADMSG);
		CHECK(off < size || size < start);
		CHECK(ntp_packet_ef_next(&it, &ef) == -EBADMSG);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_header(data, size);
	check_fields(data, size, NTP_PACKET_HEADER_LEN);
	check_fields(data, size, 0);
	return 0;
}
