/* libuv glue: TCP listeners with a connection cap, accepted TCP streams with a deadline, and UDP
 * sockets. With status.c, the only library code that includes <uv.h>.
 *
 * Memory rule (libuv's): every object here owns its uv handles and is freed only from the last
 * close callback; write buffers live until their write callback. Callers never free these objects
 * directly: they ask for a close and get one final callback. The loop is always passed in.
 * libuv writes with write(2): programs using streams must ignore SIGPIPE. IPv6 sockets are
 * IPv6-only, so "::" and "0.0.0.0" can listen on the same port side by side. */
#ifndef NTSPOOL_NET_H
#define NTSPOOL_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

/* Formats addr as "IP:PORT" or "[IPv6]:PORT" into buf (at least NET_ADDR_STRLEN bytes). */
#define NET_ADDR_STRLEN 64
const char *net_addr_str(const struct sockaddr *addr, char *buf, size_t buflen);

/* Parses an IPv4 or IPv6 literal (no brackets, no port) into *ss with port 0; false when name is
 * not a literal (a DNS name, to be resolved). */
bool net_addr_parse_ip(const char *name, struct sockaddr_storage *ss);

/* True when a and b are the same IPv4/IPv6 address and port (e.g. a reply's source against the
 * address a request went to). */
bool net_addr_equal(const struct sockaddr *a, const struct sockaddr_storage *b);

/* ---- Accepted TCP streams ------------------------------------------------------------------ */

struct net_stream;

struct net_stream_ops {
	/* Bytes received (borrowed for the call). */
	void (*on_read)(struct net_stream *s, const uint8_t *buf, size_t len, void *ud);
	/* The peer closed its side (status 0) or the connection failed (negative libuv error).
	 * No more on_read follows. The owner decides whether to close. */
	void (*on_eof)(struct net_stream *s, int status, void *ud);
	/* The deadline set with net_stream_set_deadline passed. */
	void (*on_timeout)(struct net_stream *s, void *ud);
	/* Last call: the handles are closed; the stream is freed right after this returns, and ud
	 * may be freed here. */
	void (*on_closed)(struct net_stream *s, void *ud);
	/* Streams made by net_connect only: the connection is up (status 0; reading has started)
	 * or failed (negative errno; on_closed follows). A stream closed or aborted before it is
	 * up gets no on_connect, only on_closed, and net_stream_close while connecting drops
	 * queued writes (there is no peer to flush them to). NULL for accepted streams. */
	void (*on_connect)(struct net_stream *s, int status, void *ud);
};

/* Opens a TCP connection to addr (borrowed) with TCP_NODELAY; ops->on_connect reports the
 * outcome. The deadline (net_stream_set_deadline) also bounds the connect. *out is owned by the
 * loop like an accepted stream. Returns 0, or a negative errno with no callback to follow. */
int net_connect(struct net_stream **out, uv_loop_t *loop, const struct sockaddr *addr,
		const struct net_stream_ops *ops, void *ud);

/* Attaches the owner's callbacks (ops borrowed for the stream's life; ud is the owner's). Must be
 * called from net_listener_ops.on_accept before it returns 0. Reading starts after that. */
void net_stream_set_ops(struct net_stream *s, const struct net_stream_ops *ops, void *ud);

/* Queues len bytes (copied) for sending. Returns 0, -ENOMEM, -EPIPE after close, or a negative
 * libuv error. Bytes are written in order. */
int net_stream_write(struct net_stream *s, const uint8_t *buf, size_t len);

/* Bytes accepted by net_stream_write and not yet handed to the kernel. */
size_t net_stream_queued(const struct net_stream *s);

/* (Re)arms the deadline timeout_ms from now; 0 disarms it. */
void net_stream_set_deadline(struct net_stream *s, uint64_t timeout_ms);

/* Stops reading, lets queued writes finish (bounded by a short linger), then closes and calls
 * on_closed. Idempotent. */
void net_stream_close(struct net_stream *s);

/* Closes at once, dropping queued writes (RST if possible). Idempotent. */
void net_stream_abort(struct net_stream *s);

/* The stream's loop clock (uv_now of its loop), in milliseconds. */
uint64_t net_stream_now_ms(const struct net_stream *s);

/* The peer's address (borrowed, valid for the stream's life). */
const struct sockaddr *net_stream_peer(const struct net_stream *s);

/* ---- TCP listeners ------------------------------------------------------------------------- */

struct net_listener;

