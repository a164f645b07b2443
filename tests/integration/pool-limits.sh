#!/bin/sh
# The broker's limits and lifecycle: with max-connections = 8, 16 clients that hold their
# connections open do not bring it down, the limit is counted, and a new client is served once
# they are gone. SIGHUP reloads the upstream list: an added upstream is probed and then used, a
# removed one no longer gets sessions. A bad configuration exits 78 with "FILE:LINE: message".
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-limits
plan 15

pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 8
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
KEB=$PORT4
NTPB=$PORT5
SB=$PORT6
PK=$PORT7
PS=$PORT8
C="$T/certs"
LIMITS="deep-check-interval-s = 0
upstream-idle-s = 1
max-connections = 8
key-exchange-timeout-ms = 2000
upstream-timeout-ms = 1000"

kec() {
	"$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" "$@" 2>&1 || true
}

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" || bail_out "time source B did not start"
pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KEA")" "$LIMITS"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start"
wait_upstream p 127.0.0.2 "$KEA" healthy 30 || bail_out "upstream A did not become healthy"
ok "broker with upstream A only, max-connections = 8"

# -- 16 clients that complete the handshake and then send nothing (the broker cuts them at its
# 2 s deadline; those beyond the limit wait in the backlog meanwhile).
holders=
i=0
while [ "$i" -lt 16 ]; do
	"$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --hold 3000 --timeout 20000 \
		>"$T/hold$i.out" 2>&1 &
	h_pid=$!
	track "$h_pid"
	holders="$holders $h_pid"
	i=$((i + 1))
done
for h_pid in $holders; do
	stop_pid "$h_pid" 60
done
alive=no
daemon_alive p && alive=yes
expect "16 holding clients: the broker still runs" "$alive" yes "$(log_tail "$T/p.log" 10)"
# At the limit a waiting connection either finds one still in its handshake to shed or waits.
expect_gt "status: the limit was reached (listeners.0.limit_reached + shed > 0)" \
	"$(($(stat_of p listeners.0.limit_reached) + $(stat_of p listeners.0.shed)))" 0 \
	"$(status_of p)"
expect_gt "status: the holders were cut at the deadline (sessions.failed.timeout)" \
	"$(stat_gt p sessions.failed.timeout 0 10)" 0 "$(status_of p)"
out=$(kec)
expect "afterwards a new client gets 8 cookies from A" \
	"$(jget cookies "$out") $(jget server "$out") $(jget port "$out")" "8 127.0.0.2 $NTPA" "$out"

# -- Only A: a client denying it still gets A (fallback).
out=$(kec --deny 127.0.0.2)
expect "only A, A denied: answered by A anyway" "$(jget server "$out")" 127.0.0.2 "$out"

# -- SIGHUP with B added.
pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB")" \
	"$LIMITS"
kill -HUP "$p_pid"
if wait_upstream p 127.0.0.3 "$KEB" healthy 30; then
	ok "SIGHUP, B added: status lists B healthy"
else
	not_ok "SIGHUP, B added: status lists B healthy" "$(status_of p)" "$(log_tail "$T/p.log" 10)"
fi
out=$(kec --deny 127.0.0.2 --ntp)
expect "A denied: the session reaches B, NTS NTP authenticated there" \
	"$(jget server "$out") $(jget port "$out") $(jget ntp.result "$out")" \
	"127.0.0.3 $NTPB authenticated" "$out"
expect_gt "B answered the broker's Fixed Key request (pool_fixed_key)" \
	"$(stat_of b nts_ke_servers.0.pool_fixed_key)" 0 "$(status_of b)"

# -- SIGHUP with A removed: it gets no more sessions.
pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.3 "$KEB")" "$LIMITS"
kill -HUP "$p_pid"
i=0
while [ "$(upstream_field p 127.0.0.2 "$KEA" state)" = healthy ] && [ "$i" -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
case $(upstream_field p 127.0.0.2 "$KEA" state) in
missing | draining) ok "SIGHUP, A removed: A draining or gone from status" ;;
*) not_ok "SIGHUP, A removed: A draining or gone from status" "$(status_of p)" ;;
esac
n_b=0
i=0
while [ "$i" -lt 6 ]; do
	out=$(kec)
	[ "$(jget server "$out") $(jget cookies "$out")" = "127.0.0.3 8" ] && n_b=$((n_b + 1))
	i=$((i + 1))
done
expect "after removing A: 6 of 6 sessions at B" "$n_b" 6 "$out"
# Once its last kept connection has idled out (upstream-idle-s = 1), A leaves the status.
i=0
while [ "$(upstream_field p 127.0.0.2 "$KEA" state)" != missing ] && [ "$i" -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
expect "a removed upstream is forgotten once its connections are gone" \
	"$(upstream_field p 127.0.0.2 "$KEA" state)" missing "$(status_of p)"

daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"

# -- Configuration errors: exit 78 (EX_CONFIG) with "FILE:LINE: message".
pool_conf "$T/bad.toml" "$PK" "$PS" "$(upstream 127.0.0.3 "$KEB")" "max-connections = 0"
rc=0
timeout 30 "$POOL_KE" -c "$T/bad.toml" >"$T/bad.log" 2>&1 || rc=$?
line=$(grep -n '^max-connections' "$T/bad.toml" | cut -d: -f1)
msg=no
grep -q "bad.toml:$line:" "$T/bad.log" && msg=yes
expect "max-connections = 0: exit 78, error names bad.toml:$line" "$rc $msg" "78 yes" \
	"$(cat "$T/bad.log")"
printf '[nts-pool-ke-server]\nlisten = "127.0.0.1:%s"\n' "$PK" >"$T/bad2.toml"
rc=0
timeout 30 "$POOL_KE" -c "$T/bad2.toml" >"$T/bad2.log" 2>&1 || rc=$?
expect "missing certificate and upstreams: exit 78" "$rc" 78 "$(cat "$T/bad2.log")"
