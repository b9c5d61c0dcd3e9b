#!/bin/bash
# Pools and QoS changed on running taps (issue 5): a tap moved between two
# pools over and over under fio loses no request and its data verifies; a
# pool shrunk below what it has in use shows the new size at once and
# gives memory back when the load stops; tap and pool limits cap fio's
# rate; stacked taps stay on different pools; bad input is refused.
. "$(dirname "$0")/lib.sh"
need fio python3
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
start_bus
start_tapd

# taps_ab: the Taps counts of pa and pb, as "A/B", from one pool-list.
taps_ab() {
	tapctl pool-list --json | python3 -c 'import json, sys
pools = {p["name"]: p for p in json.load(sys.stdin)}
print("%d/%d" % (pools["pa"]["taps"], pools["pb"]["taps"]))'
}
# tap_get TAP FIELD: one field of `tapctl list --json`.
tap_get() {
	tapctl list --json | python3 -c 'import json, sys
taps = {t["name"]: t for t in json.load(sys.stdin)}
print(taps[sys.argv[1]][sys.argv[2]])' "$1" "$2"
}
fio_job() { # NAME TAP ARGS...
	local name=$1 tap=$2
	shift 2
	(cd "$T" && fio --name="$name" --ioengine=nbd --uri="$(nbd_uri "$tap")" "$@" \
		--output="$T/$name.out" >/dev/null 2>"$T/$name.err")
}

# ---- set-pool under load ---------------------------------------------------
SIZE=32M
tapctl pool-create pa 8M
tapctl pool-create pb 8M
img=$T/disk.raw
truncate -s $SIZE "$img"
tapctl create --name live --pool pa "raw:$img" >/dev/null || fail "create live"
[ "$(taps_ab)" = 1/0 ] || fail "taps: $(tapctl pool-list)"

VERIFY=(--size=$SIZE --verify=crc32c --verify_fatal=1 --verify_state_save=0)
# Every block carries a verify header, so reads anywhere can be checked.
fio_job fill live --rw=write --bs=64k --iodepth=16 --do_verify=0 "${VERIFY[@]}" ||
	fail "fio fill: $(cat "$T/fill.err")"
fio_check fill

fio_job moving live --rw=randrw --bs=4k --iodepth=32 --time_based --runtime=8 \
	--do_verify=1 "${VERIFY[@]}" &
FIO=$!
track_pid $FIO
sleep 0.5
# Four round trips; on a slow (sanitizer) build fio may end before the
# last ones, but at least two must happen under load.
under_load=0
for i in 1 2 3 4; do
	kill -0 $FIO 2>/dev/null && under_load=$((under_load + 1))
	tapctl set-pool live pb || fail "set-pool to pb ($i)"
	[ "$(taps_ab)" = 0/1 ] || fail "after set-pool pb ($i): $(tapctl pool-list)"
	[ "$i" = 1 ] && { [ "$(tap_get live pool)" = pb ] || fail "live is not in pb: $(tapctl list)"; }
	sleep 0.2
	tapctl set-pool live pa || fail "set-pool to pa ($i)"
	[ "$(taps_ab)" = 1/0 ] || fail "after set-pool pa ($i): $(tapctl pool-list)"
	sleep 0.2
done
# Moving to the pool it is in changes nothing and is no error.
tapctl set-pool live pa || fail "set-pool to its own pool"
[ $under_load -ge 2 ] || fail "only $under_load round trips while fio ran"
log "$under_load of 4 round trips between pa and pb under load"
rc=0
wait $FIO || rc=$?
[ $rc = 0 ] || fail "fio moving exited $rc: $(cat "$T/moving.out" "$T/moving.err")"
fio_check moving
grep -qE 'write: IOPS=' "$T/moving.out" || fail "fio wrote nothing"
grep -qE 'read: IOPS=' "$T/moving.out" || fail "fio read nothing"
tapctl stats live | grep -q '^errors *0$' || fail "the tap counted errors: $(tapctl stats live)"
# Both pools lent buffers, and got all of them back.
[ "$(pool_field pb high_water)" -gt 0 ] || fail "pb never served the tap: $(tapctl pool-list)"
for p in pa pb; do
	[ "$(pool_field $p in_use)" = 0 ] || fail "$p still has buffers out: $(tapctl pool-list)"
done

# ---- shrinking a pool below its in-use amount under load -------------------
# Big requests, many in flight: several MiB of pa out at any time.
fio_job shrink live --rw=randrw --bs=256k --iodepth=32 --time_based --runtime=4 \
	--do_verify=1 "${VERIFY[@]}" &
FIO=$!
track_pid $FIO
used=0
for _ in $(seq 1 60); do
	used=$(pool_field pa in_use)
	[ "$used" -gt $((1 << 20)) ] && break
	sleep 0.05
