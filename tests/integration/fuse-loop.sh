#!/bin/bash
# A tap as a kernel block device: `tapctl attach --kind fuse` binds a loop
# device with direct I/O to the tap's file in STATE/fuse. Shown by list
# (table and JSON, the device number the kernel's); data written through
# the loop device reads back over NBD and the other way round; ext4 on it,
# mounted, fio with verify (direct and buffered) on a file there, umount,
# fsck clean. Detach and Destroy of the mounted device are refused naming
# the mount point; after umount detach works and no loop device is left.
. "$(dirname "$0")/lib.sh"
need mkfs.ext4 e2fsck fio losetup qemu-io findmnt
[ -c /dev/fuse ] && [ -c /dev/loop-control ] || skip "no /dev/fuse or /dev/loop-control"
start_bus
start_tapd

# Our loop devices: those bound to a file of this tapd's FUSE mount.
our_loops() { losetup -n -l -O NAME,BACK-FILE | awk -v d="$STATE/fuse/" 'index($2, d) == 1 { print $1 }'; }

truncate -s 256M "$T/a.img"
tapctl create --name a "raw:$T/a.img" >/dev/null || fail "create"
monitor_signals && SIGNALS=1 || SIGNALS=
[ -f "$STATE/fuse/a" ] || fail "no file for tap a in $STATE/fuse: $(ls -la "$STATE/fuse")"

DEV=$(tapctl attach a --kind fuse) || fail "attach: $(tail -5 "$TAPD_LOG")"
log "attached as $DEV"
[[ $DEV =~ ^/dev/loop[0-9]+$ ]] || fail "attach printed '$DEV', not a loop device"
[ -b "$DEV" ] || fail "$DEV is not a block device"
[ "$(our_loops)" = "$DEV" ] || fail "losetup shows $(our_loops), not $DEV, bound to $STATE/fuse/a"
[ "$(losetup -n -O DIO "$DEV" | tr -d ' ')" = 1 ] || fail "$DEV has no direct I/O: $(losetup -l "$DEV")"
[ "$(losetup -n -O AUTOCLEAR "$DEV" | tr -d ' ')" = 0 ] || fail "$DEV has autoclear on"
[ "$(blockdev --getsize64 "$DEV")" = $((256 << 20)) ] || fail "$DEV has the wrong size"

# list: the table's DEVICE column and the JSON devices array.
tapctl list | grep -E "^0 +a +running .* $DEV\$" >/dev/null || fail "list lacks $DEV: $(tapctl list)"
devnum=$(stat -c '%Hr:%Lr' "$DEV")
tapctl list --json | python3 -c 'import json, sys
t = json.load(sys.stdin)[0]
want = [{"kind": "fuse", "path": sys.argv[1], "devnum": sys.argv[2]}]
assert t["devices"] == want, (t["devices"], want)' "$DEV" "$devnum" ||
	fail "list --json devices wrong: $(tapctl list --json)"
bctl get-property org.xenproject.Tapd1 /org/xenproject/Tapd1/tap/0 org.xenproject.Tapd1.Tap \
	Devices | grep -qF "a(sss) 1 \"fuse\" \"$DEV\" \"$devnum\"" || fail "Devices property wrong"
# Devices changed: PropertiesChanged with the device in it.
if [ -n "$SIGNALS" ]; then
	for _ in $(seq 1 50); do grep -q "'Devices': <\[('fuse', '$DEV'" "$T/signals" && break; sleep 0.1; done
	grep -q "/tap/0: org.freedesktop.DBus.Properties.PropertiesChanged ('org.xenproject.Tapd1.Tap', {'Devices': <\[('fuse', '$DEV', '$devnum')\]>}" \
		"$T/signals" || fail "no PropertiesChanged for Devices: $(grep Devices "$T/signals")"
fi
# A second attach of the same tap is refused.
expect 1 "attached already as $DEV" tapctl attach a --kind fuse
errname org.xenproject.Tapd1.Error.AlreadyAttached /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Attach fuse

# --- data both ways: loop device <-> NBD ----------------------------------
head -c 4M /dev/urandom >"$T/blk"
dd if="$T/blk" of="$DEV" bs=1M seek=8 oflag=direct conv=fsync status=none || fail "dd to $DEV"
qemu-img convert -f raw "$(nbd_uri a)" -O raw "$T/nbd.raw" || fail "read over NBD"
cmp -n $((4 << 20)) "$T/blk" "$T/nbd.raw" -i 0:$((8 << 20)) ||
	fail "what was written through $DEV differs over NBD"
