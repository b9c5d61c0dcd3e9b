#!/bin/bash
# What a ublk device passes on besides reads and writes: the queue limits
# (volatile cache and FUA, discard and write-zeroes), blkdiscard as TRIM
# and blkdiscard -z as WRITE_ZEROES reaching the image (read back as zeros
# through NBD, the rest unchanged), fsync as FLUSH; a read-only tap gives
# a read-only device that refuses writes, and that a stop of tapd
# removes.
. "$(dirname "$0")/../lib.sh"
need blkdiscard blockdev nbdcopy modprobe

modprobe ublk_drv || fail "modprobe ublk_drv"
start_tapd
img=/var/tmp/vm-ublk-ops.img
rm -f "$img"
make_image "$img" 32M
at_exit rm -f "$img"
cp "$img" "$T/orig"
tapctl create --name ops "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy ops
dev=$(tapctl attach ops --kind ublk 2>"$T/err") || fail "attach: $(cat "$T/err")"
at_exit tapctl detach --force ops
q=/sys/block/${dev#/dev/}/queue
log "queue: write_cache=$(cat $q/write_cache) fua=$(cat $q/fua) discard_max=$(cat $q/discard_max_bytes) zeroes_max=$(cat $q/write_zeroes_max_bytes) lbs=$(cat $q/logical_block_size) max_kb=$(cat $q/max_sectors_kb)"
[ "$(cat $q/write_cache)" = "write back" ] || fail "no volatile cache: $(cat $q/write_cache)"
[ "$(cat $q/fua)" = 1 ] || fail "no FUA"
[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "no discard"
[ "$(cat $q/write_zeroes_max_bytes)" -gt 0 ] || fail "no write zeroes"

stat_of() { tapctl stats ops | awk -v k="$1" '$1 == k { print $2 }'; }
trims0=$(stat_of trims) zeroes0=$(stat_of zeroes) flushes0=$(stat_of flushes)
blkdiscard -o 1M -l 4M "$dev" || fail "blkdiscard"
blkdiscard -z -o 8M -l 4M "$dev" || fail "blkdiscard -z"
dd if=/dev/urandom of="$dev" bs=4k count=1 seek=4096 oflag=direct conv=fsync status=none ||
	fail "dd with fsync"
[ "$(stat_of trims)" -gt "$trims0" ] || fail "no TRIM reached the tap: $(tapctl stats ops)"
[ "$(stat_of zeroes)" -gt "$zeroes0" ] || fail "no WRITE_ZEROES reached the tap: $(tapctl stats ops)"
[ "$(stat_of flushes)" -gt "$flushes0" ] || fail "no FLUSH reached the tap: $(tapctl stats ops)"

nbdcopy "$(nbd_uri ops)" "$T/copy" || fail "nbdcopy"
zero4m() { head -c 4M /dev/zero; }
part() { dd if="$1" bs=1M skip="$2" count="$3" status=none; }
cmp <(part "$T/copy" 1 4) <(zero4m) >/dev/null || fail "the discarded range does not read as zeros over NBD"
cmp <(part "$T/copy" 8 4) <(zero4m) >/dev/null || fail "the zeroed range does not read as zeros over NBD"
cmp <(part "$T/copy" 0 1) <(part "$T/orig" 0 1) >/dev/null || fail "data before the discard changed"
cmp <(part "$T/copy" 5 3) <(part "$T/orig" 5 3) >/dev/null || fail "data between the ranges changed"
cmp <(part "$T/copy" 20 12) <(part "$T/orig" 20 12) >/dev/null || fail "data after the ranges changed"
tapctl detach ops || fail "detach"

# Read-only.
tapctl create --name ro --read-only "raw:$img" >/dev/null || fail "create read-only"
at_exit tapctl destroy ro
dev=$(tapctl attach ro --kind ublk 2>"$T/err") || fail "attach read-only: $(cat "$T/err")"
at_exit tapctl detach --force ro
[ "$(blockdev --getro "$dev")" = 1 ] || fail "$dev is not read-only"
if dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct status=none 2>"$T/dd"; then
	fail "a write to the read-only $dev succeeded"
fi
log "write refused: $(cat "$T/dd")"
cmp <(part "$dev" 20 12) <(part "$T/orig" 20 12) >/dev/null || fail "read-only $dev reads wrong"
# A stop detaches it: nothing is left behind.
systemctl stop tapd.service || fail "systemctl stop"
[ "$(unit_prop Result)" = success ] || fail "tapd stopped with $(unit_prop Result)"
wait_for 5 sh -c "! test -e $dev" || fail "$dev left behind by the stop"
log "ok"
