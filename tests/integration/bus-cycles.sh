#!/bin/bash
# 200 create/destroy cycles over D-Bus leak nothing: no tap left in the
# list, tapd's open fd count back where it started, and minors are reused
# (smallest free first).
. "$(dirname "$0")/lib.sh"
start_bus
start_tapd

img=$T/disk.raw
truncate -s 16M "$img"

fds0=$(tapd_fds)
for i in $(seq 1 200); do
	if [ $((i % 2)) = 0 ]; then spec=raw:$img; else spec=ram:1M; fi
	name=$(tapctl create --name "c$i" "$spec") || fail "cycle $i: create $spec failed"
	[ "$name" = "c$i" ] || fail "cycle $i: create printed '$name'"
	tapctl destroy "c$i" || fail "cycle $i: destroy failed"
done
[ "$(tapctl list --json)" = "[]" ] || fail "taps left after the cycles: $(tapctl list)"
fds1=$(tapd_fds)
[ "$fds1" = "$fds0" ] || fail "tapd had $fds0 fds before the cycles and $fds1 after: $(ls -l /proc/$TAPD_PID/fd)"

# Minors: 0 and 1 taken, 0 freed -> the next tap gets 0, then 2.
minor_of() { busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.xenproject.Tapd1 \
	"/org/xenproject/Tapd1/tap/$1" org.xenproject.Tapd1.Tap Minor; }
[ "$(tapctl create --name a ram:1M)" = a ] || fail "create a"
[ "$(tapctl create --name b raw:"$img")" = b ] || fail "create b"
[ "$(minor_of 0)" = "u 0" ] || fail "first tap is not minor 0"
[ "$(minor_of 1)" = "u 1" ] || fail "second tap is not minor 1"
tapctl destroy 0 || fail "destroy by minor 0"
[ "$(tapctl create ram:1M)" = tap0 ] || fail "minor 0 was not reused: $(tapctl list)"
[ "$(tapctl create ram:1M)" = tap2 ] || fail "next minor is not 2: $(tapctl list)"
tapctl list --json | grep -q '"minor": 0, "name": "tap0"' || fail "list lacks tap0 at minor 0"
for t in b tap0 tap2; do tapctl destroy "$t"; done
[ "$(tapctl list --json)" = "[]" ] || fail "taps left: $(tapctl list)"
[ "$(tapd_fds)" = "$fds0" ] || fail "fd count $(tapd_fds), expected $fds0"
tapd_alive || fail "tapd died"
exit 0
