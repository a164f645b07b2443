/* upstream_io against real ntp-daemon processes on 127.0.0.2, on a real loop: probes, kept-alive
 * Fixed Key exchanges, idle timeout, refusals, dead ports and daemons, deep checks per AEAD and
 * address family (NTP on IPv4, on ::1, and a server name to resolve), the connection bound,
 * cancellation and closing. Every daemon is started with PR_SET_PDEATHSIG and killed by
 * the fixture's fini, so none outlives a test, whatever happens to it. */
#include "upstream_io.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../unit/testutil.h"
#include "tls_creds.h"
#include "upstream_snapshot.h"

#define MAX_DAEMONS 3
#define RUN_LIMIT_MS 15000

struct daemon {
	pid_t pid;
	uint16_t ke, ntp, status;
	char conf[PATH_MAX];
};

struct result {
	int calls;
	int err;
	bool keys_sent;
	int parse_rc;
	size_t n_cookies;
	bool keep_alive;
	char reason[160];
	bool inside_call; /* the callback ran while upstream_io_exchange had not returned */
};

/* Set around every upstream_io_exchange call the tests make. */
static bool in_exchange_call;

static struct {
	char *dir;
	struct daemon d[MAX_DAEMONS];
	int nd;
	uv_loop_t loop;
	bool loop_open;
	uv_timer_t tick;
	struct tls_creds *creds;
	struct upstream_registry *reg;
	struct upstream_io *io;
	struct upstream_io_config cfg;
	struct upstream_timing timing; /* deep_check_ms as start_io says */
	unsigned max_kept;
} T;

/* ---- Processes and ports --------------------------------------------------------------------- */

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	cr_assert_eq(system(cmd), 0, "command failed: %s", cmd);
}

/* A port free for TCP and UDP on every IPv4 address and for UDP on ::1 now, drawn below the
 * ephemeral range. */
static uint16_t free_port(void)
{
	for (int tries = 0; tries < 2000; tries++) {
		uint16_t r;
		cr_assert_eq(getrandom(&r, sizeof r, 0), (ssize_t)sizeof r);
		uint16_t port = (uint16_t)(20000 + r % 12768);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port),
					   .sin6_addr = IN6ADDR_LOOPBACK_INIT };
		int t = socket(AF_INET, SOCK_STREAM, 0), u = socket(AF_INET, SOCK_DGRAM, 0);
		int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
		bool ok = t >= 0 && u >= 0 && u6 >= 0 &&
			  bind(t, (struct sockaddr *)&a, sizeof a) == 0 &&
			  bind(u, (struct sockaddr *)&a, sizeof a) == 0 &&
			  bind(u6, (struct sockaddr *)&a6, sizeof a6) == 0;
		close(t);
		close(u);
		close(u6);
		if (ok)
			return port;
	}
	cr_assert_fail("no free port");
	return 0;
}

static char *builddir(void)
{
	const char *top = getenv("TOP_BUILDDIR");
	if (top && *top)
		return strdup(top);
	/* Run by hand: the program sits in BUILDDIR/tests/integration. */
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	cr_assert_gt(n, 0);
	exe[n] = 0;
	for (int i = 0; i < 3; i++)
		*strrchr(exe, '/') = 0;
	return strdup(exe);
}

static bool tcp_up(uint32_t ip, uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(ip) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

/* NTP_V6: the KE server names ::1 as the NTP server, which listens there too; NTP_NAMED: it
 * names "localhost", and the NTP server listens on 127.0.0.1 and ::1 as well. */
enum { WITH_POOL = 1, NTP_DEAD = 2, NTPDRS_V1 = 4, NTP_V6 = 8, NTP_NAMED = 16 };

static void daemon_exec(struct daemon *d)
{
	char log[PATH_MAX + 8], *top = builddir(), bin[PATH_MAX];
	snprintf(log, sizeof log, "%s.log", d->conf);
	snprintf(bin, sizeof bin, "%s/ntp-daemon", top);
	free(top);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(bin, bin, "-c", d->conf, "-l", "debug", (char *)NULL);
		_exit(127);
	}
	d->pid = pid;
	for (int i = 0; i < 400; i++) {
		int st;
		cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "ntp-daemon exited; see %s", log);
		if (tcp_up(0x7f000002, d->ke))
			return;
		usleep(50000);
	}
	cr_assert_fail("ntp-daemon did not come up; see %s", log);
}

