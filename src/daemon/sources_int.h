/* Internals shared by sources.c (slots, polling, name lookups, the life cycle and the views) and
 * sources_ke.c (the NTS-KE connections that key a slot). Included by those two files only. */
#ifndef NTSPOOL_DAEMON_SOURCES_INT_H
#define NTSPOOL_DAEMON_SOURCES_INT_H

#include "sources.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "clock.h"
#include "config_daemon.h"
#include "ke_msg.h"
#include "net.h"
#include "source.h"
#include "tls_creds.h"

/* Exponential back-off of a failing slot (PROTOCOL.md §7): 1 s doubling to this, then stays. */
#define BACKOFF_MAX_S 64
/* Bounds the whole acquisition of a server: resolving the KE host, the key exchange, resolving
 * the NTP server. */
#define ACQUIRE_TIMEOUT_MS 10000
#define KE_TIMEOUT_MS 5000
#define REASON_MAX 400
#define HOSTPORT_MAX (KE_MSG_NAME_MAX + 8)

/* What a slot is doing; its timer means a different thing in each state. */
enum slot_state {
	SLOT_WAIT,    /* timer: back-off before the next attempt (or queued behind another KE) */
	SLOT_KE,      /* timer: acquisition deadline; resolving the KE host or exchanging keys */
	SLOT_RESOLVE, /* timer: acquisition deadline; resolving the NTP server */
	SLOT_POLL,    /* timer: next poll */
};

struct slot;

/* A name lookup, freed by its own callback (uv_cancel still calls it); slot is NULL once the
 * slot stopped waiting for it. */
struct lookup {
	struct sources *m;
	struct slot *slot;
	bool for_ke;
	uint16_t port;
	uv_getaddrinfo_t req;
};

struct source_ke;

struct entry;

/* One place for a server: `count` of them per nts-pool entry, one otherwise. */
struct slot {
	struct entry *e;
	uint32_t id;
	bool id_used; /* the id named a server already: the next server gets a new one */
	enum slot_state state;
	bool queued; /* nts-pool: waits until no other KE of its entry runs */
	uv_timer_t timer;
	struct lookup *lookup;
	struct source_ke *ke;
	struct net_udp *udp;
	struct sockaddr_storage to;
	struct source *src;
	char host[KE_MSG_NAME_MAX + 1]; /* NTP server in use or being resolved; "" if none */
	uint16_t port;
	char name[HOSTPORT_MAX]; /* host:port once polling */
	char denied[KE_MSG_NAME_MAX + 1]; /* server this slot was told to leave */
	unsigned backoff_s;
	uint64_t last_ke_wall_s;
	uint64_t errors;
	char last_error[REASON_MAX];
	uint64_t last_rx_ms; /* loop time of the last sample, 0: none yet */
	struct clock_filter filter;
};

struct entry {
	struct sources *m;
	const struct config_daemon_source *cfg;
	const char *mode;
	char address[HOSTPORT_MAX];
	struct tls_creds *creds;
	struct slot *slots;
	size_t n_slots;
};

struct sources {
	uv_loop_t *loop;
	struct log_ratelimit recv_log; /* per manager: nothing mutable is shared between loops */
	const struct config_daemon *cfg;
	sources_sample_cb on_sample;
	sources_now_fn now;
	void *ud;
	struct entry *entries;
	size_t n_entries;
	uint32_t next_id;
	unsigned pending; /* the manager itself, timers, lookups and KE connections not freed */
	bool closing;
};

/* Precision (log2 s) assumed for reading the daemon's clock: clock_gettime resolves
 * nanoseconds, but reading it from the loop costs around a microsecond. */
#define SOURCES_LOCAL_PRECISION (-20)

static inline bool sources_is_nts(const struct entry *e)
{
	return e->cfg->mode == CONFIG_DAEMON_SOURCE_NTS ||
	       e->cfg->mode == CONFIG_DAEMON_SOURCE_NTS_POOL;
}

/* An entry of `count` servers that replaces the ones that go: nts-pool or pool. */
static inline bool sources_is_pool(const struct entry *e)
{
	return e->cfg->mode == CONFIG_DAEMON_SOURCE_NTS_POOL ||
	       e->cfg->mode == CONFIG_DAEMON_SOURCE_POOL;
}

/* A `pool` entry: its servers are addresses of one DNS name. */
static inline bool sources_is_dns_pool(const struct entry *e)
{
	return e->cfg->mode == CONFIG_DAEMON_SOURCE_POOL;
}

/* sources.c: drops one of m->pending, freeing m with the last one once it is closing. */
void sources_release(struct sources *m);

/* sources.c: ends the slot's current attempt and starts the next one: after the back-off when
 * failure (counted, logged, the back-off doubles), at once otherwise. */
void sources_slot_retry(struct slot *sl, bool failure, const char *reason);

/* sources.c: forgets the slot's server (socket, source, filter). */
void sources_drop_server(struct slot *sl);

/* sources.c: starts the next queued slot of an nts-pool entry once none of its exchanges runs. */
void sources_entry_kick(struct entry *e);

/* sources.c: resolves name (borrowed) and goes on with sources_ke_begin (for_ke) or polling. */
void sources_resolve(struct slot *sl, const char *name, bool for_ke);

struct addrinfo;
/* sources_pool.c: picks for a `pool` slot the first address of res (borrowed) that no other
 * slot of its entry polls, that `ignore` does not list and that the slot did not just leave (that
 * one only when nothing else is free); sets sl->host to its text and *out to it. False, with
 * the reason in why, when none may be used. */
bool sources_pool_choose(struct slot *sl, const struct addrinfo *res, struct sockaddr_storage *out,
			 char *why, size_t whylen);

/* sources_ke.c: runs one key exchange with the entry's NTS-KE server at addr (borrowed; the
 * configured port is applied). Ends in polling preparation or sources_slot_retry. */
void sources_ke_begin(struct slot *sl, const struct sockaddr *addr);

/* sources_ke.c: abandons the slot's key exchange, if any (the connection frees itself). */
void sources_ke_drop(struct slot *sl);

#endif
