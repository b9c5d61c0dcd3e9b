#!/bin/bash
# mlockall under systemd (LimitMEMLOCK=infinity, CAP_IPC_LOCK): tapd says
# its memory is locked, and VmLck in /proc/PID/status covers its resident
# memory (MCL_ONFAULT locks every mapping; pages count as they are touched).
. "$(dirname "$0")/../lib.sh"
need nbdcopy

start_tapd
pid=$(tapd_pid)
busctl get-property org.xenproject.Tapd1 /org/xenproject/Tapd1 org.xenproject.Tapd1.Manager MemoryLocked >"$T/prop"
[ "$(cat "$T/prop")" = "b true" ] || fail "MemoryLocked is '$(cat "$T/prop")'"
grep -E '^Max locked memory +unlimited +unlimited' /proc/"$pid"/limits >/dev/null ||
	fail "LimitMEMLOCK not applied: $(grep 'locked memory' /proc/"$pid"/limits)"

img=/var/tmp/vm-memlock.img
make_image "$img" 16M
at_exit rm -f "$img"
tapctl create --name ml "raw:$img" >/dev/null || fail "create"
nbdcopy "$(nbd_uri ml)" "$T/back.raw" || fail "nbdcopy"

lck=$(awk '/^VmLck:/ { print $2 }' /proc/"$pid"/status)
rss=$(awk '/^VmRSS:/ { print $2 }' /proc/"$pid"/status)
measure "VmLck / VmRSS" "$lck kB / $rss kB"
[ "$lck" -gt 0 ] || fail "VmLck is 0"
# Every resident page lies in a locked mapping (ram: images excepted, and
# this test has none): VmLck, the size of the locked mappings, is at least
# VmRSS less a little slack for pages in flight.
[ "$lck" -ge $((rss * 95 / 100)) ] || fail "VmLck $lck kB does not cover VmRSS $rss kB"
log "ok"
