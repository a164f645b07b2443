#!/bin/sh
# Slowloris: 1,000 connections that never complete a TLS handshake (half of them stopped
# mid-ClientHello) against a time source and then a broker, each with 64 connection slots, no
# per-address cap and handshake and session deadlines of 20 s, so nothing but shedding frees a
# slot in time: when a listener is full and a connection waits, the oldest connection that has
# not completed its handshake is closed to admit it. Honest clients (ke-client, 5 s timeout)
# are all served while the slots stay full; the shed connections are counted; descriptors stay
# bounded by the limit.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init slowloris
plan 13

pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 5
KE=$PORT1
NTP=$PORT2
SS=$PORT3
PK=$PORT4
PS=$PORT5
C="$T/certs"
HOLD=1000

SOURCE_KE_EXTRA="concurrent-connections = 64
max-connections-per-address = 0
handshake-timeout-ms = 20000
key-exchange-timeout-ms = 20000" source_start s 127.0.0.2 "$KE" "$NTP" "$SS" ||
	bail_out "time source did not start"

# hold NAME IP:PORT: starts hold-conns in the background and waits until its connections are up.
hold() {
	rm -f "$T/$1.ready"
	"$TOOLS/hold-conns" "$2" "$HOLD" 60 "$T/$1.ready" >"$T/$1.json" 2>"$T/$1.err" &
	eval "$1_pid=\$!"
	eval "track \$$1_pid"
	wait_file "$T/$1.ready" 30 || true
}

# honest N ADDR NAME: N ke-client key exchanges with NTS NTP through ADDR (TLS name NAME); prints
# how many got 8 cookies that authenticate an NTS NTP reply.
honest() {
	h_ok=0
	h_i=0
	while [ $h_i -lt "$1" ]; do
		h_out=$("$TOOLS/ke-client" --connect "$2" --name "$3" --ca "$C/ca.pem" --ntp \
			--timeout 5000 2>/dev/null || echo '{}')
		[ "$(jget cookies "$h_out") $(jget ntp.authenticated "$h_out")" = "8 true" ] &&
			h_ok=$((h_ok + 1))
		h_i=$((h_i + 1))
	done
	echo "$h_ok"
}

hold hs "127.0.0.2:$KE"
doc=$(status_of s)
full=$(($(jget nts_ke_servers.0.shed "$doc") + $(jget nts_ke_servers.0.limit_reached "$doc")))
expect_gt "time source: the slowloris connections filled every slot (shed + limit_reached)" \
	"$full" 0 "$doc" "$(cat "$T/hs.err" 2>/dev/null)"
expect "time source: 10 honest clients behind $HOLD slowloris connections are all served" \
	"$(honest 10 "127.0.0.2:$KE" 127.0.0.2)" 10
doc=$(status_of s)
expect_gt "time source: connections without a handshake were shed to admit them" \
	"$(jget nts_ke_servers.0.shed "$doc")" 0
# at_most_64 NAME JSON VALUE: the connections held stay within the limit.
at_most_64() {
	if is_int "$3" && [ "$3" -le 64 ]; then
		ok "$1: never more than 64 connections held ($3)"
	else
		not_ok "$1: never more than 64 connections held" "$2"
	fi
}
at_most_64 "time source" "$doc" "$(jget nts_ke_servers.0.active "$doc")"
kill -TERM "$hs_pid" 2>/dev/null || true
wait "$hs_pid" || true
untrack "$hs_pid"
expect_gt "the slowloris client saw connections closed by the time source" \
	"$(jget closed_by_peer "$(cat "$T/hs.json")")" 0 "$(cat "$T/hs.json")"
wait_stat s nts_ke_servers.0.active 0 30 || true
expect "time source: every slot free again once the slowloris client is gone" \
	"$(stat_of s nts_ke_servers.0.active)" 0

pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KE")" "deep-check-interval-s = 0
max-connections = 64
max-connections-per-address = 0
handshake-timeout-ms = 20000
key-exchange-timeout-ms = 20000"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "broker did not start"
wait_upstream p 127.0.0.2 "$KE" healthy 30 || true
hold hp "127.0.0.1:$PK"
doc=$(status_of p)
expect_gt "broker: the slowloris connections filled every slot (shed + limit_reached)" \
	"$(($(jget listeners.0.shed "$doc") + $(jget listeners.0.limit_reached "$doc")))" 0 "$doc"
expect "broker: 10 honest clients behind $HOLD slowloris connections are all served" \
	"$(honest 10 "127.0.0.1:$PK" pool.test)" 10
doc=$(status_of p)
expect_gt "broker: connections without a handshake were shed to admit them" \
	"$(jget listeners.0.shed "$doc")" 0
at_most_64 broker "$doc" "$(jget listeners.0.active "$doc")"
m_shed=$("$TOOLS/http-get" "127.0.0.1:$PS" /metrics |
	awk '/^nts_pool_ke_listener_shed_total\{/ { print $2 }')
expect_gt "broker /metrics: nts_pool_ke_listener_shed_total counts the sheds" \
	"${m_shed%.*}" 0 "$m_shed"
kill -TERM "$hp_pid" 2>/dev/null || true
wait "$hp_pid" || true
untrack "$hp_pid"

daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
daemon_stop s
expect "time source: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" \
	"$(log_tail "$T/s.log" 10)"
