#!/bin/sh
# Token-authenticated pools (PROTOCOL.md §3.5) end to end: no time source pins the pool's
# certificate. Source A (127.0.0.2, iana numbering) accepts an inline token; source B
# (127.0.0.3, ntpd-rs-v1 numbering) accepts the tokens of a 0600 file and also pins another
# certificate. One broker serves both, each upstream with its own token and numbering, and chrony
# gets NTS time through it. Wrong and missing tokens are refused with Error 1; a token file
# reloaded by SIGHUP applies to the next request of a kept-alive connection; an upstream that
# refuses the broker's token is unhealthy with the reason "authentication refused" until the
# broker's own token file is fixed and reloaded.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-token
plan 30

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

TOKA=token-for-source-a-0123456789
TOKB=token-for-source-b-abcdefghij
TOKB2=token-for-source-b-rotated-1
printf '# tokens of pools allowed to use this source\n\n%s\r\n' "$TOKB" >"$T/b-tokens"
chmod 600 "$T/b-tokens"
printf '%s\n' "$TOKB" >"$T/broker-b-token"
chmod 600 "$T/broker-b-token"

SOURCE_KE_EXTRA="accepted-pool-authentication-tokens = [\"$TOKA\"]" \
	source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" none ||
	bail_out "time source A did not start"
SOURCE_KE_EXTRA="accepted-pool-authentication-tokens-path = \"$T/b-tokens\"
pool-record-numbers = \"ntpd-rs-v1\"" \
	source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" "$C/other.pem" ||
	bail_out "time source B did not start"
expect "status: A accepts 1 token and pins nothing; B accepts 1 token and pins 1 certificate" \
	"$(stat_of a nts_ke_servers.0.accepted_pool_tokens) $(stat_of a nts_ke_servers.0.authorized_pool_certificates) $(stat_of b nts_ke_servers.0.accepted_pool_tokens) $(stat_of b nts_ke_servers.0.authorized_pool_certificates)" \
	"1 0 1 1" "$(status_of a)" "$(status_of b)"

# direct NAME KE ARGS...: ke-client straight to a time source.
direct() {
	d_ip=127.0.0.2
	[ "$1" = b ] && d_ip=127.0.0.3
	d_ke=$2
	shift 2
	"$TOOLS/ke-client" --connect "$d_ip:$d_ke" --ca "$C/ca.pem" "$@" 2>/dev/null ||
		echo '{"tool_exit":1}'
}

out=$(direct a "$KEA" --request support --token "$TOKA")
expect "A: Support with its token is answered (no Error, NTPv4 listed)" \
	"$(jget error "$out") $(jget supported_protocols.0 "$out")" "null 0" "$out"
out=$(direct a "$KEA" --request fixed --token "$TOKA" --ntp)
expect "A: Fixed Key with its token -> 8 cookies that authenticate NTS NTP" \
	"$(jget cookies "$out") $(jget ntp.result "$out")" "8 authenticated" "$out"
un0=$(stat_of a nts_ke_servers.0.unauthorised)
out=$(direct a "$KEA" --request fixed --token "$TOKA-wrong")
expect "A: Fixed Key with a wrong token -> Error 1, no cookies" \
	"$(jget error "$out") $(jget cookies "$out")" "1 0" "$out"
out=$(direct a "$KEA" --request support)
expect "A: Support without a token (and without a pinned certificate) -> Error 1" \
	"$(jget error "$out")" 1 "$out"
out=$(direct a "$KEA" --request support --token "$TOKA" --numbering ntpd-rs-v1)
expect "A: a request in the other numbering -> Error 0 (unknown critical records)" \
	"$(jget error "$out")" 0 "$out"
expect "status A: token 2 authorised, certificate 0, token_refused 1, unauthorised +2" \
	"$(stat_of a nts_ke_servers.0.pool_authorised.token) $(stat_of a nts_ke_servers.0.pool_authorised.certificate) $(stat_of a nts_ke_servers.0.token_refused) $(($(stat_of a nts_ke_servers.0.unauthorised) - un0))" \
	"2 0 1 2" "$(status_of a)"
if grep -q -e "$TOKA" "$T/a.log" || "$TOOLS/http-get" "127.0.0.1:$SA" /metrics 2>/dev/null |
	grep -q -e "$TOKA"; then
	not_ok "A: the token appears in neither its log nor /status nor /metrics" "found it"
elif status_of a | grep -q -e "$TOKA"; then
	not_ok "A: the token appears in neither its log nor /status nor /metrics" "in /status"
