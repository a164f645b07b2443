#include "keyset_task.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static uint64_t unix_now(void)
{
	return (uint64_t)time(NULL);
}

/* Several daemons may share one key file and store under flock, so a young temporary may be
 * another daemon's store in progress, which takes milliseconds; a minute old, it is a leftover
 * of a store that was killed, and it holds master keys that must not outlive stale-key-count. */
#define STALE_TEMP_AGE_S 60

static void removed_temp(void *arg, const char *dir, const char *name, uint64_t age_s)
{
	(void)arg;
	log_info("keyset: removed %s/%s, a temporary left %" PRIu64
		 " s ago by an interrupted store",
		 dir, name, age_s);
}

static void remove_stale_temps(const char *path, uint64_t now)
{
	char err[512];
	int rc = keyset_remove_stale_temps(path, now, STALE_TEMP_AGE_S, removed_temp, NULL, err,
					   sizeof err);
	/* A missing directory is reported by the store that follows, with its fix. */
	if (rc < 0 && rc != -ENOENT)
		log_warn("keyset: %s", err);
}

/* An exclusive lock on the key file, or -1 when there is none yet. */
static int lock_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && flock(fd, LOCK_EX) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* A version 1 file is stored again at once in version 2, keeping its time so the rotation
 * schedule does not move. The caller holds the file lock: a daemon sharing the file that
 * rotated meanwhile is either done (we read its keys) or waits, and is never overwritten with
 * the older keys. A failed rewrite is not fatal: the keys are good, and the next store (a
 * rotation or the stop) writes version 2. */
static void rewrite_old_format(const struct keyset *ks, const char *path)
{
	char err[512];
	if (keyset_store(ks, path, keyset_created(ks), err, sizeof err) < 0) {
		log_warn("keyset: %s is in the version 1 format and could not be rewritten: %s",
			 path, err);
		return;
	}
	log_info("keyset: rewrote %s from the version 1 format to version %d, keeping its %u "
		 "key(s) and its store time %" PRIu64,
		 path, KEYSET_FILE_VERSION, keyset_count(ks), keyset_created(ks));
}

static int load_keys(struct keyset_task *t, const struct config_daemon_keyset *cfg, char *err,
		     size_t errlen)
{
	t->cfg = cfg;
	const char *path = cfg->key_storage_path;
	uint64_t now = unix_now();
	if (!path) {
		log_info("keyset: no key-storage-path, keys live in memory only");
		return keyset_new_random(&t->keyset, now);
	}
	remove_stale_temps(path, now);
	int lock = lock_file(path);
	int rc = keyset_load(path, &t->keyset, err, errlen);
	if (rc >= 0) {
		log_info("keyset: loaded %u key(s) from %s, primary id %u", keyset_count(t->keyset),
			 path, keyset_primary_id(t->keyset));
		if (rc == KEYSET_FILE_OLD_FORMAT)
			rewrite_old_format(t->keyset, path);
	}
	if (lock >= 0)
		close(lock);
	if (rc >= 0)
		return 0;
	if (rc != -ENOENT)
		return rc;
	rc = keyset_new_random(&t->keyset, now);
	if (rc < 0) {
		snprintf(err, errlen, "keyset: cannot generate keys: %s", strerror(-rc));
		return rc;
	}
	/* Stored before anything is sealed with it, so no cookie outlives its key. */
	rc = keyset_store(t->keyset, path, now, err, errlen);
	if (rc < 0)
		return rc;
	log_info("keyset: created %s", path);
	return 0;
}

int keyset_task_load(struct keyset_task *t, const struct config_daemon_keyset *cfg, char *err,
		     size_t errlen)
{
	int rc = load_keys(t, cfg, err, errlen);
	if (rc == 0) {
		keyset_slot_init(&t->slot, keyset_ref(t->keyset));
		t->slot_ready = true;
	}
	return rc;
}

static void rotate_cb(uv_timer_t *timer);

