#!/bin/bash
# D-Bus activation: with tapd stopped, the first call to org.xenproject.Tapd1
# starts tapd.service (the activation file names it) and is answered; the
# same from an unprivileged user, whom the policy lets call ListTaps.
. "$(dirname "$0")/../lib.sh"
need busctl setpriv

at_exit systemctl stop "$UNIT"
busctl list --activatable | grep -q '^org.xenproject.Tapd1 ' || fail "org.xenproject.Tapd1 is not activatable"
[ "$(unit_prop ActiveState)" = inactive ] || fail "tapd already $(unit_prop ActiveState)"

t0=$(now)
busctl call org.xenproject.Tapd1 /org/xenproject/Tapd1 org.xenproject.Tapd1.Manager ListTaps >"$T/out" ||
	fail "the first call failed"
measure "D-Bus activation (root's first busctl call answered)" "$(since "$t0") s"
[ "$(cat "$T/out")" = "a(ussssbto) 0" ] || fail "ListTaps answered '$(cat "$T/out")'"
[ "$(unit_prop ActiveState)" = active ] || fail "tapd.service is $(unit_prop ActiveState) after activation"
busctl status org.xenproject.Tapd1 | grep -q "^PID=$(tapd_pid)$" || fail "the name is not owned by tapd.service's MainPID"

systemctl stop "$UNIT"
t0=$(now)
setpriv --reuid=nobody --regid=nogroup --clear-groups \
	busctl call org.xenproject.Tapd1 /org/xenproject/Tapd1 org.xenproject.Tapd1.Manager ListTaps >"$T/out" 2>&1 ||
	fail "nobody's first call failed: $(cat "$T/out")"
measure "D-Bus activation (nobody's first call answered)" "$(since "$t0") s"
[ "$(unit_prop ActiveState)" = active ] || fail "tapd.service is $(unit_prop ActiveState) after nobody's call"
# ... but nobody still may not change anything.
if setpriv --reuid=nobody --regid=nogroup --clear-groups tapctl create ram:1M >"$T/out" 2>&1; then
	fail "nobody created a tap"
fi
log "ok"
