#!/bin/bash
# TLS with X.509 (--tls require|on, --tls-certs, --tls-verify-peer) driven
# by nbdinfo, nbdsh, qemu-img and fio over nbds+unix URIs: plain clients
# refused when TLS is required, both kinds served with --tls on, client
# certificates checked, startup errors for bad credentials, and clients
# that send garbage, drop or stall mid-handshake cost nobody else.
. "$(dirname "$0")/lib.sh"
need certtool nbdinfo nbdsh qemu-img python3
# nbdsh runs "python3" from PATH; the libnbd module lives in the system one.

# ---- a throwaway CA, server and client certificates (ECDSA: fast) ----
pki=$T/pki       # the server's directory, qemu's layout
cli=$T/client    # the client's: CA and a client certificate
anon=$T/anon     # a client with the CA only
mkdir -p "$pki" "$cli" "$anon"
key() { certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 --outfile "$1" 2>/dev/null; }
key "$T/ca-key.pem"
printf 'cn = tapd test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$T/ca.info"
certtool --generate-self-signed --load-privkey "$T/ca-key.pem" --template "$T/ca.info" \
	--outfile "$pki/ca-cert.pem" 2>/dev/null || fail "certtool: CA"
sign() { # key cert template
	certtool --generate-certificate --load-privkey "$1" --load-ca-certificate "$pki/ca-cert.pem" \
		--load-ca-privkey "$T/ca-key.pem" --template "$3" --outfile "$2" 2>/dev/null
}
key "$pki/server-key.pem"
printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nsigning_key\nexpiration_days = 2\n' >"$T/server.info"
sign "$pki/server-key.pem" "$pki/server-cert.pem" "$T/server.info" || fail "certtool: server"
key "$cli/client-key.pem"
printf 'cn = tapd test client\ntls_www_client\nsigning_key\nexpiration_days = 2\n' >"$T/client.info"
sign "$cli/client-key.pem" "$cli/client-cert.pem" "$T/client.info" || fail "certtool: client"
cp "$pki/ca-cert.pem" "$cli/"
cp "$pki/ca-cert.pem" "$anon/"

# ---- bad configurations fail at start, with a message that says why ----
bad_start() { # expected-words... -- args...
	local want=() a
	while [ "$1" != -- ]; do want+=("$1"); shift; done
	shift
	local rc=0
	timeout 20 $TAPD_WRAPPER "$TAPD" --foreground --state-dir "$T/bad" --nbd-socket "$T/bad.sock" \
		--bus "unix:path=$T/nobus" --no-mlock "$@" >"$T/bad.log" 2>&1 || rc=$?
	# 1: failed start, 2: bad usage; anything else is a crash or a
	# valgrind report.
	[ $rc = 1 ] || [ $rc = 2 ] || fail "tapd $*: exit status $rc: $(cat "$T/bad.log")"
	for a in "${want[@]}"; do
		grep -q -- "$a" "$T/bad.log" || fail "tapd $*: unclear error: $(cat "$T/bad.log")"
	done
}
mkdir -p "$T/broken" "$T/nokey"
cp "$pki/server-cert.pem" "$T/broken/"
echo "not a key" >"$T/broken/server-key.pem"
cp "$pki/server-cert.pem" "$T/nokey/"
bad_start "needs --tls-certs" -- --tls require
bad_start "bad --tls" -- --tls maybe --tls-certs "$pki"
bad_start "tls is off" -- --tls-certs "$pki"
bad_start "NBD TLS" "server-cert.pem" -- --tls on --tls-certs "$T/missing"
bad_start "NBD TLS" "server-key.pem" -- --tls on --tls-certs "$T/nokey"
bad_start "NBD TLS" "server-key.pem" -- --tls on --tls-certs "$T/broken"
cp "$pki/server-key.pem" "$T/nokey/" # now only the CA is missing
bad_start "NBD TLS" "ca-cert.pem" -- --tls on --tls-certs "$T/nokey" --tls-verify-peer

# ---- --tls require ----
start_bus
start_tapd --tls require --tls-certs "$pki"
dd if=/dev/urandom of="$T/disk.raw" bs=1M count=16 status=none
cp "$T/disk.raw" "$T/orig.raw"
tapctl create --name sec "raw:$T/disk.raw" >/dev/null || fail "create"
tls_uri() { printf 'nbds+unix:///%s?socket=%s&tls-certificates=%s' "$1" "$NBD_SOCK" "${2:-$anon}"; }

