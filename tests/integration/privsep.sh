#!/bin/sh
# Privilege separation (doc/deploy.md, "The privilege model"). Started as root with a `user`,
# ntp-daemon and nts-pool-ke bind and read their keys, then every thread of the process runs as
# that account with no capability in any set and no_new_privs, yet serves: a key exchange
# through the broker to the source and NTS NTP at the source work. The key file is created
# after the drop (so by the account); a reload re-reads files as the account. A missing account
# or a user that cannot switch is a configuration error.
#
# Clock control is started two ways, neither of which can touch the host clock: under
# `setpriv --bounding-set -sys_time` (no CAP_SYS_TIME anywhere: the start must fail and name the
# fix), and inside a user namespace of this test's own, whose capabilities the kernel never
# honours for the clock (CAP_SYS_TIME counts only in the initial namespace) and whose only
# source never answers, so no adjustment is ever asked for. There the clock helper is checked:
# a child of its own holding CAP_SYS_TIME and nothing else, as the account.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init privsep
plan 23

[ "$(id -u)" = 0 ] || bail_out "privsep.sh needs root (to start the daemons as root)"
id nobody >/dev/null 2>&1 || bail_out "no account 'nobody' to drop to"
NOBODY="$(id -u nobody) $(id -g nobody)"
pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 8
KE=$PORT1
NTP=$PORT2
SA=$PORT3
PK=$PORT4
PS=$PORT5
DEAD=$PORT6
SC=$PORT7
SN=$PORT8
C="$T/certs"

# field PID NAME: NAME's value (Uid, CapEff, NoNewPrivs...) in /proc/PID/task/*/status, one
# per distinct value over every thread, space-joined.
field() {
	for f_s in /proc/"$1"/task/*/status; do
		awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$f_s"
	done | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# creds PID: "UID GID CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs" (distinct values over the
# threads; the uid and gid as the real ids, when all four of each agree).
creds() {
	c_u=$(field "$1" Uid)
	c_g=$(field "$1" Gid)
	c_one='$1 == $2 && $2 == $3 && $3 == $4 { print $1; next } { print "mixed(" $0 ")" }'
	c_out="$(echo "$c_u" | awk "$c_one") $(echo "$c_g" | awk "$c_one")"
	for c_f in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do
		c_out="$c_out $(field "$1" "$c_f")"
	done
	echo "$c_out"
}

threads() {
	ls /proc/"$1"/task | wc -l
}

# children PID: the pids whose parent is PID, space-separated (from every process's stat, whose
# fourth field, after the parenthesised name, is the parent's pid).
children() {
	cat /proc/[0-9]*/stat 2>/dev/null |
		awk -v p="$1" '{ pid = $1; sub(/^.*\) /, ""); split($0, f, " "); if (f[2] == p) print pid }' |
		tr '\n' ' ' | sed 's/ $//'
}

NONE=0000000000000000
UNPRIVILEGED="$NOBODY $NONE $NONE $NONE $NONE $NONE 1"

# ---- a time source as nobody -----------------------------------------------------------------

source_conf a 127.0.0.2 "$KE" "$NTP" "$SA"
chown nobody "$T/a-keys"
printf '\n[daemon]\nuser = "nobody"\nworkers = 2\n' >>"$T/a.toml"
daemon_start a "$T/a.toml" "127.0.0.1:$SA" || bail_out "ntp-daemon as nobody did not start"
expect "ntp-daemon: every thread runs as nobody with no capability and no_new_privs" \
	"$(creds "$a_pid")" "$UNPRIVILEGED" "$(cat /proc/"$a_pid"/status)"
expect_gt "ntp-daemon: the workers are threads of that process" "$(threads "$a_pid")" 2
expect "ntp-daemon: no clock helper without clock control" "$(children "$a_pid")" ""
expect "the key file was created by nobody, after the drop" \
	"$(stat -c '%u %g' "$T/a-keys/keys" 2>&1)" "$NOBODY"
