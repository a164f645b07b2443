#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

/* A byte queue with a hard size limit; bytes live in buf[head, head + len). */
struct queue {
	uint8_t *buf;
	size_t head;
	size_t len;
	size_t cap;
	size_t max;
};

struct tls_session {
	gnutls_session_t gs;
	struct tls_creds *creds;
	bool server;
	enum tls_state state;
	int error;
	bool handshake_done;
	bool sent_close;
	bool peer_closed;
	bool out_overflow;
	bool authorised_pool;
	struct queue in;
	struct queue out;
	char *server_name;
	uint8_t ip[16];
	/* gnutls_session_set_verify_cert2 keeps a pointer to this, so it lives in the session. */
	gnutls_typed_vdata_st vdata[2];
	char reason[256];
};

/* Not const because gnutls_typed_vdata_st.data is not; GnuTLS only reads it. */
static char kp_tls_server[] = GNUTLS_KP_TLS_WWW_SERVER;

static int queue_append(struct queue *q, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (n > q->max - q->len)
		return -EMSGSIZE;
	if (q->head + q->len + n > q->cap) {
		if (q->head > 0) {
			memmove(q->buf, q->buf + q->head, q->len);
			q->head = 0;
		}
		if (q->len + n > q->cap) {
			size_t ncap = q->cap ? q->cap * 2 : 4096;
			if (ncap < q->len + n)
				ncap = q->len + n;
			if (ncap > q->max)
				ncap = q->max;
			uint8_t *nb = realloc(q->buf, ncap);
			if (!nb)
				return -ENOMEM;
			q->buf = nb;
			q->cap = ncap;
		}
	}
	memcpy(q->buf + q->head + q->len, p, n);
	q->len += n;
	return 0;
}

static void queue_drop(struct queue *q, size_t n)
{
	if (n > q->len)
		n = q->len;
	q->head += n;
	q->len -= n;
	if (q->len == 0)
		q->head = 0;
}

static ssize_t push(gnutls_transport_ptr_t ptr, const void *data, size_t len)
{
	struct tls_session *s = ptr;
	if (queue_append(&s->out, data, len) < 0) {
		s->out_overflow = true;
		gnutls_transport_set_errno(s->gs, ENOBUFS);
		return -1;
	}
	return (ssize_t)len;
}

static ssize_t pull(gnutls_transport_ptr_t ptr, void *data, size_t len)
{
	struct tls_session *s = ptr;
	if (s->in.len == 0) {
		gnutls_transport_set_errno(s->gs, EAGAIN);
		return -1;
	}
	size_t n = len < s->in.len ? len : s->in.len;
	memcpy(data, s->in.buf + s->in.head, n);
	queue_drop(&s->in, n);
	return (ssize_t)n;
}

/* GnuTLS's default would select() on the transport pointer as if it were a file descriptor. */
static int pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
	const struct tls_session *s = ptr;
	(void)ms;
	return s->in.len > 0 ? 1 : 0;
}

static int fail(struct tls_session *s, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct tls_session *s, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
	va_end(ap);
	/* GnuTLS's status text ends in a space; keep log lines tidy. */
	size_t n = strlen(s->reason);
	while (n > 0 && s->reason[n - 1] == ' ')
		s->reason[--n] = '\0';
	s->state = TLS_FAILED;
	s->error = err;
	return err;
}

static int gnutls_to_errno(const struct tls_session *s, int g)
{
	switch (g) {
	case GNUTLS_E_AGAIN:
	case GNUTLS_E_INTERRUPTED:
		return -EAGAIN;
	case GNUTLS_E_PUSH_ERROR:
		return s->out_overflow ? -EMSGSIZE : -EIO;
	case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
	case GNUTLS_E_CERTIFICATE_ERROR:
		return -EACCES;
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
		return -ECONNRESET;
	case GNUTLS_E_MEMORY_ERROR:
		return -ENOMEM;
	default:
		return -EPROTO;
	}
}

/* Fails the session for GnuTLS error g during `what`, telling the peer why when it makes sense. */
static int fail_gnutls(struct tls_session *s, int g, const char *what)
{
	int err = gnutls_to_errno(s, g);
	if (g == GNUTLS_E_FATAL_ALERT_RECEIVED || g == GNUTLS_E_WARNING_ALERT_RECEIVED)
		return fail(s, err, "%s: peer sent alert: %s", what,
			    gnutls_alert_get_name(gnutls_alert_get(s->gs)));
	if (g != GNUTLS_E_PUSH_ERROR)
		gnutls_alert_send_appropriate(s->gs, g);
	if (g == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t text = { NULL, 0 };
		unsigned status = gnutls_session_get_verify_cert_status(s->gs);
		if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
			fail(s, err, "%s: server certificate rejected: %s", what, (const char *)text.data);
			gnutls_free(text.data);
			return err;
		}
	}
	if (s->out_overflow)
		return fail(s, err, "%s: output queue full (%d bytes)", what, TLS_OUT_MAX);
	return fail(s, err, "%s: %s", what, gnutls_strerror(g));
}

