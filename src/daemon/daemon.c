#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "ke_listener.h"
#include "log.h"
#include "ntp_listener.h"
#include "ntp_packet.h"
#include "sources.h"
#include "status.h"
#include "sync.h"

/* "LOCL": the reference id of a server that serves its own clock (RFC 5905 §7.3). */
#define REFID_LOCAL 0x4c4f434cu
/* Root dispersion announced for the local clock: what an undisciplined oscillator may have
 * drifted since an unknown last synchronisation, kept modest like chrony's `local` does. */
#define LOCAL_ROOT_DISP_NTP_SHORT 0x00000100u /* 1/256 s ≈ 3.9 ms */

uint64_t daemon_unix_now(void)
{
	return (uint64_t)time(NULL);
}

static int clock_precision(void)
{
	struct timespec res;
	if (clock_getres(CLOCK_REALTIME, &res) != 0 || res.tv_sec > 0)
		return -6;
	/* log2 of the resolution, rounded up: 1 ns reports -29, 1 µs -19. */
	int p = 0;
	double r = (double)res.tv_nsec / 1e9;
	while (r < 1.0 && p > -30) {
		r *= 2;
		p--;
	}
	return p + 1;
}

/* The clock this server announces until a synchronisation source exists: local-stratum 16 means
 * "unsynchronised" (leap 3), anything lower serves the local clock at that stratum, like chrony's
 * `local stratum N`. */
static void init_clock(struct daemon *d)
{
	int stratum = d->cfg.synchronization.local_stratum;
	d->clock = (struct ntp_server_clock){
		.leap = stratum >= 16 ? 3 : 0,
		.stratum = (uint8_t)stratum,
		.precision = (int8_t)clock_precision(),
		.refid = stratum >= 16 ? 0 : REFID_LOCAL,
		.root_delay = 0,
		.root_disp = LOCAL_ROOT_DISP_NTP_SHORT,
	};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	d->clock.ref_ts = ntp_packet_ts_from_timespec(&now);
}

/* ---- keyset task ---- */

