#!/bin/bash
# The FUSE file of a tap, STATE/fuse/NAME, without a loop device: one file
# per tap with the tap's size, read and written by dd and qemu-io and seen
# over NBD at once either way (no page cache in between); writes past the
# end fail with ENOSPC; fallocate punch/zero read back zeros; a read-only
# tap's file is 0400 and refuses writes with EROFS, and so does its loop
# device; the error layer's EIO and ENOSPC reach readers and writers of the
# file and of the loop device as that errno; requests bigger than the pool
# gives at once (a 64K pool, 1M requests) go in pieces and stay correct.
# Attach of a kind this tapd lacks fails with NotSupported, naming it.
. "$(dirname "$0")/lib.sh"
need qemu-io fallocate losetup blockdev
need_libnbd
[ -c /dev/fuse ] && [ -c /dev/loop-control ] || skip "no /dev/fuse or /dev/loop-control"
start_bus
start_tapd
F=$STATE/fuse

truncate -s 32M "$T/a.img"
tapctl create --name a "raw:$T/a.img" >/dev/null || fail "create a"
tapctl create --name mem ram:8M >/dev/null || fail "create mem"
[ "$(stat -c '%s %a %F' "$F/a")" = "$((32 << 20)) 600 regular file" ] ||
	fail "a's file: $(stat -c '%s %a %F' "$F/a")"
[ "$(ls "$F" | sort | tr '\n' ' ')" = "a mem " ] || fail "listing: $(ls -la "$F")"
[ -e "$F/0" ] && fail "a minor is a file name too"
[ -e "$F/nope" ] && fail "a file for no tap"

# --- data through the file, seen over NBD, and back ------------------------
head -c 3M /dev/urandom >"$T/d1"
dd if="$T/d1" of="$F/a" bs=1M seek=1 conv=notrunc status=none || fail "dd to the file"
cmp -n $((3 << 20)) "$T/d1" "$T/a.img" -i 0:$((1 << 20)) || fail "dd's data not in the image"
qemu-io -f raw -c "read -P 0 0 1M" "$(nbd_uri a)" | grep -q "verification failed" &&
	fail "the first MiB is not zero"
# Unaligned, odd sizes, through qemu-io on the file.
qemu-io -f raw -c "write -P 0x61 12345 54321" "$F/a" >/dev/null || fail "qemu-io write to the file"
qemu-io -f raw -c "read -P 0x61 12345 54321" "$(nbd_uri a)" >"$T/q" 2>&1 || fail "read over NBD"
grep -q "verification failed" "$T/q" && fail "unaligned write through the file reads wrong over NBD"
# The other way, while the file stays open: no stale cache (a new open
# would drop a cache anyway, so one fd reads before and after).
python3 -c 'import os, subprocess, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
before = os.pread(fd, 4096, 400 << 10)
subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x7e 400k 4k", sys.argv[2]],
               check=True, stdout=subprocess.DEVNULL)
after = os.pread(fd, 4096, 400 << 10)
assert before != after and after == b"\x7e" * 4096, "stale"
os.close(fd)' "$F/a" "$(nbd_uri a)" || fail "the open file reads stale data after an NBD write"
# fsync, and the close of a file opened for writing, are FLUSHes of the tap;
# the close of a read-only open is not.
flushes() { tapctl stats --json a | python3 -c 'import json, sys; print(json.load(sys.stdin)["flushes"])'; }
f0=$(flushes)
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"x" * 4096, 8 << 20)
os.fsync(fd)
os.close(fd)' "$F/a" || fail "write and fsync"
[ "$(flushes)" -ge $((f0 + 2)) ] || fail "fsync and close gave $(($(flushes) - f0)) flushes, want 2"
f0=$(flushes)
cat "$F/a" >/dev/null
[ "$(flushes)" = "$f0" ] || fail "a read-only open flushed the tap on close"
# ram: taps are files too.
dd if="$T/d1" of="$F/mem" bs=64k count=16 conv=notrunc status=none || fail "dd to mem"
cmp -n $((1 << 20)) "$T/d1" "$F/mem" || fail "mem reads back wrong"

