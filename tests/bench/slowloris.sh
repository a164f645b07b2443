#!/usr/bin/env bash
# Honest NTS-KE latency under a slowloris attack: ke-load's p50/p99 against ntp-daemon and
# against nts-pool-ke (in front of that daemon), first unloaded, then while hold-conns opens N
# connections (default 10,000) that never complete a TLS handshake, spread over many loopback
# addresses so the per-address cap does not stop them; with --sustain every connection the
# server closes is reopened at once (a flood rather than idle connections). Both programs run with their default
# limits. Prints one table; also each server's sheds, descriptors and resident memory under the
# attack. Loopback only; every process it starts is stopped on exit. See tests/bench/README.md.
set -eu

prog=${0##*/}
script_dir=$(cd "$(dirname "$0")" && pwd)
top_srcdir=$(cd "$script_dir/../.." && pwd)

usage() {
	cat <<EOF
Usage: $prog [OPTIONS]

  -b, --build DIR      build directory with ntp-daemon, nts-pool-ke, tests/bench/ke-load and
                       tests/tools/hold-conns (default: \$TOP_BUILDDIR or .)
  -n, --hold N         slowloris connections (default 10000)
  -d, --duration S     seconds per ke-load run (default 10)
  -c, --concurrency N  honest ke-load connections (default 4)
  -s, --sustain        reopen every attacker connection the server closes
  -h, --help           show this help
EOF
}

die() {
	printf '%s: %s\n' "$prog" "$*" >&2
	exit 1
}

build=${TOP_BUILDDIR:-.}
hold=10000
duration=10
concurrency=4
sustain=
while [ $# -gt 0 ]; do
	case $1 in
	-b | --build) build=$2; shift 2 ;;
	-n | --hold) hold=$2; shift 2 ;;
	-d | --duration) duration=$2; shift 2 ;;
	-c | --concurrency) concurrency=$2; shift 2 ;;
	-s | --sustain) sustain=sustain; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
build=$(cd "$build" && pwd)
for f in ntp-daemon nts-pool-ke tests/bench/ke-load tests/tools/hold-conns tests/tools/free-port; do
	[ -x "$build/$f" ] || die "$build/$f not built (make $f)"
done
command -v jq >/dev/null || die "jq not found"

