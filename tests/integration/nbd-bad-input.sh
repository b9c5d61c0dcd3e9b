#!/bin/bash
# Bad input on the NBD socket: garbage, truncated handshakes and requests,
# bad magic, unknown options and commands, oversized lengths, out-of-range
# offsets, writes to a read-only tap. Each gets the protocol's error reply
# or a clean disconnect; after each the daemon is alive and serves others.
. "$(dirname "$0")/lib.sh"
need nbdinfo nbdsh python3
# nbdsh runs "python3" from PATH; the libnbd module lives in the system one.
need_libnbd

start_bus
start_tapd

truncate -s 16M "$T/disk.raw"
truncate -s 1M "$T/ro.raw"
printf 'read-only data' | dd of="$T/ro.raw" conv=notrunc status=none
tapctl create --name good "raw:$T/disk.raw" >/dev/null || fail "tapctl create good failed"
tapctl create --name ro --read-only "raw:$T/ro.raw" >/dev/null || fail "tapctl create ro failed"

still_serving() {
	tapd_alive || fail "tapd died after: $1"
	nbdinfo "$(nbd_uri good)" >/dev/null 2>&1 || fail "nbdinfo fails after: $1"
}

# Raw protocol pokes: each scenario exits 0 when the server behaved.
cat >"$T/poke.py" <<'PY'
import os, socket, struct, sys

SOCK, CASE = sys.argv[1], sys.argv[2]
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC, REPLY_MAGIC = 0x25609513, 0x67446698
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN, ERR_TOO_BIG = (1 << 31) + 1, (1 << 31) + 3, (1 << 31) + 6, (1 << 31) + 9
EPERM, EINVAL, ENOSPC = 1, 22, 28
SIZE = 16 << 20

def die(msg):
    print("poke %s: %s" % (CASE, msg), file=sys.stderr)
    sys.exit(1)

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(SOCK)
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            die("server closed after %d of %d bytes" % (len(b), n))
        b += c
    return b

def send_maybe(s, data):
    # The server may hang up before all of it is sent: that is the point.
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass

def expect_close(s):
    # The server must hang up: EOF (or reset), never a timeout.
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return
    except ConnectionResetError:
        return
    except socket.timeout:
        die("server did not close the connection")

def greet(s, flags=3):
    g = recvn(s, 18)
    if g[:16] != b"NBDMAGICIHAVEOPT":
        die("bad greeting %r" % g)
    if struct.unpack(">H", g[16:])[0] != 3:
        die("handshake flags are not FIXED_NEWSTYLE|NO_ZEROES")
    s.sendall(struct.pack(">I", flags))

def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)

def reply(s, o):
    magic, ro, typ, ln = struct.unpack(">QIII", recvn(s, 20))
    if magic != REP_MAGIC or ro != o:
        die("bad option reply magic %x opt %d" % (magic, ro))
    return typ, recvn(s, ln)

def go_data(name, infos=()):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)

def go(s, name):
    opt(s, 7, go_data(name, (3,)))
    size = None
    while True:
        typ, data = reply(s, 7)
        if typ == 1:
            break
        if typ != 3:
            die("GO %s failed: reply %x %r" % (name, typ, data))
        if struct.unpack(">H", data[:2])[0] == 0:
            size, flags = struct.unpack(">QH", data[2:12])
    if size is None:
        die("GO without NBD_INFO_EXPORT")
    return size, flags

def request(s, typ, cookie, off, ln, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, off, ln) + payload)

def simple_reply(s):
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    if magic != REPLY_MAGIC:
        die("bad reply magic %x" % magic)
    return err, cookie

def ready(name="good"):
    s = connect()
    greet(s)
    go(s, name)
    return s

def check_read(s, cookie, off, ln, want=None):
    request(s, 0, cookie, off, ln)
    err, c = simple_reply(s)
    if err or c != cookie:
        die("read failed: err %d cookie %x" % (err, c))
    data = recvn(s, ln)
    if want is not None and data != want:
        die("read returned wrong data")

