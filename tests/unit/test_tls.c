/* TLS in memory: two sessions back to back through their byte queues, certificates made by
 * test-keys/gen-cert.sh (and, for the odd ones, GnuTLS's x509 API) in a fresh directory per test.
 * A "raw" GnuTLS peer with its own priority string and ALPN plays the misbehaving side. */
#include "tls.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "testutil.h"
#include "tls_testutil.h"

static char *dir;

static void setup(void)
{
	dir = tu_tempdir();
	tu_gen_cert(dir, "server --dns ntp.test --ip 127.0.0.2 --ip ::1");
	tu_gen_cert(dir, "pool --dns pool.test");
	tu_gen_cert(dir, "other --dns other.test");
}

static void teardown(void)
{
	tu_rmtree(dir);
	free(dir);
}

TestSuite(tls, .init = setup, .fini = teardown);

static const char *const pool_pin[] = { "pool.pem" };

static struct tls_creds *server_creds(void)
{
	return tu_tls_server_creds(dir, "server", pool_pin, 1);
}

/* Client credentials trusting ca.pem only, presenting NAME.chain.pem when name is not NULL. */
static struct tls_creds *client_creds(const char *name)
{
	return tu_tls_client_creds(dir, name);
}

static void pump(struct tls_session *from, struct tls_session *to)
{
	struct tu_tls_end f = tu_tls_session_end(from), t = tu_tls_session_end(to);
	tu_tls_move(&f, &t);
}

/* Runs both handshakes to their end; *rc and *rs get tls_step's last results. */
static void handshake(struct tls_session *c, struct tls_session *s, int *rc, int *rs)
{
	*rc = *rs = TLS_HANDSHAKING;
	for (int i = 0; i < 20 && (*rc == TLS_HANDSHAKING || *rs == TLS_HANDSHAKING); i++) {
		*rc = tls_step(c);
		pump(c, s);
		*rs = tls_step(s);
		pump(s, c);
	}
}

struct pair {
	struct tls_creds *cc, *sc;
	struct tls_session *c, *s;
	int rc, rs;
};

static void pair_run(struct pair *p, struct tls_creds *cc, struct tls_creds *sc, const char *name)
{
	p->cc = cc;
	p->sc = sc;
	cr_assert_eq(tls_session_new_client(&p->c, cc, name), 0);
	cr_assert_eq(tls_session_new_server(&p->s, sc), 0);
	/* The sessions hold their own references. */
	tls_creds_unref(cc);
	tls_creds_unref(sc);
	handshake(p->c, p->s, &p->rc, &p->rs);
}

static void pair_free(struct pair *p)
{
	tls_free(p->c);
	tls_free(p->s);
}

Test(tls, handshake_and_key_export)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "ntp.test");
	cr_assert_eq(p.rc, TLS_ESTABLISHED, "client: %d %s", p.rc, tls_reason(p.c));
	cr_assert_eq(p.rs, TLS_ESTABLISHED, "server: %d %s", p.rs, tls_reason(p.s));
	cr_assert_str_empty(tls_reason(p.c));

	static const struct { uint16_t proto, aead; size_t len; } cases[] = { { 0, 15, 32 },
									     { 0, 17, 64 } };
	uint8_t first_c2s[64];
	for (size_t i = 0; i < 2; i++) {
		uint8_t cc2s[64], cs2c[64], sc2s[64], ss2c[64];
		size_t len = cases[i].len;
		cr_assert_eq(tls_export_nts_keys(p.c, cases[i].proto, cases[i].aead, len, cc2s, cs2c), 0);
		cr_assert_eq(tls_export_nts_keys(p.s, cases[i].proto, cases[i].aead, len, sc2s, ss2c), 0);
		cr_assert_arr_eq(cc2s, sc2s, len);
		cr_assert_arr_eq(cs2c, ss2c, len);
		cr_assert_arr_neq(cc2s, cs2c, len);
		if (i == 0)
			memcpy(first_c2s, cc2s, 32);
		else
			cr_assert_arr_neq(first_c2s, cc2s, 32, "the AEAD id must change the keys");
	}
	uint8_t k1[32], k2[32];
	cr_assert_eq(tls_export_nts_keys(p.c, 0, 15, 0, k1, k2), -EINVAL);
	pair_free(&p);
}

