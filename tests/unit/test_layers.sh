#!/bin/sh
# The layering of src/lib (doc/architecture.md): every quoted #include of a library module names a
# header of its own folder or of a layer it may use, only io/ includes <uv.h>, and no module sits
# outside a layer folder. The build already refuses a violation (each layer compiles with its own
# include paths); this check says which file broke which rule, and guards the paths themselves.
set -eu
lib=$TOP_SRCDIR/src/lib

# allowed LAYER: the folders a module of LAYER may include from (itself first).
allowed() {
	case $1 in
	base) echo "base" ;;
	crypto) echo "crypto base" ;;
	proto) echo "proto crypto base" ;;
	tls) echo "tls proto crypto base" ;;
	config) echo "config proto crypto base" ;;
	io) echo "io tls config proto crypto base" ;;
	*) echo "" ;;
	esac
}

layers="base crypto proto tls config io"
echo "1..3"

bad=""
for layer in $layers; do
	ok_dirs=$(allowed "$layer")
	for f in "$lib/$layer"/*.c "$lib/$layer"/*.h; do
		[ -e "$f" ] || continue
		for inc in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
			found=""
			for d in $ok_dirs; do
				if [ -e "$lib/$d/$inc" ]; then
					found=$d
					break
				fi
			done
			if [ -z "$found" ]; then
				owner=""
				for d in $layers; do
					[ -e "$lib/$d/$inc" ] && owner=$d
				done
				bad="$bad
# ${f#"$lib"/} includes $inc (${owner:-no library layer}), not in: $ok_dirs"
			fi
		done
	done
done
if [ -z "$bad" ]; then
	echo "ok 1 - every library include stays within its layer or the layers below"
else
	echo "not ok 1 - every library include stays within its layer or the layers below$bad"
fi

uv=$(grep -l '#include <uv.h>' "$lib"/*/*.c "$lib"/*/*.h 2>/dev/null | grep -v "^$lib/io/" || true)
if [ -z "$uv" ]; then
	echo "ok 2 - only io/ includes <uv.h>"
else
	echo "not ok 2 - only io/ includes <uv.h>"
	echo "$uv" | sed 's/^/# /'
fi

stray=$(find "$lib" -mindepth 1 -maxdepth 1 ! -type d -print)
for d in $(find "$lib" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'); do
	case " $layers " in
	*" $d "*) ;;
	*) stray="$stray $lib/$d" ;;
	esac
done
if [ -z "$stray" ]; then
	echo "ok 3 - src/lib holds only the layer folders"
else
	echo "not ok 3 - src/lib holds only the layer folders"
	echo "# outside a layer: $stray"
fi
