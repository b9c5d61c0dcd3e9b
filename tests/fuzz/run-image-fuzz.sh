# Fuzz image strings and their options (tests/fuzz/fuzz-image-spec.c)
# briefly (FUZZ_SECONDS, default 20); how it is built and run:
# tests/fuzz/lib.sh. Registered in make check as an integration test; runs
# alone too: bash tests/fuzz/run-image-fuzz.sh
. "$(dirname "$0")/lib.sh"

command -v pkg-config >/dev/null || { log "SKIP: pkg-config missing"; exit 77; }
# Every daemon source but main (the drivers need the lib and formats).
src="$TOP_SRCDIR/tests/fuzz/fuzz-image-spec.c $(find "$TOP_SRCDIR/src" -name '*.c' ! -path "$TOP_SRCDIR/src/tapd.c" | sort | tr '\n' ' ')"
libs="$(pkg-config --libs libevent libsystemd gnutls fuse3 liburing) -laio -lpthread"
FUZZ_FLAGS="$FUZZ_FLAGS $(pkg-config --cflags libevent libsystemd gnutls fuse3 liburing)"

i=0
for s in 'null:1M' 'ram:64K' 'error,errno=ENOSPC,ops=write+read,rate=50%:ram:1M' \
	'error,errno=EIO:error,delay-ms=0,rate=0:null:1G' 'raw,lock=off:/x' \
	'error,errno=5,ops=flush+trim+zero+block-status:null:4K' 'vhd:/a.vhd' 'tap:t0'; do
	printf '%s' "$s" >"$T/corpus/seed$i"
	i=$((i + 1))
done

fuzz_run fuzz-image-spec 4096 "$src" "$libs"
