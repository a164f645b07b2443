#!/bin/sh
# Start-up errors an operator can act on. A file or an address the configuration names that
# cannot be used stops ntp-daemon and nts-pool-ke with "FILE:LINE: 'option' in [table]: ..."
# and the reason, with the likely fix where there is one; files (certificates, keys, pinned pool
# certificates, token files, the key file's directory) exit 78, sockets (an address on no
# interface, a port in use) exit 1. A failed start writes nothing: the key file's directory stays
# empty. A directory given as -c (to either program and to ntp-ctl validate) is named as such.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init errors
plan 22

[ -x "$TOOLS/hang-server" ] || bail_out "$TOOLS/hang-server not built (make check builds it)"
CTL="$TOP_BUILDDIR/ntp-ctl"
[ -x "$CTL" ] || bail_out "$CTL not built"
make_cert server-a --ip 127.0.0.2 || bail_out "gen-cert.sh failed"
make_cert pool --dns pool.test --ip 127.0.0.1 || bail_out "gen-cert.sh failed"
alloc_ports 5
KE=$PORT1
STATUS=$PORT2
HELD=$PORT3
PK=$PORT4
UP=$PORT5
C="$T/certs"
KEYS="$T/keys"
mkdir "$KEYS"
chmod 700 "$KEYS"
ln -s "$T/missing.key" "$T/dangling.key"

# A port something else holds: TCP on 127.0.0.2:HELD and on the status address 127.0.0.1:HELD.
"$TOOLS/hang-server" "127.0.0.2:$HELD" 300 >"$T/hang2.log" 2>&1 &
track $!
"$TOOLS/hang-server" "127.0.0.1:$HELD" 300 >"$T/hang1.log" 2>&1 &
track $!
wait_for_port tcp 127.0.0.2 "$HELD" 10 || bail_out "hang-server did not listen on 127.0.0.2"
wait_for_port tcp 127.0.0.1 "$HELD" 10 || bail_out "hang-server did not listen on 127.0.0.1"

# daemon_conf NAME [EXTRA]: $T/NAME.toml, a time source on 127.0.0.2 whose key file is in
# $KEYS. Variables override its parts: D_LISTEN, D_CHAIN, D_KEY, D_KEYFILE; the EXTRA lines
# go to its [[nts-ke-server]] table; D_MORE is appended at the end.
daemon_conf() {
	cat >"$T/$1.toml" <<DAEMON
[[nts-ke-server]]
listen = "${D_LISTEN:-127.0.0.2:$KE}"
certificate-chain-path = "${D_CHAIN:-$C/server-a.chain.pem}"
private-key-path = "${D_KEY:-$C/server-a.key}"
${2:-}

[keyset]
key-storage-path = "${D_KEYFILE:-$KEYS/keys}"

[synchronization]
clock-control = false
${D_MORE:-}
DAEMON
}

# pool_bad NAME [EXTRA]: $T/NAME.toml, a broker on 127.0.0.1 with one upstream. Variables
# override its parts: P_LISTEN, P_CHAIN, P_KEY, P_CA, P_UPSTREAM; EXTRA lines go to its table.
pool_bad() {
	cat >"$T/$1.toml" <<POOL
[nts-pool-ke-server]
listen = "${P_LISTEN:-127.0.0.1:$PK}"
certificate-chain-path = "${P_CHAIN:-$C/pool.chain.pem}"
private-key-path = "${P_KEY:-$C/pool.key}"
certificate-authority-path = "${P_CA:-$C/ca.pem}"
key-exchange-servers = [ ${P_UPSTREAM:-$(upstream 127.0.0.2 "$UP")} ]
${2:-}
POOL
}

# run_bad PROGRAM NAME: runs PROGRAM -c $T/NAME.toml (bounded); its output in $T/NAME.log and
# its exit status in RC.
run_bad() {
	RC=0
	timeout 30 "$1" -c "$T/$2.toml" >"$T/$2.log" 2>&1 || RC=$?
}

# line_of NAME OPTION: the line of $T/NAME.toml where OPTION is set.
line_of() {
	grep -n "^$2 = " "$T/$1.toml" | head -n 1 | cut -d: -f1
}

