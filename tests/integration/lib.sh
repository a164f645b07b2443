# Shared helpers of the integration scripts (POSIX sh; sourced, never run).
#   . "$TOP_SRCDIR/tests/integration/lib.sh"; itest_init NAME
# TAP output (plan, ok, not_ok, expect, diag), a scratch directory, test certificates, free ports,
# and start/stop of ntp-daemon and of chronyd as nobody. Every process started here is recorded
# and stopped by the EXIT trap, whatever happens to the test.

: "${TOP_SRCDIR:?TOP_SRCDIR must be set (make check exports it)}"
: "${TOP_BUILDDIR:?TOP_BUILDDIR must be set (make check exports it)}"
TOOLS="$TOP_BUILDDIR/tests/tools"
DAEMON="$TOP_BUILDDIR/ntp-daemon"
GEN_CERT="$TOP_SRCDIR/test-keys/gen-cert.sh"
T=
T_NUM=0
T_PIDS=
T_PORTS=

# ---- TAP ------------------------------------------------------------------------------------

plan() {
	echo "1..$1"
}

diag() {
	printf '%s\n' "$@" | sed 's/^/# /'
}

ok() {
	T_NUM=$((T_NUM + 1))
	echo "ok $T_NUM - $1"
}

# not_ok DESC [DIAGNOSTIC...]
not_ok() {
	T_NUM=$((T_NUM + 1))
	echo "not ok $T_NUM - $1"
	shift
	if [ $# -gt 0 ]; then
		diag "$@"
	fi
}

# expect DESC ACTUAL EXPECTED [DIAGNOSTIC...]: string equality.
expect() {
	e_desc=$1
	e_actual=$2
	e_expected=$3
	shift 3
	if [ "$e_actual" = "$e_expected" ]; then
		ok "$e_desc"
	else
		not_ok "$e_desc" "expected: $e_expected" "actual:   $e_actual" "$@"
	fi
}

# expect_gt DESC ACTUAL BOUND [DIAGNOSTIC...]: ACTUAL is an integer greater than BOUND.
expect_gt() {
	g_desc=$1
	g_actual=$2
	g_bound=$3
	shift 3
	if is_int "$g_actual" && [ "$g_actual" -gt "$g_bound" ]; then
		ok "$g_desc"
	else
		not_ok "$g_desc" "expected an integer > $g_bound" "actual: $g_actual" "$@"
	fi
}

is_int() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	*) return 0 ;;
	esac
}

bail_out() {
	echo "Bail out! $*"
	exit 1
}

# ---- Scratch directory and cleanup -----------------------------------------------------------

itest_cleanup() {
	for c_pid in $T_PIDS; do
		if kill -0 "$c_pid" 2>/dev/null; then
			kill -TERM "$c_pid" 2>/dev/null || true
		fi
	done
	for c_pid in $T_PIDS; do
		stop_pid "$c_pid" 10 >/dev/null 2>&1 || true
	done
	for c_port in $T_PORTS; do
		rm -f "$PORT_DIR/$c_port"
	done
	if [ -n "$T" ] && [ -z "${ITEST_KEEP:-}" ]; then
		# chronyd's helper processes may still be writing in a directory for a moment.
		c_i=0
		until rm -rf "$T" 2>/dev/null || [ "$c_i" -ge 20 ]; do
			sleep 0.5
			c_i=$((c_i + 1))
		done
	elif [ -n "$T" ]; then
		echo "# scratch directory kept: $T"
	fi
}

# itest_init NAME: scratch directory $T (traversable by nobody, for chrony), cleanup trap, and
# a check that the test tools were built.
itest_init() {
	T=$(mktemp -d "${TMPDIR:-/tmp}/itest-$1.XXXXXX")
	chmod 755 "$T"
	trap itest_cleanup EXIT
	trap 'exit 129' HUP
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 141' PIPE
	for i_tool in ke-client json-get http-get free-port; do
		[ -x "$TOOLS/$i_tool" ] || bail_out "$TOOLS/$i_tool not built (make check builds it)"
	done
}

# track PID: stopped by the EXIT trap.
track() {
	T_PIDS="$T_PIDS $1"
}