# --- ends and holes ---------------------------------------------------------
expect 1 "No space left on device" dd if=/dev/zero of="$F/a" bs=1M seek=32 count=1 conv=notrunc
expect 1 "No space left on device" fallocate -l 64M "$F/a"
[ "$(stat -c %s "$F/a")" = $((32 << 20)) ] || fail "the file changed size"
# Reads at the end stop there.
[ "$(dd if="$F/a" bs=1M skip=31 count=4 status=none | wc -c)" = $((1 << 20)) ] ||
	fail "a read across the end is not cut at the end"
fallocate -p -o 1M -l 1M "$F/a" || fail "punch hole"
fallocate -z -o 2M -l 4097 "$F/a" || fail "zero range"
qemu-io -f raw -c "read -P 0 1M 1M" -c "read -P 0 2M 4097" "$(nbd_uri a)" >"$T/q" 2>&1 ||
	fail "read zeros: $(cat "$T/q")"
grep -q "verification failed" "$T/q" && fail "punched or zeroed range is not zero: $(cat "$T/q")"
python3 -c 'import sys
d = open(sys.argv[1], "rb").read(); img = open(sys.argv[2], "rb").read()
# d1 went to [1M, 4M); [1M, 2M) punched, [2M, 2M + 4097) zeroed.
assert img[(2 << 20) + 4097:4 << 20] == d[(1 << 20) + 4097:3 << 20], "data after the zeroed range"' \
	"$T/d1" "$T/a.img" || fail "fallocate touched data beyond its range"

# --- read-only ---------------------------------------------------------------
cp "$T/a.img" "$T/ro.img"
tapctl create --name ro --read-only "raw:$T/ro.img" >/dev/null || fail "create ro"
[ "$(stat -c %a "$F/ro")" = 400 ] || fail "a read-only tap's file is $(stat -c %a "$F/ro")"
expect 1 "Read-only file system" dd if=/dev/zero of="$F/ro" bs=4k count=1 conv=notrunc
expect 1 "Read-only file system" fallocate -p -o 0 -l 4k "$F/ro"
cmp "$F/ro" "$T/a.img" || fail "a read-only tap's file reads wrong"
RO=$(tapctl attach ro --kind fuse) || fail "attach ro"
[ "$(blockdev --getro "$RO")" = 1 ] || fail "$RO is not read-only"
dd if=/dev/zero of="$RO" bs=4k count=1 oflag=direct status=none 2>"$T/err" &&
	fail "a write to $RO succeeded"
grep -qiE "read-only|not permitted" "$T/err" || fail "write to $RO: $(cat "$T/err")"
dd if="$RO" bs=1M count=32 iflag=direct status=none | cmp - "$T/a.img" ||
	fail "$RO reads wrong"
cmp "$T/ro.img" "$T/a.img" || fail "the read-only image changed"
tapctl detach ro || fail "detach ro"

# --- errors from the tap reach the caller -----------------------------------
truncate -s 8M "$T/e.img"
tapctl create --name eio "error,errno=EIO,ops=read:raw:$T/e.img" >/dev/null || fail "create eio"
expect 1 "Input/output error" dd if="$F/eio" of=/dev/null bs=4k count=1
expect 1 "Input/output error" dd if="$F/eio" of=/dev/null bs=4k count=1 iflag=direct
dd if=/dev/zero of="$F/eio" bs=4k count=1 conv=notrunc status=none || fail "writes pass under ops=read"
EDEV=$(tapctl attach eio --kind fuse) || fail "attach eio"
expect 1 "Input/output error" dd if="$EDEV" of=/dev/null bs=4k count=1 iflag=direct
tapctl detach eio || fail "detach eio"
tapctl create --name enospc "error,errno=ENOSPC,ops=write:raw:$T/e.img" >/dev/null ||
	fail "create enospc"
expect 1 "No space left on device" dd if=/dev/zero of="$F/enospc" bs=4k count=1 conv=notrunc
dd if="$F/enospc" of=/dev/null bs=4k count=1 status=none || fail "reads pass under ops=write"

