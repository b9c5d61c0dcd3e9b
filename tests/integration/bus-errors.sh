#!/bin/bash
# Bad requests, through tapctl and as raw D-Bus calls: each gets its named
# error and a message a person understands, tapctl exits 1, and the daemon
# stays up and keeps answering.
. "$(dirname "$0")/lib.sh"
need busctl
start_bus
start_tapd

E=org.xenproject.Tapd1.Error

# errname (lib.sh) checks the error names of raw calls with gdbus.
command -v gdbus >/dev/null || log "gdbus missing (libglib2.0-bin): error names are not checked"
M=org.xenproject.Tapd1.Manager
R=/org/xenproject/Tapd1

# Images that cannot be opened or parsed.
expect 1 "no such file" tapctl create "raw:$T/does-not-exist"
errname $E.NoSuchFile $R $M.CreateTap "raw:$T/does-not-exist" '{}'
expect 2 "empty argument" tapctl create ""
errname $E.BadImage $R $M.CreateTap "" '{}'
for img in raw raw: foo:/x ram:abc ram:0 null:-1 ram:1Q ':' 'ram:'; do
	expect 1 "bad|unknown|missing" tapctl create "$img"
	errname $E.BadImage $R $M.CreateTap "$img" '{}'
done
[ "$(tapctl list --json)" = "[]" ] || fail "a refused create left a tap behind: $(tapctl list)"

# Unknown taps.
expect 1 "no such tap: nosuch" tapctl destroy nosuch
expect 1 "no such tap: 42" tapctl stats 42
expect 1 "no such tap" tapctl stats --json nosuch
errname $E.NoSuchTap $R/tap/42 org.xenproject.Tapd1.Tap.Destroy
errname $E.NoSuchTap $R/tap/42 org.xenproject.Tapd1.Tap.Stats
# Paths that are no minor at all.
for p in $R/tap/abc $R/tap/007 $R/tap/99999999999999999999 $R/tap/_2d1; do
	expect 1 "no such tap" bctl call org.xenproject.Tapd1 "$p" org.xenproject.Tapd1.Tap Destroy
done
expect 1 "." bctl get-property org.xenproject.Tapd1 $R/tap/42 org.xenproject.Tapd1.Tap Name

# Names taken.
[ "$(tapctl create --name dup ram:1M)" = dup ] || fail "create dup"
expect 1 "exists" tapctl create --name dup null:1M
errname $E.TapExists $R $M.CreateTap "null:1M" "{'name': <'dup'>}"
expect 1 "bad tap name" tapctl create --name 'a"b' ram:1M
expect 1 "no pool named 'nopool'" tapctl create --pool nopool ram:1M
errname $E.NoSuchPool $R $M.CreateTap "null:1M" "{'pool': <'nopool'>}"

# Stacking and limits at create time: an unknown parent tap, a parent in the
# leaf's own pool, options of the wrong type.
expect 1 "no such tap: ghost" tapctl create --parent ghost null:1M
errname $E.NoSuchTap $R $M.CreateTap "null:1M" "{'parent': <'ghost'>}"
errname $E.BadImage $R $M.CreateTap "null:1M" "{'parent': <'dup'>}"
expect 1 "different pools" tapctl create --parent dup null:1M
expect 1 "must be an unsigned 64-bit integer" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 qos-bps s 1M
expect 1 "must be a string" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 parent u 0
expect 1 "empty" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 parent s ''

# Moving a tap and limits: unknown pool, malformed calls, unknown tap.
D=$R/tap/$(tapctl list --json | grep '"name": "dup"' | sed 's/.*"minor": \([0-9]*\).*/\1/')
T_=org.xenproject.Tapd1.Tap
expect 1 "no such pool: nopool" tapctl set-pool dup nopool
errname $E.NoSuchPool "$D" $T_.SetPool nopool
errname org.freedesktop.DBus.Error.InvalidArgs "$D" $T_.SetPool ''
expect 1 "invalid arg" bctl call org.xenproject.Tapd1 "$D" $T_ SetQos t 5
expect 1 "invalid arg" bctl call org.xenproject.Tapd1 "$D" $T_ SetPool u 5
errname $E.NoSuchTap $R/tap/42 $T_.SetQos 1 2
errname $E.NoSuchTap $R/tap/42 $T_.SetPool default
errname $E.NoSuchPool $R/pool/ghost org.xenproject.Tapd1.Pool.SetQos 1 2
expect 1 "no such pool: ghost" tapctl pool-qos ghost --iops 1
[ "$(tapctl qos --json dup)" = '{"iops": 0, "bps": 0}' ] || fail "refused calls changed dup's limits"
tapctl list --json | grep -q '"name": "dup".*"pool": "default"' || fail "refused calls moved dup"

