#include "geo.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "cidr.h"
#include "slot.h"
#include "testutil.h"

/* The build time make-geoip-db.pl writes. */
#define TEST_DB_EPOCH 1767225600u

/* Writes a test database into dir with make-geoip-db.pl OPTS; returns its path (caller frees). */
static char *make_db(const char *dir, const char *file, const char *opts)
{
	char *script = tu_srcpath("tests/tools/make-geoip-db.pl");
	char *out = tu_path(dir, file);
	char *cmd = NULL;
	cr_assert(asprintf(&cmd, "/usr/bin/perl '%s' %s '%s'", script, opts, out) >= 0);
	cr_assert_eq(system(cmd), 0, "%s failed", cmd);
	free(cmd);
	free(script);
	return out;
}

static struct sockaddr_storage sa_of(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
	}
	return ss; /* AF_UNSPEC when text is not an address */
}

/* The levels of addr, space-separated ("" for none); false when the answer is malformed. No
 * assertion: the concurrency test calls it from its own threads. */
static bool levels_text(const struct geo *g, const char *addr, char *buf, size_t len)
{
	struct sockaddr_storage ss = sa_of(addr);
	struct geo_levels lv;
	memset(&lv, 0x5a, sizeof lv);
	buf[0] = '\0';
	if (ss.ss_family == AF_UNSPEC)
		return false;
	geo_lookup(g, (const struct sockaddr *)&ss, &lv);
	if (lv.n > GEO_LEVELS_MAX)
		return false;
	for (size_t i = 0; i < lv.n; i++) {
		if (strnlen(lv.name[i], sizeof lv.name[i]) == sizeof lv.name[i])
			return false;
		size_t used = strlen(buf);
		snprintf(buf + used, len - used, "%s%s", i ? " " : "", lv.name[i]);
	}
	return true;
}

static void check(const struct geo *g, const char *addr, const char *want)
{
	char got[GEO_LEVELS_MAX * (GEO_NAME_MAX + 1) + 1];
	cr_assert(levels_text(g, addr, got, sizeof got), "%s: malformed levels", addr);
	cr_assert_str_eq(got, want, "%s: got \"%s\", want \"%s\"", addr, got, want);
}

static struct cidr prefix(const char *text)
{
	struct cidr c;
	char why[128];
	cr_assert_eq(cidr_parse(text, &c, why, sizeof why), 0, "%s: %s", text, why);
	return c;
}

static struct geo *new_geo(const struct geo_region *r, size_t n, const char *path)
{
	struct geo *g = NULL;
	char err[512] = "";
	int rc = geo_new(&g, r, n, path, err, sizeof err);
	cr_assert_eq(rc, 0, "geo_new: %d %s", rc, err);
	cr_assert_not_null(g);
	return g;
}

/* The database of the other tests: a Country database with the IPv4 alias. */
static char *std_db(char **dir)
{
	*dir = tu_tempdir();
	return make_db(*dir, "country.mmdb", "");
}

Test(geo, table_longest_prefix_wins_both_families_and_mapped_clients)
{
	struct cidr lan[] = { prefix("10.0.0.0/8"), prefix("2001:db8:aa::/48") };
	struct cidr lab[] = { prefix("10.1.0.0/16") };
	struct cidr desk[] = { prefix("10.1.2.3"), prefix("2001:db8:aa:1::/64") };
	struct geo_region r[] = {
		{ "LAN", lan, 2 },
		{ "lab", lab, 1 },
		{ "Desk_1.b-2", desk, 2 },
	};
	struct geo *g = new_geo(r, 3, NULL);
	check(g, "10.200.0.1", "lan");
	check(g, "10.1.200.1", "lab");
	check(g, "10.1.2.3", "desk_1.b-2");
	check(g, "10.1.2.4", "lab");
	check(g, "2001:db8:aa:2::1", "lan");
	check(g, "2001:db8:aa:1::99", "desk_1.b-2");
	check(g, "2001:db8:ab::1", "");
	check(g, "192.168.1.1", "");
	/* A dual-stack socket's view of an IPv4 client is matched by the IPv4 prefixes. */
	check(g, "::ffff:10.1.2.3", "desk_1.b-2");
	check(g, "::ffff:10.1.9.9", "lab");
	check(g, "::ffff:10.9.9.9", "lan");
	/* The IPv4-compatible form is a different IPv6 address, not a mapped one. */
	check(g, "::10.1.2.3", "");
	geo_unref(g);
}

