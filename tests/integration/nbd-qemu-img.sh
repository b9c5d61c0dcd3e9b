#!/bin/bash
# qemu-img copies 64 MiB of random data into a raw tap over NBD and back
# out; both the copy and the backing file must equal the source.
. "$(dirname "$0")/lib.sh"
need qemu-img cmp

start_bus
start_tapd

truncate -s 64M "$T/disk.raw"
head -c 64M /dev/urandom >"$T/src"
name=$(tapctl create --name qimg "raw:$T/disk.raw") || fail "tapctl create failed"
[ "$name" = qimg ] || fail "tapctl create printed '$name'"
uri=$(nbd_uri qimg)

qemu-img convert -n -f raw -O raw "$T/src" "$uri" || fail "qemu-img convert into NBD failed"
qemu-img convert -f raw -O raw "$uri" "$T/out" || fail "qemu-img convert out of NBD failed"
cmp "$T/src" "$T/out" || fail "data read back over NBD differs"
cmp "$T/src" "$T/disk.raw" || fail "backing file differs from what was written"
# The sizes qemu saw are the tap's.
[ "$(stat -c %s "$T/out")" = 67108864 ] || fail "copied image has the wrong size"
tapd_alive || fail "tapd died"
log "PASS"
