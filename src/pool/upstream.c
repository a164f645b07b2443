#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>

#include "log.h"
#include "upstream_snapshot.h"

#define LATENCY_SAMPLES 1024
/* Reasons are our own short texts; a longer one is cut, never refused. */
#define RESULT_MAX 128

struct upstream {
	uint32_t id;
	char *domain;
	uint16_t port;
	uint32_t weight;
	enum ke_numbering numbering;
	char *token; /* secret, NULL: none; wiped when replaced or freed */
	enum upstream_state state;

	uint16_t protocols[KE_MSG_MAX_IDS];
	size_t n_protocols;
	struct ke_msg_algorithm algorithms[KE_MSG_MAX_IDS];
	size_t n_algorithms;
	uint64_t fetched_ms;
	char announced[KE_MSG_NAME_MAX + 1]; /* "" when none */

	bool probe_running;
	uint64_t next_probe_ms;
	bool probed;
	uint64_t last_probe_ms;
	char probe_result[RESULT_MAX];
	unsigned fail_streak; /* consecutive failed probes and deep checks: the back-off exponent */

	bool deep_running;
	bool deep_failed; /* the last deep check failed: a probe ok does not reset the back-off */
	/* Fixed Key requests failed fixed_key_streak times in a row: unhealthy until a deep check
	 * (not only a probe, which a half-broken upstream passes) says it works again. */
	unsigned session_streak;
	bool needs_deep;
	bool recovery_due; /* needs_deep and the probe passed: the deep check decides */
	char streak_reason[RESULT_MAX];	    /* why it left rotation, while needs_deep */
	char health_reason[2 * RESULT_MAX]; /* why it is unhealthy */
	uint64_t next_deep_ms;
	bool deep_checked;
	uint64_t last_deep_ms;
	char deep_result[RESULT_MAX];

	uint64_t served;
	uint64_t failures;
	uint32_t latency[LATENCY_SAMPLES]; /* ring of the last samples, ms */
	size_t n_latency;
	size_t latency_next;
};

struct upstream_registry {
	struct upstream_timing timing;
	/* Individually allocated so the pointers handed out by upstream_pick survive growth. */
	struct upstream **v;
	size_t n;
	uint32_t next_id;
	uint64_t version; /* bumped by every change a snapshot shows */
	/* upstream_pick's own snapshot and round-robin state, for callers on the registry's
	 * thread. */
	struct upstream_snapshot *snap;
	struct upstream_picker *picker;
};

static struct upstream *find(const struct upstream_registry *r, uint32_t id)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i]->id == id)
			return r->v[i];
	return NULL;
}

static struct upstream *find_spec(const struct upstream_registry *r,
				  const struct upstream_spec *spec)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i]->port == spec->port && strcasecmp(r->v[i]->domain, spec->domain) == 0)
			return r->v[i];
	return NULL;
}

static const struct upstream_spec *find_in_specs(const struct upstream_spec *specs, size_t n,
					       const struct upstream *u)
{
	for (size_t j = 0; j < n; j++)
		if (specs[j].port == u->port && strcasecmp(specs[j].domain, u->domain) == 0)
			return &specs[j];
	return NULL;
}

static int check_specs(const struct upstream_spec *specs, size_t n)
{
	if (n > UPSTREAM_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t len = specs[i].domain ? strlen(specs[i].domain) : 0;
		if (len == 0 || len > KE_MSG_NAME_MAX || specs[i].weight == 0)
			return -EINVAL;
		size_t tlen = specs[i].token ? strlen(specs[i].token) : 1;
		if (tlen == 0 || tlen > KE_MSG_TOKEN_MAX)
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (specs[j].port == specs[i].port &&
			    strcasecmp(specs[j].domain, specs[i].domain) == 0)
				return -EINVAL;
	}
	return 0;
}

static void drop_token(struct upstream *u)
{
	if (u->token) {
		gnutls_memset(u->token, 0, strlen(u->token));
		free(u->token);
		u->token = NULL;
	}
}

static void upstream_free_one(struct upstream *u)
{
	drop_token(u);
	free(u->domain);
	free(u);
}

static struct upstream *upstream_alloc(const struct upstream_spec *spec, uint64_t now_ms)
{
	struct upstream *u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->domain = strdup(spec->domain);
	u->token = spec->token ? strdup(spec->token) : NULL;
	if (!u->domain || (spec->token && !u->token)) {
		upstream_free_one(u);
		return NULL;
	}
	u->port = spec->port;
	u->weight = spec->weight;
	u->numbering = spec->numbering;
	u->state = UPSTREAM_PROBING;
	u->next_probe_ms = now_ms;
	return u;
}

