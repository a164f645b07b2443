/* The connection driver on outbound streams (ke_conn_connect), as the KE clients use it: a
 * refused connect reaches the owner only as closed, later, with the error; the machine's first
 * output waits for the connection and then flows both ways; the machine's deadline bounds a
 * peer that never answers (-ETIMEDOUT); the owner's close ends it with no error. */
#include "ke_conn.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "net.h"

/* A line machine: sends `hello`, collects input, is done once it holds `want` (or at its
 * deadline). The server side answers a line with "pong\n" once it has one. */
struct sm {
	const char *out;
	size_t outlen;
	char in[256];
	size_t inlen;
	const char *want;   /* done once the input holds this; NULL: never */
	bool answer;	    /* server side: answer "ping\n" with "pong\n" */
	uint64_t deadline;
	int timeouts;
	int inputs;
	bool done;
	int *freed;	    /* counts frees */
};

static int sm_input(void *m, const uint8_t *b, size_t n, uint64_t now)
{
	struct sm *s = m;
	(void)now;
	s->inputs++;
	if (s->inlen + n >= sizeof s->in)
		return -EMSGSIZE;
	memcpy(s->in + s->inlen, b, n);
	s->inlen += n;
	s->in[s->inlen] = '\0';
	if (s->answer && strstr(s->in, "ping\n") && !s->outlen) {
		s->out = "pong\n";
		s->outlen = 5;
		s->done = true;
	}
	if (s->want && strstr(s->in, s->want))
		s->done = true;
	return 0;
}

static void sm_eof(void *m, uint64_t now)
{
	(void)now;
	((struct sm *)m)->done = true;
}

static void sm_timeout(void *m, uint64_t now)
{
	struct sm *s = m;
	(void)now;
	s->timeouts++;
	s->done = true;
}

static void sm_output(const void *m, const uint8_t **p, size_t *n)
{
	const struct sm *s = m;
	*p = (const uint8_t *)s->out;
	*n = s->outlen;
}

static void sm_consume(void *m, size_t n)
{
	struct sm *s = m;
	s->out += n;
	s->outlen -= n;
}

static uint64_t sm_deadline(const void *m)
{
	return ((const struct sm *)m)->deadline;
}

static bool sm_done(const void *m)
{
	const struct sm *s = m;
	return s->done && s->outlen == 0;
}

static void sm_free(void *m)
{
	struct sm *s = m;
	(*s->freed)++;
}

static const struct ke_conn_machine sm_ops = {
	.input = sm_input,
	.eof = sm_eof,
	.timeout = sm_timeout,
	.output = sm_output,
	.output_consume = sm_consume,
	.deadline = sm_deadline,
	.done = sm_done,
	.free = sm_free,
};

static struct {
	uv_loop_t loop;
	struct net_listener *l;
	struct sockaddr_storage addr;
	struct sm server;
	bool server_silent; /* accept, never answer */
	int server_freed;
	struct sm client;
	int client_freed;
	struct ke_conn *kc;
	bool in_call;
	int closed;
	int closed_in_call;
	int progress;
	int progress_in_call;
	int error;
	bool close_on_progress;
} T;

static void srv_closed(struct ke_conn *c, void *m, void *ud)
{
	(void)c;
	(void)m;
	(void)ud;
	if (T.l) {
		net_listener_close(T.l);
		T.l = NULL;
	}
}

static int srv_accept(struct net_listener *l, struct net_stream *s, void *ud)
{
	(void)l;
	(void)ud;
	T.server = (struct sm){ .answer = !T.server_silent, .freed = &T.server_freed };
	const struct ke_conn_owner owner = { .closed = srv_closed };
	struct ke_conn *c;
	return ke_conn_start(&c, s, &sm_ops, &T.server, &owner);
}

static const struct net_listener_ops srv_ops = { .on_accept = srv_accept };

static void cli_progress(struct ke_conn *c, void *m, void *ud)
{
	(void)m;
	(void)ud;
	T.progress++;
	if (T.in_call)
		T.progress_in_call++;
	if (T.close_on_progress && T.client.inlen > 0)
		ke_conn_close(c, false);
}

