#include "sync.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "clock_stats.h"
#include "log.h"
#include "ntp_packet.h"
#include "source.h"

/* RFC 5905's STEPT: larger offsets are stepped rather than slewed. */
#define STEP_THRESHOLD_S 0.128
/* RFC 5905's MAXFREQ. */
#define MAX_FREQUENCY_PPM 500.0

/* Without a poll interval from the source, the next update is assumed this far away. */
#define DEFAULT_POLL_S 64.0
/* A phase correction is spread over this many of the shortest poll interval among the truechimers:
 * it is done about when the next sample arrives, and a sample that comes late finds the clock on
 * its frequency estimate (sync_tick ended the correction). */
#define HORIZON_POLLS 1.0
/* After the first sample, selection waits this long so that the sources started together all answer
 * their first burst requests: a falseticker that happens to answer first is then never selected
 * alone. */
#define STARTUP_HOLD_S (2.0 * SOURCE_BURST_INTERVAL_S)
/* A new system peer must be this much closer (root distance) than the current one. */
#define PEER_HYSTERESIS 1.5
/* The interval of an estimated source grows at this many standard errors of its frequency. */
#define GROWTH_SIGMAS 3.0
/* ... and at least this fast: the wander of a crystal oscillator over an hour. */
#define GROWTH_MIN 1e-6

/* The statistics of one source, on the oscillator's uncorrected timescale. */
struct track {
	uint32_t id;
	struct clock_stats st;
	struct clock_estimate est;
	bool have_est;
	bool seen; /* among the candidates of the current update */
};

struct sync {
	const struct config_daemon_sync *cfg;
	struct ntp_server_clock *clock;
	struct ntp_server_clock local;	     /* what the server says without a source */
	struct clock_discipline *discipline; /* NULL without clock control */
	bool synchronised;
	struct clock_selection sel;
	char reference[64];
	uint32_t selected[SYNC_MAX_SOURCES];
	size_t n_selected;
	struct track *tracks[SYNC_MAX_SOURCES];
	size_t n_tracks;
	double freq_ppm;     /* combined frequency estimate of the truechimers (ppm correction) */
	double error_s;	     /* standard error of the combined offset estimate */
	size_t samples_used; /* samples in the truechimers' windows */
	double first_mono_s; /* the first sample's time, NAN before it */
};

/* A per-direction limit when the configuration has one, else the single one. */
static double either(double directional, double single)
{
	return directional > 0 ? directional : single;
}

void sync_discipline_config(const struct config_daemon_sync *cfg,
			    struct clock_discipline_config *out)
{
	*out = (struct clock_discipline_config){
		.step_threshold_s = STEP_THRESHOLD_S,
		/* ntpd-rs's forms keep a limit per direction; a configuration built without them
		 * has the one limit for both. */
		.panic_threshold_s = either(cfg->single_step.forward_s,
					    cfg->single_step_panic_threshold_s),
		.panic_backward_s = either(cfg->single_step.backward_s,
					   cfg->single_step_panic_threshold_s),
		.has_startup_panic = cfg->has_startup_step_panic_threshold,
		.startup_panic_threshold_s = either(cfg->startup_step.forward_s,
						    cfg->startup_step_panic_threshold_s),
		.startup_panic_backward_s = either(cfg->startup_step.backward_s,
						   cfg->startup_step_panic_threshold_s),
		.has_accumulated_panic = cfg->has_accumulated_step_panic_threshold,
		.accumulated_panic_threshold_s = cfg->accumulated_step_panic_threshold_s,
		.max_frequency_ppm = MAX_FREQUENCY_PPM,
	};
}

int sync_new(struct sync **out, const struct config_daemon_sync *cfg,
	     struct ntp_server_clock *clock, const struct clock_backend_ops *ops, void *ud)
{
	struct sync *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->cfg = cfg;
	s->clock = clock;
	s->local = *clock;
	s->first_mono_s = NAN;
	if (ops) {
		struct clock_discipline_config dc;
		sync_discipline_config(cfg, &dc);
		int rc = clock_discipline_new(&s->discipline, &dc, ops, ud);
		if (rc < 0) {
			free(s);
			return rc;
		}
	}
	*out = s;
	return 0;
}

