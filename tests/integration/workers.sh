#!/bin/sh
# Two workers in each program: a time source with `[daemon] workers = 2` and a broker started
# with `--workers 2`. Connections and datagrams from distinct source ports are spread over both
# workers by SO_REUSEPORT (the per-worker counters in /status show both at work, and they sum to
# the totals); a SIGHUP that changes the pinned certificate reaches every worker; the keyset
# rotates once per process, not once per worker; SIGTERM lets the sessions in flight on every
# worker finish before the process exits 0.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init workers
plan 17

pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 5
KE=$PORT1
NTP=$PORT2
SS=$PORT3
PK=$PORT4
PS=$PORT5
C="$T/certs"
cp "$C/pool.pem" "$T/pinned.pem"

SOURCE_KE_EXTRA="key-exchange-timeout-ms = 20000" source_conf s 127.0.0.2 "$KE" "$NTP" "$SS" \
	"$T/pinned.pem"
cat >>"$T/s.toml" <<CONF

[daemon]
workers = 2
CONF
sed -i 's|^key-storage-path = .*|&\nkey-rotation-interval = 3|' "$T/s.toml"
daemon_start s "$T/s.toml" "127.0.0.1:$SS" || bail_out "time source did not start"
expect "status: 2 workers, each with its own share of the KE and NTP listeners" \
	"$(stat_of s workers) $(stat_of s nts_ke_servers.0.workers.1.worker) $(stat_of s ntp_servers.0.workers.1.worker)" \
	"2 1 1" "$(status_of s)"

kec() {
	"$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" "$@" 2>/dev/null ||
		echo '{"tool_exit":1}'
}

# 24 key exchanges, each from its own source port.
cookies=0
i=0
while [ $i -lt 24 ]; do
	out=$(kec --ntp)
	[ "$(jget cookies "$out") $(jget ntp.authenticated "$out")" = "8 true" ] &&
		cookies=$((cookies + 1))
	i=$((i + 1))
done
doc=$(status_of s)
w0=$(jget nts_ke_servers.0.workers.0.accepted "$doc")
w1=$(jget nts_ke_servers.0.workers.1.accepted "$doc")
expect "24 key exchanges from distinct ports: all served (8 cookies, NTS NTP authenticated)" \
	"$cookies" 24
if is_int "$w0" && is_int "$w1" && [ "$w0" -gt 0 ] && [ "$w1" -gt 0 ] &&
	[ $((w0 + w1)) -eq "$(jget nts_ke_servers.0.accepted "$doc")" ]; then
	ok "both KE workers accepted connections ($w0 + $w1), summing to the listener's total"
else
	not_ok "both KE workers accepted connections, summing to the listener's total" "$doc"
fi

# 40 plain NTP queries, each from its own source port.
answered=0
i=0
while [ $i -lt 40 ]; do
	"$TOOLS/ntp-query" "127.0.0.2:$NTP" 2000 >/dev/null 2>&1 && answered=$((answered + 1))
	i=$((i + 1))
done
doc=$(status_of s)
r0=$(jget ntp_servers.0.workers.0.received "$doc")
r1=$(jget ntp_servers.0.workers.1.received "$doc")
expect "40 NTP queries from distinct ports: all answered" "$answered" 40
if is_int "$r0" && is_int "$r1" && [ "$r0" -gt 0 ] && [ "$r1" -gt 0 ] &&
	[ $((r0 + r1)) -eq "$(jget ntp_servers.0.received "$doc")" ]; then
	ok "both NTP workers received datagrams ($r0 + $r1), summing to the server's total"
else
	not_ok "both NTP workers received datagrams, summing to the server's total" "$doc"
fi

# SIGHUP: pin the other certificate instead, and present a server certificate of another CA.
# Every worker must use the new credentials at once.
support_as() {
	s_err=$(jget error "$("$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$T/ca2/ca.pem" \
		--cert "$C/$1.pem" --key "$C/$1.key" --request support 2>/dev/null || echo '{}')")
	[ "$s_err" = null ] && s_err=none
	echo "$s_err"
}
before0=$(stat_of s nts_ke_servers.0.workers.0.accepted)
before1=$(stat_of s nts_ke_servers.0.workers.1.accepted)
cp "$C/other.pem" "$T/pinned.pem"
bash "$GEN_CERT" --dir "$T/ca2" --ca-name "Second Test CA" server-a --ip 127.0.0.2 >/dev/null ||
	bail_out "gen-cert.sh failed"
