#include "daemon.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#include "ke_listener.h"
#include "net.h"
#include "log.h"
#include "ntp_listener.h"
#include "ntp_packet.h"
#include "program.h"
#include "sources.h"
#include "status.h"
#include "sync.h"
#include "tls_creds.h"
#include "workers.h"

/* "LOCL": the reference id of a server that serves its own clock (RFC 5905 §7.3). */
#define REFID_LOCAL 0x4c4f434cu
/* Root dispersion announced for the local clock: what an undisciplined oscillator may have
 * drifted since an unknown last synchronisation, kept modest like chrony's `local` does. */
#define LOCAL_ROOT_DISP_NTP_SHORT 0x00000100u /* 1/256 s ≈ 3.9 ms */

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

/* How long a status read waits for the workers' fresh counters: far more than a worker's loop
 * takes to come round, and short enough that a stuck worker cannot hold the status up. */
#define PUBLISH_WAIT_MS 250

/* The workers' published counters, gathered under each worker's lock: ke[k * n + w] and
 * ntp[k * n + w] for listener k on worker w. Arrays are the caller's (free). */
static int gather(struct daemon *d, struct ke_listener_counters **ke, struct ntp_server_stats **ntp)
{
	size_t n = d->n_workers;
	workers_publish(d->workers, PUBLISH_WAIT_MS);
	*ke = calloc(d->n_ke * n + 1, sizeof **ke);
	*ntp = calloc(d->n_ntp * n + 1, sizeof **ntp);
	if (!*ke || !*ntp) {
		free(*ke);
		free(*ntp);
		return -ENOMEM;
	}
	for (size_t w = 0; w < n && d->workers; w++) {
		struct daemon_worker *dw = &d->dw[w];
		worker_lock(dw->w);
		for (size_t k = 0; k < d->n_ke; k++)
			(*ke)[k * n + w] = dw->ke_counters[k];
		for (size_t k = 0; k < d->n_ntp; k++)
			(*ntp)[k * n + w] = dw->ntp_counters[k];
		worker_unlock(dw->w);
	}
	return 0;
}

static json_t *status_json(void *ud)
{
	struct daemon *d = ud;
	struct ke_listener_counters *kc;
	struct ntp_server_stats *nc;
	if (gather(d, &kc, &nc) < 0)
		return NULL;
	size_t n = d->n_workers;
	json_t *ke = json_array(), *ntp = json_array();
	for (size_t i = 0; i < d->n_ke; i++)
		json_array_append_new(ke, ke_listener_status(&d->ke[i], &kc[i * n], n,
							     d->ke_caps[i]));
	for (size_t i = 0; i < d->n_ntp; i++)
		json_array_append_new(ntp, ntp_listener_status(&d->cfg.servers[i], &nc[i * n], n));
	free(kc);
	free(nc);
	const char *storage = d->cfg.keyset.key_storage_path;
	json_t *doc = json_pack(
			 "{s:s, s:s, s:f, s:I, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:o}, "
			 "s:{s:i, s:i}}",
			 "program", "ntp-daemon", "version", PACKAGE_VERSION, "uptime_s",
			 (double)(uv_now(d->loop) - d->started_ms) / 1000.0, "workers",
			 (json_int_t)d->n_workers, "nts_ke_servers", ke, "ntp_servers", ntp,
			 "keyset", "keys", (json_int_t)keyset_count(d->keys.keyset),
			 "primary_id", (json_int_t)keyset_primary_id(d->keys.keyset), "created",
			 (json_int_t)keyset_created(d->keys.keyset), "next_rotation",
			 (json_int_t)keyset_task_next_rotation(&d->keys), "rotations",
			 (json_int_t)d->keys.rotations, "storage",
			 storage ? json_string(storage) : json_null(), "synchronization",
			 "stratum", d->clock.stratum, "leap", d->clock.leap);
	if (doc && d->sources) {
		json_object_set_new(doc, "system", sync_status(d->sync));
		json_object_set_new(doc, "sources", sources_json(d));
	}
	return doc;
}

/* The client half's metrics, read from the same objects /status shows so the two agree. Sources
 * carry their id as a label: two sources may reach the same server. */
