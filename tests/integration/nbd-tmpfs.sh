#!/bin/bash
# A raw image on tmpfs is memory: tapd copies it inline instead of going
# through AIO, and sends READs of 32 KiB or more by splice(2), the tmpfs
# pages going into the socket by reference through a pipe the connection
# keeps. This checks what a client gets back on that path: every size and
# offset that decides it (under the threshold, unaligned, holes, more than
# the pipe holds), with structured and simple replies, with more READs in
# flight than the pipe can take, writes read back, reads under a QoS limit
# (no splice), fio verify across pause cycles; and that the pipe is opened
# by a connection that splices and closed with it.
. "$(dirname "$0")/lib.sh"
need nbdsh python3 qemu-img fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
start_bus
start_tapd

tmpfs_dir "$T/mem" 256m
img=$T/mem/disk.raw
# 48 MiB of data, then 16 MiB never written (a hole).
head -c 48M /dev/urandom >"$img"
truncate -s 64M "$img"
tapctl create --name mem "raw:$img" >/dev/null || fail "create"
URI=$(nbd_uri mem)

pipes() { find "/proc/$TAPD_PID/fd" -lname 'pipe:*' | wc -l; }
p0=$(pipes)

# Every read is compared with the file; the pipe count is checked while
# the connections are open.
URI="$URI" FILE="$img" TAPD_PID="$TAPD_PID" P0="$p0" nbdsh -c '
import os, random
uri, path = os.environ["URI"], os.environ["FILE"]
f = open(path, "rb")
def want(off, n):
    f.seek(off)
    return f.read(n)
def pipes():
    d = "/proc/%s/fd" % os.environ["TAPD_PID"]
    return sum(1 for e in os.listdir(d) if os.readlink(os.path.join(d, e)).startswith("pipe:"))
p0 = int(os.environ["P0"])

cases = [(0, 32768), (0, 32767), (4095, 32768), (12345, 1 << 20), (0, 1 << 20),
         (4095, 1 << 20), (7 << 20, 4 << 20), (47 << 20, 2 << 20), (48 << 20, 1 << 20),
         ((64 << 20) - 65536, 65536), (3 << 20, 65536 * 3 + 7)]
conns = []
for structured in (True, False):
    c = nbd.NBD()
    c.set_request_structured_replies(structured)
    c.connect_uri(uri)
    conns.append(c)
    for off, n in cases:
        got = c.pread(n, off)
        assert got == want(off, n), "structured=%s read %d+%d differs" % (structured, off, n)
    # More READs in flight than the pipe holds (64 x 256 KiB = 16 MiB):
    # most wait for room, and all come back right, in any order.
    rnd = random.Random(7)
    bufs = []
    for i in range(64):
        off = rnd.randrange(0, (64 << 20) - (256 << 10))
        b = nbd.Buffer(256 << 10)
        c.aio_pread(b, off)
        bufs.append((off, b))
    while c.aio_in_flight() > 0:
        c.poll(-1)
    for off, b in bufs:
        assert b.to_bytearray() == want(off, 256 << 10), "aio read at %d differs" % off
    assert pipes() == p0 + 2 * len(conns), "expected one pipe per splicing connection, tapd has %d (before: %d)" % (pipes(), p0)

# Writes of every size land, and read back through the splicing path.
c = conns[0]
data = os.urandom((1 << 20) + 4096)
c.pwrite(data, 5 << 20)
c.pwrite(data[:5000], (60 << 20) + 3)
assert c.pread(len(data), 5 << 20) == data
assert c.pread(5000, (60 << 20) + 3) == data[:5000]
assert want(5 << 20, len(data)) == data, "the file does not hold what was written"
for c in conns:
    c.shutdown()
print("ok")
' || fail "reads over the splice path"

# The connections are gone: so are their pipes.
pipes_back() {
	for _ in $(seq 50); do [ "$(pipes)" = "$p0" ] && return 0; sleep 0.1; done
	fail "tapd still has $(pipes) pipe fds after $1 (had $p0)"
}
pipes_back "the clients left"

# A client that hangs up with spliced replies queued and READs waiting for
# pipe room: tapd drops them, closes the pipe and goes on serving.
URI="$URI" nbdsh -c '
import os, socket
h.connect_uri(os.environ["URI"])
for i in range(64):
    h.aio_pread(nbd.Buffer(1 << 20), i << 20 if i < 48 else 0)
