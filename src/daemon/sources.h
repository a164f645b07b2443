/* The daemon's time sources (PROTOCOL.md §7): one manager per [[source]] entry —
 * `server` (plain NTPv4), `nts` (NTS-KE with one server, then NTS-protected NTPv4) and `nts-pool`
 * (`count` distinct servers obtained through a pool's key exchange, each exchange denying the
 * servers already in use). It owns the sockets, timers and KE connections of its sources, polls
 * them, validates replies, keeps each source's clock filter, and reports samples to the time core
 * through a callback. */
#ifndef NTSPOOL_SOURCES_H
#define NTSPOOL_SOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "clock.h"
#include "config_daemon.h"

struct sources;

/* A source's view for the time core and for status. Pointers are borrowed until the next call
 * into the manager. */
struct source_info {
	uint32_t id;	      /* unique in the daemon, never reused */
	const char *name;     /* "host:port" of the NTP server */
	const char *mode;     /* "server", "nts", "nts-pool" */
	uint8_t reach;	      /* reachability register (8 polls) */
	int poll;	      /* current poll interval, log2 s */
	const char *poll_reason; /* why it last changed; NULL without a server */
	bool has_best;	      /* selectable: reachable, synchronised, the filter holds samples */
	struct clock_candidate candidate;
	unsigned cookies;     /* NTS cookies left */
	uint64_t last_ke_wall_s; /* unix time of the last key exchange, 0 if none */
	const char *last_error; /* "" if none */
	uint64_t last_rx_ms;	/* loop time of the last sample, 0: none yet */
	const char *pool;	/* the nts-pool entry's address this server came from, or NULL */
	uint64_t errors;	/* failures counted for this source */
};

/* Called after each new sample, and with s NULL when a source stopped being selectable
 * (unreachable for 8 polls, or its server unsynchronised): the caller reruns selection over
 * every source. */
typedef void (*sources_sample_cb)(void *ud, uint32_t id, const struct clock_sample *s);

/* local_now: the daemon's clock, as an NTP timestamp (the real clock, or a simulated one). */
typedef uint64_t (*sources_now_fn)(void *ud);

/* Starts every [[source]] of cfg (borrowed for the manager's life). *out is released with
 * sources_close. Returns 0 or a negative errno with err. */
int sources_new(struct sources **out, uv_loop_t *loop, const struct config_daemon *cfg,
		sources_sample_cb on_sample, sources_now_fn now, void *ud, char *err,
		size_t errlen);

/* Every source currently held (an nts-pool entry contributes up to `count`). */
size_t sources_count(const struct sources *s);
void sources_get(const struct sources *s, size_t index, struct source_info *out);

/* Forgets every source's samples: after the clock was stepped they measure a clock that no
 * longer exists. Polling sources send a new burst. */
void sources_clear_filters(struct sources *s);

/* The status array of doc/status.md (new reference). */
json_t *sources_status(const struct sources *s);

/* Stops polling and closes everything; freed from the last close callback. */
void sources_close(struct sources *s);

#endif
