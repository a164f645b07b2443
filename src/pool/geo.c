#include "geo.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <maxminddb.h>

#include "slot.h"
#include "wire.h"

/* Addresses as numbers (IPv4 in the low 32 bits), so prefixes become ranges. */
__extension__ typedef unsigned __int128 geo_u128;

/* The region table flattened into disjoint ranges: span i covers [start, spans[i + 1].start)
 * (the last one up to the family's highest address) and names region (-1: none). Built once
 * per geo, so a lookup is a binary search however many prefixes are configured. */
struct geo_span {
	geo_u128 start;
	int32_t region;
};

struct geo_index {
	struct geo_span *v;
	size_t n;
};

struct geo {
	atomic_uint refs;
	char (*names)[GEO_NAME_MAX + 1]; /* the regions' names, lower case */
	struct geo_index index[2];	 /* IPv4, IPv6 */
	bool have_db;
	MMDB_s db;
};

/* Text from the configuration or a file, made safe for a message: printable ASCII, at most 64
 * bytes, anything else as '?'. */
static const char *printable(char dst[68], const char *s)
{
	size_t i = 0;
	for (; s[i] && i < 64; i++)
		dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	if (s[i]) {
		memcpy(dst + i, "...", 3);
		i += 3;
	}
	dst[i] = '\0';
	return dst;
}

/* Copies the len bytes at src into dst in lower case when they are a name: 1..GEO_NAME_MAX of
 * A-Z a-z 0-9 . _ -. A database string is not NUL-terminated and may hold anything. */
static bool name_copy(char dst[GEO_NAME_MAX + 1], const void *src, size_t len)
{
	if (len == 0 || len > GEO_NAME_MAX)
		return false;
	struct wire_reader r;
	wire_reader_init(&r, src, len);
	size_t n = 0;
	while (wire_remaining(&r) > 0) {
		uint8_t c = wire_get_u8(&r);
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
			   c == '_' || c == '-'))
			return false;
		dst[n++] = (char)c;
	}
	dst[n] = '\0';
	return true;
}

static void add_level(struct geo_levels *out, const char *name, enum geo_kind kind)
{
	for (size_t i = 0; i < out->n; i++)
		if (out->kind[i] == kind && strcmp(out->name[i], name) == 0)
			return;
	if (out->n < GEO_LEVELS_MAX) {
		out->kind[out->n] = (uint8_t)kind;
		memcpy(out->name[out->n++], name, strlen(name) + 1);
	}
}

static void geo_free(struct geo *g)
{
	if (g->have_db)
		MMDB_close(&g->db);
	free(g->names);
	free(g->index[0].v);
	free(g->index[1].v);
	free(g);
}

/* One configured prefix as a range, with what breaks ties between equal prefixes. */
struct geo_range {
	geo_u128 start, end;
	uint8_t bits;
	size_t order;	/* place in the configuration: the first of equal prefixes wins */
	int32_t region;
};

static geo_u128 number_of(const uint8_t addr[16], size_t len)
{
	geo_u128 v = 0;
	for (size_t i = 0; i < len; i++)
		v = v << 8 | addr[i];
	return v;
}

/* Outer prefixes before the ones they contain: by start, then shorter first, then first
 * configured first. */
static int range_order(const void *a, const void *b)
{
	const struct geo_range *x = a, *y = b;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->bits != y->bits)
		return x->bits < y->bits ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* From `start` on, addresses belong to region (-1: none). Points come in ascending order; a
 * point equal to the last one replaces it (a longer prefix starting where an outer one does). */
static void emit(struct geo_index *ix, geo_u128 start, int32_t region)
{
	if (ix->n > 0 && ix->v[ix->n - 1].start == start) {
		ix->v[ix->n - 1].region = region;
		if (ix->n > 1 && ix->v[ix->n - 2].region == region)
			ix->n--;
		return;
	}
	if (ix->n > 0 && ix->v[ix->n - 1].region == region)
		return;
	ix->v[ix->n++] = (struct geo_span){ .start = start, .region = region };
}

/* Closes the innermost open prefix: past its end the enclosing one (or none) applies again. */
static void close_top(struct geo_index *ix, const struct geo_range *stack, size_t *depth,
		      geo_u128 max)
{
	const struct geo_range *t = &stack[--*depth];
	if (t->end != max)
		emit(ix, t->end + 1, *depth ? stack[*depth - 1].region : -1);
}

/* Flattens r[0..n) (one family; sorted here) into ix. CIDR prefixes either nest or are
 * disjoint, so a stack of the open ones, at most one per prefix length, says which is the
 * longest at every point. */
