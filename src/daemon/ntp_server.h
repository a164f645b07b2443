/* The NTP server's packet logic (PROTOCOL.md §5), sans-I/O: one request in, one reply out (or
 * nothing). Plain NTPv4 client requests (mode 3) get a server reply (mode 4); NTS requests get an
 * authenticated reply with fresh cookies, or an NTS NAK when the cookie or authenticator fails.
 * Never replies to anything but a client request, and never with more bytes than received.
 * A legacy MAC (20 or 24 bytes after the header) is answered plain without a MAC; extension
 * fields none of which is an NTS field are ignored and answered plain (RFC 7822); a packet with
 * any NTS field is NTS or nothing. Not thread-safe: one ntp_server per thread. */
#ifndef NTSPOOL_NTP_SERVER_H
#define NTSPOOL_NTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>
#include <sys/socket.h>

#include "cidr.h"
#include "keyset.h"
#include "ratelimit.h"

struct ntp_server_stats {
	uint64_t received;	    /* datagrams handed to ntp_server_handle */
	uint64_t plain;		    /* plain NTPv4 requests answered */
	uint64_t nts_accepted;	    /* NTS requests answered with an authenticated reply */
	uint64_t nts_naks;	    /* NTS NAKs sent (cookie unknown/undecryptable, bad authenticator) */
	uint64_t dropped_malformed; /* too short, bad extension fields, broken NTS shape */
	uint64_t dropped_other;	    /* not a client request (modes other than 3, versions < 1 or > 4) */
	uint64_t dropped_internal;  /* our side failed: output buffer too small, GnuTLS, random */
	uint64_t denied;	    /* refused by the access rules with a DENY kiss */
	uint64_t ignored;	    /* refused by the access rules without an answer */
	uint64_t rate_limited;	    /* answered with a RATE kiss */
};

/* A [[server]]'s access rules (ntpd-rs's allowlist, denylist, require-nts, rate limiting). Each
 * refusal is either silent (ignore) or a DENY kiss; the rate limit answers RATE kisses. Kisses
 * carry no time and are never longer than the request. */
enum ntp_server_refusal {
	NTP_SERVER_IGNORE,
	NTP_SERVER_DENY,
};
struct ntp_server_policy {
	bool has_allow;		  /* only addresses in allow[0, n_allow) are served */
	const struct cidr *allow; /* borrowed */
	size_t n_allow;
	enum ntp_server_refusal allow_action;
	const struct cidr *deny; /* addresses in deny[0, n_deny) are refused */
	size_t n_deny;
	enum ntp_server_refusal deny_action;
	bool require_nts; /* plain requests are refused with nts_action */
	enum ntp_server_refusal nts_action;
	struct ratelimit *rate; /* borrowed, may be NULL: one request per client per token */
};

/* What the server says about its own clock (from the daemon's synchronisation state). */
struct ntp_server_clock {
	uint8_t leap;	     /* 0..3; 3 = unsynchronised */
	uint8_t stratum;     /* 1..16 */
	int8_t precision;    /* log2 seconds */
	uint32_t refid;
	uint64_t ref_ts;     /* NTP timestamp of the last update */
	uint32_t root_delay; /* NTP short format (16.16 seconds) */
	uint32_t root_disp;
};

/* Reads the current time as an NTP timestamp; ud is the caller's. The glue passes the real
 * clock; tests pass a fixed or stepping one. */
typedef uint64_t (*ntp_server_now_fn)(void *ud);

struct ntp_server;

/* keyset_slot: borrowed; *keyset_slot is read per packet. stats: borrowed. *out is new
 * (ntp_server_free). Returns 0 or -ENOMEM. */
int ntp_server_new(struct ntp_server **out, struct keyset *const *keyset_slot,
		   struct ntp_server_stats *stats);
void ntp_server_free(struct ntp_server *s);

/* Applies policy (borrowed, with everything it points to, for the server's life) to the
 * requests of ntp_server_handle_from. Without one every client request is served. */
void ntp_server_set_policy(struct ntp_server *s, const struct ntp_server_policy *policy);

/* Handles one datagram req[0, len) (borrowed) received at rx_ts (NTP timestamp taken as early
 * as possible). clk: borrowed. now: read once, as late as possible, for the transmit timestamp.
 * Writes the reply into out (cap bytes) and returns its length, or 0 when nothing is to be sent.
 * Never fails otherwise: every problem a peer can cause is a counted drop or a NAK. */
size_t ntp_server_handle(struct ntp_server *s, const uint8_t *req, size_t len, uint64_t rx_ts,
			 const struct ntp_server_clock *clk, ntp_server_now_fn now, void *now_ud,
			 uint8_t *out, size_t cap);

/* As ntp_server_handle for a request from `from` (borrowed) at now_ms (monotonic, for the rate
 * limit), under the policy set with ntp_server_set_policy. Only client requests are judged:
 * anything ntp_server_handle drops is dropped before the rules are looked at. */
size_t ntp_server_handle_from(struct ntp_server *s, const struct sockaddr *from, uint64_t now_ms,
			      const uint8_t *req, size_t len, uint64_t rx_ts,
			      const struct ntp_server_clock *clk, ntp_server_now_fn now,
			      void *now_ud, uint8_t *out, size_t cap);

#endif
