#!/bin/bash
# A tap as /dev/ublkbN (N its minor) through the ublk kind: attach prints
# it, list shows it; ext4 on it, mounted, fio with verify (buffered and
# direct); detach of the mounted device refused naming the mount point,
# of a device a process has open naming the process; umount, fsck clean
# through the device and on the backing file; detach removes the device;
# a detach with an opener tapd cannot see is answered within seconds,
# the device cut off, and it goes when that opener closes it.
. "$(dirname "$0")/../lib.sh"
need mkfs.ext4 e2fsck fio modprobe blockdev

modprobe ublk_drv || fail "modprobe ublk_drv"
start_tapd
img=/var/tmp/vm-ublk.img
rm -f "$img"
truncate -s 256M "$img"
at_exit rm -f "$img"
# A tap before it, so that the minor is not 0 and N = minor is shown.
tapctl create --name pad null:1M >/dev/null || fail "create pad"
at_exit tapctl destroy pad
tapctl create --name ublk1 "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy ublk1
minor=$(tapctl list --json | grep '"name": "ublk1"' | sed 's/.*"minor": \([0-9]*\).*/\1/')

t0=$(now)
dev=$(tapctl attach ublk1 --kind ublk 2>"$T/err") || fail "attach: $(cat "$T/err")"
measure "ublk attach" "$(since "$t0") s"
at_exit tapctl detach --force ublk1
[ "$dev" = "/dev/ublkb$minor" ] || fail "attach printed '$dev', expected /dev/ublkb$minor"
[ -b "$dev" ] || fail "$dev is not a block device"
[ "$(blockdev --getsize64 "$dev")" = 268435456 ] || fail "size $(blockdev --getsize64 "$dev")"
tapctl list --json | grep -q "\"kind\": \"ublk\", \"path\": \"$dev\"" ||
	fail "list does not show the device: $(tapctl list --json)"

mnt=$T/mnt
mkdir -p "$mnt"
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev"
mount "$dev" "$mnt" || fail "mount $dev"
at_exit umount "$mnt"

for mode in buffered direct; do
	t0=$(now)
	if [ $mode = direct ]; then extra=(--direct=1 --ioengine=libaio --iodepth=16)
	else extra=(--ioengine=psync --end_fsync=1); fi
	fio --name=$mode --filename="$mnt/$mode" --size=32M --rw=randwrite --bs=4k-128k \
		--verify=crc32c --verify_fatal=1 --do_verify=1 "${extra[@]}" \
		--output="$T/fio-$mode" >/dev/null 2>&1 || fail "fio $mode: $(tail -20 "$T/fio-$mode")"
	grep -q 'err= 0' "$T/fio-$mode" || fail "fio $mode reported errors: $(cat "$T/fio-$mode")"
	measure "fio verify $mode 32M" "$(since "$t0") s"
done

# Mounted: detach refused, naming the mount point.
if tapctl detach ublk1 >"$T/out" 2>"$T/err"; then fail "detach of a mounted device succeeded"; fi
grep -q "$mnt" "$T/err" || fail "the refusal does not name the mount point: $(cat "$T/err")"
[ -b "$dev" ] || fail "$dev went away after a refused detach"
tapctl list --json | grep -q "\"kind\": \"ublk\"" || fail "device unlisted after a refused detach"

sum=$(sha256sum <"$mnt/buffered")
umount "$mnt" || fail "umount"
e2fsck -fn "$dev" >"$T/fsck" 2>&1 || fail "fsck through $dev: $(cat "$T/fsck")"
# Open by a process: refused, naming it. tapd finds it in /proc, which
# under the unit's ProtectProc=invisible shows it only processes it could
# ptrace: this one has no capabilities (a subset of tapd's).
setpriv --bounding-set=-all sleep 600 <"$dev" &
holder=$!
track_pid $holder
wait_for 5 sh -c "readlink /proc/$holder/fd/0 | grep -q ${dev#/dev/}"
if tapctl detach ublk1 >"$T/out" 2>"$T/err"; then fail "detach of an open device succeeded"; fi
grep -q "pid $holder" "$T/err" || fail "the refusal does not name pid $holder: $(cat "$T/err")"
kill $holder
wait $holder 2>/dev/null || true
t0=$(now)
tapctl detach ublk1 2>"$T/err" || fail "detach: $(cat "$T/err")"
measure "ublk detach" "$(since "$t0") s"
wait_for 5 sh -c "! test -e $dev" || fail "$dev still there after detach"
tapctl list --json | grep -q '"kind": "ublk"' && fail "still listed after detach: $(tapctl list --json)"
e2fsck -fn "$img" >"$T/fsck" 2>&1 || fail "the backing file is not a clean ext4: $(cat "$T/fsck")"

# Attached again: the same data.
dev=$(tapctl attach ublk1 --kind ublk 2>"$T/err") || fail "attach again: $(cat "$T/err")"
mount -o ro "$dev" "$mnt" || fail "mount again"
[ "$(sha256sum <"$mnt/buffered")" = "$sum" ] || fail "the file read back differs"
umount "$mnt"

# Open by a process tapd cannot see (root with every capability, hidden
# from tapd by ProtectProc=invisible): what a detach does then, known
# and bounded. The kernel's STOP_DEV cuts the device off and DEL_DEV waits
# for that process: the detach is answered within seconds, the device stays
# listed and its reads fail, and it goes when the process closes it.
sleep 600 <"$dev" &
holder=$!
track_pid $holder
wait_for 5 sh -c "readlink /proc/$holder/fd/0 | grep -q ${dev#/dev/}"
t0=$(now)
tapctl detach ublk1 2>"$T/err" || fail "detach with a hidden opener: $(cat "$T/err")"
took=$(since "$t0")
measure "ublk detach, hidden opener" "$took s"
awk -v s="$took" 'BEGIN { exit !(s < 10) }' || fail "the detach with a hidden opener took $took s"
tapctl list --json | grep -q "\"kind\": \"ublk\"" || fail "unlisted while still open"
dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null &&
	fail "a read of the cut-off $dev succeeded"
kill $holder
wait $holder 2>/dev/null || true
wait_for 10 sh -c "! test -e $dev" || fail "$dev still there after its opener closed it"
wait_for 5 sh -c "! tapctl list --json | grep -q '\"kind\": \"ublk\"'" ||
	fail "still listed after its opener closed it: $(tapctl list --json)"
log "ok"