# A client that stalls after STARTTLS: checked at the end, once the
# handshake deadline (10 s) has passed while everything else ran.
cat >"$T/raw.py" <<'PY'
import socket, struct, sys, time
sock, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
s.settimeout(30)
def recvn(n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError("closed after %d bytes" % len(b))
        b += d
    return b
assert recvn(18)[:8] == b"NBDMAGIC"
s.sendall(struct.pack(">I", 3))                       # fixed newstyle, no zeroes
opt = struct.pack(">QII", 0x49484156454F5054, 5, 0)  # STARTTLS
if mode == "pipelined":
    s.sendall(opt + b"\x16\x03\x01\x00\x05hello")    # ClientHello before the ACK
else:
    s.sendall(opt)
    magic, o, typ, ln = struct.unpack(">QIII", recvn(20))
    assert (o, typ, ln) == (5, 1, 0), (o, typ, ln)   # ACK
    if mode == "garbage":
        s.sendall(b"GET / HTTP/1.0\r\nHost: tapd\r\n\r\n" * 4)
    elif mode == "drop":
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
        s.close()
        print("dropped")
        sys.exit(0)
    elif mode == "stall":
        print("stalling", flush=True)
t0 = time.time()
try:
    while s.recv(4096):
        pass
except ConnectionResetError:
    pass
print("closed after %.1f s" % (time.time() - t0))
PY
python3 "$T/raw.py" "$NBD_SOCK" stall >"$T/stall.out" 2>&1 &
stall_pid=$!
track_pid $stall_pid
stall_start=$(date +%s)

out=$(nbdinfo "$(tls_uri sec)" 2>&1) || fail "nbdinfo over TLS: $out"
printf '%s\n' "$out" | grep -q "export-size: 16777216" || fail "nbdinfo over TLS: $out"
printf '%s\n' "$out" | grep -q "with TLS" || fail "nbdinfo did not use TLS: $out"
grep -qE "client [0-9]+: TLS TLS1\.[23], cipher " "$TAPD_LOG" || fail "TLS session not logged"

# Plain clients are refused, with a reason, and the daemon carries on.
if out=$(nbdinfo "$(nbd_uri sec)" 2>&1); then fail "plain client served with --tls require: $out"; fi
grep -q "TLS is required: send STARTTLS before" "$TAPD_LOG" || fail "TLS_REQD not sent"
if out=$(LIBNBD_DEBUG=1 nbdinfo "$(nbd_uri sec)" 2>&1); then fail "plain client served"; fi
printf '%s\n' "$out" | grep -qi "tls" || fail "the plain client's error does not mention TLS: $out"
# EXPORT_NAME (oldest clients) in the clear: hang up, as the protocol says.
python3 - "$NBD_SOCK" <<'PY' || fail "EXPORT_NAME without TLS was not refused"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
b = b""
while len(b) < 18: b += s.recv(18 - len(b))
s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 3) + b"sec")
sys.exit(0 if s.recv(4096) == b"" else 1)
PY
tapd_alive || fail "tapd died after plain clients"

# qemu-img both ways over TLS (qemu wants ca-cert.pem in its directory).
qcreds="tls-creds-x509,id=tls0,dir=$anon,endpoint=client"
qimg="driver=nbd,path=$NBD_SOCK,export=sec,tls-creds=tls0,tls-hostname=localhost"
qemu_img_round_trip "$qcreds" "$qimg" "$T/orig.raw" "$T/disk.raw" TLS
rm -f "$T/out.raw"
qemu-img convert --object "$qcreds" --image-opts "$qimg" -O raw "$T/out.raw" || fail "qemu-img read back"
cmp "$T/new.raw" "$T/out.raw" || fail "data read back over TLS differs"

# nbdsh: writes and reads of assorted sizes over one TLS connection,
# including one bigger than a TLS record and not a multiple of it.
# (nbdsh -u refuses URIs naming local files: connect by hand.)
URI=$(tls_uri sec) nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
assert h.get_tls_negotiated() == 1
for off, n in ((0, 512), (4096, 65536), (1 << 20, 3 * 16384 + 123), (15 << 20, 1 << 20)):
    buf = os.urandom(n)
    h.pwrite(buf, off)
    assert h.pread(n, off) == buf, (off, n)
h.flush()
' || fail "nbdsh over TLS"
python3 - "$T/disk.raw" <<'PY' || fail "nbdsh writes did not reach the image"
import sys
f = open(sys.argv[1], "rb"); f.seek(15 << 20)
assert len(f.read(1 << 20)) == 1 << 20
PY

# Misbehaving TLS clients: each is closed, the others are not bothered.
out=$(timeout 20 python3 "$T/raw.py" "$NBD_SOCK" garbage 2>&1) || fail "garbage client: $out"
grep -q "TLS handshake failed" "$TAPD_LOG" || fail "garbage after STARTTLS not reported"
out=$(timeout 20 python3 "$T/raw.py" "$NBD_SOCK" pipelined 2>&1) || fail "pipelined client: $out"
grep -q "data after STARTTLS before its reply" "$TAPD_LOG" || fail "pipelined client not refused"
for _ in 1 2 3; do
	timeout 20 python3 "$T/raw.py" "$NBD_SOCK" drop >/dev/null 2>&1 || fail "dropping client"
