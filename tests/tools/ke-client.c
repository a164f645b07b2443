/* ke-client: an NTS-KE test client over a real TCP socket with raw GnuTLS, so that it can also
 * misbehave (TLS 1.2, no ALPN, malformed or slow requests, idle connections), and optionally an
 * NTS-protected NTP exchange with the cookies obtained. Prints one JSON object on stdout.
 * Exit status: 0 when it ran as asked (whatever the server answered), 1 on a local failure
 * (connect, files, sockets), 2 on usage errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "aead.h"
#include "ke_msg.h"
#include "ke_record.h"
#include "ntp_packet.h"
#include "nts_ntp.h"

#define REQ_MAX (64 * 1024)

enum req_kind { REQ_PLAIN, REQ_SUPPORT, REQ_FIXED };

struct opts {
	const char *connect;
	const char *ca;
	const char *name;
	const char *cert;
	const char *key;
	bool tls12;
	bool no_alpn;
	enum req_kind kind;
	uint16_t aeads[KE_MSG_MAX_IDS];
	size_t n_aeads;
	enum ke_numbering numbering;
	const char *send_hex;
	unsigned keep_alive;
	int slow_ms;
	int hold_ms;
	int linger_ms; /* after the requests, stay idle and report whether the server closes */
	const char *deny[KE_MSG_MAX_DENY];
	size_t n_deny;
	bool ntp;
	const char *save;
	const char *load;
	const char *proxy; /* claim this client IP:PORT in a PROXY v1 header, or NULL */
	int timeout_ms;
	const char *token;    /* Authentication record first in Support and Fixed Key requests */
	const char *wait_for; /* before each kept-alive request after the first, wait for it */
};

/* What an exchange leaves for the NTP step and --save. */
struct ke_state {
	bool have_keys;
	uint16_t protocol;
	uint16_t aead;
	uint8_t c2s[AEAD_MAX_KEY_LEN];
	uint8_t s2c[AEAD_MAX_KEY_LEN];
	size_t key_len;
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	size_t n_cookies;
	char server[KE_MSG_NAME_MAX + 1];
	uint16_t port;
};

static void usage(FILE *f)
{
	fputs("Usage: ke-client --connect IP:PORT --ca FILE [OPTIONS]\n"
	      "       ke-client --load FILE [--timeout MS]\n"
	      "  --name NAME          name to verify (default: the IP)\n"
	      "  --cert FILE --key FILE  present a client certificate\n"
	      "  --tls12              offer TLS 1.2 only\n"
	      "  --no-alpn            send no ALPN extension\n"
	      "  --request KIND       plain (default), support or fixed\n"
	      "  --aead LIST          AEAD ids in preference order (default 15)\n"
	      "  --deny NAME          add an NTP Server Deny record (repeatable)\n"
	      "  --numbering N        iana (default) or ntpd-rs-v1\n"
	      "  --send-hex HEX       send exactly these bytes as the request\n"
	      "  --keep-alive N       send N requests on one connection\n"
	      "  --slow MS            send the request one byte at a time, MS apart\n"
	      "  --hold MS            after the handshake send nothing for MS\n"
	      "  --linger MS          after the requests stay connected and idle for MS\n"
	      "  --ntp                send one NTS NTP request with the first cookie\n"
	      "  --save FILE          save keys and cookies after the exchange\n"
	      "  --load FILE          skip the exchange: NTS NTP with a saved cookie\n"
	      "  --timeout MS         I/O timeout (default 5000)\n"
	      "  --proxy IP:PORT      first send a PROXY v1 header claiming that client address\n"
	      "  --token TOKEN        authenticate Support and Fixed Key requests with TOKEN\n"
	      "  --wait-for FILE      before each request after the first, create FILE.waiting and\n"
	      "                       wait until FILE exists\n",
	      f);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The test script creates the file once it has changed the server between two requests;
 * PATH.waiting, created first, tells it that the previous response has been read. */
static int wait_for_file(const char *path, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	struct stat st;
	char flag[4096];
	snprintf(flag, sizeof flag, "%s.waiting", path);
	FILE *f = fopen(flag, "w");
	if (!f)
		return -errno;
	fclose(f);
	while (stat(path, &st) < 0) {
		if (now_ms() >= end)
			return -ETIMEDOUT;
		sleep_ms(10);
	}
	return 0;
}

static int parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_aeads(const char *s, struct opts *o)
{
	char buf[512];
	if (strlen(s) >= sizeof buf)
		return -EINVAL;
	strcpy(buf, s);
	o->n_aeads = 0;
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		long v;
		if (o->n_aeads == KE_MSG_MAX_IDS || parse_int(tok, 0, 65535, &v) < 0)
			return -EINVAL;
		o->aeads[o->n_aeads++] = (uint16_t)v;
	}
	return o->n_aeads ? 0 : -EINVAL;
}

/* Splits "IP:PORT" or "[IPv6]:PORT" into a sockaddr and the bare IP text. */
static int parse_endpoint(const char *s, struct sockaddr_storage *ss, socklen_t *sl, char *ip,
			  size_t iplen)
{
	const char *colon = strrchr(s, ':');
	if (!colon)
		return -EINVAL;
	size_t hlen = (size_t)(colon - s);
	const char *h = s;
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= iplen)
		return -EINVAL;
	memcpy(ip, h, hlen);
	ip[hlen] = '\0';
	long port;
	if (parse_int(colon + 1, 1, 65535, &port) < 0)
		return -EINVAL;
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*sl = sizeof *a4;
	} else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*sl = sizeof *a6;
	} else {
		return -EINVAL;
	}
	return 0;
}

