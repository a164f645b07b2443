#include "proxy_proto.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define MUTATIONS 20000

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* ---- Helpers --------------------------------------------------------------------------- */

static int parse(const void *buf, size_t len, struct proxy_proto_info *out)
{
	const char *why = "unset";
	int rc = proxy_proto_parse(buf, len, out, &why);

	if (rc < 0) {
		cr_assert_eq(rc, -EPROTO);
		cr_assert(why && *why, "a refusal says why");
	} else {
		cr_assert_null(why, "no reason without a refusal");
	}
	return rc;
}

/* The results over the prefixes buf[0, k), k = 0..len: zero while undecided, then one verdict
 * that more bytes never change (a positive length, at most k, or -EPROTO). Returns the length
 * of the shortest decided prefix (len + 1 if none) and the verdict in *verdict. */
static size_t decided_at(const uint8_t *buf, size_t len, int *verdict)
{
	struct proxy_proto_info info;
	size_t at = len + 1;

	*verdict = 0;
	for (size_t k = 0; k <= len; k++) {
		int rc = parse(buf, k, &info);

		if (at > len) {
			if (rc == 0)
				continue;
			at = k;
			*verdict = rc;
			if (rc > 0)
				cr_assert_leq((size_t)rc, k);
			continue;
		}
		cr_assert_eq(rc, *verdict, "prefix %zu: %d after %d at %zu", k, rc, *verdict, at);
	}
	return at;
}

/* A valid header of exactly len bytes: every shorter prefix needs more, the whole is accepted,
 * and bytes after it (here the start of a TLS ClientHello) are left alone. */
static void accept_exactly(const uint8_t *hdr, size_t len, struct proxy_proto_info *out)
{
	uint8_t buf[PROXY_PROTO_MAX + 8];
	int verdict;

	cr_assert_leq(len, PROXY_PROTO_MAX);
	memcpy(buf, hdr, len);
	memcpy(buf + len, "\x16\x03\x01\x02\x00\x01\x00\x01", 8);
	cr_assert_eq(decided_at(buf, len + 8, &verdict), len, "decided at the last byte");
	cr_assert_eq(verdict, (int)len);
	cr_assert_eq(parse(hdr, len, out), (int)len);
}

static void accept_str(const char *s, struct proxy_proto_info *out)
{
	accept_exactly((const uint8_t *)s, strlen(s), out);
}

/* A header refused once its first len_at bytes arrived, never before. */
static void refuse_at(const uint8_t *buf, size_t len, size_t len_at)
{
	int verdict;
	size_t at = decided_at(buf, len, &verdict);

	cr_assert_eq(verdict, -EPROTO, "refused, got %d", verdict);
	cr_assert_eq(at, len_at, "refused at %zu bytes, expected %zu", at, len_at);
}

static void refuse_str(const char *s)
{
	int verdict;

	decided_at((const uint8_t *)s, strlen(s), &verdict);
	cr_assert_eq(verdict, -EPROTO, "\"%s\": got %d", s, verdict);
}

static void assert_addr(const struct sockaddr_storage *ss, int family, const char *ip,
			unsigned port)
{
	char text[INET6_ADDRSTRLEN];

	cr_assert_eq(ss->ss_family, family);
	if (family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		cr_assert_not_null(inet_ntop(AF_INET, &in->sin_addr, text, sizeof text));
		cr_assert_eq(ntohs(in->sin_port), port);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		cr_assert_not_null(inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text));
		cr_assert_eq(ntohs(in6->sin6_port), port);
		cr_assert_eq(in6->sin6_scope_id, 0);
		cr_assert_eq(in6->sin6_flowinfo, 0);
	}
	cr_assert_str_eq(text, ip);
}

