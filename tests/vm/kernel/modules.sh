#!/bin/bash
# The guest kernel has what the kernel-device work needs: nbd and ublk_drv
# load, and their control nodes appear (/dev/nbd0, /dev/ublk-control).
. "$(dirname "$0")/../lib.sh"
need modprobe

modprobe nbd || fail "modprobe nbd"
modprobe ublk_drv || fail "modprobe ublk_drv"
grep -q '^nbd ' /proc/modules || fail "nbd not loaded"
grep -q '^ublk_drv ' /proc/modules || fail "ublk_drv not loaded"
wait_for 10 test -b /dev/nbd0 || fail "no /dev/nbd0"
wait_for 10 test -c /dev/ublk-control || fail "no /dev/ublk-control"
grep -qw nbd /proc/devices || fail "no nbd major in /proc/devices"
grep -qw ublk-char /proc/devices || fail "no ublk-char major in /proc/devices"
test -c /dev/fuse || fail "no /dev/fuse"
test -c /dev/loop-control || fail "no /dev/loop-control"
log "ok: $(uname -r): nbd, ublk_drv, fuse and loop present"
