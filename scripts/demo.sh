#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, makes a private test CA in a scratch
# directory, and runs the loopback NTS pool there: time sources A (127.0.0.2) and B (127.0.0.3)
# from server/*.toml and the broker (127.0.0.1) from pool/pool.toml, on free ports. A chrony
# client (chronyd -Q as nobody: it measures, never sets the clock) then gets NTS time through the
# pool. Prints chrony's result and the status of the broker and of the source that served it.
# Then our own ntp-daemon runs as a client from client/client.toml (clock control off): two
# distinct servers through the pool and time source A directly, shown with `ntp-ctl status`.
# Stops everything it started. Needs root (chronyd is run as nobody through runuser).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] ||
	die "run as root (e.g. sudo scripts/demo.sh): chronyd, the demo's client, is run as nobody through runuser"
scripts/deps.sh demo || die "installing the Debian packages failed (see above)"
# chrony is unpacked from its Debian package into a scratch directory, never installed.
chronyd=$("$top/scripts/peers.sh" chrony) || die "cannot fetch chrony (see above)"
command -v runuser >/dev/null || die "runuser not found: apt-get install util-linux"

[[ -x configure ]] || autoreconf -fi
build=${BUILD_DIR:-$top/build/demo}
mkdir -p "$build"
cd "$build"
[[ -f Makefile ]] || "$top/configure" -q
tools=(tests/tools/free-port tests/tools/http-get tests/tools/json-get)
if ! make -n tests/tools/free-port >/dev/null 2>&1; then
	die "configure did not find cJSON, which the test tools need: apt-get install libcjson-dev, then rm -r $build"
fi
echo "== building in $build"
make -j"$(nproc 2>/dev/null || echo 2)" ntp-daemon nts-pool-ke ntp-ctl "${tools[@]}" >/dev/null ||
	die "the build failed (see above)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ntspool-demo.XXXXXX")
