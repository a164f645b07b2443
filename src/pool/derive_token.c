#include "derive_token.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "config_secret.h"
#include "pool_proto.h"
#include "program.h"

/* A secret is a line of text; this leaves room for any sensible one. */
#define SECRET_FILE_MAX 4096
#define UUID_MAX 255

bool derive_token_wanted(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--derive-token") == 0)
			return true;
	return false;
}

static int usage_error(const char *msg)
{
	fprintf(stderr,
		"nts-pool-ke: %s\n"
		"Usage: nts-pool-ke --derive-token --secret-file FILE --uuid UUID "
		"[--randomizer TEXT]\n",
		msg);
	return PROGRAM_EXIT_USAGE;
}

/* Visible ASCII only: the inputs are identifiers an operator copies, and a stray control byte
 * would silently derive a different token. */
static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

int derive_token_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "derive-token", no_argument, NULL, 'd' },
		{ "secret-file", required_argument, NULL, 's' },
		{ "uuid", required_argument, NULL, 'u' },
		{ "randomizer", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *secret_file = NULL, *uuid = NULL, *randomizer = "";
	int c;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			break;
		case 's':
			secret_file = optarg;
			break;
		case 'u':
			uuid = optarg;
			break;
		case 'r':
			randomizer = optarg;
			break;
		default:
			return usage_error("unknown or incomplete option with --derive-token");
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument with --derive-token");
	if (!secret_file || !uuid)
		return usage_error("--derive-token needs --secret-file and --uuid");
	if (!uuid[0] || strlen(uuid) > UUID_MAX || !printable(uuid))
		return usage_error("--uuid must be 1 to 255 visible ASCII characters");
	if (!printable(randomizer) || strlen(randomizer) > UUID_MAX)
		return usage_error("--randomizer must be at most 255 visible ASCII characters");

	char *text, why[512];
	size_t len;
	if (config_secret_read(secret_file, SECRET_FILE_MAX, &text, &len, why, sizeof why) < 0) {
		fprintf(stderr, "nts-pool-ke: --secret-file: %s\n", why);
		return PROGRAM_EXIT_FAILURE;
	}
	size_t n = strcspn(text, "\r\n");
	if (n == 0) {
		fprintf(stderr, "nts-pool-ke: --secret-file: %s: the first line is empty\n",
			secret_file);
		config_secret_free(text);
		return PROGRAM_EXIT_FAILURE;
	}
	char token[POOL_PROTO_DERIVED_TOKEN_LEN + 1];
	int rc = pool_proto_derive_token(text, n, uuid, randomizer, token);
	config_secret_free(text);
	if (rc < 0) {
		fprintf(stderr, "nts-pool-ke: SHA3-256 is not available in this GnuTLS\n");
		return PROGRAM_EXIT_FAILURE;
	}
	printf("%s\n", token);
	int status = fflush(stdout) == 0 ? 0 : PROGRAM_EXIT_FAILURE;
	gnutls_memset(token, 0, sizeof token);
	return status;
}
