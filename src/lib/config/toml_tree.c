#include "toml_tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

/* Below this many entries a linear scan is as fast as hashing and needs no extra memory. */
#define INDEX_MIN 16

struct toml_value *toml_tree_new(enum toml_type t, int line, int col)
{
	struct toml_value *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->type = t;
	v->line = line;
	v->col = col;
	return v;
}

void toml_tree_free(struct toml_value *v)
{
	size_t i;

	if (!v)
		return;
	switch (v->type) {
	case TOML_TABLE:
		for (i = 0; i < v->u.table.count; i++) {
			free(v->u.table.items[i].key);
			toml_tree_free(v->u.table.items[i].val);
		}
		free(v->u.table.items);
		free(v->u.table.index);
		break;
	case TOML_ARRAY:
		for (i = 0; i < v->u.array.count; i++)
			toml_tree_free(v->u.array.items[i]);
		free(v->u.array.items);
		break;
	case TOML_STRING:
		/* Configurations carry secrets (pool tokens) as strings. */
		if (v->u.string.ptr)
			gnutls_memset(v->u.string.ptr, 0, v->u.string.len);
		free(v->u.string.ptr);
		break;
	default:
		break;
	}
	free(v);
}

/* FNV-1a: keys are short and the index only needs to spread them, not resist collisions chosen
 * by an attacker; the 1 MiB file bound caps the worst case anyway. */
static uint32_t hash(const char *key, size_t len)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (uint8_t)key[i];
		h *= 16777619u;
	}
	return h;
}

static bool same(const struct toml_tree_entry *e, const char *key, size_t keylen)
{
	return e->keylen == keylen && memcmp(e->key, key, keylen) == 0;
}

static void index_put(uint32_t *index, size_t cap, const struct toml_tree_entry *e, uint32_t n)
{
	size_t slot = hash(e->key, e->keylen) & (cap - 1);

	while (index[slot])
		slot = (slot + 1) & (cap - 1);
	index[slot] = n + 1;
}

/* Keeps the index at most half full so that probe runs stay short. */
static int index_grow(struct toml_value *t)
{
	size_t cap = t->u.table.index_cap ? t->u.table.index_cap : 2 * INDEX_MIN;
	uint32_t *index;
	size_t i;

	while (cap < 2 * (t->u.table.count + 1))
		cap *= 2;
	if (cap == t->u.table.index_cap)
		return 0;
	index = calloc(cap, sizeof(*index));
	if (!index)
		return -ENOMEM;
	for (i = 0; i < t->u.table.count; i++)
		index_put(index, cap, &t->u.table.items[i], (uint32_t)i);
	free(t->u.table.index);
	t->u.table.index = index;
	t->u.table.index_cap = cap;
	return 0;
}

struct toml_tree_entry *toml_tree_find(const struct toml_value *t, const char *key, size_t keylen)
{
	size_t i, slot, cap = t->u.table.index_cap;

	if (!t->u.table.index) {
		for (i = 0; i < t->u.table.count; i++)
			if (same(&t->u.table.items[i], key, keylen))
				return &t->u.table.items[i];
		return NULL;
	}
	slot = hash(key, keylen) & (cap - 1);
	while (t->u.table.index[slot]) {
		struct toml_tree_entry *e = &t->u.table.items[t->u.table.index[slot] - 1];

		if (same(e, key, keylen))
			return e;
		slot = (slot + 1) & (cap - 1);
	}
	return NULL;
}

int toml_tree_add(struct toml_value *t, char *key, size_t keylen, int line, int col,
		  struct toml_value *val)
{
	struct toml_tree_entry *e;

	if (t->u.table.count == t->u.table.cap) {
		size_t cap = t->u.table.cap ? 2 * t->u.table.cap : 4;
		struct toml_tree_entry *items = reallocarray(t->u.table.items, cap, sizeof(*items));

		if (!items)
			goto fail;
		t->u.table.items = items;
		t->u.table.cap = cap;
	}
	if (t->u.table.count + 1 >= INDEX_MIN && index_grow(t) < 0)
		goto fail;
	e = &t->u.table.items[t->u.table.count];
	e->key = key;
	e->keylen = keylen;
	e->line = line;
	e->col = col;
	e->val = val;
	if (t->u.table.index)
		index_put(t->u.table.index, t->u.table.index_cap, e, (uint32_t)t->u.table.count);
	t->u.table.count++;
	return 0;
fail:
	free(key);
	toml_tree_free(val);
	return -ENOMEM;
}

int toml_tree_push(struct toml_value *a, struct toml_value *v)
{
	if (a->u.array.count == a->u.array.cap) {
		size_t cap = a->u.array.cap ? 2 * a->u.array.cap : 4;
		struct toml_value **items = reallocarray(a->u.array.items, cap, sizeof(*items));

		if (!items) {
			toml_tree_free(v);
			return -ENOMEM;
		}
		a->u.array.items = items;
		a->u.array.cap = cap;
	}
	a->u.array.items[a->u.array.count++] = v;
	return 0;
}
