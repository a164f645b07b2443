/* `ntp-ctl validate -c FILE`: tells which program a configuration file is for and checks it. */
#ifndef NTSPOOL_CONFIG_VALIDATE_H
#define NTSPOOL_CONFIG_VALIDATE_H

#include <stddef.h>

#include "config.h"

enum config_validate_program {
	CONFIG_VALIDATE_POOL,   /* nts-pool-ke: the file has an [nts-pool-ke-server] table */
	CONFIG_VALIDATE_DAEMON, /* ntp-daemon: any other file */
};

/* Loads the file at path (borrowed) as the configuration of the program it is for and
 * discards the result. Returns that program (enum config_validate_program, non-negative), or
 * negative errno with "FILE:LINE: message" (TOML syntax: "FILE:LINE:COL: message") in err. */
int config_validate_file(const char *path, char *err, size_t errlen);

/* As config_validate_file, also adding every error of the configuration (not of its TOML
 * syntax: the parser stops at the first) to report (borrowed), sorted by line. */
int config_validate_file_report(const char *path, struct config_report *report, char *err,
				size_t errlen);

#endif