c = CASE
if c == "garbage":
    s = connect(); recvn(s, 18)
    send_maybe(s, os.urandom(4096)); expect_close(s)
elif c == "garbage-at-once":
    s = connect(); send_maybe(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(1000)); expect_close(s)
elif c == "bad-client-flags":
    s = connect(); greet(s, 0xffffffff); expect_close(s)
elif c == "truncated-handshake":
    s = connect(); recvn(s, 18); s.sendall(b"\0\0"); s.close()
    s = connect(); greet(s); s.sendall(struct.pack(">QI", IHAVEOPT, 7)); s.close()
    s = connect(); greet(s); s.sendall(struct.pack(">QII", IHAVEOPT, 7, 100) + b"x" * 10); s.close()
elif c == "bad-option-magic":
    s = connect(); greet(s); s.sendall(struct.pack(">QII", 0x1122334455667788, 7, 0)); expect_close(s)
elif c == "options":
    s = connect(); greet(s)
    for o in (0x1234, 5, 4, 11):      # unknown, STARTTLS (for now), PEEK_EXPORT, EXTENDED_HEADERS
        opt(s, o, b"xyz" if o == 0x1234 else b"")
        typ, msg = reply(s, o)
        if typ != ERR_UNSUP:
            die("option %d: reply %x, wanted ERR_UNSUP" % (o, typ))
    opt(s, 8, b"x")                  # STRUCTURED_REPLY takes no data
    if reply(s, 8)[0] != ERR_INVALID:
        die("STRUCTURED_REPLY with data: wanted ERR_INVALID")
    opt(s, 10, struct.pack(">I", 4) + b"good" + struct.pack(">I", 0))   # SET before STRUCTURED_REPLY
    if reply(s, 10)[0] != ERR_INVALID:
        die("SET_META_CONTEXT without structured replies: wanted ERR_INVALID")
    for bad in (b"", struct.pack(">I", 4) + b"go",
                struct.pack(">I", 4) + b"good" + struct.pack(">II", 1, 9) + b"base:"):
        opt(s, 9, bad)               # malformed LIST_META_CONTEXT
        if reply(s, 9)[0] != ERR_INVALID:
            die("malformed LIST_META_CONTEXT %r: wanted ERR_INVALID" % bad)
    opt(s, 9, struct.pack(">I", 6) + b"nosuch" + struct.pack(">I", 0))
    if reply(s, 9)[0] != ERR_UNKNOWN:
        die("LIST_META_CONTEXT of an unknown export: wanted ERR_UNKNOWN")
    opt(s, 3, b"junk")
    if reply(s, 3)[0] != ERR_INVALID:
        die("LIST with data: wanted ERR_INVALID")
    for bad in (b"", b"\0\0\0\x05ab", go_data("good") + b"extra", b"\0\0\0\x03a\0b\0\0"):
        opt(s, 7, bad)
        typ, msg = reply(s, 7)
        if typ != ERR_INVALID:
            die("malformed GO %r: reply %x, wanted ERR_INVALID" % (bad, typ))
    for o in (6, 7):                 # INFO, GO
        opt(s, o, go_data("nosuch"))
        typ, msg = reply(s, o)
        if typ != ERR_UNKNOWN:
            die("unknown export via %d: reply %x" % (o, typ))
    opt(s, 7, b"y" * 100000)         # too long to buffer: skipped
    if reply(s, 7)[0] != ERR_TOO_BIG:
        die("oversized option: wanted ERR_TOO_BIG")
    opt(s, 6, go_data("ro"))         # INFO, then haggling goes on
    size = None
    while True:
        typ, data = reply(s, 6)
        if typ == 1: break
        if struct.unpack(">H", data[:2])[0] == 0:
            size, flags = struct.unpack(">QH", data[2:12])
    if size != 1 << 20 or not flags & 2:
        die("INFO ro: size %r flags %r" % (size, flags))
    size, flags = go(s, "good")      # the connection is still usable
    if size != SIZE or flags & 2:
        die("GO good: size %d flags %x" % (size, flags))
    check_read(s, 1, 0, 4096)
    request(s, 2, 2, 0, 0); expect_close(s)