static void sync_metrics(const struct daemon *d, struct status_text *out)
{
	struct sync_report r;
	sync_report(d->sync, &r);
	const struct {
		const char *name, *help;
		double v;
	} sys[] = {
		{ "ntp_daemon_system_synchronised", "1 when a majority of sources agree",
		  r.synchronised },
		{ "ntp_daemon_system_offset_seconds", "Combined offset of the selected sources",
		  r.offset_s },
		{ "ntp_daemon_system_frequency_ppm", "Frequency correction applied", r.frequency_ppm },
		{ "ntp_daemon_system_jitter_seconds", "System jitter", r.jitter_s },
		{ "ntp_daemon_system_stratum", "Stratum announced", r.stratum },
		{ "ntp_daemon_system_truechimers", "Sources whose intervals agree",
		  (double)r.truechimers },
	};
	for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++) {
		status_metric_header(out, sys[i].name, "gauge", sys[i].help);
		status_metric_value(out, sys[i].name, NULL, sys[i].v);
	}

	enum { REACH, POLL, OFFSET, DELAY, JITTER, COOKIES, ERRORS, N_SRC };
	static const struct {
		const char *name, *type, *help;
	} src[N_SRC] = {
		[REACH] = { "ntp_daemon_source_reach", "gauge", "Reachability register of 8 polls" },
		[POLL] = { "ntp_daemon_source_poll_log2_seconds", "gauge", "Poll interval, log2 s" },
		[OFFSET] = { "ntp_daemon_source_offset_seconds", "gauge", "Best sample's offset" },
		[DELAY] = { "ntp_daemon_source_delay_seconds", "gauge", "Best sample's delay" },
		[JITTER] = { "ntp_daemon_source_jitter_seconds", "gauge", "Filter jitter" },
		[COOKIES] = { "ntp_daemon_source_cookies", "gauge", "NTS cookies left" },
		[ERRORS] = { "ntp_daemon_source_errors_total", "counter", "Failures of the source" },
	};
	for (size_t f = 0; f < N_SRC; f++) {
		status_metric_header(out, src[f].name, src[f].type, src[f].help);
		for (size_t i = 0; i < sources_count(d->sources); i++) {
			struct source_info in;
			sources_get(d->sources, i, &in);
			bool sample = in.has_best;
			if (!in.name[0] || ((f == OFFSET || f == DELAY || f == JITTER) && !sample) ||
			    (f == COOKIES && strcmp(in.mode, "server") == 0))
				continue;
			double v = f == REACH	 ? in.reach
				   : f == POLL	 ? in.poll
				   : f == OFFSET ? in.candidate.best.offset_s
				   : f == DELAY	 ? in.candidate.best.delay_s
				   : f == JITTER ? in.candidate.jitter_s
				   : f == COOKIES ? in.cookies
						  : (double)in.errors;
			char labels[320], esc_name[128], esc_mode[32];
			snprintf(labels, sizeof labels, "id=\"%u\",source=\"%s\",mode=\"%s\"", in.id,
				 status_label_escape(in.name, esc_name, sizeof esc_name),
				 status_label_escape(in.mode, esc_mode, sizeof esc_mode));
			status_metric_value(out, src[f].name, labels, v);
		}
	}
}

