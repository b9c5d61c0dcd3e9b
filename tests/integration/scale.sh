#!/usr/bin/env bash
# 1,024 taps (64 under valgrind), each with an idle NBD connection in
# transmission: tapd takes them all, still serves I/O on one of them, and
# costs at most 64 KiB of RSS per idle tap with its connection (pools
# excluded: the taps share the default pool, mapped at start; checked in
# plain builds, reported in all). Then the clients leave, the taps go, and
# fds are back where they started.
. "$(dirname "$0")/lib.sh"
need_libnbd
n=1024
[ -n "$TAPD_WRAPPER" ] && n=64
# Two fds per connection in this test (ours and tapd's), with room.
ulimit -n $((4 * n + 256)) 2>/dev/null || skip "cannot raise the fd limit to $((4 * n + 256))"
start_bus
start_tapd --nbd-max-clients $((n + 16))

fds0=$(tapd_fds)
rss0=$(tapd_rss_kb)
for i in $(seq 0 $((n - 1))); do
	tapctl create --name "s$i" null:1M >/dev/null || fail "create s$i"
done
rss1=$(tapd_rss_kb)

# One client process holds a connection to each tap, past NBD_OPT_GO.
/usr/bin/python3 - "$NBD_SOCK" "$n" "$T/ready" <<'PY' &
import socket, struct, sys, time
path, n, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def recvn(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c:
            raise EOFError("server closed")
        b += c
    return b
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    recvn(s, 18)                                    # NBDMAGIC, IHAVEOPT, flags
    s.sendall(struct.pack(">I", 3))                 # FIXED_NEWSTYLE | NO_ZEROES
    name = b"s%d" % i
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
    while True:                                     # replies until ACK
        _, _, rtype, rlen = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, rlen)
        if rtype == 1:
            break
        if rtype & 0x80000000:
            raise SystemExit("GO on %s refused: %#x" % (name, rtype))
    socks.append(s)
open(ready, "w").write("%d\n" % len(socks))
time.sleep(3600)
PY
client=$!
track_pid $client
for _ in $(seq 1 1200); do [ -s "$T/ready" ] && break; kill -0 $client 2>/dev/null || break; sleep 0.1; done
[ "$(cat "$T/ready" 2>/dev/null)" = "$n" ] || fail "the client did not get $n connections"
rss2=$(tapd_rss_kb)
conns=$(tapctl stats --json "s$((n - 1))" | sed -n 's/.*"connections": \([0-9]*\).*/\1/p')
[ "$conns" = 1 ] || fail "tap s$((n - 1)) shows $conns connections"

per_tap=$(( (rss1 - rss0) * 1024 / n ))
per_conn=$(( (rss2 - rss1) * 1024 / n ))
per_both=$(( (rss2 - rss0) * 1024 / n ))
log "$n idle taps: RSS $rss0 -> $rss1 KiB with the taps -> $rss2 KiB with a connection each:"
log "  $per_tap bytes per tap, $per_conn per connection, $per_both per tap with its connection"
# Valgrind and the sanitizers keep memory of their own in the process:
# the figure means something only in a plain build.
if [ -z "$TAPD_WRAPPER" ] && [ -z "${TAPD_SANITIZED:-}" ]; then
	[ "$per_both" -le 65536 ] ||
		fail "an idle tap with its connection costs $per_both bytes of RSS (at most 65536)"
fi

# Still serving: a write and a read on a fresh connection to the last tap.
nbdsh -u "$(nbd_uri "s$((n - 1))")" -c '
h.pwrite(b"\x5a" * 4096, 8192)
assert h.pread(4096, 8192) == bytes(4096)   # null: writes vanish, reads are zeros
' || fail "I/O on tap s$((n - 1)) with $n connections open"

kill $client
wait $client 2>/dev/null || true
for _ in $(seq 1 200); do
	busy=$(tapctl stats --json "s$((n - 1))" | sed -n 's/.*"connections": \([0-9]*\).*/\1/p')
	[ "$busy" = 0 ] && break
	sleep 0.05
done
for i in $(seq 0 $((n - 1))); do
	tapctl destroy "s$i" || fail "destroy s$i"
done
[ "$(tapctl list --json)" = "[]" ] || fail "taps left: $(tapctl list)"
fds_back "$fds0" "after the destroys"
tapd_alive || fail "tapd died"
