#include "tls_creds.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "log.h"
#include "slot.h"

/* Certificate and key files are small; anything larger is a mistake or an attack on memory. */
#define FILE_MAX (1024 * 1024)

const char tls_creds_priority_string[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3";

struct tls_creds {
	atomic_uint refs; /* sessions on other loops hold references too */
	bool server;
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	gnutls_datum_t *pinned; /* DER of each authorised pool certificate */
	size_t n_pinned;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* A message about one file: "WHAT: PATH: reason", or "PATH: reason" without a what (the
 * caller's name for the file, e.g. the option and the line that configured it). */
static void file_err(char *err, size_t errlen, const char *what, const char *path,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void file_err(char *err, size_t errlen, const char *what, const char *path,
		     const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	int n = what ? snprintf(err, errlen, "%s: %s: ", what, path)
		     : snprintf(err, errlen, "%s: ", path);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

/* The reason open(2) gave, with the fix where one is likely: the file is read by whatever user
 * the program runs as, which is often not the one who made the file. */
static void open_err(char *err, size_t errlen, const char *what, const char *path, int e)
{
	struct stat st;
	if (e == EACCES)
		file_err(err, errlen, what, path,
			 "%s; the user this program runs as (uid %u) must be able to read it and "
			 "to search every directory above it",
			 strerror(e), (unsigned)geteuid());
	else if (e == ENOENT && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
		file_err(err, errlen, what, path, "%s (a symbolic link to a missing file)",
			 strerror(e));
	else
		file_err(err, errlen, what, path, "%s", strerror(e));
}

static int gnutls_to_errno(int gerr)
{
	switch (gerr) {
	case GNUTLS_E_MEMORY_ERROR:
		return -ENOMEM;
	case GNUTLS_E_CERTIFICATE_KEY_MISMATCH:
	case GNUTLS_E_INVALID_REQUEST:
		return -EINVAL;
	case GNUTLS_E_FILE_ERROR:
		return -EIO;
	default:
		return -EBADMSG;
	}
}

/* How load_file treats what it reads. */
enum file_kind {
	FILE_PUBLIC,		/* certificates */
	FILE_SECRET,		/* a private key: refused when every user may read it */
	FILE_SECRET_ALLOW_OPEN, /* a private key the operator allowed to be readable by all */
};

/* Reads a whole file into a new datum (free with free_datum). A secret (a private key) that any
 * user may read is refused unless the operator said otherwise (then it is a warning): group
 * access is left to the operator (Debian's ssl-cert group). */
static int load_file(const char *path, const char *what, enum file_kind kind,
		     gnutls_datum_t *out, char *err, size_t errlen)
{
	int ret;
	uint8_t *buf = NULL;
	/* Non-blocking until fstat shows a regular file: a FIFO would block the loop on SIGHUP. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		open_err(err, errlen, what, path, errno);
		return ret;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		file_err(err, errlen, what, path, "%s", strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = -EISDIR;
		file_err(err, errlen, what, path, "is a directory, not a PEM file");
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > FILE_MAX) {
		ret = -EBADMSG;
		file_err(err, errlen, what, path, "not a regular file of at most %d bytes",
			 FILE_MAX);
		goto fail;
	}
	if (kind == FILE_SECRET && (st.st_mode & S_IRWXO)) {
		ret = -EPERM;
		file_err(err, errlen, what, path,
			 "mode %04o lets every user read the private key; run chmod o-rwx %s "
			 "(or set allow-world-readable-private-key = true)",
			 (unsigned)(st.st_mode & 07777), path);
		goto fail;
	}
	if (kind == FILE_SECRET_ALLOW_OPEN && (st.st_mode & S_IRWXO))
		log_warn("%s%s%s: mode %04o lets every user read the private key "
			 "(allowed by allow-world-readable-private-key)",
			 what ? what : "", what ? ": " : "", path, (unsigned)(st.st_mode & 07777));
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		ret = -errno;
		file_err(err, errlen, what, path, "%s", strerror(errno));
		goto fail;
	}
	size_t cap = (size_t)st.st_size;
	buf = malloc(cap + 1);
	if (!buf) {
		ret = -ENOMEM;
		file_err(err, errlen, what, path, "out of memory");
		goto fail;
	}
	size_t len = 0;
	/* Read until EOF, not st_size: the file may change under us; never past cap. */
	for (;;) {
		ssize_t n = read(fd, buf + len, cap + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			file_err(err, errlen, what, path, "%s", strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > cap) {
			ret = -EBADMSG;
			file_err(err, errlen, what, path, "file grew while being read");
			goto fail;
		}
	}
	close(fd);
	out->data = buf;
	out->size = (unsigned)len;
	return 0;
fail:
	if (buf) {
		gnutls_memset(buf, 0, cap + 1);
		free(buf);
	}
	close(fd);
	return ret;
}

/* Wipes before freeing because the datum may hold a private key. */
static void free_datum(gnutls_datum_t *d)
{
	if (d->data) {
		gnutls_memset(d->data, 0, d->size);
		free(d->data);
	}
	d->data = NULL;
	d->size = 0;
}

static void free_crt_list(gnutls_x509_crt_t *list, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(list[i]);
	gnutls_free(list);
}

/* Parses every PEM certificate of a file into a new list (free with free_crt_list). */
static int load_crt_list(const char *path, const char *what, gnutls_x509_crt_t **list,
			 unsigned *n, char *err, size_t errlen)
{
	gnutls_datum_t data = { NULL, 0 };
	int ret = load_file(path, what, FILE_PUBLIC, &data, err, errlen);
	if (ret < 0)
		return ret;
	*list = NULL;
	*n = 0;
	int g = gnutls_x509_crt_list_import2(list, n, &data, GNUTLS_X509_FMT_PEM, 0);
	free_datum(&data);
	if (g < 0) {
		file_err(err, errlen, what, path, "%s", gnutls_strerror(g));
		return gnutls_to_errno(g);
	}
	if (*n == 0) {
		free_crt_list(*list, *n);
		file_err(err, errlen, what, path, "no certificate found");
		return -EBADMSG;
	}
	return 0;
}

/* The files of a certificate and its key, and the caller's names for them. */
struct key_pair {
	const char *cert_file, *cert_what;
	const char *key_file, *key_what;
	bool allow_open_key;
};

/* Adds a certificate chain and its key to cred, naming the file at fault on error. */
static int add_key_pair(gnutls_certificate_credentials_t cred, const struct key_pair *kp,
			char *err, size_t errlen)
{
	const char *key_file = kp->key_file, *key_what = kp->key_what;
	gnutls_x509_crt_t *chain = NULL;
	unsigned n_chain = 0;
	gnutls_x509_privkey_t key = NULL;
	gnutls_datum_t key_pem = { NULL, 0 };
	int g;

	int ret = load_crt_list(kp->cert_file, kp->cert_what, &chain, &n_chain, err, errlen);
	if (ret < 0)
		return ret;
	enum file_kind kind = kp->allow_open_key ? FILE_SECRET_ALLOW_OPEN : FILE_SECRET;
	ret = load_file(key_file, key_what, kind, &key_pem, err, errlen);
	if (ret < 0)
		goto fail;
	g = gnutls_x509_privkey_init(&key);
	if (g < 0) {
		key = NULL;
		file_err(err, errlen, key_what, key_file, "%s", gnutls_strerror(g));
		ret = gnutls_to_errno(g);
		goto fail;
	}
	g = gnutls_x509_privkey_import2(key, &key_pem, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN);
	if (g < 0) {
		file_err(err, errlen, key_what, key_file, "not a PEM private key: %s",
			 gnutls_strerror(g));
		ret = gnutls_to_errno(g);
		goto fail;
	}
	g = gnutls_certificate_set_x509_key(cred, chain, (int)n_chain, key);
	if (g < 0) {
		if (g == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
			file_err(err, errlen, key_what, key_file,
				 "is not the key of the first certificate in %s", kp->cert_file);
		else
			file_err(err, errlen, key_what, key_file, "with %s: %s", kp->cert_file,
				 gnutls_strerror(g));
		ret = gnutls_to_errno(g);
		goto fail;
	}
	ret = 0;
fail:
	if (key)
		gnutls_x509_privkey_deinit(key);
	free_datum(&key_pem);
	free_crt_list(chain, n_chain);
	return ret;
}

static int add_pinned(struct tls_creds *c, const char *path, const char *what, char *err,
		      size_t errlen)
{
	gnutls_x509_crt_t *list = NULL;
	unsigned n = 0;
	int ret = load_crt_list(path, what, &list, &n, err, errlen);
	if (ret < 0)
		return ret;
	if (n != 1) {
		file_err(err, errlen, what, path,
			 "holds %u certificates; an authorised pool certificate file must hold "
			 "exactly one",
			 n);
		ret = -EBADMSG;
		goto out;
	}
	gnutls_datum_t der = { NULL, 0 };
	int g = gnutls_x509_crt_export2(list[0], GNUTLS_X509_FMT_DER, &der);
	if (g < 0) {
		file_err(err, errlen, what, path, "%s", gnutls_strerror(g));
		ret = gnutls_to_errno(g);
		goto out;
	}
	c->pinned[c->n_pinned++] = der;
	ret = 0;
out:
	free_crt_list(list, n);
	return ret;
}

static int creds_alloc(struct tls_creds **out, bool server, char *err, size_t errlen)
{
	struct tls_creds *c = calloc(1, sizeof(*c));
	if (!c) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&c->refs, 1);
	c->server = server;
	int g = gnutls_certificate_allocate_credentials(&c->cred);
	if (g < 0) {
		c->cred = NULL;
		goto fail;
	}
	g = gnutls_priority_init2(&c->prio, tls_creds_priority_string, NULL, 0);
	if (g < 0) {
		c->prio = NULL;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	set_err(err, errlen, "TLS credentials: %s", gnutls_strerror(g));
	tls_creds_unref(c);
	return gnutls_to_errno(g);
}

static const struct tls_creds_names no_names = { NULL, NULL, NULL, NULL };

int tls_creds_new_server(struct tls_creds **out, const struct tls_server_options *opts, char *err,
			 size_t errlen)
{
	return tls_creds_new_server_named(out, opts, NULL, err, errlen);
}

int tls_creds_new_client(struct tls_creds **out, const struct tls_client_options *opts, char *err,
			 size_t errlen)
{
	return tls_creds_new_client_named(out, opts, NULL, err, errlen);
}

int tls_creds_new_server_named(struct tls_creds **out, const struct tls_server_options *opts,
			       const struct tls_creds_names *names, char *err, size_t errlen)
{
	struct tls_creds *c = NULL;
	if (!names)
		names = &no_names;
	if (!opts->cert_file || !opts->key_file) {
		set_err(err, errlen, "server credentials need a certificate file and a key file");
		return -EINVAL;
	}
	if (opts->n_pool_cert_files > 0 && !opts->pool_cert_files) {
		set_err(err, errlen, "pool certificate list missing");
		return -EINVAL;
	}
	int ret = creds_alloc(&c, true, err, errlen);
	if (ret < 0)
		return ret;
	const struct key_pair kp = { opts->cert_file, names->cert, opts->key_file, names->key,
				     opts->allow_world_readable_key };
	ret = add_key_pair(c->cred, &kp, err, errlen);
	if (ret < 0)
		goto fail;
	if (opts->n_pool_cert_files > 0) {
		c->pinned = calloc(opts->n_pool_cert_files, sizeof(*c->pinned));
		if (!c->pinned) {
			set_err(err, errlen, "out of memory");
			ret = -ENOMEM;
			goto fail;
		}
	}
	for (size_t i = 0; i < opts->n_pool_cert_files; i++) {
		ret = add_pinned(c, opts->pool_cert_files[i], names->pool_cert, err, errlen);
		if (ret < 0)
			goto fail;
	}
	*out = c;
	return 0;
fail:
	tls_creds_unref(c);
	return ret;
}

int tls_creds_new_client_named(struct tls_creds **out, const struct tls_client_options *opts,
			       const struct tls_creds_names *names, char *err, size_t errlen)
{
	struct tls_creds *c = NULL;
	gnutls_datum_t ca = { NULL, 0 };
	int g;
	if (!names)
		names = &no_names;
	if (!opts->cert_file != !opts->key_file) {
		set_err(err, errlen, "a client certificate needs both a certificate file and a key file");
		return -EINVAL;
	}
	if (opts->no_system_trust && !opts->ca_file) {
		set_err(err, errlen, "client credentials need system trust or a CA file");
		return -EINVAL;
	}
	int ret = creds_alloc(&c, false, err, errlen);
	if (ret < 0)
		return ret;
	if (!opts->no_system_trust) {
		g = gnutls_certificate_set_x509_system_trust(c->cred);
		if (g < 0) {
			set_err(err, errlen, "system trust store: %s", gnutls_strerror(g));
			ret = gnutls_to_errno(g);
			goto fail;
		}
	}
	if (opts->ca_file) {
		ret = load_file(opts->ca_file, names->ca, FILE_PUBLIC, &ca, err, errlen);
		if (ret < 0)
			goto fail;
		g = gnutls_certificate_set_x509_trust_mem(c->cred, &ca, GNUTLS_X509_FMT_PEM);
		if (g <= 0) {
			file_err(err, errlen, names->ca, opts->ca_file, "%s",
				 g < 0 ? gnutls_strerror(g) : "no certificate found");
			ret = g < 0 ? gnutls_to_errno(g) : -EBADMSG;
			goto fail;
		}
	}
	if (opts->cert_file) {
		const struct key_pair kp = { opts->cert_file, names->cert, opts->key_file,
					     names->key, opts->allow_world_readable_key };
		ret = add_key_pair(c->cred, &kp, err, errlen);
		if (ret < 0)
			goto fail;
	}
	free_datum(&ca);
	*out = c;
	return 0;
fail:
	free_datum(&ca);
	tls_creds_unref(c);
	return ret;
}

struct tls_creds *tls_creds_ref(struct tls_creds *c)
{
	if (c)
		atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

SLOT_OF(tls_creds, struct tls_creds, tls_creds_ref, tls_creds_unref)

void tls_creds_unref(struct tls_creds *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (c->cred)
		gnutls_certificate_free_credentials(c->cred);
	if (c->prio)
		gnutls_priority_deinit(c->prio);
	for (size_t i = 0; i < c->n_pinned; i++)
		gnutls_free(c->pinned[i].data);
	free(c->pinned);
	free(c);
}

bool tls_creds_is_server(const struct tls_creds *c)
{
	return c->server;
}

gnutls_certificate_credentials_t tls_creds_gnutls(const struct tls_creds *c)
{
	return c->cred;
}

gnutls_priority_t tls_creds_priority(const struct tls_creds *c)
{
	return c->prio;
}

bool tls_creds_is_pinned(const struct tls_creds *c, const gnutls_datum_t *der)
{
	for (size_t i = 0; i < c->n_pinned; i++) {
		if (c->pinned[i].size == der->size &&
		    memcmp(c->pinned[i].data, der->data, der->size) == 0)
			return true;
	}
	return false;
}

size_t tls_creds_pinned_count(const struct tls_creds *c)
{
	return c->n_pinned;
}
