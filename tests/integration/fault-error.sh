#!/bin/bash
# The error image layer (fault injection). EIO on reads and ENOSPC on writes
# reach NBD clients (nbdsh, qemu-io) with that errno, while the other
# operations pass through: writes under a read fault are on disk, read back
# once the layer is removed (unpause on the bare image). A trigger file
# turns faults on when it appears and off when it goes; delay-ms makes
# replies late. Bad option strings are refused at create, naming the key.
# A bystander tap is checked for its data after every step: the daemon and
# the taps carry on.
. "$(dirname "$0")/lib.sh"
need qemu-io
need_libnbd

start_bus
start_tapd

# The bystander: a tap the faults must never touch.
head -c 4M /dev/urandom >"$T/by.img"
cp "$T/by.img" "$T/by.want"
tapctl create --name by "raw:$T/by.img" >/dev/null || fail "create by"
check_bystander() {
	qemu-img convert -f raw "$(nbd_uri by)" -O raw "$T/by.read" ||
		fail "bystander read ($1)"
	cmp -s "$T/by.want" "$T/by.read" || fail "bystander data wrong ($1)"
}

# --- bad option strings: refused, naming the key ------------------------
truncate -s 16M "$T/d.img"
expect 1 "takes no option 'colour'" tapctl create "error,colour=red:raw:$T/d.img"
expect 1 "bad errno 'EFOO'" tapctl create "error,errno=EFOO:raw:$T/d.img"
expect 1 "bad rate '2'" tapctl create "error,rate=2:raw:$T/d.img"
expect 1 "bad ops 'read\+frobnicate' at 'frobnicate'" \
	tapctl create "error,ops=read+frobnicate:raw:$T/d.img"
expect 1 "'errno' is given twice" tapctl create "error,errno=EIO,errno=EIO:raw:$T/d.img"
expect 1 "more than 16" tapctl create \
	"error$(for i in $(seq 1 17); do printf ',k%d=1' "$i"; done):raw:$T/d.img"
expect 1 "raw takes no option 'lock'" tapctl create "raw,lock=off:$T/d.img"
expect 1 "'rate': it wants a value" tapctl create "error,rate=:raw:$T/d.img"
expect 1 "bad delay-ms '999999'" tapctl create "error,delay-ms=999999:raw:$T/d.img"
expect 1 "trigger 'rel/x': want an absolute path" \
	tapctl create "error,trigger=rel/x:raw:$T/d.img"
expect 1 "cannot watch its directory" \
	tapctl create "error,trigger=$T/no/such/dir/x:raw:$T/d.img"
[ "$(tapctl list | grep -c .)" -le 2 ] || fail "a refused create left a tap: $(tapctl list)"
check_bystander "bad options"

# --- EIO on reads; writes pass through -----------------------------------
tapctl create --name rd "error,errno=EIO,ops=read:raw:$T/d.img" >/dev/null ||
	fail "create error layer over raw"
