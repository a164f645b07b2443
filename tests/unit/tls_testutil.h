/* Helpers shared by the TLS tests (ARCHITECTURE.md §6, layer 2): credentials from the certificates
 * tu_gen_cert writes, a pump that moves ciphertext between two in-memory ends until they settle,
 * and a "raw" GnuTLS peer driven by hand to play the misbehaving side (TLS 1.2, no or another
 * ALPN, arbitrary records). Every helper fails the test on an unexpected error. */
#ifndef NTSPOOL_TLS_TESTUTIL_H
#define NTSPOOL_TLS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

#include "tls.h"

/* ---- Credentials ---------------------------------------------------------------------------- */

/* Server credentials presenting DIR/NAME.chain.pem with DIR/NAME.key and pinning the n_pins
 * certificate files pins[i] (names in dir, e.g. "pool.pem") as authorised pools. New (caller
 * unrefs). */
struct tls_creds *tu_tls_server_creds(const char *dir, const char *name, const char *const *pins,
				      size_t n_pins);

/* Client credentials trusting DIR/ca.pem only (no system trust), presenting DIR/NAME.chain.pem
 * with DIR/NAME.key unless name is NULL. New (caller unrefs). */
struct tls_creds *tu_tls_client_creds(const char *dir, const char *name);

/* A client session with tu_tls_client_creds(dir, name), verifying server_name. New (tls_free);
 * the session holds the only reference to its credentials. */
struct tls_session *tu_tls_client_session(const char *dir, const char *name,
					  const char *server_name);

/* ---- The pump ------------------------------------------------------------------------------- */

/* One end of an in-memory connection as the pump sees it: a queue of ciphertext to take from it
 * and a way to hand it more. Every callback gets ctx (borrowed). */
struct tu_tls_end {
	void *ctx;
	/* Optional: lets the end make progress (e.g. tls_step) at the start of each round. */
	void (*step)(void *ctx);
	/* Its queued output, borrowed until consume. */
	void (*output)(void *ctx, const uint8_t **p, size_t *n);
	void (*consume)(void *ctx, size_t n);
	/* Hands it ciphertext; anything but 0 fails the test unless failed() says it has failed. */
	int (*input)(void *ctx, const uint8_t *p, size_t n);
	/* Optional: true once the end has failed; from then on it is handed nothing more. */
	bool (*failed)(void *ctx);
	/* Optional: shown each piece taken from its output, as it goes to the other end. */
	void (*sent)(void *ctx, const uint8_t *p, size_t n);
	/* Largest piece handed to input at once, as one socket read would (0: all there is). */
	size_t chunk;
};

/* A bare tls_session (borrowed) as an end: tls_step, tls_output, tls_feed. */
struct tu_tls_end tu_tls_session_end(struct tls_session *s);

/* Defines `static struct tu_tls_end NAME(CTX_TYPE *h)` (and its static callbacks NAME_output,
 * NAME_consume, NAME_input): the sans-I/O machine h->FIELD as an end, driven through
 * PREFIX_output, PREFIX_output_consume and PREFIX_input(machine, p, n, h->now), the shape that
 * ke_server_conn, pool_session and ke_client share. It has no step: its input drives it. */
#define TU_TLS_MACHINE_END(name, ctx_type, field, prefix)                                          \
	static void name##_output(void *ctx, const uint8_t **p, size_t *n)                         \
	{                                                                                          \
		prefix##_output(((ctx_type *)ctx)->field, p, n);                                   \
	}                                                                                          \
	static void name##_consume(void *ctx, size_t n)                                            \
	{                                                                                          \
		prefix##_output_consume(((ctx_type *)ctx)->field, n);                              \
	}                                                                                          \
	static int name##_input(void *ctx, const uint8_t *p, size_t n)                             \
	{                                                                                          \
		ctx_type *c_ = ctx;                                                                \
		return prefix##_input(c_->field, p, n, c_->now);                                   \
	}                                                                                          \
	static struct tu_tls_end name(ctx_type *h)                                                 \
	{                                                                                          \
		return (struct tu_tls_end){ .ctx = h, .output = name##_output,                     \
					    .consume = name##_consume, .input = name##_input };    \
	}

/* Hands everything `from` has queued to `to`, in to->chunk pieces; stops early once to has
 * failed. Returns whether anything moved. */
bool tu_tls_move(const struct tu_tls_end *from, const struct tu_tls_end *to);

/* Rounds of: step both ends (a first), move a's output to b, then b's to a; until a round moves
 * nothing. Fails the test if 64 rounds do not settle the exchange. */
void tu_tls_pump(const struct tu_tls_end *a, const struct tu_tls_end *b);

/* ---- The raw GnuTLS peer -------------------------------------------------------------------- */

#define TU_TLS_RAW_QUEUE (64 * 1024)

/* A plain GnuTLS session over two byte queues of its own. The caller may use gs directly
 * (gnutls_record_send, key updates, hooks, its session pointer) and the queues: in holds what it
 * has yet to read, out what it wrote while no session is attached (tu_tls_raw_attach). */
struct tu_tls_raw {
	gnutls_session_t gs;
	gnutls_certificate_credentials_t cred;
	/* The last gnutls_handshake result of the end's step (GNUTLS_E_AGAIN until it ends). */
	int handshake;
	struct tls_session *attached;
	uint8_t in[TU_TLS_RAW_QUEUE], out[TU_TLS_RAW_QUEUE];
	size_t in_len, out_len;
};

/* A client made by gnutls_init(GNUTLS_CLIENT) with priority string prio and, unless alpn is NULL,
 * that one ALPN protocol offered. It presents no certificate and verifies none. New
 * (tu_tls_raw_free). */
struct tu_tls_raw *tu_tls_raw_client(const char *prio, const char *alpn);

/* A server made by gnutls_init(GNUTLS_SERVER | flags), otherwise as tu_tls_raw_client, presenting
 * DIR/NAME.chain.pem with DIR/NAME.key. It asks no client certificate unless the caller sets
 * gnutls_certificate_server_set_request. New (tu_tls_raw_free). */
struct tu_tls_raw *tu_tls_raw_server(const char *dir, const char *name, unsigned flags,
				     const char *prio, const char *alpn);

/* Frees the session, its credentials and r. NULL is a no-op. */
void tu_tls_raw_free(struct tu_tls_raw *r);

/* From now on everything r writes goes straight into s (borrowed, tls_feed) instead of r->out,
 * as if over a socket; NULL queues in r->out again. */
void tu_tls_raw_attach(struct tu_tls_raw *r, struct tls_session *s);

/* gnutls_record_recv, reading on past post-handshake messages (GnuTLS says "again" after each)
 * while queued input is left. Returns its last result. */
ssize_t tu_tls_raw_recv(struct tu_tls_raw *r, void *buf, size_t cap);

/* r as an end: its step runs gnutls_handshake until that ends, sending the alert a failure calls
 * for; its output is r->out and its input goes to r->in. */
struct tu_tls_end tu_tls_raw_end(struct tu_tls_raw *r);

#endif