static void metrics(struct status_text *out, void *ud)
{
	struct daemon *d = ud;
	if (d->sources)
		sync_metrics(d, out);
	status_metric_header(out, "ntp_daemon_uptime_seconds", "gauge", "Seconds since start");
	status_metric_value(out, "ntp_daemon_uptime_seconds", NULL,
			    (double)(uv_now(d->loop) - d->started_ms) / 1000.0);
	struct ke_listener_counters *kc;
	struct ntp_server_stats *nc;
	if (gather(d, &kc, &nc) == 0) {
		ke_listener_metrics(d->ke, d->n_ke, kc, d->n_workers, out);
		ntp_listener_metrics(d->cfg.servers, d->n_ntp, nc, d->n_workers, out);
		free(kc);
		free(nc);
	}
	status_metric_header(out, "ntp_daemon_workers", "gauge", "Worker threads serving clients");
	status_metric_value(out, "ntp_daemon_workers", NULL, d->n_workers);
	status_metric_header(out, "ntp_daemon_keyset_keys", "gauge", "Master keys held");
	status_metric_value(out, "ntp_daemon_keyset_keys", NULL, keyset_count(d->keys.keyset));
	status_metric_header(out, "ntp_daemon_keyset_primary_id", "gauge", "Id of the sealing key");
	status_metric_value(out, "ntp_daemon_keyset_primary_id", NULL, keyset_primary_id(d->keys.keyset));
	status_metric_header(out, "ntp_daemon_keyset_next_rotation_timestamp_seconds", "gauge",
			     "Unix time of the next key rotation");
	status_metric_value(out, "ntp_daemon_keyset_next_rotation_timestamp_seconds", NULL,
			    (double)keyset_task_next_rotation(&d->keys));
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

static void on_sync_timer(uv_timer_t *t);

/* After the discipline used the clock, or the helper's socket stirred: a clock helper that failed
 * leaves a daemon that would announce a clock it no longer steers, so it stops, as a failure a
 * service manager restarts. */
static void check_helper(struct daemon *d)
{
	if (d->helper.lost && !d->stopping)
		program_fail("the clock helper is gone and the clock can no longer be adjusted");
}

static void on_helper_watch_closed(uv_handle_t *h)
{
	struct daemon *d = h->data;
	close(d->helper_watch_fd);
	d->helper_watch_fd = -1;
}

static void stop_helper_watch(struct daemon *d)
{
	if (!d->helper_poll_open)
		return;
	d->helper_poll_open = false;
	uv_close((uv_handle_t *)&d->helper_poll, on_helper_watch_closed);
}

/* The helper speaks only when asked, and every answer is read by the call that asked: between
 * calls its socket is readable only when the helper is gone (end of file) or misbehaves. The
 * duplicate stays valid when clock_helper_give_up closes the original. */
static void on_helper_event(uv_poll_t *p, int status, int events)
{
	struct daemon *d = p->data;
	(void)events;
	char c;
	ssize_t n = recv(d->helper_watch_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	int e = errno;
	if (status == 0 && n < 0 && (e == EAGAIN || e == EWOULDBLOCK || e == EINTR))
		return;
	stop_helper_watch(d);
	clock_helper_give_up(&d->helper, status < 0 ? status : n == 0 ? -EPIPE : n > 0 ? -EPROTO : -e);
	check_helper(d);
}

/* Watches the helper between requests, so that one that dies is noticed at once, not at the
 * next adjustment. */
static int watch_helper(struct daemon *d, char *err, size_t errlen)
{
	d->helper_watch_fd = fcntl(d->helper.fd, F_DUPFD_CLOEXEC, 0);
	if (d->helper_watch_fd < 0) {
		int e = errno;
		snprintf(err, errlen, "clock helper: %s", strerror(e));
		return -e;
	}
	int rc = uv_poll_init(d->loop, &d->helper_poll, d->helper_watch_fd);
	if (rc < 0) {
		snprintf(err, errlen, "clock helper: %s", uv_strerror(rc));
		return rc;
	}
	d->helper_poll.data = d;
	d->helper_poll_open = true;
	rc = uv_poll_start(&d->helper_poll, UV_READABLE | UV_DISCONNECT, on_helper_event);
	if (rc < 0) {
		snprintf(err, errlen, "clock helper: %s", uv_strerror(rc));
		return rc;
	}
	return 0;
}

/* The discipline's next deadline (the end of a phase correction), if any, on the loop's clock. */
static void arm_sync_timer(struct daemon *d)
{
	if (!d->sync_timer_open || d->stopping)
		return;
	double at = sync_next_event(d->sync);
	if (isinf(at)) {
		uv_timer_stop(&d->sync_timer);
		return;
	}
	double in_ms = ceil((at - (double)uv_now(d->loop) / 1e3) * 1e3);
	uv_timer_start(&d->sync_timer, on_sync_timer, in_ms > 0 ? (uint64_t)in_ms : 0, 0);
}

static void on_sync_timer(uv_timer_t *t)
{
	struct daemon *d = t->data;
	sync_tick(d->sync, (double)uv_now(d->loop) / 1e3);
	arm_sync_timer(d);
	check_helper(d);
}

/* Samples carry the loop's time (uv_now) as their monotonic stamp; selection uses the same. */
static void on_sample(void *ud, uint32_t id, const struct clock_sample *sample)
{
	struct daemon *d = ud;
	(void)id;
	(void)sample;
	struct clock_candidate cand[SYNC_MAX_SOURCES];
	const char *names[SYNC_MAX_SOURCES];
	size_t n = 0;
	for (size_t i = 0; i < sources_count(d->sources) && n < SYNC_MAX_SOURCES; i++) {
		struct source_info info;
		sources_get(d->sources, i, &info);
		if (!info.has_best)
			continue;
		cand[n] = info.candidate;
		cand[n].id = info.id;
		names[n] = info.name;
		n++;
	}
	if (sync_update(d->sync, cand, names, n, (double)uv_now(d->loop) / 1e3, ntp_now(NULL)))
		sources_clear_filters(d->sources);
	arm_sync_timer(d);
	check_helper(d);
	if (ntp_clock_publish(&d->clock_slot, &d->clock) < 0)
		log_warn("out of memory: the NTP servers announce the previous clock state");
}

/* ---- workers: each serves its own socket of every listener ---- */

static int worker_start(struct worker *w, char *err, size_t errlen)
{
	struct daemon_worker *dw = worker_ud(w);
	struct daemon *d = dw->d;
	unsigned i = worker_index(w), n = d->n_workers;
	uv_loop_t *loop = worker_loop(w);
	dw->w = w;
	int rc = 0;
	for (size_t k = 0; k < d->n_ntp && rc == 0; k++) {
		if ((rc = ntp_listener_new_shared(&dw->ntp[k], loop, &d->cfg.servers[k],
						  keyset_task_slot(&d->keys), &d->clock_slot,
						  d->ntp_rate[k])) < 0) {
			snprintf(err, errlen, "ntp server %s: %s", d->cfg.servers[k].listen.text,
				 strerror(-rc));
			break;
		}
		int fd = d->ntp_fds[k * n + i];
		d->ntp_fds[k * n + i] = -1;
		rc = ntp_listener_start(dw->ntp[k], fd, err, errlen);
	}
	for (size_t k = 0; k < d->n_ke && rc == 0; k++) {
		if ((rc = ke_listener_new(&dw->ke[k], loop, &d->ke[k])) < 0) {
			snprintf(err, errlen, "nts-ke %s: %s", d->cfg.nts_ke_servers[k].listen.text,
				 strerror(-rc));
			break;
		}
		int fd = d->ke_fds[k * n + i];
		d->ke_fds[k * n + i] = -1;
		rc = ke_listener_start(dw->ke[k], fd, d->ke_caps[k], err, errlen);
	}
	return rc;
}

static void worker_publish(struct worker *w)
{
	struct daemon_worker *dw = worker_ud(w);
	for (size_t k = 0; k < dw->d->n_ke; k++)
		if (dw->ke[k])
			ke_listener_counters(dw->ke[k], &dw->ke_counters[k]);
	for (size_t k = 0; k < dw->d->n_ntp; k++)
		if (dw->ntp[k])
			ntp_listener_counters(dw->ntp[k], &dw->ntp_counters[k]);
}

/* The new credentials and tokens are published already; refreshing now lets an idle worker
 * drop its references to the old ones at once instead of at its next connection. */
static void worker_reload(struct worker *w)
{
	struct daemon_worker *dw = worker_ud(w);
	for (size_t k = 0; k < dw->d->n_ke; k++)
		if (dw->ke[k])
			ke_listener_refresh(dw->ke[k]);
}

static void worker_stop(struct worker *w)
{
	struct daemon_worker *dw = worker_ud(w);
	for (size_t k = 0; k < dw->d->n_ke; k++)
		if (dw->ke[k])
			ke_listener_stop(dw->ke[k]);
	for (size_t k = 0; k < dw->d->n_ntp; k++)
		if (dw->ntp[k])
			ntp_listener_stop(dw->ntp[k]);
}

static void workers_stopped(void *ud)
{
	struct daemon *d = ud;
	(void)d;
	log_debug("every worker stopped");
}

static const struct workers_ops worker_ops = {
	.start = worker_start,
	.publish = worker_publish,
	.reload = worker_reload,
	.stop = worker_stop,
	.all_stopped = workers_stopped,
};

/* ---- lifecycle ---- */

/* The start is ordered so that a failed one writes nothing: daemon_prepare reads and checks
 * every file the configuration names without changing any (the key file only read), and
 * daemon_start binds every socket before the keyset task loads the key file, which may create
 * it, rewrite an old format or remove a killed store's temporaries. */

static const char keyset_where[] = "[keyset]";

/* Where the key file is written (created, and replaced at every rotation and at stop by a new
 * file renamed over it): its directory must exist and take a new file from this user. */
static int check_key_dir(const char *path, char *err, size_t errlen)
{
	const char *slash = strrchr(path, '/');
	char dir[4096];
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else if (slash == path)
		snprintf(dir, sizeof dir, "/");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	struct stat st;
	if (stat(dir, &st) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot create the key file: directory %s: %s", path, dir,
			 strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: cannot create the key file: %s is not a directory", path,
			 dir);
		return -ENOTDIR;
	}
	if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: cannot write key files in %s: %s", path, dir,
			 strerror(e));
		return -e;
	}
	return 0;
}

