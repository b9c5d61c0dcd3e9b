#!/bin/bash
# The nbd: driver when its server goes away. nbdkit (file plugin, so data
# survives a restart) is killed and restarted while fio writes and
# verifies through tapd: requests wait, are resent and fio finishes clean.
# Then the server stays away longer than timeout=2: the client of a tap
# sees EIO, tapd stays up, and once the server is back I/O works again.
. "$(dirname "$0")/lib.sh"
need nbdkit fio qemu-io
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"

start_bus
start_tapd

f=$T/remote.raw
rsock=$T/remote.sock
truncate -s 64M "$f"
NBDKIT_PID=
start_nbdkit() {
	rm -f "$rsock"
	nbdkit --foreground --unix "$rsock" file "$f" >>"$T/nbdkit.log" 2>&1 &
	NBDKIT_PID=$!
	track_pid $NBDKIT_PID
	for _ in $(seq 1 100); do [ -S "$rsock" ] && return 0; sleep 0.05; done
	fail "nbdkit did not start: $(cat "$T/nbdkit.log")"
}
stop_nbdkit() {
	kill "-${1:-TERM}" "$NBDKIT_PID"
	wait "$NBDKIT_PID" 2>/dev/null || true
}
start_nbdkit

tapctl create --name long "nbd:nbd+unix:///?socket=$rsock" >/dev/null || fail "create long"

# Phase 1: fio writes (rate-limited so that it runs a few seconds), the
# server is killed without warning and comes back half a second later,
# then is stopped politely (it answers ESHUTDOWN, the driver hangs up and
# reconnects) and restarted once more.
(cd "$T" && fio --name=reconnect --ioengine=nbd --uri="$(nbd_uri long)" \
	--rw=randwrite --bs=4k --iodepth=32 --size=32M --rate_iops=4000 \
	--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
	--output="$T/fio.out" >/dev/null 2>"$T/fio.err") &
fio_pid=$!
track_pid $fio_pid
sleep 0.8
stop_nbdkit KILL
sleep 0.5
start_nbdkit
sleep 0.8
stop_nbdkit TERM
sleep 0.3
start_nbdkit
rc=0
wait $fio_pid || rc=$?
cat "$T/fio.out" "$T/fio.err" >&2
[ $rc = 0 ] || fail "fio exited $rc across server restarts"
grep -qE 'err= *0' "$T/fio.out" || fail "fio reported an error"
grep -qE 'read: IOPS=' "$T/fio.out" || fail "fio did not verify (no reads)"
n=$(grep -cF "nbd: nbd+unix:///?socket=$rsock: reconnected" "$TAPD_LOG" || true)
log "reconnects logged: $n"
[ "$n" -ge 2 ] || fail "reconnects not logged"
grep -F "nbd: nbd+unix:///?socket=$rsock: " "$TAPD_LOG" | grep -q "reconnecting (requests wait up to 30 s)" ||
	fail "disconnect not logged"

# Phase 2: the server stays away for longer than the short tap's timeout.
# (SIGKILL: on SIGTERM nbdkit waits for idle clients to hang up, and the
# taps' connections are idle now.)
tapctl create --name short "nbd:nbd+unix:///?socket=$rsock&timeout=2" >/dev/null ||
	fail "create short"
stop_nbdkit KILL
start=$(date +%s%N)
qemu-io -f raw -c "write -P 0x42 0 64k" "$(nbd_uri short)" >"$T/qio.out" 2>&1 &&
	fail "write succeeded with no server: $(cat "$T/qio.out")"
elapsed=$((($(date +%s%N) - start) / 1000000))
log "write without a server failed after $elapsed ms: $(head -1 "$T/qio.out")"
grep -q "Input/output error" "$T/qio.out" || fail "no EIO: $(cat "$T/qio.out")"
[ "$elapsed" -ge 1500 ] || fail "EIO after $elapsed ms, before the 2 s timeout"
grep -q "request.* failed with EIO: no server for 2 s" "$TAPD_LOG" || fail "EIO not logged"
tapd_alive || fail "tapd died without its server"

# The server returns: new I/O works on both taps.
start_nbdkit
qemu-io -f raw -c "write -P 0x42 0 64k" -c "read -P 0x42 0 64k" "$(nbd_uri short)" \
	>"$T/qio.out" 2>&1 || fail "I/O after the server returned: $(cat "$T/qio.out")"
grep -q "Pattern verification failed" "$T/qio.out" && fail "wrong data after the server returned"
cmp -n 65536 "$f" <(head -c 64k /dev/zero | tr '\0' B) || fail "write did not reach the remote file"
qemu-io -f raw -c "read 0 64k" "$(nbd_uri long)" >/dev/null 2>&1 || fail "long tap after return"

tapd_alive || fail "tapd died"
log "PASS"
