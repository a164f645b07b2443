/* Every endpoint of an [observability] table on a real loop: the observation socket (mode,
 * stale files, files that are not sockets, a socket another instance serves, removal at close),
 * the metrics listener that serves /metrics only, and a failed open that leaves nothing behind.
 * The loop runs in the test thread; a client thread makes blocking requests and records what it
 * saw; the test thread asserts after the loop stopped. */
#include "status.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"

#define WATCHDOG_MS 30000

static char *dir;

static void setup(void)
{
	dir = tu_tempdir();
}

static void teardown(void)
{
	tu_rmtree(dir);
	free(dir);
}

TestSuite(status_endpoints, .init = setup, .fini = teardown, .timeout = 60);

static json_t *provide_json(void *ud)
{
	(void)ud;
	return json_pack("{s:s}", "program", "endpoints-test");
}

static void provide_metrics(struct status_text *out, void *ud)
{
	(void)ud;
	status_metric_header(out, "test_up", "gauge", "Up.");
	status_metric_value(out, "test_up", NULL, 1);
}

static const struct status_provider provider = {
	.status_json = provide_json,
	.metrics = provide_metrics,
};

/* One blocking GET; returns the HTTP status code (-1: none) and keeps the body's start. */
static int get(const struct sockaddr *addr, socklen_t len, const char *path, char *body,
	       size_t bodylen)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 10 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	int code = -1;
	if (connect(fd, addr, len) < 0)
		goto out;
	char req[256];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
	if (write(fd, req, (size_t)n) != n)
		goto out;
	char buf[8192];
	size_t got = 0;
	ssize_t r;
	while (got < sizeof buf - 1 && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
		got += (size_t)r;
	buf[got] = '\0';
	if (sscanf(buf, "HTTP/1.1 %d", &code) != 1)
		code = -1;
	const char *b = strstr(buf, "\r\n\r\n");
	snprintf(body, bodylen, "%s", b ? b + 4 : "");
out:
	close(fd);
	return code;
}

static socklen_t unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	cr_assert_lt(strlen(path), sizeof sa->sun_path);
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return sizeof *sa;
}

/* An observability table as the configuration would give it; ports 0 take any free one. */
static void obs_init(struct config_observability *obs, const char *path)
{
	memset(obs, 0, sizeof *obs);
	obs->observation_permissions = 0660;
	obs->observation_path_line = 7;
	if (path) {
		cr_assert_lt(strlen(path), sizeof obs->observation_path);
		memcpy(obs->observation_path, path, strlen(path) + 1);
	}
}

static void tcp_listen(struct config_listen *l, uint16_t port)
{
	memset(l, 0, sizeof *l);
	struct sockaddr_in *a = (struct sockaddr_in *)&l->addr;
	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l->addr_len = sizeof *a;
	snprintf(l->text, sizeof l->text, "127.0.0.1:%u", (unsigned)port);
	l->line = 9;
}

struct run {
	uv_loop_t loop;
	uv_async_t done;
	uv_timer_t watchdog;
	struct status_endpoints eps;
	char path[512];
	struct sockaddr_in metrics;
	/* Results of the client thread. */
	int unix_status, unix_metrics, metrics_metrics, metrics_status;
	char unix_body[1024];
	bool watchdog_fired;
};

static void on_done(uv_async_t *a)
{
	struct run *r = a->data;
	status_endpoints_close(&r->eps);
	uv_close((uv_handle_t *)&r->done, NULL);
	uv_close((uv_handle_t *)&r->watchdog, NULL);
}

static void on_watchdog(uv_timer_t *t)
{
	struct run *r = t->data;
	r->watchdog_fired = true;
	uv_async_send(&r->done);
}

static void *client(void *arg)
{
	struct run *r = arg;
	struct sockaddr_un sa;
	socklen_t len = unix_addr(r->path, &sa);
	char body[1024];
	r->unix_status =
		get((struct sockaddr *)&sa, len, "/status", r->unix_body, sizeof r->unix_body);
	r->unix_metrics = get((struct sockaddr *)&sa, len, "/metrics", body, sizeof body);
	r->metrics_metrics = get((struct sockaddr *)&r->metrics, sizeof r->metrics, "/metrics",
				 body, sizeof body);
	r->metrics_status = get((struct sockaddr *)&r->metrics, sizeof r->metrics, "/status", body,
				sizeof body);
	uv_async_send(&r->done);
	return NULL;
}

