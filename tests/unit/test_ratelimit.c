#include "ratelimit.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "testutil.h"

#define KEY 0x0123456789abcdefull

static struct sockaddr_storage addr(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET6, ip, &s->sin6_addr), 1, "%s", ip);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;
		s->sin_family = AF_INET;
		s->sin_port = htons(port);
		cr_assert_eq(inet_pton(AF_INET, ip, &s->sin_addr), 1, "%s", ip);
	}
	return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static struct ratelimit *make(double rate, uint32_t burst, uint32_t max_clients, uint8_t v4,
			      uint8_t v6)
{
	struct ratelimit_config cfg = { .rate = rate,
					.burst = burst,
					.max_clients = max_clients,
					.v4_bits = v4,
					.v6_bits = v6 };
	struct ratelimit *rl = NULL;
	cr_assert_eq(ratelimit_new(&rl, &cfg, KEY), 0);
	return rl;
}

static bool allow(struct ratelimit *rl, const char *ip, uint64_t now_ms)
{
	struct sockaddr_storage a = addr(ip, 4460);
	return ratelimit_allow(rl, SA(a), now_ms);
}

static struct ratelimit_stats stats(const struct ratelimit *rl)
{
	struct ratelimit_stats s;
	ratelimit_stats(rl, &s);
	return s;
}

Test(ratelimit, burst_then_limited)
{
	struct ratelimit *rl = make(1, 3, 16, 0, 0);
	for (int i = 0; i < 3; i++)
		cr_assert(allow(rl, "192.0.2.1", 1000), "a new prefix starts full: take %d", i);
	cr_assert_not(allow(rl, "192.0.2.1", 1000), "the fourth at once");
	cr_assert_not(allow(rl, "192.0.2.1", 1999), "nothing refilled in 999 ms");
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(s.allowed, 3);
	cr_assert_eq(s.limited, 2);
	cr_assert_eq(s.tracked, 1);
	cr_assert_eq(s.evicted, 0);
	ratelimit_free(rl);
}

Test(ratelimit, refill_at_a_fractional_rate_and_cap_at_burst)
{
	struct ratelimit *rl = make(0.5, 2, 16, 0, 0);
	const char *a = "198.51.100.1";
	cr_assert(allow(rl, a, 0));
	cr_assert(allow(rl, a, 0));
	cr_assert_not(allow(rl, a, 0));
	cr_assert_not(allow(rl, a, 1999), "one token takes two seconds");
	cr_assert(allow(rl, a, 2000));
	cr_assert_not(allow(rl, a, 2000));
	cr_assert_not(allow(rl, a, 3999));
	cr_assert(allow(rl, a, 4000));
	/* A long idle time fills the bucket to burst, not beyond. */
	cr_assert(allow(rl, a, 100000));
	cr_assert(allow(rl, a, 100000));
	cr_assert_not(allow(rl, a, 100000), "capacity is burst however long the wait");
	ratelimit_free(rl);

	/* 3 a second: a token every 333.333 ms. */
	rl = make(3, 1, 16, 0, 0);
	cr_assert(allow(rl, a, 10000));
	cr_assert_not(allow(rl, a, 10333));
	cr_assert(allow(rl, a, 10334));
	cr_assert_not(allow(rl, a, 10334));
	ratelimit_free(rl);

	/* Partial refills add up: 250 ms a token, bucket of 4 emptied, 1 s later full again. */
	rl = make(4, 4, 16, 0, 0);
	for (int i = 0; i < 4; i++)
		cr_assert(allow(rl, a, 0));
	cr_assert_not(allow(rl, a, 249));
	cr_assert(allow(rl, a, 250));
	cr_assert_not(allow(rl, a, 250));
	for (int i = 0; i < 4; i++)
		cr_assert(allow(rl, a, 1250), "full again one second after the last take: %d", i);
	cr_assert_not(allow(rl, a, 1250));
	ratelimit_free(rl);
}

