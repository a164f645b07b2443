#!/usr/bin/env bash
# Runs ke-load and ntp-load with the same parameters against chronyd (NTS server, one NTS-KE
# helper) and against our ntp-daemon, each on its own loopback address with the same test
# certificate, and prints a table with the ratios ours/chrony. Two limits put the per-CPU figures
# in proportion to what this machine can do at all: tls-limit (the server side of an in-process
# TLS 1.3 handshake plus the NTS key export, with the same certificate) for NTS-KE, and our own
# ntp-daemon answering plain NTPv4 (ntp-load --plain) for NTS-NTP. Loopback only; every process
# it starts is stopped on exit. Needs root (chronyd runs as nobody through runuser), chronyd, jq,
# openssl (gen-cert.sh), ss and, for pinning, taskset. See tests/bench/README.md.
set -eu

prog=${0##*/}
script_dir=$(cd "$(dirname "$0")" && pwd)
top_srcdir=$(cd "$script_dir/../.." && pwd)

usage() {
	cat <<EOF
Usage: $prog [OPTIONS]

  -b, --build DIR        build directory holding tests/bench/ke-load, tests/bench/ntp-load,
                         tests/bench/tls-limit and ntp-daemon (default: \$TOP_BUILDDIR or .)
  -d, --duration S       seconds per load run (default 10)
  -c, --concurrency N    ke-load connections (default 32)
  -t, --threads T        ke-load threads (default 1)
  -w, --window W         ntp-load outstanding requests (default 64)
      --aead ID          15 or 17 (default 15; chrony 4.3 serves only 15)
      --verify-every 1   deprecated, accepted for old scripts: ntp-load authenticates every
                         NTS reply, since it needs the cookies inside; other values are refused
      --server-cpu N     core for the servers (default 0)
      --client-cpu N     core for the load generators (default 1)
      --no-pin           do not pin anything with taskset
      --chrony-only      skip ntp-daemon even if it is built
      --keep             keep the scratch directory (configs, logs, JSON)
  -h, --help             show this help
EOF
}

die() {
	printf '%s: %s\n' "$prog" "$*" >&2
	exit 1
}

build=${TOP_BUILDDIR:-.}
duration=10
concurrency=32
threads=1
window=64
aead=15
server_cpu=0
client_cpu=1
pin=1
chrony_only=0
keep=0

while [ $# -gt 0 ]; do
	case $1 in
	-b | --build) build=$2; shift 2 ;;
	-d | --duration) duration=$2; shift 2 ;;
	-c | --concurrency) concurrency=$2; shift 2 ;;
	-t | --threads) threads=$2; shift 2 ;;
	-w | --window) window=$2; shift 2 ;;
	--aead) aead=$2; shift 2 ;;
	--verify-every)
		[ "$2" = 1 ] || die "--verify-every $2: no longer supported: ntp-load" \
			"authenticates every NTS reply (a client must decrypt it to take its" \
			"fresh cookies)"
		echo "$prog: --verify-every is deprecated (every NTS reply is authenticated)" >&2
		shift 2 ;;
	--server-cpu) server_cpu=$2; shift 2 ;;
	--client-cpu) client_cpu=$2; shift 2 ;;
	--no-pin) pin=0; shift ;;
	--chrony-only) chrony_only=1; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

build=$(cd "$build" && pwd)
ke_load=$build/tests/bench/ke-load
ntp_load=$build/tests/bench/ntp-load
tls_limit=$build/tests/bench/tls-limit
daemon=$build/ntp-daemon
[ -x "$ke_load" ] && [ -x "$ntp_load" ] || die "no load generators in $build (make tests/bench/ke-load tests/bench/ntp-load)"
[ "$(id -u)" = 0 ] || die "needs root: chronyd is started as nobody through runuser"
for tool in runuser jq ss openssl; do
	command -v "$tool" >/dev/null || die "$tool not found"
done
# chrony unpacked from its Debian package into the build directory, never installed.
chronyd=${CHRONYD:-$(PEERS_DIR=$build/peers "$(dirname "$0")/../../scripts/peers.sh" chrony)} ||
	die "cannot fetch chrony"
if [ "$pin" = 1 ]; then
	command -v taskset >/dev/null || die "taskset not found (or use --no-pin)"
	[ "$(nproc)" -ge 2 ] || { echo "$prog: one core only: not pinning" >&2; pin=0; }
fi
server_pin=()
client_pin=()
if [ "$pin" = 1 ]; then
	server_pin=(taskset -c "$server_cpu")
	client_pin=(taskset -c "$client_cpu")
