#!/bin/sh
# Runs tests/toml-decode over the corpus, as TAP: every valid/NAME.toml must decode to the JSON in
# valid/NAME.json (compared as JSON values), every invalid/NAME.toml must be refused with a
# "<stdin>:LINE:COL: message" error.
top_srcdir=${TOP_SRCDIR:-$(dirname "$0")/../..}
top_builddir=${TOP_BUILDDIR:-.}
decode=$top_builddir/tests/toml-decode
corpus=$top_srcdir/tests/toml

total=$(ls "$corpus"/valid/*.toml "$corpus"/invalid/*.toml | wc -l)
echo "1..$total"
n=0
for f in "$corpus"/valid/*.toml; do
	n=$((n + 1))
	name=valid/$(basename "$f" .toml)
	if out=$("$decode" --expect "${f%.toml}.json" < "$f" 2>&1); then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name"
		printf '%s\n' "$out" | sed 's/^/# /'
	fi
done
for f in "$corpus"/invalid/*.toml; do
	n=$((n + 1))
	name=invalid/$(basename "$f" .toml)
	out=$("$decode" < "$f" 2>&1)
	status=$?
	if [ "$status" -eq 1 ] && printf '%s' "$out" | grep -q '^<stdin>:[0-9]*:[0-9]*: '; then
		echo "ok $n - $name"
		printf '# %s\n' "$out"
	else
		echo "not ok $n - $name (exit $status)"
		printf '%s\n' "$out" | sed 's/^/# /'
	fi
done
