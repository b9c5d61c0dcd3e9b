# Shared by the tests/fuzz/run-*.sh scripts: build one fuzz target and run
# it for FUZZ_SECONDS (default 20) over the corpus in $T/corpus. With clang:
# libFuzzer + ASan + UBSan, coverage guided; without clang: the target's
# standalone driver (random mutations of the seeds) under gcc + ASan. Any
# crash or sanitizer report fails; libFuzzer's crash input is kept in
# $TOP_BUILDDIR/tests/fuzz/ for replay (./fuzz-NAME FILE). The number of
# inputs run goes to $TOP_BUILDDIR/tests/fuzz/NAME.last for the record
# (tests/fuzz/README.md). `make fuzz` runs every target for 10 minutes.
# shellcheck shell=bash
set -eu

TOP_SRCDIR=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
TOP_BUILDDIR=${TOP_BUILDDIR:-$TOP_SRCDIR}
SECONDS_TO_RUN=${FUZZ_SECONDS:-20}
FUZZ_NAME=$(basename "$0" .sh)
FUZZ_NAME=${FUZZ_NAME#run-}
T=$(mktemp -d "/tmp/tapd-$FUZZ_NAME.XXXXXX")
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/corpus" "$TOP_BUILDDIR/tests/fuzz"

log() { printf '%s: %s\n' "$FUZZ_NAME" "$*" >&2; }

FUZZ_FLAGS="-std=gnu11 -D_GNU_SOURCE -g -O1 -I$TOP_SRCDIR/src -fno-omit-frame-pointer"

# fuzz_run TARGET MAX_LEN "SOURCES" "LIBS": build $T/TARGET from SOURCES
# (the first is the harness) and run it over $T/corpus.
fuzz_run() {
	local target=$1 max_len=$2 src=$3 libs=$4 out=$TOP_BUILDDIR/tests/fuzz

	# shellcheck disable=SC2086
	if command -v clang >/dev/null 2>&1 &&
		clang $FUZZ_FLAGS -DFUZZ_LIBFUZZER -fsanitize=fuzzer,address,undefined \
			-fno-sanitize-recover=undefined $src $libs -o "$T/$target" 2>"$T/cc.log"; then
		log "libFuzzer target built with clang; running ${SECONDS_TO_RUN}s"
		if ! ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$T/$target" \
			-max_total_time="$SECONDS_TO_RUN" -max_len="$max_len" -timeout=10 \
			-artifact_prefix="$out/" -print_final_stats=1 "$T/corpus" >"$T/fuzz.log" 2>&1; then
			tail -n 60 "$T/fuzz.log" >&2
			log "FAIL: the fuzzer found a crash (input kept in $out/)"
			exit 1
		fi
		grep -E 'stat::number_of_executed_units|Done' "$T/fuzz.log" >&2 || true
		sed -n 's/^stat::number_of_executed_units: *//p' "$T/fuzz.log" >"$out/$target.last"
		return 0
	fi
	[ -s "$T/cc.log" ] && { cat "$T/cc.log" >&2; log "clang libFuzzer build failed, using the standalone driver"; }
	# shellcheck disable=SC2086
	gcc $FUZZ_FLAGS -Wall -Wextra -Werror -fsanitize=address,undefined \
		-fno-sanitize-recover=undefined $src $libs -o "$T/$target"
	log "standalone driver built with gcc; running ${SECONDS_TO_RUN}s"
	"$T/$target" "$SECONDS_TO_RUN" "$T"/corpus/* | tee "$T/fuzz.log" >&2
	sed -n 's/.*: \([0-9]*\) inputs.*/\1/p' "$T/fuzz.log" >"$out/$target.last"
}
