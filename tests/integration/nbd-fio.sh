#!/bin/bash
# fio's nbd engine: 4k random writes at depth 32 over a 64 MiB raw tap,
# verified with crc32c. Exercises many requests in flight on one
# connection and replies in completion order. tapd polls for completions
# (--poll-us, a whole second, so that it spins whenever AIO is in flight):
# the loop's polling passes carry all of it, including the final flush of
# the stop, which must still end with exit 0 (checked by lib.sh).
. "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"

# On tmpfs raw copies inline and nothing would go through AIO to poll for.
[ "$(findmnt -no FSTYPE -T "$T")" != tmpfs ] || skip "$T is on tmpfs: no AIO to poll for"
start_bus
start_tapd --poll-us 1000000

truncate -s 64M "$T/disk.raw"
tapctl create --name fio0 "raw:$T/disk.raw" >/dev/null || fail "tapctl create failed"

# From inside $T and without a saved verify state, so that fio leaves no
# *-verify.state file in whatever directory the suite runs from.
rc=0
(cd "$T" && fio --name=nbd-randwrite --ioengine=nbd --uri="$(nbd_uri fio0)" \
	--rw=randwrite --bs=4k --iodepth=32 --size=64M \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
	--output="$T/fio.out" >/dev/null 2>"$T/fio.err") || rc=$?
cat "$T/fio.out" "$T/fio.err" >&2
[ $rc = 0 ] || fail "fio exited $rc"
fio_check fio
# fio really wrote and read: its summary has both directions with data.
grep -qE 'write: IOPS=' "$T/fio.out" || fail "fio wrote nothing"
grep -qE 'read: IOPS=' "$T/fio.out" || fail "fio did not verify (no reads)"
# And the data reached the image: a 4k random-write pass over the whole
# file leaves no block all-zero (fio's blocks carry a verify header).
[ "$(head -c 4096 "$T/disk.raw" | tr -d '\0' | wc -c)" -gt 0 ] ||
	fail "first block of the image is still zero"
! ls "$T"/*verify.state >/dev/null 2>&1 || fail "fio left a verify state file"
tapd_alive || fail "tapd died"
log "PASS"
