/* A TLS 1.3 session (GnuTLS) that never touches a socket.
 *
 * The caller feeds received ciphertext in (tls_feed), drives the session (tls_step, tls_read,
 * tls_write, tls_close) and takes ciphertext to send out (tls_output, tls_output_consume). This
 * is what the libuv glue and the tests drive. Every handshake is TLS 1.3 only with ALPN "ntske/1"
 * required on both sides (PROTOCOL.md §1). A server requests, but does not require, a client
 * certificate and marks the peer an authorised pool when that certificate is pinned (§3.4). */
#ifndef NTSPOOL_TLS_H
#define NTSPOOL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tls_creds.h"

/* Ciphertext waiting to be processed: more than one libuv read, a few TLS records. */
#define TLS_IN_MAX (96 * 1024)
/* Ciphertext waiting to be sent: a 64 KiB response plus record overhead, with room to spare. */
#define TLS_OUT_MAX (256 * 1024)

#define TLS_ALPN "ntske/1"
#define TLS_EXPORTER_LABEL "EXPORTER-network-time-security"

enum tls_state {
	TLS_HANDSHAKING = 0,
	TLS_ESTABLISHED = 1,
	TLS_CLOSED = 2, /* close_notify sent or received after an established session */
	TLS_FAILED = 3,
};

struct tls_session;

/* A server session. creds (borrowed) must be server credentials; the session takes its own
 * reference. *out is new (tls_free). Returns 0, -EINVAL or -ENOMEM. */
int tls_session_new_server(struct tls_session **out, struct tls_creds *creds);

/* A client session verifying the server against server_name (borrowed, copied): a DNS name (sent
 * as SNI, matched against DNS SANs) or an IPv4/IPv6 literal (matched against IP SANs only, no
 * SNI). creds (borrowed) must be client credentials; the session takes its own reference.
 * *out is new (tls_free). Returns 0, -EINVAL (bad name, wrong credentials) or -ENOMEM. */
int tls_session_new_client(struct tls_session **out, struct tls_creds *creds,
			   const char *server_name);

/* Frees the session and drops its credentials reference. NULL is a no-op. */
void tls_free(struct tls_session *s);

/* Queues received ciphertext (borrowed, copied). All or nothing: -EMSGSIZE when it would take the
 * input queue past TLS_IN_MAX (nothing queued), 0 otherwise. */
int tls_feed(struct tls_session *s, const void *buf, size_t len);

/* Advances the handshake with the queued input. Returns the state (TLS_HANDSHAKING while it needs
 * more input, TLS_ESTABLISHED, TLS_CLOSED) or, once failed, the negative errno of the failure:
 * -EACCES peer certificate not trusted / name mismatch, -EPROTO protocol failure (TLS version,
 * ALPN, malformed data), -ECONNRESET peer sent a fatal alert, -EMSGSIZE a queue overflowed,
 * -ENOMEM. Failures are sticky. Output (including an alert on failure) may be pending after any
 * call. */
int tls_step(struct tls_session *s);

/* The current state; s is borrowed. */
enum tls_state tls_state(const struct tls_session *s);

/* Human-readable reason of the failure (borrowed, lives as long as s); "" when not failed. */
const char *tls_reason(const struct tls_session *s);

/* Reads decrypted application data into buf. Post-handshake messages queued ahead of it (TLS 1.3
 * session tickets, KeyUpdate) are consumed on the way and never returned. Returns bytes read
 * (> 0), 0 when the peer sent close_notify, -EAGAIN once the queued input holds no complete
 * record (only more input can change that), -ENOTCONN before the handshake completed, or a
 * negative errno on failure (the session is then failed). */
ssize_t tls_read(struct tls_session *s, void *buf, size_t cap);

/* Encrypts the whole of buf (borrowed) into the output queue. Returns 0, -ENOTCONN (not
 * established), -EPIPE (after tls_close), -EMSGSIZE (would overflow TLS_OUT_MAX; nothing
 * queued), or a negative errno on failure. */
int tls_write(struct tls_session *s, const void *buf, size_t len);

/* Queues close_notify. Returns 0 or a negative errno. Reading stays possible afterwards. */
int tls_close(struct tls_session *s);

/* Ciphertext waiting to be sent: *ptr (borrowed, valid until the next call on s) and *len. */
void tls_output(const struct tls_session *s, const uint8_t **ptr, size_t *len);

/* Drops the first n bytes of the output (n <= the length tls_output gave). */
void tls_output_consume(struct tls_session *s, size_t n);

/* On a server session once the handshake completed: the DNS name the client sent in SNI, copied
 * into buf (NUL-terminated, at most len - 1 bytes). 0, or -ENOENT when it sent none (or the
 * handshake is not done, or this is a client session), -ENAMETOOLONG when it does not fit. */
int tls_server_name(const struct tls_session *s, char *buf, size_t len);

/* True on a server session whose peer presented a pinned pool certificate (valid once the
 * handshake completed; false before and on client sessions). */
bool tls_peer_is_authorised_pool(const struct tls_session *s);

/* As tls_peer_is_authorised_pool, against the pinned certificates of creds (borrowed) instead of
 * those the session started with: a server that reloaded its pins checks each request of a
 * kept-alive connection against the pins now in force. */
bool tls_peer_is_pinned_by(const struct tls_session *s, const struct tls_creds *creds);

/* The NTS keys of RFC 8915 §5.1 from the TLS exporter: c2s and s2c (caller's buffers of key_len
 * bytes each) for the given protocol and AEAD ids. Returns 0, -ENOTCONN before the handshake
 * completed or -EIO, with both buffers zeroed; -EINVAL (buffers untouched) for key_len 0 or over
 * 1024. */
int tls_export_nts_keys(struct tls_session *s, uint16_t protocol, uint16_t aead, size_t key_len,
			uint8_t *c2s, uint8_t *s2c);

#endif
