#!/bin/sh
# The observation socket and the metrics listener of ntpd-rs's [observability] (doc/status.md):
# ntp-daemon serves its status endpoint on the Unix socket at observation-path (ntpd-rs's mode
# 0666 unless observation-permissions says otherwise), which `ntp-ctl status -s` reads; a stale
# socket is replaced, anything else at the path is left alone with an error naming the option;
# the socket goes at exit. metrics-exporter-listen serves /metrics only. A [[server]]'s rate
# limit is one table for all workers.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init ntpd-rs-observe
plan 14

CTL="$TOP_BUILDDIR/ntp-ctl"
alloc_ports 3
NTP=$PORT1 STATUS=$PORT2 METRICS=$PORT3
mkdir -p "$T/run"
SOCK="$T/run/observe"
conf() { # FILE SOCKET_PATH
	cat >"$1" <<EOF
[[server]]
listen = "127.0.0.2:$NTP"
rate-limiting-cache-size = 100
rate-limiting-cutoff-ms = 60000

[daemon]
workers = 2

[observability]
log-level = "info"
observation-path = "$2"
metrics-exporter-listen = "127.0.0.1:$METRICS"
status-listen = "127.0.0.1:$STATUS"

[synchronization]
local-stratum = 3
clock-control = false
EOF
}
conf "$T/ntp.toml" "$SOCK"
daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start"

if [ -S "$SOCK" ]; then
	ok "the observation socket exists at observation-path"
else
	not_ok "the observation socket exists at observation-path" "$(ls -la "$T/run")"
fi
expect "its mode is ntpd-rs's default, 0666" "$(stat -c %a "$SOCK" 2>&1)" 666
out=$("$CTL" status -s "$SOCK" --json 2>"$T/ctl.err") && rc=0 || rc=$?
expect "ntp-ctl status -s SOCKET reads /status over the socket" "$rc $(jget program "$out")" \
	"0 ntp-daemon" "$(cat "$T/ctl.err")"
"$CTL" status -s "$SOCK" >"$T/report.out" 2>&1 && rc=0 || rc=$?
expect "ntp-ctl status -s SOCKET prints the report" "$rc" 0 "$(cat "$T/report.out")"

m=$("$TOOLS/http-get" "127.0.0.1:$METRICS" /metrics 2>&1) && rc=0 || rc=$?
expect "metrics-exporter-listen serves /metrics" \
	"$rc $(printf '%s\n' "$m" | grep -c '^# TYPE ntp_daemon_ntp_received_total counter$')" "0 1" \
	"$(printf '%s\n' "$m" | head -5)"
code=$("$TOOLS/http-get" "127.0.0.1:$METRICS" /status --status 2>/dev/null) || true
expect "metrics-exporter-listen does not serve /status (404)" "$code" 404

# Four requests from four source ports: the kernel spreads them over both workers' sockets,
# and the one table they share still allows one per cutoff.
strata=
for i in 1 2 3 4; do
	r=$("$TOOLS/ntp-query" "127.0.0.2:$NTP" 2000)
	strata="$strata $(jget stratum "$r")"
done
expect "rate limiting spans the workers: one answer, then RATE kisses" "$strata" " 3 0 0 0"

conf "$T/second.toml" "$SOCK"
sed -i "s/^listen = .*/listen = \"127.0.0.3:$NTP\"/; /^status-listen/d; /^metrics-exporter-listen/d" "$T/second.toml"
# Bounded: a daemon that wrongly starts is stopped, and the check fails instead of hanging.
timeout 20 "$DAEMON" -c "$T/second.toml" --no-clock-control >"$T/second.log" 2>&1 && rc=0 || rc=$?
if [ "$rc" != 0 ] &&
	grep -q "second.toml:[0-9]*: 'observation-path' in \[observability\]: .*served by a running program" "$T/second.log"; then
	ok "a second instance on the same socket stops with the option, its line and why"
else
	not_ok "a second instance on the same socket stops with the option, its line and why" \
		"exit $rc" "$(cat "$T/second.log")"
fi
[ -S "$SOCK" ] && ok "the first instance's socket is untouched" ||
	not_ok "the first instance's socket is untouched"

daemon_stop d
expect "ntp-daemon stops cleanly" "$STOP_RC" 0
if [ -e "$SOCK" ]; then
	not_ok "the socket is removed at exit" "$(ls -la "$T/run")"
else
	ok "the socket is removed at exit"
fi

# A daemon that was killed leaves its socket: the next start replaces it.
daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not restart"
kill -KILL "$d_pid"
stop_pid "$d_pid" 5
[ -S "$SOCK" ] || bail_out "a killed daemon left no socket to test with"
daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" && rc=0 || rc=1
out=$("$CTL" status -s "$SOCK" --json 2>/dev/null) || true
expect "a stale socket left by a killed daemon is replaced" "$rc $(jget program "$out")" \
	"0 ntp-daemon" "$(log_tail "$T/d.log")"
daemon_stop d

# Anything else at the path is not ours to remove.
echo "not a socket" >"$SOCK"
timeout 20 "$DAEMON" -c "$T/ntp.toml" --no-clock-control >"$T/file.log" 2>&1 && rc=0 || rc=$?
if [ "$rc" != 0 ] &&
	grep -q "ntp.toml:[0-9]*: 'observation-path' in \[observability\]: .* is not a socket; remove it or choose another path" "$T/file.log"; then
	ok "a file at observation-path stops the start with the option, its line and the fix"
else
	not_ok "a file at observation-path stops the start with the option, its line and the fix" \
		"exit $rc" "$(cat "$T/file.log")"
fi
expect "the file is left as it was" "$(cat "$SOCK")" "not a socket"
