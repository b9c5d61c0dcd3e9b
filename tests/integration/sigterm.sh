#!/usr/bin/env bash
# SIGTERM while fio writes: tapd drains, flushes, exits 0; data written and
# flushed before the signal reads back intact after a restart.
. "$(dirname "$0")/lib.sh"
need qemu-io fio

truncate -s 64M "$T/disk.raw"
start_bus
start_tapd
tapctl create --name d "raw:$T/disk.raw" >/dev/null
uri=$(nbd_uri d)

# Region A before the load, region B while fio runs; qemu-io flushes on exit.
qemu-io -f raw -c 'write -P 0xa5 0 4M' -c flush "$uri" >/dev/null || fail "write A"
fio --name=load --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=16 \
	--offset=16M --size=48M --time_based --runtime=30 >"$T/fio.log" 2>&1 &
fio_pid=$!
sleep 1
qemu-io -f raw -c 'write -P 0x3c 4M 4M' -c flush "$uri" >/dev/null || fail "write B"
sleep 1
kill -0 $fio_pid 2>/dev/null || fail "fio stopped before the signal: $(cat "$T/fio.log")"

rc=0
stop_tapd || rc=$?
[ "$rc" = 0 ] || fail "tapd exit status $rc after SIGTERM, want 0"
wait $fio_pid || true
grep -q 'all taps closed' "$TAPD_LOG" || fail "tapd did not close its taps in order"
[ -S "$NBD_SOCK" ] && fail "NBD socket left behind"

start_tapd
tapctl create --name d "raw:$T/disk.raw" >/dev/null
out=$(qemu-io -f raw -c 'read -P 0xa5 0 4M' -c 'read -P 0x3c 4M 4M' "$uri" 2>&1) || fail "read back: $out"
grep -q 'Pattern verification failed' <<<"$out" && fail "data lost across restart: $out"
log "ok"