static int build_index(struct geo_index *ix, struct geo_range *r, size_t n, unsigned width)
{
	geo_u128 max = width == 128 ? ~(geo_u128)0 : ((geo_u128)1 << width) - 1;
	ix->v = malloc((2 * n + 1) * sizeof *ix->v);
	if (!ix->v)
		return -ENOMEM;
	ix->n = 0;
	qsort(r, n, sizeof *r, range_order);
	struct geo_range stack[129];
	size_t depth = 0;
	emit(ix, 0, -1);
	for (size_t i = 0; i < n; i++) {
		while (depth && stack[depth - 1].end < r[i].start)
			close_top(ix, stack, &depth, max);
		const struct geo_range *top = depth ? &stack[depth - 1] : NULL;
		if (top && top->start == r[i].start && top->bits == r[i].bits)
			continue; /* listed again: the first region keeps it */
		stack[depth++] = r[i];
		emit(ix, r[i].start, r[i].region);
	}
	while (depth)
		close_top(ix, stack, &depth, max);
	return 0;
}

static int copy_regions(struct geo *g, const struct geo_region *regions, size_t n, char *err,
			size_t errlen)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (regions[i].n_prefixes > SIZE_MAX / (2 * sizeof(struct geo_range)) - total ||
		    n > INT32_MAX) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		total += regions[i].n_prefixes;
	}
	g->names = calloc(n ? n : 1, sizeof *g->names);
	struct geo_range *r = calloc(total ? total : 1, sizeof *r);
	if (!g->names || !r) {
		free(r);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	size_t n4 = 0, n6 = total, order = 0; /* IPv4 from the front, IPv6 from the back */
	for (size_t i = 0; i < n; i++) {
		const char *name = regions[i].name ? regions[i].name : "";
		if (!name_copy(g->names[i], name, strlen(name))) {
			char shown[68];
			free(r);
			snprintf(err, errlen,
				 "region \"%s\": a region name is 1 to %d of A-Z a-z 0-9 . _ -",
				 printable(shown, name), GEO_NAME_MAX);
			return -EINVAL;
		}
		for (size_t p = 0; p < regions[i].n_prefixes; p++) {
			const struct cidr *c = &regions[i].prefixes[p];
			bool v4 = c->family == AF_INET;
			unsigned width = v4 ? 32 : 128;
			if (c->bits > width)
				continue; /* not a prefix cidr_parse makes */
			geo_u128 start = number_of(c->addr, v4 ? 4 : 16);
			geo_u128 host = c->bits == 0 ? (width == 128 ? ~(geo_u128)0
							  : ((geo_u128)1 << width) - 1)
						     : (((geo_u128)1 << (width - c->bits)) - 1);
			struct geo_range *slot = v4 ? &r[n4++] : &r[--n6];
			*slot = (struct geo_range){ .start = start & ~host, .end = start | host,
						    .bits = c->bits, .order = order++,
						    .region = (int32_t)i };
		}
	}
	int rc = build_index(&g->index[0], r, n4, 32);
	if (rc == 0)
		rc = build_index(&g->index[1], r + n6, total - n6, 128);
	free(r);
	if (rc < 0)
		snprintf(err, errlen, "out of memory");
	return rc;
}

/* The region of the address a (as a number of its family's index), or -1. */
static int32_t index_lookup(const struct geo_index *ix, geo_u128 a)
{
	size_t lo = 0, hi = ix->n; /* v[0].start is 0: the answer is in [lo, hi) */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (ix->v[mid].start <= a)
			lo = mid;
		else
			hi = mid;
	}
	return ix->n ? ix->v[lo].region : -1;
}

/* Country and City databases (MaxMind's GeoLite2/GeoIP2, DB-IP's) keep the codes at
 * country/iso_code and continent/code; the type in the metadata is the cheap, certain way to
 * know the shape before any client is looked up. */
static bool country_type(const char *type)
{
	return type && (strstr(type, "Country") || strstr(type, "City"));
}

/* libmaxminddb reports a directory or an empty file as a failed read (mmap's ENODEV or
 * EINVAL); say what the operator pointed at instead. */
static int io_error(const char *path, int st, int saved, char *err, size_t errlen)
{
	struct stat sb;
	bool known = stat(path, &sb) == 0;
	if (known && S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "%s: is a directory, not a MaxMind DB file", path);
		return -EISDIR;
	}
	if (known && S_ISREG(sb.st_mode) && sb.st_size == 0) {
		snprintf(err, errlen, "%s: the file is empty, not a MaxMind DB file", path);
		return -EINVAL;
	}
	if (saved)
		snprintf(err, errlen, "%s: %s: %s", path, MMDB_strerror(st), strerror(saved));
	else
		snprintf(err, errlen, "%s: %s", path, MMDB_strerror(st));
	return -EIO;
}

