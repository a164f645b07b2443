/* broken-upstream IP:PORT CHAIN KEY SECONDS MODE: an NTS-KE server (TLS 1.3, ALPN ntske/1, the
 * certificate chain CHAIN with its key KEY) that answers a pool's Support requests correctly and
 * fails every Fixed Key request. It stands for an upstream whose probes pass while every session
 * sent to it fails. Support (with or without an Authentication token, which is not checked; in
 * either pool numbering, found per request) is answered NTPv4 and AEADs 15 and 17, Keep Alive
 * honoured. A Fixed Key request is answered according to MODE:
 *   error     Error 1, End, then the connection is closed
 *   hang      nothing, ever (the connection stays open)
 *   drip      a valid-looking success response, one byte every 500 ms
 *   no-end    the records of a success response without End, then nothing
 *   oversize  a record stream larger than the KE message limit (KE_MSG_RESPONSE_MAX), End last
 * Any other request is answered as a time source would refuse it (Error 0 or 1). Each request
 * handled is logged on stderr. At most MAX_CONNS connections at once (more are closed at
 * accept), each read bounded by KE_MSG_REQUEST_MAX. Exits 0 after SECONDS (1..3600) or on
 * SIGTERM/SIGINT; 1 on a socket or TLS setup failure, 2 on usage errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "ke_msg.h"
#include "ke_record.h"
#include "tls.h"
#include "tls_creds.h"
#include "tool_net.h"
#include "wire.h"

#define MAX_CONNS 256
#define DRIP_MS 500
#define COOKIE_LEN 64
/* The oversize stream: New Cookie records of the largest size until past the limit. */
#define OVERSIZE_COOKIES ((KE_MSG_RESPONSE_MAX / (KE_RECORD_HEADER_LEN + KE_MSG_COOKIE_MAX)) + 8)
#define OVERSIZE_CAP (KE_MSG_RESPONSE_MAX + 16 * 1024)

enum mode { MODE_ERROR, MODE_HANG, MODE_DRIP, MODE_NO_END, MODE_OVERSIZE };

static const char *const mode_names[] = { "error", "hang", "drip", "no-end", "oversize" };

enum conn_state {
	C_READING,  /* handshake and requests */
	C_HOLDING,  /* answered nothing or a partial message: the input is dropped */
	C_DRIPPING, /* the drip buffer goes out byte by byte; the input is dropped */
	C_CLOSING,  /* close_notify queued: once flushed, shut down writing, read until EOF */
};

struct conn {
	int fd;
	struct tls_session *tls;
	enum conn_state state;
	bool shut;
	enum ke_numbering numbering;
	size_t have;
	uint8_t in[KE_MSG_REQUEST_MAX]; /* plaintext of the request being read */
	uint8_t *drip;
	size_t drip_len, drip_off;
	int64_t next_drip_ms;
};

struct server {
	enum mode mode;
	struct tls_creds *creds;
	struct conn *conns[MAX_CONNS];
	size_t n;
	unsigned long supports, fixed;
};



static void conn_free(struct conn *c)
{
	close(c->fd);
	tls_free(c->tls);
	free(c->drip);
	gnutls_memset(c->in, 0, sizeof c->in);
	free(c);
}

/* Sends what the session has queued; -EIO when the socket is gone. */
static int flush(struct conn *c)
{
	const uint8_t *p;
	size_t len;
	tls_output(c->tls, &p, &len);
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -EIO;
		tls_output_consume(c->tls, (size_t)n);
		tls_output(c->tls, &p, &len);
	}
	if (c->state == C_CLOSING && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = true;
	}
	return 0;
}

static bool output_pending(const struct conn *c)
{
	const uint8_t *p;
	size_t len;
	tls_output(c->tls, &p, &len);
	return len > 0;
}

/* Queues a whole message; without keep_alive the connection closes after it. */
static int answer(struct conn *c, const void *msg, size_t len, bool keep_alive)
{
	int rc = tls_write(c->tls, msg, len);
	if (rc < 0)
		return rc;
	if (!keep_alive) {
		rc = tls_close(c->tls);
		c->state = C_CLOSING;
	}
	return rc;
}