# Pools: in use, the default one, bad names, taken names, unknown.
tapctl pool-create busy 4M
tapctl create --name user --pool busy ram:1M >/dev/null
expect 1 "." tapctl pool-destroy busy
errname $E.PoolBusy $R/pool/busy org.xenproject.Tapd1.Pool.Destroy
expect 1 "default" tapctl pool-destroy default
errname $E.PoolBusy $R/pool/default org.xenproject.Tapd1.Pool.Destroy
expect 1 "exists" tapctl pool-create busy 1M
errname $E.PoolExists $R $M.CreatePool busy 1048576
expect 1 "." tapctl pool-create 'bad/name' 1M
expect 1 "." tapctl pool-create 'bad name' 1M
errname org.freedesktop.DBus.Error.InvalidArgs $R $M.CreatePool 'bad"name' 1048576
errname org.freedesktop.DBus.Error.InvalidArgs $R $M.CreatePool p 0
errname org.freedesktop.DBus.Error.InvalidArgs $R/pool/busy org.xenproject.Tapd1.Pool.Resize 0
expect 2 "bad size" tapctl pool-create p2 lots
expect 1 "no such pool: ghost" tapctl pool-resize ghost 1M
expect 1 "no such pool: ghost" tapctl pool-destroy ghost
errname $E.NoSuchPool $R/pool/ghost org.xenproject.Tapd1.Pool.Resize 1048576
# Absurd sizes are refused, not attempted.
expect 1 "." bctl call org.xenproject.Tapd1 $R $M CreatePool st huge 18446744073709551615
expect 1 "." bctl call org.xenproject.Tapd1 $R/pool/busy org.xenproject.Tapd1.Pool Resize t 18446744073709551615
tapctl destroy user
tapctl pool-destroy busy

# Malformed calls: wrong signature, unknown option key, wrong option type.
expect 1 "invalid arg" bctl call org.xenproject.Tapd1 $R $M CreateTap s ram:1M
expect 1 "invalid arg" bctl call org.xenproject.Tapd1 $R $M CreatePool s p
expect 1 "unknown option 'bogus'" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 bogus s x
expect 1 "must be a string" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 name u 3
expect 1 "must be a boolean" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 read-only s yes
expect 1 "empty" bctl call org.xenproject.Tapd1 $R $M CreateTap 'sa{sv}' ram:1M 1 name s ''
errname org.freedesktop.DBus.Error.InvalidArgs $R $M.CreateTap ram:1M "{'bogus': <1>}"
expect 1 "." bctl call org.xenproject.Tapd1 $R $M NoSuchMethod
expect 1 "." bctl set-property org.xenproject.Tapd1 $R $M Version s hacked

# A tap with a client connected is busy.
# (nbdsh's libnbd module lives with the system python, not any other.)
if have_libnbd; then
	tapctl create --name held ram:1M >/dev/null
	/usr/bin/python3 -c 'import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
time.sleep(30)' "$(nbd_uri held)" &
	holder=$!
	for _ in $(seq 1 100); do
		tapctl stats --json held | grep -q '"connections": 1' && break
		sleep 0.05
	done
	tapctl stats --json held | grep -q '"connections": 1' || fail "the NBD client did not connect"
	expect 1 "connected" tapctl destroy held
	errname $E.TapBusy $R/tap/"$(busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call org.xenproject.Tapd1 \
		$R $M ListTaps | grep -o '"held" [^/]*/[^"]*' | sed 's|.*/||')" org.xenproject.Tapd1.Tap.Destroy
	kill "$holder"
	wait "$holder" 2>/dev/null || true
	for _ in $(seq 1 100); do tapctl destroy held 2>/dev/null && break; sleep 0.05; done
	tapctl list | grep -q held && fail "held not destroyed after its client left"
else
	log "python3-libnbd missing: TapBusy not checked"
fi

# Still alive, still answering, nothing left over.
tapd_alive || fail "tapd died"
tapctl list >/dev/null || fail "tapctl list failed at the end"
tapctl destroy dup
[ "$(tapctl list --json)" = "[]" ] || fail "taps left: $(tapctl list)"
exit 0
