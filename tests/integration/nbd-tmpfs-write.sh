#!/bin/bash
# WRITEs of 32 KiB or more to a raw image on tmpfs, from a unix socket, go
# by splice(2): the payload moves from the socket into a pipe the
# connection keeps and from there into the file in pieces as it arrives.
# This checks what lands in the file: every size that decides the path
# (threshold, pieces, more than the pipe holds, unaligned, FUA, the end of
# the image), the stats, a pause that comes while a payload is half sent
# (the pause does not wait for the client, nothing lands while paused, the
# reply comes after), a client that hangs up mid-payload, a full tmpfs
# (ENOSPC to the client, and the same write works once space is freed),
# a client that trickles its payload (the pipe fills; the usual way takes
# over), one the usual way cannot take (EINVAL, in step after) and a QoS
# limit (no splice).
. "$(dirname "$0")/lib.sh"
need nbdsh python3
start_bus
start_tapd

tmpfs_dir "$T/mem" 128m
img=$T/mem/disk.raw
head -c 32M /dev/urandom >"$img"
tapctl create --name mem "raw:$img" >/dev/null || fail "create"
URI=$(nbd_uri mem)

pipes() { find "/proc/$TAPD_PID/fd" -lname 'pipe:*' | wc -l; }
p0=$(pipes)
pipes_back() {
	for _ in $(seq 50); do [ "$(pipes)" = "$p0" ] && return 0; sleep 0.1; done
	fail "tapd still has $(pipes) pipe fds after $1 (had $p0)"
}

# Shared by the python parts: the file, the tap's stats, tapd's pipes, and
# a bare NBD client for what libnbd will not do (stop mid-payload).
cat >"$T/common.py" <<'PY'
import json, os, select, socket, struct, subprocess

FILE, TAPCTL, SOCK = os.environ["FILE"], os.environ["TAPCTL"], os.environ["SOCK"]

def file_at(off, n, path=FILE):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)

def stats(name="mem"):
    out = subprocess.run([TAPCTL, "stats", "--json", name], check=True, timeout=60,
                         capture_output=True, text=True).stdout
    return json.loads(out)

def pipes():
    d = "/proc/%s/fd" % os.environ["TAPD_PID"]
    return sum(1 for e in os.listdir(d) if os.readlink(os.path.join(d, e)).startswith("pipe:"))

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        assert c, "tapd closed the connection after %d of %d bytes" % (len(b), n)
        b += c
    return b

