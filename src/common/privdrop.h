/* Dropping privileges once the sockets are bound and the keys read: the account a program runs
 * as, and the capabilities a process keeps (doc/deploy.md, "The privilege model").
 *
 * A process started as root switches to its account (`user`, default CONFIG_DEFAULT_USER); one
 * started as another user stays that user. Either way it then holds exactly the capabilities it
 * was asked to keep (none for the process that parses network input), no ambient or inheritable
 * ones, a bounding set cut down to them where it may cut it, and no_new_privs, so no exec can
 * give any back. */
#ifndef NTSPOOL_PRIVDROP_H
#define NTSPOOL_PRIVDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What a drop will do, decided at configuration time. */
struct privdrop {
	bool switch_user; /* started as root: become uid/gid, with the account's groups */
	uid_t uid;
	gid_t gid;
	char user[64]; /* the account's name (for messages and its groups) */
};

/* Decides *p for the configured account `user` (NULL: the default) of the configuration `file`,
 * configured at `line` of the table `where` (messages name them). Started as root, the account
 * must exist when configured; a missing default account is a warning and the process keeps
 * uid 0, without capabilities. Started as another user, a configured account must be that
 * user. Returns 0, or negative errno with err written. */
int privdrop_plan(struct privdrop *p, const char *user, const char *file, int line,
		  const char *where, char *err, size_t errlen);

/* The uid the process runs as once p is applied. */
uid_t privdrop_uid(const struct privdrop *p);

/* A capability's bit in a mask (cap: CAP_* of <linux/capability.h>). */
#define PRIVDROP_CAP(cap) (UINT64_C(1) << (cap))

/* True when the process may use capability cap (it is in the permitted set). */
bool privdrop_have(unsigned cap);

/* Drops to p's account keeping only the capabilities in keep (PRIVDROP_CAP masks) effective and
 * permitted. Only while the process has a single thread (capabilities are per thread): anything
 * else is refused. Returns 0, or negative errno with err written; after a failure the process
 * must not go on. */
int privdrop_apply(const struct privdrop *p, uint64_t keep, char *err, size_t errlen);

/* How the process stands now, for the log: "uid 1000, no capabilities". */
void privdrop_describe(char *buf, size_t len);

#endif
