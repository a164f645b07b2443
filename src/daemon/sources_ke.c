#include "sources_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <gnutls/gnutls.h>

#include "aead.h"
#include "ke_client.h"
#include "ke_conn.h"
#include "log.h"

/* One NTS-KE connection: the machine the connection driver runs (ke_client inside); the driver
 * frees it after its closed hook. */
struct source_ke {
	struct sources *m;
	struct slot *slot; /* NULL once abandoned */
	struct ke_client *ke;
	struct ke_conn *kc;
};

/* Is the server name in use by another slot of the entry? (Names compare like DNS names.) */
static bool in_use(const struct slot *sl, const char *host)
{
	const struct entry *e = sl->e;
	for (size_t i = 0; i < e->n_slots; i++)
		if (&e->slots[i] != sl && e->slots[i].host[0] &&
		    strcasecmp(e->slots[i].host, host) == 0)
			return true;
	return false;
}

/* Checks the response and installs the keys; returns NULL or why the exchange failed. */
static const char *take_response(struct slot *sl, struct ke_client *ke, int parse_rc,
				 const struct ke_msg_response *r, char *why, size_t whylen)
{
	struct entry *e = sl->e;
	struct sources *m = e->m;
	bool bad = true;
	if (parse_rc == -EREMOTEIO && r->has_error)
		snprintf(why, whylen, "key exchange: server answered Error %u", r->error);
	else if (parse_rc == -EREMOTEIO)
		snprintf(why, whylen, "key exchange: server sent warning %u", r->warnings[0]);
	else if (parse_rc == -EPROTO)
		snprintf(why, whylen, "key exchange: unknown critical record in the response");
	else if (parse_rc < 0)
		snprintf(why, whylen, "key exchange: malformed response (%s)", strerror(-parse_rc));
	else if (!r->has_protocol || r->protocol != KE_MSG_PROTOCOL_NTPV4)
		snprintf(why, whylen, "key exchange: the server does not offer NTPv4");
	else if (!r->has_aead)
		snprintf(why, whylen, "key exchange: no common AEAD algorithm");
	else if (r->aead != AEAD_AES_SIV_CMAC_256 && r->aead != AEAD_AES_SIV_CMAC_512)
		snprintf(why, whylen, "key exchange: server chose AEAD %u, which we did not offer",
			 r->aead);
	else if (r->n_cookies == 0)
		snprintf(why, whylen, "key exchange: no cookies");
	else
		bad = false;
	if (bad)
		return why;

	const char *host = r->has_server ? r->server.name : e->cfg->address.host;
	uint16_t port = r->has_port ? r->port : KE_MSG_PORT_DEFAULT;
	if (sources_is_pool(e) && in_use(sl, host)) {
		snprintf(why, whylen, "the pool answered %s, already in use: discarded", host);
		return why;
	}
	bool same = sl->src && strcasecmp(sl->host, host) == 0 && sl->port == port;
	if (!same) {
		sources_drop_server(sl);
		if (source_new(&sl->src, true, e->cfg->poll_interval_min, e->cfg->poll_interval_max,
			       SOURCES_LOCAL_PRECISION) < 0) {
			snprintf(why, whylen, "out of memory");
			return why;
		}
		if (sl->id_used)
			sl->id = ++m->next_id;
		sl->id_used = true;
	}
	size_t key_len = aead_key_len(r->aead);
	uint8_t c2s[AEAD_MAX_KEY_LEN], s2c[AEAD_MAX_KEY_LEN];
	int rc = ke_client_export(ke, KE_MSG_PROTOCOL_NTPV4, r->aead, key_len, c2s, s2c);
	if (rc == 0)
		rc = source_set_keys(sl->src, r->aead, c2s, s2c, key_len, r->cookies, r->n_cookies);
	gnutls_memset(c2s, 0, sizeof c2s);
	gnutls_memset(s2c, 0, sizeof s2c);
	if (rc == -EBADMSG) {
		snprintf(why, whylen, "key exchange: a cookie over %u bytes or not a multiple of 4",
			 SOURCE_COOKIE_MAX);
		return why;
	}
	if (rc < 0) {
		snprintf(why, whylen, "key exchange: cannot use the keys (%s)", strerror(-rc));
		return why;
	}
	snprintf(sl->host, sizeof sl->host, "%s", host);
	sl->port = port;
	sl->denied[0] = '\0';
	sl->last_ke_wall_s = (uint64_t)time(NULL);
	return NULL;
}

/* The slot lets go of the exchange; the connection ends (after close_notify unless abort). */
static void ke_finish(struct source_ke *k, bool abort)
{
	struct slot *sl = k->slot;
	if (sl)
		sl->ke = NULL;
	k->slot = NULL;
	ke_conn_close(k->kc, abort);
}

/* ---- ke_client as the connection driver runs it ---- */

KE_CONN_KE_CLIENT_ADAPTERS(source, struct source_ke, ke)

static uint64_t m_deadline(const void *m)
{
	const struct source_ke *k = m;
	return ke_client_deadline(k->ke);
}

static void m_free(void *m)
{
	struct source_ke *k = m;
	struct sources *mgr = k->m;
	ke_client_free(k->ke);
	free(k);
	sources_release(mgr);
}

static const struct ke_conn_machine ke_machine =
	KE_CONN_KE_CLIENT_MACHINE(source, m_deadline, m_free);

