#!/bin/bash
# Pause and unpause over D-Bus and tapctl: a paused tap holds requests and
# serves them after unpause; unpausing on a copy of the image (the snapshot
# flow) keeps every byte; a new image of another size is refused and the
# tap stays paused; double pause, unpause of a running tap and non-root
# callers get their errors; State and Image signal their changes.
. "$(dirname "$0")/lib.sh"
need qemu-io busctl stdbuf
start_bus
start_tapd

R=/org/xenproject/Tapd1
E=org.xenproject.Tapd1.Error
prop() { bctl get-property org.xenproject.Tapd1 "$R/tap/0" org.xenproject.Tapd1.Tap "$1"; }
expect_prop() {
	local got
	got=$(prop "$1") || fail "cannot read Tap.$1"
	[ "$got" = "$2" ] || fail "Tap.$1 is '$got', expected '$2'"
}
# The state of tap NAME as tapctl list --json tells it (one object a line).
json_state() {
	tapctl list --json | grep "\"name\": \"$1\"" | sed 's/.*"state": "\([a-z]*\)".*/\1/'
}
expect_state() {
	local got
	got=$(json_state disk)
	[ "$got" = "$1" ] || fail "tapctl list --json: state '$got', expected '$1'"
	expect_prop State "s \"$1\""
}
# tap_errname NAME METHOD ARGS...: the raw call on the tap fails with the
# named D-Bus error (errname in lib.sh; gdbus prints the name, busctl not).
HAVE_GDBUS=$(command -v gdbus || true)
[ -n "$HAVE_GDBUS" ] || log "gdbus missing (libglib2.0-bin): error names and signals are not checked"
tap_errname() {
	local want=$1 method=$2
	shift 2
	errname "$want" "$R/tap/0" "org.xenproject.Tapd1.Tap.$method" "$@"
}
# qio ARGS...: qemu-io succeeds (a read -P that finds other bytes fails it).
qio() { qemu-io -f raw "$@" >"$T/qio.out" 2>&1 || fail "qemu-io $*: $(cat "$T/qio.out")"; }

MON=
[ -n "$HAVE_GDBUS" ] && monitor_signals && MON=1

img=$T/disk.raw
truncate -s 16M "$img"
[ "$(tapctl create --name disk "raw:$img")" = disk ] || fail "create"
URI=$(nbd_uri disk)
qio -c 'write -P 0x11 0 1M' "$URI"
expect_state running

# ---- requests wait while paused -----------------------------------------
# A client connected before the pause: qemu-io reads its commands from a
# fifo, so its connection is open before we pause and its write is sent
# while the tap is paused.
# Line-buffered: "wrote" would show as soon as the reply arrives.
held_client disk "$URI"

tapctl pause disk || fail "tapctl pause failed"
expect_state paused
echo 'write -P 0x22 1M 1M' >&3
exec 3>&-
sleep 1
kill -0 $HELD 2>/dev/null || fail "a write to a paused tap completed: $(cat "$T/held.out")"
grep -q wrote "$T/held.out" && fail "a write to a paused tap completed: $(cat "$T/held.out")"
expect_state paused

tapctl unpause disk || fail "tapctl unpause failed"
rc=0
wait $HELD || rc=$?
[ $rc = 0 ] || fail "the held write failed after unpause (exit $rc): $(cat "$T/held.out")"
grep -q 'wrote 1048576/1048576 bytes at offset 1048576' "$T/held.out" ||
	fail "the held write did not complete: $(cat "$T/held.out")"
expect_state running
expect_prop Image "s \"raw:$img\""
qio -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'write -P 0x33 2M 64k' "$URI"

# ---- the snapshot flow: pause, copy, unpause on the copy ----------------
new=$T/new.raw
tapctl pause disk || fail "second pause failed"
expect_state paused
cp --sparse=always "$img" "$new"
tapctl unpause disk "raw:$new" || fail "unpause on $new failed"
expect_state running
expect_prop Image "s \"raw:$new\""
tapctl list --json | grep -q "\"image\": \"raw:$new\"" || fail "list does not show the new image"
qio -c 'write -P 0x44 3M 1M' "$URI"
qio -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 1M' -c 'read -P 0x33 2M 64k' \
	-c 'read -P 0x44 3M 1M' "$URI"
# The write went to the new file only.
qio -c 'read -P 0x44 3M 1M' "$new"
qio -c 'read -P 0 3M 1M' "$img"

