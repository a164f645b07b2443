#include "ctl_report.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Room for one formatted cell; longer strings from the document are cut. */
#define CELL 256

/* ---- Cells ----------------------------------------------------------------------------------- */

/* The document comes from whatever answered on the address: only printable ASCII reaches the
 * terminal, so a name cannot carry escape sequences. */
static void clean(char *dst, size_t n, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < n; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	dst[i] = '\0';
}

static const json_t *get(const json_t *o, const char *key)
{
	return json_is_object(o) ? json_object_get(o, key) : NULL;
}

/* A boolean field that is true; false when missing or of another type. */
static bool flag(const json_t *o, const char *key)
{
	const json_t *v = get(o, key);
	return v != NULL && json_typeof(v) == JSON_TRUE;
}

/* A string field, cleaned; `none` when it is null or missing. */
static const char *fmt_str(char *buf, size_t n, const json_t *v, const char *none)
{
	if (json_is_string(v))
		clean(buf, n, json_string_value(v));
	else
		snprintf(buf, n, "%s", none);
	return buf;
}

static const char *fmt_num(char *buf, size_t n, const json_t *v)
{
	if (json_is_integer(v))
		snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		snprintf(buf, n, "%g", json_real_value(v));
	else
		snprintf(buf, n, "-");
	return buf;
}

static bool get_int(const json_t *v, json_int_t *out)
{
	if (!json_is_integer(v))
		return false;
	*out = json_integer_value(v);
	return true;
}

/* Seconds in the unit that keeps about four significant digits: ns, µs, ms or s. */
static const char *fmt_secs(char *buf, size_t n, double s, bool sign)
{
	double a = s < 0 ? -s : s;
	const char *unit = "s";
	if (a < 1e-6) {
		s *= 1e9;
		unit = "ns";
	} else if (a < 1e-3) {
		s *= 1e6;
		unit = "\u00b5s";
	} else if (a < 1) {
		s *= 1e3;
		unit = "ms";
	}
	a = s < 0 ? -s : s;
	int prec = unit[0] == 'n' ? 0 : a >= 100 ? 1 : a >= 10 ? 2 : 3;
	snprintf(buf, n, sign ? "%+.*f%s" : "%.*f%s", prec, s, unit);
	return buf;
}

/* A field in seconds; scale converts other units (latency_ms) to seconds. */
static const char *fmt_dur(char *buf, size_t n, const json_t *v, double scale, bool sign)
{
	if (!json_is_number(v)) {
		snprintf(buf, n, "-");
		return buf;
	}
	return fmt_secs(buf, n, json_number_value(v) * scale, sign);
}

/* Unix seconds as UTC ISO 8601; "-" for null or a value no calendar holds. */
static const char *fmt_time(char *buf, size_t n, const json_t *v)
{
	json_int_t t;
	struct tm tm;
	if (!get_int(v, &t) || t < 0 || t > 253402300799LL) {
		snprintf(buf, n, "%s", json_is_null(v) ? "never" : "-");
		return buf;
	}
	time_t tt = (time_t)t;
	if (!gmtime_r(&tt, &tm) || !strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, n, "-");
	return buf;
}

/* d seconds as "12 s", "5 min", "3 h" or "2 d", then suffix (e.g. " ago" or ""). */
static const char *fmt_span(char *buf, size_t n, long long d, const char *suffix)
{
	if (d < 120)
		snprintf(buf, n, "%lld s%s", d, suffix);
	else if (d < 7200)
		snprintf(buf, n, "%lld min%s", d / 60, suffix);
	else if (d < 172800)
		snprintf(buf, n, "%lld h%s", d / 3600, suffix);
	else
		snprintf(buf, n, "%lld d%s", d / 86400, suffix);
	return buf;
}

static const char *fmt_age(char *buf, size_t n, const json_t *v, time_t now)
{
	json_int_t t;
	if (!get_int(v, &t)) {
		snprintf(buf, n, "%s", json_is_null(v) ? "never" : "-");
		return buf;
	}
	if (t > (json_int_t)now || (json_int_t)now - t > 100LL * 365 * 86400)
		return fmt_time(buf, n, v);
	return fmt_span(buf, n, (long long)now - t, " ago");
}

/* A duration in seconds; "never" for null. */
static const char *fmt_elapsed(char *buf, size_t n, const json_t *v)
{
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e12) {
		snprintf(buf, n, "%s", json_is_null(v) ? "never" : "-");
		return buf;
	}
	return fmt_span(buf, n, (long long)json_number_value(v), "");
}