scratch=$(mktemp -d /tmp/nts-slowloris.XXXXXX)
started=()
cleanup() {
	for pid in "${started[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${started[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The attack needs a descriptor per connection.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((hold + 64)) ] || die "descriptor limit $(ulimit -n) below $((hold + 64))"

certs=$scratch/certs
for c in "pool --dns pool.test" "server --ip 127.0.0.2"; do
	# shellcheck disable=SC2086 # the name and its options
	bash "$top_srcdir/test-keys/gen-cert.sh" --dir "$certs" $c >/dev/null
done
read -r ke ntp ds pk ps <<<"$("$build/tests/tools/free-port" 5 | tr '\n' ' ')"

cat >"$scratch/ntp.toml" <<EOF
[[nts-ke-server]]
listen = "127.0.0.2:$ke"
certificate-chain-path = "$certs/server.chain.pem"
private-key-path = "$certs/server.key"
authorized-pool-server-certificates = ["$certs/pool.pem"]
ntp-port = $ntp

[[server]]
listen = "127.0.0.2:$ntp"

[observability]
status-listen = "127.0.0.1:$ds"
log-level = "warn"

[synchronization]
clock-control = false
local-stratum = 1
EOF
cat >"$scratch/pool.toml" <<EOF
[nts-pool-ke-server]
listen = "127.0.0.1:$pk"
certificate-chain-path = "$certs/pool.chain.pem"
private-key-path = "$certs/pool.key"
certificate-authority-path = "$certs/ca.pem"
deep-check-interval-s = 0
key-exchange-servers = [ { domain = "127.0.0.2", port = $ke } ]

[observability]
status-listen = "127.0.0.1:$ps"
log-level = "warn"
EOF

"$build/ntp-daemon" -c "$scratch/ntp.toml" --no-clock-control 2>"$scratch/d.log" &
dpid=$!
started+=("$dpid")
"$build/tests/tools/http-get" "127.0.0.1:$ds" /status --wait 20 >/dev/null ||
	die "ntp-daemon did not start: $(tail -3 "$scratch/d.log")"
"$build/nts-pool-ke" -c "$scratch/pool.toml" 2>"$scratch/p.log" &
ppid_=$!
started+=("$ppid_")
"$build/tests/tools/http-get" "127.0.0.1:$ps" /status --wait 20 >/dev/null ||
	die "nts-pool-ke did not start: $(tail -3 "$scratch/p.log")"
for _ in $(seq 100); do
	state=$("$build/tests/tools/http-get" "127.0.0.1:$ps" /status | jq -r '.upstreams[0].state')
	[ "$state" = healthy ] && break
	sleep 0.1
done

# load TARGET NAME: one ke-load run; prints "sessions/s p50 p99 ok failed".
load() {
	"$build/tests/bench/ke-load" --connect "$1" --name "$2" --ca "$certs/ca.pem" \
		--concurrency "$concurrency" --sessions 0 --duration "$duration" --json |
		jq -r '"\(.sessions_per_s) \(.latency_ms.p50) \(.latency_ms.p99) \(.ok) \(.failed)"'
}

# attack TARGET: starts hold-conns against TARGET and waits until its connections are up.
attack() {
	rm -f "$scratch/ready"
	# shellcheck disable=SC2086 # $sustain: the optional word
	"$build/tests/tools/hold-conns" "$1" "$hold" 3600 "$scratch/ready" spread $sustain \
		>"$scratch/hold.json" 2>"$scratch/hold.err" &
	hpid=$!
	started+=("$hpid")
	for _ in $(seq 300); do
		[ -e "$scratch/ready" ] && return 0
		sleep 0.1
	done
	die "hold-conns did not get ready: $(cat "$scratch/hold.err")"
}

stop_attack() {
	kill -TERM "$hpid" 2>/dev/null || true
	wait "$hpid" 2>/dev/null || true
	opened=$(jq -r .opened "$scratch/hold.json")
}

# usage_of PID: "descriptors RSS-KiB".
usage_of() {
	echo "$(ls "/proc/$1/fd" | wc -l) $(awk '/VmRSS/ { print $2 }' "/proc/$1/status")"
}

row() {
	printf '%-34s %10s %10s %10s %10s %10s\n' "$@"
}

echo "honest NTS-KE sessions (ke-load, $concurrency connections, ${duration}s per run) against" \
	"$hold slowloris connections that never complete a handshake${sustain:+, reopened when closed}"
echo
row "" sessions/s "p50 ms" "p99 ms" ok failed
# measure LABEL TARGET NAME PID STATUS JQ: the unloaded and the attacked rows of one server, and
# its line for after the table (JQ reads slots held and sheds from its /status).
measure() {
	read -r a b c d e <<<"$(load "$2" "$3")"
	row "$1, unloaded" "$a" "$b" "$c" "$d" "$e"
	attack "$2"
	read -r a b c d e <<<"$(load "$2" "$3")"
	m_use=$(usage_of "$4")
	m_st=$("$build/tests/tools/http-get" "$5" /status | jq -r "$6")
	stop_attack
	row "$1, under attack" "$a" "$b" "$c" "$d" "$e"
	after+=("under attack, $1: $m_st; $opened attacker connections opened in all; descriptors and RSS KiB: $m_use")
}

after=()
measure ntp-daemon "127.0.0.2:$ke" 127.0.0.2 "$dpid" "127.0.0.1:$ds" \
	'.nts_ke_servers[0] | "\(.active) of \(.max_connections) slots held, \(.shed) shed"'
measure nts-pool-ke "127.0.0.1:$pk" pool.test "$ppid_" "127.0.0.1:$ps" \
	'"\(.listeners[0].active) of \(.limits.max_connections) slots held, \(.listeners[0].shed) shed"'
echo
printf '%s\n' "${after[@]}"
