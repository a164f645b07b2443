#include "cidr.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "testutil.h"

static struct sockaddr_storage addr(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons(123);
		cr_assert_eq(inet_pton(AF_INET6, ip, &s->sin6_addr), 1, "%s", ip);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;
		s->sin_family = AF_INET;
		s->sin_port = htons(123);
		cr_assert_eq(inet_pton(AF_INET, ip, &s->sin_addr), 1, "%s", ip);
	}
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static struct cidr parse_ok(const char *text)
{
	struct cidr c;
	char why[128] = "";
	cr_assert_eq(cidr_parse(text, &c, why, sizeof why), 0, "%s: %s", text, why);
	return c;
}

/* Parses and formats back. */
static void check_parse(const char *text, int family, unsigned bits, const char *canonical)
{
	struct cidr c = parse_ok(text);
	char buf[CIDR_STRLEN];
	cr_assert_eq(c.family, family, "%s: family", text);
	cr_assert_eq(c.bits, bits, "%s: bits", text);
	cr_assert_str_eq(cidr_format(&c, buf, sizeof buf), canonical, "%s", text);
}

static void check_refused(const char *text, const char *reason_part)
{
	struct cidr c;
	char why[256] = "";
	cr_assert_eq(cidr_parse(text, &c, why, sizeof why), -EINVAL, "\"%s\" accepted", text);
	cr_assert_not_null(strstr(why, reason_part), "\"%s\": reason \"%s\"", text, why);
}

Test(cidr, parses_prefixes_and_bare_addresses)
{
	check_parse("192.0.2.0/24", AF_INET, 24, "192.0.2.0/24");
	check_parse("192.0.2.7", AF_INET, 32, "192.0.2.7/32");
	check_parse("192.0.2.7/32", AF_INET, 32, "192.0.2.7/32");
	check_parse("10.0.0.0/8", AF_INET, 8, "10.0.0.0/8");
	check_parse("198.51.100.128/25", AF_INET, 25, "198.51.100.128/25");
	check_parse("0.0.0.0/0", AF_INET, 0, "0.0.0.0/0");
	check_parse("2001:db8::/32", AF_INET6, 32, "2001:db8::/32");
	check_parse("2001:db8:0:0:0:0:0:1", AF_INET6, 128, "2001:db8::1/128");
	check_parse("2001:DB8:1::/48", AF_INET6, 48, "2001:db8:1::/48");
	check_parse("2001:db8::/127", AF_INET6, 127, "2001:db8::/127");
	check_parse("::/0", AF_INET6, 0, "::/0");
	check_parse("::1", AF_INET6, 128, "::1/128");
}

Test(cidr, the_network_address_is_stored_with_host_bits_zero)
{
	struct cidr c = parse_ok("198.51.100.128/25");
	const uint8_t want[16] = { 198, 51, 100, 128 };
	cr_assert(memcmp(c.addr, want, 16) == 0, "IPv4 in the first 4 bytes, the rest zero");
}

Test(cidr, mapped_ipv4_prefixes_become_ipv4)
{
	check_parse("::ffff:192.0.2.0/120", AF_INET, 24, "192.0.2.0/24");
	check_parse("::ffff:192.0.2.1", AF_INET, 32, "192.0.2.1/32");
	check_parse("::ffff:c000:200/120", AF_INET, 24, "192.0.2.0/24");
	check_parse("::ffff:0.0.0.0/96", AF_INET, 0, "0.0.0.0/0");
	struct cidr c = parse_ok("::ffff:192.0.2.0/120");
	const uint8_t want[16] = { 192, 0, 2, 0 };
	cr_assert(memcmp(c.addr, want, 16) == 0, "moved to the front, the rest zeroed");
	/* Shorter than the mapped block, the 0xffff of the mapping is a host bit. */
	check_refused("::ffff:0:0/95", "bits are set past the prefix length");
}