/* A v2 header: signature, ver_cmd, fam, the block's length, the block. Returns its length. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *block, size_t blen)
{
	memcpy(out, sig, sizeof sig);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(blen >> 8);
	out[15] = (uint8_t)blen;
	if (blen)
		memcpy(out + 16, block, blen);
	return 16 + blen;
}

/* The TCP4 block: 192.0.2.1:56324 -> 198.51.100.2:443, then extra (TLVs). */
static size_t tcp4_block(uint8_t *b, const uint8_t *extra, size_t elen)
{
	static const uint8_t a[12] = { 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb };

	memcpy(b, a, sizeof a);
	if (elen)
		memcpy(b + sizeof a, extra, elen);
	return sizeof a + elen;
}

/* ---- Version 1 ------------------------------------------------------------------------- */

Test(proxy_proto, v1_tcp4)
{
	struct proxy_proto_info info;

	accept_str("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", &info);
	cr_assert_eq(info.version, 1);
	cr_assert_not(info.local);
	assert_addr(&info.src, AF_INET, "192.0.2.1", 56324);
	assert_addr(&info.dst, AF_INET, "198.51.100.2", 443);
	accept_str("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", &info);
	assert_addr(&info.src, AF_INET, "0.0.0.0", 0);
	assert_addr(&info.dst, AF_INET, "255.255.255.255", 65535);
}

Test(proxy_proto, v1_tcp6)
{
	struct proxy_proto_info info;

	accept_str("PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 1 4460\r\n", &info);
	cr_assert_eq(info.version, 1);
	cr_assert_not(info.local);
	assert_addr(&info.src, AF_INET6, "2001:db8::1", 1);
	assert_addr(&info.dst, AF_INET6, "2001:db8::2", 4460);
	accept_str("PROXY TCP6 ::ffff:192.0.2.1 :: 65535 0\r\n", &info);
	assert_addr(&info.src, AF_INET6, "::ffff:192.0.2.1", 65535);
	assert_addr(&info.dst, AF_INET6, "::", 0);
}

Test(proxy_proto, v1_unknown)
{
	struct proxy_proto_info info;

	accept_str("PROXY UNKNOWN\r\n", &info);
	cr_assert(info.local);
	cr_assert_eq(info.version, 1);
	cr_assert_eq(info.src.ss_family, AF_UNSPEC);
	accept_str("PROXY UNKNOWN \r\n", &info);
	cr_assert(info.local);
	/* What follows UNKNOWN is ignored, whatever it is. */
	accept_str("PROXY UNKNOWN TCP5 not an address at all\t\x01\xff\r\n", &info);
	cr_assert(info.local);
}

/* The spec's worst case is exactly the limit. */
Test(proxy_proto, v1_longest_line)
{
	const char *ff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
	char line[160];
	struct proxy_proto_info info;

	snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 65535\r\n", ff, ff);
	cr_assert_eq(strlen(line), PROXY_PROTO_V1_MAX);
	accept_str(line, &info);
	cr_assert(info.local);
	/* One byte more: no CRLF within the first 107 bytes, decided at the 107th. */
	snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 655355\r\n", ff, ff);
	refuse_at((const uint8_t *)line, strlen(line), PROXY_PROTO_V1_MAX);
}

Test(proxy_proto, v1_without_crlf_within_the_limit)
{
	char line[300];

	memcpy(line, "PROXY UNKNOWN ", 14);
	memset(line + 14, 'a', sizeof line - 14);
	refuse_at((const uint8_t *)line, sizeof line, PROXY_PROTO_V1_MAX);
	/* A TCP4 line can never grow that long: its fields' own limits refuse it sooner. */
	refuse_str("PROXY TCP4 192.0.2.1 198.51.100.2 1 2000000000000000");
}

