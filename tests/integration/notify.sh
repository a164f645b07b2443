#!/bin/sh
# Readiness (doc/deploy.md, "Readiness"). Started with NOTIFY_SOCKET, as systemd starts a
# Type=notify unit, each program sends READY=1 once it serves (its status endpoint answers by
# then), RELOADING=1 with a MONOTONIC_USEC that grows from one reload to the next and then READY=1
# around each SIGHUP, and STOPPING=1 when it stops; every message comes from its main process,
# also after it dropped to another account. A start that fails sends STATUS= with the reason and
# ERRNO=; a manager socket that is gone is a warning, not a failure. A build without libsystemd
# sends nothing at all, which is then what is checked.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init notify

[ -x "$TOOLS/notify-sink" ] || bail_out "$TOOLS/notify-sink not built (make check builds it)"
[ "$(id -u)" = 0 ] || bail_out "notify.sh needs root (to start the daemons as root, dropping)"
if grep -q '^#define HAVE_LIBSYSTEMD 1' "$TOP_BUILDDIR/autoconfig.h"; then
	SD=yes
	plan 13
else
	SD=no
	plan 2
fi
pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 6
KE=$PORT1
NTP=$PORT2
SA=$PORT3
PK=$PORT4
PS=$PORT5
SB=$PORT6

SOCK="$T/notify.sock"
# Appended to, so that emptying the file between programs leaves no hole.
"$TOOLS/notify-sink" "$SOCK" >>"$T/sink.out" 2>"$T/sink.err" &
track $!
wait_file "$SOCK" 10 || bail_out "notify-sink did not start: $(cat "$T/sink.err")"

# said PID STATE: how many datagrams from PID read exactly STATE so far.
said() {
	grep -c "^pid=$1 $2\$" "$T/sink.out" || true
}

# others PID: the datagrams from any process but PID.
others() {
	grep -vc "^pid=$1 " "$T/sink.out" || true
}

# wait_ready PID N: waits (bounded) until PID said READY=1 N times.
wait_ready() {
	wait_until 20 sh -c '[ "$(grep -c "^pid=$1 READY=1\$" "$2")" -ge "$3" ]' sh "$1" \
		"$T/sink.out" "$2"
}

# usec_of_reloads PID: the MONOTONIC_USEC of each RELOADING=1 of PID, one a line.
usec_of_reloads() {
	sed -n "s/^pid=$1 RELOADING=1 MONOTONIC_USEC=\\([0-9][0-9]*\\) *\$/\\1/p" "$T/sink.out"
}

# lifecycle NAME WHAT STATUS CMD...: starts CMD (a program dropping to nobody) with the manager
# socket, and checks its readiness through a start, two reloads and a stop.
lifecycle() {
	l_name=$1
	l_what=$2
	l_status=$3
	shift 3
	NOTIFY_SOCKET="$SOCK" "$@" >"$T/$l_name.log" 2>&1 &
	l_pid=$!
	track "$l_pid"
	if [ $SD = no ]; then
		"$TOOLS/http-get" "$l_status" /status --wait 20 >/dev/null || true
		kill -HUP "$l_pid"
		sleep 1
		kill -TERM "$l_pid"
		stop_pid "$l_pid" 20
		expect "$l_what: built without libsystemd, runs and sends nothing" \
			"$STOP_RC $(grep -c "^pid=$l_pid " "$T/sink.out" || true)" "0 0" \
			"$(log_tail "$T/$l_name.log")"
		return 0
	fi
	wait_ready "$l_pid" 1 || true
	# READY=1 is sent once start returned: the endpoint must answer now, without retrying.
	l_up=$("$TOOLS/http-get" "$l_status" /status --status 2>&1 || true)
	expect "$l_what: READY=1 once it serves (the status endpoint already answers)" \
		"$(said "$l_pid" READY=1) $l_up" "1 200" "$(cat "$T/sink.out")
$(log_tail "$T/$l_name.log")"
	kill -HUP "$l_pid"
	wait_ready "$l_pid" 2 || true
	kill -HUP "$l_pid"
	wait_ready "$l_pid" 3 || true
	l_seq=$(grep "^pid=$l_pid " "$T/sink.out" | sed 's/MONOTONIC_USEC=[0-9]*/MONOTONIC_USEC=N/' |
		cut -d' ' -f2- | tr '\n' '|')
	expect "$l_what: each SIGHUP is RELOADING=1 with MONOTONIC_USEC, then READY=1" "$l_seq" \
		"READY=1|RELOADING=1 MONOTONIC_USEC=N|READY=1|RELOADING=1 MONOTONIC_USEC=N|READY=1|" \
		"$(cat "$T/sink.out")"
	# shellcheck disable=SC2046 # two numbers, split on purpose
	set -- $(usec_of_reloads "$l_pid")
	if [ $# -eq 2 ] && [ "$1" -gt 0 ] && [ "$2" -gt "$1" ]; then
		ok "$l_what: MONOTONIC_USEC is the monotonic clock: the second reload's is later"
	else
		not_ok "$l_what: MONOTONIC_USEC is the monotonic clock: the second reload's is later" \
			"$(cat "$T/sink.out")"
	fi
	kill -TERM "$l_pid"
	stop_pid "$l_pid" 20
	expect "$l_what: STOPPING=1 last, then exit 0" \
		"$(grep "^pid=$l_pid " "$T/sink.out" | tail -n 1 | cut -d' ' -f2-) $STOP_RC" \
		"STOPPING=1 0" "$(cat "$T/sink.out")"
	expect "$l_what: every message from the main process (nobody, after the drop)" \
		"$(others "$l_pid") $(grep -c "running as uid $(id -u nobody)" "$T/$l_name.log")" "0 1" \
		"$(cat "$T/sink.out")
$(log_tail "$T/$l_name.log")"
	: >"$T/sink.out"
}

source_conf a 127.0.0.2 "$KE" "$NTP" "$SA"
chown nobody "$T/a-keys"
printf '\n[daemon]\nuser = "nobody"\n' >>"$T/a.toml"
lifecycle a ntp-daemon "127.0.0.1:$SA" "$DAEMON" -c "$T/a.toml" -l debug --no-clock-control

pool_conf "$T/pool.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KE")" \
	"$(printf 'deep-check-interval-s = 0\nuser = "nobody"')"
