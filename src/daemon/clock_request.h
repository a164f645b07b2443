/* The clock helper's wire format, sans-I/O: what the network process may ask of the process that
 * holds CAP_SYS_TIME (clock_helper.h), and the validation that is the helper's whole defence.
 *
 * A request is exactly CLOCK_REQUEST_SIZE bytes, in the host's byte order (both ends are the same
 * program on one machine, over a socketpair): a u32 operation, a u32 that must be zero, and an
 * IEEE 754 double. A reply is an i32: 0, or a negative errno. Anything else is refused. */
#ifndef NTSPOOL_CLOCK_REQUEST_H
#define NTSPOOL_CLOCK_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"

enum clock_request_op {
	CLOCK_REQUEST_SLEW = 1,		 /* value: offset in s, |value| <= CLOCK_REQUEST_MAX_SLEW_S */
	CLOCK_REQUEST_SET_FREQUENCY = 2, /* value: ppm, |value| <= CLOCK_REQUEST_MAX_PPM */
	CLOCK_REQUEST_STEP = 3,		 /* value: offset in s, 0 < |value| <= MAX_STEP_S */
};

#define CLOCK_REQUEST_SIZE 16
#define CLOCK_REPLY_SIZE 4

/* The kernel's own limits: adjtime slews at most half a second, the frequency 500 ppm. */
#define CLOCK_REQUEST_MAX_SLEW_S 0.5
#define CLOCK_REQUEST_MAX_PPM 500.0
/* A step of more than about 317 years is no clock's error, only a corrupted request. */
#define CLOCK_REQUEST_MAX_STEP_S 1e10

struct clock_request {
	uint32_t op;
	double value;
};

void clock_request_encode(const struct clock_request *r, uint8_t out[CLOCK_REQUEST_SIZE]);

/* Checks and reads a request of len bytes: -EMSGSIZE for a wrong length, -EOPNOTSUPP for an
 * unknown operation, -EINVAL for a non-zero pad, -ERANGE for a value that is not finite or is
 * outside the operation's range; 0 with *r filled. */
int clock_request_decode(const uint8_t *buf, size_t len, struct clock_request *r);

void clock_reply_encode(int32_t rc, uint8_t out[CLOCK_REPLY_SIZE]);

/* Reads a reply of len bytes into *rc: -EMSGSIZE for a wrong length, -EPROTO for a value that is
 * neither 0 nor a negative errno (-4095..-1). */
int clock_reply_decode(const uint8_t *buf, size_t len, int32_t *rc);

/* Carries out a decoded request on a clock backend; the backend's result. */
int clock_request_apply(const struct clock_request *r, const struct clock_backend_ops *ops,
			void *ud);

/* The operation's name, for messages ("step"; "unknown" outside the table). */
const char *clock_request_op_name(uint32_t op);

#endif
