#!/bin/sh
# ntp-daemon's status endpoint (doc/status.md): /status is JSON an independent parser reads,
# /metrics is Prometheus text, other paths 404, other methods 405; and configuration errors stop
# the daemon with exit status 78 and "FILE:LINE:" before it binds any port.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init status
plan 13

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 3
KE=$PORT1
NTP=$PORT2
STATUS=$PORT3
C="$T/certs"
cat >"$T/ntp.toml" <<EOF
[[nts-ke-server]]
listen = "127.0.0.2:$KE"
certificate-chain-path = "$C/server-a.chain.pem"
private-key-path = "$C/server-a.key"

[[server]]
listen = "127.0.0.2:$NTP"

[observability]
status-listen = "127.0.0.1:$STATUS"

[synchronization]
clock-control = false
EOF
daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start"
ok "ntp-daemon started; status on 127.0.0.1:$STATUS"

doc=$(status_of d)
expect "/status is JSON with program = ntp-daemon" "$(jget program "$doc")" ntp-daemon "$doc"
expect "/status lists the NTS-KE and NTP listeners" \
	"$(jget nts_ke_servers.0.listen "$doc") $(jget ntp_servers.0.listen "$doc")" \
	"127.0.0.2:$KE 127.0.0.2:$NTP" "$doc"
expect "/status counters are numbers: errors by code, keyset" \
	"$(jget nts_ke_servers.0.errors.1 "$doc" | grep -c '^[0-9][0-9]*$') $(jget keyset.keys "$doc" | grep -c '^[1-9][0-9]*$')" \
	"1 1" "$doc"

if metrics=$("$TOOLS/http-get" "127.0.0.1:$STATUS" /metrics 2>&1); then
	ok "/metrics answers 2xx"
else
	not_ok "/metrics answers 2xx" "$metrics"
fi
if printf '%s\n' "$metrics" | grep -q '^# HELP ntp_daemon_' &&
	printf '%s\n' "$metrics" | grep -q '^# TYPE ntp_daemon_[a-z_]* \(counter\|gauge\)$'; then
	ok "/metrics has HELP and TYPE lines for ntp_daemon_ metrics"
else
	not_ok "/metrics has HELP and TYPE lines for ntp_daemon_ metrics" "$(printf '%s\n' "$metrics" | head -n 20)"
fi

code=$("$TOOLS/http-get" "127.0.0.1:$STATUS" /nope --status 2>/dev/null) && rc=0 || rc=$?
expect "GET /nope: 404 (http-get exits 1)" "$code $rc" "404 1"
code=$("$TOOLS/http-get" "127.0.0.1:$STATUS" /status --method POST --status 2>/dev/null) &&
	rc=0 || rc=$?
expect "POST /status: 405" "$code $rc" "405 1"

# Configuration errors. The bad files name the running daemon's ports, so a daemon that bound
# before validating would fail with "address in use" instead of the config error.
bad_run() { # NAME: runs the daemon on $T/NAME.toml; sets BAD_RC, BAD_KILLED and $T/NAME.err
	"$DAEMON" -c "$T/$1.toml" >"$T/$1.out" 2>"$T/$1.err" &
	b_pid=$!
	track "$b_pid"
	stop_pid "$b_pid" 20
	BAD_RC=$STOP_RC
	BAD_KILLED=$STOP_KILLED
}
{
	cat "$T/ntp.toml"
	echo
	echo '[keyset]'
	echo 'key-rotation-interval = 0'
} >"$T/range.toml"
line=$(grep -n '^key-rotation-interval' "$T/range.toml" | cut -d: -f1)
bad_run range
expect "value out of range: exit status 78" "$BAD_RC $BAD_KILLED" "78 no" "$(cat "$T/range.err")"
if grep -q "^$T/range.toml:$line: " "$T/range.err"; then
	ok "value out of range: message starts with FILE:LINE: (line $line)"
else
	not_ok "value out of range: message starts with FILE:LINE: (line $line)" "$(cat "$T/range.err")"
fi
sed 's/^listen = "127.0.0.2:'"$NTP"'"/lissen = "127.0.0.2:'"$NTP"'"/' "$T/ntp.toml" >"$T/key.toml"
line=$(grep -n '^lissen' "$T/key.toml" | cut -d: -f1)
bad_run key
if [ "$BAD_RC $BAD_KILLED" = "78 no" ] && grep -q "^$T/key.toml:$line: .*lissen" "$T/key.err"; then
	ok "unknown key: exit status 78, FILE:LINE: naming the key"
else
	not_ok "unknown key: exit status 78, FILE:LINE: naming the key" \
		"exit status $BAD_RC (killed: $BAD_KILLED); stderr:" "$(cat "$T/key.err")"
fi

expect "the running daemon still answers /status" "$(stat_of d program)" ntp-daemon
daemon_stop d
expect "SIGTERM: clean exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/d.log" 10)"
