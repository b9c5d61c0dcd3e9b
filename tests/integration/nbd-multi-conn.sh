#!/bin/bash
# CAN_MULTI_CONN is advertised and true: a write acknowledged on one
# connection, then a FLUSH on a second, is visible to a third, and is on
# the disk (the flush covered it) - also for FUA writes.
. "$(dirname "$0")/lib.sh"
need nbdsh python3
need_libnbd

start_bus
start_tapd

f=$T/mc.raw
truncate -s 16M "$f"
tapctl create --name mc "raw:$f" >/dev/null || fail "create mc"
tapctl create --name mem ram:16M >/dev/null || fail "create mem"

for name in mc mem; do
	FILE=$f NAME=$name URI=$(nbd_uri $name) nbdsh -c '
import os
M = 1 << 20
hs = [nbd.NBD() for _ in range(3)]
for x in hs:
    x.connect_uri(os.environ["URI"])
    assert x.can_multi_conn(), "CAN_MULTI_CONN not advertised"
    assert x.can_flush()
a, b, c = hs
for i in range(16):
    pat = bytes([0x10 + i]) * 65536
    # Pipelined writes on a, all acknowledged.
    cookies = [a.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(pat)), i * M + j * 65536)
               for j in range(16)]
    while a.aio_in_flight():
        a.poll(-1)
    for ck in cookies:
        a.aio_command_completed(ck)
    b.flush()
    assert c.pread(M, i * M) == pat * 16, "write %d not visible on the third connection" % i
    if os.environ["NAME"] == "mc":
        with open(os.environ["FILE"], "rb") as f:
            f.seek(i * M)
            assert f.read(M) == pat * 16, "flushed write %d not in the file" % i
# FUA on one connection, read on another at once.
a.pwrite(b"\xee" * 4096, 0, nbd.CMD_FLAG_FUA)
assert b.pread(4096, 0) == b"\xee" * 4096
for x in hs:
    x.shutdown()
' || fail "multi-conn on $name"
done

tapd_alive || fail "tapd died"
log "PASS"