Test(tls, export_before_handshake_refused)
{
	struct tls_creds *cc = client_creds(NULL);
	struct tls_session *c = NULL;
	cr_assert_eq(tls_session_new_client(&c, cc, "ntp.test"), 0);
	uint8_t k1[32], k2[32];
	memset(k1, 0xaa, sizeof(k1));
	cr_assert_eq(tls_export_nts_keys(c, 0, 15, 32, k1, k2), -ENOTCONN);
	cr_assert_eq(k1[0], 0, "buffers are zeroed on failure");
	cr_assert_eq(tls_write(c, "x", 1), -ENOTCONN);
	char buf[4];
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), -ENOTCONN);
	tls_free(c);
	tls_creds_unref(cc);
}

Test(tls, app_data_round_trip_and_close)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "ntp.test");
	cr_assert_eq(p.rs, TLS_ESTABLISHED);

	static const char req[] = "request";
	cr_assert_eq(tls_write(p.c, req, sizeof(req)), 0);
	pump(p.c, p.s);
	char buf[70000];
	cr_assert_eq(tls_read(p.s, buf, sizeof(buf)), (ssize_t)sizeof(req));
	cr_assert_str_eq(buf, req);
	cr_assert_eq(tls_read(p.s, buf, sizeof(buf)), -EAGAIN);

	/* A 64 KiB response in one tls_write, then close_notify. */
	size_t big = 65536;
	uint8_t *resp = malloc(big);
	struct tu_rng rng;
	tu_rng_seed(&rng, 42);
	tu_rng_fill(&rng, resp, big);
	cr_assert_eq(tls_write(p.s, resp, big), 0);
	cr_assert_eq(tls_close(p.s), 0);
	cr_assert_eq(tls_state(p.s), TLS_CLOSED);
	cr_assert_eq(tls_write(p.s, "x", 1), -EPIPE);
	pump(p.s, p.c);
	size_t got = 0;
	for (;;) {
		ssize_t n = tls_read(p.c, buf + got, sizeof(buf) - got);
		cr_assert(n >= 0, "read: %zd %s", n, tls_reason(p.c));
		if (n == 0)
			break;
		got += (size_t)n;
	}
	cr_assert_eq(got, big);
	cr_assert_arr_eq(buf, resp, big);
	cr_assert_eq(tls_state(p.c), TLS_CLOSED);
	cr_assert_eq(tls_read(p.c, buf, sizeof(buf)), 0);
	free(resp);
	pair_free(&p);
}

Test(tls, ip_literal_verified_against_ip_san)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "127.0.0.2");
	cr_assert_eq(p.rc, TLS_ESTABLISHED, "%s", tls_reason(p.c));
	cr_assert_eq(p.rs, TLS_ESTABLISHED);
	pair_free(&p);

	pair_run(&p, client_creds(NULL), server_creds(), "::1");
	cr_assert_eq(p.rc, TLS_ESTABLISHED, "%s", tls_reason(p.c));
	pair_free(&p);
}

Test(tls, dns_name_mismatch_refused)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "wrong.test");
	cr_assert_eq(p.rc, -EACCES, "%d %s", p.rc, tls_reason(p.c));
	cr_assert(strstr(tls_reason(p.c), "certificate"), "%s", tls_reason(p.c));
	cr_assert_lt(p.rs, 0, "the server sees the client's alert");
	cr_assert_eq(tls_state(p.c), TLS_FAILED);
	pair_free(&p);
}

Test(tls, ip_literal_mismatch_refused)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "127.0.0.3");
	cr_assert_eq(p.rc, -EACCES, "%d %s", p.rc, tls_reason(p.c));
	pair_free(&p);
}

Test(tls, ip_literal_not_matched_against_dns_san)
{
	/* The address written as a DNS SAN (and as CN) must not stand in for an IP SAN. */
	tu_gen_cert(dir, "127.0.0.2 --dns 127.0.0.2");
	struct pair p;
	pair_run(&p, client_creds(NULL), tu_tls_server_creds(dir, "127.0.0.2", NULL, 0), "127.0.0.2");
	cr_assert_eq(p.rc, -EACCES, "%d %s", p.rc, tls_reason(p.c));
	pair_free(&p);
}