static int hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex (whitespace ignored) into out; returns the length or -EINVAL. */
static int hex_decode(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	int hi = -1;
	for (; *s; s++) {
		if (*s == ' ' || *s == '\n' || *s == '\t')
			continue;
		int v = hex_value((unsigned char)*s);
		if (v < 0)
			return -EINVAL;
		if (hi < 0) {
			hi = v;
			continue;
		}
		if (n == cap)
			return -EINVAL;
		out[n++] = (uint8_t)(hi << 4 | v);
		hi = -1;
	}
	return hi < 0 ? (int)n : -EINVAL;
}

static char *hex_encode(const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char *s = malloc(2 * n + 1);
	if (!s)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 15];
	}
	s[2 * n] = '\0';
	return s;
}

static int add_hex(cJSON *obj, const char *key, const uint8_t *p, size_t n)
{
	char *h = hex_encode(p, n);
	if (!h)
		return -ENOMEM;
	cJSON *item = cJSON_AddStringToObject(obj, key, h);
	free(h);
	return item ? 0 : -ENOMEM;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "ca", required_argument, NULL, 'A' },
		{ "name", required_argument, NULL, 'n' },
		{ "cert", required_argument, NULL, 'C' },
		{ "key", required_argument, NULL, 'K' },
		{ "tls12", no_argument, NULL, '2' },
		{ "no-alpn", no_argument, NULL, 'a' },
		{ "request", required_argument, NULL, 'r' },
		{ "aead", required_argument, NULL, 'e' },
		{ "numbering", required_argument, NULL, 'N' },
		{ "send-hex", required_argument, NULL, 'x' },
		{ "keep-alive", required_argument, NULL, 'k' },
		{ "slow", required_argument, NULL, 's' },
		{ "hold", required_argument, NULL, 'h' },
		{ "linger", required_argument, NULL, 'g' },
		{ "deny", required_argument, NULL, 'd' },
		{ "ntp", no_argument, NULL, 'p' },
		{ "save", required_argument, NULL, 'S' },
		{ "load", required_argument, NULL, 'L' },
		{ "timeout", required_argument, NULL, 't' },
		{ "token", required_argument, NULL, 'T' },
		{ "wait-for", required_argument, NULL, 'W' },
		{ "proxy", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct opts){ .kind = REQ_PLAIN, .aeads = { AEAD_AES_SIV_CMAC_256 }, .n_aeads = 1,
			    .keep_alive = 1, .slow_ms = -1, .hold_ms = -1, .linger_ms = -1, .timeout_ms = 5000 };
	int c;
	long v;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o->connect = optarg; break;
		case 'A': o->ca = optarg; break;
		case 'n': o->name = optarg; break;
		case 'P': o->proxy = optarg; break;
		case 'C': o->cert = optarg; break;
		case 'K': o->key = optarg; break;
		case '2': o->tls12 = true; break;
		case 'a': o->no_alpn = true; break;
		case 'd':
			if (o->n_deny == KE_MSG_MAX_DENY)
				return -EINVAL;
			o->deny[o->n_deny++] = optarg;
			break;
		case 'p': o->ntp = true; break;
		case 'x': o->send_hex = optarg; break;
		case 'S': o->save = optarg; break;
		case 'L': o->load = optarg; break;
		case 'r':
			if (!strcmp(optarg, "plain"))
				o->kind = REQ_PLAIN;
			else if (!strcmp(optarg, "support"))
				o->kind = REQ_SUPPORT;
			else if (!strcmp(optarg, "fixed"))
				o->kind = REQ_FIXED;
			else
				return -EINVAL;
			break;
		case 'e':
			if (parse_aeads(optarg, o) < 0)
				return -EINVAL;
			break;
		case 'N':
			if (!strcmp(optarg, "iana"))
				o->numbering = KE_NUMBERING_IANA;
			else if (!strcmp(optarg, "ntpd-rs-v1"))
				o->numbering = KE_NUMBERING_NTPDRS_V1;
			else
				return -EINVAL;
			break;
		case 'k':
			if (parse_int(optarg, 1, 1000, &v) < 0)
				return -EINVAL;
			o->keep_alive = (unsigned)v;
			break;
		case 's':
		case 'h':
		case 'g':
		case 't':
			if (parse_int(optarg, c == 't' ? 1 : 0, 3600000, &v) < 0)
				return -EINVAL;
			*(c == 's'   ? &o->slow_ms
			  : c == 'h' ? &o->hold_ms
			  : c == 'g' ? &o->linger_ms
				     : &o->timeout_ms) = (int)v;
			break;
		case 'T':
			o->token = optarg;
			break;
		case 'W':
			o->wait_for = optarg;
			break;
		case 'H':
			usage(stdout);
			exit(0);
		default:
			return -EINVAL;
		}
	}
	if (optind != argc)
		return -EINVAL;
	if (o->load)
		return o->connect ? -EINVAL : 0;
	if (!o->connect || !o->ca || !o->cert != !o->key)
		return -EINVAL;
	return 0;
}

/* ---- TLS over the socket ---- */