void sync_free(struct sync *s)
{
	if (!s)
		return;
	clock_discipline_free(s->discipline);
	for (size_t i = 0; i < s->n_tracks; i++)
		free(s->tracks[i]);
	free(s);
}

/* RFC 5905 §7.3: an IPv4 upstream is named by its address; anything else by the first four
 * bytes of the MD5 of its name (the address text here). */
static uint32_t refid_of(const char *name)
{
	char host[64];
	snprintf(host, sizeof host, "%s", name);
	char *colon = strrchr(host, ':');
	if (colon && strchr(host, '.'))
		*colon = '\0';
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return ntohl(a4.s_addr);
	uint8_t digest[16];
	if (gnutls_hash_fast(GNUTLS_DIG_MD5, name, strlen(name), digest) < 0)
		return 0;
	return (uint32_t)digest[0] << 24 | (uint32_t)digest[1] << 16 | (uint32_t)digest[2] << 8 |
	       digest[3];
}

static uint32_t short_of(double seconds)
{
	return ntp_packet_short_from_ns(seconds <= 0 ? 0 : (uint64_t)(seconds * 1e9));
}

static double correction_at(const struct sync *s, double mono_s)
{
	return s->discipline ? clock_discipline_correction_s(s->discipline, mono_s) : 0;
}

static struct track *track_of(struct sync *s, uint32_t id)
{
	for (size_t i = 0; i < s->n_tracks; i++)
		if (s->tracks[i]->id == id)
			return s->tracks[i];
	if (s->n_tracks == SYNC_MAX_SOURCES)
		return NULL;
	struct track *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->id = id;
	clock_stats_init(&t->st);
	s->tracks[s->n_tracks++] = t;
	return t;
}

/* Takes in each candidate's newest sample once, refits, and forgets the sources that are no longer
 * candidates (unreachable, unsynchronised, or their filters cleared after a step). Returns whether
 * any sample was new; new[i] says which. */
static bool take_samples(struct sync *s, const struct clock_candidate *cand, size_t n, bool *new)
{
	bool any = false;
	for (size_t i = 0; i < s->n_tracks; i++)
		s->tracks[i]->seen = false;
	for (size_t i = 0; i < n; i++) {
		new[i] = false;
		struct track *t = track_of(s, cand[i].id);
		if (!t)
			continue;
		t->seen = true;
		const struct clock_sample *l = &cand[i].last;
		if (!(l->mono_s > 0) && l->delay_s == 0 && l->offset_s == 0)
			continue; /* no newest sample given */
		double raw = l->offset_s + correction_at(s, l->mono_s);
		if (!clock_stats_add(&t->st, l->mono_s, raw, l->delay_s))
			continue;
		t->have_est = clock_stats_estimate(&t->st, &t->est);
		new[i] = any = true;
	}
	size_t k = 0;
	for (size_t i = 0; i < s->n_tracks; i++) {
		if (s->tracks[i]->seen)
			s->tracks[k++] = s->tracks[i];
		else
			free(s->tracks[i]);
	}
	s->n_tracks = k;
	return any;
}

/* The candidate selection sees: the source's estimate now, with an interval of half its least
 * delay, its residual jitter and the estimate's own error, growing with age as fast as its
 * frequency error allows. The newest sample's header (stratum, leap, root delay) rides along. */
static void estimated_candidate(const struct sync *s, const struct clock_candidate *c,
				double mono_s, struct clock_candidate *out)
{
	*out = *c;
	const struct track *t = NULL;
	for (size_t i = 0; i < s->n_tracks && !t; i++)
		if (s->tracks[i]->id == c->id)
			t = s->tracks[i];
	if (!t || !t->have_est)
		return;
	const struct clock_estimate *e = &t->est;
	out->best = c->last;
	out->best.mono_s = e->t_s;
	out->best.offset_s = clock_estimate_at(e, mono_s) - correction_at(s, mono_s);
	out->best.delay_s = e->min_delay_s;
	out->jitter_s = sqrt(e->jitter_s * e->jitter_s + e->offset_sd_s * e->offset_sd_s);
	out->growth = isfinite(e->freq_sd) ? fmax(GROWTH_MIN, GROWTH_SIGMAS * e->freq_sd) : 0;
}

static const struct track *track_find(const struct sync *s, uint32_t id)
{
	for (size_t i = 0; i < s->n_tracks; i++)
		if (s->tracks[i]->id == id)
			return s->tracks[i];
	return NULL;
}

