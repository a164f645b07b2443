#include "clock_helper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock_request.h"
#include "log.h"

void clock_helper_init(struct clock_helper *h)
{
	h->pid = 0;
	h->fd = -1;
	h->lost = false;
}

/* ---- the helper's side ---- */

/* A refused request, said at most once a second (with a burst of 5): a process that floods the
 * helper with garbage does not flood the log. */
static void log_refused(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_refused(const char *fmt, ...)
{
	static struct log_ratelimit refused_log = LOG_RATELIMIT_INIT(1, 5);
	struct timespec mono;
	clock_gettime(CLOCK_MONOTONIC, &mono);
	uint64_t now_ms = (uint64_t)mono.tv_sec * 1000 + (uint64_t)mono.tv_nsec / 1000000;
	if (!log_ratelimit_allow(&refused_log, now_ms))
		return;
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
}

/* Checks and carries out one well-formed request. */
static int carry_out(const struct clock_request *r, const struct clock_backend_ops *ops, void *ud,
		     struct clock_step_guard *guard)
{
	if (r->op == CLOCK_REQUEST_STEP && guard && !clock_step_guard_allows(guard, r->value)) {
		log_refused("clock helper: refused a step by %g: beyond the panic thresholds",
			    r->value);
		return -ERANGE;
	}
	int rc = clock_request_apply(r, ops, ud);
	if (rc < 0)
		log_error("clock helper: %s by %g: %s", clock_request_op_name(r->op), r->value,
			  strerror(-rc));
	else if (r->op == CLOCK_REQUEST_STEP && guard)
		clock_step_guard_record(guard, r->value);
	return rc;
}

int clock_helper_serve(int fd, const struct clock_backend_ops *ops, void *ud,
		       struct clock_step_guard *guard)
{
	for (;;) {
		uint8_t buf[CLOCK_REQUEST_SIZE];
		/* MSG_TRUNC: the length of the whole datagram, so a longer one is refused, not cut. */
		ssize_t n = recv(fd, buf, sizeof buf, MSG_TRUNC);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		struct clock_request r;
		int rc = clock_request_decode(buf, (size_t)n, &r);
		if (rc == 0)
			rc = carry_out(&r, ops, ud, guard);
		else
			log_refused("clock helper: refused a request of %zd bytes: %s", n,
				    strerror(-rc));
		uint8_t out[CLOCK_REPLY_SIZE];
		clock_reply_encode(rc, out);
		ssize_t sent;
		do
			sent = send(fd, out, sizeof out, MSG_NOSIGNAL);
		while (sent < 0 && errno == EINTR);
		if (sent < 0)
			return -errno;
	}
}

/* Leaves the helper nothing of the parent's but fd (moved to 3) and standard streams that are
 * open (on /dev/null where the parent had none, so that no later descriptor takes their place).
 * Returns the helper's fd, or -1. */
static int isolate_fds(int fd)
{
	for (int std = 0; std < 3; std++) {
		if (fcntl(std, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int null = open("/dev/null", O_RDWR);
		if (null < 0 || (null != std && (dup2(null, std) < 0 || close(null) < 0)))
			return -1;
	}
	if (fd != 3) {
		if (dup2(fd, 3) < 0)
			return -1;
		fd = 3;
	}
	if (close_range(4, ~0U, 0) == 0)
		return fd;
	/* A kernel without close_range (before 5.9): every descriptor up to the limit. */
	struct rlimit rl;
	long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
			   ? (long)rl.rlim_cur
			   : 65536;
	for (long i = 4; i < max; i++)
		close((int)i);
	return fd;
}

/* The child after the fork: nothing of the parent's but the socket and the standard streams, its
 * own signal handling, the drop, then the loop. Never returns. */
static void helper_main(int fd, const struct privdrop *p, uint64_t keep,
			const struct clock_backend_ops *ops, void *ud,
			const struct clock_discipline_config *limits)
{
	/* The parent's loop handles signals through a pipe this process does not serve. The helper
	 * ends when its socket closes, that is with the network process however that ends: a stop
	 * sent to the whole group (systemd's, a terminal's) reaches the parent, which closes it. */
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if ((fd = isolate_fds(fd)) < 0)
		_exit(1);
	prctl(PR_SET_NAME, "clock-helper", 0, 0, 0);
	struct clock_step_guard guard;
	if (limits)
		clock_step_guard_init(&guard, limits);

	char err[512];
	int rc = privdrop_apply(p, keep, err, sizeof err);
	if (rc < 0)
		log_error("clock helper: %s", err);
	uint8_t out[CLOCK_REPLY_SIZE];
	clock_reply_encode(rc, out);
	if (send(fd, out, sizeof out, MSG_NOSIGNAL) < 0 || rc < 0)
		_exit(1);
	char who[128];
	privdrop_describe(who, sizeof who);
	log_debug("clock helper running (%s)", who);
	rc = clock_helper_serve(fd, ops, ud, limits ? &guard : NULL);
	if (rc < 0)
		log_error("clock helper: %s", strerror(-rc));
	_exit(rc < 0 ? 1 : 0);
}

/* ---- the network process's side ---- */

static void describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "stopped");
}

static void set_timeouts(int fd)
{
	const struct timeval tv = { .tv_sec = CLOCK_HELPER_TIMEOUT_MS / 1000,
				    .tv_usec = (CLOCK_HELPER_TIMEOUT_MS % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Reads one reply; -EPIPE for a closed socket, -ETIMEDOUT for no answer in time. */
static int read_reply(int fd, int32_t *rc)
{
	uint8_t buf[CLOCK_REPLY_SIZE];
	ssize_t n;
	do
		n = recv(fd, buf, sizeof buf, MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return -EPIPE;
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
	return clock_reply_decode(buf, (size_t)n, rc);
}

int clock_helper_spawn(struct clock_helper *h, const struct privdrop *p, uint64_t keep,
		       const struct clock_backend_ops *ops, void *ud,
		       const struct clock_discipline_config *limits, char *err, size_t errlen)
{
	clock_helper_init(h);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		int e = errno;
		snprintf(err, errlen, "clock helper: socketpair: %s", strerror(e));
		return -e;
	}
	fflush(NULL); /* nothing buffered is written twice */
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		snprintf(err, errlen, "clock helper: fork: %s", strerror(e));
		return -e;
	}
	if (pid == 0) {
		close(sv[0]);
		helper_main(sv[1], p, keep, ops, ud, limits);
	}
	close(sv[1]);
	set_timeouts(sv[0]);
	h->pid = pid;
	h->fd = sv[0];
	int32_t started = 0;
	int rc = read_reply(h->fd, &started);
	if (rc == 0 && started == 0)
		return 0;
	snprintf(err, errlen, "the clock helper did not start: %s",
		 strerror(-(rc < 0 ? rc : started)));
	clock_helper_close(h);
	return rc < 0 ? rc : started;
}

void clock_helper_give_up(struct clock_helper *h, int why)
{
	if (h->fd < 0)
		return;
	char how[64] = "stopped answering";
	close(h->fd);
	h->fd = -1;
	if (h->pid > 0) {
		/* Dead already, or hung: either way it is reaped here, not left to the stop. */
		int status;
		pid_t r = waitpid(h->pid, &status, WNOHANG);
		bool killed = r == 0 && kill(h->pid, SIGKILL) == 0;
		while (r == 0 || (r < 0 && errno == EINTR))
			r = waitpid(h->pid, &status, 0);
		if (r == h->pid && !killed)
			describe_exit(status, how, sizeof how);
		h->pid = 0;
	}
	log_error("clock helper %s (%s)", how, strerror(-why));
	h->lost = true;
}

int clock_helper_call(struct clock_helper *h, uint32_t op, double value)
{
	if (h->fd < 0)
		return -EPIPE;
	uint8_t req[CLOCK_REQUEST_SIZE];
	clock_request_encode(&(struct clock_request){ .op = op, .value = value }, req);
	ssize_t n;
	do
		n = send(h->fd, req, sizeof req, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof req) {
		clock_helper_give_up(h, n < 0 ? -errno : -EMSGSIZE);
		return -EPIPE;
	}
	int32_t rc;
	int r = read_reply(h->fd, &rc);
	/* After a timeout or a malformed reply the next reply read could be this request's: the
	 * exchange is out of step for good. */
	if (r < 0) {
		clock_helper_give_up(h, r);
		return -EPIPE;
	}
	return rc;
}

static int helper_slew(void *ud, double offset_s)
{
	return clock_helper_call(ud, CLOCK_REQUEST_SLEW, offset_s);
}

static int helper_set_frequency(void *ud, double ppm)
{
	return clock_helper_call(ud, CLOCK_REQUEST_SET_FREQUENCY, ppm);
}

static int helper_step(void *ud, double offset_s)
{
	return clock_helper_call(ud, CLOCK_REQUEST_STEP, offset_s);
}

const struct clock_backend_ops clock_helper_ops = {
	.slew = helper_slew,
	.set_frequency = helper_set_frequency,
	.step = helper_step,
};

void clock_helper_close(struct clock_helper *h)
{
	if (h->fd >= 0) {
		close(h->fd);
		h->fd = -1;
	}
	if (h->pid > 0) {
		int status;
		pid_t r;
		do
			r = waitpid(h->pid, &status, 0);
		while (r < 0 && errno == EINTR);
		if (r == h->pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			char how[64];
			describe_exit(status, how, sizeof how);
			log_warn("clock helper %s", how);
		}
		h->pid = 0;
	}
}
