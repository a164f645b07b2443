/* What the small test servers and clients share: the monotonic clock in milliseconds, an IPv4
 * "IP:PORT" argument, and a listening TCP socket on one. */
#ifndef NTSPOOL_TOOL_NET_H
#define NTSPOOL_TOOL_NET_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

int64_t tool_now_ms(void);

/* Parses "IPv4:PORT" (port 1..65535) into *out. 0, or -EINVAL. */
int tool_parse_ipv4(const char *s, struct sockaddr_in *out);

/* A TCP socket listening on "IPv4:PORT" (SO_REUSEADDR, backlog 64, non-blocking when asked):
 * the descriptor, -EINVAL for a bad argument, or -EIO after a failure reported on stderr with
 * prog's name. */
int tool_listen(const char *s, bool nonblock, const char *prog);

#endif