Test(tls, bad_server_name_rejected)
{
	struct tls_creds *cc = client_creds(NULL), *sc = server_creds();
	struct tls_session *s = NULL;
	cr_assert_eq(tls_session_new_client(&s, cc, "bad name"), -EINVAL);
	cr_assert_eq(tls_session_new_client(&s, cc, ""), -EINVAL);
	cr_assert_eq(tls_session_new_client(&s, sc, "ntp.test"), -EINVAL, "server creds");
	cr_assert_eq(tls_session_new_server(&s, cc), -EINVAL, "client creds");
	tls_creds_unref(cc);
	tls_creds_unref(sc);
}

/* Writes a certificate for ntp.test valid in [nb, na], signed by ca.pem/ca.key or self-signed,
 * as NAME.chain.pem and NAME.key in dir. */
static void make_cert(const char *name, time_t nb, time_t na, bool self_signed)
{
	gnutls_x509_privkey_t key, ca_key = NULL;
	gnutls_x509_crt_t crt, ca = NULL;
	cr_assert_eq(gnutls_x509_privkey_init(&key), 0);
	cr_assert_eq(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
						  GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0), 0);
	cr_assert_eq(gnutls_x509_crt_init(&crt), 0);
	cr_assert_eq(gnutls_x509_crt_set_version(crt, 3), 0);
	cr_assert_eq(gnutls_x509_crt_set_key(crt, key), 0);
	const uint8_t serial[] = { 0x42, 0x01 };
	cr_assert_eq(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)), 0);
	cr_assert_eq(gnutls_x509_crt_set_dn(crt, "CN=ntp.test", NULL), 0);
	cr_assert_eq(gnutls_x509_crt_set_activation_time(crt, nb), 0);
	cr_assert_eq(gnutls_x509_crt_set_expiration_time(crt, na), 0);
	cr_assert_eq(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "ntp.test", 8,
							  GNUTLS_FSAN_SET), 0);
	cr_assert_eq(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0), 0);
	cr_assert_eq(gnutls_x509_crt_set_basic_constraints(crt, 0, -1), 0);
	if (self_signed) {
		cr_assert_eq(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), 0);
	} else {
		gnutls_datum_t d;
		char *p = tu_path(dir, "ca.pem");
		cr_assert_eq(gnutls_load_file(p, &d), 0);
		cr_assert_eq(gnutls_x509_crt_init(&ca), 0);
		cr_assert_eq(gnutls_x509_crt_import(ca, &d, GNUTLS_X509_FMT_PEM), 0);
		gnutls_free(d.data);
		free(p);
		p = tu_path(dir, "ca.key");
		cr_assert_eq(gnutls_load_file(p, &d), 0);
		cr_assert_eq(gnutls_x509_privkey_init(&ca_key), 0);
		cr_assert_eq(gnutls_x509_privkey_import(ca_key, &d, GNUTLS_X509_FMT_PEM), 0);
		gnutls_free(d.data);
		free(p);
		cr_assert_eq(gnutls_x509_crt_sign2(crt, ca, ca_key, GNUTLS_DIG_SHA256, 0), 0);
	}
	char file[64];
	gnutls_datum_t out;
	snprintf(file, sizeof(file), "%s/%s.chain.pem", dir, name);
	FILE *f = fopen(file, "w");
	cr_assert(f);
	cr_assert_eq(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out), 0);
	fwrite(out.data, 1, out.size, f);
	gnutls_free(out.data);
	fclose(f);
	snprintf(file, sizeof(file), "%s/%s.key", dir, name);
	f = fopen(file, "w");
	cr_assert(f);
	cr_assert_eq(fchmod(fileno(f), 0600), 0, "private keys are not for every user");
	cr_assert_eq(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out), 0);
	fwrite(out.data, 1, out.size, f);
	gnutls_free(out.data);
	fclose(f);
	gnutls_x509_crt_deinit(crt);
	gnutls_x509_privkey_deinit(key);
	if (ca) {
		gnutls_x509_crt_deinit(ca);
		gnutls_x509_privkey_deinit(ca_key);
	}
}

/* A private key every user may read is refused, naming the fix; group access is allowed (the
 * ssl-cert group of Debian). */
