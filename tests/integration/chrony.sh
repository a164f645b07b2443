#!/bin/sh
# Interoperability with chrony (ARCHITECTURE.md §7): chronyd -Q, run as nobody and never touching
# the clock, as an NTS client of ntp-daemon; first of one daemon doing NTS-KE and NTP, then of a
# KE-only daemon that sends it to a second daemon (sharing the key file) for NTP. Last, the test
# client ke-client against chronyd as NTS-KE and NTS server, which checks the tool itself.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init chrony
plan 9

make_certs || bail_out "gen-cert.sh failed"
alloc_ports 10
KE=$PORT1
NTP=$PORT2
STATUS=$PORT3
KEA=$PORT4
NTPB=$PORT5
SA=$PORT6
SB=$PORT7
UNUSED=$PORT8
CKE=$PORT9
CNTP=$PORT10
C="$T/certs"
mkdir "$T/keys"
chmod 700 "$T/keys"

why_not=$(chrony_ready) || why_not=${why_not:-chronyd unusable}

# chrony_query NAME SERVER_LINE: chronyd -Q with its own directory; sets Q_RC and Q_OUT.
chrony_query() {
	chrony_dir "$1"
	cat >"$T/$1.conf" <<EOF
$2
ntstrustedcerts $C/ca.pem
nosystemcert
pidfile $T/$1/chronyd.pid
bindcmdaddress $T/$1/chronyd.sock
cmdport 0
ntsdumpdir $T/$1
EOF
	Q_RC=0
	chrony_client "$1" "$T/$1.conf" || Q_RC=$?
	Q_OUT=$(cat "$T/$1.log")
}

# synced_by NAME DESC: chronyd -Q printed the offset it would have corrected.
synced_by() {
	if [ -n "$why_not" ]; then
		not_ok "$2" "cannot run chrony: $why_not"
	elif [ "$Q_RC" = 0 ] && printf '%s\n' "$Q_OUT" | grep -q 'System clock wrong by'; then
		ok "$2"
	else
		not_ok "$2" "chronyd exit status $Q_RC; output:" "$Q_OUT"
	fi
}

# -- One daemon: NTS-KE and NTP on 127.0.0.2.
cat >"$T/one.toml" <<EOF
[[nts-ke-server]]
listen = "127.0.0.2:$KE"
certificate-chain-path = "$C/server-a.chain.pem"
private-key-path = "$C/server-a.key"
ntp-port = $NTP

[[server]]
listen = "127.0.0.2:$NTP"

[observability]
status-listen = "127.0.0.1:$STATUS"
log-level = "debug"

[synchronization]
clock-control = false
local-stratum = 1
EOF
daemon_start one "$T/one.toml" "127.0.0.1:$STATUS" || bail_out "ntp-daemon did not start"
ok "ntp-daemon serves NTS-KE on 127.0.0.2:$KE and NTP on 127.0.0.2:$NTP"
if [ -z "$why_not" ]; then
	chrony_query q1 "server 127.0.0.2 port $NTP nts ntsport $KE iburst"
fi
synced_by q1 "chronyd -Q through NTS: 'System clock wrong by' (clock left alone)"
expect_gt "status: nts_accepted > 0 from chrony's NTS packets" \
	"$(stat_of one ntp_servers.0.nts_accepted)" 0 "$(status_of one)"
daemon_stop one

# -- KE on 127.0.0.2 (daemon A) pointing to NTP on 127.0.0.3 (daemon B), one key file.
cat >"$T/a.toml" <<EOF
[[nts-ke-server]]
listen = "127.0.0.2:$KEA"
certificate-chain-path = "$C/server-a.chain.pem"
private-key-path = "$C/server-a.key"
ntp-server = "127.0.0.3"
ntp-port = $NTPB

[keyset]
key-storage-path = "$T/keys/keys"

[observability]
status-listen = "127.0.0.1:$SA"

[synchronization]
clock-control = false
local-stratum = 1
EOF
cat >"$T/b.toml" <<EOF
[[server]]
listen = "127.0.0.3:$NTPB"

[keyset]
key-storage-path = "$T/keys/keys"

[observability]
status-listen = "127.0.0.1:$SB"

[synchronization]
clock-control = false
local-stratum = 1
EOF
if daemon_start a "$T/a.toml" "127.0.0.1:$SA" && daemon_start b "$T/b.toml" "127.0.0.1:$SB"; then
	ok "daemon A (KE only) and daemon B (NTP on 127.0.0.3:$NTPB) share $T/keys/keys"
else
	not_ok "daemon A (KE only) and daemon B (NTP on 127.0.0.3:$NTPB) share $T/keys/keys"
fi
if [ -z "$why_not" ]; then
	# The port in the server line is unused: chrony must take NTP server and port from A.
	chrony_query q2 "server 127.0.0.2 port $UNUSED nts ntsport $KEA iburst"
fi
synced_by q2 "chronyd -Q via A's NTPv4 Server/Port records: 'System clock wrong by'"
expect_gt "daemon B accepted chrony's NTS packets (cookies from A)" \
	"$(stat_of b ntp_servers.0.nts_accepted)" 0 "$(status_of b)"
a_ntp=$(stat_of a ntp_servers.0.nts_accepted)
case $a_ntp in
missing | 0) ok "daemon A served no NTS NTP (ntp_servers absent or zero)" ;;
*) not_ok "daemon A served no NTS NTP (ntp_servers absent or zero)" "$(status_of a)" ;;
esac
daemon_stop a
rc_a="$STOP_RC $STOP_KILLED"
daemon_stop b
expect "A and B exit 0 on SIGTERM" "$rc_a / $STOP_RC $STOP_KILLED" "0 no / 0 no" \
	"$(log_tail "$T/a.log" 5)" "$(log_tail "$T/b.log" 5)"

# -- ke-client against chronyd's NTS-KE server (-x: the clock is left alone) on 127.0.0.3.
desc="ke-client against chronyd's NTS-KE server: 8 cookies, authenticated NTS NTP"
if [ -n "$why_not" ]; then
	not_ok "$desc" "cannot run chrony: $why_not"
else
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
		out=$("$TOOLS/ke-client" --connect "127.0.0.3:$CKE" --ca "$C/ca.pem" --ntp 2>&1) || true
		expect "$desc" "$(jget cookies "$out") $(jget ntp.result "$out")" "8 authenticated" "$out"
	else
		not_ok "$desc" "chronyd did not listen on 127.0.0.3:$CKE; its log:" "$(cat "$T/cs.log")"
	fi
	chrony_server_stop cs "$T/cs.conf"
fi
