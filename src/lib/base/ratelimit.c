#include "ratelimit.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

#define NONE UINT32_MAX

/* One prefix. Its bucket is the time it is full again (the GCRA form of a token bucket): a
 * taken token moves full_us one interval later, and a request is admitted while full_us is at
 * most burst - 1 intervals ahead of now. The same number orders the eviction heap. */
struct entry {
	uint64_t hi, lo; /* the prefix, host bits zero (IPv4 in the top of hi) */
	uint64_t full_us;
	uint32_t next;	 /* the next entry of its hash chain, or NONE */
	uint32_t chain;	 /* its hash chain */
	uint32_t heap;	 /* its place in the heap */
	uint8_t family;
};

struct ratelimit {
	pthread_mutex_t lock;  /* every worker's listeners share one table */
	uint64_t interval_us;  /* one token's refill time */
	uint64_t tolerance_us; /* (burst - 1) intervals */
	uint64_t k0, k1;       /* the hash key */
	uint8_t v4_bits, v6_bits;
	uint32_t cap, used, mask;
	struct entry *entries; /* cap of them; [0, used) in use */
	uint32_t *chains;      /* mask + 1 heads */
	uint32_t *heap;	       /* the used entries, a min-heap by full_us */
	uint64_t allowed, limited, evicted, evicted_early;
};

/* ---- the keyed hash: SipHash-2-4 over a fixed three-word input --------------------------- */

static uint64_t rotl(uint64_t x, unsigned b)
{
	return (x << b) | (x >> (64 - b));
}

struct sip {
	uint64_t v0, v1, v2, v3;
};

static void sip_round(struct sip *s)
{
	s->v0 += s->v1;
	s->v1 = rotl(s->v1, 13) ^ s->v0;
	s->v0 = rotl(s->v0, 32);
	s->v2 += s->v3;
	s->v3 = rotl(s->v3, 16) ^ s->v2;
	s->v0 += s->v3;
	s->v3 = rotl(s->v3, 21) ^ s->v0;
	s->v2 += s->v1;
	s->v1 = rotl(s->v1, 17) ^ s->v2;
	s->v2 = rotl(s->v2, 32);
}

