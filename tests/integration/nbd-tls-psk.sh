#!/bin/bash
# TLS with pre-shared keys (--tls-psk, psktool's username:hexkey file):
# nbdinfo and qemu-img with the right key are served, a wrong key or an
# unknown user is refused, and a malformed key file stops the start.
. "$(dirname "$0")/lib.sh"
need psktool nbdinfo qemu-img

psk=$T/psk
mkdir -p "$psk" "$T/wrong"
psktool -p "$psk/keys.psk" -u alice >/dev/null || fail "psktool"
psktool -p "$psk/keys.psk" -u bob >/dev/null || fail "psktool"
psktool -p "$T/wrong/keys.psk" -u alice >/dev/null || fail "psktool"
grep -q '^alice:[0-9a-f]\{64\}$' "$psk/keys.psk" || fail "psktool wrote $(cat "$psk/keys.psk")"

bad_start() { # expected-word file
	local rc=0
	timeout 20 $TAPD_WRAPPER "$TAPD" --foreground --state-dir "$T/bad" --nbd-socket "$T/bad.sock" \
		--bus "unix:path=$T/nobus" --no-mlock --tls require --tls-psk "$2" >"$T/bad.log" 2>&1 || rc=$?
	[ $rc = 1 ] || fail "PSK file $2: exit status $rc: $(cat "$T/bad.log")"
	grep -q "NBD TLS: .*$1" "$T/bad.log" || fail "PSK file $2: unclear error: $(cat "$T/bad.log")"
}
printf 'alice:12345\n' >"$T/odd.psk"
printf 'alice:zz\n' >"$T/nothex.psk"
printf 'nocolon\n' >"$T/nocolon.psk"
printf '\n# nothing\n' >"$T/empty.psk"
bad_start "even number of hex digits" "$T/odd.psk"
bad_start "not hexadecimal" "$T/nothex.psk"
bad_start "expected username:hexkey" "$T/nocolon.psk"
bad_start "no username:hexkey line" "$T/empty.psk"
bad_start "No such file" "$T/missing.psk"

start_bus
start_tapd --tls require --tls-psk "$psk/keys.psk"
dd if=/dev/urandom of="$T/disk.raw" bs=1M count=8 status=none
tapctl create --name sec "raw:$T/disk.raw" >/dev/null || fail "create"
# libnbd 1.14 takes the PSK username from the URI's userinfo (user@).
psk_uri() { printf 'nbds+unix://%s@/sec?socket=%s&tls-psk-file=%s' "$2" "$NBD_SOCK" "$1"; }

out=$(nbdinfo "$(psk_uri "$psk/keys.psk" alice)" 2>&1) || fail "nbdinfo with alice's key: $out"
printf '%s\n' "$out" | grep -q "export-size: 8388608" || fail "nbdinfo with PSK: $out"
printf '%s\n' "$out" | grep -q "with TLS" || fail "nbdinfo with PSK not over TLS: $out"
grep -q "TLS TLS1.*PSK user alice" "$TAPD_LOG" || fail "PSK session not logged"
nbdinfo "$(psk_uri "$psk/keys.psk" bob)" >/dev/null 2>&1 || fail "nbdinfo with bob's key"
if nbdinfo "$(psk_uri "$T/wrong/keys.psk" alice)" >/dev/null 2>&1; then
	fail "a wrong key was accepted"
fi
printf 'mallory:%s\n' "$(cut -d: -f2 "$T/wrong/keys.psk")" >"$T/mallory.psk"
if nbdinfo "$(psk_uri "$T/mallory.psk" mallory)" >/dev/null 2>&1; then
	fail "an unknown user was accepted"
fi
if nbdinfo "$(nbd_uri sec)" >/dev/null 2>&1; then fail "plain client served with --tls require"; fi
tapd_alive || fail "tapd died after refused clients"

# qemu-img both ways with qemu's PSK credentials (keys.psk in the dir).
qcreds="tls-creds-psk,id=tls0,dir=$psk,username=alice,endpoint=client"
qimg="driver=nbd,path=$NBD_SOCK,export=sec,tls-creds=tls0"
qemu_img_round_trip "$qcreds" "$qimg" "$T/disk.raw" "$T/disk.raw" PSK
tapd_alive || fail "tapd died"
log "PASS"
