#!/bin/sh
# A plain `server` source (NTPv4 without NTS) against a time source's [[server]] at local stratum
# 1: the client gets samples, is synchronised, and its own [[server]] then announces stratum 2
# (checked with a plain NTP query, tests/tools/ntp-query) with the time source as reference.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-server
plan 9

[ -x "$TOOLS/ntp-query" ] || bail_out "$TOOLS/ntp-query not built (make check builds it)"
make_certs || bail_out "gen-cert.sh failed"
alloc_ports 5
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
CNTP=$PORT4
CS=$PORT5
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

daemon_stop c
expect "client: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/c.log" 10)"