/* Starts ntp-daemon serving NTS-KE on 127.0.0.2 with the flags above. */
static struct daemon *daemon_start(int flags)
{
	cr_assert_lt(T.nd, MAX_DAEMONS);
	struct daemon *d = &T.d[T.nd++];
	d->ke = free_port();
	d->ntp = free_port();
	d->status = free_port();
	uint16_t ntp_port = flags & NTP_DEAD ? free_port() : d->ntp;
	snprintf(d->conf, sizeof d->conf, "%s/ntp%d.toml", T.dir, T.nd);
	FILE *f = fopen(d->conf, "w");
	cr_assert(f);
	fprintf(f,
		"[[nts-ke-server]]\n"
		"listen = \"127.0.0.2:%u\"\n"
		"certificate-chain-path = \"%s/server-a.chain.pem\"\n"
		"private-key-path = \"%s/server-a.key\"\n"
		"key-exchange-timeout-ms = 3000\n"
		"concurrent-connections = 16\n"
		"ntp-port = %u\n"
		"ntp-server = \"%s\"\n",
		d->ke, T.dir, T.dir, ntp_port,
		flags & NTP_V6 ? "::1" : flags & NTP_NAMED ? "localhost" : "127.0.0.2");
	if (flags & WITH_POOL)
		fprintf(f, "authorized-pool-server-certificates = [\"%s/pool.pem\"]\n", T.dir);
	if (flags & NTPDRS_V1)
		fprintf(f, "pool-record-numbers = \"ntpd-rs-v1\"\n");
	fprintf(f, "\n[[server]]\nlisten = \"127.0.0.2:%u\"\n", d->ntp);
	if (flags & (NTP_V6 | NTP_NAMED))
		fprintf(f, "\n[[server]]\nlisten = \"[::1]:%u\"\n", d->ntp);
	if (flags & NTP_NAMED)
		fprintf(f, "\n[[server]]\nlisten = \"127.0.0.1:%u\"\n", d->ntp);
	fprintf(f,
		"\n[observability]\nstatus-listen = \"127.0.0.1:%u\"\nlog-level = \"debug\"\n"
		"\n[synchronization]\nclock-control = false\nlocal-stratum = 1\n",
		d->status);
	fclose(f);
	daemon_exec(d);
	return d;
}

static void daemon_kill(struct daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = 0;
}

/* One counter of the daemon's first NTS-KE server from /status (raw HTTP/1.0, cJSON); name may
 * be a member of an object member, "errors.0". */
static long daemon_ke_stat(const struct daemon *d, const char *name)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(d->status),
				 .sin_addr.s_addr = htonl(0x7f000001) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
	const char req[] = "GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n";
	cr_assert_eq(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
	static char buf[1 << 18];
	size_t len = 0;
	ssize_t n;
	while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	char *body = strstr(buf, "\r\n\r\n");
	cr_assert(body, "no HTTP body");
	cJSON *root = cJSON_Parse(body + 4);
	cr_assert(root, "status is not JSON");
	cJSON *servers = cJSON_GetObjectItemCaseSensitive(root, "nts_ke_servers");
	cJSON *v = cJSON_GetArrayItem(servers, 0);
	char path[64];
	snprintf(path, sizeof path, "%s", name);
	for (char *save = NULL, *k = strtok_r(path, ".", &save); k; k = strtok_r(NULL, ".", &save))
		v = cJSON_GetObjectItemCaseSensitive(v, k);
	cr_assert(cJSON_IsNumber(v), "no nts_ke_servers.0.%s", name);
	long out = (long)v->valuedouble;
	cJSON_Delete(root);
	return out;
}

/* ---- Fixture --------------------------------------------------------------------------------- */

