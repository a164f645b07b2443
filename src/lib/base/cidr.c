#include "cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static int fail(char *why, size_t whylen, const char *text, const char *reason)
{
	snprintf(why, whylen, "\"%s\": %s", text, reason);
	return -EINVAL;
}

/* The bits of addr past `bits` are all zero. */
static bool host_bits_zero(const uint8_t *addr, unsigned bits, unsigned total)
{
	for (unsigned b = bits; b < total; b++)
		if (addr[b / 8] & (0x80u >> (b % 8)))
			return false;
	return true;
}

int cidr_parse(const char *text, struct cidr *out, char *why, size_t whylen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
	if (hlen == 0 || hlen >= sizeof host)
		return fail(why, whylen, text, "not an IP address or prefix");
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	memset(out, 0, sizeof *out);
	unsigned total;
	if (inet_pton(AF_INET, host, out->addr) == 1) {
		out->family = AF_INET;
		total = 32;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		out->family = AF_INET6;
		total = 128;
	} else {
		return fail(why, whylen, text, "not an IP address or prefix");
	}
	unsigned bits = total;
	if (slash) {
		const char *p = slash + 1;
		if (*p < '0' || *p > '9')
			return fail(why, whylen, text, "the prefix length is not a number");
		bits = 0;
		for (; *p >= '0' && *p <= '9'; p++) {
			bits = bits * 10 + (unsigned)(*p - '0');
			if (bits > total)
				break;
		}
		if (bits > total)
			return fail(why, whylen, text,
				    total == 32 ? "an IPv4 prefix length is at most 32"
						: "an IPv6 prefix length is at most 128");
		if (*p)
			return fail(why, whylen, text, "text after the prefix length");
	}
	if (!host_bits_zero(out->addr, bits, total))
		return fail(why, whylen, text,
			    "address bits are set past the prefix length (write the network "
			    "address)");
	out->bits = (uint8_t)bits;
	if (out->family == AF_INET6 && bits >= 96 &&
	    memcmp(out->addr, v4_mapped, sizeof v4_mapped) == 0) {
		memmove(out->addr, out->addr + 12, 4);
		memset(out->addr + 4, 0, 12);
		out->family = AF_INET;
		out->bits = (uint8_t)(bits - 96);
	}
	return 0;
}

char *cidr_format(const struct cidr *c, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	if (!inet_ntop(c->family, c->addr, host, sizeof host))
		snprintf(host, sizeof host, "?");
	snprintf(buf, len, "%s/%u", host, c->bits);
	return buf;
}

bool cidr_addr_of(const struct sockaddr *a, uint8_t *family, uint8_t addr[16])
{
	memset(addr, 0, 16);
	if (a->sa_family == AF_INET) {
		*family = AF_INET;
		memcpy(addr, &((const struct sockaddr_in *)a)->sin_addr, 4);
		return true;
	}
	if (a->sa_family != AF_INET6)
		return false;
	const uint8_t *b = ((const struct sockaddr_in6 *)a)->sin6_addr.s6_addr;
	if (memcmp(b, v4_mapped, sizeof v4_mapped) == 0) {
		*family = AF_INET;
		memcpy(addr, b + 12, 4);
	} else {
		*family = AF_INET6;
		memcpy(addr, b, 16);
	}
	return true;
}

static bool contains(const struct cidr *c, uint8_t family, const uint8_t *addr)
{
	if (c->family != family)
		return false;
	unsigned full = c->bits / 8, rest = c->bits % 8;
	if (memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

bool cidr_contains(const struct cidr *c, const struct sockaddr *a)
{
	uint8_t family, addr[16];
	return cidr_addr_of(a, &family, addr) && contains(c, family, addr);
}

int cidr_match(const struct cidr *v, size_t n, const struct sockaddr *a)
{
	uint8_t family, addr[16];
	if (!cidr_addr_of(a, &family, addr))
		return -1;
	int best = -1;
	for (size_t i = 0; i < n; i++)
		if (contains(&v[i], family, addr) && (best < 0 || v[i].bits > v[best].bits))
			best = (int)i;
	return best;
}
