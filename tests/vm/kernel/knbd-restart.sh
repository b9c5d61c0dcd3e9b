#!/bin/bash
# A mounted /dev/nbdN survives kill -9 of tapd: systemd restarts tapd, the
# tap is made again with the same name (by hand here: recording taps is
# not this test's), and `tapctl attach --kind nbd` gives the same device
# new connections (NBD_CMD_RECONFIGURE) instead of a new device. A fio
# verify job running across the kill finishes without an I/O error (the
# kernel held its I/O for the dead connection timeout), the data written
# before reads back, and the file system checks clean.
. "$(dirname "$0")/../lib.sh"
need mkfs.ext4 e2fsck modprobe fio

modprobe nbd || fail "modprobe nbd"
img=/var/tmp/vm-knbd-restart.img
rm -f "$img"
truncate -s 256M "$img"
at_exit rm -f "$img"
start_tapd
tapctl create --name kr "raw:$img" >/dev/null || fail "create"
dev=$(tapctl attach kr --kind nbd) || fail "attach --kind nbd"
n=${dev#/dev/nbd}
at_exit tapctl destroy kr
at_exit tapctl detach --force kr
wait_for 10 test -b "$dev" || fail "no $dev node"
mnt=$T/mnt
mkdir -p "$mnt"
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4"
mount "$dev" "$mnt" || fail "mount"
at_exit umount "$mnt"
make_image "$mnt/before" 8M
sync -f "$mnt"
sum=$(sha256sum <"$mnt/before")

# fio verify across the kill.
fio --name=across --filename="$mnt/across" --size=16M --bs=4k --rw=randwrite \
	--ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output="$T/fio" >/dev/null 2>&1 &
fio_pid=$!
track_pid $fio_pid
sleep 3
old=$(tapd_pid)
grep -q "^tapd:$old:kr$" "/sys/block/nbd$n/backend" ||
	fail "backend '$(cat "/sys/block/nbd$n/backend")', not tapd:$old:kr"
t0=$(now)
kill -9 "$old"
wait_for 30 sh -c "p=\$(systemctl show -P MainPID tapd.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $old ] && [ \"\$(systemctl show -P ActiveState tapd.service)\" = active ]" ||
	fail "systemd did not restart tapd: $(systemctl status --no-pager tapd 2>&1 | tail -n 5)"
test -e "/sys/block/nbd$n/pid" || fail "$dev is not configured any more after the kill"
tapctl create --name kr "raw:$img" >/dev/null || fail "create again"
dev2=$(tapctl attach kr --kind nbd) || fail "attach after the restart"
measure "kill -9 to reattached" "$(since "$t0") s"
[ "$dev2" = "$dev" ] || fail "attach after the restart made $dev2, not $dev again"
journalctl -u tapd.service --no-pager -n 50 | grep -q "is $dev (reconfigured" ||
	fail "tapd did not say it reconfigured $dev"

wait $fio_pid || fail "fio across the kill: $(tail -n 20 "$T/fio")"
measure "fio across kill -9" "$(since "$t0") s after the kill"
dmesg | grep -i "nbd$n" | tail -n 5 >&2 || true
[ "$(sha256sum <"$mnt/before")" = "$sum" ] || fail "the file written before the kill differs"
fio --name=after --filename="$mnt/after" --size=8M --bs=4k --rw=randwrite \
	--ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output="$T/fio" >/dev/null 2>&1 || fail "fio after: $(tail -n 20 "$T/fio")"
umount "$mnt" || fail "umount"
e2fsck -fn "$dev" >"$T/fsck" 2>&1 || fail "fsck: $(cat "$T/fsck")"
dmesg | grep -E "nbd$n.*(I/O error|Buffer I/O)" >&2 && fail "the kernel logged I/O errors on $dev"
tapctl detach kr || fail "detach"
wait_for 10 sh -c "! test -e /sys/block/nbd$n/pid" || fail "/sys/block/nbd$n/pid still there"
log "ok"