# ---- refused unpauses leave the tap paused ------------------------------
tapctl pause disk || fail "third pause failed"
truncate -s 8M "$T/small.raw"
expect 1 'keeps its size' tapctl unpause disk "raw:$T/small.raw"
grep -q 'stays paused' "$T/err" || fail "tapctl does not say the tap stays paused: $(cat "$T/err")"
expect_state paused
expect_prop Image "s \"raw:$new\""
tap_errname $E.SizeMismatch Unpause "raw:$T/small.raw"
expect 1 'no such file' tapctl unpause disk "raw:$T/missing.raw"
tap_errname $E.NoSuchFile Unpause "raw:$T/missing.raw"
expect 1 . tapctl unpause disk "bogus:1M"
tap_errname $E.BadImage Unpause "bogus:1M"
expect_state paused

# ---- pause twice, unpause a running tap ---------------------------------
expect 1 'already paused' tapctl pause disk
tap_errname $E.TapBusy Pause
# The empty image string reopens the image the tap had.
tapctl unpause disk || fail "unpause on the same image failed"
expect_state running
expect_prop Image "s \"raw:$new\""
qio -c 'read -P 0x44 3M 1M' "$URI"
expect 1 'not paused' tapctl unpause disk
tap_errname $E.NotPaused Unpause ""
expect 1 'no such tap' tapctl pause nosuch
expect 2 'missing argument' tapctl pause
expect 2 'unexpected argument' tapctl unpause disk raw:/a raw:/b
# By minor, too.
tapctl pause 0 || fail "pause by minor"
tapctl unpause 0 || fail "unpause by minor"

# ---- only root may pause --------------------------------------------------
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null &&
	setpriv --reuid=nobody --regid="$(id -gn nobody)" --clear-groups "$TAPCTL" --version \
		>/dev/null 2>&1; then
	as_nobody() { setpriv --reuid=nobody --regid="$(id -gn nobody)" --clear-groups "$@"; }
	expect 1 'access denied' as_nobody "$TAPCTL" pause disk
	expect_state running
	tapctl pause disk
	expect 1 'access denied' as_nobody "$TAPCTL" unpause disk
	expect 1 'access denied|rejected' as_nobody busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call \
		org.xenproject.Tapd1 "$R/tap/0" org.xenproject.Tapd1.Tap Unpause s ""
	expect_state paused
	as_nobody "$TAPCTL" list | grep -q ' paused ' || fail "nobody's list does not show paused"
	tapctl unpause disk
else
	log "not checking non-root callers (needs root, user nobody and setpriv)"
fi
expect_state running

# ---- a client that connects while the tap is paused waits too -------------
# (a VM's disk reconnecting in the middle of a snapshot)
tapctl pause disk
stdbuf -oL qemu-io -f raw -c 'write -P 0x55 5M 64k' "$URI" >"$T/late.out" 2>&1 &
LATE=$!
track_pid $LATE
sleep 1
kill -0 $LATE 2>/dev/null ||
	fail "a client connecting to a paused tap did not wait: $(cat "$T/late.out")"
grep -q wrote "$T/late.out" && fail "a write to a paused tap completed: $(cat "$T/late.out")"
tapctl unpause disk
rc=0
wait $LATE || rc=$?
[ $rc = 0 ] || fail "the late client failed after unpause (exit $rc): $(cat "$T/late.out")"
qio -c 'read -P 0x55 5M 64k' -c 'read -P 0x44 3M 1M' "$URI"

# ---- signals ----------------------------------------------------------------
if [ -n "$MON" ]; then
	for _ in $(seq 1 40); do
		grep -q "'Image': <'raw:$new'>" "$T/signals" && break
		sleep 0.05
	done
	pc="^$R/tap/0: org.freedesktop.DBus.Properties.PropertiesChanged ('org.xenproject.Tapd1.Tap', {"
	grep -q "$pc.*'State': <'pausing'>" "$T/signals" || fail "no State 'pausing' signal"
	grep -q "$pc.*'State': <'paused'>" "$T/signals" || fail "no State 'paused' signal"
	grep -q "$pc.*'State': <'running'>" "$T/signals" || fail "no State 'running' signal"
	grep -q "$pc.*'State': <'running'>.*'Image': <'raw:$new'>" "$T/signals" ||
		fail "no PropertiesChanged with the new Image: $(grep PropertiesChanged "$T/signals")"
fi
tapd_alive || fail "tapd died"
exit 0
