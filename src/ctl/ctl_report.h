/* ntp-ctl's readable report of a /status document (doc/status.md): ntp-daemon's system line,
 * sources table, listener counters and keyset; nts-pool-ke's sessions and upstream table. */
#ifndef NTSPOOL_CTL_REPORT_H
#define NTSPOOL_CTL_REPORT_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

/* Writes the report of doc (borrowed; it came from the network, so any field may be missing or
 * of the wrong type, and strings are printed with control and non-ASCII bytes replaced) to out.
 * now is the wall clock ages are computed against. Returns 0, or -EPROTO with a message in err
 * when doc is not the status document of a program known here. */
int ctl_report_print(FILE *out, const json_t *doc, time_t now, char *err, size_t errlen);

#endif