static int load_keyset(struct daemon *d, char *err, size_t errlen)
{
	const char *path = d->cfg.keyset.key_storage_path;
	uint64_t now = daemon_unix_now();
	if (!path) {
		log_info("keyset: no key-storage-path, keys live in memory only");
		return keyset_new_random(&d->keyset, now);
	}
	int rc = keyset_load(path, &d->keyset, err, errlen);
	if (rc == 0) {
		log_info("keyset: loaded %u key(s) from %s, primary id %u", keyset_count(d->keyset),
			 path, keyset_primary_id(d->keyset));
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	rc = keyset_new_random(&d->keyset, now);
	if (rc < 0) {
		snprintf(err, errlen, "keyset: cannot generate keys: %s", strerror(-rc));
		return rc;
	}
	/* Stored before anything is sealed with it, so no cookie outlives its key. */
	rc = keyset_store(d->keyset, path, now, err, errlen);
	if (rc < 0)
		return rc;
	log_info("keyset: created %s", path);
	return 0;
}

static void rotate_cb(uv_timer_t *t);

static uint64_t next_rotation(const struct daemon *d)
{
	return keyset_created(d->keyset) + d->cfg.keyset.key_rotation_interval_s;
}

static void arm_rotation(struct daemon *d)
{
	uint64_t now = daemon_unix_now(), at = next_rotation(d);
	uint64_t delay_ms = at > now ? (at - now) * 1000 : 0;
	uv_timer_start(&d->rotate_timer, rotate_cb, delay_ms, 0);
}

static void publish(struct daemon *d, struct keyset *ks, const char *how)
{
	keyset_unref(d->keyset);
	d->keyset = ks;
	log_info("keyset: %s, primary id %u, %u key(s) held", how, keyset_primary_id(ks),
		 keyset_count(ks));
	arm_rotation(d);
}

/* Daemons sharing one key file (NTS-KE here, NTP on another daemon) must not each invent a new
 * key: under an exclusive lock on the file, a keyset stored by another daemon since ours is
 * adopted, and only otherwise a new key is made and stored. The lock is on the file's inode, so a
 * daemon that waited re-reads the path and finds the keyset the first one stored. */
static int adopt_newer(struct daemon *d, const char *path, struct keyset **out)
{
	char err[512];
	struct keyset *stored;
	if (keyset_load(path, &stored, err, sizeof err) < 0)
		return 0;
	if (keyset_created(stored) > keyset_created(d->keyset) &&
	    keyset_primary_id(stored) != keyset_primary_id(d->keyset)) {
		*out = stored;
		return 1;
	}
	keyset_unref(stored);
	return 0;
}

/* A failed store keeps the old keys in service: publishing keys that a restart would lose would
 * strand every cookie sealed with them. The rotation is retried a minute later. */
static void rotate_cb(uv_timer_t *t)
{
	struct daemon *d = t->data;
	const char *path = d->cfg.keyset.key_storage_path;
	uint64_t now = daemon_unix_now();
	struct keyset *fresh = NULL;
	char err[512];
	int lock = -1, rc;
	if (path) {
		lock = open(path, O_RDONLY | O_CLOEXEC);
		if (lock >= 0 && flock(lock, LOCK_EX) < 0) {
			close(lock);
			lock = -1;
		}
		if (adopt_newer(d, path, &fresh) == 1) {
			publish(d, fresh, "adopted the keyset another daemon stored");
			goto out;
		}
	}
	rc = keyset_rotate(&fresh, d->keyset, d->cfg.keyset.stale_key_count, now);
	if (rc < 0) {
		log_error("keyset: rotation failed: %s", strerror(-rc));
	} else if (path && (rc = keyset_store(fresh, path, now, err, sizeof err)) < 0) {
		log_error("keyset: rotation not published: %s", err);
		keyset_unref(fresh);
	}
	if (rc < 0)
		uv_timer_start(t, rotate_cb, 60 * 1000, 0);
	else
		publish(d, fresh, "rotated");
out:
	if (lock >= 0)
		close(lock);
}

/* ---- status ---- */

static json_t *sources_json(const struct daemon *d)
{
	json_t *arr = sources_status(d->sources);
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o) {
		uint32_t id = (uint32_t)json_integer_value(json_object_get(o, "id"));
		json_object_set_new(o, "selected", json_boolean(sync_selected(d->sync, id)));
		json_object_set_new(o, "system_peer", json_boolean(sync_is_peer(d->sync, id)));
	}
	return arr;
}

static json_t *status_json(void *ud)
{
	struct daemon *d = ud;
	json_t *ke = json_array(), *ntp = json_array();
	for (size_t i = 0; i < d->n_ke; i++)
		json_array_append_new(ke, ke_listener_status(d->ke[i]));
	for (size_t i = 0; i < d->n_ntp; i++)
		json_array_append_new(ntp, ntp_listener_status(d->ntp[i]));
	const char *storage = d->cfg.keyset.key_storage_path;
	json_t *doc = json_pack(
			 "{s:s, s:s, s:f, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:o}, s:{s:i, s:i}}",
			 "program", "ntp-daemon", "version", PACKAGE_VERSION, "uptime_s",
			 (double)(uv_now(d->loop) - d->started_ms) / 1000.0, "nts_ke_servers", ke,
			 "ntp_servers", ntp, "keyset", "keys", (json_int_t)keyset_count(d->keyset),
			 "primary_id", (json_int_t)keyset_primary_id(d->keyset), "created",
			 (json_int_t)keyset_created(d->keyset), "next_rotation",
			 (json_int_t)next_rotation(d), "storage",
			 storage ? json_string(storage) : json_null(), "synchronization",
			 "stratum", d->clock.stratum, "leap", d->clock.leap);
	if (doc && d->sources) {
		json_object_set_new(doc, "system", sync_status(d->sync));
		json_object_set_new(doc, "sources", sources_json(d));
	}
	return doc;
}