static int set_timeout(int fd, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
		return -errno;
	return 0;
}

static int tls_setup(const struct opts *o, const char *ip, int fd,
		     gnutls_certificate_credentials_t *cred, gnutls_session_t *gs, char *err,
		     size_t errlen)
{
	static const char kp_server[] = GNUTLS_KP_TLS_WWW_SERVER;
	static uint8_t addr[16];
	static gnutls_typed_vdata_st vdata[2];
	static char name[KE_MSG_NAME_MAX + 1];
	int g = gnutls_certificate_allocate_credentials(cred);
	if (g < 0)
		goto fail;
	g = gnutls_certificate_set_x509_trust_file(*cred, o->ca, GNUTLS_X509_FMT_PEM);
	if (g <= 0) {
		snprintf(err, errlen, "%s: no CA certificate loaded", o->ca);
		return -EINVAL;
	}
	if (o->cert) {
		g = gnutls_certificate_set_x509_key_file(*cred, o->cert, o->key,
							 GNUTLS_X509_FMT_PEM);
		if (g < 0)
			goto fail;
	}
	g = gnutls_init(gs, GNUTLS_CLIENT);
	if (g < 0)
		goto fail;
	g = gnutls_priority_set_direct(*gs, o->tls12 ? "NORMAL:-VERS-ALL:+VERS-TLS1.2"
						     : "NORMAL:-VERS-ALL:+VERS-TLS1.3",
				       NULL);
	if (g < 0)
		goto fail;
	g = gnutls_credentials_set(*gs, GNUTLS_CRD_CERTIFICATE, *cred);
	if (g < 0)
		goto fail;
	if (!o->no_alpn) {
		gnutls_datum_t alpn = { (unsigned char *)"ntske/1", 7 };
		g = gnutls_alpn_set_protocols(*gs, &alpn, 1, 0);
		if (g < 0)
			goto fail;
	}
	snprintf(name, sizeof name, "%s", o->name ? o->name : ip);
	if (inet_pton(AF_INET, name, addr) == 1) {
		vdata[0] = (gnutls_typed_vdata_st){ GNUTLS_DT_IP_ADDRESS, addr, 4 };
	} else if (inet_pton(AF_INET6, name, addr) == 1) {
		vdata[0] = (gnutls_typed_vdata_st){ GNUTLS_DT_IP_ADDRESS, addr, 16 };
	} else {
		vdata[0] = (gnutls_typed_vdata_st){ GNUTLS_DT_DNS_HOSTNAME, (unsigned char *)name,
						    0 };
		g = gnutls_server_name_set(*gs, GNUTLS_NAME_DNS, name, strlen(name));
		if (g < 0)
			goto fail;
	}
	vdata[1] = (gnutls_typed_vdata_st){ GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)kp_server,
					    0 };
	gnutls_session_set_verify_cert2(*gs, vdata, 2, 0);
	gnutls_transport_set_int(*gs, fd);
	gnutls_handshake_set_timeout(*gs, (unsigned)o->timeout_ms);
	return 0;
fail:
	snprintf(err, errlen, "gnutls: %s", gnutls_strerror(g));
	return -EIO;
}

static int handshake(gnutls_session_t gs, char *reason, size_t len)
{
	int g;
	do {
		g = gnutls_handshake(gs);
	} while (g < 0 && !gnutls_error_is_fatal(g) && g != GNUTLS_E_AGAIN);
	if (g == 0)
		return 0;
	if (g == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t out;
		unsigned status = gnutls_session_get_verify_cert_status(gs);
		if (gnutls_certificate_verification_status_print(
			    status, gnutls_certificate_type_get(gs), &out, 0) == 0) {
			snprintf(reason, len, "%s: %s", gnutls_strerror(g), out.data);
			gnutls_free(out.data);
			return -EACCES;
		}
	}
	snprintf(reason, len, "%s", g == GNUTLS_E_AGAIN ? "timeout" : gnutls_strerror(g));
	return -EPROTO;
}

/* Sends buf whole, or one byte at a time slow_ms apart. */
static int send_request(gnutls_session_t gs, const uint8_t *buf, size_t len, int slow_ms,
			char *reason, size_t rlen)
{
	size_t step = slow_ms >= 0 ? 1 : len;
	for (size_t off = 0; off < len; off += step) {
		if (slow_ms > 0 && off > 0)
			sleep_ms(slow_ms);
		ssize_t g;
		do {
			g = gnutls_record_send(gs, buf + off, step);
		} while (g == GNUTLS_E_INTERRUPTED);
		if (g < 0) {
			snprintf(reason, rlen, "%s", gnutls_strerror((int)g));
			return -EPIPE;
		}
	}
	return 0;
}

/* Reads until a whole response (by framing), EOF, an error or the deadline. Returns the bytes
 * read; *status says why reading stopped: "complete", "closed", "timeout", "reset: ...",
 * "malformed", "too large". */
