/* The TOML grammar: expressions, keys, tables, arrays, inline tables, and the rules on which
 * table may be defined or extended where. Scalars and lexical details are in toml_scan. */
#ifndef NTSPOOL_TOML_DOC_H
#define NTSPOOL_TOML_DOC_H

#include "toml_scan.h"

/* Parses the whole text of s. On success *root is the root table (new, caller frees with
 * toml_tree_free); on failure returns negative errno with the message recorded in s. */
int toml_doc_parse(struct toml_scan *s, struct toml_value **root);

#endif