Test(tls, private_key_readable_by_every_user_refused)
{
	time_t now = time(NULL);
	make_cert("open", now - 86400, now + 86400, false);
	char *key = tu_path(dir, "open.key"), *chain = tu_path(dir, "open.chain.pem");
	struct tls_server_options opt = { .cert_file = chain, .key_file = key };
	struct tls_creds *c = NULL;
	char err[512];
	cr_assert_eq(chmod(key, 0644), 0);
	cr_assert_eq(tls_creds_new_server(&c, &opt, err, sizeof err), -EPERM);
	cr_assert(strstr(err, "chmod o-rwx") && strstr(err, key), "%s", err);
	cr_assert(strstr(err, "allow-world-readable-private-key"), "names the override: %s", err);
	/* The operator's explicit override: loaded, with a warning. */
	opt.allow_world_readable_key = true;
	cr_assert_eq(tls_creds_new_server(&c, &opt, err, sizeof err), 0, "%s", err);
	tls_creds_unref(c);
	struct tls_client_options co = { .no_system_trust = true, .ca_file = chain,
					 .cert_file = chain, .key_file = key };
	int rc = tls_creds_new_client(&c, &co, err, sizeof err);
	cr_assert_eq(rc, -EPERM, "the client side checks too: %d %s", rc, err);
	co.allow_world_readable_key = true;
	cr_assert_eq(tls_creds_new_client(&c, &co, err, sizeof err), 0, "%s", err);
	tls_creds_unref(c);
	opt.allow_world_readable_key = false;
	cr_assert_eq(chmod(key, 0640), 0);
	cr_assert_eq(tls_creds_new_server(&c, &opt, err, sizeof err), 0, "%s", err);
	tls_creds_unref(c);
	free(key);
	free(chain);
}

Test(tls, self_signed_server_refused)
{
	time_t now = time(NULL);
	make_cert("self", now - 86400, now + 86400, true);
	struct pair p;
	pair_run(&p, client_creds(NULL), tu_tls_server_creds(dir, "self", NULL, 0), "ntp.test");
	cr_assert_eq(p.rc, -EACCES, "%d %s", p.rc, tls_reason(p.c));
	pair_free(&p);
}

Test(tls, expired_server_refused)
{
	time_t now = time(NULL);
	make_cert("expired", now - 10 * 86400, now - 86400, false);
	struct pair p;
	pair_run(&p, client_creds(NULL), tu_tls_server_creds(dir, "expired", NULL, 0), "ntp.test");
	cr_assert_eq(p.rc, -EACCES, "%d %s", p.rc, tls_reason(p.c));
	cr_assert(strstr(tls_reason(p.c), "expired"), "%s", tls_reason(p.c));
	pair_free(&p);

	/* The same construction inside its validity period is accepted, so the dates decided. */
	make_cert("current", now - 86400, now + 86400, false);
	pair_run(&p, client_creds(NULL), tu_tls_server_creds(dir, "current", NULL, 0), "ntp.test");
	cr_assert_eq(p.rc, TLS_ESTABLISHED, "%d %s", p.rc, tls_reason(p.c));
	pair_free(&p);
}

Test(tls, pinned_pool_certificate_authorised)
{
	struct pair p;
	pair_run(&p, client_creds("pool"), server_creds(), "ntp.test");
	cr_assert_eq(p.rc, TLS_ESTABLISHED, "%s", tls_reason(p.c));
	cr_assert_eq(p.rs, TLS_ESTABLISHED, "%s", tls_reason(p.s));
	cr_assert(tls_peer_is_authorised_pool(p.s));
	cr_assert_not(tls_peer_is_authorised_pool(p.c));
	pair_free(&p);
}

Test(tls, other_certificate_not_authorised)
{
	struct pair p;
	pair_run(&p, client_creds("other"), server_creds(), "ntp.test");
	cr_assert_eq(p.rs, TLS_ESTABLISHED, "%s", tls_reason(p.s));
	cr_assert_eq(p.rc, TLS_ESTABLISHED);
	cr_assert_not(tls_peer_is_authorised_pool(p.s));
	pair_free(&p);
}

Test(tls, anonymous_client_not_authorised)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "ntp.test");
	cr_assert_eq(p.rs, TLS_ESTABLISHED, "%s", tls_reason(p.s));
	cr_assert_not(tls_peer_is_authorised_pool(p.s));
	pair_free(&p);
}

Test(tls, system_trust_plus_ca_file)
{
	char *ca = tu_path(dir, "ca.pem");
	struct tls_client_options o = { .ca_file = ca };
	char err[TLS_CREDS_ERR_MAX] = "";
	struct tls_creds *cc = NULL;
	cr_assert_eq(tls_creds_new_client(&cc, &o, err, sizeof(err)), 0, "%s", err);
	struct pair p;
	pair_run(&p, cc, server_creds(), "ntp.test");
	cr_assert_eq(p.rc, TLS_ESTABLISHED, "%s", tls_reason(p.c));
	pair_free(&p);
	free(ca);
}

