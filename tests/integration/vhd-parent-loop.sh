#!/usr/bin/env bash
# A VHD chain whose parent locators come back to one of its own files (two
# crafted images that name each other): tapd-vhd check says so once and
# exits 1, and tapd refuses to serve it with a
# message that says "loop" (not "in use", which is what the locks would
# report), then goes on serving. Error messages never quote bytes of a
# file that is not a VHD (a parent locator can name any file).
. "$(dirname "$0")/lib.sh"

VHD=$TOP_BUILDDIR/tools/tapd-vhd
[ -x "$VHD" ] || fail "$VHD not built"
start_bus
start_tapd

cd "$T"
# a <- b <- c, then c takes a's place: a names b as its parent, and b
# (patched: parent UUID and time stamp of the new a, checksum redone)
# names a. Both files are valid VHDs; only the chain is a circle.
"$VHD" create a.vhd 4M
"$VHD" snapshot b.vhd a.vhd
"$VHD" snapshot c.vhd b.vhd
mv c.vhd a.vhd
/usr/bin/python3 - b.vhd a.vhd <<'PY'
import struct, sys
child, parent = sys.argv[1], sys.argv[2]
p = open(parent, "rb").read(512)
f = bytearray(open(child, "rb").read())
h = struct.unpack(">Q", f[16:24])[0]
hdr = f[h:h + 1024]
hdr[40:56] = p[68:84]   # parent UUID := the parent's footer UUID
hdr[56:60] = p[24:28]   # parent time stamp := the parent's
hdr[36:40] = b"\0\0\0\0"
hdr[36:40] = struct.pack(">I", ~sum(hdr) & 0xffffffff)
f[h:h + 1024] = hdr
open(child, "wb").write(f)
PY

# The tool: one line about the loop, exit 1, no leak.
vg=
[ -n "$TAPD_WRAPPER" ] && vg="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
rc=0
$vg "$VHD" check a.vhd >"$T/out" 2>"$T/err" || rc=$?
[ $rc = 1 ] || fail "check of a loop: exit $rc, want 1: $(cat "$T/err" "$T/out")"
grep -q "the parent chain loops" "$T/out" "$T/err" || fail "check: no loop reported: $(cat "$T/out" "$T/err")"
n=$(cat "$T/out" "$T/err" | grep -c "loops")
[ "$n" = 1 ] || fail "check: the loop reported $n times"

# The daemon: refused with the loop named; a tap beside it keeps working.
[ "$(tapctl create --name good ram:1M)" = good ] || fail "create good"
expect 1 "the parent chain loops" tapctl create --name bad "vhd:$T/a.vhd"
grep -qi "in use" "$T/err" && fail "a loop reported as a lock: $(cat "$T/err")"
[ "$(tapctl list --json | grep -c '"name"')" = 1 ] || fail "a refused create left a tap: $(tapctl list)"
head -c 4096 /dev/urandom >"$T/data"
qemu-io -f raw -c "write -P 0x5a 0 4k" "$(nbd_uri good)" >/dev/null || fail "write to good"
qemu-io -f raw -c "read -P 0x5a 0 4k" "$(nbd_uri good)" >/dev/null || fail "read back from good"

# A file that is not a VHD, as an image and as a parent: its bytes stay
# out of the messages.
printf 'root:$6$secret-salt$secret-hash:19000:0:99999:7:::\n' >"$T/shadow"
head -c 4096 /dev/zero >>"$T/shadow"
printf 'tail:secret-tail-bytes' >>"$T/shadow"
expect 1 "no VHD footer" tapctl create "vhd:$T/shadow"
grep -q secret "$T/err" && fail "message quotes the file: $(cat "$T/err")"
expect 1 "no VHD footer" "$VHD" query "$T/shadow"
grep -q secret "$T/err" && fail "tapd-vhd quotes the file: $(cat "$T/err")"
log "parent loop and foreign files refused, tapd still serving"