Test(ratelimit, an_older_time_from_a_racing_thread_is_judged_at_its_own_time)
{
	struct ratelimit *rl = make(1, 1, 16, 0, 0);
	cr_assert(allow(rl, "192.0.2.1", 5000));
	cr_assert_not(allow(rl, "192.0.2.1", 4990), "earlier than the take: still empty");
	cr_assert(allow(rl, "192.0.2.1", 6000));
	ratelimit_free(rl);
}

Test(ratelimit, ipv6_per_64_by_default_and_other_lengths)
{
	struct ratelimit *rl = make(1, 1, 64, 0, 0);
	cr_assert(allow(rl, "2001:db8:1:2::1", 0));
	cr_assert_not(allow(rl, "2001:db8:1:2:ffff:ffff:ffff:ffff", 0), "the same /64");
	cr_assert(allow(rl, "2001:db8:1:3::1", 0), "another /64");
	cr_assert_eq(stats(rl).tracked, 2);
	ratelimit_free(rl);

	rl = make(1, 1, 64, 0, 48);
	cr_assert(allow(rl, "2001:db8:1:2::1", 0));
	cr_assert_not(allow(rl, "2001:db8:1:3::1", 0), "the same /48");
	cr_assert(allow(rl, "2001:db8:2::1", 0), "another /48");
	ratelimit_free(rl);

	/* A length inside a byte: /60 keeps the top 12 bits of the fourth group. */
	rl = make(1, 1, 64, 0, 60);
	cr_assert(allow(rl, "2001:db8:0:0::1", 0));
	cr_assert_not(allow(rl, "2001:db8:0:f::1", 0), "0x000f and 0x0000 agree in 12 bits");
	cr_assert(allow(rl, "2001:db8:0:10::1", 0), "0x0010 does not");
	ratelimit_free(rl);

	rl = make(1, 1, 64, 0, 128);
	cr_assert(allow(rl, "2001:db8::1", 0));
	cr_assert(allow(rl, "2001:db8::2", 0), "/128: every address its own");
	cr_assert_not(allow(rl, "2001:db8::1", 0));
	ratelimit_free(rl);
}

Test(ratelimit, ipv4_per_address_by_default_and_v4_bits_groups)
{
	struct ratelimit *rl = make(1, 1, 64, 0, 0);
	struct sockaddr_storage p1 = addr("192.0.2.1", 1000), p2 = addr("192.0.2.1", 2000);
	cr_assert(ratelimit_allow(rl, SA(p1), 0));
	cr_assert_not(ratelimit_allow(rl, SA(p2), 0), "the port does not matter");
	cr_assert(allow(rl, "192.0.2.2", 0), "/32: the next address is another client");
	ratelimit_free(rl);

	rl = make(1, 1, 64, 24, 0);
	cr_assert(allow(rl, "192.0.2.1", 0));
	cr_assert_not(allow(rl, "192.0.2.200", 0), "the same /24");
	cr_assert(allow(rl, "192.0.3.1", 0), "another /24");
	cr_assert_eq(stats(rl).tracked, 2);
	ratelimit_free(rl);

	rl = make(1, 1, 64, 1, 0);
	cr_assert(allow(rl, "10.0.0.1", 0));
	cr_assert_not(allow(rl, "127.255.255.255", 0), "/1: the lower half of the space");
	cr_assert(allow(rl, "128.0.0.1", 0));
	ratelimit_free(rl);
}

Test(ratelimit, mapped_ipv4_shares_the_ipv4_bucket)
{
	struct ratelimit *rl = make(1, 2, 64, 24, 0);
	cr_assert(allow(rl, "198.51.100.7", 0));
	cr_assert(allow(rl, "::ffff:198.51.100.9", 0), "mapped, same /24: the second token");
	cr_assert_not(allow(rl, "198.51.100.200", 0), "the bucket both took from");
	cr_assert_not(allow(rl, "::ffff:198.51.100.7", 0));
	cr_assert(allow(rl, "::198.51.100.7", 0), "IPv4-compatible is not mapped: IPv6");
	cr_assert_eq(stats(rl).tracked, 2);
	ratelimit_free(rl);
}