Test(tls, credential_load_errors_name_the_file)
{
	char err[TLS_CREDS_ERR_MAX];
	struct tls_creds *c = NULL;
	char *chain = tu_path(dir, "server.chain.pem"), *key = tu_path(dir, "server.key");
	char *pool_key = tu_path(dir, "pool.key"), *missing = tu_path(dir, "missing.pem");

	/* A pinned file with two certificates. */
	const char *two[] = { chain };
	struct tls_server_options o = { chain, key, two, 1, false };
	cr_assert_eq(tls_creds_new_server(&c, &o, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, chain) && strstr(err, "exactly one"), "%s", err);

	/* A pinned file that is not a certificate at all. */
	const char *notcert[] = { key };
	o.pool_cert_files = notcert;
	cr_assert_eq(tls_creds_new_server(&c, &o, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, key), "%s", err);

	const char *absent[] = { missing };
	o.pool_cert_files = absent;
	cr_assert_eq(tls_creds_new_server(&c, &o, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, missing), "%s", err);

	/* A key that does not belong to the certificate. */
	struct tls_server_options mism = { chain, pool_key, NULL, 0, false };
	cr_assert_eq(tls_creds_new_server(&c, &mism, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, pool_key), "%s", err);

	/* Certificate and key swapped: the key file holds no certificate. */
	struct tls_server_options swapped = { key, chain, NULL, 0, false };
	cr_assert_eq(tls_creds_new_server(&c, &swapped, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, key), "%s", err);

	struct tls_client_options co = { .no_system_trust = true, .ca_file = missing };
	cr_assert_eq(tls_creds_new_client(&c, &co, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, missing), "%s", err);
	co.ca_file = key;
	cr_assert_eq(tls_creds_new_client(&c, &co, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, key), "%s", err);
	co.ca_file = chain;
	co.cert_file = chain;
	cr_assert_eq(tls_creds_new_client(&c, &co, err, sizeof(err)), -EINVAL, "cert without key");
	free(chain);
	free(key);
	free(pool_key);
	free(missing);
}

Test(tls, queues_are_bounded)
{
	struct pair p;
	pair_run(&p, client_creds(NULL), server_creds(), "ntp.test");
	cr_assert_eq(p.rs, TLS_ESTABLISHED);

	uint8_t *big = calloc(1, TLS_IN_MAX + 1);
	cr_assert(big);
	cr_assert_eq(tls_feed(p.s, big, TLS_IN_MAX + 1), -EMSGSIZE);
	cr_assert_eq(tls_feed(p.s, big, TLS_IN_MAX - 10), 0);
	cr_assert_eq(tls_feed(p.s, big, 11), -EMSGSIZE);
	cr_assert_eq(tls_feed(p.s, big, 10), 0);
	/* Zero bytes are not a TLS record: the server fails cleanly, no crash. */
	char buf[64];
	ssize_t r = tls_read(p.s, buf, sizeof(buf));
	cr_assert_lt(r, 0);
	cr_assert_neq(r, -EAGAIN);
	cr_assert_eq(tls_state(p.s), TLS_FAILED);

	/* Output: whole messages are refused up front and leave the queue as it was. */
	cr_assert_eq(tls_write(p.c, big, TLS_IN_MAX), 0);
	const uint8_t *out;
	size_t before, after;
	tls_output(p.c, &out, &before);
	cr_assert_gt(before, (size_t)TLS_IN_MAX);
	cr_assert_eq(tls_write(p.c, big, TLS_OUT_MAX), -EMSGSIZE);
	int ret;
	while ((ret = tls_write(p.c, big, 60000)) == 0)
		;
	cr_assert_eq(ret, -EMSGSIZE);
	tls_output(p.c, &out, &before);
	cr_assert_leq(before, (size_t)TLS_OUT_MAX);
	cr_assert_eq(tls_write(p.c, big, 60000), -EMSGSIZE);
	tls_output(p.c, &out, &after);
	cr_assert_eq(before, after);
	cr_assert_eq(tls_state(p.c), TLS_ESTABLISHED, "refusal does not break the session");
	tls_output_consume(p.c, after);
	cr_assert_eq(tls_write(p.c, big, 60000), 0);
	free(big);
	pair_free(&p);
}

