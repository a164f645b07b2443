#!/bin/sh
# Builds every libFuzzer harness of tests/fuzz with clang (the project's own build uses gcc, so
# the harnesses are compiled here, straight from the library sources they need) and runs each for
# FUZZ_SECONDS seconds (default 8) over a fresh copy of its seed corpus. Reports TAP.
#
#   sh tests/fuzz/run.sh [BUILDDIR]       BUILDDIR (or $TOP_BUILDDIR) holds the configured
#                                         autoconfig.h; output goes to BUILDDIR/tests/fuzz-out
#   FUZZ_SECONDS=600 sh tests/fuzz/run.sh  a long run
#   FUZZ_ONLY="toml ke_request" ...        only these harnesses
#
# A crash, leak, timeout or sanitizer report fails the harness's test point; the reproducer is
# kept in BUILDDIR/tests/fuzz-out/crashes/ and named in the TAP line.
set -u

here=$(cd "$(dirname "$0")" && pwd)
srcdir=${TOP_SRCDIR:-$(cd "$here/../.." && pwd)}
builddir=${1:-${TOP_BUILDDIR:-}}
seconds=${FUZZ_SECONDS:-8}
CLANG=${CLANG:-clang}

bail() {
	echo "Bail out! $*"
	exit 1
}

if [ -z "$builddir" ]; then
	if [ -f ./autoconfig.h ]; then builddir=.; else bail "usage: run.sh BUILDDIR (or set TOP_BUILDDIR)"; fi
fi
builddir=$(cd "$builddir" && pwd) || bail "no build directory $builddir"
[ -f "$builddir/autoconfig.h" ] || bail "$builddir/autoconfig.h missing: run configure first"
case $seconds in '' | *[!0-9]*) bail "FUZZ_SECONDS must be a whole number of seconds" ;; esac

out=$builddir/tests/fuzz-out
mkdir -p "$out/obj" "$out/bin" "$out/corpus" "$out/crashes" "$out/log" || bail "cannot create $out"

# The toolchain: clang with the libFuzzer runtime, and GnuTLS to link against.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){(void)d;(void)n;return 0;}\n' \
	>"$out/obj/probe.c"
if ! command -v "$CLANG" >/dev/null 2>&1 ||
	! "$CLANG" -fsanitize=fuzzer,address,undefined "$out/obj/probe.c" -o "$out/obj/probe" \
		>"$out/log/probe.log" 2>&1; then
	bail "clang with libFuzzer is needed (apt-get install clang libclang-rt-14-dev)"
fi
if ! GNUTLS_CFLAGS=$(pkg-config --cflags gnutls 2>/dev/null) ||
	! GNUTLS_LIBS=$(pkg-config --libs gnutls 2>/dev/null); then
	bail "GnuTLS development files are needed (apt-get install libgnutls28-dev pkg-config)"
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -g -O1 -fno-omit-frame-pointer $SAN"
lib=$srcdir/src/lib
CPPFLAGS="-include $builddir/autoconfig.h -I$lib/base -I$lib/crypto -I$lib/proto -I$lib/tls"
CPPFLAGS="$CPPFLAGS -I$lib/config -I$lib/io -I$srcdir/src/daemon -I$srcdir/src/pool"

# harness : library sources under src/lib (base/wire.c, base/log.c and base/slot.c are linked into every
# one; ../daemon/X.c and ../pool/X.c are the programs' sans-I/O modules) : -max_len [: link flags]
# The config harnesses wrap open(2) so that no fuzzed path reaches the file system (config_sandbox.c);
# the TLS harnesses share tls_fixture.c (credentials made in memory, a real handshake).
CONFIG_SRCS="config/config.c config/config_secret.c config/config_client.c base/cidr.c"
CONFIG_SRCS="$CONFIG_SRCS config/toml.c config/toml_doc.c"
CONFIG_SRCS="$CONFIG_SRCS config/toml_num.c config/toml_scan.c config/toml_tree.c"
CONFIG_SRCS="$CONFIG_SRCS proto/ke_record.c proto/ke_msg.c proto/pool_proto.c"
TLS_SRCS="tls/tls.c tls/tls_creds.c proto/ke_record.c proto/ke_msg.c"
HARNESSES="
ke_frame:proto/ke_record.c proto/ke_msg.c:70000
ke_request:proto/ke_record.c proto/ke_msg.c proto/pool_proto.c:5000
ke_response:proto/ke_record.c proto/ke_msg.c:70000
ke_record:proto/ke_record.c:8192
ntp_packet:proto/ntp_packet.c:2048
nts_request:proto/ntp_packet.c proto/nts_ntp.c crypto/aead.c:2048
nts_response:proto/ntp_packet.c proto/nts_ntp.c crypto/aead.c:2048
toml:config/toml.c config/toml_doc.c config/toml_num.c config/toml_scan.c config/toml_tree.c:65536
keyset_cookie:crypto/keyset.c crypto/aead.c:512
keyset_file:crypto/keyset.c crypto/aead.c:70000
ntp_server:proto/ntp_packet.c proto/nts_ntp.c crypto/aead.c crypto/keyset.c base/cidr.c base/ratelimit.c ../daemon/ntp_server.c:2048
config_daemon:$CONFIG_SRCS config/config_daemon.c:65536:-Wl,--wrap=open
config_pool:$CONFIG_SRCS config/config_pool.c:65536:-Wl,--wrap=open
tls_server:$TLS_SRCS:20000
ke_server_conn:$TLS_SRCS proto/pool_proto.c crypto/aead.c crypto/keyset.c base/cidr.c base/ratelimit.c ../daemon/ke_server.c:20000
pool_session:$TLS_SRCS proto/pool_proto.c ../pool/session.c:20000
ke_client:$TLS_SRCS tls/ke_client.c:20000
status_http:io/status_http.c:10000:-lhttp_parser
proxy_proto:proto/proxy_proto.c:2048
"

