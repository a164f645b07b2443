#!/bin/sh
# A plain `server` source (NTPv4 without NTS) against a time source's [[server]] at local stratum
# 1: the client gets samples, is synchronised, and its own [[server]] then announces stratum 2
# (checked with a plain NTP query, tests/tools/ntp-query) with the time source as reference. A
# source that stops answering leaves selection as soon as 8 polls went unanswered; a server that
# is itself unsynchronised (leap 3, stratum 16) is never used, and the status says why.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-server
plan 15

[ -x "$TOOLS/ntp-query" ] || bail_out "$TOOLS/ntp-query not built (make check builds it)"
make_certs || bail_out "gen-cert.sh failed"
alloc_ports 8
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
CNTP=$PORT4
CS=$PORT5
UNTP=$PORT6
US=$PORT7
DS=$PORT8
ADDR="127.0.0.2:$NTPA"

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
client_conf "$T/client.toml" "$CS" "$(source_entry server "$ADDR")" "[[server]]
listen = \"127.0.0.4:$CNTP\""
daemon_start c "$T/client.toml" "127.0.0.1:$CS" || bail_out "the client daemon did not start"

if wait_until 60 working_at_least c 1 server; then
	ok "client: samples from A's NTP server ($WORKING)"
else
	not_ok "client: samples from A's NTP server" "$(src_diag c)" "$(log_tail "$T/c.log" 15)"
fi
doc=$(status_of c)
expect "client: the source is named by its NTP server" "$(src_field_of "$doc" "$ADDR" name)" \
	"$ADDR" "$(src_diag c)"
expect "client: no cookies, no key exchange for a server source" \
	"$(src_field_of "$doc" "$ADDR" cookies) $(src_field_of "$doc" "$ADDR" last_key_exchange)" \
	"null null" "$(src_diag c)"
if wait_until 30 synchronised c; then
	ok "client: system synchronised"
else
	not_ok "client: system synchronised" "$(src_diag c)"
fi
expect "client: system stratum 2 (A is at local stratum 1)" "$(stat_of c system.stratum)" 2 \
	"$(src_diag c)"
pa=$(stat_of a ntp_servers.0.plain)
expect_gt "A: answered plain NTP requests" "$pa" 0 "$(status_of a)"

q=$("$TOOLS/ntp-query" "127.0.0.4:$CNTP" 3000 2>&1) || true
expect "our [[server]]: answers, stratum 2, leap 0 (synchronised)" \
	"$(jget result "$q") $(jget stratum "$q") $(jget leap "$q")" "ok 2 0" "$q"
# The reference ID of a stratum-2 server is its peer's IPv4 address: 127.0.0.2 = 7f000002.
expect "our [[server]]: reference ID 127.0.0.2" "$(jget refid "$q")" 7f000002 "$q"

doc=$(status_of c)
rx=$(src_field_of "$doc" "$ADDR" last_rx_s)
if is_int "${rx%.*}" && [ "${rx%.*}" -ge 0 ] && [ "$(src_field_of "$doc" "$ADDR" pool)" = null ]
then
	ok "client: last_rx_s is the age of the last sample ($rx s); no pool for a server source"
else
	not_ok "client: last_rx_s is the age of the last sample; no pool" "$(src_diag c)"
fi

# -- A stops answering: out of selection once 8 polls went unanswered, not minutes later.
daemon_stop a
unreachable() {
	u_doc=$(status_of c)
	[ "$(src_field_of "$u_doc" "$ADDR" reach)" = 0 ] &&
		[ "$(src_field_of "$u_doc" "$ADDR" selected)" = false ] &&
		[ "$(jget system.synchronised "$u_doc")" = false ]
}
if wait_until 90 unreachable; then
	ok "client: A unanswered for 8 polls -> reach 0, not selected, system not synchronised"
else
	not_ok "client: A unanswered for 8 polls -> reach 0, not selected, system not synchronised" \
		"$(src_diag c)"
fi
expect "client: the reason is in last_error" \
	"$(src_field_of "$(status_of c)" "$ADDR" last_error)" "no reply to the last 8 polls" \
	"$(src_diag c)"

daemon_stop c
expect "client: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/c.log" 10)"

# -- An unsynchronised server (local stratum 16: leap 3) answers but is never used.
cat >"$T/u.toml" <<UCONF
[[server]]
listen = "127.0.0.3:$UNTP"

[observability]
status-listen = "127.0.0.1:$US"

[synchronization]
clock-control = false
local-stratum = 16
UCONF
daemon_start u "$T/u.toml" "127.0.0.1:$US" || bail_out "the unsynchronised server did not start"
UADDR="127.0.0.3:$UNTP"
client_conf "$T/d.toml" "$DS" "$(source_entry server "$UADDR")"
daemon_start d "$T/d.toml" "127.0.0.1:$DS" || bail_out "the second client daemon did not start"
refused() {
	r_doc=$(status_of d)
	r_reach=$(src_field_of "$r_doc" "$UADDR" reach)
	is_int "$r_reach" && [ "$r_reach" -gt 0 ] &&
		[ "$(src_field_of "$r_doc" "$UADDR" last_error)" != null ]
}
if wait_until 30 refused; then
	ok "client: the unsynchronised server answers (reach > 0)"
else
	not_ok "client: the unsynchronised server answers (reach > 0)" "$(src_diag d)"
fi
doc=$(status_of d)
expect "client: it is not selected, no sample, and last_error says why" \
	"$(src_field_of "$doc" "$UADDR" selected) $(src_field_of "$doc" "$UADDR" offset_s) / $(src_field_of "$doc" "$UADDR" last_error)" \
	"false null / server unsynchronised (leap indicator 3)" "$(src_diag d)"
daemon_stop d
rc_d="$STOP_RC $STOP_KILLED"
daemon_stop u
expect "second client and the unsynchronised server: SIGTERM -> exit 0" \
	"$rc_d / $STOP_RC $STOP_KILLED" "0 no / 0 no"
