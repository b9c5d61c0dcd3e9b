# Fuzz the VHD metadata parser (tests/fuzz/fuzz-vhd-meta.c) briefly
# (FUZZ_SECONDS, default 20); how it is built and run: tests/fuzz/lib.sh.
# Seeds are small images made with tapd-vhd. Registered in make check as an
# integration test; runs alone too: bash tests/fuzz/run-vhd-fuzz.sh
. "$(dirname "$0")/lib.sh"
TOOL=$TOP_BUILDDIR/tools/tapd-vhd

[ -x "$TOOL" ] || { log "SKIP: $TOOL not built"; exit 77; }

src="$TOP_SRCDIR/tests/fuzz/fuzz-vhd-meta.c $TOP_SRCDIR/src/formats/vhd/format.c \
	$TOP_SRCDIR/src/formats/vhd/locator.c $TOP_SRCDIR/src/formats/vhd/meta.c $TOP_SRCDIR/src/lib/util.c"

# Seeds: each kind of image, small blocks so that whole files stay small.
"$TOOL" create --block-size 64K "$T/dyn.vhd" 1M
"$TOOL" create --fixed "$T/fixed.vhd" 4K
"$TOOL" create --block-size 64K --max-size 4M "$T/roomy.vhd" 1M
"$TOOL" snapshot "$T/child.vhd" "$T/dyn.vhd"
if command -v qemu-io >/dev/null 2>&1; then
	qemu-io -f vpc -c 'write -P 0x5a 70k 4k' "$T/dyn.vhd" >/dev/null
fi
for f in dyn fixed roomy child; do
	# Byte 0 is the harness's mode: 3 = fix checksums, report problems.
	{ printf '\003'; cat "$T/$f.vhd"; } >"$T/corpus/$f"
done

fuzz_run fuzz-vhd-meta 300000 "$src" ""
