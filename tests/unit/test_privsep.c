/* Privilege separation: the clock helper's wire format and its validation, the helper's loop over
 * a real socketpair, the helper as a real forked process, and the drop itself (in forked
 * children, since a drop cannot be undone). The helper here serves a recording backend, never
 * the kernel's: nothing in these tests can adjust the clock. Dropping to another account needs
 * root, which the test suite runs as. */
#include "clock_helper.h"
#include "clock_request.h"
#include "privdrop.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <linux/capability.h>
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static void raw(uint8_t out[CLOCK_REQUEST_SIZE], uint32_t op, uint32_t pad, double v)
{
	memcpy(out, &op, 4);
	memcpy(out + 4, &pad, 4);
	memcpy(out + 8, &v, 8);
}

static int decode_raw(uint32_t op, uint32_t pad, double v, struct clock_request *r)
{
	uint8_t b[CLOCK_REQUEST_SIZE];
	raw(b, op, pad, v);
	return clock_request_decode(b, sizeof b, r);
}

/* ---- the codec ---------------------------------------------------------------------------- */

Test(clock_request, round_trip_of_every_operation)
{
	const struct clock_request in[] = {
		{ CLOCK_REQUEST_SLEW, -0.25 },
		{ CLOCK_REQUEST_SET_FREQUENCY, 37.125 },
		{ CLOCK_REQUEST_STEP, -86400.5 },
	};
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		uint8_t b[CLOCK_REQUEST_SIZE];
		clock_request_encode(&in[i], b);
		struct clock_request out;
		cr_assert_eq(clock_request_decode(b, sizeof b, &out), 0);
		cr_assert_eq(out.op, in[i].op);
		cr_assert_eq(out.value, in[i].value);
	}
}

Test(clock_request, refuses_wrong_lengths_pads_and_operations)
{
	uint8_t b[CLOCK_REQUEST_SIZE + 1] = { 0 };
	raw(b, CLOCK_REQUEST_STEP, 0, 1.0);
	struct clock_request r;
	cr_assert_eq(clock_request_decode(b, 0, &r), -EMSGSIZE);
	cr_assert_eq(clock_request_decode(b, CLOCK_REQUEST_SIZE - 1, &r), -EMSGSIZE);
	cr_assert_eq(clock_request_decode(b, CLOCK_REQUEST_SIZE + 1, &r), -EMSGSIZE);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 1, 1.0, &r), -EINVAL);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 0x80000000u, 1.0, &r), -EINVAL);
	cr_assert_eq(decode_raw(0, 0, 1.0, &r), -EOPNOTSUPP);
	cr_assert_eq(decode_raw(4, 0, 1.0, &r), -EOPNOTSUPP);
	cr_assert_eq(decode_raw(UINT32_MAX, 0, 1.0, &r), -EOPNOTSUPP);
}

Test(clock_request, refuses_values_outside_each_range)
{
	struct clock_request r;
	const double bad[] = { NAN, INFINITY, -INFINITY };
	for (uint32_t op = CLOCK_REQUEST_SLEW; op <= CLOCK_REQUEST_STEP; op++)
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
			cr_assert_eq(decode_raw(op, 0, bad[i], &r), -ERANGE, "op %u, %g", op, bad[i]);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SLEW, 0, 0.5, &r), 0);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SLEW, 0, -0.5, &r), 0);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SLEW, 0, nextafter(0.5, 1), &r), -ERANGE);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SET_FREQUENCY, 0, 500, &r), 0);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SET_FREQUENCY, 0, -500, &r), 0);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SET_FREQUENCY, 0, 500.001, &r), -ERANGE);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_SET_FREQUENCY, 0, -1e300, &r), -ERANGE);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 0, 0, &r), -ERANGE, "a step of nothing");
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 0, -0.0, &r), -ERANGE);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 0, 1e-9, &r), 0);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 0, -1e10, &r), 0);
	cr_assert_eq(decode_raw(CLOCK_REQUEST_STEP, 0, 1.0000001e10, &r), -ERANGE);
}

