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

struct geo {
	atomic_uint refs;
	char (*names)[GEO_NAME_MAX + 1]; /* the regions' names, lower case */
	struct cidr *prefixes; /* every region's prefixes, in configuration order */
	size_t *region_of;     /* prefixes[i] belongs to names[region_of[i]] */
	size_t n_prefixes;
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

static void add_level(struct geo_levels *out, const char *name)
{
	for (size_t i = 0; i < out->n; i++)
		if (strcmp(out->name[i], name) == 0)
			return;
	if (out->n < GEO_LEVELS_MAX)
		memcpy(out->name[out->n++], name, strlen(name) + 1);
}

static void geo_free(struct geo *g)
{
	if (g->have_db)
		MMDB_close(&g->db);
	free(g->names);
	free(g->prefixes);
	free(g->region_of);
	free(g);
}

static int copy_regions(struct geo *g, const struct geo_region *regions, size_t n, char *err,
			size_t errlen)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (regions[i].n_prefixes > SIZE_MAX / sizeof(struct cidr) - total) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		total += regions[i].n_prefixes;
	}
	g->names = calloc(n ? n : 1, sizeof *g->names);
	g->prefixes = calloc(total ? total : 1, sizeof *g->prefixes);
	g->region_of = calloc(total ? total : 1, sizeof *g->region_of);
	if (!g->names || !g->prefixes || !g->region_of) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = regions[i].name ? regions[i].name : "";
		if (!name_copy(g->names[i], name, strlen(name))) {
			char shown[68];
			snprintf(err, errlen,
				 "region \"%s\": a region name is 1 to %d of A-Z a-z 0-9 . _ -",
				 printable(shown, name), GEO_NAME_MAX);
			return -EINVAL;
		}
		for (size_t p = 0; p < regions[i].n_prefixes; p++) {
			g->prefixes[g->n_prefixes] = regions[i].prefixes[p];
			g->region_of[g->n_prefixes++] = i;
		}
	}
	return 0;
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
			 struct geo_levels *out)
{
	MMDB_entry_data_s d;
	if (MMDB_get_value(entry, &d, key, subkey, (const char *)NULL) != MMDB_SUCCESS ||
	    !d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING)
		return;
	char name[GEO_NAME_MAX + 1];
	if (name_copy(name, d.utf8_string, d.data_size))
		add_level(out, name);
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
	add_db_level(&res.entry, "country", "iso_code", out);
	add_db_level(&res.entry, "continent", "code", out);
}

void geo_lookup(const struct geo *g, const struct sockaddr *addr, struct geo_levels *out)
{
	out->n = 0;
	uint8_t family, a[16];
	if (!g || !cidr_addr_of(addr, &family, a))
		return;
	int i = cidr_match(g->prefixes, g->n_prefixes, addr);
	if (i >= 0)
		add_level(out, g->names[g->region_of[i]]);
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
