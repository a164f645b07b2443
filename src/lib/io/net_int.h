/* Helpers shared by net.c (streams and listeners) and net_udp.c, included by those two only. */
#ifndef NTSPOOL_NET_INT_H
#define NTSPOOL_NET_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Size of addr's own sockaddr type. */
socklen_t net_int_addr_len(const struct sockaddr *addr);

/* "ADDR: libuv's text for rc" into err. */
void net_int_set_error(char *err, size_t errlen, const struct sockaddr *addr, int rc);

enum net_bind_mode {
	NET_BIND_EXCLUSIVE, /* the address is ours alone */
	NET_BIND_GROUP,	    /* SO_REUSEPORT: one of the sockets of a worker group */
};

/* Binds a socket with plain system calls so that the common failures (address in use, not
 * available, permission) come back at once and leave nothing behind in the loop. IPv6 sockets
 * are IPv6-only so that a v4 and a v6 socket can share a port number. A stream socket has
 * SO_REUSEADDR (a restart does not wait for TIME_WAIT) and listens. 0 and *out, or negative
 * errno. */
int net_int_bound_socket(const struct sockaddr *addr, int type, enum net_bind_mode mode, int *out);

/* addr's port, host order. */
uint16_t net_int_addr_port(const struct sockaddr *addr);

/* The socket's own address. 0 or negative errno. */
int net_int_local_addr(int fd, struct sockaddr_storage *out);

#endif
