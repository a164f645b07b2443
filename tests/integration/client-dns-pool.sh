#!/bin/sh
# A `pool` source (ntpd-rs's mode: plain NTPv4 servers behind one DNS name): the daemon resolves
# the name, polls `count` different addresses of it, and replaces a server that stops answering
# with another address of the name. The name resolves through a hosts file bind-mounted over
# /etc/hosts in a private mount namespace of the client alone; the host's /etc/hosts is never
# written. Needs root (unshare, mount), as CI runs.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init client-dns-pool
plan 9

[ "$(id -u)" = 0 ] || bail_out "not root: a private mount namespace (unshare -m) needs root"
command -v unshare >/dev/null || bail_out "unshare (util-linux) is missing"
alloc_ports 5
NTP=$PORT1
SA=$PORT2
SB=$PORT3
SC=$PORT4
CS=$PORT5

# plain_source NAME IP STATUS: a time source answering plain NTP on IP:$NTP at stratum 1.
plain_source() {
	cat >"$T/$1.toml" <<SRC
[[server]]
listen = "$2:$NTP"

[observability]
status-listen = "127.0.0.1:$3"
log-level = "debug"

[synchronization]
clock-control = false
local-stratum = 1
SRC
	daemon_start "$1" "$T/$1.toml" "127.0.0.1:$3"
}

# ns_daemon_start NAME CONF STATUS HOSTS: daemon_start inside a private mount namespace in which
# HOSTS is bind-mounted over /etc/hosts.
ns_daemon_start() {
	chmod 644 "$4"
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --mount --propagation private -- sh -c \
		'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$4" \
		"$DAEMON" -c "$2" -l debug --no-clock-control >"$T/$1.log" 2>&1 &
	n_pid=$!
	track "$n_pid"
	eval "${1}_pid=\$n_pid; ${1}_status=\$3"
	"$TOOLS/http-get" "$3" /status --wait 20 >/dev/null 2>"$T/$1.http" && kill -0 "$n_pid"
}

plain_source a 127.0.0.2 "$SA" || bail_out "time source a did not start"
plain_source b 127.0.0.3 "$SB" || bail_out "time source b did not start"
plain_source c 127.0.0.5 "$SC" || bail_out "time source c did not start"

host_sum=$(cksum </etc/hosts)
cat >"$T/hosts" <<HOSTS
127.0.0.1 localhost
127.0.0.2 pool.test
127.0.0.3 pool.test
127.0.0.5 pool.test
HOSTS
POOL="pool.test:$NTP"
client_conf "$T/client.toml" "$CS" "[[source]]
mode = \"pool\"
address = \"$POOL\"
count = 2
poll-interval-min = 0
poll-interval-max = 1"
ns_daemon_start q "$T/client.toml" "127.0.0.1:$CS" "$T/hosts" ||
	bail_out "the client did not start: $(log_tail "$T/q.log" 15)"

if wait_until 60 working_at_least q 2 pool; then
	ok "client: two servers of the pool's name give samples ($WORKING)"
else
	not_ok "client: two servers of the pool's name give samples" "$(src_diag q)" \
		"$(log_tail "$T/q.log" 20)"
fi
first=$WORKING
doc=$(status_of q)
n_rows=$(src_rows "$doc" | wc -l)
expect "client: count = 2 sources, no more" "$n_rows" 2 "$(src_diag q)"
addrs=$(src_rows "$doc" | awk '{ print $3 }' | sort -u | tr '\n' ' ')
expect "client: both rows belong to the pool entry" "$addrs" "$POOL " "$(src_diag q)"
expect "client: each row names its pool" "$(jget sources.0.pool "$doc") $(jget sources.1.pool "$doc")" \
	"$POOL $POOL" "$(src_diag q)"
names_ok=true
for w in $first; do
	case $w in
	127.0.0.2:"$NTP" | 127.0.0.3:"$NTP" | 127.0.0.5:"$NTP") ;;
	*) names_ok=false ;;
	esac
done
if $names_ok && [ "$(printf '%s\n' $first | sort -u | wc -l)" = 2 ]; then
	ok "client: the servers are two different addresses of the name ($first)"
else
	not_ok "client: the servers are two different addresses of the name" "$first"
fi

# -- One of them stops answering: after 8 unanswered polls it is replaced by the third address.
gone=${first%% *}
case $gone in
127.0.0.2:*) daemon_stop a ;;
127.0.0.3:*) daemon_stop b ;;
*) daemon_stop c ;;
esac
replaced() {
	working_at_least q 2 pool && ! has_word "$WORKING" "$gone"
}
if wait_until 120 replaced; then
	ok "client: $gone was replaced by another address of the name ($WORKING)"
else
	not_ok "client: $gone was replaced by another address of the name" "$(src_diag q)" \
		"$(log_tail "$T/q.log" 20)"
fi
if grep -q "$gone" "$T/q.log" && grep -Eq "replac|no reply" "$T/q.log"; then
	ok "client: the log says why $gone left"
else
	not_ok "client: the log says why $gone left" "$(log_tail "$T/q.log" 20)"
fi
if daemon_alive q; then
	ok "client: still running"
else
	not_ok "client: still running" "$(log_tail "$T/q.log" 20)"
fi
expect "the host's /etc/hosts is unchanged" "$(cksum </etc/hosts)" "$host_sum"