static size_t read_response(gnutls_session_t gs, uint8_t *buf, size_t cap, int64_t deadline,
			    char *status, size_t slen)
{
	size_t have = 0;
	for (;;) {
		int f = ke_msg_frame(buf, have, KE_MSG_RESPONSE_MAX);
		if (f > 0) {
			snprintf(status, slen, "complete");
			return (size_t)f;
		}
		if (f == -EBADMSG) {
			snprintf(status, slen, "malformed");
			return have;
		}
		if (f < 0 || have == cap) {
			snprintf(status, slen, "too large");
			return have;
		}
		if (now_ms() >= deadline) {
			snprintf(status, slen, "timeout");
			return have;
		}
		ssize_t n = gnutls_record_recv(gs, buf + have, cap - have);
		if (n > 0) {
			have += (size_t)n;
		} else if (n == 0) {
			snprintf(status, slen, "closed");
			return have;
		} else if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			continue;
		} else {
			snprintf(status, slen, "reset: %s", gnutls_strerror((int)n));
			return have;
		}
	}
}

static int random_bytes(void *p, size_t n)
{
	return gnutls_rnd(GNUTLS_RND_RANDOM, p, n) < 0 ? -EIO : 0;
}

static int build_request(const struct opts *o, uint8_t *buf, size_t cap, struct ke_state *st,
			 bool keep_alive)
{
	switch (o->kind) {
	case REQ_PLAIN: {
		uint16_t proto = KE_MSG_PROTOCOL_NTPV4;
		return ke_msg_build_request(buf, cap, o->numbering, &proto, 1, o->aeads, o->n_aeads,
					    o->deny, o->n_deny);
	}
	case REQ_SUPPORT:
		return ke_msg_build_support_request(buf, cap, o->numbering, o->token, true, true,
						    keep_alive);
	case REQ_FIXED: {
		size_t kl = ke_msg_aead_key_len(o->aeads[0]);
		if (kl == 0)
			return -EINVAL;
		if (random_bytes(st->c2s, kl) < 0 || random_bytes(st->s2c, kl) < 0)
			return -EIO;
		st->key_len = kl;
		st->aead = o->aeads[0];
		st->protocol = KE_MSG_PROTOCOL_NTPV4;
		return ke_msg_build_fixed_key_request(buf, cap, o->numbering, o->token, st->c2s,
						      st->s2c, kl, KE_MSG_PROTOCOL_NTPV4,
						      o->aeads[0], keep_alive);
	}
	}
	return -EINVAL;
}

static const char *errno_name(int e)
{
	switch (e) {
	case 0: return "ok";
	case -EREMOTEIO: return "server error";
	case -EPROTO: return "unknown critical record";
	case -EMSGSIZE: return "too large";
	case -EBADMSG: return "malformed";
	default: return strerror(-e);
	}
}

/* Describes one response in obj and, for a usable one, fills st's cookies, server and port. */
static int describe_response(const struct opts *o, const uint8_t *buf, size_t len,
			     const char *status, cJSON *obj, struct ke_state *st, const char *ip)
{
	if (!cJSON_AddStringToObject(obj, "read", status) || add_hex(obj, "response_hex", buf, len))
		return -ENOMEM;
	cJSON *recs = cJSON_AddArrayToObject(obj, "records");
	if (!recs)
		return -ENOMEM;
	struct ke_record_iter it;
	struct ke_record rec;
	ke_record_iter_init(&it, buf, len, o->numbering);
	int r;
	while ((r = ke_record_iter_next(&it, &rec)) == 1) {
		cJSON *j = cJSON_CreateObject();
		if (!j || !cJSON_AddItemToArray(recs, j) ||
		    !cJSON_AddNumberToObject(j, "type", rec.type) ||
		    !cJSON_AddBoolToObject(j, "critical", rec.critical) ||
		    !cJSON_AddNumberToObject(j, "len", rec.len) ||
		    !cJSON_AddStringToObject(j, "kind", ke_record_kind_name(rec.kind)))
			return -ENOMEM;
	}
	if (!cJSON_AddBoolToObject(obj, "records_complete", r == 0))
		return -ENOMEM;
	enum ke_msg_request_kind asked = o->kind == REQ_SUPPORT	 ? KE_MSG_REQUEST_SUPPORT
					 : o->kind == REQ_FIXED ? KE_MSG_REQUEST_FIXED_KEY
								: KE_MSG_REQUEST_PLAIN;
	struct ke_msg_response *resp = calloc(1, sizeof *resp);
	if (!resp)
		return -ENOMEM;
	int p = len ? ke_msg_parse_response(buf, len, o->numbering, asked, resp) : -ENODATA;
	bool usable = p == 0 || p == -EREMOTEIO;
	int ret = -ENOMEM;
	if (!cJSON_AddStringToObject(obj, "parse", len ? errno_name(p) : "empty"))
		goto out;
	if (usable && resp->has_error ? !cJSON_AddNumberToObject(obj, "error", resp->error)
				      : !cJSON_AddNullToObject(obj, "error"))
		goto out;
	if (usable && resp->has_protocol ? !cJSON_AddNumberToObject(obj, "protocol", resp->protocol)
					 : !cJSON_AddNullToObject(obj, "protocol"))
		goto out;
	if (usable && resp->has_aead ? !cJSON_AddNumberToObject(obj, "aead", resp->aead)
				     : !cJSON_AddNullToObject(obj, "aead"))
		goto out;
	if (!cJSON_AddNumberToObject(obj, "cookies", usable ? (double)resp->n_cookies : 0))
		goto out;
	if (usable && resp->n_cookies
		    ? !cJSON_AddNumberToObject(obj, "cookie_len", (double)resp->cookies[0].len)
		    : !cJSON_AddNullToObject(obj, "cookie_len"))
		goto out;
	if (usable && resp->has_server ? !cJSON_AddStringToObject(obj, "server", resp->server.name)
				       : !cJSON_AddNullToObject(obj, "server"))
		goto out;
	if (usable && resp->has_port ? !cJSON_AddNumberToObject(obj, "port", resp->port)
				     : !cJSON_AddNullToObject(obj, "port"))
		goto out;
	if (!cJSON_AddBoolToObject(obj, "keep_alive", usable && resp->keep_alive))
		goto out;
	cJSON *sp = cJSON_AddArrayToObject(obj, "supported_protocols");
	cJSON *sa = cJSON_AddArrayToObject(obj, "supported_algorithms");
	if (!sp || !sa)
		goto out;
	for (size_t i = 0; usable && i < resp->n_supported_protocols; i++) {
		if (!cJSON_AddItemToArray(sp, cJSON_CreateNumber(resp->supported_protocols[i])))
			goto out;
	}
	for (size_t i = 0; usable && i < resp->n_supported_algorithms; i++) {
		cJSON *a = cJSON_CreateObject();
		if (!a || !cJSON_AddItemToArray(sa, a) ||
		    !cJSON_AddNumberToObject(a, "id", resp->supported_algorithms[i].id) ||
		    !cJSON_AddNumberToObject(a, "key_len", resp->supported_algorithms[i].key_len))
			goto out;
	}
	if (p == 0 && resp->n_cookies) {
		memcpy(st->cookies, resp->cookies, sizeof st->cookies);
		st->n_cookies = resp->n_cookies;
		st->protocol = resp->protocol;
		st->aead = resp->aead;
		snprintf(st->server, sizeof st->server, "%s", resp->has_server ? resp->server.name : ip);
		st->port = resp->has_port ? resp->port : KE_MSG_PORT_DEFAULT;
		st->have_keys = true;
	}
	ret = 0;
out:
	free(resp);
	return ret;
}