/* Steers the clock with the truechimers' combined estimate; true when it stepped. */
static bool steer(struct sync *s, const struct clock_candidate *cand, const bool *truechimer,
		  size_t n, double mono_s)
{
	double vsum = 0, fsum = 0, poll = INFINITY, isd = 0;
	size_t used = 0;
	for (size_t i = 0; i < n; i++) {
		if (!truechimer[i])
			continue;
		if (cand[i].poll_s >= 1)
			poll = fmin(poll, cand[i].poll_s);
		const struct track *t = track_find(s, cand[i].id);
		if (!t || !t->have_est)
			continue;
		used += t->est.n;
		if (t->est.offset_sd_s > 0)
			isd += 1 / (t->est.offset_sd_s * t->est.offset_sd_s);
		if (!isfinite(t->est.freq_sd))
			continue;
		double v = 1 / (t->est.freq_sd * t->est.freq_sd + 1e-18);
		vsum += v;
		fsum += v * t->est.freq;
	}
	s->samples_used = used;
	s->error_s = isd > 0 ? 1 / sqrt(isd) : 0;
	struct clock_steer st = {
		.offset_s = s->sel.offset_s,
		.has_freq = vsum > 0,
		.freq = vsum > 0 ? fsum / vsum : 0,
		.horizon_s = HORIZON_POLLS * (isfinite(poll) ? poll : DEFAULT_POLL_S),
	};
	enum clock_discipline_action a = clock_discipline_steer(s->discipline, &st, mono_s);
	s->freq_ppm = clock_discipline_base_ppm(s->discipline);
	switch (a) {
	case CLOCK_DISCIPLINE_PANIC:
		log_error("offset %.6f s is beyond the panic threshold; the clock was not "
			  "stepped",
			  st.offset_s);
		return false;
	case CLOCK_DISCIPLINE_STEPPED:
		log_warn("clock stepped by %.6f s", st.offset_s);
		return true;
	default:
		return false;
	}
}

/* The system peer only names the reference and feeds the server's header (the offset combines every
 * truechimer), so it changes only for a source clearly better: sources of about equal distance
 * would otherwise take turns with every sample. */
static void keep_peer(struct sync *s, const struct clock_candidate *ec, const bool *truechimer,
		      size_t n, double mono_s, uint32_t prev)
{
	size_t p = n, best = n;
	for (size_t i = 0; i < n; i++) {
		if (!truechimer[i])
			continue;
		if (ec[i].id == prev)
			p = i;
		if (ec[i].id == s->sel.system_peer)
			best = i;
	}
	if (p == n || best == n || p == best)
		return;
	if (clock_root_distance(&ec[p], mono_s) <
	    PEER_HYSTERESIS * clock_root_distance(&ec[best], mono_s)) {
		s->sel.system_peer = prev;
		s->sel.peer = ec[p].best;
	}
}

