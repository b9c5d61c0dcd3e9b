#!/bin/bash
# The image allow-list and the file-type rule (issue 10): with --image-dir,
# CreateTap, Unpause and VHD parent locators open only files beneath the
# directory (no symlink or '..' leads out), block devices only when
# --device-allow names them; a FIFO, socket, character device or directory
# is never opened, with or without a list, so a FIFO as an image or as a
# VHD parent is refused at once and the daemon keeps answering. The same
# policy from a configuration file; an unknown key stops tapd at start.
. "$(dirname "$0")/lib.sh"
need busctl
need_libnbd
VHD=$TOP_BUILDDIR/tools/tapd-vhd
E=org.xenproject.Tapd1.Error
M=org.xenproject.Tapd1.Manager
R=/org/xenproject/Tapd1
# A refusal is immediate; the bound only catches a daemon stuck in open().
BOUND=5
[ "$SLOW" = 1 ] && BOUND=30

I=$T/images
O=$T/outside
mkdir -p "$I" "$O"
head -c 4M /dev/urandom >"$I/a.raw"
head -c 1M /dev/urandom >"$O/secret.raw"

# read_back NAME FILE: the tap's first 64 KiB over NBD are FILE's.
read_back() {
	nbdsh -u "$(nbd_uri "$1")" -c 'import sys; sys.stdout.buffer.write(h.pread(65536, 0))' \
		>"$T/got" || fail "cannot read tap $1"
	head -c 65536 "$2" | cmp -s - "$T/got" || fail "tap $1 does not serve $2"
}

# refused_fast RC REGEX CMD...: like expect, and answered within BOUND
# seconds while the daemon answers a list call meanwhile.
refused_fast() {
	local want=$1 pat=$2 t0 t1 rc=0
	shift 2
	t0=$(date +%s%N)
	"$@" >"$T/out" 2>"$T/err" &
	local pid=$!
	tapctl list >/dev/null || fail "tapd does not answer while $* runs"
	wait $pid || rc=$?
	t1=$(date +%s%N)
	[ "$rc" = "$want" ] || fail "$*: exit $rc, expected $want; stderr: $(cat "$T/err")"
	grep -qiE -- "$pat" "$T/err" || fail "$*: stderr lacks /$pat/: $(cat "$T/err")"
	[ $(((t1 - t0) / 1000000)) -lt $((BOUND * 1000)) ] ||
		fail "$*: took $(((t1 - t0) / 1000000)) ms"
}

# A FIFO as a raw image and as a VHD's parent; a character device and a
# directory as raw images.
mkfifo "$I/fifo.raw"
"$VHD" create "$I/p.vhd" 8M >/dev/null
"$VHD" snapshot "$I/fifo-child.vhd" "$I/p.vhd" >/dev/null
rm "$I/p.vhd"
mkfifo "$I/p.vhd"
mknod "$I/null.raw" c 1 3 2>/dev/null || true
check_types() {
	refused_fast 1 "is a FIFO" tapctl create "raw:$I/fifo.raw"
	errname $E.BadImage $R $M.CreateTap "raw:$I/fifo.raw" '{}'
	refused_fast 1 "is a FIFO" tapctl create "vhd:$I/fifo-child.vhd"
	[ -c "$I/null.raw" ] && expect 1 "is a character device" tapctl create "raw:$I/null.raw"
	expect 1 "is a directory" tapctl create "raw:$I"
	expect 1 "must be absolute" tapctl create "raw:images/a.raw"
}

start_bus

# 1. No list (the default): anywhere, but the file-type rule holds.
start_tapd
grep -q "images may be opened anywhere" "$TAPD_LOG" || fail "no notice of the open default"
check_types
[ "$(tapctl create --name out "raw:$O/secret.raw")" = out ] || fail "default refuses a file"
read_back out "$O/secret.raw"
stop_tapd || fail "tapd did not stop cleanly"

# 2. --image-dir.
start_tapd --image-dir "$I"
check_types
[ "$(tapctl create --name a "raw:$I/a.raw")" = a ] || fail "create inside"
read_back a "$I/a.raw"
expect 1 "not under an allowed image directory \(--image-dir\): /etc/passwd" \
	tapctl create raw:/etc/passwd
errname $E.PermissionDenied $R $M.CreateTap "raw:/etc/passwd" '{}'
expect 1 "not under an allowed image directory" tapctl create "raw:$O/secret.raw"
# Symlinks inside pointing out: absolute and relative; '..' out.
ln -s /etc/passwd "$I/passwd.raw"
ln -s ../outside/secret.raw "$I/rel.raw"
ln -s a.raw "$I/alias.raw"
expect 1 "leads out of the image directory" tapctl create "raw:$I/passwd.raw"
errname $E.PermissionDenied $R $M.CreateTap "raw:$I/passwd.raw" '{}'
expect 1 "leads out of the image directory" tapctl create "raw:$I/rel.raw"
expect 1 "leads out of the image directory" tapctl create "raw:$I/../outside/secret.raw"
expect 1 "leads out" tapctl create "raw:$I/./../../../../etc/passwd"
# A symlink that stays inside is fine (read-only: a.raw is open).
[ "$(tapctl create --read-only --name alias "raw:$I/alias.raw")" = alias ] ||
	fail "a symlink inside the directory is refused"