Test(geo, a_prefix_listed_twice_belongs_to_the_first_region)
{
	struct cidr a[] = { prefix("192.168.0.0/16") };
	struct cidr b[] = { prefix("192.168.0.0/16"), prefix("192.168.7.0/24") };
	struct geo_region r[] = { { "first", a, 1 }, { "second", b, 2 } };
	struct geo *g = new_geo(r, 2, NULL);
	check(g, "192.168.1.1", "first");
	check(g, "192.168.7.1", "second");
	geo_unref(g);
}

/* An address of the family near the prefix c: inside it, or just past either end. */
static void near(const struct cidr *c, struct tu_rng *x, struct sockaddr_storage *out)
{
	uint8_t a[16];
	memcpy(a, c->addr, 16);
	size_t len = c->family == AF_INET ? 4 : 16;
	uint64_t r = tu_rng_next(x);
	/* Random host bits, then sometimes one past the end or one before the start. */
	for (size_t bit = c->bits; bit < len * 8; bit++)
		if (tu_rng_next(x) & 1)
			a[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
	if (r % 4 == 0) {
		for (size_t bit = c->bits; bit < len * 8; bit++)
			a[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
		for (size_t i = len; i-- > 0 && ++a[i] == 0;)
			;
	} else if (r % 4 == 1) {
		for (size_t bit = c->bits; bit < len * 8; bit++)
			a[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
		for (size_t i = len; i-- > 0 && a[i]-- == 0;)
			;
	}
	memset(out, 0, sizeof *out);
	if (c->family == AF_INET) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)out;
		v4->sin_family = AF_INET;
		memcpy(&v4->sin_addr, a, 4);
	} else {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
		v6->sin6_family = AF_INET6;
		memcpy(&v6->sin6_addr, a, 16);
	}
}

/* The flattened table answers as the definition does: the longest prefix containing the
 * address, the first configured among equal ones. Nested, adjacent, repeated and /0 prefixes,
 * both families, addresses at every edge. */
Test(geo, the_index_agrees_with_the_longest_prefix_everywhere)
{
	enum { REGIONS = 6, PER = 40, PROBES = 4000 };
	static struct cidr all[REGIONS * PER];
	static size_t owner[REGIONS * PER];
	struct geo_region r[REGIONS];
	static const char *const names[REGIONS] = { "r0", "r1", "r2", "r3", "r4", "r5" };
	struct tu_rng x; /* fixed seed: a failure repeats */
	tu_rng_seed(&x, 0x9e3779b97f4a7c15ull);
	size_t n = 0;
	for (size_t k = 0; k < REGIONS; k++) {
		r[k] = (struct geo_region){ names[k], &all[n], PER };
		for (size_t j = 0; j < PER; j++, n++) {
			struct cidr *c = &all[n];
			memset(c, 0, sizeof *c);
			uint64_t v = tu_rng_next(&x);
			c->family = v & 1 ? AF_INET : AF_INET6;
			size_t width = c->family == AF_INET ? 32 : 128;
			/* Few distinct high bits, so prefixes nest and repeat often. */
			c->addr[0] = (uint8_t)(v >> 8 & 0x3);
			c->addr[1] = (uint8_t)(v >> 16 & 0x3);
			c->addr[2] = (uint8_t)(v >> 24);
			c->addr[3] = (uint8_t)(v >> 32);
			if (width == 128)
				c->addr[15] = (uint8_t)(v >> 40);
			c->bits = (uint8_t)(v >> 48) % (uint8_t)(width + 1);
			if (n % 97 == 0)
				c->bits = 0;
			for (size_t bit = c->bits; bit < width; bit++)
				c->addr[bit / 8] &= (uint8_t)~(0x80 >> (bit % 8));
			owner[n] = k;
		}
	}
	struct geo *g = new_geo(r, REGIONS, NULL);
	for (size_t i = 0; i < PROBES; i++) {
		struct sockaddr_storage ss;
		near(&all[tu_rng_next(&x) % n], &x, &ss);
		struct geo_levels lv;
		geo_lookup(g, (const struct sockaddr *)&ss, &lv);
		int want = cidr_match(all, n, (const struct sockaddr *)&ss);
		char text[INET6_ADDRSTRLEN];
		inet_ntop(ss.ss_family,
			  ss.ss_family == AF_INET
				  ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
				  : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
			  text, sizeof text);
		if (want < 0) {
			cr_assert_eq(lv.n, 0, "%s: no prefix holds it, got %s", text, lv.name[0]);
		} else {
			cr_assert_eq(lv.n, 1, "%s: want %s", text, names[owner[want]]);
			cr_assert_str_eq(lv.name[0], names[owner[want]], "%s", text);
		}
	}
	geo_unref(g);
}

Test(geo, region_names_are_checked)
{
	struct cidr p[] = { prefix("10.0.0.0/8") };
	char long_name[GEO_NAME_MAX + 2];
	memset(long_name, 'a', sizeof long_name - 1);
	long_name[sizeof long_name - 1] = '\0';
	const char *bad[] = { "", "a b", "caf\xc3\xa9", "x/y", long_name, NULL };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct geo_region r[] = { { "ok", p, 1 }, { bad[i], p, 1 } };
		struct geo *g = (struct geo *)&r; /* not NULL: geo_new must clear it */
		char err[256] = "";
		cr_assert_eq(geo_new(&g, r, 2, NULL, err, sizeof err), -EINVAL, "name %zu", i);
		cr_assert_null(g);
		cr_assert(strncmp(err, "region \"", 8) == 0, "%s", err);
		cr_assert(strstr(err, "a region name is 1 to 63 of"), "%s", err);
	}
	long_name[GEO_NAME_MAX] = '\0';
	struct geo_region r[] = { { long_name, p, 1 }, { "empty", NULL, 0 } };
	struct geo *g = new_geo(r, 2, NULL);
	check(g, "10.0.0.1", long_name);
	geo_unref(g);
}

