#!/bin/bash
# Clients that send and never read, or say nothing (issue 10, defect 2 and
# the handshake deadline of 3): a flood of NBD_OPT_LIST, a flood of
# NBD_OPT_GO before TLS over TCP with --tls require, and pipelined READs
# in transmission, none of whose replies are read, and silent clients.
# Each holds a bounded amount of tapd's memory (its RSS stays put), is
# dropped within a bound with a log line saying why, and a second client
# reading random 4k blocks meanwhile gets the right data with a low p99.
. "$(dirname "$0")/lib.sh"
need nbdsh python3 psktool
need_libnbd

HS=$((3 + 5 * SLOW)) # --nbd-handshake-timeout
WT=$((3 + 5 * SLOW)) # --nbd-write-timeout
RSS_MAX_KB=$((32 * 1024)) # growth allowed during an attack

cat >"$T/attack.py" <<'PY'
# attack.py MODE ADDR SECONDS [EXPORT]: MODE list / go (flood options
# without reading a reply), reads (GO, then pipelined 1M READs, replies
# never read) or silent (connect, say nothing). ADDR is a unix socket path
# or HOST:PORT. Prints how long until tapd dropped the connection; exit 1
# if it did not within SECONDS.
import select, socket, struct, sys, time
mode, addr, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
name = sys.argv[4].encode() if len(sys.argv) > 4 else b""
OPT = 0x49484156454F5054
def opt(o, data=b""):
    return struct.pack(">QII", OPT, o, len(data)) + data
go = opt(7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
if addr.startswith("/"):
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr)
else:
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
t0 = time.monotonic()
s.settimeout(limit)
g = b""
while len(g) < 18:
    c = s.recv(18 - len(g))
    assert c, "no greeting"
    g += c
assert g[:16] == b"NBDMAGICIHAVEOPT", g
if mode == "silent":
    try:
        rest = s.recv(1)
    except ConnectionResetError:
        rest = b""
    except socket.timeout:
        sys.exit("silent client not dropped within %s s" % limit)
    assert rest == b"", rest
    print("silent client dropped after %.1f s" % (time.monotonic() - t0))
    sys.exit(0)
s.sendall(struct.pack(">I", 3))
if mode == "list":
    unit = opt(3) * 256
elif mode == "go":
    unit = go * 64
else:  # reads: GO, then READs of 1M from the start of the export
    s.sendall(go)
    unit = b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 1 << 20) for i in range(16))
s.setblocking(False)
p = select.poll()
p.register(s, select.POLLOUT | select.POLLRDHUP)
sent, dropped = 0, None
while time.monotonic() - t0 < limit and not dropped:
    for _, ev in p.poll(200):
        if ev & (select.POLLHUP | select.POLLERR | select.POLLRDHUP):
            dropped = "hung up"
        elif ev & select.POLLOUT:
            try:
                sent += s.send(unit)
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError) as e:
                dropped = type(e).__name__
if not dropped:
    sys.exit("%s: not dropped within %s s (sent %d bytes)" % (mode, limit, sent))
took = time.monotonic() - t0
# What tapd wrote before closing is still here to read, then EOF.
s.setblocking(True)
s.settimeout(10)
got = 0
try:
    while True:
        c = s.recv(1 << 20)
        if not c:
            break
        got += len(c)
except ConnectionResetError:
    pass
print("%s: dropped (%s) after %.1f s; sent %d bytes, %d bytes of replies were waiting"
      % (mode, dropped, took, sent, got))
PY

# attack NAME MODE ADDR [EXPORT]: run the attacker while a probe reads
# tap "probe" over PROBE_URI, watching tapd's RSS; check that the
# attacker was dropped in time, the RSS did not grow past the bound, and
# the probe was served.
attack() {
	local name=$1 mode=$2 addr=$3 export=${4:-} rss0 rss took limit=$HS
	[ "$mode" = reads ] && limit=$WT
	rss0=$(tapd_rss_kb)
	rss_watch_start "$name"
	probe_start "$name" "$PROBE_URI" "$T/probe.raw" $((limit + 2))
	python3 "$T/attack.py" "$mode" "$addr" $((limit * 4)) $export >"$T/$name.out" 2>&1 ||
		fail "$name: $(cat "$T/$name.out")"
	log "$name: $(cat "$T/$name.out")"
	took=$(sed -n 's/.* after \([0-9]*\)\.[0-9] s.*/\1/p' "$T/$name.out")
	[ "$took" -ge $((limit - 1)) ] || fail "$name: dropped too early (after $took s, limit $limit s)"
	[ "$took" -le $((limit + 2 + 3 * SLOW)) ] || fail "$name: dropped late (after $took s)"
	probe_check "$name" 50
	rss=$(rss_watch_stop "$name")
	log "$name: RSS $rss0 KiB before, at most $rss KiB during the attack"
	# ASan holds freed memory in quarantine (up to 256 MiB): RSS says
	# nothing about our buffers there; reported, checked elsewhere.
	[ -n "${TAPD_SANITIZED:-}" ] || [ $((rss - rss0)) -le $RSS_MAX_KB ] ||
		fail "$name: tapd's RSS grew by $((rss - rss0)) KiB"
}