untrack() {
	u_new=
	for u_pid in $T_PIDS; do
		[ "$u_pid" = "$1" ] || u_new="$u_new $u_pid"
	done
	T_PIDS=$u_new
}

# stop_pid PID SECONDS: waits up to SECONDS for PID (a child of this shell, already signalled)
# to exit, then SIGKILLs it. Sets STOP_RC to its exit status and STOP_KILLED to yes or no.
stop_pid() {
	s_i=0
	STOP_KILLED=no
	while kill -0 "$1" 2>/dev/null && [ "$s_i" -lt $(($2 * 10)) ]; do
		sleep 0.1
		s_i=$((s_i + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		kill -KILL "$1" 2>/dev/null || true
		STOP_KILLED=yes
	fi
	STOP_RC=0
	wait "$1" || STOP_RC=$?
	untrack "$1"
}

# ---- Certificates and ports ------------------------------------------------------------------

# make_cert NAME [gen-cert options]: issues $T/certs/NAME.{pem,chain.pem,key} (CA made once).
make_cert() {
	m_name=$1
	shift
	mkdir -p "$T/certs"
	chmod 755 "$T/certs"
	bash "$GEN_CERT" --dir "$T/certs" "$m_name" "$@" >/dev/null
}

# The usual set: ca, pool (the authorised pool's client certificate), other (a certificate of
# the same CA that is not pinned), server-a (127.0.0.2) and server-b (127.0.0.3).
make_certs() {
	make_cert pool --dns pool.test &&
		make_cert other --dns other.test &&
		make_cert server-a --ip 127.0.0.2 &&
		make_cert server-b --ip 127.0.0.3
}

# alloc_ports N: sets PORT1 ... PORTN to distinct ports free for TCP and UDP right now, and
# reserved against tests running in parallel (free-port --reserve) until this test exits.
PORT_DIR=${TMPDIR:-/tmp}/ntspool-test-ports
alloc_ports() {
	a_list=$("$TOOLS/free-port" --reserve "$PORT_DIR" "$1") ||
		bail_out "free-port found no free ports"
	a_i=0
	for a_port in $a_list; do
		a_i=$((a_i + 1))
		eval "PORT$a_i=\$a_port"
		T_PORTS="$T_PORTS $a_port"
	done
}

# ---- JSON and status -------------------------------------------------------------------------

# jget PATH JSON: the value at PATH, or "missing".
jget() {
	printf '%s\n' "$2" | "$TOOLS/json-get" "$1" 2>/dev/null || echo missing
}

# status_of NAME: the /status document of a daemon started with daemon_start (empty on failure).
status_of() {
	eval "s_addr=\${${1}_status}"
	"$TOOLS/http-get" "$s_addr" /status 2>/dev/null || true
}

# stat_of NAME PATH: one value of a daemon's /status, or "missing".
stat_of() {
	jget "$2" "$(status_of "$1")"
}

# ---- ntp-daemon ------------------------------------------------------------------------------

log_tail() {
	if [ -f "$1" ]; then
		tail -n "${2:-20}" "$1" | sed 's/^/# /'
	fi
}

# daemon_start NAME CONF STATUS_ADDR: starts ntp-daemon in the background (log $T/NAME.log) and
# waits until its status endpoint answers. Sets ${NAME}_pid and ${NAME}_status. Returns 1 and
# prints the log tail as diagnostics when it does not come up.
daemon_start() {
	d_name=$1
	if [ ! -x "$DAEMON" ]; then
		echo "# $DAEMON not built"
		return 1
	fi
	# Belt and braces: no test may ever adjust the host clock, whatever its config says.
	"$DAEMON" -c "$2" -l debug --no-clock-control >"$T/$d_name.log" 2>&1 &
	d_pid=$!
	track "$d_pid"
	eval "${d_name}_pid=\$d_pid; ${d_name}_status=\$3"
	if "$TOOLS/http-get" "$3" /status --wait 20 >/dev/null 2>"$T/$d_name.http" &&
		kill -0 "$d_pid" 2>/dev/null; then
		return 0
	fi
	echo "# $d_name did not come up; $(cat "$T/$d_name.http")"
	kill -TERM "$d_pid" 2>/dev/null || true
	stop_pid "$d_pid" 5
	echo "# exit status $STOP_RC; log tail:"
	log_tail "$T/$d_name.log"
	return 1
}

# daemon_stop NAME: SIGTERM, wait up to 20 s (then SIGKILL). Sets STOP_RC and STOP_KILLED.
daemon_stop() {
	eval "d_pid=\${${1}_pid}"
	kill -TERM "$d_pid" 2>/dev/null || true
	stop_pid "$d_pid" 20
}

# daemon_alive NAME: the daemon process still runs.
daemon_alive() {
	eval "d_pid=\${${1}_pid}"
	kill -0 "$d_pid" 2>/dev/null
}

# ---- chrony (ARCHITECTURE.md §7: never controls the clock, runs as nobody) -------------------

# chronyd unpacked by scripts/peers.sh (scripts/test.sh exports CHRONYD; a build tree keeps
# its copy in peers/).
CHRONYD=${CHRONYD:-$TOP_BUILDDIR/peers/chrony/usr/sbin/chronyd}

# chrony_ready: 0 when chronyd can be run as nobody here; else prints the reason.
chrony_ready() {
	if [ "$(id -u)" != 0 ]; then
		echo "not root: runuser -u nobody (needed to run chronyd) is unavailable"
		return 1
	fi
	if [ ! -x "$CHRONYD" ]; then
		echo "no chronyd at $CHRONYD: run PEERS_DIR=\$build/peers scripts/peers.sh chrony"
		return 1
	fi
	return 0
}

# chrony_dir NAME: $T/NAME owned by nobody (chrony writes its dump, pid and socket files there).
chrony_dir() {
	mkdir -p "$T/$1"
	chown nobody: "$T/$1"
	chmod 700 "$T/$1"
}

# chrony_server_start NAME CONF: chronyd as an NTP/NTS server (clock untouched, -x), as nobody.
# Sets ${NAME}_pid. Its output goes to $T/NAME.log.
chrony_server_start() {
	runuser -u nobody -- "$CHRONYD" -U -u nobody -x -d -f "$2" >"$T/$1.log" 2>&1 &
	c_pid=$!
	track "$c_pid"
	eval "${1}_pid=\$c_pid"
}

# chrony_gone CONF: waits up to 10 s until no chronyd of ours with this (unique) configuration
# path runs any more: its helper processes outlive the runuser process by a moment.
chrony_gone() {
	g_i=0
	while pgrep -f -- "-f $1\$" >/dev/null 2>&1 && [ "$g_i" -lt 100 ]; do
		sleep 0.1
		g_i=$((g_i + 1))
	done
}

# chrony_server_stop NAME CONF: SIGTERM to the chronyd started by chrony_server_start.
chrony_server_stop() {
	eval "c_pid=\${${1}_pid}"
	kill -TERM "$c_pid" 2>/dev/null || true
	stop_pid "$c_pid" 10
	chrony_gone "$2"
}

# chrony_client NAME CONF: a one-shot chronyd -Q client (never sets the clock), as nobody; its
# output goes to $T/NAME.log. Returns chronyd's exit status.
chrony_client() {
	runuser -u nobody -- "$CHRONYD" -U -u nobody -Q -t 20 -f "$2" >"$T/$1.log" 2>&1 &
	c_pid=$!
	track "$c_pid"
	c_rc=0
	wait "$c_pid" || c_rc=$?
	untrack "$c_pid"
	chrony_gone "$2"
	return "$c_rc"
}

# chrony_through_pool DESC KE_PORT UNUSED_PORT: one test point: chronyd -Q (as nobody, the
# clock left alone) gets NTS time through the NTS-KE server on 127.0.0.1:KE_PORT, trusting the
# test CA; UNUSED_PORT is the NTP port it is told first (the KE answer names the real one).
# Passes when chrony prints "System clock wrong by"; fails saying why chrony could not run.
chrony_through_pool() {
	ctp_why=$(chrony_ready) || ctp_why=${ctp_why:-chronyd unusable}
	if [ -n "$ctp_why" ]; then
		not_ok "$1" "cannot run chrony: $ctp_why"
		return 0
	fi
	chrony_dir q
	cat >"$T/q.conf" <<CONF
server 127.0.0.1 port $3 nts ntsport $2 iburst
ntstrustedcerts $T/certs/ca.pem
nosystemcert
pidfile $T/q/chronyd.pid
bindcmdaddress $T/q/chronyd.sock
cmdport 0
ntsdumpdir $T/q
CONF
	ctp_rc=0
	chrony_client q "$T/q.conf" || ctp_rc=$?
	if [ "$ctp_rc" = 0 ] && grep -q 'System clock wrong by' "$T/q.log"; then
		ok "$1"
	else
		not_ok "$1" "chronyd exit status $ctp_rc; output:" "$(cat "$T/q.log")"
	fi
}

# nts_accepted_sum NAME...: the NTS requests the named time sources accepted, added up.
nts_accepted_sum() {
	nas=0
	for nas_n in "$@"; do
		nas_v=$(stat_of "$nas_n" ntp_servers.0.nts_accepted)
		is_int "$nas_v" || nas_v=0
		nas=$((nas + nas_v))
	done
	echo "$nas"
}

# wait_for_port PROTO ADDR PORT SECONDS: waits until something listens (tcp) or is bound (udp).
wait_for_port() {
	w_i=0
	while [ "$w_i" -lt $(($4 * 10)) ]; do
		if ss -Hln"$(printf %.1s "$1")" "src $2:$3" 2>/dev/null | grep -q .; then
			return 0
		fi
		sleep 0.1
		w_i=$((w_i + 1))
	done
	return 1
}

# ---- NTS-KE responses ------------------------------------------------------------------------

# records_of HEX: the records of a KE message as "TYPE LEN BODY|" (hex, the type with its C bit),
# New Cookie bodies (type 0005) as "*"; anything after the last whole record as "trailing HEX".
records_of() {
	printf '%s\n' "$1" | awk '{
		h = $0; out = ""
		while (length(h) >= 8) {
			t = substr(h, 1, 4); l = substr(h, 5, 4); n = 0
			for (i = 1; i <= 4; i++)
				n = n * 16 + index("0123456789abcdef", substr(l, i, 1)) - 1
			if (length(h) < 8 + 2 * n)
				break
			b = substr(h, 9, 2 * n)
			if (t == "0005")
				b = "*"
			out = out t " " l " " b "|"
			h = substr(h, 9 + 2 * n)
		}
		if (h != "")
			out = out "trailing " h
		print out
	}'
}

# hex_of STRING: the bytes of STRING in lowercase hex.
hex_of() {
	printf %s "$1" | od -An -v -tx1 | tr -d ' \n'
}

# u16_hex N: N as 4 hex digits.
u16_hex() {
	printf %04x "$1"
}

# repeat N TEXT: TEXT N times.
repeat() {
	r_i=0
	r_out=
	while [ "$r_i" -lt "$1" ]; do
		r_out="$r_out$2"
		r_i=$((r_i + 1))
	done
	printf %s "$r_out"
}

# ---- nts-pool-ke (the broker) and its time sources -------------------------------------------

POOL_KE="$TOP_BUILDDIR/nts-pool-ke"

# pool_certs: the set of make_certs, with the pool's certificate also for 127.0.0.1, the address
# the broker listens on, so that clients verify it by IP.
pool_certs() {
	make_cert pool --dns pool.test --ip 127.0.0.1 &&
		make_cert other --dns other.test &&
		make_cert server-a --ip 127.0.0.2 &&
		make_cert server-b --ip 127.0.0.3
}

# source_conf NAME IP KE NTP STATUS [PINNED]: writes $T/NAME.toml, a time source (ntp-daemon) on
# IP: NTS-KE on IP:KE with the certificate $T/certs/NAME (make_certs' server-a for 127.0.0.2,
# server-b for 127.0.0.3), NTP on IP:NTP, its own key file in $T/NAME-keys, local stratum 1,
# clock untouched, status on 127.0.0.1:STATUS. It pins PINNED (default $T/certs/pool.pem;
# "none" pins nothing). Lines in $SOURCE_KE_EXTRA are added to its [[nts-ke-server]] table.
source_conf() {
	case $2 in
	127.0.0.2) s_cert=server-a ;;
	127.0.0.3) s_cert=server-b ;;
	*) s_cert=$1 ;;
	esac
	s_pin="authorized-pool-server-certificates = [\"${6:-$T/certs/pool.pem}\"]"
	[ "${6:-}" != none ] || s_pin=""
	mkdir -p "$T/$1-keys"
	chmod 700 "$T/$1-keys"
	cat >"$T/$1.toml" <<SRC