Test(tls, garbage_handshake_fails_cleanly)
{
	struct tls_creds *sc = server_creds();
	struct tls_session *s = NULL;
	cr_assert_eq(tls_session_new_server(&s, sc), 0);
	struct tu_rng rng;
	tu_rng_seed(&rng, 7);
	uint8_t junk[512];
	tu_rng_fill(&rng, junk, sizeof(junk));
	junk[0] = 22; /* handshake record type, so the garbage goes deeper */
	cr_assert_eq(tls_feed(s, junk, sizeof(junk)), 0);
	int ret = tls_step(s);
	cr_assert_lt(ret, 0);
	cr_assert_eq(tls_step(s), ret, "failure is sticky");
	cr_assert_str_not_empty(tls_reason(s));
	tls_free(s);
	tls_creds_unref(sc);
}

/* Handshakes a raw peer, writing straight into s, against one of ours; returns tls_step's last
 * result for ours (the raw side's gnutls_handshake result is r->handshake). */
static int raw_handshake(struct tu_tls_raw *r, struct tls_session *s)
{
	tu_tls_raw_attach(r, s);
	struct tu_tls_end a = tu_tls_raw_end(r), b = tu_tls_session_end(s);
	tu_tls_pump(&a, &b);
	return tls_step(s);
}

static int raw_client_vs_server(const char *prio, const char *alpn, struct tls_session **srv,
				struct tu_tls_raw **r)
{
	struct tls_creds *sc = server_creds();
	cr_assert_eq(tls_session_new_server(srv, sc), 0);
	tls_creds_unref(sc);
	*r = tu_tls_raw_client(prio, alpn);
	return raw_handshake(*r, *srv);
}

Test(tls, server_refuses_tls12_client)
{
	struct tu_tls_raw *r;
	struct tls_session *s = NULL;
	int rs = raw_client_vs_server("NORMAL:-VERS-ALL:+VERS-TLS1.2", TLS_ALPN, &s, &r);
	cr_assert_eq(rs, -EPROTO, "%d %s", rs, tls_reason(s));
	tu_tls_raw_free(r);
	tls_free(s);
}

