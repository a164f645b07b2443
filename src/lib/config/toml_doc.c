#include "toml_doc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One part of a dotted key with where it was written. */
struct part {
	char *s; /* decoded; ownership passes to the tree once inserted (then NULL) */
	size_t len;
	size_t off;
	int line, col;
};

/* A key can never have more parts than the tree has levels. */
struct key {
	size_t n;
	struct part part[TOML_TREE_MAX_DEPTH];
};

struct doc {
	struct toml_scan *s;
	struct toml_value *root;
	struct toml_value *current; /* the table the last header opened */
};

static void key_free(struct key *k)
{
	size_t i;

	for (i = 0; i < k->n; i++)
		free(k->part[i].s);
	k->n = 0;
}

/* A dotted key, with whitespace allowed around the dots; also skips whitespace after it. */
static int parse_key(struct doc *d, struct key *k)
{
	struct toml_scan *s = d->s;
	int r;

	k->n = 0;
	for (;;) {
		struct toml_scan_str str = {0};
		struct part *p;

		if (k->n == TOML_TREE_MAX_DEPTH)
			return toml_scan_error(s, s->pos, "key has more than %d parts",
					       TOML_TREE_MAX_DEPTH);
		p = &k->part[k->n++];
		p->off = s->pos;
		toml_scan_where(s, p->off, &p->line, &p->col);
		r = toml_scan_key(s, &str);
		p->s = str.p;
		p->len = str.len;
		if (r < 0)
			return r;
		toml_scan_ws(s);
		if (toml_scan_peek(s, 0) != '.')
			return 0;
		s->pos++;
		toml_scan_ws(s);
	}
}

#define QUOTED_MAX 80

/* The key part in printable form for messages; returns buf. */
static const char *quoted(const struct part *p, char *buf)
{
	toml_scan_quote(p->s, p->len, buf, QUOTED_MAX);
	return buf;
}

/* A new table below parent, added under key part p (whose string the tree then owns). */
static int add_table(struct doc *d, struct toml_value *parent, struct part *p,
		     enum toml_tree_origin origin, struct toml_value **out)
{
	struct toml_value *t;

	if (parent->depth >= TOML_TREE_MAX_DEPTH)
		return toml_scan_error(d->s, p->off, "tables nested deeper than %d levels",
				       TOML_TREE_MAX_DEPTH);
	t = toml_tree_new(TOML_TABLE, p->line, p->col);
	if (!t)
		return toml_scan_nomem(d->s);
	t->depth = parent->depth + 1;
	t->origin = origin;
	if (toml_tree_add(parent, p->s, p->len, p->line, p->col, t) < 0) {
		p->s = NULL;
		return toml_scan_nomem(d->s);
	}
	p->s = NULL;
	*out = t;
	return 0;
}

static int parse_value(struct doc *d, int depth, struct toml_value **out);

static int parse_array(struct doc *d, int depth, struct toml_value **out)
{
	struct toml_scan *s = d->s;
	struct toml_value *a, *v;
	char buf[32];
	int line, col, r;

	toml_scan_where(s, s->pos, &line, &col);
	a = toml_tree_new(TOML_ARRAY, line, col);
	if (!a)
		return toml_scan_nomem(s);
	a->depth = depth;
	s->pos++;
	for (;;) {
		r = toml_scan_blank(s);
		if (r < 0)
			goto fail;
		if (toml_scan_peek(s, 0) == ']')
			break;
		r = parse_value(d, depth + 1, &v);
		if (r < 0)
			goto fail;
		if (toml_tree_push(a, v) < 0) {
			r = toml_scan_nomem(s);
			goto fail;
		}
		r = toml_scan_blank(s);
		if (r < 0)
			goto fail;
		if (toml_scan_peek(s, 0) == ']')
			break;
		if (toml_scan_peek(s, 0) != ',') {
			r = toml_scan_error(s, s->pos, "expected ',' or ']' in array, found %s",
					    toml_scan_found(s, buf, sizeof(buf)));
			goto fail;
		}
		s->pos++;
	}
	s->pos++;
	*out = a;
	return 0;
fail:
	toml_tree_free(a);
	return r;
}

