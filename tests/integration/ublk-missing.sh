#!/bin/bash
# Where the ublk_drv module is not loaded (no /dev/ublk-control, as on the
# build machine), `tapctl attach --kind ublk` fails with NotSupported
# naming what is missing and `modprobe ublk_drv`, and the tap stays
# usable and unattached. The attach itself is tested in the VM rig
# (tests/vm/kernel/ublk-*.sh).
. "$(dirname "$0")/lib.sh"
[ -e /dev/ublk-control ] && skip "/dev/ublk-control exists here: the VM tests cover ublk"
start_bus
start_tapd

truncate -s 16M "$T/a.img"
tapctl create --name a "raw:$T/a.img" >/dev/null || fail "create"
expect 1 "modprobe ublk_drv" tapctl attach a --kind ublk
grep -q "ublk: /dev/ublk-control: No such file or directory (modprobe ublk_drv)" "$T/err" ||
	fail "the error does not say what is missing: $(cat "$T/err")"
errname org.xenproject.Tapd1.Error.NotSupported /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Attach ublk
tapctl list >"$T/list" || fail "list"
grep -q ublk "$T/list" && fail "tap a is listed with a ublk device: $(cat "$T/list")"
tapctl destroy a || fail "destroy after the refused attach"
log "ok: $(cat "$T/err")"
