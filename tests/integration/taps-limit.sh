#!/usr/bin/env bash
# The number of taps is bounded by the minors (4,096): all of them can be
# created, one more is refused with a message that says why and leaves
# nothing behind, the daemon still serves I/O and answers, a tap destroyed
# frees its minor for the next one, and tapd stops cleanly with all of
# them.
. "$(dirname "$0")/lib.sh"
need_libnbd
start_bus
start_tapd
CYCLER=$TOP_BUILDDIR/tests/tools/bus-cycler
[ -x "$CYCLER" ] || fail "$CYCLER not built"

"$CYCLER" --keep "$DBUS_SYSTEM_BUS_ADDRESS" 4096 null:1M ram:64K || fail "4096 creates"
[ "$(tapctl list --json | grep -c '"name"')" = 4096 ] || fail "not 4096 taps listed"
expect 1 "all 4096 minors are in use" tapctl create --name one-more null:1M
tapctl list --json | grep -q '"one-more"' && fail "the refused tap is listed"

nbdsh -u "$(nbd_uri c4095)" -c '
h.pwrite(b"\x5a" * 4096, 0)
assert h.pread(4096, 0) == b"\x5a" * 4096
' || fail "I/O on the last tap (ram) with 4096 taps"

tapctl destroy c7 || fail "destroy c7"
[ "$(tapctl create --name again null:1M)" = again ] || fail "create after a destroy"
tapctl list --json | grep -q '"minor": 7, "name": "again"' || fail "minor 7 was not reused"
stop_tapd || fail "tapd did not stop cleanly with 4096 taps"
