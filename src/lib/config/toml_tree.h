/* Nodes of the TOML tree, shared by the scanner, the grammar and the public accessors in toml.c.
 *
 * Internal to the toml modules: callers outside them see struct toml_value as opaque. Tables keep
 * their entries in document order and add a hash index once they grow, so that a hostile file
 * with many keys in one table costs linear, not quadratic, time. */
#ifndef NTSPOOL_TOML_TREE_H
#define NTSPOOL_TOML_TREE_H

#include "toml.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest nesting of tables and arrays below the root (the root is depth 0). The tree is freed
 * and printed recursively, so this bound is also the bound on that recursion. */
#define TOML_TREE_MAX_DEPTH 64

/* How a table came to exist; the TOML rules on redefinition depend on it. */
enum toml_tree_origin {
	TOML_TREE_IMPLICIT, /* a parent named in a [header] or [[header]], not yet defined itself */
	TOML_TREE_HEADER,   /* defined by [header], or one element of an array of tables */
	TOML_TREE_DOTTED,   /* created by a dotted key; never named by a [header] afterwards */
	TOML_TREE_INLINE,   /* { ... }: complete as written, never extended */
};

struct toml_tree_entry {
	char *key; /* NUL-terminated, but may hold NUL bytes before keylen from \u0000 */
	size_t keylen;
	int line, col;
	struct toml_value *val;
};

struct toml_value {
	enum toml_type type;
	int line, col;
	int depth;
	enum toml_tree_origin origin; /* tables only */
	bool array_of_tables;         /* arrays only: made by [[...]], not a literal [ ... ] */
	union {
		struct {
			struct toml_tree_entry *items;
			size_t count, cap;
			uint32_t *index; /* open addressing, entry number + 1; 0 = free slot */
			size_t index_cap;
		} table;
		struct {
			struct toml_value **items;
			size_t count, cap;
		} array;
		struct {
			char *ptr; /* NUL-terminated */
			size_t len;
		} string;
		int64_t integer;
		double flt;
		bool boolean;
		struct toml_datetime dt;
	} u;
};

/* A zeroed node of type t at line:col (new, free with toml_tree_free); NULL when out of memory. */
struct toml_value *toml_tree_new(enum toml_type t, int line, int col);

/* Frees v and everything below it; NULL is fine. Recursion is bounded by TOML_TREE_MAX_DEPTH. */
void toml_tree_free(struct toml_value *v);

/* Entry with this key in table t (borrowed), or NULL. */
struct toml_tree_entry *toml_tree_find(const struct toml_value *t, const char *key, size_t keylen);

/* Appends key -> val to table t. The key must not be present yet. Takes ownership of key
 * (malloc'd, NUL-terminated) and val, also on failure (-ENOMEM), when both are freed. */
int toml_tree_add(struct toml_value *t, char *key, size_t keylen, int line, int col,
		  struct toml_value *val);

/* Appends v to array a. Takes ownership of v, also on failure (-ENOMEM), when it is freed. */
int toml_tree_push(struct toml_value *a, struct toml_value *v);

#endif
