#include "slot.h"

#include <stddef.h>

void slot_init(struct slot *s, void *obj, void *(*ref)(void *), void (*unref)(void *))
{
	pthread_mutex_init(&s->lock, NULL);
	s->obj = obj;
	atomic_init(&s->gen, 1);
	s->ref = ref;
	s->unref = unref;
}

void slot_destroy(struct slot *s)
{
	s->unref(s->obj);
	s->obj = NULL;
	pthread_mutex_destroy(&s->lock);
}

void slot_publish(struct slot *s, void *obj)
{
	pthread_mutex_lock(&s->lock);
	void *old = s->obj;
	s->obj = obj;
	/* Release: a reader that sees the new generation takes the lock and finds the new object. */
	atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
	pthread_mutex_unlock(&s->lock);
	s->unref(old);
}

void *slot_acquire(struct slot *s)
{
	pthread_mutex_lock(&s->lock);
	void *obj = s->ref(s->obj);
	pthread_mutex_unlock(&s->lock);
	return obj;
}

void slot_view_init(struct slot_view *v, struct slot *s)
{
	v->slot = s;
	v->gen = 0; /* never a slot's generation: the first get refreshes */
	v->obj = NULL;
}

void *slot_view_get(struct slot_view *v)
{
	struct slot *s = v->slot;
	if (atomic_load_explicit(&s->gen, memory_order_acquire) == v->gen)
		return v->obj;
	void *old = v->obj;
	pthread_mutex_lock(&s->lock);
	v->obj = s->ref(s->obj);
	v->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	s->unref(old);
	return v->obj;
}

void slot_view_release(struct slot_view *v)
{
	if (v->slot)
		v->slot->unref(v->obj);
	v->obj = NULL;
	v->gen = 0;
}