/* Whatever 16 bytes arrive, a request that passes is one of the three operations with a value
 * in its range. */
Test(clock_request, random_bytes_never_pass_out_of_range)
{
	struct tu_rng rng;
	tu_rng_seed(&rng, 20261202);
	unsigned passed = 0;
	for (int i = 0; i < 200000; i++) {
		uint8_t b[CLOCK_REQUEST_SIZE];
		tu_rng_fill(&rng, b, sizeof b);
		/* Bias towards the plausible: valid ops and a zero pad half of the time. */
		if (i & 1) {
			uint32_t op = 1 + tu_rng_below(&rng, 3), pad = 0;
			memcpy(b, &op, 4);
			memcpy(b + 4, &pad, 4);
		}
		struct clock_request r;
		if (clock_request_decode(b, sizeof b, &r) != 0)
			continue;
		passed++;
		double a = fabs(r.value);
		cr_assert(isfinite(r.value));
		cr_assert((r.op == CLOCK_REQUEST_SLEW && a <= CLOCK_REQUEST_MAX_SLEW_S) ||
				  (r.op == CLOCK_REQUEST_SET_FREQUENCY && a <= CLOCK_REQUEST_MAX_PPM) ||
				  (r.op == CLOCK_REQUEST_STEP && a > 0 && a <= CLOCK_REQUEST_MAX_STEP_S),
			  "op %u value %g", r.op, r.value);
	}
	cr_assert_gt(passed, 0, "some random requests are valid, so the check above ran");
}

Test(clock_request, replies)
{
	uint8_t b[CLOCK_REPLY_SIZE + 1] = { 0 };
	int32_t rc = 1;
	clock_reply_encode(0, b);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE, &rc), 0);
	cr_assert_eq(rc, 0);
	clock_reply_encode(-EPERM, b);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE, &rc), 0);
	cr_assert_eq(rc, -EPERM);
	clock_reply_encode(-4095, b);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE, &rc), 0);
	clock_reply_encode(1, b);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE, &rc), -EPROTO);
	clock_reply_encode(-4096, b);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE, &rc), -EPROTO);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE - 1, &rc), -EMSGSIZE);
	cr_assert_eq(clock_reply_decode(b, CLOCK_REPLY_SIZE + 1, &rc), -EMSGSIZE);
}

/* ---- a recording backend ------------------------------------------------------------------ */

struct record {
	unsigned calls;
	uint32_t last_op;
	double last_value;
	int result;	   /* what every call returns */
	unsigned delay_ms; /* how long every call takes */
};

static int rec(struct record *r, uint32_t op, double v)
{
	if (r->delay_ms)
		usleep(r->delay_ms * 1000);
	r->calls++;
	r->last_op = op;
	r->last_value = v;
	return r->result;
}

static int rec_slew(void *ud, double v)
{
	return rec(ud, CLOCK_REQUEST_SLEW, v);
}

static int rec_freq(void *ud, double v)
{
	return rec(ud, CLOCK_REQUEST_SET_FREQUENCY, v);
}

static int rec_step(void *ud, double v)
{
	return rec(ud, CLOCK_REQUEST_STEP, v);
}

static const struct clock_backend_ops rec_ops = { rec_slew, rec_freq, rec_step };

Test(clock_request, apply_reaches_the_matching_operation)
{
	struct record r = { .result = -EPERM };
	const struct clock_request q = { CLOCK_REQUEST_SET_FREQUENCY, -12.5 };
	cr_assert_eq(clock_request_apply(&q, &rec_ops, &r), -EPERM, "the backend's result");
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(r.last_op, CLOCK_REQUEST_SET_FREQUENCY);
	cr_assert_eq(r.last_value, -12.5);
}

/* ---- the helper's loop, on a thread over a socketpair ------------------------------------- */

struct serve_arg {
	int fd;
	struct record rec;
	struct clock_step_guard *guard;
	int rc;
};

