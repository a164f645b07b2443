#!/bin/sh
# Two daemons sharing one key file: an NTS-KE server and an NTP server on another address.
# With a short rotation interval both rotate on the same schedule; under the file lock one makes
# the new key and the other adopts it, so after rotations they hold the same primary key and the
# NTP server accepts cookies the KE server issued after the rotations.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init keyset-share
plan 7

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 4
KE=$PORT1
NTP=$PORT2
SA=$PORT3
SB=$PORT4
C="$T/certs"
mkdir "$T/keys"
chmod 700 "$T/keys"
cat >"$T/a.toml" <<CONF
[[nts-ke-server]]
listen = "127.0.0.2:$KE"
certificate-chain-path = "$C/server-a.chain.pem"
private-key-path = "$C/server-a.key"
ntp-server = "127.0.0.3"
ntp-port = $NTP

[keyset]
key-storage-path = "$T/keys/shared"
key-rotation-interval = 2

[observability]
status-listen = "127.0.0.1:$SA"
CONF
cat >"$T/b.toml" <<CONF
[[server]]
listen = "127.0.0.3:$NTP"

[keyset]
key-storage-path = "$T/keys/shared"
key-rotation-interval = 2

[synchronization]
local-stratum = 1

[observability]
status-listen = "127.0.0.1:$SB"
CONF

daemon_start a "$T/a.toml" "127.0.0.1:$SA" || bail_out "daemon A did not start"
daemon_start b "$T/b.toml" "127.0.0.1:$SB" || bail_out "daemon B did not start"
first=$(stat_of a keyset.primary_id)
is_int "$first" || bail_out "no keyset.primary_id in A's status"

# Wait (bounded, 30 s) until both have passed at least two rotations.
i=0
while [ $i -lt 150 ]; do
	pa=$(stat_of a keyset.primary_id)
	pb=$(stat_of b keyset.primary_id)
	if is_int "$pa" && is_int "$pb" && [ "$pa" -ge $((first + 2)) ] &&
		[ "$pb" -ge $((first + 2)) ]; then
		break
	fi
	sleep 0.2
	i=$((i + 1))
done
expect_gt "A rotated at least twice" "$pa" "$((first + 1))"
expect_gt "B rotated at least twice" "$pb" "$((first + 1))"

# Compare between rotations: A read before and after B must agree.
j=0
while [ $j -lt 20 ]; do
	pa=$(stat_of a keyset.primary_id)
	pb=$(stat_of b keyset.primary_id)
	[ "$pa" = "$(stat_of a keyset.primary_id)" ] && [ "$pa" = "$pb" ] && break
	sleep 0.3
	j=$((j + 1))
done
expect "both hold the same primary key id (one rotated, the other adopted)" "$pb" "$pa" \
	"$(grep -h keyset "$T/a.log" "$T/b.log" | tail -8)"
if grep -q "adopted the keyset another daemon stored" "$T/a.log" "$T/b.log"; then
	ok "one daemon adopted the keyset the other stored"
else
	not_ok "one daemon adopted the keyset the other stored" \
		"$(grep -h keyset "$T/a.log" "$T/b.log" | tail -8)"
fi

out=$("$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" --ntp 2>/dev/null ||
	echo '{"tool_exit":1}')
expect "a cookie from A after the rotations is accepted by B (authenticated at 127.0.0.3)" \
	"$(jget ntp.result "$out") $(jget server "$out")" "authenticated 127.0.0.3" "$out"

daemon_stop a
ra="$STOP_RC $STOP_KILLED"
daemon_stop b
expect "both stop cleanly" "$ra / $STOP_RC $STOP_KILLED" "0 no / 0 no"
expect "the shared key file is 0600" "$(stat -c %a "$T/keys/shared")" 600