static int answer_error(struct conn *c, uint16_t code)
{
	uint8_t msg[16];
	int len = ke_msg_build_error(msg, sizeof msg, c->numbering, code);
	return len < 0 ? len : answer(c, msg, (size_t)len, false);
}

static int answer_support(struct server *sv, struct conn *c, const struct ke_msg_request *req)
{
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	static const struct ke_msg_algorithm algs[] = { { 15, 32 }, { 17, 64 } };
	struct ke_msg_support s = { .protocols = req->want_protocols, .protocol_ids = protocols,
				    .n_protocols = 1, .algorithms = req->want_algorithms,
				    .algs = algs, .n_algs = 2, .keep_alive = req->keep_alive };
	uint8_t msg[128];
	int len = ke_msg_build_support_response(msg, sizeof msg, c->numbering, &s);
	if (len < 0)
		return len;
	sv->supports++;
	fprintf(stderr, "broken-upstream: Support answered%s (%lu so far)\n",
		req->keep_alive ? ", kept alive" : "", sv->supports);
	return answer(c, msg, (size_t)len, req->keep_alive);
}

/* A success response for the request's protocol and AEAD with random cookies: what a working
 * time source would send, byte for byte in shape. */
static int build_success(const struct conn *c, const struct ke_msg_request *req, uint8_t *buf,
			 size_t cap)
{
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	for (size_t i = 0; i < KE_MSG_MAX_COOKIES; i++) {
		cookies[i].len = COOKIE_LEN;
		if (gnutls_rnd(GNUTLS_RND_NONCE, cookies[i].data, COOKIE_LEN) < 0)
			return -EIO;
	}
	struct ke_msg_success s = { .protocol = req->protocols[0], .aead = req->aeads[0],
				    .cookies = cookies, .n_cookies = KE_MSG_MAX_COOKIES };
	return ke_msg_build_success(buf, cap, c->numbering, &s);
}

static int build_oversize(const struct conn *c, const struct ke_msg_request *req, uint8_t *buf,
			  size_t cap)
{
	uint8_t cookie[KE_MSG_COOKIE_MAX];
	if (gnutls_rnd(GNUTLS_RND_NONCE, cookie, sizeof cookie) < 0)
		return -EIO;
	struct wire_writer w;
	wire_writer_init(&w, buf, cap);
	int rc = ke_record_put_u16_list(&w, c->numbering, KE_RECORD_NEXT_PROTOCOL,
					&req->protocols[0], 1);
	if (rc == 0)
		rc = ke_record_put_u16_list(&w, c->numbering, KE_RECORD_AEAD, &req->aeads[0], 1);
	for (size_t i = 0; rc == 0 && i < OVERSIZE_COOKIES; i++)
		rc = ke_record_put(&w, c->numbering, KE_RECORD_NEW_COOKIE, cookie, sizeof cookie);
	if (rc == 0)
		rc = ke_record_put(&w, c->numbering, KE_RECORD_END, NULL, 0);
	return rc < 0 ? rc : (int)wire_written(&w);
}

static int answer_fixed(struct server *sv, struct conn *c, const struct ke_msg_request *req)
{
	sv->fixed++;
	fprintf(stderr, "broken-upstream: Fixed Key request %lu, answered as '%s'\n", sv->fixed,
		mode_names[sv->mode]);
	switch (sv->mode) {
	case MODE_ERROR:
		return answer_error(c, KE_MSG_ERROR_BAD_REQUEST);
	case MODE_HANG:
		c->state = C_HOLDING;
		return 0;
	case MODE_DRIP:
	case MODE_NO_END: {
		uint8_t msg[2048];
		int len = build_success(c, req, msg, sizeof msg);
		if (len < KE_RECORD_HEADER_LEN)
			return len < 0 ? len : -EIO;
		if (sv->mode == MODE_NO_END) {
			/* The End record is the last 4 bytes. */
			c->state = C_HOLDING;
			return tls_write(c->tls, msg, (size_t)len - KE_RECORD_HEADER_LEN);
		}
		c->drip = malloc((size_t)len);
		if (!c->drip)
			return -ENOMEM;
		memcpy(c->drip, msg, (size_t)len);
		c->drip_len = (size_t)len;
		c->drip_off = 0;
		c->next_drip_ms = tool_now_ms();
		c->state = C_DRIPPING;
		return 0;
	}
	case MODE_OVERSIZE: {
		uint8_t *msg = malloc(OVERSIZE_CAP);
		if (!msg)
			return -ENOMEM;
		int len = build_oversize(c, req, msg, OVERSIZE_CAP);
		int rc = len < 0 ? len : answer(c, msg, (size_t)len, false);
		free(msg);
		return rc;
	}
	}
	return -EINVAL;
}