static void *serve_thread(void *p)
{
	struct serve_arg *a = p;
	a->rc = clock_helper_serve(a->fd, &rec_ops, &a->rec, a->guard);
	return NULL;
}

static int32_t exchange(int fd, const void *msg, size_t len)
{
	cr_assert_eq(send(fd, msg, len, 0), (ssize_t)len);
	uint8_t b[8];
	ssize_t n = recv(fd, b, sizeof b, 0);
	cr_assert_eq(n, CLOCK_REPLY_SIZE);
	int32_t rc;
	cr_assert_eq(clock_reply_decode(b, (size_t)n, &rc), 0);
	return rc;
}

Test(clock_helper, serve_answers_valid_requests_and_refuses_others)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	struct serve_arg a = { .fd = sv[1], .rec = { .result = -EPERM } };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, serve_thread, &a), 0);

	uint8_t b[CLOCK_REQUEST_SIZE + 8] = { 0 };
	clock_request_encode(&(struct clock_request){ CLOCK_REQUEST_STEP, 2.5 }, b);
	cr_assert_eq(exchange(sv[0], b, CLOCK_REQUEST_SIZE), -EPERM, "the backend's answer");
	raw(b, 9, 0, 1.0);
	cr_assert_eq(exchange(sv[0], b, CLOCK_REQUEST_SIZE), -EOPNOTSUPP);
	raw(b, CLOCK_REQUEST_SET_FREQUENCY, 0, 501);
	cr_assert_eq(exchange(sv[0], b, CLOCK_REQUEST_SIZE), -ERANGE);
	clock_request_encode(&(struct clock_request){ CLOCK_REQUEST_SLEW, 0.1 }, b);
	cr_assert_eq(exchange(sv[0], b, CLOCK_REQUEST_SIZE + 8), -EMSGSIZE,
		     "a longer message is refused whole, not cut to size");
	cr_assert_eq(exchange(sv[0], b, 3), -EMSGSIZE);
	a.rec.result = 0;
	clock_request_encode(&(struct clock_request){ CLOCK_REQUEST_SET_FREQUENCY, -3.25 }, b);
	cr_assert_eq(exchange(sv[0], b, CLOCK_REQUEST_SIZE), 0);

	close(sv[0]);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(a.rc, 0, "the loop ends when the other end closes");
	cr_assert_eq(a.rec.calls, 2, "only the two valid requests reached the backend");
	cr_assert_eq(a.rec.last_op, CLOCK_REQUEST_SET_FREQUENCY);
	cr_assert_eq(a.rec.last_value, -3.25);
	close(sv[1]);
}

/* One well-formed request over fd, and the helper's answer. */
static int32_t ask(int fd, uint32_t op, double value)
{
	uint8_t b[CLOCK_REQUEST_SIZE];
	clock_request_encode(&(struct clock_request){ op, value }, b);
	return exchange(fd, b, sizeof b);
}

/* The helper keeps the panic thresholds itself: what a compromised network process asks beyond
 * them never reaches the clock, and only the steps made count towards the next limits. */
