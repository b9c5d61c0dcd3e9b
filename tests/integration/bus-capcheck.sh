#!/bin/bash
# The second fence: on a bus whose policy lets anyone call anything (our
# policy file missing or overridden), tapd itself still refuses the methods
# that change something to callers without CAP_SYS_ADMIN, and still serves
# the read-only ones.
. "$(dirname "$0")/lib.sh"
need setpriv busctl
[ "$(id -u)" = 0 ] || skip "needs root to switch to nobody"
id nobody >/dev/null 2>&1 || skip "no user nobody"
group=$(id -gn nobody)

# A wide-open bus: not start_bus, whose policy is ours.
cat >"$T/open.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$T/bus.sock</listen>
  <auth>EXTERNAL</auth>
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
</busconfig>
CONF
dbus-daemon --config-file="$T/open.conf" --nofork --nopidfile --nosyslog 2>"$T/bus.log" &
BUS_PID=$!
for _ in $(seq 1 100); do [ -S "$T/bus.sock" ] && break; sleep 0.05; done
[ -S "$T/bus.sock" ] || fail "dbus-daemon did not start: $(cat "$T/bus.log")"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$T/bus.sock"
start_tapd

as_nobody() { setpriv --reuid=nobody --regid="$group" --clear-groups "$@"; }
as_nobody "$TAPCTL" --version >/dev/null 2>&1 || skip "user nobody cannot run $TAPCTL"

refused() {
	local rc=0
	as_nobody "$TAPCTL" "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ $rc = 1 ] || fail "as nobody, tapctl $*: exit $rc, expected 1: $(cat "$T/err")"
	grep -qi 'access denied' "$T/err" || fail "as nobody, tapctl $*: $(cat "$T/err")"
}

[ "$(tapctl create --name mine ram:1M)" = mine ] || fail "root cannot create"
refused create ram:1M
refused create raw:/etc/shadow
refused destroy mine
refused pool-create p 1M
refused pool-resize default 1M
refused pool-destroy default
as_nobody "$TAPCTL" list | grep -q mine || fail "nobody cannot list"
as_nobody "$TAPCTL" stats mine | grep -q '^reads' || fail "nobody cannot read stats"
as_nobody "$TAPCTL" pool-list | grep -q default || fail "nobody cannot list pools"
[ "$(tapctl list --json | grep -c '"name"')" = 1 ] || fail "taps changed: $(tapctl list)"
tapctl destroy mine
tapd_alive || fail "tapd died"
exit 0
