#!/bin/bash
# The nbd: driver over nbdkit's memory plugin on a unix socket: 32 MiB of
# random data go in and out through tapd's own export with qemu-img and
# compare equal; flush and FUA are accepted; trim and write-zeroes reach
# the remote (nbdkit's memory reads back zeros); 100 create/destroy cycles
# leak no fd.
. "$(dirname "$0")/lib.sh"
need nbdkit qemu-img qemu-io nbdsh cmp
need_libnbd

start_bus
start_tapd

rsock=$T/remote.sock
nbdkit --foreground --unix "$rsock" --exit-with-parent memory 64M >"$T/nbdkit.log" 2>&1 &
track_pid $!
for _ in $(seq 1 100); do [ -S "$rsock" ] && break; sleep 0.05; done
[ -S "$rsock" ] || fail "nbdkit did not start: $(cat "$T/nbdkit.log")"
remote="nbd+unix:///?socket=$rsock"

name=$(tapctl create --name rem "nbd:$remote") || fail "tapctl create nbd: failed"
[ "$name" = rem ] || fail "tapctl create printed '$name'"
grep -qF "nbd: $remote: connected, 67108864 bytes" "$TAPD_LOG" || fail "connection not logged"
uri=$(nbd_uri rem)
size=$(nbdinfo --size "$uri") || fail "nbdinfo on the tap"
[ "$size" = 67108864 ] || fail "tap size $size, want the remote's 67108864"

# 32 MiB of random data in and out through tapd; the remote has it too.
head -c 32M /dev/urandom >"$T/src"
qemu-img convert -n -f raw -O raw "$T/src" "$uri" || fail "qemu-img convert into the tap"
qemu-img convert -f raw -O raw "$uri" "$T/out" || fail "qemu-img convert out of the tap"
head -c 32M "$T/out" | cmp - "$T/src" || fail "data read back through tapd differs"
qemu-img convert -f raw -O raw "$remote" "$T/remote.out" || fail "read the remote directly"
head -c 32M "$T/remote.out" | cmp - "$T/src" || fail "the remote does not hold what was written"

# Flush, FUA, trim and zeroes: accepted, and they reach the remote.
URI=$uri REMOTE=$remote nbdsh -c '
import os
M = 1 << 20
h.connect_uri(os.environ["URI"])
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero()
h.pwrite(b"\x5a" * M, 40 * M, nbd.CMD_FLAG_FUA)
h.flush()
assert h.pread(M, 40 * M) == b"\x5a" * M
h.zero(2 * M, 1 * M, nbd.CMD_FLAG_FUA)
h.trim(4 * M, 8 * M)
h.flush()
assert h.pread(2 * M, 1 * M) == bytes(2 * M), "zeroed range is not zeros"
# Odd sizes and offsets go through unchanged (align 1 on the memory plugin).
h.pwrite(b"odd", 12345)
assert h.pread(5, 12344)[1:4] == b"odd"
r = nbd.NBD()
r.connect_uri(os.environ["REMOTE"])
assert r.pread(M, 40 * M) == b"\x5a" * M, "FUA write not on the remote"
assert r.pread(2 * M, 1 * M) == bytes(2 * M), "zeroes did not reach the remote"
assert r.pread(4 * M, 8 * M) == bytes(4 * M), "trim did not reach the remote"
' || fail "flush/FUA/trim/zeroes through tapd"

# Many requests in flight at once (more than the driver's slot table).
args=()
for i in $(seq 0 399); do args+=(-c "aio_write -P 0x33 $((49152 + i * 8))k 4k"); done
qemu-io -f raw "${args[@]}" -c "aio_flush" "$uri" >"$T/qio.out" 2>&1 ||
	fail "pipelined writes: $(tail -3 "$T/qio.out")"
qemu-io -f raw -c "read -P 0x33 $((49152 + 3192))k 4k" -c "read -P 0x33 48M 4k" -c "read -P 0 $((49152 + 4))k 4k" "$uri" \
	>"$T/qio.out" 2>&1 || fail "pipelined writes did not land: $(cat "$T/qio.out")"
grep -q "Pattern verification failed" "$T/qio.out" && fail "pipelined writes did not land"

tapctl destroy rem >/dev/null || fail "destroy"

# A read-only tap on the same remote; cycles of create and destroy leak no
# fd (tapd and nbdkit both see connections come and go).
fds0=$(tapd_fds)
for i in $(seq 1 100); do
	tapctl create --name "c$i" "nbd:$remote" >/dev/null || fail "create cycle $i"
	tapctl destroy "c$i" >/dev/null || fail "destroy cycle $i"
done
fds1=$(tapd_fds)
log "tapd fds: $fds0 before 100 cycles, $fds1 after"
[ "$fds1" -le "$fds0" ] || fail "fd leak: $fds0 -> $fds1 after 100 create/destroy cycles"

tapctl create --read-only --name ro "nbd:$remote" >/dev/null || fail "read-only create"
qemu-io -r -f raw -c "read -P 0x5a 40M 1M" "$(nbd_uri ro)" >/dev/null || fail "read through read-only tap"

tapd_alive || fail "tapd died"
log "PASS"