/* The key file as keyset_task_load will find it, read only: a file it would refuse (checked for
 * the account the daemon is about to run as), or a missing one it could not create, is a
 * configuration error found before anything is written. */
static int check_keyset(const struct daemon *d, char *err, size_t errlen)
{
	const struct config_daemon_keyset *k = &d->cfg.keyset;
	if (!k->key_storage_path)
		return 0;
	struct keyset *ks;
	int rc = keyset_load_owned(k->key_storage_path, privdrop_uid(&d->priv), &ks, err, errlen);
	if (rc >= 0) {
		keyset_unref(ks);
		return 0;
	}
	if (rc == -ENOENT)
		rc = check_key_dir(k->key_storage_path, err, errlen);
	if (rc < 0)
		return program_file_error(rc, d->config_path, k->key_storage_path_line,
					  "key-storage-path", keyset_where, err, errlen);
	return 0;
}

/* The CA files of the NTS sources, read here so that a bad one stops the start as a
 * configuration error before anything is written; the sources load their own credentials from
 * the same files when they start. */
static int check_source_cas(const struct daemon *d, char *err, size_t errlen)
{
	for (size_t i = 0; i < d->cfg.source_count; i++) {
		const struct config_daemon_source *s = &d->cfg.sources[i];
		if (!s->certificate_authority)
			continue;
		char ca[512];
		const struct tls_client_options o = { .no_system_trust = true,
						      .ca_file = s->certificate_authority };
		const struct tls_creds_names names = {
			.ca = config_prefix(ca, sizeof ca, d->config_path,
					    s->certificate_authority_line, "certificate-authority",
					    "[[source]]"),
		};
		struct tls_creds *c;
		int rc = tls_creds_new_client_named(&c, &o, &names, err, errlen);
		if (rc < 0)
			return rc;
		tls_creds_unref(c);
	}
	return 0;
}

