#!/bin/sh
# SNI sub-pools: a client whose TLS SNI starts with "0." .. "3." is served from one of four
# disjoint, weight-balanced quarters of the upstreams, always the same one, so a client that
# configures 0.pool.test .. 3.pool.test gets four different time sources. Four ntp-daemon
# sources (127.0.0.2..5) behind one broker whose certificate has the four names; chrony (-x, as
# nobody, clock untouched) resolves them to the broker's addresses through an /etc/hosts
# bind-mounted in a private mount namespace (the host's file is never written). With two
# sources only the quarters overlap and every name is still served.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init pool-sni
plan 11

{
	make_cert pool --dns 0.pool.test --dns 1.pool.test --dns 2.pool.test --dns 3.pool.test \
		--ip 127.0.0.1 &&
	make_cert server-a --ip 127.0.0.2 &&
	make_cert server-b --ip 127.0.0.3 &&
	make_cert c --ip 127.0.0.4 &&
	make_cert d --ip 127.0.0.5
} || bail_out "gen-cert.sh failed"
alloc_ports 16
KEA=$PORT1
NTPA=$PORT2
SA=$PORT3
KEB=$PORT4
NTPB=$PORT5
SB=$PORT6
KEC=$PORT7
NTPC=$PORT8
SC=$PORT9
KED=$PORT10
NTPD=$PORT11
SD=$PORT12
PK=$PORT13
PS=$PORT14
PK2=$PORT15
PS2=$PORT16
C="$T/certs"
NAMES="0.pool.test 1.pool.test 2.pool.test 3.pool.test"
why_not=$(chrony_ready) || why_not=${why_not:-chronyd unusable}

if source_start a 127.0.0.2 "$KEA" "$NTPA" "$SA" &&
	source_start b 127.0.0.3 "$KEB" "$NTPB" "$SB" &&
	source_start c 127.0.0.4 "$KEC" "$NTPC" "$SC" &&
	source_start d 127.0.0.5 "$KED" "$NTPD" "$SD"; then
	ok "time sources A, B, C, D (127.0.0.2 .. 127.0.0.5) run"
else
	bail_out "ntp-daemon time sources did not start"
fi

# The broker listens on 127.0.0.1 (for ke-client) and on one address per name (127.0.1.10 ..
# 13), because chrony keeps one source per address it resolved: four names on one address
# would be one source.
UPS="$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB")"
UPS="$UPS, $(upstream 127.0.0.4 "$KEC"), $(upstream 127.0.0.5 "$KED")"
pool_conf "$T/pool.toml" "$PK" "$PS" "$UPS" "deep-check-interval-s = 0"
sed -i "s|^listen = .*|listen = [\"127.0.0.1:$PK\", \"127.0.1.10:$PK\", \"127.0.1.11:$PK\", \
\"127.0.1.12:$PK\", \"127.0.1.13:$PK\"]|" "$T/pool.toml"
# Two workers: the sub-pools must not depend on which worker takes a connection.
POOL_ARGS="--workers 2" pool_start p "$T/pool.toml" "127.0.0.1:$PS" ||
	bail_out "nts-pool-ke did not start"
all_healthy() {
	for h_u in "127.0.0.2 $KEA" "127.0.0.3 $KEB" "127.0.0.4 $KEC" "127.0.0.5 $KED"; do
		# shellcheck disable=SC2086 # DOMAIN PORT, split on purpose
		[ "$(upstream_field p $h_u state)" = healthy ] || return 1
	done
}
if wait_until 30 all_healthy; then
	ok "broker: the four upstreams healthy"
else
	bail_out "the upstreams did not become healthy: $(status_of p)"
fi

# served_by PORT NAME: the time source a key exchange with SNI NAME (none when NAME is "-") on
# the broker at 127.0.0.1:PORT is sent to, as "ADDRESS:NTP_PORT", or "failed(...)" with the
# reason (no 8 cookies, an Error record). ke-client's output is left in $T/ke.json.
served_by() {
	if [ "$2" = - ]; then
		set -- "$1"
	else
		set -- "$1" --name "$2"
	fi
	b_port=$1
	shift
	"$TOOLS/ke-client" --connect "127.0.0.1:$b_port" --ca "$C/ca.pem" "$@" >"$T/ke.json" 2>&1 ||
		true
	b_out=$(cat "$T/ke.json")
	if [ "$(jget cookies "$b_out") $(jget error "$b_out")" = "8 null" ]; then
		echo "$(jget server "$b_out"):$(jget port "$b_out")"
	else
		echo "failed(cookies $(jget cookies "$b_out") error $(jget error "$b_out"))"
	fi
}

# -- Each name twice: deterministic quarters, four different sources.
FIRST=
SECOND=
for n in $NAMES; do
	FIRST="$FIRST $(served_by "$PK" "$n")"
	SECOND="$SECOND $(served_by "$PK" "$n")"