static void set_text(char *dst, const char *src)
{
	snprintf(dst, RESULT_MAX, "%s", src ? src : "failed");
}

/* The pickers give a fresh start to an upstream that returns to rotation, instead of a credit
 * earned while it was not selectable. */
static void leave_rotation(struct upstream *u, enum upstream_state state)
{
	u->state = state;
}

int upstream_registry_new(struct upstream_registry **out, const struct upstream_spec *specs,
			  size_t n, const struct upstream_timing *timing, uint64_t now_ms)
{
	struct upstream_registry *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->timing = *timing;
	int rc = upstream_registry_update(r, specs, n, now_ms);
	if (rc < 0) {
		upstream_registry_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void upstream_registry_free(struct upstream_registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		upstream_free_one(r->v[i]);
	free(r->v);
	upstream_snapshot_unref(r->snap);
	upstream_picker_free(r->picker);
	free(r);
}

static void remove_at(struct upstream_registry *r, size_t i)
{
	upstream_free_one(r->v[i]);
	memmove(&r->v[i], &r->v[i + 1], (r->n - i - 1) * sizeof r->v[0]);
	r->n--;
}

int upstream_registry_update(struct upstream_registry *r, const struct upstream_spec *specs,
			     size_t n, uint64_t now_ms)
{
	int rc = check_specs(specs, n);
	if (rc < 0)
		return rc;

	/* Everything that can fail happens before the registry changes. */
	struct upstream **added = calloc(n ? n : 1, sizeof *added);
	if (!added)
		return -ENOMEM;
	size_t n_added = 0;
	for (size_t i = 0; i < n; i++) {
		if (find_spec(r, &specs[i]))
			continue;
		added[n_added] = upstream_alloc(&specs[i], now_ms);
		if (!added[n_added])
			goto nomem;
		n_added++;
	}
	/* New token copies for the upstreams that stay, made before anything changes. */
	char **tokens = calloc(r->n ? r->n : 1, sizeof *tokens);
	if (!tokens)
		goto nomem;
	for (size_t i = 0; i < r->n; i++) {
		const struct upstream_spec *spec = find_in_specs(specs, n, r->v[i]);
		if (spec && spec->token && !(tokens[i] = strdup(spec->token)))
			goto nomem_tokens;
	}
	struct upstream **v = realloc(r->v, (r->n + n_added + 1) * sizeof *v);
	if (!v)
		goto nomem_tokens;
	r->v = v;

	for (size_t i = 0; i < r->n; i++) {
		struct upstream *u = r->v[i];
		const struct upstream_spec *spec = find_in_specs(specs, n, u);
		if (!spec) {
			if (u->state != UPSTREAM_DRAINING)
				log_info("upstream %s:%u removed, draining", u->domain, u->port);
			leave_rotation(u, UPSTREAM_DRAINING);
			continue;
		}
		u->weight = spec->weight;
		u->numbering = spec->numbering;
		drop_token(u);
		u->token = tokens[i];
		tokens[i] = NULL;
		if (u->state == UPSTREAM_DRAINING) {
			u->state = UPSTREAM_PROBING;
			if (!u->probe_running)
				u->next_probe_ms = now_ms;
		}
	}
	free(tokens);
	for (size_t i = 0; i < n_added; i++) {
		added[i]->id = r->next_id++;
		r->v[r->n++] = added[i];
	}
	free(added);

	/* Bounded: draining ones the I/O never released go oldest first. */
	size_t draining = 0;
	for (size_t i = 0; i < r->n; i++)
		draining += r->v[i]->state == UPSTREAM_DRAINING;
	for (size_t i = 0; i < r->n && draining > UPSTREAM_MAX;) {
		if (r->v[i]->state == UPSTREAM_DRAINING) {
			remove_at(r, i);
			draining--;
		} else {
			i++;
		}
	}
	r->version++;
	return 0;

nomem_tokens:
	for (size_t i = 0; i < r->n; i++) {
		if (tokens[i]) {
			gnutls_memset(tokens[i], 0, strlen(tokens[i]));
			free(tokens[i]);
		}
	}
	free(tokens);
nomem:
	for (size_t i = 0; i < n_added; i++)
		upstream_free_one(added[i]);
	free(added);
	return -ENOMEM;
}

void upstream_forget(struct upstream_registry *r, uint32_t id)
{
	for (size_t i = 0; i < r->n; i++) {
		if (r->v[i]->id == id) {
			if (r->v[i]->state == UPSTREAM_DRAINING) {
				remove_at(r, i);
				r->version++;
			}
			return;
		}
	}
}

size_t upstream_count(const struct upstream_registry *r)
{
	return r->n;
}

uint32_t upstream_id_at(const struct upstream_registry *r, size_t index)
{
	return index < r->n ? r->v[index]->id : UINT32_MAX;
}

const char *upstream_domain(const struct upstream_registry *r, uint32_t id)
{
	const struct upstream *u = find(r, id);
	return u ? u->domain : NULL;
}

enum ke_numbering upstream_numbering(const struct upstream_registry *r, uint32_t id)
{
	const struct upstream *u = find(r, id);
	return u ? u->numbering : KE_NUMBERING_IANA;
}

const char *upstream_token(const struct upstream_registry *r, uint32_t id)
{
	const struct upstream *u = find(r, id);
	return u ? u->token : NULL;
}

uint16_t upstream_port(const struct upstream_registry *r, uint32_t id)
{
	const struct upstream *u = find(r, id);
	return u ? u->port : 0;
}

enum upstream_state upstream_state(const struct upstream_registry *r, uint32_t id)
{
	const struct upstream *u = find(r, id);
	return u ? u->state : UPSTREAM_DRAINING;
}

const char *upstream_state_name(enum upstream_state s)
{
	switch (s) {
	case UPSTREAM_PROBING:
		return "probing";
	case UPSTREAM_HEALTHY:
		return "healthy";
	case UPSTREAM_UNHEALTHY:
		return "unhealthy";
	case UPSTREAM_DRAINING:
		return "draining";
	}
	return "unknown";
}

/* ---- Snapshots and selection ------------------------------------------------------------ */

uint64_t upstream_registry_version(const struct upstream_registry *r)
{
	return r->version;
}

struct upstream_snapshot *upstream_registry_snapshot(const struct upstream_registry *r)
{
	struct upstream_snapshot *s = calloc(1, sizeof *s + r->n * sizeof s->e[0]);
	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	s->version = r->version;
	s->support_cache_ms = r->timing.support_cache_ms;
	for (size_t i = 0; i < r->n; i++) {
		const struct upstream *u = r->v[i];
		struct upstream_snapshot_entry *e = &s->e[i];
		s->n = i + 1;
		e->domain = strdup(u->domain);
		e->token = u->token ? strdup(u->token) : NULL;
		if (!e->domain || (u->token && !e->token)) {
			upstream_snapshot_unref(s);
			return NULL;
		}
		e->id = u->id;
		e->port = u->port;
		e->weight = u->weight;
		e->numbering = u->numbering;
		e->state = u->state;
		memcpy(e->protocols, u->protocols, u->n_protocols * sizeof u->protocols[0]);
		e->n_protocols = u->n_protocols;
		memcpy(e->algorithms, u->algorithms, u->n_algorithms * sizeof u->algorithms[0]);
		e->n_algorithms = u->n_algorithms;
		e->fetched_ms = u->fetched_ms;
		memcpy(e->announced, u->announced, sizeof e->announced);
	}
	return s;
}

int upstream_pick(struct upstream_registry *r, const struct ke_msg_request *req,
		  const uint32_t *tried, size_t n_tried, uint64_t now_ms,
		  struct pool_upstream_info *out)
{
	if (!r->picker && upstream_picker_new(&r->picker) < 0)
		return -ENOMEM;
	if (!r->snap || r->snap->version != r->version) {
		struct upstream_snapshot *fresh = upstream_registry_snapshot(r);
		if (!fresh)
			return -ENOMEM;
		upstream_snapshot_unref(r->snap);
		r->snap = fresh;
	}
	return upstream_snapshot_pick(r->snap, r->picker, req, tried, n_tried, now_ms, out);
}

/* ---- Probes and deep checks --------------------------------------------------------------- */

static uint64_t backoff_ms(const struct upstream_registry *r, unsigned streak)
{
	uint64_t b = r->timing.backoff_min_ms;
	for (unsigned i = 1; i < streak && b < r->timing.backoff_max_ms; i++)
		b *= 2;
	return b < r->timing.backoff_max_ms ? b : r->timing.backoff_max_ms;
}

/* Deep checks run on healthy upstreams when enabled, and whatever the setting on one that must
 * prove itself after failing Fixed Key requests. */
static bool deep_wanted(const struct upstream_registry *r, const struct upstream *u)
{
	return (u->state == UPSTREAM_HEALTHY && r->timing.deep_check_ms) || u->recovery_due;
}

/* Earliest due upstream, so one that waited longest goes first. */
static struct upstream *earliest(const struct upstream_registry *r, bool deep)
{
	struct upstream *best = NULL;
	for (size_t i = 0; i < r->n; i++) {
		struct upstream *u = r->v[i];
		if (deep) {
			if (!deep_wanted(r, u) || u->deep_running)
				continue;
			if (!best || u->next_deep_ms < best->next_deep_ms)
				best = u;
		} else {
			if (u->state == UPSTREAM_DRAINING || u->probe_running)
				continue;
			if (!best || u->next_probe_ms < best->next_probe_ms)
				best = u;
		}
	}
	return best;
}

int upstream_probe_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id)
{
	const struct upstream *u = earliest(r, false);
	if (!u || u->next_probe_ms > now_ms)
		return -ENOENT;
	*id = u->id;
	return 0;
}

uint64_t upstream_next_probe_ms(const struct upstream_registry *r)
{
	const struct upstream *u = earliest(r, false);
	return u ? u->next_probe_ms : UINT64_MAX;
}

void upstream_probe_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms)
{
	(void)now_ms;
	struct upstream *u = find(r, id);
	if (u && u->state != UPSTREAM_DRAINING)
		u->probe_running = true;
}

