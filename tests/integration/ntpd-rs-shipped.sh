#!/bin/sh
# ntpd-rs's shipped configuration starts (doc/ntpd-rs.md): the ntp.toml of Debian's ntpd-rs
# package, rewritten only where it must be on this machine (the observation socket in the
# scratch directory, the pool's name resolving to loopback with a free port, clock control off
# and a TCP status endpoint for the test), starts ntp-daemon: its pool source resolves the name
# and takes samples from what it resolved to, and ntp-ctl reads the status over the socket.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init ntpd-rs-shipped
plan 6

NTPDRS=$(ntpdrs_find) || bail_out "no ntpd-rs package to read its shipped configuration from"
alloc_ports 3
NTP=$PORT1 SSTATUS=$PORT2 STATUS=$PORT3

# A local server for the pool to find: "localhost" resolves to 127.0.0.1 (and ::1).
cat >"$T/server.toml" <<EOF
[[server]]
listen = "127.0.0.1:$NTP"
[observability]
status-listen = "127.0.0.1:$SSTATUS"
[synchronization]
local-stratum = 2
clock-control = false
EOF
daemon_start s "$T/server.toml" "127.0.0.1:$SSTATUS" || bail_out "the local server did not start"

# Only what must change here: paths, the pool's name and port, clock control, a status port.
sed -e "s|^observation-path = .*|observation-path = \"$T/observe\"\\nstatus-listen = \"127.0.0.1:$STATUS\"|" \
	-e "s|^address = \"ntpd-rs.pool.ntp.org\"|address = \"localhost:$NTP\"|" \
	-e "s|^\\[synchronization\\]|[synchronization]\\nclock-control = false|" \
	"$NTPDRS/etc/ntpd-rs/ntp.toml" >"$T/ntp.toml"
changed=$(diff "$NTPDRS/etc/ntpd-rs/ntp.toml" "$T/ntp.toml" | grep -c '^>' || true)
expect "the rewritten copy differs in 4 lines (socket, status port, pool address, clock control)" \
	"$changed" 4 "$(diff "$NTPDRS/etc/ntpd-rs/ntp.toml" "$T/ntp.toml" || true)"

ctl_validate "$T/ntp.toml"
expect "ntp-ctl validate accepts the rewritten copy" "$VALIDATE_RC" 0 "$(cat "$T/validate.out")"
daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start on it"
ok "ntp-daemon starts on ntpd-rs's shipped configuration"

if wait_until 30 working_at_least d 1; then
	ok "the pool source takes samples from an address its name resolved to ($WORKING)"
else
	not_ok "the pool source takes samples from an address its name resolved to" "$(src_diag d)"
fi
out=$("$TOP_BUILDDIR/ntp-ctl" status -s "$T/observe" --json 2>&1) && rc=0 || rc=$?
expect "ntp-ctl status reads it over the observation socket" "$rc $(jget program "$out")" \
	"0 ntp-daemon" "$out"
daemon_stop d
expect "ntp-daemon stops cleanly" "$STOP_RC" 0