qemu-io -f raw -c "write -P 0xa7 32M 1M" -c "write -P 0x3c 33M 3000" "$(nbd_uri a)" >/dev/null ||
	fail "write over NBD"
dd if="$DEV" bs=1M skip=32 count=2 iflag=direct status=none >"$T/back" || fail "dd from $DEV"
python3 -c 'import sys
b = open(sys.argv[1], "rb").read()
assert b[:1 << 20] == b"\xa7" * (1 << 20), "first MiB"
assert b[1 << 20:(1 << 20) + 3000] == b"\x3c" * 3000, "the 3000 bytes"' "$T/back" ||
	fail "what NBD wrote reads back wrong through $DEV"
# Buffered reads of the device see it too (its page cache was empty).
dd if="$DEV" bs=1M skip=32 count=1 status=none | cmp -s - <(head -c 1M /dev/zero | tr '\0' '\247') ||
	fail "a buffered read of $DEV reads wrong data"

# --- a file system on it ---------------------------------------------------
mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4 on $DEV"
mkdir "$T/mnt"
mount "$DEV" "$T/mnt" || fail "mount $DEV"
FIO_SIZE=32M
[ "$SLOW" = 1 ] && FIO_SIZE=8M
fio_run() {
	local name=$1 rc=0
	shift
	(cd "$T" && fio --name="$name" --filename="$T/mnt/$name.dat" --size=$FIO_SIZE \
		--ioengine=libaio --verify=crc32c --verify_fatal=1 --verify_state_save=0 "$@" \
		--output="$T/$name.out" >/dev/null 2>"$T/$name.err") || rc=$?
	[ $rc = 0 ] || fail "fio $name exited $rc: $(cat "$T/$name.out" "$T/$name.err")"
	fio_check "$name"
}
fio_run direct --rw=randwrite --bs=4k --iodepth=16 --direct=1
fio_run buffered --rw=write --bs=64k --iodepth=4 --direct=0 --end_fsync=1
sync

# --- the consumer first: refused while mounted, naming the mount point ------
expect 1 "$DEV is mounted on $T/mnt" tapctl detach a
errname org.xenproject.Tapd1.Error.DeviceBusy /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Detach false
expect 1 "tap a is attached as a device that cannot be detached: $DEV is mounted on $T/mnt" \
	tapctl destroy a
errname org.xenproject.Tapd1.Error.TapBusy /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Destroy
tapctl list | grep -q " $DEV\$" || fail "a refused detach dropped $DEV from the list: $(tapctl list)"
findmnt -n "$T/mnt" >/dev/null || fail "the mount went away"
# The file system still works after the refusals.
echo still-here >"$T/mnt/after" && sync || fail "write to the mount after refusals"

umount "$T/mnt" || fail "umount"
e2fsck -fn "$DEV" >"$T/fsck.out" 2>&1 || fail "fsck of $DEV not clean: $(cat "$T/fsck.out")"

tapctl detach a || fail "detach after umount"
if [ -n "$SIGNALS" ]; then
	for _ in $(seq 1 50); do grep -q "'Devices': <@a(sss) \[\]>" "$T/signals" && break; sleep 0.1; done
	grep -q "'Devices': <@a(sss) \[\]>" "$T/signals" ||
		fail "no PropertiesChanged for the detach: $(grep Devices "$T/signals")"
fi
[ -z "$(our_loops)" ] || fail "a loop device is left after detach: $(losetup -l)"
tapctl list | grep -qE '^0 +a +running .* -$' || fail "list still shows a device: $(tapctl list)"
[ "$(tapctl list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["devices"])')" = "[]" ] ||
	fail "list --json still shows a device"
expect 1 "tap a is not attached" tapctl detach a
errname org.xenproject.Tapd1.Error.NotAttached /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Detach false

# The file system is in the image itself, clean.
e2fsck -fn "$T/a.img" >"$T/fsck2.out" 2>&1 || fail "fsck of the image: $(cat "$T/fsck2.out")"
debugfs -R "cat /after" "$T/a.img" 2>/dev/null | grep -q still-here ||
	fail "the file written last is not in the image"

tapctl destroy a || fail "destroy after detach"
stop_tapd || fail "tapd did not stop cleanly"
findmnt -n "$STATE/fuse" >/dev/null && fail "the FUSE mount is left after stop"
[ -z "$(our_loops)" ] || fail "a loop device is left after stop"
exit 0
