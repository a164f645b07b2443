/* The NTS-KE connection driver: the one place where a TCP stream's bytes, end of stream and
 * deadlines reach a KE state machine, and where the machine's output, next deadline and end reach
 * the stream. Every KE connection of the project runs on it: the time source's KE server and the
 * broker's client sessions on accepted streams, and the KE clients (the broker's upstream
 * connections, the daemon's NTS sources) on outbound ones. A connection prelude belongs here too,
 * ahead of the machine: on accepted streams behind a load balancer, the PROXY protocol header
 * (proto/proxy_proto.h) that names the client.
 *
 * Policy, the same for every machine:
 *   - input the machine refuses (a negative return) aborts the connection;
 *   - a failed connection (a read error) aborts: nothing more can be delivered;
 *   - end of stream from the peer is a half-close: the machine is told, its answer still goes
 *     out, and the socket closes once the machine is done (its deadline bounds the wait);
 *   - the deadline passing is the machine's to handle; the socket closes after it either way;
 *   - at most KE_CONN_WRITE_CAP bytes wait to be sent: a peer that sends requests without
 *     reading the answers is cut off instead of growing our buffers;
 *   - when draining (the program stops), a machine that reports itself idle is timed out at
 *     once; machines in the middle of a request finish under their deadline;
 *   - an outbound connection's output waits in the machine until the connection is up; the
 *     machine's deadline bounds the connect too;
 *   - with a PROXY prelude (ke_conn_owner.proxy), the machine sees no byte, end of stream or
 *     output until the header is read: a missing or malformed header, or the stream ending or
 *     failing first, resets the connection; the machine's deadline bounds the prelude.
 *
 * libuv's rules hold: the driver is freed from the stream's close callback, after the owner's
 * last callback; no call reports through a callback before it returns. */
#ifndef NTSPOOL_KE_CONN_H
#define NTSPOOL_KE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net.h"

/* Bytes queued for a peer at most. A KE answer is at most a few kilobytes and a peer asks one
 * question at a time, so only a peer that does not read reaches this. */
#define KE_CONN_WRITE_CAP (64 * 1024)

/* A KE state machine as the driver sees it (all sans-I/O; m is the machine). now_ms is the
 * loop's clock. idle may be NULL (never idle). */
struct ke_conn_machine {
	int (*input)(void *m, const uint8_t *buf, size_t len, uint64_t now_ms);
	void (*eof)(void *m, uint64_t now_ms);
	void (*timeout)(void *m, uint64_t now_ms);
	void (*output)(const void *m, const uint8_t **ptr, size_t *len);
	void (*output_consume)(void *m, size_t n);
	uint64_t (*deadline)(const void *m); /* absolute, now_ms units; 0: none */
	bool (*done)(const void *m);
	bool (*idle)(const void *m);
	void (*free)(void *m);
	/* The peer has not completed its TLS handshake yet (may be NULL: never): such a connection
	 * is what a full listener sheds first (ke_conn_group_shed). */
	bool (*handshaking)(const void *m);
};

/* The ops of a machine whose functions are named PREFIX_input, PREFIX_eof, PREFIX_timeout,
 * PREFIX_output, PREFIX_output_consume, PREFIX_deadline, PREFIX_done and PREFIX_free and take
 * their own type: KE_CONN_ADAPTERS(PREFIX, TYPE) once defines the typed-to-void adapters, and
 * KE_CONN_MACHINE(PREFIX, ...) is the initializer of a struct ke_conn_machine (more members,
 * such as .idle, may follow). One definition instead of one copy per program. */