elif c == "abort":
    s = connect(); greet(s); opt(s, 2)
    if reply(s, 2)[0] != 1:
        die("ABORT: wanted ACK")
    expect_close(s)
elif c == "export-name-unknown":
    s = connect(); greet(s); opt(s, 1, b"nosuch"); expect_close(s)
elif c == "export-name":
    s = connect(); greet(s, 1); opt(s, 1, b"good")
    size, flags = struct.unpack(">QH", recvn(s, 10)); recvn(s, 124)   # no NO_ZEROES: 124 zeroes
    if size != SIZE:
        die("EXPORT_NAME size %d" % size)
    check_read(s, 7, 4096, 512)
elif c == "bad-request-magic":
    s = ready(); s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 512)); expect_close(s)
elif c == "oversized-write":
    s = ready(); request(s, 1, 1, 0, 0xffffffff); send_maybe(s, b"x" * 4096); expect_close(s)
elif c == "oversized-read":
    s = ready(); request(s, 0, 1, 0, 64 << 20)
    err, ck = simple_reply(s)
    if err != EINVAL or ck != 1:
        die("oversized read: err %d" % err)
    check_read(s, 2, 0, 4096)
elif c == "unknown-command":
    s = ready()
    for i, t in enumerate((99, 8, 7, 0xffff)):   # unknown, RESIZE, BLOCK_STATUS w/o context
        request(s, t, 100 + i, 0, 4096)
        err, ck = simple_reply(s)
        if err != EINVAL or ck != 100 + i:
            die("command %d: err %d" % (t, err))
    request(s, 0, 9, 0, 512, flags=1 << 7)   # unknown flag
    if simple_reply(s)[0] != EINVAL:
        die("unknown flag not refused")
    check_read(s, 3, 0, 512)
elif c == "out-of-range":
    s = ready()
    request(s, 0, 1, SIZE - 100, 4096)
    if simple_reply(s) != (EINVAL, 1):
        die("read past the end not refused with EINVAL")
    request(s, 1, 2, SIZE, 4096, payload=b"z" * 4096)   # payload skipped
    if simple_reply(s) != (ENOSPC, 2):
        die("write past the end not refused with ENOSPC")
    request(s, 1, 3, 1 << 62, 512, flags=1, payload=b"z" * 512)
    if simple_reply(s) != (ENOSPC, 3):
        die("write far past the end not refused with ENOSPC")
    request(s, 1, 4, 8192, 512, payload=b"q" * 512)     # stream still in sync
    if simple_reply(s) != (0, 4):
        die("write after refused ones failed")
    check_read(s, 5, 8192, 512, b"q" * 512)
    request(s, 0, 6, SIZE, 0)                           # empty at the end: fine
    if simple_reply(s) != (0, 6):
        die("zero-length read at the end failed")
elif c == "read-only-raw":
    s = ready("ro")
    request(s, 1, 1, 0, 512, payload=b"w" * 512)
    if simple_reply(s) != (EPERM, 1):
        die("write to read-only tap not refused with EPERM")
    check_read(s, 2, 0, 14, b"read-only data")
elif c == "truncated-request":
    s = ready(); s.sendall(struct.pack(">IHH", REQ_MAGIC, 0, 0)); s.close()
    s = ready(); request(s, 1, 1, 0, 65536); s.sendall(b"p" * 1000); s.close()