start_bus
start_tapd --default-pool-size 8M --nbd-handshake-timeout $HS --nbd-write-timeout $WT
dd if=/dev/urandom of="$T/probe.raw" bs=1M count=16 status=none
tapctl create --name probe "raw:$T/probe.raw" >/dev/null || fail "create probe"
tapctl pool-create bait 16M || fail "pool-create"
tapctl create --name bait --pool bait ram:64M >/dev/null || fail "create bait"
PROBE_URI=$(nbd_uri probe)

# Options whose replies are never read: tapd stops reading at 64 KiB of
# replies and drops the client at the handshake deadline.
attack list list "$NBD_SOCK"
grep -q "closing: handshake not finished within $HS s ([0-9]* bytes of replies unread)" \
	"$TAPD_LOG" || fail "the LIST flood's drop is not logged"
grep -q "dropped (.*) after .*; sent [0-9]* bytes, [0-9]* bytes" "$T/list.out" || fail "list: $(cat "$T/list.out")"

# Clients that say nothing at all.
for i in 1 2 3; do
	python3 "$T/attack.py" silent "$NBD_SOCK" $((HS * 4)) >"$T/silent$i.out" 2>&1 &
	eval "silent$i=$!"
done
for i in 1 2 3; do
	eval "wait \$silent$i" || fail "silent client $i: $(cat "$T/silent$i.out")"
done
log "$(cat "$T/silent1.out")"
n=$(grep -c "closing: handshake not finished within $HS s (0 bytes of replies unread)" "$TAPD_LOG" || true)
[ "$n" -ge 3 ] || fail "silent clients' drops not logged ($n)"

# Transmission: READs pipelined without reading a reply fill the slots and
# the per-client byte cap, then tapd stops reading; the client is dropped
# when its replies have waited unread for the write timeout.
attack reads reads "$NBD_SOCK" bait
grep -q "closing: replies unread for $WT s ([0-9]* bytes waiting)" "$TAPD_LOG" ||
	fail "the stalled reader's drop is not logged"
# The bait tap's pool got everything back.
tapctl pool-list --json | python3 -c '
import json, sys
p = next(p for p in json.load(sys.stdin) if p["name"] == "bait")
assert p["in_use"] == 0, p
' || fail "pool memory still held after the drop: $(tapctl pool-list)"

# With --tls require over TCP: GO before STARTTLS, over and over; the
# probe reads over TLS (PSK) on the unix socket.
stop_tapd || fail "tapd did not stop cleanly"
psktool -p "$T/keys.psk" -u alice >/dev/null || fail "psktool"
port=$(nbd_free_port 127.0.0.1)
start_tapd --default-pool-size 8M --nbd-handshake-timeout $HS --nbd-listen "127.0.0.1:$port" \
	--tls require --tls-psk "$T/keys.psk"
tapctl create --name probe "raw:$T/probe.raw" >/dev/null || fail "create probe"
PROBE_URI="nbds+unix://alice@/probe?socket=$NBD_SOCK&tls-psk-file=$T/keys.psk"
n0=$(grep -c "closing: handshake not finished" "$TAPD_LOG" || true)
attack go go "127.0.0.1:$port" probe
n=$(grep -c "closing: handshake not finished within $HS s ([0-9]* bytes of replies unread)" "$TAPD_LOG" || true)
[ "$n" -gt "$n0" ] || fail "the GO flood's drop is not logged"
grep -q "TLS is required: send STARTTLS before GO" "$TAPD_LOG" || fail "GO before TLS not refused"

tapd_alive || fail "tapd died"
log "PASS"
