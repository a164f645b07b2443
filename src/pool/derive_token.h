/* `nts-pool-ke --derive-token`: prints the authentication token a pool derived the public pool's
 * way hands to one time source (PROTOCOL.md §3.5), so an operator never computes it by hand. */
#ifndef NTSPOOL_POOL_DERIVE_TOKEN_H
#define NTSPOOL_POOL_DERIVE_TOKEN_H

#include <stdbool.h>

/* True when the command line asks for --derive-token (anywhere in argv). */
bool derive_token_wanted(int argc, char **argv);

/* Parses --derive-token --secret-file F --uuid U [--randomizer R], reads the secret (the first
 * line of F without its line end; F must be mode 0600 or stricter) and prints the token with a
 * newline on stdout. Returns the exit status: 0, PROGRAM_EXIT_USAGE for a bad command line,
 * PROGRAM_EXIT_FAILURE when the secret cannot be read or the digest fails. */
int derive_token_main(int argc, char **argv);

#endif
