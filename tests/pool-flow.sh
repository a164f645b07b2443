#!/bin/sh
# TAP wrapper: a fresh test CA, then the in-memory pool exchange (tests/pool-flow.c).
dir=$(mktemp -d "${TMPDIR:-/tmp}/pool-flow.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
gen="$TOP_SRCDIR/test-keys/gen-cert.sh"
echo "1..2"
if bash "$gen" --dir "$dir" pool --dns pool.test >/dev/null &&
	bash "$gen" --dir "$dir" time-a --ip 127.0.0.2 >/dev/null; then
	echo "ok 1 - test CA, pool and time source certificates"
else
	echo "not ok 1 - test CA, pool and time source certificates"
fi
if out=$("$TOP_BUILDDIR/tests/pool-flow" "$dir" 2>&1); then
	echo "ok 2 - client, pool and time source agree; NTS-protected NTP authenticated"
else
	echo "not ok 2 - client, pool and time source agree; NTS-protected NTP authenticated"
	printf '%s\n' "$out" | sed 's/^/# /'
fi
