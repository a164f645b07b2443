#!/bin/sh
# A scaled-out pool: HAProxy (TCP mode, PROXY protocol v2, health checks) in front of two
# stateless brokers that share three time sources (ntp-daemon on 127.0.0.2..4). HAProxy connects
# to the brokers from 127.0.0.9, the only address they take a PROXY header from, so the brokers
# see each client's own address and HAProxy's apart. chrony (-x, as nobody, clock untouched)
# gets NTS time through HAProxy; a direct connection to a broker is refused and counted; a broker
# killed with SIGKILL loses no client once HAProxy has marked it down.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-haproxy
plan 18

HAPROXY=$(haproxy_find) || bail_out "no runnable haproxy"
{
	make_cert pool --dns pool.test --ip 127.0.0.1 &&
	make_cert server-a --ip 127.0.0.2 &&
	make_cert server-b --ip 127.0.0.3 &&
	make_cert c --ip 127.0.0.4
} || bail_out "gen-cert.sh failed"
alloc_ports 15
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
KEB=$PORT4
NTPB=$PORT5
SB=$PORT6
KEC=$PORT7
NTPC=$PORT8
SC=$PORT9
PK1=$PORT10
PS1=$PORT11
PK2=$PORT12
PS2=$PORT13
HP=$PORT14
HS=$PORT15
C="$T/certs"
LB=127.0.0.9
N=10
why_not=$(chrony_ready) || why_not=${why_not:-chronyd unusable}

if source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" &&
	source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" &&
	source_start c 127.0.0.4 "$KEC" "$NTPC" "$SC"; then
	ok "time sources A, B, C (127.0.0.2, .3, .4) run"
else
	bail_out "ntp-daemon time sources did not start"
fi

# The two brokers are identical but for their ports: no state is shared or needed.
UPS="$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB"), $(upstream 127.0.0.4 "$KEC")"
PROXY="deep-check-interval-s = 0
proxy-protocol = true
proxy-protocol-from = [\"$LB/32\"]"
pool_conf "$T/p1.toml" "$PK1" "$PS1" "$UPS" "$PROXY"
pool_conf "$T/p2.toml" "$PK2" "$PS2" "$UPS" "$PROXY"
pool_start p1 "$T/p1.toml" "127.0.0.1:$PS1" || bail_out "broker 1 did not start"
pool_start p2 "$T/p2.toml" "127.0.0.1:$PS2" || bail_out "broker 2 did not start"
all_healthy() {
	for h_p in p1 p2; do
		for h_u in "127.0.0.2 $KEA" "127.0.0.3 $KEB" "127.0.0.4 $KEC"; do
			# shellcheck disable=SC2086 # DOMAIN PORT, split on purpose
			[ "$(upstream_field "$h_p" $h_u state)" = healthy ] || return 1
		done
	done
}
if wait_until 30 all_healthy; then
	ok "brokers 1 and 2: the three upstreams healthy"
else
	bail_out "the upstreams did not become healthy: $(status_of p1)"
fi

# The configuration doc/pool.md shows: TCP passthrough (TLS ends at the broker), round-robin,
# PROXY v2 to the brokers from $LB, health checks that also send the header.
cat >"$T/haproxy.cfg" <<CFG
global
	log stdout format raw local0 info

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 2s
	timeout client 10s
	timeout server 10s
	retries 2
	option redispatch

frontend nts_ke
	bind 127.0.0.1:$HP
	default_backend brokers

backend brokers
	balance roundrobin
	source $LB
	default-server send-proxy-v2 check check-send-proxy inter 500ms fall 2 rise 1
	server b1 127.0.0.1:$PK1
	server b2 127.0.0.1:$PK2

frontend stats
	mode http
	bind 127.0.0.1:$HS
	stats enable
	stats uri /stats
CFG

# hap_state SERVER: HAProxy's status of the backend server (UP, DOWN, "UP 1/2", ...).
hap_state() {
	"$TOOLS/http-get" "127.0.0.1:$HS" '/stats;csv' 2>/dev/null |
		awk -F, -v s="$1" '$1 == "brokers" && $2 == s { print $18 }'
}
hap_up() {
	[ "$(hap_state b1)" = UP ] && [ "$(hap_state b2)" = UP ]
}
hap_down() {
	case $(hap_state "$1") in
	DOWN*) return 0 ;;
	*) return 1 ;;
	esac
}
haproxy_start h "$T/haproxy.cfg" || bail_out "haproxy refused its configuration"
if wait_for_port tcp 127.0.0.1 "$HP" 20 && wait_until 20 hap_up; then
	ok "HAProxy on 127.0.0.1:$HP: both brokers pass its health checks (UP)"