uint64_t keyset_task_next_rotation(const struct keyset_task *t)
{
	return keyset_created(t->keyset) + t->cfg->key_rotation_interval_s;
}

static void arm_rotation(struct keyset_task *t)
{
	uint64_t now = unix_now(), at = keyset_task_next_rotation(t);
	uint64_t delay_ms = at > now ? (at - now) * 1000 : 0;
	uv_timer_start(&t->timer, rotate_cb, delay_ms, 0);
}

static void publish(struct keyset_task *t, struct keyset *ks, const char *how)
{
	keyset_unref(t->keyset);
	t->keyset = ks;
	slot_publish(&t->slot, keyset_ref(ks));
	t->rotations++;
	log_info("keyset: %s, primary id %u, %u key(s) held", how, keyset_primary_id(ks),
		 keyset_count(ks));
	arm_rotation(t);
}

/* Daemons sharing one key file (NTS-KE here, NTP on another daemon) must not each invent a new
 * key: under an exclusive lock on the file, a keyset stored by another daemon since ours is
 * adopted, and only otherwise a new key is made and stored. The lock is on the file's inode, so a
 * daemon that waited re-reads the path and finds the keyset the first one stored. */
static int adopt_newer(const struct keyset_task *t, const char *path, struct keyset **out)
{
	char err[512];
	struct keyset *stored;
	if (keyset_load(path, &stored, err, sizeof err) < 0)
		return 0;
	if (keyset_created(stored) > keyset_created(t->keyset) &&
	    keyset_primary_id(stored) != keyset_primary_id(t->keyset)) {
		*out = stored;
		return 1;
	}
	keyset_unref(stored);
	return 0;
}

/* A failed store keeps the old keys in service: publishing keys that a restart would lose would
 * strand every cookie sealed with them. The rotation is retried a minute later. */
static void rotate_cb(uv_timer_t *timer)
{
	struct keyset_task *t = timer->data;
	const char *path = t->cfg->key_storage_path;
	uint64_t now = unix_now();
	struct keyset *fresh = NULL;
	char err[512];
	int lock = -1, rc;
	if (path) {
		lock = lock_file(path);
		if (adopt_newer(t, path, &fresh) == 1) {
			publish(t, fresh, "adopted the keyset another daemon stored");
			goto out;
		}
	}
	rc = keyset_rotate(&fresh, t->keyset, t->cfg->stale_key_count, now);
	if (rc < 0) {
		log_error("keyset: rotation failed: %s", strerror(-rc));
	} else if (path && (rc = keyset_store(fresh, path, now, err, sizeof err)) < 0) {
		log_error("keyset: rotation not published: %s", err);
		keyset_unref(fresh);
	}
	if (rc < 0)
		uv_timer_start(timer, rotate_cb, 60 * 1000, 0);
	else
		publish(t, fresh, "rotated");
out:
	if (lock >= 0)
		close(lock);
}

struct slot *keyset_task_slot(struct keyset_task *t)
{
	return &t->slot;
}

void keyset_task_start(struct keyset_task *t, uv_loop_t *loop)
{
	uv_timer_init(loop, &t->timer);
	t->timer.data = t;
	t->timer_ready = true;
	arm_rotation(t);
}

void keyset_task_stop(struct keyset_task *t)
{
	if (t->timer_ready) {
		uv_close((uv_handle_t *)&t->timer, NULL);
		t->timer_ready = false;
	}
	if (t->cfg && t->cfg->key_storage_path && t->keyset) {
		char err[512];
		if (keyset_store(t->keyset, t->cfg->key_storage_path, keyset_created(t->keyset), err,
				 sizeof err) < 0)
			log_error("keyset: not stored at shutdown: %s", err);
	}
}

void keyset_task_deinit(struct keyset_task *t)
{
	if (t->slot_ready)
		slot_destroy(&t->slot);
	t->slot_ready = false;
	keyset_unref(t->keyset);
	t->keyset = NULL;
}
