#!/bin/bash
# base:allocation and BLOCK_STATUS: qemu-img map and nbdinfo --map over the
# export agree with the same tools run on the file itself (holes, data, and
# ranges zeroed by fallocate); LIST/SET_META_CONTEXT return only what we
# know; BLOCK_STATUS past the end, of zero length or without a context is
# EINVAL; REQ_ONE gives one extent.
. "$(dirname "$0")/lib.sh"
need nbdsh nbdinfo nbdkit qemu-img python3 fallocate
need_libnbd

start_bus
start_tapd

# 8 MiB: data [0,1M), hole [1M,3M), data [3M,4M), zeroed by fallocate
# [4M,5M) (written first, so the zeroing has something to do), hole
# [5M,7M), data [7M,8M).
f=$T/map.raw
truncate -s 8M "$f"
for mb in 0 3 4 7; do
	dd if=/dev/urandom of="$f" bs=1M count=1 seek=$mb conv=notrunc status=none
done
fallocate -z -o 4M -l 1M "$f" || skip "fallocate --zero-range unsupported here"
tapctl create --name map "raw:$f" >/dev/null || fail "create"
uri=$(nbd_uri map)

# qemu-img map: same runs of (data, zero) over NBD as on the file. Adjacent
# entries of one kind are merged so that only the allocation is compared.
norm_map() {
	python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["data"], e["zero"])
    if out and out[-1][2] == k and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], k])
for s, l, (d, z) in out:
    print(s, l, "data" if d else "-", "zero" if z else "-")
'
}
qemu-img map --output=json -f raw "$f" | norm_map >"$T/map.file" || fail "qemu-img map on the file"
qemu-img map --output=json -f raw "$uri" | norm_map >"$T/map.nbd" || fail "qemu-img map over NBD"
log "qemu-img map of the file:"; cat "$T/map.file" >&2
[ "$(wc -l <"$T/map.file")" -ge 4 ] || fail "the file has too few runs to prove anything"
diff -u "$T/map.file" "$T/map.nbd" >&2 || fail "qemu-img map differs over NBD"

# nbdinfo --map: ours against nbdkit's file plugin on the same file.
norm_nbdinfo() {
	awk '{ if (n && $3 == t && s + l == $1) { l += $2 } else { if (n) print s, l, t; s = $1; l = $2; t = $3; n = 1 } } END { if (n) print s, l, t }'
}
nbdinfo --map "$uri" | norm_nbdinfo >"$T/info.nbd" || fail "nbdinfo --map"
nbdinfo --map -- [ nbdkit file "$f" ] | norm_nbdinfo >"$T/info.kit" || fail "nbdinfo --map on nbdkit"
diff -u "$T/info.kit" "$T/info.nbd" >&2 || fail "nbdinfo --map differs from nbdkit's"
grep -q ' 3$' "$T/info.nbd" || fail "no hole,zero extent in nbdinfo --map"

URI="$uri" nbdsh -c '
import errno, os
h.set_opt_mode(True)
h.connect_uri(os.environ["URI"])

def listed(*queries):
    h.clear_meta_contexts()
    for q in queries:
        h.add_meta_context(q)
    seen = []
    h.opt_list_meta_context(lambda name: seen.append(name))
    return seen

assert listed() == ["base:allocation"], listed()
assert listed("base:") == ["base:allocation"], listed("base:")
assert listed("base:allocation", "x-nope:thing", "qemu:dirty-bitmap:a") == ["base:allocation"]
assert listed("x-nope:thing") == [], listed("x-nope:thing")
assert listed("base:nope") == []

h.clear_meta_contexts()
h.add_meta_context("x-unknown:foo")
h.add_meta_context("base:allocation")
h.opt_go()
assert h.can_meta_context("base:allocation")
assert not h.can_meta_context("x-unknown:foo"), "unknown context returned"

size = h.get_size()
got = []
def cb(ctx, off, entries, err):
    assert ctx == "base:allocation", ctx
    got.append((off, list(entries)))
    return 0
h.block_status(size, 0, cb)
off, ent = got[0]
assert off == 0 and sum(ent[0::2]) <= size and len(ent) >= 2, got
assert ent[0:2] == [1 << 20, 0], ent          # data first
assert ent[2:4] == [2 << 20, 3], ent          # then a hole that reads as zeros

# REQ_ONE: one extent, not longer than asked.
got.clear()
h.block_status(size - 512, 512, cb, nbd.CMD_FLAG_REQ_ONE)
assert got == [(512, [(1 << 20) - 512, 0])], got
got.clear()
h.block_status(100, 2 << 20, cb, nbd.CMD_FLAG_REQ_ONE)
assert got == [(2 << 20, [100, 3])], got

# Past the end, zero length: EINVAL from the server.
h.set_strict_mode(0)
for n, off in ((4096, size), (8192, size - 4096), (1, size + 1), (0, 0)):
    try:
        h.block_status(n, off, cb)
        raise SystemExit("block status %d at %d succeeded" % (n, off))
    except nbd.Error as e:
        assert e.errnum == errno.EINVAL, (n, off, e)
# The last byte is fine.
got.clear()
h.block_status(1, size - 1, cb)
assert got == [(size - 1, [1, 0])], got
' || fail "meta contexts and block status"

# BLOCK_STATUS without a context (libnbd will not send it, so by hand):
# EINVAL, and the connection stays usable.
python3 - "$NBD_SOCK" <<'PY' || fail "block status without a context"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
def recvn(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        assert c, "server closed"
        b += c
    return b
assert recvn(18)[:16] == b"NBDMAGICIHAVEOPT"
s.sendall(struct.pack(">I", 3))
def opt(o, data):
    s.sendall(struct.pack(">QII", 0x49484156454F5054, o, len(data)) + data)
    replies = []
    while True:
        magic, ro, typ, ln = struct.unpack(">QIII", recvn(20))
        replies.append((typ, recvn(ln)))
        if typ == 1 or typ >> 31:
            return replies
assert opt(8, b"")[-1][0] == 1                          # structured replies
name = struct.pack(">I", 3) + b"map"
r = opt(10, name + struct.pack(">I", 1) + struct.pack(">I", 12) + b"x-none:thing")
assert r == [(1, b"")], r                               # SET selects nothing
r = opt(7, name + struct.pack(">H", 0))
assert r[-1][0] == 1, r
def request(typ, cookie, off, ln):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, typ, cookie, off, ln))
    magic, flags, rtype, ck, ln = struct.unpack(">IHHQI", recvn(20))
    assert magic == 0x668e33ef and ck == cookie, (hex(magic), ck)
    return flags, rtype, recvn(ln)
flags, rtype, p = request(7, 1, 0, 4096)
assert rtype == 32769 and flags & 1, (flags, rtype)     # ERROR chunk, DONE
assert struct.unpack(">I", p[:4])[0] == 22, p           # EINVAL
flags, rtype, p = request(0, 2, 0, 512)                 # still in sync
assert rtype == 1 and flags & 1 and len(p) == 520, (flags, rtype, len(p))
PY

tapd_alive || fail "tapd died"
log "PASS"
