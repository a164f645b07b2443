#include "ke_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy_proto.h"

struct ke_conn {
	struct net_stream *stream;
	const struct ke_conn_machine *ops;
	void *m;
	struct ke_conn_owner owner;
	bool closing;	/* close or abort asked: the machine gets no more events */
	bool draining;
	bool connected; /* accepted, or an outbound connection that is up */
	int error;	/* why it ended, 0 for an orderly end */
	struct ke_conn *older, *newer; /* in owner.group */
	/* The PROXY prelude: the header is still being read (owner.proxy). A header split over
	 * reads is gathered in pre (PROXY_PROTO_MAX bytes, allocated at the first partial read). */
	bool prelude;
	uint8_t *pre;
	size_t pre_len;
	bool proxied; /* the header named the client: client, not the stream's peer */
	struct sockaddr_storage client;
};

static void group_link(struct ke_conn *c)
{
	struct ke_conn_group *g = c->owner.group;
	if (!g)
		return;
	c->older = g->newest;
	c->newer = NULL;
	if (g->newest)
		g->newest->newer = c;
	else
		g->oldest = c;
	g->newest = c;
	g->n++;
}

static void group_unlink(struct ke_conn *c)
{
	struct ke_conn_group *g = c->owner.group;
	if (!g)
		return;
	if (c->older)
		c->older->newer = c->newer;
	else
		g->oldest = c->newer;
	if (c->newer)
		c->newer->older = c->older;
	else
		g->newest = c->older;
	g->n--;
}

static uint64_t now(const struct ke_conn *c)
{
	return net_stream_now_ms(c->stream);
}

static void abort_conn(struct ke_conn *c, int err)
{
	if (!c->error)
		c->error = err;
	c->closing = true;
	net_stream_abort(c->stream);
}

static void close_conn(struct ke_conn *c)
{
	c->closing = true;
	net_stream_close(c->stream);
}

/* Hands the machine's output to the socket, follows its deadline, closes once it is done and,
 * after a stream event (progress), lets the owner act on what the machine now wants. */
static void flush(struct ke_conn *c, bool progress)
{
	if (c->closing)
		return;
	const uint8_t *p;
	size_t n;
	c->ops->output(c->m, &p, &n);
	/* An outbound connection's first bytes wait in the machine until it is up, and an accepted
	 * one's until its PROXY header is read (the peer may still be refused). */
	if (n > 0 && c->connected && !c->prelude) {
		if (net_stream_queued(c->stream) + n > KE_CONN_WRITE_CAP) {
			abort_conn(c, -ENOBUFS);
			return;
		}
		if (net_stream_write(c->stream, p, n) < 0) {
			abort_conn(c, -EPIPE);
			return;
		}
		c->ops->output_consume(c->m, n);
	}
	if (c->draining && c->ops->idle && c->ops->idle(c->m)) {
		/* As at a deadline: the machine says goodbye, then the socket closes whatever it
		 * answered (a machine still idle after its timeout must not be asked again). */
		c->draining = false;
		c->ops->timeout(c->m, now(c));
		flush(c, false);
		close_conn(c);
		return;
	}
	if (c->ops->done(c->m)) {
		close_conn(c);
		return;
	}
	uint64_t deadline = c->ops->deadline(c->m), t = now(c);
	net_stream_set_deadline(c->stream, deadline == 0 ? 0 : deadline > t ? deadline - t : 1);
	if (progress && c->owner.progress)
		c->owner.progress(c, c->m, c->owner.ud);
}

static void before(struct ke_conn *c)
{
	if (c->owner.before)
		c->owner.before(c, c->m, c->owner.ud);
}

static void prelude_refuse(struct ke_conn *c, int err, const char *why)
{
	char a[NET_ADDR_STRLEN];

	log_debug("%s: PROXY header refused: %s", net_addr_str(ke_conn_via(c), a, sizeof a), why);
	abort_conn(c, err);
}

/* Reads the PROXY header from the bytes of one read. True once the header is read and its client
 * admitted, with *used the bytes of buf it took (the rest is the machine's); false while more
 * is needed, or when the connection was reset. */
static bool prelude_read(struct ke_conn *c, const uint8_t *buf, size_t len, size_t *used)
{
	const uint8_t *p = buf;
	size_t n = len, had = c->pre_len;
	struct proxy_proto_info info;
	const char *why = NULL;

	if (had > 0) {
		size_t take = len < PROXY_PROTO_MAX - had ? len : PROXY_PROTO_MAX - had;

		memcpy(c->pre + had, buf, take);
		c->pre_len += take;
		p = c->pre;
		n = c->pre_len;
	}
	int rc = proxy_proto_parse(p, n, &info, &why);

	/* No valid header needs more than PROXY_PROTO_MAX bytes; this keeps pre bounded even if
	 * the parser said otherwise. */
	if (rc == 0 && n >= PROXY_PROTO_MAX) {
		rc = -EPROTO;
		why = "longer than PROXY_PROTO_MAX";
	}
	if (rc < 0) {
		prelude_refuse(c, -EPROTO, why);
		return false;
	}
	if (rc == 0) {
		if (had == 0) {
			c->pre = malloc(PROXY_PROTO_MAX);
			if (!c->pre) {
				abort_conn(c, -ENOMEM);
				return false;
			}
			memcpy(c->pre, buf, len);
			c->pre_len = len;
		}
		return false;
	}
	*used = (size_t)rc - had;
	c->prelude = false;
	free(c->pre);
	c->pre = NULL;
	c->pre_len = 0;
	if (!info.local) {
		c->client = info.src;
		c->proxied = true;
	}
	if (c->owner.admit) {
		int arc = c->owner.admit(c, c->m, ke_conn_peer(c), c->owner.ud);

		if (arc < 0) {
			abort_conn(c, arc);
			return false;
		}
	}
	/* The owner may have closed it from admit. */
	return !c->closing;
}

