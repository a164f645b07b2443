#!/bin/sh
# SIGHUP reloads the pinned pool certificates and the server certificate without dropping the
# listener; a reload whose files do not load keeps the previous credentials. A client that opens
# TCP and never starts TLS is cut at key-exchange-timeout-ms.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init reload
plan 13

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 2
KE=$PORT1
STATUS=$PORT2
C="$T/certs"
cp "$C/pool.pem" "$T/pinned.pem"
cp "$C/server-a.chain.pem" "$T/chain.pem"
cp "$C/server-a.key" "$T/key.pem"
chmod 600 "$T/key.pem"
cat >"$T/ntp.toml" <<CONF
[[nts-ke-server]]
listen = "127.0.0.2:$KE"
certificate-chain-path = "$T/chain.pem"
private-key-path = "$T/key.pem"
authorized-pool-server-certificates = ["$T/pinned.pem"]
key-exchange-timeout-ms = 1000

[observability]
status-listen = "127.0.0.1:$STATUS"
CONF

kec() {
	"$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" "$@" 2>/dev/null ||
		echo '{"tool_exit":1}'
}
# support_as NAME: the Error code answered to a Support request made with NAME's certificate,
# or "none" when it was answered.
support_as() {
	s_out=$(kec --cert "$C/$1.pem" --key "$C/$1.key" --request support)
	s_err=$(jget error "$s_out")
	[ "$s_err" = null ] && s_err=none
	echo "$s_err"
}
# hup_and_wait PATTERN: SIGHUP, then wait (bounded) until the daemon's log shows PATTERN once
# more than before, so the next request meets the reloaded credentials.
hup_and_wait() {
	h_before=$(grep -c "$1" "$T/d.log" || true)
	kill -HUP "$d_pid"
	h_i=0
	while [ "$(grep -c "$1" "$T/d.log" || true)" -le "$h_before" ] && [ $h_i -lt 100 ]; do
		sleep 0.1
		h_i=$((h_i + 1))
	done
}

daemon_start d "$T/ntp.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start"
expect "before SIGHUP: the pinned pool certificate is authorised" "$(support_as pool)" none
expect "before SIGHUP: another certificate of the same CA is not (Error 1)" \
	"$(support_as other)" 1

# A kept-alive connection of the pinned pool, open across the reload: its next request meets the
# new pins. ke-client creates go.waiting once it has its first answer.
rm -f "$T/go" "$T/go.waiting"
kec --cert "$C/pool.pem" --key "$C/pool.key" --request support --keep-alive 2 \
	--wait-for "$T/go" --timeout 30000 >"$T/kept.json" &
kept_pid=$!
track "$kept_pid"
wait_file "$T/go.waiting" 20 || true

# Pin the other certificate instead, and re-issue the server's certificate with a new key.
cp "$C/other.pem" "$T/pinned.pem"
make_cert server-a --ip 127.0.0.2
cp "$C/server-a.chain.pem" "$T/chain.pem"
cp "$C/server-a.key" "$T/key.pem"
hup_and_wait "certificates reloaded"
touch "$T/go"
wait "$kept_pid" || true
untrack "$kept_pid"
out=$(cat "$T/kept.json")
expect "after SIGHUP: a kept-alive connection whose certificate was unpinned gets Error 1" \
	"$(jget responses.0.error "$out") $(jget responses.0.keep_alive "$out") $(jget responses.1.error "$out")" \
	"null true 1" "$out"
expect "after SIGHUP: the newly pinned certificate is authorised" "$(support_as other)" none
expect "after SIGHUP: the previously pinned one is not (Error 1)" "$(support_as pool)" 1
out=$(kec)
expect "after SIGHUP: the re-issued server certificate verifies, 8 cookies" \
	"$(jget handshake "$out") $(jget cookies "$out")" "ok 8" "$out"
alive=no
daemon_alive d && alive=yes
expect "the listener kept running: same process, status still answers" \
	"$alive $(stat_of d program)" "yes ntp-daemon"

# A reload that cannot load its files keeps the previous credentials.
echo "not a certificate" >"$T/pinned.pem"
hup_and_wait "reload failed"
if grep -q "reload failed, keeping the previous certificates" "$T/d.log"; then
	ok "a broken pinned file: the reload fails and says it keeps the previous certificates"
else
	not_ok "a broken pinned file: the reload fails and says it keeps the previous certificates" \
		"$(log_tail "$T/d.log" 10)"
fi
expect "after the failed reload the previous pin still holds" "$(support_as other)" none

# A peer that connects and never sends a byte of TLS is cut at the deadline: cat sees EOF
# (status 0) long before its own 15 s limit (status 124).
to0=$(stat_of d nts_ke_servers.0.timeouts)
cut=$(bash -c "exec 3<>/dev/tcp/127.0.0.2/$KE && timeout 15 cat <&3 >/dev/null; echo \$?" \
	2>/dev/null || echo failed)
expect "a silent TCP client is disconnected by the daemon" "$cut" 0
expect_gt "status: timeouts grows" "$(stat_of d nts_ke_servers.0.timeouts)" "$to0"

# A pool that keeps its connection open and idle must not hold off SIGTERM: the daemon closes
# idle kept-alive connections when it stops instead of waiting out their 60 s idle time.
sup0=$(stat_of d nts_ke_servers.0.pool_support)
"$TOOLS/ke-client" --connect "127.0.0.2:$KE" --ca "$C/ca.pem" --cert "$C/other.pem" \
	--key "$C/other.key" --request support --keep-alive 2 --linger 45000 >"$T/linger.json" \
	2>/dev/null &
linger_pid=$!
track "$linger_pid"
i=0
while [ "$(stat_of d nts_ke_servers.0.pool_support)" = "$sup0" ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
daemon_stop d
expect "SIGTERM with an idle kept-alive pool connection: exit status 0, not killed" \
	"$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/d.log" 10)"
wait "$linger_pid" 2>/dev/null || true
expect "the daemon closed the pool's idle connection when it stopped" \
	"$(jget answered "$(cat "$T/linger.json")") $(jget closed_by_server "$(cat "$T/linger.json")")" \
	"2 true" "$(cat "$T/linger.json")"