/* Waits idle (--hold: right after the handshake; --linger: after the requests), reading whatever
 * comes, until the server closes or hold_ms pass. keep_bytes reports what arrived meanwhile. */
static int hold(gnutls_session_t gs, int hold_ms, bool keep_bytes, cJSON *out)
{
	uint8_t buf[4096];
	size_t have = 0;
	int64_t start = now_ms(), deadline = start + hold_ms;
	bool closed = false;
	const char *how = "still open";
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		struct pollfd pfd = { gnutls_transport_get_int(gs), POLLIN, 0 };
		if (!gnutls_record_check_pending(gs) && poll(&pfd, 1, (int)left) <= 0)
			continue;
		ssize_t n = gnutls_record_recv(gs, buf + have, sizeof buf - have);
		if (n > 0) {
			have += (size_t)n;
			if (have == sizeof buf)
				have = 0;
		} else if (n == 0 || gnutls_error_is_fatal((int)n)) {
			closed = true;
			how = n == 0 ? "close_notify" : gnutls_strerror((int)n);
			break;
		}
	}
	if (!cJSON_AddBoolToObject(out, "closed_by_server", closed) ||
	    !cJSON_AddStringToObject(out, "close", how) ||
	    !cJSON_AddNumberToObject(out, "held_ms", (double)(now_ms() - start)) ||
	    (keep_bytes && add_hex(out, "response_hex", buf, have)))
		return -ENOMEM;
	return 0;
}

/* A PROXY protocol v1 line claiming client `claim` (IP:PORT) towards dst, as a load balancer
 * would send it. */
