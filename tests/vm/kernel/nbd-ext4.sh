#!/bin/bash
# A tap as a kernel block device through bookworm's nbd-client over tapd's
# unix socket: mkfs.ext4, mount, write, unmount, detach; attached again the
# file system checks clean and holds the same bytes, and the tap's backing
# file is that file system.
. "$(dirname "$0")/../lib.sh"
need nbd-client mkfs.ext4 e2fsck modprobe

modprobe nbd || fail "modprobe nbd"
start_tapd
img=/var/tmp/vm-nbd.img
rm -f "$img"
truncate -s 256M "$img"
at_exit rm -f "$img"
tapctl create --name kdisk "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy kdisk

dev=/dev/nbd0
mnt=$T/mnt
mkdir -p "$mnt"
attach() {
	local t0
	t0=$(now)
	nbd-client -unix "$NBD_SOCK" "$dev" -N kdisk -b 4096 >"$T/attach" 2>&1 ||
		fail "nbd-client: $(cat "$T/attach")"
	wait_for 10 sh -c "[ \"\$(blockdev --getsize64 $dev)\" = 268435456 ]" ||
		fail "$dev did not get the tap's size: $(blockdev --getsize64 $dev)"
	measure "nbd-client attach" "$(since "$t0") s"
}
detach() { nbd-client -d "$dev" >/dev/null 2>&1; }
at_exit detach
at_exit umount "$mnt"

attach
[ "$(blockdev --getss "$dev")" = 4096 ] || fail "block size $(blockdev --getss "$dev"), asked for 4096"
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev"
mount "$dev" "$mnt" || fail "mount $dev"
make_image "$mnt/data" 32M
cp "$mnt/data" "$T/data"
sync -f "$mnt"
sum=$(sha256sum <"$T/data")
umount "$mnt" || fail "umount"
detach
wait_for 10 sh -c "[ \"\$(blockdev --getsize64 $dev 2>/dev/null || echo 0)\" = 0 ]" || fail "$dev still sized after -d"

# The writes reached the tap's file: it is a clean ext4 holding the data.
e2fsck -fn "$img" >"$T/fsck" 2>&1 || fail "the backing file is not a clean ext4: $(cat "$T/fsck")"

attach
e2fsck -fn "$dev" >"$T/fsck" 2>&1 || fail "fsck through NBD: $(cat "$T/fsck")"
mount -o ro "$dev" "$mnt" || fail "mount again"
[ "$(sha256sum <"$mnt/data")" = "$sum" ] || fail "the file read back differs"
umount "$mnt"
detach
log "ok"
