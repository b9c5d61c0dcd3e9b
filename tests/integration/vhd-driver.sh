#!/usr/bin/env bash
# The vhd driver against real peers: qemu's vpc reads what tapd wrote and
# tapd reads what qemu wrote; a 3-deep chain written through tapd at every
# level reads back right at every offset (through tapd and through libvhdi);
# parents are shared between chains; bad metadata and busy images are
# refused with a readable error.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
PY=/usr/bin/python3
VHD=$TOP_BUILDDIR/tools/tapd-vhd

start_bus
start_tapd

# 1. qemu-made dynamic disk, written through tapd, read by qemu.
qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "$T/q.vhd" 64M
tapctl create --name q "vhd:$T/q.vhd" >/dev/null
head -c 6M /dev/urandom >"$T/rand"
qemu-img convert -n -f raw -O raw "$T/rand" "$(nbd_uri q)" || fail "convert into the vhd tap"
qemu-io -f raw -c 'write -P 0x5c 9437000 5000' "$(nbd_uri q)" >/dev/null || fail "unaligned write"
tapctl destroy q
qemu-img convert -f vpc -O raw "$T/q.vhd" "$T/q.raw"
cmp -n 6291456 "$T/rand" "$T/q.raw" || fail "qemu reads other data than tapd wrote"
$PY - "$T/q.raw" <<'PY' || fail "unaligned write not where qemu looks"
import sys
d = open(sys.argv[1], 'rb').read()
assert d[9437000:9442000] == b'\x5c' * 5000 and d[9436999] == 0 and d[9442000] == 0
PY
# ... and what qemu writes, tapd reads.
qemu-io -f vpc -c 'write -P 0x77 20M 1M' "$T/q.vhd" >/dev/null
tapctl create --name q "vhd:$T/q.vhd" >/dev/null
out=$(qemu-io -f raw -c 'read -P 0x77 20M 1M' -c 'read -P 0 30M 1M' "$(nbd_uri q)" 2>&1)
grep -q 'Pattern verification failed' <<<"$out" && fail "tapd reads qemu's writes wrong: $out"
[ "$(grep -c 'read 1048576/1048576' <<<"$out")" = 2 ] || fail "qemu-io did not read both ranges: $out"
tapctl destroy q

# 2. A 3-deep chain with data at every level, partial blocks included.
"$VHD" create "$T/base.vhd" 32M >/dev/null
write_level() { # NAME: writes the level's pattern through tapd
	tapctl create --name "$1" "vhd:$T/$1.vhd" >/dev/null
	$PY - "$(nbd_uri "$1")" "$1" <<'PY' || fail "writing level $1"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
level = {'base': 1, 'mid': 2, 'leaf': 3}[sys.argv[2]]
for off, ln in {1: [(0, 4 << 20), (10 << 20, 3000 * 512)],
                2: [(1 << 20, 4096), (2 << 20, 2 << 20), (11 << 20, 512), (20 << 20, 1 << 20)],
                3: [(1 << 20 | 512, 1024), (5 << 20, 65536), (31 << 20, 1 << 20)]}[level]:
    h.pwrite(bytes([level * 16 + (i % 16) for i in range(ln)]), off)
h.flush(); h.shutdown()
PY
	tapctl destroy "$1"
}
write_level base
"$VHD" snapshot "$T/mid.vhd" "$T/base.vhd" >/dev/null
write_level mid
"$VHD" snapshot "$T/leaf.vhd" "$T/mid.vhd" >/dev/null
write_level leaf
$PY - "$T/model" <<'PY'
import sys
m = bytearray(32 << 20)
for level, writes in [(1, [(0, 4 << 20), (10 << 20, 3000 * 512)]),
                      (2, [(1 << 20, 4096), (2 << 20, 2 << 20), (11 << 20, 512), (20 << 20, 1 << 20)]),
                      (3, [(1 << 20 | 512, 1024), (5 << 20, 65536), (31 << 20, 1 << 20)])]:
    for off, ln in writes:
        m[off:off + ln] = bytes([level * 16 + (i % 16) for i in range(ln)])
open(sys.argv[1], 'wb').write(m)
PY
tapctl create --name leaf "vhd:$T/leaf.vhd" >/dev/null
qemu-img convert -f raw -O raw "$(nbd_uri leaf)" "$T/leaf.raw"
cmp "$T/model" "$T/leaf.raw" || fail "3-deep chain reads back wrong"
# Block status from the BATs and bitmaps of every layer, sector-exact:
# data where some layer wrote, a hole that reads zeros everywhere else.
nbdinfo --map --json "$(nbd_uri leaf)" >"$T/map.json" || fail "nbdinfo --map"
$PY - "$T/map.json" <<'PY' || fail "block status of the chain is wrong: $(cat "$T/map.json")"
import json, sys
writes = [(0, 4 << 20), (10 << 20, 3000 * 512), (1 << 20, 4096), (2 << 20, 2 << 20),
          (11 << 20, 512), (20 << 20, 1 << 20), (1 << 20 | 512, 1024), (5 << 20, 65536),
          (31 << 20, 1 << 20)]
