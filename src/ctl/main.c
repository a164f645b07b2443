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

/* The observation socket `status` reads when given no endpoint; ntp-daemon serves it when its
 * configuration sets [observability] observation-path to this path. */
#ifndef NTP_CTL_DEFAULT_SOCKET
#define NTP_CTL_DEFAULT_SOCKET "/run/ntp-daemon/observe"
#endif

/* The endpoint cuts a connection after 3 s; a little more covers a slow loaded host. */
#define STATUS_TIMEOUT_MS 5000

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ntp-ctl status [-c FILE | -a IP:PORT | -s PATH] [-j]\n"
		"       ntp-ctl validate -c FILE\n"
		"       ntp-ctl --help | --version\n"
		"\n"
		"Reads the status endpoint of ntp-daemon or nts-pool-ke, and checks "
		"configurations.\n"
		"\n"
		"  status               GET /status and print a report (or the JSON with --json)\n"
		"    -c, --config FILE  the endpoint of FILE's [observability]: status-listen, "
		"else\n"
		"                       observation-path\n"
		"    -a, --address ADDR the endpoint, \"IP:PORT\" or \"[IPv6]:PORT\"\n"
		"    -s, --socket PATH  the endpoint's Unix socket (observation-path)\n"
		"                       without -c, -a or -s: the socket " NTP_CTL_DEFAULT_SOCKET
		"\n"
		"    -j, --json         print the document as received, indented\n"
		"  validate -c FILE     check FILE as the configuration of the program it is for,\n"
		"                       printing every error found, in file order\n"
		"  -h, --help           show this help\n"
		"  -V, --version        show the version\n"
		"\n"
		"Exit status: 0 on success, 1 on failure (unreachable endpoint, HTTP error, invalid\n"
		"document or configuration), 2 on usage errors.\n");
}

/* The endpoint of the configuration at path; 0, or -EINVAL with a message in err. */
static int address_from_config(const char *path, struct ctl_endpoint *out, char *err, size_t errlen)
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
	if (obs.has_status_listen) {
		ctl_endpoint_tcp(out, &obs.status_listen);
		return 0;
	}
	if (obs.observation_path[0])
		return ctl_endpoint_unix(out, obs.observation_path);
	snprintf(err, errlen,
		 "%s: no status-listen (nor observation-path) in [observability]; give the "
		 "endpoint with --address or --socket",
		 path);
	return -EINVAL;
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
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *address = NULL, *socket_path = NULL;
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:a:s:j", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'a':
			address = optarg;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || (!!config_path + !!address + !!socket_path) > 1) {
		fprintf(stderr, "ntp-ctl status: give at most one of -c FILE, --address IP:PORT "
				"and --socket "
				"PATH\n");
		return EXIT_USAGE;
	}

	char err[1024];
	struct ctl_endpoint addr;
	if (address) {
		char why[256];
		struct config_listen l;
		if (config_parse_listen(address, &l, why, sizeof why) < 0) {
			fprintf(stderr, "ntp-ctl: --address %s: %s\n", address, why);
			return EXIT_USAGE;
		}
		ctl_endpoint_tcp(&addr, &l);
	} else if (config_path) {
		if (address_from_config(config_path, &addr, err, sizeof err) < 0) {
			fprintf(stderr, "ntp-ctl: %s\n", err);
			return EXIT_FAIL;
		}
	} else {
		const char *path = socket_path ? socket_path : NTP_CTL_DEFAULT_SOCKET;
		if (ctl_endpoint_unix(&addr, path) < 0) {
			fprintf(stderr, "ntp-ctl: --socket %s: not a usable Unix socket path\n",
				path);
			return EXIT_USAGE;
		}
	}

	char *body;
	size_t len;
	if (ctl_http_get(&addr, "/status", STATUS_TIMEOUT_MS, &body, &len, err, sizeof err) < 0) {
		fprintf(stderr, "ntp-ctl: http://%s/status: %s%s\n", addr.text, err,
			!address && !config_path && !socket_path
				? " (the default socket: is ntp-daemon running with this "
				  "observation-path? else give -c, -a or -s)"
				: "");
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
	struct config_report report = { 0 };
	int r = config_validate_file_report(config_path, &report, err, sizeof err);
	if (r < 0) {
		/* Every error, in file order; a syntax error (the parser stops) is the only one. */
		if (report.count == 0)
			fprintf(stderr, "%s\n", err);
		for (size_t i = 0; i < report.count; i++)
			fprintf(stderr, "%s\n", report.msgs[i].text);
		if (report.truncated)
			fprintf(stderr, "%s: more errors not shown\n", config_path);
		config_report_free(&report);
		return EXIT_FAIL;
	}
	config_report_free(&report);
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
