#!/bin/bash
# Lifecycles around a tap attached as a loop device (--kind fuse):
# - Destroy of an attached idle tap detaches it first; no loop is left.
# - A paused attached tap holds its loop device's I/O: a reader blocks,
#   and gets its data once the tap is unpaused, without an error; another
#   tap's device goes on meanwhile, even with the paused one flooded.
# - Detach is refused while a process has the device open, naming it.
# - Detach --force of a mounted device: its user's I/O fails with EIO, the
#   device stays listed until the user lets go (umount), then it is gone.
# - A loop device removed behind tapd's back (losetup -d) leaves the list.
# - tapd stop detaches every device and unmounts STATE/fuse; a device
#   still mounted at stop goes once unmounted. Nothing is left behind.
# - After kill -9, the dead mount and its loop devices are cleaned up by
#   the next tapd, which mounts afresh; the loop devices also when the
#   mount went with the dead tapd's mount namespace.
. "$(dirname "$0")/lib.sh"
need mkfs.ext4 losetup findmnt
[ -c /dev/fuse ] && [ -c /dev/loop-control ] || skip "no /dev/fuse or /dev/loop-control"
start_bus
start_tapd

our_loops() { losetup -n -l -O NAME,BACK-FILE | awk -v d="$STATE/fuse/" 'index($2, d) == 1 { print $1 }'; }
# wait_until SECONDS CMD...: CMD succeeds within SECONDS (x5 under SLOW).
wait_until() {
	local n=$(($1 * 10))
	shift
	[ "$SLOW" = 1 ] && n=$((n * 5))
	for _ in $(seq 1 $n); do "$@" && return 0; sleep 0.1; done
	return 1
}
listed() { tapctl list | grep -qE "^[0-9]+ +$1 .* $2\$"; }
unlisted() { ! tapctl list | grep -q " $1\$"; }
no_loop() { [ -z "$(our_loops)" ]; }

# --- Destroy of an attached idle tap --------------------------------------
truncate -s 64M "$T/a.img"
tapctl create --name a "raw:$T/a.img" >/dev/null || fail "create a"
DEV=$(tapctl attach a --kind fuse) || fail "attach a"
tapctl destroy a || fail "destroy of an attached idle tap"
tapctl list | grep -qE '^[0-9]+ +a ' && fail "a is still listed"
no_loop || fail "destroy left $(our_loops)"
[ -e "$STATE/fuse/a" ] && fail "a's file is left"

# --- pause holds the device's I/O ------------------------------------------
head -c 8M /dev/urandom >"$T/p.img"
truncate -s 64M "$T/p.img"
tapctl create --name p "raw:$T/p.img" >/dev/null || fail "create p"
DEV=$(tapctl attach p --kind fuse) || fail "attach p"
tapctl pause p || fail "pause p"
dd if="$DEV" bs=1M count=8 iflag=direct status=none >"$T/p.read" 2>"$T/p.err" &
reader=$!
track_pid $reader
sleep 1
kill -0 $reader 2>/dev/null || fail "a read of a paused tap's device did not wait: $(cat "$T/p.err")"
[ "$(tap_state p)" = paused ] || fail "p is $(tap_state p)"
tapctl unpause p || fail "unpause p"
wait $reader || fail "the held read failed after unpause: $(cat "$T/p.err")"
cmp -n $((8 << 20)) "$T/p.read" "$T/p.img" || fail "the held read returned wrong data"
# Writes too.
tapctl pause p || fail "pause p again"
head -c 1M /dev/urandom >"$T/w"
dd if="$T/w" of="$DEV" bs=1M seek=20 oflag=direct status=none 2>"$T/p.err" &
writer=$!
track_pid $writer
sleep 1
kill -0 $writer 2>/dev/null || fail "a write to a paused tap's device did not wait"
tapctl unpause p || fail "unpause p again"
wait $writer || fail "the held write failed: $(cat "$T/p.err")"
cmp -n $((1 << 20)) "$T/w" "$T/p.img" -i 0:$((20 << 20)) || fail "the held write did not land"