done
FIRST=${FIRST# }
SECOND=${SECOND# }
SOURCES="127.0.0.2:$NTPA 127.0.0.3:$NTPB 127.0.0.4:$NTPC 127.0.0.5:$NTPD"
expect "a second key exchange per name gets the same source (0. 1. 2. 3.)" "$SECOND" "$FIRST" \
	"$(cat "$T/ke.json")" "recent_sessions: $(jget recent_sessions "$(status_of p)")"
# sorted WORDS...: the words, sorted, on one line.
sorted() {
	printf '%s\n' "$@" | sort | tr '\n' ' '
}
# shellcheck disable=SC2086 # lists of words, split on purpose
expect "the four names get the four sources, one each" "$(sorted $FIRST)" "$(sorted $SOURCES)" \
	"names: $NAMES" "first: $FIRST"

# A client without a sub-pool name is served from the whole pool: five sessions over two
# workers, so one worker rotates at least three times among the four sources.
ALL=
i=0
while [ "$i" -lt 5 ]; do
	ALL="$ALL $(served_by "$PK" -)"
	i=$((i + 1))
done
# shellcheck disable=SC2086 # a list of words, split on purpose
distinct=$(printf '%s\n' $ALL | grep -v '^failed' | sort -u | wc -l)
expect_gt "no SNI: 5 sessions answered from more than one source" "$distinct" 1 "got:$ALL"

# -- chrony with the four names, resolved to the broker inside a private mount namespace.
chrony_dir q
cat >"$T/hosts" <<HOSTS
127.0.0.1 localhost
127.0.1.10 0.pool.test
127.0.1.11 1.pool.test
127.0.1.12 2.pool.test
127.0.1.13 3.pool.test
HOSTS
{
	for n in $NAMES; do
		echo "server $n iburst nts ntsport $PK minpoll 0 maxpoll 2"
	done
	cat <<CONF
ntstrustedcerts $C/ca.pem
nosystemcert
pidfile $T/q/chronyd.pid
bindcmdaddress $T/q/chronyd.sock
cmdport 0
ntsdumpdir $T/q
CONF
} >"$T/q.conf"

# chrony_four: chrony holds cookies for four NTS sources and has reached each at a distinct
# time source (chronyc -n sources: reach > 0). Sets MAP to "NAME=ADDRESS" pairs, sorted by name
# (chronyc -N prints the configured names, -n the addresses, in the same order).
chrony_four() {
	f_auth=$(chronyc_of q -c -n authdata 2>/dev/null |
		awk -F, '$2 == "NTS" && $9 ~ /^[0-9]+$/ && $9 > 0' | wc -l)
	[ "$f_auth" = 4 ] || return 1
	chronyc_of q -c -N sources 2>/dev/null | cut -d, -f3 >"$T/q.names" || return 1
	chronyc_of q -c -n sources 2>/dev/null | cut -d, -f3,6 | tr , ' ' >"$T/q.addrs" ||
		return 1
	MAP=$(paste -d' ' "$T/q.names" "$T/q.addrs" |
		awk '$3 != "0" && $2 ~ /^127\.0\.0\.[2-5]$/ { print $1 "=" $2 }' | sort)
	[ "$(printf '%s\n' "$MAP" | cut -d= -f2 | sort -u | grep -c .)" = 4 ]
}
host_sum=$(cksum </etc/hosts)
desc="chronyd with 0. .. 3.pool.test: four NTS sources at four different time sources"
if [ -n "$why_not" ]; then
	not_ok "$desc" "cannot run chrony: $why_not"
	not_ok "chrony's name -> source mapping is the key exchanges' one" "chrony did not run"
else
	chrony_ns_start q "$T/q.conf" "$T/hosts"
	if wait_until 60 chrony_four; then
		ok "$desc"
	else
		not_ok "$desc" "$(chronyc_of q -N sources 2>&1)" "$(chronyc_of q -n sources 2>&1)" \
			"$(chronyc_of q -n authdata 2>&1)" "$(log_tail "$T/q.log")"
	fi
	# ke-client's mapping, NAME=ADDRESS (without the port, which chronyc does not print).
	want=$(
		# shellcheck disable=SC2086 # a list of words, split on purpose
		set -- $FIRST
		for n in $NAMES; do
			echo "$n=${1%:*}"
			shift
		done | sort
	)
	expect "chrony's name -> source mapping is the key exchanges' one" \
		"$(printf '%s' "${MAP:-}" | tr '\n' ' ')" "$(printf '%s' "$want" | tr '\n' ' ')" \
		"$(chronyc_of q -N sources 2>&1)" "$(chronyc_of q -n sources 2>&1)"
	chrony_server_stop q "$T/q.conf"
fi
expect "the host's /etc/hosts is unchanged" "$(cksum </etc/hosts)" "$host_sum"

# -- Two sources only: the quarters overlap, every name is still served.
pool_conf "$T/pool2.toml" "$PK2" "$PS2" \
	"$(upstream 127.0.0.2 "$KEA"), $(upstream 127.0.0.3 "$KEB")" "deep-check-interval-s = 0"
pool_start p2 "$T/pool2.toml" "127.0.0.1:$PS2" || bail_out "the second broker did not start"
if ! wait_upstream p2 127.0.0.2 "$KEA" healthy 30 ||
	! wait_upstream p2 127.0.0.3 "$KEB" healthy 30; then
	bail_out "the second broker's upstreams did not become healthy: $(status_of p2)"
fi
TWO=
for n in $NAMES; do
	TWO="$TWO $(served_by "$PK2" "$n")"
done
TWO=${TWO# }
# shellcheck disable=SC2086 # lists of words, split on purpose
bad=$(printf '%s\n' $TWO | grep -cv -e "^127.0.0.2:$NTPA\$" -e "^127.0.0.3:$NTPB\$" || true)
expect "two sources: the four names are all served (8 cookies, no Error record)" "$bad" 0 \
	"got: $TWO" "$(cat "$T/ke.json")"
# shellcheck disable=SC2086
expect "two sources: both serve some of the names" \
	"$(printf '%s\n' $TWO | sort -u | grep -c .)" 2 "got: $TWO"

daemon_stop p2
rc2="$STOP_RC $STOP_KILLED"
daemon_stop p
expect "brokers: SIGTERM -> exit 0" "$STOP_RC $STOP_KILLED / $rc2" "0 no / 0 no" \
	"$(log_tail "$T/p.log" 10)" "$(log_tail "$T/p2.log" 10)"