/* Inserts v under the dotted key k relative to table base, creating the tables on the way.
 * Takes ownership of v. */
static int insert(struct doc *d, struct toml_value *base, struct key *k, struct toml_value *v)
{
	char q[QUOTED_MAX];
	struct toml_value *t = base, *x;
	struct toml_tree_entry *e;
	struct part *p;
	size_t i;
	int r;

	for (i = 0; i + 1 < k->n; i++) {
		p = &k->part[i];
		e = toml_tree_find(t, p->s, p->len);
		if (!e) {
			r = add_table(d, t, p, TOML_TREE_DOTTED, &t);
			if (r < 0)
				goto fail;
			continue;
		}
		x = e->val;
		if (x->type != TOML_TABLE)
			r = toml_scan_error(d->s, p->off, "key '%s' is not a table", quoted(p, q));
		else if (x->origin == TOML_TREE_INLINE)
			r = toml_scan_error(d->s, p->off,
					    "inline table '%s' cannot be extended", quoted(p, q));
		else if (x->origin == TOML_TREE_HEADER)
			r = toml_scan_error(d->s, p->off,
					    "dotted keys cannot extend [header] table '%s'",
					    quoted(p, q));
		else
			r = 0;
		if (r < 0)
			goto fail;
		/* A parent named only in headers so far is now defined, by dotted keys. Dotted
		 * tables need no record of their section: no later section can reach them with
		 * a dotted key, since a [header] naming them, or a table above them, is refused. */
		x->origin = TOML_TREE_DOTTED;
		t = x;
	}
	p = &k->part[k->n - 1];
	if (toml_tree_find(t, p->s, p->len)) {
		r = toml_scan_error(d->s, p->off, "duplicate key '%s'", quoted(p, q));
		goto fail;
	}
	r = toml_tree_add(t, p->s, p->len, p->line, p->col, v);
	p->s = NULL;
	return r < 0 ? toml_scan_nomem(d->s) : 0;
fail:
	toml_tree_free(v);
	return r;
}

/* key = value, inserted relative to base. */
static int parse_keyval(struct doc *d, struct toml_value *base)
{
	struct toml_scan *s = d->s;
	struct toml_value *v;
	struct key k;
	char buf[32];
	int r;

	r = parse_key(d, &k);
	if (r < 0)
		goto out;
	if (toml_scan_peek(s, 0) != '=') {
		r = toml_scan_error(s, s->pos, "expected '=' after a key, found %s",
				    toml_scan_found(s, buf, sizeof(buf)));
		goto out;
	}
	s->pos++;
	toml_scan_ws(s);
	r = parse_value(d, base->depth + (int)k.n, &v);
	if (r < 0)
		goto out;
	r = insert(d, base, &k, v);
out:
	key_free(&k);
	return r;
}

static int parse_inline(struct doc *d, int depth, struct toml_value **out)
{
	struct toml_scan *s = d->s;
	struct toml_value *t;
	char buf[32];
	int line, col, r;

	toml_scan_where(s, s->pos, &line, &col);
	t = toml_tree_new(TOML_TABLE, line, col);
	if (!t)
		return toml_scan_nomem(s);
	t->depth = depth;
	t->origin = TOML_TREE_INLINE;
	s->pos++;
	toml_scan_ws(s);
	if (toml_scan_peek(s, 0) != '}') {
		for (;;) {
			r = parse_keyval(d, t);
			if (r < 0)
				goto fail;
			toml_scan_ws(s);
			if (toml_scan_peek(s, 0) == '}')
				break;
			if (toml_scan_peek(s, 0) != ',') {
				r = toml_scan_error(s, s->pos,
						    "expected ',' or '}' in inline table, found %s",
						    toml_scan_found(s, buf, sizeof(buf)));
				goto fail;
			}
			s->pos++;
			toml_scan_ws(s);
			if (toml_scan_peek(s, 0) == '}') {
				r = toml_scan_error(s, s->pos,
						    "trailing comma in inline table");
				goto fail;
			}
		}
	}
	s->pos++;
	*out = t;
	return 0;
fail:
	toml_tree_free(t);
	return r;
}

