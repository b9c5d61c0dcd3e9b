#!/usr/bin/env bash
# CreateTap's options dictionary as a careless or hostile caller sends it:
# a key given twice (D-Bus dicts may repeat keys on the wire) is refused
# with InvalidArgs naming the key, instead of the last value winning
# silently; nothing is created, and the daemon keeps answering.
. "$(dirname "$0")/lib.sh"
need busctl
start_bus
start_tapd

M=org.xenproject.Tapd1.Manager
R=/org/xenproject/Tapd1
bctl() { busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" "$@"; }

expect 1 "option 'name' is given twice" \
	bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 2 name s a name s b
expect 1 "option 'qos-iops' is given twice" \
	bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 3 qos-iops t 10 name s c qos-iops t 0
[ "$(tapctl list --json)" = "[]" ] || fail "a refused create left a tap behind: $(tapctl list)"
# Each key once is fine, in any order.
bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 2 qos-iops t 10 name s once >/dev/null ||
	fail "create with distinct keys"
tapctl list --json | grep -q '"name": "once"' || fail "tap 'once' not listed: $(tapctl list)"
log "repeated option keys refused"