bool sync_update(struct sync *s, const struct clock_candidate *cand, const char *const *names,
		 size_t n, double mono_s, uint64_t now_ntp)
{
	bool truechimer[SYNC_MAX_SOURCES], fresh[SYNC_MAX_SOURCES];
	struct clock_candidate ec[SYNC_MAX_SOURCES];
	if (n > SYNC_MAX_SOURCES)
		n = SYNC_MAX_SOURCES;
	if (s->discipline)
		clock_discipline_tick(s->discipline, mono_s);
	if (take_samples(s, cand, n, fresh) && isnan(s->first_mono_s))
		s->first_mono_s = mono_s;
	if (!(mono_s >= s->first_mono_s + STARTUP_HOLD_S)) {
		s->synchronised = false;
		s->n_selected = 0;
		return false;
	}
	for (size_t i = 0; i < n; i++)
		estimated_candidate(s, &cand[i], mono_s, &ec[i]);
	uint32_t prev_peer = s->synchronised ? s->sel.system_peer : 0;
	bool had_peer = s->synchronised;
	int rc = clock_select(ec, n, s->cfg->minimum_agreeing_sources, mono_s, truechimer, &s->sel);
	if (rc == 0 && had_peer)
		keep_peer(s, ec, truechimer, n, mono_s, prev_peer);
	s->n_selected = 0;
	for (size_t i = 0; i < n; i++)
		if (rc == 0 && truechimer[i])
			s->selected[s->n_selected++] = cand[i].id;
	bool was = s->synchronised;
	s->synchronised = rc == 0;
	if (!s->synchronised) {
		if (was)
			log_warn("synchronisation lost: %zu of %zu sources agree, %u needed",
				 s->sel.n_true, n, s->cfg->minimum_agreeing_sources);
		*s->clock = s->local;
		s->reference[0] = '\0';
		return false;
	}
	const struct clock_sample *p = &s->sel.peer;
	const char *peer_name = "";
	for (size_t i = 0; i < n; i++)
		if (cand[i].id == s->sel.system_peer)
			peer_name = names[i];
	if (!was || strcmp(s->reference, peer_name) != 0)
		log_info("synchronised to %s (stratum %u), %zu source(s) agree", peer_name,
			 p->stratum, s->sel.n_true);
	snprintf(s->reference, sizeof s->reference, "%s", peer_name);
	*s->clock = (struct ntp_server_clock){
		.leap = p->leap,
		.stratum = (uint8_t)(p->stratum + 1 < 16 ? p->stratum + 1 : 16),
		.precision = s->local.precision,
		.refid = refid_of(peer_name),
		.ref_ts = now_ntp,
		.root_delay = short_of(p->root_delay_s + p->delay_s),
		.root_disp = short_of(p->root_disp_s + p->dispersion_s + s->sel.jitter_s +
				      fabs(s->sel.offset_s)),
	};
	/* Every new sample of a truechimer moves the estimate, and the clock follows it. */
	bool feed = false;
	for (size_t i = 0; i < n; i++)
		feed = feed || (fresh[i] && truechimer[i]);
	return s->discipline && feed && steer(s, ec, truechimer, n, mono_s);
}

double sync_next_event(const struct sync *s)
{
	return s->discipline ? clock_discipline_deadline(s->discipline) : INFINITY;
}

void sync_tick(struct sync *s, double mono_s)
{
	if (s->discipline)
		clock_discipline_tick(s->discipline, mono_s);
}

bool sync_selected(const struct sync *s, uint32_t id)
{
	for (size_t i = 0; i < s->n_selected; i++)
		if (s->selected[i] == id)
			return true;
	return false;
}

bool sync_is_peer(const struct sync *s, uint32_t id)
{
	return s->synchronised && s->sel.system_peer == id;
}

void sync_report(const struct sync *s, struct sync_report *out)
{
	*out = (struct sync_report){
		.synchronised = s->synchronised,
		.clock_control = s->discipline != NULL,
		.offset_s = s->synchronised ? s->sel.offset_s : 0.0,
		.frequency_ppm =
			s->discipline ? clock_discipline_frequency_ppm(s->discipline) : 0.0,
		.jitter_s = s->synchronised ? s->sel.jitter_s : 0.0,
		.stratum = s->clock->stratum,
		.truechimers = s->synchronised ? s->sel.n_true : 0,
		.frequency_estimate_ppm = s->discipline ? s->freq_ppm : 0.0,
		.error_s = s->synchronised ? s->error_s : 0.0,
		.samples = s->synchronised ? s->samples_used : 0,
		.steps = s->discipline ? clock_discipline_steps(s->discipline) : 0,
	};
}

json_t *sync_status(const struct sync *s)
{
	double ntp_short = 1.0 / 65536.0;
	struct sync_report r;
	sync_report(s, &r);
	return json_pack("{s:b, s:b, s:f, s:f, s:f, s:i, s:s?, s:f, s:f, s:I, s:f, s:f, s:I, s:I}",
			 "synchronised", r.synchronised, "clock_control", r.clock_control,
			 "offset_s", r.offset_s, "frequency_ppm", r.frequency_ppm, "jitter_s",
			 r.jitter_s, "stratum", (int)r.stratum, "reference",
			 r.synchronised ? s->reference : NULL, "root_delay_s",
			 s->clock->root_delay * ntp_short, "root_dispersion_s",
			 s->clock->root_disp * ntp_short, "truechimers", (json_int_t)r.truechimers,
			 "frequency_estimate_ppm", r.frequency_estimate_ppm, "estimated_error_s",
			 r.error_s, "samples", (json_int_t)r.samples, "steps", (json_int_t)r.steps);
}
