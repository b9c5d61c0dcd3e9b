#!/usr/bin/env bash
# Stacked taps: one parent tap over a golden VHD in pool "parent", eight
# leaf taps (differencing children) stacked on it in pool "leaf", sized for
# a single request. fio at depth 32 on every leaf reads through the leaves'
# unallocated ranges: everything comes from the parent tap's queue and pool,
# and must finish with the right data and no stall, however starved the
# leaves are. Leaves and parent on one pool are refused, with the reason.
. "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
VHD=$TOP_BUILDDIR/tools/tapd-vhd
SIZE=16M
LEAVES=8

start_bus
start_tapd
"$VHD" create "$T/gold.vhd" 64M >/dev/null
tapctl create --name fill "vhd:$T/gold.vhd" >/dev/null
fio_job() { # NAME URI ARGS...: the same layout for writing and verifying
	local name=$1 uri=$2
	shift 2
	(cd "$T" && fio --name="$name" --ioengine=nbd --uri="$uri" --size=$SIZE --bs=4k \
		--rw=write --verify=crc32c --verify_fatal=1 --verify_state_save=0 "$@" \
		--output="$T/$name.out" >/dev/null 2>"$T/$name.err")
}
fio_job fill "$(nbd_uri fill)" --iodepth=16 --do_verify=0 || fail "fio fill: $(cat "$T/fill.err")"
tapctl destroy fill

tapctl pool-create parent 8M >/dev/null
tapctl pool-create leaf 4K >/dev/null
tapctl create --name gold --read-only --pool parent "vhd:$T/gold.vhd" >/dev/null
for i in $(seq 1 $LEAVES); do
	"$VHD" snapshot "$T/leaf$i.vhd" "$T/gold.vhd" >/dev/null
done

# One pool for both layers: refused, saying why.
out=$(tapctl create --name bad --parent gold --pool parent "vhd:$T/leaf1.vhd" 2>&1) &&
	fail "a leaf in its parent's pool was accepted"
grep -q 'different pools' <<<"$out" || fail "unclear refusal: $out"

for i in $(seq 1 $LEAVES); do
	tapctl create --name "leaf$i" --parent gold --pool leaf "vhd:$T/leaf$i.vhd" >/dev/null ||
		fail "create leaf$i"
done
pids=()
for i in $(seq 1 $LEAVES); do
	fio_job "read$i" "$(nbd_uri "leaf$i")" --iodepth=32 --verify_only &
	pids+=($!)
	track_pid $!
done
# A stall is a failure after a bound, with the state that explains it.
deadline=$((SECONDS + 180))
for i in $(seq 1 $LEAVES); do
	while kill -0 "${pids[$((i - 1))]}" 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			tapctl pool-list >&2
			for t in gold $(seq -f 'leaf%g' 1 $LEAVES); do tapctl stats "$t" >&2; done
			fail "stacked reads stalled (pool and tap state above)"
		fi
		sleep 0.5
	done
	rc=0
	wait "${pids[$((i - 1))]}" || rc=$?
	[ $rc = 0 ] || fail "fio on leaf$i exited $rc: $(cat "$T/read$i.out" "$T/read$i.err")"
	fio_check "read$i"
done
# The reads were served by the parent tap, from its own pool.
reads=$(tapctl stats gold --json | grep -o '"reads": *[0-9]*' | grep -o '[0-9]*$')
[ "${reads:-0}" -ge $((LEAVES * 4096)) ] || fail "the parent tap served only ${reads:-0} reads"
tapctl pool-list --json | grep -q '"name": "leaf"' || fail "pool-list lost the leaf pool"
out=$(tapctl destroy gold 2>&1) && fail "the parent tap was destroyed under its leaves"
grep -q 'parent chain' <<<"$out" || fail "unclear refusal to destroy the parent: $out"
log "ok"