[[nts-ke-server]]
listen = "$2:$3"
certificate-chain-path = "$T/certs/$s_cert.chain.pem"
private-key-path = "$T/certs/$s_cert.key"
$s_pin
ntp-port = $4
${SOURCE_KE_EXTRA:-}

[[server]]
listen = "$2:$4"

[keyset]
key-storage-path = "$T/$1-keys/keys"

[observability]
status-listen = "127.0.0.1:$5"
log-level = "debug"

[synchronization]
clock-control = false
local-stratum = 1
SRC
}

# source_start NAME IP KE NTP STATUS [PINNED]: source_conf, then daemon_start.
source_start() {
	source_conf "$@"
	daemon_start "$1" "$T/$1.toml" "127.0.0.1:$5"
}

# upstream DOMAIN PORT [WEIGHT [EXTRA]]: one key-exchange-servers entry (an inline table);
# EXTRA is more of its keys, e.g. 'authentication-token = "t"'.
upstream() {
	printf '{ domain = "%s", port = %s, weight = %s%s }' "$1" "$2" "${3:-1}" "${4:+, $4}"
}

# pool_conf FILE PORT STATUS UPSTREAMS [EXTRA]: writes a broker configuration: listen on
# 127.0.0.1:PORT with $T/certs/pool (chain and key; the pool certificate also goes to the
# upstreams), the test CA for the upstreams, key-exchange-servers = [ UPSTREAMS ] (entries made
# by `upstream`, comma-separated), then the EXTRA lines (options of [nts-pool-ke-server]; they
# replace nothing: give only options not written here), status on 127.0.0.1:STATUS.
# Probes are frequent (probe-interval-s = 1) so health changes show within seconds.
pool_conf() {
	cat >"$1" <<POOL
[nts-pool-ke-server]
listen = "127.0.0.1:$2"
certificate-chain-path = "$T/certs/pool.chain.pem"
private-key-path = "$T/certs/pool.key"
certificate-authority-path = "$T/certs/ca.pem"
probe-interval-s = 1
support-cache-s = 60
key-exchange-servers = [ $4 ]
${5:-}

[observability]
status-listen = "127.0.0.1:$3"
log-level = "debug"
POOL
}