static int session_alloc(struct tls_session **out, struct tls_creds *creds, bool server)
{
	struct tls_session *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->server = server;
	s->in.max = TLS_IN_MAX;
	s->out.max = TLS_OUT_MAX;
	unsigned flags = (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
	int g = gnutls_init(&s->gs, flags);
	if (g < 0) {
		free(s);
		return g == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EINVAL;
	}
	s->creds = tls_creds_ref(creds);
	g = gnutls_priority_set(s->gs, tls_creds_priority(creds));
	if (g >= 0)
		g = gnutls_credentials_set(s->gs, GNUTLS_CRD_CERTIFICATE, tls_creds_gnutls(creds));
	if (g >= 0) {
		gnutls_datum_t alpn = { (unsigned char *)TLS_ALPN, sizeof(TLS_ALPN) - 1 };
		g = gnutls_alpn_set_protocols(s->gs, &alpn, 1, server ? GNUTLS_ALPN_MANDATORY : 0);
	}
	if (g < 0) {
		int err = gnutls_to_errno(s, g);
		tls_free(s);
		return err;
	}
	gnutls_transport_set_ptr(s->gs, s);
	gnutls_transport_set_push_function(s->gs, push);
	gnutls_transport_set_pull_function(s->gs, pull);
	gnutls_transport_set_pull_timeout_function(s->gs, pull_timeout);
	/* Deadlines belong to the caller, who knows the time; GnuTLS must not read a clock. */
	gnutls_handshake_set_timeout(s->gs, 0);
	*out = s;
	return 0;
}

int tls_session_new_server(struct tls_session **out, struct tls_creds *creds)
{
	if (!tls_creds_is_server(creds))
		return -EINVAL;
	struct tls_session *s = NULL;
	int ret = session_alloc(&s, creds, true);
	if (ret < 0)
		return ret;
	/* Request, not require: ordinary clients stay anonymous. No CA list, so a pool offers its
	 * certificate whoever issued it; pinning decides, not the chain. */
	gnutls_certificate_server_set_request(s->gs, GNUTLS_CERT_REQUEST);
	gnutls_certificate_send_x509_rdn_sequence(s->gs, 1);
	*out = s;
	return 0;
}

static bool valid_dns_name(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '.' || c == '_';
		if (!ok)
			return false;
	}
	return true;
}

int tls_session_new_client(struct tls_session **out, struct tls_creds *creds,
			   const char *server_name)
{
	if (tls_creds_is_server(creds) || !server_name)
		return -EINVAL;
	struct tls_session *s = NULL;
	int ret = session_alloc(&s, creds, false);
	if (ret < 0)
		return ret;
	s->server_name = strdup(server_name);
	if (!s->server_name) {
		ret = -ENOMEM;
		goto fail;
	}
	/* An IP literal is matched against IP SANs only: GnuTLS's hostname check would also accept
	 * the address written as a DNS SAN or as the CN. RFC 6066 forbids IP literals in SNI. */
	if (inet_pton(AF_INET, server_name, s->ip) == 1) {
		s->vdata[0] = (gnutls_typed_vdata_st){ GNUTLS_DT_IP_ADDRESS, s->ip, 4 };
	} else if (inet_pton(AF_INET6, server_name, s->ip) == 1) {
		s->vdata[0] = (gnutls_typed_vdata_st){ GNUTLS_DT_IP_ADDRESS, s->ip, 16 };
	} else if (valid_dns_name(server_name)) {
		s->vdata[0] = (gnutls_typed_vdata_st){ GNUTLS_DT_DNS_HOSTNAME,
						       (unsigned char *)s->server_name, 0 };
		int g = gnutls_server_name_set(s->gs, GNUTLS_NAME_DNS, s->server_name,
					       strlen(s->server_name));
		if (g < 0) {
			ret = gnutls_to_errno(s, g);
			goto fail;
		}
	} else {
		ret = -EINVAL;
		goto fail;
	}
	s->vdata[1] = (gnutls_typed_vdata_st){ GNUTLS_DT_KEY_PURPOSE_OID,
					       (unsigned char *)kp_tls_server, 0 };
	gnutls_session_set_verify_cert2(s->gs, s->vdata, 2, 0);
	*out = s;
	return 0;
fail:
	tls_free(s);
	return ret;
}

