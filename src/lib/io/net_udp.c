#include "net.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "net_int.h"

/* libuv 1.44 cuts the receive buffer into 64 KiB slots, one per datagram of a recvmmsg batch
 * (at most 20 slots). A UDP payload is at most 65527 bytes, so a slot never truncates one. */
#define UDP_SLOT_SIZE 65536
/* libuv reads at most 20 datagrams per recvmmsg call and sizes each slot for the largest UDP
 * payload, so 20 slots make the widest batch it can do. */
#define UDP_SLOTS 20
/* Replies made while a receive batch is handled leave together in one sendmmsg at its end;
 * their bytes are copied here (an NTS reply is at most as long as its request). */
#define UDP_SEND_SPACE (256 * 1024)

struct net_udp {
	uv_udp_t udp;
	net_udp_recv_cb cb;
	void *ud;
	struct sockaddr_storage addr;
	bool closing;
	bool in_batch; /* inside a recvmmsg batch: sends are collected, not sent */
	unsigned n_out;
	size_t out_used;
	struct mmsghdr out_msg[UDP_SLOTS];
	struct iovec out_iov[UDP_SLOTS];
	struct sockaddr_storage out_to[UDP_SLOTS];
	uint8_t out[UDP_SEND_SPACE];
	/* Reused for every read: datagrams are consumed in the callback, so the UV_UDP_MMSG_FREE
	 * notice has nothing to release; it marks the end of a batch. */
	uint8_t buf[UDP_SLOTS * UDP_SLOT_SIZE];
};

/* ---- UDP ----------------------------------------------------------------------------------- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct net_udp *u = h->data;

	(void)suggested;
	buf->base = (char *)u->buf;
	buf->len = sizeof u->buf;
}

/* Sends the replies collected during a batch with one system call. A reply the socket cannot
 * take now is dropped, as a single send would drop it. */
static void udp_flush(struct net_udp *u)
{
	unsigned done = 0;
	int fd;

	if (u->n_out > 0 && !u->closing && uv_fileno((uv_handle_t *)&u->udp, &fd) == 0) {
		while (done < u->n_out) {
			int n = sendmmsg(fd, u->out_msg + done, u->n_out - done, MSG_DONTWAIT);
			if (n > 0)
				done += (unsigned)n;
			else if (n < 0 && errno == EINTR)
				continue;
			else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			else
				done++; /* this datagram was refused (e.g. unreachable): skip it */
		}
	}
	u->n_out = 0;
	u->out_used = 0;
}

static void udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
		     unsigned flags)
{
	struct net_udp *u = h->data;
	char a[NET_ADDR_STRLEN];
	char msg[128];

	if (flags & UV_UDP_MMSG_FREE) {
		u->in_batch = false;
		udp_flush(u);
		return;
	}
	if (u->closing)
		return;
	u->in_batch = (flags & UV_UDP_MMSG_CHUNK) != 0;
	if (nread < 0) {
		uv_strerror_r((int)nread, msg, sizeof msg);
		log_debug("%s: receive failed: %s",
			  net_addr_str((const struct sockaddr *)&u->addr, a, sizeof a), msg);
		return;
	}
	/* No address: the socket had nothing more to read. */
	if (!from)
		return;
	if (flags & UV_UDP_PARTIAL) {
		log_debug("%s: truncated datagram dropped", net_addr_str(from, a, sizeof a));
		return;
	}
	u->cb(u, (const uint8_t *)buf->base, (size_t)nread, from, u->ud);
}

static void udp_closed(uv_handle_t *h)
{
	free(h->data);
}

int net_udp_new(struct net_udp **out, uv_loop_t *loop, const struct sockaddr *addr,
		net_udp_recv_cb cb, void *ud, char *err, size_t errlen)
{
	int fd = -1;
	int rc = !cb ? -EINVAL : net_int_bound_socket(addr, SOCK_DGRAM, NET_BIND_EXCLUSIVE, &fd);
	if (rc < 0) {
		net_int_set_error(err, errlen, addr, rc);
		return rc;
	}
	return net_udp_adopt(out, loop, fd, cb, ud, err, errlen);
}

int net_udp_adopt(struct net_udp **out, uv_loop_t *loop, int fd, net_udp_recv_cb cb, void *ud,
		  char *err, size_t errlen)
{
	struct net_udp *u = NULL;
	struct sockaddr_storage bound = { .ss_family = AF_UNSPEC };
	int zero = 0;
	int rc;

	if (!cb) {
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = net_int_local_addr(fd, &bound)) < 0)
		goto fail;
	u = calloc(1, sizeof *u);
	if (!u) {
		rc = -ENOMEM;
		goto fail;
	}
	u->addr = bound;
	u->cb = cb;
	u->ud = ud;
	rc = uv_udp_init_ex(loop, &u->udp, AF_UNSPEC | UV_UDP_RECVMMSG);
	if (rc < 0)
		goto fail;
	u->udp.data = u;
	rc = uv_udp_open(&u->udp, fd);
	if (rc == 0) {
		int sock = fd;

		fd = -1;
		/* uv_udp_open sets SO_REUSEADDR, which on Linux would let another socket share
		 * (and take traffic from) our port. A worker group shares it through SO_REUSEPORT,
		 * set before the bind. */
		if (setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &zero, sizeof zero) < 0)
			rc = -errno;
	}
	if (rc == 0)
		rc = uv_udp_recv_start(&u->udp, udp_alloc, udp_recv);
	if (rc < 0) {
		u->closing = true;
		uv_close((uv_handle_t *)&u->udp, udp_closed);
		u = NULL;
		goto fail;
	}
	*out = u;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(u);
	net_int_set_error(err, errlen, (const struct sockaddr *)&bound, rc);
	return rc;
}

int net_udp_send(struct net_udp *u, const uint8_t *buf, size_t len, const struct sockaddr *to)
{
	uv_buf_t b;
	int rc;

	if (u->closing)
		return -EBADF;
	if (u->in_batch) {
		if (u->n_out == UDP_SLOTS || len > UDP_SEND_SPACE - u->out_used)
			udp_flush(u);
		if (len <= UDP_SEND_SPACE) {
			unsigned i = u->n_out++;
			socklen_t tolen = to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								     : sizeof(struct sockaddr_in);
			memcpy(u->out + u->out_used, buf, len);
			memcpy(&u->out_to[i], to, tolen);
			u->out_iov[i] = (struct iovec){ u->out + u->out_used, len };
			u->out_msg[i] = (struct mmsghdr){
				.msg_hdr = { .msg_name = &u->out_to[i], .msg_namelen = tolen,
					     .msg_iov = &u->out_iov[i], .msg_iovlen = 1 },
			};
			u->out_used += len;
			return 0;
		}
	}
	b.base = (char *)buf;
	b.len = len;
	rc = uv_udp_try_send(&u->udp, &b, 1, to);
	return rc < 0 ? rc : 0;
}

const struct sockaddr *net_udp_addr(const struct net_udp *u)
{
	return (const struct sockaddr *)&u->addr;
}

void net_udp_close(struct net_udp *u)
{
	if (u->closing)
		return;
	u->closing = true;
	/* Also stops libuv from handing us the rest of a recvmmsg batch. */
	uv_udp_recv_stop(&u->udp);
	uv_close((uv_handle_t *)&u->udp, udp_closed);
}
