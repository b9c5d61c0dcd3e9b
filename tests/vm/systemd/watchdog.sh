#!/bin/bash
# The watchdog: a tapd that stops answering (SIGSTOP) is killed by systemd
# once WatchdogSec (30 s) passes without a ping, and Restart=on-failure
# brings up a new one that serves the bus again.
. "$(dirname "$0")/../lib.sh"

start_tapd
pid=$(tapd_pid)
restarts=$(unit_prop NRestarts)
t0=$(now)
kill -STOP "$pid"
at_exit kill -CONT "$pid"
new_daemon() {
	local p
	p=$(tapd_pid)
	[ "$p" != 0 ] && [ "$p" != "$pid" ] && [ "$(unit_prop ActiveState)" = active ]
}
wait_for 120 new_daemon || fail "no new tapd within 120 s of SIGSTOP ($(unit_prop ActiveState), MainPID $(tapd_pid))"
measure "watchdog restart after SIGSTOP" "$(since "$t0") s"
kill -0 "$pid" 2>/dev/null && fail "the stopped tapd $pid is still there"
[ "$(unit_prop NRestarts)" -gt "$restarts" ] || fail "NRestarts did not grow"
journalctl --no-pager -u "$UNIT" -o cat --since "-3min" >"$T/journal"
grep -q 'Watchdog timeout' "$T/journal" || fail "journal has no watchdog timeout: $(tail "$T/journal")"
tapctl list >/dev/null || fail "the restarted tapd does not answer"
log "ok: restarted as $(tapd_pid)"