else
	bail_out "HAProxy did not mark both brokers UP ($(hap_state b1)/$(hap_state b2)):" \
		"$(log_tail "$T/h.log")"
fi

# through COUNT: COUNT key exchanges through HAProxy, one after the other; sets GOT_OK (8
# cookies and a Server record naming one of the time sources with its NTP port), GOT_BAD and
# LAST (the last ke-client output).
through() {
	GOT_OK=0
	GOT_BAD=0
	t_i=0
	while [ "$t_i" -lt "$1" ]; do
		LAST=$("$TOOLS/ke-client" --connect "127.0.0.1:$HP" --ca "$C/ca.pem" 2>&1) || true
		t_got="$(jget cookies "$LAST") $(jget error "$LAST")"
		case "$t_got $(jget server "$LAST") $(jget port "$LAST")" in
		"8 null 127.0.0.2 $NTPA" | "8 null 127.0.0.3 $NTPB" | "8 null 127.0.0.4 $NTPC")
			GOT_OK=$((GOT_OK + 1))
			;;
		*) GOT_BAD=$((GOT_BAD + 1)) ;;
		esac
		t_i=$((t_i + 1))
	done
}

# rs_rows NAME: the broker NAME's recent_sessions, one a line: CLIENT VIA UPSTREAM OUTCOME
# (an empty or null upstream as "none").
rs_rows() {
	r_doc=$(status_of "$1")
	r_i=0
	while :; do
		r_client=$(jget "recent_sessions.$r_i.client" "$r_doc")
		[ "$r_client" != missing ] || break
		r_up=$(jget "recent_sessions.$r_i.upstream" "$r_doc")
		case $r_up in
		'' | null | missing) r_up=none ;;
		esac
		printf '%s %s %s %s\n' "$r_client" "$(jget "recent_sessions.$r_i.via" "$r_doc")" \
			"$r_up" "$(jget "recent_sessions.$r_i.outcome" "$r_doc")"
		r_i=$((r_i + 1))
	done
}

# real_clients NAME: the recent sessions of NAME that reached an upstream (health checks do
# not), as "GOOD BAD": GOOD came from 127.0.0.1 via HAProxy's $LB, BAD from anything else.
real_clients() {
	rs_rows "$1" | awk -v lb="$LB" '
		$3 != "none" {
			if (index($1, "127.0.0.1:") == 1 && index($2, lb ":") == 1) good++
			else bad++
		}
		END { print good + 0, bad + 0 }'
}

# -- Key exchanges through HAProxy.
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$HP" --ca "$C/ca.pem" --ntp 2>&1) || true
expect "ke-client through HAProxy: 8 cookies, NTS NTP authenticated at the named source" \
	"$(jget cookies "$out") $(jget error "$out") $(jget ntp.result "$out")" \
	"8 null authenticated" "$out" "$(log_tail "$T/h.log" 5)"
done1=$(stat_of p1 sessions.completed)
done2=$(stat_of p2 sessions.completed)
through 6
expect "6 more key exchanges through HAProxy: all answered" "$GOT_OK/$GOT_BAD" "6/0" "$LAST"
# Read at once: HAProxy's checks (two a second) also pass through the brokers' rings.
rc1=$(real_clients p1)
rc2=$(real_clients p2)
good1=${rc1% *}
good2=${rc2% *}
expect "broker 1: recent sessions come from 127.0.0.1 via $LB, none from $LB itself" \
	"$([ "$good1" -gt 0 ] && echo yes) ${rc1#* }" "yes 0" "$(rs_rows p1)"
expect "broker 2: recent sessions come from 127.0.0.1 via $LB, none from $LB itself" \
	"$([ "$good2" -gt 0 ] && echo yes) ${rc2#* }" "yes 0" "$(rs_rows p2)"
is_int "$done1" || done1=0
is_int "$done2" || done2=0
# completed_since COUNT: brokers 1 and 2 completed COUNT sessions since done1/done2 (the
# counters move as sessions close). Sets NEW1 and NEW2.
completed_since() {
	NEW1=$(($(stat_of p1 sessions.completed) - done1))
	NEW2=$(($(stat_of p2 sessions.completed) - done2))
	[ $((NEW1 + NEW2)) -ge "$1" ]
}
wait_until 10 completed_since 6 || true
expect "round-robin: both brokers completed some of the 6, together all 6" \
	"$([ "$NEW1" -gt 0 ] && [ "$NEW2" -gt 0 ] && echo both) $((NEW1 + NEW2))" "both 6" \
	"$(status_of p1)" "$(status_of p2)"