int daemon_prepare(struct daemon *d, uv_loop_t *loop, const char *config_path,
		   struct config_daemon *cfg, unsigned workers, char *err, size_t errlen)
{
	memset(d, 0, sizeof *d);
	clock_helper_init(&d->helper);
	d->helper_watch_fd = -1;
	d->loop = loop;
	d->cfg = *cfg;
	memset(cfg, 0, sizeof *cfg);
	d->n_workers = workers;
	d->config_path = strdup(config_path);
	if (!d->config_path)
		return -ENOMEM;
	init_clock(d);
	if (ntp_clock_slot_init(&d->clock_slot, &d->clock) < 0)
		return -ENOMEM;
	d->clock_ready = true;

	int rc;
	size_t nk = d->cfg.nts_ke_server_count, nv = d->cfg.server_count;
	d->ke = calloc(nk + 1, sizeof *d->ke);
	d->ke_caps = calloc(nk + 1, sizeof *d->ke_caps);
	d->ke_fds = malloc((nk * workers + 1) * sizeof *d->ke_fds);
	d->ntp_fds = malloc((nv * workers + 1) * sizeof *d->ntp_fds);
	d->dw = calloc(workers, sizeof *d->dw);
	if (!d->ke || !d->ke_caps || !d->ke_fds || !d->ntp_fds || !d->dw)
		return -ENOMEM;
	for (size_t i = 0; i < nk * workers; i++)
		d->ke_fds[i] = -1;
	for (size_t i = 0; i < nv * workers; i++)
		d->ntp_fds[i] = -1;
	d->n_ntp = nv;
	if (!(d->ntp_rate = calloc(nv + 1, sizeof *d->ntp_rate)))
		return -ENOMEM;
	for (size_t k = 0; k < nv; k++)
		if ((rc = ntp_rate_limit_new(&d->cfg.servers[k], &d->ntp_rate[k])) < 0) {
			snprintf(err, errlen, "ntp server %s: rate limiting: %s",
				 d->cfg.servers[k].listen.text, strerror(-rc));
			return rc;
		}
	for (unsigned w = 0; w < workers; w++) {
		struct daemon_worker *dw = &d->dw[w];
		dw->d = d;
		dw->ke = calloc(nk + 1, sizeof *dw->ke);
		dw->ntp = calloc(nv + 1, sizeof *dw->ntp);
		dw->ke_counters = calloc(nk + 1, sizeof *dw->ke_counters);
		dw->ntp_counters = calloc(nv + 1, sizeof *dw->ntp_counters);
		if (!dw->ke || !dw->ntp || !dw->ke_counters || !dw->ntp_counters)
			return -ENOMEM;
	}
	for (size_t i = 0; i < nk; i++) {
		rc = ke_shared_init(&d->ke[i], &d->cfg.nts_ke_servers[i], d->config_path,
				    keyset_task_slot(&d->keys), err, errlen);
		if (rc < 0)
			return rc;
		d->n_ke++;
	}
	if ((rc = privdrop_plan(&d->priv, d->cfg.user, d->config_path, d->cfg.user_line,
				"[daemon]", err, errlen)) < 0)
		return rc;
	if ((rc = check_source_cas(d, err, errlen)) < 0 || (rc = check_keyset(d, err, errlen)) < 0)
		return rc;
	if (d->cfg.source_count > 0) {
		/* Without clock control the offsets are measured and reported, never applied. */
		bool control = d->cfg.synchronization.clock_control;
		if (control && !privdrop_have(CAP_SYS_TIME)) {
			snprintf(err, errlen,
				 "%s: [synchronization] clock-control is on, but this process may not "
				 "adjust the clock (it lacks CAP_SYS_TIME): start it as root, grant the "
				 "capability (AmbientCapabilities=CAP_SYS_TIME, as ntp-daemon.service "
				 "does), or set clock-control = false (or --no-clock-control) to only "
				 "measure",
				 d->config_path);
			return -EPERM;
		}
		/* The clock is adjusted only by the helper daemon_start forks. */
		rc = sync_new(&d->sync, &d->cfg.synchronization, &d->clock,
			      control ? &clock_helper_ops : NULL, &d->helper);
		if (rc < 0)
			return rc;
		if (!control)
			log_info("clock control is off: time is measured, the clock is never adjusted");
	}
	return 0;
}