Test(ratelimit, other_families_are_admitted_without_a_bucket)
{
	struct ratelimit *rl = make(1, 1, 4, 0, 0);
	struct sockaddr_un un;
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	for (int i = 0; i < 5; i++)
		cr_assert(ratelimit_allow(rl, (const struct sockaddr *)&un, 0));
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(s.tracked, 0);
	cr_assert_eq(s.allowed, 5);
	ratelimit_free(rl);
}

Test(ratelimit, a_full_entry_is_evicted_before_a_busy_one)
{
	struct ratelimit *rl = make(1, 2, 4, 0, 0);
	cr_assert(allow(rl, "192.0.2.1", 0)); /* A: full again at 1 s */
	for (int i = 0; i < 2; i++) {
		cr_assert(allow(rl, "192.0.2.2", 1000)); /* B, C, D: empty, full at 3 s */
		cr_assert(allow(rl, "192.0.2.3", 1000));
		cr_assert(allow(rl, "192.0.2.4", 1000));
	}
	cr_assert_eq(stats(rl).tracked, 4);

	cr_assert(allow(rl, "192.0.2.5", 1500), "E takes the place of A, full since 1 s");
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(s.tracked, 4);
	cr_assert_eq(s.evicted, 1);
	cr_assert_eq(s.evicted_early, 0, "A owed nothing");
	cr_assert_not(allow(rl, "192.0.2.2", 1500), "B kept its debt");
	cr_assert_not(allow(rl, "192.0.2.3", 1500), "so did C");
	cr_assert_not(allow(rl, "192.0.2.4", 1500), "and D");
	cr_assert(allow(rl, "192.0.2.5", 1500), "E has its second token");
	cr_assert_not(allow(rl, "192.0.2.5", 1500), "and no third: E is tracked");
	ratelimit_free(rl);
}

Test(ratelimit, with_none_full_the_one_full_soonest_goes)
{
	struct ratelimit *rl = make(1, 3, 3, 0, 0);
	for (int i = 0; i < 3; i++)
		cr_assert(allow(rl, "192.0.2.1", 0)); /* P1: full at 3 s */
	cr_assert(allow(rl, "192.0.2.2", 0));	      /* P2: full at 1 s */
	cr_assert(allow(rl, "192.0.2.3", 0));	      /* P3: full at 2 s */
	cr_assert(allow(rl, "192.0.2.3", 0));

	cr_assert(allow(rl, "192.0.2.4", 100), "P4 replaces P2");
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(s.evicted, 1);
	cr_assert_eq(s.evicted_early, 1, "P2 still owed 0.9 s of refill");
	cr_assert_not(allow(rl, "192.0.2.1", 100), "P1 kept");
	cr_assert(allow(rl, "192.0.2.3", 100), "P3 kept: its one token left...");
	cr_assert_not(allow(rl, "192.0.2.3", 100), "...and no more");
	cr_assert(allow(rl, "192.0.2.2", 100), "P2 returns full: forgiven, the price of a bound");
	cr_assert(allow(rl, "192.0.2.2", 100));
	cr_assert(allow(rl, "192.0.2.2", 100));
	cr_assert_not(allow(rl, "192.0.2.2", 100));
	s = stats(rl);
	cr_assert_eq(s.evicted, 2, "P4 (full at 1.1 s) made room for it");
	cr_assert_eq(s.tracked, 3);
	cr_assert_not(allow(rl, "192.0.2.1", 100), "P1 still kept");
	ratelimit_free(rl);
}

Test(ratelimit, many_prefixes_stay_within_max_clients)
{
	struct ratelimit *rl = make(1, 1, 64, 0, 0);
	char ip[64];
	for (unsigned i = 0; i < 10000; i++) {
		snprintf(ip, sizeof ip, "2001:db8:%x:%x::1", i >> 8, i & 0xff);
		cr_assert(allow(rl, ip, i), "every new prefix starts full");
		cr_assert_leq(stats(rl).tracked, 64);
	}
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(s.tracked, 64);
	cr_assert_eq(s.evicted, 10000 - 64);
	cr_assert_eq(s.evicted_early, 10000 - 64, "a token a second, a prefix a millisecond");
	cr_assert_eq(s.allowed, 10000);
	/* The newest 64 are the ones tracked: each newcomer is full latest. */
	for (unsigned i = 10000 - 64; i < 10000; i++) {
		snprintf(ip, sizeof ip, "2001:db8:%x:%x::1", i >> 8, i & 0xff);
		cr_assert_not(allow(rl, ip, 9999), "prefix %u tracked", i);
	}
	ratelimit_free(rl);
}

