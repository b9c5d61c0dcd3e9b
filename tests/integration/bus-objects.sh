#!/bin/bash
# The object tree: ObjectManager, tap and pool objects with properties that
# read back what was asked for, and the signals announcing changes.
. "$(dirname "$0")/lib.sh"
need busctl python3
start_bus
start_tapd

R=/org/xenproject/Tapd1
prop() { bctl get-property org.xenproject.Tapd1 "$1" "org.xenproject.Tapd1.$2" "$3"; }
# expect_prop PATH IFACE PROP VALUE (busctl's text form, e.g. 't 1048576').
expect_prop() {
	local got
	got=$(prop "$1" "$2" "$3") || fail "cannot read $2.$3 of $1"
	[ "$got" = "$4" ] || fail "$1 $2.$3 is '$got', expected '$4'"
}

# Watch signals while we work, when gdbus is there to subscribe to them.
MON=
if command -v gdbus >/dev/null; then
	# gdbus outlives the bus it watches: stop it on any exit, before
	# lib.sh's cleanup (which must still see our exit status).
	gdbus monitor --address "$DBUS_SYSTEM_BUS_ADDRESS" --dest org.xenproject.Tapd1 \
		>"$T/signals" 2>&1 &
	MON=$!
	trap 'rc=$?; set +e; kill "$MON" 2>/dev/null; (exit $rc); cleanup' EXIT
	for _ in $(seq 1 100); do grep -q 'is owned by' "$T/signals" && break; sleep 0.05; done
	grep -q 'is owned by' "$T/signals" || fail "gdbus monitor did not start: $(cat "$T/signals")"
fi

img=$T/disk.raw
truncate -s 8M "$img"
[ "$(tapctl create --name disk --read-only "raw:$img")" = disk ] || fail "create"

bctl tree org.xenproject.Tapd1 >"$T/tree"
grep -q "$R/tap/0\$" "$T/tree" || fail "tree lacks the tap: $(cat "$T/tree")"
grep -q "$R/pool/default\$" "$T/tree" || fail "tree lacks the default pool: $(cat "$T/tree")"

# GetManagedObjects, checked as data rather than text.
bctl --json=short call org.xenproject.Tapd1 $R org.freedesktop.DBus.ObjectManager \
	GetManagedObjects >"$T/objects.json" || fail "GetManagedObjects failed"
python3 - "$T/objects.json" "$img" "$NBD_SOCK" <<'PY' || fail "GetManagedObjects content is wrong"
import json, sys
objs = json.load(open(sys.argv[1]))["data"][0]
tap = objs["/org/xenproject/Tapd1/tap/0"]["org.xenproject.Tapd1.Tap"]
val = {k: v["data"] for k, v in tap.items()}
assert val["Name"] == "disk", val
assert val["Minor"] == 0, val
assert val["Image"] == "raw:" + sys.argv[2], val
assert val["Size"] == 8 << 20, val
assert val["ReadOnly"] is True, val
assert val["State"] == "running", val
assert val["Pool"] == "default", val
assert val["Exports"] == ["nbd+unix:///disk?socket=" + sys.argv[3]], val
assert val["QosIops"] == 0 and val["QosBps"] == 0, val
assert val["Parent"] == "", val
pool = objs["/org/xenproject/Tapd1/pool/default"]["org.xenproject.Tapd1.Pool"]
assert pool["Name"]["data"] == "default", pool
assert pool["Taps"]["data"] == 1, pool
assert pool["Size"]["data"] > 0, pool
assert pool["QosIops"]["data"] == 0 and pool["QosBps"]["data"] == 0, pool
PY

expect_prop $R/tap/0 Tap Name 's "disk"'
expect_prop $R/tap/0 Tap Minor 'u 0'
expect_prop $R/tap/0 Tap Size 't 8388608'
expect_prop $R/tap/0 Tap ReadOnly 'b true'
prop $R Manager IoFlusher | grep -qE '^b (true|false)$' || fail "IoFlusher unreadable"
prop $R Manager MemoryLocked | grep -qE '^b (true|false)$' || fail "MemoryLocked unreadable"
expect_prop $R Manager NbdSocket "s \"$NBD_SOCK\""
expect_prop $R Manager StateDirectory "s \"$STATE\""
prop $R Manager Version | grep -q '^s "..*"$' || fail "Version is empty"
bctl call org.xenproject.Tapd1 $R/tap/0 org.xenproject.Tapd1.Tap Stats | grep -q '^a{st} ' ||
	fail "Stats failed"

# Pools round trip, sizes read back through properties, list and JSON.
tapctl pool-create scratch 8M
P=$R/pool/scratch
expect_prop $P Pool Name 's "scratch"'
expect_prop $P Pool Size 't 8388608'
expect_prop $P Pool Taps 'u 0'
expect_prop $P Pool InUse 't 0'
tapctl pool-resize scratch 16M
expect_prop $P Pool Size 't 16777216'
tapctl pool-list | grep -qE '^scratch +16M ' || fail "pool-list: $(tapctl pool-list)"
tapctl pool-list --json | grep -q '"name": "scratch", "size": 16777216' ||
	fail "pool-list --json: $(tapctl pool-list --json)"
bctl call org.xenproject.Tapd1 $R org.xenproject.Tapd1.Manager ListPools |
	grep -q '"scratch" 16777216' || fail "ListPools lacks scratch"
[ "$(tapctl create --name onscratch --pool scratch ram:1M)" = onscratch ] || fail "create on scratch"
expect_prop $P Pool Taps 'u 1'
expect_prop $R/tap/1 Tap Pool 's "scratch"'

