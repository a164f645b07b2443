#include "clock_request.h"

#include <errno.h>
#include <math.h>
#include <string.h>

void clock_request_encode(const struct clock_request *r, uint8_t out[CLOCK_REQUEST_SIZE])
{
	const uint32_t pad = 0;
	memcpy(out, &r->op, 4);
	memcpy(out + 4, &pad, 4);
	memcpy(out + 8, &r->value, 8);
}

int clock_request_decode(const uint8_t *buf, size_t len, struct clock_request *r)
{
	if (len != CLOCK_REQUEST_SIZE)
		return -EMSGSIZE;
	uint32_t op, pad;
	double v;
	memcpy(&op, buf, 4);
	memcpy(&pad, buf + 4, 4);
	memcpy(&v, buf + 8, 8);
	if (pad != 0)
		return -EINVAL;
	if (!isfinite(v))
		return -ERANGE;
	double a = fabs(v);
	switch (op) {
	case CLOCK_REQUEST_SLEW:
		if (a > CLOCK_REQUEST_MAX_SLEW_S)
			return -ERANGE;
		break;
	case CLOCK_REQUEST_SET_FREQUENCY:
		if (a > CLOCK_REQUEST_MAX_PPM)
			return -ERANGE;
		break;
	case CLOCK_REQUEST_STEP:
		if (a == 0 || a > CLOCK_REQUEST_MAX_STEP_S)
			return -ERANGE;
		break;
	default:
		return -EOPNOTSUPP;
	}
	r->op = op;
	r->value = v;
	return 0;
}

void clock_reply_encode(int32_t rc, uint8_t out[CLOCK_REPLY_SIZE])
{
	memcpy(out, &rc, 4);
}

int clock_reply_decode(const uint8_t *buf, size_t len, int32_t *rc)
{
	if (len != CLOCK_REPLY_SIZE)
		return -EMSGSIZE;
	int32_t v;
	memcpy(&v, buf, 4);
	if (v > 0 || v < -4095)
		return -EPROTO;
	*rc = v;
	return 0;
}

int clock_request_apply(const struct clock_request *r, const struct clock_backend_ops *ops,
			void *ud)
{
	switch (r->op) {
	case CLOCK_REQUEST_SLEW:
		return ops->slew(ud, r->value);
	case CLOCK_REQUEST_SET_FREQUENCY:
		return ops->set_frequency(ud, r->value);
	case CLOCK_REQUEST_STEP:
		return ops->step(ud, r->value);
	default:
		return -EOPNOTSUPP;
	}
}

const char *clock_request_op_name(uint32_t op)
{
	switch (op) {
	case CLOCK_REQUEST_SLEW:
		return "slew";
	case CLOCK_REQUEST_SET_FREQUENCY:
		return "set frequency";
	case CLOCK_REQUEST_STEP:
		return "step";
	default:
		return "unknown";
	}
}