done
tapd_alive || fail "tapd died after bad TLS clients"
nbdinfo "$(tls_uri sec)" >/dev/null || fail "TLS clients no longer served"

# Many requests in flight over TLS, of mixed sizes: replies gathered into
# records, partial record writes, input left inside GnuTLS. (fio's nbd
# engine cannot be given certificates: libnbd refuses local files there.)
URI=$(tls_uri sec) nbdsh -c '
import os, random
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
random.seed(7)
slot = h.get_size() // 64
for rnd in range(3):
    want, writes, reads = [], [], []
    for i in range(64):
        n = random.choice((1, 512, 4096, 20000, 65536, slot // 2))
        off = i * slot + random.randrange(0, slot - n)
        data = os.urandom(n)
        want.append((off, data))
        writes.append(h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in writes:
        assert h.aio_command_completed(c)
    for off, data in want:
        buf = nbd.Buffer(len(data))
        reads.append((h.aio_pread(buf, off), buf, data))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c, buf, data in reads:
        assert h.aio_command_completed(c)
        assert bytes(buf.to_bytearray()) == data
' || fail "requests in flight over TLS"

# The stalled client is cut off by the handshake deadline.
wait $stall_pid || true
now=$(date +%s)
grep -q "closed after" "$T/stall.out" || fail "stalled client: $(cat "$T/stall.out")"
[ $((now - stall_start)) -ge 9 ] || fail "stalled client closed too early"
grep -q "TLS handshake timed out" "$TAPD_LOG" || fail "handshake timeout not logged"

# Graceful stop with a TLS client connected and idle.
n0=$(grep -c ': TLS TLS1' "$TAPD_LOG" || true)
URI=$(tls_uri sec) nbdsh -c '
import os, time
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
h.pread(4096, 0)
time.sleep(60)' >/dev/null 2>&1 &
idle=$!
track_pid $idle
for _ in $(seq 1 100); do
	[ "$(grep -c ': TLS TLS1' "$TAPD_LOG")" -gt "$n0" ] && break
	sleep 0.1
done
sleep 0.5
t0=$(date +%s)
stop_tapd || fail "tapd exited $? on SIGTERM with a TLS client connected"
[ $(($(date +%s) - t0)) -le 5 ] || fail "stop with a TLS client took too long"
kill $idle 2>/dev/null || true

# ---- --tls on with client certificates, on the unix socket and TCP ----
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_tapd --tls on --tls-certs "$pki" --tls-verify-peer --nbd-listen "127.0.0.1:$port"
tapctl create --name sec "raw:$T/disk.raw" >/dev/null || fail "create (tls on)"
nbdinfo "$(nbd_uri sec)" >/dev/null || fail "plain client refused with --tls on"
nbdinfo "nbd://127.0.0.1:$port/sec" >/dev/null || fail "plain TCP client refused with --tls on"
out=$(nbdinfo "nbds://127.0.0.1:$port/sec?tls-certificates=$cli" 2>&1) || fail "TLS over TCP: $out"
printf '%s\n' "$out" | grep -q "with TLS" || fail "not TLS over TCP: $out"
out=$(nbdinfo "$(tls_uri sec "$cli")" 2>&1) || fail "TLS client with a certificate: $out"
printf '%s\n' "$out" | grep -q "with TLS" || fail "not TLS: $out"
if nbdinfo "$(tls_uri sec "$anon")" >/dev/null 2>&1; then
	fail "TLS client without a certificate served with --tls-verify-peer"
fi
qemu-img convert --object "tls-creds-x509,id=tls0,dir=$cli,endpoint=client" \
	--image-opts "driver=nbd,path=$NBD_SOCK,export=sec,tls-creds=tls0,tls-hostname=localhost" -O raw "$T/out2.raw" ||
	fail "qemu-img with a client certificate"
cmp "$T/disk.raw" "$T/out2.raw" || fail "data read with a client certificate differs"
# Plain fio next to TLS clients (the plain path is unchanged).
if fio --enghelp=nbd >/dev/null 2>&1; then
	(cd "$T" && fio --name=plain --ioengine=nbd --uri="$(nbd_uri sec)" --rw=randrw --bs=4k \
		--iodepth=32 --size=16M --io_size=16M --verify=crc32c --verify_fatal=1 \
		--verify_state_save=0 --output="$T/fio2.out" >/dev/null 2>&1) ||
		fail "plain fio with --tls on: $(cat "$T/fio2.out")"
fi
tapd_alive || fail "tapd died"
log "PASS"
