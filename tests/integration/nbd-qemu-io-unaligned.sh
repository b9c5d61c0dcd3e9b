#!/bin/bash
# qemu-io writes and reads patterns at offsets and lengths that are not
# multiples of the sector or page size; every read must match its pattern,
# and neighbouring writes must not clobber each other (read-modify-write).
. "$(dirname "$0")/lib.sh"
need qemu-io

start_bus
start_tapd

truncate -s 16M "$T/disk.raw"
tapctl create --name unal "raw:$T/disk.raw" >/dev/null || fail "tapctl create failed"
uri=$(nbd_uri unal)

# offset length pattern: several cross 512-byte and 4 KiB boundaries, some
# touch their neighbours.
cases="1000 3000 0x11
511 2 0x22
4095 4098 0x33
8193 1 0x44
12287 8194 0x55
1048575 65537 0x66
16773120 4096 0x77"

# Verification failures make qemu-io print "Pattern verification failed"
# but not always exit non-zero, so the output is checked as well.
qio() {
	local out rc=0
	out=$(qemu-io -f raw "$uri" "$@" 2>&1) || rc=$?
	printf '%s\n' "$out" >>"$T/qemu-io.log"
	[ $rc = 0 ] || fail "qemu-io $* exited $rc: $out"
	if printf '%s\n' "$out" | grep -qiE 'verification failed|error|failed'; then
		fail "qemu-io $*: $out"
	fi
}

args=()
while read -r off len pat; do
	args+=(-c "write -P $pat $off $len")
done <<<"$cases"
qio "${args[@]}"

# Read back in a separate connection, so nothing can come from a cache.
args=()
while read -r off len pat; do
	args+=(-c "read -P $pat $off $len")
done <<<"$cases"
qio "${args[@]}"

# Untouched bytes between the writes are still zero.
qio -c "read -P 0 0 511" -c "read -P 0 513 487" -c "read -P 0 4000 95" -c "read -P 0 8194 4093" \
	-c "read -P 0 20481 1028094"

# 32 unaligned writes in flight at once, disjoint but sharing 512-byte and
# 4 KiB blocks with their neighbours: a read-modify-write that is not
# serialised against its neighbours would put back stale bytes.
args=()
for i in $(seq 0 31); do
	args+=(-c "aio_write -P $((i + 1)) $((2097152 + i * 700)) 700")
done
args+=(-c "aio_flush")
qio "${args[@]}"
args=()
for i in $(seq 0 31); do
	args+=(-c "read -P $((i + 1)) $((2097152 + i * 700)) 700")
done
qio "${args[@]}"

# A negative control, so a broken grep cannot make this test pass: a wrong
# pattern must be reported.
out=$(qemu-io -f raw "$uri" -c "read -P 0x99 1000 3000" 2>&1) || true
printf '%s\n' "$out" | grep -q "Pattern verification failed" ||
	fail "qemu-io did not report a wrong pattern: $out"

# The backing file holds the bytes too.
cmp -n 3000 -i 1000:0 "$T/disk.raw" <(head -c 3000 /dev/zero | tr '\0' '\021') ||
	fail "backing file does not hold pattern 0x11 at 1000"
tapd_alive || fail "tapd died"
log "PASS"
