/* Shared by the config_daemon and config_pool harnesses (#included, not a harness of its own):
 * the file sandbox and the "FILE:LINE: message" check.
 *
 * The loaders open the token files a configuration names (accepted-pool-authentication-tokens-path
 * of [[nts-ke-server]], authentication-token-path of a key-exchange-servers entry) through
 * config_secret_read, i.e. open(2) with a path taken from the fuzzed text. So that no input can
 * touch the file system, run.sh links these harnesses with -Wl,--wrap=open: every open() call in
 * the library objects (libFuzzer and the sanitizer runtimes call none) comes here. While an input
 * runs (sandbox_on), a path that is exactly one of the names below gets a fresh anonymous memory
 * file (memfd) holding that name's fixed content and mode, "fifo" gets the read end of a pipe, and
 * every other path fails with ENOENT: nothing is ever looked up on disk, whatever the path
 * (absolute, "../", /proc, a device). The fixed files let the fuzzer reach every branch of the
 * token file readers (mode check, not a regular file, too big, NUL byte, bad token, too many
 * tokens). The first input checks that the wrap is in effect and aborts otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_secret.h"
#include "ke_msg.h"
#include "pool_proto.h"

#ifndef CHECK
#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)
#endif

#define FILENAME "fuzz.toml"

int __real_open(const char *path, int flags, ...);
int __wrap_open(const char *path, int flags, ...);

static bool sandbox_on;
static unsigned long sandbox_opens;

struct sandbox_file {
	const char *name;
	mode_t mode;
	const char *text;
	size_t len; /* 0: strlen(text) */
};

#define MANY_TOKENS (POOL_TOKENS_MAX + 1)
/* MANY_TOKENS distinct tokens, one a line: past what one time source accepts. */
static char many_text[MANY_TOKENS * 6 + 1];

/* One token a byte longer than a token may be. */
static char long_text[KE_MSG_TOKEN_MAX + 3];

static const struct sandbox_file sandbox_files[] = {
	{ "tokens", 0600,
	  "# accepted pool tokens\n\npool-token-1\n  t  \r\n"
	  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
	  0 },
	{ "token", 0600, "# the upstream's token\n0123456789abcdef\n", 0 },
	{ "open", 0644, "pool-token-1\n", 0 },
	{ "two", 0600, "a\nb\n", 0 },
	{ "empty", 0600, "", 0 },
	{ "spaces", 0600, "a b\n", 0 },
	{ "long", 0600, long_text, 0 },
	{ "nul", 0600, "ab\0cd\n", 6 },
	{ "many", 0600, many_text, 0 },
};

static int sandbox_file_fd(const struct sandbox_file *f)
{
	int fd = memfd_create(f->name, MFD_CLOEXEC);
	CHECK(fd >= 0);
	size_t len = f->len ? f->len : strlen(f->text);
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, f->text + off, len - off);
		CHECK(n > 0);
		off += (size_t)n;
	}
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	CHECK(fchmod(fd, f->mode) == 0);
	return fd;
}

int __wrap_open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	if (!sandbox_on)
		return __real_open(path, flags, mode);
	sandbox_opens++;
	/* The loaders only ever read. */
	CHECK((flags & O_ACCMODE) == O_RDONLY && !(flags & (O_CREAT | O_TMPFILE | O_TRUNC)));
	for (size_t i = 0; i < sizeof sandbox_files / sizeof sandbox_files[0]; i++)
		if (strcmp(path, sandbox_files[i].name) == 0)
			return sandbox_file_fd(&sandbox_files[i]);
	if (strcmp(path, "fifo") == 0) {
		int p[2];
		CHECK(pipe2(p, O_CLOEXEC) == 0);
		close(p[1]);
		return p[0];
	}
	errno = ENOENT;
	return -1;
}

/* Fills the generated file and checks, once, that open() really comes here. */
static void sandbox_init(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	memset(long_text, 'x', KE_MSG_TOKEN_MAX + 1);
	long_text[KE_MSG_TOKEN_MAX + 1] = '\n';
	char *p = many_text;
	for (unsigned i = 0; i < MANY_TOKENS; i++)
		p += sprintf(p, "t%04x\n", i);

	char why[512], *text = NULL;
	size_t len = 0;
	unsigned long before = sandbox_opens;
	sandbox_on = true;
	int r = config_secret_read("/etc/hostname", 4096, &text, &len, why, sizeof why);
	if (r != -ENOENT || sandbox_opens != before + 1) {
		fprintf(stderr, "config sandbox: open() is not wrapped (link with "
				"-Wl,--wrap=open); refusing to run\n");
		abort();
	}
	r = config_secret_read("token", 4096, &text, &len, why, sizeof why);
	CHECK(r == 0 && len == strlen(sandbox_files[1].text));
	config_secret_free(text);
	sandbox_on = false;
}

