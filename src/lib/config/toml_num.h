/* Unquoted TOML scalars: booleans, integers (decimal, 0x, 0o, 0b), floats (with inf and nan) and
 * the four date-time types. Strings and everything else lexical are in toml_scan. */
#ifndef NTSPOOL_TOML_NUM_H
#define NTSPOOL_TOML_NUM_H

#include "toml_scan.h"

/* Reads the unquoted value at the cursor into v (type and value; v owns nothing afterwards) and
 * advances past it. 0, or -EINVAL/-ENOMEM with the error recorded in s. */
int toml_num_parse(struct toml_scan *s, struct toml_value *v);

#endif