Test(cidr, refuses_bad_text)
{
	check_refused("192.0.2.1/24", "bits are set past the prefix length");
	check_refused("2001:db8::1/64", "bits are set past the prefix length");
	check_refused("::ffff:192.0.2.1/120", "bits are set past the prefix length");
	check_refused("192.0.2.0/33", "at most 32");
	check_refused("2001:db8::/129", "at most 128");
	check_refused("192.0.2.0/99999999999999999999", "at most 32");
	check_refused("192.0.2.0/24x", "text after");
	check_refused("192.0.2.0/24 ", "text after");
	check_refused("192.0.2.0/24/8", "text after");
	check_refused("192.0.2.0/", "not a number");
	check_refused("192.0.2.0/-1", "not a number");
	check_refused("192.0.2.0/ 24", "not a number");
	check_refused("", "not an IP address");
	check_refused("/24", "not an IP address");
	check_refused("192.0.2", "not an IP address");
	check_refused("192.0.2.256", "not an IP address");
	check_refused("example.net", "not an IP address");
	check_refused(" 192.0.2.0/24", "not an IP address");
	check_refused("fe80::1%eth0", "not an IP address");
	check_refused("fe80::1%eth0/64", "not an IP address");
	check_refused("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa/64", "not an IP address");
}

Test(cidr, refusal_reason_fits_a_small_buffer)
{
	struct cidr c;
	char why[8];
	memset(why, 'x', sizeof why);
	cr_assert_eq(cidr_parse("nonsense/99", &c, why, sizeof why), -EINVAL);
	cr_assert_eq(why[sizeof why - 1], '\0', "cut and terminated");
	cr_assert_eq(cidr_parse("nonsense", &c, NULL, 0), -EINVAL, "no room for a reason at all");
}