static int open_db(struct geo *g, const char *path, char *err, size_t errlen)
{
	errno = 0;
	int st = MMDB_open(path, MMDB_MODE_MMAP, &g->db);
	int saved = errno;
	switch (st) {
	case MMDB_SUCCESS:
		break;
	case MMDB_FILE_OPEN_ERROR:
		if (saved) {
			snprintf(err, errlen, "%s: %s", path, strerror(saved));
			return -saved;
		}
		snprintf(err, errlen, "%s: %s", path, MMDB_strerror(st));
		return -EIO;
	case MMDB_IO_ERROR:
		return io_error(path, st, saved, err, errlen);
	case MMDB_OUT_OF_MEMORY_ERROR:
		snprintf(err, errlen, "%s: %s", path, MMDB_strerror(st));
		return -ENOMEM;
	default:
		snprintf(err, errlen, "%s: %s (is it a MaxMind DB file?)", path, MMDB_strerror(st));
		return -EINVAL;
	}
	g->have_db = true;
	const char *type = g->db.metadata.database_type;
	if (!country_type(type)) {
		char shown[68];
		snprintf(err, errlen,
			 "%s: database type \"%s\" is not a country database (want a Country or "
			 "City database, such as GeoLite2-Country)",
			 path, printable(shown, type ? type : ""));
		return -EINVAL;
	}
	return 0;
}

int geo_new(struct geo **out, const struct geo_region *regions, size_t n, const char *mmdb_path,
	    char *err, size_t errlen)
{
	*out = NULL;
	struct geo *g = calloc(1, sizeof *g);
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&g->refs, 1);
	int rc = copy_regions(g, regions, n, err, errlen);
	if (rc == 0 && mmdb_path)
		rc = open_db(g, mmdb_path, err, errlen);
	if (rc < 0) {
		geo_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

struct geo *geo_ref(struct geo *g)
{
	if (g)
		atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
	return g;
}

void geo_unref(struct geo *g)
{
	if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
		geo_free(g);
}

SLOT_OF(geo, struct geo, geo_ref, geo_unref)

/* The code at key/subkey of the entry, when it is a string that is a name. */
static void add_db_level(MMDB_entry_s *entry, const char *key, const char *subkey,
			 enum geo_kind kind, struct geo_levels *out)
{
	MMDB_entry_data_s d;
	if (MMDB_get_value(entry, &d, key, subkey, (const char *)NULL) != MMDB_SUCCESS ||
	    !d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING)
		return;
	char name[GEO_NAME_MAX + 1];
	if (name_copy(name, d.utf8_string, d.data_size))
		add_level(out, name, kind);
}

/* A mapped IPv4 client arrives here as AF_INET: an IPv6 database finds it through its IPv4
 * subtree (::a.b.c.d) whether or not the file aliases ::ffff:0:0/96 to it. */
static void db_levels(const struct geo *g, uint8_t family, const uint8_t addr[16],
		      struct geo_levels *out)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	const struct sockaddr *sa;
	if (family == AF_INET) {
		memcpy(&sin.sin_addr, addr, 4);
		sa = (const struct sockaddr *)&sin;
	} else {
		memcpy(&sin6.sin6_addr, addr, 16);
		sa = (const struct sockaddr *)&sin6;
	}
	int st = MMDB_SUCCESS;
	MMDB_lookup_result_s res = MMDB_lookup_sockaddr(&g->db, sa, &st);
	/* An error here is a damaged file or an IPv6 client of an IPv4-only database: either
	 * way the database does not place this client. */
	if (st != MMDB_SUCCESS || !res.found_entry)
		return;
	add_db_level(&res.entry, "country", "iso_code", GEO_KIND_COUNTRY, out);
	add_db_level(&res.entry, "continent", "code", GEO_KIND_CONTINENT, out);
}

void geo_lookup(const struct geo *g, const struct sockaddr *addr, struct geo_levels *out)
{
	out->n = 0;
	uint8_t family, a[16];
	if (!g || !cidr_addr_of(addr, &family, a))
		return;
	bool v4 = family == AF_INET;
	int32_t i = index_lookup(&g->index[v4 ? 0 : 1], number_of(a, v4 ? 4 : 16));
	if (i >= 0)
		add_level(out, g->names[i], GEO_KIND_REGION);
	if (g->have_db)
		db_levels(g, family, a, out);
}

bool geo_database_info(const struct geo *g, const char **type, uint64_t *build_epoch)
{
	if (!g || !g->have_db)
		return false;
	*type = g->db.metadata.database_type;
	*build_epoch = g->db.metadata.build_epoch;
	return true;
}
