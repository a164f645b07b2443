#!/bin/sh
# make install (into a staging root, DESTDIR) installs the programs, hardened systemd units for
# both daemons, the sysusers.d file that creates their account, the example configurations and
# the manual pages; the units' Type= matches the build's readiness; systemd-analyze verify
# passes on both units (pointed at this build's programs, since verify checks that ExecStart
# exists), and fails on a unit whose program does not exist, so its silence means something.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init units
plan 17

command -v systemd-analyze >/dev/null || bail_out "systemd-analyze (package systemd) is missing"
R="$T/root"
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$TOP_BUILDDIR" install DESTDIR="$R" \
	>"$T/install.log" 2>&1; then
	ok "make install DESTDIR=... succeeds"
else
	bail_out "make install failed: $(tail -20 "$T/install.log")"
fi
find "$R" -type f >"$T/files"
for f in bin/ntp-daemon bin/nts-pool-ke bin/ntp-ctl lib/systemd/system/ntp-daemon.service \
	lib/systemd/system/nts-pool-ke.service lib/sysusers.d/ntspool.conf \
	share/man/man8/ntp-daemon.8 share/man/man5/ntp.toml.5; do
	if grep -q "/$f\$" "$T/files"; then
		ok "installed: $f"
	else
		not_ok "installed: $f" "$(cat "$T/files")"
	fi
done
if grep -q '/examples/ntp.toml$' "$T/files" && grep -q '/examples/pool.toml$' "$T/files"; then
	ok "installed: the example configurations"
else
	not_ok "installed: the example configurations" "$(cat "$T/files")"
fi
expect "sysusers.d: creates the ntspool account" \
	"$(grep -v '^#' "$(grep '/ntspool.conf$' "$T/files")" | awk '{ print $1, $2 }')" "u ntspool"

unit_of() {
	grep "/lib/systemd/system/$1\$" "$T/files"
}
d_unit=$(unit_of ntp-daemon.service)
p_unit=$(unit_of nts-pool-ke.service)
missing=""
for key in User=ntspool NoNewPrivileges=yes ProtectSystem=strict StateDirectory=ntp-daemon \
	CapabilityBoundingSet= RuntimeDirectory=ntp-daemon; do
	grep -q "^$key" "$d_unit" || missing="$missing $key"
done
for key in User=ntspool NoNewPrivileges=yes ProtectSystem=strict CapabilityBoundingSet= \
	ProtectClock=yes; do
	grep -q "^$key" "$p_unit" || missing="$missing nts-pool-ke:$key"
done
expect "units: the hardening the deployment documents" "$missing" "" "$(cat "$d_unit")"
# Type=notify only where the programs send READY=1 (notify.sh), else systemd would wait for it.
if grep -q '^#define HAVE_LIBSYSTEMD 1' "$TOP_BUILDDIR/autoconfig.h"; then
	want_type=notify
else
	want_type=simple
fi
expect "units: Type=$want_type, as this build tells systemd of its readiness, from the main process" \
	"$(grep -h '^Type=\|^NotifyAccess=' "$d_unit" "$p_unit" | tr '\n' ' ')" \
	"Type=$want_type NotifyAccess=main Type=$want_type NotifyAccess=main "
case $(sed -n 's/^ExecStart=//p' "$d_unit") in
*/bin/ntp-daemon\ -c\ */ntspool/ntp.toml) ok "ntp-daemon.service: the installed program and config" ;;
*) not_ok "ntp-daemon.service: the installed program and config" "$(grep Exec "$d_unit")" ;;
esac

# verify checks that the program exists: the same units, pointed at this build's programs.
point() {
	sed -e "s|^ExecStart=[^ ]*/\\([a-z-]*\\) |ExecStart=$TOP_BUILDDIR/\\1 |" "$1" >"$T/$2"
}
point "$d_unit" ntp-daemon.service
point "$p_unit" nts-pool-ke.service
for u in ntp-daemon.service nts-pool-ke.service; do
	out=$(timeout 60 systemd-analyze verify --man=no "$T/$u" 2>&1) && rc=0 || rc=$?
	expect "systemd-analyze verify $u: clean (exit status, output)" "$rc:$out" "0:"
done
sed -e "s|^ExecStart=[^ ]*|ExecStart=$T/no-such-program|" "$T/ntp-daemon.service" \
	>"$T/broken.service"
if timeout 60 systemd-analyze verify --man=no "$T/broken.service" >/dev/null 2>&1; then
	not_ok "systemd-analyze verify refuses a unit whose program is missing"
else
	ok "systemd-analyze verify refuses a unit whose program is missing"
fi
