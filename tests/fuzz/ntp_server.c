/* Fuzz harness: ntp_server_handle, the daemon's whole packet path (header checks, plain replies,
 * NTS shape, cookie opening, authentication, NAKs and NTS replies), with a fixed keyset (one
 * all-zero master key with id 1, as in tests/vectors/cookie.txt) and a fixed clock.
 * Contract checked: a reply is never longer than the request or the buffer, is at least a header,
 * answers only a mode-3 request of version 1..4, is mode 4 with the request's transmit timestamp
 * as origin; every datagram lands in exactly one counter. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyset.h"
#include "ntp_packet.h"
#include "ntp_server.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

#define RX_TS 0xe9a1b2c311223344ull
#define TX_TS 0xe9a1b2c355667788ull

static const struct ntp_server_clock clk = {
	.leap = NTP_PACKET_LEAP_NONE,
	.stratum = 2,
	.precision = -23,
	.refid = 0xc0000201u,
	.ref_ts = 0xe9a1b2c000000000ull,
	.root_delay = 0x00000123u,
	.root_disp = 0x00000456u,
};

/* Built on first use and kept: the only state shared between inputs. */
static struct keyset *ks;

static uint64_t now_cb(void *ud)
{
	(void)ud;
	return TX_TS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (ks == NULL) {
		static const uint8_t key[KEYSET_KEY_LEN];
		if (keyset_from_keys(&ks, 1, 0, 1, key, 0) != 0)
			abort();
	}

	struct ntp_server_stats stats;
	memset(&stats, 0, sizeof stats);
	struct ntp_server *srv;
	CHECK(ntp_server_new(&srv, &ks, &stats) == 0);

	uint8_t out[4096];
	size_t n = ntp_server_handle(srv, data, size, RX_TS, &clk, now_cb, NULL, out, sizeof out);
	CHECK(n <= size && n <= sizeof out);
	CHECK(stats.received == 1);
	CHECK(stats.plain + stats.nts_accepted + stats.nts_naks + stats.dropped_malformed +
		      stats.dropped_other + stats.dropped_internal ==
	      1);
	CHECK((n > 0) == (stats.plain + stats.nts_accepted + stats.nts_naks == 1));
	if (n > 0) {
		struct ntp_packet_header req, rep;
		CHECK(n >= NTP_PACKET_HEADER_LEN);
		CHECK(ntp_packet_parse_header(data, size, &req) == 0);
		CHECK(req.mode == NTP_PACKET_MODE_CLIENT && req.version >= 1 && req.version <= 4);
		CHECK(ntp_packet_parse_header(out, n, &rep) == 0);
		CHECK(rep.mode == NTP_PACKET_MODE_SERVER);
		CHECK(rep.origin_ts == req.transmit_ts);
		if (stats.nts_naks)
			CHECK(rep.stratum == 0 && rep.refid == NTP_PACKET_REFID_NTSN);
	}
	ntp_server_free(srv);
	return 0;
}