/* One complete request of len bytes at c->in. The numbering is the one the request parses in;
 * it is kept for the connection's answers. */
static int handle_request(struct server *sv, struct conn *c, size_t len)
{
	struct ke_msg_request req;
	struct ke_msg_reject rej;
	int rc = ke_msg_parse_request(c->in, len, c->numbering, &req, &rej);
	if (rc < 0 && rej.code == KE_MSG_ERROR_UNRECOGNIZED_CRITICAL) {
		enum ke_numbering other = c->numbering == KE_NUMBERING_IANA ? KE_NUMBERING_NTPDRS_V1
									    : KE_NUMBERING_IANA;
		struct ke_msg_reject rej2;
		if (ke_msg_parse_request(c->in, len, other, &req, &rej2) == 0) {
			c->numbering = other;
			rc = 0;
		}
	}
	if (rc < 0) {
		fprintf(stderr, "broken-upstream: request refused with Error %u: %s\n", rej.code,
			rej.reason);
		return answer_error(c, rej.code);
	}
	switch (req.kind) {
	case KE_MSG_REQUEST_SUPPORT:
		rc = answer_support(sv, c, &req);
		break;
	case KE_MSG_REQUEST_FIXED_KEY:
		rc = answer_fixed(sv, c, &req);
		break;
	case KE_MSG_REQUEST_PLAIN:
		fprintf(stderr, "broken-upstream: plain request refused with Error 1\n");
		rc = answer_error(c, KE_MSG_ERROR_BAD_REQUEST);
		break;
	}
	ke_msg_request_wipe(&req);
	return rc;
}

/* The complete requests buffered so far, in order, while the connection still reads. */
static int handle_input(struct server *sv, struct conn *c)
{
	while (c->state == C_READING) {
		int f = ke_msg_frame(c->in, c->have, KE_MSG_REQUEST_MAX);
		if (f == 0 && c->have < sizeof c->in)
			return 0;
		if (f <= 0)
			return answer_error(c, KE_MSG_ERROR_BAD_REQUEST);
		int rc = handle_request(sv, c, (size_t)f);
		if (rc < 0)
			return rc;
		memmove(c->in, c->in + f, c->have - (size_t)f);
		c->have -= (size_t)f;
	}
	return 0;
}

/* The socket is readable. Returns -1 when the connection is done. */
static int on_readable(struct server *sv, struct conn *c)
{
	uint8_t buf[16 * 1024];
	ssize_t r = read(c->fd, buf, sizeof buf);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	if (r <= 0)
		return -1;
	/* Once the answer (or the silence) is decided, what the peer sends does not matter. */
	if (c->state != C_READING)
		return 0;
	if (tls_feed(c->tls, buf, (size_t)r) < 0)
		return -1;
	if (tls_state(c->tls) == TLS_HANDSHAKING) {
		int st = tls_step(c->tls);
		if (st < 0) {
			fprintf(stderr, "broken-upstream: handshake failed: %s\n", tls_reason(c->tls));
			(void)flush(c);
			return -1;
		}
		if (st == TLS_HANDSHAKING)
			return 0;
	}
	while (c->state == C_READING) {
		size_t room = sizeof c->in - c->have;
		if (room == 0)
			break;
		ssize_t n = tls_read(c->tls, c->in + c->have, room);
		if (n == -EAGAIN)
			break;
		if (n <= 0)
			return -1;
		c->have += (size_t)n;
		if (handle_input(sv, c) < 0)
			return -1;
	}
	return 0;
}

static int drip(struct conn *c, int64_t now)
{
	if (c->state != C_DRIPPING || now < c->next_drip_ms)
		return 0;
	int rc = tls_write(c->tls, c->drip + c->drip_off, 1);
	if (rc < 0)
		return rc;
	c->next_drip_ms = now + DRIP_MS;
	if (++c->drip_off == c->drip_len) {
		c->state = C_CLOSING;
		return tls_close(c->tls);
	}
	return 0;
}