# check DESC NAME STATUS TABLE OPTION REASON [HINT]: the run of NAME exited STATUS, its output
# has "$T/NAME.toml:LINE: 'OPTION' in TABLE: " on a line that also holds REASON (and HINT),
# and $KEYS is still empty.
check() {
	c_line=$(line_of "$2" "$5")
	c_head="$T/$2.toml:$c_line: '$5' in $4: "
	c_msg=no
	if grep -F -e "$c_head" "$T/$2.log" | grep -F -e "$6" | grep -qF -e "${7:-$6}"; then
		c_msg=yes
	fi
	c_files=$(find "$KEYS" -mindepth 1 -printf '%f ')
	expect "$1" "$RC $c_msg files:${c_files}" "$3 yes files:" \
		"wanted: $c_head ... $6 ${7:-}" "$(cat "$T/$2.log")"
}

# ---- ntp-daemon: files --------------------------------------------------------------------

D_CHAIN="$T/nonexistent/chain.pem" daemon_conf chain
run_bad "$DAEMON" chain
check "daemon: missing certificate chain -> 78, FILE:LINE, option, reason" chain 78 \
	"[[nts-ke-server]]" certificate-chain-path \
	"$T/nonexistent/chain.pem: No such file or directory"

# A key that cannot be read even by root: a directory, and a dangling symbolic link.
D_KEY="$C" daemon_conf keydir
run_bad "$DAEMON" keydir
check "daemon: private key is a directory -> 78, says so" keydir 78 "[[nts-ke-server]]" \
	private-key-path "$C: is a directory"

D_KEY="$T/dangling.key" daemon_conf keylink
run_bad "$DAEMON" keylink
check "daemon: private key is a dangling symlink -> 78, says so" keylink 78 \
	"[[nts-ke-server]]" private-key-path "$T/dangling.key: No such file or directory" \
	"a symbolic link to a missing file"

daemon_conf pin "authorized-pool-server-certificates = [\"$C/pool.pem\", \"$T/absent.pem\"]"
run_bad "$DAEMON" pin
check "daemon: missing authorised pool certificate -> 78, names that file" pin 78 \
	"[[nts-ke-server]]" authorized-pool-server-certificates \
	"$T/absent.pem: No such file or directory"

daemon_conf tokens "accepted-pool-authentication-tokens-path = \"$T/absent-tokens\""
run_bad "$DAEMON" tokens
check "daemon: missing token file -> 78" tokens 78 "[[nts-ke-server]]" \
	accepted-pool-authentication-tokens-path "$T/absent-tokens: No such file or directory"

D_MORE="[[source]]
mode = \"nts\"
address = \"127.0.0.3:$UP\"
certificate-authority = \"$T/absent-ca.pem\"" daemon_conf ca
run_bad "$DAEMON" ca
check "daemon: missing CA of an NTS source -> 78" ca 78 "[[source]]" certificate-authority \
	"$T/absent-ca.pem: No such file or directory"

D_KEYFILE="$T/nodir/keys" daemon_conf keyfile
run_bad "$DAEMON" keyfile
nodir=absent
[ ! -e "$T/nodir" ] || nodir=created
check "daemon: key file in a missing directory -> 78, names the directory" keyfile 78 \
	"[keyset]" key-storage-path "directory $T/nodir: No such file or directory"
expect "daemon: the missing key directory is not created" "$nodir" absent

RC=0
timeout 30 "$DAEMON" -c "$T" >"$T/dir.log" 2>&1 || RC=$?
msg=no
grep -qF -e "$T: is a directory, not a configuration file" "$T/dir.log" && msg=yes
expect "daemon: -c DIRECTORY -> 78, 'is a directory'" "$RC $msg" "78 yes" "$(cat "$T/dir.log")"

# ---- ntp-daemon: sockets (exit 1, a runtime failure; still nothing written) -----------------

D_LISTEN="192.0.2.1:$KE" daemon_conf remote
run_bad "$DAEMON" remote
check "daemon: listen on an address of no interface -> 1, names the fix" remote 1 \
	"[[nts-ke-server]]" listen "192.0.2.1:$KE: address not available" \
	"on none of this machine's interfaces"

D_LISTEN="127.0.0.2:$HELD" daemon_conf inuse
run_bad "$DAEMON" inuse
check "daemon: listen on a port in use -> 1, names the fix" inuse 1 "[[nts-ke-server]]" \
	listen "127.0.0.2:$HELD: address already in use" "another instance of this program"

