/* One NTS pool exchange in one process, over real TLS 1.3 in memory: a client, the pool broker's
 * logic and a time source, ending in an authenticated NTS-protected NTP exchange between the
 * client and the time source with keys the time source never saw on the wire.
 *
 * It is the whole protocol of PROTOCOL.md §3–§5 driven through the library's sans-I/O modules,
 * without sockets or a loop: the demo prints it step by step, and make check runs it as a test.
 *
 * Usage: pool-flow CERTDIR [--quiet]
 * CERTDIR holds what test-keys/gen-cert.sh makes: ca.pem, pool.{pem,key,chain.pem} (DNS
 * pool.test) and time-a.{key,chain.pem} (IP 127.0.0.2). Exit status 0 only if every check held. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_msg.h"
#include "keyset.h"
#include "ntp_packet.h"
#include "nts_ntp.h"
#include "pool_proto.h"
#include "tls.h"

static bool quiet;
static int checks_failed;
static int checks_passed;

static void say(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *who, const char *fmt, ...)
{
	if (quiet)
		return;
	va_list ap;
	va_start(ap, fmt);
	printf("%-16s ", who);
	vprintf(fmt, ap);
	putchar('\n');
	va_end(ap);
}

/* A failed check is reported and counted; the flow stops at the first one because every later
 * step depends on the earlier ones. */
