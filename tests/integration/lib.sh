# Shared harness for integration tests. Each test sources this file, then
# calls start_bus and start_tapd; everything it starts is stopped and its
# temporary folder removed on exit. Exit 77 means "skipped" (automake).
#
# Environment (set by `make check`, defaults work from the build tree):
#   TOP_SRCDIR, TOP_BUILDDIR   source and build trees
#   TAPD_WRAPPER               prefix for tapd, e.g. "valgrind --error-exitcode=99"
set -eu

TOP_SRCDIR=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
TOP_BUILDDIR=${TOP_BUILDDIR:-$TOP_SRCDIR}
TAPD=$TOP_BUILDDIR/src/tapd
TAPCTL=$TOP_BUILDDIR/tools/tapctl
TAPD_WRAPPER=${TAPD_WRAPPER:-}

T=$(mktemp -d /tmp/tapd-test.XXXXXX)
chmod 755 "$T"
NBD_SOCK=$T/nbd.sock
STATE=$T/state
BUS_PID=
TAPD_PID=
TAPD_LOG=$T/tapd.log
EXTRA_PIDS=

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
fail() {
	log "FAIL: $*"
	if [ -f "$TAPD_LOG" ]; then
		log "--- last lines of tapd log"
		tail -n 30 "$TAPD_LOG" >&2 || true
	fi
	exit 1
}
skip() { log "SKIP: $*"; exit 77; }
# need CMD...: skip unless each is a program on PATH (type -P: the nbdsh
# wrapper below is a function and must not count).
need() { for c in "$@"; do type -P "$c" >/dev/null 2>&1 || skip "$c not installed"; done; }
# have_libnbd: Debian's python3 has the libnbd bindings (python3-libnbd),
# whatever python3 comes first on PATH; need_libnbd skips the test without.
have_libnbd() { PATH=/usr/bin:$PATH python3 -c 'import nbd' 2>/dev/null; }
need_libnbd() { have_libnbd || skip "python3-libnbd not installed"; }

