#!/bin/bash
# TCP listeners (--nbd-listen): nbdinfo and qemu-img over nbd://HOST:PORT,
# IPv4 and IPv6 at once next to the unix socket; malformed addresses and
# port 0 are refused at start.
. "$(dirname "$0")/lib.sh"
need nbdinfo qemu-img python3

free_port() {
	python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
' "$1"
}

for bad in "127.0.0.1:0" "127.0.0.1" "::1:10809" "127.0.0.1:65536" "127.0.0.1:-1" ":10809" \
	"[::1]10809" "no.such.host.invalid:10809"; do
	if timeout 10 "$TAPD" --foreground --state-dir "$T/bad" --nbd-socket "$T/bad.sock" \
		--bus "unix:path=$T/nobus" --no-mlock --nbd-listen "$bad" >"$T/bad.log" 2>&1; then
		fail "tapd accepted --nbd-listen $bad"
	fi
	grep -q "NBD TCP listener" "$T/bad.log" || fail "--nbd-listen $bad: unclear error: $(cat "$T/bad.log")"
done

start_bus
port=$(free_port 127.0.0.1)
args=(--nbd-listen "127.0.0.1:$port")
port6=
if python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
	port6=$(free_port ::1)
	args+=(--nbd-listen "[::1]:$port6")
fi
start_tapd "${args[@]}"
grep -q "listening on tcp 127.0.0.1:$port" "$TAPD_LOG" || fail "TCP listener not logged"

dd if=/dev/urandom of="$T/src.raw" bs=1M count=8 status=none
tapctl create --name net "raw:$T/src.raw" >/dev/null || fail "create"
exports=$(busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.xenproject.Tapd1 \
	/org/xenproject/Tapd1/tap/0 org.xenproject.Tapd1.Tap Exports)
grep -qF "\"nbd://127.0.0.1:$port/net\"" <<<"$exports" || fail "Exports lacks the TCP URI: $exports"

out=$(nbdinfo "nbd://127.0.0.1:$port/net") || fail "nbdinfo over TCP"
printf '%s\n' "$out" | grep -q "export-size: 8388608" || fail "nbdinfo over TCP: $out"

qemu-img convert -f raw -O raw "nbd://127.0.0.1:$port/net" "$T/copy.raw" || fail "qemu-img convert from TCP"
cmp "$T/src.raw" "$T/copy.raw" || fail "copy over TCP differs"

# And back in, over IPv6 when the host has it (-n: the target exists).
dd if=/dev/urandom of="$T/new.raw" bs=1M count=8 status=none
target="nbd://127.0.0.1:$port/net"
[ -n "$port6" ] && target="nbd://[::1]:$port6/net"
qemu-img convert -n -f raw -O raw "$T/new.raw" "$target" || fail "qemu-img convert to $target"
cmp "$T/new.raw" "$T/src.raw" || fail "data written over $target is not in the image"
# The unix socket serves alongside.
nbdinfo "$(nbd_uri net)" >/dev/null || fail "unix socket stopped serving"

tapd_alive || fail "tapd died"
log "PASS"