fi

scratch=$(mktemp -d /tmp/nts-bench.XXXXXX)
chmod 755 "$scratch"
started=()

# Every process in the tree under pid, pid first.
tree() {
	local child
	echo "$1"
	for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		tree "$child"
	done
}

cleanup() {
	local pid all=()
	for pid in "${started[@]}"; do
		all+=($(tree "$pid"))
	done
	for pid in "${all[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${started[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [ "$keep" = 1 ]; then
		echo "scratch directory kept: $scratch" >&2
	else
		rm -rf "$scratch"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP and UDP port free on every address, below the ephemeral range so that the load
# generators' own connections cannot take it.
used_ports=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 12000))
		case $used_ports in *" $p "*) continue ;; esac
		if [ -z "$(ss -Htanu "( sport = :$p )")" ]; then
			used_ports="$used_ports$p "
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# Waits until something listens on TCP addr:port, while pid lives.
wait_listen() { # addr port pid seconds
	local i
	for i in $(seq $(($4 * 10))); do
		kill -0 "$3" 2>/dev/null || return 1
		[ -n "$(ss -Htln "( sport = :$2 )" | grep -F "$1:$2")" ] && return 0
		sleep 0.1
	done
	return 1
}

# CPU time (clock ticks) used so far by pid and its descendants.
cpu_ticks() {
	local pid total=0 f
	for pid in $(tree "$1"); do
		f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		f=${f##*) }
		set -- $f
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}
hz=$(getconf CLK_TCK)

chrony_addr=127.0.0.11
ours_addr=127.0.0.12
keys=$scratch/keys
"$top_srcdir/test-keys/gen-cert.sh" --dir "$keys" bench --ip "$chrony_addr" --ip "$ours_addr" \
	>/dev/null
chown -R nobody "$keys"

# ---- chronyd ----
chrony_ntp=$(free_port)
chrony_ke=$(free_port)
mkdir "$scratch/chrony"
cat >"$scratch/chrony/chrony.conf" <<EOF
port $chrony_ntp
ntsport $chrony_ke
bindaddress $chrony_addr
ntsserverkey $keys/bench.key
ntsservercert $keys/bench.chain.pem
ntsprocesses 1
ntsdumpdir $scratch/chrony
allow 127.0.0.0/8
local stratum 10
cmdport 0
bindcmdaddress /
pidfile $scratch/chrony/chronyd.pid
EOF
chown -R nobody "$scratch/chrony"
"${server_pin[@]}" runuser -u nobody -- "$chronyd" -U -u nobody -x -d -f "$scratch/chrony/chrony.conf" \
	>"$scratch/chrony/log" 2>&1 &
chrony_pid=$!
started+=("$chrony_pid")
if ! wait_listen "$chrony_addr" "$chrony_ke" "$chrony_pid" 10; then
	cat "$scratch/chrony/log" >&2
	die "chronyd did not start"
fi
targets=(chrony)
declare -A ke_of ntp_of pid_of
ke_of[chrony]=$chrony_addr:$chrony_ke
pid_of[chrony]=$chrony_pid

# ---- ntp-daemon ----
ours_note=""
if [ "$chrony_only" = 1 ]; then
	ours_note="ntp-daemon skipped (--chrony-only)"
elif [ ! -x "$daemon" ]; then
	ours_note="ntp-daemon not built in $build: chrony only"
else
	ours_ntp=$(free_port)
	ours_ke=$(free_port)
	mkdir "$scratch/ours"
	cat >"$scratch/ours/ntp.toml" <<EOF
[[nts-ke-server]]
listen = "$ours_addr:$ours_ke"
certificate-chain-path = "$keys/bench.chain.pem"
private-key-path = "$keys/bench.key"
ntp-port = $ours_ntp

[[server]]
listen = "$ours_addr:$ours_ntp"

[synchronization]
clock-control = false
local-stratum = 10

[observability]
log-level = "warn"
EOF
	chown -R nobody "$scratch/ours"
	"${server_pin[@]}" runuser -u nobody -- "$daemon" -c "$scratch/ours/ntp.toml" \
		>"$scratch/ours/log" 2>&1 &
	ours_pid=$!
	started+=("$ours_pid")
	if wait_listen "$ours_addr" "$ours_ke" "$ours_pid" 5; then
		targets+=(ours)
		ke_of[ours]=$ours_addr:$ours_ke
		ntp_of[ours]=$ours_addr:$ours_ntp
		pid_of[ours]=$ours_pid
	else
		ours_note="ntp-daemon did not come up (its output: $(head -c 300 "$scratch/ours/log" | tr '\n' ' ')): chrony only"
	fi
fi

# ---- load ----
declare -A res
for t in "${targets[@]}"; do
	echo "== $t: ke-load ${ke_of[$t]} for ${duration}s, concurrency $concurrency" >&2
	before=$(cpu_ticks "${pid_of[$t]}")
	"${client_pin[@]}" "$ke_load" --connect "${ke_of[$t]}" --ca "$keys/ca.pem" \
		--duration "$duration" --concurrency "$concurrency" --threads "$threads" \
		--aead "$aead" --json >"$scratch/$t.ke.json" || true
	res[$t.ke_cpu]=$(( $(cpu_ticks "${pid_of[$t]}") - before ))

	echo "== $t: ntp-load via ${ke_of[$t]} for ${duration}s, window $window" >&2
	before=$(cpu_ticks "${pid_of[$t]}")
	"${client_pin[@]}" "$ntp_load" --connect "${ke_of[$t]}" --ca "$keys/ca.pem" \
		--duration "$duration" --window "$window" --aead "$aead" \
		--json >"$scratch/$t.ntp.json" || true
	res[$t.ntp_cpu]=$(( $(cpu_ticks "${pid_of[$t]}") - before ))
done

# The NTS-NTP limit: the same server answering the same load without NTS.
if [ -n "${ntp_of[ours]:-}" ]; then
	echo "== ours: ntp-load --plain ${ntp_of[ours]} for ${duration}s, window $window" >&2
	before=$(cpu_ticks "${pid_of[ours]}")
	"${client_pin[@]}" "$ntp_load" --plain --connect "${ntp_of[ours]}" \
		--duration "$duration" --window "$window" --json >"$scratch/ours.plain.json" || true
	res[ours.plain_cpu]=$(( $(cpu_ticks "${pid_of[ours]}") - before ))
fi

# The NTS-KE limit, on the servers' core (they are idle by now): only its server side's CPU
# time counts, so it needs no core of its own.
limit_note=""
if [ -x "$tls_limit" ]; then
	echo "== tls-limit: in-process TLS 1.3 handshakes + NTS key export for ${duration}s" >&2
	"${server_pin[@]}" "$tls_limit" --cert "$keys/bench.chain.pem" --key "$keys/bench.key" \
		--duration "$duration" --aead "$aead" --json >"$scratch/tls-limit.json" || true
else
	limit_note="no tls-limit in $build (make tests/bench/tls-limit): no NTS-KE limit"
fi

# A field of a JSON result, or "-" when the run produced none.
field() { # file jq-path
	local v
	v=$(jq -r "$2 // empty" "$1" 2>/dev/null | head -n1)
	echo "${v:--}"
}

# Per server-CPU-second: what one fully used core would serve at this rate.
per_cpu() { # count ticks
	awk -v n="$1" -v t="$2" -v hz="$hz" 'BEGIN { if (n == "-" || t <= 0) print "-"; else printf "%.0f", n / (t / hz) }'
}
pct() { # ticks elapsed-seconds
	awk -v t="$1" -v e="$2" -v hz="$hz" 'BEGIN { if (e == "-" || e <= 0) print "-"; else printf "%.0f", 100 * t / hz / e }'
}
gen_pct() { # cpu-seconds elapsed-seconds
	awk -v c="$1" -v e="$2" 'BEGIN { if (c == "-" || e == "-" || e <= 0) print "-"; else printf "%.0f", 100 * c / e }'
}
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

declare -A row
for t in "${targets[@]}"; do
	k=$scratch/$t.ke.json
	n=$scratch/$t.ntp.json
	row[$t.1]=$(field "$k" .sessions_per_s)
	row[$t.2]=$(field "$k" .latency_ms.p50)
	row[$t.3]=$(field "$k" .latency_ms.p99)
	row[$t.4]="$(field "$k" .ok)/$(field "$k" .failed)"
	row[$t.5]=$(pct "${res[$t.ke_cpu]}" "$(field "$k" .elapsed_s)")
	row[$t.6]=$(per_cpu "$(field "$k" .ok)" "${res[$t.ke_cpu]}")
	row[$t.7]=$(field "$n" .requests_per_s)
	row[$t.8]=$(field "$n" .loss_pct)
	row[$t.9]="$(field "$n" .verified)/$(field "$n" .checked)"
	row[$t.10]="$(field "$n" .ke_initial)/$(field "$n" .ke_refills)/$(field "$n" .ke_failed)"
	row[$t.11]=$(field "$n" .no_cookie)
	row[$t.12]=$(pct "${res[$t.ntp_cpu]}" "$(field "$n" .elapsed_s)")
	row[$t.13]=$(per_cpu "$(field "$n" .answered)" "${res[$t.ntp_cpu]}")
	row[$t.17]=$(gen_pct "$(field "$k" .cpu_s)" "$(field "$k" .elapsed_s)")
	row[$t.18]=$(gen_pct "$(field "$n" .cpu_s)" "$(field "$n" .elapsed_s)")
done
if [ -n "${ntp_of[ours]:-}" ]; then
	p=$scratch/ours.plain.json
	row[ours.14]=$(field "$p" .requests_per_s)
	row[ours.15]=$(pct "${res[ours.plain_cpu]}" "$(field "$p" .elapsed_s)")
	row[ours.16]=$(per_cpu "$(field "$p" .answered)" "${res[ours.plain_cpu]}")
	row[ours.19]=$(gen_pct "$(field "$p" .cpu_s)" "$(field "$p" .elapsed_s)")
fi
labels=("" "KE sessions/s" "KE latency p50 ms" "KE latency p99 ms" "KE sessions ok/failed"
	"KE server CPU %" "KE sessions per server CPU-s" "NTS requests/s" "NTS loss %"
	"NTS verified/checked" "NTS key exch. initial/refill/fail"
	"NTS requests waiting for a cookie"
	"NTS server CPU %" "NTS requests per server CPU-s" "plain NTP requests/s"
	"plain NTP server CPU %" "plain requests per server CPU-s" "ke-load CPU %" "ntp-load CPU %"
	"ntp-load --plain CPU %")
ratio_rows=" 1 2 3 6 7 13 "

printf '\nNTS load, %ss per run, ke-load concurrency %s x %s thread(s), ntp-load window %s, AEAD %s\n' \
	"$duration" "$concurrency" "$threads" "$window" "$aead"
if [ "$pin" = 1 ]; then
	printf 'servers and tls-limit pinned to core %s, load generators to core %s\n' \
		"$server_cpu" "$client_cpu"
else
	printf 'not pinned\n'
fi
printf '\n%-34s %16s %16s %12s\n' "" "chronyd" "ntp-daemon" "ours/chrony"
for i in $(seq 1 19); do
	c=${row[chrony.$i]:--}
	o=${row[ours.$i]:--}
	r=""
	case $ratio_rows in *" $i "*) r=$(ratio "$o" "$c") ;; esac
	printf '%-34s %16s %16s %12s\n' "${labels[$i]}" "$c" "$o" "$r"
