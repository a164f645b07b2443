#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what is missing, bootstraps autotools,
# configures (with ASan and UBSan, so every test also checks memory safety), builds and runs every
# test, then prints one line "N passed, N failed" summing every test case that ran.
# Extra arguments go to configure (CI passes --enable-werror).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
case ${1:-} in
-h | --help)
	cat <<'HELP'
Usage: scripts/test.sh [CONFIGURE-OPTION...]

Installs the missing Debian packages (libraries and tools; chrony and promtool are unpacked from
their packages into the build directory, never installed), bootstraps autotools, configures with AddressSanitizer
and UndefinedBehaviorSanitizer, builds, runs every test, and ends with one line
"N passed, N failed, N skipped" summing every test case; the exit status is non-zero on any
failure, a build failure included. Options are passed to configure (CI: --enable-werror).
BUILD_DIR (default build/check) is the build directory.
HELP
	exit 0
	;;
esac
cd "$top"

scripts/deps.sh test
[[ -x configure ]] || autoreconf -fi

build=${BUILD_DIR:-$top/build/check}
mkdir -p "$build"
cd "$build"
if [[ ! -f Makefile ]] || [[ "$*" != "$(cat .configure-args 2>/dev/null)" ]]; then
	"$top/configure" -q --enable-asan --enable-ubsan "$@"
	printf '%s' "$*" >.configure-args
fi

# chrony, the tests' real peer, unpacked from its package into the build directory, never
# installed. Without it the tests that need it fail and say why.
if CHRONYD=$(PEERS_DIR=$(pwd)/peers "$top/scripts/peers.sh" chrony); then
	export CHRONYD
else
	echo "test.sh: chrony could not be fetched; the tests that run it will fail" >&2
fi
# promtool, which checks every /metrics, from the prometheus package the same way.
if PROMTOOL=$(PEERS_DIR=$(pwd)/peers "$top/scripts/peers.sh" prometheus); then
	export PROMTOOL
else
	echo "test.sh: promtool could not be fetched; the metrics test will fail" >&2
fi
# HAProxy, the load balancer of the scale-out test, the same way.
if HAPROXY=$(PEERS_DIR=$(pwd)/peers "$top/scripts/peers.sh" haproxy); then
	export HAPROXY
else
	echo "test.sh: haproxy could not be fetched; the scale-out test will fail" >&2
fi
# ntpd-rs's package (Debian trixie), whose shipped configuration the ntpd-rs tests read.
if NTPDRS_BIN=$(PEERS_DIR=$(pwd)/peers "$top/scripts/peers.sh" ntpd-rs); then
	export NTPDRS_ROOT=${NTPDRS_BIN%/usr/bin/ntp-daemon}
else
	echo "test.sh: ntpd-rs could not be fetched; the ntpd-rs tests will fail" >&2
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
jobs=$(nproc 2>/dev/null || echo 2)
status=0
make -j"$jobs" >/dev/null || { make 2>&1 | tail -40; echo "0 passed, 1 failed"; exit 1; }
make -j"$jobs" check || status=$?

# Every .trs file is one test program; each :test-result: line is one test case.
passed=0 failed=0 skipped=0
while IFS= read -r line; do
	case $line in
	*PASS | *XFAIL) passed=$((passed + 1)) ;;
	*SKIP) skipped=$((skipped + 1)) ;;
	*) failed=$((failed + 1)) ;;
	esac
done < <(find . -name '*.trs' -exec grep -h '^:test-result:' {} + | awk '{print $2}')

if [[ $status -ne 0 ]]; then
	for log in $(grep -l -E '^:test-result: (FAIL|ERROR|XPASS)' $(find . -name '*.trs') | sed 's/\.trs$/.log/'); do
		echo "=== $log"
		tail -60 "$log"
	done
	[[ $failed -gt 0 ]] || failed=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
[[ $status -eq 0 && $failed -eq 0 ]]
