#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, makes a private test CA in a scratch
# directory and runs one NTS pool exchange (client -> pool -> time source, then NTS-protected NTP
# from the client to the time source), printing each step.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scripts/deps.sh demo
[[ -x configure ]] || autoreconf -fi
build=${BUILD_DIR:-$top/build/demo}
mkdir -p "$build"
cd "$build"
[[ -f Makefile ]] || "$top/configure" -q
make -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ntspool-demo.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
echo "== test CA and certificates (test-keys/gen-cert.sh) in $scratch"
"$top/test-keys/gen-cert.sh" --dir "$scratch" pool --dns pool.test
"$top/test-keys/gen-cert.sh" --dir "$scratch" time-a --ip 127.0.0.2
echo
echo "== one NTS pool exchange over TLS 1.3 in memory"
"$build/tests/pool-flow" "$scratch"