static int send_proxy_header(int fd, const char *claim, const struct sockaddr_storage *dst,
			     char *reason, size_t len)
{
	struct sockaddr_storage src;
	socklen_t sl;
	char src_ip[INET6_ADDRSTRLEN + 1], dst_ip[INET6_ADDRSTRLEN + 1], line[160];
	if (parse_endpoint(claim, &src, &sl, src_ip, sizeof src_ip) < 0 ||
	    src.ss_family != dst->ss_family) {
		snprintf(reason, len, "bad --proxy %s (IP:PORT of the --connect family)", claim);
		return -EINVAL;
	}
	bool v6 = dst->ss_family == AF_INET6;
	const void *da = v6 ? (const void *)&((const struct sockaddr_in6 *)dst)->sin6_addr
			    : (const void *)&((const struct sockaddr_in *)dst)->sin_addr;
	inet_ntop(dst->ss_family, da, dst_ip, sizeof dst_ip);
	unsigned sport = ntohs(v6 ? ((struct sockaddr_in6 *)&src)->sin6_port
				  : ((struct sockaddr_in *)&src)->sin_port);
	unsigned dport = ntohs(v6 ? ((const struct sockaddr_in6 *)dst)->sin6_port
				  : ((const struct sockaddr_in *)dst)->sin_port);
	int n = snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n", v6 ? "TCP6" : "TCP4",
			 src_ip, dst_ip, sport, dport);
	if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
		snprintf(reason, len, "sending the PROXY header: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

static int key_exchange(const struct opts *o, cJSON *out, struct ke_state *st)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char ip[INET6_ADDRSTRLEN + 1], reason[512] = "";
	if (parse_endpoint(o->connect, &ss, &sl, ip, sizeof ip) < 0) {
		fprintf(stderr, "ke-client: bad --connect %s\n", o->connect);
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, ret = 0;
	gnutls_certificate_credentials_t cred = NULL;
	gnutls_session_t gs = NULL;
	uint8_t *req = malloc(REQ_MAX), *resp = malloc(KE_MSG_RESPONSE_MAX);
	if (!req || !resp) {
		ret = -ENOMEM;
		goto done;
	}
	if (set_timeout(fd, o->timeout_ms) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
	    connect(fd, (struct sockaddr *)&ss, sl) < 0) {
		ret = -errno;
		snprintf(reason, sizeof reason, "connect: %s", strerror(errno));
		cJSON_AddStringToObject(out, "handshake", "failed");
		cJSON_AddStringToObject(out, "handshake_error", reason);
		goto done;
	}
	if (o->proxy && (ret = send_proxy_header(fd, o->proxy, &ss, reason, sizeof reason)) < 0) {
		fprintf(stderr, "ke-client: %s\n", reason);
		goto done;
	}
	ret = tls_setup(o, ip, fd, &cred, &gs, reason, sizeof reason);
	if (ret < 0) {
		fprintf(stderr, "ke-client: %s\n", reason);
		goto done;
	}
	int h = handshake(gs, reason, sizeof reason);
	gnutls_datum_t alpn;
	bool has_alpn = h == 0 && gnutls_alpn_get_selected_protocol(gs, &alpn) == 0;
	char alpn_s[64] = "";
	if (has_alpn)
		snprintf(alpn_s, sizeof alpn_s, "%.*s", (int)alpn.size, alpn.data);
	if (!cJSON_AddStringToObject(out, "handshake", h == 0 ? "ok" : "failed") ||
	    !(h == 0 ? cJSON_AddNullToObject(out, "handshake_error")
		     : cJSON_AddStringToObject(out, "handshake_error", reason)) ||
	    !(has_alpn ? cJSON_AddStringToObject(out, "alpn", alpn_s)
		       : cJSON_AddNullToObject(out, "alpn")) ||
	    !cJSON_AddStringToObject(out, "tls_version",
				     h == 0 ? gnutls_protocol_get_name(gnutls_protocol_get_version(gs))
					    : "none")) {
		ret = -ENOMEM;
		goto done;
	}
	if (h < 0)
		goto done;
	if (o->hold_ms >= 0) {
		ret = hold(gs, o->hold_ms, true, out);
		goto done;
	}
	cJSON *responses = cJSON_AddArrayToObject(out, "responses");
	if (!responses) {
		ret = -ENOMEM;
		goto done;
	}
	unsigned answered = 0;
	const char *send_status = "ok";
	for (unsigned i = 0; i < o->keep_alive; i++) {
		if (i > 0 && o->wait_for && wait_for_file(o->wait_for, o->timeout_ms) < 0) {
			send_status = "gave up waiting for the --wait-for file";
			break;
		}
		int len = o->send_hex ? hex_decode(o->send_hex, req, REQ_MAX)
				      : build_request(o, req, REQ_MAX, st, o->keep_alive > 1);
		if (len < 0) {
			fprintf(stderr, "ke-client: cannot build the request (%s)\n", strerror(-len));
			ret = len == -EINVAL ? -EINVAL : -EIO;
			goto done;
		}
		if (send_request(gs, req, (size_t)len, o->slow_ms, reason, sizeof reason) < 0)
			send_status = reason;
		char status[128];
		size_t n = read_response(gs, resp, KE_MSG_RESPONSE_MAX, now_ms() + o->timeout_ms,
					 status, sizeof status);
		cJSON *r = cJSON_CreateObject();
		if (!r || !cJSON_AddItemToArray(responses, r)) {
			cJSON_Delete(r);
			ret = -ENOMEM;
			goto done;
		}
		ret = describe_response(o, resp, n, status, r, st, ip);
		if (ret < 0)
			goto done;
		if (strcmp(status, "complete"))
			break;
		answered++;
	}
	if (!cJSON_AddStringToObject(out, "send", send_status) ||
	    !cJSON_AddNumberToObject(out, "answered", answered)) {
		ret = -ENOMEM;
		goto done;
	}
	if (o->linger_ms >= 0 && answered > 0) {
		ret = hold(gs, o->linger_ms, false, out);
		if (ret < 0)
			goto done;
	}
	/* The first response's fields at the top level too, for simple scripts. */
	cJSON *first = cJSON_GetArrayItem(responses, 0);
	for (cJSON *c = first ? first->child : NULL; c; c = c->next) {
		cJSON *dup = cJSON_Duplicate(c, true);
		if (!dup || !cJSON_AddItemToObject(out, c->string, dup)) {
			cJSON_Delete(dup);
			ret = -ENOMEM;
			goto done;
		}
	}
	if (st->have_keys && o->kind == REQ_PLAIN) {
		size_t kl = aead_key_len(st->aead);
		uint8_t ctx_c2s[5] = { (uint8_t)(st->protocol >> 8), (uint8_t)st->protocol,
				       (uint8_t)(st->aead >> 8), (uint8_t)st->aead, 0 };
		uint8_t ctx_s2c[5] = { ctx_c2s[0], ctx_c2s[1], ctx_c2s[2], ctx_c2s[3], 1 };
		if (kl == 0 ||
		    gnutls_prf_rfc5705(gs, 30, "EXPORTER-network-time-security", 5,
				       (const char *)ctx_c2s, kl, (char *)st->c2s) < 0 ||
		    gnutls_prf_rfc5705(gs, 30, "EXPORTER-network-time-security", 5,
				       (const char *)ctx_s2c, kl, (char *)st->s2c) < 0)
			st->have_keys = false;
		st->key_len = kl;
	}
	gnutls_bye(gs, GNUTLS_SHUT_WR);
done:
	if (gs)
		gnutls_deinit(gs);
	if (cred)
		gnutls_certificate_free_credentials(cred);
	close(fd);
	free(req);
	free(resp);
	return ret;
}

/* ---- Saved state ---- */

static int save_state(const char *path, const struct ke_state *st)
{
	cJSON *j = cJSON_CreateObject();
	cJSON *cookies = j ? cJSON_AddArrayToObject(j, "cookies") : NULL;
	int ret = -ENOMEM;
	char *text = NULL;
	if (!cookies || !cJSON_AddNumberToObject(j, "protocol", st->protocol) ||
	    !cJSON_AddNumberToObject(j, "aead", st->aead) ||
	    add_hex(j, "c2s", st->c2s, st->key_len) || add_hex(j, "s2c", st->s2c, st->key_len) ||
	    !cJSON_AddStringToObject(j, "server", st->server) ||
	    !cJSON_AddNumberToObject(j, "port", st->port))
		goto out;
	for (size_t i = 0; i < st->n_cookies; i++) {
		char *h = hex_encode(st->cookies[i].data, st->cookies[i].len);
		cJSON *s = h ? cJSON_CreateString(h) : NULL;
		free(h);
		if (!s || !cJSON_AddItemToArray(cookies, s))
			goto out;
	}
	text = cJSON_Print(j);
	if (!text)
		goto out;
	FILE *f = fopen(path, "w");
	if (!f || fchmod(fileno(f), 0600) < 0 || fprintf(f, "%s\n", text) < 0) {
		ret = -errno;
		if (f)
			fclose(f);
		goto out;
	}
	ret = fclose(f) ? -errno : 0;
out:
	free(text);
	cJSON_Delete(j);
	return ret;
}

static int load_state(const char *path, struct ke_state *st)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	static char text[64 * 1024];
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	cJSON *j = cJSON_Parse(text);
	if (!j)
		return -EBADMSG;
	int ret = -EBADMSG;
	cJSON *aead = cJSON_GetObjectItemCaseSensitive(j, "aead");
	cJSON *proto = cJSON_GetObjectItemCaseSensitive(j, "protocol");
	cJSON *c2s = cJSON_GetObjectItemCaseSensitive(j, "c2s");
	cJSON *s2c = cJSON_GetObjectItemCaseSensitive(j, "s2c");
	cJSON *server = cJSON_GetObjectItemCaseSensitive(j, "server");
	cJSON *port = cJSON_GetObjectItemCaseSensitive(j, "port");
	cJSON *cookies = cJSON_GetObjectItemCaseSensitive(j, "cookies");
	if (!cJSON_IsNumber(aead) || !cJSON_IsNumber(proto) || !cJSON_IsString(c2s) ||
	    !cJSON_IsString(s2c) || !cJSON_IsString(server) || !cJSON_IsNumber(port) ||
	    !cJSON_IsArray(cookies))
		goto out;
	st->aead = (uint16_t)aead->valueint;
	st->protocol = (uint16_t)proto->valueint;
	st->port = (uint16_t)port->valueint;
	snprintf(st->server, sizeof st->server, "%s", server->valuestring);
	st->key_len = aead_key_len(st->aead);
	if (st->key_len == 0 ||
	    hex_decode(c2s->valuestring, st->c2s, sizeof st->c2s) != (int)st->key_len ||
	    hex_decode(s2c->valuestring, st->s2c, sizeof st->s2c) != (int)st->key_len)
		goto out;
	cJSON *c;
	st->n_cookies = 0;
	cJSON_ArrayForEach(c, cookies)
	{
		if (!cJSON_IsString(c) || st->n_cookies == KE_MSG_MAX_COOKIES)
			goto out;
		int len = hex_decode(c->valuestring, st->cookies[st->n_cookies].data,
				     KE_MSG_COOKIE_MAX);
		if (len <= 0)
			goto out;
		st->cookies[st->n_cookies++].len = (size_t)len;
	}
	st->have_keys = st->n_cookies > 0;
	ret = st->have_keys ? 0 : -EBADMSG;
out:
	cJSON_Delete(j);
	return ret;
}

