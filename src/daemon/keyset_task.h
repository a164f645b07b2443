/* The daemon's cookie keyset over time: loaded (or created and stored) at start, rotated on
 * schedule with an atomic store before a new key is published, stored again at stop. Several
 * daemons sharing one key file cooperate under flock: a newer stored keyset is adopted instead of
 * a second one being invented. The task runs on the main loop; the keyset is published in a slot
 * (slot.h) that every worker's listeners read per request through their own views, so a
 * rotation is one publication that all workers see at their next request. */
#ifndef NTSPOOL_KEYSET_TASK_H
#define NTSPOOL_KEYSET_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config_daemon.h"
#include "keyset.h"
#include "slot.h"

struct keyset_task {
	const struct config_daemon_keyset *cfg; /* borrowed for the task's life */
	struct keyset *keyset;			 /* the published keyset: one reference */
	struct slot slot;			 /* the same, as every worker reads it */
	bool slot_ready;
	uint64_t rotations;			 /* keysets published since the start */
	uv_timer_t timer;
	bool timer_ready; /* timer initialised: it must be closed */
};

/* Fills t: the keyset from cfg's key-storage-path, or a new one stored there before anything is
 * sealed with it, or one in memory only without a path. Opens no timer. First removes the
 * temporaries a killed store left beside the file (keyset_remove_stale_temps, older than 60 s;
 * each removal logged at info). A file in the version 1 format is stored again in version 2 at
 * once, keeping its store time, under the file lock (logged at info; a failed rewrite only
 * warns). Returns 0 or negative errno with a message naming the file in err. */
int keyset_task_load(struct keyset_task *t, const struct config_daemon_keyset *cfg, char *err,
		     size_t errlen);

/* The slot every worker's listeners read (through their own views) at each request; borrowed
 * for the task's life. */
struct slot *keyset_task_slot(struct keyset_task *t);

/* Unix time of the next rotation. */
uint64_t keyset_task_next_rotation(const struct keyset_task *t);

/* Arms the rotation timer on loop. */
void keyset_task_start(struct keyset_task *t, uv_loop_t *loop);

/* Closes the timer (its close needs the loop to run) and stores the keyset, keeping the time of
 * the last rotation so a restart does not postpone the next one. */
void keyset_task_stop(struct keyset_task *t);

/* Drops the keyset once the loop has ended. */
void keyset_task_deinit(struct keyset_task *t);

#endif
