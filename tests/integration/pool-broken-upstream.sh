#!/bin/sh
# An upstream that answers Support correctly but fails every Fixed Key request. Its probes pass,
# so only the outcomes of real sessions can take it out of rotation: fixed-key-failure-streak
# failed sessions in a row make it unhealthy at once ("fixed-key requests fail: REASON"), after
# which every client is served by the healthy upstream, and a passing probe alone does not bring
# it back. Two brokers, each with one healthy time source (ntp-daemon, 127.0.0.2) and one
# broken-upstream (127.0.0.3): the first answers Error 1 to Fixed Key, the second (ntpd-rs-v1
# numbering, with a token) never answers. Deep checks are off, so only the streak acts.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-broken-upstream
plan 22

[ -x "$TOOLS/broken-upstream" ] || bail_out "$TOOLS/broken-upstream not built (make check builds it)"
pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 9
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
BAD=$PORT4
PK=$PORT5
PS=$PORT6
HANG=$PORT7
PK2=$PORT8
PS2=$PORT9
C="$T/certs"
STREAK=3
UP_TIMEOUT_MS=1500
LIMITS="deep-check-interval-s = 0
fixed-key-failure-streak = $STREAK
key-exchange-timeout-ms = 5000
upstream-timeout-ms = $UP_TIMEOUT_MS"

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"

# broken_start NAME PORT MODE: a broken-upstream on 127.0.0.3:PORT (certificate server-b; log
# $T/NAME.log); sets BROKEN_PID.
broken_start() {
	"$TOOLS/broken-upstream" "127.0.0.3:$2" "$C/server-b.chain.pem" "$C/server-b.key" 600 "$3" \
		>"$T/$1.log" 2>&1 &
	BROKEN_PID=$!
	track "$BROKEN_PID"
	wait_for_port tcp 127.0.0.3 "$2" 10 || bail_out "broken-upstream ($3) did not listen"
}

# field_in DOC DOMAIN PORT FIELD: FIELD of upstream DOMAIN:PORT in the /status document DOC.
field_in() {
	f_i=0
	while [ "$(jget "upstreams.$f_i.name" "$1")" != missing ]; do
		if [ "$(jget "upstreams.$f_i.name" "$1")" = "$2" ] &&
			[ "$(jget "upstreams.$f_i.port" "$1")" = "$3" ]; then
			jget "upstreams.$f_i.$4" "$1"
			return 0
		fi
		f_i=$((f_i + 1))
	done
	echo missing
}

# clients BROKER_PORT N [NAME PORT]: N clients (ke-client --ntp) through the broker; sets SERVED
# (8 cookies and an authenticated NTS NTP reply from A), ERR2 (answered Error 2), OTHER (anything
# else) and LAST (the output of the last client that was not served, or of the last one). With
# NAME and PORT, the broker NAME's entry for 127.0.0.3:PORT is read after each client: the first
# time it is unhealthy, REASON is set to its unhealthy_reason and FAILED_THEN to the failures
# so far. The reason is read at once because the recovery deep check, a second or so later,
# records its own result there.
clients() {
	SERVED=0
	ERR2=0
	OTHER=0
	LAST=
	REASON=
	FAILED_THEN=
	c_i=0
	while [ "$c_i" -lt "$2" ]; do
		c_out=$("$TOOLS/ke-client" --connect "127.0.0.1:$1" --ca "$C/ca.pem" --ntp \
			--timeout 10000 2>&1) || true
		case "$(jget cookies "$c_out") $(jget ntp.result "$c_out") $(jget server "$c_out") $(jget error "$c_out")" in
		"8 authenticated 127.0.0.2 null") SERVED=$((SERVED + 1)) ;;
		"0 missing null 2" | "0 null null 2")
			ERR2=$((ERR2 + 1))
			LAST=$c_out
			;;
		*)
			OTHER=$((OTHER + 1))
			LAST=$c_out
			;;
		esac
		c_i=$((c_i + 1))
		if [ $# -ge 4 ] && [ -z "$REASON" ]; then
			c_doc=$(status_of "$3")
			if [ "$(field_in "$c_doc" 127.0.0.3 "$4" state)" = unhealthy ]; then
				REASON=$(field_in "$c_doc" 127.0.0.3 "$4" unhealthy_reason)
				FAILED_THEN=$((ERR2 + OTHER))
			fi
		fi
	done
	[ -n "$LAST" ] || LAST=$c_out
}

# wait_deep_checked BROKER DOMAIN PORT SECONDS: waits (bounded) until the broker has run a deep
# check on the upstream. With deep-check-interval-s = 0 only the recovery check after a streak
# runs, and it runs only once a probe has passed since the upstream left rotation.
wait_deep_checked() {
	wd_i=0
	while :; do
		case $(upstream_field "$1" "$2" "$3" last_deep_check_result) in
		null | missing) ;;
		*) return 0 ;;
		esac
		[ "$wd_i" -lt $(($4 * 10)) ] || return 1
		sleep 0.1
		wd_i=$((wd_i + 1))
	done
}

# ---- Broker 1: the broken upstream answers Error 1 to every Fixed Key request ----------------

broken_start bad "$BAD" error
bad_pid=$BROKEN_PID
pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$BAD")" \
	"$LIMITS"
# One worker: the streak counts consecutive sessions, and each worker rotates on its own.
POOL_ARGS="--workers 1" pool_start p "$T/pool.toml" "127.0.0.1:$PS" ||
	bail_out "nts-pool-ke did not start"
if wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$BAD" healthy 30
then
	ok "broker 1: the time source and the broken upstream are both healthy at first"