# pool_start NAME CONF STATUS_ADDR: starts nts-pool-ke in the background (log $T/NAME.log; more
# options in POOL_ARGS, e.g. "--workers 1") and waits until its status endpoint answers; like daemon_start (status_of, stat_of, daemon_stop
# and daemon_alive work on NAME). Returns 1 with the log tail when it does not come up.
pool_start() {
	p_name=$1
	if [ ! -x "$POOL_KE" ]; then
		echo "# $POOL_KE not built"
		return 1
	fi
	# shellcheck disable=SC2086 # POOL_ARGS: more options, split on purpose
	"$POOL_KE" -c "$2" -l debug ${POOL_ARGS:-} >"$T/$p_name.log" 2>&1 &
	pk_pid=$!
	track "$pk_pid"
	eval "${p_name}_pid=\$pk_pid; ${p_name}_status=\$3"
	if "$TOOLS/http-get" "$3" /status --wait 20 >/dev/null 2>"$T/$p_name.http" &&
		kill -0 "$pk_pid" 2>/dev/null; then
		return 0
	fi
	echo "# $p_name did not come up; $(cat "$T/$p_name.http")"
	kill -TERM "$pk_pid" 2>/dev/null || true
	stop_pid "$pk_pid" 5
	echo "# exit status $STOP_RC; log tail:"
	log_tail "$T/$p_name.log"
	return 1
}

