#!/bin/sh
# ntp-ctl against running programs: `status` reports what the endpoint's JSON says (checked with
# the independent http-get + json-get), `--json` passes the document through, `-c` finds the
# address in a configuration, `validate` tells daemon from pool configurations and reports
# errors as FILE:LINE:, and an unreachable endpoint is exit 1 with a message.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init ctl
plan 20

CTL="$TOP_BUILDDIR/ntp-ctl"
[ -x "$CTL" ] || bail_out "$CTL not built"
make_certs || bail_out "gen-cert.sh failed"
alloc_ports 7
KE=$PORT1
NTP=$PORT2
STATUS=$PORT3
CLIENT_STATUS=$PORT4
POOL=$PORT5
POOL_STATUS=$PORT6
DEAD=$PORT7
C="$T/certs"

# ctl ARGS...: runs ntp-ctl; stdout in $T/ctl.out, stderr in $T/ctl.err, exit status in CTL_RC.
ctl() {
	CTL_RC=0
	"$CTL" "$@" >"$T/ctl.out" 2>"$T/ctl.err" || CTL_RC=$?
}
out_has() { # PATTERN (grep -e, fixed string)
	grep -qF -e "$1" "$T/ctl.out"
}

source_start src 127.0.0.2 "$KE" "$NTP" "$STATUS" || bail_out "the time source did not start"
ok "time source (ntp-daemon) started; status on 127.0.0.1:$STATUS"

# One key exchange, so that the completed counter is not just the initial 0.
"$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" >/dev/null 2>"$T/kec.err" ||
	diag "ke-client failed: $(cat "$T/kec.err")"
completed=$(stat_gt src nts_ke_servers.0.completed 0 5)
doc=$(status_of src)
primary=$(jget keyset.primary_id "$doc")

ctl status --address "127.0.0.1:$STATUS"
expect "status --address: exit 0, report of ntp-daemon" \
	"$CTL_RC $(head -n 1 "$T/ctl.out" | cut -d' ' -f1)" "0 ntp-daemon" "$(cat "$T/ctl.err")"
if out_has "NTS-KE 127.0.0.2:$KE: " && out_has "completed $completed, "; then
	ok "the NTS-KE line shows the listener and completed = $completed, as in the JSON"
else
	not_ok "the NTS-KE line shows the listener and completed = $completed, as in the JSON" \
		"$(cat "$T/ctl.out")"
fi
if out_has "Keyset: $(jget keyset.keys "$doc") keys, primary id $primary, "; then
	ok "the keyset line shows the key count and primary id $primary, as in the JSON"
else
	not_ok "the keyset line shows the key count and primary id $primary, as in the JSON" \
		"$(cat "$T/ctl.out")"
fi
if out_has "NTP 127.0.0.2:$NTP: received $(jget ntp_servers.0.received "$doc"), "; then
	ok "the NTP server line shows the listener and its counters"
else
	not_ok "the NTP server line shows the listener and its counters" "$(cat "$T/ctl.out")"
fi

ctl status --address "127.0.0.1:$STATUS" --json
json=$(cat "$T/ctl.out")
expect "status --json: exit 0, JSON with program = ntp-daemon" \
	"$CTL_RC $(jget program "$json")" "0 ntp-daemon" "$(cat "$T/ctl.err")"
expect "status --json: the keyset is the endpoint's" \
	"$(jget keyset.primary_id "$json") $(jget nts_ke_servers.0.listen "$json")" \
	"$primary 127.0.0.2:$KE"

ctl status -c "$T/src.toml"
expect "status -c CONFIG: the address comes from [observability] status-listen" \
	"$CTL_RC $(head -n 1 "$T/ctl.out" | cut -d' ' -f1)" "0 ntp-daemon" "$(cat "$T/ctl.err")"

grep -v '^status-listen' "$T/src.toml" >"$T/nostatus.toml"
ctl status -c "$T/nostatus.toml"
if [ "$CTL_RC" = 1 ] && grep -q "no status-listen" "$T/ctl.err"; then
	ok "status -c on a configuration without status-listen: exit 1, says so"
else
	not_ok "status -c on a configuration without status-listen: exit 1, says so" \
		"exit $CTL_RC" "$(cat "$T/ctl.err")"
fi

ctl status --address "127.0.0.1:$DEAD"
if [ "$CTL_RC" = 1 ] && grep -q "127.0.0.1:$DEAD.*cannot connect" "$T/ctl.err"; then
	ok "status against a dead port: exit 1 with a message"
else
	not_ok "status against a dead port: exit 1 with a message" "exit $CTL_RC" "$(cat "$T/ctl.err")"
fi
ctl status --address "127.0.0.1:$STATUS" -c "$T/src.toml"
expect "status with both --address and -c: usage error (exit 2)" "$CTL_RC" 2

# ---- validate ---------------------------------------------------------------------------------