#define KE_CONN_ADAPTERS(prefix, type)                                                         \
	static int prefix##_m_input(void *m, const uint8_t *b, size_t n, uint64_t t)           \
	{                                                                                      \
		return prefix##_input((type *)m, b, n, t);                                     \
	}                                                                                      \
	static void prefix##_m_eof(void *m, uint64_t t)                                        \
	{                                                                                      \
		prefix##_eof((type *)m, t);                                                    \
	}                                                                                      \
	static void prefix##_m_timeout(void *m, uint64_t t)                                    \
	{                                                                                      \
		prefix##_timeout((type *)m, t);                                                \
	}                                                                                      \
	static void prefix##_m_output(const void *m, const uint8_t **p, size_t *n)             \
	{                                                                                      \
		prefix##_output((const type *)m, p, n);                                        \
	}                                                                                      \
	static void prefix##_m_output_consume(void *m, size_t n)                               \
	{                                                                                      \
		prefix##_output_consume((type *)m, n);                                         \
	}                                                                                      \
	static uint64_t prefix##_m_deadline(const void *m)                                     \
	{                                                                                      \
		return prefix##_deadline((const type *)m);                                     \
	}                                                                                      \
	static bool prefix##_m_done(const void *m)                                             \
	{                                                                                      \
		return prefix##_done((const type *)m);                                         \
	}                                                                                      \
	static void prefix##_m_free(void *m)                                                   \
	{                                                                                      \
		prefix##_free((type *)m);                                                      \
	}

#define KE_CONN_MACHINE(prefix, ...)                                                           \
	{ .input = prefix##_m_input, .eof = prefix##_m_eof, .timeout = prefix##_m_timeout,     \
	  .output = prefix##_m_output, .output_consume = prefix##_m_output_consume,            \
	  .deadline = prefix##_m_deadline, .done = prefix##_m_done, .free = prefix##_m_free,   \
	  __VA_ARGS__ }

/* A KE client's machine: a struct TYPE whose member FIELD is its ke_client (tls/ke_client.h,
 * which the user includes). KE_CONN_KE_CLIENT_ADAPTERS(PREFIX, TYPE, FIELD) defines the adapters
 * that forward the stream to the ke_client (a record it refuses leaves it FAILED, which done
 * reports, so input never refuses) and done (CLOSED or FAILED); KE_CONN_KE_CLIENT_MACHINE(PREFIX,
 * DEADLINE, FREE) is the ops initializer with the user's own deadline and free. */
#define KE_CONN_KE_CLIENT_ADAPTERS(prefix, type, field)                                        \
	static int prefix##_kc_input(void *m, const uint8_t *b, size_t n, uint64_t t)          \
	{                                                                                      \
		ke_client_input(((type *)m)->field, b, n, t);                                  \
		return 0;                                                                      \
	}                                                                                      \
	static void prefix##_kc_eof(void *m, uint64_t t)                                       \
	{                                                                                      \
		ke_client_eof(((type *)m)->field, t);                                          \
	}                                                                                      \
	static void prefix##_kc_timeout(void *m, uint64_t t)                                   \
	{                                                                                      \
		ke_client_timeout(((type *)m)->field, t);                                      \
	}                                                                                      \
	static void prefix##_kc_output(const void *m, const uint8_t **p, size_t *n)            \
	{                                                                                      \
		ke_client_output(((const type *)m)->field, p, n);                              \
	}                                                                                      \
	static void prefix##_kc_output_consume(void *m, size_t n)                              \
	{                                                                                      \
		ke_client_output_consume(((type *)m)->field, n);                               \
	}                                                                                      \
	static bool prefix##_kc_done(const void *m)                                            \
	{                                                                                      \
		enum ke_client_state st = ke_client_state(((const type *)m)->field);           \
		return st == KE_CLIENT_CLOSED || st == KE_CLIENT_FAILED;                       \
	}