# upstream_field NAME DOMAIN PORT FIELD: FIELD of the broker NAME's /status entry for upstream
# DOMAIN:PORT, or "missing" when it lists no such upstream.
upstream_field() {
	u_doc=$(status_of "$1")
	u_i=0
	while :; do
		u_name=$(jget "upstreams.$u_i.name" "$u_doc")
		[ "$u_name" != missing ] || break
		if [ "$u_name" = "$2" ] && [ "$(jget "upstreams.$u_i.port" "$u_doc")" = "$3" ]; then
			jget "upstreams.$u_i.$4" "$u_doc"
			return 0
		fi
		u_i=$((u_i + 1))
	done
	echo missing
}

# wait_upstream NAME DOMAIN PORT STATE SECONDS: waits (bounded) until the broker NAME reports
# upstream DOMAIN:PORT in STATE; returns 1 when it never does.
wait_upstream() {
	w_i=0
	while [ "$w_i" -lt $(($5 * 10)) ]; do
		[ "$(upstream_field "$1" "$2" "$3" state)" = "$4" ] && return 0
		sleep 0.1
		w_i=$((w_i + 1))
	done
	return 1
}

# wait_file FILE SECONDS: waits (bounded) until FILE exists; returns 1 when it never does.
wait_file() {
	wf_i=0
	while [ ! -e "$1" ]; do
		[ "$wf_i" -lt $(($2 * 10)) ] || return 1
		sleep 0.1
		wf_i=$((wf_i + 1))
	done
}

