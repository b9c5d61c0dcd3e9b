#!/bin/bash
# `systemctl start tapd` returns once tapd has said READY=1 (Type=notify):
# the unit is active/running at once, tapd answers on the system bus, its
# status line and the watchdog are live, and its NBD socket is there.
. "$(dirname "$0")/../lib.sh"

t0=$(now)
start_tapd
measure "systemctl start (Type=notify to READY=1)" "$(since "$t0") s"
[ "$(unit_prop Type)" = notify ] || fail "Type is $(unit_prop Type)"
pid=$(tapd_pid)
[ "$pid" -gt 0 ] || fail "no MainPID"
[ "$(readlink /proc/"$pid"/exe)" = "$(command -v tapd)" ] || fail "MainPID $pid is $(readlink /proc/"$pid"/exe)"
status=$(unit_prop StatusText)
case $status in
"Serving 0 taps") ;;
*) fail "StatusText is '$status'" ;;
esac
[ -S "$NBD_SOCK" ] || fail "no NBD socket at $NBD_SOCK once ready"
tapctl list >/dev/null || fail "tapctl list right after start"
busctl status org.xenproject.Tapd1 >"$T/st" || fail "busctl status"
grep -q "^PID=$pid$" "$T/st" || fail "the bus name is not owned by MainPID $pid: $(cat "$T/st")"

# The watchdog is armed and tapd pings it (WatchdogTimestamp moves).
[ "$(unit_prop WatchdogUSec)" = 30s ] || [ "$(unit_prop WatchdogUSec)" = 30000000 ] ||
	fail "WatchdogUSec is $(unit_prop WatchdogUSec)"
w1=$(unit_prop WatchdogTimestampMonotonic)
wait_for 30 sh -c "[ \"\$(systemctl show -P WatchdogTimestampMonotonic $UNIT)\" != '$w1' ]" ||
	fail "tapd did not ping the watchdog within 30 s"

# A second start is a no-op, not a second daemon.
systemctl start "$UNIT"
[ "$(tapd_pid)" = "$pid" ] || fail "a second start changed MainPID"
log "ok: ready in $(since "$t0") s, pid $pid"
