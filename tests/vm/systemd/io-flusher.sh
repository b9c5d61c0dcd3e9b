#!/bin/bash
# PR_SET_IO_FLUSHER under systemd: every thread of tapd (main, workers) has
# PF_MEMALLOC_NOIO (0x00080000) and PF_LOCAL_THROTTLE (0x00100000) in its
# /proc/PID/task/TID/stat flags, and tapd says so on the bus.
. "$(dirname "$0")/../lib.sh"
need nbdcopy

start_tapd
pid=$(tapd_pid)
busctl get-property org.xenproject.Tapd1 /org/xenproject/Tapd1 org.xenproject.Tapd1.Manager IoFlusher >"$T/prop"
[ "$(cat "$T/prop")" = "b true" ] || fail "IoFlusher is '$(cat "$T/prop")'"
journalctl --no-pager -u "$UNIT" _PID="$pid" -o cat | grep -q 'PR_SET_IO_FLUSHER failed' &&
	fail "tapd logged PR_SET_IO_FLUSHER failed"

# I/O first, so that the worker threads exist.
img=/var/tmp/vm-flusher.img
make_image "$img" 8M
at_exit rm -f "$img"
tapctl create --name fl "raw:$img" >/dev/null || fail "create"
nbdcopy "$(nbd_uri fl)" "$T/back.raw" || fail "nbdcopy"
tapctl pool-create p2 16M >/dev/null || fail "pool-create (maps memory on a worker)"

thread_flags "$pid" >"$T/flags"
n=$(wc -l <"$T/flags")
measure "tapd threads" "$n"
[ "$n" -ge 2 ] || fail "only $n thread(s): $(cat "$T/flags")"
while read -r tid flags; do
	f=$((16#$flags))
	[ $((f & 0x00080000)) != 0 ] || fail "thread $tid lacks PF_MEMALLOC_NOIO: flags 0x$flags"
	[ $((f & 0x00100000)) != 0 ] || fail "thread $tid lacks PF_LOCAL_THROTTLE: flags 0x$flags"
done <"$T/flags"
log "ok: $n threads: $(tr '\n' ' ' <"$T/flags")"
