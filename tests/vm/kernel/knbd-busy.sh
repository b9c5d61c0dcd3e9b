#!/bin/bash
# /dev/nbdN from `tapctl attach --kind nbd` has --nbd-kernel-connections
# connections (2 by default, 3 here by a drop-in): tapd counts them on the
# tap and holds one socket per connection. The consumer goes first: detach
# and destroy of a mounted device are refused naming the mount point, a
# detach of a device a process holds open names the process; a forced
# detach disconnects it, and it is gone once the process lets go. One that
# someone else disconnects (nbd-client -d) leaves the list.
. "$(dirname "$0")/../lib.sh"
need mkfs.ext4 modprobe setpriv

modprobe nbd || fail "modprobe nbd"
img=/var/tmp/vm-knbd-busy.img
rm -f "$img"
truncate -s 64M "$img"
at_exit rm -f "$img"

# conns_check N: the tap holds the device and N connections; tapd has N
# more sockets than before the attach ($socks0).
conns() { tapctl stats kb | awk '$1 == "connections" { print $2 }'; }
socks() { ls -l "/proc/$(tapd_pid)/fd" | grep -c 'socket:' || true; }
conns_check() {
	local want=$1
	wait_for 10 sh -c "[ \"\$(tapctl stats kb | awk '\$1 == \"connections\" { print \$2 }')\" = $((want + 1)) ]" ||
		fail "tap kb has $(conns) clients, wanted $((want + 1)) (the device and $want connections)"
	[ "$(socks)" = $((socks0 + want)) ] ||
		fail "tapd has $(socks) sockets, $socks0 before the attach: not $want more"
	measure "connections" "$want"
}

start_tapd
tapctl create --name kb "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy kb
socks0=$(socks)
dev=$(tapctl attach kb --kind nbd) || fail "attach --kind nbd"
at_exit tapctl detach --force kb
n=${dev#/dev/nbd}
conns_check 2
wait_for 10 test -b "$dev" || fail "no $dev node"

# Mounted: detach and destroy refused, naming the mount point.
mnt=$T/mnt
mkdir -p "$mnt"
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4"
mount "$dev" "$mnt" || fail "mount"
at_exit umount "$mnt"
tapctl detach kb >"$T/out" 2>&1 && fail "detach of a mounted $dev succeeded"
grep -q "mounted on $mnt" "$T/out" || fail "detach refusal does not name $mnt: $(cat "$T/out")"
tapctl destroy kb >"$T/out" 2>&1 && fail "destroy of a tap with $dev mounted succeeded"
grep -q "$mnt" "$T/out" || fail "destroy refusal does not name $mnt: $(cat "$T/out")"
test -e "/sys/block/nbd$n/pid" || fail "$dev was disconnected by a refused detach"
echo hello >"$mnt/hello" && sync -f "$mnt" || fail "I/O after the refusals"
umount "$mnt" || fail "umount"

# Open by a process: refused naming it; forced: disconnected, gone once
# the process closes it. (The opener runs without capabilities: under
# tapd.service's ProtectProc=invisible tapd sees only processes whose
# capabilities it has; see tapd(8).)
setpriv --bounding-set=-all --inh-caps=-all sleep 600 5<"$dev" &
opener=$!
track_pid $opener
wait_for 5 test -e "/proc/$opener/fd/5" || fail "the opener did not start"
tapctl detach kb >"$T/out" 2>&1 && fail "detach of an open $dev succeeded"
grep -q "open by pid $opener (sleep)" "$T/out" ||
	fail "detach refusal does not name pid $opener: $(cat "$T/out")"
tapctl detach --force kb || fail "detach --force"
dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null &&
	fail "I/O through a forced-off $dev succeeded"
tapctl list | grep -q "$dev" && fail "tapctl list still shows $dev"
kill $opener
wait $opener 2>/dev/null || true
wait_for 10 sh -c "! test -e /sys/block/nbd$n/pid" || fail "/sys/block/nbd$n/pid still there"
wait_for 10 sh -c "[ \"\$(ls -l /proc/$(tapd_pid)/fd | grep -c socket:)\" = $socks0 ]" ||
	fail "tapd still has $(socks) sockets, $socks0 before the attach"

# --nbd-kernel-connections 3.
unit_dropin conns "[Service]
ExecStart=
ExecStart=$(command -v tapd) --foreground --nbd-kernel-connections 3"
systemctl restart tapd || fail "restart with 3 connections"
tapctl create --name kb "raw:$img" >/dev/null || fail "create again"
socks0=$(socks)
dev=$(tapctl attach kb --kind nbd) || fail "attach with 3 connections"
conns_check 3
wait_for 10 test -b "$dev" || fail "no $dev node"
dd if="$dev" of=/dev/null bs=1M count=8 iflag=direct status=none || fail "read through 3 connections"
tapctl detach kb || fail "detach"

# Disconnected by someone else (nbd-client -d): the device leaves the
# list and releases the tap.
if command -v nbd-client >/dev/null; then
	dev=$(tapctl attach kb --kind nbd) || fail "attach before nbd-client -d"
	wait_for 10 test -b "$dev" || fail "no $dev node"
	nbd-client -d "$dev" >/dev/null 2>&1 || fail "nbd-client -d $dev"
	wait_for 10 sh -c "! tapctl list | grep -q $dev" ||
		fail "$dev still listed after nbd-client -d: $(tapctl list)"
	wait_for 10 sh -c "[ \"\$(tapctl stats kb | awk '\$1 == \"connections\" { print \$2 }')\" = 0 ]" ||
		fail "tap kb still has $(conns) clients after nbd-client -d"
	tapctl destroy kb || fail "destroy after nbd-client -d"
fi
log "ok"
