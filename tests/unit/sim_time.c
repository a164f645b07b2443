#include "sim_time.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "config_daemon.h"
#include "ntp_packet.h"
#include "ntp_server.h"
#include "source.h"
#include "sync.h"
#include "wire.h"

#define H 3600.0
/* NTP seconds at the simulation's true time 0 (some day in 2024). */
#define EPOCH_NTP 3913056000u
/* The error is sampled this often. */
#define SCORE_STEP_S 16.0
/* The servers' processing time between receive and transmit. */
#define SERVER_TURN_S 10e-6

/* The client of issue 12: +0.1 s, +50 ppm wandering by 1e-9/sqrt(s), polls 2^6..2^10, 16 h scored
 * over the last 8 h. */
#define CLIENT                                                                                     \
	.offset0_s = 0.1, .freq0_ppm = 50, .wander = 1e-9, .poll_min = 6, .poll_max = 10,          \
	.duration_s = 16 * H, .score_from_s = 8 * H

const struct sim_scenario sim_scenarios[SIM_SCENARIOS] = {
	{ .name = "LAN 1 ms + exp(100 us)",
	  .base_delay_s = 1e-3,
	  .exp_mean_s = 100e-6,
	  .n_servers = 1,
	  CLIENT },
	{ .name = "LAN 1 ms + exp(1 ms)",
	  .base_delay_s = 1e-3,
	  .exp_mean_s = 1e-3,
	  .n_servers = 1,
	  CLIENT },
	{ .name = "WAN 10 ms + exp(5 ms)",
	  .base_delay_s = 10e-3,
	  .exp_mean_s = 5e-3,
	  .n_servers = 1,
	  CLIENT },
	{ .name = "LAN, +10 ppm at 8 h",
	  .base_delay_s = 1e-3,
	  .exp_mean_s = 100e-6,
	  .n_servers = 1,
	  .freq_step_ppm = 10,
	  .freq_step_at_s = 8 * H,
	  CLIENT },
	{ .name = "LAN, 3 servers, 1 off 50 ms",
	  .base_delay_s = 1e-3,
	  .exp_mean_s = 100e-6,
	  .n_servers = 3,
	  .false_offset_s = 0.05,
	  CLIENT },
};