selected() {
	[ -z "${FUZZ_ONLY:-}" ] && return 0
	for s in $FUZZ_ONLY; do [ "$s" = "$1" ] && return 0; done
	return 1
}

# Library objects: each source compiled once per run (instrumented for coverage, no fuzzer main),
# always afresh so a changed header can never leave a stale object behind.
compiled=" "
compile() { # source (relative to src/lib) -> object path on stdout
	obj=$out/obj/$(echo "$1" | sed 's|^\.\./||; s|/|_|g; s|\.c$|.o|')
	case $compiled in *" $1 "*) echo "$obj"; return 0 ;; esac
	"$CLANG" $CFLAGS -fsanitize=fuzzer-no-link $CPPFLAGS $GNUTLS_CFLAGS \
		-c "$srcdir/src/lib/$1" -o "$obj" >>"$out/log/build.log" 2>&1 || return 1
	echo "$obj"
}

list=$(echo "$HARNESSES" | while IFS=: read -r name srcs maxlen ldflags; do
	[ -n "$name" ] && selected "$name" && echo "$name"
done)
total=$(echo "$list" | grep -c .)
[ "$total" -gt 0 ] || bail "no harness selected (FUZZ_ONLY=${FUZZ_ONLY:-})"
echo "1..$total"
: >"$out/log/build.log"

k=0
fail=0
echo "$HARNESSES" | {
	while IFS=: read -r name srcs maxlen ldflags; do
		if [ -z "$name" ] || ! selected "$name"; then continue; fi
		k=$((k + 1))
		objs=
		ok=1
		for s in base/wire.c base/log.c base/slot.c $srcs; do
			o=$(compile "$s") || { ok=0; break; }
			compiled="$compiled$s "
			objs="$objs $o"
		done
		bin=$out/bin/$name
		if [ $ok = 1 ]; then
			"$CLANG" $CFLAGS -fsanitize=fuzzer $CPPFLAGS $GNUTLS_CFLAGS "$here/$name.c" $objs \
				$ldflags $GNUTLS_LIBS -lm -o "$bin" >>"$out/log/build.log" 2>&1 || ok=0
		fi
		if [ $ok = 0 ]; then
			echo "not ok $k - $name: build failed (see $out/log/build.log)"
			sed 's/^/# /' "$out/log/build.log" | tail -n 20
			fail=1
			continue
		fi

		corpus=$out/corpus/$name
		rm -rf "$corpus"
		mkdir -p "$corpus"
		[ -d "$here/corpus/$name" ] && cp "$here/corpus/$name"/* "$corpus"/ 2>/dev/null
		rm -f "$out/crashes/$name"-*
		log=$out/log/$name.log
		ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
			"$bin" -max_total_time="$seconds" -max_len="$maxlen" -timeout=10 \
			-rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix="$out/crashes/$name-" "$corpus" >"$log" 2>&1 </dev/null
		rc=$?
		runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
		if [ $rc = 0 ] && [ -n "$runs" ]; then
			echo "ok $k - $name: $runs runs, no crash"
		else
			repro=$(ls -t "$out/crashes/$name"-* 2>/dev/null | head -n 1)
			echo "not ok $k - $name: crash (reproducer saved at ${repro:-none; see $log})"
			# The sanitizer's verdict and the frames outside libFuzzer and libc.
			grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error| *#[0-9]+ )' "$log" |
				grep -Ev 'fuzzer::|__sanitizer_|libc[.-]|nptl|signal/|stdlib/|csu/| in _start|in main ' |
				head -n 20 | sed 's/^/# /'
			if [ -n "$repro" ] && [ "$(wc -c <"$repro")" -le 512 ]; then
				echo "# input (hex): $(od -An -v -tx1 "$repro" | tr -d ' \n')"
			fi
			fail=1
		fi
	done
	exit $fail
}