#define KE_CONN_KE_CLIENT_MACHINE(prefix, deadline_fn, free_fn)                                \
	{ .input = prefix##_kc_input, .eof = prefix##_kc_eof, .timeout = prefix##_kc_timeout,  \
	  .output = prefix##_kc_output, .output_consume = prefix##_kc_output_consume,          \
	  .deadline = (deadline_fn), .done = prefix##_kc_done, .free = (free_fn) }

struct ke_conn;

/* The connections of one owner (a listener on one worker), oldest first, for shedding and
 * draining. The owner embeds it; a connection started with owner->group is linked until its
 * closed hook. */
struct ke_conn_group {
	struct ke_conn *oldest, *newest;
	size_t n;
};

struct ke_conn_owner {
	/* Before each stream event reaches the machine: the owner refreshes what the machine reads
	 * through its slots (the keyset, tokens and credentials other threads publish). May be
	 * NULL. */
	void (*before)(struct ke_conn *c, void *machine, void *ud);
	/* After each stream event the machine took (bytes, end of stream, deadline), while the
	 * connection is open: the owner may start work the machine asked for (the broker's
	 * upstream exchange). Never called from inside a ke_conn_* call. May be NULL. */
	void (*progress)(struct ke_conn *c, void *machine, void *ud);
	/* Last call: the socket is closed. The machine is freed right after this returns. */
	void (*closed)(struct ke_conn *c, void *machine, void *ud);
	void *ud;
	struct ke_conn_group *group; /* may be NULL */
	/* The stream starts with a PROXY protocol header (v1 or v2): it is read and removed before
	 * the machine sees a byte, under the machine's deadline; ke_conn_peer is then the client's
	 * address the header gives (the connection's own for LOCAL). A missing or malformed header,
	 * or end of stream before it is complete, resets the connection (closed follows, with
	 * ke_conn_error -EPROTO or the read error). While it is read, the machine's output waits
	 * in the machine and only its timeout (at its deadline, or when drained while idle) can
	 * reach it. Accepted streams only: ke_conn_connect refuses it. */
	bool proxy;
	/* With proxy: called once the header is read, with the client's address (borrowed; the
	 * connection's own for LOCAL). 0 admits the client; a negative errno resets the connection
	 * with that error. Called from a read event only, before the machine's first input. May be
	 * NULL. */
	int (*admit)(struct ke_conn *c, void *machine, const struct sockaddr *client, void *ud);
};

/* Drives machine m (ops borrowed for the connection's life; m taken over) on the accepted stream
 * s. Must be called from the listener's on_accept, which then returns 0. Sends what the machine
 * has ready and arms its deadline. Returns 0, or -ENOMEM with nothing taken (the caller frees m
 * and refuses the connection). *out is owned by the loop until owner->closed. */
int ke_conn_start(struct ke_conn **out, struct net_stream *s,
		  const struct ke_conn_machine *ops, void *m, const struct ke_conn_owner *owner);

/* Connects to addr (borrowed) and drives machine m on the new stream, as ke_conn_start does on
 * an accepted one. Returns 0 with m taken over, or a negative errno (-EINVAL for owner->proxy)
 * with nothing taken and no callback to follow. A connect that fails later reaches the owner as
 * closed (ke_conn_error says why); progress follows the connect like any other stream event. */
int ke_conn_connect(struct ke_conn **out, uv_loop_t *loop, const struct sockaddr *addr,
		    const struct ke_conn_machine *ops, void *m, const struct ke_conn_owner *owner);

/* The owner ends the connection: abort resets it at once, otherwise queued output goes first.
 * The machine gets no more events; closed follows from the loop. Idempotent. */
void ke_conn_close(struct ke_conn *c, bool abort);

/* Why the connection ended, for the closed hook: 0 after an orderly end (the machine was done,
 * or the owner closed it), else a negative errno: the connect's or a read's error, -ETIMEDOUT
 * at the deadline, -ENOBUFS at the write cap, -ECANCELED for an owner's abort, or the machine's
 * own error for input it refused. */
int ke_conn_error(const struct ke_conn *c);

/* The machine changed outside the driver's events (an upstream answered): send its output,
 * follow its deadline, close when it is done. No progress callback: the owner that kicked knows
 * what changed. */
void ke_conn_kick(struct ke_conn *c);

/* The program stops: idle machines are timed out now, busy ones finish on their own. */
void ke_conn_drain(struct ke_conn *c);

void ke_conn_group_init(struct ke_conn_group *g);
/* Resets the oldest connection of g whose machine is handshaking and that is not closing yet;
 * true when there was one (its closed hook follows from the loop). For a full listener's
 * net_listener_ops.shed. */
bool ke_conn_group_shed(struct ke_conn_group *g);
/* ke_conn_drain on every connection of g. */
void ke_conn_group_drain(struct ke_conn_group *g);

/* The peer's address (borrowed, for the connection's life): the client's. With a PROXY prelude
 * that is the address its header gave, once it is read (the connection's own before, and for
 * LOCAL or UNKNOWN headers). */
const struct sockaddr *ke_conn_peer(const struct ke_conn *c);

/* The address the connection itself comes from (borrowed, for the connection's life): the load
 * balancer's with a PROXY prelude, else the same as ke_conn_peer. */
const struct sockaddr *ke_conn_via(const struct ke_conn *c);

#endif