done

# The limits: every per-CPU figure as a fraction of what this machine can do.
limit_line() { printf '%-31s %10s %10s %10s %11s %10s %12s\n' "$@"; }
limit_row() { # label chrony ours limit
	limit_line "$1" "$2" "$3" "$4" "$(ratio "$3" "$2")" "$(ratio "$3" "$4")" "$(ratio "$2" "$4")"
}
l=$scratch/tls-limit.json
ke_limit=$(field "$l" .handshakes_per_server_cpu_s |
	awk '{ if ($1 == "-") print "-"; else printf "%.0f", $1 }')
printf '\n'
limit_line "per server CPU-second" chronyd ntp-daemon limit ours/chrony ours/limit \
	chrony/limit
limit_row "NTS-KE sessions (limit: TLS)" "${row[chrony.6]:--}" "${row[ours.6]:--}" "$ke_limit"
limit_row "NTS-NTP requests (limit: plain)" "${row[chrony.13]:--}" "${row[ours.13]:--}" \
	"${row[ours.16]:--}"
printf 'limit TLS: server side of an in-process GnuTLS TLS 1.3 handshake + NTS key export\n'
printf '           (tls-limit: %s, %s, %s)\n' "$(field "$l" .group)" "$(field "$l" .signature)" \
	"$(field "$l" .cipher)"
printf 'limit plain: our ntp-daemon answering plain NTPv4 (ntp-load --plain): ours/limit there is\n'
printf '             ours/plain\n'
[ -z "$ours_note" ] || printf '\n%s\n' "$ours_note"
[ -z "$limit_note" ] || printf '%s\n' "$limit_note"
printf '(latency ratios: below 1 is better for us; every other ratio: above 1 is better)\n'