static void failed(struct upstream_registry *r, struct upstream *u, const char *reason,
		   uint64_t now_ms)
{
	u->failures++;
	u->fail_streak++;
	r->version++;
	/* While it must prove itself, the Fixed Key failures stay the reason; what failed since
	 * (the recovery deep check, a probe) is said after them. */
	if (u->needs_deep && strcmp(reason ? reason : "", u->streak_reason) != 0)
		snprintf(u->health_reason, sizeof u->health_reason, "%s; since then: %s",
			 u->streak_reason, reason ? reason : "failed");
	else
		snprintf(u->health_reason, sizeof u->health_reason, "%s", reason ? reason : "failed");
	if (u->state != UPSTREAM_UNHEALTHY)
		log_warn("upstream %s:%u unhealthy: %s", u->domain, u->port, reason);
	leave_rotation(u, UPSTREAM_UNHEALTHY);
	if (!u->probe_running)
		u->next_probe_ms = now_ms + backoff_ms(r, u->fail_streak);
}

static void probe_failed(struct upstream_registry *r, struct upstream *u, const char *reason,
			 uint64_t now_ms)
{
	u->probe_running = false;
	u->probed = true;
	u->last_probe_ms = now_ms;
	set_text(u->probe_result, reason);
	log_debug("upstream %s:%u probe failed: %s", u->domain, u->port, u->probe_result);
	failed(r, u, u->probe_result, now_ms);
}

