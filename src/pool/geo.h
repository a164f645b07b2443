/* Where a client is: its address mapped to region levels, most specific first, so the broker can
 * send it to time sources near it. Two sources, both optional: the operator's own table
 * ([[region]] name and prefixes; the longest matching prefix names the region) and a MaxMind DB
 * of the country type (GeoLite2-Country, GeoIP2-Country, or a City database, which holds the
 * same fields), which gives the country's ISO code and the continent's code. The global level
 * is implied and never listed. IPv4-mapped IPv6 clients (::ffff:a.b.c.d, a dual-stack socket)
 * are looked up as the IPv4 address they are, in both sources.
 *
 * A geo is immutable once built and reference-counted atomically: workers hold it through a
 * slot while a reload builds the next one. Lookups from many threads on one geo need no lock:
 * libmaxminddb's lookups take a const MMDB_s and only read the mapped file (its manual: "thread
 * safe when compiled and linked with a thread-safe malloc and free"; the last write at lookup
 * time, the cached IPv4 start node, moved into MMDB_open in 1.3.1; we require 1.5). */
#ifndef NTSPOOL_POOL_GEO_H
#define NTSPOOL_POOL_GEO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cidr.h"

#define GEO_LEVELS_MAX 4
#define GEO_NAME_MAX 63

/* One configured region (all borrowed; geo_new copies them). */
struct geo_region {
	const char *name; /* 1..GEO_NAME_MAX of A-Z a-z 0-9 . _ -; kept in lower case */
	const struct cidr *prefixes;
	size_t n_prefixes;
};

/* What a level names: codes of different kinds may be equal (NA is Namibia and North America). */
enum geo_kind {
	GEO_KIND_REGION = 1, /* a [[region]] of the configuration */
	GEO_KIND_COUNTRY,    /* ISO 3166-1 code from the database */
	GEO_KIND_CONTINENT,  /* continent code from the database */
};

/* A client's levels, most specific first, lower case, no duplicates: the configured region, the
 * country ("de"), the continent ("eu"); each present only when known. */
struct geo_levels {
	size_t n;
	char name[GEO_LEVELS_MAX][GEO_NAME_MAX + 1];
	uint8_t kind[GEO_LEVELS_MAX]; /* enum geo_kind of name[i] */
};

struct geo;

/* A new geo (one reference) of n regions (copied) and the database at mmdb_path (NULL: none),
 * opened by mmap. The database must be of the country type: its metadata's database_type names
 * a Country or City database. The type is what MaxMind and DB-IP name their files by, and a
 * file of another shape (ASN, ISP, anonymous IP) would give no levels for every client rather
 * than fail, so it is refused at load, where the operator sees it. A prefix that two regions
 * both list belongs to the first. 0; or -EINVAL (a region name that is not a name; a file that
 * is empty, not a MaxMind DB or not of the country type), open(2)'s error (-ENOENT, -EACCES
 * ...), -EISDIR, -EIO, -ENOMEM; with "PATH: reason" or "region \"NAME\": reason" in err. */
int geo_new(struct geo **out, const struct geo_region *regions, size_t n, const char *mmdb_path,
	    char *err, size_t errlen);
/* g's count plus one; returns g. NULL is allowed (for slots). */
struct geo *geo_ref(struct geo *g);
/* Drops a reference; the last one closes the database. NULL is allowed. */
void geo_unref(struct geo *g);

struct slot;
/* Makes s a slot of geos holding g (its reference taken; may be NULL). */
void geo_slot_init(struct slot *s, struct geo *g);

/* The levels of addr (AF_INET or AF_INET6; anything else, or g NULL, gives none): the name of
 * the region with the longest prefix containing it, then the country and continent codes the
 * database has for it. Never fails: what the table and the database do not know, or a value in
 * the file that is not a plain code (a wrong type, a byte outside A-Z a-z 0-9 . _ -, empty or
 * longer than GEO_NAME_MAX), is left out. Safe from many threads at once on one g. */
void geo_lookup(const struct geo *g, const struct sockaddr *addr, struct geo_levels *out);

/* The loaded database's metadata, for the log and status: its database_type (borrowed from g)
 * and its build time in seconds since the epoch. False, leaving both alone, when g has none. */
bool geo_database_info(const struct geo *g, const char **type, uint64_t *build_epoch);

#endif