#define CHECK(cond, ...)                                                                   \
	do {                                                                                \
		if (cond) {                                                                 \
			checks_passed++;                                                    \
		} else {                                                                    \
			checks_failed++;                                                    \
			fprintf(stderr, "FAILED at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                       \
			fputc('\n', stderr);                                                \
			goto out;                                                           \
		}                                                                           \
	} while (0)

struct link {
	struct tls_session *client; /* the side that connected */
	struct tls_session *server;
};

/* Moves ciphertext both ways and steps both sessions until neither has anything to say. */
static int pump(struct link *l)
{
	for (int round = 0; round < 64; round++) {
		bool moved = false;
		struct tls_session *from[2] = { l->client, l->server };
		struct tls_session *to[2] = { l->server, l->client };
		for (int i = 0; i < 2; i++) {
			const uint8_t *p;
			size_t n;
			tls_output(from[i], &p, &n);
			if (n == 0)
				continue;
			int rc = tls_feed(to[i], p, n);
			if (rc < 0)
				return rc;
			tls_output_consume(from[i], n);
			moved = true;
		}
		int a = tls_step(l->client), b = tls_step(l->server);
		if (a < 0)
			return a;
		if (b < 0)
			return b;
		if (!moved && a == TLS_ESTABLISHED && b == TLS_ESTABLISHED)
			return 0;
		if (!moved && round > 0)
			return 0;
	}
	return -ETIMEDOUT;
}

/* Reads one whole NTS-KE message from s into buf; returns its length or a negative errno. */
static int read_message(struct tls_session *s, uint8_t *buf, size_t cap, size_t limit)
{
	size_t have = 0;
	for (;;) {
		int framed = ke_msg_frame(buf, have, limit);
		if (framed != 0)
			return framed;
		ssize_t n = tls_read(s, buf + have, cap - have);
		if (n <= 0)
			return n == 0 ? -ECONNRESET : (int)n;
		have += (size_t)n;
	}
}

static char *path_in(const char *dir, const char *file)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s", dir, file) < 0)
		return NULL;
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--quiet") != 0)) {
		fprintf(stderr, "usage: %s CERTDIR [--quiet]\n", argv[0]);
		return 2;
	}
	quiet = argc == 3;
	const char *dir = argv[1];
	char err[TLS_CREDS_ERR_MAX];
	char *ca = path_in(dir, "ca.pem"), *pool_chain = path_in(dir, "pool.chain.pem"),
	     *pool_key = path_in(dir, "pool.key"), *pool_pem = path_in(dir, "pool.pem"),
	     *ts_chain = path_in(dir, "time-a.chain.pem"), *ts_key = path_in(dir, "time-a.key");
	struct tls_creds *client_creds = NULL, *pool_srv_creds = NULL, *pool_cli_creds = NULL,
			 *ts_creds = NULL;
	struct link front = { 0 }, back = { 0 };
	struct keyset *ks = NULL;
	struct aead *cli_c2s = NULL, *cli_s2c = NULL, *srv_c2s = NULL, *srv_s2c = NULL;
	uint8_t msg[KE_MSG_RESPONSE_MAX], msg2[KE_MSG_RESPONSE_MAX];
	uint8_t c2s[KE_MSG_KEY_MAX], s2c[KE_MSG_KEY_MAX];
	uint8_t client_c2s[KE_MSG_KEY_MAX], client_s2c[KE_MSG_KEY_MAX];
	uint8_t opened_c2s[KE_MSG_KEY_MAX], opened_s2c[KE_MSG_KEY_MAX];
	struct ke_msg_request req, up_req;
	struct ke_msg_reject rej;
	struct ke_msg_response support, up_resp, cli_resp;
	int rc, len;
	const char *numbering = "iana";
	enum ke_numbering num = KE_NUMBERING_IANA;

	CHECK(ca && pool_chain && pool_key && pool_pem && ts_chain && ts_key, "out of memory");
	struct tls_client_options copt = { .no_system_trust = true, .ca_file = ca };
	rc = tls_creds_new_client(&client_creds, &copt, err, sizeof err);
	CHECK(rc == 0, "client credentials: %s", err);
	struct tls_server_options popt = { .cert_file = pool_chain, .key_file = pool_key };
	rc = tls_creds_new_server(&pool_srv_creds, &popt, err, sizeof err);
	CHECK(rc == 0, "pool server credentials: %s", err);
	struct tls_client_options pcopt = { .no_system_trust = true, .ca_file = ca,
					    .cert_file = pool_chain, .key_file = pool_key };
	rc = tls_creds_new_client(&pool_cli_creds, &pcopt, err, sizeof err);
	CHECK(rc == 0, "pool client credentials: %s", err);
	const char *pinned[] = { pool_pem };
	struct tls_server_options topt = { .cert_file = ts_chain, .key_file = ts_key,
					   .pool_cert_files = pinned, .n_pool_cert_files = 1 };
	rc = tls_creds_new_server(&ts_creds, &topt, err, sizeof err);
	CHECK(rc == 0, "time source credentials: %s", err);
	say("[setup]", "test CA in %s; pool.test is the broker, 127.0.0.2 the time source,", dir);
	say("", "which pins the pool's certificate (authorized-pool-server-certificates)");

	rc = keyset_new_random(&ks, (uint64_t)time(NULL));
	CHECK(rc == 0, "keyset: %d", rc);
	say("[time source]", "cookie keyset ready, primary key id %u", keyset_primary_id(ks));

	/* The broker's upstream connection: TLS 1.3 with the pool's client certificate. */
	CHECK(tls_session_new_client(&back.client, pool_cli_creds, "127.0.0.2") == 0, "session");
	CHECK(tls_session_new_server(&back.server, ts_creds) == 0, "session");
	rc = pump(&back);
	CHECK(rc == 0 && tls_state(back.server) == TLS_ESTABLISHED, "upstream handshake: %s",
	      tls_reason(back.server));
	CHECK(tls_peer_is_authorised_pool(back.server), "the pool certificate is not recognised");
	say("[pool->source]", "TLS 1.3, ALPN ntske/1, server name 127.0.0.2 verified by IP SAN;");
	say("", "the time source recognises the pool's pinned client certificate");

	/* Support probe: which protocols and algorithms does the upstream have? */
	len = ke_msg_build_support_request(msg, sizeof msg, num, NULL, true, true, true);
	CHECK(len > 0, "support request: %d", len);
	CHECK(tls_write(back.client, msg, (size_t)len) == 0 && pump(&back) == 0, "send");
	len = read_message(back.server, msg, sizeof msg, KE_MSG_REQUEST_MAX);
	CHECK(len > 0, "time source read: %d", len);
	rc = ke_msg_parse_request(msg, (size_t)len, num, &up_req, &rej);
	CHECK(rc == 0 && up_req.kind == KE_MSG_REQUEST_SUPPORT, "support request refused: %s",
	      rc ? rej.reason : "wrong kind");
	struct pool_proto_verdict verdict;
	pool_proto_authorise(NULL, tls_peer_is_authorised_pool(back.server), &up_req, &verdict);
	CHECK(verdict.allowed && verdict.identity == POOL_IDENTITY_CERTIFICATE && verdict.keep_alive,
	      "support request not authorised: %s", verdict.reason);
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	static const struct ke_msg_algorithm algs[] = { { AEAD_AES_SIV_CMAC_256, 32 },
							{ AEAD_AES_SIV_CMAC_512, 64 } };
	struct ke_msg_support sup = { .protocols = up_req.want_protocols, .protocol_ids = protocols,
				      .n_protocols = 1, .algorithms = up_req.want_algorithms,
				      .algs = algs, .n_algs = 2, .keep_alive = up_req.keep_alive };
	len = ke_msg_build_support_response(msg, sizeof msg, num, &sup);
	CHECK(len > 0 && tls_write(back.server, msg, (size_t)len) == 0 && pump(&back) == 0, "reply");
	len = read_message(back.client, msg, sizeof msg, KE_MSG_RESPONSE_MAX);
	CHECK(len > 0, "pool read: %d", len);
	rc = ke_msg_parse_response(msg, (size_t)len, num, KE_MSG_REQUEST_SUPPORT, &support);
	CHECK(rc == 0 && support.keep_alive, "support response: %d", rc);
	say("[pool->source]", "Support request (%s numbering): protocols [%u], algorithms "
	    "[(%u,%u),(%u,%u)], Keep Alive honoured", numbering, support.supported_protocols[0],
	    support.supported_algorithms[0].id, support.supported_algorithms[0].key_len,
	    support.supported_algorithms[1].id, support.supported_algorithms[1].key_len);

	/* A client arrives at the pool. */
	CHECK(tls_session_new_client(&front.client, client_creds, "pool.test") == 0, "session");
	CHECK(tls_session_new_server(&front.server, pool_srv_creds) == 0, "session");
	rc = pump(&front);
	CHECK(rc == 0 && tls_state(front.server) == TLS_ESTABLISHED, "client handshake: %s",
	      tls_reason(front.client));
	CHECK(!tls_peer_is_authorised_pool(front.server), "an anonymous client is not a pool");
	say("[client->pool]", "TLS 1.3 with pool.test, ALPN ntske/1, anonymous client");

	static const uint16_t want_aeads[] = { AEAD_AES_SIV_CMAC_512, AEAD_AES_SIV_CMAC_256 };
	const char *deny[] = { "time-b.test" };
	len = ke_msg_build_request(msg, sizeof msg, num, protocols, 1, want_aeads, 2, deny, 1);
	CHECK(len > 0 && tls_write(front.client, msg, (size_t)len) == 0 && pump(&front) == 0,
	      "client request");
	len = read_message(front.server, msg, sizeof msg, KE_MSG_REQUEST_MAX);
	CHECK(len > 0, "pool read: %d", len);
	rc = ke_msg_parse_request(msg, (size_t)len, num, &req, &rej);
	CHECK(rc == 0 && req.kind == KE_MSG_REQUEST_PLAIN, "client request refused: %s",
	      rc ? rej.reason : "wrong kind");
	CHECK(ke_msg_request_denies(&req, "TIME-B.test"), "deny names compare case-insensitively");
	say("[client->pool]", "request: NTPv4, AEAD [%u, %u], NTP Server Deny \"%s\" (%d bytes)",
	    req.aeads[0], req.aeads[1], req.deny[0].name, len);

	/* Negotiate against the upstream's cached lists, in the client's order of preference. */
	uint16_t aead = 0;
	size_t key_len = 0;
	for (size_t i = 0; i < req.n_aeads && !aead; i++)
		for (size_t j = 0; j < support.n_supported_algorithms; j++)
			if (support.supported_algorithms[j].id == req.aeads[i]) {
				aead = req.aeads[i];
				key_len = support.supported_algorithms[j].key_len;
				break;
			}
	CHECK(aead == AEAD_AES_SIV_CMAC_512 && key_len == 64, "negotiated AEAD %u", aead);
	rc = tls_export_nts_keys(front.server, KE_MSG_PROTOCOL_NTPV4, aead, key_len, c2s, s2c);
	CHECK(rc == 0, "export: %d", rc);
	say("[pool]", "chose NTPv4 + AEAD %u; exported C2S and S2C (%zu bytes each) from the "
	    "client's TLS session", aead, key_len);

	len = ke_msg_build_fixed_key_request(msg, sizeof msg, num, NULL, c2s, s2c, key_len,
					     KE_MSG_PROTOCOL_NTPV4, aead, true);
	gnutls_memset(c2s, 0, sizeof c2s);
	gnutls_memset(s2c, 0, sizeof s2c);
	CHECK(len > 0 && tls_write(back.client, msg, (size_t)len) == 0 && pump(&back) == 0,
	      "fixed key request");
	gnutls_memset(msg, 0, (size_t)len);
	say("[pool->source]", "Fixed Key Request on the kept-alive connection (%d bytes)", len);

	/* The time source: seal eight cookies around the keys it was given. */
	len = read_message(back.server, msg, sizeof msg, KE_MSG_REQUEST_MAX);
	CHECK(len > 0, "time source read: %d", len);
	rc = ke_msg_parse_request(msg, (size_t)len, num, &up_req, &rej);
	gnutls_memset(msg, 0, (size_t)len);
	CHECK(rc == 0 && up_req.kind == KE_MSG_REQUEST_FIXED_KEY, "fixed key refused: %s",
	      rc ? rej.reason : "wrong kind");
	pool_proto_authorise(NULL, tls_peer_is_authorised_pool(back.server), &up_req, &verdict);
	CHECK(verdict.allowed && verdict.identity == POOL_IDENTITY_CERTIFICATE,
	      "fixed key request not authorised: %s", verdict.reason);
	struct ke_msg_cookie cookies[KE_MSG_MAX_COOKIES];
	for (size_t i = 0; i < KE_MSG_MAX_COOKIES; i++) {
		rc = keyset_seal_cookie_random(ks, up_req.aeads[0], up_req.fixed_c2s,
					       up_req.fixed_s2c, up_req.fixed_key_len,
					       cookies[i].data, sizeof cookies[i].data);
		CHECK(rc > 0, "seal: %d", rc);
		cookies[i].len = (size_t)rc;
	}
	ke_msg_request_wipe(&up_req);
	struct ke_msg_success ok = { .protocol = KE_MSG_PROTOCOL_NTPV4, .aead = aead,
				     .cookies = cookies, .n_cookies = KE_MSG_MAX_COOKIES,
				     .port = 123, .server = NULL, .keep_alive = true };
	len = ke_msg_build_success(msg, sizeof msg, num, &ok);
	CHECK(len > 0 && tls_write(back.server, msg, (size_t)len) == 0 && pump(&back) == 0, "reply");
	say("[source->pool]", "8 cookies of %zu bytes sealed with key id %u around the pool's keys",
	    cookies[0].len, keyset_primary_id(ks));

	len = read_message(back.client, msg, sizeof msg, KE_MSG_RESPONSE_MAX);
	CHECK(len > 0, "pool read: %d", len);
	rc = ke_msg_parse_response(msg, (size_t)len, num, KE_MSG_REQUEST_FIXED_KEY, &up_resp);
	CHECK(rc == 0 && up_resp.n_cookies == KE_MSG_MAX_COOKIES, "upstream response: %d", rc);

	/* Relay from parsed fields only: the upstream's name, as configured, tells the client where
	 * to send NTP; Keep Alive stays between pool and source. */
	struct ke_msg_success relay = { .protocol = up_resp.protocol, .aead = up_resp.aead,
					.cookies = up_resp.cookies,
					.n_cookies = up_resp.n_cookies,
					.port = up_resp.has_port ? up_resp.port : 0,
					.server = up_resp.has_server ? up_resp.server.name
								     : "127.0.0.2" };
	len = ke_msg_build_success(msg2, sizeof msg2, num, &relay);
	CHECK(len > 0 && tls_write(front.server, msg2, (size_t)len) == 0, "relay");
	CHECK(tls_close(front.server) == 0 && pump(&front) == 0, "close");
	say("[pool->client]", "response built from parsed fields: NTPv4, AEAD %u, %zu cookies, "
	    "server %s (%d bytes), then close_notify", relay.aead, relay.n_cookies, relay.server,
	    len);

	len = read_message(front.client, msg, sizeof msg, KE_MSG_RESPONSE_MAX);
	CHECK(len > 0, "client read: %d", len);
	rc = ke_msg_parse_response(msg, (size_t)len, num, KE_MSG_REQUEST_PLAIN, &cli_resp);
	CHECK(rc == 0 && cli_resp.has_aead && cli_resp.n_cookies == 8 && cli_resp.has_server,
	      "client response: %d", rc);
	CHECK(!cli_resp.keep_alive, "Keep Alive must not reach the client");
	rc = tls_export_nts_keys(front.client, cli_resp.protocol, cli_resp.aead, key_len,
				 client_c2s, client_s2c);
	CHECK(rc == 0, "client export: %d", rc);
	say("[client]", "8 cookies; NTP goes to %s; C2S/S2C exported from its own TLS session",
	    cli_resp.server.name);

	/* NTS-protected NTP, client straight to the time source. */
	CHECK(aead_new(&cli_c2s, cli_resp.aead, client_c2s, key_len) == 0, "aead");
	CHECK(aead_new(&cli_s2c, cli_resp.aead, client_s2c, key_len) == 0, "aead");
	uint8_t uid[NTS_NTP_UID_LEN], nonce[NTS_NTP_NONCE_LEN], pkt[2048], reply[2048];
	uint64_t xmt;
	CHECK(gnutls_rnd(GNUTLS_RND_NONCE, uid, sizeof uid) == 0, "rnd");
	CHECK(gnutls_rnd(GNUTLS_RND_NONCE, nonce, sizeof nonce) == 0, "rnd");
	CHECK(gnutls_rnd(GNUTLS_RND_NONCE, &xmt, sizeof xmt) == 0, "rnd");
	struct nts_ntp_request_params np = {
		.hdr = { .leap = 3, .version = 4, .mode = 3 },
		.uid = { uid, sizeof uid },
		.cookie = { cli_resp.cookies[0].data, cli_resp.cookies[0].len },
		.placeholders = 7,
		.nonce = { nonce, sizeof nonce },
	};
	np.hdr.transmit_ts = xmt;
	len = nts_ntp_build_request(&np, cli_c2s, pkt, sizeof pkt);
	CHECK(len > 0, "NTS request: %d", len);
	say("[client->source]", "NTP request, %d bytes: UID, 1 cookie, 7 placeholders, "
	    "authenticator (C2S)", len);

	struct nts_ntp_request sreq;
	rc = nts_ntp_parse_request(pkt, (size_t)len, &sreq);
	CHECK(rc == 0, "server parse: %d", rc);
	uint16_t cookie_aead;
	size_t cookie_key_len;
	rc = keyset_open_cookie(ks, sreq.cookie.data, sreq.cookie.len, &cookie_aead, opened_c2s,
				opened_s2c, &cookie_key_len);
	CHECK(rc == 0 && cookie_aead == cli_resp.aead && cookie_key_len == key_len,
	      "cookie: %d", rc);
	CHECK(memcmp(opened_c2s, client_c2s, key_len) == 0 &&
		      memcmp(opened_s2c, client_s2c, key_len) == 0,
	      "the cookie must carry the keys of the client's own session");
	CHECK(aead_new(&srv_c2s, cookie_aead, opened_c2s, key_len) == 0, "aead");
	CHECK(aead_new(&srv_s2c, cookie_aead, opened_s2c, key_len) == 0, "aead");
	rc = nts_ntp_verify_request(&sreq, srv_c2s);
	CHECK(rc == 0, "authenticator: %d", rc);
	say("[source]", "cookie opened: AEAD %u, its C2S and S2C are the client's own; "
	    "authenticator valid", cookie_aead);

	struct nts_ntp_span fresh[KE_MSG_MAX_COOKIES];
	uint8_t fresh_buf[KE_MSG_MAX_COOKIES][KEYSET_COOKIE_MAX_LEN];
	unsigned wanted = nts_ntp_cookies_wanted(&sreq);
	for (unsigned i = 0; i < wanted; i++) {
		rc = keyset_seal_cookie_random(ks, cookie_aead, opened_c2s, opened_s2c, key_len,
					       fresh_buf[i], sizeof fresh_buf[i]);
		CHECK(rc > 0, "seal: %d", rc);
		fresh[i] = (struct nts_ntp_span){ fresh_buf[i], (size_t)rc };
	}
	uint8_t snonce[NTS_NTP_NONCE_LEN];
	CHECK(gnutls_rnd(GNUTLS_RND_NONCE, snonce, sizeof snonce) == 0, "rnd");
	struct nts_ntp_response_params rp = {
		.hdr = { .leap = 0, .version = 4, .stratum = 1, .refid = 0x4c4f434cu /* LOCL */ },
		.cookies = fresh, .n_cookies = wanted, .nonce = { snonce, sizeof snonce },
	};
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	rp.hdr.receive_ts = rp.hdr.transmit_ts = ntp_packet_ts_from_timespec(&now);
	size_t sent = 0;
	int rlen = nts_ntp_build_response(&sreq, &rp, srv_s2c, reply, sizeof reply, &sent);
	CHECK(rlen > 0 && rlen <= len, "response %d bytes for a %d-byte request", rlen, len);
	say("[source->client]", "NTP response, %d bytes (never longer than the request): "
	    "%zu fresh cookies inside the S2C-sealed part", rlen, sent);

	struct nts_ntp_response cres;
	rc = nts_ntp_verify_response(reply, (size_t)rlen, xmt, uid, sizeof uid, cli_s2c, &cres);
	CHECK(rc == NTS_NTP_RESPONSE_OK && cres.n_cookies == sent, "client verify: %d", rc);
	say("[client]", "response authenticated with S2C, UID and origin match; %zu new cookies; "
	    "stratum %u", cres.n_cookies, cres.hdr.stratum);

	/* A forged request: the time source must refuse it with a NAK the client recognises. */
	pkt[sreq.auth_offset + 8 + 2] ^= 0x01;
	rc = nts_ntp_parse_request(pkt, (size_t)len, &sreq);
	CHECK(rc == 0, "shape unchanged: %d", rc);
	CHECK(nts_ntp_verify_request(&sreq, srv_c2s) < 0, "a forged authenticator must fail");
	struct ntp_packet_header nak_hdr = { .version = 4 };
	rlen = nts_ntp_build_nak(&sreq, &nak_hdr, reply, sizeof reply);
	CHECK(rlen > 0, "nak: %d", rlen);
	rc = nts_ntp_verify_response(reply, (size_t)rlen, xmt, uid, sizeof uid, cli_s2c, &cres);
	CHECK(rc == NTS_NTP_RESPONSE_NAK, "NAK recognised: %d", rc);
	say("[forgery]", "a request with one flipped authenticator bit gets an NTS NAK (kiss NTSN)");

out:
	gnutls_memset(client_c2s, 0, sizeof client_c2s);
	gnutls_memset(client_s2c, 0, sizeof client_s2c);
	gnutls_memset(opened_c2s, 0, sizeof opened_c2s);
	gnutls_memset(opened_s2c, 0, sizeof opened_s2c);
	aead_free(cli_c2s);
	aead_free(cli_s2c);
	aead_free(srv_c2s);
	aead_free(srv_s2c);
	keyset_unref(ks);
	tls_free(front.client);
	tls_free(front.server);
	tls_free(back.client);
	tls_free(back.server);
	tls_creds_unref(client_creds);
	tls_creds_unref(pool_srv_creds);
	tls_creds_unref(pool_cli_creds);
	tls_creds_unref(ts_creds);
	free(ca);
	free(pool_chain);
	free(pool_key);
	free(pool_pem);
	free(ts_chain);
	free(ts_key);
	if (!quiet || checks_failed)
		printf("%s: %d checks passed, %d failed\n", checks_failed ? "FAIL" : "OK",
		       checks_passed, checks_failed);
	return checks_failed ? 1 : 0;
}
