#!/usr/bin/env bash
# The toolstack's snapshot of a running disk: pause the tap, take a
# differencing child of its leaf with tapd-vhd, unpause onto the child.
# Done twice while fio writes with verification: the client sees no error,
# and every block written before and after reads back right through the
# 3-deep chain that results.
. "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
VHD=$TOP_BUILDDIR/tools/tapd-vhd
SIZE=32M

start_bus
start_tapd
"$VHD" create "$T/l0.vhd" $SIZE >/dev/null
tapctl create --name vm "vhd:$T/l0.vhd" >/dev/null || fail "create"
URI=$(nbd_uri vm)

fio_job() { # NAME ARGS...
	local name=$1
	shift
	(cd "$T" && fio --name="$name" --ioengine=nbd --uri="$URI" --size=$SIZE --bs=4k \
		--verify=crc32c --verify_fatal=1 --verify_state_save=0 "$@" \
		--output="$T/$name.out" >/dev/null 2>"$T/$name.err")
}

# Everything written before the first snapshot, so that reads of old
# blocks must come from the parents.
fio_job fill --rw=write --iodepth=16 --do_verify=0 || fail "fio fill: $(cat "$T/fill.err")"
fio_check fill

# verify_backlog: reads that check what was written go on during the
# writes, however slow the daemon (valgrind, a loaded machine); without it
# fio verifies only after writing the whole size, which 8 s may not reach.
fio_job churn --rw=randwrite --iodepth=16 --time_based --runtime=8 --do_verify=1 \
	--verify_backlog=256 &
FIO=$!
track_pid $FIO
sleep 1
for i in 1 2; do
	tapctl pause vm || fail "pause $i"
	prev=$T/l$((i - 1)).vhd
	# The tool refuses nothing here: tapd let go of the chain when paused.
	"$VHD" snapshot "$T/l$i.vhd" "$prev" >/dev/null || fail "snapshot $i"
	tapctl unpause vm "vhd:$T/l$i.vhd" || fail "unpause $i onto the new leaf"
	tapctl list | grep -q "l$i.vhd" || fail "tap not on the new leaf $i"
	sleep 1.5
done
kill -0 $FIO 2>/dev/null || fail "fio ended during the snapshots: $(cat "$T/churn.out" "$T/churn.err")"
rc=0
wait $FIO || rc=$?
[ $rc = 0 ] || fail "fio churn exited $rc: $(cat "$T/churn.out" "$T/churn.err")"
fio_check churn
# Verify reads are issued reads (the first count), with or without a
# separate verify pass.
grep -qE 'issued rwts: total=[1-9][0-9]*,' "$T/churn.out" || fail "fio did not verify"

# A final pass reads every block through the whole chain.
fio_job final --rw=read --iodepth=16 --do_verify=1 || fail "fio final: $(cat "$T/final.err")"
fio_check final
stats=$(tapctl stats vm --json)
grep -q '"chain_depth": *3' <<<"$stats" || fail "want a 3-deep chain: $stats"
grep -q '"errors": *0' <<<"$stats" || fail "the tap counted errors: $stats"
tapctl destroy vm
"$VHD" check "$T/l2.vhd" >/dev/null || fail "the chain is inconsistent: $("$VHD" check "$T/l2.vhd" 2>&1)"
log "ok"
