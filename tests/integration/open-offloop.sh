#!/bin/bash
# Opening an image never holds up the loop (issue 10, defect 7). Storage
# that hangs is made real: a VHD served by nbdkit with its delay filter,
# seen as a file through nbdfuse (FUSE), so that reading its metadata at
# open blocks in the kernel; and an NBD server that accepts and never says
# a word. While such opens hang, another tap's 4k reads keep their p99 and
# the bus answers at once; the caller gets TimedOut after --open-timeout
# (the late result is closed when it comes); an unpause onto a hung image
# leaves the tap paused; and at most 16 opens are in flight, counting the
# stuck ones: the next is refused at once, and all is well again once the
# storage comes back.
. "$(dirname "$0")/lib.sh"
need nbdkit nbdfuse fusermount3 socat qemu-img
need_libnbd
[ -e /dev/fuse ] || skip "no /dev/fuse"

TMO=3
[ "$SLOW" = 1 ] && TMO=10

start_bus
start_tapd --open-timeout $TMO

head -c 8M /dev/urandom >"$T/by.img"
tapctl create --name by "raw:$T/by.img" >/dev/null || fail "create by"

# A dynamic VHD, served slowly: every read sleeps DELAY s in nbdkit.
qemu-img create -q -f vpc -o subformat=dynamic "$T/slow.vhd" 64M
qemu-img create -q -f vpc -o subformat=dynamic "$T/good.vhd" 64M
DELAY=$((TMO + 2))

# slow_mount NAME SECONDS [FILE]: $T/NAME/slow.vhd, FILE (default
# $T/slow.vhd) read through FUSE (nbdfuse) from nbdkit, whose every read
# sleeps SECONDS; nbdkit's pid in $KIT.
slow_mount() {
	nbdkit --foreground -U "$T/$1.sock" --filter=delay file "${3:-$T/slow.vhd}" \
		delay-read="$2" >"$T/$1-kit.log" 2>&1 &
	KIT=$!
	track_pid $KIT
	wait_sock "$T/$1.sock"
	mkdir "$T/$1"
	nbdfuse "$T/$1/slow.vhd" --unix "$T/$1.sock" >"$T/$1-fuse.log" 2>&1 &
	track_pid $!
	for _ in $(seq 1 100); do [ -f "$T/$1/slow.vhd" ] && break; sleep 0.1; done
	[ -f "$T/$1/slow.vhd" ] || fail "nbdfuse did not mount: $(cat "$T/$1-fuse.log")"
}
# At exit, the FUSE files go first (reads stuck on them then fail with
# ENOTCONN: a process stuck in FUSE cannot exit), then the rest.
unstick() {
	pkill -f "nbdfuse $T/" 2>/dev/null || true
	for m in "$T"/mnt*; do fusermount3 -uz "$m" 2>/dev/null || true; done
}
trap 'rc=$?; set +e; unstick; (exit $rc); cleanup' EXIT
slow_mount mnt $DELAY

# Time a command in ms into $ms.
timed() {
	local t0 t1
	t0=$(date +%s%N)
	"$@"
	local rc=$?
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	return $rc
}

# --- a VHD whose metadata reads hang ------------------------------------
probe_start by "$(nbd_uri by)" "$T/by.img" $((TMO + 2))
tapctl create --name hung "vhd:$T/mnt/slow.vhd" >"$T/hung.out" 2>&1 &
HUNG=$!
sleep 1
timed tapctl list >"$T/list.out" || fail "tapctl list while an open hangs"
log "tapctl list answered in $ms ms while an image open hung"
[ "$SLOW" = 1 ] || [ $ms -lt 1000 ] || fail "tapctl list took $ms ms while an open hung"
grep -q ' hung ' "$T/list.out" && fail "a tap still opening is listed: $(cat "$T/list.out")"
# Its name is taken meanwhile.
expect 1 "exists already" tapctl create --name hung "raw:$T/by.img"
rc=0
wait $HUNG || rc=$?
[ $rc != 0 ] || fail "create over hung storage succeeded: $(cat "$T/hung.out")"
grep -q "TimedOut\|no answer after $TMO s" "$T/hung.out" ||
	fail "create over hung storage: no timeout error: $(cat "$T/hung.out")"
log "create over hung storage: $(tail -1 "$T/hung.out")"
probe_check by 50
[ -z "$(tap_state hung)" ] || fail "the timed-out tap is listed"
# The name is free again; the late result is closed when it comes.
tapctl create --name hung "vhd:$T/good.vhd" >/dev/null || fail "name not freed after the timeout"
tapctl destroy hung >/dev/null
for _ in $(seq 1 $((DELAY * 20))); do
	grep -q "slow.vhd: opened after $TMO s, too late; closing it\|slow.vhd.*still opening" \
		"$TAPD_LOG" && break
	sleep 0.5
done
grep -q "slow.vhd: opened after $TMO s, too late; closing it" "$TAPD_LOG" ||
	fail "the late open was not closed"