Test(proxy_proto, v1_malformed)
{
	static const char *const bad[] = {
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rX",
		"PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP4 192.0.2.1  198.51.100.2 56324 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324  443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",
		"PROXY  TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP4\t192.0.2.1 198.51.100.2 56324 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 +5 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 -5 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 00 443\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 0x10 443\r\n",
		"PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
		"PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n",
		"PROXY TCP4 192.0.02.1 198.51.100.2 1 2\r\n",
		"PROXY TCP4 192.0.2.1. 198.51.100.2 1 2\r\n",
		"PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n",
		"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXY TCP6 2001:db8::1%eth0 2001:db8::2 1 2\r\n",
		"PROXY TCP6 2001:db8:::1 2001:db8::2 1 2\r\n",
		"PROXY TCP6 [2001:db8::1] 2001:db8::2 1 2\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
		"PROXY TCP4 192.0.2.1 198.51.100.2\r\n",
		"PROXY TCP4 192.0.2.1\r\n",
		"PROXY TCP4\r\n",
		"PROXY\r\n",
		"PROXY \r\n",
		"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXY TCP 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXY TCP44 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXY UNKNOWNX\r\n",
		"PROXY UNKNOWN\r\r\n",
		"PROXY UNKNOWN\n",
		"PROXY UNKNOWN x\ny\r\n",
		"PROXY UNKNOWN x\rx\r\n",
		"PROXYTCP4 192.0.2.1 198.51.100.2 1 2\r\n",
		"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
		" PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
		"PROXX TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		refuse_str(bad[i]);
}

/* Refusals come at the first byte that no valid header has there. */
Test(proxy_proto, v1_refused_early)
{
	refuse_at((const uint8_t *)"PROXY TCP5 ", 11, 10);
	refuse_at((const uint8_t *)"PROXY TCPX", 10, 10);
	refuse_at((const uint8_t *)"PROXY UNKNOWNX", 14, 14);
	refuse_at((const uint8_t *)"PROXY TCP4 1:", 13, 13);
	refuse_at((const uint8_t *)"PROXY TCP4 192.0.2.1 198.51.100.2 65536", 39, 39);
	refuse_at((const uint8_t *)"PROXY TCP4 192.0.2.1 198.51.100.2 01", 36, 36);
	refuse_at((const uint8_t *)"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r", 39, 39);
	refuse_at((const uint8_t *)"PROXZ", 5, 5);
}

/* ---- Version 2 ------------------------------------------------------------------------- */

Test(proxy_proto, v2_proxy_ipv4)
{
	uint8_t block[64], hdr[128];
	struct proxy_proto_info info;
	size_t n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, NULL, 0));

	cr_assert_eq(n, 28);
	accept_exactly(hdr, n, &info);
	cr_assert_eq(info.version, 2);
	cr_assert_not(info.local);
	assert_addr(&info.src, AF_INET, "192.0.2.1", 56324);
	assert_addr(&info.dst, AF_INET, "198.51.100.2", 443);
}

Test(proxy_proto, v2_proxy_ipv6)
{
	uint8_t block[36] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x01, 0x20, 0x01, 0x0d, 0xb8,
			      [31] = 0x02, 0x30, 0x39, 0x11, 0x6c };
	uint8_t hdr[64];
	struct proxy_proto_info info;
	size_t n = v2(hdr, 0x21, 0x21, block, sizeof block);

	cr_assert_eq(n, 52);
	accept_exactly(hdr, n, &info);
	cr_assert_eq(info.version, 2);
	cr_assert_not(info.local);
	assert_addr(&info.src, AF_INET6, "2001:db8::1", 12345);
	assert_addr(&info.dst, AF_INET6, "2001:db8::2", 4460);
}

Test(proxy_proto, v2_local)
{
	uint8_t hdr[64];
	struct proxy_proto_info info;
	size_t n = v2(hdr, 0x20, 0x00, NULL, 0);

	accept_exactly(hdr, n, &info);
	cr_assert_eq(n, 16);
	cr_assert(info.local);
	cr_assert_eq(info.version, 2);
	cr_assert_eq(info.src.ss_family, AF_UNSPEC);
	/* LOCAL discards the block, family included: even what would be a short TCP4 block. */
	n = v2(hdr, 0x20, 0x11, (const uint8_t *)"\x01\x02\x03", 3);
	accept_exactly(hdr, n, &info);
	cr_assert(info.local);
}

/* PROXY with a family or transport we do not use falls back to the connection's addresses, as
 * the spec says; the block is skipped unread. */
