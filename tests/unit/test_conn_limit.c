#include "conn_limit.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

static struct sockaddr_storage addr(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;
		s->sin_family = AF_INET;
		s->sin_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET, ip, &s->sin_addr), 1);
	}
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

Test(conn_limit, per_ipv4_address_whatever_the_port)
{
	struct conn_limit *cl;
	cr_assert_eq(conn_limit_new(&cl, 2), 0);
	struct sockaddr_storage a1 = addr("192.0.2.1", 1000), a2 = addr("192.0.2.1", 2000);
	struct sockaddr_storage b = addr("192.0.2.2", 1000);
	cr_assert_eq(conn_limit_take(cl, SA(a1)), 0);
	cr_assert_eq(conn_limit_take(cl, SA(a2)), 0);
	cr_assert_eq(conn_limit_take(cl, SA(a1)), -EBUSY, "a third from one address");
	cr_assert_eq(conn_limit_take(cl, SA(b)), 0, "another address has its own share");
	cr_assert_eq(conn_limit_held(cl, SA(a1)), 2);
	cr_assert_eq(conn_limit_refused(cl), 1);
	conn_limit_release(cl, SA(a2));
	cr_assert_eq(conn_limit_take(cl, SA(a1)), 0, "a released slot is free again");
	conn_limit_release(cl, SA(a1));
	conn_limit_release(cl, SA(a1));
	conn_limit_release(cl, SA(b));
	cr_assert_eq(conn_limit_held(cl, SA(a1)), 0);
	cr_assert_eq(conn_limit_held(cl, SA(b)), 0);
	conn_limit_free(cl);
}

Test(conn_limit, ipv6_counts_per_64_and_mapped_ipv4_as_ipv4)
{
	struct conn_limit *cl;
	cr_assert_eq(conn_limit_new(&cl, 1), 0);
	struct sockaddr_storage x = addr("2001:db8:1:2::1", 1), y = addr("2001:db8:1:2:ffff::9", 2);
	struct sockaddr_storage z = addr("2001:db8:1:3::1", 3);
	cr_assert_eq(conn_limit_take(cl, SA(x)), 0);
	cr_assert_eq(conn_limit_take(cl, SA(y)), -EBUSY, "same /64");
	cr_assert_eq(conn_limit_take(cl, SA(z)), 0, "another /64");
	struct sockaddr_storage v4 = addr("198.51.100.7", 1), mapped = addr("::ffff:198.51.100.7", 2);
	cr_assert_eq(conn_limit_take(cl, SA(v4)), 0);
	cr_assert_eq(conn_limit_take(cl, SA(mapped)), -EBUSY, "an IPv4-mapped address is that IPv4");
	cr_assert_eq(conn_limit_held(cl, SA(mapped)), 1);
	conn_limit_release(cl, SA(x));
	conn_limit_release(cl, SA(z));
	conn_limit_release(cl, SA(mapped));
	cr_assert_eq(conn_limit_held(cl, SA(v4)), 0, "released through its mapped form");
	conn_limit_free(cl);
}

Test(conn_limit, zero_is_no_limit_and_many_prefixes_are_bounded_by_what_is_held)
{
	struct conn_limit *cl;
	cr_assert_eq(conn_limit_new(&cl, 0), 0);
	struct sockaddr_storage a = addr("192.0.2.1", 1);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(conn_limit_take(cl, SA(a)), 0);
	cr_assert_eq(conn_limit_refused(cl), 0);
	conn_limit_free(cl);

	cr_assert_eq(conn_limit_new(&cl, 1), 0);
	char ip[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
		struct sockaddr_storage s = addr(ip, 1);
		cr_assert_eq(conn_limit_take(cl, SA(s)), 0);
	}
	for (int i = 0; i < 5000; i++) {
		snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
		struct sockaddr_storage s = addr(ip, 1);
		conn_limit_release(cl, SA(s));
		cr_assert_eq(conn_limit_held(cl, SA(s)), 0);
	}
	conn_limit_free(cl); /* LeakSanitizer: nothing left behind */
}
