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

# A wide-open bus: anyone may call anything.
start_bus --open
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