Test(proxy_proto, v2_other_families_are_local)
{
	static const uint8_t fams[] = { 0x00, 0x01, 0x02, 0x10, 0x12,
					0x20, 0x22, 0x30, 0x31, 0x32 };
	uint8_t block[216], hdr[256];
	struct proxy_proto_info info;

	memset(block, 0x5a, sizeof block);
	for (size_t i = 0; i < sizeof fams; i++) {
		size_t blen = fams[i] >> 4 == 3 ? 216 : fams[i] >> 4 == 2 ? 36 : 12;
		size_t n = v2(hdr, 0x21, fams[i], block, fams[i] == 0 ? 0 : blen);

		accept_exactly(hdr, n, &info);
		cr_assert(info.local, "fam 0x%02x", fams[i]);
		cr_assert_eq(info.version, 2);
	}
}

Test(proxy_proto, v2_tlvs_are_skipped)
{
	static const uint8_t tlvs[] = {
		0x01, 0x00, 0x02, 'h', '2',		/* ALPN */
		0x04, 0x00, 0x00,			/* NOOP, empty */
		0x20, 0x00, 0x05, 0x07, 0, 0, 0, 0,	/* SSL */
		0xee, 0x00, 0x03, '\r', '\n', 0,	/* a custom type */
	};
	uint8_t block[64], hdr[128];
	struct proxy_proto_info info;
	size_t n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, tlvs, sizeof tlvs));

	cr_assert_eq(n, 28 + sizeof tlvs);
	accept_exactly(hdr, n, &info);
	cr_assert_not(info.local);
	assert_addr(&info.src, AF_INET, "192.0.2.1", 56324);
	assert_addr(&info.dst, AF_INET, "198.51.100.2", 443);
}

/* 1 KiB of block is the most we take, and exactly PROXY_PROTO_MAX in all is accepted. */
Test(proxy_proto, v2_largest_block)
{
	uint8_t tlv[1012], block[1024], hdr[PROXY_PROTO_MAX + 1];
	struct proxy_proto_info info;

	memset(tlv, 0, sizeof tlv);
	tlv[0] = 0x04;
	tlv[1] = (1012 - 3) >> 8;
	tlv[2] = (1012 - 3) & 0xff;
	size_t n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, tlv, sizeof tlv));

	cr_assert_eq(n, PROXY_PROTO_MAX);
	accept_exactly(hdr, n, &info);
	assert_addr(&info.src, AF_INET, "192.0.2.1", 56324);
	/* LOCAL too. */
	n = v2(hdr, 0x20, 0x00, block, 1024);
	accept_exactly(hdr, n, &info);
	cr_assert(info.local);
}

Test(proxy_proto, v2_over_the_max_is_refused_at_its_length)
{
	uint8_t hdr[16];

	for (unsigned ver_cmd = 0x20; ver_cmd <= 0x21; ver_cmd++) {
		v2(hdr, (uint8_t)ver_cmd, 0x11, NULL, 0);
		hdr[14] = 1025 >> 8;
		hdr[15] = 1025 & 0xff;
		refuse_at(hdr, sizeof hdr, 16);
		hdr[14] = hdr[15] = 0xff;
		refuse_at(hdr, sizeof hdr, 16);
	}
}

Test(proxy_proto, v2_bad_signature)
{
	uint8_t block[64], hdr[128];
	size_t n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, NULL, 0));

	/* The first byte is what tells the versions apart: changed, it starts neither. */
	for (size_t i = 0; i < sizeof sig; i++) {
		uint8_t bad[128];

		memcpy(bad, hdr, n);
		bad[i] ^= 0x20;
		refuse_at(bad, n, i + 1);
	}
}

Test(proxy_proto, v2_bad_version)
{
	static const uint8_t vers[] = { 0x01, 0x11, 0x31, 0xf1, 0x00 };
	uint8_t block[64], hdr[128];

	for (size_t i = 0; i < sizeof vers; i++) {
		size_t n = v2(hdr, vers[i], 0x11, block, tcp4_block(block, NULL, 0));

		refuse_at(hdr, n, 13);
	}
}