static void cli_closed(struct ke_conn *c, void *m, void *ud)
{
	(void)ud;
	cr_assert_eq(m, &T.client);
	T.closed++;
	if (T.in_call)
		T.closed_in_call++;
	T.error = ke_conn_error(c);
	if (T.l) {
		net_listener_close(T.l);
		T.l = NULL;
	}
}

static void setup(bool listen)
{
	signal(SIGPIPE, SIG_IGN);
	memset(&T, 0, sizeof T);
	cr_assert_eq(uv_loop_init(&T.loop), 0);
	struct sockaddr_storage ss = { 0 };
	cr_assert_eq(uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&ss), 0);
	char err[256];
	cr_assert_eq(net_listener_new(&T.l, &T.loop, (struct sockaddr *)&ss, 4, &srv_ops, NULL, err,
				      sizeof err),
		     0, "%s", err);
	memcpy(&T.addr, net_listener_addr(T.l), sizeof(struct sockaddr_in));
	if (!listen) {
		/* A port nobody listens on any more. */
		net_listener_close(T.l);
		T.l = NULL;
		uv_run(&T.loop, UV_RUN_DEFAULT);
	}
}

static void connect_client(const char *out, const char *want, uint64_t deadline_in_ms)
{
	T.client = (struct sm){ .out = out, .outlen = strlen(out), .want = want,
				.freed = &T.client_freed };
	if (deadline_in_ms)
		T.client.deadline = uv_now(&T.loop) + deadline_in_ms;
	const struct ke_conn_owner owner = { .progress = cli_progress, .closed = cli_closed };
	T.in_call = true;
	int rc = ke_conn_connect(&T.kc, &T.loop, (struct sockaddr *)&T.addr, &sm_ops, &T.client,
				 &owner);
	T.in_call = false;
	cr_assert_eq(rc, 0);
	cr_assert_eq(T.closed, 0, "nothing reported inside ke_conn_connect");
}

static void run_and_close(void)
{
	uv_run(&T.loop, UV_RUN_DEFAULT);
	cr_assert_eq(uv_loop_close(&T.loop), 0, "handles left on the loop");
	cr_assert_eq(T.closed, 1, "closed once");
	cr_assert_eq(T.closed_in_call, 0);
	cr_assert_eq(T.progress_in_call, 0);
	cr_assert_eq(T.client_freed, 1, "the machine freed once");
}

Test(ke_conn_client, refused_connect_is_reported_as_closed_with_the_error)
{
	setup(false);
	connect_client("ping\n", "pong\n", 5000);
	run_and_close();
	cr_assert_eq(T.error, -ECONNREFUSED, "error %d", T.error);
	cr_assert_eq(T.progress, 0, "no stream event reached the machine");
	cr_assert_eq(T.client.inputs, 0);
	cr_assert_eq(T.client.outlen, 5, "nothing was written: there was no connection");
}

Test(ke_conn_client, output_waits_for_the_connection_then_flows)
{
	setup(true);
	connect_client("ping\n", "pong\n", 5000);
	cr_assert_eq(T.client.outlen, 5, "not written before the connection is up");
	run_and_close();
	cr_assert_eq(T.error, 0, "an orderly end, got %d", T.error);
	cr_assert_str_eq(T.server.in, "ping\n");
	cr_assert_str_eq(T.client.in, "pong\n");
	cr_assert_eq(T.client.timeouts, 0);
	cr_assert_geq(T.progress, 1, "the connect is a stream event too");
	cr_assert_eq(T.server_freed, 1);
}

Test(ke_conn_client, the_deadline_bounds_a_peer_that_never_answers)
{
	setup(true);
	T.server_silent = true;
	connect_client("ping\n", "pong\n", 200);
	run_and_close();
	cr_assert_eq(T.client.timeouts, 1);
	cr_assert_eq(T.error, -ETIMEDOUT, "error %d", T.error);
	cr_assert_str_eq(T.server.in, "ping\n", "the request went out");
}

Test(ke_conn_client, the_owner_closes_without_an_error)
{
	setup(true);
	T.close_on_progress = true;
	connect_client("ping\n", NULL, 5000);
	run_and_close();
	cr_assert_eq(T.error, 0, "an owner's close is orderly, got %d", T.error);
	cr_assert_str_eq(T.client.in, "pong\n");
}