/* Gauges of the client half, read from the same objects /status shows so the two agree. */
static void sync_metrics(const struct daemon *d, struct status_text *out)
{
	static const char *const sys_fields[] = { "synchronised", "offset_s", "frequency_ppm",
						  "jitter_s", "stratum", "truechimers" };
	static const char *const src_fields[] = { "reach", "poll", "offset_s", "delay_s",
						  "jitter_s", "cookies", "errors" };
	char name[96], labels[320], esc_name[128], esc_mode[32];
	json_t *sys = sync_status(d->sync), *srcs = sources_json(d);
	for (size_t f = 0; f < sizeof sys_fields / sizeof sys_fields[0]; f++) {
		json_t *v = json_object_get(sys, sys_fields[f]);
		snprintf(name, sizeof name, "ntp_daemon_system_%s", sys_fields[f]);
		status_metric_header(out, name, "gauge", "System state, as in /status");
		status_metric_value(out, name, NULL,
				    json_is_boolean(v) ? json_is_true(v) : json_number_value(v));
	}
	for (size_t f = 0; f < sizeof src_fields / sizeof src_fields[0]; f++) {
		snprintf(name, sizeof name, "ntp_daemon_source_%s", src_fields[f]);
		status_metric_header(out, name, "gauge", "Per source, as in /status");
		size_t i;
		json_t *o;
		json_array_foreach(srcs, i, o) {
			json_t *v = json_object_get(o, src_fields[f]);
			const char *n = json_string_value(json_object_get(o, "name"));
			if (!json_is_number(v) || !n)
				continue;
			snprintf(labels, sizeof labels, "source=\"%s\",mode=\"%s\"",
				 status_label_escape(n, esc_name, sizeof esc_name),
				 status_label_escape(json_string_value(json_object_get(o, "mode")),
						     esc_mode, sizeof esc_mode));
			status_metric_value(out, name, labels, json_number_value(v));
		}
	}
	json_decref(sys);
	json_decref(srcs);
}

static void metrics(struct status_text *out, void *ud)
{
	struct daemon *d = ud;
	if (d->sources)
		sync_metrics(d, out);
	status_metric_header(out, "ntp_daemon_uptime_seconds", "gauge", "Seconds since start");
	status_metric_value(out, "ntp_daemon_uptime_seconds", NULL,
			    (double)(uv_now(d->loop) - d->started_ms) / 1000.0);
	ke_listener_metrics((const struct ke_listener *const *)d->ke, d->n_ke, out);
	ntp_listener_metrics((const struct ntp_listener *const *)d->ntp, d->n_ntp, out);
	status_metric_header(out, "ntp_daemon_keyset_keys", "gauge", "Master keys held");
	status_metric_value(out, "ntp_daemon_keyset_keys", NULL, keyset_count(d->keyset));
	status_metric_header(out, "ntp_daemon_keyset_primary_id", "gauge", "Id of the sealing key");
	status_metric_value(out, "ntp_daemon_keyset_primary_id", NULL, keyset_primary_id(d->keyset));
	status_metric_header(out, "ntp_daemon_keyset_next_rotation_timestamp_seconds", "gauge",
			     "Unix time of the next key rotation");
	status_metric_value(out, "ntp_daemon_keyset_next_rotation_timestamp_seconds", NULL,
			    (double)next_rotation(d));
}

static const struct status_provider provider = { .status_json = status_json, .metrics = metrics };

/* ---- sources ---- */

static uint64_t ntp_now(void *ud)
{
	(void)ud;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ntp_packet_ts_from_timespec(&ts);
}

/* Samples carry the loop's time (uv_now) as their monotonic stamp; selection uses the same. */
static void on_sample(void *ud, uint32_t id, const struct clock_sample *sample)
{
	struct daemon *d = ud;
	(void)id;
	(void)sample;
	sync_update(d->sync, d->sources, (double)uv_now(d->loop) / 1e3, ntp_now(NULL));
}

/* ---- lifecycle ---- */

int daemon_prepare(struct daemon *d, uv_loop_t *loop, const char *config_path,
		   struct config_daemon *cfg, char *err, size_t errlen)
{
	memset(d, 0, sizeof *d);
	d->loop = loop;
	d->cfg = *cfg;
	memset(cfg, 0, sizeof *cfg);
	d->config_path = strdup(config_path);
	if (!d->config_path)
		return -ENOMEM;
	init_clock(d);

	int rc = load_keyset(d, err, errlen);
	if (rc < 0)
		return rc;

