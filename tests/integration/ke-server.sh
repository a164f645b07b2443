#!/bin/sh
# ntp-daemon's NTS-KE server over real sockets on 127.0.0.2: the response byte by byte, AEAD
# choice, refused TLS 1.2 and no-ALPN clients, Error 0 and Error 1, the pool requests of an
# authorised pool (Support, Fixed Key, Keep Alive), unauthorised pool requests, the session
# timeout, the connection limit, and NTS-protected NTP with the cookies obtained. Counters are
# read from the status endpoint.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init ke-server
plan 37

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
key-exchange-timeout-ms = 2000
concurrent-connections = 8
ntp-port = $NTP
ntp-server = "127.0.0.2"
authorized-pool-server-certificates = ["$C/pool.pem"]

[[server]]
listen = "127.0.0.2:$NTP"

[observability]
status-listen = "127.0.0.1:$STATUS"
log-level = "debug"

[synchronization]
clock-control = false
local-stratum = 1
EOF

daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start"
ok "ntp-daemon serves NTS-KE on 127.0.0.2:$KE and status on 127.0.0.1:$STATUS"

kec() {
	"$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" "$@" 2>"$T/kec.err" || {
		echo "{\"tool_exit\":$?}"
		sed 's/^/# ke-client: /' "$T/kec.err" >&2
	}
}
pool() {
	kec --cert "$C/pool.pem" --key "$C/pool.key" "$@"
}
ke_stat() {
	stat_of d "nts_ke_servers.0.$1"
}

NTPHEX=$(u16_hex "$NTP")
SERVERHEX=$(hex_of 127.0.0.2)
success_records() { # cookie length in hex, AEAD in hex
	printf '8001 0002 0000|8004 0002 %s|%s8007 0002 %s|8006 0009 %s|8000 0000 |' "$2" \
		"$(repeat 8 "0005 $1 *|")" "$NTPHEX" "$SERVERHEX"
}

# -- A plain request, byte by byte.
completed0=$(ke_stat completed)
out=$(kec)
expect "plain request: TLS 1.3 handshake with ALPN ntske/1" \
	"$(jget handshake "$out") $(jget tls_version "$out") $(jget alpn "$out")" "ok TLS1.3 ntske/1" "$out"
expect "plain request, AEAD 15: Next Protocol, AEAD, 8 cookies of 104 bytes, Port, Server, End" \
	"$(records_of "$(jget response_hex "$out")")" "$(success_records 0068 000f)"
expect_gt "status: completed grows" "$(ke_stat completed)" "$completed0"

# -- AEAD choice follows the client's order.
out=$(kec --aead 17,15)
expect "AEAD 17,15 -> 17 with cookies of 168 bytes, byte by byte" \
	"$(records_of "$(jget response_hex "$out")")" "$(success_records 00a8 0011)"
out=$(kec --aead 15,17)
expect "AEAD 15,17 -> 15" "$(jget aead "$out")" 15 "$out"
out=$(kec --aead 30,2,17)
expect "AEAD 30,2,17 -> 17 (unsupported ids skipped)" "$(jget aead "$out")" 17 "$out"
out=$(kec --aead 30)
expect "no common AEAD -> Next Protocol[0], AEAD[], End" \
	"$(records_of "$(jget response_hex "$out")")" "8001 0002 0000|8004 0000 |8000 0000 |"

# -- Refused handshakes.
fail0=$(ke_stat tls_failures)
out=$(kec --tls12)
expect "TLS 1.2-only client: handshake refused" "$(jget handshake "$out")" failed "$out"
expect_gt "status: tls_failures grows after TLS 1.2" "$(ke_stat tls_failures)" "$fail0"
fail1=$(ke_stat tls_failures)
out=$(kec --no-alpn)
if [ "$(jget handshake "$out")" = failed ] ||
	{ [ "$(jget response_hex "$out")" = "" ] && [ "$(jget cookies "$out")" = 0 ]; }; then
	ok "client without ALPN: dropped without a response"
else
	not_ok "client without ALPN: dropped without a response" "$out"
fi
expect_gt "status: tls_failures grows after no ALPN" "$(ke_stat tls_failures)" "$fail1"

# -- Error records.
REQ_HEAD=80010002000080040002000f
e0=$(stat_of d 'nts_ke_servers.0.errors.0')
out=$(kec --send-hex "${REQ_HEAD}8123000080000000")
expect "unknown critical record -> exactly Error 0, End" "$(jget response_hex "$out")" \
	80020002000080000000 "$out"
expect_gt "status: errors.0 grows" "$(stat_of d 'nts_ke_servers.0.errors.0')" "$e0"
e1=$(stat_of d 'nts_ke_servers.0.errors.1')
out=$(kec --send-hex "8001000300000080040002000f80000000")
expect "odd Next Protocol body -> exactly Error 1, End" "$(jget response_hex "$out")" \
	80020002000180000000 "$out"
