#!/bin/sh
# An `nts` source whose server loses its keys: the time source (ntp-daemon, A on 127.0.0.2) is
# restarted with a new key file, so the cookies the client holds are no longer valid there. The
# server answers them with NTS NAKs (RFC 8915 §5.7); the client must make a new key exchange
# (last_key_exchange changes) and its authenticated samples continue.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-nak
plan 8

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 4
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
CS=$PORT4
ADDR="127.0.0.2:$KEA"

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
client_conf "$T/client.toml" "$CS" "$(source_entry nts "$ADDR")"
daemon_start c "$T/client.toml" "127.0.0.1:$CS" || bail_out "the client daemon did not start"

if wait_until 60 working_at_least c 1 nts; then
	ok "client: authenticated samples from A ($WORKING)"
else
	bail_out "the client got no samples from A: $(src_diag c | tr '\n' ' ')"
fi
lke0=$(src_field_of "$(status_of c)" "$ADDR" last_key_exchange)
expect_gt "client: last_key_exchange set after the first key exchange" "$lke0" 1600000000 \
	"$(src_diag c)"
completed0=$(stat_of a nts_ke_servers.0.completed)
expect_gt "A: the key exchange was counted" "$completed0" 0 "$(status_of a)"

# last_key_exchange has a resolution of one second: let the next one be in a later second.
sleep 1
# -- A restarts with new keys (its old key file removed: a new keyset is made).
daemon_stop a
rm -f "$T/a-keys/keys"
daemon_start a "$T/a.toml" "127.0.0.1:$SA" || bail_out "time source A did not restart"
# The status of the new run counts from zero: NAKs are answers to the client's old cookies.
if wait_until 60 stat_pos a ntp_servers.0.nts_naks; then
	ok "A (new keys): the client's old cookies were answered with NTS NAKs"
else
	not_ok "A (new keys): the client's old cookies were answered with NTS NAKs" \
		"$(status_of a)" "$(src_diag c)"
fi

# rekeyed: a key exchange later than the first one.
rekeyed() {
	r_l=$(src_field_of "$(status_of c)" "$ADDR" last_key_exchange)
	is_int "$r_l" && [ "$r_l" -gt "$lke0" ]
}
if wait_until 90 rekeyed; then
	ok "client: a new key exchange after the NAKs (last_key_exchange $lke0 -> $r_l)"
else
	not_ok "client: a new key exchange after the NAKs" "$(src_diag c)" "$(log_tail "$T/c.log" 15)"
fi
expect_gt "A (new keys): a key exchange completed" "$(stat_of a nts_ke_servers.0.completed)" 0 \
	"$(status_of a)"
# Samples continue: the new cookies authenticate at A, and the source still works.
if wait_until 60 stat_pos a ntp_servers.0.nts_accepted && working_at_least c 1 nts; then
	ok "samples continue with the new cookies (A accepted NTS requests; $WORKING)"
else
	not_ok "samples continue with the new cookies" "$(status_of a)" "$(src_diag c)"
fi

daemon_stop c
expect "client: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/c.log" 10)"
