#!/bin/sh
# Upstream selection: weights 1 (A, 127.0.0.2) and 3 (B, 127.0.0.3) under smooth weighted
# round-robin, which is deterministic and periodic (B A B B): any 40 consecutive picks with both
# upstreams healthy split exactly 10/30. NTP Server Deny steers clients away from a source; when
# every source is denied the client is still answered (fallback to a denied one).
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-spread
plan 10

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
N=40

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" || bail_out "time source B did not start"
pool_conf "$T/pool.toml" "$PK" "$PS" \
	"$(upstream 127.0.0.2 "$KEA" 1), $(upstream 127.0.0.3 "$KEB" 3)" "deep-check-interval-s = 0"
# One worker: the exact split holds per worker (each rotates on its own), so it is counted
# on one.
POOL_ARGS="--workers 1" pool_start p "$T/pool.toml" "127.0.0.1:$PS" ||
	bail_out "nts-pool-ke did not start"
if wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$KEB" healthy 30
then
	ok "broker: both upstreams healthy, weights 1 and 3"
else
	bail_out "the upstreams did not become healthy"
fi

# sessions N [ke-client options]: N key exchanges through the broker, one after the other;
# sets GOT_A, GOT_B (Server records naming A or B with their NTP port), GOT_OTHER (anything
# else: failures, errors) and LAST (the last ke-client output).
sessions() {
	s_n=$1
	shift
	GOT_A=0
	GOT_B=0
	GOT_OTHER=0
	s_i=0
	while [ "$s_i" -lt "$s_n" ]; do
		LAST=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" "$@" 2>&1) || true
		case "$(jget cookies "$LAST") $(jget server "$LAST") $(jget port "$LAST")" in
		"8 127.0.0.2 $NTPA") GOT_A=$((GOT_A + 1)) ;;
		"8 127.0.0.3 $NTPB") GOT_B=$((GOT_B + 1)) ;;
		*) GOT_OTHER=$((GOT_OTHER + 1)) ;;
		esac
		s_i=$((s_i + 1))
	done
}

sessions "$N"
expect "$N sessions: all answered with 8 cookies from A or B" "$GOT_OTHER" 0 "$LAST"
if [ "$GOT_B" -gt "$GOT_A" ] && [ "$GOT_A" -gt 0 ]; then
	ok "both sources used, B (weight 3) more than A (weight 1): $GOT_A/$GOT_B"
else
	not_ok "both sources used, B (weight 3) more than A (weight 1)" "A $GOT_A, B $GOT_B"
fi
expect "smooth weighted round-robin: exactly 10/30" "$GOT_A/$GOT_B" "10/30" \
	"$(log_tail "$T/p.log" 10)"
expect "status: sessions_served of A and B match" \
	"$(upstream_field p 127.0.0.2 "$KEA" sessions_served)/$(upstream_field p 127.0.0.3 "$KEB" sessions_served)" \
	"$GOT_A/$GOT_B" "$(status_of p)"

# -- NTP Server Deny.
sessions 8 --deny 127.0.0.2
expect "Deny 127.0.0.2: all 8 sessions get B" "$GOT_A $GOT_B $GOT_OTHER" "0 8 0" "$LAST"
sessions 8 --deny 127.0.0.3
expect "Deny 127.0.0.3: all 8 sessions get A" "$GOT_A $GOT_B $GOT_OTHER" "8 0 0" "$LAST"
sessions 4 --deny 127.0.0.2 --deny 127.0.0.3
expect "Deny both: still answered by a source (fallback)" "$GOT_OTHER $((GOT_A + GOT_B))" "0 4" \
	"$LAST"
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --deny 127.0.0.2 --ntp 2>&1) ||
	true
expect "Deny 127.0.0.2 with NTS NTP: authenticated at B" \
	"$(jget ntp.server "$out") $(jget ntp.result "$out")" "127.0.0.3 authenticated" "$out"

daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
