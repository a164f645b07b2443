#include "privdrop.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

/* ---- capabilities, through the system calls (no library needed for three words) ---- */

struct caps {
	uint64_t eff, prm, inh;
};

static int caps_get(struct caps *c)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof d);
	if (syscall(SYS_capget, &h, d) < 0)
		return -errno;
	c->eff = d[0].effective | (uint64_t)d[1].effective << 32;
	c->prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	c->inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
	return 0;
}

static int caps_set(const struct caps *c)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2] = {
		{ .effective = (uint32_t)c->eff,
		  .permitted = (uint32_t)c->prm,
		  .inheritable = (uint32_t)c->inh },
		{ .effective = (uint32_t)(c->eff >> 32),
		  .permitted = (uint32_t)(c->prm >> 32),
		  .inheritable = (uint32_t)(c->inh >> 32) },
	};
	return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

uid_t privdrop_uid(const struct privdrop *p)
{
	return p->switch_user ? p->uid : geteuid();
}

bool privdrop_have(unsigned cap)
{
	struct caps c;
	return cap < 64 && caps_get(&c) == 0 && (c.prm & PRIVDROP_CAP(cap));
}

/* ---- the account ---- */

int privdrop_plan(struct privdrop *p, const char *user, const char *file, int line,
		  const char *where, char *err, size_t errlen)
{
	memset(p, 0, sizeof *p);
	const char *name = user ? user : CONFIG_DEFAULT_USER;
	char head[512];
	config_prefix(head, sizeof head, file, line, "user", where);
	if (strlen(name) >= sizeof p->user) {
		snprintf(err, errlen, "%s: account name too long", head);
		return -ENAMETOOLONG;
	}
	struct passwd pw, *found = NULL;
	char *buf = NULL;
	int rc = ERANGE;
	/* A large entry (many fields, long paths from a directory service) wants a larger buffer. */
	for (size_t len = 4096; rc == ERANGE && len <= 1u << 20; len *= 4) {
		char *more = realloc(buf, len);
		if (!more) {
			rc = ENOMEM;
			break;
		}
		buf = more;
		rc = getpwnam_r(name, &pw, buf, len, &found);
	}
	uid_t euid = geteuid();
	uid_t uid = found ? found->pw_uid : 0;
	gid_t gid = found ? found->pw_gid : 0;
	free(buf);
	/* POSIX lets "no such entry" come as 0, ENOENT or ESRCH; anything else is a lookup that
	 * failed (a directory service that is down), which must not pass for a missing account. */
	bool missing = !found && (rc == 0 || rc == ENOENT || rc == ESRCH);
	if (!found && !missing) {
		snprintf(err, errlen, "%s: cannot look up the account '%s': %s", head, name,
			 strerror(rc));
		return -rc;
	}
	if (!found) {
		if (user) {
			snprintf(err, errlen,
				 "%s: account '%s': no such account; create it (make install puts a "
				 "sysusers.d file for '" CONFIG_DEFAULT_USER "': systemd-sysusers) or "
				 "name another one",
				 head, name);
			return -ENOENT;
		}
		if (euid == 0)
			log_warn("started as root and the account '%s' does not exist: the network "
				 "process keeps uid 0, without capabilities, but still the owner of "
				 "root's files; create the account (systemd-sysusers, from the "
				 "sysusers.d file make install puts) or set 'user' in %s",
				 name, where);
		return 0;
	}
	if (euid != 0) {
		if (user && uid != euid) {
			snprintf(err, errlen,
				 "%s: cannot become '%s' (uid %u): started as uid %u, not root; start "
				 "as root, start as '%s', or remove 'user'",
				 head, name, (unsigned)uid, (unsigned)euid, name);
			return -EPERM;
		}
		return 0;
	}
	snprintf(p->user, sizeof p->user, "%s", name);
	p->uid = uid;
	p->gid = gid;
	p->switch_user = uid != 0;
	return 0;
}

/* ---- the drop ---- */

