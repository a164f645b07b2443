/* ntp-ctl: reads a program's status endpoint (a report or the JSON) and checks configurations. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "config.h"
#include "config_daemon.h"
#include "config_pool.h"
#include "config_validate.h"
#include "ctl_http.h"
#include "ctl_report.h"

/* The endpoint cuts a connection after 3 s; a little more covers a slow loaded host. */
#define STATUS_TIMEOUT_MS 5000

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ntp-ctl status [-c FILE | -a IP:PORT] [-j]\n"
		"       ntp-ctl validate -c FILE\n"
		"       ntp-ctl --help | --version\n"
		"\n"
		"Reads the status endpoint of ntp-daemon or nts-pool-ke, and checks configurations.\n"
		"\n"
		"  status               GET /status and print a report (or the JSON with --json)\n"
		"    -c, --config FILE  take the address from FILE's [observability] status-listen\n"
		"    -a, --address ADDR the endpoint, \"IP:PORT\" or \"[IPv6]:PORT\"\n"
		"    -j, --json         print the document as received, indented\n"
		"  validate -c FILE     check FILE as the configuration of the program it is for\n"
		"  -h, --help           show this help\n"
		"  -V, --version        show the version\n"
		"\n"
		"Exit status: 0 on success, 1 on failure (unreachable endpoint, HTTP error, invalid\n"
		"document or configuration), 2 on usage errors.\n");
}

/* The status-listen of the configuration at path; 0, or -EINVAL with a message in err. */
static int address_from_config(const char *path, struct config_listen *out, char *err,
			       size_t errlen)
{
	struct toml_value *root;
	int r = config_parse_file(path, &root, err, errlen);
	if (r < 0)
		return r;
	struct config_observability obs;
	if (toml_table_get(root, "nts-pool-ke-server")) {
		struct config_pool pool;
		r = config_pool_from_tree(root, path, &pool, err, errlen);
		obs = pool.observability;
		config_pool_free(&pool);
	} else {
		struct config_daemon daemon;
		r = config_daemon_from_tree(root, path, &daemon, err, errlen);
		obs = daemon.observability;
		config_daemon_free(&daemon);
	}
	toml_free(root);
	if (r < 0)
		return r;
	if (!obs.has_status_listen) {
		snprintf(err, errlen,
			 "%s: no status-listen in [observability]; give the address with --address",
			 path);
		return -EINVAL;
	}
	*out = obs.status_listen;
	return 0;
}

static int print_json(const json_t *doc)
{
	/* A decimal of up to 15 significant digits comes back unchanged from %.15g of its double;
	 * the default 17 would print 3.084 as 3.0840000000000001. */
	char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
	if (!text) {
		fprintf(stderr, "ntp-ctl: out of memory\n");
		return EXIT_FAIL;
	}
	puts(text);
	free(text);
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "address", required_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *address = NULL;
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:a:j", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'a':
			address = optarg;
			break;
		case 'j':
			json = true;
			break;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || !config_path == !address) {
		fprintf(stderr, "ntp-ctl status: give exactly one of -c FILE and --address IP:PORT\n");
		return EXIT_USAGE;
	}

	char err[1024];
	struct config_listen addr;
	if (address) {
		char why[256];
		if (config_parse_listen(address, &addr, why, sizeof why) < 0) {
			fprintf(stderr, "ntp-ctl: --address %s: %s\n", address, why);
			return EXIT_USAGE;
		}
	} else if (address_from_config(config_path, &addr, err, sizeof err) < 0) {
		fprintf(stderr, "ntp-ctl: %s\n", err);
		return EXIT_FAIL;
	}

	char *body;
	size_t len;
	if (ctl_http_get(&addr, "/status", STATUS_TIMEOUT_MS, &body, &len, err, sizeof err) < 0) {
		fprintf(stderr, "ntp-ctl: http://%s/status: %s\n", addr.text, err);
		return EXIT_FAIL;
	}
	json_error_t jerr;
	json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	free(body);
	if (!doc) {
		/* jansson quotes the offending token, which the peer chose. */
		for (char *p = jerr.text; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		fprintf(stderr, "ntp-ctl: http://%s/status: not JSON (line %d: %s)\n", addr.text,
			jerr.line, jerr.text);
		return EXIT_FAIL;
	}
	int rc = 0;
	if (json) {
		rc = print_json(doc);
	} else if (ctl_report_print(stdout, doc, time(NULL), err, sizeof err) < 0) {
		fprintf(stderr, "ntp-ctl: http://%s/status: %s\n", addr.text, err);
		rc = EXIT_FAIL;
	}
	json_decref(doc);
	if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
		fprintf(stderr, "ntp-ctl: writing the output: %s\n", strerror(errno));
		rc = EXIT_FAIL;
	}
	return rc;
}

static int cmd_validate(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
		if (c != 'c') {
			usage(stderr);
			return EXIT_USAGE;
		}
		config_path = optarg;
	}
	if (optind != argc || !config_path) {
		fprintf(stderr, "ntp-ctl validate: give the file with -c FILE\n");
		return EXIT_USAGE;
	}
	char err[1024];
	int r = config_validate_file(config_path, err, sizeof err);
	if (r < 0) {
		fprintf(stderr, "%s\n", err);
		return EXIT_FAIL;
	}
	printf("%s: valid %s configuration\n", config_path,
	       r == CONFIG_VALIDATE_POOL ? "nts-pool-ke" : "ntp-daemon");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
		printf("ntp-ctl %s\n", PACKAGE_VERSION);
		return 0;
	}
	/* Each command parses its own options: argv[1] is its argv[0]. */
	if (!strcmp(cmd, "status"))
		return cmd_status(argc - 1, argv + 1);
	if (!strcmp(cmd, "validate"))
		return cmd_validate(argc - 1, argv + 1);
	fprintf(stderr, "ntp-ctl: unknown command '%s'\n", cmd);
	usage(stderr);
	return EXIT_USAGE;
}