chmod 755 "$scratch" # chronyd (as nobody) reads the CA certificate in it
pids=()
stop_all() {
	local pid i
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	pids=()
}
cleanup() {
	stop_all
	# chronyd's helper process may still be writing in its directory for a moment.
	for ((i = 0; i < 20; i++)); do
		rm -rf "$scratch" 2>/dev/null && break
		sleep 0.5
	done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
B=$build

echo "== test CA and certificates (test-keys/gen-cert.sh) in $scratch/certs"
certs=$scratch/certs
mkdir -m 755 "$certs"
gen() { "$top/test-keys/gen-cert.sh" --dir "$certs" "$@" >/dev/null || die "gen-cert.sh $1 failed"; }
gen pool --dns pool.test --ip 127.0.0.1
gen server-a --dns a.time.test --ip 127.0.0.2
gen server-b --dns b.time.test --ip 127.0.0.3
ls "$certs"

ports=$("$B/tests/tools/free-port" 10) || die "no free ports found"
read -r KE_A NTP_A ST_A KE_B NTP_B ST_B POOL POOL_ST CHRONY_NTP CLIENT_ST <<<"$(echo $ports)"

# derive SRC DEST SED-SCRIPT...: a copy of SRC with paths and ports substituted; every port of
# the original must have been replaced (a changed role file fails here, not mysteriously later).
derive() {
	local src=$1 dest=$2
	shift 2
	sed -e "s|test-keys/out/|$certs/|g" "$@" "$src" >"$dest"
	if grep -Eq '^[^#]*(:(4460|10123|910[1234])"|port = (4460|10123))' "$dest"; then
		die "$src: a port was not substituted; demo.sh needs updating"
	fi
}
# The role files already say clock-control = false: the demo never lets a program touch the
# clock, and a changed role file must not silently lose that.
for f in server/server-a.toml server/server-b.toml client/client.toml; do
	grep -q '^clock-control = false' "$top/$f" || die "$f must keep clock-control = false"
done
derive "$top/server/server-a.toml" "$scratch/server-a.toml" \
	-e "s|127.0.0.2:4460|127.0.0.2:$KE_A|; s|127.0.0.2:10123|127.0.0.2:$NTP_A|" \
	-e "s|^ntp-port = 10123|ntp-port = $NTP_A|; s|127.0.0.1:9102|127.0.0.1:$ST_A|"
derive "$top/server/server-b.toml" "$scratch/server-b.toml" \
	-e "s|127.0.0.3:4460|127.0.0.3:$KE_B|; s|127.0.0.3:10123|127.0.0.3:$NTP_B|" \
	-e "s|^ntp-port = 10123|ntp-port = $NTP_B|; s|127.0.0.1:9103|127.0.0.1:$ST_B|"
derive "$top/pool/pool.toml" "$scratch/pool.toml" \
	-e "s|127.0.0.1:4460|127.0.0.1:$POOL|; s|127.0.0.1:9101|127.0.0.1:$POOL_ST|" \
	-e "s|\"127.0.0.2\", port = 4460|\"127.0.0.2\", port = $KE_A|" \
	-e "s|\"127.0.0.3\", port = 4460|\"127.0.0.3\", port = $KE_B|"
derive "$top/client/client.toml" "$scratch/client.toml" \
	-e "s|\"127.0.0.1:4460\"|\"127.0.0.1:$POOL\"|; s|\"127.0.0.2:4460\"|\"127.0.0.2:$KE_A\"|" \
	-e "s|127.0.0.1:9104|127.0.0.1:$CLIENT_ST|"

# start NAME PROGRAM CONF STATUS: runs PROGRAM -c CONF (log $scratch/NAME.log) and waits for its
# status endpoint.
start() {
	local extra=()
	# The demo never lets a program touch this machine's clock, whatever a config says.
	[[ $2 == ntp-daemon ]] && extra=(--no-clock-control)
	"$B/$2" -c "$3" "${extra[@]}" >"$scratch/$1.log" 2>&1 &
	pids+=($!)
	if ! "$B/tests/tools/http-get" "127.0.0.1:$4" /status --wait 20 >/dev/null 2>&1; then
		tail -n 20 "$scratch/$1.log" >&2
		die "$1 ($2) did not start; its log is above"
	fi
	echo "   $1: $2 -c $3 (status on 127.0.0.1:$4)"
}
status() { "$B/tests/tools/http-get" "127.0.0.1:$1" /status 2>/dev/null || true; }
field() { status "$1" | "$B/tests/tools/json-get" "$2" 2>/dev/null || echo missing; }

echo
echo "== time sources and the pool's broker"
start server-a ntp-daemon "$scratch/server-a.toml" "$ST_A"
start server-b ntp-daemon "$scratch/server-b.toml" "$ST_B"
start pool nts-pool-ke "$scratch/pool.toml" "$POOL_ST"
for ((i = 0; i < 300; i++)); do
	[[ "$(field "$POOL_ST" upstreams.0.state) $(field "$POOL_ST" upstreams.1.state)" == "healthy healthy" ]] && break
	sleep 0.1
done
echo "   upstreams: 127.0.0.2 $(field "$POOL_ST" upstreams.0.state), 127.0.0.3 $(field "$POOL_ST" upstreams.1.state)"

echo
echo "== chrony through the pool: chronyd -Q (as nobody, measures only) against 127.0.0.1:$POOL"
cdir=$scratch/chrony
mkdir -m 700 "$cdir"
chown nobody: "$cdir"
cat >"$scratch/chrony.conf" <<CONF
server 127.0.0.1 port $CHRONY_NTP nts ntsport $POOL iburst
ntstrustedcerts $certs/ca.pem
nosystemcert
pidfile $cdir/chronyd.pid
bindcmdaddress $cdir/chronyd.sock
cmdport 0
ntsdumpdir $cdir
CONF
rc=0
runuser -u nobody -- "$chronyd" -U -u nobody -Q -t 20 -f "$scratch/chrony.conf" \
	>"$scratch/chrony.log" 2>&1 || rc=$?
if [[ $rc -ne 0 ]] || ! grep 'System clock wrong by' "$scratch/chrony.log"; then
	cat "$scratch/chrony.log" >&2
	die "chronyd got no NTS time through the pool (exit status $rc; its output is above)"
fi

# pretty: indents compact JSON (no python, no jq).
pretty() {
	awk 'function pad(k, r) { r = ""; while (k-- > 0) r = r "  "; return r }
	BEGIN { RS = "\001" }
	{
		s = $0; n = length(s); ind = 0; str = 0; esc = 0; o = ""
		for (i = 1; i <= n; i++) {
			c = substr(s, i, 1)
			if (str) {
				o = o c
				if (esc) esc = 0; else if (c == "\\") esc = 1; else if (c == "\"") str = 0
				continue
			}
			if (c == "\"") { str = 1; o = o c }
			else if (c == "{" || c == "[") {
				j = i + 1
				while (substr(s, j, 1) ~ /[ \t\r\n]/) j++
				e = substr(s, j, 1)
				if ((c == "{" && e == "}") || (c == "[" && e == "]")) { o = o c e; i = j }
				else { ind++; o = o c "\n" pad(ind) }
			}
			else if (c == "}" || c == "]") { ind--; o = o "\n" pad(ind) c }
			else if (c == ",") o = o ",\n" pad(ind)
			else if (c == ":") o = o ": "
			else if (c !~ /[ \t\r\n]/) o = o c
		}
		print o
	}'
}

served=server-a
served_st=$ST_A
if [[ $(field "$ST_B" ntp_servers.0.nts_accepted) =~ ^[1-9] ]]; then
	served=server-b
	served_st=$ST_B
fi
echo
echo "== the broker's status (http://127.0.0.1:$POOL_ST/status)"
status "$POOL_ST" | pretty
echo
echo "== the status of $served, the time source chrony was sent to (http://127.0.0.1:$served_st/status)"
status "$served_st" | pretty

echo
echo "== our own client: ntp-daemon -c client/client.toml (clock control off: measures only)"
start client ntp-daemon "$scratch/client.toml" "$CLIENT_ST"
# pool_servers: the distinct NTP servers of the client's nts-pool source with authenticated
# samples (reach > 0 and a measured offset), one per line.
pool_servers() {
	local doc i name
	doc=$(status "$CLIENT_ST")
	for ((i = 0; ; i++)); do
		name=$(printf '%s\n' "$doc" | "$B/tests/tools/json-get" "sources.$i.name" 2>/dev/null) ||
			break
		[[ $(printf '%s\n' "$doc" | "$B/tests/tools/json-get" "sources.$i.mode") == nts-pool ]] ||
			continue
		[[ $(printf '%s\n' "$doc" | "$B/tests/tools/json-get" "sources.$i.reach") =~ ^[1-9] ]] ||
			continue
		[[ $(printf '%s\n' "$doc" | "$B/tests/tools/json-get" "sources.$i.offset_s") =~ ^-?[0-9] ]] ||
			continue
		echo "$name"
	done | sort -u
}
n=0
for ((i = 0; i < 120; i++)); do
	n=$(pool_servers | wc -l)
	((n >= 2)) && break
	sleep 0.5
done
if ((n < 2)); then
	tail -n 20 "$scratch/client.log" >&2
	status "$CLIENT_ST" | pretty >&2
	die "our client got no two distinct servers through the pool in 60 s (log, status above)"
fi
echo "   two distinct servers through the pool, authenticated: $(pool_servers | paste -sd ' ' -)"
# Selection waits for a few samples from every source (doc/timekeeping.md); show it once it has
# chosen a system peer.
for ((i = 0; i < 60; i++)); do
	[[ $(field "$CLIENT_ST" system.synchronised) == true ]] && break
	sleep 0.5
done
echo
echo "== ntp-ctl status --address 127.0.0.1:$CLIENT_ST"
if ! "$B/ntp-ctl" status --address "127.0.0.1:$CLIENT_ST" 2>/dev/null; then
	echo "   (ntp-ctl status is not available in this build; the status document instead)"
	status "$CLIENT_ST" | pretty
fi

echo
echo "== stopping the client, the broker and the time sources"
stop_all
echo "done: chrony got NTS-protected time from $served through the pool's key exchange,"
echo "      and our ntp-daemon kept two distinct servers through the pool"
