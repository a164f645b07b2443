/* An NTS-KE client connection, sans-I/O: a TLS client session plus request/response framing.
 * The broker uses it towards upstream time sources (with its pool certificate, Support and Fixed
 * Key requests, Keep Alive); the daemon's NTS sources will use it for plain key exchanges.
 *
 * The glue feeds received ciphertext in, sends what comes out, arms the deadline it asks for and
 * closes the socket once the connection is closed or failed. No socket, loop or clock inside:
 * time comes in as now_ms (monotonic milliseconds). */
#ifndef NTSPOOL_KE_CLIENT_H
#define NTSPOOL_KE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "tls.h"

enum ke_client_state {
	KE_CLIENT_HANDSHAKING, /* a request may already be queued; it is sent once established */
	KE_CLIENT_READY,       /* established and idle: a request may be sent */
	KE_CLIENT_WAITING,     /* a request is out, its response not complete yet */
	KE_CLIENT_RESPONSE,    /* a response is complete: take it with ke_client_response */
	KE_CLIENT_CLOSED,      /* closed cleanly (after a response without Keep Alive, or by us) */
	KE_CLIENT_FAILED,      /* handshake, I/O, framing or deadline failure: see ke_client_error */
};

struct ke_client;

/* creds: client credentials (a reference is taken); server_name: DNS name or IP literal to
 * verify (borrowed, copied). The handshake deadline is now_ms + timeout_ms. *out is new
 * (ke_client_free). Returns 0, -ENOMEM or a negative errno from TLS setup. */
int ke_client_new(struct ke_client **out, struct tls_creds *creds, const char *server_name,
		  enum ke_numbering numbering, uint64_t now_ms, uint64_t timeout_ms);
void ke_client_free(struct ke_client *c);

/* Ciphertext from the server (borrowed), in pieces of any size. Returns 0 or a negative errno
 * (then FAILED): besides the TLS errors, -ECONNRESET for close_notify before the response was
 * complete, -EMSGSIZE for a response over KE_MSG_RESPONSE_MAX, -EPROTO for data the server sends
 * unasked. TLS 1.3 post-handshake messages (session tickets, KeyUpdate) are not data: they are
 * consumed in any state. Input after CLOSED is ignored; after FAILED the failure is returned
 * again. */
int ke_client_input(struct ke_client *c, const uint8_t *buf, size_t len, uint64_t now_ms);
/* The server closed the TCP connection. WAITING/HANDSHAKING -> FAILED (-ECONNRESET); an idle
 * READY connection -> CLOSED; in RESPONSE the response stays usable but the connection will not
 * be kept. */
void ke_client_eof(struct ke_client *c, uint64_t now_ms);
/* The deadline passed: FAILED with -ETIMEDOUT unless idle (READY -> CLOSED). */
void ke_client_timeout(struct ke_client *c, uint64_t now_ms);

void ke_client_output(const struct ke_client *c, const uint8_t **ptr, size_t *len);
void ke_client_output_consume(struct ke_client *c, size_t n);

/* Absolute deadline in now_ms units, 0 = none (idle READY connections have none: the owner
 * applies its own idle timeout). While handshaking with a request queued, the earlier of the
 * handshake and response deadlines. */
uint64_t ke_client_deadline(const struct ke_client *c);
enum ke_client_state ke_client_state(const struct ke_client *c);

/* Queues one request (bytes from a ke_msg builder; copied, and wiped once written because a
 * Fixed Key request carries keys). Allowed in HANDSHAKING and READY; the response is parsed as a
 * reply to `kind` and must arrive within timeout_ms. The connection is kept after the response
 * only if req carries a Keep Alive record and the response echoes it. Returns 0, -EBUSY (a
 * request is already out or its response not taken), -ENOTCONN (closed/failed), -EINVAL (len 0
 * or over KE_MSG_REQUEST_MAX), -ENOMEM, or the error of the TLS write (then FAILED). */
int ke_client_send(struct ke_client *c, const uint8_t *req, size_t len,
		   enum ke_msg_request_kind kind, uint64_t now_ms, uint64_t timeout_ms);

/* True once the queued request was handed to TLS (encrypted into the output): from then on its
 * contents may have reached the server. */
bool ke_client_request_sent(const struct ke_client *c);

/* In RESPONSE: *resp (borrowed until ke_client_response_done) and the parse result of
 * ke_msg_parse_response (0, -EREMOTEIO, -EPROTO, -EBADMSG, -EMSGSIZE). */
int ke_client_response(const struct ke_client *c, const struct ke_msg_response **resp);

/* Done with the response: READY again when both sides agreed on Keep Alive (the request asked
 * and the response carried it), otherwise close_notify is queued and the state is CLOSED. */
void ke_client_response_done(struct ke_client *c, uint64_t now_ms);

/* Queues close_notify; CLOSED. */
void ke_client_close(struct ke_client *c);

/* The NTS keys of this session (RFC 8915 §5.1), for the daemon's sources. */
int ke_client_export(struct ke_client *c, uint16_t protocol, uint16_t aead, size_t key_len,
		     uint8_t *c2s, uint8_t *s2c);

/* The failure (negative errno, 0 if none) and a readable reason (borrowed; "" if none). */
int ke_client_error(const struct ke_client *c);
const char *ke_client_reason(const struct ke_client *c);

#endif