# --- a paused tap under load holds up no other tap's device -----------------
# p2's device is flooded while p2 is paused: its requests park (up to the
# loop device's queue depth) and keep their buffers until its small pool
# runs dry, so more of its writes wait for memory. q2 (another pool) goes
# on all the same: the FUSE connection's background limit is not spent on
# p2, and the waiting writes do not hold the one receive buffer.
need fio
tapctl pool-create small 4M >/dev/null || fail "pool-create small"
truncate -s 64M "$T/p2.img" "$T/q2.img"
tapctl create --name p2 --pool small "raw:$T/p2.img" >/dev/null || fail "create p2"
tapctl create --name q2 "raw:$T/q2.img" >/dev/null || fail "create q2"
P2=$(tapctl attach p2 --kind fuse) || fail "attach p2"
Q2=$(tapctl attach q2 --kind fuse) || fail "attach q2"
tapctl pause p2 || fail "pause p2"
(cd "$T" && exec fio --name=park --filename="$P2" --ioengine=libaio --iodepth=128 --numjobs=2 \
	--rw=randrw --bs=64k --direct=1 --size=64M --time_based --runtime=600 \
	--output="$T/park.out" >/dev/null 2>&1) &
parker=$!
track_pid $parker
sleep $((1 + SLOW * 2))
head -c 4M /dev/urandom >"$T/q2.data"
(dd if="$T/q2.data" of="$Q2" bs=64k oflag=direct status=none &&
	dd if="$Q2" bs=64k count=64 iflag=direct status=none | cmp - "$T/q2.data") \
	>"$T/q2.out" 2>&1 &
q2io=$!
ok=
for _ in $(seq 1 $((100 * (1 + SLOW * 4)))); do
	kill -0 $q2io 2>/dev/null || { ok=1; break; }
	sleep 0.1
done
tapctl unpause p2 || fail "unpause p2"
[ -n "$ok" ] || fail "q2's device was held up while p2 was paused under load"
wait $q2io || fail "q2's I/O failed: $(cat "$T/q2.out")"
kill $parker 2>/dev/null
wait $parker 2>/dev/null || true
tapctl detach p2 && tapctl detach q2 || fail "detach p2, q2"
tapctl destroy p2 && tapctl destroy q2 || fail "destroy p2, q2"

# --- open by a process: refused, naming it ----------------------------------
exec 6<"$DEV"
expect 1 "$DEV is open by pid $$ \(bash\); close it first" tapctl detach p
exec 6<&-
listed p "$DEV" || fail "a refused detach dropped the device"
[ "$(losetup -n -O AUTOCLEAR "$DEV" | tr -d ' ')" = 0 ] || fail "the refusal left autoclear on"

# --- forced detach of a mounted device --------------------------------------
mkfs.ext4 -q -F "$DEV" || fail "mkfs"
mkdir "$T/mnt"
mount "$DEV" "$T/mnt" || fail "mount"
head -c 64k /dev/urandom >"$T/mnt/f" && sync
tapctl detach --force p || fail "forced detach"
listed p "$DEV" || fail "a forced device still mounted left the list: $(tapctl list)"
expect 1 "goes once its user closes it" tapctl destroy p
dd if="$DEV" bs=4k count=1 iflag=direct of=/dev/null 2>"$T/err" && fail "I/O after a forced detach worked"
grep -q "Input/output error" "$T/err" || fail "I/O after a forced detach: $(cat "$T/err")"
umount "$T/mnt" 2>/dev/null || umount -l "$T/mnt"
wait_until 5 no_loop || fail "the forced device is left after its user let go: $(our_loops)"
wait_until 5 unlisted "$DEV" || fail "still listed: $(tapctl list)"
tapctl destroy p || fail "destroy p after the forced detach"

