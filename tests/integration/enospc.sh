#!/usr/bin/env bash
# A raw image on a small filesystem fills up: the NBD client sees ENOSPC,
# the daemon stays up, and after space is freed the same write succeeds.
. "$(dirname "$0")/lib.sh"
need qemu-io mkfs.ext4
[ "$(id -u)" = 0 ] || skip "needs root to mount a filesystem"

truncate -s 48M "$T/fs.img"
mkfs.ext4 -q -F "$T/fs.img"
mkdir "$T/mnt"
mount -o loop "$T/fs.img" "$T/mnt" || skip "cannot loop-mount here"
# Leave about 8 MiB free; the image itself is sparse and bigger than that.
avail=$(( $(stat -f -c '%a * %S' "$T/mnt") ))
fill=$(( avail - 8 * 1024 * 1024 ))
fallocate -l "$fill" "$T/mnt/filler"
truncate -s 64M "$T/mnt/disk.raw"

start_bus
start_tapd
tapctl create --name full "raw:$T/mnt/disk.raw" >/dev/null
uri=$(nbd_uri full)

out=$(qemu-io -f raw -c 'write -P 0x5a 0 24M' "$uri" 2>&1) && fail "write of 24M into 8M of space succeeded: $out"
grep -q 'No space left on device' <<<"$out" || fail "client did not see ENOSPC: $out"
tapd_alive || fail "tapd died on ENOSPC"
errors=$(tapctl stats full --json | grep -o '"errors": *[0-9]*' | grep -o '[0-9]*$')
[ "${errors:-0}" -gt 0 ] || fail "stats do not count the failed write"

rm "$T/mnt/filler"
out=$(qemu-io -f raw -c 'write -P 0x5a 0 24M' "$uri" 2>&1) || fail "write after freeing space failed: $out"
out=$(qemu-io -f raw -c 'read -P 0x5a 0 24M' "$uri" 2>&1) || fail "read back failed: $out"
grep -q 'Pattern verification failed' <<<"$out" && fail "data read back differs: $out"
tapctl list | grep -q full || fail "tap gone after ENOSPC"
log "ok"