grep -q "running as uid $(id -u nobody), gid $(id -g nobody), no capabilities" "$T/a.log" &&
	ok "the log says whom the daemon runs as" ||
	not_ok "the log says whom the daemon runs as" "$(log_tail "$T/a.log")"

# ---- the broker as nobody, in front of it ----------------------------------------------------

pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KE")" \
	"$(printf 'deep-check-interval-s = 0\nuser = "nobody"\nworkers = 2')"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke as nobody did not start"
expect "nts-pool-ke: every thread runs as nobody with no capability and no_new_privs" \
	"$(creds "$p_pid")" "$UNPRIVILEGED" "$(cat /proc/"$p_pid"/status)"
wait_upstream p 127.0.0.2 "$KE" healthy 30 || true
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --ntp 2>&1) || true
expect "through both: key exchange by the broker, 8 cookies, NTS NTP authenticated at the source" \
	"$(jget handshake "$out") $(jget cookies "$out") $(jget server "$out") $(jget ntp.result "$out")" \
	"ok 8 127.0.0.2 authenticated" "$out
$(log_tail "$T/p.log")"

# ---- reloads read files as the account -------------------------------------------------------

# hup_and_wait NAME PATTERN: SIGHUP to NAME, then wait (bounded) until its log shows PATTERN once
# more than before.
hup_and_wait() {
	eval "h_pid=\${${1}_pid}"
	h_before=$(grep -c "$2" "$T/$1.log" || true)
	kill -HUP "$h_pid"
	h_i=0
	while [ "$(grep -c "$2" "$T/$1.log" || true)" -le "$h_before" ] && [ $h_i -lt 100 ]; do
		sleep 0.1
		h_i=$((h_i + 1))
	done
}
chmod 600 "$C/server-a.key"
hup_and_wait a "reload failed"
pat="private-key-path.*uid $(id -u nobody)) must be able to read it"
grep "reload failed" "$T/a.log" | tail -n 1 | grep -q "$pat" &&
	ok "reload: a key nobody cannot read is refused, naming the option and the account's uid" ||
	not_ok "reload: a key nobody cannot read is refused, naming the option and the account's uid" \
		"$(log_tail "$T/a.log")"
expect "reload refused: the source still serves with the previous key" \
	"$(jget cookies "$("$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" 2>&1)")" 8
chown nobody "$C/server-a.key"
fails=$(grep -c "reload failed" "$T/a.log" || true)
hup_and_wait a "certificates reloaded"
expect "reload: once nobody may read the key, the reload passes" \
	"$(grep -c "certificates reloaded" "$T/a.log" || true) $(grep -c "reload failed" "$T/a.log" ||
		true)" "1 $fails" "$(log_tail "$T/a.log")"
daemon_stop p
daemon_stop a
# The keys gen-cert.sh made are root's, mode 0600: read before the drop, so both programs served,
# but each said at start that its next reload would fail, naming the option and the uid.
# unreadable_key NAME: the pattern of that warning for $C/NAME.key.
unreadable_key() {
	echo "'private-key-path' in \[[a-z[-]*\]\]*: $C/$1.key: the user this program runs as" \
		"(uid $(id -u nobody)) cannot read it (Permission denied); the next reload"
}
expect "a key only root can read: each program warns at start that its next reload will fail" \
	"$(grep -c "warn .*a.toml:[0-9]*: $(unreadable_key server-a)" "$T/a.log") $(grep -c \
		"warn .*pool.toml:[0-9]*: $(unreadable_key pool)" "$T/p.log")" "1 1" \
	"$(grep "cannot read it" "$T/a.log" "$T/p.log")"

# ---- configuration errors ----------------------------------------------------------------------

# run_bad NAME ARGS...: runs ARGS (bounded), output in $T/NAME.log, exit status in RC.
run_bad() {
	r_name=$1
	shift
	RC=0
	timeout 30 "$@" >"$T/$r_name.log" 2>&1 || RC=$?
}
sed 's/^user = "nobody"/user = "no-such-account-zq"/' "$T/a.toml" >"$T/bad-user.toml"
line=$(grep -n '^user' "$T/bad-user.toml" | cut -d: -f1)
run_bad bad-user "$DAEMON" -c "$T/bad-user.toml" --no-clock-control
expect "ntp-daemon: an account that does not exist: exit 78, the file, line, option and fix" \
	"$RC $(grep -c "bad-user.toml:$line: 'user' in \[daemon\]: account 'no-such-account-zq'.*create it" \
		"$T/bad-user.log")" \
	"78 1" "$(cat "$T/bad-user.log")"