read_back alias "$I/a.raw"
# The error layer opens its inner image through the same path.
expect 1 "not under an allowed image directory" tapctl create "error:raw:$O/secret.raw"
# VHD: a chain inside works, a parent outside is refused.
"$VHD" create "$I/base.vhd" 8M >/dev/null
"$VHD" snapshot "$I/leaf.vhd" "$I/base.vhd" >/dev/null
[ "$(tapctl create --name v "vhd:$I/leaf.vhd")" = v ] || fail "a VHD chain inside is refused"
"$VHD" create "$O/obase.vhd" 8M >/dev/null
"$VHD" snapshot "$I/oleaf.vhd" "$O/obase.vhd" >/dev/null
expect 1 "not under an allowed image directory.*obase.vhd" tapctl create "vhd:$I/oleaf.vhd"
errname $E.PermissionDenied $R $M.CreateTap "vhd:$I/oleaf.vhd" '{}'
# Unpause onto a file outside is refused; the tap unpauses on its own.
tapctl pause a
expect 1 "not under an allowed image directory" tapctl unpause a raw:/etc/passwd
tapctl unpause a "raw:$I/a.raw"
read_back a "$I/a.raw"
# Block devices: a loop device where losetup works.
LOOP=
head -c 1M /dev/urandom >"$O/dev.img"
if LOOP=$(losetup -f --show "$O/dev.img" 2>/dev/null); then
	trap 'rc=$?; set +e; losetup -d "$LOOP"; (exit $rc); cleanup' EXIT
	expect 1 "not under an allowed image directory" tapctl create "raw:$LOOP"
	# A device node inside the directory is still a device.
	if mknod "$I/blk.raw" b $((0x$(stat -c %t "$LOOP"))) $((0x$(stat -c %T "$LOOP"))) 2>/dev/null; then
		expect 1 "block device not named by --device-allow" tapctl create "raw:$I/blk.raw"
		errname $E.PermissionDenied $R $M.CreateTap "raw:$I/blk.raw" '{}'
	fi
else
	log "losetup failed here: the block device part is skipped"
fi
[ "$(tapctl list --json | grep -c '"name"')" = 3 ] || fail "taps: $(tapctl list)"
stop_tapd || fail "tapd did not stop cleanly"

# 3. The same from a configuration file, with the loop device allowed.
cat >"$T/tapd.conf" <<CONF
# images
image-dir = $I
${LOOP:+device-allow = /dev/loop*}
${LOOP:+device-allow = $I/blk*}
CONF
start_tapd --config "$T/tapd.conf"
[ "$(tapctl create --name a "raw:$I/a.raw")" = a ] || fail "create inside (config)"
read_back a "$I/a.raw"
expect 1 "not under an allowed image directory" tapctl create raw:/etc/passwd
expect 1 "leads out" tapctl create "raw:$I/rel.raw"
refused_fast 1 "is a FIFO" tapctl create "vhd:$I/fifo-child.vhd"
if [ -n "$LOOP" ]; then
	[ "$(tapctl create --name dev "raw:$LOOP")" = dev ] || fail "--device-allow refused"
	read_back dev "$O/dev.img"
	[ -b "$I/blk.raw" ] && { [ "$(tapctl create --name blk "raw:$I/blk.raw")" = blk ] ||
		fail "an allowed device inside the directory is refused"; }
fi
stop_tapd || fail "tapd did not stop cleanly"

# Bad configuration stops tapd at start, naming the line.
printf 'image-dir = %s\nimage-dirs = /srv\n' "$I" >"$T/bad.conf"
rc=0
$TAPD_WRAPPER "$TAPD" --foreground --state-dir "$STATE" --nbd-socket "$T/x.sock" --bus "$DBUS_SYSTEM_BUS_ADDRESS" \
	--config "$T/bad.conf" >"$T/bad.out" 2>&1 || rc=$?
[ $rc = 2 ] || fail "tapd with an unknown setting: exit $rc"
grep -q "bad.conf:2: unknown setting 'image-dirs'" "$T/bad.out" || fail "$(cat "$T/bad.out")"
rc=0
$TAPD_WRAPPER "$TAPD" --foreground --state-dir "$STATE" --image-dir "$T/nodir" >"$T/bad.out" 2>&1 || rc=$?
[ $rc = 2 ] && grep -q "nodir" "$T/bad.out" || fail "a missing --image-dir: exit $rc: $(cat "$T/bad.out")"

# tapd(8) documents the policy and its default.
for w in '\-\-image\-dir' '\-\-device\-allow' '/etc/tapd/tapd.conf' 'RESOLVE_BENEATH' \
	'is that images' 'FIFO'; do
	grep -qF -- "$w" "$TOP_SRCDIR/man/tapd.8" || fail "tapd(8) does not document $w"
done
log "ok"
