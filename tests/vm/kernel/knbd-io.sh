#!/bin/bash
# A tap as /dev/nbdN through tapd's own kernel NBD kind (`tapctl attach
# --kind nbd`): ext4 made, mounted, verified by fio buffered and direct,
# unmounted, checked clean; detach leaves nothing (/sys/block/nbdN/pid
# gone), and the tap's file is that clean file system.
. "$(dirname "$0")/../lib.sh"
need mkfs.ext4 e2fsck modprobe fio

modprobe nbd || fail "modprobe nbd"
start_tapd
img=/var/tmp/vm-knbd-io.img
rm -f "$img"
truncate -s 256M "$img"
at_exit rm -f "$img"
tapctl create --name kio "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy kio

mnt=$T/mnt
mkdir -p "$mnt"
t0=$(now)
dev=$(tapctl attach kio --kind nbd) || fail "attach --kind nbd"
measure "attach --kind nbd" "$(since "$t0") s"
at_exit tapctl detach --force kio
case $dev in /dev/nbd[0-9]*) ;; *) fail "attach printed '$dev', not /dev/nbdN" ;; esac
n=${dev#/dev/nbd}
log "attached as $dev"
wait_for 10 test -b "$dev" || fail "no $dev node"
test -e "/sys/block/nbd$n/pid" || fail "/sys/block/nbd$n/pid missing: not configured"
[ "$(blockdev --getsize64 "$dev")" = 268435456 ] || fail "size $(blockdev --getsize64 "$dev")"
grep -q "^tapd:[0-9]*:kio$" "/sys/block/nbd$n/backend" ||
	fail "backend '$(cat "/sys/block/nbd$n/backend")'"
tapctl list | grep -q "$dev" || fail "tapctl list does not show $dev: $(tapctl list)"

mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev"
mount "$dev" "$mnt" || fail "mount $dev"
at_exit umount "$mnt"
for mode in 0 1; do
	t0=$(now)
	fio --name=verify --filename="$mnt/f$mode" --size=16M --bs=4k --rw=randwrite \
		--ioengine=libaio --iodepth=8 --direct=$mode --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --output="$T/fio" >/dev/null 2>&1 ||
		fail "fio verify direct=$mode: $(tail -n 20 "$T/fio")"
	measure "fio verify direct=$mode" "$(since "$t0") s"
done
umount "$mnt" || fail "umount"
e2fsck -fn "$dev" >"$T/fsck" 2>&1 || fail "fsck through $dev: $(cat "$T/fsck")"

t0=$(now)
tapctl detach kio || fail "detach"
measure "detach" "$(since "$t0") s"
wait_for 10 sh -c "! test -e /sys/block/nbd$n/pid" || fail "/sys/block/nbd$n/pid still there"
tapctl list | grep -q "$dev" && fail "tapctl list still shows $dev"
[ "$(blockdev --getsize64 "$dev" 2>/dev/null || echo 0)" = 0 ] || fail "$dev still sized"
e2fsck -fn "$img" >"$T/fsck" 2>&1 || fail "the backing file is not a clean ext4: $(cat "$T/fsck")"
log "ok"