h.poll(0)
# Close the socket under libnbd, replies unread.
os.close(h.aio_get_fd())
os._exit(0)
' || fail "the hanging-up client"
pipes_back "a client hung up mid-reply"
qemu-img compare -f raw -F raw "$img" "$URI" >"$T/cmp" 2>&1 || fail "after the hang-up: $(cat "$T/cmp")"

# The whole image, as qemu-img sees it (structured replies, its own sizes).
qemu-img compare -f raw -F raw "$img" "$URI" >"$T/cmp" 2>&1 || fail "qemu-img compare: $(cat "$T/cmp")"

# Under a QoS limit reads pay tokens like any other (no splice), and still
# read right.
tapctl qos mem --bps 1G >/dev/null || fail "set qos"
URI="$URI" FILE="$img" TAPD_PID="$TAPD_PID" P0="$p0" nbdsh -c '
import os
h.connect_uri(os.environ["URI"])
f = open(os.environ["FILE"], "rb")
f.seek(4096)
assert h.pread(1 << 20, 4096) == f.read(1 << 20)
d = "/proc/%s/fd" % os.environ["TAPD_PID"]
n = sum(1 for e in os.listdir(d) if os.readlink(os.path.join(d, e)).startswith("pipe:"))
assert n == int(os.environ["P0"]), "a pipe was opened under QoS: %d pipe fds, %s before" % (n, os.environ["P0"])
' || fail "read under a QoS limit"
tapctl qos mem --bps 0 >/dev/null || fail "clear qos"

# A pool limit set and then lifted leaves nothing behind: splicing is back.
tapctl pool-qos default --bps 1G >/dev/null || fail "set pool qos"
tapctl pool-qos default --bps 0 --iops 0 >/dev/null || fail "clear pool qos"
URI="$URI" TAPD_PID="$TAPD_PID" P0="$p0" nbdsh -c '
import os
h.connect_uri(os.environ["URI"])
h.pread(1 << 20, 0)
d = "/proc/%s/fd" % os.environ["TAPD_PID"]
n = sum(1 for e in os.listdir(d) if os.readlink(os.path.join(d, e)).startswith("pipe:"))
assert n == int(os.environ["P0"]) + 2, "no pipe after the pool limit was lifted: %d pipe fds" % n
' || fail "splice after a lifted pool limit"

# fio, sizes both sides of the threshold, verify, across pause cycles;
# beside it a reader of big blocks, so that spliced READs arrive (and wait
# for pipe room) while the tap is paused and take the usual path then.
(cd "$T" && fio --name=mix --ioengine=nbd --uri="$URI" --size=32M --bsrange=4k-1m \
	--rw=randwrite --iodepth=16 --time_based --runtime=6 --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --verify_state_save=0 --output="$T/mix.out" >/dev/null 2>"$T/mix.err") &
FIO=$!
track_pid $FIO
(cd "$T" && fio --name=rd --ioengine=nbd --uri="$URI" --offset=32M --size=16M \
	--bsrange=32k-1m --rw=randread --iodepth=32 --time_based --runtime=4 \
	--output="$T/rd.out" >/dev/null 2>"$T/rd.err") &
RD=$!
track_pid $RD
sleep 1
for i in 1 2 3; do
	tapctl pause mem || fail "pause $i"
	sleep 0.2
	tapctl unpause mem || fail "unpause $i"
	sleep 0.3
done
kill -0 $FIO 2>/dev/null || fail "fio ended during the pause cycles: $(cat "$T/mix.out" "$T/mix.err")"
kill -0 $RD 2>/dev/null || fail "the reader ended during the pause cycles: $(cat "$T/rd.out" "$T/rd.err")"
rc=0
wait $RD || rc=$?
[ $rc = 0 ] || fail "the reader exited $rc: $(cat "$T/rd.out" "$T/rd.err")"
grep -qE 'err= *0' "$T/rd.out" || fail "the reader saw an error: $(cat "$T/rd.out")"
rc=0
wait $FIO || rc=$?
[ $rc = 0 ] || fail "fio exited $rc: $(cat "$T/mix.out" "$T/mix.err")"
fio_check mix

tapctl stats --json mem >"$T/stats" || fail "stats"
grep -qE '"errors": 0' "$T/stats" || fail "errors counted: $(cat "$T/stats")"
grep -qE '"reads": [1-9]' "$T/stats" || fail "no reads counted: $(cat "$T/stats")"
log "ok"