# wait_stat NAME PATH VALUE SECONDS: waits (bounded) until PATH of NAME's /status reads VALUE;
# returns 1 when it never does.
wait_stat() {
	ws_i=0
	while [ "$(stat_of "$1" "$2")" != "$3" ]; do
		[ "$ws_i" -lt $(($4 * 10)) ] || return 1
		sleep 0.1
		ws_i=$((ws_i + 1))
	done
}

# stat_gt NAME PATH BOUND SECONDS: waits (bounded) until the integer at PATH of NAME's /status
# exceeds BOUND (counters a session updates as it ends); prints the last value read.
stat_gt() {
	g_i=0
	while :; do
		g_v=$(stat_of "$1" "$2")
		if { is_int "$g_v" && [ "$g_v" -gt "$3" ]; } || [ "$g_i" -ge $(($4 * 10)) ]; then
			echo "$g_v"
			return 0
		fi
		sleep 0.1
		g_i=$((g_i + 1))
	done
}

# ---- ntp-daemon as a client ([[source]]; doc/status.md "Time sources (the client half)") -----

# source_entry MODE ADDRESS [COUNT [POLL_MIN [POLL_MAX]]]: one [[source]] table on stdout. The
# NTS modes trust the test CA ($T/certs/ca.pem); COUNT (default 2) is written for nts-pool only.
# Polls are frequent by default (2^0 .. 2^2 s) so that tests see samples within seconds.
source_entry() {
	printf '[[source]]\nmode = "%s"\naddress = "%s"\n' "$1" "$2"
	case $1 in
	nts | nts-pool) printf 'certificate-authority = "%s"\n' "$T/certs/ca.pem" ;;
	esac
	if [ "$1" = nts-pool ]; then
		printf 'count = %s\n' "${3:-2}"
	fi
	printf 'poll-interval-min = %s\npoll-interval-max = %s\n\n' "${4:-0}" "${5:-2}"
}

# client_conf FILE STATUS SOURCES [EXTRA]: a daemon that is a client: the [[source]] tables
# SOURCES (made by source_entry), then EXTRA (further tables, e.g. a [[server]]), status on
# 127.0.0.1:STATUS, clock control off (ARCHITECTURE.md §7: never the host clock).
client_conf() {
	cat >"$1" <<CLIENT
$3
${4:-}

[observability]
status-listen = "127.0.0.1:$2"
log-level = "debug"

[synchronization]
clock-control = false
CLIENT
}

