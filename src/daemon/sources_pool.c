/* `pool` sources (ntpd-rs's mode): `count` plain NTP servers behind one DNS name. Each slot
 * resolves the name itself and takes an address no other slot of the entry polls, that the
 * configuration does not `ignore`, and that it was not just told to leave; a server that stops
 * answering is replaced by resolving the name again. */
#include "sources_int.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

#include "cidr.h"

/* The address's text without a port (the slot's host), or false for another family. */
static bool host_text(const struct sockaddr *sa, char *buf, size_t len)
{
	if (sa->sa_family == AF_INET)
		return inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
				 (socklen_t)len) != NULL;
	if (sa->sa_family == AF_INET6)
		return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
				 (socklen_t)len) != NULL;
	return false;
}

static bool taken_by_sibling(const struct slot *sl, const char *host)
{
	const struct entry *e = sl->e;
	for (size_t i = 0; i < e->n_slots; i++) {
		const struct slot *o = &e->slots[i];
		if (o != sl && o->state == SLOT_POLL && strcmp(o->host, host) == 0)
			return true;
	}
	return false;
}

bool sources_pool_choose(struct slot *sl, const struct addrinfo *res, struct sockaddr_storage *out,
			 char *why, size_t whylen)
{
	const struct config_daemon_source *c = sl->e->cfg;
	size_t seen = 0, in_use = 0, ignored = 0;
	const struct addrinfo *denied = NULL;
	for (const struct addrinfo *a = res; a; a = a->ai_next) {
		char host[INET6_ADDRSTRLEN];
		if (!a->ai_addr || !host_text(a->ai_addr, host, sizeof host))
			continue;
		seen++;
		if (c->ignore_count && cidr_match(c->ignore, c->ignore_count, a->ai_addr) >= 0) {
			ignored++;
			continue;
		}
		if (taken_by_sibling(sl, host)) {
			in_use++;
			continue;
		}
		if (sl->denied[0] && strcmp(sl->denied, host) == 0) {
			denied = denied ? denied : a;
			continue;
		}
		memcpy(out, a->ai_addr, a->ai_addrlen);
		snprintf(sl->host, sizeof sl->host, "%s", host);
		sl->denied[0] = '\0';
		return true;
	}
	/* Only the server just left is free: better it again (after the back-off) than none. */
	if (denied) {
		memcpy(out, denied->ai_addr, denied->ai_addrlen);
		host_text(denied->ai_addr, sl->host, sizeof sl->host);
		sl->denied[0] = '\0';
		return true;
	}
	snprintf(why, whylen,
		 "%s resolves to no address this source may use (%zu resolved, %zu polled by the "
		 "entry's other servers, %zu ignored)",
		 c->address.host, seen, in_use, ignored);
	return false;
}