sed 's/^user = "nobody"/user = "no-such-account-zq"/' "$T/pool.toml" >"$T/bad-pool-user.toml"
run_bad bad-pool-user "$POOL_KE" -c "$T/bad-pool-user.toml"
expect "nts-pool-ke: the same for its 'user'" \
	"$RC $(grep -c "'user' in \[nts-pool-ke-server\]: account 'no-such-account-zq'" \
		"$T/bad-pool-user.log")" \
	"78 1" "$(cat "$T/bad-pool-user.log")"
sed 's/^user = "nobody"/user = "root"/' "$T/a.toml" >"$T/as-root.toml"
run_bad not-root setpriv --reuid=nobody --regid=nogroup --clear-groups \
	"$DAEMON" -c "$T/as-root.toml" --no-clock-control
expect "started as nobody, 'user = root' cannot be honoured: exit 78 with the reason" \
	"$RC $(grep -c "cannot become 'root' (uid 0): started as uid $(id -u nobody), not root" \
		"$T/not-root.log")" \
	"78 1" "$(cat "$T/not-root.log")"

# The key directory nobody cannot write: the start fails once the daemon is nobody, and nothing
# was written.
source_conf k 127.0.0.2 "$KE" "$NTP" "$SA"
printf '\n[daemon]\nuser = "nobody"\n' >>"$T/k.toml"
run_bad k "$DAEMON" -c "$T/k.toml" --no-clock-control
pat="'key-storage-path' in \[keyset\].*uid $(id -u nobody)) needs access"
expect "a key directory nobody cannot write: the start fails naming key-storage-path; nothing written" \
	"$RC $(grep -c "$pat" "$T/k.log") $(ls "$T/k-keys" | wc -l)" \
	"1 1 0" "$(cat "$T/k.log")"
# A key file of nobody's in a directory nobody may not write: it could be read, but no rotation
# could replace it, so the start fails as well, naming the directory, and the file is untouched.
chmod 755 "$T/k-keys"
cp -p "$T/a-keys/keys" "$T/k-keys/keys"
before=$(cksum <"$T/k-keys/keys")
run_bad k-dir "$DAEMON" -c "$T/k.toml" --no-clock-control
same=changed
[ "$(cksum <"$T/k-keys/keys")" = "$before" ] && same=same
expect "a key file nobody owns, in a directory nobody cannot write: the start fails, naming it" \
	"$RC $(grep -c "'key-storage-path' in \[keyset\].*cannot write key files in $T/k-keys:" \
		"$T/k-dir.log") $same" "1 1 same" "$(cat "$T/k-dir.log")"

# The default account: root with no `user` runs as the install's account if it exists, else
# keeps uid 0 without any capability, and says so.
source_conf d 127.0.0.2 "$KE" "$NTP" "$SA"
daemon_start d "$T/d.toml" "127.0.0.1:$SA" || bail_out "ntp-daemon without 'user' did not start"
if getent passwd ntspool >/dev/null; then
	expect "no 'user', root: runs as the account 'ntspool'" "$(creds "$d_pid" | cut -d' ' -f1)" \
		"$(id -u ntspool)"
else
	expect "no 'user', root, no account 'ntspool': uid 0, no capability, a warning naming the fix" \
		"$(creds "$d_pid") $(grep -c "account 'ntspool' does not exist.*systemd-sysusers" "$T/d.log")" \
		"0 0 $NONE $NONE $NONE $NONE $NONE 1 1" "$(log_tail "$T/d.log")"
fi
daemon_stop d

# ---- clock control -----------------------------------------------------------------------------

