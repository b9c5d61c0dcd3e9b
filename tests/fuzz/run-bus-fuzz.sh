# Fuzz D-Bus method argument handling (tests/fuzz/fuzz-bus.c: the real bus
# objects, core, pools and NBD export in one process, a private
# dbus-daemon, each input a short program of calls) briefly (FUZZ_SECONDS,
# default 20); how it is built and run: tests/fuzz/lib.sh. Registered in
# make check as an integration test; runs alone too:
#   bash tests/fuzz/run-bus-fuzz.sh
. "$(dirname "$0")/lib.sh"

for c in pkg-config dbus-daemon; do
	command -v $c >/dev/null || { log "SKIP: $c missing"; exit 77; }
done
# Every daemon source but main.
src="$TOP_SRCDIR/tests/fuzz/fuzz-bus.c $(find "$TOP_SRCDIR/src" -name '*.c' ! -path "$TOP_SRCDIR/src/tapd.c" | sort | tr '\n' ' ')"
libs="$(pkg-config --libs libevent libsystemd gnutls fuse3 liburing) -laio -lpthread"
FUZZ_FLAGS="$FUZZ_FLAGS $(pkg-config --cflags libevent libsystemd gnutls fuse3 liburing)"

# Seeds, in the harness's byte language (see fuzz-bus.c: target, method,
# then the arguments' bytes; strings by dictionary index): create a tap
# named t0, pause it, unpause it on another image, stats, create pool p1
# and move t0 there, set QoS, list; and the properties of a tap.
/usr/bin/python3 - "$T/corpus" <<'PY'
import os, sys
out = sys.argv[1]
NULL1M, RAM1M, T0, P1, NAME, POOL = 0, 1, 15, 17, 18, 19
seeds = {
    "create-pause-unpause": bytes([0, 0, NULL1M, 1, 0, NAME, T0,  1, 1, 0,  1, 2, 0, RAM1M,
                                   1, 3, 0,  0, 2, P1, 0, 0, 0, 0, 0, 0x20, 0, 0, 1,
                                   1, 4, 0, P1,  1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 1]),
    "properties": bytes([0, 0, RAM1M, 0,  3, 1, 1, 2,  3, 0, 1, 2, 5,  3, 3, 0,  3, 4, 0,  2, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0, 1]),
    "stack": bytes([0, 0, RAM1M, 1, 0, NAME, T0,  0, 2, P1, 0, 0, 0, 0, 0, 0x20, 0, 0, 1,
                    0, 0, 4, 2, 0, POOL, P1, 2, 2, 1]),
}
for k, v in seeds.items():
    open(os.path.join(out, k), "wb").write(v)
PY

fuzz_run fuzz-bus 512 "$src" "$libs"
