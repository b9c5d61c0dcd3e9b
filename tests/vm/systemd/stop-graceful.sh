#!/bin/bash
# `systemctl stop` is graceful: with a tap written to by a client, tapd
# drains, flushes and exits 0 on SIGTERM well inside TimeoutStopSec (no
# SIGKILL), the data written before the stop is in the image, and the
# unit ends inactive with Result=success.
. "$(dirname "$0")/../lib.sh"
need nbdcopy fio

start_tapd
img=/var/tmp/vm-stop.img
make_image "$img" 32M
at_exit rm -f "$img"
tapctl create --name stopme "raw:$img" >/dev/null || fail "create"
make_image "$T/new.raw" 32M
nbdcopy "$T/new.raw" "$(nbd_uri stopme)" || fail "nbdcopy to the tap"

# A client still doing I/O when the stop comes.
fio --name=busy --ioengine=nbd --uri="$(nbd_uri stopme)" --rw=randread --bs=4k \
	--iodepth=8 --size=32M --time_based --runtime=60 >"$T/fio.out" 2>&1 &
fio_pid=$!
track_pid $fio_pid
wait_for 10 sh -c "tapctl stats stopme | grep -Eq '^connections +[1-9]'" || fail "fio did not connect: $(cat "$T/fio.out")"
sleep 1
pid=$(tapd_pid)

t0=$(now)
systemctl stop "$UNIT" || fail "systemctl stop failed"
measure "systemctl stop with a client doing I/O" "$(since "$t0") s"
kill -0 "$pid" 2>/dev/null && fail "tapd $pid still running after stop"
[ "$(unit_prop ActiveState)" = inactive ] || fail "ActiveState $(unit_prop ActiveState)"
[ "$(unit_prop Result)" = success ] || fail "Result $(unit_prop Result)"
[ "$(unit_prop ExecMainStatus)" = 0 ] || fail "tapd exited with status $(unit_prop ExecMainStatus)"
journalctl --no-pager -u "$UNIT" _PID="$pid" -o cat >"$T/journal"
grep -q 'Terminated received: stopping' "$T/journal" || fail "tapd did not log the stop: $(tail "$T/journal")"
grep -q 'all taps closed; exiting' "$T/journal" || fail "tapd did not close its taps: $(tail "$T/journal")"
journalctl --no-pager -u "$UNIT" -o cat --since "-2min" | grep -Eq 'SIGKILL|timed out' &&
	fail "systemd had to kill tapd"
cmp "$T/new.raw" "$img" || fail "data written before the stop is not in the image"
wait "$fio_pid" 2>/dev/null || true
log "ok"
