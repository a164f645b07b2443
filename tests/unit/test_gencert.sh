#!/bin/sh
# TAP test of test-keys/gen-cert.sh: outputs, modes, SANs, CA reuse and refusals. Needs openssl
# and bash. POSIX sh, because the harness runs *.sh tests with $(SHELL).
set -u

top=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
script=$top/test-keys/gen-cert.sh
dir=$(mktemp -d "${TMPDIR:-/tmp}/gencert-test.XXXXXX")
trap 'rm -rf -- "$dir"' EXIT

n=0
failed=0
check() { # description command...
	local what=$1
	shift
	n=$((n + 1))
	if "$@" >/dev/null 2>&1; then
		echo "ok $n - $what"
	else
		echo "not ok $n - $what"
		failed=1
	fi
}
fails() { ! "$@"; }
mode_is() { [ "$(stat -c %a "$2")" = "$1" ]; }
has_text() { openssl x509 -in "$1" -noout -text | grep -q -- "$2"; }
count_certs() { [ "$(grep -c 'BEGIN CERTIFICATE' "$2")" = "$1" ]; }
same_file() { cmp -s "$1" "$2"; }
differs() { ! cmp -s "$1" "$2"; }

echo "1..22"
check "issues a leaf with DNS and IP names" bash "$script" --dir "$dir" srv --dns ntp.test --ip 127.0.0.2
check "leaf key is mode 0600" mode_is 600 "$dir/srv.key"
check "CA key is mode 0600" mode_is 600 "$dir/ca.key"
check "leaf verifies against ca.pem" openssl verify -CAfile "$dir/ca.pem" "$dir/srv.pem"
check "leaf file holds only the leaf" count_certs 1 "$dir/srv.pem"
check "chain file holds leaf and CA" count_certs 2 "$dir/srv.chain.pem"
check "DNS SAN present" has_text "$dir/srv.pem" "DNS:ntp.test"
check "IP SAN present" has_text "$dir/srv.pem" "IP Address:127.0.0.2"
check "serverAuth and clientAuth" has_text "$dir/srv.pem" "TLS Web Server Authentication, TLS Web Client Authentication"
check "key is ECDSA P-256" has_text "$dir/srv.pem" "NIST CURVE: P-256"
cp "$dir/ca.pem" "$dir/ca.before"
cp "$dir/srv.pem" "$dir/srv.before"
check "re-running re-issues the leaf" bash "$script" --dir "$dir" srv --dns ntp.test
check "the CA is reused" same_file "$dir/ca.pem" "$dir/ca.before"
check "the leaf is new" differs "$dir/srv.pem" "$dir/srv.before"
rm "$dir/ca.pem"
check "refuses to overwrite a CA key without --force-ca" fails bash "$script" --dir "$dir" x
check "--force-ca makes a new CA" bash "$script" --dir "$dir" --force-ca x
check "new leaf verifies against the new CA" openssl verify -CAfile "$dir/ca.pem" "$dir/x.pem"
check "rejects a bad IP address" fails bash "$script" --dir "$dir" y --ip 300.1.1.1
check "rejects --days beyond 825" fails bash "$script" --dir "$dir" --days 900 y
check "rejects an unknown option" fails bash "$script" --dir "$dir" --frobnicate y
check "rejects a missing NAME" fails bash "$script" --dir "$dir"
check "rejects a NAME with a slash" fails bash "$script" --dir "$dir" ../y
check "--help succeeds" bash "$script" --help
exit $failed