# -- chrony through HAProxy.
chrony_dir q
cat >"$T/q.conf" <<CONF
server 127.0.0.1 iburst nts ntsport $HP minpoll 0 maxpoll 2
ntstrustedcerts $C/ca.pem
nosystemcert
pidfile $T/q/chronyd.pid
bindcmdaddress $T/q/chronyd.sock
cmdport 0
ntsdumpdir $T/q
CONF
# chrony_nts_ok: chronyc's authdata shows an NTS source holding cookies, and chrony selected it
# (state *, reach > 0) at one of the time sources. Sets CHRONY_AT to its address.
chrony_nts_ok() {
	CHRONY_AT=$(chronyc_of q -c -n authdata 2>/dev/null |
		awk -F, '$2 == "NTS" && $9 ~ /^[0-9]+$/ && $9 > 0 { print $1; exit }')
	case $CHRONY_AT in
	127.0.0.2 | 127.0.0.3 | 127.0.0.4) ;;
	*) return 1 ;;
	esac
	chronyc_of q -c -n sources 2>/dev/null |
		awk -F, -v a="$CHRONY_AT" '$3 == a && $2 == "*" && $6 != "0" { f = 1 }
			END { exit !f }'
}
desc="chronyd (-x) through HAProxy: an NTS-authenticated source, selected and reachable"
if [ -n "$why_not" ]; then
	not_ok "$desc" "cannot run chrony: $why_not"
	not_ok "a time source accepted chrony's NTS packets" "chrony did not run"
else
	nts0=$(nts_accepted_sum a b c)
	chrony_server_start q "$T/q.conf"
	if wait_until 60 chrony_nts_ok; then
		ok "$desc"
	else
		not_ok "$desc" "$(chronyc_of q -n sources 2>&1)" \
			"$(chronyc_of q -n authdata 2>&1)" \
			"$(log_tail "$T/q.log")"
	fi
	expect_gt "a time source accepted chrony's NTS packets" "$(nts_accepted_sum a b c)" \
		"$nts0" "$(status_of a)" "$(status_of b)" "$(status_of c)"
	chrony_server_stop q "$T/q.conf"
fi

# -- A direct connection to a broker (not from $LB) is closed at once, and counted.
ref0=$(stat_of p1 limits.refused_proxy_header)
is_int "$ref0" || ref0=0
out=$("$TOOLS/ke-client" --connect "127.0.0.1:$PK1" --ca "$C/ca.pem" 2>&1) || true
desc="direct connection to broker 1: closed at once (a connection error, not a timeout)"
case "$(jget handshake "$out") $(jget handshake_error "$out")" in
"failed timeout" | "failed missing") not_ok "$desc" "$out" ;;
"failed "*) ok "$desc" ;;
*) not_ok "$desc" "$out" ;;
esac
expect_gt "broker 1: limits.refused_proxy_header counts it" \
	"$(stat_gt p1 limits.refused_proxy_header "$ref0" 10)" "$ref0" "$(status_of p1)"

# -- Broker 1 dies (SIGKILL): once HAProxy has marked it down, no client notices.
# shellcheck disable=SC2154 # p1_pid: set by pool_start
kill -KILL "$p1_pid"
stop_pid "$p1_pid" 5
if wait_until 30 hap_down b1; then
	ok "HAProxy marks broker 1 DOWN after SIGKILL"
else
	not_ok "HAProxy marks broker 1 DOWN after SIGKILL" "state: $(hap_state b1)" \
		"$(log_tail "$T/h.log")"
fi
done2=$(stat_of p2 sessions.completed)
is_int "$done2" || done2=0
through "$N"
expect "$N key exchanges in a row through HAProxy: all answered" "$GOT_OK/$GOT_BAD" "$N/0" \
	"$LAST" "$(log_tail "$T/h.log" 10)"
n2=$(stat_gt p2 sessions.completed $((done2 + N - 1)) 10)
expect "broker 2 completed all $N" "$((n2 - done2))" "$N" "$(status_of p2)"
expect "broker 2: recent sessions still from 127.0.0.1 via $LB only" \
	"$(real_clients p2 | cut -d' ' -f2)" 0 "$(rs_rows p2)"

daemon_stop p2
expect "broker 2: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED" "0 no" "$(log_tail "$T/p2.log" 10)"
# shellcheck disable=SC2154 # h_pid: set by haproxy_start
kill -TERM "$h_pid" 2>/dev/null || true
stop_pid "$h_pid" 10
expect "HAProxy: SIGTERM -> stops" "$STOP_KILLED" "no" "$(log_tail "$T/h.log" 10)"
