/* Readiness for the service manager (sd_notify(3); doc/deploy.md, "Readiness"): a program started
 * by systemd with Type=notify says when it serves, when it reloads and when it stops, and why a
 * start failed. Nothing is sent when no manager asked for it (NOTIFY_SOCKET unset) or in a build
 * without libsystemd; a manager that asked but cannot be told is a logged warning, never fatal. */
#ifndef NTSPOOL_NOTIFY_H
#define NTSPOOL_NOTIFY_H

/* Every socket is bound and the workers serve: READY=1. */
void notify_ready(void);

/* A SIGHUP reload begins: RELOADING=1 with the CLOCK_MONOTONIC time the manager expects. The
 * reload is done (whatever its outcome) at the next notify_ready. */
void notify_reloading(void);

/* A stop begins: STOPPING=1. */
void notify_stopping(void);

/* The start failed: STATUS= the first line of why (what `systemctl status` shows), ERRNO= the
 * error (rc, negative errno). */
void notify_failed(const char *why, int rc);

#endif