void tls_free(struct tls_session *s)
{
	if (!s)
		return;
	gnutls_deinit(s->gs);
	tls_creds_unref(s->creds);
	free(s->in.buf);
	free(s->out.buf);
	free(s->server_name);
	free(s);
}

int tls_feed(struct tls_session *s, const void *buf, size_t len)
{
	return queue_append(&s->in, buf, len);
}

static bool alpn_is_ntske(gnutls_session_t gs)
{
	gnutls_datum_t p = { NULL, 0 };
	if (gnutls_alpn_get_selected_protocol(gs, &p) < 0)
		return false;
	return p.size == sizeof(TLS_ALPN) - 1 && memcmp(p.data, TLS_ALPN, p.size) == 0;
}

static int handshake_done(struct tls_session *s)
{
	if (gnutls_protocol_get_version(s->gs) != GNUTLS_TLS1_3) {
		gnutls_alert_send(s->gs, GNUTLS_AL_FATAL, GNUTLS_A_PROTOCOL_VERSION);
		return fail(s, -EPROTO, "handshake: negotiated %s, not TLS 1.3",
			    gnutls_protocol_get_name(gnutls_protocol_get_version(s->gs)));
	}
	/* GNUTLS_ALPN_MANDATORY only rejects a mismatch; a peer that sends no ALPN gets through. */
	if (!alpn_is_ntske(s->gs)) {
		gnutls_alert_send(s->gs, GNUTLS_AL_FATAL, GNUTLS_A_NO_APPLICATION_PROTOCOL);
		return fail(s, -EPROTO, "handshake: peer did not negotiate ALPN \"%s\"", TLS_ALPN);
	}
	if (s->server && gnutls_certificate_type_get2(s->gs, GNUTLS_CTYPE_PEERS) == GNUTLS_CRT_X509) {
		unsigned n = 0;
		const gnutls_datum_t *certs = gnutls_certificate_get_peers(s->gs, &n);
		/* TLS 1.3 CertificateVerify already proved the peer holds this certificate's key. */
		s->authorised_pool = certs && n > 0 && tls_creds_is_pinned(s->creds, &certs[0]);
	}
	s->handshake_done = true;
	s->state = TLS_ESTABLISHED;
	return TLS_ESTABLISHED;
}

int tls_step(struct tls_session *s)
{
	if (s->state == TLS_FAILED)
		return s->error;
	if (s->state != TLS_HANDSHAKING)
		return (int)s->state;
	int g = gnutls_handshake(s->gs);
	if (g == 0)
		return handshake_done(s);
	if (g == GNUTLS_E_AGAIN || g == GNUTLS_E_INTERRUPTED)
		return s->out_overflow ? fail_gnutls(s, GNUTLS_E_PUSH_ERROR, "handshake")
				       : TLS_HANDSHAKING;
	/* Any other error, even a non-fatal alert such as close_notify, ends a handshake. */
	return fail_gnutls(s, g, "handshake");
}

enum tls_state tls_state(const struct tls_session *s)
{
	return s->state;
}

const char *tls_reason(const struct tls_session *s)
{
	return s->reason;
}

ssize_t tls_read(struct tls_session *s, void *buf, size_t cap)
{
	if (s->state == TLS_FAILED)
		return s->error;
	if (!s->handshake_done)
		return -ENOTCONN;
	if (cap == 0)
		return -EINVAL;
	if (s->peer_closed)
		return 0;
	for (;;) {
		size_t queued = s->in.len;
		ssize_t n = gnutls_record_recv(s->gs, buf, cap);
		if (n > 0)
			return n;
		if (n == 0) {
			s->peer_closed = true;
			s->state = TLS_CLOSED;
			return 0;
		}
		/* GnuTLS also says "again" right after it consumed a post-handshake message
		 * (NewSessionTicket, KeyUpdate), whatever is queued behind it. Read on while it
		 * takes input: each pass drains the bounded queue, so an incomplete record ends
		 * the loop. */
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			if (s->in.len > 0 && s->in.len < queued)
				continue;
			return -EAGAIN;
		}
		/* A warning alert (user_canceled in TLS 1.3) consumed its record; carry on. */
		if (n != GNUTLS_E_WARNING_ALERT_RECEIVED)
			return fail_gnutls(s, (int)n, "read");
	}
}

