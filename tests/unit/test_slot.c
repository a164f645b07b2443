#include "slot.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* A counted object: value, references, and how many objects are alive in all. */
struct obj {
	atomic_int refs;
	int value;
};

static atomic_int alive;

static struct obj *obj_new(int value)
{
	struct obj *o = malloc(sizeof *o);
	cr_assert_not_null(o);
	atomic_init(&o->refs, 1);
	o->value = value;
	atomic_fetch_add(&alive, 1);
	return o;
}

static void *obj_ref(void *p)
{
	struct obj *o = p;
	if (o)
		atomic_fetch_add(&o->refs, 1);
	return o;
}

static void obj_unref(void *p)
{
	struct obj *o = p;
	if (o && atomic_fetch_sub(&o->refs, 1) == 1) {
		o->value = -1;
		free(o);
		atomic_fetch_sub(&alive, 1);
	}
}

Test(slot, view_follows_publications_and_keeps_its_reference)
{
	atomic_store(&alive, 0);
	struct slot s;
	slot_init(&s, obj_new(1), obj_ref, obj_unref);
	struct slot_view v;
	slot_view_init(&v, &s);
	struct obj *a = slot_view_get(&v);
	cr_assert_eq(a->value, 1);
	cr_assert_eq(slot_view_get(&v), a, "no publication: the same object");

	slot_publish(&s, obj_new(2));
	cr_assert_eq(atomic_load(&alive), 2, "the view still holds the old object");
	cr_assert_eq(a->value, 1);
	struct obj *b = slot_view_get(&v);
	cr_assert_eq(b->value, 2);
	cr_assert_eq(atomic_load(&alive), 1, "the refresh dropped the old object");

	struct obj *own = slot_acquire(&s);
	cr_assert_eq(own, b);
	slot_view_release(&v);
	slot_destroy(&s);
	cr_assert_eq(atomic_load(&alive), 1, "the acquired reference keeps it");
	obj_unref(own);
	cr_assert_eq(atomic_load(&alive), 0);
}

Test(slot, null_objects)
{
	struct slot s;
	slot_init(&s, NULL, obj_ref, obj_unref);
	struct slot_view v;
	slot_view_init(&v, &s);
	cr_assert_null(slot_view_get(&v));
	slot_publish(&s, obj_new(3));
	cr_assert_eq(((struct obj *)slot_view_get(&v))->value, 3);
	slot_publish(&s, NULL);
	cr_assert_null(slot_view_get(&v));
	slot_view_release(&v);
	slot_destroy(&s);
	cr_assert_eq(atomic_load(&alive), 0);
}

/* Readers on other threads see only live objects with increasing values while the owner
 * publishes; at the end every object was freed exactly once. */
struct reader {
	struct slot *s;
	atomic_bool *stop;
	atomic_long reads;
	bool ok;
};

static void *read_loop(void *arg)
{
	struct reader *r = arg;
	struct slot_view v;
	slot_view_init(&v, r->s);
	int last = 0;
	r->ok = true;
	while (!atomic_load(r->stop)) {
		struct obj *o = slot_view_get(&v);
		if (!o || o->value < last)
			r->ok = false;
		else
			last = o->value;
		atomic_fetch_add(&r->reads, 1);
	}
	slot_view_release(&v);
	return NULL;
}

Test(slot, readers_on_threads_during_publications)
{
	atomic_store(&alive, 0);
	struct slot s;
	slot_init(&s, obj_new(1), obj_ref, obj_unref);
	atomic_bool stop = false;
	struct reader r[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		r[i] = (struct reader){ .s = &s, .stop = &stop };
		cr_assert_eq(pthread_create(&t[i], NULL, read_loop, &r[i]), 0);
	}
	/* At least 20000 publications, and on until every reader has read a thousand times while
	 * they happen (a reader thread may start late). */
	int v = 2;
	for (;; v++) {
		slot_publish(&s, obj_new(v));
		bool all = v >= 20000;
		for (int i = 0; i < 3 && all; i++)
			all = atomic_load(&r[i].reads) >= 1000;
		if (all)
			break;
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		cr_assert(r[i].ok, "reader %d saw a dead or older object", i);
		cr_assert_geq(atomic_load(&r[i].reads), 1000);
	}
	cr_assert_eq(atomic_load(&alive), 1, "only the published object is left");
	slot_destroy(&s);
	cr_assert_eq(atomic_load(&alive), 0);
}
