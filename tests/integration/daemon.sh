#!/usr/bin/env bash
# The daemon's contract with systemd and the kernel: READY=1 only once the
# bus name is owned and the NBD socket listens, STATUS with the tap count,
# WATCHDOG=1 when asked, STOPPING=1 on SIGTERM; the I/O flusher flag and
# memory locking reported as they really are, warned about once when they
# fail, and fatal under --strict.
. "$(dirname "$0")/lib.sh"
need busctl
PY=/usr/bin/python3

# A notify socket that records each message, and at READY=1 whether the
# NBD socket and the bus name were already there.
cat >"$T/notify.py" <<'PYEOF'
import os, socket, subprocess, sys
path, out, nbd, bus = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, "a", buffering=1) as f:
    while True:
        msg = s.recv(4096).decode()
        for line in msg.split("\n"):
            f.write(line + "\n")
            if line == "READY=1":
                owner = subprocess.run(["busctl", "--address=" + bus, "call",
                    "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                    "NameHasOwner", "s", "org.xenproject.Tapd1"], capture_output=True, text=True).stdout
                f.write("at-ready: socket=%s name=%s\n" % (os.path.exists(nbd), owner.strip()))
PYEOF

start_bus
$PY "$T/notify.py" "$T/notify.sock" "$T/notify.log" "$NBD_SOCK" "$DBUS_SYSTEM_BUS_ADDRESS" &
track_pid $!
for _ in $(seq 1 100); do [ -S "$T/notify.sock" ] && break; sleep 0.05; done

NOTIFY_SOCKET=$T/notify.sock WATCHDOG_USEC=600000 start_tapd
wait_notify() {
	for _ in $(seq 1 100); do grep -qx "$1" "$T/notify.log" && return 0; sleep 0.05; done
	fail "no '$1' from sd_notify; got: $(cat "$T/notify.log")"
}
wait_notify READY=1
for _ in $(seq 1 100); do grep -q '^at-ready:' "$T/notify.log" && break; sleep 0.05; done
grep -qx 'at-ready: socket=True name=b true' "$T/notify.log" ||
	fail "READY=1 came before the NBD socket or the bus name: $(cat "$T/notify.log")"
wait_notify 'STATUS=Serving 0 taps'
tapctl create ram:1M >/dev/null
wait_notify 'STATUS=Serving 1 tap'
wait_notify WATCHDOG=1

# What the kernel really granted, against what the daemon reports.
prop() {
	busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.xenproject.Tapd1 \
		/org/xenproject/Tapd1 org.xenproject.Tapd1.Manager "$1"
}
capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
if (( (0x$capeff >> 24) & 1 )); then
	[ "$(prop IoFlusher)" = "b true" ] || fail "IoFlusher is $(prop IoFlusher) with CAP_SYS_RESOURCE"
	flags=$(awk '{print $9}' "/proc/$TAPD_PID/stat")
	# PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE, as ublksrv's test 008 checks.
	(( (flags & 0x80000) && (flags & 0x100000) )) || fail "task flags $flags lack the I/O flusher bits"
else
	[ "$(prop IoFlusher)" = "b false" ] || fail "IoFlusher is $(prop IoFlusher) without CAP_SYS_RESOURCE"
	[ "$(grep -c 'PR_SET_IO_FLUSHER failed' "$TAPD_LOG")" = 1 ] ||
		fail "the I/O flusher failure is not logged exactly once"
	grep 'PR_SET_IO_FLUSHER failed' "$TAPD_LOG" | grep -q 'CAP_SYS_RESOURCE.*deadlock' ||
		fail "the warning does not say why it failed and what it risks"
	# --strict turns the failure into a refusal to start.
	rc=0
	timeout 10 "$TAPD" --strict --state-dir "$T/strict" --bus "$DBUS_SYSTEM_BUS_ADDRESS" \
		>"$T/strict.log" 2>&1 || rc=$?
	[ "$rc" = 1 ] || fail "tapd --strict exited $rc without CAP_SYS_RESOURCE, want 1"
	grep -q '^<3>PR_SET_IO_FLUSHER failed' "$T/strict.log" || fail "--strict failure not logged as an error"
fi
vmlck=$(awk '/^VmLck/ {print $2}' "/proc/$TAPD_PID/status")
case "$(prop MemoryLocked)" in
"b true") [ "$vmlck" -gt 0 ] || fail "MemoryLocked true but VmLck is $vmlck kB" ;;
"b false") grep -q 'mlockall failed\|memory locking' "$TAPD_LOG" || fail "memory not locked and no word why" ;;
*) fail "MemoryLocked: $(prop MemoryLocked)" ;;
esac

stop_tapd || fail "tapd exited $? on SIGTERM"
wait_notify STOPPING=1
log "ok"
