#!/bin/sh
# The keyset survives a restart: cookies issued before SIGTERM are still accepted by the next
# run with the same key file, and refused (NTS NAK) by a run with other keys. A key file other
# users can read makes the daemon refuse to start.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init keyset-restart
plan 14

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 3
KE=$PORT1
NTP=$PORT2
STATUS=$PORT3
C="$T/certs"
mkdir "$T/keys"
chmod 700 "$T/keys"
write_conf() { # FILE KEYFILE
	cat >"$1" <<EOF
[[nts-ke-server]]
listen = "127.0.0.2:$KE"
certificate-chain-path = "$C/server-a.chain.pem"
private-key-path = "$C/server-a.key"
ntp-port = $NTP

[[server]]
listen = "127.0.0.2:$NTP"

[keyset]
key-storage-path = "$2"

[observability]
status-listen = "127.0.0.1:$STATUS"
log-level = "debug"

[synchronization]
clock-control = false
local-stratum = 1
EOF
}
write_conf "$T/ntp.toml" "$T/keys/keys"
write_conf "$T/other.toml" "$T/keys/other-keys"
kec() {
	"$TOOLS/ke-client" "$@" 2>"$T/kec.err" || {
		echo "{\"tool_exit\":$?}"
		sed 's/^/# ke-client: /' "$T/kec.err" >&2
	}
}

daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start"
ok "ntp-daemon started with key-storage-path $T/keys/keys"
primary0=$(stat_of d keyset.primary_id)

out=$(kec --connect "127.0.0.2:$KE" --ca "$C/ca.pem" --ntp --save "$T/saved.json")
expect "key exchange: 8 cookies saved with the keys" \
	"$(jget cookies "$out") $(jget cookies.7 "$(cat "$T/saved.json" 2>/dev/null || echo '{}')" |
		grep -c '^[0-9a-f]*$')" "8 1" "$out"
expect "NTS NTP before the restart: authenticated" "$(jget ntp.result "$out")" authenticated \
	"$(jget ntp "$out")"

daemon_stop d
expect "SIGTERM: exit status 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/d.log" 10)"
if [ -f "$T/keys/keys" ]; then
	expect "the key file is stored with mode 0600" "$(stat -c %a "$T/keys/keys")" 600
else
	not_ok "the key file is stored with mode 0600" "no file $T/keys/keys" "$(ls -la "$T/keys")"
fi

if daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS"; then
	ok "restarted with the same key file"
else
	not_ok "restarted with the same key file"
fi
expect "the primary key id is the one before the restart" "$(stat_of d keyset.primary_id)" \
	"$primary0"
out=$(kec --load "$T/saved.json")
expect "NTS NTP after the restart with a saved cookie: authenticated, not a NAK" \
	"$(jget ntp.result "$out")" authenticated "$out"
expect_gt "status after the restart: nts_accepted > 0" \
	"$(stat_of d ntp_servers.0.nts_accepted)" 0
daemon_stop d
expect "second SIGTERM: exit status 0" "$STOP_RC $STOP_KILLED" "0 no" \
	"$(log_tail "$T/d.log" 10)"

if daemon_start d "$T/other.toml" "127.0.0.1:$STATUS"; then
	ok "started with a different key file"
else
	not_ok "started with a different key file"
fi
out=$(kec --load "$T/saved.json")
expect "a daemon with other keys answers the saved cookie with an NTS NAK" \
	"$(jget ntp.result "$out")" nak "$out"
expect_gt "status: nts_naks > 0" "$(stat_of d ntp_servers.0.nts_naks)" 0
daemon_stop d

# A key file readable by others: refused at startup, naming the fix.
chmod 0644 "$T/keys/keys"
"$DAEMON" -c "$T/ntp.toml" >"$T/refused.log" 2>&1 &
pid=$!
track "$pid"
stop_pid "$pid" 20
case $STOP_KILLED:$STOP_RC in
no:78 | no:1)
	if grep -q chmod "$T/refused.log"; then
		ok "key file 0644: refused (exit status $STOP_RC) with a message containing chmod"
	else
		not_ok "key file 0644: refused with a message containing chmod" \
			"exit status $STOP_RC; output:" "$(cat "$T/refused.log")"
	fi
	;;
*)
	not_ok "key file 0644: refused with a message containing chmod" \
		"killed after 20 s: $STOP_KILLED, exit status $STOP_RC; output:" \
		"$(tail -n 20 "$T/refused.log")"
	;;
esac