out=$(kec --send-hex "80040002000f80000000")
expect "no Next Protocol -> Error 1" "$(jget error "$out")" 1 "$out"
big=$(head -c 4980 /dev/zero | od -An -v -tx1 | tr -d ' \n')
out=$(kec --send-hex "${REQ_HEAD}0123$(u16_hex 4980)${big}80000000")
expect "request of 5000 bytes -> Error 1" "$(jget error "$out")" 1 "$(printf %.300s "$out")"
expect_gt "status: errors.1 grows by the three" "$(stat_of d 'nts_ke_servers.0.errors.1')" \
	"$((e1 + 2))"

# -- The authorised pool.
sup0=$(ke_stat pool_support)
out=$(pool --request support)
expect "pool Support request: protocols [0], algorithms (15,32),(17,64), End; no cookies" \
	"$(records_of "$(jget response_hex "$out")")" \
	"8009 0002 0000|800a 0008 000f002000110040|8000 0000 |" "$out"
expect_gt "status: pool_support grows" "$(ke_stat pool_support)" "$sup0"
fk0=$(ke_stat pool_fixed_key)
out=$(pool --request fixed --aead 17 --ntp)
expect "pool Fixed Key request (AEAD 17): 8 cookies of 168 bytes, Port, Server" \
	"$(records_of "$(jget response_hex "$out")")" "$(success_records 00a8 0011)"
expect "NTS NTP with a Fixed Key cookie authenticates with the supplied keys" \
	"$(jget ntp.result "$out")" authenticated "$(jget ntp "$out")"
expect_gt "status: pool_fixed_key grows" "$(ke_stat pool_fixed_key)" "$fk0"
out=$(pool --request fixed --keep-alive 3)
expect "Keep Alive: 3 Fixed Key requests answered on one connection, each with Keep Alive" \
	"$(jget answered "$out") $(jget responses.0.keep_alive "$out") $(jget responses.1.keep_alive "$out") $(jget responses.2.cookies "$out")" \
	"3 true true 8" "$out"

# -- Pool requests from peers that are not the pinned pool.
un0=$(ke_stat unauthorised)
out=$(kec --request fixed)
expect "anonymous Fixed Key request -> Error 1" "$(jget error "$out") $(jget cookies "$out")" \
	"1 0" "$out"
out=$(kec --cert "$C/other.pem" --key "$C/other.key" --request support)
expect "Support request with an unpinned certificate of the same CA -> Error 1" \
	"$(jget error "$out")" 1 "$out"
expect_gt "status: unauthorised grows by both" "$(ke_stat unauthorised)" "$((un0 + 1))"

# -- Deadline: a client that sends nothing, and one that sends too slowly, are cut.
to0=$(ke_stat timeouts)
out=$(kec --hold 10000)
expect "idle client: the server closes the connection (timeout 2000 ms, held up to 10000 ms)" \
	"$(jget closed_by_server "$out")" true "$out"
out=$(kec --slow 500 --timeout 15000)
expect "slow client (one byte per 500 ms): no cookies" "$(jget cookies "$out")" 0 "$out"
if [ "$(jget read "$out")" = complete ] && [ "$(jget error "$out")" != 1 ]; then
	not_ok "slow client: no complete response other than Error 1" "$out"
else
	ok "slow client: no complete response other than Error 1"
fi
expect_gt "status: timeouts grows by both" "$(ke_stat timeouts)" "$((to0 + 1))"

# -- The connection limit: 16 idle clients against concurrent-connections = 8.
lim0=$(ke_stat limit_reached)
shed0=$(ke_stat shed)
i=0
pids=
while [ "$i" -lt 16 ]; do
	"$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" --hold 10000 \
		--timeout 30000 >"$T/hold-$i.json" 2>&1 &
	track $!
	pids="$pids $!"
	i=$((i + 1))
done
for p in $pids; do
	wait "$p" || true
	untrack "$p"
done
if daemon_alive d; then
	ok "16 idle clients against a limit of 8: the daemon still runs"
else
	not_ok "16 idle clients against a limit of 8: the daemon still runs"
	log_tail "$T/d.log"
fi
# At the limit a waiting connection either finds one still in its handshake to shed or waits.
expect_gt "status: the limit was reached (limit_reached + shed grows)" \
	"$(($(ke_stat limit_reached) + $(ke_stat shed)))" "$((lim0 + shed0))" \
	"$(cat "$T/hold-0.json")"
out=$(kec)
expect "after the idle clients are gone, a new client gets 8 cookies" "$(jget cookies "$out")" 8 \
	"$out"

# -- NTS-protected NTP with the cookies of a plain exchange.
acc0=$(stat_of d ntp_servers.0.nts_accepted)
out=$(kec --ntp --aead 15)
expect "NTS NTP to the negotiated server and port: authenticated reply" \
	"$(jget ntp.result "$out") $(jget ntp.port "$out")" "authenticated $NTP" "$(jget ntp "$out")"
expect_gt "status: ntp_servers[0].nts_accepted grows" "$(stat_of d ntp_servers.0.nts_accepted)" \
	"$acc0"

daemon_stop d
expect "SIGTERM: clean exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/d.log" 10)"