D_MORE="[observability]
status-listen = \"127.0.0.1:$HELD\"" daemon_conf status
run_bad "$DAEMON" status
check "daemon: status-listen on a port in use -> 1" status 1 "[observability]" status-listen \
	"127.0.0.1:$HELD: address already in use" "another instance of this program"

# The same configuration with everything in order starts and creates its key file: the checks
# above looked at the directory the daemon really writes to.
D_MORE="[observability]
status-listen = \"127.0.0.1:$STATUS\"" daemon_conf good
if daemon_start good "$T/good.toml" "127.0.0.1:$STATUS" && [ -f "$KEYS/keys" ]; then
	ok "daemon: the corrected configuration starts and creates its key file"
else
	not_ok "daemon: the corrected configuration starts and creates its key file" \
		"$(ls -la "$KEYS")" "$(log_tail "$T/good.log")"
fi
daemon_stop good
rm -f "$KEYS/keys"

# ---- ntp-ctl validate ---------------------------------------------------------------------

RC=0
"$CTL" validate -c "$T" >"$T/ctl.log" 2>&1 || RC=$?
msg=no
grep -qF -e "$T: is a directory, not a configuration file" "$T/ctl.log" && msg=yes
expect "ntp-ctl validate -c DIRECTORY -> 1, 'is a directory'" "$RC $msg" "1 yes" \
	"$(cat "$T/ctl.log")"

# ---- nts-pool-ke ----------------------------------------------------------------------------

W="[nts-pool-ke-server]"
P_CHAIN="$T/nonexistent/pool.pem" pool_bad pchain
run_bad "$POOL_KE" pchain
check "broker: missing certificate chain -> 78" pchain 78 "$W" certificate-chain-path \
	"$T/nonexistent/pool.pem: No such file or directory"

P_KEY="$C" pool_bad pkey
run_bad "$POOL_KE" pkey
check "broker: private key is a directory -> 78" pkey 78 "$W" private-key-path \
	"$C: is a directory"

P_CA="$T/absent-ca.pem" pool_bad pca
run_bad "$POOL_KE" pca
check "broker: missing CA file -> 78" pca 78 "$W" certificate-authority-path \
	"$T/absent-ca.pem: No such file or directory"

P_UPSTREAM=$(upstream 127.0.0.2 "$UP" 1 "authentication-token-path = \"$T/absent-token\"") \
	pool_bad ptoken
run_bad "$POOL_KE" ptoken
# The token file is an option of the upstream's inline table, on the key-exchange-servers line.
line=$(line_of ptoken key-exchange-servers)
msg=no
grep -F -e "$T/ptoken.toml:$line: 'authentication-token-path' in $W key-exchange-servers" \
	"$T/ptoken.log" | grep -qF -e "$T/absent-token: No such file or directory" && msg=yes
expect "broker: missing upstream token file -> 78, FILE:LINE, option, reason" "$RC $msg" \
	"78 yes" "$(cat "$T/ptoken.log")"

pool_bad pgeo "geoip-database-path = \"$T/absent.mmdb\""
run_bad "$POOL_KE" pgeo
check "broker: missing geoip database -> 78" pgeo 78 "$W" geoip-database-path \
	"$T/absent.mmdb: No such file or directory"

RC=0
timeout 30 "$POOL_KE" -c "$T" >"$T/pdir.log" 2>&1 || RC=$?
msg=no
grep -qF -e "$T: is a directory, not a configuration file" "$T/pdir.log" && msg=yes
expect "broker: -c DIRECTORY -> 78, 'is a directory'" "$RC $msg" "78 yes" "$(cat "$T/pdir.log")"

P_LISTEN="192.0.2.1:$PK" pool_bad premote
run_bad "$POOL_KE" premote
check "broker: listen on an address of no interface -> 1, names the fix" premote 1 "$W" \
	listen "192.0.2.1:$PK: address not available" "on none of this machine's interfaces"

P_LISTEN="127.0.0.1:$HELD" pool_bad pinuse
run_bad "$POOL_KE" pinuse
check "broker: listen on a port in use -> 1, names the fix" pinuse 1 "$W" listen \
	"127.0.0.1:$HELD: address already in use" "another instance of this program"