static const char *fmt_uptime(char *buf, size_t n, const json_t *v)
{
	if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e12) {
		snprintf(buf, n, "-");
		return buf;
	}
	double s = json_number_value(v);
	if (s < 60) {
		snprintf(buf, n, "%.1f s", s);
		return buf;
	}
	long long t = (long long)s;
	if (t >= 86400)
		snprintf(buf, n, "%lldd %02lld:%02lld:%02lld", t / 86400, t / 3600 % 24,
			 t / 60 % 60, t % 60);
	else
		snprintf(buf, n, "%02lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
	return buf;
}

/* Pads by characters, not bytes: "µ" is two bytes and one column. A right-aligned cell too
 * wide for its column still keeps one space from its left neighbour. */
static void col(FILE *out, const char *text, int width, bool right)
{
	int w = 0;
	for (const char *p = text; *p; p++)
		w += ((unsigned char)*p & 0xc0) != 0x80;
	if (right)
		fprintf(out, "%*s%s", w < width ? width - w : 1, "", text);
	else
		fprintf(out, "%s%*s", text, w < width ? width - w : 0, "");
}

/* "name:port", IPv6 literals in brackets. */
static const char *fmt_endpoint(char *buf, size_t n, const json_t *name, const json_t *port)
{
	char host[CELL], p[32];
	fmt_str(host, sizeof host, name, "?");
	fmt_num(p, sizeof p, port);
	snprintf(buf, n, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, p);
	return buf;
}

/* "key value, key value" over an object of numbers, '_' in keys shown as spaces. */
static void counters(FILE *out, const json_t *o)
{
	const char *key;
	const json_t *v;
	bool first = true;
	if (!json_is_object(o)) {
		fprintf(out, "-");
		return;
	}
	json_object_foreach((json_t *)o, key, v) {
		char k[CELL], num[CELL];
		clean(k, sizeof k, key);
		for (char *c = k; *c; c++)
			if (*c == '_')
				*c = ' ';
		fprintf(out, "%s%s %s", first ? "" : ", ", k, fmt_num(num, sizeof num, v));
		first = false;
	}
}

/* ---- ntp-daemon ------------------------------------------------------------------------------ */

static void daemon_system(FILE *out, const json_t *doc)
{
	char a[CELL], b[CELL], c[CELL], d[CELL], e[CELL];
	const json_t *sys = get(doc, "system");
	if (!json_is_object(sys)) {
		const json_t *sync = get(doc, "synchronization");
		fprintf(out, "System: no time sources; serving stratum %s, leap %s\n",
			fmt_num(a, sizeof a, get(sync, "stratum")),
			fmt_num(b, sizeof b, get(sync, "leap")));
		return;
	}
	const json_t *freq = get(sys, "frequency_ppm");
	if (json_is_number(freq))
		snprintf(b, sizeof b, "%+.3f", json_number_value(freq));
	else
		snprintf(b, sizeof b, "-");
	fprintf(out, "System: %s, offset %s, frequency %s ppm, stratum %s, reference %s\n",
		flag(sys, "synchronised") ? "synchronised" : "not synchronised",
		fmt_dur(a, sizeof a, get(sys, "offset_s"), 1, true),
		b,
		fmt_num(c, sizeof c, get(sys, "stratum")),
		fmt_str(d, sizeof d, get(sys, "reference"), "-"));
	fprintf(out, "  jitter %s, root delay %s, root dispersion %s, truechimers %s, "
		     "clock control %s\n",
		fmt_dur(a, sizeof a, get(sys, "jitter_s"), 1, false),
		fmt_dur(b, sizeof b, get(sys, "root_delay_s"), 1, false),
		fmt_dur(c, sizeof c, get(sys, "root_dispersion_s"), 1, false),
		fmt_num(e, sizeof e, get(sys, "truechimers")),
		flag(sys, "clock_control") ? "on" : "off");
}

static char source_state(const json_t *s)
{
	json_int_t reach;
	if (flag(s, "system_peer"))
		return '*';
	if (flag(s, "selected"))
		return '+';
	if (get_int(get(s, "reach"), &reach) && reach == 0)
		return '?';
	return '-';
}