# --- removed behind tapd's back ---------------------------------------------
truncate -s 16M "$T/b.img"
tapctl create --name b "raw:$T/b.img" >/dev/null || fail "create b"
DEV=$(tapctl attach b --kind fuse) || fail "attach b"
losetup -d "$DEV" || fail "losetup -d"
wait_until 5 unlisted "$DEV" || fail "$DEV still listed: $(tapctl list)"
tapctl destroy b || fail "destroy b"

# --- stop: nothing left ---------------------------------------------------------
truncate -s 16M "$T/x.img" "$T/y.img"
tapctl create --name x "raw:$T/x.img" >/dev/null || fail "create x"
tapctl create --name y "raw:$T/y.img" >/dev/null || fail "create y"
XDEV=$(tapctl attach x --kind fuse) || fail "attach x"
YDEV=$(tapctl attach y --kind fuse) || fail "attach y"
mkfs.ext4 -q -F "$YDEV" || fail "mkfs y"
mount "$YDEV" "$T/mnt" || fail "mount y"
stop_tapd || fail "tapd did not stop cleanly with a device mounted"
findmnt -n "$STATE/fuse" >/dev/null && fail "the FUSE mount is left after stop"
our_loops | grep -qx "$XDEV" && fail "$XDEV is left after stop" # (another test may bind it next)
umount "$T/mnt" 2>/dev/null || umount -l "$T/mnt"
wait_until 5 no_loop || fail "$YDEV is left once unmounted after stop: $(our_loops)"

# --- kill -9: the next tapd cleans up ---------------------------------------------
start_tapd
tapctl create --name k "raw:$T/x.img" >/dev/null || fail "create k"
KDEV=$(tapctl attach k --kind fuse) || fail "attach k"
kill -KILL "$TAPD_PID"
wait "$TAPD_PID" 2>/dev/null || true
TAPD_PID=
findmnt -n "$STATE/fuse" >/dev/null || fail "no dead mount to clean after kill -9"
[ "$(our_loops)" = "$KDEV" ] || fail "no dead loop device to clean after kill -9: $(losetup -l)"
start_tapd
# Cleaned on threads of their own: the log lines may follow the start.
wait_until 10 grep -q "was left mounted by a tapd that stopped: unmounted" "$TAPD_LOG" ||
	fail "the dead mount was not reported"
wait_until 10 grep -q "$KDEV was left bound to a file of $STATE/fuse by a tapd that stopped" \
	"$TAPD_LOG" || fail "the dead loop device was not reported"
wait_until 5 no_loop || fail "the dead loop device is left: $(our_loops)"
[ "$(findmnt -n -o FSTYPE "$STATE/fuse")" = fuse.tapd ] || fail "no fresh mount"
tapctl create --name k "raw:$T/x.img" >/dev/null || fail "create k again"
[ "$(stat -c %s "$STATE/fuse/k")" = $((16 << 20)) ] || fail "the fresh mount does not serve k"
DEV=$(tapctl attach k --kind fuse) || fail "attach k again"
# Again, but the dead tapd's mount went with its mount namespace (as under
# systemd's ProtectSystem): its loop device is cleaned all the same.
kill -KILL "$TAPD_PID"
wait "$TAPD_PID" 2>/dev/null || true
TAPD_PID=
umount -l "$STATE/fuse"
# The kernel now shows its file as "/k", not under $STATE.
dead_k() { [ "$(losetup -n -O BACK-FILE "$DEV" 2>/dev/null | tr -d ' ')" = /k ]; }
dead_k || fail "no dead loop device after the second kill -9: $(losetup -l)"
start_tapd
k_gone() { ! dead_k; }
wait_until 5 k_gone ||
	fail "a dead loop device without its mount is left: $(losetup -l "$DEV")"
wait_until 10 grep -q "$DEV was left bound to a file of $STATE/fuse" "$TAPD_LOG" || fail "not reported"
tapctl create --name k "raw:$T/x.img" >/dev/null || fail "create k a third time"
DEV=$(tapctl attach k --kind fuse) || fail "attach k a third time"
tapctl detach k || fail "detach k"
log "all checks passed"
exit 0
