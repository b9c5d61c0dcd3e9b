#!/usr/bin/env bash
# CreateTap as a careless or hostile caller sends it: a key of the options
# given twice (D-Bus dicts may repeat keys on the wire) is refused with
# InvalidArgs naming the key, instead of the last value winning silently;
# a path longer than the system takes is a BadImage; nothing is created,
# and the daemon keeps answering.
. "$(dirname "$0")/lib.sh"
need busctl
start_bus
start_tapd

M=org.xenproject.Tapd1.Manager
R=/org/xenproject/Tapd1

expect 1 "option 'name' is given twice" \
	bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 2 name s a name s b
expect 1 "option 'qos-iops' is given twice" \
	bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 3 qos-iops t 10 name s c qos-iops t 0
[ "$(tapctl list --json)" = "[]" ] || fail "a refused create left a tap behind: $(tapctl list)"
# Each key once is fine, in any order.
bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 2 qos-iops t 10 name s once >/dev/null ||
	fail "create with distinct keys"
tapctl list --json | grep -q '"name": "once"' || fail "tap 'once' not listed: $(tapctl list)"
# A path longer than any path can be: the image string is refused as too
# long, with the numbers, not echoed back (it was Error.Failed).
long=$(head -c 5000 /dev/zero | tr '\0' a)
expect 1 "image string too long \\(5005 bytes, at most 4352\\)" tapctl create "raw:/$long"
errname org.xenproject.Tapd1.Error.BadImage $R $M.CreateTap "raw:/$long" '{}'
[ "$(tapctl list --json | grep -c '"name"')" = 1 ] || fail "taps after the refusals: $(tapctl list)"
log "repeated option keys and overlong paths refused"