static void accept_all(struct server *sv, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct conn *c = sv->n < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
		if (!c) {
			close(fd);
			continue;
		}
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		c->fd = fd;
		c->numbering = KE_NUMBERING_IANA;
		if (tls_session_new_server(&c->tls, sv->creds) < 0) {
			conn_free(c);
			continue;
		}
		sv->conns[sv->n++] = c;
	}
}

static int parse_mode(const char *s, enum mode *out)
{
	for (size_t i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++) {
		if (!strcmp(s, mode_names[i])) {
			*out = (enum mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

static int run(struct server *sv, int lfd, int sfd, int64_t stop)
{
	struct pollfd p[MAX_CONNS + 2];
	for (;;) {
		int64_t now = tool_now_ms();
		if (now >= stop)
			return 0;
		int64_t wake = stop;
		p[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		p[1] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		for (size_t i = 0; i < sv->n; i++) {
			struct conn *c = sv->conns[i];
			p[i + 2] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
			if (output_pending(c))
				p[i + 2].events |= POLLOUT;
			if (c->state == C_DRIPPING && c->next_drip_ms < wake)
				wake = c->next_drip_ms;
		}
		int timeout = wake > now ? (int)(wake - now) : 0;
		if (poll(p, sv->n + 2, timeout) < 0) {
			if (errno == EINTR)
				continue;
			perror("broken-upstream: poll");
			return -EIO;
		}
		if (p[1].revents)
			return 0;
		now = tool_now_ms();
		for (size_t i = sv->n; i-- > 0;) {
			struct conn *c = sv->conns[i];
			bool done = false;
			if (p[i + 2].revents & (POLLIN | POLLHUP | POLLERR))
				done = on_readable(sv, c) < 0;
			if (!done)
				done = drip(c, now) < 0 || flush(c) < 0;
			if (done) {
				conn_free(c);
				sv->conns[i] = sv->conns[--sv->n];
			}
		}
		if (p[0].revents & POLLIN)
			accept_all(sv, lfd);
	}
}

int main(int argc, char **argv)
{
	static const char usage[] = "Usage: broken-upstream IP:PORT CHAIN KEY SECONDS MODE\n"
				    "  MODE: error, hang, drip, no-end or oversize\n";
	char *end = NULL;
	long secs = argc == 6 ? strtol(argv[4], &end, 10) : 0;
	struct server sv = { 0 };
	if (argc != 6 || *end || secs < 1 || secs > 3600 || parse_mode(argv[5], &sv.mode) < 0) {
		fputs(usage, stderr);
		return 2;
	}
	char err[TLS_CREDS_ERR_MAX] = "";
	const struct tls_server_options to = { .cert_file = argv[2], .key_file = argv[3] };
	if (tls_creds_new_server(&sv.creds, &to, err, sizeof err) < 0) {
		fprintf(stderr, "broken-upstream: %s\n", err);
		return 1;
	}
	int lfd = tool_listen(argv[1], true, "broken-upstream");
	if (lfd == -EINVAL)
		fputs(usage, stderr);
	if (lfd < 0) {
		tls_creds_unref(sv.creds);
		return lfd == -EINVAL ? 2 : 1;
	}
	/* SIGTERM and SIGINT end the run like the deadline does: read from a descriptor in the
	 * poll set, so no handler and no flag. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	int sfd = -1;
	if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0 ||
	    (sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
		perror("broken-upstream: signalfd");
		close(lfd);
		tls_creds_unref(sv.creds);
		return 1;
	}
	fprintf(stderr, "broken-upstream: listening on %s, Fixed Key requests answered as '%s'\n",
		argv[1], mode_names[sv.mode]);
	int rc = run(&sv, lfd, sfd, tool_now_ms() + secs * 1000);
	for (size_t i = 0; i < sv.n; i++)
		conn_free(sv.conns[i]);
	close(sfd);
	close(lfd);
	tls_creds_unref(sv.creds);
	fprintf(stderr, "broken-upstream: %lu Support and %lu Fixed Key requests answered\n",
		sv.supports, sv.fixed);
	return rc < 0 ? 1 : 0;
}