static void on_read(struct net_stream *s, const uint8_t *buf, size_t len, void *ud)
{
	struct ke_conn *c = ud;
	(void)s;
	if (c->closing)
		return;
	if (c->prelude) {
		size_t used;

		if (!prelude_read(c, buf, len, &used))
			return;
		buf += used;
		len -= used;
		if (len == 0) {
			/* No machine event yet: what it had ready goes out, as at start. */
			flush(c, false);
			return;
		}
	}
	before(c);
	int rc = c->ops->input(c->m, buf, len, now(c));
	if (rc < 0) {
		abort_conn(c, rc);
		return;
	}
	flush(c, true);
}

static void on_eof(struct net_stream *s, int status, void *ud)
{
	struct ke_conn *c = ud;
	(void)s;
	if (c->closing)
		return;
	if (c->prelude) {
		/* net reads no more after this, and the reset ends the connection now: a peer gone
		 * before its header completed costs nothing further. */
		prelude_refuse(c, status < 0 ? status : -EPROTO,
			       status < 0 ? "read failed" : "end of stream inside the header");
		return;
	}
	if (status < 0) {
		abort_conn(c, status);
		return;
	}
	before(c);
	c->ops->eof(c->m, now(c));
	flush(c, true);
}

static void on_timeout(struct net_stream *s, void *ud)
{
	struct ke_conn *c = ud;
	(void)s;
	if (c->closing)
		return;
	/* One timeout per deadline: the flush after it must not time an idle machine out again
	 * for draining. */
	c->draining = false;
	before(c);
	c->ops->timeout(c->m, now(c));
	flush(c, true);
	if (!c->error)
		c->error = -ETIMEDOUT;
	close_conn(c);
}

static void on_connect(struct net_stream *s, int status, void *ud)
{
	struct ke_conn *c = ud;
	(void)s;
	if (c->closing)
		return;
	if (status < 0) {
		/* net closes the stream itself: only on_closed follows. */
		c->error = status;
		c->closing = true;
		return;
	}
	c->connected = true;
	flush(c, true);
}

static void on_closed(struct net_stream *s, void *ud)
{
	struct ke_conn *c = ud;
	(void)s;
	group_unlink(c);
	c->owner.closed(c, c->m, c->owner.ud);
	c->ops->free(c->m);
	free(c->pre);
	free(c);
}

static const struct net_stream_ops stream_ops = {
	.on_read = on_read,
	.on_eof = on_eof,
	.on_timeout = on_timeout,
	.on_closed = on_closed,
	.on_connect = on_connect,
};

int ke_conn_start(struct ke_conn **out, struct net_stream *s,
		  const struct ke_conn_machine *ops, void *m, const struct ke_conn_owner *owner)
{
	struct ke_conn *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->stream = s;
	c->ops = ops;
	c->m = m;
	c->owner = *owner;
	c->connected = true;
	c->prelude = owner->proxy;
	*out = c;
	group_link(c);
	net_stream_set_ops(s, &stream_ops, c);
	flush(c, false);
	return 0;
}

int ke_conn_connect(struct ke_conn **out, uv_loop_t *loop, const struct sockaddr *addr,
		    const struct ke_conn_machine *ops, void *m, const struct ke_conn_owner *owner)
{
	/* The header is the client's to send, not ours to read. */
	if (owner->proxy)
		return -EINVAL;
	struct ke_conn *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->ops = ops;
	c->m = m;
	c->owner = *owner;
	int rc = net_connect(&c->stream, loop, addr, &stream_ops, c);
	if (rc < 0) {
		free(c);
		return rc;
	}
	*out = c;
	group_link(c);
	/* Arms the machine's deadline, which bounds the connect too; nothing is written yet. */
	flush(c, false);
	return 0;
}

void ke_conn_close(struct ke_conn *c, bool abort)
{
	if (c->closing)
		return;
	if (abort)
		abort_conn(c, -ECANCELED);
	else
		close_conn(c);
}

void ke_conn_group_init(struct ke_conn_group *g)
{
	*g = (struct ke_conn_group){ 0 };
}

bool ke_conn_group_shed(struct ke_conn_group *g)
{
	for (struct ke_conn *c = g->oldest; c; c = c->newer) {
		if (!c->closing && c->ops->handshaking && c->ops->handshaking(c->m)) {
			abort_conn(c, -ECANCELED);
			return true;
		}
	}
	return false;
}

void ke_conn_group_drain(struct ke_conn_group *g)
{
	/* Draining only asks for closes; the group changes when the closes complete, later. */
	for (struct ke_conn *c = g->oldest; c; c = c->newer)
		ke_conn_drain(c);
}

int ke_conn_error(const struct ke_conn *c)
{
	return c->error;
}

void ke_conn_kick(struct ke_conn *c)
{
	flush(c, false);
}

void ke_conn_drain(struct ke_conn *c)
{
	c->draining = true;
	flush(c, false);
}

const struct sockaddr *ke_conn_peer(const struct ke_conn *c)
{
	return c->proxied ? (const struct sockaddr *)&c->client : net_stream_peer(c->stream);
}

const struct sockaddr *ke_conn_via(const struct ke_conn *c)
{
	return net_stream_peer(c->stream);
}
