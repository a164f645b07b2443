/* Address prefixes ("192.0.2.0/24", "2001:db8::/32", a bare address meaning its full length):
 * parsing and matching. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are canonicalised to IPv4
 * before any comparison, on both sides, so a client reaching a dual-stack socket is matched by
 * its IPv4 prefixes. Pure functions. */
#ifndef NTSPOOL_CIDR_H
#define NTSPOOL_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t bits;	/* 0..32 or 0..128 */
	uint8_t addr[16]; /* network address, host bits zero; IPv4 in the first 4 bytes */
};

/* The longest text cidr_format writes, with its NUL. */
#define CIDR_STRLEN 52

/* Parses text. Host bits set past the prefix length are an error (a likely typo), as are a
 * length out of range, a scope id and anything after the number. 0, or -EINVAL with a reason
 * in why. An IPv4-mapped IPv6 prefix of length >= 96 becomes its IPv4 prefix. */
int cidr_parse(const char *text, struct cidr *out, char *why, size_t whylen);

/* Canonical text ("192.0.2.0/24"). Returns buf. */
char *cidr_format(const struct cidr *c, char *buf, size_t len);

/* The address of a (AF_INET or AF_INET6; IPv4-mapped canonicalised) into *family and addr[16].
 * False for any other family. */
bool cidr_addr_of(const struct sockaddr *a, uint8_t *family, uint8_t addr[16]);

/* a is inside c. False for an address of another family. */
bool cidr_contains(const struct cidr *c, const struct sockaddr *a);

/* The longest of the n prefixes that contains a, or -1. */
int cidr_match(const struct cidr *v, size_t n, const struct sockaddr *a);

#endif
