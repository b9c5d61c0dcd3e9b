# Fuzz the NBD server (tests/fuzz/fuzz-nbd-server.c: the real core, pools
# and NBD export in one process, each input one client's byte stream)
# briefly (FUZZ_SECONDS, default 20); how it is built and run:
# tests/fuzz/lib.sh. Seeds are well-formed sessions written below.
# Registered in make check as an integration test; runs alone too:
#   bash tests/fuzz/run-nbd-fuzz.sh
. "$(dirname "$0")/lib.sh"

command -v pkg-config >/dev/null || { log "SKIP: pkg-config missing"; exit 77; }
# Every daemon source but main.
src="$TOP_SRCDIR/tests/fuzz/fuzz-nbd-server.c $(find "$TOP_SRCDIR/src" -name '*.c' ! -path "$TOP_SRCDIR/src/tapd.c" | sort | tr '\n' ' ')"
libs="$(pkg-config --libs libevent libsystemd gnutls fuse3 liburing) -laio -lpthread"
FUZZ_FLAGS="$FUZZ_FLAGS $(pkg-config --cflags libevent libsystemd gnutls fuse3 liburing)"

/usr/bin/python3 - "$T/corpus" <<'PY'
import struct, sys, os
out = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
def name(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b
def go(export, infos=(3, 1)):
    return opt(7, name(export) + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos))
def meta(o, export, queries):
    q = b"".join(struct.pack(">I", len(x)) + x for x in (s.encode() for s in queries))
    return opt(o, name(export) + struct.pack(">I", len(queries)) + q)
def req(t, off, ln, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, t, cookie, off, ln) + payload
flags = struct.pack(">I", 3)  # FIXED_NEWSTYLE | NO_ZEROES
seeds = {
    "session-structured": flags + opt(8) + meta(10, "r", ["base:allocation"]) + go("r")
        + req(1, 0, 4096, payload=b"\x5a" * 4096) + req(0, 0, 4096, cookie=2)
        + req(7, 0, 1 << 20, cookie=3) + req(4, 8192, 4096, cookie=4)
        + req(6, 16384, 4096, cookie=5) + req(3, 0, 0, cookie=6) + req(5, 0, 4096, cookie=7)
        + req(0, 0, 65536, cookie=8) + req(2, 0, 0),
    "session-simple": flags + go("n") + req(0, 0, 512) + req(1, 512, 512, 1, 2, b"\1" * 512)
        + req(0, 1 << 20, 131072, cookie=3) + req(2, 0, 0),
    "list-info": flags + opt(3) + opt(6, name("n") + struct.pack(">H", 0))
        + meta(9, "r", []) + opt(99, b"junk") + opt(2),
    "export-name": flags + opt(1, b"r") + req(0, 0, 4096) + req(1, 4094, 4, 1, 2, b"abcd") + req(2, 0, 0),
    "bad-magic": flags + b"\0" * 16 + req(0, 0, 1),
}
for k, v in seeds.items():
    # Byte 0 picks the piece size the harness writes in.
    for piece in (0, 255):
        open(os.path.join(out, "%s-%d" % (k, piece)), "wb").write(bytes([piece]) + v)
PY

fuzz_run fuzz-nbd-server 65536 "$src" "$libs"
