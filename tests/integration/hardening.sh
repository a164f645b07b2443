#!/bin/sh
# The installed programs are built hardened (configure's default): position-independent, with
# full RELRO (relocations read-only after start, bound at once), the stack protector, and,
# when the build optimises without AddressSanitizer, _FORTIFY_SOURCE's checked calls. What
# configure kept is read from the Makefile, so each flag it chose is checked in the binaries.
set -eu
. "$TOP_SRCDIR/tests/integration/lib.sh"
itest_init hardening
plan 15

command -v readelf >/dev/null || bail_out "readelf (binutils) is missing"
hc=$(sed -n 's/^HARDEN_CFLAGS = //p' "$TOP_BUILDDIR/Makefile")
hl=$(sed -n 's/^HARDEN_LDFLAGS = //p' "$TOP_BUILDDIR/Makefile")
case "$hl" in
*-pie*) ;;
*) bail_out "configured with --disable-hardening (HARDEN_LDFLAGS is '$hl')" ;;
esac

for prog in ntp-daemon nts-pool-ke ntp-ctl; do
	bin="$TOP_BUILDDIR/$prog"
	[ -x "$bin" ] || bail_out "$bin not built"
	expect "$prog: position-independent executable" \
		"$(readelf -hW "$bin" | sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p')" DYN
	if readelf -lW "$bin" | grep -q GNU_RELRO; then
		ok "$prog: a RELRO segment"
	else
		not_ok "$prog: a RELRO segment" "$(readelf -lW "$bin" | tail -20)"
	fi
	if readelf -dW "$bin" | grep -Eq 'BIND_NOW|Flags:.* NOW'; then
		ok "$prog: bound now (full RELRO)"
	else
		not_ok "$prog: bound now (full RELRO)" "$(readelf -dW "$bin" | grep -i flags)"
	fi
	syms=$(readelf --dyn-syms -W "$bin")
	if printf '%s\n' "$syms" | grep -q '__stack_chk_fail'; then
		ok "$prog: stack protector"
	else
		not_ok "$prog: stack protector" "HARDEN_CFLAGS: $hc"
	fi
	case "$hc" in
	*_FORTIFY_SOURCE=*)
		if printf '%s\n' "$syms" | grep -Eq '__[a-z]+_chk@'; then
			ok "$prog: _FORTIFY_SOURCE's checked calls"
		else
			not_ok "$prog: _FORTIFY_SOURCE's checked calls" "HARDEN_CFLAGS: $hc"
		fi
		;;
	*)
		# Not optimised, or AddressSanitizer (which checks the same calls itself): configure
		# left it out, and the binary must not claim it either.
		if ! printf '%s\n' "$syms" | grep -Eq '__(memcpy|strcpy|sprintf)_chk@'; then
			ok "$prog: no _FORTIFY_SOURCE in this build, as configured ($hc)"
		else
			not_ok "$prog: no _FORTIFY_SOURCE in this build" "HARDEN_CFLAGS: $hc"
		fi
		;;
	esac
done
