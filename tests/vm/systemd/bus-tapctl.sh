#!/bin/bash
# On the real system bus with the installed policy: busctl sees tapd's
# objects, tapctl creates a tap over a file, a client reads the file back
# over NBD and writes through it, and destroy removes the tap.
. "$(dirname "$0")/../lib.sh"
need busctl nbdcopy nbdinfo

start_tapd
busctl tree org.xenproject.Tapd1 >"$T/tree" || fail "busctl tree"
grep -q /org/xenproject/Tapd1 "$T/tree" || fail "no /org/xenproject/Tapd1 in: $(cat "$T/tree")"
busctl introspect org.xenproject.Tapd1 /org/xenproject/Tapd1 >"$T/intro" || fail "busctl introspect"
grep -q '\.CreateTap' "$T/intro" || fail "Manager has no CreateTap: $(cat "$T/intro")"

img=/var/tmp/vm-bus.img
make_image "$img" 16M
at_exit rm -f "$img"
tap=$(tapctl create --name vmtap "raw:$img") || fail "tapctl create"
[ "$tap" = vmtap ] || fail "create printed '$tap'"
at_exit tapctl destroy vmtap
[ "$(tap_state vmtap)" = running ] || fail "state $(tap_state vmtap)"
busctl call org.xenproject.Tapd1 /org/xenproject/Tapd1 org.xenproject.Tapd1.Manager ListTaps >"$T/list" ||
	fail "ListTaps"
grep -q '"vmtap"' "$T/list" || fail "ListTaps: $(cat "$T/list")"
# tapd refreshes its status line once a second.
status_is() { [ "$(unit_prop StatusText)" = "$1" ]; }
wait_for 5 status_is "Serving 1 tap" || fail "StatusText '$(unit_prop StatusText)'"

nbdinfo "$(nbd_uri vmtap)" >"$T/info" || fail "nbdinfo"
grep -q 'export-size: 16777216' "$T/info" || fail "nbdinfo: $(cat "$T/info")"
nbdcopy "$(nbd_uri vmtap)" "$T/back.raw" || fail "nbdcopy from the tap"
cmp "$img" "$T/back.raw" || fail "what NBD read differs from the file"
make_image "$T/new.raw" 16M
nbdcopy "$T/new.raw" "$(nbd_uri vmtap)" || fail "nbdcopy to the tap"
cmp "$T/new.raw" "$img" || fail "what NBD wrote is not in the file"

tapctl destroy vmtap || fail "destroy"
tapctl list --json | grep -q '"vmtap"' && fail "vmtap still listed after destroy"
wait_for 5 status_is "Serving 0 taps" || fail "StatusText '$(unit_prop StatusText)'"
log "ok"
