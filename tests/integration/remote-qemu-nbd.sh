#!/bin/bash
# The nbd: driver over TCP, with qemu-nbd serving a raw file on 127.0.0.1:
# what is written through tapd lands in the file (compared after a flush
# through tapd), reads come back from it, and a wrong export name or a
# closed port are clear errors at create.
. "$(dirname "$0")/lib.sh"
need qemu-nbd qemu-img qemu-io python3 cmp

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_bus
start_tapd

f=$T/remote.raw
truncate -s 48M "$f"
port=$(free_port)
qemu-nbd --fork --pid-file="$T/qemu-nbd.pid" --persistent --shared=8 -f raw -b 127.0.0.1 -p "$port" \
	-x exp "$f" 2>"$T/qemu-nbd.log" || fail "qemu-nbd did not start: $(cat "$T/qemu-nbd.log")"
track_pid "$(cat "$T/qemu-nbd.pid")"
remote="nbd://127.0.0.1:$port/exp"

tapctl create --name net "nbd:$remote?timeout=5" >/dev/null || fail "tapctl create over TCP"
grep -qF "nbd: $remote?timeout=5: connected, 50331648 bytes" "$TAPD_LOG" ||
	fail "connection not logged"
uri=$(nbd_uri net)

head -c 40M /dev/urandom >"$T/src"
qemu-img convert -n -f raw -O raw "$T/src" "$uri" || fail "qemu-img convert into the tap"
qemu-io -f raw -c "write -f -P 0x77 45M 64k" -c flush "$uri" >/dev/null || fail "FUA write and flush"
# Written through tapd, flushed by tapd's client: the file has it.
cmp -n 41943040 "$T/src" "$f" || fail "the remote file does not hold what was written"
cmp -s -n 65536 -i 47185920:0 "$f" <(head -c 64k /dev/zero | tr '\0' '\167') ||
	fail "FUA write not in the remote file"

# And reads come from the file: change it under qemu-nbd, read through tapd.
printf 'writtenbehind' | dd of="$f" bs=1 seek=46137344 conv=notrunc status=none
qemu-io -f raw -c "read -v 44M 16" "$uri" >"$T/qio.out" 2>&1; grep -q "writtenbehind" "$T/qio.out" ||
	fail "read through tapd does not see the remote file"
qemu-img convert -f raw -O raw "$uri" "$T/out" || fail "qemu-img convert out of the tap"
cmp "$T/out" "$f" || fail "data read back through tapd differs from the remote file"

# Clear errors at create: no such export, nothing listening.
out=$(tapctl create --name bad "nbd:nbd://127.0.0.1:$port/nope" 2>&1) && fail "unknown export accepted"
log "unknown export: $out"
printf '%s' "$out" | grep -qi "nope" || fail "unclear error for an unknown export: $out"
dead=$(free_port)
out=$(tapctl create --name bad "nbd:nbd://127.0.0.1:$dead/exp" 2>&1) && fail "closed port accepted"
log "closed port: $out"
printf '%s' "$out" | grep -q "Connection refused" || fail "unclear error for a closed port: $out"

tapctl destroy net >/dev/null || fail "destroy"
tapd_alive || fail "tapd died"
log "PASS"