void upstream_probe_ok(struct upstream_registry *r, uint32_t id,
		       const struct ke_msg_response *support, uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	/* Cleared even for a draining upstream: a reload may configure it again, and a probe
	 * marked as running would never be scheduled. */
	u->probe_running = false;
	if (u->state == UPSTREAM_DRAINING)
		return;

	/* Only what a Fixed Key request can carry: the builder insists on the AEAD's key length. */
	struct ke_msg_algorithm algs[KE_MSG_MAX_IDS];
	size_t n_algs = 0;
	if (support->has_supported_algorithms)
		for (size_t i = 0; i < support->n_supported_algorithms && i < KE_MSG_MAX_IDS; i++) {
			const struct ke_msg_algorithm *a = &support->supported_algorithms[i];
			if (a->key_len != 0 && ke_msg_aead_key_len(a->id) == a->key_len)
				algs[n_algs++] = *a;
		}
	/* A Support answer without the protocol list comes from a server that cannot be asked for
	 * it (the seeds' ntpd-rs-v1 servers), and those speak NTPv4 only. */
	static const uint16_t ntpv4_only[] = { KE_MSG_PROTOCOL_NTPV4 };
	const uint16_t *protocols = ntpv4_only;
	size_t n_protocols = 1;
	if (support->has_supported_protocols) {
		protocols = support->supported_protocols;
		n_protocols = support->n_supported_protocols;
		if (n_protocols > KE_MSG_MAX_IDS)
			n_protocols = KE_MSG_MAX_IDS;
	}
	bool ntpv4 = false;
	for (size_t i = 0; i < n_protocols; i++)
		ntpv4 |= protocols[i] == KE_MSG_PROTOCOL_NTPV4;
	if (!ntpv4) {
		probe_failed(r, u, "upstream does not offer NTPv4", now_ms);
		return;
	}
	if (n_algs == 0) {
		probe_failed(r, u, "no usable algorithms", now_ms);
		return;
	}

	memcpy(u->protocols, protocols, n_protocols * sizeof u->protocols[0]);
	u->n_protocols = n_protocols;
	memcpy(u->algorithms, algs, n_algs * sizeof algs[0]);
	u->n_algorithms = n_algs;
	u->fetched_ms = now_ms;
	if (support->has_server)
		snprintf(u->announced, sizeof u->announced, "%s", support->server.name);
	r->version++;

	u->probe_running = false;
	u->probed = true;
	u->last_probe_ms = now_ms;
	set_text(u->probe_result, "ok");
	u->next_probe_ms = now_ms + r->timing.probe_interval_ms;
	if (!u->deep_failed)
		u->fail_streak = 0;
	if (u->needs_deep) {
		/* The Support answer is no proof: the Fixed Key requests failed. */
		if (!u->recovery_due)
			log_debug("upstream %s:%u probe ok; a deep check decides its health",
				  u->domain, u->port);
		u->recovery_due = true;
		if (!u->deep_running)
			u->next_deep_ms = now_ms;
		return;
	}
	if (u->state != UPSTREAM_HEALTHY) {
		log_info("upstream %s:%u healthy", u->domain, u->port);
		u->state = UPSTREAM_HEALTHY;
		u->next_deep_ms = now_ms;
	}
}

