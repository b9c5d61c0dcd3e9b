#!/usr/bin/env bash
# Dependencies run one way (docs/architecture.md): tools/check-layers finds
# no include or call up a layer and no circle of files in this tree and its
# build, and it does catch each kind of violation planted in a copy.
. "$(dirname "$0")/lib.sh"

need nm cc
CHECK="/usr/bin/python3 $TOP_SRCDIR/tools/check-layers"
[ -d "$TOP_BUILDDIR/src/core" ] || fail "no objects in $TOP_BUILDDIR/src"

# --- the tree as it is
out=$($CHECK --objects "$TOP_BUILDDIR" 2>&1) || fail "check-layers: $out"
log "$out"

# --- an include up a layer, a sibling's internal.h
cp -r "$TOP_SRCDIR/src" "$T/src"
printf '#include "core/tap.h"\n' >>"$T/src/lib/log.c"
printf '#include "exports/nbd/internal.h"\n' >>"$T/src/control/bus/bus.c"
rc=0; out=$($CHECK --src "$T/src" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "planted includes: exit $rc, want 1: $out"
echo "$out" | grep -q "src/lib/log.c:.*includes core/tap.h, a higher layer" ||
	fail "upward include not reported: $out"
echo "$out" | grep -q "src/control/bus/bus.c:.*exports/nbd/internal.h, private to" ||
	fail "foreign internal.h not reported: $out"

# --- a module folder nobody listed; one export using another
cp -r "$TOP_SRCDIR/src" "$T/src3"
mkdir "$T/src3/exports/stray"
printf '#include "core/tap.h"\n' >"$T/src3/exports/stray/a.c"
printf '#include "exports/nbd/server.h"\n' >>"$T/src3/exports/fuse/io.c"
rc=0; out=$($CHECK --src "$T/src3" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "planted folder: exit $rc, want 1: $out"
echo "$out" | grep -q "src/exports/stray/: a folder not in tools/check-layers' MODULES table" ||
	fail "unlisted folder not reported: $out"
echo "$out" | grep -q "src3/exports/fuse/io.c:.*exports/nbd/server.h from the sibling module" ||
	fail "an export using another not reported: $out"

# --- a circle of two objects, and a call up a layer
mkdir -p "$T/b/src/core" "$T/b/src/lib"
printf 'void b(void); void a(void) { b(); }\n' >"$T/a.c"
printf 'void a(void); void up(void); void b(void) { a(); }\n' >"$T/b.c"
printf 'void a(void); void low(void) { a(); }\n' >"$T/low.c"
cp -r "$TOP_SRCDIR/src" "$T/src2"
cp "$T/a.c" "$T/b.c" "$T/src2/core/"
cp "$T/low.c" "$T/src2/lib/"
cc -c -o "$T/b/src/core/a.o" "$T/a.c"
cc -c -o "$T/b/src/core/b.o" "$T/b.c"
cc -c -o "$T/b/src/lib/low.o" "$T/low.c"
# An object without its source is a leftover of an older tree: not counted.
cc -c -o "$T/b/src/lib/gone.o" "$T/low.c"
rc=0; out=$($CHECK --src "$T/src2" --objects "$T/b" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "planted objects: exit $rc, want 1: $out"
echo "$out" | grep -q "circle of files: src/core/a.c, src/core/b.c" || fail "circle not reported: $out"
echo "$out" | grep -q "src/lib/low.c calls up into src/core/a.c (core): a" ||
	fail "upward call not reported: $out"
echo "$out" | grep -q "gone.c" && fail "a leftover object was counted: $out"
log "planted violations reported"