/* The input always has three words, so it needs no length block to be unambiguous. */
static uint64_t sip_hash3(uint64_t k0, uint64_t k1, const uint64_t m[3])
{
	struct sip s = {
		k0 ^ 0x736f6d6570736575ull,
		k1 ^ 0x646f72616e646f6dull,
		k0 ^ 0x6c7967656e657261ull,
		k1 ^ 0x7465646279746573ull,
	};
	for (int i = 0; i < 3; i++) {
		s.v3 ^= m[i];
		sip_round(&s);
		sip_round(&s);
		s.v0 ^= m[i];
	}
	s.v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		sip_round(&s);
	return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/* splitmix64's finaliser: stretches the caller's 64-bit key to SipHash's two words. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ---- the eviction heap ------------------------------------------------------------------- */

static uint64_t key_at(const struct ratelimit *rl, uint32_t pos)
{
	return rl->entries[rl->heap[pos]].full_us;
}

static void heap_set(struct ratelimit *rl, uint32_t pos, uint32_t e)
{
	rl->heap[pos] = e;
	rl->entries[e].heap = pos;
}

static void sift_up(struct ratelimit *rl, uint32_t pos)
{
	uint32_t e = rl->heap[pos];
	uint64_t key = rl->entries[e].full_us;
	while (pos > 0) {
		uint32_t parent = (pos - 1) / 2;
		if (key_at(rl, parent) <= key)
			break;
		heap_set(rl, pos, rl->heap[parent]);
		pos = parent;
	}
	heap_set(rl, pos, e);
}

static void sift_down(struct ratelimit *rl, uint32_t pos)
{
	uint32_t e = rl->heap[pos];
	uint64_t key = rl->entries[e].full_us;
	for (;;) {
		uint32_t child = 2 * pos + 1;
		if (child >= rl->used)
			break;
		if (child + 1 < rl->used && key_at(rl, child + 1) < key_at(rl, child))
			child++;
		if (key <= key_at(rl, child))
			break;
		heap_set(rl, pos, rl->heap[child]);
		pos = child;
	}
	heap_set(rl, pos, e);
}

/* ---- the table --------------------------------------------------------------------------- */

int ratelimit_new(struct ratelimit **out, const struct ratelimit_config *cfg, uint64_t hash_key)
{
	uint8_t v4 = cfg->v4_bits ? cfg->v4_bits : RATELIMIT_V4_BITS;
	uint8_t v6 = cfg->v6_bits ? cfg->v6_bits : RATELIMIT_V6_BITS;
	if (!(cfg->rate > 0) || !(cfg->rate <= RATELIMIT_MAX_RATE) || cfg->burst < 1 ||
	    cfg->max_clients < 1 || cfg->max_clients > RATELIMIT_MAX_CLIENTS || v4 > 32 || v6 > 128)
		return -EINVAL;
	/* The bucket's whole depth, burst intervals, must fit in 2^62 us: full_us stays below
	 * now + 2^62 and never wraps. */
	double interval = 1e6 / cfg->rate;
	if (interval > 0x1p62 / cfg->burst)
		return -EINVAL;

	struct ratelimit *rl = calloc(1, sizeof *rl);
	if (!rl)
		return -ENOMEM;
	pthread_mutex_init(&rl->lock, NULL);
	uint32_t buckets = 1;
	while (buckets < cfg->max_clients)
		buckets *= 2;
	rl->entries = calloc(cfg->max_clients, sizeof *rl->entries);
	rl->chains = malloc(buckets * sizeof *rl->chains);
	rl->heap = calloc(cfg->max_clients, sizeof *rl->heap);
	if (!rl->entries || !rl->chains || !rl->heap) {
		ratelimit_free(rl);
		return -ENOMEM;
	}
	memset(rl->chains, 0xff, buckets * sizeof *rl->chains);
	rl->interval_us = (uint64_t)(interval + 0.5);
	if (rl->interval_us == 0)
		rl->interval_us = 1;
	rl->tolerance_us = (cfg->burst - 1) * rl->interval_us;
	rl->k0 = hash_key;
	rl->k1 = mix64(hash_key);
	rl->v4_bits = v4;
	rl->v6_bits = v6;
	rl->cap = cfg->max_clients;
	rl->mask = buckets - 1;
	*out = rl;
	return 0;
}

void ratelimit_free(struct ratelimit *rl)
{
	if (!rl)
		return;
	pthread_mutex_destroy(&rl->lock);
	free(rl->entries);
	free(rl->chains);
	free(rl->heap);
	free(rl);
}

static uint64_t be64(const uint8_t *b)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

/* addr's prefix as the table keys it; false for a family that has none. */
static bool prefix_of(const struct ratelimit *rl, const struct sockaddr *addr, struct entry *key)
{
	uint8_t family, a[16];
	if (!cidr_addr_of(addr, &family, a))
		return false;
	unsigned bits = family == AF_INET ? rl->v4_bits : rl->v6_bits;
	for (unsigned b = bits; b < 128; b++)
		a[b / 8] &= (uint8_t)~(0x80u >> (b % 8));
	key->family = family;
	key->hi = be64(a);
	key->lo = be64(a + 8);
	return true;
}

static uint32_t chain_of(const struct ratelimit *rl, const struct entry *key)
{
	const uint64_t m[3] = { key->family, key->hi, key->lo };
	return (uint32_t)sip_hash3(rl->k0, rl->k1, m) & rl->mask;
}

static void unlink_chain(struct ratelimit *rl, uint32_t e)
{
	uint32_t *p = &rl->chains[rl->entries[e].chain];
	while (*p != e)
		p = &rl->entries[*p].next;
	*p = rl->entries[e].next;
}

/* A new entry for key, full at now and with one token taken: a free one, or the one full soonest
 * in the heap's root. */
static void insert(struct ratelimit *rl, const struct entry *key, uint32_t chain, uint64_t now)
{
	uint32_t e;
	bool fresh = rl->used < rl->cap;
	if (fresh) {
		e = rl->used++;
		rl->heap[e] = e;
		rl->entries[e].heap = e;
	} else {
		e = rl->heap[0];
		rl->evicted++;
		if (rl->entries[e].full_us > now)
			rl->evicted_early++;
		unlink_chain(rl, e);
	}
	struct entry *n = &rl->entries[e];
	n->family = key->family;
	n->hi = key->hi;
	n->lo = key->lo;
	n->full_us = now + rl->interval_us;
	n->chain = chain;
	n->next = rl->chains[chain];
	rl->chains[chain] = e;
	/* A fresh entry sits at the heap's end and rises. One that took the root's place is either
	 * still the smallest (it stays) or larger than the old minimum (it sinks). */
	if (fresh)
		sift_up(rl, n->heap);
	else
		sift_down(rl, 0);
}

static bool allow_locked(struct ratelimit *rl, const struct entry *key, uint64_t now)
{
	uint32_t chain = chain_of(rl, key);
	uint32_t e = rl->chains[chain];
	while (e != NONE) {
		const struct entry *x = &rl->entries[e];
		if (x->family == key->family && x->hi == key->hi && x->lo == key->lo)
			break;
		e = x->next;
	}
	if (e == NONE) {
		insert(rl, key, chain, now);
		rl->allowed++;
		return true;
	}
	struct entry *x = &rl->entries[e];
	if (x->full_us > now + rl->tolerance_us) {
		rl->limited++;
		return false;
	}
	x->full_us = (x->full_us > now ? x->full_us : now) + rl->interval_us;
	sift_down(rl, x->heap);
	rl->allowed++;
	return true;
}

bool ratelimit_allow(struct ratelimit *rl, const struct sockaddr *addr, uint64_t now_ms)
{
	struct entry key;
	bool has_prefix = prefix_of(rl, addr, &key);
	pthread_mutex_lock(&rl->lock);
	bool ok = true;
	if (has_prefix)
		ok = allow_locked(rl, &key, now_ms * 1000);
	else
		rl->allowed++;
	pthread_mutex_unlock(&rl->lock);
	return ok;
}

/* The reader takes the lock too: the table's lock is not part of its value. */
void ratelimit_stats(const struct ratelimit *rl, struct ratelimit_stats *out)
{
	struct ratelimit *m = (struct ratelimit *)rl;
	pthread_mutex_lock(&m->lock);
	out->allowed = rl->allowed;
	out->limited = rl->limited;
	out->evicted = rl->evicted;
	out->evicted_early = rl->evicted_early;
	out->tracked = rl->used;
	pthread_mutex_unlock(&m->lock);
}