Test(clock_helper, serve_refuses_steps_beyond_the_panic_thresholds)
{
	const struct clock_discipline_config limits = {
		.step_threshold_s = 0.128,
		.panic_threshold_s = 2,
		.panic_backward_s = 1,
		.has_startup_panic = true,
		.startup_panic_threshold_s = 100,
		.startup_panic_backward_s = 50,
		.has_accumulated_panic = true,
		.accumulated_panic_threshold_s = 90,
		.max_frequency_ppm = 500,
	};
	struct clock_step_guard guard;
	clock_step_guard_init(&guard, &limits);
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	struct serve_arg a = { .fd = sv[1], .rec = { .result = 0 }, .guard = &guard };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, serve_thread, &a), 0);

	const double ok_steps[] = { 80, 2, 2, 2, -1, 1.5 };
	const double bad_steps[] = { -60, 1e9, 3, -1.5 };
	/* Refused before any step: the startup limits. */
	for (size_t i = 0; i < 2; i++)
		cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, bad_steps[i]), -ERANGE, "step %g",
			     bad_steps[i]);
	cr_assert_eq(a.rec.calls, 0, "no refused step reached the clock");
	cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, ok_steps[0]), 0, "within the startup limit");
	/* After a step: the single-step limits, each direction its own. */
	for (size_t i = 2; i < 4; i++)
		cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, bad_steps[i]), -ERANGE, "step %g",
			     bad_steps[i]);
	/* 80 + 2 + 2 + 2 + 1 + 1.5 = 88.5 s stepped: another 2 would pass the accumulated 90. */
	for (size_t i = 1; i < 6; i++)
		cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, ok_steps[i]), 0, "step %g", ok_steps[i]);
	cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, 2), -ERANGE, "past the accumulated limit");
	cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, 1), 0, "89.5 s: still within it");
	/* A step the clock refused does not count. */
	a.rec.result = -EPERM;
	cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, 0.5), -EPERM);
	a.rec.result = 0;
	cr_assert_eq(ask(sv[0], CLOCK_REQUEST_STEP, 0.5), 0, "90 s: the failed step was not counted");
	/* Other operations are not steps. */
	cr_assert_eq(ask(sv[0], CLOCK_REQUEST_SET_FREQUENCY, 400), 0);

	close(sv[0]);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(a.rec.calls, 10, "the made steps, the refused one, and the frequency");
	close(sv[1]);
}

/* ---- the helper as a process -------------------------------------------------------------- */

/* A line of /proc/PID/status ("CapEff", "NoNewPrivs"): its value, or "" */
static void proc_field(pid_t pid, const char *key, char *out, size_t len)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
	out[0] = 0;
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			char *v = line + kl + 1;
			v += strspn(v, " \t");
			v[strcspn(v, "\n")] = 0;
			snprintf(out, len, "%s", v);
		}
	fclose(f);
}

Test(clock_helper, a_forked_helper_keeps_only_what_it_is_given)
{
	struct privdrop stay = { 0 }; /* no account switch */
	uint64_t keep = privdrop_have(CAP_SYS_TIME) ? PRIVDROP_CAP(CAP_SYS_TIME) : 0;
	struct record r = { .result = 0 };
	struct clock_helper h;
	char err[256];
	cr_assert_eq(clock_helper_spawn(&h, &stay, keep, &rec_ops, &r, NULL, err, sizeof err), 0, "%s",
		     err);
	cr_assert_gt(h.pid, 0);

	char v[64];
	proc_field(h.pid, "CapEff", v, sizeof v);
	cr_assert_eq(strtoull(v, NULL, 16), keep, "effective %s", v);
	proc_field(h.pid, "CapPrm", v, sizeof v);
	cr_assert_eq(strtoull(v, NULL, 16), keep, "permitted %s", v);
	proc_field(h.pid, "CapAmb", v, sizeof v);
	cr_assert_eq(strtoull(v, NULL, 16), 0);
	proc_field(h.pid, "NoNewPrivs", v, sizeof v);
	cr_assert_str_eq(v, "1");
	proc_field(h.pid, "Name", v, sizeof v);
	cr_assert_str_eq(v, "clock-helper");

	cr_assert_eq(clock_helper_call(&h, CLOCK_REQUEST_SET_FREQUENCY, 12.5), 0);
	cr_assert_eq(clock_helper_ops.step(&h, 1.5), 0, "through the backend operations");
	cr_assert_eq(clock_helper_call(&h, CLOCK_REQUEST_STEP, NAN), -ERANGE,
		     "the helper checks what the network process sends");
	cr_assert_eq(clock_helper_call(&h, 77, 1), -EOPNOTSUPP);

	pid_t pid = h.pid;
	clock_helper_close(&h);
	cr_assert_eq(h.pid, 0);
	cr_assert_eq(h.fd, -1);
	cr_assert_eq(kill(pid, 0), -1, "the helper was reaped");
}

