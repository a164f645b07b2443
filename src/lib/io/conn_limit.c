#include "conn_limit.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024

/* A prefix: the family and its 4 (IPv4) or 8 (IPv6 /64) bytes. */
struct prefix {
	uint8_t family; /* 4 or 6 */
	uint8_t bytes[8];
};

struct entry {
	struct entry *next;
	struct prefix p;
	unsigned held;
};

struct conn_limit {
	unsigned per_prefix;
	pthread_mutex_t lock; /* every worker's listeners share one table */
	uint64_t refused;
	struct entry *buckets[BUCKETS];
};

static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool prefix_of(const struct sockaddr *a, struct prefix *p)
{
	memset(p, 0, sizeof *p);
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)a;
		p->family = 4;
		memcpy(p->bytes, &s->sin_addr, 4);
		return true;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;
		const uint8_t *b = s->sin6_addr.s6_addr;
		if (memcmp(b, v4_mapped, sizeof v4_mapped) == 0) {
			p->family = 4;
			memcpy(p->bytes, b + 12, 4);
		} else {
			p->family = 6;
			memcpy(p->bytes, b, 8);
		}
		return true;
	}
	return false;
}

static size_t bucket_of(const struct prefix *p)
{
	/* FNV-1a: the keys are addresses a peer chooses, but a bucket only ever holds the
	 * prefixes with connections open, which the listener's own limit bounds. */
	uint32_t h = 2166136261u;
	h = (h ^ p->family) * 16777619u;
	for (size_t i = 0; i < sizeof p->bytes; i++)
		h = (h ^ p->bytes[i]) * 16777619u;
	return h % BUCKETS;
}

static struct entry **find(struct conn_limit *cl, const struct prefix *p)
{
	struct entry **e = &cl->buckets[bucket_of(p)];
	while (*e && memcmp(&(*e)->p, p, sizeof *p) != 0)
		e = &(*e)->next;
	return e;
}

int conn_limit_new(struct conn_limit **out, unsigned per_prefix)
{
	struct conn_limit *cl = calloc(1, sizeof *cl);
	if (!cl)
		return -ENOMEM;
	cl->per_prefix = per_prefix;
	pthread_mutex_init(&cl->lock, NULL);
	*out = cl;
	return 0;
}

void conn_limit_free(struct conn_limit *cl)
{
	if (!cl)
		return;
	for (size_t i = 0; i < BUCKETS; i++) {
		struct entry *e = cl->buckets[i];
		while (e) {
			struct entry *next = e->next;
			free(e);
			e = next;
		}
	}
	pthread_mutex_destroy(&cl->lock);
	free(cl);
}

static int take_locked(struct conn_limit *cl, const struct prefix *p)
{
	struct entry **e = find(cl, p);
	if (*e && (*e)->held >= cl->per_prefix) {
		cl->refused++;
		return -EBUSY;
	}
	if (!*e) {
		struct entry *n = calloc(1, sizeof *n);
		if (!n)
			return -ENOMEM;
		n->p = *p;
		*e = n;
	}
	(*e)->held++;
	return 0;
}

int conn_limit_take(struct conn_limit *cl, const struct sockaddr *addr)
{
	struct prefix p;
	if (cl->per_prefix == 0 || !prefix_of(addr, &p))
		return 0;
	pthread_mutex_lock(&cl->lock);
	int rc = take_locked(cl, &p);
	pthread_mutex_unlock(&cl->lock);
	return rc;
}

void conn_limit_release(struct conn_limit *cl, const struct sockaddr *addr)
{
	struct prefix p;
	if (cl->per_prefix == 0 || !prefix_of(addr, &p))
		return;
	pthread_mutex_lock(&cl->lock);
	struct entry **e = find(cl, &p);
	if (*e && --(*e)->held == 0) {
		struct entry *gone = *e;
		*e = gone->next;
		free(gone);
	}
	pthread_mutex_unlock(&cl->lock);
}

/* The readers take the lock too: the table's lock is not part of its value. */
unsigned conn_limit_held(const struct conn_limit *cl, const struct sockaddr *addr)
{
	struct conn_limit *m = (struct conn_limit *)cl;
	struct prefix p;
	unsigned held = 0;
	if (!prefix_of(addr, &p))
		return 0;
	pthread_mutex_lock(&m->lock);
	for (const struct entry *e = cl->buckets[bucket_of(&p)]; e; e = e->next)
		if (memcmp(&e->p, &p, sizeof p) == 0)
			held = e->held;
	pthread_mutex_unlock(&m->lock);
	return held;
}

uint64_t conn_limit_refused(const struct conn_limit *cl)
{
	struct conn_limit *m = (struct conn_limit *)cl;
	pthread_mutex_lock(&m->lock);
	uint64_t n = cl->refused;
	pthread_mutex_unlock(&m->lock);
	return n;
}
