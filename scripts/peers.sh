#!/usr/bin/env bash
# Peer daemons for the tests, the demo and the benchmarks, taken from their Debian packages and
# unpacked into a scratch directory: downloaded (apt-get download) and extracted (dpkg -x), never
# installed, so no service is enabled and nothing of the host changes. Their shared libraries are
# ordinary packages that scripts/deps.sh installs.
# Usage: scripts/peers.sh NAME     prints the path of NAME's binary (chrony: chronyd;
#                                  prometheus: promtool, to check our /metrics; haproxy: the
#                                  load balancer in front of several brokers)
# The scratch directory is $PEERS_DIR (default build/peers in the source tree); an unpacked peer
# is reused.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${PEERS_DIR:-$top/build/peers}

usage() {
	echo "usage: $0 chrony|prometheus|haproxy" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
case $1 in
chrony) pkg=chrony bin=usr/sbin/chronyd ;;
prometheus) pkg=prometheus bin=usr/bin/promtool ;;
haproxy) pkg=haproxy bin=usr/sbin/haproxy ;;
-h | --help)
	sed -n '2,10s/^# \{0,1\}//p' "$0"
	exit 0
	;;
*) usage ;;
esac

dest=$dir/$pkg
if [[ -x $dest/$bin ]]; then
	echo "$dest/$bin"
	exit 0
fi

mkdir -p "$dir"
# The daemons run as nobody in the tests: every directory on the way must be searchable.
chmod 755 "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

fetch() { (cd "$tmp" && apt-get download -q "$pkg" </dev/null) >&2 2>&1; }
if ! fetch; then
	# A fresh machine may have no package lists yet.
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq </dev/null >&2
	fetch || { echo "$0: cannot download the $pkg package" >&2; exit 1; }
fi
deb=$(ls "$tmp"/"${pkg}"_*.deb)
dpkg -x "$deb" "$tmp/root"
chmod 755 "$tmp/root"
# Another run may have unpacked it meanwhile; either copy is the same package.
mv -T "$tmp/root" "$dest" 2>/dev/null || [[ -x $dest/$bin ]]
echo "$dest/$bin"
