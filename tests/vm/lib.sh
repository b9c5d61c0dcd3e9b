# shellcheck shell=bash
# Harness for tests that run inside the VM (tests/vm/FOLDER/NAME.sh source
# "$(dirname "$0")/../lib.sh"). Unlike tests/integration/lib.sh, tapd here is
# the installed one, run by the real systemd on the real system bus: tests
# start it with systemctl or through D-Bus activation. Exit 77 = skipped.
#
# Each test starts with tapd.service stopped (guest-run.sh sees to it), gets
# its own folder $T, and undoes what it did with at_exit (run in reverse
# order when it ends, whatever way it ends).
set -eu

T=$(mktemp -d /tmp/vmtest.XXXXXX)
NAME=${TEST_NAME:-$(basename "$0" .sh)}
STATE=/run/tapd
NBD_SOCK=$STATE/nbd.sock
UNIT=tapd.service
EXTRA_PIDS=
AT_EXIT=()

log() { printf '%s: %s\n' "$NAME" "$*" >&2; }
fail() {
	log "FAIL: $*"
	log "--- last lines of tapd's journal"
	journalctl --no-pager -n 25 -u "$UNIT" -o short-monotonic >&2 || true
	exit 1
}
skip() { log "SKIP: $*"; exit 77; }
need() { for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c not installed in the guest"; done; }

# measure WHAT VALUE...: a number worth reporting (shown by run.sh).
measure() {
	log "measured: $*"
	[ -n "${TAPD_VM_MEASURES:-}" ] && echo "$NAME: $*" >>"$TAPD_VM_MEASURES"
	return 0
}

# at_exit CMD...: run CMD when the test ends (last registered, first run).
at_exit() { AT_EXIT+=("$(printf '%q ' "$@")"); }
track_pid() { EXTRA_PIDS="$EXTRA_PIDS $1"; }

cleanup() {
	local rc=$? i
	set +e
	for ((i = ${#AT_EXIT[@]} - 1; i >= 0; i--)); do
		eval "${AT_EXIT[$i]}" >/dev/null 2>&1
	done
	[ -n "$EXTRA_PIDS" ] && kill $EXTRA_PIDS 2>/dev/null
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# now: seconds since boot, to the millisecond (for timings).
now() { cut -d' ' -f1 /proc/uptime; }
# since T0: seconds elapsed since T0 (from now), one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds (0) or
# SECONDS pass (1).
wait_for() {
	local end
	end=$(awk -v n="$(now)" -v s="$1" 'BEGIN { print n + s }')
	shift
	while ! "$@" >/dev/null 2>&1; do
		awk -v n="$(now)" -v e="$end" 'BEGIN { exit !(n >= e) }' && return 1
		sleep 0.1
	done
}

# unit_prop NAME: one property of tapd.service (systemctl show -P).
unit_prop() { systemctl show -P "$1" "$UNIT"; }
tapd_pid() { unit_prop MainPID; }

# start_tapd: systemctl start, which returns once tapd sent READY=1
# (Type=notify); fails the test unless the unit is then running. tapd is
# stopped when the test ends.
start_tapd() {
	at_exit systemctl stop "$UNIT"
	systemctl start "$UNIT" || fail "systemctl start $UNIT failed: $(systemctl status --no-pager "$UNIT" 2>&1 | tail -n 20)"
	[ "$(unit_prop ActiveState)/$(unit_prop SubState)" = active/running ] ||
		fail "after start: $(unit_prop ActiveState)/$(unit_prop SubState)"
}

# unit_dropin NAME CONTENT: a runtime drop-in for tapd.service (removed,
# with a daemon-reload, when the test ends).
unit_dropin() {
	mkdir -p "/run/systemd/system/$UNIT.d"
	printf '%s\n' "$2" >"/run/systemd/system/$UNIT.d/$1.conf"
	at_exit systemctl daemon-reload
	at_exit rm -f "/run/systemd/system/$UNIT.d/$1.conf"
	systemctl daemon-reload
}

# tap_state NAME: the tap's state in `tapctl list --json`.
tap_state() { tapctl list --json | grep "\"name\": \"$1\"" | sed 's/.*"state": "\([a-z]*\)".*/\1/'; }
nbd_uri() { printf 'nbd+unix:///%s?socket=%s' "$1" "$NBD_SOCK"; }

# make_image PATH SIZE: a file of SIZE (dd's M suffix) random bytes.
make_image() { dd if=/dev/urandom of="$1" bs=1M count="${2%M}" status=none; }

# thread_flags PID: "TID FLAGS" (hex) for every thread of PID; the flags are
# field 9 of /proc/PID/task/TID/stat, counted after the ")" closing comm.
thread_flags() {
	local s
	for s in /proc/"$1"/task/*/stat; do
		awk -v f="$s" '{ sub(/^.*\) /, ""); printf "%s %x\n", f, $7 }' "$s" 2>/dev/null |
			sed 's|/proc/[0-9]*/task/\([0-9]*\)/stat|\1|'
	done
}