/* Every worker's socket of every listener, bound here so that an address in use stops the start
 * with a clear message before any thread runs. */
static int bind_sockets(struct daemon *d, char *err, size_t errlen)
{
	unsigned n = d->n_workers;
	for (size_t k = 0; k < d->n_ntp; k++) {
		const struct config_listen *l = &d->cfg.servers[k].listen;
		int rc = net_bind_group((const struct sockaddr *)&l->addr, SOCK_DGRAM, n,
					&d->ntp_fds[k * n], err, errlen);
		if (rc < 0)
			return program_listen_error(rc, d->config_path, l, "listen", "[[server]]",
						    err, errlen);
	}
	for (size_t k = 0; k < d->n_ke; k++) {
		const struct config_listen *l = &d->cfg.nts_ke_servers[k].listen;
		int rc = net_bind_group((const struct sockaddr *)&l->addr, SOCK_STREAM, n,
					&d->ke_fds[k * n], err, errlen);
		if (rc < 0)
			return program_listen_error(rc, d->config_path, l, "listen",
						    "[[nts-ke-server]]", err, errlen);
	}
	return 0;
}

/* Connection limits that the descriptor limit cannot honour are capped, with a warning, instead
 * of the kernel refusing accepts later without a word. concurrent-connections is the listener's
 * over all workers: each worker's share is rounded up. */