static void setup(void)
{
	T.dir = tu_tempdir();
	char *gen = tu_srcpath("test-keys/gen-cert.sh");
	sh("bash %s --dir %s pool --dns pool.test >/dev/null", gen, T.dir);
	sh("bash %s --dir %s server-a --ip 127.0.0.2 >/dev/null", gen, T.dir);
	free(gen);
	cr_assert_eq(uv_loop_init(&T.loop), 0);
	T.loop_open = true;
	T.cfg = (struct upstream_io_config){ .upstream_timeout_ms = 2000, .idle_ms = 30000,
					     .max_conns = 4 };
	T.timing = (struct upstream_timing){ .probe_interval_ms = 600000,
					     .support_cache_ms = 600000,
					     .backoff_min_ms = 60000,
					     .backoff_max_ms = 600000 };
}

static void teardown(void)
{
	for (int i = 0; i < T.nd; i++)
		daemon_kill(&T.d[i]);
	if (T.loop_open) {
		if (T.io)
			upstream_io_close(T.io);
		uv_run(&T.loop, UV_RUN_DEFAULT);
		uv_loop_close(&T.loop);
	}
	upstream_registry_free(T.reg);
	tls_creds_unref(T.creds);
	if (T.dir)
		tu_rmtree(T.dir);
	free(T.dir);
}

TestSuite(upstream_io, .init = setup, .fini = teardown, .timeout = 90);

/* The registry (one upstream per port, on 127.0.0.2) and the I/O with the pool's certificate. */
static void start_io_named(const char *domain, const uint16_t *ports, size_t n,
			   uint64_t deep_check_ms)
{
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], err[TLS_CREDS_ERR_MAX];
	snprintf(cert, sizeof cert, "%s/pool.chain.pem", T.dir);
	snprintf(key, sizeof key, "%s/pool.key", T.dir);
	snprintf(ca, sizeof ca, "%s/ca.pem", T.dir);
	struct tls_client_options o = { .no_system_trust = true, .ca_file = ca,
					.cert_file = cert, .key_file = key };
	cr_assert_eq(tls_creds_new_client(&T.creds, &o, err, sizeof err), 0, "%s", err);
	struct upstream_spec specs[4];
	for (size_t i = 0; i < n; i++)
		specs[i] = (struct upstream_spec){ .domain = domain, .port = ports[i],
						   .weight = 1 };
	struct upstream_timing timing = T.timing;
	timing.deep_check_ms = deep_check_ms;
	cr_assert_eq(upstream_registry_new(&T.reg, specs, n, &timing, uv_now(&T.loop)), 0);
	cr_assert_eq(upstream_io_new(&T.io, &T.loop, T.creds, T.reg, &T.cfg), 0);
}

static void start_io(const uint16_t *ports, size_t n, uint64_t deep_check_ms)
{
	start_io_named("127.0.0.2", ports, n, deep_check_ms);
}

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

/* Runs the loop until cond() holds or RUN_LIMIT_MS passed; tracks the largest kept count. */
static bool run_until(bool (*cond)(void))
{
	uv_timer_init(&T.loop, &T.tick);
	uv_timer_start(&T.tick, on_tick, 5, 5);
	uint64_t end = uv_now(&T.loop) + RUN_LIMIT_MS;
	bool ok;
	while (!(ok = cond()) && uv_now(&T.loop) < end) {
		uv_run(&T.loop, UV_RUN_ONCE);
		if (T.io && T.reg && upstream_count(T.reg) > 0) {
			unsigned k = upstream_io_kept(T.io, upstream_id_at(T.reg, 0));
			if (k > T.max_kept)
				T.max_kept = k;
		}
	}
	uv_close((uv_handle_t *)&T.tick, NULL);
	uv_run(&T.loop, UV_RUN_NOWAIT);
	return ok;
}

static uint32_t id0(void)
{
	return upstream_id_at(T.reg, 0);
}

static bool not_probing(void)
{
	return upstream_state(T.reg, id0()) != UPSTREAM_PROBING;
}

static const char *status_str(const char *field, char *buf, size_t len)
{
	json_t *j = upstream_status_json(T.reg, id0(), upstream_io_kept(T.io, id0()),
					 uv_now(&T.loop), (uint64_t)time(NULL));
	cr_assert(j);
	const char *s = json_string_value(json_object_get(j, field));
	snprintf(buf, len, "%s", s ? s : "(none)");
	json_decref(j);
	return buf;
}