/* splitmix64: small, and the same sequence everywhere for a seed. */
struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double uniform(struct rng *r)
{
	return ((double)(rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(struct rng *r)
{
	return sqrt(-2 * log(uniform(r))) * cos(2 * M_PI * uniform(r));
}

static double one_way(const struct sim_scenario *sc, struct rng *r)
{
	return sc->base_delay_s - sc->exp_mean_s * log(uniform(r));
}

/* An NTP timestamp of t seconds after the simulation's epoch (t may be a little negative). */
static uint64_t ntp_of(double t)
{
	double sec = floor(t);
	double frac = ldexp(t - sec, 32);
	uint64_t f = (uint64_t)frac;
	if (f > 0xffffffffu)
		f = 0xffffffffu;
	return (uint64_t)(EPOCH_NTP + (int64_t)sec) << 32 | f;
}

struct server {
	struct source *src;
	struct clock_filter filter;
	double next_poll_s;
	double offset_s; /* its time minus true time */
	char name[32];
};

struct sim {
	const struct sim_scenario *sc;
	struct rng rng;
	struct clock_sim clock;
	double t; /* true time */
	struct server srv[SIM_MAX_SERVERS];
	struct sync *sync;
	bool stepped_freq;
};

/* True time advances by dt; the oscillator's frequency walks meanwhile. */
static void advance(struct sim *s, double dt)
{
	while (dt > 0) {
		double h = fmin(dt, SCORE_STEP_S);
		clock_sim_advance(&s->clock, h);
		s->clock.freq_error_ppm += 1e6 * s->sc->wander * sqrt(h) * gauss(&s->rng);
		s->t += h;
		dt -= h;
		if (!s->stepped_freq && s->sc->freq_step_ppm != 0 &&
		    s->t >= s->sc->freq_step_at_s) {
			s->clock.freq_error_ppm += s->sc->freq_step_ppm;
			s->stepped_freq = true;
		}
	}
}

/* The server's side: a mode 4 reply to the request in pkt, stamped with its own time. */
static int serve(const struct server *v, double rx_true, const uint8_t *req, size_t req_len,
		 uint8_t *out, size_t cap)
{
	struct ntp_packet_header q, h;
	if (ntp_packet_parse_header(req, req_len, &q) < 0)
		return -EBADMSG;
	h = (struct ntp_packet_header){
		.leap = 0,
		.version = NTP_PACKET_VERSION,
		.mode = NTP_PACKET_MODE_SERVER,
		.stratum = 1,
		.poll = q.poll,
		.precision = -24,
		.root_delay = 0,
		.root_dispersion = ntp_packet_short_from_ns(10000),
		.refid = 0x47505300, /* "GPS" */
		.reference_ts = ntp_of(rx_true + v->offset_s - 8),
		.origin_ts = q.transmit_ts,
		.receive_ts = ntp_of(rx_true + v->offset_s),
		.transmit_ts = ntp_of(rx_true + SERVER_TURN_S + v->offset_s),
	};
	struct wire_writer w;
	wire_writer_init(&w, out, cap);
	ntp_packet_put_header(&w, &h);
	return wire_writer_error(&w) < 0 ? -EMSGSIZE : (int)wire_written(&w);
}

static void reselect(struct sim *s, struct sim_result *r)
{
	struct clock_candidate cand[SIM_MAX_SERVERS];
	const char *names[SIM_MAX_SERVERS];
	size_t n = 0;
	for (size_t i = 0; i < s->sc->n_servers; i++) {
		struct server *v = &s->srv[i];
		if (source_reach(v->src) == 0 ||
		    !clock_filter_candidate(&v->filter, (uint32_t)i + 1,
					    source_poll_interval_s(v->src), &cand[n]))
			continue;
		names[n++] = v->name;
	}
	if (sync_update(s->sync, cand, names, n, s->t, ntp_of(s->t + s->clock.offset_s))) {
		/* As the daemon: the filters measured the clock before the step. */
		for (size_t i = 0; i < s->sc->n_servers; i++) {
			clock_filter_init(&s->srv[i].filter);
			source_restart_burst(s->srv[i].src);
			s->srv[i].next_poll_s = s->t + 0.5 * uniform(&s->rng);
		}
	}
	if (s->sc->false_offset_s != 0) {
		uint32_t id = (uint32_t)s->sc->n_servers;
		if (sync_selected(s->sync, id) || sync_is_peer(s->sync, id))
			r->false_selected++;
	}
}

static int poll_server(struct sim *s, size_t i, struct sim_result *r)
{
	struct server *v = &s->srv[i];
	uint8_t req[SOURCE_PACKET_MAX], rep[128];
	struct source_random rnd;
	rnd.transmit = rng_next(&s->rng);
	for (size_t k = 0; k < sizeof rnd.uid; k++)
		rnd.uid[k] = (uint8_t)rng_next(&s->rng);
	memset(rnd.nonce, 0, sizeof rnd.nonce);
	double sent = s->t;
	int n = source_build_request(v->src, &rnd, ntp_of(s->t + s->clock.offset_s), req,
				     sizeof req);
	if (n < 0)
		return n;
	double d1 = one_way(s->sc, &s->rng), d2 = one_way(s->sc, &s->rng);
	int m = serve(v, s->t + d1, req, (size_t)n, rep, sizeof rep);
	if (m < 0)
		return m;
	advance(s, d1 + SERVER_TURN_S + d2);
	struct clock_sample sample;
	int rc = source_handle_reply(v->src, rep, (size_t)m, ntp_of(s->t + s->clock.offset_s), s->t,
				     &sample);
	if (rc == SOURCE_REPLY_SAMPLE) {
		r->samples++;
		clock_filter_add(&v->filter, &sample);
		reselect(s, r);
	}
	double jitter = (uniform(&s->rng) - 0.5) / 8;
	if (v->next_poll_s <= sent)
		v->next_poll_s = sent + source_poll_interval_s(v->src) * (1 + jitter);
	return rc < 0 ? rc : 0;
}

int sim_run(const struct sim_scenario *sc, uint64_t seed, struct sim_result *r)
{
	struct sim s;
	memset(&s, 0, sizeof s);
	memset(r, 0, sizeof *r);
	r->poll_after_step = r->poll_before_step = -1;
	s.sc = sc;
	s.rng.s = seed * 0x2545f4914f6cdd1dull + 1;
	clock_sim_init(&s.clock, sc->offset0_s, sc->freq0_ppm);
	struct config_daemon_sync cfg = {
		.local_stratum = 16,
		.clock_control = true,
		.minimum_agreeing_sources = 1,
		.single_step_panic_threshold_s = 1000,
	};
	struct ntp_server_clock server_clock = { .leap = 3, .stratum = 16, .precision = -20 };
	int rc = sync_new(&s.sync, &cfg, &server_clock, &clock_sim_ops, &s.clock);
	if (rc < 0)
		return rc;
	size_t ns = sc->n_servers < SIM_MAX_SERVERS ? sc->n_servers : SIM_MAX_SERVERS;
	for (size_t i = 0; i < ns && rc == 0; i++) {
		struct server *v = &s.srv[i];
		rc = source_new(&v->src, false, sc->poll_min, sc->poll_max, -20);
		clock_filter_init(&v->filter);
		v->next_poll_s = 0.5 * uniform(&s.rng);
		v->offset_s = sc->false_offset_s != 0 && i + 1 == ns ? sc->false_offset_s : 0;
		snprintf(v->name, sizeof v->name, "192.0.2.%zu:123", i + 1);
	}
	double next_score = 0, sum2 = 0;
	size_t scored = 0;
	while (rc == 0 && s.t < sc->duration_s) {
		size_t next = 0;
		for (size_t i = 1; i < ns; i++)
			if (s.srv[i].next_poll_s < s.srv[next].next_poll_s)
				next = i;
		double tick = sc->no_timer ? INFINITY : sync_next_event(s.sync);
		double when = fmin(fmin(s.srv[next].next_poll_s, next_score), tick);
		if (when > s.t)
			advance(&s, when - s.t);
		if (tick <= s.t) {
			sync_tick(s.sync, s.t);
		} else if (next_score <= s.t) {
			double e = fabs(s.clock.offset_s);
			if (s.t >= sc->score_from_s) {
				sum2 += e * e;
				scored++;
				r->max_s = fmax(r->max_s, e);
			}
			if (s.t >= 1 * H)
				r->max_after_1h_s = fmax(r->max_after_1h_s, e);
			next_score += SCORE_STEP_S;
		} else {
			int p = source_poll(s.srv[next].src);
			bool honest = s.srv[next].offset_s == 0;
			if (honest && (sc->freq_step_ppm == 0 || s.t < sc->freq_step_at_s))
				r->poll_max_reached =
					p > r->poll_max_reached ? p : r->poll_max_reached;
			if (next == 0 && sc->freq_step_ppm != 0 && s.t < sc->freq_step_at_s &&
			    s.t >= sc->freq_step_at_s - 2 * H && p > r->poll_before_step)
				r->poll_before_step = p;
			if (honest && sc->freq_step_ppm != 0 && s.t >= sc->freq_step_at_s &&
			    s.t < sc->freq_step_at_s + 2 * H &&
			    (r->poll_after_step < 0 || p < r->poll_after_step))
				r->poll_after_step = p;
			rc = poll_server(&s, next, r);
		}
	}
	r->rms_s = scored ? sqrt(sum2 / (double)scored) : INFINITY;
	r->steps = s.clock.steps;
	struct sync_report rep;
	sync_report(s.sync, &rep);
	r->freq_error_ppm = s.clock.freq_error_ppm + rep.frequency_estimate_ppm;
	for (size_t i = 0; i < ns; i++)
		source_free(s.srv[i].src);
	sync_free(s.sync);
	return rc;
}
