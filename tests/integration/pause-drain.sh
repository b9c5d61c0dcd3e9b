#!/bin/bash
# Pause on a slow image: Pause() answers only once the write in flight is
# done, and tapd keeps answering other calls meanwhile (no blocking, no
# nested loop). The image is a file on nbdfuse over nbdkit's delay filter,
# so each write takes 2 s. Then SIGTERM while a Pause is pending: the
# caller gets an answer and tapd exits 0.
. "$(dirname "$0")/lib.sh"
need nbdkit nbdfuse qemu-io busctl stdbuf
[ -c /dev/fuse ] || skip "no /dev/fuse"
nbdkit --dump-plugin memory >/dev/null 2>&1 || skip "nbdkit has no memory plugin"
nbdkit --filter=delay --dump-plugin memory >/dev/null 2>&1 || skip "nbdkit has no delay filter"
start_bus
start_tapd

R=/org/xenproject/Tapd1
state() { busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.xenproject.Tapd1 \
	"$R/tap/0" org.xenproject.Tapd1.Tap State; }
ms() { echo $(($(date +%s%N) / 1000000)); }

nbdkit -U "$T/kit.sock" -f --filter=delay memory 16M wdelay=2 2>"$T/kit.log" &
track_pid $!
for _ in $(seq 1 100); do [ -S "$T/kit.sock" ] && break; sleep 0.05; done
mkdir "$T/mnt"
nbdfuse "$T/mnt/disk" "nbd+unix:///?socket=$T/kit.sock" 2>"$T/fuse.log" &
track_pid $!
for _ in $(seq 1 100); do [ -e "$T/mnt/disk" ] && break; sleep 0.05; done
[ -e "$T/mnt/disk" ] || skip "nbdfuse did not mount: $(cat "$T/fuse.log")"
tapctl create --name slow "raw:$T/mnt/disk" >/dev/null ||
	skip "tapd cannot open a file on nbdfuse: $(tail -n 3 "$TAPD_LOG")"
URI=$(nbd_uri slow)

# ---- Pause waits for the write in flight ----------------------------------
# Line-buffered, so "wrote" shows when the reply arrives, not at exit.
stdbuf -oL qemu-io -f raw -c 'write -P 0x11 0 4k' "$URI" >"$T/w1.out" 2>&1 &
W1=$!
track_pid $W1
for _ in $(seq 1 100); do
	tapctl stats slow | grep -q '^inflight *1$' && break
	sleep 0.02
done
tapctl stats slow | grep -q '^inflight *1$' || fail "the write is not in flight: $(tapctl stats slow)"
t0=$(ms)
tapctl pause slow >"$T/pause.out" 2>&1 &
P=$!
track_pid $P
sleep 0.3
# tapd answers while the Pause call is pending.
[ "$(state)" = 's "pausing"' ] || fail "state while draining: $(state)"
tapctl list | grep -q ' pausing ' || fail "list does not show pausing: $(tapctl list)"
kill -0 $P 2>/dev/null || fail "Pause answered before the write was done: $(cat "$T/pause.out")"
rc=0
tapctl pause slow 2>"$T/err" || rc=$?
if [ $rc != 1 ] || ! grep -q 'already pausing' "$T/err"; then
	fail "second pause: exit $rc, $(cat "$T/err")"
fi
rc=0
tapctl unpause slow 2>"$T/err" || rc=$?
if [ $rc != 1 ] || ! grep -q 'pausing, not paused' "$T/err"; then
	fail "unpause while pausing: exit $rc, $(cat "$T/err")"
fi
rc=0
wait $P || rc=$?
took=$(($(ms) - t0))
[ $rc = 0 ] || fail "pause failed (exit $rc): $(cat "$T/pause.out")"
[ $took -ge 1000 ] || fail "Pause answered after $took ms, before the 2 s write was done"
[ "$(state)" = 's "paused"' ] || fail "state after Pause returned: $(state)"
# The write was answered before the pause; qemu-io's flush at exit now
# waits for the unpause.
for _ in $(seq 1 50); do grep -q 'wrote 4096/4096' "$T/w1.out" && break; sleep 0.02; done
grep -q 'wrote 4096/4096' "$T/w1.out" || fail "the write in flight was not answered: $(cat "$T/w1.out")"
log "Pause answered after $took ms"
tapctl unpause slow || fail "unpause failed"
rc=0
wait $W1 || rc=$?
[ $rc = 0 ] || fail "qemu-io failed after unpause (exit $rc): $(cat "$T/w1.out")"
qemu-io -f raw -c 'read -P 0x11 0 4k' "$URI" >"$T/r.out" 2>&1 || fail "read back: $(cat "$T/r.out")"

# ---- SIGTERM while a Pause is pending -------------------------------------
qemu-io -f raw -c 'write -P 0x22 4k 4k' "$URI" >"$T/w2.out" 2>&1 &
W2=$!
track_pid $W2
for _ in $(seq 1 100); do
	tapctl stats slow | grep -q '^inflight *1$' && break
	sleep 0.02
done
tapctl pause slow >"$T/pause2.out" 2>&1 &
P=$!
track_pid $P
sleep 0.3
[ "$(state)" = 's "pausing"' ] || fail "state before SIGTERM: $(state)"
rc=0
stop_tapd || rc=$?
[ $rc = 0 ] || fail "tapd exited $rc on SIGTERM with a Pause pending"
# The Pause caller got an answer: paused (the write drained first) or
# refused because tapd stopped; not a timeout.
rc=0
wait $P || rc=$?
case $rc in
0) ;;
1) grep -qiE 'stopping|shutting|not running' "$T/pause2.out" ||
	fail "pause during stop: $(cat "$T/pause2.out")" ;;
*) fail "pause during stop: exit $rc: $(cat "$T/pause2.out")" ;;
esac
exit 0
