#!/bin/sh
# Interoperability the other way round (chrony.sh has chrony as our client): ntp-daemon with an
# `nts` source against chronyd's NTS-KE and NTS server (chronyd -x as nobody: the clock is left
# alone, ARCHITECTURE.md §7; our daemon runs with clock-control = false). The source gets
# cookies from chrony's key exchange and authenticated samples from its NTP server.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-chrony
plan 6

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 3
CKE=$PORT1
CNTP=$PORT2
CS=$PORT3
C="$T/certs"

if why_not=$(chrony_ready); then
	:
else
	# Not runnable here (not root, no chronyd): every test is reported as skipped.
	i=0
	while [ "$i" -lt 6 ]; do
		T_NUM=$((T_NUM + 1))
		echo "ok $T_NUM # SKIP cannot run chrony: $why_not"
		i=$((i + 1))
	done
	exit 0
fi

chrony_dir cs
cp "$C/server-b.key" "$T/cs/key.pem"
chown nobody: "$T/cs/key.pem"
cat >"$T/cs.conf" <<EOF
port $CNTP
ntsport $CKE
bindaddress 127.0.0.3
ntsserverkey $T/cs/key.pem
ntsservercert $C/server-b.chain.pem
ntsdumpdir $T/cs
allow 127.0.0.0/8
ntsprocesses 0
local stratum 1
pidfile $T/cs/chronyd.pid
bindcmdaddress $T/cs/chronyd.sock
cmdport 0
EOF
chrony_server_start cs "$T/cs.conf"
if wait_for_port tcp 127.0.0.3 "$CKE" 20 && wait_for_port udp 127.0.0.3 "$CNTP" 20; then
	ok "chronyd (-x, as nobody) serves NTS-KE on 127.0.0.3:$CKE and NTP on 127.0.0.3:$CNTP"
else
	bail_out "chronyd did not listen on 127.0.0.3:$CKE: $(cat "$T/cs.log")"
fi

ADDR="127.0.0.3:$CKE"
client_conf "$T/client.toml" "$CS" "$(source_entry nts "$ADDR")"
daemon_start c "$T/client.toml" "127.0.0.1:$CS" || bail_out "the client daemon did not start"

# chrony_source_ok: the nts source has reach > 0, a measured offset and cookies left.
chrony_source_ok() {
	working_at_least c 1 nts || return 1
	k_doc=$(status_of c)
	k_cookies=$(src_field_of "$k_doc" "$ADDR" cookies)
	is_int "$k_cookies" && [ "$k_cookies" -gt 0 ]
}
if wait_until 60 chrony_source_ok; then
	ok "client: authenticated samples from chrony (reach > 0, offset measured, cookies > 0)"
else
	not_ok "client: authenticated samples from chrony (reach > 0, offset measured, cookies > 0)" \
		"$(src_diag c)" "$(log_tail "$T/c.log" 15)"
fi
doc=$(status_of c)
expect "client: the source's NTP server is chrony's (NTPv4 Server/Port records)" \
	"$(src_field_of "$doc" "$ADDR" name)" "127.0.0.3:$CNTP" "$(src_diag c)"
lke=$(src_field_of "$doc" "$ADDR" last_key_exchange)
expect_gt "client: last_key_exchange is set (unix seconds)" "$lke" 1600000000 "$(src_diag c)"
if wait_until 30 synchronised c; then
	expect "client: synchronised to chrony's local stratum 1 -> stratum 2" \
		"$(stat_of c system.stratum)" 2 "$(src_diag c)"
else
	not_ok "client: synchronised to chrony's local stratum 1 -> stratum 2" "$(src_diag c)"
fi

daemon_stop c
expect "client: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/c.log" 10)"
chrony_server_stop cs "$T/cs.conf"
