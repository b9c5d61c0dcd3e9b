#!/bin/bash
# NBD_OPT_LIST shows every tap (and follows creates and destroys); several
# connections to one tap work at the same time and see each other's data.
. "$(dirname "$0")/lib.sh"
need nbdinfo nbdsh qemu-io
need_libnbd

start_bus
start_tapd

truncate -s 32M "$T/a.raw"
tapctl create --name alpha "raw:$T/a.raw" >/dev/null || fail "create alpha"
tapctl create --name beta ram:16M >/dev/null || fail "create beta"
gamma=$(tapctl create ram:8M) || fail "create with the default name"
list_uri="nbd+unix:///?socket=$NBD_SOCK"

exports() { nbdinfo --list "$list_uri" | sed -n 's/^export="\(.*\)":$/\1/p' | sort | tr '\n' ' '; }
want=$(printf '%s\n' alpha beta "$gamma" | sort | tr '\n' ' ')
got=$(exports)
[ "$got" = "$want" ] || fail "nbdinfo --list shows '$got', expected '$want'"
nbdinfo --list "$list_uri" | grep -q 'export-size: 16777216' || fail "list lacks beta's size"

tapctl destroy beta || fail "destroy beta"
want=$(printf '%s\n' alpha "$gamma" | sort | tr '\n' ' ')
got=$(exports)
[ "$got" = "$want" ] || fail "after destroy, list shows '$got', expected '$want'"

# Two connections to one tap at once, with requests in flight on both:
# each writes its own half, then each reads the other's half.
uri=$(nbd_uri alpha)
nbdsh -u "$uri" -c '
import nbd
h2 = nbd.NBD()
h2.connect_uri(h.get_uri())
assert h2.get_size() == h.get_size() == 32 << 20
half = 16 << 20
bufs = []
for i in range(64):
    for hh, base, byte in ((h, 0, 0xa1), (h2, half, 0xb2)):
        b = nbd.Buffer.from_bytearray(bytearray([byte ^ (i & 0xff)]) * 65536)
        bufs.append(b)
        hh.aio_pwrite(b, base + i * 65536)
while h.aio_in_flight() or h2.aio_in_flight():
    for hh in (h, h2):
        if hh.aio_in_flight():
            hh.poll(-1)
h.flush()
h2.flush()
for i in range(64):
    assert h2.pread(65536, i * 65536) == bytes([0xa1 ^ i]) * 65536, "conn 2 misses conn 1 data"
    assert h.pread(65536, half + i * 65536) == bytes([0xb2 ^ i]) * 65536, "conn 1 misses conn 2 data"
h2.shutdown()
' || fail "two connections to one tap"

# Two separate client processes at the same time.
qemu-io -f raw "$uri" -c "write -P 0x5a 0 8M" >"$T/q1" 2>&1 &
p1=$!
qemu-io -f raw "$uri" -c "write -P 0x6b 8M 8M" >"$T/q2" 2>&1 &
p2=$!
wait $p1 || fail "first qemu-io failed: $(cat "$T/q1")"
wait $p2 || fail "second qemu-io failed: $(cat "$T/q2")"
out=$(qemu-io -f raw "$uri" -c "read -P 0x5a 0 8M" -c "read -P 0x6b 8M 8M" 2>&1) ||
	fail "read back after concurrent writers: $out"
printf '%s\n' "$out" | grep -q "verification failed" && fail "read back: $out"

tapd_alive || fail "tapd died"
log "PASS"