/* The documented semantics written plainly (linear search, tokens as refill times), run against
 * the table on a random workload. Every call has its own time and the interval (333333 us) is
 * prime to a millisecond, so no two entries are ever full at the same instant and the evicted
 * entry is unambiguous. */
struct model {
	struct {
		uint32_t prefix;
		uint64_t full_us;
	} e[16];
	size_t n;
};

static bool model_allow(struct model *m, uint32_t prefix, uint64_t now_ms, uint32_t burst,
			size_t cap)
{
	const uint64_t interval = 333333, now = now_ms * 1000;
	for (size_t i = 0; i < m->n; i++) {
		if (m->e[i].prefix != prefix)
			continue;
		uint64_t f = m->e[i].full_us;
		if (f > now && f - now > (burst - 1) * interval)
			return false;
		m->e[i].full_us = (f > now ? f : now) + interval;
		return true;
	}
	size_t slot = m->n;
	if (m->n == cap) {
		slot = 0;
		for (size_t i = 1; i < m->n; i++)
			if (m->e[i].full_us < m->e[slot].full_us)
				slot = i;
		for (size_t i = 0; i < m->n; i++)
			cr_assert(i == slot || m->e[i].full_us != m->e[slot].full_us,
				  "the model's premise: no tie for the eviction");
	} else {
		m->n++;
	}
	m->e[slot].prefix = prefix;
	m->e[slot].full_us = now + interval;
	return true;
}

Test(ratelimit, matches_a_plain_model_on_a_random_workload)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 20240607);
	for (int round = 0; round < 20; round++) {
		uint32_t burst = 1 + tu_rng_below(&rng, 5);
		size_t cap = 1 + tu_rng_below(&rng, 16);
		uint32_t prefixes = 1 + tu_rng_below(&rng, 40);
		struct ratelimit *rl = make(3, burst, (uint32_t)cap, 0, 0);
		struct model m = { .n = 0 };
		uint64_t now = 1000, allowed = 0, limited = 0;
		for (int i = 0; i < 5000; i++) {
			now += 1 + tu_rng_below(&rng, 200);
			uint32_t p = tu_rng_below(&rng, prefixes);
			char ip[32];
			snprintf(ip, sizeof ip, "10.0.%u.%u", p >> 8, p & 0xff);
			bool want = model_allow(&m, p, now, burst, cap);
			cr_assert_eq(allow(rl, ip, now), want, "round %d call %d (prefix %u)",
				     round, i, p);
			if (want)
				allowed++;
			else
				limited++;
		}
		struct ratelimit_stats s = stats(rl);
		cr_assert_eq(s.allowed, allowed);
		cr_assert_eq(s.limited, limited);
		cr_assert_eq(s.tracked, m.n);
		ratelimit_free(rl);
	}
}

Test(ratelimit, bad_configs_refused)
{
	const struct ratelimit_config good = { .rate = 1, .burst = 1, .max_clients = 1 };
	struct ratelimit_config c;
	struct ratelimit *rl = NULL;
	cr_assert_eq(ratelimit_new(&rl, &good, KEY), 0);
	ratelimit_free(rl);
	ratelimit_free(NULL);

	const double rates[] = { 0, -1, NAN, INFINITY, RATELIMIT_MAX_RATE * 2 };
	for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
		c = good;
		c.rate = rates[i];
		cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "rate %g", rates[i]);
	}
	c = good;
	c.burst = 0;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "burst 0");
	c = good;
	c.max_clients = 0;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "max_clients 0");
	c.max_clients = RATELIMIT_MAX_CLIENTS + 1;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "max_clients too many");
	c = good;
	c.v4_bits = 33;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "v4_bits 33");
	c = good;
	c.v6_bits = 129;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "v6_bits 129");
	c = good;
	c.rate = 1e-9;
	c.burst = 1000000;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), -EINVAL, "a bucket too deep to represent");

	c = good;
	c.rate = RATELIMIT_MAX_RATE;
	c.burst = UINT32_MAX;
	c.v4_bits = 32;
	c.v6_bits = 128;
	cr_assert_eq(ratelimit_new(&rl, &c, KEY), 0, "the edges of every range");
	ratelimit_free(rl);
}