Test(tls, server_refuses_client_without_alpn)
{
	struct tu_tls_raw *r;
	struct tls_session *s = NULL;
	int rs = raw_client_vs_server("NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL, &s, &r);
	cr_assert_eq(rs, -EPROTO, "%d %s", rs, tls_reason(s));
	cr_assert(strstr(tls_reason(s), "ALPN"), "%s", tls_reason(s));
	tu_tls_raw_free(r);
	tls_free(s);
}

Test(tls, server_refuses_other_alpn)
{
	struct tu_tls_raw *r;
	struct tls_session *s = NULL;
	int rs = raw_client_vs_server("NORMAL:-VERS-ALL:+VERS-TLS1.3", "http/1.1", &s, &r);
	cr_assert_eq(rs, -EPROTO, "%d %s", rs, tls_reason(s));
	tu_tls_raw_free(r);
	tls_free(s);
}

Test(tls, exporter_context_layout)
{
	/* A conforming plain GnuTLS client computes the RFC 8915 keys by hand; ours must agree. */
	struct tu_tls_raw *r;
	struct tls_session *s = NULL;
	int rs = raw_client_vs_server("NORMAL:-VERS-ALL:+VERS-TLS1.3", TLS_ALPN, &s, &r);
	cr_assert_eq(rs, TLS_ESTABLISHED, "%d %s", rs, tls_reason(s));
	uint8_t c2s[64], s2c[64], want[64];
	cr_assert_eq(tls_export_nts_keys(s, 0x0102, 17, 64, c2s, s2c), 0);
	const char label[] = "EXPORTER-network-time-security";
	cr_assert_eq(gnutls_prf_rfc5705(r->gs, 30, label, 5, "\x01\x02\x00\x11\x00", 64,
					(char *)want),
		     0);
	cr_assert_arr_eq(c2s, want, 64);
	cr_assert_eq(gnutls_prf_rfc5705(r->gs, 30, label, 5, "\x01\x02\x00\x11\x01", 64,
					(char *)want),
		     0);
	cr_assert_arr_eq(s2c, want, 64);
	tu_tls_raw_free(r);
	tls_free(s);
}

static int our_client_vs_raw_server(const char *prio, const char *alpn, struct tls_session **c,
				    struct tu_tls_raw **r)
{
	struct tls_creds *cc = client_creds(NULL);
	cr_assert_eq(tls_session_new_client(c, cc, "ntp.test"), 0);
	tls_creds_unref(cc);
	*r = tu_tls_raw_server(dir, "server", 0, prio, alpn);
	int rc = raw_handshake(*r, *c);
	if (rc < 0 && strstr(prio, "TLS1.2"))
		cr_assert_lt((*r)->handshake, 0, "the TLS 1.2 server found no common version");
	return rc;
}

Test(tls, client_refuses_tls12_server)
{
	struct tu_tls_raw *r;
	struct tls_session *c = NULL;
	int rc = our_client_vs_raw_server("NORMAL:-VERS-ALL:+VERS-TLS1.2", TLS_ALPN, &c, &r);
	cr_assert_lt(rc, 0, "%d %s", rc, tls_reason(c));
	tu_tls_raw_free(r);
	tls_free(c);
}

Test(tls, client_refuses_server_without_alpn)
{
	struct tu_tls_raw *r;
	struct tls_session *c = NULL;
	int rc = our_client_vs_raw_server("NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL, &c, &r);
	cr_assert_eq(rc, -EPROTO, "%d %s", rc, tls_reason(c));
	tu_tls_raw_free(r);
	tls_free(c);
}

/* Counts the tickets a raw server sent in the unsigned its session pointer points at. */
static int count_sent_tickets(gnutls_session_t gs, unsigned htype, unsigned when, unsigned incoming,
			      const gnutls_datum_t *msg)
{
	(void)when;
	(void)msg;
	if (!incoming && htype == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET)
		++*(unsigned *)gnutls_session_get_ptr(gs);
	return 0;
}

/* A server with TLS 1.3 session tickets (OpenSSL's and Go's default): GnuTLS answers "again" after
 * consuming each ticket, though application data may be queued right behind it. */
Test(tls, read_past_session_tickets)
{
	struct tls_creds *cc = client_creds(NULL);
	struct tls_session *c = NULL;
	cr_assert_eq(tls_session_new_client(&c, cc, "ntp.test"), 0);
	tls_creds_unref(cc);
	struct tu_tls_raw *r = tu_tls_raw_server(dir, "server", 0, "NORMAL:-VERS-ALL:+VERS-TLS1.3",
						 TLS_ALPN);
	gnutls_datum_t key = { NULL, 0 };
	unsigned sent = 0;
	cr_assert_eq(gnutls_session_ticket_key_generate(&key), 0);
	cr_assert_eq(gnutls_session_ticket_enable_server(r->gs, &key), 0);
	gnutls_session_set_ptr(r->gs, &sent);
	gnutls_handshake_set_hook_function(r->gs, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET,
					   GNUTLS_HOOK_POST, count_sent_tickets);
	cr_assert_eq(raw_handshake(r, c), TLS_ESTABLISHED, "%s", tls_reason(c));
	cr_assert_eq(r->handshake, 0);
	unsigned tickets = sent;
	cr_assert_geq(tickets, 1, "the server sent no ticket, so this test would prove nothing");

	/* The handshake's tickets and two records of data, all queued before the first read. */
	cr_assert_eq(gnutls_record_send(r->gs, "first", 5), 5);
	cr_assert_eq(gnutls_record_send(r->gs, "second", 6), 6);
	char buf[64];
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), 5, "%s", tls_reason(c));
	cr_assert_arr_eq(buf, "first", 5);
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), 6);
	cr_assert_arr_eq(buf, "second", 6);
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), -EAGAIN);

	/* A late ticket, data and close_notify, fed in two pieces splitting the ticket's record. */
	tu_tls_raw_attach(r, NULL); /* its output held back in r->out */
	cr_assert_eq(gnutls_session_ticket_send(r->gs, 1, 0), 0);
	cr_assert_eq(sent, tickets + 1);
	cr_assert_eq(gnutls_record_send(r->gs, "third", 5), 5);
	cr_assert_eq(gnutls_bye(r->gs, GNUTLS_SHUT_WR), 0);
	cr_assert_eq(tls_feed(c, r->out, 10), 0);
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), -EAGAIN, "half a record is nothing yet");
	cr_assert_eq(tls_feed(c, r->out + 10, r->out_len - 10), 0);
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), 5, "%s", tls_reason(c));
	cr_assert_arr_eq(buf, "third", 5);
	cr_assert_eq(tls_read(c, buf, sizeof(buf)), 0, "close_notify behind the data");
	cr_assert_eq(tls_state(c), TLS_CLOSED);
	tu_tls_raw_free(r);
	gnutls_memset(key.data, 0, key.size);
	gnutls_free(key.data);
	tls_free(c);
}