client_conf "$T/c.toml" "$SC" "$(source_entry server "127.0.0.1:$DEAD")" \
	"$(printf '[daemon]\nuser = "nobody"')"
sed -i 's/^clock-control = false/clock-control = true/' "$T/c.toml"
line=$(grep -n '^clock-control' "$T/c.toml" | cut -d: -f1)
run_bad no-cap setpriv --bounding-set -sys_time --inh-caps -all "$DAEMON" -c "$T/c.toml"
expect "clock control without CAP_SYS_TIME: exit 78, naming the capability and the fixes" \
	"$RC $(grep -c "clock-control is on, but this process may not adjust the clock (it lacks CAP_SYS_TIME).*clock-control = false" \
		"$T/no-cap.log")" \
	"78 1" "$(cat "$T/no-cap.log")"

# in_userns ARGS...: runs ARGS in the background as root of a new user namespace whose ids map
# one to one onto the host's (so nobody is nobody); sets NS_PID.
in_userns() {
	rm -f "$T/mapped"
	unshare --user sh -c 'while [ ! -e "$0" ]; do sleep 0.05; done; exec "$@"' "$T/mapped" \
		"$@" >"$T/ns.log" 2>&1 &
	NS_PID=$!
	track "$NS_PID"
	# The map may be written only once unshare made the namespace.
	ns_i=0
	while [ "$(readlink /proc/"$NS_PID"/ns/user)" = "$(readlink /proc/self/ns/user)" ]; do
		[ "$ns_i" -lt 200 ] || bail_out "unshare --user made no namespace: $(cat "$T/ns.log")"
		sleep 0.05
		ns_i=$((ns_i + 1))
	done
	echo "0 0 4294967295" >/proc/"$NS_PID"/uid_map
	echo "0 0 4294967295" >/proc/"$NS_PID"/gid_map
	touch "$T/mapped"
}
in_userns "$DAEMON" -c "$T/c.toml" -l debug
"$TOOLS/http-get" "127.0.0.1:$SC" /status --wait 20 >/dev/null 2>&1 ||
	bail_out "ntp-daemon in a user namespace did not start: $(tail -n 5 "$T/ns.log")"
helper=$(children "$NS_PID")
expect "clock control: the network process keeps no capability" "$(creds "$NS_PID")" \
	"$UNPRIVILEGED" "$(cat "$T/ns.log")"
expect "clock control: one child, the clock helper" \
	"$(cat /proc/"${helper:-0}"/comm 2>&1)" "clock-helper" "children: $helper"
TIME=0000000002000000 # CAP_SYS_TIME (25) alone
expect "the helper: nobody, CAP_SYS_TIME alone (effective, permitted, bounding), no_new_privs" \
	"$(creds "${helper:-0}")" "$NOBODY $NONE $TIME $TIME $TIME $NONE 1" "$(cat "$T/ns.log")"
kill -TERM "$NS_PID"
stop_pid "$NS_PID" 20
expect "stopped: the daemon exits 0 and the helper with it" \
	"$STOP_RC $(test -e /proc/"${helper:-0}" && echo helper-left || echo gone)" "0 gone" \
	"$(tail -n 5 "$T/ns.log")"

# A helper that dies is noticed at once, not at the next adjustment: the daemon stops with exit 1
# (so that a service manager restarts it) rather than announce a clock it can no longer steer.
in_userns "$DAEMON" -c "$T/c.toml" -l debug
"$TOOLS/http-get" "127.0.0.1:$SC" /status --wait 20 >/dev/null 2>&1 ||
	bail_out "ntp-daemon in a user namespace did not start again: $(tail -n 5 "$T/ns.log")"
helper=$(children "$NS_PID")
kill -KILL "${helper:-0}" 2>/dev/null || true
stop_pid "$NS_PID" 20
expect "the helper killed: the daemon stops by itself with exit 1, saying why" \
	"$STOP_KILLED $STOP_RC $(grep -c "error .*the clock helper is gone.*: stopping" "$T/ns.log")" \
	"no 1 1" "$(tail -n 8 "$T/ns.log")"