static void apply_caps(struct daemon *d)
{
	unsigned n = d->n_workers, wanted = 0;
	for (size_t k = 0; k < d->n_ke; k++)
		if (d->cfg.nts_ke_servers[k].concurrent_connections > wanted)
			wanted = d->cfg.nts_ke_servers[k].concurrent_connections;
	unsigned fixed = PROGRAM_FD_RESERVE + (unsigned)(d->n_ntp * n) +
			 (unsigned)d->cfg.source_count * 2 +
			 status_endpoints_max_fds(&d->cfg.observability);
	unsigned cap = program_conn_cap("concurrent-connections", wanted, (unsigned)d->n_ke, n,
					fixed);
	for (size_t k = 0; k < d->n_ke; k++) {
		unsigned own = d->cfg.nts_ke_servers[k].concurrent_connections;
		d->ke_caps[k] = (own + n - 1) / n;
		if (d->ke_caps[k] > cap)
			d->ke_caps[k] = cap;
	}
}

/* The files SIGHUP re-reads, as the account: one it cannot read would fail the next reload. */
static void warn_unreadable(const struct daemon *d)
{
	static const char where[] = "[[nts-ke-server]]";
	for (size_t i = 0; i < d->cfg.nts_ke_server_count; i++) {
		const struct config_daemon_nts_ke_server *k = &d->cfg.nts_ke_servers[i];
		program_warn_unreadable(k->certificate_chain_path, d->config_path,
					k->certificate_chain_path_line, "certificate-chain-path",
					where);
		program_warn_unreadable(k->private_key_path, d->config_path,
					k->private_key_path_line, "private-key-path", where);
		for (size_t c = 0; c < k->authorized_pool_server_certificate_count; c++)
			program_warn_unreadable(k->authorized_pool_server_certificates[c],
						d->config_path,
						k->authorized_pool_server_certificates_line,
						"authorized-pool-server-certificates", where);
		program_warn_unreadable(k->accepted_pool_authentication_tokens_path,
					d->config_path, k->tokens_path_line,
					"accepted-pool-authentication-tokens-path", where);
	}
}

/* The process model (doc/deploy.md): while the process is one thread and still privileged, the
 * clock helper is forked, every socket bound and the status endpoints opened; then the process
 * drops to its account with no capability left, before it reads a byte from the network, writes
 * the key file or starts a thread. */
int daemon_start(struct daemon *d, char *err, size_t errlen)
{
	int rc;
	d->started_ms = uv_now(d->loop);
	bool control = d->sync && d->cfg.synchronization.clock_control;
	if (control) {
		/* The helper keeps the panic thresholds itself: a step beyond them is refused even
		 * if this process asks for it. */
		struct clock_discipline_config limits;
		sync_discipline_config(&d->cfg.synchronization, &limits);
		rc = clock_helper_spawn(&d->helper, &d->priv, PRIVDROP_CAP(CAP_SYS_TIME),
					&clock_kernel_ops, NULL, &limits, err, errlen);
		if (rc < 0 || (rc = watch_helper(d, err, errlen)) < 0)
			return rc;
	}
	if ((rc = bind_sockets(d, err, errlen)) < 0)
		return rc;
	struct status_endpoint_failure failed;
	rc = status_endpoints_open(&d->status, d->loop, &d->cfg.observability, d->config_path,
				   "[observability]", &provider, d, &failed, err, errlen);
	if (rc < 0)
		return failed.listen ? program_listen_error(rc, d->config_path, failed.listen,
							    failed.key, "[observability]", err,
							    errlen)
				     : rc;
	if ((rc = privdrop_apply(&d->priv, 0, err, errlen)) < 0)
		return rc;
	char who[128];
	privdrop_describe(who, sizeof who);
	if (control)
		log_info("running as %s; the clock helper (pid %ld) alone may adjust the clock", who,
			 (long)d->helper.pid);
	else
		log_info("running as %s", who);
	warn_unreadable(d);
	/* Every socket is bound: only now may the key file be created. Its directory is checked as
	 * the account first, even for a file that exists, which every rotation replaces. */
	if (d->cfg.keyset.key_storage_path &&
	    (rc = check_key_dir(d->cfg.keyset.key_storage_path, err, errlen)) < 0)
		return program_file_error(rc, d->config_path, d->cfg.keyset.key_storage_path_line,
					  "key-storage-path", keyset_where, err, errlen);
	if ((rc = keyset_task_load(&d->keys, &d->cfg.keyset, err, errlen)) < 0)
		return d->cfg.keyset.key_storage_path
			       ? program_file_error(rc, d->config_path,
						    d->cfg.keyset.key_storage_path_line,
						    "key-storage-path", keyset_where, err, errlen)
			       : rc;
	keyset_task_start(&d->keys, d->loop);
	apply_caps(d);
	void **uds = calloc(d->n_workers, sizeof *uds);
	if (!uds) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (unsigned w = 0; w < d->n_workers; w++)
		uds[w] = &d->dw[w];
	rc = workers_start(&d->workers, d->loop, d->n_workers, &worker_ops, uds, d, err, errlen);
	free(uds);
	if (rc < 0)
		return rc;
	for (size_t k = 0; k < d->n_ntp; k++)
		log_info("ntp server listening on %s", d->cfg.servers[k].listen.text);
	for (size_t k = 0; k < d->n_ke; k++) {
		struct tls_creds *creds = slot_acquire(&d->ke[k].creds);
		struct pool_tokens *tokens = slot_acquire(&d->ke[k].tokens);
		size_t pins = tls_creds_pinned_count(creds), toks = pool_tokens_count(tokens);
		log_info("nts-ke listening on %s (%zu authorised pool certificate%s, %zu accepted "
			 "pool token%s)",
			 d->cfg.nts_ke_servers[k].listen.text, pins, pins == 1 ? "" : "s", toks,
			 toks == 1 ? "" : "s");
		tls_creds_unref(creds);
		pool_tokens_unref(tokens);
	}
	log_info("%u worker%s serving", d->n_workers, d->n_workers == 1 ? "" : "s");
	if (d->cfg.source_count > 0) {
		rc = sources_new(&d->sources, d->loop, &d->cfg, on_sample, ntp_now, d, err, errlen);
		if (rc < 0)
			return rc;
	}
	if (d->sync && d->cfg.synchronization.clock_control) {
		uv_timer_init(d->loop, &d->sync_timer);
		d->sync_timer.data = d;
		d->sync_timer_open = true;
	}
	return 0;
}

