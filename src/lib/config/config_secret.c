#include "config_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "ke_msg.h"

/* What to do about a secret file that does not open. */
static const char *open_fix(int e)
{
	switch (e) {
	case EACCES:
		return "; the file and every directory above it must be readable by the user the "
		       "program runs as (chown that user, then chmod 600 the file)";
	case ENOENT:
		return "; create it (mode 600) or correct the path";
	case ENOTDIR:
		return "; a part of the path is not a directory: correct the path";
	case ELOOP:
		return "; the path has a symbolic link loop: correct the path";
	default:
		return "";
	}
}

int config_secret_read(const char *path, size_t max, char **out, size_t *len, char *why,
		       size_t whylen)
{
	*out = NULL;
	*len = 0;
	/* Non-blocking until it is known to be a regular file: a FIFO would block the loop. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		snprintf(why, whylen, "cannot open %s: %s%s", path, strerror(e), open_fix(e));
		return -e;
	}
	struct stat st;
	int r = 0;
	char *buf = NULL;
	size_t got = 0;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, whylen, "cannot stat %s: %s", path, strerror(-r));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		snprintf(why, whylen, "%s is not a regular file; name the file itself", path);
		goto out;
	}
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		r = -errno;
		snprintf(why, whylen, "cannot read %s: %s", path, strerror(-r));
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		r = -EPERM;
		snprintf(why, whylen,
			 "%s has mode %04o, which lets group or others read a secret; run "
			 "chmod 600 %s",
			 path, (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	buf = malloc(max + 1);
	if (!buf) {
		r = -ENOMEM;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, max + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(why, whylen, "cannot read %s: %s", path, strerror(-r));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > max) {
			r = -EFBIG;
			snprintf(why, whylen, "%s is larger than %zu bytes", path, max);
			goto out;
		}
	}
	buf[got] = '\0';
	if (memchr(buf, '\0', got)) {
		r = -EINVAL;
		snprintf(why, whylen, "%s contains a NUL byte", path);
		goto out;
	}
	*out = buf;
	*len = got;
	buf = NULL;
out:
	if (buf) {
		gnutls_memset(buf, 0, got);
		free(buf);
	}
	close(fd);
	return r;
}

int config_read_secret_file(struct config_ctx *ctx, int line, const char *key,
			    const char *where, const char *path, size_t max, char **out,
			    size_t *len)
{
	char why[512];
	int r = config_secret_read(path, max, out, len, why, sizeof why);
	if (r < 0) {
		config_error(ctx, line, "'%s' in %s: %s", key, where, why);
		return r == -ENOMEM ? r : -EINVAL;
	}
	return 0;
}

void config_secret_free(char *s)
{
	if (!s)
		return;
	gnutls_memset(s, 0, strlen(s));
	free(s);
}

int config_check_token(struct config_ctx *ctx, int line, const char *key, const char *where,
		       const char *token, size_t len)
{
	if (len == 0 || len > KE_MSG_TOKEN_MAX)
		return config_error(ctx, line, "'%s' in %s: a token must be 1 to %d bytes, not %zu",
				    key, where, KE_MSG_TOKEN_MAX, len);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)token[i] < 0x21 || (unsigned char)token[i] > 0x7e)
			return config_error(ctx, line,
					    "'%s' in %s: a token must be visible ASCII without "
					    "spaces (byte %zu is 0x%02x)",
					    key, where, i + 1, (unsigned char)token[i]);
	return 0;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

int config_secret_next_line(const char *text, size_t len, size_t *pos, const char **line,
			    size_t *line_len, int *lineno)
{
	while (*pos < len) {
		const char *nl = memchr(text + *pos, '\n', len - *pos);
		size_t end = nl ? (size_t)(nl - text) : len, a = *pos, b = end;
		++*lineno;
		*pos = end + 1;
		while (a < b && blank(text[a]))
			a++;
		while (b > a && blank(text[b - 1]))
			b--;
		if (a == b || text[a] == '#')
			continue;
		*line = text + a;
		*line_len = b - a;
		return 1;
	}
	return 0;
}
