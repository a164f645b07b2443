#!/usr/bin/env bash
# Peer daemons for the tests, the demo and the benchmarks, taken from their Debian packages and
# unpacked into a scratch directory: downloaded (apt-get download) and extracted (dpkg -x), never
# installed, so no service is enabled and nothing of the host changes. Their shared libraries are
# ordinary packages that scripts/deps.sh installs.
# Usage: scripts/peers.sh NAME     prints the path of NAME's binary (chrony: chronyd;
#                                  prometheus: promtool, to check our /metrics; haproxy: the
#                                  load balancer in front of several brokers; ntpd-rs:
#                                  ntp-daemon of ntpd-rs, from Debian trixie, whose shipped
#                                  configuration the compatibility tests read)
# The scratch directory is $PEERS_DIR (default build/peers in the source tree); an unpacked peer
# is reused.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${PEERS_DIR:-$top/build/peers}

usage() {
	echo "usage: $0 chrony|prometheus|haproxy|ntpd-rs" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
case $1 in
chrony) pkg=chrony bin=usr/sbin/chronyd ;;
prometheus) pkg=prometheus bin=usr/bin/promtool ;;
haproxy) pkg=haproxy bin=usr/sbin/haproxy ;;
ntpd-rs) pkg=ntpd-rs bin=usr/bin/ntp-daemon suite=trixie ;;
-h | --help)
	sed -n '2,12s/^# \{0,1\}//p' "$0"
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

apt_opts=()
if [[ -n ${suite:-} ]]; then
	# A package of another release: a private apt configuration of its own (sources, lists,
	# cache and state under the scratch directory), pointing at the mirror the host already
	# uses, so the host's sources and package lists stay as they are.
	apt_dir=$dir/.apt-$suite
	mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/state"
	# One fetch at a time (tests run in parallel); the one that waited may find it unpacked.
	exec 9>"$apt_dir/fetch.lock"
	flock 9
	if [[ -x $dest/$bin ]]; then
		echo "$dest/$bin"
		exit 0
	fi
	: >"$apt_dir/state/status"
	mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
		awk '$2 !~ /-/ { print $1; exit }')
	[[ -n $mirror ]] || { echo "$0: no Debian mirror in the host's apt sources" >&2; exit 1; }
	echo "deb $mirror $suite main" >"$apt_dir/sources.list"
	apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State=$apt_dir/state" -o "Dir::State::lists=$apt_dir/lists"
		-o "Dir::State::status=$apt_dir/state/status" -o "Dir::Cache=$apt_dir/cache"
		-o "APT::Default-Release=$suite")
	apt-get "${apt_opts[@]}" update -qq </dev/null >&2 ||
		{ echo "$0: cannot read the $suite package lists (no network?)" >&2; exit 1; }
fi
fetch() { (cd "$tmp" && apt-get "${apt_opts[@]}" download -q "$pkg" </dev/null) >&2 2>&1; }
if ! fetch; then
	[[ -z ${suite:-} ]] || { echo "$0: cannot download the $pkg package" >&2; exit 1; }
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