static void daemon_sources(FILE *out, const json_t *doc)
{
	const json_t *srcs = get(doc, "sources");
	if (!json_is_array(srcs)) {
		fprintf(out, "\nTime sources: none configured\n");
		return;
	}
	fprintf(out, "\nTime sources: %zu\n", json_array_size(srcs));
	if (json_array_size(srcs) == 0)
		return;
	fprintf(out, "S Name                       Mode     Str Poll Reach     Offset      Delay "
		     "  LastRx Cookies Pool / last error\n");
	size_t i;
	const json_t *s;
	json_array_foreach(srcs, i, s) {
		char buf[CELL], state[2] = { source_state(s), '\0' };
		json_int_t reach;
		fprintf(out, "%s ", state);
		col(out, fmt_str(buf, sizeof buf, get(s, "name"), "-"), 26, false);
		fputc(' ', out);
		col(out, fmt_str(buf, sizeof buf, get(s, "mode"), "-"), 8, false);
		col(out, fmt_num(buf, sizeof buf, get(s, "stratum")), 4, true);
		col(out, fmt_num(buf, sizeof buf, get(s, "poll")), 5, true);
		if (get_int(get(s, "reach"), &reach) && reach >= 0 && reach <= 255)
			snprintf(buf, sizeof buf, "%03o", (unsigned)reach);
		else
			snprintf(buf, sizeof buf, "-");
		col(out, buf, 6, true);
		col(out, fmt_dur(buf, sizeof buf, get(s, "offset_s"), 1, true), 11, true);
		col(out, fmt_dur(buf, sizeof buf, get(s, "delay_s"), 1, false), 11, true);
		col(out, fmt_elapsed(buf, sizeof buf, get(s, "last_rx_s")), 9, true);
		col(out, fmt_num(buf, sizeof buf, get(s, "cookies")), 8, true);
		const json_t *pool = get(s, "pool");
		if (json_is_string(pool))
			fprintf(out, " %s;", fmt_str(buf, sizeof buf, pool, "-"));
		fprintf(out, " %s\n", fmt_str(buf, sizeof buf, get(s, "last_error"), "-"));
	}
	fprintf(out, "  (S: * system peer, + selected, - rejected, ? unreachable; "
		     "Poll: log2 s; Reach: octal; LastRx: age of the last sample)\n");
}

static void daemon_listeners(FILE *out, const json_t *doc)
{
	char a[CELL], b[CELL], c[CELL], d[CELL], e[CELL], f[CELL];
	size_t i;
	const json_t *l;
	fputc('\n', out);
	json_array_foreach(get(doc, "nts_ke_servers"), i, l) {
		const json_t *errs = get(l, "errors");
		fprintf(out, "NTS-KE %s: accepted %s, active %s, limit reached %s, accept errors %s\n",
			fmt_str(a, sizeof a, get(l, "listen"), "?"),
			fmt_num(b, sizeof b, get(l, "accepted")), fmt_num(c, sizeof c, get(l, "active")),
			fmt_num(d, sizeof d, get(l, "limit_reached")),
			fmt_num(e, sizeof e, get(l, "accept_errors")));
		fprintf(out, "  completed %s, errors sent %s/%s/%s (code 0/1/2), no overlap %s, ",
			fmt_num(a, sizeof a, get(l, "completed")), fmt_num(b, sizeof b, get(errs, "0")),
			fmt_num(c, sizeof c, get(errs, "1")), fmt_num(d, sizeof d, get(errs, "2")),
			fmt_num(e, sizeof e, get(l, "no_overlap")));
		fprintf(out, "timeouts %s, TLS failures %s\n",
			fmt_num(a, sizeof a, get(l, "timeouts")),
			fmt_num(b, sizeof b, get(l, "tls_failures")));
		fprintf(out, "  pool: support %s, fixed key %s, unauthorised %s, keep-alive reuse %s, "
			     "pinned certificates %s\n",
			fmt_num(a, sizeof a, get(l, "pool_support")),
			fmt_num(b, sizeof b, get(l, "pool_fixed_key")),
			fmt_num(c, sizeof c, get(l, "unauthorised")),
			fmt_num(d, sizeof d, get(l, "keep_alive_reuse")),
			fmt_num(e, sizeof e, get(l, "authorized_pool_certificates")));
	}
	json_array_foreach(get(doc, "ntp_servers"), i, l) {
		fprintf(out, "NTP %s: received %s, plain %s, NTS %s, NTS NAKs %s\n",
			fmt_str(a, sizeof a, get(l, "listen"), "?"),
			fmt_num(b, sizeof b, get(l, "received")), fmt_num(c, sizeof c, get(l, "plain")),
			fmt_num(d, sizeof d, get(l, "nts_accepted")),
			fmt_num(e, sizeof e, get(l, "nts_naks")));
		fprintf(out, "  dropped: malformed %s, not a request %s, internal failure %s\n",
			fmt_num(a, sizeof a, get(l, "dropped_malformed")),
			fmt_num(b, sizeof b, get(l, "dropped_other")),
			fmt_num(c, sizeof c, get(l, "dropped_internal")));
	}
	const json_t *ks = get(doc, "keyset");
	if (json_is_object(ks))
		fprintf(out, "Keyset: %s keys, primary id %s, rotated %s, next rotation %s, "
			     "storage %s\n",
			fmt_num(a, sizeof a, get(ks, "keys")), fmt_num(b, sizeof b, get(ks, "primary_id")),
			fmt_time(c, sizeof c, get(ks, "created")),
			fmt_time(d, sizeof d, get(ks, "next_rotation")),
			fmt_str(f, sizeof f, get(ks, "storage"), "memory only"));
}

