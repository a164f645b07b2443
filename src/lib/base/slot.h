/* A published object that many threads read and one owner replaces: the keyset, the accepted
 * pool tokens, the TLS credentials. The owner publishes a new object (slot_publish); each reader
 * (one per worker and use) keeps its own reference in a slot_view and refreshes it only when the
 * slot's generation moved, so the per-request cost is one atomic load of a line that is written
 * once per reload or rotation; the lock is taken only to swap. Objects are reference-counted by
 * the functions the slot is made with (atomic counts: readers on other threads release theirs). */
#ifndef NTSPOOL_BASE_SLOT_H
#define NTSPOOL_BASE_SLOT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct slot {
	pthread_mutex_t lock;	  /* held only to swap or to take a reference */
	void *obj;		  /* one reference, or NULL */
	atomic_uint_fast64_t gen; /* bumped by every publish, after the swap */
	void *(*ref)(void *obj);
	void (*unref)(void *obj);
};

/* One reader's cached reference: valid until its next slot_view_get or slot_view_release. Used
 * by one thread at a time. */
struct slot_view {
	struct slot *slot;
	uint_fast64_t gen;
	void *obj; /* one reference, or NULL */
};

/* Takes obj's reference (may be NULL). ref and unref must accept NULL. */
void slot_init(struct slot *s, void *obj, void *(*ref)(void *), void (*unref)(void *));
/* Drops the slot's reference; every view must have been released. */
void slot_destroy(struct slot *s);

/* Replaces the object (the slot takes obj's reference; the old one is dropped here, and by each
 * view at its next refresh). */
void slot_publish(struct slot *s, void *obj);

/* Defines NAME_slot_init(struct slot *s, TYPE *obj), which makes s a slot of TYPE objects holding
 * obj (its reference taken; may be NULL), for a type whose REF and UNREF functions accept NULL.
 * One line in the type's own module instead of a pair of adapters each. */
#define SLOT_OF(name, type, ref_fn, unref_fn)                                                 \
	static void *name##_slot_ref(void *o)                                                 \
	{                                                                                     \
		return ref_fn(o);                                                             \
	}                                                                                     \
	static void name##_slot_unref(void *o)                                                \
	{                                                                                     \
		unref_fn(o);                                                                  \
	}                                                                                     \
	void name##_slot_init(struct slot *s, type *obj)                                      \
	{                                                                                     \
		slot_init(s, obj, name##_slot_ref, name##_slot_unref);                        \
	}

/* A new reference to the object published now (the owner's reads: status, reload). */
void *slot_acquire(struct slot *s);

void slot_view_init(struct slot_view *v, struct slot *s);
/* The object published now, borrowed until the next call on v; refreshed only when the slot's
 * generation moved since v last looked. */
void *slot_view_get(struct slot_view *v);
void slot_view_release(struct slot_view *v);

#endif