/* ---- NTS-protected NTP ---- */

/* One NTS NTP request with cookie `which`, its reply verified; the result goes to out. Returns
 * 0 when the exchange ran (whatever the answer), negative errno on local failures. */
static int ntp_exchange(const struct ke_state *st, size_t which, int timeout_ms, cJSON *out)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *ai = NULL;
	char port[8];
	snprintf(port, sizeof port, "%u", st->port);
	if (getaddrinfo(st->server, port, &hints, &ai) != 0) {
		fprintf(stderr, "ke-client: cannot resolve %s\n", st->server);
		return -EHOSTUNREACH;
	}
	int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct aead *c2s = NULL, *s2c = NULL;
	int ret = fd < 0 ? -errno : 0;
	if (ret < 0 || (ret = set_timeout(fd, timeout_ms)) < 0)
		goto done;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		ret = -errno;
		goto done;
	}
	if ((ret = aead_new(&c2s, st->aead, st->c2s, st->key_len)) < 0 ||
	    (ret = aead_new(&s2c, st->aead, st->s2c, st->key_len)) < 0)
		goto done;
	uint8_t uid[NTS_NTP_UID_LEN], nonce[NTS_NTP_NONCE_LEN], pkt[2048], reply[2048];
	uint64_t xmt;
	if ((ret = random_bytes(uid, sizeof uid)) < 0 ||
	    (ret = random_bytes(nonce, sizeof nonce)) < 0 ||
	    (ret = random_bytes(&xmt, sizeof xmt)) < 0)
		goto done;
	struct nts_ntp_request_params p = {
		.hdr = { .leap = NTP_PACKET_LEAP_UNSYNC, .version = NTP_PACKET_VERSION,
			 .mode = NTP_PACKET_MODE_CLIENT, .transmit_ts = xmt },
		.uid = { uid, sizeof uid },
		.cookie = { st->cookies[which].data, st->cookies[which].len },
		.placeholders = 1,
		.nonce = { nonce, sizeof nonce },
	};
	int len = nts_ntp_build_request(&p, c2s, pkt, sizeof pkt);
	if (len < 0) {
		ret = len;
		goto done;
	}
	cJSON *ntp = cJSON_AddObjectToObject(out, "ntp");
	if (!ntp || !cJSON_AddStringToObject(ntp, "server", st->server) ||
	    !cJSON_AddNumberToObject(ntp, "port", st->port) ||
	    !cJSON_AddNumberToObject(ntp, "cookie_index", (double)which)) {
		ret = -ENOMEM;
		goto done;
	}
	if (send(fd, pkt, (size_t)len, 0) != len) {
		ret = -errno;
		goto done;
	}
	ssize_t n = recv(fd, reply, sizeof reply, 0);
	struct nts_ntp_response resp;
	int v = n > 0 ? nts_ntp_verify_response(reply, (size_t)n, xmt, uid, sizeof uid, s2c, &resp)
		      : -ETIMEDOUT;
	const char *result = v == NTS_NTP_RESPONSE_OK	 ? "authenticated"
			     : v == NTS_NTP_RESPONSE_NAK ? "nak"
			     : n > 0			 ? errno_name(v)
							 : (n == 0 ? "empty" : strerror(errno));
	if (!cJSON_AddStringToObject(ntp, "result", result) ||
	    !cJSON_AddBoolToObject(ntp, "authenticated", v == NTS_NTP_RESPONSE_OK) ||
	    !cJSON_AddBoolToObject(ntp, "nak", v == NTS_NTP_RESPONSE_NAK) ||
	    !cJSON_AddNumberToObject(ntp, "request_len", len) ||
	    !cJSON_AddNumberToObject(ntp, "reply_len", n > 0 ? (double)n : 0) ||
	    !(v >= 0 ? cJSON_AddNumberToObject(ntp, "stratum", resp.hdr.stratum)
		     : cJSON_AddNullToObject(ntp, "stratum")) ||
	    !cJSON_AddNumberToObject(ntp, "cookies", v == NTS_NTP_RESPONSE_OK ? (double)resp.n_cookies
									   : 0))
		ret = -ENOMEM;