# --- requests in pieces: 1M FUSE requests through a pool of 64K ------------
tapctl pool-create small 64K >/dev/null || fail "pool-create"
truncate -s 16M "$T/s.img"
tapctl create --name s --pool small "raw:$T/s.img" >/dev/null || fail "create s"
head -c 8M /dev/urandom >"$T/d2"
dd if="$T/d2" of="$F/s" bs=1M oflag=direct conv=notrunc status=none || fail "1M writes to s"
cmp -n $((8 << 20)) "$T/d2" "$T/s.img" || fail "1M writes in pieces landed wrong"
dd if="$F/s" bs=1M count=8 iflag=direct status=none | cmp - "$T/d2" || fail "1M reads in pieces wrong"
# Several at once: pieces wait for the one staging buffer in turn.
pids=
for i in 0 1 2 3; do
	dd if="$F/s" bs=1M skip=$((i * 2)) count=2 iflag=direct status=none >"$T/p$i" &
	pids="$pids $!"
done
for p in $pids; do wait "$p" || fail "a parallel read failed"; done
cat "$T/p0" "$T/p1" "$T/p2" "$T/p3" | cmp - "$T/d2" || fail "parallel reads in pieces wrong"
SDEV=$(tapctl attach s --kind fuse) || fail "attach s"
head -c 4M /dev/urandom >"$T/d3"
dd if="$T/d3" of="$SDEV" bs=1M seek=8 oflag=direct status=none || fail "dd to $SDEV"
dd if="$SDEV" bs=1M skip=8 count=4 iflag=direct status=none | cmp - "$T/d3" ||
	fail "$SDEV reads wrong through a small pool"
tapctl detach s || fail "detach s"

# --- kinds -------------------------------------------------------------------
expect 1 "unknown device kind 'floppy' \(this tapd has: fuse, nbd, ublk\)" tapctl attach a --kind floppy
errname org.xenproject.Tapd1.Error.NotSupported /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Attach nbd
# The default kind is the first available one: fuse here.
DEV=$(tapctl attach a) || fail "attach with the default kind"
tapctl list --json | grep -q "\"kind\": \"fuse\", \"path\": \"$DEV\"" || fail "default kind not fuse"
# A tap whose file is open cannot be destroyed (the open holds it)...
tapctl detach a || fail "detach a"
exec 5<"$F/a"
expect 1 "client" tapctl destroy a
exec 5<&-
for _ in $(seq 1 $((50 * (1 + SLOW * 4)))); do tapctl destroy a 2>/dev/null && break; sleep 0.1; done
tapctl list | grep -qE '^[0-9]+ +a ' && fail "a was not destroyed once its file was closed"
[ -e "$F/a" ] && fail "a destroyed tap's file is still there"

# --- FUSE unavailable: tapd goes on without, and Attach says why ----------
stop_tapd || fail "stop"
[ -e "$F" ] && fail "$F is left after the stop"
touch "$F"
start_tapd
# (The FUSE export starts once the bus name is ours: a moment after the
# bus first answers.)
for _ in $(seq 1 $((50 * (1 + SLOW * 4)))); do
	grep -q "fuse: $F is not a directory: taps are not served as files" "$TAPD_LOG" && break
	sleep 0.1
done
grep -q "fuse: $F is not a directory: taps are not served as files" "$TAPD_LOG" ||
	fail "the missing FUSE export was not logged"
tapctl create --name m ram:1M >/dev/null || fail "create without FUSE"
expect 1 "fuse: $F is not a directory" tapctl attach m --kind fuse
expect 1 "no kind of device is available: fuse: $F is not a directory" tapctl attach m
errname org.xenproject.Tapd1.Error.NotSupported /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Attach fuse
qemu-io -f raw -c "write -P 0x11 0 4k" -c "read -P 0x11 0 4k" "$(nbd_uri m)" >/dev/null ||
	fail "NBD without FUSE"
tapctl list | grep -qE '^0 +m +running .* ram:1M .* -$' || fail "list without FUSE: $(tapctl list)"
log "all checks passed"
exit 0
