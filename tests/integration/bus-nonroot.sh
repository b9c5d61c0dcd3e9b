#!/bin/bash
# The bus policy we ship: a user other than root may look (list, stats,
# properties, introspection, GetManagedObjects) but not change anything.
. "$(dirname "$0")/lib.sh"
need setpriv busctl
[ "$(id -u)" = 0 ] || skip "needs root to switch to nobody"
id nobody >/dev/null 2>&1 || skip "no user nobody"
group=$(id -gn nobody)
start_bus
start_tapd

# nobody must be able to run our binaries; a build under /root may not be.
setpriv --reuid=nobody --regid="$group" --clear-groups "$TAPCTL" --version >/dev/null 2>&1 ||
	skip "user nobody cannot run $TAPCTL"

as_nobody() { setpriv --reuid=nobody --regid="$group" --clear-groups "$@"; }

# denied CMD...: as nobody, CMD exits 1 with an access-denied message.
denied() {
	local rc=0
	as_nobody "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ $rc = 1 ] || fail "as nobody, $*: exit $rc, expected 1; stderr: $(cat "$T/err")"
	grep -qi 'access denied\|accessdenied\|rejected' "$T/err" ||
		fail "as nobody, $*: no access-denied message: $(cat "$T/err")"
}

[ "$(tapctl create --name rootdisk ram:1M)" = rootdisk ] || fail "root cannot create"
tapctl pool-create rootpool 1M

denied "$TAPCTL" create ram:1M
grep -q 'CreateTap' "$T/err" || fail "the message does not say which call was refused"
denied "$TAPCTL" create --name sneaky "raw:/etc/shadow"
denied "$TAPCTL" destroy rootdisk
denied "$TAPCTL" pool-create p 1M
denied "$TAPCTL" pool-resize rootpool 2M
denied "$TAPCTL" pool-destroy rootpool
denied "$TAPCTL" set-pool rootdisk rootpool
denied "$TAPCTL" qos rootdisk --iops 10
denied "$TAPCTL" pool-qos rootpool --bps 1M
denied busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call org.xenproject.Tapd1 \
	/org/xenproject/Tapd1/tap/0 org.xenproject.Tapd1.Tap SetQos tt 1 1
denied busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" set-property org.xenproject.Tapd1 \
	/org/xenproject/Tapd1/tap/0 org.xenproject.Tapd1.Tap Name s evil

# Reading is fine.
as_nobody "$TAPCTL" list >"$T/out" || fail "nobody cannot list"
grep -q rootdisk "$T/out" || fail "nobody's list lacks rootdisk: $(cat "$T/out")"
as_nobody "$TAPCTL" list --json | grep -q '"name": "rootdisk"' || fail "nobody: list --json"
as_nobody "$TAPCTL" stats rootdisk | grep -q '^reads' || fail "nobody cannot read stats"
as_nobody "$TAPCTL" pool-list | grep -q rootpool || fail "nobody cannot list pools"
[ "$(as_nobody busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.xenproject.Tapd1 \
	/org/xenproject/Tapd1/tap/0 org.xenproject.Tapd1.Tap Name)" = 's "rootdisk"' ] ||
	fail "nobody cannot read the tap's Name"
as_nobody busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.xenproject.Tapd1 \
	/org/xenproject/Tapd1 org.xenproject.Tapd1.Manager MemoryLocked | grep -q '^b ' ||
	fail "nobody cannot read MemoryLocked"
as_nobody busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" introspect org.xenproject.Tapd1 \
	/org/xenproject/Tapd1 | grep -q CreateTap || fail "nobody cannot introspect"
as_nobody busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call org.xenproject.Tapd1 \
	/org/xenproject/Tapd1 org.freedesktop.DBus.ObjectManager GetManagedObjects |
	grep -q rootdisk || fail "nobody cannot call GetManagedObjects"

as_nobody "$TAPCTL" qos rootdisk | grep -q '^iops unlimited$' || fail "nobody cannot read limits"
as_nobody "$TAPCTL" pool-qos rootpool | grep -q '^bps  unlimited$' || fail "nobody: pool-qos"
as_nobody "$TAPCTL" top --once | grep -q '^rootdisk ' || fail "nobody cannot run top"

# Nothing changed.
[ "$(tapctl list --json | grep -c '"name"')" = 1 ] || fail "taps changed: $(tapctl list)"
tapctl pool-list | grep -q '^rootpool ' || fail "rootpool is gone"
tapctl list --json | grep -q '"pool": "default".*"qos_iops": 0, "qos_bps": 0' ||
	fail "rootdisk was moved or limited: $(tapctl list --json)"
[ "$(tapctl pool-qos --json rootpool)" = '{"iops": 0, "bps": 0}' ] || fail "rootpool was limited"
bctl get-property org.xenproject.Tapd1 /org/xenproject/Tapd1/pool/rootpool \
	org.xenproject.Tapd1.Pool Size | grep -qx 't 1048576' || fail "rootpool was resized"
tapd_alive || fail "tapd died"
exit 0
