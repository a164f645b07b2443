/* TLS credentials: what a server presents and pins, what a client trusts and presents.
 *
 * A credentials object is immutable once made and reference-counted: every session holds a
 * reference, so a reload (SIGHUP) builds a new object, hands it to new sessions and drops its own
 * reference to the old one, which lives on until the last session using it is freed. Objects are
 * used from one thread (the event loop); the count is not atomic. */
#ifndef NTSPOOL_TLS_CREDS_H
#define NTSPOOL_TLS_CREDS_H

#include <stdbool.h>
#include <stddef.h>

#include <gnutls/gnutls.h>

struct tls_creds;

/* Room for any message the constructors write to their err buffer, with the callers' names
 * (tls_creds_names) of a few hundred bytes. */
#define TLS_CREDS_ERR_MAX 1024

struct tls_server_options {
	const char *cert_file; /* PEM chain: end-entity certificate first */
	const char *key_file;  /* PEM private key of that certificate */
	/* Certificates of authorised pools: each file holds exactly one PEM certificate. */
	const char *const *pool_cert_files;
	size_t n_pool_cert_files;
	bool allow_world_readable_key; /* a key every user may read: a warning, not an error */
};

struct tls_client_options {
	bool no_system_trust;  /* trust only ca_file (tests, closed deployments) */
	const char *ca_file;   /* optional extra trust anchors (PEM), added to the system's */
	const char *cert_file; /* optional PEM chain this client presents (the broker's pool cert) */
	const char *key_file;  /* its key; required exactly when cert_file is given */
	bool allow_world_readable_key; /* as in tls_server_options */
};

/* How the caller knows each file of the options, e.g. the configuration's "FILE:LINE:
 * 'private-key-path' in [[nts-ke-server]]" (borrowed; a NULL member: the path alone). A message
 * about that file is then "NAME: PATH: reason", the reason carrying the likely fix where there
 * is one (a file the program's user may not read, a key every user may read). */
struct tls_creds_names {
	const char *cert;      /* cert_file */
	const char *key;       /* key_file */
	const char *pool_cert; /* every pool_cert_files entry (server) */
	const char *ca;	       /* ca_file (client) */
};

/* Builds server credentials. opts and its strings are borrowed. On success *out is new (release
 * with tls_creds_unref). On failure returns negative errno (-ENOENT/-EACCES/-EIO unreadable file,
 * -EISDIR a directory, -EBADMSG malformed or wrong number of certificates, -EINVAL key not
 * matching or bad options, -ENOMEM) and, if err is not NULL, writes a message naming the file
 * and the reason into it. */
int tls_creds_new_server(struct tls_creds **out, const struct tls_server_options *opts, char *err,
			 size_t errlen);

/* Builds client credentials; same conventions as tls_creds_new_server. */
int tls_creds_new_client(struct tls_creds **out, const struct tls_client_options *opts, char *err,
			 size_t errlen);

/* As tls_creds_new_server and tls_creds_new_client, naming the files in messages as names
 * (borrowed; NULL: as those do). */
int tls_creds_new_server_named(struct tls_creds **out, const struct tls_server_options *opts,
			       const struct tls_creds_names *names, char *err, size_t errlen);
int tls_creds_new_client_named(struct tls_creds **out, const struct tls_client_options *opts,
			       const struct tls_creds_names *names, char *err, size_t errlen);

/* Adds a reference (atomically: credentials are shared by every loop); returns c (borrowed in,
 * shared out). */
struct tls_creds *tls_creds_ref(struct tls_creds *c);

/* Drops a reference; frees the object (wiping key material) with the last one. NULL is a no-op. */
void tls_creds_unref(struct tls_creds *c);

struct slot;
/* Makes s a slot of credentials (slot.h) holding c (its reference taken; may be NULL): a reload
 * publishes there and every worker's next connection and request reads the new ones. */
void tls_creds_slot_init(struct slot *s, struct tls_creds *c);

/* True for server credentials; c is borrowed. */
bool tls_creds_is_server(const struct tls_creds *c);

/* For the session layer. Both results are borrowed and live as long as c. */
gnutls_certificate_credentials_t tls_creds_gnutls(const struct tls_creds *c);
gnutls_priority_t tls_creds_priority(const struct tls_creds *c);

/* True if der (borrowed) is, byte for byte, one of the pinned pool certificates. */
bool tls_creds_is_pinned(const struct tls_creds *c, const gnutls_datum_t *der);

/* Number of pinned pool certificates (for status and logs); c is borrowed. */
size_t tls_creds_pinned_count(const struct tls_creds *c);

/* The TLS 1.3-only priority string every session uses. */
extern const char tls_creds_priority_string[];

#endif
