/* The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2): what a load
 * balancer puts ahead of a relayed TCP stream to say whose connection it is. Sans-I/O: the
 * caller hands over the first bytes of the stream, as many as it has, and learns whether they
 * start with a complete header, need more, or cannot be one.
 *
 * Strict: only what a conforming sender writes is accepted.
 *   v1  "PROXY TCP4 SRC DST SPORT DPORT\r\n" (dotted quads, no leading zeros), "PROXY TCP6 ..."
 *       (RFC 4291 text, no scope id), or "PROXY UNKNOWN" followed by CRLF or by a space and
 *       anything up to the CRLF; single spaces, ports decimal 0..65535 with no sign or leading
 *       zero, a bare CR or LF nowhere; PROXY_PROTO_V1_MAX bytes at most, CRLF included.
 *   v2  the 12-byte signature, version 2, command LOCAL or PROXY, family and transport values
 *       the spec defines, a 16-bit block length. With PROXY over TCP4 or TCP6 the block holds at
 *       least the 12 or 36 bytes of addresses and ports, then TLVs (type, 16-bit length, value),
 *       each inside the block; their contents are skipped. LOCAL, and PROXY with any other valid
 *       family (UNSPEC, UNIX, datagrams), carry no address we use: the block is skipped unread,
 *       as the spec asks ("discard the protocol block", "ignore address information").
 *       A header over PROXY_PROTO_MAX bytes in all is refused: we take up to 1 KiB of TLVs,
 *       several times what a load balancer sends (ALPN, authority, TLS details, a unique id).
 * The header's length is the spec's, never the transport's: bytes after it are not consumed. */
#ifndef NTSPOOL_PROXY_PROTO_H
#define NTSPOOL_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest v1 header, CRLF included (the spec's 107). */
#define PROXY_PROTO_V1_MAX 107
/* The longest header accepted: v2's 16 fixed bytes and 1 KiB of address block and TLVs. */
#define PROXY_PROTO_MAX (16 + 1024)

struct proxy_proto_info {
	/* No client address (v1 UNKNOWN, v2 LOCAL or a family we do not use): the caller keeps
	 * the connection's own addresses. */
	bool local;
	/* When !local: the client's address and the destination it connected to, AF_INET or
	 * AF_INET6 with their ports; zeroed when local. */
	struct sockaddr_storage src, dst;
	unsigned version; /* 1 or 2 */
};

/* Parses the header at the start of buf[0, len) (borrowed; len may be 0). Returns:
 *   > 0      a complete header of that many bytes (<= len, <= PROXY_PROTO_MAX), *out filled;
 *   0        the bytes so far are a valid start of a header: more are needed;
 *   -EPROTO  buf cannot start a valid header; *why (when why is not NULL) is a static reason.
 * Decides as early as the bytes allow: a byte no valid header can have at its place is -EPROTO
 * at once (a first byte other than 'P' or '\r', such as a TLS record's 0x16, at the first byte),
 * so feeding more bytes never turns -EPROTO into anything else, and a positive result never
 * changes once reached. *out is only written on success. */
int proxy_proto_parse(const uint8_t *buf, size_t len, struct proxy_proto_info *out,
		      const char **why);

#endif