cleanup() {
	local rc=$?
	set +e
	# Every test ends with a graceful stop, and a daemon that does not
	# exit 0 from it (a hang, a crash, a sanitizer or valgrind report)
	# fails the test that was running.
	if [ -n "$TAPD_PID" ] && kill -0 "$TAPD_PID" 2>/dev/null; then
		local st=0
		kill -TERM "$TAPD_PID"
		for _ in $(seq 1 300); do kill -0 "$TAPD_PID" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$TAPD_PID" 2>/dev/null; then
			kill -KILL "$TAPD_PID" 2>/dev/null
			log "FAIL: tapd did not stop within 30 s of SIGTERM"
			st=1
		fi
		wait "$TAPD_PID" 2>/dev/null || st=$?
		if [ "$st" != 0 ] && [ "$rc" = 0 ]; then
			log "FAIL: tapd exited with status $st on SIGTERM at the end of the test"
			tail -n 40 "$TAPD_LOG" >&2
			rc=1
		fi
	fi
	[ -n "$EXTRA_PIDS" ] && kill $EXTRA_PIDS 2>/dev/null
	[ -n "$BUS_PID" ] && kill "$BUS_PID" 2>/dev/null
	for m in $(findmnt -rno TARGET | grep "^$T/" | sort -r); do umount -l "$m"; done
	[ "${KEEP_TEST_DIR:-}" ] || rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private dbus-daemon of type "system" whose policy is our policy file,
# so the access rules under test are the ones we ship; with --open, a bus
# that lets anyone own and call anything (our policy missing or overridden).
start_bus() {
	{
		cat <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$T/bus.sock</listen>
  <auth>EXTERNAL</auth>
CONF
		if [ "${1:-}" = --open ]; then
			cat <<CONF
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow send_type="signal"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
CONF
		else
			cat <<CONF
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>$TOP_SRCDIR/units/org.xenproject.Tapd1.conf</include>
CONF
		fi
		echo '</busconfig>'
	} >"$T/bus.conf"
	dbus-daemon --config-file="$T/bus.conf" --nofork --nopidfile --nosyslog 2>"$T/bus.log" &
	BUS_PID=$!
	export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$T/bus.sock"
	# The socket file appears at bind(), before listen(): wait until the
	# bus answers, not until the file is there.
	for _ in $(seq 1 100); do
		[ -S "$T/bus.sock" ] && dbus-send --bus="$DBUS_SYSTEM_BUS_ADDRESS" --print-reply \
			--dest=org.freedesktop.DBus /org/freedesktop/DBus \
			org.freedesktop.DBus.GetId >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "dbus-daemon did not start: $(cat "$T/bus.log")"
}

# Start tapd in the foreground (background job) and wait until it serves:
# the NBD socket exists and the bus answers.
start_tapd() {
	mkdir -p "$STATE"
	$TAPD_WRAPPER "$TAPD" --foreground --state-dir "$STATE" --nbd-socket "$NBD_SOCK" \
		--bus "$DBUS_SYSTEM_BUS_ADDRESS" --log-level debug "$@" >>"$TAPD_LOG" 2>&1 &
	TAPD_PID=$!
	for _ in $(seq 1 200); do
		kill -0 "$TAPD_PID" 2>/dev/null || fail "tapd exited at start"
		if [ -S "$NBD_SOCK" ] && "$TAPCTL" list >/dev/null 2>&1; then return 0; fi
		sleep 0.05
	done
	fail "tapd did not become ready"
}

# Stop tapd with SIGTERM and return its exit status.
stop_tapd() {
	local rc=0
	kill -TERM "$TAPD_PID"
	wait "$TAPD_PID" || rc=$?
	TAPD_PID=
	return $rc
}

# Kill this helper process (a client, a monitor) when the test ends.
track_pid() { EXTRA_PIDS="$EXTRA_PIDS $1"; }

tapd_alive() { [ -n "$TAPD_PID" ] && kill -0 "$TAPD_PID" 2>/dev/null; }

tapctl() { "$TAPCTL" "$@"; }
# nbdsh is a python3 script: run it with Debian's python3, which has the
# libnbd bindings (python3-libnbd), whatever python3 comes first on PATH.
nbdsh() { PATH=/usr/bin:$PATH command nbdsh "$@"; }

# expect RC REGEX CMD...: CMD exits RC and its stderr matches REGEX
# (extended, case-insensitive); its output is left in $T/out and $T/err.
expect() {
	local want=$1 pat=$2 rc=0
	shift 2
	"$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" = "$want" ] || fail "$*: exit $rc, expected $want; stderr: $(cat "$T/err")"
	grep -qiE -- "$pat" "$T/err" || fail "$*: stderr lacks /$pat/: $(cat "$T/err")"
}

# Record tapd's D-Bus signals in $T/signals with gdbus (libglib2.0-bin);
# returns 1 (and records nothing) where gdbus is missing.
monitor_signals() {
	command -v gdbus >/dev/null || return 1
	gdbus monitor --address "$DBUS_SYSTEM_BUS_ADDRESS" --dest org.xenproject.Tapd1 \
		>"$T/signals" 2>&1 &
	track_pid $!
	for _ in $(seq 1 100); do grep -q 'is owned by' "$T/signals" && break; sleep 0.05; done
	grep -q 'is owned by' "$T/signals" || fail "gdbus monitor did not start: $(cat "$T/signals")"
}

nbd_uri() { printf 'nbd+unix:///%s?socket=%s' "$1" "$NBD_SOCK"; }

# errname NAME PATH METHOD ARGS...: the raw D-Bus call fails with the named
# error. busctl prints only the message, gdbus prints the name too: without
# gdbus (libglib2.0-bin) nothing is checked.
errname() {
	local want=$1 path=$2 method=$3 out rc=0
	shift 3
	command -v gdbus >/dev/null || return 0
	out=$(gdbus call --address "$DBUS_SYSTEM_BUS_ADDRESS" --dest org.xenproject.Tapd1 \
		--object-path "$path" --method "$method" "$@" 2>&1) || rc=$?
	[ $rc -ne 0 ] || fail "$method $* succeeded: $out"
	case $out in
	*"$want:"*) ;;
	*) fail "$method $*: expected $want, got: $out" ;;
	esac
}

