#include "proxy_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "wire.h"

#define V2_FIXED_LEN 16
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_TCP4 0x11
#define V2_TCP6 0x21
#define V2_TCP4_ADDR_LEN 12
#define V2_TCP6_ADDR_LEN 36
#define V2_TLV_HEADER_LEN 3

/* Parse steps return these, or -EPROTO. */
#define MORE 0
#define DONE 1

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

static int fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -EPROTO;
}

/* ---- Version 1 ------------------------------------------------------------------------- */

static bool v4_char(uint8_t ch)
{
	return (ch >= '0' && ch <= '9') || ch == '.';
}

static bool v6_char(uint8_t ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
	       ch == ':' || ch == '.';
}

static bool digit(uint8_t ch)
{
	return ch >= '0' && ch <= '9';
}

static bool proto_char(uint8_t ch)
{
	return (ch >= 'A' && ch <= 'Z') || digit(ch);
}

/* A token of characters ok() accepts, ended by a space or CR (*delim), into tok (cap bytes with
 * its NUL; NUL-terminated also when the bytes run out, so a partial token can be checked). */
static int v1_token(struct wire_reader *r, bool (*ok)(uint8_t), char *tok, size_t cap,
		    uint8_t *delim, const char **why)
{
	size_t n = 0;

	tok[0] = '\0';
	while (wire_remaining(r) > 0) {
		uint8_t ch = wire_get_u8(r);

		if (ch == ' ' || ch == '\r') {
			if (n == 0)
				return fail(why, "v1: empty field or double space");
			*delim = ch;
			return DONE;
		}
		if (!ok(ch))
			return fail(why, "v1: unexpected character");
		if (n + 1 >= cap)
			return fail(why, "v1: field too long");
		tok[n++] = (char)ch;
		tok[n] = '\0';
	}
	return MORE;
}

/* A port as the spec writes it, or the start of one: decimal digits, no leading zero, at most
 * 65535. */
static bool port_ok(const char *tok, unsigned *port)
{
	unsigned v = 0;

	if (tok[0] == '0' && tok[1] != '\0')
		return false;
	for (const char *p = tok; *p; p++) {
		v = v * 10 + (unsigned)(*p - '0');
		if (v > 65535)
			return false;
	}
	*port = v;
	return true;
}

static int v1_port(struct wire_reader *r, uint8_t want_delim, unsigned *port, const char **why)
{
	char tok[8];
	uint8_t delim;
	int rc = v1_token(r, digit, tok, 6, &delim, why);

	if (rc < 0)
		return rc;
	if (!port_ok(tok, port))
		return fail(why, "v1: port out of range or with a leading zero");
	if (rc == MORE)
		return MORE;
	if (delim != want_delim)
		return fail(why, "v1: wrong separator after a port");
	return DONE;
}

static int v1_addr(struct wire_reader *r, int family, struct sockaddr_storage *ss,
		   const char **why)
{
	char tok[INET6_ADDRSTRLEN];
	uint8_t delim;
	int rc = family == AF_INET ? v1_token(r, v4_char, tok, INET_ADDRSTRLEN, &delim, why)
				   : v1_token(r, v6_char, tok, INET6_ADDRSTRLEN, &delim, why);

	if (rc <= 0)
		return rc;
	if (delim != ' ')
		return fail(why, "v1: line ends after an address");
	memset(ss, 0, sizeof *ss);
	ss->ss_family = (sa_family_t)family;
	void *dst = family == AF_INET ? (void *)&((struct sockaddr_in *)ss)->sin_addr
				      : (void *)&((struct sockaddr_in6 *)ss)->sin6_addr;
	if (inet_pton(family, tok, dst) != 1)
		return fail(why, "v1: malformed address");
	return DONE;
}

