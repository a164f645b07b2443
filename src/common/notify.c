#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"

/* What `systemctl status` shows of a failure: one line, bounded. */
#define NOTIFY_STATUS_MAX 400

static void send_state(const char *state)
{
#ifdef HAVE_LIBSYSTEMD
	/* 0: no manager asked; negative: it asked (NOTIFY_SOCKET is set) and was not told. */
	int rc = sd_notify(0, state);
	if (rc < 0) {
		size_t first = strcspn(state, "\n");
		log_warn("cannot tell the service manager %.*s (NOTIFY_SOCKET=%s): %s", (int)first,
			 state, getenv("NOTIFY_SOCKET") ? getenv("NOTIFY_SOCKET") : "", strerror(-rc));
	}
#else
	(void)state;
#endif
}

void notify_ready(void)
{
	send_state("READY=1");
}

void notify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	char state[64];
	snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000U);
	send_state(state);
}

void notify_stopping(void)
{
	send_state("STOPPING=1");
}

void notify_failed(const char *why, int rc)
{
	char state[NOTIFY_STATUS_MAX + 32];
	int line = (int)strcspn(why, "\n");
	if (line > NOTIFY_STATUS_MAX)
		line = NOTIFY_STATUS_MAX;
	snprintf(state, sizeof state, "STATUS=%.*s\nERRNO=%d", line, why, rc < 0 ? -rc : EINVAL);
	send_state(state);
}
