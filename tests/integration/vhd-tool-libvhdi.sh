#!/bin/bash
# libvhdi (Debian's libvhdi-utils: vhdiinfo, vhdimount) reads what tapd-vhd
# writes: dynamic, fixed and a differencing child whose parent it finds by
# the header's parent name; data read through a FUSE mount of the child
# matches parent + child data byte for byte. No daemon.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io vhdiinfo vhdimount
[ -c /dev/fuse ] || skip "no /dev/fuse"
VHD=$TOP_BUILDDIR/tools/tapd-vhd
[ -x "$VHD" ] || fail "$VHD not built"
cd "$T"

info() { vhdiinfo "$1" >"$T/info" 2>&1 || fail "vhdiinfo $1: $(cat "$T/info")"; }
field() { sed -n "s/^[[:space:]]*$1[[:space:]]*: //p" "$T/info"; }
uuid() { "$VHD" query --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])'; }

"$VHD" create --fixed f.vhd 32M
info f.vhd
[ "$(field 'Disk type')" = Fixed ] || fail "fixed: $(cat "$T/info")"
field 'Media size' | grep -q '(33554432 bytes)' || fail "fixed size: $(cat "$T/info")"

"$VHD" create d.vhd 64M
info d.vhd
[ "$(field 'Disk type')" = Dynamic ] || fail "dynamic: $(cat "$T/info")"
field 'Media size' | grep -q '(67108864 bytes)' || fail "dynamic size: $(cat "$T/info")"
[ "$(field Identifier)" = "$(uuid d.vhd)" ] || fail "identifier: $(cat "$T/info")"

# Parent data in blocks 0, 2 and 31; the child fills block 10, which the
# parent never wrote (qemu-io is the writer, and qemu's vpc driver does not
# follow parents, so it may only write whole blocks the parent lacks).
qemu-io -f vpc -c 'write -P 0xa1 0 1M' -c 'write -P 0xa2 4M 2M' \
	-c 'write -P 0xa3 63M 1M' d.vhd >/dev/null
"$VHD" snapshot c.vhd d.vhd
info c.vhd
[ "$(field 'Disk type')" = Differential ] || fail "child: $(cat "$T/info")"
[ "$(field 'Parent identifier')" = "$(uuid d.vhd)" ] || fail "parent id: $(cat "$T/info")"
[ "$(field 'Parent filename')" = d.vhd ] || fail "parent name: $(cat "$T/info")"
qemu-io -f vpc -c 'write -P 0xc1 20M 2M' c.vhd >/dev/null

qemu-img convert -f vpc -O raw d.vhd expect.raw
python3 - expect.raw <<'EOF'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(20 << 20); f.write(b'\xc1' * (2 << 20))
EOF
"$VHD" check c.vhd >/dev/null || fail "check c.vhd"

mkdir mnt
vhdimount c.vhd mnt >"$T/mount.log" 2>&1 || fail "vhdimount: $(cat "$T/mount.log")"
# One file per image of the chain; the last one is the child's view.
leaf=$(ls mnt | sort -V | tail -n 1)
[ "$(ls mnt | wc -l)" = 2 ] || fail "vhdimount chain: $(ls mnt)"
cmp mnt/"$leaf" expect.raw || fail "chain read through vhdimount differs"
umount mnt

# A child of the child: a 3-deep chain.
"$VHD" snapshot c2.vhd c.vhd
mkdir mnt2
vhdimount c2.vhd mnt2 >"$T/mount.log" 2>&1 || fail "vhdimount c2: $(cat "$T/mount.log")"
leaf=$(ls mnt2 | sort -V | tail -n 1)
[ "$(ls mnt2 | wc -l)" = 3 ] || fail "3-deep chain: $(ls mnt2)"
cmp mnt2/"$leaf" expect.raw || fail "3-deep chain read differs"
umount mnt2
log "PASS"
