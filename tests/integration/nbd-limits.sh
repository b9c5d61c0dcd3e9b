#!/bin/bash
# Limits that keep one client from taking a pool hostage: the per-tap
# connection cap (the 17th connection gets a clear error, the tap stays
# usable), and the per-client cap on bytes in flight (a client that
# pipelines far more than the cap without reading replies holds only the
# cap's worth of pool memory; big pipelined writes still complete; a
# single request over the cap still runs).
. "$(dirname "$0")/lib.sh"
need nbdsh python3
need_libnbd

# Bad limits are refused at start.
for bad in "--nbd-max-connections 0" "--nbd-max-connections x" "--nbd-max-client-bytes 0" \
	"--poll-us x" "--poll-us 1000001" "--poll-us -1"; do
	"$TAPD" $bad --state-dir "$T/bad" --bus none >/dev/null 2>"$T/bad.err" &&
		fail "tapd accepted $bad"
	grep -q "bad" "$T/bad.err" || fail "no clear error for $bad: $(cat "$T/bad.err")"
done

start_bus
start_tapd --nbd-max-client-bytes 1M

tapctl pool-create capped 8M || fail "pool-create"
tapctl create --name lim --pool capped ram:64M >/dev/null || fail "create lim"
uri=$(nbd_uri lim)

# --- connection cap (default 16) ---
SOCK=$NBD_SOCK URI=$uri nbdsh -c '
import os
hs = []
for i in range(16):
    x = nbd.NBD()
    x.connect_uri(os.environ["URI"])
    hs.append(x)
extra = nbd.NBD()
msgs = []
extra.set_debug_callback(lambda ctx, msg: msgs.append(msg))
extra.set_debug(True)
try:
    extra.connect_uri(os.environ["URI"])
    raise SystemExit("the 17th connection was accepted")
except nbd.Error as e:
    print("17th connection:", e)
# libnbd shows the message from the server in its debug output.
assert any("tap lim has 16 connections (limit 16)" in m for m in msgs), msgs[-5:]
# NBD_OPT_EXPORT_NAME has no error reply: the server hangs up.
import socket, struct
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(os.environ["SOCK"])
g = b""
while len(g) < 18:
    g += s.recv(18 - len(g))
s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 3) + b"lim")
assert s.recv(4096) == b"", "EXPORT_NAME beyond the cap was not refused"
# The ones in are unaffected; one leaving makes room.
hs[0].pwrite(b"a" * 4096, 0)
assert hs[15].pread(4096, 0) == b"a" * 4096
hs.pop().shutdown()
x = nbd.NBD()
x.connect_uri(os.environ["URI"])
assert x.pread(4096, 0) == b"a" * 4096
' >"$T/conns.out" 2>&1 || fail "connection cap: $(cat "$T/conns.out")"
grep -q "17th connection:.*policy" "$T/conns.out" || fail "17th connection error unclear: $(cat "$T/conns.out")"
grep -q "tap lim has 16 connections (limit 16)" "$TAPD_LOG" || fail "connection refusal not logged"

# --- byte cap (1M), reads whose replies are not read yet ---
pool_json() { tapctl pool-list --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p["name"] == "capped":
        print(p["in_use"], p["high_water"], p["waiters"])
'; }

python3 - "$NBD_SOCK" "$TAPCTL" <<'PY' || fail "pipelined reads beyond the cap"
import json, socket, struct, subprocess, sys, time
SOCK, TAPCTL = sys.argv[1], sys.argv[2]
K = 1024
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(SOCK)
def recvn(n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(min(n - len(b), 1 << 20))
        assert c, "server closed"
        b += c
    return bytes(b)
assert recvn(18)[:16] == b"NBDMAGICIHAVEOPT"
s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 9) + struct.pack(">I", 3) + b"lim" + struct.pack(">H", 0))
while True:
    magic, o, typ, ln = struct.unpack(">QIII", recvn(20)); recvn(ln)
    assert not typ >> 31, "GO failed"
    if typ == 1:
        break
def pool():
    out = subprocess.run([TAPCTL, "pool-list", "--json"], capture_output=True, check=True).stdout
    return next(p for p in json.loads(out) if p["name"] == "capped")
# Fill 16M with a pattern first (acknowledged one by one).
for i in range(64):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, i, i * 256 * K, 256 * K) + bytes([i]) * (256 * K))
    assert struct.unpack(">IIQ", recvn(16)) == (0x67446698, 0, i)
# 64 reads of 256K (16M, twice the pool) sent at once, replies left unread.
s.sendall(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1000 + i, i * 256 * K, 256 * K) for i in range(64)))
time.sleep(1)
p = pool()
print("while stalled:", p)
assert p["waiters"] == 0, "requests wait for pool memory: the cap did not hold (%r)" % p
assert p["in_use"] <= 2 << 20, "in use %d beyond the 1M cap (+ slack)" % p["in_use"]
# Now drain: every reply arrives with the right data.
seen = set()
for _ in range(64):
    magic, err, ck = struct.unpack(">IIQ", recvn(16))
    assert magic == 0x67446698 and err == 0, (hex(magic), err)
    i = ck - 1000
    assert recvn(256 * K) == bytes([i]) * (256 * K), "read %d returned wrong data" % i
    seen.add(i)
assert seen == set(range(64))
p = pool()
print("after:", p)
assert p["high_water"] <= 2 << 20, "pool high-water mark %d beyond the cap" % p["high_water"]
PY

# Big pipelined writes from libnbd: they all complete and verify, and the
# pool never held more than the cap's worth for this client; then single
# requests bigger than the cap still run.
URI=$uri nbdsh -c '
import os
M = 1 << 20
h.connect_uri(os.environ["URI"])
bufs = [nbd.Buffer.from_bytearray(bytearray([0x80 | i]) * (M // 2)) for i in range(64)]
cookies = [h.aio_pwrite(bufs[i], i * M // 2) for i in range(64)]
while h.aio_in_flight():
    h.poll(-1)
for ck in cookies:
    assert h.aio_command_completed(ck)
for i in range(64):
    assert h.pread(M // 2, i * M // 2) == bytes([0x80 | i]) * (M // 2), "write %d lost" % i
' || fail "pipelined writes beyond the cap"
read -r in_use high waiters < <(pool_json)
log "pool after pipelined writes: in_use $in_use high $high waiters $waiters"
[ "$high" -le $((2 << 20)) ] || fail "pool high-water mark $high beyond the 1M cap"

URI=$uri nbdsh -c '
import os
M = 1 << 20
h.connect_uri(os.environ["URI"])
h.pwrite(b"\x11" * (4 * M), 8 * M)
assert h.pread(4 * M, 8 * M) == b"\x11" * (4 * M)
' || fail "a single request over the cap"

tapd_alive || fail "tapd died"
log "PASS"