# --- the open of a stacked tap given up before it reaches its parent -----
# K's child VHD reads slowly; its parent is served by tap G (--parent G).
# K's create times out (K is gone) before the open gets to tap:G; when it
# does, it must not take gone K for the tap being opened, and the late
# chain, closed, gives G back: G can then be destroyed.
VHD=$TOP_BUILDDIR/tools/tapd-vhd
"$VHD" create "$T/gold.vhd" 8M >/dev/null
"$VHD" snapshot "$T/child.vhd" "$T/gold.vhd" >/dev/null
slow_mount mntc $DELAY "$T/child.vhd"
tapctl create --name G --read-only "vhd:$T/gold.vhd" >/dev/null || fail "create G"
tapctl pool-create pk 1M >/dev/null
expect 1 "no answer after $TMO s" tapctl create --name K --pool pk --parent G "vhd:$T/mntc/slow.vhd"
for _ in $(seq 1 $((DELAY * 20))); do
	grep -qE "mntc/slow.vhd: (opened after $TMO s, too late; closing it|the open given up on failed too)" \
		"$TAPD_LOG" && break
	sleep 0.5
done
grep -qE "mntc/slow.vhd: (opened after $TMO s, too late; closing it|the open given up on failed too)" \
	"$TAPD_LOG" || fail "the late open of K never ended"
[ -z "$(tap_state K)" ] || fail "K is listed after its create timed out"
tapctl destroy G || fail "G still held after K's late chain was closed"

# --- an NBD server that accepts and never answers ----------------------
socat UNIX-LISTEN:"$T/mute.sock",fork SYSTEM:"sleep 600" >/dev/null 2>&1 &
track_pid $!
wait_sock "$T/mute.sock"
probe_start by2 "$(nbd_uri by)" "$T/by.img" 4
start=$SECONDS
tapctl create --name mute "nbd:nbd+unix:///?socket=$T/mute.sock" >"$T/mute.out" 2>&1 &
MUTE=$!
sleep 1
timed tapctl list >/dev/null || fail "tapctl list while a handshake hangs"
[ "$SLOW" = 1 ] || [ $ms -lt 1000 ] || fail "tapctl list took $ms ms while a handshake hung"
rc=0
wait $MUTE || rc=$?
[ $rc != 0 ] || fail "create over a mute server succeeded"
log "create over a mute NBD server failed after $((SECONDS - start)) s: $(tail -1 "$T/mute.out")"
[ $((SECONDS - start)) -le $((TMO + 5)) ] || fail "create over a mute server took $((SECONDS - start)) s"
probe_check by2 50

# An unpause onto it: refused within the bound, the tap stays paused and
# unpauses on its own image afterwards, its data intact.
tapctl pause by >/dev/null || fail "pause by"
rc=0
tapctl unpause by "nbd:nbd+unix:///?socket=$T/mute.sock" >"$T/unpause.out" 2>&1 || rc=$?
[ $rc != 0 ] || fail "unpause onto a mute server succeeded"
[ "$(tap_state by)" = paused ] || fail "by is $(tap_state by) after a failed unpause"
tapctl unpause by >/dev/null || fail "unpause by on its own image"
[ "$(tap_state by)" = running ] || fail "by is $(tap_state by)"
F=$T/by.img nbdsh -u "$(nbd_uri by)" -c '
import os
want = open(os.environ["F"], "rb").read()
assert h.pread(len(want), 0) == want, "by reads back wrong"
' || fail "by's data after the failed unpause"

# Both opens over the mute server end in the driver's own 5 s handshake
# bound, after their callers were answered (or, under valgrind's longer
# timeout, before): they must not count from now on.
for _ in $(seq 1 100); do
	n=$(grep -cE "mute.sock: the open given up on failed too|(not created|still paused): nbd: .*mute.sock.*timed out" \
		"$TAPD_LOG" || true)
	[ "$n" -ge 2 ] && break
	sleep 0.2
done
[ "$n" -ge 2 ] || fail "the opens over the mute server never ended"

# --- at most 16 opens in flight, the stuck ones counted ----------------
# Storage that stays hung for as long as the test needs: until nbdkit dies.
slow_mount mnt2 600
KIT2=$KIT
truncate -s 1M "$T/h17.img"
pids=
for i in $(seq 1 16); do
	tapctl create --read-only --name "h$i" "vhd:$T/mnt2/slow.vhd" >"$T/h$i.out" 2>&1 &
	pids="$pids $!"
done
sleep 1
start=$SECONDS
expect 1 "16 image opens are in progress" tapctl create --name h17 "raw:$T/h17.img"
[ $((SECONDS - start)) -le 2 ] || fail "the 17th open was not refused at once"
for p in $pids; do wait "$p" && fail "a create over hung storage succeeded"; done
# Still stuck after their callers gave up: still counted.
expect 1 "16 image opens are in progress" tapctl create --name h17 "raw:$T/h17.img"
# The storage comes back, as errors: the FUSE connection is aborted (as
# fusectl(8) allows), the stuck reads fail, the opens end, slots free up.
conn=$(($(stat -c %d "$T/mnt2") & 0xff))
[ -d /sys/fs/fuse/connections ] && [ -n "$(ls /sys/fs/fuse/connections)" ] ||
	mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null || true
if [ -w "/sys/fs/fuse/connections/$conn/abort" ]; then
	echo 1 >"/sys/fs/fuse/connections/$conn/abort"
else
	kill -9 $KIT2 # nbdfuse 1.14 may then abort on an assertion of its own
fi
for _ in $(seq 1 $((DELAY * 10))); do
	tapctl create --name h17 "raw:$T/h17.img" >/dev/null 2>&1 && break
	sleep 0.5
done
[ "$(tap_state h17)" = running ] || fail "opens still refused after the storage came back"
tapctl destroy h17 >/dev/null

tapd_alive || fail "tapd died"
log "PASS"