void upstream_probe_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			   uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	u->probe_running = false; /* as in upstream_probe_ok */
	if (u->state != UPSTREAM_DRAINING)
		probe_failed(r, u, reason, now_ms);
}

int upstream_deep_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id)
{
	const struct upstream *u = earliest(r, true);
	if (!u || u->next_deep_ms > now_ms)
		return -ENOENT;
	*id = u->id;
	return 0;
}

uint64_t upstream_next_deep_ms(const struct upstream_registry *r)
{
	const struct upstream *u = earliest(r, true);
	return u ? u->next_deep_ms : UINT64_MAX;
}

void upstream_deep_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms)
{
	(void)now_ms;
	struct upstream *u = find(r, id);
	if (u && deep_wanted(r, u))
		u->deep_running = true;
}

void upstream_deep_result(struct upstream_registry *r, uint32_t id, bool ok, const char *reason,
			  uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	u->deep_running = false; /* as in upstream_probe_ok */
	if (u->state == UPSTREAM_DRAINING)
		return;
	u->deep_checked = true;
	u->last_deep_ms = now_ms;
	u->next_deep_ms = now_ms + r->timing.deep_check_ms;
	set_text(u->deep_result, ok ? "ok" : reason);
	u->deep_failed = !ok;
	bool recovery = u->recovery_due;
	u->recovery_due = false;
	if (ok) {
		u->fail_streak = 0;
		if (recovery) {
			log_info("upstream %s:%u healthy again: the deep check passed", u->domain,
				 u->port);
			u->needs_deep = false;
			u->state = UPSTREAM_HEALTHY;
			r->version++;
		}
		return;
	}
	log_debug("upstream %s:%u deep check failed: %s", u->domain, u->port, u->deep_result);
	failed(r, u, u->deep_result, now_ms);
}

/* ---- Sessions ----------------------------------------------------------------------------- */

void upstream_session_ok(struct upstream_registry *r, uint32_t id, uint64_t latency_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	u->session_streak = 0;
	u->served++;
	u->latency[u->latency_next] = latency_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)latency_ms;
	u->latency_next = (u->latency_next + 1) % LATENCY_SAMPLES;
	if (u->n_latency < LATENCY_SAMPLES)
		u->n_latency++;
}