static void done(void *ud, const struct upstream_io_result *res)
{
	struct result *r = ud;
	r->calls++;
	r->err = res->err;
	r->keys_sent = res->keys_sent;
	r->parse_rc = res->parse_rc;
	r->inside_call |= in_exchange_call;
	snprintf(r->reason, sizeof r->reason, "%s", res->reason);
	if (res->err == 0 && res->resp) {
		r->n_cookies = res->resp->n_cookies;
		r->keep_alive = res->resp->keep_alive;
	}
}

static struct result *res_a, *res_b;
static bool a_done(void)
{
	return res_a->calls > 0;
}
static bool ab_done(void)
{
	return res_a->calls > 0 && res_b->calls > 0;
}
static bool none_kept(void)
{
	return upstream_io_kept(T.io, id0()) == 0;
}

static int fixed_key(struct result *r, struct upstream_io_exchange **h)
{
	uint8_t c2s[32], s2c[32], req[512];
	gnutls_rnd(GNUTLS_RND_KEY, c2s, sizeof c2s);
	gnutls_rnd(GNUTLS_RND_KEY, s2c, sizeof s2c);
	int n = ke_msg_build_fixed_key_request(req, sizeof req, KE_NUMBERING_IANA, NULL, c2s, s2c,
					       32, KE_MSG_PROTOCOL_NTPV4, 15, true);
	cr_assert_gt(n, 0);
	in_exchange_call = true;
	int rc = upstream_io_exchange(T.io, id0(), req, (size_t)n, KE_MSG_REQUEST_FIXED_KEY, done,
				      r, h);
	in_exchange_call = false;
	return rc;
}

static void close_io_and_loop(void)
{
	upstream_io_close(T.io);
	T.io = NULL;
	uv_run(&T.loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&T.loop), 0, "handles left on the loop");
	T.loop_open = false;
}

/* ---- Tests ----------------------------------------------------------------------------------- */

Test(upstream_io, probe_makes_upstream_healthy_with_lists)
{
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	char buf[200];
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_HEALTHY, "probe: %s",
		     status_str("last_probe_result", buf, sizeof buf));
	struct pool_upstream_info info;
	cr_assert_eq(upstream_pick(T.reg, NULL, NULL, 0, uv_now(&T.loop), &info), 0);
	cr_assert_eq(info.n_protocols, 1);
	cr_assert_eq(info.protocols[0], 0);
	cr_assert_eq(info.n_algorithms, 2);
	cr_assert_eq(info.algorithms[0].id, 15);
	cr_assert_eq(info.algorithms[0].key_len, 32);
	cr_assert_eq(info.algorithms[1].id, 17);
	cr_assert_eq(info.algorithms[1].key_len, 64);
	cr_assert_eq(upstream_io_kept(T.io, id0()), 1, "the probe's connection is kept");
	close_io_and_loop();
}

Test(upstream_io, fixed_keys_reuse_one_kept_connection_until_idle)
{
	T.cfg.idle_ms = 1500;
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_HEALTHY);
	struct result a = { 0 }, b = { 0 };
	res_a = &a;
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(a.err, 0);
	cr_assert_eq(a.parse_rc, 0);
	cr_assert_eq(a.n_cookies, 8);
	cr_assert(a.keep_alive);
	res_a = &b;
	cr_assert_eq(fixed_key(&b, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(b.err, 0);
	cr_assert_eq(b.n_cookies, 8);
	cr_assert_eq(upstream_io_kept(T.io, id0()), 1);
	cr_assert_eq(T.max_kept, 1, "one connection served the probe and both exchanges");
	cr_assert_geq(daemon_ke_stat(d, "keep_alive_reuse"), 2);
	cr_assert(run_until(none_kept), "the idle timeout closes the kept connection");
	close_io_and_loop();
}

/* With an age limit every connection is too old to keep by the time its exchange is done: each
 * exchange opens its own, none is reused, none stays. */
Test(upstream_io, connections_past_the_age_limit_are_not_reused)
{
	T.cfg.max_age_ms = 1;
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_HEALTHY);
	cr_assert(run_until(none_kept), "the probe's connection was too old to keep");
	struct result a = { 0 }, b = { 0 };
	res_a = &a;
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(a.err, 0, "%s", a.reason);
	cr_assert_eq(a.n_cookies, 8);
	cr_assert(run_until(none_kept));
	res_a = &b;
	cr_assert_eq(fixed_key(&b, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(b.err, 0, "%s", b.reason);
	cr_assert(run_until(none_kept));
	cr_assert_geq(daemon_ke_stat(d, "accepted"), 3, "probe, a and b: a connection each");
	cr_assert_eq(daemon_ke_stat(d, "keep_alive_reuse"), 0, "no connection served twice");
	close_io_and_loop();
}

Test(upstream_io, unauthorised_pool_is_unhealthy_with_authentication_refused)
{
	struct daemon *d = daemon_start(0);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	char buf[200];
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_UNHEALTHY);
	cr_assert_str_eq(status_str("last_probe_result", buf, sizeof buf),
			 "authentication refused (upstream answered Error 1)");
	close_io_and_loop();
}

/* An upstream in the other numbering answers Error 0 to the Supported lists: the probe tries
 * once more without the Supported Next Protocol List (a seed-era server would take that), and
 * since that fails too, the upstream is refused, not taken for one that lacks the list. */
Test(upstream_io, error_0_probe_retried_without_the_protocol_list_once)
{
	struct daemon *d = daemon_start(WITH_POOL | NTPDRS_V1);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	char buf[200];
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_UNHEALTHY);
	cr_assert_str_eq(status_str("last_probe_result", buf, sizeof buf),
			 "authentication refused (upstream answered Error 0)");
	cr_assert_eq(daemon_ke_stat(d, "errors.0"), 2, "the request, then the retry");
	close_io_and_loop();
}

