/* Connections held at once per client address prefix (an IPv4 /32, an IPv6 /64; IPv4-mapped
 * IPv6 addresses count as their IPv4 address), so one host cannot take every slot of a listener.
 * Sans-I/O bookkeeping: the listener takes a slot when it accepts and gives it back when the
 * connection closes. Memory is bounded by the connections held. One table may serve listeners
 * on several threads: it takes its own lock. */
#ifndef NTSPOOL_CONN_LIMIT_H
#define NTSPOOL_CONN_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct conn_limit;

/* At most per_prefix connections per prefix (0: no limit, every take succeeds). *out is new
 * (conn_limit_free). 0 or -ENOMEM. */
int conn_limit_new(struct conn_limit **out, unsigned per_prefix);
void conn_limit_free(struct conn_limit *cl);

/* Takes a slot for a connection from addr (borrowed). 0, -EBUSY when its prefix holds
 * per_prefix already, -ENOMEM. */
int conn_limit_take(struct conn_limit *cl, const struct sockaddr *addr);

/* Gives back the slot a successful conn_limit_take(addr) took. */
void conn_limit_release(struct conn_limit *cl, const struct sockaddr *addr);

/* Connections held now by addr's prefix, and refusals so far (for status). */
unsigned conn_limit_held(const struct conn_limit *cl, const struct sockaddr *addr);
uint64_t conn_limit_refused(const struct conn_limit *cl);

#endif
