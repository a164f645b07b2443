#include "sync.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "log.h"
#include "ntp_packet.h"

/* Sources one daemon follows at most; each nts-pool entry counts its `count`. */
/* RFC 5905's STEPT: larger offsets are stepped rather than slewed. */
#define STEP_THRESHOLD_S 0.128
/* RFC 5905's MAXFREQ. */
#define MAX_FREQUENCY_PPM 500.0

struct sync {
	const struct config_daemon_sync *cfg;
	struct ntp_server_clock *clock;
	struct ntp_server_clock local; /* what the server says without a source */
	struct clock_discipline *discipline; /* NULL without clock control */
	bool synchronised;
	struct clock_selection sel;
	char reference[64];
	double fed_mono_s; /* sample time of the last offset handed to the discipline */
	uint32_t selected[SYNC_MAX_SOURCES];
	size_t n_selected;
};

int sync_new(struct sync **out, const struct config_daemon_sync *cfg,
	     struct ntp_server_clock *clock, const struct clock_backend_ops *ops, void *ud)
{
	struct sync *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->cfg = cfg;
	s->clock = clock;
	s->local = *clock;
	s->fed_mono_s = -1;
	if (ops) {
		struct clock_discipline_config dc = {
			.step_threshold_s = STEP_THRESHOLD_S,
			.panic_threshold_s = cfg->single_step_panic_threshold_s,
			.has_startup_panic = cfg->has_startup_step_panic_threshold,
			.startup_panic_threshold_s = cfg->startup_step_panic_threshold_s,
			.has_accumulated_panic = cfg->has_accumulated_step_panic_threshold,
			.accumulated_panic_threshold_s = cfg->accumulated_step_panic_threshold_s,
			.max_frequency_ppm = MAX_FREQUENCY_PPM,
		};
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

bool sync_update(struct sync *s, const struct clock_candidate *cand, const char *const *names,
		 size_t n, double mono_s, uint64_t now_ntp)
{
	bool truechimer[SYNC_MAX_SOURCES];
	if (n > SYNC_MAX_SOURCES)
		n = SYNC_MAX_SOURCES;
	int rc = clock_select(cand, n, s->cfg->minimum_agreeing_sources, mono_s, truechimer, &s->sel);
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
	/* Each sample of the system peer is handed to the discipline once. */
	bool stepped = false;
	if (s->discipline && p->mono_s != s->fed_mono_s) {
		s->fed_mono_s = p->mono_s;
		double offset = s->sel.offset_s;
		switch (clock_discipline_update(s->discipline, offset, p->mono_s)) {
		case CLOCK_DISCIPLINE_PANIC:
			log_error("offset %.6f s is beyond the panic threshold; the clock was not "
				  "stepped", offset);
			break;
		case CLOCK_DISCIPLINE_STEPPED:
			log_warn("clock stepped by %.6f s", offset);
			stepped = true;
			break;
		default:
			break;
		}
	}
	return stepped;
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
		.frequency_ppm = s->discipline ? clock_discipline_frequency_ppm(s->discipline) : 0.0,
		.jitter_s = s->synchronised ? s->sel.jitter_s : 0.0,
		.stratum = s->clock->stratum,
		.truechimers = s->synchronised ? s->sel.n_true : 0,
	};
}

json_t *sync_status(const struct sync *s)
{
	double ntp_short = 1.0 / 65536.0;
	struct sync_report r;
	sync_report(s, &r);
	return json_pack("{s:b, s:b, s:f, s:f, s:f, s:i, s:s?, s:f, s:f, s:I}", "synchronised",
			 r.synchronised, "clock_control", r.clock_control, "offset_s", r.offset_s,
			 "frequency_ppm", r.frequency_ppm, "jitter_s", r.jitter_s, "stratum",
			 (int)r.stratum, "reference", r.synchronised ? s->reference : NULL,
			 "root_delay_s", s->clock->root_delay * ntp_short, "root_dispersion_s",
			 s->clock->root_disp * ntp_short, "truechimers", (json_int_t)r.truechimers);
}