int tls_write(struct tls_session *s, const void *buf, size_t len)
{
	if (s->state == TLS_FAILED)
		return s->error;
	if (!s->handshake_done)
		return -ENOTCONN;
	if (s->sent_close)
		return -EPIPE;
	if (len == 0)
		return 0;
	/* Refuse up front what cannot fit, so a message is either queued whole or not at all. One
	 * record more than the data needs: a KeyUpdate the peer asked for (a 5-byte message) goes
	 * out ahead of it, and GnuTLS does not tell whether one is owed. */
	size_t rec = gnutls_record_get_max_size(s->gs);
	if (rec == 0)
		rec = 1;
	size_t overhead = (len / rec + 2) * (gnutls_record_overhead_size(s->gs) + 5);
	if (len > TLS_OUT_MAX || overhead > TLS_OUT_MAX - len || s->out.len > TLS_OUT_MAX - len - overhead)
		return -EMSGSIZE;
	const uint8_t *p = buf;
	size_t off = 0;
	while (off < len) {
		ssize_t n = gnutls_record_send(s->gs, p + off, len - off);
		if (n < 0)
			return fail_gnutls(s, (int)n, "write");
		off += (size_t)n;
	}
	return 0;
}

int tls_close(struct tls_session *s)
{
	if (s->state == TLS_FAILED)
		return s->error;
	if (!s->handshake_done)
		return -ENOTCONN;
	if (s->sent_close)
		return 0;
	int g = gnutls_bye(s->gs, GNUTLS_SHUT_WR);
	if (g < 0)
		return fail_gnutls(s, g, "close");
	s->sent_close = true;
	s->state = TLS_CLOSED;
	return 0;
}

void tls_output(const struct tls_session *s, const uint8_t **ptr, size_t *len)
{
	*ptr = s->out.len ? s->out.buf + s->out.head : NULL;
	*len = s->out.len;
}

void tls_output_consume(struct tls_session *s, size_t n)
{
	queue_drop(&s->out, n);
}

int tls_server_name(const struct tls_session *s, char *buf, size_t len)
{
	if (!s->handshake_done || !s->server || len == 0)
		return -ENOENT;
	/* GnuTLS copies the name and a NUL only when it is shorter than the size given. */
	size_t n = len;
	unsigned type = 0;
	int g = gnutls_server_name_get(s->gs, buf, &n, &type, 0);
	if (g == GNUTLS_E_SHORT_MEMORY_BUFFER)
		return -ENAMETOOLONG;
	if (g < 0 || type != GNUTLS_NAME_DNS || n >= len)
		return -ENOENT;
	buf[n] = '\0';
	/* The name is the client's bytes: one with a NUL inside is no name. */
	return strlen(buf) == n ? 0 : -ENOENT;
}

bool tls_peer_is_authorised_pool(const struct tls_session *s)
{
	return s->handshake_done && s->authorised_pool;
}

bool tls_peer_is_pinned_by(const struct tls_session *s, const struct tls_creds *creds)
{
	if (!s->handshake_done || !s->server ||
	    gnutls_certificate_type_get2(s->gs, GNUTLS_CTYPE_PEERS) != GNUTLS_CRT_X509)
		return false;
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(s->gs, &n);
	return certs && n > 0 && tls_creds_is_pinned(creds, &certs[0]);
}

int tls_export_nts_keys(struct tls_session *s, uint16_t protocol, uint16_t aead, size_t key_len,
			uint8_t *c2s, uint8_t *s2c)
{
	int ret;
	if (key_len == 0 || key_len > 1024)
		return -EINVAL;
	if (!s->handshake_done || s->state == TLS_FAILED) {
		ret = -ENOTCONN;
		goto fail;
	}
	char ctx[5] = { (char)(protocol >> 8), (char)(protocol & 0xff), (char)(aead >> 8),
			(char)(aead & 0xff), 0x00 };
	const size_t label_len = sizeof(TLS_EXPORTER_LABEL) - 1;
	int g = gnutls_prf_rfc5705(s->gs, label_len, TLS_EXPORTER_LABEL, sizeof(ctx), ctx, key_len,
				   (char *)c2s);
	if (g >= 0) {
		ctx[4] = 0x01;
		g = gnutls_prf_rfc5705(s->gs, label_len, TLS_EXPORTER_LABEL, sizeof(ctx), ctx,
				       key_len, (char *)s2c);
	}
	if (g < 0) {
		ret = -EIO;
		goto fail;
	}
	return 0;
fail:
	gnutls_memset(c2s, 0, key_len);
	gnutls_memset(s2c, 0, key_len);
	return ret;
}