done
[ "$used" -gt $((1 << 20)) ] || fail "pa never had more than 1 MiB in use: $(tapctl pool-list)"
tapctl pool-resize pa 1M || fail "pool-resize pa 1M under load"
# pa_now: "size in_use mapped" of pa, from one pool-list; memory in use is
# always mapped.
pa_now() {
	tapctl pool-list --json | python3 -c 'import json, sys
p = {p["name"]: p for p in json.load(sys.stdin)}["pa"]
assert p["mapped"] >= p["in_use"], p
print(p["size"], p["in_use"], p["mapped"])'
}
now=$(pa_now) || fail "pa: in use but not mapped: $(tapctl pool-list --json)"
read -r size inuse mapped <<<"$now"
[ "$size" = 1048576 ] || fail "Size did not drop at once: $(tapctl pool-list --json)"
log "pa shrunk to 1M with $used bytes in use; just after: in_use $inuse, mapped $mapped"
rc=0
wait $FIO || rc=$?
[ $rc = 0 ] || fail "fio shrink exited $rc: $(cat "$T/shrink.out" "$T/shrink.err")"
fio_check shrink
# Buffers come back as requests end, and the memory over the size is let go.
for _ in $(seq 1 50); do
	now=$(pa_now) || fail "pa: in use but not mapped: $(tapctl pool-list --json)"
	read -r size inuse mapped <<<"$now"
	[ "$inuse" -le "$size" ] && [ "$mapped" -le "$size" ] && break
	sleep 0.1
done
[ "$inuse" -le 1048576 ] || fail "pa in_use above its size: $(tapctl pool-list --json)"
[ "$mapped" -le 1048576 ] || fail "pa still maps more than its size: $(tapctl pool-list --json)"
tapctl stats live | grep -q '^errors *0$' || fail "errors after the shrink: $(tapctl stats live)"

# ---- QoS ---------------------------------------------------------------------
# fio_rate NAME TAP FIELD ARGS...: a 3 s run, prints read iops or bw_bytes.
fio_rate() {
	local name=$1 tap=$2 field=$3
	shift 3
	fio_job "$name" "$tap" --rw=randread --size=1G --time_based --runtime=3 \
		--output-format=json "$@" || fail "fio $name: $(cat "$T/$name.err")"
	python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["read"]
assert j["io_bytes"] > 0, j
print(int(j[sys.argv[2]]))' "$T/$name.out" "$field" || fail "fio $name: no result"
}
# within NAME VALUE LIMIT: loosely around the limit (the burst, timers,
# and a busy machine all blur it; ±10% belongs to bench/).
within() {
	[ "$2" -gt $(($3 / 2)) ] && [ "$2" -lt $(($3 * 2)) ] ||
		fail "$1: $2 is not near the limit $3"
	log "$1: $2 (limit $3)"
}