URI=$(nbd_uri rd) nbdsh -c '
import errno, os
h.connect_uri(os.environ["URI"])
for off in (0, 4096, 1 << 20):
    try:
        h.pread(4096, off)
        raise SystemExit("read at %d succeeded under ops=read" % off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
# The same connection carries on: writes and flushes work.
h.pwrite(b"\x5a" * 65536, 0)
h.pwrite(b"\xa5" * 4096, 1 << 20)
h.flush()
try:
    h.pread(512, 0)
    raise SystemExit("read succeeded after writes")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
' || fail "EIO on reads through nbdsh"
qemu-io -f raw -c "read 0 4k" "$(nbd_uri rd)" >"$T/qio.out" 2>&1 && fail "qemu-io read succeeded"
grep -q "Input/output error" "$T/qio.out" || fail "qemu-io saw no EIO: $(cat "$T/qio.out")"
tapctl list | grep -E '^ *[0-9]+ +rd ' | grep -q running || fail "rd is not running: $(tapctl list)"
check_bystander "EIO on reads"
# The writes are in the image: remove the layer and read them back.
tapctl pause rd >/dev/null || fail "pause rd"
tapctl unpause rd "raw:$T/d.img" >/dev/null || fail "unpause rd without the layer"
qemu-io -f raw -c "read -P 0x5a 0 64k" -c "read -P 0xa5 1M 4k" -c "read -P 0 64k 4k" \
	"$(nbd_uri rd)" >"$T/qio.out" 2>&1 || fail "read back: $(cat "$T/qio.out")"
grep -q "verification failed" "$T/qio.out" && fail "wrong data read back: $(cat "$T/qio.out")"
# And the layer goes back on the same tap.
tapctl pause rd >/dev/null && tapctl unpause rd "error,errno=EIO,ops=read:raw:$T/d.img" >/dev/null ||
	fail "unpause rd with the layer again"
qemu-io -f raw -c "read 0 4k" "$(nbd_uri rd)" >/dev/null 2>&1 && fail "read after the layer came back"
tapctl destroy rd >/dev/null || fail "destroy rd"

# --- ENOSPC on writes -------------------------------------------------------
truncate -s 16M "$T/s.img"
tapctl create --name sp "error,errno=ENOSPC,ops=write:raw:$T/s.img" >/dev/null ||
	fail "create ENOSPC layer"
qemu-io -f raw -c "write -P 0x11 0 64k" "$(nbd_uri sp)" >"$T/qio.out" 2>&1 &&
	fail "write succeeded under ENOSPC"
grep -q "No space left on device" "$T/qio.out" || fail "no ENOSPC: $(cat "$T/qio.out")"
URI=$(nbd_uri sp) nbdsh -c '
import errno, os
h.connect_uri(os.environ["URI"])
try:
    h.pwrite(b"x" * 4096, 8192)
    raise SystemExit("pwrite succeeded under ENOSPC")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
assert h.pread(4096, 8192) == bytes(4096), "reads pass, and the write did not happen"
h.flush()
' || fail "ENOSPC through nbdsh"
[ "$(od -An -tx1 -N4 -j8192 "$T/s.img" | tr -d ' ')" = 00000000 ] || fail "a failed write reached the file"
check_bystander "ENOSPC"
tapctl destroy sp >/dev/null

# --- a trigger file turns faults on and off ---------------------------------
truncate -s 16M "$T/t.img"
trig=$T/trigger
tapctl create --name tr "error,errno=EPERM,trigger=$trig:raw:$T/t.img" >/dev/null ||
	fail "create triggered layer"
# A connection held across the flips: the trigger acts on live sessions.
mkfifo "$T/tr.in"
URI=$(nbd_uri tr) nbdsh -c '
import errno, os, sys
h.connect_uri(os.environ["URI"])
for line in sys.stdin:
    want = line.strip()
    try:
        h.pwrite(b"\x77" * 4096, 0)
        got = "ok"
    except nbd.Error as e:
        got = "EPERM" if e.errnum == errno.EPERM else "errno %d" % e.errnum
    print(want, got, flush=True)
' <"$T/tr.in" >"$T/tr.out" 2>&1 &
held=$!
track_pid $held
exec 4>"$T/tr.in"
# probe WANT: ask the held session to write until it sees WANT (the watch
# reaches the loop a moment after the file changes), at most 5 s.
probe() {
	local n
	for n in $(seq 1 50); do
		echo "$1-$n" >&4
		for _ in $(seq 1 100); do grep -q "^$1-$n " "$T/tr.out" && break; sleep 0.05; done
		grep -q "^$1-$n $1\$" "$T/tr.out" && return 0
		sleep 0.1
	done
	fail "the trigger did not turn faults ${2}: $(tail -3 "$T/tr.out")"
}
probe ok off
touch "$trig"
probe EPERM on
check_bystander "trigger on"
rm "$trig"
probe ok off
# A rename into place counts as the file appearing, and out as it going.
touch "$T/staged"
mv "$T/staged" "$trig"
probe EPERM on
mv "$trig" "$T/staged"
probe ok off
exec 4>&-
wait $held || fail "the held session failed: $(cat "$T/tr.out")"
grep -q "errno" "$T/tr.out" && fail "unexpected errno from the triggered layer: $(cat "$T/tr.out")"
grep -q "trigger $trig appeared: faults on" "$TAPD_LOG" || fail "trigger not logged"
tapctl destroy tr >/dev/null

# --- delay-ms: replies come late, and other taps do not wait ----------------
# Under valgrind every reply is slow: a longer delay keeps "late" apart.
DELAY=400
[ -n "$TAPD_WRAPPER" ] && DELAY=2000
truncate -s 16M "$T/l.img"
tapctl create --name slow "error,rate=0,delay-ms=$DELAY,ops=read:raw:$T/l.img" >/dev/null ||
	fail "create delay layer"
DELAY=$DELAY URI=$(nbd_uri slow) BY=$(nbd_uri by) nbdsh -c '
import os, time
delay = int(os.environ["DELAY"]) / 1000
h.connect_uri(os.environ["URI"])
by = nbd.NBD()
by.connect_uri(os.environ["BY"])
h.pwrite(b"\x42" * 4096, 0)                # writes are not delayed
t = time.monotonic()
assert h.pread(4096, 0) == b"\x42" * 4096
slow = time.monotonic() - t
assert slow >= delay * 0.9, "a delayed read took only %.3f s" % slow
# Eight delayed reads in flight at once: one timer serves them all, and
# the bystander answers meanwhile.
bufs = [nbd.Buffer(4096) for _ in range(8)]
cookies = [h.aio_pread(b, i * 4096) for i, b in enumerate(bufs)]
t = time.monotonic()
by.pread(4096, 0)
fast = time.monotonic() - t
while h.aio_in_flight() > 0:
    h.poll(-1)
total = time.monotonic() - t
for c in cookies:
    h.aio_command_completed(c)
assert fast < slow, "the bystander waited %.3f s behind the delay" % fast
assert total >= delay * 0.9 and total < delay * 4, "8 delayed reads took %.3f s" % total
print("delay %.3f s, bystander %.3f s, 8 in flight %.3f s" % (slow, fast, total))
' >"$T/delay.out" 2>&1 || fail "delay-ms: $(cat "$T/delay.out")"
log "$(cat "$T/delay.out")"
tapctl destroy slow >/dev/null

tapd_alive || fail "tapd died"
check_bystander "the end"
log "PASS"
