/* Fuzz harness: the PROXY protocol header parser (proxy_proto_parse), fed every prefix of the
 * input, each in a buffer of exactly its length so that AddressSanitizer sees a read past it.
 * Contract checked: the result is a length, 0 or -EPROTO, with a reason exactly when refused;
 * over the prefixes it is 0 until decided and then never changes (a header's length does not
 * depend on what follows it, a refusal is final); it is decided by PROXY_PROTO_MAX bytes; a
 * length is at most the bytes given and at most PROXY_PROTO_MAX, and the header alone parses to
 * the same; an address is AF_INET or AF_INET6, source and destination alike, and a local result
 * carries none; the version matches the first byte. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy_proto.h"

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (!(cond))                                                                      \
			abort();                                                                  \
	} while (0)

/* Parses data[0, len) from a copy of exactly len bytes. */
static int parse_copy(const uint8_t *data, size_t len, struct proxy_proto_info *info)
{
	uint8_t *copy = malloc(len ? len : 1);
	const char *why = "unset";

	CHECK(copy != NULL);
	if (len)
		memcpy(copy, data, len);
	int rc = proxy_proto_parse(len ? copy : NULL, len, info, &why);

	free(copy);
	CHECK(rc >= 0 || rc == -EPROTO);
	CHECK(rc < 0 ? why != NULL && why[0] != '\0' : why == NULL);
	return rc;
}

static void check_info(const struct proxy_proto_info *info, const uint8_t *data)
{
	CHECK(info->version == (data[0] == 'P' ? 1u : 2u));
	if (info->local) {
		CHECK(info->src.ss_family == AF_UNSPEC && info->dst.ss_family == AF_UNSPEC);
		return;
	}
	CHECK(info->src.ss_family == AF_INET || info->src.ss_family == AF_INET6);
	CHECK(info->dst.ss_family == info->src.ss_family);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t last = size < PROXY_PROTO_MAX ? size : PROXY_PROTO_MAX;
	int verdict = 0;
	size_t at = 0;
	struct proxy_proto_info info;

	for (size_t k = 0; k <= last; k++) {
		int rc = parse_copy(data, k, &info);

		if (verdict == 0) {
			verdict = rc;
			at = k;
			if (rc > 0) {
				/* Accepted exactly when its last byte arrived. */
				CHECK((size_t)rc == k);
				check_info(&info, data);
			}
		} else {
			CHECK(rc == verdict);
		}
	}
	if (size >= PROXY_PROTO_MAX)
		CHECK(verdict != 0);
	if (verdict > 0) {
		CHECK((size_t)verdict <= PROXY_PROTO_MAX && at == (size_t)verdict);
		struct proxy_proto_info whole;

		CHECK(parse_copy(data, size, &whole) == verdict);
		check_info(&whole, data);
		CHECK(whole.local == info.local && whole.version == info.version);
		CHECK(memcmp(&whole.src, &info.src, sizeof info.src) == 0);
		CHECK(memcmp(&whole.dst, &info.dst, sizeof info.dst) == 0);
	} else if (verdict < 0 && size > last) {
		CHECK(parse_copy(data, size, &info) == verdict);
	}
	return 0;
}