else
	ok "A: the token appears in neither its log nor /status nor /metrics"
fi

out=$(direct b "$KEB" --request support --numbering ntpd-rs-v1 --token "$TOKB")
expect "B (ntpd-rs-v1): Support with the file's token (0x4005) is answered" \
	"$(jget error "$out") $(jget supported_protocols.0 "$out")" "null 0" "$out"
out=$(direct b "$KEB" --request support --numbering ntpd-rs-v1 --cert "$C/other.pem" \
	--key "$C/other.key")
expect "B: Support with its pinned certificate and no token is answered too" \
	"$(jget error "$out")" null "$out"
expect "status B: one request authorised by token, one by certificate" \
	"$(stat_of b nts_ke_servers.0.pool_authorised.token) $(stat_of b nts_ke_servers.0.pool_authorised.certificate)" \
	"1 1" "$(status_of b)"

# -- The broker: tokens only, one upstream per numbering.
pool_conf "$T/pool.toml" "$PK" "$PS" \
	"$(upstream 127.0.0.2 "$KEA" 1 "authentication-token = \"$TOKA\""), $(upstream 127.0.0.3 "$KEB" 1 "authentication-token-path = \"$T/broker-b-token\", pool-record-numbers = \"ntpd-rs-v1\"")" \
	"deep-check-interval-s = 0"
pool_start p "$T/pool.toml" "127.0.0.1:$PS" || bail_out "nts-pool-ke did not start"
if wait_upstream p 127.0.0.2 "$KEA" healthy 30 && wait_upstream p 127.0.0.3 "$KEB" healthy 30
then
	ok "broker: the iana and the ntpd-rs-v1 upstream are both healthy with their tokens"
else
	not_ok "broker: the iana and the ntpd-rs-v1 upstream are both healthy with their tokens" \
		"$(status_of p)" "$(log_tail "$T/p.log")"
fi

# Smooth weighted round-robin over two equal upstreams alternates, so four sessions reach both.
seen_a=0 seen_b=0 auth_ok=0
for i in 1 2 3 4; do
	out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK" --ca "$C/ca.pem" --ntp 2>&1) || true
	case "$(jget server "$out")" in
	127.0.0.2) seen_a=$((seen_a + 1)) ;;
	127.0.0.3) seen_b=$((seen_b + 1)) ;;
	esac
	[ "$(jget ntp.result "$out")" = authenticated ] && auth_ok=$((auth_ok + 1))
done
expect "four clients through the broker: both sources used, every NTS NTP reply authenticated" \
	"$([ $seen_a -gt 0 ] && [ $seen_b -gt 0 ] && echo both) $auth_ok" "both 4" "$out"
m_served=$("$TOOLS/http-get" "127.0.0.1:$PS" /metrics 2>/dev/null |
	sed -n "s/^nts_pool_ke_upstream_sessions_served_total{upstream=\"127.0.0.2:$KEA\"} //p")
expect "broker /metrics: sessions served by A equal its /status count" \
	"$m_served" "$(upstream_field p 127.0.0.2 "$KEA" sessions_served)"
expect_gt "status A: the broker's Fixed Key requests are authorised by token" \
	"$(stat_of a nts_ke_servers.0.pool_authorised.token)" 3 "$(status_of a)"
expect_gt "status B: the broker's requests are authorised by token (0x4005)" \
	"$(stat_of b nts_ke_servers.0.pool_authorised.token)" 2 "$(status_of b)"

nts0=$(nts_accepted_sum a b)
desc="chronyd -Q through the token-authenticated broker: 'System clock wrong by'"
chrony_through_pool "$desc" "$PK" "$UNUSED"
expect_gt "a time source accepted chrony's NTS packets" "$(nts_accepted_sum a b)" "$nts0" \
	"$(status_of a)" "$(status_of b)"

# -- SIGHUP on B replaces its token file; a kept-alive connection meets the new set.
rm -f "$T/go" "$T/go.waiting"
direct b "$KEB" --request support --numbering ntpd-rs-v1 --token "$TOKB" --keep-alive 2 \
	--wait-for "$T/go" --timeout 30000 >"$T/kept.json" &
kept_pid=$!
track "$kept_pid"
# ke-client creates go.waiting once it has read the first answer; only then does the file change.
wait_file "$T/go.waiting" 20 || true
printf '%s\n%s\n' "$TOKB2" "another-token-of-this-source" >"$T/b-tokens"
chmod 600 "$T/b-tokens"
kill -HUP "$b_pid"
wait_stat b nts_ke_servers.0.accepted_pool_tokens 2 20 || true
expect "B after SIGHUP: 2 accepted tokens from the rewritten file" \
	"$(stat_of b nts_ke_servers.0.accepted_pool_tokens)" 2 "$(log_tail "$T/b.log")"
