#!/bin/bash
# What CreateTap refuses before opening anything, and what it refuses after
# (issue 10, item 8): tap names that would read as paths or options later
# (".", "..", "-", a leading '-' or '.') get InvalidArgs, as other bad
# arguments do, with a message saying what a name may be; an image of 0
# bytes, whatever its driver, gets BadImage naming the image. Nothing is
# left behind and good names still work.
. "$(dirname "$0")/lib.sh"
start_bus
start_tapd

R=/org/xenproject/Tapd1
M=org.xenproject.Tapd1.Manager
E=org.xenproject.Tapd1.Error
IA=org.freedesktop.DBus.Error.InvalidArgs

for name in . .. - -x .hidden --help 'a"b' 'a/b' 'a b' 123; do
	expect 1 "bad tap name" tapctl create --name "$name" ram:1M
	grep -qiE "letters, digits|number" "$T/err" || fail "name '$name': unclear: $(cat "$T/err")"
	errname $IA $R $M.CreateTap ram:1M "{'name': <'$name'>}"
done
expect 1 "not start with '-' or '.'" tapctl create --name -x ram:1M
[ "$(tapctl list --json)" = "[]" ] || fail "a refused name left a tap: $(tapctl list)"
for name in a a.b a-b a_b x1 A.-_9 1a; do
	[ "$(tapctl create --name "$name" null:1M)" = "$name" ] || fail "good name '$name' refused"
	tapctl destroy "$name"
done

# Empty images, from three drivers: a raw file of 0 bytes; a vhd whose
# footers say 0 bytes (tapd-vhd makes none, a crafted file can); a remote
# NBD server exporting 0 bytes (nbdkit, where installed).
: >"$T/empty.raw"
expect 1 "raw:$T/empty.raw: .*empty \\(0 bytes\\)" tapctl create "raw:$T/empty.raw"
errname $E.BadImage $R $M.CreateTap "raw:$T/empty.raw" '{}'
"$TOP_BUILDDIR/tools/tapd-vhd" create "$T/empty.vhd" 1M >/dev/null
python3 - "$T/empty.vhd" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
for off in (0, len(b) - 512):  # the footer and its copy
    f = b[off:off + 512]
    f[48:56] = struct.pack('>Q', 0)  # current size
    f[64:68] = bytes(4)
    f[64:68] = struct.pack('>I', ~sum(f) & 0xffffffff)
    b[off:off + 512] = f
open(sys.argv[1], 'wb').write(b)
PY
expect 1 "vhd:$T/empty.vhd: .*0 bytes" tapctl create "vhd:$T/empty.vhd"
errname $E.BadImage $R $M.CreateTap "vhd:$T/empty.vhd" '{}'
if command -v nbdkit >/dev/null; then
	nbdkit --foreground --unix "$T/remote.sock" --exit-with-parent null size=0 \
		>"$T/nbdkit.log" 2>&1 &
	track_pid $!
	for _ in $(seq 1 100); do [ -S "$T/remote.sock" ] && break; sleep 0.05; done
	expect 1 "0 bytes" tapctl create "nbd:nbd+unix:///?socket=$T/remote.sock"
else
	log "nbdkit missing: an empty remote is not tried"
fi
# An unpause on an empty image is refused the same way; the tap stays paused.
truncate -s 1M "$T/one.raw"
tapctl create --name u "raw:$T/one.raw" >/dev/null
tapctl pause u
expect 1 "0 bytes" tapctl unpause u "raw:$T/empty.raw"
tapctl list --json | grep -q '"name": "u".*"state": "paused"' || fail "u not paused"
tapctl unpause u
tapctl destroy u
[ "$(tapctl list --json)" = "[]" ] || fail "taps left: $(tapctl list)"
tapd_alive || fail "tapd died"
log "ok"
