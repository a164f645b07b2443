#!/bin/sh
# Upstream failures. A time source that dies: sessions go to the other one at once, the dead one
# is marked unhealthy by the probes, and used again once it is back. An upstream that accepts TCP
# and never answers, and one that does not pin the pool's certificate (so refuses its requests),
# each as the only upstream: the client gets Error 2 (never a silent close), the upstream is
# unhealthy in /status.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-failover
plan 15

[ -x "$TOOLS/hang-server" ] || bail_out "$TOOLS/hang-server not built (make check builds it)"
pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 14
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
KEB=$PORT4
NTPB=$PORT5
SB=$PORT6
PK=$PORT7
PS=$PORT8
HANG=$PORT9
PK2=$PORT10
PS2=$PORT11
KEC=$PORT12
NTPC=$PORT13
SC=$PORT14
C="$T/certs"
LIMITS="deep-check-interval-s = 0
key-exchange-timeout-ms = 4000
upstream-timeout-ms = 1000"

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" || bail_out "time source B did not start"
pool_conf "$T/pool.toml" "$PK" "$PS" \
	"$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB")" "$LIMITS"
# One worker: each worker rotates over the upstreams on its own, and this test counts the
# alternation of consecutive sessions.
POOL_ARGS="--workers 1" pool_start p "$T/pool.toml" "127.0.0.1:$PS" ||
	bail_out "nts-pool-ke did not start"
if wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$KEB" healthy 30
then
	ok "broker: A and B healthy"
else
	bail_out "the upstreams did not become healthy"
fi

# sessions N: N key exchanges through the broker; sets GOT_A, GOT_B, GOT_OTHER and LAST.
sessions() {
	GOT_A=0
	GOT_B=0
	GOT_OTHER=0
	s_i=0
	while [ "$s_i" -lt "$1" ]; do
		LAST=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" 2>&1) || true
		case "$(jget cookies "$LAST") $(jget server "$LAST") $(jget port "$LAST")" in
		"8 127.0.0.2 $NTPA") GOT_A=$((GOT_A + 1)) ;;
		"8 127.0.0.3 $NTPB") GOT_B=$((GOT_B + 1)) ;;
		*) GOT_OTHER=$((GOT_OTHER + 1)) ;;
		esac
		s_i=$((s_i + 1))
	done
}

sessions 4
expect "before: sessions alternate between A and B" "$GOT_A $GOT_B $GOT_OTHER" "2 2 0" "$LAST"

# -- A dies.
daemon_stop a
sessions 10
expect "A stopped: all 10 sessions succeed at B" "$GOT_A $GOT_B $GOT_OTHER" "0 10 0" "$LAST"
if wait_upstream p 127.0.0.2 "$KEA" unhealthy 30; then
	ok "status: A marked unhealthy"
else
	not_ok "status: A marked unhealthy" "$(status_of p)"
fi
case $(upstream_field p 127.0.0.2 "$KEA" last_probe_result) in
ok | null | missing) not_ok "status: A's last_probe_result gives a reason" "$(status_of p)" ;;
*) ok "status: A's last_probe_result gives a reason" ;;
esac

# -- A comes back (same configuration and key file).
daemon_start a "$T/a.toml" "127.0.0.1:$SA" || bail_out "time source A did not restart"
# The probe back-off after a few failures is some seconds; the bound is generous.
if wait_upstream p 127.0.0.2 "$KEA" healthy 90; then
	ok "A restarted: healthy again"
else
	not_ok "A restarted: healthy again" "$(status_of p)"
fi
sessions 6
if [ "$GOT_A" -gt 0 ] && [ "$GOT_OTHER" = 0 ]; then
	ok "A restarted: used again ($GOT_A of 6 sessions), no failures"
else
	not_ok "A restarted: used again, no failures" "A $GOT_A, B $GOT_B, other $GOT_OTHER" "$LAST"
fi
daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"

# error_2 DESC: a client of the second broker is answered Error 2 (a whole response, read well
# before ke-client's own 15 s limit, so within the broker's key-exchange deadline).
error_2() {
	e_out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK2" --ca "$C/ca.pem" --timeout 15000 \
		2>&1) || true
	expect "$1" "$(jget handshake "$e_out") $(jget read "$e_out") $(jget error "$e_out")" \
		"ok complete 2" "$e_out"
}

# -- An upstream that accepts and never answers, as the only one (on 127.0.0.4).
"$TOOLS/hang-server" "127.0.0.4:$HANG" 300 >"$T/hang.log" 2>&1 &
hang_pid=$!
track "$hang_pid"
wait_for_port tcp 127.0.0.4 "$HANG" 10 || bail_out "hang-server did not listen"
pool_conf "$T/hang.toml" "$PK2" "$PS2" "$(upstream 127.0.0.4 "$HANG")" "$LIMITS"
pool_start h "$T/hang.toml" "127.0.0.1:$PS2" || bail_out "nts-pool-ke (hanging upstream) did not start"
error_2 "hanging upstream only: the client gets Error 2"
if wait_upstream h 127.0.0.4 "$HANG" unhealthy 30; then
	ok "status: the hanging upstream is unhealthy"
else
	not_ok "status: the hanging upstream is unhealthy" "$(status_of h)"
fi
error_2 "hanging upstream, unhealthy: the client still gets Error 2"
daemon_stop h
kill -TERM "$hang_pid" 2>/dev/null || true
stop_pid "$hang_pid" 5

# -- A time source that does not pin the pool's certificate (it pins another one), the only one.
source_start c 127.0.0.3 "$KEC" "$NTPC" "$SC" "$C/other.pem" ||
	bail_out "time source C did not start"
pool_conf "$T/unpinned.toml" "$PK2" "$PS2" "$(upstream 127.0.0.3 "$KEC")" "$LIMITS"
pool_start u "$T/unpinned.toml" "127.0.0.1:$PS2" ||
	bail_out "nts-pool-ke (unpinned upstream) did not start"
if wait_upstream u 127.0.0.3 "$KEC" unhealthy 30; then
	ok "status: the upstream that refuses the pool (Error 1 to its probes) is unhealthy"
else
	not_ok "status: the upstream that refuses the pool (Error 1 to its probes) is unhealthy" \
		"$(status_of u)"
fi
error_2 "upstream without the pool's pin: the client gets Error 2"
expect_gt "that upstream counted the pool's attempts as unauthorised" \
	"$(stat_of c nts_ke_servers.0.unauthorised)" 0 "$(status_of c)"
daemon_stop u
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/u.log" 10)"