Test(clock_helper, a_dead_helper_is_given_up_for_good)
{
	struct privdrop stay = { 0 };
	struct record r = { .result = 0 };
	struct clock_helper h;
	char err[256];
	cr_assert_eq(clock_helper_spawn(&h, &stay, 0, &rec_ops, &r, NULL, err, sizeof err), 0,
		     "%s", err);
	cr_assert(!h.lost);
	/* Called at once: the helper may not even be a zombie yet when its socket reads closed. */
	cr_assert_eq(kill(h.pid, SIGKILL), 0);
	cr_assert_eq(clock_helper_call(&h, CLOCK_REQUEST_SET_FREQUENCY, 1), -EPIPE);
	cr_assert_eq(h.fd, -1);
	cr_assert_eq(h.pid, 0, "reaped when found gone");
	cr_assert(h.lost, "the owner is told");
	cr_assert_eq(clock_helper_call(&h, CLOCK_REQUEST_SET_FREQUENCY, 1), -EPIPE, "and stays gone");
	int st;
	cr_assert_eq(waitpid(-1, &st, WNOHANG), -1, "no child left");
	clock_helper_close(&h);
}

/* A helper that does not answer within CLOCK_HELPER_TIMEOUT_MS is killed and reaped, not left
 * to hang the stop. */
Test(clock_helper, a_hung_helper_is_killed_and_reaped)
{
	struct privdrop stay = { 0 };
	struct record r = { .result = 0, .delay_ms = 30000 };
	struct clock_helper h;
	char err[256];
	cr_assert_eq(clock_helper_spawn(&h, &stay, 0, &rec_ops, &r, NULL, err, sizeof err), 0,
		     "%s", err);
	pid_t pid = h.pid;
	cr_assert_eq(clock_helper_call(&h, CLOCK_REQUEST_SET_FREQUENCY, 1), -EPIPE);
	cr_assert(h.lost);
	cr_assert_eq(h.pid, 0);
	cr_assert_eq(kill(pid, 0), -1, "the helper is gone");
	cr_assert_eq(errno, ESRCH);
	clock_helper_close(&h);
}

Test(clock_helper, a_helper_that_cannot_drop_does_not_start)
{
	struct privdrop stay = { 0 };
	struct record r = { 0 };
	struct clock_helper h;
	char err[256] = "";
	/* Bit 63 is no capability anyone holds. */
	int rc = clock_helper_spawn(&h, &stay, PRIVDROP_CAP(63), &rec_ops, &r, NULL, err,
				    sizeof err);
	cr_assert_eq(rc, -EPERM, "%d %s", rc, err);
	cr_assert(strstr(err, "the clock helper did not start"), "%s", err);
	cr_assert_eq(h.pid, 0, "reaped");
	cr_assert_eq(h.fd, -1);
}

/* ---- the drop, in children ---------------------------------------------------------------- */

/* Runs fn in a forked child and returns its exit status (fn's result, 0..255). */
static int in_child(int (*fn)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(fn());
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st), "the child died: %#x", st);
	return WEXITSTATUS(st);
}

static uid_t nobody_uid(void)
{
	struct passwd *pw = getpwnam("nobody");
	cr_assert_not_null(pw, "the account 'nobody' exists");
	return pw->pw_uid;
}