# src_rows DOC: one line per entry of DOC's "sources" array:
#   NAME MODE ADDRESS REACH OFFSET_S COOKIES LAST_KEY_EXCHANGE ERRORS SELECTED LAST_ERROR...
# (fields "missing" when absent, "null" when null; LAST_ERROR last, as it may hold spaces).
src_rows() {
	r_i=0
	while :; do
		r_name=$(jget "sources.$r_i.name" "$1")
		[ "$r_name" != missing ] || break
		r_line=$r_name
		for r_f in mode address reach offset_s cookies last_key_exchange errors selected \
			last_error; do
			r_line="$r_line $(jget "sources.$r_i.$r_f" "$1")"
		done
		printf '%s\n' "$r_line"
		r_i=$((r_i + 1))
	done
}

# src_field_of DOC ADDRESS FIELD: FIELD of the first source whose configured address is
# ADDRESS, or "missing".
src_field_of() {
	f_i=0
	while :; do
		f_addr=$(jget "sources.$f_i.address" "$1")
		if [ "$f_addr" = missing ]; then
			echo missing
			return 0
		fi
		if [ "$f_addr" = "$2" ]; then
			jget "sources.$f_i.$3" "$1"
			return 0
		fi
		f_i=$((f_i + 1))
	done
}

# src_working DOC [MODE]: the distinct names of the sources (of MODE, if given) with
# authenticated/valid samples: reach > 0 and a numeric offset_s. One per line, sorted.
src_working() {
	src_rows "$1" | awk -v m="${2:-}" '
		(m == "" || $2 == m) && $4 ~ /^[0-9]+$/ && $4 > 0 && $5 ~ /^-?[0-9.]+([eE][-+]?[0-9]+)?$/ \
			{ print $1 }' | sort -u
}

# src_sum DOC FIELD_NUMBER: the sum of an integer column of src_rows (non-integers count 0).
src_sum() {
	src_rows "$1" | awk -v f="$2" '{ if ($f ~ /^[0-9]+$/) s += $f } END { print s + 0 }'
}

# src_diag NAME: the system and source parts of NAME's /status, for diagnostics.
src_diag() {
	d_doc=$(status_of "$1")
	echo "system: $(jget system "$d_doc")"
	echo "sources (name mode address reach offset cookies last_ke errors selected last_error):"
	src_rows "$d_doc" | sed 's/^/  /'
}

# wait_until SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds (0) or SECONDS have
# passed (1). COMMAND must not use variables named wu_*.
wait_until() {
	wu_n=$(($1 * 2))
	wu_i=0
	shift
	while :; do
		if "$@"; then
			return 0
		fi
		[ "$wu_i" -lt "$wu_n" ] || return 1
		sleep 0.5
		wu_i=$((wu_i + 1))
	done
}

# working_at_least NAME N [MODE]: NAME's /status lists at least N distinct working sources
# (src_working). Sets WORKING to their names, space-separated.
working_at_least() {
	WORKING=$(src_working "$(status_of "$1")" "${3:-}" | tr '\n' ' ' | sed 's/ $//')
	[ "$(printf '%s' "$WORKING" | wc -w)" -ge "$2" ]
}

# synchronised NAME: NAME's /status says system.synchronised = true.
synchronised() {
	[ "$(stat_of "$1" system.synchronised)" = true ]
}

# stat_pos NAME PATH: the value at PATH of NAME's /status is an integer > 0.
stat_pos() {
	sp_v=$(stat_of "$1" "$2")
	is_int "$sp_v" && [ "$sp_v" -gt 0 ]
}

# has_word LIST WORD: WORD is one of the space-separated words of LIST.
has_word() {
	case " $1 " in
	*" $2 "*) return 0 ;;
	*) return 1 ;;
	esac
}

# ---- Scale-out peers: HAProxy, chronyc, chronyd under test names -----------------------------

# HAProxy unpacked by scripts/peers.sh (never installed: the package would enable a service).
HAPROXY=${HAPROXY:-$TOP_BUILDDIR/peers/haproxy/usr/sbin/haproxy}

