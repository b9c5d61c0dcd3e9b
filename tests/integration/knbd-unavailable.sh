#!/bin/bash
# Without the kernel's nbd driver (this machine has no nbd module), Attach
# of kind nbd fails with NotSupported and a message naming `modprobe nbd`;
# the tap goes on serving, and Attach of the default kind does not pick nbd.
. "$(dirname "$0")/lib.sh"
[ -e /sys/module/nbd ] && skip "the nbd driver is loaded here: tests/vm/kernel/knbd-*.sh test it"
start_bus
start_tapd
tapctl create --name k ram:1M >/dev/null || fail "create"
expect 1 "nbd: the kernel has no nbd driver \(/sys/module/nbd: .*; modprobe nbd\)" \
	tapctl attach k --kind nbd
errname org.xenproject.Tapd1.Error.NotSupported /org/xenproject/Tapd1/tap/0 \
	org.xenproject.Tapd1.Tap.Attach nbd
tapctl list | grep -qE '^0 +k +running .* -$' || fail "k has a device or stopped: $(tapctl list)"
qemu-io -f raw -c "write -P 0x5a 0 4k" -c "read -P 0x5a 0 4k" "$(nbd_uri k)" >/dev/null ||
	fail "NBD after the refused attach"
# A bad connection count is refused at start.
expect 2 "bad connection count '0' \(1-16\)" "$TAPD" --nbd-kernel-connections 0
log "all checks passed"
exit 0
