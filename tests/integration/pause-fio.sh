#!/bin/bash
# Pause and unpause under load: fio (nbd engine, random writes with crc32c
# verify, 16 in flight) runs while the tap is paused and unpaused five
# times; fio sees no error and every block verifies afterwards. Then tapd
# stops cleanly (exit 0) while a tap is paused with a request held.
. "$(dirname "$0")/lib.sh"
need fio qemu-io
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
start_bus
start_tapd

SIZE=16M
img=$T/disk.raw
truncate -s $SIZE "$img"
tapctl create --name disk "raw:$img" >/dev/null || fail "create"
URI=$(nbd_uri disk)

# fio_run NAME ARGS...: one fio job against the tap, from inside $T and
# without a saved verify state (nothing left where the suite runs).
fio_run() {
	local name=$1 rc=0
	shift
	(cd "$T" && fio --name="$name" --ioengine=nbd --uri="$URI" --size=$SIZE --bs=4k \
		--verify=crc32c --verify_fatal=1 --verify_state_save=0 "$@" \
		--output="$T/$name.out" >/dev/null 2>"$T/$name.err") || rc=$?
	[ $rc = 0 ] || fail "fio $name exited $rc: $(cat "$T/$name.out" "$T/$name.err")"
	fio_check "$name"
}

# Every block carries a verify header from the start, so the final read
# pass can check all of them, whatever the random pass hit.
fio_run fill --rw=write --iodepth=16 --do_verify=0

# The random pass runs 8 s: writes for about half of it (fio's time_based
# runtime covers its verify phase too), then reads back and verifies what
# it wrote. Meanwhile the tap is paused and unpaused every ~0.5 s.
(cd "$T" && fio --name=churn --ioengine=nbd --uri="$URI" --size=$SIZE --bs=4k \
	--rw=randwrite --iodepth=16 --time_based --runtime=8 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
	--output="$T/churn.out" >/dev/null 2>"$T/churn.err") &
FIO=$!
track_pid $FIO
sleep 0.5
for i in 1 2 3 4 5; do
	tapctl pause disk || fail "pause $i failed"
	[ "$(tap_state disk)" = paused ] || fail "pause $i: state $(tap_state disk)"
	# Requests pile up while paused; they must all be held, not failed.
	sleep 0.25
	tapctl unpause disk || fail "unpause $i failed"
	sleep 0.25
done
kill -0 $FIO 2>/dev/null || fail "fio ended during the pause cycles: $(cat "$T/churn.out" "$T/churn.err")"
rc=0
wait $FIO || rc=$?
cat "$T/churn.out" >&2
[ $rc = 0 ] || fail "fio churn exited $rc: $(cat "$T/churn.err")"
fio_check churn
grep -qE 'write: IOPS=' "$T/churn.out" || fail "fio churn wrote nothing"
grep -qE 'read: IOPS=' "$T/churn.out" || fail "fio churn did not verify (no reads)"
tapctl stats disk | grep -q '^errors *0$' || fail "the tap counted errors: $(tapctl stats disk)"
[ "$(grep -c 'disk: paused' "$TAPD_LOG")" = 5 ] || fail "tapd did not pause 5 times"

# Every block of the image, read back with its header checked.
fio_run final --rw=read --iodepth=16 --do_verify=1

# ---- stopping tapd with a request held by a paused tap ------------------
held_client disk "$URI"
tapctl pause disk || fail "last pause failed"
echo 'write -P 0x55 0 64k' >&3
exec 3>&-
sleep 0.5
kill -0 $HELD 2>/dev/null || fail "the held write completed while paused: $(cat "$T/held.out")"
rc=0
stop_tapd || rc=$?
[ $rc = 0 ] || fail "tapd exited $rc on SIGTERM with a paused tap holding a request"
# The client is told, not left hanging.
for _ in $(seq 1 100); do kill -0 $HELD 2>/dev/null || break; sleep 0.05; done
kill -0 $HELD 2>/dev/null && fail "the held client still hangs after tapd exited"
grep -q 'wrote' "$T/held.out" && log "note: the held write was served at shutdown"
exit 0