Test(upstream_io, dead_port_fails_without_keys_sent)
{
	uint16_t port = free_port();
	start_io(&port, 1, 0);
	struct result a = { 0 };
	res_a = &a;
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(a.calls, 1);
	cr_assert_lt(a.err, 0);
	cr_assert_not(a.keys_sent);
	cr_assert_not(a.inside_call, "reported from the loop, not inside the call");
	cr_assert_neq(a.reason[0], '\0', "a failure comes with its reason");
	cr_assert(run_until(not_probing));
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_UNHEALTHY);
	cr_assert_eq(upstream_io_kept(T.io, id0()), 0);
	close_io_and_loop();
}

Test(upstream_io, names_are_resolved)
{
	uint16_t port = free_port();
	start_io_named("localhost", &port, 1, 0);
	struct result a = { 0 };
	res_a = &a;
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(a.err, -ECONNREFUSED, "resolved, then refused: %d", a.err);
	cr_assert_not(a.keys_sent);
	close_io_and_loop();
}

Test(upstream_io, refused_calls_return_the_error_and_never_call_back)
{
	uint16_t port = free_port();
	start_io(&port, 1, 0);
	struct result a = { 0 }, b = { 0 }, c = { 0 };
	struct upstream_io_exchange *h = (void *)&a;
	uint8_t req[] = { 0x80, 0, 0, 0 };
	cr_assert_eq(upstream_io_exchange(T.io, 999, req, sizeof req, KE_MSG_REQUEST_SUPPORT,
					  done, &a, &h),
		     -ENOENT);
	cr_assert_null(h);
	cr_assert_eq(upstream_io_exchange(T.io, id0(), req, 0, KE_MSG_REQUEST_SUPPORT, done, &c,
					  NULL),
		     -EMSGSIZE);
	/* A refused call has no callback, not even later. */
	uv_run(&T.loop, UV_RUN_NOWAIT);
	cr_assert_eq(a.calls, 0);
	cr_assert_eq(c.calls, 0);
	upstream_io_close(T.io);
	cr_assert_eq(upstream_io_exchange(T.io, id0(), req, sizeof req, KE_MSG_REQUEST_SUPPORT,
					  done, &b, NULL),
		     -ESHUTDOWN);
	cr_assert_eq(b.calls, 0);
	T.io = NULL;
	uv_run(&T.loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&T.loop), 0);
	T.loop_open = false;
}

