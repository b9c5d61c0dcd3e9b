#!/bin/bash
# A read through /dev/nbdN waits for a paused tap longer than the kernel's
# 30 s request timeout, and completes with the right data after the
# unpause. With 2 connections the kernel drops the one the request went on
# at 30 s and sends it again on the other: measured (the device's
# connections after), not asserted.
. "$(dirname "$0")/../lib.sh"
need modprobe

modprobe nbd || fail "modprobe nbd"
img=/var/tmp/vm-knbd-pause.img
rm -f "$img"
make_image "$img" 4M
at_exit rm -f "$img"
start_tapd
tapctl create --name kp "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy kp
dev=$(tapctl attach kp --kind nbd) || fail "attach"
at_exit tapctl detach --force kp
wait_for 10 test -b "$dev" || fail "no $dev node"
tapctl pause kp || fail "pause"
t0=$(now)
dd if="$dev" of="$T/read" bs=4k count=1 skip=100 iflag=direct status=none 2>"$T/dd.err" &
dd_pid=$!
track_pid $dd_pid
sleep 40
kill -0 $dd_pid 2>/dev/null || fail "the read ended while the tap was paused: $(cat "$T/dd.err")"
tapctl unpause kp || fail "unpause"
wait $dd_pid || fail "the read failed after the unpause: $(cat "$T/dd.err")"
measure "read held by a 40 s pause" "$(since "$t0") s"
dd if="$img" bs=4k count=1 skip=100 status=none | cmp - "$T/read" || fail "read the wrong data"
c=$(tapctl stats kp | awk '$1 == "connections" { print $2 }')
measure "connections after" "$((c - 1)) of 2"
dd if="$dev" of=/dev/null bs=4k count=64 iflag=direct status=none || fail "read after"
dmesg | grep "nbd${dev#/dev/nbd}" | tail -n 5 >&2 || true
tapctl detach kp || fail "detach"
log "ok"
