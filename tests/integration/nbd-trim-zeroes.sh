#!/bin/bash
# TRIM, WRITE_ZEROES (plain, NO_HOLE, FAST_ZERO, unaligned), CACHE and FUA
# through real clients: trim punches holes in a raw file, zeroes read back
# as zeros exactly in range with old data around them, NO_HOLE keeps the
# blocks allocated, FAST_ZERO works or fails with ENOTSUP as advertised.
. "$(dirname "$0")/lib.sh"
need nbdsh python3 stat
need_libnbd

start_bus
start_tapd

f=$T/disk.raw
dd if=/dev/urandom of="$f" bs=1M count=8 status=none
tapctl create --name disk "raw:$f" >/dev/null || fail "create disk"
tapctl create --name mem ram:64M >/dev/null || fail "create mem"

blocks() { stat -c %b "$f"; }
b0=$(blocks)

FILE=$f URI=$(nbd_uri disk) nbdsh -c '
import errno, os
M = 1 << 20
h.connect_uri(os.environ["URI"])
orig = open(os.environ["FILE"], "rb").read()
assert h.can_trim() and h.can_zero() and h.can_cache() and h.can_fua()
assert h.can_multi_conn()
# Trim [1M, 3M) with FUA: advisory, but on a raw file it punches a hole.
h.trim(2 * M, 1 * M, nbd.CMD_FLAG_FUA)
h.flush()
' || fail "trim"
b1=$(blocks)
log "allocated 512-byte blocks: $b0 before trim, $b1 after"
[ "$b1" -le $((b0 - 4000)) ] || fail "trim did not free storage ($b0 -> $b1 blocks)"
cmp -s -n 2097152 -i 1048576:0 "$f" /dev/zero || fail "trimmed range of the file is not a hole"

FILE=$f URI=$(nbd_uri disk) nbdsh -c '
import errno, os
M = 1 << 20
h.connect_uri(os.environ["URI"])
orig = open(os.environ["FILE"], "rb").read()
# Write zeroes over data: reads as zeros afterwards; FUA accepted.
h.zero(1 * M, 4 * M, nbd.CMD_FLAG_FUA)
assert h.pread(M, 4 * M) == bytes(M)
# Unaligned: zeros exactly in [1000, 6000), old data around.
h.zero(5000, 1000)
got = h.pread(8192, 0)
assert got[:1000] == orig[:1000], "data before the zeroed range changed"
assert got[1000:6000] == bytes(5000), "zeroed range does not read as zeros"
assert got[6000:] == orig[6000:8192], "data after the zeroed range changed"
# Unaligned, across a 4K boundary, with FUA: [12289, 16384).
h.zero(4095, 3 * 4096 + 1, nbd.CMD_FLAG_FUA)
got = h.pread(5 * 4096, 2 * 4096)
assert got[:4097] == orig[8192:12289], "data before the second zeroed range changed"
assert got[4097:8192] == bytes(4095), "second zeroed range does not read as zeros"
assert got[8192:] == orig[16384:28672], "data after the second zeroed range changed"
# CACHE is advisory and succeeds.
h.cache(2 * M, 0)
# Zero-length trim and zeroes are no-ops that succeed (strict mode off so
# that libnbd sends them).
h.set_strict_mode(0)
h.trim(0, 4096)
h.zero(0, 8 * M)
h.flush()
' || fail "write zeroes"

# NO_HOLE: zeros, and the blocks stay allocated.
b2=$(blocks)
FILE=$f URI=$(nbd_uri disk) nbdsh -c '
import os
M = 1 << 20
h.connect_uri(os.environ["URI"])
h.zero(M, 6 * M, nbd.CMD_FLAG_NO_HOLE)
h.flush()
assert h.pread(M, 6 * M) == bytes(M)
assert h.pread(4096, 7 * M) == open(os.environ["FILE"], "rb").read()[7 * M:7 * M + 4096]
' || fail "write zeroes with NO_HOLE"
b3=$(blocks)
log "blocks: $b2 before NO_HOLE zeroes, $b3 after"
[ "$b3" -ge "$b2" ] || fail "NO_HOLE zeroes freed storage ($b2 -> $b3 blocks)"

# FAST_ZERO as advertised, on ram and on the raw file; a big TRIM and
# WRITE_ZEROES (longer than a READ may be) in one request.
for name in mem disk; do
	URI=$(nbd_uri $name) nbdsh -c '
import errno, os
M = 1 << 20
h.connect_uri(os.environ["URI"])
size = h.get_size()
h.pwrite(b"\xab" * M, 0)
if h.can_fast_zero():
    h.zero(M, 0, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(M, 0) == bytes(M), "fast zero did not zero"
    print("fast zero: supported")
else:
    h.set_strict_mode(0)
    try:
        h.zero(M, 0, nbd.CMD_FLAG_FAST_ZERO)
        raise SystemExit("FAST_ZERO not advertised but succeeded")
    except nbd.Error as e:
        assert e.errnum == errno.ENOTSUP, e
    assert h.pread(M, 0) == b"\xab" * M, "a refused fast zero changed data"
    print("fast zero: ENOTSUP")
if size >= 48 * M:
    h.pwrite(b"\xcd" * M, 40 * M)
    h.trim(48 * M, 0)
    h.zero(48 * M, 8 * M)
    assert h.pread(M, 40 * M) == bytes(M), "48M zeroes missed data"
' || fail "fast zero / big requests on $name"
done

tapd_alive || fail "tapd died"
log "PASS"
