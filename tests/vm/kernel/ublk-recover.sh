#!/bin/bash
# UBLK_F_USER_RECOVERY: tapd is killed (kill -9) while fio writes and
# verifies on its /dev/ublkbN; the device stays and holds the I/O. The
# tapd that systemd restarts knows nothing yet (the restore of recorded
# taps is not in this branch), so the test does by hand what the restore
# will: the tap again, with the same name and minor, and Attach("ublk"),
# which finds the device left behind and recovers it (a tap of another
# size is refused first). fio finishes with no error and every block
# verifies.
. "$(dirname "$0")/../lib.sh"
need fio modprobe

modprobe ublk_drv || fail "modprobe ublk_drv"
start_tapd
img=/var/tmp/vm-ublk-rec.img
rm -f "$img"
truncate -s 128M "$img"
at_exit rm -f "$img"
tapctl create --name rec "raw:$img" >/dev/null || fail "create"
at_exit tapctl destroy rec
dev=$(tapctl attach rec --kind ublk 2>"$T/err") || fail "attach: $(cat "$T/err")"
at_exit tapctl detach --force rec
[ "$dev" = /dev/ublkb0 ] || fail "attach printed $dev, expected /dev/ublkb0 (the first tap)"

# Write 64M with verify data, verify as it goes and at the end.
fio --name=rec --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
	--bs=4k-64k --size=64M --verify=crc32c --verify_fatal=1 --do_verify=1 \
	--output="$T/fio" >/dev/null 2>&1 &
fio_pid=$!
track_pid $fio_pid
# Kill tapd while fio writes: the device must survive it.
wait_for 30 sh -c "[ \$(tapctl stats rec | awk '\$1 == \"writes\" { print \$2 }') -gt 200 ]" ||
	fail "fio made no progress: $(tapctl stats rec)"
old=$(tapd_pid)
t0=$(now)
kill -9 "$old"
log "killed tapd $old with fio running"
kill -0 $fio_pid 2>/dev/null || fail "fio ended with tapd's death: $(cat "$T/fio")"
# The device stays, in the driver's hands, while nobody serves it.
[ -b "$dev" ] || fail "$dev went with tapd"
# systemd restarts it (Restart=on-failure).
wait_for 30 sh -c "p=\$(systemctl show -P MainPID tapd.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $old ] && tapctl list >/dev/null" ||
	fail "tapd was not restarted"
kill -0 $fio_pid 2>/dev/null || fail "fio ended before the recovery: $(cat "$T/fio")"
# A tap of the same minor but another size is not the same disk: refused.
other=/var/tmp/vm-ublk-other.img
truncate -s 64M "$other"
at_exit rm -f "$other"
tapctl create --name other "raw:$other" >/dev/null || fail "create other"
if tapctl attach other --kind ublk >"$T/out" 2>"$T/err"; then
	fail "a tap of another size recovered $dev: $(cat "$T/out")"
fi
grep -q "not recovered" "$T/err" || fail "the refusal does not say why: $(cat "$T/err")"
tapctl destroy other || fail "destroy other"
[ -b "$dev" ] || fail "$dev went after the refused recovery"
kill -0 $fio_pid 2>/dev/null || fail "fio ended after the refused recovery: $(cat "$T/fio")"
tapctl create --name rec "raw:$img" >/dev/null || fail "create again"
minor=$(tapctl list --json | grep '"name": "rec"' | sed 's/.*"minor": \([0-9]*\).*/\1/')
[ "$minor" = 0 ] || fail "the tap came back as minor $minor"
dev2=$(tapctl attach rec --kind ublk 2>"$T/err") || fail "attach (recover): $(cat "$T/err")"
measure "ublk recovery after kill -9" "$(since "$t0") s"
[ "$dev2" = "$dev" ] || fail "recovered as $dev2, not $dev"
journalctl -u tapd.service --since=-2min -o cat | grep -q "ublk: $dev of tap rec recovered" ||
	fail "tapd did not say it recovered $dev"
wait $fio_pid || fail "fio failed across the restart: $(cat "$T/fio")"
grep -q 'err= 0' "$T/fio" || fail "fio saw errors: $(cat "$T/fio")"
log "fio: $(grep -E 'WRITE:|READ:' "$T/fio" | tr -s ' ' | head -2 | tr '\n' ' ')"
tapctl detach rec || fail "detach after the recovery"
wait_for 5 sh -c "! test -e $dev" || fail "$dev still there after detach"
log "ok"
