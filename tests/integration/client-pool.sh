#!/bin/sh
# ntp-daemon as a client of the NTS pool (PROTOCOL.md §7): two time sources (A on 127.0.0.2, B on
# 127.0.0.3), the broker, and our daemon with one `nts-pool` source, count = 2. It must hold two
# distinct servers (each key exchange denies the ones in use), both with authenticated samples,
# and be synchronised. When A dies, the client notices (A's reach falls to 0 or A is dropped) and
# goes back to the pool for a replacement, keeping B; with only B alive the pool can only offer B
# again, which the client must not take twice. When A is back, two distinct servers again.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-pool
plan 15

pool_certs || bail_out "gen-cert.sh failed"
alloc_ports 9
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
KEB=$PORT4
NTPB=$PORT5
SB=$PORT6
PK=$PORT7
PS=$PORT8
CS=$PORT9
NAME_A="127.0.0.2:$NTPA"
NAME_B="127.0.0.3:$NTPB"

source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" || bail_out "time source A did not start"
source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" || bail_out "time source B did not start"
pool_conf "$T/pool.toml" "$PK" "$PS" \
	"$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB")" \
	"key-exchange-timeout-ms = 4000
upstream-timeout-ms = 1000"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start"
if ! { wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$KEB" healthy 30; }
then
	bail_out "the broker's upstreams did not become healthy: $(status_of p)"
fi

# Polls every 1..2 s, so that 8 unanswered polls after A's death take seconds, not minutes.
client_conf "$T/client.toml" "$CS" "$(source_entry nts-pool "127.0.0.1:$PK" 2 0 1)"
if daemon_start c "$T/client.toml" "127.0.0.1:$CS"; then
	ok "client: ntp-daemon with an nts-pool source (count = 2) started"
else
	bail_out "the client daemon did not start"
fi

# both_distinct: the client works with A and B, i.e. two distinct servers.
both_distinct() {
	working_at_least c 2 nts-pool && has_word "$WORKING" "$NAME_A" && has_word "$WORKING" "$NAME_B"
}

if wait_until 60 both_distinct; then
	ok "client: two distinct pool servers with authenticated samples ($WORKING)"
else
	not_ok "client: two distinct pool servers with authenticated samples" \
		"expected $NAME_A and $NAME_B; working: $WORKING" "$(src_diag c)"
fi
doc=$(status_of c)
n_src=$(src_rows "$doc" | awk '$2 == "nts-pool"' | wc -l)
expect "client: exactly count = 2 pool sources listed" "$n_src" 2 "$(src_diag c)"
if wait_until 30 synchronised c; then
	ok "client: system synchronised"
else
	not_ok "client: system synchronised" "$(src_diag c)"
fi
bad=$(src_rows "$doc" | awk '$2 == "nts-pool" && !($6 ~ /^[0-9]+$/ && $6 > 0)' | wc -l)
expect "client: every pool source holds cookies (> 0)" "$bad" 0 "$(src_diag c)"
expect "client: each pool source names the pool it came from" \
	"$(jget sources.0.pool "$doc") $(jget sources.1.pool "$doc")" \
	"127.0.0.1:$PK 127.0.0.1:$PK" "$(src_diag c)"
expect_gt "broker: sessions.completed >= 2 (one key exchange per server)" \
	"$(stat_of p sessions.completed)" 1 "$(status_of p)"
# Authenticated: the time sources answered NTS (cookies from the broker's Fixed Key requests),
# and never plain NTP.
na=$(stat_of a ntp_servers.0.nts_accepted)
nb=$(stat_of b ntp_servers.0.nts_accepted)
pa=$(stat_of a ntp_servers.0.plain)
pb=$(stat_of b ntp_servers.0.plain)
if is_int "$na" && is_int "$nb" && [ "$na" -gt 0 ] && [ "$nb" -gt 0 ] && [ "$pa $pb" = "0 0" ]
then
	ok "A and B answered NTS-authenticated requests ($na, $nb), no plain NTP"
else
	not_ok "A and B answered NTS-authenticated requests, no plain NTP" \
		"nts_accepted: A $na, B $nb; plain: A $pa, B $pb"
fi

# -- A dies.
sessions0=$(stat_of p sessions.accepted)
errors0=$(src_sum "$doc" 8)
daemon_stop a

# a_gone: A is no longer a working source of the client: listed with reach 0, or not listed.
a_gone() {
	src_rows "$(status_of c)" | awk -v a="$NAME_A" '$1 == a && $4 != 0 { f = 1 } END { exit f }'
}
if wait_until 60 a_gone; then
	ok "A stopped: the client's source for A lost its reach (or was dropped)"
else
	not_ok "A stopped: the client's source for A lost its reach (or was dropped)" "$(src_diag c)"
fi
# back_to_pool: a new key exchange with the broker for the replacement (its sessions grow), or
# at least failed attempts counted by the client.
back_to_pool() {
	b_s=$(stat_of p sessions.accepted)
	b_e=$(src_sum "$(status_of c)" 8)
	{ is_int "$b_s" && [ "$b_s" -gt "$sessions0" ]; } || [ "$b_e" -gt "$errors0" ]
}
if wait_until 90 back_to_pool; then
	ok "A stopped: the client went back to the pool for a replacement"
else
	not_ok "A stopped: the client went back to the pool for a replacement" \
		"broker sessions.accepted $sessions0 -> $(stat_of p sessions.accepted)" \
		"client errors $errors0 -> $(src_sum "$(status_of c)" 8)" "$(src_diag c)"
fi
# The pool's only healthy answer is B, which the client already uses: it must not hold B twice.
if working_at_least c 1 nts-pool && has_word "$WORKING" "$NAME_B"; then
	ok "A stopped: B still works ($WORKING)"
else
	not_ok "A stopped: B still works" "$(src_diag c)"
fi
dup=$(src_rows "$(status_of c)" | awk '$2 == "nts-pool" { print $1 }' | sort | uniq -d |
	grep -v '^null$' | tr '\n' ' ')
expect "A stopped: no server held twice" "$dup" "" "$(src_diag c)"
if daemon_alive c && synchronised c; then
	ok "A stopped: the client is still synchronised"
else
	not_ok "A stopped: the client is still synchronised" "$(src_diag c)"
fi

# -- A comes back (same configuration and key file).
daemon_start a "$T/a.toml" "127.0.0.1:$SA" || bail_out "time source A did not restart"
# The broker's probe back-off and the client's key-exchange back-off (capped at 64 s) add up;
# the bound is generous.
if wait_until 180 both_distinct; then
	ok "A restarted: two distinct pool servers again ($WORKING)"
else
	not_ok "A restarted: two distinct pool servers again" "working: $WORKING" "$(src_diag c)" \
		"broker upstream A: $(upstream_field p 127.0.0.2 "$KEA" state)"
fi

daemon_stop c
expect "client: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/c.log" 10)"