/* Our output to a raw peer, then one record of data read there; GnuTLS says "again" after a
 * post-handshake message, so the raw side reads on while input is left. */
static ssize_t raw_read_from(struct tu_tls_raw *r, struct tls_session *s, void *buf, size_t cap)
{
	struct tu_tls_end from = tu_tls_session_end(s), to = tu_tls_raw_end(r);
	tu_tls_move(&from, &to);
	return tu_tls_raw_recv(r, buf, cap);
}

/* A client's KeyUpdate ahead of its request, as the broker's and the daemon's KE servers may see;
 * it asks for ours in return, which goes out ahead of the response. */
Test(tls, server_reads_past_key_update)
{
	struct tu_tls_raw *r;
	struct tls_session *s = NULL;
	int rs = raw_client_vs_server("NORMAL:-VERS-ALL:+VERS-TLS1.3", TLS_ALPN, &s, &r);
	cr_assert_eq(rs, TLS_ESTABLISHED, "%d %s", rs, tls_reason(s));
	cr_assert_eq(gnutls_session_key_update(r->gs, GNUTLS_KU_PEER), 0);
	cr_assert_eq(gnutls_record_send(r->gs, "request", 7), 7);
	char buf[64];
	cr_assert_eq(tls_read(s, buf, sizeof(buf)), 7, "%s", tls_reason(s));
	cr_assert_arr_eq(buf, "request", 7);
	cr_assert_eq(tls_read(s, buf, sizeof(buf)), -EAGAIN);
	cr_assert_eq(tls_write(s, "response", 8), 0);
	cr_assert_eq(raw_read_from(r, s, buf, sizeof(buf)), 8, "the peer followed our KeyUpdate");
	cr_assert_arr_eq(buf, "response", 8);
	tu_tls_raw_free(r);
	tls_free(s);
}

/* The KeyUpdate we owe goes out ahead of the next write's data, so the up-front size check counts
 * it: the largest write the check accepts still fits whole, instead of failing the session with
 * the output half queued. */
Test(tls, owed_key_update_counted_in_write_limit)
{
	struct tu_tls_raw *r;
	struct tls_session *s = NULL;
	int rs = raw_client_vs_server("NORMAL:-VERS-ALL:+VERS-TLS1.3", TLS_ALPN, &s, &r);
	cr_assert_eq(rs, TLS_ESTABLISHED, "%d %s", rs, tls_reason(s));
	static const uint8_t fill[4096];
	const uint8_t *p;
	size_t queued, after;
	cr_assert_eq(tls_write(s, fill, 1000), 0);
	tls_output(s, &p, &queued);
	size_t per_record = queued - 1000;
	while (TLS_OUT_MAX - queued > 3000) {
		cr_assert_eq(tls_write(s, fill, 1000), 0);
		tls_output(s, &p, &queued);
	}
	cr_assert_eq(gnutls_session_key_update(r->gs, GNUTLS_KU_PEER), 0);
	char buf[16];
	cr_assert_eq(tls_read(s, buf, sizeof(buf)), -EAGAIN, "%s", tls_reason(s));
	size_t len = TLS_OUT_MAX - queued;
	int ret;
	while ((ret = tls_write(s, fill, len)) == -EMSGSIZE && tls_state(s) == TLS_ESTABLISHED) {
		tls_output(s, &p, &after);
		cr_assert_eq(after, queued, "a refused write queues nothing");
		len--;
	}
	cr_assert_eq(ret, 0, "write of %zu with %zu free: %s", len, TLS_OUT_MAX - queued,
		     tls_reason(s));
	cr_assert_eq(tls_state(s), TLS_ESTABLISHED);
	tls_output(s, &p, &after);
	cr_assert_leq(after, (size_t)TLS_OUT_MAX);
	cr_assert_gt(after - queued, len + per_record, "a KeyUpdate record went out with the data");
	tu_tls_raw_free(r);
	tls_free(s);
}