# Limits and moves: set at create time and changed live, read back as
# properties, announced as PropertiesChanged (checked at the end).
[ "$(tapctl create --name lim --qos-iops 300 --qos-bps 2M ram:1M)" = lim ] || fail "create lim"
L=$R/tap/2
expect_prop $L Tap Name 's "lim"'
expect_prop $L Tap QosIops 't 300'
expect_prop $L Tap QosBps 't 2097152'
bctl call org.xenproject.Tapd1 $L org.xenproject.Tapd1.Tap SetQos tt 0 4096 || fail "SetQos"
expect_prop $L Tap QosIops 't 0'
expect_prop $L Tap QosBps 't 4096'
bctl call org.xenproject.Tapd1 $L org.xenproject.Tapd1.Tap SetPool s scratch || fail "SetPool"
expect_prop $L Tap Pool 's "scratch"'
expect_prop $P Pool Taps 'u 2'
# Pool signals are coalesced over 100 ms: give this state time to be sent.
sleep 0.3
bctl call org.xenproject.Tapd1 $P org.xenproject.Tapd1.Pool SetQos tt 1000 0 || fail "Pool.SetQos"
expect_prop $P Pool QosIops 't 1000'
expect_prop $P Pool QosBps 't 0'
tapctl set-pool lim default || fail "set-pool lim default"
expect_prop $P Pool Taps 'u 1'
tapctl destroy lim
tapctl destroy onscratch
tapctl pool-resize scratch 4M
expect_prop $P Pool Size 't 4194304'
tapctl pool-destroy scratch
bctl tree org.xenproject.Tapd1 | grep -q "$P" && fail "scratch still in the tree"
# A name that needs escaping in an object path.
tapctl pool-create my-pool.2 1M
expect_prop $R/pool/my_2dpool_2e2 Pool Name 's "my-pool.2"'
tapctl pool-destroy my-pool.2

# Pool statistics change on every request; their signals are rate-limited
# (at most one per pool per 100 ms), yet they do come.
if [ -n "$MON" ] && have_libnbd; then
	tapctl create --name io ram:8M >/dev/null
	sigs() { grep -c "^$R/pool/default: org.freedesktop.DBus.Properties.PropertiesChanged" "$T/signals" || true; }
	before=$(sigs)
	start=$(date +%s%N)
	/usr/bin/python3 -c 'import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
buf = b"x" * 65536
end = time.monotonic() + 1.0
n = 0
while time.monotonic() < end:
    h.pwrite(buf, (n % 128) * 65536)
    n += 1
assert n > 20, n
h.shutdown()' "$(nbd_uri io)" || fail "NBD writes failed"
	ms=$((($(date +%s%N) - start) / 1000000))
	sleep 0.3
	got=$(($(sigs) - before))
	[ "$got" -ge 1 ] || fail "no pool PropertiesChanged during I/O"
	[ "$got" -le $((ms / 100 + 4)) ] || fail "$got pool signals in $ms ms: not rate-limited"
	log "$got pool signals in $ms ms of I/O"
	tapctl destroy io
fi

tapctl destroy disk
bctl tree org.xenproject.Tapd1 | grep -q "$R/tap/0" && fail "tap still in the tree"

if [ -n "$MON" ]; then
	# Signals come asynchronously; give the last ones a moment.
	for _ in $(seq 1 40); do
		grep -q "InterfacesRemoved (objectpath '$R/tap/0'" "$T/signals" && break
		sleep 0.05
	done
	kill "$MON"
	wait "$MON" 2>/dev/null || true
	grep -q "InterfacesAdded (objectpath '$R/tap/0', {.*'org.xenproject.Tapd1.Tap': {'Name': <'disk'>" "$T/signals" ||
		fail "no InterfacesAdded for the tap: $(cat "$T/signals")"
	grep -q "InterfacesRemoved (objectpath '$R/tap/0', \[.*'org.xenproject.Tapd1.Tap'" "$T/signals" ||
		fail "no InterfacesRemoved naming the Tap interface: $(cat "$T/signals")"
	grep -q "InterfacesAdded (objectpath '$P'" "$T/signals" ||
		fail "no InterfacesAdded for the pool: $(cat "$T/signals")"
	grep -q "InterfacesRemoved (objectpath '$P', \[.*'org.xenproject.Tapd1.Pool'" "$T/signals" ||
		fail "no InterfacesRemoved for the pool: $(cat "$T/signals")"
	grep -q "^$P: org.freedesktop.DBus.Properties.PropertiesChanged ('org.xenproject.Tapd1.Pool', {.*'Size': <uint64 16777216>" "$T/signals" ||
		fail "no PropertiesChanged with the new pool size: $(cat "$T/signals")"
	pc="org.freedesktop.DBus.Properties.PropertiesChanged"
	grep -q "^$L: $pc ('org.xenproject.Tapd1.Tap', {.*'QosBps': <uint64 4096>" "$T/signals" ||
		fail "no PropertiesChanged for SetQos: $(cat "$T/signals")"
	grep -q "^$L: $pc ('org.xenproject.Tapd1.Tap', {.*'Pool': <'scratch'>" "$T/signals" ||
		fail "no PropertiesChanged for SetPool: $(cat "$T/signals")"
	grep -q "^$P: $pc ('org.xenproject.Tapd1.Pool', {.*'QosIops': <uint64 1000>" "$T/signals" ||
		fail "no PropertiesChanged for Pool.SetQos: $(cat "$T/signals")"
	grep -q "^$P: $pc ('org.xenproject.Tapd1.Pool', {.*'Taps': <uint32 2>" "$T/signals" ||
		fail "no PropertiesChanged with Taps 2 after the move: $(cat "$T/signals")"
fi
tapd_alive || fail "tapd died"
exit 0