Test(geo, nothing_configured_gives_no_levels)
{
	struct geo *g = new_geo(NULL, 0, NULL);
	check(g, "192.0.2.5", "");
	check(g, "2001:db8:1::1", "");
	const char *type = "unset";
	uint64_t epoch = 7;
	cr_assert_not(geo_database_info(g, &type, &epoch));
	cr_assert_str_eq(type, "unset");
	cr_assert_eq(epoch, 7);
	geo_unref(g);
	check(NULL, "192.0.2.5", "");
}

Test(geo, database_lookups_v4_v6_and_mapped)
{
	char *dir, *path = std_db(&dir);
	struct geo *g = new_geo(NULL, 0, path);
	check(g, "192.0.2.5", "de eu");
	check(g, "192.0.2.255", "de eu");
	check(g, "198.51.100.1", "us na");
	check(g, "2001:db8:1::1", "jp as");
	check(g, "2001:db8:1:ffff::1", "jp as");
	check(g, "::ffff:192.0.2.5", "de eu");
	check(g, "::ffff:198.51.100.77", "us na");
	const char *type = NULL;
	uint64_t epoch = 0;
	cr_assert(geo_database_info(g, &type, &epoch));
	cr_assert_str_eq(type, "GeoLite2-Country");
	cr_assert_eq(epoch, TEST_DB_EPOCH);
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

Test(geo, mapped_clients_found_without_the_files_alias)
{
	char *dir = tu_tempdir();
	char *path = make_db(dir, "noalias.mmdb", "--no-alias");
	/* The file really lacks the alias: libmaxminddb alone does not place the mapped form. */
	MMDB_s db;
	cr_assert_eq(MMDB_open(path, MMDB_MODE_MMAP, &db), MMDB_SUCCESS);
	int gai = 0, st = 0;
	MMDB_lookup_result_s res = MMDB_lookup_string(&db, "::ffff:192.0.2.5", &gai, &st);
	cr_assert_eq(gai, 0);
	cr_assert(st != MMDB_SUCCESS || !res.found_entry);
	res = MMDB_lookup_string(&db, "192.0.2.5", &gai, &st);
	cr_assert(gai == 0 && st == MMDB_SUCCESS && res.found_entry);
	MMDB_close(&db);

	struct geo *g = new_geo(NULL, 0, path);
	check(g, "::ffff:192.0.2.5", "de eu");
	check(g, "192.0.2.5", "de eu");
	check(g, "2001:db8:1::1", "jp as");
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

Test(geo, unknown_addresses_give_no_database_levels)
{
	char *dir, *path = std_db(&dir);
	struct geo *g = new_geo(NULL, 0, path);
	check(g, "203.0.113.200", "");
	check(g, "8.8.8.8", "");
	check(g, "2001:db8:3::1", "");
	check(g, "::1", "");
	check(g, "::ffff:203.0.113.250", "");
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct geo_levels lv = { .n = 3 };
	geo_lookup(g, (const struct sockaddr *)&un, &lv);
	cr_assert_eq(lv.n, 0);
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

Test(geo, a_missing_country_or_continent_gives_the_other)
{
	char *dir, *path = std_db(&dir);
	struct geo *g = new_geo(NULL, 0, path);
	check(g, "203.0.113.1", "fr");
	check(g, "203.0.113.40", "oc");
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

Test(geo, malformed_codes_are_ignored)
{
	char *dir, *path = std_db(&dir);
	struct geo *g = new_geo(NULL, 0, path);
	check(g, "203.0.113.70", "eu");	 /* "D E" */
	check(g, "203.0.113.100", "");	 /* 64 bytes, "" */
	check(g, "203.0.113.130", "");	 /* "D\0", non-ASCII */
	char want[2 * GEO_NAME_MAX + 2]; /* 63 bytes is still a name */
	memset(want, 'y', GEO_NAME_MAX);
	snprintf(want + GEO_NAME_MAX, sizeof want - GEO_NAME_MAX, " eu.test_1-2");
	check(g, "2001:db8:2::1", want);
	geo_unref(g);

	char *numeric = make_db(dir, "numeric.mmdb", "--numeric-codes");
	g = new_geo(NULL, 0, numeric);
	check(g, "192.0.2.5", "");
	check(g, "2001:db8:1::1", "");
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
	free(numeric);
}

Test(geo, table_and_database_together_region_first)
{
	char *dir, *path = std_db(&dir);
	struct cidr lab[] = { prefix("192.0.2.0/25"), prefix("2001:db8:1:5::/64") };
	struct cidr de[] = { prefix("198.51.100.0/24") };
	struct cidr eu[] = { prefix("192.0.2.128/26") };
	struct cidr far[] = { prefix("203.0.113.224/27") };
	struct geo_region r[] = { { "lab", lab, 2 }, { "DE", de, 1 }, { "eu", eu, 1 },
				  { "far", far, 1 } };
	struct geo *g = new_geo(r, 4, path);
	check(g, "192.0.2.5", "lab de eu");
	check(g, "::ffff:192.0.2.5", "lab de eu");
	check(g, "192.0.2.200", "de eu");
	check(g, "2001:db8:1:5::1", "lab jp as");
	check(g, "2001:db8:1:6::1", "jp as");
	/* A region named like a code the database gives is a level of its own kind: region "eu"
	 * is not continent "eu" (as country NA is not continent NA). */
	check(g, "198.51.100.1", "de us na");
	check(g, "192.0.2.130", "eu de eu");
	struct sockaddr_storage ss = sa_of("192.0.2.130");
	struct geo_levels lv;
	geo_lookup(g, (const struct sockaddr *)&ss, &lv);
	cr_assert_eq(lv.n, 3);
	cr_assert_eq(lv.kind[0], GEO_KIND_REGION);
	cr_assert_eq(lv.kind[1], GEO_KIND_COUNTRY);
	cr_assert_eq(lv.kind[2], GEO_KIND_CONTINENT);
	/* The table places what the database does not know. */
	check(g, "203.0.113.230", "far");
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

Test(geo, a_missing_file_is_a_clear_error)
{
	char *dir = tu_tempdir();
	char *path = tu_path(dir, "absent.mmdb");
	struct cidr p[] = { prefix("10.0.0.0/8") };
	struct geo_region r[] = { { "lan", p, 1 } };
	struct geo *g = NULL;
	char err[512] = "";
	cr_assert_eq(geo_new(&g, r, 1, path, err, sizeof err), -ENOENT, "%s", err);
	cr_assert_null(g);
	cr_assert(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':', "%s", err);
	cr_assert_str_eq(err + strlen(path), ": No such file or directory");
	tu_rmtree(dir);
	free(dir);
	free(path);
}

static void expect_not_mmdb(const char *path)
{
	struct geo *g = NULL;
	char err[512] = "";
	cr_assert_eq(geo_new(&g, NULL, 0, path, err, sizeof err), -EINVAL, "%s", err);
	cr_assert_null(g);
	cr_assert(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':', "%s", err);
	cr_assert(strstr(err, MMDB_strerror(MMDB_INVALID_METADATA_ERROR)), "%s", err);
	cr_assert(strstr(err, "(is it a MaxMind DB file?)"), "%s", err);
}

Test(geo, a_file_that_is_not_a_maxmind_db_is_refused)
{
	char *dir = tu_tempdir();
	char *text = tu_path(dir, "text.mmdb");
	FILE *f = fopen(text, "w");
	cr_assert_not_null(f);
	fputs("this is not a MaxMind database\n", f);
	cr_assert_eq(fclose(f), 0);
	expect_not_mmdb(text);

	/* A real database cut short: its metadata at the end is gone. */
	char *path = make_db(dir, "cut.mmdb", "");
	cr_assert_eq(truncate(path, 600), 0);
	expect_not_mmdb(path);

	char *empty = tu_path(dir, "empty.mmdb");
	f = fopen(empty, "w");
	cr_assert_not_null(f);
	cr_assert_eq(fclose(f), 0);
	struct geo *g = NULL;
	char err[512] = "";
	cr_assert_eq(geo_new(&g, NULL, 0, empty, err, sizeof err), -EINVAL, "%s", err);
	cr_assert_null(g);
	cr_assert(strstr(err, "empty.mmdb: the file is empty, not a MaxMind DB file"), "%s", err);
	cr_assert_eq(geo_new(&g, NULL, 0, dir, err, sizeof err), -EISDIR, "%s", err);
	cr_assert_null(g);
	cr_assert(strncmp(err, dir, strlen(dir)) == 0, "%s", err);
	cr_assert(strstr(err, ": is a directory, not a MaxMind DB file"), "%s", err);
	tu_rmtree(dir);
	free(dir);
	free(text);
	free(path);
	free(empty);
}

Test(geo, a_database_of_another_type_is_refused)
{
	char *dir = tu_tempdir();
	char *path = make_db(dir, "asn.mmdb", "--type GeoLite2-ASN");
	struct geo *g = NULL;
	char err[512] = "";
	cr_assert_eq(geo_new(&g, NULL, 0, path, err, sizeof err), -EINVAL, "%s", err);
	cr_assert_null(g);
	cr_assert(strncmp(err, path, strlen(path)) == 0, "%s", err);
	cr_assert(strstr(err, ": database type \"GeoLite2-ASN\" is not a country database"), "%s",
		  err);

	/* A City database holds the same country and continent fields. */
	char *city = make_db(dir, "city.mmdb", "--type GeoIP2-City");
	g = new_geo(NULL, 0, city);
	check(g, "198.51.100.1", "us na");
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
	free(city);
}

Test(geo, a_hostile_database_type_is_shown_safely)
{
	char *dir = tu_tempdir();
	char *path = make_db(dir, "esc.mmdb", "--type \"$(printf 'Bad\\033[31mType')\"");
	struct geo *g = NULL;
	char err[512] = "";
	cr_assert_eq(geo_new(&g, NULL, 0, path, err, sizeof err), -EINVAL, "%s", err);
	cr_assert(strstr(err, ": database type \"Bad?[31mType\" is not"), "%s", err);

	char opts[128] = "--type ";
	memset(opts + 7, 'A', 80);
	char *long_type = make_db(dir, "long.mmdb", opts);
	cr_assert_eq(geo_new(&g, NULL, 0, long_type, err, sizeof err), -EINVAL, "%s", err);
	char want[128];
	memset(want, 'A', 64);
	snprintf(want + 64, sizeof want - 64, "...\" is not");
	cr_assert(strstr(err, want), "%s", err);
	cr_assert_null(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
	free(long_type);
}

Test(geo, references_keep_the_database_open)
{
	char *dir, *path = std_db(&dir);
	struct geo *g = new_geo(NULL, 0, path);
	cr_assert_eq(geo_ref(g), g);
	cr_assert_eq(geo_ref(g), g);
	geo_unref(g);
	geo_unref(g);
	/* One reference left: the database must still be mapped. */
	check(g, "192.0.2.5", "de eu");
	geo_unref(g);
	cr_assert_null(geo_ref(NULL));
	geo_unref(NULL);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

Test(geo, a_slot_hands_workers_the_new_geo)
{
	char *dir, *path = std_db(&dir);
	struct cidr p[] = { prefix("192.0.2.0/24") };
	struct geo_region r[] = { { "old", p, 1 } };
	struct slot s;
	geo_slot_init(&s, new_geo(r, 1, path));
	struct slot_view v;
	slot_view_init(&v, &s);
	const struct geo *held = slot_view_get(&v);
	check(held, "192.0.2.5", "old de eu");

	r[0].name = "new";
	slot_publish(&s, new_geo(r, 1, NULL));
	/* The view keeps the old one until it looks again. */
	check(held, "192.0.2.5", "old de eu");
	const struct geo *now = slot_view_get(&v);
	cr_assert_neq(now, held);
	check(now, "192.0.2.5", "new");
	struct geo *owner = slot_acquire(&s);
	cr_assert_eq(owner, now);
	geo_unref(owner);
	slot_view_release(&v);
	slot_destroy(&s);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

struct worker_arg {
	const struct geo *g;
	int mismatches;
};

static void *lookup_loop(void *p)
{
	struct worker_arg *w = p;
	static const char *const addrs[][2] = {
		{ "192.0.2.5", "lab de eu" },  { "::ffff:192.0.2.77", "lab de eu" },
		{ "198.51.100.1", "us na" },   { "2001:db8:1::9", "jp as" },
		{ "203.0.113.200", "" },       { "10.1.1.1", "lan" },
		{ "203.0.113.70", "eu" },
	};
	char got[GEO_LEVELS_MAX * (GEO_NAME_MAX + 1) + 1];
	for (int i = 0; i < 5000; i++) {
		size_t k = (size_t)i % (sizeof addrs / sizeof addrs[0]);
		if (!levels_text(w->g, addrs[k][0], got, sizeof got) ||
		    strcmp(got, addrs[k][1]) != 0)
			w->mismatches++;
	}
	return NULL;
}

Test(geo, concurrent_lookups_on_one_geo)
{
	char *dir, *path = std_db(&dir);
	struct cidr lab[] = { prefix("192.0.2.0/25") };
	struct cidr lan[] = { prefix("10.0.0.0/8") };
	struct geo_region r[] = { { "lab", lab, 1 }, { "lan", lan, 1 } };
	struct geo *g = new_geo(r, 2, path);
	pthread_t t[4];
	struct worker_arg w[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker_arg){ .g = g };
		cr_assert_eq(pthread_create(&t[i], NULL, lookup_loop, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pthread_join(t[i], NULL), 0);
		cr_assert_eq(w[i].mismatches, 0, "thread %d", i);
	}
	geo_unref(g);
	tu_rmtree(dir);
	free(dir);
	free(path);
}