/* ---- threads --------------------------------------------------------------------------------- */

#define THREADS 8
#define CALLS 20000

struct worker {
	struct ratelimit *rl;
	int id;
	bool many; /* hot and cold prefixes and moving time, or one prefix at one instant */
	uint64_t allowed, limited;
};

static void *hammer(void *arg)
{
	struct worker *w = arg;
	struct tu_rng rng;
	tu_rng_seed(&rng, 1000 + (uint64_t)w->id);
	struct sockaddr_in6 a;
	memset(&a, 0, sizeof a);
	a.sin6_family = AF_INET6;
	a.sin6_addr.s6_addr[0] = 0x20;
	a.sin6_addr.s6_addr[1] = 0x01;
	uint64_t now = 0;
	for (int i = 0; i < CALLS; i++) {
		if (w->many) {
			/* Each thread's clock runs on its own: they reach the lock out of order. */
			now += tu_rng_below(&rng, 3);
			uint32_t r = tu_rng_below(&rng, 512);
			a.sin6_addr.s6_addr[6] = r < 256 ? 0 : 1;
			a.sin6_addr.s6_addr[7] = (uint8_t)(r < 256 ? r % 8 : r);
		}
		if (ratelimit_allow(w->rl, (const struct sockaddr *)&a, now))
			w->allowed++;
		else
			w->limited++;
	}
	return NULL;
}

static void run_threads(struct ratelimit *rl, bool many, uint64_t *allowed, uint64_t *limited)
{
	pthread_t t[THREADS];
	struct worker w[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .rl = rl, .id = i, .many = many };
		cr_assert_eq(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
	}
	*allowed = *limited = 0;
	for (int i = 0; i < THREADS; i++) {
		cr_assert_eq(pthread_join(t[i], NULL), 0);
		*allowed += w[i].allowed;
		*limited += w[i].limited;
	}
}

Test(ratelimit, threads_share_one_bucket_exactly)
{
	/* One prefix, no time passing: exactly burst admissions among all threads, which a lost
	 * update between two of them would exceed. */
	struct ratelimit *rl = make(1, 1000, 16, 0, 0);
	uint64_t allowed, limited;
	run_threads(rl, false, &allowed, &limited);
	cr_assert_eq(allowed, 1000);
	cr_assert_eq(allowed + limited, (uint64_t)THREADS * CALLS);
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(s.allowed, allowed);
	cr_assert_eq(s.limited, limited);
	cr_assert_eq(s.tracked, 1);
	ratelimit_free(rl);
}

Test(ratelimit, threads_with_evictions_count_every_call)
{
	/* Half the calls on 8 hot prefixes (limited), half over 256 cold ones (evicting each
	 * other from 64 places). */
	struct ratelimit *rl = make(10, 4, 64, 0, 0);
	uint64_t allowed, limited;
	run_threads(rl, true, &allowed, &limited);
	struct ratelimit_stats s = stats(rl);
	cr_assert_eq(allowed + limited, (uint64_t)THREADS * CALLS);
	cr_assert_eq(s.allowed, allowed);
	cr_assert_eq(s.limited, limited);
	cr_assert_gt(s.limited, 0, "the hot prefixes are limited");
	cr_assert_gt(s.evicted, 0, "264 prefixes in 64 places");
	cr_assert_eq(s.tracked, 64);
	ratelimit_free(rl);
}