/* ---- nts-pool-ke ----------------------------------------------------------------------------- */

static void pool_sessions(FILE *out, const json_t *doc)
{
	char a[CELL], b[CELL], c[CELL], d[CELL], e[CELL];
	size_t i;
	const json_t *l;
	json_array_foreach(get(doc, "listeners"), i, l)
		fprintf(out, "Listener %s: accepted %s, active %s, limit reached %s, "
			     "accept errors %s\n",
			fmt_str(a, sizeof a, get(l, "listen"), "?"),
			fmt_num(b, sizeof b, get(l, "accepted")), fmt_num(c, sizeof c, get(l, "active")),
			fmt_num(d, sizeof d, get(l, "limit_reached")),
			fmt_num(e, sizeof e, get(l, "accept_errors")));
	const json_t *s = get(doc, "sessions");
	fprintf(out, "Sessions: accepted %s, completed %s, no overlap %s, failovers %s\n",
		fmt_num(a, sizeof a, get(s, "accepted")), fmt_num(b, sizeof b, get(s, "completed")),
		fmt_num(c, sizeof c, get(s, "no_overlap")), fmt_num(d, sizeof d, get(s, "failovers")));
	fprintf(out, "  failed: ");
	counters(out, get(s, "failed"));
	fprintf(out, "\nLimits: ");
	counters(out, get(doc, "limits"));
	fputc('\n', out);
}

static void pool_upstreams(FILE *out, const json_t *doc, time_t now)
{
	const json_t *ups = get(doc, "upstreams");
	fprintf(out, "\nUpstreams: %zu\n", json_array_size(ups));
	if (json_array_size(ups) == 0)
		return;
	fprintf(out, "Upstream                   Weight State      Served Failures Kept        p50 "
		     "       p99 Last probe\n");
	size_t i;
	const json_t *u;
	json_array_foreach(ups, i, u) {
		char buf[CELL], age[CELL];
		const json_t *lat = get(u, "latency_ms");
		col(out, fmt_endpoint(buf, sizeof buf, get(u, "name"), get(u, "port")), 26, false);
		col(out, fmt_num(buf, sizeof buf, get(u, "weight")), 7, true);
		fputc(' ', out);
		col(out, fmt_str(buf, sizeof buf, get(u, "state"), "-"), 10, false);
		col(out, fmt_num(buf, sizeof buf, get(u, "sessions_served")), 7, true);
		col(out, fmt_num(buf, sizeof buf, get(u, "failures")), 9, true);
		col(out, fmt_num(buf, sizeof buf, get(u, "kept_connections")), 5, true);
		const char *pk[] = { "p50", "p99" };
		for (int k = 0; k < 2; k++) {
			col(out, fmt_dur(buf, sizeof buf, get(lat, pk[k]), 1e-3, false), 11, true);
		}
		fprintf(out, " %s (%s)\n",
			fmt_str(buf, sizeof buf, get(u, "last_probe_result"), "-"),
			fmt_age(age, sizeof age, get(u, "last_probe"), now));
	}
}

int ctl_report_print(FILE *out, const json_t *doc, time_t now, char *err, size_t errlen)
{
	char prog[CELL], ver[CELL], up[CELL];
	const json_t *p = get(doc, "program");
	if (!json_is_string(p)) {
		snprintf(err, errlen, "not a status document (no \"program\" string)");
		return -EPROTO;
	}
	fmt_str(prog, sizeof prog, p, "?");
	bool daemon = strcmp(json_string_value(p), "ntp-daemon") == 0;
	if (!daemon && strcmp(json_string_value(p), "nts-pool-ke") != 0) {
		snprintf(err, errlen, "no report for program \"%s\" (--json prints the document)", prog);
		return -EPROTO;
	}
	fprintf(out, "%s %s, up %s\n", prog, fmt_str(ver, sizeof ver, get(doc, "version"), "?"),
		fmt_uptime(up, sizeof up, get(doc, "uptime_s")));
	if (daemon) {
		daemon_system(out, doc);
		daemon_sources(out, doc);
		daemon_listeners(out, doc);
	} else {
		pool_sessions(out, doc);
		pool_upstreams(out, doc, now);
	}
	return 0;
}
