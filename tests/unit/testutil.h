/* Helpers shared by the unit tests: hex, test vectors, deterministic randomness, temp dirs. */
#ifndef NTSPOOL_TESTUTIL_H
#define NTSPOOL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Decodes hex into a new buffer (caller frees); *len gets its size. Aborts the test on bad hex. */
uint8_t *tu_hex(const char *hex, size_t *len);

/* Looks up `name` in tests/vectors/FILE ("name = value" lines, '#' comments). Returns a new
 * string (caller frees); fails the test if the file or the name is missing. */
char *tu_vector(const char *file, const char *name);

/* tu_vector followed by tu_hex. */
uint8_t *tu_vector_hex(const char *file, const char *name, size_t *len);

/* xorshift64*: reproducible pseudo-random numbers for randomised tests. */
struct tu_rng {
	uint64_t s;
};
void tu_rng_seed(struct tu_rng *r, uint64_t seed);
uint64_t tu_rng_next(struct tu_rng *r);
uint32_t tu_rng_below(struct tu_rng *r, uint32_t n); /* uniform-ish in [0, n), n > 0 */
void tu_rng_fill(struct tu_rng *r, void *buf, size_t len);

/* Creates a fresh private directory (mode 0700) under $TMPDIR; returns a new path (caller frees). */
char *tu_tempdir(void);
/* Removes a directory tree made by tu_tempdir. */
void tu_rmtree(const char *path);

/* Path of a file in the source tree, e.g. tu_srcpath("test-keys/gen-cert.sh"); caller frees. */
char *tu_srcpath(const char *rel);

/* dir/file as a new string (caller frees). */
char *tu_path(const char *dir, const char *file);

/* Writes text to dir/file (created or truncated); returns the path (caller frees). Fails the
 * test if it cannot. */
char *tu_write_file(const char *dir, const char *file, const char *text);

/* Runs test-keys/gen-cert.sh --dir DIR ARGS (e.g. "pool --dns pool.test"): the test CA once per
 * directory, then a leaf. Fails the test if the script fails. */
void tu_gen_cert(const char *dir, const char *args);

#endif