/* After each stream event: a complete response installs the keys (or says why not) and the
 * connection ends; one exchange per connection. */
static void on_progress(struct ke_conn *kc, void *m, void *ud)
{
	struct source_ke *k = m;
	struct slot *sl = k->slot;
	(void)kc;
	(void)ud;
	if (!sl || ke_client_state(k->ke) != KE_CLIENT_RESPONSE)
		return;
	char why[REASON_MAX];
	const struct ke_msg_response *r;
	int parse_rc = ke_client_response(k->ke, &r);
	const char *err = take_response(sl, k->ke, parse_rc, r, why, sizeof why);
	ke_client_response_done(k->ke, uv_now(k->m->loop));
	ke_client_close(k->ke);
	ke_conn_kick(k->kc);
	ke_finish(k, false);
	if (err) {
		sources_slot_retry(sl, true, err);
		return;
	}
	sl->state = SLOT_RESOLVE;
	sources_entry_kick(sl->e);
	sources_resolve(sl, sl->host, false);
}

/* The exchange ended before its response was taken: the slot retries with the reason. */
static void on_closed(struct ke_conn *kc, void *m, void *ud)
{
	struct source_ke *k = m;
	struct slot *sl = k->slot;
	(void)ud;
	k->kc = NULL;
	if (!sl)
		return;
	sl->ke = NULL;
	k->slot = NULL;
	char why[REASON_MAX];
	int err = ke_conn_error(kc);
	if (ke_client_error(k->ke) < 0)
		snprintf(why, sizeof why, "key exchange with %s failed: %s", sl->e->address,
			 ke_client_reason(k->ke));
	else if (err < 0 && ke_client_state(k->ke) == KE_CLIENT_HANDSHAKING &&
		 err != -ETIMEDOUT)
		snprintf(why, sizeof why, "cannot connect to %s: %s", sl->e->address,
			 strerror(-err));
	else
		snprintf(why, sizeof why, "key exchange with %s failed: %s", sl->e->address,
			 err < 0 ? strerror(-err) : "connection closed");
	sources_slot_retry(sl, true, why);
}

/* The deny list of an nts-pool exchange: every server the entry uses, and the one this slot
 * was told to leave. */
static size_t deny_names(const struct slot *sl, const char **deny)
{
	const struct entry *e = sl->e;
	size_t n = 0;
	if (!sources_is_pool(e))
		return 0;
	if (sl->denied[0])
		deny[n++] = sl->denied;
	for (size_t i = 0; i < e->n_slots && n < KE_MSG_MAX_DENY; i++) {
		const char *h = e->slots[i].host;
		bool dup = !h[0];
		for (size_t j = 0; j < n && !dup; j++)
			dup = strcasecmp(deny[j], h) == 0;
		if (!dup)
			deny[n++] = h;
	}
	return n;
}

void sources_ke_begin(struct slot *sl, const struct sockaddr *addr)
{
	struct entry *e = sl->e;
	struct sources *m = e->m;
	/* 15 first: the mandatory algorithm, and its cookies are the shorter (104 bytes, not
	 * 168), so every NTS packet is smaller; 17 for servers that only have the larger one. */
	static const uint16_t protocols[] = { KE_MSG_PROTOCOL_NTPV4 };
	static const uint16_t aeads[] = { AEAD_AES_SIV_CMAC_256, AEAD_AES_SIV_CMAC_512 };
	const char *deny[KE_MSG_MAX_DENY];
	uint8_t req[KE_MSG_REQUEST_MAX];
	uint64_t now = uv_now(m->loop);
	struct sockaddr_storage ss;
	memcpy(&ss, addr, addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						     : sizeof(struct sockaddr_in6));
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(e->cfg->address.port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(e->cfg->address.port);

	int n = ke_msg_build_request(req, sizeof req, KE_NUMBERING_IANA, protocols, 1, aeads, 2,
				     deny, deny_names(sl, deny));
	struct source_ke *k = n > 0 ? calloc(1, sizeof *k) : NULL;
	int rc = n < 0 ? n : k ? 0 : -ENOMEM;
	if (rc == 0)
		rc = ke_client_new(&k->ke, e->creds, e->cfg->address.host, KE_NUMBERING_IANA, now,
				   KE_TIMEOUT_MS);
	if (rc == 0)
		rc = ke_client_send(k->ke, req, (size_t)n, KE_MSG_REQUEST_PLAIN, now, KE_TIMEOUT_MS);
	const struct ke_conn_owner owner = { .progress = on_progress, .closed = on_closed };
	if (rc == 0) {
		k->m = m;
		rc = ke_conn_connect(&k->kc, m->loop, (struct sockaddr *)&ss, &ke_machine, k, &owner);
	}
	if (rc < 0) {
		if (k)
			ke_client_free(k->ke);
		free(k);
		char why[REASON_MAX];
		snprintf(why, sizeof why, "cannot start a key exchange: %s", strerror(-rc));
		sources_slot_retry(sl, true, why);
		return;
	}
	k->slot = sl;
	sl->ke = k;
	m->pending++;
}

void sources_ke_drop(struct slot *sl)
{
	struct source_ke *k = sl->ke;
	if (!k)
		return;
	sl->ke = NULL;
	k->slot = NULL;
	ke_conn_close(k->kc, true);
}
