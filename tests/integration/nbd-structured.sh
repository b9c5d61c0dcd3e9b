#!/bin/bash
# Structured replies: READs of a sparse raw file come back as OFFSET_DATA
# chunks for data and OFFSET_HOLE chunks for holes, covering the range
# exactly; DF gives a single data chunk; small reads one data chunk; error
# and zero-length reads are structured too; without structured replies the
# same data arrives in simple replies.
. "$(dirname "$0")/lib.sh"
need nbdsh python3
need_libnbd

start_bus
start_tapd

# 4 MiB: data at [0, 64K) and [1M, 1M + 64K), the rest a hole.
truncate -s 4M "$T/sparse.raw"
python3 - "$T/sparse.raw" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.write(bytes(range(256)) * 256)
    f.seek(1 << 20)
    f.write(b"\x5a" * 65536)
PY
tapctl create --name sp "raw:$T/sparse.raw" >/dev/null || fail "create"

FILE=$T/sparse.raw nbdsh -u "$(nbd_uri sp)" -c '
import errno, os
data = open(os.environ["FILE"], "rb").read()
assert h.get_structured_replies_negotiated(), "structured replies not negotiated"
assert h.can_df(), "DF not offered with structured replies"

def chunks(count, off, flags=0):
    got = []
    def cb(subbuf, offset, status, err):
        got.append((offset, len(subbuf), status, bytes(subbuf)))
        return 0
    buf = h.pread_structured(count, off, cb, flags)
    got.sort()
    # Exactly covering [off, off + count), in pieces that do not overlap.
    pos = off
    for o, n, st, b in got:
        assert o == pos, "chunks leave a gap or overlap at %d: %r" % (pos, [(o, n, st) for o, n, st, _ in got])
        pos += n
    assert pos == off + count, "chunks end at %d, not %d" % (pos, off + count)
    assert buf == data[off:off + count], "reassembled data differs"
    return [(o, n, st) for o, n, st, _ in got], got

# Data then hole in one read.
c, raw = chunks(1 << 20, 0)
assert c[0] == (0, 65536, nbd.READ_DATA), c
assert all(st == nbd.READ_HOLE for _, _, st in c[1:]) and len(c) >= 2, c
assert raw[0][3] == data[:65536]

# Hole, data, hole across the second extent, unaligned.
c, _ = chunks(300000, (1 << 20) - 100000)
kinds = [st for _, _, st in c]
assert kinds == [nbd.READ_HOLE, nbd.READ_DATA, nbd.READ_HOLE], c
assert c[1] == (1 << 20, 65536, nbd.READ_DATA), c

# All hole: one hole chunk.
c, _ = chunks(256 << 10, 2 << 20)
assert c == [(2 << 20, 256 << 10, nbd.READ_HOLE)], c

# DF: one data chunk even across holes.
c, _ = chunks(1 << 20, 0, nbd.CMD_FLAG_DF)
assert c == [(0, 1 << 20, nbd.READ_DATA)], c
c, _ = chunks(256 << 10, 2 << 20, nbd.CMD_FLAG_DF)
assert c == [(2 << 20, 256 << 10, nbd.READ_DATA)], c

# Small reads: one data chunk, holes or not.
c, _ = chunks(4096, 2 << 20)
assert c == [(2 << 20, 4096, nbd.READ_DATA)], c
c, _ = chunks(100, 10)
assert c == [(10, 100, nbd.READ_DATA)], c

# The whole disk in one piece still reads right.
assert h.pread(4 << 20, 0) == data

# Errors are structured error chunks, which libnbd maps to errno.
h.set_strict_mode(0)
for off, n in ((4 << 20, 65536), ((4 << 20) - 10, 4096)):
    try:
        h.pread(n, off)
        raise SystemExit("read past the end succeeded")
    except nbd.Error as e:
        assert e.errnum == errno.EINVAL, e
# Zero-length read: success with no data (a NONE chunk), not a crash.
assert h.pread(0, 4096) == b""
# ... and at the very end. A zero-length write succeeds too.
assert h.pread(0, 4 << 20) == b""
h.pwrite(b"", 4096)
h.pwrite(b"", 4 << 20)
assert h.pread(4096, 0) == data[:4096]
' || fail "structured reads"

# Without structured replies: simple replies, same data, no DF.
URI="$(nbd_uri sp)" FILE=$T/sparse.raw nbdsh -c '
import os
data = open(os.environ["FILE"], "rb").read()
h.set_request_structured_replies(False)
h.connect_uri(os.environ["URI"])
assert not h.get_structured_replies_negotiated()
assert not h.can_df()
assert h.pread(1 << 20, 0) == data[:1 << 20]
assert h.pread(300000, (1 << 20) - 100000) == data[(1 << 20) - 100000:(1 << 20) + 200000]
h.set_strict_mode(0)
assert h.pread(0, 0) == b""
' || fail "simple replies"

tapd_alive || fail "tapd died"
log "PASS"
