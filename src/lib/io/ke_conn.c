#include "ke_conn.h"

#include <errno.h>
#include <stdlib.h>

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
	/* An outbound connection's first bytes wait in the machine until it is up. */
	if (n > 0 && c->connected) {
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

static void on_read(struct net_stream *s, const uint8_t *buf, size_t len, void *ud)
{
	struct ke_conn *c = ud;
	(void)s;
	if (c->closing)
		return;
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
	*out = c;
	group_link(c);
	net_stream_set_ops(s, &stream_ops, c);
	flush(c, false);
	return 0;
}

int ke_conn_connect(struct ke_conn **out, uv_loop_t *loop, const struct sockaddr *addr,
		    const struct ke_conn_machine *ops, void *m, const struct ke_conn_owner *owner)
{
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
	return net_stream_peer(c->stream);
}
