/* ntp-cookies: ntp-load's NTS cookies, kept as a real client must keep them (RFC 8915 §5.7).
 *
 * Every request carries a cookie no earlier request carried, taken from a key exchange or from
 * the encrypted part of an earlier authenticated reply. Unused cookies wait in a pool, oldest
 * first, each tied to the keys of the key exchange it descends from: the server seals the fresh
 * cookies of a reply with the keys of the request's cookie, so several key exchanges' keys can be
 * in use at once. The keys are reference-counted: one reference per cookie in the pool, one per
 * request in flight (held by the caller from ntp_cookies_take to its reply or loss).
 *
 * The module also runs the key exchanges (TLS 1.3, ALPN ntske/1, one request for NTPv4 and the
 * AEAD asked for) over a non-blocking TCP socket: blocking ones to fill the pool before the run,
 * and refills inside the caller's poll loop, without blocking it, when losses have drained the
 * pool. It counts what it does (struct ntp_cookies_stats); the load loop counts the rest. Not
 * thread-safe: one loop owns it. */
#ifndef NTP_COOKIES_H
#define NTP_COOKIES_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "nts_ntp.h"

struct aead;
struct tls_creds;
struct ntp_cookies;
/* The keys of one key exchange (c2s and s2c), shared by every cookie descending from it. */
struct ntp_cookies_keys;

/* All borrowed for the call only. */
struct ntp_cookies_params {
	uint16_t aead;			/* asked for, and required of every KE response */
	struct tls_creds *creds;	/* trust for the KE server (a reference is taken) */
	const struct sockaddr *ke_addr; /* the KE server (copied) */
	socklen_t ke_len;
	const char *ke_name; /* verified against its certificate (copied) */
	/* Requests outstanding at once: the pool holds a cookie for each plus one key exchange's
	 * worth, and drops what comes beyond. */
	unsigned window;
};

/* What the pool and its key exchanges did so far. */
struct ntp_cookies_stats {
	uint64_t ke_initial, ke_refills, ke_failed;
	uint64_t from_ke, from_replies, used, dropped;
	size_t left; /* unused cookies in the pool */
};

/* *out is new (caller frees with ntp_cookies_free); no key exchange has run yet. */
int ntp_cookies_new(struct ntp_cookies **out, const struct ntp_cookies_params *p);

/* Ends a refill still running (of no use once the run is over), drops every pooled cookie and
 * frees the pool. Keys still referenced by requests in flight stay valid until unreferenced.
 * NULL is a no-op. */
void ntp_cookies_free(struct ntp_cookies *nc);

/* Runs key exchanges one after another, blocking, until the pool holds at least want cookies.
 * The first one names the NTP server (ntp_cookies_server). Returns 0, or the negative errno of
 * the first key exchange that failed (its reason: ntp_cookies_error). */
int ntp_cookies_fill(struct ntp_cookies *nc, size_t want);

/* The NTP server the first key exchange named (borrowed; "" when it named none) and, in *port,
 * its port (123 when it named none). Meaningful once ntp_cookies_fill has succeeded. */
const char *ntp_cookies_server(const struct ntp_cookies *nc, uint16_t *port);

/* Unused cookies in the pool. */
size_t ntp_cookies_count(const struct ntp_cookies *nc);

/* The j-th oldest unused cookie (j < ntp_cookies_count) and, in *c2s, the key its request must
 * be sealed with; both borrowed until the pool next changes. Peeking does not spend it. */
const struct nts_ntp_cookie *ntp_cookies_peek(const struct ntp_cookies *nc, size_t j,
					      struct aead **c2s);

/* Spends the oldest cookie (the pool must not be empty), once its request is on the wire: it
 * leaves the pool for good. Returns its keys, new reference (caller unrefs on reply or loss). */
struct ntp_cookies_keys *ntp_cookies_take(struct ntp_cookies *nc);

/* Adds the n fresh cookies (borrowed) of a reply authenticated with keys (borrowed; the pool
 * takes its own references) behind the others. A cookie a request cannot carry (empty, too long,
 * not a multiple of 4) or beyond the pool's capacity is dropped and counted. */
void ntp_cookies_add(struct ntp_cookies *nc, struct ntp_cookies_keys *keys,
		     const struct nts_ntp_cookie *cookies, size_t n);

/* The S2C key that opens replies to a request sealed with keys (borrowed, as long as keys). */
struct aead *ntp_cookies_keys_s2c(const struct ntp_cookies_keys *keys);

/* Drops one reference; the last frees the keys. NULL is a no-op. */
void ntp_cookies_keys_unref(struct ntp_cookies_keys *keys);

/* Call while the pool is empty and requests are waiting: starts a refill key exchange unless one
 * is running or the last one failed less than 250 ms ago. Never blocks, never fails: a refill
 * that cannot start counts as failed and is retried later. */
void ntp_cookies_refill(struct ntp_cookies *nc);

/* The refill to poll for: pfd->fd is -1 when none is running. */
void ntp_cookies_pollfd(const struct ntp_cookies *nc, struct pollfd *pfd);

/* Advances a running refill with the events poll reported for it (0 when poll timed out). Call
 * on every pass of the loop, not only on events, so its deadline is noticed. No-op when none
 * is running. Its cookies go into the pool; a failure is counted and retried after 250 ms. */
void ntp_cookies_step(struct ntp_cookies *nc, short revents);

/* *out: the counters so far. */
void ntp_cookies_get_stats(const struct ntp_cookies *nc, struct ntp_cookies_stats *out);

/* The first key exchange failure ("what: detail", borrowed), or NULL when none failed. */
const char *ntp_cookies_error(const struct ntp_cookies *nc);

#endif