touch "$T/go"
wait "$kept_pid" || true
untrack "$kept_pid"
out=$(cat "$T/kept.json")
expect "kept-alive connection: first request served, the next (old token) gets Error 1" \
	"$(jget responses.0.error "$out") $(jget responses.0.keep_alive "$out") $(jget responses.1.error "$out")" \
	"null true 1" "$out"
out=$(direct b "$KEB" --request support --numbering ntpd-rs-v1 --token "$TOKB2")
expect "B: the new token is accepted" "$(jget error "$out")" null "$out"

# The broker still sends the old token: its probes are refused.
w_i=0
while ! upstream_field p 127.0.0.3 "$KEB" last_probe_result | grep -q "authentication refused" &&
	[ $w_i -lt 300 ]; do
	sleep 0.1
	w_i=$((w_i + 1))
done
expect "broker: B unhealthy, reason 'authentication refused (upstream answered Error 1)'" \
	"$(upstream_field p 127.0.0.3 "$KEB" state) / $(upstream_field p 127.0.0.3 "$KEB" last_probe_result)" \
	"unhealthy / authentication refused (upstream answered Error 1)" "$(status_of p)"
if grep -q "warn  upstream 127.0.0.3:$KEB unhealthy: authentication refused" "$T/p.log"; then
	ok "broker log: a warning names the refused authentication"
else
	not_ok "broker log: a warning names the refused authentication" "$(log_tail "$T/p.log")"
fi
printf '%s\n' "$TOKB2" >"$T/broker-b-token"
kill -HUP "$p_pid"
if wait_upstream p 127.0.0.3 "$KEB" healthy 60; then
	ok "broker: after its token file is fixed and SIGHUP, B is healthy again"
else
	not_ok "broker: after its token file is fixed and SIGHUP, B is healthy again" \
		"$(status_of p)" "$(log_tail "$T/p.log")"
fi

# A broker token file others can read is refused at start, naming the fix.
chmod 644 "$T/broker-b-token"
bad_rc=0
"$POOL_KE" -c "$T/pool.toml" >"$T/bad.log" 2>&1 || bad_rc=$?
expect "broker: a token file readable by others -> exit 78, 'chmod 600' in the message" \
	"$bad_rc $(grep -c 'chmod 600' "$T/bad.log")" "78 1" "$(cat "$T/bad.log")"
chmod 600 "$T/broker-b-token"

# --derive-token: the public pool's derivation, against answers computed independently
# (Python's hashlib.sha3_256 of secret || uuid || randomizer).
printf 'pool base secret\n' >"$T/secret"
chmod 600 "$T/secret"
UUID=9b7e1c52-6d1f-4c8e-a6c1-1f0e3f2b8d44
expect "--derive-token with and without a randomizer: lowercase hex SHA3-256" \
	"$("$POOL_KE" --derive-token --secret-file "$T/secret" --uuid "$UUID" --randomizer r1) $("$POOL_KE" --derive-token --secret-file "$T/secret" --uuid "$UUID")" \
	"76404343e1a8c24cac59ed4769ff2d8cbfc90a5c49853009ee24bb352d854e8e 172ac467d5c3bf5f8d28b981810e120ae42cf4c8d30f39d93be48eb6c4c2b10b"
chmod 640 "$T/secret"
d_rc=0
"$POOL_KE" --derive-token --secret-file "$T/secret" --uuid "$UUID" >"$T/derive.out" 2>&1 ||
	d_rc=$?
expect "--derive-token: a secret readable by the group -> exit 1, 'chmod 600', no token" \
	"$d_rc $(grep -c 'chmod 600' "$T/derive.out") $(grep -c '^[0-9a-f]\{64\}$' "$T/derive.out")" \
	"1 1 0" "$(cat "$T/derive.out")"
d_rc=0
"$POOL_KE" --derive-token --secret-file "$T/secret" >/dev/null 2>&1 || d_rc=$?
expect "--derive-token without --uuid -> exit 2 (usage)" "$d_rc" 2

daemon_stop p
expect "broker: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p.log" 10)"
daemon_stop a
rc_a="$STOP_RC $STOP_KILLED"
daemon_stop b
expect "sources: SIGTERM -> exit 0" "$rc_a / $STOP_RC $STOP_KILLED" "0 no / 0 no"