Test(proxy_proto, v2_bad_command)
{
	uint8_t block[64], hdr[128];

	for (unsigned cmd = 2; cmd <= 0xf; cmd++) {
		size_t n = v2(hdr, (uint8_t)(0x20 | cmd), 0x11, block, tcp4_block(block, NULL, 0));

		refuse_at(hdr, n, 13);
	}
}

Test(proxy_proto, v2_bad_family_or_transport)
{
	static const uint8_t fams[] = { 0x03, 0x13, 0x1f, 0x41, 0x40, 0xf1, 0x23, 0x33 };
	uint8_t block[256], hdr[300];

	memset(block, 0, sizeof block);
	for (size_t i = 0; i < sizeof fams; i++) {
		for (unsigned ver_cmd = 0x20; ver_cmd <= 0x21; ver_cmd++) {
			size_t n = v2(hdr, (uint8_t)ver_cmd, fams[i], block, 216);

			refuse_at(hdr, n, 14);
		}
	}
}

Test(proxy_proto, v2_address_block_too_short)
{
	uint8_t block[64], hdr[128];

	memset(block, 0, sizeof block);
	for (size_t blen = 0; blen < 12; blen++)
		refuse_at(hdr, v2(hdr, 0x21, 0x11, block, blen), 16);
	for (size_t blen = 0; blen < 36; blen++)
		refuse_at(hdr, v2(hdr, 0x21, 0x21, block, blen), 16);
}

Test(proxy_proto, v2_tlv_overrunning_the_block)
{
	uint8_t block[64], hdr[128];
	size_t n;

	/* A TLV header cut by the end of the block: one or two bytes left after the addresses. */
	n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, (const uint8_t *)"\x01", 1));
	refuse_at(hdr, n, 28);
	n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, (const uint8_t *)"\x01\x00", 2));
	refuse_at(hdr, n, 28);
	/* A value longer than what is left: refused once its length arrived. */
	n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, (const uint8_t *)"\x01\x00\x03" "ab", 5));
	refuse_at(hdr, n, 31);
	/* The second TLV overruns. */
	n = v2(hdr, 0x21, 0x11, block,
	       tcp4_block(block, (const uint8_t *)"\x04\x00\x01x\x02\x01\x00", 7));
	refuse_at(hdr, n, 35);
	/* The same with a TCP6 block. */
	uint8_t b6[64] = { 0 };

	memcpy(b6 + 36, "\x05\x00\x09zz", 5);
	n = v2(hdr, 0x21, 0x21, b6, 41);
	refuse_at(hdr, n, 55);
}

/* ---- Either ---------------------------------------------------------------------------- */

Test(proxy_proto, tls_client_hello_is_refused_at_once)
{
	static const uint8_t hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc,
					 0x03, 0x03 };
	struct proxy_proto_info info;

	cr_assert_eq(parse(hello, 1, &info), -EPROTO);
	refuse_at(hello, sizeof hello, 1);
}

Test(proxy_proto, garbage)
{
	struct tu_rng rng;
	uint8_t buf[256];

	tu_rng_seed(&rng, 7);
	/* Any first byte but 'P' and CR is refused at once. */
	for (unsigned b = 0; b < 256; b++) {
		if (b == 'P' || b == '\r')
			continue;
		buf[0] = (uint8_t)b;
		tu_rng_fill(&rng, buf + 1, sizeof buf - 1);
		refuse_at(buf, sizeof buf, 1);
	}
	/* Random bytes after either start: never accepted here, and the verdict never flips. */
	for (int i = 0; i < 2000; i++) {
		int verdict;

		tu_rng_fill(&rng, buf, sizeof buf);
		buf[0] = i & 1 ? 'P' : '\r';
		decided_at(buf, sizeof buf, &verdict);
		cr_assert_eq(verdict, -EPROTO);
	}
}

