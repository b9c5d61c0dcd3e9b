#!/bin/bash
# Faults of a remote filer behind an nbd: tap, made by nbdkit's error and
# delay filters. Errors the server answers reach tapd's client as the same
# errno (EIO on reads, ENOSPC on writes, turned on and off by trigger
# files); a server that takes requests and never answers them (delay-read
# far beyond the tap's ?timeout=) fails them with EIO within the bound, all
# of them, and the tap then carries on over a new connection. A bystander
# tap is read and checked while the remote stalls: other taps do not wait.
. "$(dirname "$0")/lib.sh"
need nbdkit qemu-io
need_libnbd
for f in error delay; do
	nbdkit --filter=$f null --help >/dev/null 2>&1 || skip "nbdkit has no $f filter"
done

start_bus
start_tapd


# The bound: short, but longer under valgrind, where every step is slow.
TMO=2
SLACK=3
[ -n "$TAPD_WRAPPER" ] && TMO=4 && SLACK=20

head -c 4M /dev/urandom >"$T/by.img"
cp "$T/by.img" "$T/by.want"
tapctl create --name by "raw:$T/by.img" >/dev/null || fail "create by"

# --- errors the server answers ------------------------------------------
esock=$T/error.sock
nbdkit --foreground --unix "$esock" --filter=error memory 64M \
	error-pread=EIO error-pread-rate=100% error-pread-file="$T/rinj" \
	error-pwrite=ENOSPC error-pwrite-rate=100% error-pwrite-file="$T/winj" \
	>"$T/nbdkit-error.log" 2>&1 &
track_pid $!
wait_sock "$esock"
tapctl create --name rem "nbd:nbd+unix:///?socket=$esock&timeout=$TMO" >/dev/null ||
	fail "create over the error filter"
RINJ=$T/rinj WINJ=$T/winj URI=$(nbd_uri rem) nbdsh -c '
import errno, os
h.connect_uri(os.environ["URI"])
def expect(what, err, f, *a):
    try:
        f(*a)
    except nbd.Error as e:
        assert e.errnum == err, "%s: errno %d, want %d" % (what, e.errnum, err)
        return
    raise SystemExit("%s succeeded" % what)
h.pwrite(b"\x11" * 65536, 0)
assert h.pread(65536, 0) == b"\x11" * 65536
open(os.environ["RINJ"], "w").close()
for _ in range(4):
    expect("read under EIO", errno.EIO, h.pread, 4096, 0)
h.pwrite(b"\x22" * 4096, 0)          # writes still pass
os.unlink(os.environ["RINJ"])
assert h.pread(4096, 0) == b"\x22" * 4096
open(os.environ["WINJ"], "w").close()
expect("write under ENOSPC", errno.ENOSPC, h.pwrite, b"\x33" * 4096, 0)
assert h.pread(4096, 0) == b"\x22" * 4096, "a refused write changed the data"
os.unlink(os.environ["WINJ"])
h.pwrite(b"\x44" * 4096, 0)
h.flush()
assert h.pread(4096, 0) == b"\x44" * 4096
' || fail "errors of the remote through nbdsh"
touch "$T/rinj"
qemu-io -f raw -c "read 0 4k" "$(nbd_uri rem)" >"$T/qio.out" 2>&1 && fail "qemu-io read succeeded"
grep -q "Input/output error" "$T/qio.out" || fail "qemu-io saw no EIO: $(cat "$T/qio.out")"
rm "$T/rinj"
# A server that answers errors is not a broken one: no reconnects.
grep -q "nbd: .*error.sock.*reconnecting" "$TAPD_LOG" && fail "errors made the driver reconnect"

# --- a server that stalls -------------------------------------------------
ssock=$T/stall.sock
# -t 1: nbdkit 1.32's worker threads race its reader when the client drops
# the connection with requests asleep in the delay filter, and it aborts
# (connections.c: raw_send_socket: Assertion `sock >= 0'); one thread per
# connection cannot race. Its requests are then served one at a time: the
# first read holds the rest, and all of them stall, as the test wants.
nbdkit --foreground -t 1 --unix "$ssock" --filter=error --filter=delay memory 64M \
	error-rate=0 delay-read=600 >"$T/nbdkit-stall.log" 2>&1 &
track_pid $!
wait_sock "$ssock"
tapctl create --name stall "nbd:nbd+unix:///?socket=$ssock&timeout=$TMO" >/dev/null ||
	fail "create over the delay filter"
TMO=$TMO SLACK=$SLACK WANT=$T/by.want BY=$(nbd_uri by) URI=$(nbd_uri stall) nbdsh -c '
import errno, os, time
tmo, slack = int(os.environ["TMO"]), int(os.environ["SLACK"])
want = open(os.environ["WANT"], "rb").read()
h.connect_uri(os.environ["URI"])
by = nbd.NBD()
by.connect_uri(os.environ["BY"])
h.pwrite(b"\x55" * 4096, 0)                 # writes are not delayed
bufs = [nbd.Buffer(4096) for _ in range(8)]
t0 = time.monotonic()
cookies = [h.aio_pread(b, i * 4096) for i, b in enumerate(bufs)]
# While the remote holds them, the bystander answers, with its data.
n = 0
while h.aio_in_flight() > 0:
    off = (n * 65536) % len(want)
    assert by.pread(4096, off) == want[off:off + 4096], "bystander data at %d" % off
    n += 1
    h.poll(50)
    assert time.monotonic() - t0 < tmo + slack, "reads still pending after %.1f s" % (
        time.monotonic() - t0)
took = time.monotonic() - t0
for c in cookies:
    try:
        h.aio_command_completed(c)
        raise SystemExit("a stalled read succeeded")
    except nbd.Error as e:
        assert e.errnum == errno.EIO, "stalled read: errno %d" % e.errnum
assert took >= tmo - 0.2, "EIO after %.2f s, before the %d s bound" % (took, tmo)
assert n >= 5, "only %d bystander reads during the stall" % n
# The tap carries on: a new connection takes writes.
h.pwrite(b"\x66" * 4096, 8192)
h.flush()
print("8 stalled reads failed with EIO after %.2f s (bound %d s); %d bystander reads meanwhile"
      % (took, tmo, n))
' >"$T/stall.out" 2>&1 || fail "stall: $(cat "$T/stall.out")"
log "$(cat "$T/stall.out")"
grep -q "no reply for $TMO s (server stalled)" "$TAPD_LOG" || fail "the stall was not logged"
tapctl list >/dev/null || fail "tapctl list after the stall"
# qemu-io sees the same EIO, within the bound.
start=$SECONDS
qemu-io -f raw -c "read 64k 4k" "$(nbd_uri stall)" >"$T/qio.out" 2>&1 &&
	fail "qemu-io read of a stalled server succeeded"
grep -q "Input/output error" "$T/qio.out" || fail "qemu-io saw no EIO: $(cat "$T/qio.out")"
[ $((SECONDS - start)) -le $((TMO + SLACK)) ] || fail "qemu-io waited $((SECONDS - start)) s"
tapctl destroy stall >/dev/null || fail "destroy the stalled tap"
tapctl destroy rem >/dev/null || fail "destroy rem"

tapd_alive || fail "tapd died"
qemu-img convert -f raw "$(nbd_uri by)" -O raw "$T/by.read" || fail "bystander read at the end"
cmp -s "$T/by.want" "$T/by.read" || fail "bystander data wrong at the end"
log "PASS"
