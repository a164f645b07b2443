/* Key exchanges admitted per client address prefix, for the broker and the time source's KE
 * server, on the client's real address: a token bucket per prefix (an IPv4 /v4_bits, an IPv6
 * /v6_bits; IPv4-mapped IPv6 counts as its IPv4 address), refilled at `rate` tokens a second up
 * to `burst`. A prefix seen for the first time starts full; each admitted exchange takes a token.
 *
 * Memory is fixed at ratelimit_new: at most max_clients prefixes, no allocation per call. A
 * bucket is kept as the time it will be full again, so a full one is the same as no entry at
 * all; with the table full, a new prefix takes the place of the entry that is full soonest (one
 * that is full already, when there is one). Eviction therefore fails open: it never refuses
 * anybody, it forgives the evicted prefix the tokens it still owed, and it picks the entry
 * owing least. The consequence: an attacker cycling through more prefixes than max_clients gets
 * at worst `burst` exchanges per prefix each time round, which is what new prefixes get anyway;
 * size max_clients above the prefixes expected to be busy at once (evicted_early in the stats
 * says when it is not).
 *
 * Prefixes are attacker-chosen, so the table hashes them with a keyed hash (SipHash-2-4's
 * rounds over the prefix; hash_key at ratelimit_new should be random, e.g. from getrandom).
 * One table serves the listeners of every worker thread: it takes its own lock. Time is passed
 * in (monotonic milliseconds); a call with a slightly older time than an earlier one (two
 * threads racing for the lock) is fine and is judged at its own time. Cost per call: one hash
 * lookup; an admission also moves its entry in a heap, O(log max_clients). */
#ifndef NTSPOOL_BASE_RATELIMIT_H
#define NTSPOOL_BASE_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The default prefix lengths (a config field of 0 takes them): one IPv4 address, one IPv6
 * subnet (what a single customer usually holds). */
#define RATELIMIT_V4_BITS 32
#define RATELIMIT_V6_BITS 64
/* The most prefixes a table tracks (about 50 bytes each). */
#define RATELIMIT_MAX_CLIENTS (1u << 24)
/* The highest rate: the bucket's time resolution is a microsecond per token. */
#define RATELIMIT_MAX_RATE 1e6

struct ratelimit_config {
	double rate;	      /* tokens a second, > 0 and <= RATELIMIT_MAX_RATE */
	uint32_t burst;	      /* capacity, >= 1; burst / rate at most about 146,000 years */
	uint32_t max_clients; /* prefixes tracked, 1..RATELIMIT_MAX_CLIENTS */
	uint8_t v4_bits;      /* 1..32, 0: RATELIMIT_V4_BITS */
	uint8_t v6_bits;      /* 1..128, 0: RATELIMIT_V6_BITS */
};

struct ratelimit;

/* cfg is borrowed (copied). *out is new (ratelimit_free). 0, -EINVAL for a config out of the
 * ranges above, -ENOMEM. */
int ratelimit_new(struct ratelimit **out, const struct ratelimit_config *cfg, uint64_t hash_key);
void ratelimit_free(struct ratelimit *rl);

/* Decides one key exchange from addr (borrowed) at now_ms. True: admitted, a token taken. False:
 * limited (counted). An address of another family than IPv4 or IPv6 is not a network client: it
 * is admitted without a bucket (and counted as allowed). */
bool ratelimit_allow(struct ratelimit *rl, const struct sockaddr *addr, uint64_t now_ms);

struct ratelimit_stats {
	uint64_t allowed;	/* calls admitted */
	uint64_t limited;	/* calls refused */
	uint64_t evicted;	/* entries replaced by a new prefix with the table full */
	uint64_t evicted_early; /* of those, entries not yet full (tokens forgiven) */
	size_t tracked;		/* prefixes in the table now */
};

/* A consistent copy of the counters (taken under the table's lock). */
void ratelimit_stats(const struct ratelimit *rl, struct ratelimit_stats *out);

#endif
