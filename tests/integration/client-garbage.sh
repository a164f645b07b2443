#!/bin/sh
# `nts` sources whose key-exchange port misbehaves: one answers every connection with random bytes
# and closes it (tests/tools/garbage-server, which counts the connections), one accepts and never
# answers (tests/tools/hang-server). Each source reports errors; the garbage one backs off
# (PROTOCOL.md §7: 1 s doubling), so it connects far less often than a 1 s retry loop would; the
# daemon stays up and answers /status throughout, and a third, good source (plain NTP from a time
# source) keeps working beside them.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-garbage
plan 8

for tool in garbage-server hang-server; do
	[ -x "$TOOLS/$tool" ] || bail_out "$TOOLS/$tool not built (make check builds it)"
done
make_certs || bail_out "gen-cert.sh failed"
alloc_ports 6
GARB=$PORT1
HANG=$PORT2
KEA=$PORT3
NTPA=$PORT4
SA=$PORT5
CS=$PORT6
GADDR="127.0.0.4:$GARB"
HADDR="127.0.0.5:$HANG"
WINDOW=20

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
"$TOOLS/garbage-server" "$GADDR" 300 "$T/garbage.count" >"$T/garbage.log" 2>&1 &
track $!
"$TOOLS/hang-server" "$HADDR" 300 >"$T/hang.log" 2>&1 &
track $!
wait_for_port tcp 127.0.0.4 "$GARB" 10 || bail_out "garbage-server did not listen"
wait_for_port tcp 127.0.0.5 "$HANG" 10 || bail_out "hang-server did not listen"

client_conf "$T/client.toml" "$CS" "$(source_entry nts "$GADDR")
$(source_entry nts "$HADDR")
$(source_entry server "127.0.0.2:$NTPA")"
daemon_start c "$T/client.toml" "127.0.0.1:$CS" || bail_out "the client daemon did not start"

# The daemon is up: count the garbage server's connections over the next WINDOW seconds. A
# client retrying every second would make about WINDOW of them; 1 s doubling makes 5 (at 0, 1,
# 3, 7, 15 s), and a little slack is allowed for where the window starts.
sleep "$WINDOW"
n=$(cat "$T/garbage.count" 2>/dev/null || echo missing)
if is_int "$n" && [ "$n" -ge 1 ] && [ "$n" -le 6 ]; then
	ok "garbage: $n key-exchange connections in ${WINDOW} s (backs off; <= 6)"
else
	not_ok "garbage: between 1 and 6 key-exchange connections in ${WINDOW} s" \
		"connections: $n" "$(src_diag c)"
fi

doc=$(status_of c)
if [ -n "$doc" ] && daemon_alive c; then
	ok "the daemon is up and answers /status"
else
	not_ok "the daemon is up and answers /status" "$(log_tail "$T/c.log" 20)"
fi
g_err=$(src_field_of "$doc" "$GADDR" errors)
g_last=$(src_field_of "$doc" "$GADDR" last_error)
if is_int "$g_err" && [ "$g_err" -gt 0 ] && [ "$g_last" != null ] && [ "$g_last" != missing ]
then
	ok "garbage: the source reports errors ($g_err; last: $g_last)"
else
	not_ok "garbage: the source reports errors (errors > 0, a last_error)" "$(src_diag c)"
fi
expect "garbage: no samples (reach 0)" "$(src_field_of "$doc" "$GADDR" reach)" 0 "$(src_diag c)"

# hang_err: the hanging key exchange was given up (a timeout counted as an error).
hang_err() {
	h_e=$(src_field_of "$(status_of c)" "$HADDR" errors)
	is_int "$h_e" && [ "$h_e" -gt 0 ]
}
if wait_until 40 hang_err; then
	ok "hang: the key exchange that never answers times out as an error ($(src_field_of \
		"$(status_of c)" "$HADDR" last_error))"
else
	not_ok "hang: the key exchange that never answers times out as an error" "$(src_diag c)"
fi
expect "hang: no samples (reach 0)" "$(src_field_of "$(status_of c)" "$HADDR" reach)" 0 \
	"$(src_diag c)"

if wait_until 30 working_at_least c 1 server; then
	ok "the good (plain NTP) source beside them has samples ($WORKING)"
else
	not_ok "the good (plain NTP) source beside them has samples" "$(src_diag c)"
fi

daemon_stop c
expect "client: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/c.log" 10)"