static int drop_to_nobody(void)
{
	struct privdrop p;
	char err[512];
	if (privdrop_plan(&p, "nobody", "t.toml", 3, "[daemon]", err, sizeof err) < 0 ||
	    !p.switch_user)
		return 10;
	if (privdrop_apply(&p, 0, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return 11;
	}
	uid_t r, e, s;
	getresuid(&r, &e, &s);
	if (r != p.uid || e != p.uid || s != p.uid || getegid() != p.gid)
		return 12;
	char v[64];
	const char *const zero[] = { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" };
	for (size_t i = 0; i < 5; i++) {
		proc_field(getpid(), zero[i], v, sizeof v);
		if (strtoull(v, NULL, 16) != 0)
			return 20 + (int)i;
	}
	proc_field(getpid(), "NoNewPrivs", v, sizeof v);
	if (strcmp(v, "1") != 0)
		return 30;
	if (setuid(0) == 0)
		return 31; /* root again: the drop did not hold */
	return 0;
}

Test(privdrop, root_drops_to_an_account_with_nothing_left)
{
	cr_assert_eq(geteuid(), 0, "the suite runs as root");
	nobody_uid();
	cr_assert_eq(in_child(drop_to_nobody), 0);
}

static int keep_sys_time(void)
{
	struct privdrop p;
	char err[512];
	if (privdrop_plan(&p, "nobody", "t.toml", 3, "[daemon]", err, sizeof err) < 0)
		return 10;
	if (privdrop_apply(&p, PRIVDROP_CAP(CAP_SYS_TIME), err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return 11;
	}
	char v[64];
	const char *const kept[] = { "CapPrm", "CapEff", "CapBnd" };
	for (size_t i = 0; i < 3; i++) {
		proc_field(getpid(), kept[i], v, sizeof v);
		if (strtoull(v, NULL, 16) != PRIVDROP_CAP(CAP_SYS_TIME))
			return 20 + (int)i;
	}
	return getuid() == p.uid && privdrop_have(CAP_SYS_TIME) && !privdrop_have(CAP_SETUID) ? 0
												: 30;
}

Test(privdrop, a_kept_capability_survives_the_account_switch)
{
	cr_assert_eq(geteuid(), 0, "the suite runs as root");
	cr_assert_eq(in_child(keep_sys_time), 0);
}

static void *sleeper(void *p)
{
	(void)p;
	pause();
	return NULL;
}

static int refuse_with_threads(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, sleeper, NULL) != 0)
		return 10;
	struct privdrop p = { 0 };
	char err[512] = "";
	int rc = privdrop_apply(&p, 0, err, sizeof err);
	if (rc != -EBUSY || !strstr(err, "2 threads run already"))
		return 11;
	return privdrop_have(CAP_SETUID) ? 0 : 12; /* nothing was dropped */
}

Test(privdrop, refuses_while_threads_run)
{
	cr_assert_eq(geteuid(), 0, "the suite runs as root");
	cr_assert_eq(in_child(refuse_with_threads), 0);
}

Test(privdrop, a_configured_account_that_does_not_exist)
{
	struct privdrop p;
	char err[512] = "";
	int rc = privdrop_plan(&p, "no-such-account-zq", "/etc/x.toml", 12, "[daemon]", err,
			       sizeof err);
	cr_assert_eq(rc, -ENOENT);
	cr_assert(strstr(err, "/etc/x.toml:12: 'user' in [daemon]: account 'no-such-account-zq': "
			      "no such account; create it"),
		  "%s", err);
	char longname[100];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	cr_assert_eq(privdrop_plan(&p, longname, "/etc/x.toml", 12, "[daemon]", err, sizeof err),
		     -ENAMETOOLONG);
}

static int as_nobody_plans(void)
{
	uid_t nb = nobody_uid();
	if (setresgid(nb, nb, nb) < 0 || setresuid(nb, nb, nb) < 0)
		return 10;
	struct privdrop p;
	char err[512] = "";
	if (privdrop_plan(&p, "root", "t.toml", 4, "[daemon]", err, sizeof err) != -EPERM ||
	    !strstr(err, "t.toml:4: 'user' in [daemon]: cannot become 'root' (uid 0): started as "
			 "uid"))
		return 11;
	if (privdrop_plan(&p, "nobody", "t.toml", 4, "[daemon]", err, sizeof err) != 0 ||
	    p.switch_user)
		return 12; /* already that account */
	if (privdrop_plan(&p, NULL, "t.toml", 4, "[daemon]", err, sizeof err) != 0 || p.switch_user)
		return 13; /* the default is no demand on a user start */
	return 0;
}

Test(privdrop, a_user_start_stays_that_user)
{
	cr_assert_eq(geteuid(), 0, "the suite runs as root");
	cr_assert_eq(in_child(as_nobody_plans), 0);
}