lifecycle p nts-pool-ke "127.0.0.1:$PS" "$POOL_KE" -c "$T/pool.toml" -l debug

[ $SD = yes ] || exit 0

# ---- failures ----------------------------------------------------------------------------------

# A configuration that does not load: the first line of the message, and the errno.
cp "$T/a.toml" "$T/bad.toml"
echo 'no-such-option = 1' >>"$T/bad.toml"
bad_line=$(wc -l <"$T/bad.toml")
RC=0
NOTIFY_SOCKET="$SOCK" "$DAEMON" -c "$T/bad.toml" >"$T/bad.log" 2>&1 || RC=$?
# Sent before the exit, printed by the sink soon after.
wait_until 10 grep -q " STATUS=" "$T/sink.out" || true
expect "a configuration that does not load: exit 78, STATUS= its first line, ERRNO=" \
	"$RC $(grep -c "^pid=[0-9]* STATUS=$T/bad.toml:$bad_line:.*no-such-option.* ERRNO=[1-9][0-9]*\$" \
		"$T/sink.out" || true)" "78 1" "$(cat "$T/sink.out")
$(cat "$T/bad.log")"

# A start that fails after the configuration loaded: the broker's port is held by another.
pool_conf "$T/held.toml" "$PK" "$SB" "$(upstream 127.0.0.2 "$KE")"
pool_start h "$T/held.toml" "127.0.0.1:$SB" || bail_out "the broker holding the port did not start"
pool_conf "$T/busy.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KE")"
: >"$T/sink.out"
RC=0
NOTIFY_SOCKET="$SOCK" "$POOL_KE" -c "$T/busy.toml" >"$T/busy.log" 2>&1 || RC=$?
wait_until 10 grep -q " STATUS=" "$T/sink.out" || true
expect "a start that fails (the port is in use): STATUS= names the option, ERRNO=EADDRINUSE" \
	"$RC $(grep -c "^pid=[0-9]* STATUS=$T/busy.toml:2: 'listen'.* ERRNO=98\$" "$T/sink.out" ||
		true)" "1 1" "$(cat "$T/sink.out")
$(cat "$T/busy.log")"
daemon_stop h

# The manager's socket is gone: the program warns and serves all the same.
pool_conf "$T/gone.toml" "$PK" "$PS" "$(upstream 127.0.0.2 "$KE")"
NOTIFY_SOCKET="$T/gone.sock" "$POOL_KE" -c "$T/gone.toml" >"$T/g.log" 2>&1 &
g_pid=$!
track "$g_pid"
"$TOOLS/http-get" "127.0.0.1:$PS" /status --wait 20 >/dev/null 2>&1 || true
expect "a manager socket that is gone: a warning naming it, and the program serves" \
	"$(grep -c "warn .*cannot tell the service manager READY=1 (NOTIFY_SOCKET=$T/gone.sock)" \
		"$T/g.log") $(kill -0 "$g_pid" 2>/dev/null && echo running)" "1 running" \
	"$(log_tail "$T/g.log")"
kill -TERM "$g_pid"
stop_pid "$g_pid" 20
