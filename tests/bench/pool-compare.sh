#!/usr/bin/env bash
# The broker's cost: NTS-KE sessions through nts-pool-ke against the same sessions directly at the
# time source behind it, one run each with the same load, on this machine. The time source and
# the broker share core 0 and ke-load runs on core 1, so "per server CPU-second" compares what a
# session costs on the serving side: directly, one TLS handshake at the source; through the pool,
# the broker's handshake plus a Fixed Key request on a kept-alive upstream connection.
# Loopback only; everything started is stopped on exit. Prints figures; asserts nothing.
set -euo pipefail

usage() {
	cat <<EOF
Usage: tests/bench/pool-compare.sh -b BUILD [-d SECONDS] [-c CONCURRENCY] [--no-pin]
  -b BUILD        build directory with ntp-daemon, nts-pool-ke and tests/bench/ke-load
                  (configure with CFLAGS=-O2 and no sanitizers for meaningful figures)
  -d SECONDS      length of each run (default 10)
  -c CONCURRENCY  ke-load's concurrent sessions (default 32)
  --no-pin        do not pin processes to cores
EOF
}

build= duration=10 conc=32 pin=1
while [ $# -gt 0 ]; do
	case $1 in
	-b) build=$2; shift 2 ;;
	-d) duration=$2; shift 2 ;;
	-c) conc=$2; shift 2 ;;
	--no-pin) pin=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
[ -n "$build" ] || { usage >&2; exit 2; }
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$build" && pwd)
for f in ntp-daemon nts-pool-ke tests/bench/ke-load tests/tools/free-port; do
	[ -x "$build/$f" ] || { echo "pool-compare: $build/$f not built" >&2; exit 1; }
done
server_pin=() client_pin=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	server_pin=(taskset -c 0)
	client_pin=(taskset -c 1)
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/pool-bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gen="$top/test-keys/gen-cert.sh"
"$gen" --dir "$scratch" pool --dns pool.test --ip 127.0.0.1 >/dev/null
"$gen" --dir "$scratch" source --ip 127.0.0.2 >/dev/null
read -r ke ntp pool <<<"$("$build/tests/tools/free-port" 3 | tr '\n' ' ')"

cat >"$scratch/source.toml" <<CONF
[[nts-ke-server]]
listen = "127.0.0.2:$ke"
certificate-chain-path = "$scratch/source.chain.pem"
private-key-path = "$scratch/source.key"
authorized-pool-server-certificates = ["$scratch/pool.pem"]
ntp-port = $ntp
[observability]
log-level = "warn"
CONF
cat >"$scratch/pool.toml" <<CONF
[nts-pool-ke-server]
listen = "127.0.0.1:$pool"
certificate-chain-path = "$scratch/pool.chain.pem"
private-key-path = "$scratch/pool.key"
certificate-authority-path = "$scratch/ca.pem"
deep-check-interval-s = 0
key-exchange-servers = [{ domain = "127.0.0.2", port = $ke }]
[observability]
log-level = "warn"
CONF

"${server_pin[@]}" "$build/ntp-daemon" -c "$scratch/source.toml" 2>"$scratch/source.log" &
source_pid=$!
pids+=($source_pid)
"${server_pin[@]}" "$build/nts-pool-ke" -c "$scratch/pool.toml" 2>"$scratch/pool.log" &
pool_pid=$!
pids+=($pool_pid)
# The broker needs its first probe before it can serve: wait for one good session.
for _ in $(seq 50); do
	"$build/tests/bench/ke-load" --connect "127.0.0.1:$pool" --ca "$scratch/ca.pem" \
		--name 127.0.0.1 --sessions 1 >/dev/null 2>&1 && break
	sleep 0.2
done

ticks() { # CPU clock ticks used so far by the given processes
	local t=0 f
	for p in "$@"; do
		f=$(cat "/proc/$p/stat")
		f=${f##*) }
		set -- $f
		t=$((t + ${12} + ${13}))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)

run() { # LABEL TARGET NAME PIDS...
	local label=$1 target=$2 name=$3
	shift 3
	local c0 c1 out
	c0=$(ticks "$@")
	out=$("${client_pin[@]}" "$build/tests/bench/ke-load" --connect "$target" \
		--ca "$scratch/ca.pem" --name "$name" --concurrency "$conc" --duration "$duration" \
		--json)
	c1=$(ticks "$@")
	printf '%s\t%s\t%s\n' "$label" "$out" "$(((c1 - c0) * 1000 / hz))"
}

direct=$(run direct "127.0.0.2:$ke" 127.0.0.2 "$source_pid")
broker=$(run broker "127.0.0.1:$pool" 127.0.0.1 "$source_pid" "$pool_pid")

field() { # JSON KEY: a number from ke-load's one-line JSON
	sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"
}
printf '\nNTS-KE through the broker vs directly, %ss each, concurrency %s\n' "$duration" "$conc"
printf '%-30s %12s %12s %8s\n' "" direct broker ratio
for key in sessions_per_s p50 p99; do
	d=$(field "$(cut -f2 <<<"$direct")" "$key")
	b=$(field "$(cut -f2 <<<"$broker")" "$key")
	printf '%-30s %12s %12s %8s\n' "$key" "$d" "$b" "$(awk -v b="$b" -v d="$d" 'BEGIN { printf "%.2f", b / d }')"
done
dok=$(field "$(cut -f2 <<<"$direct")" ok)
bok=$(field "$(cut -f2 <<<"$broker")" ok)
dms=$(cut -f3 <<<"$direct")
bms=$(cut -f3 <<<"$broker")
dper=$(awk -v n="$dok" -v ms="$dms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
bper=$(awk -v n="$bok" -v ms="$bms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
printf '%-30s %12s %12s %8s\n' "sessions per server CPU-s" "$dper" "$bper" \
	"$(awk -v b="$bper" -v d="$dper" 'BEGIN { printf "%.2f", b / d }')"
printf '(server CPU: the time source directly; the time source plus the broker through the pool)\n'