/* depth is the level the value will sit at; the bound keeps the recursion through arrays and
 * inline tables finite. */
static int parse_value(struct doc *d, int depth, struct toml_value **out)
{
	struct toml_scan *s = d->s;
	int c = toml_scan_peek(s, 0), r;

	if (depth > TOML_TREE_MAX_DEPTH)
		return toml_scan_error(s, s->pos, "values nested deeper than %d levels",
				       TOML_TREE_MAX_DEPTH);
	if (c == '[')
		return parse_array(d, depth, out);
	if (c == '{')
		return parse_inline(d, depth, out);
	r = toml_scan_scalar(s, out);
	if (r == 0)
		(*out)->depth = depth;
	return r;
}

/* The last key part of [header]: defines the table, or a parent of earlier headers. */
static int define_table(struct doc *d, struct toml_value *t, struct part *p, int line, int col,
			struct toml_value **out)
{
	char q[QUOTED_MAX];
	struct toml_tree_entry *e = toml_tree_find(t, p->s, p->len);
	struct toml_value *x;
	int r;

	if (!e) {
		r = add_table(d, t, p, TOML_TREE_HEADER, out);
		if (r == 0) {
			(*out)->line = line;
			(*out)->col = col;
		}
		return r;
	}
	x = e->val;
	if (x->type == TOML_TABLE && x->origin == TOML_TREE_IMPLICIT) {
		x->origin = TOML_TREE_HEADER;
		x->line = line;
		x->col = col;
		*out = x;
		return 0;
	}
	if (x->type == TOML_TABLE && x->origin == TOML_TREE_HEADER)
		return toml_scan_error(d->s, p->off, "table '%s' defined twice", quoted(p, q));
	if (x->type == TOML_TABLE && x->origin == TOML_TREE_DOTTED)
		return toml_scan_error(d->s, p->off,
				       "table '%s' was already defined by dotted keys",
				       quoted(p, q));
	if (x->type == TOML_TABLE)
		return toml_scan_error(d->s, p->off,
				       "inline table '%s' cannot be extended", quoted(p, q));
	if (x->type == TOML_ARRAY && x->array_of_tables)
		return toml_scan_error(d->s, p->off,
				       "'%s' is an array of tables; use [[...]] to add to it",
				       quoted(p, q));
	return toml_scan_error(d->s, p->off, "key '%s' already has a value", quoted(p, q));
}

/* The last key part of [[header]]: appends a table to the array, creating it if needed. */
static int append_table(struct doc *d, struct toml_value *t, struct part *p, int line, int col,
			struct toml_value **out)
{
	char q[QUOTED_MAX];
	struct toml_tree_entry *e = toml_tree_find(t, p->s, p->len);
	struct toml_value *a, *elem;

	if (!e) {
		if (t->depth >= TOML_TREE_MAX_DEPTH)
			return toml_scan_error(d->s, p->off, "tables nested deeper than %d levels",
					       TOML_TREE_MAX_DEPTH);
		a = toml_tree_new(TOML_ARRAY, p->line, p->col);
		if (!a)
			return toml_scan_nomem(d->s);
		a->depth = t->depth + 1;
		a->array_of_tables = true;
		if (toml_tree_add(t, p->s, p->len, p->line, p->col, a) < 0) {
			p->s = NULL;
			return toml_scan_nomem(d->s);
		}
		p->s = NULL;
	} else {
		a = e->val;
		if (a->type == TOML_ARRAY && !a->array_of_tables)
			return toml_scan_error(d->s, p->off,
					       "'%s' is a static array; [[...]] cannot add to it",
					       quoted(p, q));
		if (a->type == TOML_TABLE)
			return toml_scan_error(d->s, p->off,
					       "'%s' is a table, not an array of tables",
					       quoted(p, q));
		if (a->type != TOML_ARRAY)
			return toml_scan_error(d->s, p->off,
					       "key '%s' already has a value", quoted(p, q));
	}
	if (a->depth >= TOML_TREE_MAX_DEPTH)
		return toml_scan_error(d->s, p->off, "tables nested deeper than %d levels",
				       TOML_TREE_MAX_DEPTH);
	elem = toml_tree_new(TOML_TABLE, line, col);
	if (!elem)
		return toml_scan_nomem(d->s);
	elem->depth = a->depth + 1;
	elem->origin = TOML_TREE_HEADER;
	if (toml_tree_push(a, elem) < 0)
		return toml_scan_nomem(d->s);
	*out = elem;
	return 0;
}