elif c == "pipeline":
    # More requests than the server has slots, all sent before reading a
    # reply: backpressure must not deadlock, and every cookie comes back.
    # Writes first, all acknowledged, then reads: requests in flight
    # together are unordered, as on any disk.
    import threading
    s = ready()
    payload = bytes(range(256)) * 16
    for base, typ in ((0, 1), (1000, 0)):
        reqs = b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, typ, base + i, i * 4096, 4096) +
                        (payload if typ == 1 else b"") for i in range(300))
        t = threading.Thread(target=s.sendall, args=(reqs,)); t.start()
        seen = set()
        for _ in range(300):
            err, ck = simple_reply(s)
            if err:
                die("pipelined request %d failed: %d" % (ck, err))
            if typ == 0 and recvn(s, 4096) != payload:
                die("pipelined read %d returned wrong data" % ck)
            seen.add(ck)
        t.join()
        if seen != set(range(base, base + 300)):
            die("lost replies: %d distinct" % len(seen))
elif c == "hangup-in-flight":
    # Leave with many reads in flight and replies unread.
    s = ready()
    for i in range(64):
        request(s, 0, i, 0, 1 << 20)
    s.close()
else:
    die("unknown case")
PY

# A well-behaved client keeps working on one connection throughout: bad
# input on other connections must not disturb it.
STOP_FILE=$T/stop nbdsh -u "$(nbd_uri good)" -c '
import os
stop, n = os.environ["STOP_FILE"], 0
while not os.path.exists(stop):
    data = bytes([n & 0xff]) * 65536
    h.pwrite(data, (8 << 20) + (n % 64) * 65536)
    assert h.pread(65536, (8 << 20) + (n % 64) * 65536) == data, "data mismatch"
    n += 1
assert n > 0
' >"$T/steady.log" 2>&1 &
steady=$!

for c in garbage garbage-at-once bad-client-flags truncated-handshake bad-option-magic \
	options abort export-name-unknown export-name bad-request-magic oversized-write \
	oversized-read unknown-command out-of-range read-only-raw truncated-request \
	pipeline hangup-in-flight; do
	python3 "$T/poke.py" "$NBD_SOCK" "$c" || fail "case $c"
	still_serving "$c"
done

touch "$T/stop"
wait $steady || fail "the steady client was disturbed: $(cat "$T/steady.log")"

# Real clients. Unknown export: nbdinfo fails and says why.
if nbdinfo "$(nbd_uri nosuch)" >"$T/nbdinfo.out" 2>&1; then
	fail "nbdinfo on an unknown export succeeded"
fi
# libnbd turns NBD_REP_ERR_UNKNOWN into ENOENT and names the export.
grep -qiE "(no such export|no such file).*nosuch" "$T/nbdinfo.out" ||
	fail "nbdinfo error unclear: $(cat "$T/nbdinfo.out")"

# Read-only tap: advertised as such; a write reaching the server (libnbd's
# own checks disabled) fails with EPERM.
nbdinfo "$(nbd_uri ro)" | grep -q "is_read_only: true" || fail "nbdinfo does not show ro as read-only"
nbdsh -u "$(nbd_uri ro)" -c '
import errno
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 512, 0)
    raise SystemExit("write to a read-only tap succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
assert h.pread(14, 0) == b"read-only data"
' || fail "nbdsh: write to read-only tap"

# Read past the end: the server refuses with EINVAL (libnbd's bounds
# check is off so the request is really sent).
nbdsh -u "$(nbd_uri good)" -c '
import errno
h.set_strict_mode(0)
size = h.get_size()
for off, n in ((size, 512), (size - 512, 1024), (1 << 60, 4096)):
    try:
        h.pread(n, off)
        raise SystemExit("read past the end at %d succeeded" % off)
    except nbd.Error as e:
        assert e.errnum == errno.EINVAL, e
h.pwrite(b"a" * 1000, size - 1000)
assert h.pread(1000, size - 1000) == b"a" * 1000
' || fail "nbdsh: read past the end"

still_serving "nbdsh"
grep -q "bad request magic" "$TAPD_LOG" || fail "bad magic not logged"
log "PASS"