ctl validate -c "$T/src.toml"
expect "validate a daemon configuration: exit 0, recognised" \
	"$CTL_RC $(cat "$T/ctl.out")" "0 $T/src.toml: valid ntp-daemon configuration" \
	"$(cat "$T/ctl.err")"

{
	cat "$T/src.toml"
	echo '[[source]]'
	echo 'mode = "sevrer"'
	echo 'address = "127.0.0.3:123"'
} >"$T/bad.toml"
line=$(grep -n '^mode = "sevrer"' "$T/bad.toml" | cut -d: -f1)
ctl validate -c "$T/bad.toml"
if [ "$CTL_RC" = 1 ] && grep -q "^$T/bad.toml:$line: " "$T/ctl.err" && [ ! -s "$T/ctl.out" ]; then
	ok "validate a bad configuration: exit 1, FILE:LINE: message (line $line)"
else
	not_ok "validate a bad configuration: exit 1, FILE:LINE: message (line $line)" \
		"exit $CTL_RC" "$(cat "$T/ctl.err")"
fi

pool_conf "$T/pool.toml" "$POOL" "$POOL_STATUS" "$(upstream 127.0.0.2 "$KE")"
ctl validate -c "$T/pool.toml"
expect "validate a pool configuration: recognised as nts-pool-ke" \
	"$CTL_RC $(cat "$T/ctl.out")" "0 $T/pool.toml: valid nts-pool-ke configuration" \
	"$(cat "$T/ctl.err")"

# ---- nts-pool-ke --------------------------------------------------------------------------------

if pool_start pool "$T/pool.toml" "127.0.0.1:$POOL_STATUS"; then
	wait_upstream pool 127.0.0.2 "$KE" healthy 15 || true
	state=$(upstream_field pool 127.0.0.2 "$KE" state)
	ctl status -c "$T/pool.toml"
	expect "status of the broker: exit 0, report of nts-pool-ke" \
		"$CTL_RC $(head -n 1 "$T/ctl.out" | cut -d' ' -f1)" "0 nts-pool-ke" "$(cat "$T/ctl.err")"
	row=$(grep "^127.0.0.2:$KE " "$T/ctl.out" || true)
	expect "the upstream table has 127.0.0.2:$KE with weight 1 and state $state" \
		"$(printf '%s\n' "$row" | awk '{ print $1, $2, $3 }')" "127.0.0.2:$KE 1 $state" \
		"$(cat "$T/ctl.out")"
	if grep -q "^Sessions: accepted $(stat_of pool sessions.accepted), " "$T/ctl.out"; then
		ok "the sessions line matches the JSON"
	else
		not_ok "the sessions line matches the JSON" "$(cat "$T/ctl.out")"
	fi
	daemon_stop pool
else
	not_ok "status of the broker: exit 0, report of nts-pool-ke" "the broker did not start"
	not_ok "the upstream table has 127.0.0.2:$KE" "the broker did not start"
	not_ok "the sessions line matches the JSON" "the broker did not start"
fi

# ---- time sources (the client half) --------------------------------------------------------------

cat >"$T/client.toml" <<EOF
[[source]]
mode = "server"
address = "127.0.0.2:$NTP"
poll-interval-min = 0
poll-interval-max = 0

[observability]
status-listen = "127.0.0.1:$CLIENT_STATUS"

[synchronization]
clock-control = false
EOF
if daemon_start client "$T/client.toml" "127.0.0.1:$CLIENT_STATUS"; then
	if [ "$(stat_of client sources.0.name)" = missing ]; then
		diag "this ntp-daemon has no \"sources\" in /status yet (client half): table not checked"
		ok "sources table # SKIP no sources in /status"
		ok "system line # SKIP no system in /status"
	else
		stat_gt client sources.0.reach 0 15 >/dev/null
		ctl status --address "127.0.0.1:$CLIENT_STATUS"
		cdoc=$(status_of client)
		# Reach shifts with every poll, so it is checked for form, not against the JSON.
		row=$(grep " 127.0.0.2:$NTP " "$T/ctl.out" || true)
		stratum=$(jget sources.0.stratum "$cdoc")
		expect "sources table: 127.0.0.2:$NTP, mode server, stratum $stratum, reach in octal, not 000" \
			"$(printf '%s\n' "$row" | awk '{ print $2, $3, $4, ($6 ~ /^[0-3][0-7][0-7]$/ && $6 != "000") }')" \
			"127.0.0.2:$NTP server $stratum 1" "$(cat "$T/ctl.out")" "$cdoc"
		if grep -q "^System: \(not \)\?synchronised, offset .*, stratum $(jget system.stratum "$cdoc"), " \
			"$T/ctl.out"; then
			ok "system line with the stratum of the JSON"
		else
			not_ok "system line with the stratum of the JSON" "$(cat "$T/ctl.out")" "$cdoc"
		fi
	fi
	daemon_stop client
else
	not_ok "sources table" "the client daemon did not start"
	not_ok "system line" "the client daemon did not start"
fi

daemon_stop src
expect "the time source stops cleanly" "$STOP_RC $STOP_KILLED" "0 no"