else
	bail_out "the upstreams did not become healthy: $(status_of p)"
fi

clients "$PK" 12 p "$BAD"
if [ $((12 - SERVED)) -le "$STREAK" ] && [ "$OTHER" = 0 ]; then
	ok "12 clients: at most $STREAK fail ($SERVED served with 8 cookies, $ERR2 got Error 2)"
else
	not_ok "12 clients: at most $STREAK fail" \
		"served $SERVED, Error 2 $ERR2, other $OTHER" "$LAST"
fi
expect "every failed client was answered Error 2 (never a silent close)" "$OTHER" 0 "$LAST"
expect "the broken upstream is unhealthy" "$(upstream_field p 127.0.0.3 "$BAD" state)" \
	unhealthy "$(status_of p)"
expect "unhealthy once the streak was reached, the reason naming the Fixed Key failures" \
	"$FAILED_THEN / $REASON" "$STREAK / fixed-key requests fail: upstream answered Error 1" \
	"$(status_of p)"
if grep -qF "warn  upstream 127.0.0.3:$BAD unhealthy: fixed-key requests fail: upstream answered Error 1" \
	"$T/p.log"; then
	ok "broker log: the warning names the Fixed Key failures"
else
	not_ok "broker log: the warning names the Fixed Key failures" "$(log_tail "$T/p.log")"
fi
expect "the healthy time source stays healthy" "$(upstream_field p 127.0.0.2 "$KEA" state)" \
	healthy "$(status_of p)"

clients "$PK" 12
expect "12 more clients: all get 8 cookies from A that authenticate NTS NTP" \
	"$SERVED $ERR2 $OTHER" "12 0 0" "$LAST"

if wait_deep_checked p 127.0.0.3 "$BAD" 60; then
	ok "a probe passed since, and the recovery deep check ran"
else
	not_ok "a probe passed since, and the recovery deep check ran" "$(status_of p)"
fi
expect "a passing probe is not enough: still unhealthy, last probe ok" \
	"$(upstream_field p 127.0.0.3 "$BAD" state) $(upstream_field p 127.0.0.3 "$BAD" last_probe_result)" \
	"unhealthy ok" "$(status_of p)"
case $(upstream_field p 127.0.0.3 "$BAD" last_deep_check_result) in
ok | missing | null) not_ok "the recovery deep check failed" "$(status_of p)" ;;
*) ok "the recovery deep check failed" ;;
esac
reason=$(upstream_field p 127.0.0.3 "$BAD" unhealthy_reason)
case $reason in
"fixed-key requests fail: upstream answered Error 1; since then: upstream answered Error 1")
	ok "after the failed deep check the Fixed Key failures are still the reason ($reason)" ;;
*) not_ok "after the failed deep check the Fixed Key failures are still the reason" "$reason" ;;
esac
clients "$PK" 4
expect "meanwhile clients are still served by A alone" "$SERVED $ERR2 $OTHER" "4 0 0" "$LAST"

daemon_stop p
expect "broker 1: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
kill -TERM "$bad_pid" 2>/dev/null || true
stop_pid "$bad_pid" 10
expect "broken-upstream (error): SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" \
	"$(tail -n 5 "$T/bad.log")"

# ---- Broker 2: the broken upstream (ntpd-rs-v1 numbering, a token) never answers Fixed Key ---

broken_start hang "$HANG" hang
hang_pid=$BROKEN_PID
pool_conf "$T/pool2.toml" "$PK2" "$PS2" \
	"$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$HANG" 1 'pool-record-numbers = "ntpd-rs-v1", authentication-token = "token-not-checked-by-the-tool"')" \
	"$LIMITS"
POOL_ARGS="--workers 1" pool_start q "$T/pool2.toml" "127.0.0.1:$PS2" ||
	bail_out "nts-pool-ke (broker 2) did not start"
if wait_upstream q 127.0.0.2 "$KEA" healthy 30 && wait_upstream q 127.0.0.3 "$HANG" healthy 30
then
	ok "broker 2: the time source and the hanging upstream are both healthy at first"
else
	bail_out "the upstreams of broker 2 did not become healthy: $(status_of q)"
fi
clients "$PK2" 12 q "$HANG"
if [ $((12 - SERVED)) -le "$STREAK" ] && [ "$OTHER" = 0 ]; then
	ok "12 clients: at most $STREAK fail ($SERVED served, $ERR2 got Error 2 after the timeout)"
else
	not_ok "12 clients: at most $STREAK fail" \
		"served $SERVED, Error 2 $ERR2, other $OTHER" "$LAST"
fi
TIMEOUT_S=$(awk -v ms="$UP_TIMEOUT_MS" 'BEGIN { printf "%.1f", ms / 1000 }')
expect "the hanging upstream unhealthy after $STREAK failures: fixed-key requests fail: timed out after $TIMEOUT_S s" \
	"$FAILED_THEN / $REASON" "$STREAK / fixed-key requests fail: timed out after $TIMEOUT_S s" \
	"$(status_of q)"
clients "$PK2" 6
expect "6 more clients: all served by A" "$SERVED $ERR2 $OTHER" "6 0 0" "$LAST"

daemon_stop q
expect "broker 2: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/q.log" 10)"
kill -TERM "$hang_pid" 2>/dev/null || true
stop_pid "$hang_pid" 10
expect "broken-upstream (hang): SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" \
	"$(tail -n 5 "$T/hang.log")"
daemon_stop a
expect "time source A: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" \
	"$(log_tail "$T/a.log" 10)"