# qemu_img_round_trip CREDS OPTS WANT IMAGE WHAT: with qemu-img and the TLS
# credentials object CREDS (--object), read the export that the image
# options OPTS name and compare it with the file WANT, then write as many
# fresh random bytes as IMAGE (the tap's raw file) holds and check that
# IMAGE has them. WHAT names the transport in failures; the fresh bytes
# stay in $T/new.raw, what was read in $T/out.raw.
qemu_img_round_trip() {
	local creds=$1 opts=$2 want=$3 image=$4 what=$5
	qemu-img convert --object "$creds" --image-opts "$opts" -O raw "$T/out.raw" ||
		fail "qemu-img convert from $what"
	cmp "$want" "$T/out.raw" || fail "data read over $what differs"
	head -c "$(stat -c %s "$image")" /dev/urandom >"$T/new.raw"
	qemu-img convert -n --object "$creds" -f raw "$T/new.raw" --target-image-opts "$opts" ||
		fail "qemu-img convert to $what"
	cmp "$T/new.raw" "$image" || fail "data written over $what is not in the image"
}

# tmpfs_dir DIR SIZE: mount a private tmpfs of SIZE on DIR (made here), or
# skip the test where that cannot be; the cleanup unmounts it.
tmpfs_dir() {
	mkdir -p "$1"
	mount -t tmpfs -o "size=$2" tmpfs "$1" || skip "cannot mount a tmpfs here"
}

# fio_check NAME: the fio job whose output is in $T/NAME.out and errors in
# $T/NAME.err reported no verify failure and no error (its exit status is
# the caller's to check).
fio_check() {
	if grep -qiE 'verify.*(fail|error|bad)|bad magic|crc32c.*(wanted|mismatch)' \
		"$T/$1.out" "$T/$1.err"; then
		fail "fio $1 reported verify errors: $(cat "$T/$1.out" "$T/$1.err")"
	fi
	grep -qE 'err= *0' "$T/$1.out" || fail "fio $1 reported an error: $(cat "$T/$1.out")"
}

# held_client TAP URI: a qemu-io connected to URI that reads its commands
# from fd 3 (a fifo; close fd 3 to end it), its output line-buffered in
# $T/held.out and its pid in HELD; returns once TAP counts the connection.
held_client() {
	mkfifo "$T/cmds"
	stdbuf -oL qemu-io -f raw "$2" <"$T/cmds" >"$T/held.out" 2>&1 &
	HELD=$!
	track_pid $HELD
	exec 3>"$T/cmds"
	for _ in $(seq 1 100); do
		tapctl stats "$1" | grep -q '^connections *1$' && return 0
		sleep 0.05
	done
	fail "qemu-io did not connect to $1"
}

# Number of open fds of tapd.
tapd_fds() { ls "/proc/$TAPD_PID/fd" | wc -l; }
# fds_back N WHAT: tapd's fd count returns to N within 10 s (closes that
# tapd has yet to get to, slowly under valgrind), or fail naming its fds.
fds_back() {
	for _ in $(seq 1 100); do [ "$(tapd_fds)" = "$1" ] && return 0; sleep 0.1; done
	fail "$2: tapd has $(tapd_fds) fds, $1 before: $(ls -l "/proc/$TAPD_PID/fd" | tail -n +2 | awk '{ print $(NF - 2), $NF }' | tr '\n' ' ')"
}