cp "$T/ca2/server-a.chain.pem" "$C/server-a.chain.pem"
cp "$T/ca2/server-a.key" "$C/server-a.key"
cat "$C/ca.pem" "$T/ca2/ca.pem" >"$T/both-ca.pem"
reloads=$(grep -c "certificates reloaded" "$T/s.log" || true)
kill -HUP "$s_pid"
i=0
while [ "$(grep -c "certificates reloaded" "$T/s.log" || true)" -le "$reloads" ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
answers=
i=0
while [ $i -lt 16 ]; do
	answers="$answers $(support_as other)/$(support_as pool)"
	i=$((i + 1))
done
expect "after SIGHUP, 16 x 2 Support requests verifying the new CA: the new pin answered, the old one refused (Error 1)" \
	"$(echo "$answers" | tr ' ' '\n' | sort -u | tr -d '\n')" "none/1"
old=0
i=0
while [ $i -lt 8 ]; do
	[ "$(jget handshake "$(kec)")" = ok ] && old=$((old + 1))
	i=$((i + 1))
done
expect "after SIGHUP, no worker presents the old certificate (8 handshakes verifying the old CA fail)" \
	"$old" 0
doc=$(status_of s)
if [ "$(jget nts_ke_servers.0.workers.0.accepted "$doc")" -gt "$before0" ] &&
	[ "$(jget nts_ke_servers.0.workers.1.accepted "$doc")" -gt "$before1" ]; then
	ok "both workers served requests after the reload"
else
	not_ok "both workers served requests after the reload" "$before0 $before1" "$doc"
fi

# The keyset rotates every 3 s: once per rotation for the process, whichever worker serves.
wait_until 20 stat_pos s keyset.rotations || true
doc=$(status_of s)
rot=$(jget keyset.rotations "$doc")
logged=$(grep -c "keyset: rotated" "$T/s.log" || true)
if is_int "$rot" && [ "$rot" -gt 0 ] && [ "$rot" -eq "$logged" ]; then
	ok "the keyset rotated on its timer, once per rotation (status $rot, log $logged)"
else
	not_ok "the keyset rotated on its timer, once per rotation" "status $rot, log $logged" \
		"$(log_tail "$T/s.log" 20)"
fi
out=$("$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$T/ca2/ca.pem" --ntp 2>/dev/null ||
	echo '{}')
expect "after the rotation: a key exchange and NTS NTP with the new key work" \
	"$(jget cookies "$out") $(jget ntp.authenticated "$out")" "8 true" "$out"

# The broker, with --workers on its command line, in front of the source (which now pins the
# certificate called "other": the broker presents it).
cat >"$T/broker-2" <<EOF
#!/bin/sh
exec "$POOL_KE" --workers 2 "\$@"
EOF
chmod 755 "$T/broker-2"
pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KE")" "deep-check-interval-s = 0
key-exchange-timeout-ms = 20000"
sed -i "s|$T/certs/pool.chain.pem|$T/certs/other.chain.pem|; s|$T/certs/pool.key|$T/certs/other.key|" \
	"$T/pool.toml"
sed -i "s|^certificate-authority-path = .*|certificate-authority-path = \"$T/both-ca.pem\"|" \
	"$T/pool.toml"
REAL_POOL=$POOL_KE
POOL_KE="$T/broker-2"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "broker did not start"
POOL_KE=$REAL_POOL
wait_upstream p 127.0.0.2 "$KE" healthy 30 || true
served=0
i=0
while [ $i -lt 24 ]; do
	out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --name other.test --ca "$C/ca.pem" \
		--ntp 2>/dev/null || echo '{}')
	[ "$(jget cookies "$out") $(jget ntp.authenticated "$out")" = "8 true" ] &&
		served=$((served + 1))
	i=$((i + 1))
done
expect "24 clients through the two-worker broker: all get cookies that authenticate NTS NTP" \
	"$served" 24
doc=$(status_of p)
a0=$(jget sessions.workers.0.accepted "$doc")
a1=$(jget sessions.workers.1.accepted "$doc")
if [ "$(jget workers "$doc")" = 2 ] && is_int "$a0" && is_int "$a1" && [ "$a0" -gt 0 ] &&
	[ "$a1" -gt 0 ] && [ $((a0 + a1)) -eq "$(jget sessions.accepted "$doc")" ]; then
	ok "broker: both workers started sessions ($a0 + $a1), summing to the total"
else
	not_ok "broker: both workers started sessions, summing to the total" "$doc"
fi
expect "broker: the registry counted every worker's outcome (served = completed = 24)" \
	"$(upstream_field p 127.0.0.2 "$KE" sessions_served) $(jget sessions.completed "$doc")" \
	"24 24" "$doc"

# SIGTERM while each broker worker has sessions in flight: the clients send their requests one
# byte every 150 ms, so the requests are still arriving while the broker stops; every one is
# still answered.
held=
n=0
while [ $n -lt 12 ]; do
	"$TOOLS/ke-client" --connect "127.0.0.1:$PK" --name other.test --ca "$C/ca.pem" \
		--slow 150 --timeout 20000 >"$T/held$n.json" 2>/dev/null &
	held="$held $!"
	track $!
	n=$((n + 1))
done
# both_active: each broker worker holds at least one client connection now.
both_active() {
	ba_doc=$(status_of p)
	ba_0=$(jget listeners.0.workers.0.active "$ba_doc")
	ba_1=$(jget listeners.0.workers.1.active "$ba_doc")
	is_int "$ba_0" && is_int "$ba_1" && [ "$ba_0" -gt 0 ] && [ "$ba_1" -gt 0 ]
}
active=no
wait_until 20 both_active && active=yes
expect "broker: sessions held open on both workers before SIGTERM" "$active" yes \
	"$(status_of p)"
daemon_stop p
expect "broker: SIGTERM with sessions in flight on both workers -> exit 0, not killed" \
	"$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
for h in $held; do
	wait "$h" || true
	untrack "$h"
done
got=0
n=0
while [ $n -lt 12 ]; do
	[ "$(jget cookies "$(cat "$T/held$n.json")")" = 8 ] && got=$((got + 1))
	n=$((n + 1))
done
expect "broker: every held session was answered while the workers drained" "$got" 12

daemon_stop s
expect "time source: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" \
	"$(log_tail "$T/s.log" 10)"