done:
	aead_free(c2s);
	aead_free(s2c);
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return ret;
}

int main(int argc, char **argv)
{
	struct opts o;
	if (parse_args(argc, argv, &o) < 0) {
		usage(stderr);
		return 2;
	}
	/* A server that cuts the connection must show as a send error, not kill the client. */
	signal(SIGPIPE, SIG_IGN);
	if (gnutls_global_init() < 0)
		return 1;
	cJSON *out = cJSON_CreateObject();
	struct ke_state *st = calloc(1, sizeof *st);
	int ret = out && st ? 0 : -ENOMEM;
	if (ret == 0 && o.load) {
		ret = load_state(o.load, st);
		if (ret < 0)
			fprintf(stderr, "ke-client: %s: %s\n", o.load, strerror(-ret));
		else
			ret = ntp_exchange(st, st->n_cookies - 1, o.timeout_ms, out);
	} else if (ret == 0) {
		ret = key_exchange(&o, out, st);
		if (ret == 0 && o.ntp) {
			if (st->have_keys)
				ret = ntp_exchange(st, 0, o.timeout_ms, out);
			else if (!cJSON_AddNullToObject(out, "ntp"))
				ret = -ENOMEM;
		}
		if (ret == 0 && o.save) {
			ret = st->have_keys ? save_state(o.save, st) : -ENODATA;
			if (ret < 0)
				fprintf(stderr, "ke-client: cannot save %s: %s\n", o.save,
					strerror(-ret));
		}
	}
	char *text = out ? cJSON_PrintUnformatted(out) : NULL;
	if (text)
		printf("%s\n", text);
	else
		ret = -ENOMEM;
	if (ret < 0 && ret != -EINVAL)
		fprintf(stderr, "ke-client: %s\n", strerror(-ret));
	free(text);
	cJSON_Delete(out);
	if (st)
		gnutls_memset(st, 0, sizeof *st);
	free(st);
	gnutls_global_deinit();
	return ret == -EINVAL ? 2 : ret < 0 ? 1 : 0;
}
