#include "ke_record.h"

#include <errno.h>

/* One row per logical kind. The C bit is the one we send; it is the same in both numberings.
 * AEAD may be sent either way (RFC 8915 §4.1.5); we set it, as chrony does. */
static const struct {
	enum ke_record_kind kind;
	uint16_t iana;
	uint16_t ntpdrs;
	bool critical;
	const char *name;
} table[] = {
	{ KE_RECORD_END, 0, 0, true, "End of Message" },
	{ KE_RECORD_NEXT_PROTOCOL, 1, 1, true, "Next Protocol" },
	{ KE_RECORD_ERROR, 2, 2, true, "Error" },
	{ KE_RECORD_WARNING, 3, 3, true, "Warning" },
	{ KE_RECORD_AEAD, 4, 4, true, "AEAD Algorithm" },
	{ KE_RECORD_NEW_COOKIE, 5, 5, false, "New Cookie" },
	{ KE_RECORD_SERVER, 6, 6, true, "NTPv4 Server" },
	{ KE_RECORD_PORT, 7, 7, true, "NTPv4 Port" },
	{ KE_RECORD_KEEP_ALIVE, 8, 0x4000, false, "Keep Alive" },
	{ KE_RECORD_SUPPORTED_PROTOCOLS, 9, 0x4004, true, "Supported Next Protocol List" },
	{ KE_RECORD_SUPPORTED_ALGORITHMS, 10, 0x4001, true, "Supported Algorithm List" },
	{ KE_RECORD_FIXED_KEY, 12, 0x4002, true, "Fixed Key Request" },
	{ KE_RECORD_SERVER_DENY, 13, 0x4003, false, "NTP Server Deny" },
	{ KE_RECORD_AUTH_TOKEN, 14, 0x4005, false, "Authentication" },
};

#define TABLE_LEN (sizeof table / sizeof table[0])

static uint16_t type_in(size_t row, enum ke_numbering n)
{
	return n == KE_NUMBERING_NTPDRS_V1 ? table[row].ntpdrs : table[row].iana;
}

enum ke_record_kind ke_record_kind_of(enum ke_numbering n, uint16_t type)
{
	type &= KE_RECORD_TYPE_MASK;
	for (size_t i = 0; i < TABLE_LEN; i++)
		if (type_in(i, n) == type)
			return table[i].kind;
	return KE_RECORD_UNKNOWN;
}

int ke_record_wire_type(enum ke_numbering n, enum ke_record_kind kind, uint16_t *type_out)
{
	for (size_t i = 0; i < TABLE_LEN; i++) {
		if (table[i].kind != kind)
			continue;
		uint16_t t = type_in(i, n);
		*type_out = (uint16_t)(t | (table[i].critical ? KE_RECORD_CRITICAL : 0));
		return 0;
	}
	return -EINVAL;
}

const char *ke_record_kind_name(enum ke_record_kind kind)
{
	for (size_t i = 0; i < TABLE_LEN; i++)
		if (table[i].kind == kind)
			return table[i].name;
	return "unknown";
}

int ke_record_read_header(struct wire_reader *r, bool *critical, uint16_t *type, uint16_t *len)
{
	uint16_t t = wire_get_u16(r);
	uint16_t l = wire_get_u16(r);
	if (wire_error(r))
		return wire_error(r);
	*critical = (t & KE_RECORD_CRITICAL) != 0;
	*type = t & KE_RECORD_TYPE_MASK;
	*len = l;
	return 0;
}

void ke_record_iter_init(struct ke_record_iter *it, const void *buf, size_t len,
			 enum ke_numbering n)
{
	wire_reader_init(&it->r, buf, len);
	it->numbering = n;
}

int ke_record_iter_next(struct ke_record_iter *it, struct ke_record *rec)
{
	if (wire_error(&it->r))
		return wire_error(&it->r);
	if (wire_remaining(&it->r) == 0)
		return 0;
	bool critical = false;
	uint16_t type = 0, len = 0;
	int rc = ke_record_read_header(&it->r, &critical, &type, &len);
	if (rc < 0)
		return rc;
	const uint8_t *body = wire_get_bytes(&it->r, len);
	if (!body)
		return wire_error(&it->r);
	rec->kind = ke_record_kind_of(it->numbering, type);
	rec->critical = critical;
	rec->type = type;
	rec->len = len;
	rec->body = body;
	return 1;
}

size_t ke_record_iter_offset(const struct ke_record_iter *it)
{
	return wire_offset(&it->r);
}

int ke_record_put_raw(struct wire_writer *w, bool critical, uint16_t type, const void *body,
		      size_t len)
{
	if ((type & KE_RECORD_CRITICAL) || len > KE_RECORD_BODY_MAX)
		return -EINVAL;
	wire_put_u16(w, (uint16_t)(type | (critical ? KE_RECORD_CRITICAL : 0)));
	wire_put_u16(w, (uint16_t)len);
	wire_put_bytes(w, body, len);
	return wire_writer_error(w);
}

int ke_record_put_header(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
			 size_t len)
{
	uint16_t type;
	if (len > KE_RECORD_BODY_MAX || ke_record_wire_type(n, kind, &type) < 0)
		return -EINVAL;
	wire_put_u16(w, type);
	wire_put_u16(w, (uint16_t)len);
	return wire_writer_error(w);
}

int ke_record_put(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
		  const void *body, size_t len)
{
	int rc = ke_record_put_header(w, n, kind, len);
	if (rc < 0)
		return rc;
	wire_put_bytes(w, body, len);
	return wire_writer_error(w);
}

int ke_record_put_u16(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
		      uint16_t v)
{
	int rc = ke_record_put_header(w, n, kind, 2);
	if (rc < 0)
		return rc;
	wire_put_u16(w, v);
	return wire_writer_error(w);
}

int ke_record_put_u16_list(struct wire_writer *w, enum ke_numbering n, enum ke_record_kind kind,
			   const uint16_t *ids, size_t count)
{
	if (count > KE_RECORD_BODY_MAX / 2)
		return -EINVAL;
	int rc = ke_record_put_header(w, n, kind, 2 * count);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < count; i++)
		wire_put_u16(w, ids[i]);
	return wire_writer_error(w);
}