/* [table] or [[array.of.tables]]; leaves the cursor after the closing bracket(s). */
static int parse_header(struct doc *d)
{
	char q[QUOTED_MAX];
	struct toml_scan *s = d->s;
	bool aot = toml_scan_peek(s, 1) == '[';
	struct toml_value *t = d->root, *x;
	struct toml_tree_entry *e;
	struct part *p;
	struct key k;
	char buf[32];
	int line, col, r;
	size_t i;

	toml_scan_where(s, s->pos, &line, &col);
	s->pos += aot ? 2 : 1;
	toml_scan_ws(s);
	r = parse_key(d, &k);
	if (r < 0)
		goto out;
	if (toml_scan_peek(s, 0) != ']' || (aot && toml_scan_peek(s, 1) != ']')) {
		r = toml_scan_error(s, s->pos, "expected '%s' after the table name, found %s",
				    aot ? "]]" : "]", toml_scan_found(s, buf, sizeof(buf)));
		goto out;
	}
	s->pos += aot ? 2 : 1;
	for (i = 0; i + 1 < k.n; i++) {
		p = &k.part[i];
		e = toml_tree_find(t, p->s, p->len);
		if (!e) {
			r = add_table(d, t, p, TOML_TREE_IMPLICIT, &t);
			if (r < 0)
				goto out;
			continue;
		}
		x = e->val;
		/* A header below an array of tables goes into its latest element. */
		if (x->type == TOML_ARRAY && x->array_of_tables)
			x = x->u.array.items[x->u.array.count - 1];
		if (x->type == TOML_ARRAY)
			r = toml_scan_error(d->s, p->off,
					    "'%s' is a static array; a [header] cannot add to it",
					    quoted(p, q));
		else if (x->type != TOML_TABLE)
			r = toml_scan_error(d->s, p->off, "key '%s' is not a table", quoted(p, q));
		else if (x->origin == TOML_TREE_INLINE)
			r = toml_scan_error(d->s, p->off,
					    "inline table '%s' cannot be extended", quoted(p, q));
		if (r < 0)
			goto out;
		t = x;
	}
	p = &k.part[k.n - 1];
	r = aot ? append_table(d, t, p, line, col, &t) : define_table(d, t, p, line, col, &t);
	if (r < 0)
		goto out;
	d->current = t;
out:
	key_free(&k);
	return r;
}

int toml_doc_parse(struct toml_scan *s, struct toml_value **root)
{
	struct doc d = {.s = s};
	int r;

	d.root = toml_tree_new(TOML_TABLE, 1, 1);
	if (!d.root)
		return toml_scan_nomem(s);
	d.root->origin = TOML_TREE_HEADER;
	d.current = d.root;
	r = toml_scan_utf8(s);
	while (r == 0) {
		r = toml_scan_blank(s);
		if (r < 0 || toml_scan_peek(s, 0) < 0)
			break;
		if (toml_scan_peek(s, 0) == '[')
			r = parse_header(&d);
		else
			r = parse_keyval(&d, d.current);
		if (r == 0)
			r = toml_scan_eol(s);
	}
	if (r < 0) {
		toml_tree_free(d.root);
		return r;
	}
	*root = d.root;
	return 0;
}
