#!/bin/sh
# The broker end to end: two time sources (ntp-daemon A on 127.0.0.2 and B on 127.0.0.3, each
# pinning the pool's certificate, separate keys) behind nts-pool-ke on 127.0.0.1. A client's key
# exchange through the broker yields cookies that authenticate NTS NTP at the source the Server
# record names: they were sealed around keys exported from the client's own TLS session. chrony
# (-Q, as nobody, clock untouched) syncs through the pool. Refused handshakes and /status.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-basic
plan 18

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
UNUSED=$PORT9
C="$T/certs"
why_not=$(chrony_ready) || why_not=${why_not:-chronyd unusable}

if source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" && source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB"
then
	ok "time sources A (127.0.0.2) and B (127.0.0.3) run"
else
	bail_out "ntp-daemon time sources did not start"
fi
pool_conf "$T/pool.toml" "$PK" "$PS" \
	"$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB")" "deep-check-interval-s = 0"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start"
if wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$KEB" healthy 30
then
	ok "broker: both upstreams probed and healthy"
else
	not_ok "broker: both upstreams probed and healthy" "$(status_of p)" "$(log_tail "$T/p.log")"
fi

# has_aead15 DOMAIN PORT: the upstream's cached algorithm list holds AES-SIV-CMAC-256 (32 bytes).
has_aead15() {
	h_doc=$(status_of p)
	h_u=0
	while [ "$(jget "upstreams.$h_u.name" "$h_doc")" != missing ]; do
		if [ "$(jget "upstreams.$h_u.port" "$h_doc")" = "$2" ]; then
			h_a=0
			while [ "$(jget "upstreams.$h_u.algorithms.$h_a.id" "$h_doc")" != missing ]; do
				if [ "$(jget "upstreams.$h_u.algorithms.$h_a.id" "$h_doc")" = 15 ] &&
					[ "$(jget "upstreams.$h_u.algorithms.$h_a.key_length" "$h_doc")" = 32 ]
				then
					echo yes
					return 0
				fi
				h_a=$((h_a + 1))
			done
		fi
		h_u=$((h_u + 1))
	done
	echo no
}
expect "status: both upstreams list algorithm 15 (key_length 32)" \
	"$(has_aead15 127.0.0.2 "$KEA") $(has_aead15 127.0.0.3 "$KEB")" "yes yes" "$(status_of p)"

fk_a=$(stat_of a nts_ke_servers.0.pool_fixed_key)
fk_b=$(stat_of b nts_ke_servers.0.pool_fixed_key)
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --ntp 2>&1) || true
expect "ke-client through the broker: TLS 1.3, ntske/1, 8 cookies of AEAD 15" \
	"$(jget handshake "$out") $(jget tls_version "$out") $(jget alpn "$out") $(jget cookies "$out") $(jget aead "$out") $(jget error "$out")" \
	"ok TLS1.3 ntske/1 8 15 null" "$out"
srv=$(jget server "$out")
case $srv in
127.0.0.2) src=a want_port=$NTPA ;;
127.0.0.3) src=b want_port=$NTPB ;;
*) src=none want_port=none ;;
esac
expect "Server record names a time source, Port is that source's NTP port" \
	"$srv $(jget port "$out")" "$srv $want_port" "$out"
expect "NTS NTP with those cookies authenticates at that source" \
	"$(jget ntp.server "$out") $(jget ntp.port "$out") $(jget ntp.result "$out")" \
	"$srv $want_port authenticated" "$out"
if [ "$src" = a ]; then
	expect_gt "source A: pool_fixed_key grows" \
		"$(stat_gt a nts_ke_servers.0.pool_fixed_key "$fk_a" 10)" "$fk_a" "$(status_of a)"
elif [ "$src" = b ]; then
	expect_gt "source B: pool_fixed_key grows" \
		"$(stat_gt b nts_ke_servers.0.pool_fixed_key "$fk_b" 10)" "$fk_b" "$(status_of b)"
else
	not_ok "the chosen source: pool_fixed_key grows" "no source chosen"
fi
if [ "$src" = none ]; then
	not_ok "that source accepted the NTS NTP request" "no source chosen"
else
	expect_gt "that source accepted the NTS NTP request" \
		"$(stat_of "$src" ntp_servers.0.nts_accepted)" 0 "$(status_of "$src")"
fi

# -- chrony through the pool.
nts0=$(nts_accepted_sum a b)
desc="chronyd -Q through the broker: 'System clock wrong by' (clock left alone)"
chrony_through_pool "$desc" "$PK" "$UNUSED"
expect_gt "a time source accepted chrony's NTS packets (nts_accepted grows)" \
	"$(nts_accepted_sum a b)" "$nts0" \
	"$(status_of a)" "$(status_of b)"

# -- Handshakes the broker refuses.
tls0=$(stat_of p sessions.failed.tls)
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --tls12 2>&1) || true
expect "TLS 1.2-only client: handshake refused" "$(jget handshake "$out")" failed "$out"
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --no-alpn 2>&1) || true
if [ "$(jget handshake "$out")" = failed ] ||
	{ [ "$(jget response_hex "$out")" = "" ] && [ "$(jget cookies "$out")" = 0 ]; }; then
	ok "client without ALPN: refused without cookies"
else
	not_ok "client without ALPN: refused without cookies" "$out"
fi
is_int "$tls0" || tls0=0
expect_gt "status: sessions.failed.tls counts both" \
	"$(stat_gt p sessions.failed.tls $((tls0 + 1)) 10)" $((tls0 + 1)) "$(status_of p)"

# -- The broker's /status.
doc=$(status_of p)
expect "status: program nts-pool-ke, listener 127.0.0.1:$PK" \
	"$(jget program "$doc") $(jget listeners.0.listen "$doc")" "nts-pool-ke 127.0.0.1:$PK" "$doc"
if [ -n "$why_not" ]; then
	want_done=0
else
	want_done=1
fi
expect_gt "status: sessions.completed counts ke-client and chrony" \
	"$(jget sessions.completed "$doc")" "$want_done" "$doc"
served_a=$(upstream_field p 127.0.0.2 "$KEA" sessions_served)
served_b=$(upstream_field p 127.0.0.3 "$KEB" sessions_served)
is_int "$served_a" || served_a=0
is_int "$served_b" || served_b=0
served=$((served_a + served_b))
expect_gt "status: upstreams' sessions_served add up to the sessions" "$served" "$want_done" "$doc"

daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
daemon_stop a
rc_a="$STOP_RC $STOP_KILLED"
daemon_stop b
expect "sources: SIGTERM -> exit 0" "$rc_a / $STOP_RC $STOP_KILLED" "0 no / 0 no"