Test(status_endpoints, socket_and_metrics_listener_serve_then_go)
{
	struct run *r = calloc(1, sizeof *r);
	snprintf(r->path, sizeof r->path, "%s/observe", dir);
	struct config_observability obs;
	obs_init(&obs, r->path);
	obs.has_metrics_listen = true;
	tcp_listen(&obs.metrics_listen, 0);
	cr_assert_eq(uv_loop_init(&r->loop), 0);
	struct status_endpoint_failure failed;
	char err[1024];
	int rc = status_endpoints_open(&r->eps, &r->loop, &obs, "ntp.toml", "[observability]",
				       &provider, NULL, &failed, err, sizeof err);
	cr_assert_eq(rc, 0, "%s", err);
	struct stat st;
	cr_assert_eq(lstat(r->path, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 0777, 0660, "mode %o", (unsigned)(st.st_mode & 0777));
	memcpy(&r->metrics, status_server_addr(r->eps.metrics), sizeof r->metrics);

	uv_async_init(&r->loop, &r->done, on_done);
	r->done.data = r;
	uv_timer_init(&r->loop, &r->watchdog);
	r->watchdog.data = r;
	uv_timer_start(&r->watchdog, on_watchdog, WATCHDOG_MS, 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, client, r), 0);
	uv_run(&r->loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	cr_assert_not(r->watchdog_fired);
	cr_assert_eq(r->unix_status, 200);
	cr_assert(strstr(r->unix_body, "endpoints-test"), "%s", r->unix_body);
	cr_assert_eq(r->unix_metrics, 200);
	cr_assert_eq(r->metrics_metrics, 200);
	cr_assert_eq(r->metrics_status, 404, "the metrics listener serves /metrics only");
	cr_assert_eq(lstat(r->path, &st), -1, "the socket file is removed at close");
	cr_assert_eq(uv_loop_close(&r->loop), 0);
	free(r);
}

/* Opens and closes at once, running the loop until every handle is gone; returns rc. */
static int open_once(const struct config_observability *obs, char *err, size_t errlen,
		     struct status_endpoint_failure *failed)
{
	uv_loop_t loop;
	cr_assert_eq(uv_loop_init(&loop), 0);
	struct status_endpoints eps;
	int rc = status_endpoints_open(&eps, &loop, obs, "ntp.toml", "[observability]", &provider,
				       NULL, failed, err, errlen);
	if (rc == 0)
		status_endpoints_close(&eps);
	uv_run(&loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&loop), 0);
	return rc;
}

Test(status_endpoints, stale_socket_is_replaced)
{
	char path[512];
	snprintf(path, sizeof path, "%s/observe", dir);
	/* A socket file nobody accepts on: what a killed daemon leaves. */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa;
	socklen_t len = unix_addr(path, &sa);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, len), 0);
	close(fd);
	struct config_observability obs;
	obs_init(&obs, path);
	char err[1024];
	struct status_endpoint_failure failed;
	cr_assert_eq(open_once(&obs, err, sizeof err, &failed), 0, "%s", err);
}

Test(status_endpoints, what_is_not_a_socket_is_left_alone)
{
	char path[512];
	snprintf(path, sizeof path, "%s/observe", dir);
	FILE *f = fopen(path, "w");
	fputs("keep me\n", f);
	fclose(f);
	struct config_observability obs;
	obs_init(&obs, path);
	char err[1024];
	struct status_endpoint_failure failed;
	cr_assert_eq(open_once(&obs, err, sizeof err, &failed), -EEXIST);
	cr_assert_null(failed.listen);
	cr_assert(strncmp(err, "ntp.toml:7: 'observation-path' in [observability]: ", 51) == 0,
		  "%s", err);
	cr_assert(strstr(err, "is not a socket; remove it or choose another path"), "%s", err);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert(S_ISREG(st.st_mode));
}

Test(status_endpoints, socket_served_by_another_instance_is_refused)
{
	char path[512];
	snprintf(path, sizeof path, "%s/observe", dir);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa;
	socklen_t len = unix_addr(path, &sa);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, len), 0);
	cr_assert_eq(listen(fd, 4), 0);
	struct config_observability obs;
	obs_init(&obs, path);
	char err[1024];
	struct status_endpoint_failure failed;
	cr_assert_eq(open_once(&obs, err, sizeof err, &failed), -EADDRINUSE);
	cr_assert(strstr(err, "served by a running program"), "%s", err);
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "the other instance's socket stays");
	close(fd);
}

Test(status_endpoints, missing_directory_names_the_fix)
{
	char path[512];
	snprintf(path, sizeof path, "%s/no-such-dir/observe", dir);
	struct config_observability obs;
	obs_init(&obs, path);
	char err[1024];
	struct status_endpoint_failure failed;
	cr_assert_eq(open_once(&obs, err, sizeof err, &failed), -ENOENT);
	cr_assert(strstr(err, "its directory does not exist; create it"), "%s", err);
}

Test(status_endpoints, failed_tcp_endpoint_leaves_no_socket_file)
{
	char path[512];
	snprintf(path, sizeof path, "%s/observe", dir);
	/* A port somebody holds. */
	int busy = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(busy, (struct sockaddr *)&a, sizeof a), 0);
	cr_assert_eq(listen(busy, 4), 0);
	socklen_t al = sizeof a;
	cr_assert_eq(getsockname(busy, (struct sockaddr *)&a, &al), 0);
	struct config_observability obs;
	obs_init(&obs, path);
	obs.has_metrics_listen = true;
	tcp_listen(&obs.metrics_listen, ntohs(a.sin_port));
	char err[1024];
	struct status_endpoint_failure failed;
	cr_assert_eq(open_once(&obs, err, sizeof err, &failed), -EADDRINUSE, "%s", err);
	cr_assert_str_eq(failed.key, "metrics-exporter-listen");
	cr_assert_eq(failed.listen, &obs.metrics_listen);
	struct stat st;
	cr_assert_eq(lstat(path, &st), -1, "the socket made before the failure is gone");
	close(busy);
}
