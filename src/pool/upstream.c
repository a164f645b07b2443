#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>

#include "log.h"
#include "upstream_health.h"
#include "upstream_snapshot.h"

#define LATENCY_SAMPLES 1024

struct upstream {
	uint32_t id;
	char *domain;
	uint16_t port;
	uint32_t weight;
	enum ke_numbering numbering;
	char *token; /* secret, NULL: none; wiped when replaced or freed */
	char **regions; /* lower case */
	size_t n_regions;
	struct upstream_health health; /* its state and everything that decides it */

	uint16_t protocols[KE_MSG_MAX_IDS];
	size_t n_protocols;
	struct ke_msg_algorithm algorithms[KE_MSG_MAX_IDS];
	size_t n_algorithms;
	uint64_t fetched_ms;
	char announced[KE_MSG_NAME_MAX + 1]; /* "" when none */

	uint64_t served;
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

static bool valid_region(const char *s)
{
	size_t len = s ? strlen(s) : 0;
	if (len == 0 || len > UPSTREAM_REGION_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
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
		if (specs[i].n_regions > UPSTREAM_REGIONS_MAX ||
		    (specs[i].n_regions && !specs[i].regions))
			return -EINVAL;
		for (size_t k = 0; k < specs[i].n_regions; k++)
			if (!valid_region(specs[i].regions[k]))
				return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (specs[j].port == specs[i].port &&
			    strcasecmp(specs[j].domain, specs[i].domain) == 0)
				return -EINVAL;
	}
	return 0;
}

static void free_regions(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Lower-case copies of src[0..n) into *out (NULL when n is 0); false without memory. */
static bool copy_regions(const char *const *src, size_t n, char ***out)
{
	*out = NULL;
	if (n == 0)
		return true;
	char **v = calloc(n, sizeof *v);
	if (!v)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!(v[i] = strdup(src[i]))) {
			free_regions(v, i);
			return false;
		}
		for (char *c = v[i]; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
	}
	*out = v;
	return true;
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
	free_regions(u->regions, u->n_regions);
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
	bool regions = copy_regions(spec->regions, spec->n_regions, &u->regions);
	if (regions)
		u->n_regions = spec->n_regions;
	if (!u->domain || (spec->token && !u->token) || !regions) {
		upstream_free_one(u);
		return NULL;
	}
	u->port = spec->port;
	u->weight = spec->weight;
	u->numbering = spec->numbering;
	upstream_health_init(&u->health, u->domain, u->port, now_ms);
	return u;
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
	/* New token and region copies for the upstreams that stay, made before anything changes. */
	struct staged {
		char *token;
		char **regions;
		size_t n_regions;
	} *staged = calloc(r->n ? r->n : 1, sizeof *staged);
	if (!staged)
		goto nomem;
	for (size_t i = 0; i < r->n; i++) {
		const struct upstream_spec *spec = find_in_specs(specs, n, r->v[i]);
		if (!spec)
			continue;
		if ((spec->token && !(staged[i].token = strdup(spec->token))) ||
		    !copy_regions(spec->regions, spec->n_regions, &staged[i].regions))
			goto nomem_staged;
		staged[i].n_regions = spec->n_regions;
	}
	struct upstream **v = realloc(r->v, (r->n + n_added + 1) * sizeof *v);
	if (!v)
		goto nomem_staged;
	r->v = v;

	for (size_t i = 0; i < r->n; i++) {
		struct upstream *u = r->v[i];
		const struct upstream_spec *spec = find_in_specs(specs, n, u);
		if (!spec) {
			if (u->health.state != UPSTREAM_DRAINING)
				log_info("upstream %s:%u removed, draining", u->domain, u->port);
			u->health.state = UPSTREAM_DRAINING;
			continue;
		}
		u->weight = spec->weight;
		u->numbering = spec->numbering;
		drop_token(u);
		u->token = staged[i].token;
		free_regions(u->regions, u->n_regions);
		u->regions = staged[i].regions;
		u->n_regions = staged[i].n_regions;
		staged[i] = (struct staged){ 0 };
		if (u->health.state == UPSTREAM_DRAINING)
			upstream_health_restart(&u->health, now_ms);
	}
	free(staged);
	for (size_t i = 0; i < n_added; i++) {
		added[i]->id = r->next_id++;
		r->v[r->n++] = added[i];
	}
	free(added);

	/* Bounded: draining ones the I/O never released go oldest first. */
	size_t draining = 0;
	for (size_t i = 0; i < r->n; i++)
		draining += r->v[i]->health.state == UPSTREAM_DRAINING;
	for (size_t i = 0; i < r->n && draining > UPSTREAM_MAX;) {
		if (r->v[i]->health.state == UPSTREAM_DRAINING) {
			remove_at(r, i);
			draining--;
		} else {
			i++;
		}
	}
	r->version++;
	return 0;

nomem_staged:
	for (size_t i = 0; i < r->n; i++) {
		if (staged[i].token) {
			gnutls_memset(staged[i].token, 0, strlen(staged[i].token));
			free(staged[i].token);
		}
		free_regions(staged[i].regions, staged[i].n_regions);
	}
	free(staged);
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
			if (r->v[i]->health.state == UPSTREAM_DRAINING) {
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
	return u ? u->health.state : UPSTREAM_DRAINING;
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
		if (copy_regions((const char *const *)u->regions, u->n_regions, &e->regions))
			e->n_regions = u->n_regions;
		if (!e->domain || (u->token && !e->token) || (u->n_regions && !e->regions)) {
			upstream_snapshot_unref(s);
			return NULL;
		}
		e->id = u->id;
		e->port = u->port;
		e->weight = u->weight;
		e->numbering = u->numbering;
		e->state = u->health.state;
		memcpy(e->protocols, u->protocols, u->n_protocols * sizeof u->protocols[0]);
		e->n_protocols = u->n_protocols;
		e->n_algorithms = upstream_health_usable(&u->health, r->timing.deep_check_ms != 0,
							 u->algorithms, u->n_algorithms,
							 e->algorithms, &e->families_ok);
		e->families = u->health.families;
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

/* Earliest due upstream, so one that waited longest goes first. */
static struct upstream *earliest(const struct upstream_registry *r, bool deep)
{
	struct upstream *best = NULL;
	for (size_t i = 0; i < r->n; i++) {
		struct upstream *u = r->v[i];
		const struct upstream_health *h = &u->health;
		if (deep) {
			if (!upstream_health_deep_wanted(h, &r->timing) || h->deep_running)
				continue;
			if (!best || h->next_deep_ms < best->health.next_deep_ms)
				best = u;
		} else {
			if (h->state == UPSTREAM_DRAINING || h->probe_running)
				continue;
			if (!best || h->next_probe_ms < best->health.next_probe_ms)
				best = u;
		}
	}
	return best;
}

int upstream_probe_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id)
{
	const struct upstream *u = earliest(r, false);
	if (!u || u->health.next_probe_ms > now_ms)
		return -ENOENT;
	*id = u->id;
	return 0;
}

uint64_t upstream_next_probe_ms(const struct upstream_registry *r)
{
	const struct upstream *u = earliest(r, false);
	return u ? u->health.next_probe_ms : UINT64_MAX;
}

void upstream_probe_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms)
{
	(void)now_ms;
	struct upstream *u = find(r, id);
	if (u && u->health.state != UPSTREAM_DRAINING)
		u->health.probe_running = true;
}

static void probe_failed(struct upstream_registry *r, struct upstream *u, const char *reason,
			 bool refused, uint64_t now_ms)
{
	if (upstream_health_probe_failed(&u->health, &r->timing, reason, refused, now_ms))
		r->version++;
}

void upstream_probe_ok(struct upstream_registry *r, uint32_t id,
		       const struct ke_msg_response *support, uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	/* Cleared even for a draining upstream: a reload may configure it again, and a probe
	 * marked as running would never be scheduled. */
	u->health.probe_running = false;
	if (u->health.state == UPSTREAM_DRAINING)
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
		probe_failed(r, u, "upstream does not offer NTPv4", true, now_ms);
		return;
	}
	if (n_algs == 0) {
		probe_failed(r, u, "no usable algorithms", true, now_ms);
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
	upstream_health_probe_ok(&u->health, &r->timing, now_ms);
}

static void probe_failed_id(struct upstream_registry *r, uint32_t id, const char *reason,
			    bool refused, uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	u->health.probe_running = false; /* as in upstream_probe_ok */
	if (u->health.state != UPSTREAM_DRAINING)
		probe_failed(r, u, reason, refused, now_ms);
}

void upstream_probe_failed(struct upstream_registry *r, uint32_t id, const char *reason,
			   uint64_t now_ms)
{
	probe_failed_id(r, id, reason, false, now_ms);
}

void upstream_probe_refused(struct upstream_registry *r, uint32_t id, const char *reason,
			    uint64_t now_ms)
{
	probe_failed_id(r, id, reason, true, now_ms);
}

int upstream_deep_due(struct upstream_registry *r, uint64_t now_ms, uint32_t *id)
{
	const struct upstream *u = earliest(r, true);
	if (!u || u->health.next_deep_ms > now_ms)
		return -ENOENT;
	*id = u->id;
	return 0;
}

uint64_t upstream_next_deep_ms(const struct upstream_registry *r)
{
	const struct upstream *u = earliest(r, true);
	return u ? u->health.next_deep_ms : UINT64_MAX;
}

void upstream_deep_started(struct upstream_registry *r, uint32_t id, uint64_t now_ms)
{
	(void)now_ms;
	struct upstream *u = find(r, id);
	if (u && upstream_health_deep_wanted(&u->health, &r->timing))
		u->health.deep_running = true;
}

void upstream_deep_result(struct upstream_registry *r, uint32_t id, uint8_t families,
			  const struct upstream_deep_outcome *v, size_t n, const char *reason,
			  uint64_t now_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	u->health.deep_running = false; /* as in upstream_probe_ok */
	if (u->health.state != UPSTREAM_DRAINING &&
	    upstream_health_deep_result(&u->health, &r->timing, families, v, n, reason, now_ms))
		r->version++;
}

/* ---- Sessions ----------------------------------------------------------------------------- */

void upstream_session_ok(struct upstream_registry *r, uint32_t id, uint64_t latency_ms)
{
	struct upstream *u = find(r, id);
	if (!u)
		return;
	upstream_health_session_ok(&u->health);
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
	if (u && upstream_health_session_failed(&u->health, &r->timing, reason, now_ms))
		r->version++;
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
	*failures = u ? u->health.failures_total : 0;
}

json_t *upstream_status_json(const struct upstream_registry *r, uint32_t id, unsigned kept,
			     uint64_t now_ms, uint64_t wall_now_s)
{
	const struct upstream *u = find(r, id);
	if (!u)
		return NULL;
	json_t *protocols = json_array();
	json_t *algorithms = json_array();
	json_t *regions = json_array();
	if (!protocols || !algorithms || !regions)
		goto fail;
	for (size_t i = 0; i < u->n_protocols; i++)
		if (json_array_append_new(protocols, json_integer(u->protocols[i])) < 0)
			goto fail;
	for (size_t i = 0; i < u->n_algorithms; i++)
		if (json_array_append_new(algorithms,
					  json_pack("{s:i, s:i}", "id", u->algorithms[i].id,
						    "key_length", u->algorithms[i].key_len)) < 0)
			goto fail;
	for (size_t i = 0; i < u->n_regions; i++)
		if (json_array_append_new(regions, json_string(u->regions[i])) < 0)
			goto fail;
	/* json_pack releases what "o" was given even when it fails: nothing to free after it. */
	json_t *o = json_pack("{s:I, s:s, s:i, s:I, s:o}", "id", (json_int_t)u->id, "name",
			      u->domain, "port", (int)u->port, "weight", (json_int_t)u->weight,
			      "regions", regions);
	json_t *rest = json_pack("{s:o, s:o, s:I, s:I, s:I, s:o}", "protocols", protocols,
				 "algorithms", algorithms, "sessions_served", (json_int_t)u->served,
				 "failures", (json_int_t)u->health.failures_total,
				 "kept_connections", (json_int_t)kept, "latency_ms",
				 latency_json(u));
	/* The health members after the name, then the lists and counters. */
	bool ok = o && rest &&
		  upstream_health_status(&u->health, &r->timing, o, now_ms, wall_now_s) &&
		  json_object_update(o, rest) == 0;
	json_decref(rest);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;

fail:
	json_decref(protocols);
	json_decref(algorithms);
	json_decref(regions);
	return NULL;
}