Test(proxy_proto, bytes_after_the_header_are_not_consumed)
{
	struct proxy_proto_info info;
	const char *s = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nPROXY UNKNOWN\r\n";
	uint8_t block[64], hdr[128];
	size_t n = v2(hdr, 0x21, 0x11, block, tcp4_block(block, NULL, 0));

	cr_assert_eq(parse(s, strlen(s), &info), 45);
	memcpy(hdr + n, hdr, n);
	cr_assert_eq(parse(hdr, 2 * n, &info), (int)n);
	cr_assert_eq(parse(hdr, n + 1, &info), (int)n);
}

Test(proxy_proto, out_untouched_unless_accepted_and_why_optional)
{
	const char *s = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
	struct proxy_proto_info info, before;

	memset(&info, 0xa5, sizeof info);
	before = info;
	cr_assert_eq(proxy_proto_parse((const uint8_t *)s, strlen(s) - 1, &info, NULL), 0);
	cr_assert_eq(memcmp(&info, &before, sizeof info), 0);
	cr_assert_eq(proxy_proto_parse((const uint8_t *)"X", 1, &info, NULL), -EPROTO);
	cr_assert_eq(memcmp(&info, &before, sizeof info), 0);
	cr_assert_eq(proxy_proto_parse(NULL, 0, &info, NULL), 0);
	cr_assert_eq(proxy_proto_parse((const uint8_t *)s, strlen(s), &info, NULL),
		     (int)strlen(s));
}

/* Random mutations of valid headers of each kind: whatever the bytes, the verdict over the
 * prefixes is monotone, a length is at most the bytes given, an address is IPv4 or IPv6, and an
 * accepted mutant parses the same alone as with bytes after it. */
Test(proxy_proto, mutations)
{
	uint8_t seeds[6][128];
	size_t lens[6];
	uint8_t block[64];
	static const uint8_t b6[36] = { 0x20, 0x01, 0x0d, 0xb8, [35] = 1 };
	const char *v1s[] = { "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
			      "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n",
			      "PROXY UNKNOWN\r\n" };
	struct tu_rng rng;

	for (int i = 0; i < 3; i++) {
		lens[i] = strlen(v1s[i]);
		memcpy(seeds[i], v1s[i], lens[i]);
	}
	lens[3] = v2(seeds[3], 0x21, 0x11, block,
		     tcp4_block(block, (const uint8_t *)"\x01\x00\x02h2\x04\x00\x00", 8));
	lens[4] = v2(seeds[4], 0x21, 0x21, b6, sizeof b6);
	lens[5] = v2(seeds[5], 0x20, 0x00, (const uint8_t *)"\x04\x00\x01x", 4);
	tu_rng_seed(&rng, 42);
	int accepted = 0;

	for (int it = 0; it < MUTATIONS; it++) {
		uint8_t buf[160];
		int k = (int)tu_rng_below(&rng, 6);
		size_t n = lens[k];

		memcpy(buf, seeds[k], n);
		for (unsigned m = tu_rng_below(&rng, 3) + 1; m > 0; m--) {
			size_t at = tu_rng_below(&rng, (uint32_t)n);

			switch (tu_rng_below(&rng, 3)) {
			case 0:
				buf[at] = (uint8_t)tu_rng_next(&rng);
				break;
			case 1:
				buf[at] ^= (uint8_t)(1u << tu_rng_below(&rng, 8));
				break;
			default:
				n = at + 1; /* cut short */
			}
		}
		tu_rng_fill(&rng, buf + n, sizeof buf - n);
		int verdict;
		size_t at = decided_at(buf, sizeof buf, &verdict);
		struct proxy_proto_info info;

		if (verdict <= 0)
			continue;
		accepted++;
		cr_assert_eq(at, (size_t)verdict, "accepted exactly at its last byte");
		cr_assert_eq(parse(buf, (size_t)verdict, &info), verdict);
		if (!info.local) {
			cr_assert(info.src.ss_family == AF_INET || info.src.ss_family == AF_INET6);
			cr_assert_eq(info.src.ss_family, info.dst.ss_family);
		}
	}
	cr_assert_gt(accepted, MUTATIONS / 20, "only %d mutants accepted", accepted);
}