# haproxy_find: prints the path of a runnable haproxy, unpacking it into $TOP_BUILDDIR/peers
# with scripts/peers.sh when it is missing; else prints why not on stderr and returns 1.
haproxy_find() {
	h_bin=$HAPROXY
	if [ ! -x "$h_bin" ]; then
		h_bin=$(PEERS_DIR="$TOP_BUILDDIR/peers" \
			bash "$TOP_SRCDIR/scripts/peers.sh" haproxy) ||
			{ echo "scripts/peers.sh could not unpack haproxy" >&2; return 1; }
	fi
	if ! "$h_bin" -v >/dev/null 2>&1; then
		echo "$h_bin does not run (its libraries: scripts/deps.sh test)" >&2
		return 1
	fi
	echo "$h_bin"
}

# haproxy_start NAME CONF: checks CONF (haproxy -c), then runs HAProxy in the foreground (-db)
# as the test's user; output in $T/NAME.log, ${NAME}_pid set. Returns 1 with haproxy's
# complaint when CONF does not load.
haproxy_start() {
	if ! "$HAPROXY" -c -f "$2" >"$T/$1.log" 2>&1; then
		log_tail "$T/$1.log"
		return 1
	fi
	"$HAPROXY" -db -f "$2" >"$T/$1.log" 2>&1 &
	hs_pid=$!
	track "$hs_pid"
	eval "${1}_pid=\$hs_pid"
}

# chronyc of the chrony package chronyd came from.
CHRONYC=${CHRONYC:-${CHRONYD%/sbin/chronyd}/bin/chronyc}

# chronyc_of NAME ARGS...: chronyc against the chronyd whose directory is $T/NAME (chrony_dir;
# its configuration has "bindcmdaddress $T/NAME/chronyd.sock").
chronyc_of() {
	c_dir=$1
	shift
	"$CHRONYC" -h "$T/$c_dir/chronyd.sock" "$@"
}

# chrony_ns_start NAME CONF HOSTS: chrony_server_start (chronyd -x as nobody) inside a private
# mount namespace in which the file HOSTS is bind-mounted over /etc/hosts, so that chronyd
# resolves names of the test's choosing; the host's /etc/hosts is never written. Needs root,
# as chrony_ready does.
chrony_ns_start() {
	chmod 644 "$3"
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --mount --propagation private -- sh -c \
		'mount --bind "$1" /etc/hosts && shift && exec runuser -u nobody -- "$@"' sh "$3" \
		"$CHRONYD" -U -u nobody -x -d -f "$2" >"$T/$1.log" 2>&1 &
	c_pid=$!
	track "$c_pid"
	eval "${1}_pid=\$c_pid"
}

# ---- ntpd-rs: its packaged configuration (doc/ntpd-rs.md) ------------------------------------

# ntpdrs_find: prints the root of the unpacked ntpd-rs package (its etc/ntpd-rs/ntp.toml is the
# test input), unpacking it into $TOP_BUILDDIR/peers with scripts/peers.sh when missing (never
# installed); else prints why not on stderr and returns 1.
ntpdrs_find() {
	n_root=${NTPDRS_ROOT:-$TOP_BUILDDIR/peers/ntpd-rs}
	if [ ! -f "$n_root/etc/ntpd-rs/ntp.toml" ]; then
		PEERS_DIR="$TOP_BUILDDIR/peers" bash "$TOP_SRCDIR/scripts/peers.sh" ntpd-rs \
			>/dev/null ||
			{ echo "scripts/peers.sh could not fetch ntpd-rs" >&2; return 1; }
		n_root=$TOP_BUILDDIR/peers/ntpd-rs
	fi
	[ -f "$n_root/etc/ntpd-rs/ntp.toml" ] ||
		{ echo "the ntpd-rs package has no etc/ntpd-rs/ntp.toml" >&2; return 1; }
	echo "$n_root"
}

# ctl_validate FILE: runs `ntp-ctl validate -c FILE`; output in $T/validate.out (both streams),
# exit status in VALIDATE_RC.
ctl_validate() {
	VALIDATE_RC=0
	"$TOP_BUILDDIR/ntp-ctl" validate -c "$1" >"$T/validate.out" 2>&1 || VALIDATE_RC=$?
}