	d->ke = calloc(d->cfg.nts_ke_server_count + 1, sizeof *d->ke);
	d->ntp = calloc(d->cfg.server_count + 1, sizeof *d->ntp);
	if (!d->ke || !d->ntp)
		return -ENOMEM;
	for (size_t i = 0; i < d->cfg.nts_ke_server_count; i++) {
		rc = ke_listener_new(&d->ke[i], loop, &d->cfg.nts_ke_servers[i], d->config_path,
				     &d->keyset, err, errlen);
		if (rc < 0)
			return rc;
		d->n_ke++;
	}
	if (d->cfg.source_count > 0) {
		/* Without clock control the offsets are measured and reported, never applied. */
		bool control = d->cfg.synchronization.clock_control;
		rc = sync_new(&d->sync, &d->cfg.synchronization, &d->clock,
			      control ? &clock_kernel_ops : NULL, NULL);
		if (rc < 0)
			return rc;
		if (!control)
			log_info("clock control is off: time is measured, the clock is never adjusted");
	}
	for (size_t i = 0; i < d->cfg.server_count; i++) {
		rc = ntp_listener_new(&d->ntp[i], loop, &d->cfg.servers[i], &d->keyset, &d->clock);
		if (rc < 0) {
			snprintf(err, errlen, "ntp server %s: %s", d->cfg.servers[i].listen.text,
				 strerror(-rc));
			return rc;
		}
		d->n_ntp++;
	}
	return 0;
}

int daemon_start(struct daemon *d, char *err, size_t errlen)
{
	int rc;
	d->started_ms = uv_now(d->loop);
	uv_timer_init(d->loop, &d->rotate_timer);
	d->rotate_timer.data = d;
	d->timer_ready = true;
	arm_rotation(d);

	for (size_t i = 0; i < d->n_ntp; i++)
		if ((rc = ntp_listener_start(d->ntp[i], err, errlen)) < 0)
			return rc;
	for (size_t i = 0; i < d->n_ke; i++)
		if ((rc = ke_listener_start(d->ke[i], err, errlen)) < 0)
			return rc;
	if (d->cfg.source_count > 0) {
		rc = sources_new(&d->sources, d->loop, &d->cfg, on_sample, ntp_now, d, err, errlen);
		if (rc < 0)
			return rc;
	}
	if (d->cfg.observability.has_status_listen) {
		const struct config_listen *sl = &d->cfg.observability.status_listen;
		rc = status_server_new(&d->status, d->loop, (const struct sockaddr *)&sl->addr,
				       &provider, d, err, errlen);
		if (rc < 0)
			return rc;
		log_info("status endpoint on http://%s/status", sl->text);
	}
	return 0;
}

void daemon_reload(struct daemon *d)
{
	char err[512];
	if (d->stopping)
		return;
	log_info("reloading certificates and pool tokens");
	for (size_t i = 0; i < d->n_ke; i++)
		if (ke_listener_reload(d->ke[i], err, sizeof err) < 0)
			log_warn("reload failed, keeping the previous certificates and tokens: %s",
				 err);
}

void daemon_stop(struct daemon *d)
{
	if (d->stopping)
		return;
	d->stopping = true;
	log_info("stopping");
	for (size_t i = 0; i < d->n_ke; i++)
		ke_listener_stop(d->ke[i]);
	for (size_t i = 0; i < d->n_ntp; i++)
		ntp_listener_stop(d->ntp[i]);
	if (d->status) {
		status_server_close(d->status);
		d->status = NULL;
	}
	if (d->timer_ready)
		uv_close((uv_handle_t *)&d->rotate_timer, NULL);
	if (d->sources) {
		sources_close(d->sources);
		d->sources = NULL;
	}
	if (d->cfg.keyset.key_storage_path && d->keyset) {
		char err[512];
		/* The file keeps the time of the last rotation, which schedules the next one after
		 * a restart. */
		if (keyset_store(d->keyset, d->cfg.keyset.key_storage_path,
				 keyset_created(d->keyset), err, sizeof err) < 0)
			log_error("keyset: not stored at shutdown: %s", err);
	}
}

void daemon_free(struct daemon *d)
{
	for (size_t i = 0; i < d->n_ke; i++)
		ke_listener_free(d->ke[i]);
	for (size_t i = 0; i < d->n_ntp; i++)
		ntp_listener_free(d->ntp[i]);
	free(d->ke);
	free(d->ntp);
	keyset_unref(d->keyset);
	sync_free(d->sync);
	config_daemon_free(&d->cfg);
	free(d->config_path);
	memset(d, 0, sizeof *d);
}