# bctl ARGS...: busctl on the test's bus.
bctl() { busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" "$@"; }

# tap_state NAME: the tap's state in `tapctl list --json` (running, paused...).
tap_state() { tapctl list --json | grep "\"name\": \"$1\"" | sed 's/.*"state": "\([a-z]*\)".*/\1/'; }

# pool_field POOL FIELD: one field of `tapctl pool-list --json` ("" if absent).
pool_field() {
	tapctl pool-list --json | python3 -c 'import json, sys
pools = {p["name"]: p for p in json.load(sys.stdin)}
print(pools.get(sys.argv[1], {}).get(sys.argv[2], ""))' "$1" "$2"
}

# wait_sock PATH: a server's unix socket appears (5 s), or the test fails.
wait_sock() {
	for _ in $(seq 1 100); do [ -S "$1" ] && return 0; sleep 0.05; done
	fail "no server on $1"
}

# --- NBD attacks (issue 10: the NBD export's limits) ---

# SLOW is 1 when tapd runs under a wrapper (valgrind: ~20x slower); the
# attack tests stretch their timeouts and bounds by it.
SLOW=0
[ -n "$TAPD_WRAPPER" ] && SLOW=1

# nbd_free_port ADDR: a TCP port free on ADDR now.
nbd_free_port() {
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# tapd_rss_kb: tapd's resident memory (VmRSS) in KiB.
tapd_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$TAPD_PID/status"; }

# rss_watch_start NAME: sample tapd's RSS every 0.1 s into $T/NAME.rss
# until rss_watch_stop NAME, which prints the highest sample (KiB).
rss_watch_start() {
	(while kill -0 "$TAPD_PID" 2>/dev/null; do tapd_rss_kb; sleep 0.1; done) \
		>"$T/$1.rss" 2>/dev/null &
	eval "RSS_PID_$1=$!"
	track_pid $!
}
rss_watch_stop() {
	local pid
	eval "pid=\$RSS_PID_$1"
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
	sort -n "$T/$1.rss" | tail -n 1
}

# probe_start NAME URI FILE SECONDS: a second client (nbdsh) that reads
# random 4k blocks of URI for SECONDS, one at a time, comparing each with
# FILE (the image's content), and records its latencies; probe_check NAME
# MS waits for it and fails unless every read returned the right data and
# the 99th percentile stayed under MS milliseconds (times 5 under SLOW).
probe_start() {
	URI=$2 FILE=$3 SECS=$4 nbdsh -c '
import os, random, time
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
want = open(os.environ["FILE"], "rb").read()
blocks = min(h.get_size(), len(want)) // 4096
end = time.monotonic() + float(os.environ["SECS"])
lat, bad = [], 0
while time.monotonic() < end:
    off = random.randrange(blocks) * 4096
    t0 = time.monotonic()
    got = h.pread(4096, off)
    lat.append(time.monotonic() - t0)
    if got != want[off:off + 4096]:
        bad += 1
lat.sort()
print("reads %d bad %d p99_ms %.2f max_ms %.2f" % (len(lat), bad,
      lat[int(len(lat) * 0.99)] * 1000, lat[-1] * 1000), flush=True)
h.shutdown()
' >"$T/$1.probe" 2>&1 &
	eval "PROBE_PID_$1=$!"
	track_pid $!
}
probe_check() {
	local pid rc=0 bound=$2 reads bad p99
	eval "pid=\$PROBE_PID_$1"
	wait "$pid" || rc=$?
	[ $rc = 0 ] || fail "probe $1 failed: $(cat "$T/$1.probe")"
	read -r _ reads _ bad _ p99 _ < <(grep '^reads ' "$T/$1.probe") ||
		fail "probe $1 printed nothing: $(cat "$T/$1.probe")"
	[ "$SLOW" = 1 ] && bound=$((bound * 5))
	log "probe $1: $(cat "$T/$1.probe")"
	[ "$reads" -ge 10 ] || fail "probe $1: only $reads reads"
	[ "$bad" = 0 ] || fail "probe $1: $bad reads returned wrong data"
	python3 -c 'import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))' "$p99" "$bound" ||
		fail "probe $1: p99 $p99 ms, over $bound ms"
}
