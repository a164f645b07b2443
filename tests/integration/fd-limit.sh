#!/bin/sh
# Connection limits above what the descriptor limit allows are capped at start with a warning
# that names the option, the numbers and the fix, instead of accepts failing later without a
# word: ntp-daemon (concurrent-connections = 512) and nts-pool-ke (max-connections = 512) under
# `ulimit -n 128`, both still serving. The soft limit is raised to the hard one first. And one
# address cannot take every slot: max-connections-per-address refuses the connection beyond it.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init fd-limit
plan 10

pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 5
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
PK=$PORT4
PS=$PORT5
C="$T/certs"

# limited PROGRAM: a wrapper that runs PROGRAM with soft and hard descriptor limits of 128.
limited() {
	cat >"$T/limited-$1" <<EOF
#!/bin/sh
ulimit -n 128
exec "$2" "\$@"
EOF
	chmod 755 "$T/limited-$1"
	echo "$T/limited-$1"
}

SOURCE_KE_EXTRA="concurrent-connections = 512
max-connections-per-address = 3
key-exchange-timeout-ms = 30000" source_conf a 127.0.0.2 "$KEA" "$NTPA" "$SA"
REAL_DAEMON=$DAEMON
DAEMON=$(limited daemon "$REAL_DAEMON")
daemon_start a "$T/a.toml" "127.0.0.1:$SA" || bail_out "ntp-daemon did not start under ulimit -n 128"
DAEMON=$REAL_DAEMON
if grep -q "warn  concurrent-connections = 512 on 1 listener(s) needs about .* but the limit is 128: each listener serves at most [0-9]* connections; raise the limit" "$T/a.log"
then
	ok "ntp-daemon: the warning names the option, the numbers and the fix"
else
	not_ok "ntp-daemon: the warning names the option, the numbers and the fix" \
		"$(log_tail "$T/a.log" 20)"
fi
cap=$(stat_of a nts_ke_servers.0.max_connections)
if is_int "$cap" && [ "$cap" -gt 0 ] && [ "$cap" -lt 128 ]; then
	ok "ntp-daemon: status shows the connection limit in force ($cap, below 128)"
else
	not_ok "ntp-daemon: status shows the connection limit in force" "$cap" "$(status_of a)"
fi
out=$("$TOOLS/ke-client" --connect "127.0.0.2:$KEA" --ca "$C/ca.pem" 2>&1) || true
expect "ntp-daemon: still serves key exchanges" "$(jget cookies "$out")" 8 "$out"

# Three connections from 127.0.0.1 that hold after their handshake fill that address's share;
# a fourth is closed at once, before any TLS.
for i in 1 2 3; do
	"$TOOLS/ke-client" --connect "127.0.0.2:$KEA" --ca "$C/ca.pem" --hold 20000 \
		>"$T/hold$i.json" 2>&1 &
	eval "hold_pid$i=\$!"
	eval "track \$hold_pid$i"
done
wait_stat a nts_ke_servers.0.active 3 20 || true
expect "ntp-daemon: three held connections from one address" \
	"$(stat_of a nts_ke_servers.0.active)" 3 "$(status_of a)"
out=$("$TOOLS/ke-client" --connect "127.0.0.2:$KEA" --ca "$C/ca.pem" 2>&1) || true
expect "ntp-daemon: a fourth from that address is refused before TLS, and counted" \
	"$(jget handshake "$out") $(stat_of a nts_ke_servers.0.refused_per_address)" "failed 1" \
	"$out" "$(status_of a)"
for i in 1 2 3; do
	eval "kill -TERM \$hold_pid$i 2>/dev/null; stop_pid \$hold_pid$i 5"
done
wait_stat a nts_ke_servers.0.active 0 20 || true
out=$("$TOOLS/ke-client" --connect "127.0.0.2:$KEA" --ca "$C/ca.pem" 2>&1) || true
expect "ntp-daemon: once they are gone the address is served again" "$(jget cookies "$out")" 8 \
	"$out"

pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KEA")" "max-connections = 512
deep-check-interval-s = 0"
REAL_POOL=$POOL_KE
POOL_KE=$(limited pool "$REAL_POOL")
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start under ulimit -n 128"
POOL_KE=$REAL_POOL
if grep -q "warn  max-connections = 512 on 1 listener(s) needs about .* but the limit is 128" "$T/p.log"
then
	ok "nts-pool-ke: the warning names the option and the numbers"
else
	not_ok "nts-pool-ke: the warning names the option and the numbers" \
		"$(log_tail "$T/p.log" 20)"
fi
pcap=$(stat_of p limits.max_connections)
if is_int "$pcap" && [ "$pcap" -gt 0 ] && [ "$pcap" -lt 128 ]; then
	ok "nts-pool-ke: status limits.max_connections is the limit in force ($pcap)"
else
	not_ok "nts-pool-ke: status limits.max_connections is the limit in force" "$pcap"
fi
wait_upstream p 127.0.0.2 "$KEA" healthy 30 || true
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" 2>&1) || true
expect "nts-pool-ke: still serves clients" "$(jget cookies "$out")" 8 "$out"

daemon_stop p
rc_p="$STOP_RC $STOP_KILLED"
daemon_stop a
expect "both stop cleanly" "$rc_p / $STOP_RC $STOP_KILLED" "0 no / 0 no"