Test(upstream_io, daemon_killed_while_idle)
{
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	cr_assert_eq(upstream_io_kept(T.io, id0()), 1);
	daemon_kill(d);
	cr_assert(run_until(none_kept), "the closed idle connection is dropped");
	struct result a = { 0 }, b = { 0 };
	res_a = &a;
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_lt(a.err, 0, "nothing listens any more");
	cr_assert_not(a.keys_sent);
	/* The same ports again: the next exchange opens a new connection. */
	daemon_exec(d);
	res_a = &b;
	cr_assert_eq(fixed_key(&b, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(b.err, 0);
	cr_assert_eq(b.n_cookies, 8);
	cr_assert_eq(upstream_io_kept(T.io, id0()), 1);
	close_io_and_loop();
}

static bool deep_checked(void)
{
	char buf[200];
	return strcmp(status_str("last_deep_check_result", buf, sizeof buf), "(none)") != 0;
}

/* The deep check's result for (aead, family) in /status: 1 passed, 0 failed, -1 none; the
 * failure's reason into why. */
static int check_of(uint16_t aead, const char *family, char *why, size_t len)
{
	json_t *j = upstream_status_json(T.reg, id0(), 0, uv_now(&T.loop), (uint64_t)time(NULL));
	cr_assert(j);
	json_t *checks = json_object_get(j, "checks");
	int found = -1;
	for (size_t i = 0; i < json_array_size(checks); i++) {
		json_t *c = json_array_get(checks, i);
		const char *fam = json_string_value(json_object_get(c, "family"));
		if (json_integer_value(json_object_get(c, "aead")) != aead || !fam ||
		    strcmp(fam, family) != 0)
			continue;
		found = json_is_true(json_object_get(c, "ok"));
		const char *reason = json_string_value(json_object_get(c, "reason"));
		snprintf(why, len, "%s", reason ? reason : "");
	}
	json_decref(j);
	return found;
}

static size_t n_checks(void)
{
	json_t *j = upstream_status_json(T.reg, id0(), 0, uv_now(&T.loop), (uint64_t)time(NULL));
	size_t n = json_array_size(json_object_get(j, "checks"));
	json_decref(j);
	return n;
}

/* Both AEADs the daemon supports passed on family; the snapshot lists both, family works. */
static void assert_both_aeads_pass(const char *family, uint8_t bit)
{
	char buf[200];
	cr_assert_str_eq(status_str("last_deep_check_result", buf, sizeof buf), "ok");
	cr_assert_eq(check_of(15, family, buf, sizeof buf), 1, "AEAD 15 over %s: %s", family, buf);
	cr_assert_eq(check_of(17, family, buf, sizeof buf), 1, "AEAD 17 over %s: %s", family, buf);
	struct upstream_snapshot *s = upstream_registry_snapshot(T.reg);
	cr_assert(s);
	const struct upstream_snapshot_entry *e = upstream_snapshot_find(s, id0());
	cr_assert(e);
	cr_assert_eq(e->families & bit, bit);
	cr_assert_eq(e->families_ok, e->families, "every family seen works");
	cr_assert_eq(e->n_algorithms, 2);
	cr_assert_eq(e->algorithms[0].id, 15);
	cr_assert_eq(e->algorithms[1].id, 17);
	upstream_snapshot_unref(s);
}

Test(upstream_io, deep_check_passes_for_each_aead_over_ipv4)
{
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 3600000);
	cr_assert(run_until(deep_checked));
	assert_both_aeads_pass("ipv4", UPSTREAM_FAMILY_IPV4);
	cr_assert_eq(n_checks(), 2, "one result per AEAD: the server has one address");
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_HEALTHY);
	/* Two Fixed Key requests, one per AEAD, on the probe's kept connection. */
	cr_assert_geq(daemon_ke_stat(d, "keep_alive_reuse"), 2);
	close_io_and_loop();
}

Test(upstream_io, deep_check_passes_for_each_aead_over_ipv6)
{
	struct daemon *d = daemon_start(WITH_POOL | NTP_V6);
	start_io(&d->ke, 1, 3600000);
	cr_assert(run_until(deep_checked));
	assert_both_aeads_pass("ipv6", UPSTREAM_FAMILY_IPV6);
	char buf[200];
	cr_assert_eq(check_of(15, "ipv4", buf, sizeof buf), -1, "::1 has no IPv4 address");
	close_io_and_loop();
}