void daemon_reload(struct daemon *d)
{
	char err[1024];
	if (d->stopping)
		return;
	log_info("reloading certificates and pool tokens");
	for (size_t i = 0; i < d->n_ke; i++)
		if (ke_shared_reload(&d->ke[i], err, sizeof err) < 0)
			log_warn("reload failed, keeping the previous certificates and tokens: %s",
				 err);
	workers_reload(d->workers);
}

void daemon_stop(struct daemon *d)
{
	if (d->stopping)
		return;
	d->stopping = true;
	log_info("stopping");
	workers_stop(d->workers);
	status_endpoints_close(&d->status);
	stop_helper_watch(d);
	keyset_task_stop(&d->keys);
	if (d->sources) {
		sources_close(d->sources);
		d->sources = NULL;
	}
	if (d->sync_timer_open) {
		uv_close((uv_handle_t *)&d->sync_timer, NULL);
		d->sync_timer_open = false;
	}
}

static void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; fds && i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

void daemon_free(struct daemon *d)
{
	workers_free(d->workers);
	for (unsigned w = 0; d->dw && w < d->n_workers; w++) {
		struct daemon_worker *dw = &d->dw[w];
		for (size_t k = 0; dw->ke && k < d->n_ke; k++)
			ke_listener_free(dw->ke[k]);
		for (size_t k = 0; dw->ntp && k < d->n_ntp; k++)
			ntp_listener_free(dw->ntp[k]);
		free(dw->ke);
		free(dw->ntp);
		free(dw->ke_counters);
		free(dw->ntp_counters);
	}
	free(d->dw);
	close_fds(d->ke_fds, d->cfg.nts_ke_server_count * d->n_workers);
	close_fds(d->ntp_fds, d->n_ntp * d->n_workers);
	free(d->ke_fds);
	free(d->ntp_fds);
	for (size_t k = 0; d->ntp_rate && k < d->n_ntp; k++)
		ratelimit_free(d->ntp_rate[k]);
	free(d->ntp_rate);
	for (size_t i = 0; i < d->n_ke; i++)
		ke_shared_deinit(&d->ke[i]);
	free(d->ke);
	free(d->ke_caps);
	keyset_task_deinit(&d->keys);
	if (d->helper_watch_fd >= 0 && !d->helper_poll_open)
		close(d->helper_watch_fd);
	clock_helper_close(&d->helper);
	if (d->clock_ready)
		slot_destroy(&d->clock_slot);
	sync_free(d->sync);
	config_daemon_free(&d->cfg);
	free(d->config_path);
	memset(d, 0, sizeof *d);
}