Test(cidr, format_round_trips)
{
	const char *texts[] = { "192.0.2.0/24",	 "0.0.0.0/0",	    "203.0.113.255/32",
				"2001:db8::/32", "2001:db8:1:2::/64", "::/0",
				"fe80::/10",	 "2001:db8::8:800:200c:417a/128" };
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		struct cidr a = parse_ok(texts[i]);
		char buf[CIDR_STRLEN];
		cidr_format(&a, buf, sizeof buf);
		cr_assert_str_eq(buf, texts[i]);
		struct cidr b = parse_ok(buf);
		cr_assert(memcmp(&a, &b, sizeof a) == 0, "%s reads back the same", buf);
	}
	/* The longest form fits CIDR_STRLEN. */
	struct cidr c = parse_ok("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
	char buf[CIDR_STRLEN];
	cr_assert_str_eq(cidr_format(&c, buf, sizeof buf),
			 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
}

Test(cidr, contains_ipv4_and_ipv6)
{
	struct cidr v4 = parse_ok("192.0.2.0/24");
	struct sockaddr_storage in = addr("192.0.2.200"), out = addr("192.0.3.1");
	cr_assert(cidr_contains(&v4, SA(in)));
	cr_assert_not(cidr_contains(&v4, SA(out)));

	struct cidr odd = parse_ok("198.51.100.128/25");
	struct sockaddr_storage hi = addr("198.51.100.129"), lo = addr("198.51.100.127");
	cr_assert(cidr_contains(&odd, SA(hi)));
	cr_assert_not(cidr_contains(&odd, SA(lo)), "a length inside a byte");

	struct cidr host = parse_ok("192.0.2.7");
	struct sockaddr_storage same = addr("192.0.2.7"), next = addr("192.0.2.8");
	cr_assert(cidr_contains(&host, SA(same)));
	cr_assert_not(cidr_contains(&host, SA(next)));

	struct cidr v6 = parse_ok("2001:db8:1::/48");
	struct sockaddr_storage a6 = addr("2001:db8:1:ffff::1"), b6 = addr("2001:db8:2::1");
	cr_assert(cidr_contains(&v6, SA(a6)));
	cr_assert_not(cidr_contains(&v6, SA(b6)));

	struct cidr v6odd = parse_ok("fe80::/10");
	struct sockaddr_storage ll = addr("febf::1"), notll = addr("fec0::1");
	cr_assert(cidr_contains(&v6odd, SA(ll)));
	cr_assert_not(cidr_contains(&v6odd, SA(notll)));

	struct cidr all4 = parse_ok("0.0.0.0/0"), all6 = parse_ok("::/0");
	cr_assert(cidr_contains(&all4, SA(out)));
	cr_assert(cidr_contains(&all6, SA(b6)));
}

Test(cidr, mapped_client_matches_ipv4_prefixes_and_families_do_not_mix)
{
	struct cidr v4 = parse_ok("192.0.2.0/24");
	struct sockaddr_storage mapped = addr("::ffff:192.0.2.9"), other = addr("::ffff:192.0.3.9");
	cr_assert(cidr_contains(&v4, SA(mapped)), "a dual-stack socket's IPv4 client");
	cr_assert_not(cidr_contains(&v4, SA(other)));
	struct cidr from_mapped = parse_ok("::ffff:192.0.2.0/120");
	struct sockaddr_storage plain = addr("192.0.2.9");
	cr_assert(cidr_contains(&from_mapped, SA(plain)), "mapped on the prefix side too");

	struct cidr all6 = parse_ok("::/0"), all4 = parse_ok("0.0.0.0/0");
	cr_assert_not(cidr_contains(&all6, SA(plain)), "an IPv6 prefix holds no IPv4 client");
	cr_assert_not(cidr_contains(&all6, SA(mapped)), "nor a mapped one");
	struct sockaddr_storage v6 = addr("2001:db8::1"), compat = addr("::192.0.2.9");
	cr_assert_not(cidr_contains(&all4, SA(v6)), "an IPv4 prefix holds no IPv6 client");
	cr_assert_not(cidr_contains(&v4, SA(compat)), "IPv4-compatible is not mapped");

	struct sockaddr_un un;
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	cr_assert_not(cidr_contains(&all4, (const struct sockaddr *)&un));
	cr_assert_not(cidr_contains(&all6, (const struct sockaddr *)&un));
}

Test(cidr, addr_of_canonicalises)
{
	uint8_t family, a[16];
	struct sockaddr_storage mapped = addr("::ffff:203.0.113.5");
	memset(a, 0xee, sizeof a);
	cr_assert(cidr_addr_of(SA(mapped), &family, a));
	const uint8_t want4[16] = { 203, 0, 113, 5 };
	cr_assert_eq(family, AF_INET);
	cr_assert(memcmp(a, want4, 16) == 0);

	struct sockaddr_storage v6 = addr("2001:db8::5");
	cr_assert(cidr_addr_of(SA(v6), &family, a));
	cr_assert_eq(family, AF_INET6);
	cr_assert_eq(a[0], 0x20);
	cr_assert_eq(a[15], 5);

	struct sockaddr_un un;
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	cr_assert_not(cidr_addr_of((const struct sockaddr *)&un, &family, a));
}

Test(cidr, match_picks_the_longest)
{
	struct cidr v[6];
	v[0] = parse_ok("0.0.0.0/0");
	v[1] = parse_ok("192.0.2.128/25");
	v[2] = parse_ok("192.0.0.0/16");
	v[3] = parse_ok("192.0.2.0/24");
	v[4] = parse_ok("2001:db8::/32");
	v[5] = parse_ok("2001:db8:1::/48");
	struct sockaddr_storage a = addr("192.0.2.200"), b = addr("192.0.2.5");
	struct sockaddr_storage c = addr("192.0.9.1");
	struct sockaddr_storage d = addr("198.51.100.1"), e = addr("::ffff:192.0.2.129");
	struct sockaddr_storage f = addr("2001:db8:1::1"), g = addr("2001:db8:2::1");
	struct sockaddr_storage h = addr("2001:db9::1");
	cr_assert_eq(cidr_match(v, 6, SA(a)), 1, "the /25 over the /24, /16 and /0");
	cr_assert_eq(cidr_match(v, 6, SA(b)), 3, "the /24, listed after the /16");
	cr_assert_eq(cidr_match(v, 6, SA(c)), 2);
	cr_assert_eq(cidr_match(v, 6, SA(d)), 0);
	cr_assert_eq(cidr_match(v, 6, SA(e)), 1, "a mapped client among IPv4 prefixes");
	cr_assert_eq(cidr_match(v, 6, SA(f)), 5);
	cr_assert_eq(cidr_match(v, 6, SA(g)), 4);
	cr_assert_eq(cidr_match(v, 6, SA(h)), -1, "no IPv6 prefix holds it; /0 is IPv4");
	cr_assert_eq(cidr_match(v, 0, SA(a)), -1, "an empty list");

	/* Equal lengths: the first listed. */
	struct cidr dup[2] = { parse_ok("192.0.2.0/24"), parse_ok("::ffff:192.0.2.0/120") };
	cr_assert_eq(cidr_match(dup, 2, SA(a)), 0);
}
