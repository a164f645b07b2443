#include "testutil.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

uint8_t *tu_hex(const char *hex, size_t *len)
{
	size_t n = strlen(hex);
	cr_assert(n % 2 == 0, "odd hex length %zu", n);
	uint8_t *out = malloc(n / 2 + 1);
	cr_assert(out);
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		cr_assert(hi >= 0 && lo >= 0, "bad hex at %zu", 2 * i);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	*len = n / 2;
	return out;
}

char *tu_srcpath(const char *rel)
{
	const char *top = getenv("TOP_SRCDIR");
	if (!top)
		top = TOP_SRCDIR;
	char *p = NULL;
	cr_assert(asprintf(&p, "%s/%s", top, rel) >= 0);
	return p;
}

char *tu_path(const char *dir, const char *file)
{
	char *p = NULL;
	cr_assert(asprintf(&p, "%s/%s", dir, file) >= 0);
	return p;
}

char *tu_write_file(const char *dir, const char *file, const char *text)
{
	char *path = tu_path(dir, file);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s: cannot create", path);
	cr_assert_geq(fputs(text, f), 0);
	cr_assert_eq(fclose(f), 0);
	return path;
}

void tu_gen_cert(const char *dir, const char *args)
{
	char *script = tu_srcpath("test-keys/gen-cert.sh");
	char *cmd = NULL;
	cr_assert(asprintf(&cmd, "bash '%s' --dir '%s' %s >/dev/null", script, dir, args) >= 0);
	cr_assert_eq(system(cmd), 0, "%s failed", cmd);
	free(cmd);
	free(script);
}

char *tu_vector(const char *file, const char *name)
{
	const char *dir = getenv("VECTORS_DIR");
	char *path = NULL;
	if (dir)
		cr_assert(asprintf(&path, "%s/%s", dir, file) >= 0);
	else {
		char *rel = NULL;
		cr_assert(asprintf(&rel, "tests/vectors/%s", file) >= 0);
		path = tu_srcpath(rel);
		free(rel);
	}
	FILE *f = fopen(path, "r");
	cr_assert(f, "cannot open vector file %s", path);
	char *line = NULL, *found = NULL;
	size_t cap = 0;
	size_t nlen = strlen(name);
	while (!found && getline(&line, &cap, f) > 0) {
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || strncmp(p, name, nlen) != 0)
			continue;
		p += nlen;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '=')
			continue;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		size_t vlen = strcspn(p, " \t\r\n");
		found = strndup(p, vlen);
	}
	free(line);
	fclose(f);
	cr_assert(found, "vector %s not found in %s", name, path);
	free(path);
	return found;
}

uint8_t *tu_vector_hex(const char *file, const char *name, size_t *len)
{
	char *v = tu_vector(file, name);
	uint8_t *b = tu_hex(v, len);
	free(v);
	return b;
}

void tu_rng_seed(struct tu_rng *r, uint64_t seed)
{
	r->s = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t tu_rng_next(struct tu_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dULL;
}

uint32_t tu_rng_below(struct tu_rng *r, uint32_t n)
{
	return (uint32_t)((tu_rng_next(r) >> 32) % n);
}

void tu_rng_fill(struct tu_rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(tu_rng_next(r) >> 56);
}

char *tu_tempdir(void)
{
	const char *base = getenv("TMPDIR");
	char *tmpl = NULL;
	cr_assert(asprintf(&tmpl, "%s/ntspool-test-XXXXXX", base && *base ? base : "/tmp") >= 0);
	cr_assert(mkdtemp(tmpl), "mkdtemp failed");
	return tmpl;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void tu_rmtree(const char *path)
{
	if (path)
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
