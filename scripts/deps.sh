#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those that are missing: libraries and
# tools. Peer daemons (chrony, haproxy) are never installed as packages, which would enable
# their services: scripts/peers.sh unpacks them into a scratch directory, and only the shared
# libraries they link against are installed here.
# Usage: scripts/deps.sh [build|test|demo|bench]   (each includes build)
set -euo pipefail

build_pkgs=(gcc make autoconf automake libtool pkg-config libsystemd-dev
	libgnutls28-dev libuv1-dev libjansson-dev libhttp-parser-dev libmaxminddb-dev)
# What chronyd 4.3 links against (libgnutls30 comes with libgnutls28-dev).
chrony_libs=(libcap2 libedit2 libnettle8 libseccomp2)
# What haproxy 2.6 links against (scripts/peers.sh unpacks it for the scale-out tests).
haproxy_libs=(libcrypt1 libssl3 liblua5.3-0 libsystemd0 libpcre2-8-0 libopentracing-c-wrapper0)
# systemd-analyze checks the units (units.sh), readelf the hardened binaries (hardening.sh),
# setpriv and unshare start the daemons without privileges (privsep.sh).
test_pkgs=(libcriterion-dev libcjson-dev gnutls-bin openssl clang libclang-rt-14-dev
	libmaxmind-db-writer-perl systemd binutils util-linux
	"${chrony_libs[@]}" "${haproxy_libs[@]}")
demo_pkgs=(openssl libcjson-dev "${chrony_libs[@]}")
bench_pkgs=(openssl jq iproute2 util-linux "${chrony_libs[@]}")

case "${1:-test}" in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
demo) want=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
*) echo "usage: $0 [build|test|demo|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[[ $status == *"install ok installed"* ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "installing: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
