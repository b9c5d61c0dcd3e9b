#!/usr/bin/env bash
# Soak (make soak; not in CI): SOAK_SECONDS (default 600) of mixed fio with
# verify on SOAK_TAPS taps (default 64) spread over four pools, while the
# pools are resized and taps moved between pools every few seconds. Passes
# with zero verify errors, every fio job at err=0, tapd alive and answering,
# and every tap and pool gone cleanly at the end. Runs from the source tree
# after a build: TOP_BUILDDIR=build bash tests/soak/soak.sh
. "$(dirname "$0")/../integration/lib.sh"
need fio
secs=${SOAK_SECONDS:-600}
ntaps=${SOAK_TAPS:-64}
start_bus
start_tapd

pools="p0 p1 p2 p3"
for p in $pools; do tapctl pool-create "$p" 32M >/dev/null || fail "pool-create $p"; done
# Images: raw files on a private tmpfs (no disk to fill), ram and null
# (null cannot verify: it gets reads only).
tmpfs_dir "$T/img" $((ntaps * 40))M
jobs="$T/soak.fio"
cat >"$jobs" <<FIO
[global]
ioengine=nbd
time_based=1
runtime=$secs
rw=randrw
rwmixread=60
bsrange=4k-128k
bs_unaligned=0
iodepth=8
verify=crc32c
verify_backlog=256
verify_fatal=1
size=32M
FIO
for i in $(seq 0 $((ntaps - 1))); do
	p=p$((i % 4))
	case $((i % 3)) in
	0) truncate -s 32M "$T/img/t$i.raw"; img="raw:$T/img/t$i.raw" ;;
	*) img=ram:32M ;;
	esac
	tapctl create --name "t$i" --pool "$p" "$img" >/dev/null || fail "create t$i"
	printf '[t%d]\nuri=%s\n' "$i" "$(nbd_uri "t$i")" >>"$jobs"
done

log "soak: $ntaps taps, ${secs}s of fio with verify, pools resized and taps moved"
fio "$jobs" --output="$T/soak.out" 2>"$T/soak.err" &
fio_pid=$!
track_pid $fio_pid

moves=0 resizes=0
end=$(( $(date +%s) + secs ))
while kill -0 $fio_pid 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do
	sleep 3
	p=p$((RANDOM % 4))
	tapctl pool-resize "$p" $(( (RANDOM % 8 + 1) * 8 ))M >/dev/null || fail "pool-resize $p"
	resizes=$((resizes + 1))
	t=t$((RANDOM % ntaps))
	tapctl set-pool "$t" p$((RANDOM % 4)) >/dev/null || fail "set-pool $t"
	moves=$((moves + 1))
	tapctl list >/dev/null || fail "tapd stopped answering"
done
rc=0
wait $fio_pid || rc=$?
[ $rc = 0 ] || fail "fio exited $rc: $(tail -n 30 "$T/soak.err" "$T/soak.out")"
fio_check soak
n=$(grep -cE 'err= *0' "$T/soak.out")
[ "$n" -ge "$ntaps" ] || fail "only $n of $ntaps fio jobs report err=0"
log "soak: $resizes pool resizes, $moves moves, $ntaps jobs with err=0 and no verify error"
for i in $(seq 0 $((ntaps - 1))); do tapctl destroy "t$i" || fail "destroy t$i"; done
for p in $pools; do tapctl pool-destroy "$p" || fail "pool-destroy $p"; done
tapd_alive || fail "tapd died"
stop_tapd || fail "tapd did not stop cleanly"
log "soak passed"