/* Lines of the text as TOML counts them (LF ends a line): every reported line is within. */
static long text_lines(const uint8_t *data, size_t size)
{
	long n = 1;
	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

/* A failed load: a negative errno with "FILE:LINE: message" (NUL-terminated within the buffer,
 * the file name given, a line of the text, a non-empty message). */
static void check_failure(int rc, const char *err, size_t errlen, const uint8_t *data,
			  size_t size)
{
	CHECK(rc == -EINVAL || rc == -ENOMEM);
	CHECK(memchr(err, '\0', errlen) != NULL);
	size_t fl = strlen(FILENAME);
	CHECK(strncmp(err, FILENAME ":", fl + 1) == 0);
	const char *p = err + fl + 1;
	CHECK(*p >= '1' && *p <= '9');
	char *end;
	long line = strtol(p, &end, 10);
	CHECK(line >= 1 && line <= text_lines(data, size));
	CHECK(end[0] == ':' && end[1] == ' ' && end[2] != '\0');
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* A listen address as config_parse_listen makes it: an IP family, a port, normalised text. */
static void check_listen(const struct config_listen *l)
{
	CHECK(l->line >= 1);
	CHECK(memchr(l->text, '\0', sizeof l->text) != NULL && l->text[0] != '\0');
	if (l->addr.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&l->addr;
		CHECK(l->addr_len == sizeof *s4 && s4->sin_port != 0);
	} else {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&l->addr;
		CHECK(l->addr.ss_family == AF_INET6);
		CHECK(l->addr_len == sizeof *s6 && s6->sin6_port != 0);
		CHECK(l->text[0] == '[');
	}
}

static void check_host(const struct config_host *h)
{
	CHECK(h->port != 0);
	size_t n = strnlen(h->host, sizeof h->host);
	CHECK(n >= 1 && n < sizeof h->host);
}

static void check_token(const char *tok)
{
	size_t n = strlen(tok);
	CHECK(n >= 1 && n <= KE_MSG_TOKEN_MAX);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)tok[i] >= 0x21 && (unsigned char)tok[i] <= 0x7e);
}

static void check_observability(const struct config_observability *o)
{
	CHECK(o->log_level >= LOG_LEVEL_ERROR && o->log_level <= LOG_LEVEL_TRACE);
	if (o->has_status_listen)
		check_listen(&o->status_listen);
	if (o->has_metrics_listen) {
		check_listen(&o->metrics_listen);
		CHECK(!o->has_status_listen ||
		      o->status_listen.addr_len != o->metrics_listen.addr_len ||
		      memcmp(&o->status_listen.addr, &o->metrics_listen.addr,
			     o->metrics_listen.addr_len) != 0);
	}
	size_t n = strnlen(o->observation_path, sizeof o->observation_path);
	CHECK(n < sizeof o->observation_path && n <= CONFIG_UNIX_PATH_MAX);
	CHECK(n == 0 || o->observation_path[n - 1] != '/');
	CHECK(o->observation_permissions <= 0777);
}

/* The report of the same load (what `ntp-ctl validate` prints): the same result; every message
 * "FILE:LINE: ..." in line order; the load's own message one of them. */
static void check_report(int rc, int rc2, const struct config_report *rep, const char *err,
			 long lines)
{
	CHECK(rc2 == rc);
	if (rc >= 0) {
		CHECK(rep->count == 0);
		return;
	}
	CHECK(rep->count >= 1 || rep->truncated);
	size_t fl = strlen(FILENAME);
	for (size_t i = 0; i < rep->count; i++) {
		CHECK(strncmp(rep->msgs[i].text, FILENAME ":", fl + 1) == 0);
		CHECK(rep->msgs[i].line >= 0 && rep->msgs[i].line <= lines);
		if (i)
			CHECK(rep->msgs[i - 1].line <= rep->msgs[i].line);
	}
	bool found = rep->truncated;
	for (size_t i = 0; i < rep->count && !found; i++)
		found = strncmp(rep->msgs[i].text, err, strlen(err)) == 0;
	CHECK(found);
}

/* The whole entry point of a config harness: parse the input, load it with FROM_TREE into a
 * struct TYPE that starts out as garbage (from_tree owns it whatever it held), then check the
 * failure's message or, on success, the values with CHECK_FN(cfg, lines); FREE_FN must empty the
 * struct and be safe to call twice. Any path the loader opens meets the sandbox. */
#define CONFIG_FUZZ_ENTRY(type, from_tree, from_tree_report, check_fn, free_fn)                    \
	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                               \
	{                                                                                          \
		sandbox_init();                                                                    \
		sandbox_on = true;                                                                 \
		char err[512];                                                                     \
		struct toml_value *root =                                                          \
			toml_parse((const char *)data, size, FILENAME, err, sizeof err);           \
		if (root) {                                                                        \
			type cfg;                                                                  \
			memset(&cfg, 0xa5, sizeof cfg);                                            \
			memset(err, 0x5a, sizeof err);                                             \
			int rc = from_tree(root, FILENAME, &cfg, err, sizeof err);                 \
			if (rc < 0) {                                                              \
				check_failure(rc, err, sizeof err, data, size);                    \
				CHECK(all_zero(&cfg, sizeof cfg));                                 \
			} else {                                                                   \
				CHECK(rc == 0 && err[0] == '\0');                                  \
				check_fn(&cfg, text_lines(data, size));                            \
			}                                                                          \
			free_fn(&cfg);                                                             \
			CHECK(all_zero(&cfg, sizeof cfg));                                         \
			free_fn(&cfg);                                                             \
			struct config_report rep = { 0 };                                          \
			char err2[512];                                                            \
			int rc2 = from_tree_report(root, FILENAME, &cfg, &rep, err2, sizeof err2); \
			if (rc2 >= 0)                                                              \
				free_fn(&cfg);                                                     \
			check_report(rc, rc2, &rep, rc < 0 ? err : "", text_lines(data, size));    \
			config_report_free(&rep);                                                  \
			toml_free(root);                                                           \
		}                                                                                  \
		sandbox_on = false;                                                                \
		return 0;                                                                          \
	}