def raw_client(name):
    """A connection in transmission (fixed newstyle, no structured replies)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(SOCK)
    assert recvn(s, 18)[:16] == b"NBDMAGICIHAVEOPT"
    s.sendall(struct.pack(">I", 3))
    n = name.encode()
    data = struct.pack(">I", len(n)) + n + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, ln)
        assert magic == 0x3E889045565A9 and opt == 7, "bad option reply"
        if typ == 1:
            return s
        assert typ == 3, "GO failed: reply type %x" % typ

def write_header(s, cookie, off, n, flags=0):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, 1, cookie, off, n))

def wait_taken(s):
    """Until tapd has taken everything s sent (nothing left in its queue)."""
    import fcntl, termios, time
    for _ in range(600):
        if struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("tapd did not take what was sent")

def reply(s, timeout=None):
    """(error, cookie) of the next simple reply; None if none comes in time."""
    if timeout is not None and not select.select([s], [], [], timeout)[0]:
        return None
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == 0x67446698, "bad reply magic %x" % magic
    return err, cookie
PY
export PYTHONPATH=$T FILE=$img TAPCTL SOCK=$NBD_SOCK TAPD_PID TAPD_LOG P0=$p0

# Sizes and places: each write is read back through tapd and from the file;
# the stats count each once, with its bytes; a connection that only writes
# has one pipe.
URI="$URI" nbdsh -c '
import os
from common import *
h.connect_uri(os.environ["URI"])
size = h.get_size()
cases = [  # (offset, length, flags)
    (0, 32768, 0),                    # the threshold: one piece
    (1 << 20, 32767, 0),              # under it: the usual way
    (2 << 20, 1 << 20, 0),            # pieces
    (4 << 20, 4 << 20, 0),            # more than the pipe holds
    ((9 << 20) + 4095, 200000, 0),    # unaligned
    (10 << 20, 1 << 20, nbd.CMD_FLAG_FUA),  # FUA: the usual way
    (size - (3 << 20), 3 << 20, 0),   # up to the end of the image
    (12 << 20, (1 << 20) + 4096, 0),  # a piece and a bit
]
before = stats()
total = 0
p0 = int(os.environ["P0"])
for off, n, flags in cases:
    data = os.urandom(n)
    h.pwrite(data, off, flags)
    assert file_at(off, n) == data, "the file lacks the write %d+%d (flags %d)" % (off, n, flags)
    if total == 0:
        # Nothing read yet on this connection: its one pipe is for writes.
        assert pipes() == p0 + 2, "%d pipe fds after a spliced write, %d before" % (pipes(), p0)
    assert h.pread(n, off) == data, "tapd reads back something else at %d+%d" % (off, n)
    total += n
after = stats()
assert after["writes"] - before["writes"] == len(cases), "writes counted: %d, made %d" % (after["writes"] - before["writes"], len(cases))
assert after["write_bytes"] - before["write_bytes"] == total, "write bytes counted: %d, written %d" % (after["write_bytes"] - before["write_bytes"], total)
assert after["errors"] == 0, "errors counted: %r" % after
h.shutdown()
print("ok")
' || fail "spliced writes"
pipes_back "the writer left"

# A pause while a payload is half sent: it does not wait for the client,
# nothing lands while the tap is paused, and the WRITE completes after.
python3 - <<'PY' || fail "a pause mid-payload"
import os, subprocess, time
from common import *
s = raw_client("mem")
off, n, first = 20 << 20, 1 << 20, 300 << 10
data = os.urandom(n)
before = stats()
write_header(s, 7, off, n)
s.sendall(data[:first])
wait_taken(s)
subprocess.run([TAPCTL, "pause", "mem"], check=True, timeout=60)
at_pause = file_at(off, n)
landed = next((i for i in range(n) if at_pause[i] != data[i]), n)
# It took 300 KiB: pieces of 128 KiB or more went in as they came.
assert 0 < landed <= first, "%d bytes landed of %d sent" % (landed, first)
print("landed before the pause: %d of %d sent" % (landed, first))
s.sendall(data[first:])
assert reply(s, 0.5) is None, "a reply while paused"
assert file_at(off, n) == at_pause, "the file changed while the tap was paused"
subprocess.run([TAPCTL, "unpause", "mem"], check=True, timeout=60)
assert reply(s, 60) == (0, 7), "the WRITE failed after the pause"
assert file_at(off, n) == data, "the file lacks the WRITE after the pause"
after = stats()
assert after["writes"] - before["writes"] == 1, "counted %d writes" % (after["writes"] - before["writes"])
assert after["write_bytes"] - before["write_bytes"] == n, "counted %d bytes" % (after["write_bytes"] - before["write_bytes"])
s.close()
PY
pipes_back "the client of the pause left"

# A client that hangs up mid-payload: tapd drops the WRITE, closes its
# pipe, counts no error and goes on serving.
python3 - <<'PY' || fail "a hang-up mid-payload"
import os, time
from common import *
s = raw_client("mem")
write_header(s, 1, 24 << 20, 1 << 20)
s.sendall(os.urandom(500 << 10))
time.sleep(0.2)
s.close()
PY
pipes_back "a client hung up mid-payload"
tapd_alive || fail "tapd died after a hang-up mid-payload"
URI="$URI" nbdsh -c '
import os
from common import *
h.connect_uri(os.environ["URI"])
data = os.urandom(1 << 20)
h.pwrite(data, 24 << 20)
assert h.pread(1 << 20, 24 << 20) == data and file_at(24 << 20, 1 << 20) == data
assert stats()["errors"] == 0, "errors counted after a hang-up"
' || fail "writes after a hang-up"

# A client that trickles its payload a byte at a time: every splice from
# the socket takes a pipe buffer, so the pipe fills before a page of the
# payload has come, and the WRITE goes on the usual way from there.
python3 - <<'PY' || fail "a trickled payload"
import os, time
from common import *
def fell_back():
    with open(os.environ["TAPD_LOG"]) as f:
        return "the pipe is full" in f.read()
s = raw_client("mem")
off, n = 28 << 20, 64 << 10
data = os.urandom(n)
before = stats()
write_header(s, 3, off, n)
sent = 0
while sent < n // 2 and not (sent % 64 == 0 and fell_back()):
    s.send(data[sent:sent + 1])
    sent += 1
    time.sleep(0.0002)
assert fell_back(), "the pipe never filled in %d one-byte sends" % sent
print("the pipe filled after %d one-byte sends" % sent)
s.sendall(data[sent:])
assert reply(s, 60) == (0, 3), "the trickled WRITE failed"
assert file_at(off, n) == data, "the file lacks the trickled WRITE"
after = stats()
assert (after["writes"] - before["writes"], after["write_bytes"] - before["write_bytes"]) == (1, n)
s.close()
PY
pipes_back "the trickling client left"

# A WRITE that has to go the usual way through a pool smaller than it:
# the pool shrank under it mid-payload, and a QoS limit makes the tap
# decline the next spliced piece. It is served in pieces (what waits in
# the write pipe first), lands whole, and the same connection goes on in
# step (issue 10, defect 6: it used to fail with EINVAL).
tapctl pool-create wp 8M >/dev/null || fail "pool-create"
tapctl set-pool mem wp >/dev/null || fail "set-pool"
python3 - <<'PY' || fail "a WRITE bigger than its shrunk pool"
import os, subprocess
from common import *
s = raw_client("mem")
off, n, first = 22 << 20, 2 << 20, 300 << 10
data = os.urandom(n)
write_header(s, 9, off, n)
s.sendall(data[:first])
wait_taken(s)
subprocess.run([TAPCTL, "pool-resize", "wp", "1M"], check=True, timeout=60)
subprocess.run([TAPCTL, "qos", "mem", "--bps", "1G"], check=True, timeout=60)
s.sendall(data[first:])
assert reply(s, 60) == (0, 9), "a WRITE bigger than the shrunk pool failed"
assert file_at(off, n) == data, "the WRITE served in pieces did not land whole"
# In step: a READ on the same connection reads what the file holds.
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 10, off, 65536))
assert reply(s, 60) == (0, 10), "the READ after it failed"
assert recvn(s, 65536) == file_at(off, 65536), "the READ after it is out of step"
s.close()
PY
tapctl qos mem --bps 0 >/dev/null || fail "clear qos"
tapctl set-pool mem default >/dev/null || fail "set-pool back"
tapctl pool-destroy wp >/dev/null || fail "pool-destroy"
pipes_back "the client of the shrunk pool left"

# A full tmpfs: the WRITE that does not fit fails with ENOSPC (part of it
# may have landed, as on any disk), and the same WRITE works once space
# is freed.
tmpfs_dir "$T/small" 4m
head -c 2M /dev/zero >"$T/small/filler"
truncate -s 16M "$T/small/disk.raw"
tapctl create --name small "raw:$T/small/disk.raw" >/dev/null || fail "create small"
SMALL=$T/small/disk.raw URI="$(nbd_uri small)" nbdsh -c '
import errno, os
from common import *
h.connect_uri(os.environ["URI"])
path = os.environ["SMALL"]
first, big = os.urandom(1 << 20), os.urandom(2 << 20)
h.pwrite(first, 0)
try:
    h.pwrite(big, 1 << 20)
    raise AssertionError("a 2 MiB WRITE fit in 1 MiB of free space")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, "expected ENOSPC, got %r" % e
os.unlink(os.path.join(os.path.dirname(path), "filler"))
h.pwrite(big, 1 << 20)
assert file_at(0, 1 << 20, path) == first and file_at(1 << 20, 2 << 20, path) == big
assert h.pread(2 << 20, 1 << 20) == big
assert stats("small")["errors"] >= 1, "the ENOSPC was not counted"
' || fail "ENOSPC on the splice path"
tapctl destroy small >/dev/null || fail "destroy small"

# Under a QoS limit WRITEs pay tokens like any other: no pipe, same data.
tapctl qos mem --bps 1G >/dev/null || fail "set qos"
URI="$URI" nbdsh -c '
import os
from common import *
h.connect_uri(os.environ["URI"])
data = os.urandom(1 << 20)
h.pwrite(data, 26 << 20)
assert file_at(26 << 20, 1 << 20) == data
assert pipes() == int(os.environ["P0"]), "a pipe was opened under QoS: %d pipe fds" % pipes()
' || fail "writes under a QoS limit"
tapctl qos mem --bps 0 >/dev/null || fail "clear qos"
log "ok"
