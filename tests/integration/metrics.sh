#!/bin/sh
# Every role's /metrics is valid Prometheus exposition that passes `promtool check metrics`
# (units in base units, counters ending in _total, no repeated label sets): a time source, a
# client with two sources of one server, and the broker, each after real traffic. promtool comes
# from the prometheus package unpacked by scripts/peers.sh, never installed.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init metrics
plan 7

PROMTOOL=${PROMTOOL:-$TOP_BUILDDIR/peers/prometheus/usr/bin/promtool}
pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 9
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
PK=$PORT4
PS=$PORT5
CS=$PORT6
CNTP=$PORT7
C="$T/certs"

# Rate limits on, so their series are checked too.
SOURCE_KE_EXTRA="rate-limit-per-second = 100" source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" ||
	bail_out "time source A did not start"
pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KEA")" "deep-check-interval-s = 0
rate-limit-per-second = 100"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start"
wait_upstream p 127.0.0.2 "$KEA" healthy 30 || bail_out "the upstream never became healthy"
"$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --ntp >/dev/null 2>&1 || true

# Two sources reaching the same server: their series must still be told apart.
client_conf "$T/client.toml" "$CS" "$(source_entry server "127.0.0.2:$NTPA")
$(source_entry server "127.0.0.2:$NTPA")" "[[server]]
listen = \"127.0.0.4:$CNTP\""
daemon_start c "$T/client.toml" "127.0.0.1:$CS" || bail_out "the client daemon did not start"
wait_until 30 working_at_least c 1 server || true

# check NAME STATUS_PORT: promtool's verdict on NAME's /metrics.
check() {
	"$TOOLS/http-get" "127.0.0.1:$2" /metrics >"$T/$1.prom" 2>"$T/$1.http" || true
	if [ ! -s "$T/$1.prom" ]; then
		not_ok "$1: /metrics passes promtool check metrics" "no /metrics: $(cat "$T/$1.http")"
		return 0
	fi
	if [ ! -x "$PROMTOOL" ]; then
		not_ok "$1: /metrics passes promtool check metrics" \
			"no promtool at $PROMTOOL: run PEERS_DIR=\$build/peers scripts/peers.sh prometheus"
		return 0
	fi
	if "$PROMTOOL" check metrics <"$T/$1.prom" >"$T/$1.lint" 2>&1; then
		ok "$1: /metrics passes promtool check metrics"
	else
		not_ok "$1: /metrics passes promtool check metrics" "$(cat "$T/$1.lint")"
	fi
}
check time-source "$SA"
check broker "$PS"
# The broker's histograms are there and counted the session.
expect "broker: session and upstream-exchange histograms counted the key exchange" \
	"$(grep -c '^nts_pool_ke_session_duration_seconds_count [1-9]' "$T/broker.prom") $(grep -c '^nts_pool_ke_upstream_exchange_duration_seconds_count [1-9]' "$T/broker.prom")" \
	"1 1" "$(grep duration_seconds "$T/broker.prom" | head -40)"
check client "$CS"

# The client's two sources of one server have distinct label sets (promtool also says so).
dups=$(grep '^ntp_daemon_source_' "$T/client.prom" | sed 's/ [^ ]*$//' | sort | uniq -d)
expect "client: no two source series share a name and label set" "$dups" "" \
	"$(grep '^ntp_daemon_source_' "$T/client.prom")"
expect_gt "client: both sources are exported" \
	"$(grep -c '^ntp_daemon_source_reach{' "$T/client.prom")" 1 "$(cat "$T/client.prom")"

daemon_stop c
rc_c="$STOP_RC $STOP_KILLED"
daemon_stop p
rc_p="$STOP_RC $STOP_KILLED"
daemon_stop a
expect "all three stop cleanly" "$rc_c / $rc_p / $STOP_RC $STOP_KILLED" "0 no / 0 no / 0 no"