static void set_port(struct sockaddr_storage *ss, unsigned port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

/* The LF after a CR. */
static int v1_lf(struct wire_reader *r, const char **why)
{
	if (wire_remaining(r) == 0)
		return MORE;
	if (wire_get_u8(r) != '\n')
		return fail(why, "v1: CR without LF");
	return DONE;
}

/* "PROXY UNKNOWN" then a space: anything but a bare CR or LF, up to the CRLF. */
static int v1_unknown_tail(struct wire_reader *r, const char **why)
{
	while (wire_remaining(r) > 0) {
		uint8_t ch = wire_get_u8(r);

		if (ch == '\n')
			return fail(why, "v1: LF without CR");
		if (ch == '\r')
			return v1_lf(r, why);
	}
	return MORE;
}

static bool prefix_of(const char *tok, const char *word)
{
	return strncmp(tok, word, strlen(tok)) == 0;
}

/* The header after "PROXY ": MORE, DONE with *info filled, or -EPROTO. */
static int v1_body(struct wire_reader *r, struct proxy_proto_info *info, const char **why)
{
	char proto[8];
	uint8_t delim;
	int rc = v1_token(r, proto_char, proto, sizeof proto, &delim, why);

	if (rc < 0)
		return rc;
	if (!prefix_of(proto, "TCP4") && !prefix_of(proto, "TCP6") && !prefix_of(proto, "UNKNOWN"))
		return fail(why, "v1: unknown protocol");
	if (rc == MORE)
		return MORE;
	if (strcmp(proto, "UNKNOWN") == 0) {
		info->local = true;
		return delim == '\r' ? v1_lf(r, why) : v1_unknown_tail(r, why);
	}
	if (strcmp(proto, "TCP4") != 0 && strcmp(proto, "TCP6") != 0)
		return fail(why, "v1: unknown protocol");
	if (delim != ' ')
		return fail(why, "v1: line ends after the protocol");

	int family = proto[3] == '4' ? AF_INET : AF_INET6;
	unsigned sport, dport;

	if ((rc = v1_addr(r, family, &info->src, why)) != DONE)
		return rc;
	if ((rc = v1_addr(r, family, &info->dst, why)) != DONE)
		return rc;
	if ((rc = v1_port(r, ' ', &sport, why)) != DONE)
		return rc;
	if ((rc = v1_port(r, '\r', &dport, why)) != DONE)
		return rc;
	if ((rc = v1_lf(r, why)) != DONE)
		return rc;
	set_port(&info->src, sport);
	set_port(&info->dst, dport);
	return DONE;
}

static int parse_v1(const uint8_t *buf, size_t len, struct proxy_proto_info *info,
		    const char **why)
{
	static const char magic[] = "PROXY ";
	struct wire_reader r;
	bool capped = len >= PROXY_PROTO_V1_MAX;

	wire_reader_init(&r, buf, capped ? PROXY_PROTO_V1_MAX : len);
	for (size_t i = 0; i < sizeof magic - 1; i++) {
		if (wire_remaining(&r) == 0)
			return 0;
		if (wire_get_u8(&r) != (uint8_t)magic[i])
			return fail(why, "v1: no \"PROXY \"");
	}
	int rc = v1_body(&r, info, why);

	if (rc < 0)
		return rc;
	if (rc == MORE)
		return capped ? fail(why, "v1: no CRLF within 107 bytes") : 0;
	info->version = 1;
	return (int)wire_offset(&r);
}

/* ---- Version 2 ------------------------------------------------------------------------- */

/* The address block of PROXY over TCP: two addresses of alen bytes, then the two ports. */
static void v2_addrs(struct wire_reader *r, int family, struct proxy_proto_info *info)
{
	struct sockaddr_storage *src = &info->src, *dst = &info->dst;

	memset(src, 0, sizeof *src);
	memset(dst, 0, sizeof *dst);
	src->ss_family = dst->ss_family = (sa_family_t)family;
	if (family == AF_INET) {
		wire_copy(r, &((struct sockaddr_in *)src)->sin_addr, 4);
		wire_copy(r, &((struct sockaddr_in *)dst)->sin_addr, 4);
	} else {
		wire_copy(r, &((struct sockaddr_in6 *)src)->sin6_addr, 16);
		wire_copy(r, &((struct sockaddr_in6 *)dst)->sin6_addr, 16);
	}
	set_port(src, wire_get_u16(r));
	set_port(dst, wire_get_u16(r));
}

/* The TLVs: left bytes of the block remain after the addresses; r holds what arrived of them. */
static int v2_tlvs(struct wire_reader *r, size_t left, const char **why)
{
	while (left > 0) {
		if (left < V2_TLV_HEADER_LEN)
			return fail(why, "v2: TLV header past the block");
		if (wire_remaining(r) < V2_TLV_HEADER_LEN)
			return MORE;
		wire_get_u8(r);
		size_t n = wire_get_u16(r);

		left -= V2_TLV_HEADER_LEN;
		if (n > left)
			return fail(why, "v2: TLV past the block");
		left -= n;
		if (wire_remaining(r) < n)
			return MORE;
		wire_skip(r, n);
	}
	return DONE;
}

static int parse_v2(const uint8_t *buf, size_t len, struct proxy_proto_info *info,
		    const char **why)
{
	struct wire_reader r;

	wire_reader_init(&r, buf, len < V2_FIXED_LEN ? len : V2_FIXED_LEN);
	for (size_t i = 0; i < sizeof v2_sig; i++) {
		if (wire_remaining(&r) == 0)
			return 0;
		if (wire_get_u8(&r) != v2_sig[i])
			return fail(why, "v2: bad signature");
	}
	if (wire_remaining(&r) == 0)
		return 0;
	uint8_t ver_cmd = wire_get_u8(&r);

	if (ver_cmd >> 4 != 2)
		return fail(why, "v2: version not 2");
	if ((ver_cmd & 0xf) != V2_CMD_LOCAL && (ver_cmd & 0xf) != V2_CMD_PROXY)
		return fail(why, "v2: unknown command");
	if (wire_remaining(&r) == 0)
		return 0;
	uint8_t fam = wire_get_u8(&r);

	/* Families UNSPEC, INET, INET6, UNIX; transports UNSPEC, STREAM, DGRAM; nothing else. */
	if (fam >> 4 > 3 || (fam & 0xf) > 2)
		return fail(why, "v2: unknown family or transport");
	if (wire_remaining(&r) < 2)
		return 0;
	size_t blen = wire_get_u16(&r), total = V2_FIXED_LEN + blen;

	if (total > PROXY_PROTO_MAX)
		return fail(why, "v2: header longer than PROXY_PROTO_MAX");

	size_t alen = 0;
	int family = AF_UNSPEC;

	if ((ver_cmd & 0xf) == V2_CMD_PROXY && fam == V2_TCP4) {
		alen = V2_TCP4_ADDR_LEN;
		family = AF_INET;
	} else if ((ver_cmd & 0xf) == V2_CMD_PROXY && fam == V2_TCP6) {
		alen = V2_TCP6_ADDR_LEN;
		family = AF_INET6;
	}
	if (blen < alen)
		return fail(why, "v2: address block shorter than its family's");

	/* The block, as far as it arrived. */
	struct wire_reader b;
	size_t have = len < total ? len : total;

	wire_reader_init(&b, buf + V2_FIXED_LEN, have - V2_FIXED_LEN);
	if (family == AF_UNSPEC) {
		if (len < total)
			return 0;
		info->local = true;
	} else {
		if (wire_remaining(&b) < alen)
			return 0;
		v2_addrs(&b, family, info);
		int rc = v2_tlvs(&b, blen - alen, why);

		if (rc <= 0)
			return rc;
	}
	info->version = 2;
	return (int)total;
}

/* ---- Both ------------------------------------------------------------------------------ */

int proxy_proto_parse(const uint8_t *buf, size_t len, struct proxy_proto_info *out,
		      const char **why)
{
	struct proxy_proto_info info;
	struct wire_reader r;
	int rc;

	memset(&info, 0, sizeof info);
	if (why)
		*why = NULL;
	wire_reader_init(&r, buf, len);
	if (wire_remaining(&r) == 0)
		return 0;
	uint8_t first = wire_get_u8(&r);

	if (first == 'P')
		rc = parse_v1(buf, len, &info, why);
	else if (first == v2_sig[0])
		rc = parse_v2(buf, len, &info, why);
	else
		return fail(why, "not a PROXY protocol header");
	if (rc > 0)
		*out = info;
	return rc;
}