written = bytearray((32 << 20) // 512)
for off, ln in writes:
    for s in range(off // 512, (off + ln) // 512):
        written[s] = 1
pos = 0
for e in json.load(open(sys.argv[1])):
    assert e["offset"] == pos, e
    hole = e["type"] & 1
    assert hole == (e["type"] & 2) >> 1, e          # holes here read as zeros
    for s in range(e["offset"] // 512, (e["offset"] + e["length"]) // 512):
        assert written[s] != hole, ("sector", s, e)
    pos += e["length"]
assert pos == 32 << 20, pos
PY
"$VHD" check "$T/leaf.vhd" >/dev/null || fail "tapd-vhd check finds problems in what tapd wrote"
if command -v vhdimount >/dev/null && [ -e /dev/fuse ]; then
	mkdir "$T/mnt"
	vhdimount -X allow_root "$T/leaf.vhd" "$T/mnt" >/dev/null 2>&1 ||
		vhdimount "$T/leaf.vhd" "$T/mnt" >/dev/null 2>&1 || fail "vhdimount refuses tapd's chain"
	# vhdimount shows each layer of the chain; the leaf is the last.
	leaf=$(ls "$T/mnt" | sort -V | tail -n 1)
	[ "$(ls "$T/mnt" | wc -l)" = 3 ] || fail "vhdimount sees $(ls "$T/mnt" | wc -l) layers, want 3"
	rc=0
	# libvhdi 20210425 reads a sector that is not written in a layer
	# from the wrong place when another sector of its 4 KiB page is
	# written there (it returns zeros instead of the parent's data), so
	# pages whose sectors come from different layers are left out of
	# this comparison; tapd's own read above covers them exactly.
	$PY - "$T/model" "$T/mnt/$leaf" <<'PY' || rc=$?
import sys
m = open(sys.argv[1], 'rb').read(); d = open(sys.argv[2], 'rb').read()
writes = {1: [(0, 4 << 20), (10 << 20, 3000 * 512)],
          2: [(1 << 20, 4096), (2 << 20, 2 << 20), (11 << 20, 512), (20 << 20, 1 << 20)],
          3: [(1 << 20 | 512, 1024), (5 << 20, 65536), (31 << 20, 1 << 20)]}
layer = [0] * (len(m) // 512)
for lv, ws in writes.items():
    for off, ln in ws:
        for s in range(off // 512, (off + ln) // 512):
            layer[s] = lv
mixed = {p for p in range(len(m) // 4096) if len(set(layer[p * 8:p * 8 + 8])) > 1}
bad = [p for p in range(len(m) // 4096) if p not in mixed and m[p * 4096:(p + 1) * 4096] != d[p * 4096:(p + 1) * 4096]]
assert len(mixed) < 8, mixed
assert not bad, "pages differ: %s" % bad[:10]
PY
	[ $rc = 0 ] || fail "libvhdi reads tapd's chain differently"
fi

# 3. Two leaves over one parent open it once.
"$VHD" snapshot "$T/leaf2.vhd" "$T/mid.vhd" >/dev/null
tapctl create --name leaf2 "vhd:$T/leaf2.vhd" >/dev/null
n=$(ls -l "/proc/$TAPD_PID/fd" | grep -c "$T/mid.vhd$" || true)
[ "$n" = 1 ] || fail "mid.vhd open $n times for two chains, want once"
n=$(ls -l "/proc/$TAPD_PID/fd" | grep -c "$T/base.vhd$" || true)
[ "$n" = 1 ] || fail "base.vhd open $n times, want once"
stats=$(tapctl stats leaf2 --json)
grep -q '"chain_depth": *3' <<<"$stats" || fail "Stats chain_depth: $stats"
grep -q '"parent_shares": *2' <<<"$stats" || fail "Stats do not show mid.vhd shared by 2 chains: $stats"

# 4. Images tapd has open are refused to the tool, and the other way round.
out=$("$VHD" resize "$T/leaf.vhd" 64M 2>&1) && fail "resize of an open leaf succeeded"
grep -q 'in use' <<<"$out" || fail "resize refusal unclear: $out"
tapctl destroy leaf2
tapctl destroy leaf

# 5. Bad metadata: a readable error, the daemon unharmed.
expect_refused() { # IMAGE PATTERN
	local out
	out=$(tapctl create "vhd:$1" 2>&1) && fail "tapd opened $1"
	grep -qi "$2" <<<"$out" || fail "unclear refusal of $1: $out"
}
cp "$T/base.vhd" "$T/badsum.vhd"
$PY - "$T/badsum.vhd" <<'PY'
import os, sys
f = open(sys.argv[1], 'r+b')
for off in (0, os.path.getsize(sys.argv[1]) - 512):  # both footer copies
    f.seek(off + 67); b = f.read(1); f.seek(off + 67); f.write(bytes([b[0] ^ 0x55]))
PY
expect_refused "$T/badsum.vhd" 'checksum'
cp "$T/base.vhd" "$T/badbat.vhd"
$PY - "$T/badbat.vhd" <<'PY'
import struct, sys
f = open(sys.argv[1], 'r+b')
f.seek(512 + 16); bat = struct.unpack('>Q', f.read(8))[0]
f.seek(bat); f.write(struct.pack('>I', 0x7fffff00))  # block 0 far past the end
PY
expect_refused "$T/badbat.vhd" 'BAT'
"$VHD" snapshot "$T/orphan.vhd" "$T/rand.vhd" 2>/dev/null && fail "snapshot of a missing parent"
"$VHD" create "$T/p2.vhd" 32M >/dev/null
"$VHD" snapshot "$T/o.vhd" "$T/p2.vhd" >/dev/null
rm "$T/p2.vhd"
expect_refused "$T/o.vhd" 'parent'
"$VHD" create "$T/p2.vhd" 32M >/dev/null   # same name, another UUID
expect_refused "$T/o.vhd" 'uuid'
expect_refused "$T/nonexistent.vhd" 'No such file'
tapd_alive || fail "tapd died on bad metadata"
tapctl list --json | grep -q '"name"' && fail "a refused image left a tap behind"
log "ok"