/* Threads of this process, from /proc; 0 when /proc cannot tell (errno says why). */
static unsigned thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return 0;
	unsigned n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Every capability outside keep leaves the bounding set, so that no later exec of a set-uid or
 * capability-carrying file can hand it back; it takes CAP_SETPCAP, which only a root start has. */
static int cut_bounding(uint64_t keep)
{
	for (unsigned cap = 0; cap < 64; cap++) {
		int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (in < 0)
			break; /* past the kernel's last capability */
		if (in == 1 && !(keep & PRIVDROP_CAP(cap)) &&
		    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			return -errno;
	}
	return 0;
}

static int switch_user(const struct privdrop *p, bool keep_caps)
{
	if (keep_caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return -errno;
	if (initgroups(p->user, p->gid) < 0 || setresgid(p->gid, p->gid, p->gid) < 0 ||
	    setresuid(p->uid, p->uid, p->uid) < 0)
		return -errno;
	if (keep_caps && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		return -errno;
	uid_t r, e, s;
	gid_t gr, ge, gs;
	if (getresuid(&r, &e, &s) < 0 || getresgid(&gr, &ge, &gs) < 0)
		return -errno;
	if (r != p->uid || e != p->uid || s != p->uid || gr != p->gid || ge != p->gid ||
	    gs != p->gid)
		return -EPERM;
	return 0;
}

int privdrop_apply(const struct privdrop *p, uint64_t keep, char *err, size_t errlen)
{
	unsigned threads = thread_count();
	if (threads == 0) {
		int e = errno ? errno : EIO;
		snprintf(err, errlen,
			 "cannot drop privileges: cannot tell whether other threads run "
			 "(/proc/self/task: %s); /proc must be mounted",
			 strerror(e));
		return -e;
	}
	if (threads > 1) {
		snprintf(err, errlen,
			 "cannot drop privileges: %u threads run already (each would keep its own "
			 "capabilities)",
			 threads);
		return -EBUSY;
	}
	struct caps now;
	int rc = caps_get(&now);
	if (rc < 0) {
		snprintf(err, errlen, "cannot read the capabilities: %s", strerror(-rc));
		return rc;
	}
	if (keep & ~now.prm) {
		snprintf(err, errlen, "cannot keep capabilities %#llx: the process does not hold them",
			 (unsigned long long)(keep & ~now.prm));
		return -EPERM;
	}
	const char *step = "bounding set";
	if ((now.eff & PRIVDROP_CAP(CAP_SETPCAP)) && (rc = cut_bounding(keep)) < 0)
		goto fail;
	step = "ambient capabilities";
	/* EINVAL: a kernel older than ambient capabilities, so there are none to clear. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
		rc = -errno;
		goto fail;
	}
	step = "switching to the account";
	if (p->switch_user && (rc = switch_user(p, keep != 0)) < 0)
		goto fail;
	step = "capabilities";
	const struct caps want = { .eff = keep, .prm = keep };
	if ((rc = caps_set(&want)) < 0)
		goto fail;
	step = "no_new_privs";
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		rc = -errno;
		goto fail;
	}
	step = "checking the result";
	struct caps after;
	if ((rc = caps_get(&after)) < 0)
		goto fail;
	if (after.eff != keep || after.prm != keep || after.inh != 0) {
		rc = -EPERM;
		goto fail;
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot drop privileges%s%s (%s): %s", p->switch_user ? " to " : "",
		 p->switch_user ? p->user : "", step, strerror(-rc));
	return rc;
}

void privdrop_describe(char *buf, size_t len)
{
	struct caps c = { 0 };
	caps_get(&c);
	if (c.eff == 0 && c.prm == 0)
		snprintf(buf, len, "uid %u, gid %u, no capabilities", (unsigned)geteuid(),
			 (unsigned)getegid());
	else
		snprintf(buf, len, "uid %u, gid %u, capabilities %#llx", (unsigned)geteuid(),
			 (unsigned)getegid(), (unsigned long long)c.eff);
}
