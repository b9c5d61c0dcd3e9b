# Build the VHD metadata fuzz target and run it briefly (FUZZ_SECONDS,
# default 20). With clang: libFuzzer + ASan + UBSan, coverage guided. Without
# clang: the target's standalone driver (random mutations of the seeds)
# under gcc + ASan. Seeds are small images made with tapd-vhd. Any crash or
# sanitizer report fails; libFuzzer's crash input is kept in
# $TOP_BUILDDIR/tests/fuzz/ for replay (./fuzz-vhd-meta FILE).
# Registered in make check as an integration test; runs alone too:
#   bash tests/fuzz/run-vhd-fuzz.sh
set -eu

TOP_SRCDIR=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
TOP_BUILDDIR=${TOP_BUILDDIR:-$TOP_SRCDIR}
SECONDS_TO_RUN=${FUZZ_SECONDS:-20}
TOOL=$TOP_BUILDDIR/tools/tapd-vhd
T=$(mktemp -d /tmp/tapd-vhd-fuzz.XXXXXX)
trap 'rm -rf "$T"' EXIT

log() { printf 'run-vhd-fuzz: %s\n' "$*" >&2; }

[ -x "$TOOL" ] || { log "SKIP: $TOOL not built"; exit 77; }

src="$TOP_SRCDIR/tests/fuzz/fuzz-vhd-meta.c $TOP_SRCDIR/src/formats/vhd/format.c \
	$TOP_SRCDIR/src/formats/vhd/locator.c $TOP_SRCDIR/src/formats/vhd/meta.c $TOP_SRCDIR/src/lib/util.c"
flags="-std=gnu11 -D_GNU_SOURCE -g -O1 -I$TOP_SRCDIR/src -fno-omit-frame-pointer"

# Seeds: each kind of image, small blocks so that whole files stay small.
mkdir -p "$T/corpus"
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

if command -v clang >/dev/null 2>&1 &&
	clang $flags -DFUZZ_LIBFUZZER -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined $src -o "$T/fuzz-vhd-meta" 2>"$T/cc.log"; then
	log "libFuzzer target built with clang; running ${SECONDS_TO_RUN}s"
	mkdir -p "$TOP_BUILDDIR/tests/fuzz"
	if ! "$T/fuzz-vhd-meta" -max_total_time="$SECONDS_TO_RUN" -max_len=300000 \
		-artifact_prefix="$TOP_BUILDDIR/tests/fuzz/" -print_final_stats=1 \
		"$T/corpus" >"$T/fuzz.log" 2>&1; then
		tail -n 60 "$T/fuzz.log" >&2
		log "FAIL: the fuzzer found a crash (input kept in $TOP_BUILDDIR/tests/fuzz/)"
		exit 1
	fi
	grep -E 'stat::number_of_executed_units|Done' "$T/fuzz.log" >&2 || true
	exit 0
fi

[ -s "$T/cc.log" ] && log "clang libFuzzer build failed, using the standalone driver"
gcc $flags -Wall -Wextra -Werror -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined $src -o "$T/fuzz-vhd-meta"
log "standalone driver built with gcc; running ${SECONDS_TO_RUN}s"
"$T/fuzz-vhd-meta" "$SECONDS_TO_RUN" "$T"/corpus/*