struct net_listener_stats {
	uint64_t accepted;	/* connections handed to on_accept */
	uint64_t paused;	/* times accepting paused because max_conns were open */
	/* Failed accepts libuv reports (ENOBUFS, ENOMEM, EMFILE once its reserve descriptor is
	 * gone, or a stream that could not be allocated). A connection libuv drops with its
	 * reserve-descriptor trick when out of descriptors is not reported, so not counted. */
	uint64_t accept_errors;
	uint64_t shed;		/* streams the owner ended to admit a waiting connection */
	uint32_t active;	/* streams open now */
};

struct net_listener_ops {
	/* A new connection. Call net_stream_set_ops and return 0, or return a negative errno to
	 * refuse it (it is closed; no stream callback follows). */
	int (*on_accept)(struct net_listener *l, struct net_stream *s, void *ud);
	/* Last call after net_listener_close, once the listening socket is closed (open streams
	 * live on until their own close). May be NULL. */
	void (*on_closed)(struct net_listener *l, void *ud);
	/* A connection waits while max_conns are open: the owner may end one of its streams that
	 * is worth less than a new one (one that has not completed its TLS handshake) and return
	 * true; the waiting connection is then accepted once that stream has closed. false (or
	 * NULL): accepting pauses until a stream closes on its own. */
	bool (*shed)(struct net_listener *l, void *ud);
};

/* Listens on addr (borrowed) with TCP_NODELAY on accepted streams. At most max_conns streams are
 * open at once: at the cap, the listener stops accepting (pending connections wait in the kernel
 * backlog) and resumes when a stream closes, so the process never runs out of file descriptors
 * because of peers. Accept errors are never fatal (see accept_errors for what can be counted).
 * *out is owned by the loop: release it with net_listener_close. Returns 0 or a negative errno
 * (-EADDRINUSE ...), with a message in err. */
int net_listener_new(struct net_listener **out, uv_loop_t *loop, const struct sockaddr *addr,
		     unsigned max_conns, const struct net_listener_ops *ops, void *ud, char *err,
		     size_t errlen);

/* As net_listener_new on a socket already bound and listening (fd is the listener's, closed on
 * failure too): a worker's share of a group from net_bind_group. */
int net_listener_adopt(struct net_listener **out, uv_loop_t *loop, int fd, unsigned max_conns,
		       const struct net_listener_ops *ops, void *ud, char *err, size_t errlen);

/* Binds n sockets of type (SOCK_STREAM: listening too) to addr for n workers: one socket of its
 * own when n == 1; else, once an exclusive bind showed that nobody holds addr, n SO_REUSEPORT
 * sockets among which the kernel spreads connections (by flow) and datagrams (by 4-tuple). Port
 * 0: all n share the port the first got. fds[0..n) are the caller's (net_listener_adopt,
 * net_udp_adopt, or close). 0 or negative errno with the address in err; nothing stays open on
 * failure. */
int net_bind_group(const struct sockaddr *addr, int type, unsigned n, int *fds, char *err,
		   size_t errlen);

/* The bound address (borrowed), e.g. to learn the port after binding port 0. */
const struct sockaddr *net_listener_addr(const struct net_listener *l);
const struct net_listener_stats *net_listener_stats(const struct net_listener *l);

/* Stops accepting and closes the listening socket; open streams are not touched. */
void net_listener_close(struct net_listener *l);

/* ---- UDP ----------------------------------------------------------------------------------- */

struct net_udp;

/* One datagram (borrowed for the call) from `from`. */
typedef void (*net_udp_recv_cb)(struct net_udp *u, const uint8_t *buf, size_t len,
				const struct sockaddr *from, void *ud);

/* Binds addr (borrowed) and starts receiving (with recvmmsg batching where available). *out is
 * owned by the loop: release it with net_udp_close. Returns 0 or a negative errno with err. */
int net_udp_new(struct net_udp **out, uv_loop_t *loop, const struct sockaddr *addr,
		net_udp_recv_cb cb, void *ud, char *err, size_t errlen);

/* As net_udp_new on a bound socket (fd is the object's, closed on failure too). */
int net_udp_adopt(struct net_udp **out, uv_loop_t *loop, int fd, net_udp_recv_cb cb, void *ud,
		  char *err, size_t errlen);

/* Sends without queueing: at once (uv_udp_try_send), or, when called from the receive callback
 * while a recvmmsg batch is handled, copied and sent with the batch's other replies in one
 * sendmmsg when the batch ends. A reply that cannot be sent then is dropped, as NTP servers do.
 * Returns 0 or a negative errno. */
int net_udp_send(struct net_udp *u, const uint8_t *buf, size_t len, const struct sockaddr *to);

const struct sockaddr *net_udp_addr(const struct net_udp *u);

/* Stops receiving and closes; freed in the close callback. */
void net_udp_close(struct net_udp *u);

#endif