/* A name is resolved for every family it has; each one found is checked with both AEADs. */
Test(upstream_io, deep_check_resolves_the_ntp_server_name)
{
	struct daemon *d = daemon_start(WITH_POOL | NTP_NAMED);
	start_io(&d->ke, 1, 3600000);
	cr_assert(run_until(deep_checked));
	assert_both_aeads_pass("ipv4", UPSTREAM_FAMILY_IPV4);
	close_io_and_loop();
}

static bool unhealthy(void)
{
	return upstream_state(T.reg, id0()) == UPSTREAM_UNHEALTHY;
}

/* NTP never answers: every AEAD fails; one failed check of the two (fall) keeps the upstream in
 * rotation with its lists, the probe after the back-off makes the second check due, which
 * takes it out. */
Test(upstream_io, deep_check_fails_when_ntp_does_not_answer)
{
	T.cfg.upstream_timeout_ms = 800;
	T.timing.backoff_min_ms = 200;
	struct daemon *d = daemon_start(WITH_POOL | NTP_DEAD);
	start_io(&d->ke, 1, 3600000);
	cr_assert(run_until(deep_checked));
	char buf[200];
	cr_assert_str_eq(status_str("last_deep_check_result", buf, sizeof buf), "no NTP reply");
	cr_assert_eq(check_of(15, "ipv4", buf, sizeof buf), 0);
	cr_assert_str_eq(buf, "no NTP reply");
	cr_assert_eq(check_of(17, "ipv4", buf, sizeof buf), 0);
	cr_assert_eq(upstream_state(T.reg, id0()), UPSTREAM_HEALTHY, "one failed check of two");
	cr_assert(run_until(unhealthy));
	cr_assert_str_eq(status_str("unhealthy_reason", buf, sizeof buf), "no NTP reply");
	cr_assert_str_eq(status_str("last_probe_result", buf, sizeof buf), "ok",
			 "the probe passed: the deep check decided");
	close_io_and_loop();
}

Test(upstream_io, max_conns_serialises_exchanges)
{
	T.cfg.max_conns = 1;
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	struct result a = { 0 }, b = { 0 };
	res_a = &a;
	res_b = &b;
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert_eq(fixed_key(&b, NULL), 0);
	cr_assert(run_until(ab_done));
	cr_assert_eq(a.err, 0);
	cr_assert_eq(b.err, 0);
	cr_assert_eq(a.n_cookies, 8);
	cr_assert_eq(b.n_cookies, 8);
	cr_assert_eq(T.max_kept, 1);
	cr_assert_eq(upstream_io_kept(T.io, id0()), 1);
	close_io_and_loop();
}

static uint64_t wait_until_ms;
static bool waited(void)
{
	return uv_now(&T.loop) >= wait_until_ms;
}

Test(upstream_io, cancel_suppresses_the_callback)
{
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	cr_assert(run_until(not_probing));
	struct result a = { 0 }, b = { 0 };
	struct upstream_io_exchange *h = NULL;
	cr_assert_eq(fixed_key(&a, &h), 0);
	cr_assert(h);
	upstream_io_cancel(h);
	wait_until_ms = uv_now(&T.loop) + 500;
	run_until(waited);
	cr_assert_eq(a.calls, 0);
	cr_assert_eq(upstream_io_kept(T.io, id0()), 0, "the busy connection was dropped");
	res_a = &b;
	cr_assert_eq(fixed_key(&b, NULL), 0);
	cr_assert(run_until(a_done));
	cr_assert_eq(b.err, 0);
	close_io_and_loop();
}

static bool some_kept(void)
{
	return upstream_io_kept(T.io, id0()) >= 2;
}

Test(upstream_io, close_with_connections_open)
{
	struct daemon *d = daemon_start(WITH_POOL);
	start_io(&d->ke, 1, 0);
	struct result a = { 0 }, b = { 0 };
	cr_assert_eq(fixed_key(&a, NULL), 0);
	cr_assert_eq(fixed_key(&b, NULL), 0);
	cr_assert(run_until(some_kept));
	upstream_io_close(T.io);
	T.io = NULL;
	cr_assert_eq(a.calls + b.calls, 2, "every exchange is reported once");
	uv_run(&T.loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&T.loop), 0, "handles left on the loop");
	T.loop_open = false;
	cr_assert_eq(a.calls, 1);
	cr_assert_eq(b.calls, 1);
}
