/* The endpoints of an [observability] table: opening them together, the observation socket's
 * file, and closing them together. */
#include "status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static const char path_key[] = "observation-path";

/* Whether a process accepts on the socket at sa: a refused connect means a stale file left by a
 * program that did not exit cleanly. */
static bool socket_in_use(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool used = connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0 || errno == EAGAIN;
	close(fd);
	return used;
}

/* Creates, binds and listens on the socket at path with mode; 0 with *fd, or negative errno with
 * the reason and its fix in why. */
static int unix_listen(const char *path, unsigned mode, int *fd, struct stat *made, char *why,
		       size_t whylen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(why, whylen,
				 "%s exists and is not a socket; remove it or choose another path",
				 path);
			return -EEXIST;
		}
		if (socket_in_use(&sa)) {
			snprintf(why, whylen,
				 "%s is served by a running program (another instance?); stop it "
				 "or choose another path",
				 path);
			return -EADDRINUSE;
		}
		if (unlink(path) < 0 && errno != ENOENT) {
			int e = errno;
			snprintf(why, whylen, "cannot remove the stale socket %s: %s", path,
				 strerror(e));
			return -e;
		}
		log_info("status: removed the stale socket %s", path);
	}
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		int e = errno;
		snprintf(why, whylen, "socket: %s", strerror(e));
		return -e;
	}
	int rc = 0;
	if (bind(s, (const struct sockaddr *)&sa, sizeof sa) < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(why, whylen,
				 "cannot create %s: its directory does not exist; create it (owned "
				 "by the user the program runs as) or choose another path",
				 path);
		else if (rc == -EACCES || rc == -EPERM || rc == -EROFS)
			snprintf(why, whylen,
				 "cannot create %s: %s; the directory must be writable by the user "
				 "the program runs as",
				 path, strerror(-rc));
		else
			snprintf(why, whylen, "cannot create %s: %s", path, strerror(-rc));
		close(s);
		return rc;
	}
	/* bind made the file with the umask's mode; the configured one applies before any
	 * connection can be accepted. */
	if (chmod(path, (mode_t)mode) < 0 || lstat(path, made) < 0 || listen(s, 16) < 0) {
		rc = -errno;
		snprintf(why, whylen, "cannot set up %s: %s", path, strerror(-rc));
		unlink(path);
		close(s);
		return rc;
	}
	*fd = s;
	return 0;
}

/* Removes the socket file when it is still the one we made. */
static void remove_socket(struct status_endpoints *eps)
{
	if (!eps->observe_path[0])
		return;
	struct stat st;
	if (lstat(eps->observe_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == eps->observe_dev && st.st_ino == eps->observe_ino &&
	    unlink(eps->observe_path) < 0)
		log_warn("status: cannot remove %s: %s", eps->observe_path, strerror(errno));
	eps->observe_path[0] = '\0';
}

int status_endpoints_open(struct status_endpoints *eps, uv_loop_t *loop,
			  const struct config_observability *obs, const char *file,
			  const char *where, const struct status_provider *provider, void *ud,
			  struct status_endpoint_failure *failed, char *err, size_t errlen)
{
	memset(eps, 0, sizeof *eps);
	memset(failed, 0, sizeof *failed);
	int rc = 0;
	if (obs->has_status_listen) {
		rc = status_server_new(&eps->status, loop,
				       (const struct sockaddr *)&obs->status_listen.addr, provider,
				       ud, err, errlen);
		if (rc < 0) {
			*failed = (struct status_endpoint_failure){ "status-listen",
								    &obs->status_listen };
			goto fail;
		}
		log_info("status endpoint on http://%s/status", obs->status_listen.text);
	}
	if (obs->observation_path[0]) {
		char why[512], head[256];
		struct stat made;
		int fd = -1;
		rc = unix_listen(obs->observation_path, obs->observation_permissions, &fd, &made,
				 why, sizeof why);
		if (rc == 0) {
			snprintf(eps->observe_path, sizeof eps->observe_path, "%s",
				 obs->observation_path);
			eps->observe_dev = made.st_dev;
			eps->observe_ino = made.st_ino;
			rc = status_server_adopt(&eps->observe, loop, fd, 0, provider, ud, why,
						 sizeof why);
		}
		if (rc < 0) {
			*failed = (struct status_endpoint_failure){ path_key, NULL };
			snprintf(err, errlen, "%s: %s",
				 config_prefix(head, sizeof head, file, obs->observation_path_line,
					       path_key, where),
				 why);
			goto fail;
		}
		log_info("status endpoint on the Unix socket %s (mode %04o)", obs->observation_path,
			 (unsigned)obs->observation_permissions);
	}
	if (obs->has_metrics_listen) {
		rc = status_server_new_flags(&eps->metrics, loop,
					     (const struct sockaddr *)&obs->metrics_listen.addr,
					     STATUS_SERVE_METRICS_ONLY, provider, ud, err, errlen);
		if (rc < 0) {
			*failed = (struct status_endpoint_failure){ "metrics-exporter-listen",
								    &obs->metrics_listen };
			goto fail;
		}
		log_info("metrics on http://%s/metrics", obs->metrics_listen.text);
	}
	return 0;
fail:
	status_endpoints_close(eps);
	return rc;
}

void status_endpoints_close(struct status_endpoints *eps)
{
	struct status_server **all[] = { &eps->status, &eps->observe, &eps->metrics };
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (*all[i]) {
			status_server_close(*all[i]);
			*all[i] = NULL;
		}
	/* Unlinking now: the listening descriptor closes in the loop's next turn, and a new
	 * instance binding the path meanwhile makes a file of its own, which is left alone. */
	remove_socket(eps);
}

unsigned status_endpoints_max_fds(const struct config_observability *obs)
{
	unsigned per = STATUS_MAX_CONNS + 2;
	return (obs->has_status_listen ? per : 0) + (obs->observation_path[0] ? per : 0) +
	       (obs->has_metrics_listen ? per : 0);
}