tapctl create --name q --qos-iops 100 --qos-bps 3M null:1G >/dev/null || fail "create q"
[ "$(tap_get q qos_iops)/$(tap_get q qos_bps)" = 100/3145728 ] || fail "create limits: $(tapctl list)"
tapctl qos q --iops 0 --bps 0 || fail "qos q unlimited"
[ "$(tapctl qos q)" = "iops unlimited
bps  unlimited" ] || fail "qos q shows: $(tapctl qos q)"
free=$(fio_rate free q iops --bs=4k --iodepth=8)
log "unlimited: $free IOPS"
tapctl qos q --iops 500 || fail "qos q --iops 500"
[ "$(tapctl qos q --json)" = '{"iops": 500, "bps": 0}' ] || fail "qos q: $(tapctl qos q --json)"
if [ "$free" -gt 1500 ]; then
	within "tap at 500 IOPS" "$(fio_rate capped q iops --bs=4k --iodepth=8)" 500
else
	log "only $free IOPS unlimited here: too slow to see a 500 IOPS cap"
fi
# Either limit alone leaves the other as it is.
tapctl qos q --bps 2M || fail "qos q --bps 2M"
[ "$(tapctl qos q --json)" = '{"iops": 500, "bps": 2097152}' ] || fail "qos kept: $(tapctl qos q --json)"
tapctl qos q --iops 0 || fail "qos q --iops 0"
[ "$(tapctl qos q --json)" = '{"iops": 0, "bps": 2097152}' ] || fail "qos kept: $(tapctl qos q --json)"
tapctl qos q --bps 0

# A pool's limit holds for its taps together.
tapctl pool-create pq 8M
tapctl create --name q2 --pool pq null:1G >/dev/null || fail "create q2"
tapctl pool-qos pq --bps 2M || fail "pool-qos pq --bps 2M"
[ "$(tapctl pool-qos pq --json)" = '{"iops": 0, "bps": 2097152}' ] ||
	fail "pool-qos pq: $(tapctl pool-qos pq --json)"
[ "$(pool_field pq qos_bps)" = 2097152 ] || fail "pool-list: $(tapctl pool-list --json)"
# 4k reads: larger ones on a null: tap are answered from a BLOCK_STATUS
# probe (all holes) and never reach the limits (see the report on issue 5).
if [ "$free" -gt 1500 ]; then
	within "pool at 2M/s" "$(fio_rate pool q2 bw_bytes --bs=4k --iodepth=8)" 2097152
fi
tapctl pool-qos pq --iops 200 || fail "pool-qos pq --iops 200"
[ "$(tapctl pool-qos pq --json)" = '{"iops": 200, "bps": 2097152}' ] ||
	fail "pool-qos kept: $(tapctl pool-qos pq --json)"
# A tap created with limits while some pool has limits (tap_create once
# ran the QoS queue before the tap had a pool: a crash).
tapctl create --name q3 --pool pq --qos-iops 50 null:1M >/dev/null ||
	fail "create with --qos-iops while pool pq has limits"
tapd_alive || fail "tapd died creating a limited tap while a pool has limits"
[ "$(tap_get q3 qos_iops)" = 50 ] || fail "q3's limit: $(tapctl list --json)"
tapctl destroy q3
tapctl pool-qos pq --iops 0 --bps 0
[ "$(tapctl pool-qos pq)" = "iops unlimited
bps  unlimited" ] || fail "pool-qos shows: $(tapctl pool-qos pq)"

# ---- stacked taps stay on different pools ----------------------------------
VHD=$TOP_BUILDDIR/tools/tapd-vhd
"$VHD" create "$T/base.vhd" 8M >/dev/null || fail "tapd-vhd create"
"$VHD" snapshot "$T/leaf.vhd" "$T/base.vhd" >/dev/null || fail "tapd-vhd snapshot"
tapctl create --name base --pool pa --read-only "vhd:$T/base.vhd" >/dev/null || fail "create base"
expect 1 "different pools" tapctl create --name leaf --pool pa --parent base "vhd:$T/leaf.vhd"
expect 1 "no such tap: nosuch" tapctl create --name leaf --pool pb --parent nosuch "vhd:$T/leaf.vhd"
tapctl create --name leaf --pool pb --parent base "vhd:$T/leaf.vhd" >/dev/null ||
	fail "create leaf: $(cat "$T/err")"
[ "$(tap_get leaf parent)" = base ] || fail "leaf's parent: $(tapctl list --json)"
[ "$(tap_get base parent)" = "" ] || fail "base has a parent: $(tapctl list --json)"
tapctl list | grep -qE '^[0-9]+ +leaf .* base +vhd:' || fail "list lacks PARENT: $(tapctl list)"
expect 1 "different pools" tapctl set-pool leaf pa
expect 1 "different pools" tapctl set-pool base pb
[ "$(tap_get leaf pool)/$(tap_get base pool)" = pb/pa ] || fail "a refused move moved: $(tapctl list)"
tapctl set-pool leaf pq || fail "moving the leaf to a third pool"
tapctl destroy leaf
tapctl destroy base

# ---- bad input ---------------------------------------------------------------
expect 1 "no such pool: ghost" tapctl set-pool live ghost
expect 1 "no such tap: ghost" tapctl set-pool ghost pa
expect 1 "no such tap: ghost" tapctl qos ghost
expect 1 "no such pool: ghost" tapctl pool-qos ghost
expect 1 "no such pool: ghost" tapctl pool-qos ghost --iops 5
expect 2 "bad value '-5' for --iops" tapctl qos live --iops -5
expect 2 "bad value 'abc' for --iops" tapctl qos live --iops abc
expect 2 "bad value '1.5' for --iops" tapctl qos live --iops 1.5
expect 2 "bad value '99999999999999999999' for --iops" tapctl qos live --iops 99999999999999999999
expect 2 "bad value '12Q' for --bps" tapctl qos live --bps 12Q
expect 2 "bad value '-1M' for --bps" tapctl pool-qos pa --bps -1M
expect 2 "bad value 'x' for --qos-iops" tapctl create --qos-iops x null:1M
expect 2 "missing argument" tapctl set-pool live
expect 2 "needs an argument" tapctl qos live --iops
expect 1 "must be an unsigned 64-bit integer" busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" \
	call org.xenproject.Tapd1 /org/xenproject/Tapd1 org.xenproject.Tapd1.Manager \
	CreateTap 'sa{sv}' null:1M 1 qos-iops s x
[ "$(tap_get live qos_iops)/$(tap_get live pool)" = 0/pa ] || fail "bad input changed live"

# A pool made again under an old name starts without the old limits.
tapctl pool-create again 4M >/dev/null
tapctl pool-qos again --iops 7 >/dev/null
tapctl pool-destroy again
tapctl pool-create again 4M >/dev/null
tapctl pool-qos --json again | grep -q '"iops": *0' || fail "a new pool inherited old limits: $(tapctl pool-qos --json again)"

tapd_alive || fail "tapd died"
exit 0
