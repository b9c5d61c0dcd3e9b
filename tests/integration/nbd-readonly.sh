#!/bin/bash
# A read-only tap advertises READ_ONLY and nothing write-like; writes,
# trims and zeroes that reach the server anyway get EPERM and change
# nothing; reads, block status, cache and flush work.
. "$(dirname "$0")/lib.sh"
need nbdsh nbdinfo python3
need_libnbd

start_bus
start_tapd

f=$T/ro.raw
dd if=/dev/urandom of="$f" bs=1M count=2 status=none
truncate -s 4M "$f"
sum0=$(md5sum <"$f")
tapctl create --name ro --read-only "raw:$f" >/dev/null || fail "create"

nbdinfo "$(nbd_uri ro)" >"$T/info" || fail "nbdinfo"
grep -q "is_read_only: true" "$T/info" || fail "not advertised read-only: $(cat "$T/info")"
grep -q "can_trim: false" "$T/info" || fail "trim advertised on a read-only export"
# NBD_INFO_DESCRIPTION is the image, NBD_INFO_BLOCK_SIZE min 1, preferred
# at least 4K, max 32M.
grep -q "description: raw:$f" "$T/info" || fail "no description: $(cat "$T/info")"
grep -q "block_size_minimum: 1$" "$T/info" || fail "minimum block size: $(cat "$T/info")"
grep -q "block_size_preferred: 4096$" "$T/info" || fail "preferred block size: $(cat "$T/info")"
grep -q "block_size_maximum: 33554432$" "$T/info" || fail "maximum block size: $(cat "$T/info")"

FILE=$f URI=$(nbd_uri ro) nbdsh -c '
import errno, os
M = 1 << 20
data = open(os.environ["FILE"], "rb").read()
h.add_meta_context("base:allocation")
h.connect_uri(os.environ["URI"])
assert h.is_read_only()
assert not h.can_trim() and not h.can_zero() and not h.can_fua() and not h.can_fast_zero()
assert h.can_flush() and h.can_cache() and h.can_multi_conn()
h.set_strict_mode(0)
for what, call in (("write", lambda: h.pwrite(b"x" * 4096, 0)),
                   ("write fua", lambda: h.pwrite(b"x" * 512, M, nbd.CMD_FLAG_FUA)),
                   ("trim", lambda: h.trim(M, 0)),
                   ("zero", lambda: h.zero(M, 0)),
                   ("zero no-hole", lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)),
                   ("zero-length write", lambda: h.pwrite(b"", 0))):
    try:
        call()
        raise SystemExit("%s on a read-only tap succeeded" % what)
    except nbd.Error as e:
        assert e.errnum == errno.EPERM, (what, e)
assert h.pread(4 * M, 0) == data
h.cache(4 * M, 0)
h.flush()
ext = []
h.block_status(4 * M, 0, lambda c, o, e, err: ext.extend(e) or 0)
assert ext[0:2] == [2 * M, 0] and ext[3] & 1, ext
' || fail "read-only semantics"

[ "$(md5sum <"$f")" = "$sum0" ] || fail "the read-only image changed"
tapd_alive || fail "tapd died"
log "PASS"