void upstream_session_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			     uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	log_debug("upstream %s:%u failed in a session: %s", u->domain, u->port,
		  reason ? reason : "failed");
	unsigned streak = r->timing.fixed_key_streak;
	if (u->state == UPSTREAM_HEALTHY && streak && ++u->session_streak >= streak) {
		/* An upstream that answers probes but fails its Fixed Key requests leaves rotation
		 * at once; only a deep check brings it back. */
		char why[RESULT_MAX];
		snprintf(why, sizeof why, "fixed-key requests fail: %s", reason ? reason : "failed");
		u->session_streak = 0;
		u->needs_deep = true;
		snprintf(u->streak_reason, sizeof u->streak_reason, "%s", why);
		failed(r, u, why, now_ms);
		return;
	}
	u->failures++;
	if (u->state == UPSTREAM_HEALTHY && !u->probe_running && u->next_probe_ms > now_ms)
		u->next_probe_ms = now_ms;
}

void upstream_server_announced(struct upstream_registry *r, uint32_t id, const char *server)
{
	struct upstream *u = find(r, id);
	if (u && strcmp(u->announced, server ? server : "") != 0) {
		snprintf(u->announced, sizeof u->announced, "%s", server ? server : "");
		r->version++;
	}
}

/* ---- Status ------------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static json_t *wall_time(uint64_t t_ms, uint64_t now_ms, uint64_t wall_now_s)
{
	uint64_t age_s = now_ms > t_ms ? (now_ms - t_ms) / 1000 : 0;
	return json_integer((json_int_t)(wall_now_s > age_s ? wall_now_s - age_s : 0));
}

static json_t *latency_json(const struct upstream *u)
{
	if (u->n_latency == 0)
		return json_null();
	/* Status is rare: sorting a copy there keeps the session path at one store. */
	uint32_t sorted[LATENCY_SAMPLES];
	memcpy(sorted, u->latency, u->n_latency * sizeof sorted[0]);
	qsort(sorted, u->n_latency, sizeof sorted[0], cmp_u32);
	/* Nearest rank: the smallest sample with at least p of them at or below it. */
	size_t i50 = (u->n_latency * 50 + 99) / 100 - 1;
	size_t i99 = (u->n_latency * 99 + 99) / 100 - 1;
	return json_pack("{s:f, s:f}", "p50", (double)sorted[i50], "p99", (double)sorted[i99]);
}

void upstream_counters(const struct upstream_registry *r, uint32_t id, uint64_t *served,
		       uint64_t *failures)
{
	const struct upstream *u = find(r, id);
	*served = u ? u->served : 0;
	*failures = u ? u->failures : 0;
}

json_t *upstream_status_json(const struct upstream_registry *r, uint32_t id, unsigned kept,
			     uint64_t now_ms, uint64_t wall_now_s)
{
	const struct upstream *u = find(r, id);
	if (!u)
		return NULL;
	json_t *protocols = json_array();
	json_t *algorithms = json_array();
	if (!protocols || !algorithms)
		goto fail;
	for (size_t i = 0; i < u->n_protocols; i++)
		if (json_array_append_new(protocols, json_integer(u->protocols[i])) < 0)
			goto fail;
	for (size_t i = 0; i < u->n_algorithms; i++)
		if (json_array_append_new(algorithms,
					  json_pack("{s:i, s:i}", "id", u->algorithms[i].id,
						    "key_length", u->algorithms[i].key_len)) < 0)
			goto fail;
	/* json_pack releases what "o" was given even when it fails: nothing to free after it. */
	json_t *probe = u->probed ? wall_time(u->last_probe_ms, now_ms, wall_now_s) : json_null();
	json_t *deep =
		u->deep_checked ? wall_time(u->last_deep_ms, now_ms, wall_now_s) : json_null();
	return json_pack("{s:I, s:s, s:i, s:I, s:s, s:o?, s:o, s:o?, s:o, s:o?, s:o, s:o, s:I, "
			 "s:I, s:I, s:o}",
			 "id", (json_int_t)u->id, "name", u->domain, "port", (int)u->port,
			 "weight", (json_int_t)u->weight, "state", upstream_state_name(u->state),
			 "unhealthy_reason",
			 u->state == UPSTREAM_UNHEALTHY ? json_string(u->health_reason) : NULL,
			 "last_probe", probe,
			 "last_probe_result", u->probed ? json_string(u->probe_result) : NULL,
			 "last_deep_check", deep,
			 "last_deep_check_result",
			 u->deep_checked ? json_string(u->deep_result) : NULL,
			 "protocols", protocols, "algorithms", algorithms,
			 "sessions_served", (json_int_t)u->served, "failures",
			 (json_int_t)u->failures, "kept_connections", (json_int_t)kept,
			 "latency_ms", latency_json(u));

fail:
	json_decref(protocols);
	json_decref(algorithms);
	return NULL;
}
