#!/bin/bash
# tapd-vhd against qemu: qemu-made images pass query/check, tapd-vhd-made
# images open in qemu with the right size and data, coalesce and resize
# keep the data, corrupt copies are refused with one readable line each,
# modifying commands respect the OFD lock, usage errors exit 2. No daemon.
#
# Sizes: tapd-vhd writes creator "tap", for which qemu (like XenServer)
# trusts the footer's current_size, so any multiple of 512 round-trips
# exactly (100M below is not a CHS multiple). qemu's own images are
# CHS-rounded unless made with -o force_size.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
VHD=$TOP_BUILDDIR/tools/tapd-vhd
[ -x "$VHD" ] || fail "$VHD not built"
cd "$T"

# expect RC REGEX CMD...: CMD exits RC and stdout+stderr match REGEX.
expect() {
	local want=$1 pat=$2 rc=0
	shift 2
	"$@" >"$T/out" 2>&1 || rc=$?
	[ "$rc" = "$want" ] || fail "$*: exit $rc, expected $want: $(cat "$T/out")"
	grep -qE -- "$pat" "$T/out" || fail "$*: output lacks /$pat/: $(cat "$T/out")"
}
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
qsize() { qemu-img info -f vpc --output=json "$1" >"$T/info.json"; json "$T/info.json" "['virtual-size']"; }
query() { "$VHD" query --json "$1" >"$T/q.json" || fail "query $1"; json "$T/q.json" "$2"; }

# --- a qemu-made dynamic image --------------------------------------------
qemu-img create -q -f vpc -o subformat=dynamic q.vhd 64M
expect 0 'q.vhd: ok' "$VHD" check q.vhd
[ "$(query q.vhd "['type']")" = dynamic ] || fail "q.vhd type"
[ "$(query q.vhd "['allocated_blocks']")" = 0 ] || fail "fresh qemu image has blocks"
qemu-io -f vpc -c 'write -P 0x11 0 4k' -c 'write -P 0x22 5M 8k' \
	-c 'write -P 0x33 40M 1M' q.vhd >/dev/null
[ "$(query q.vhd "['allocated_blocks']")" = 3 ] || fail "allocated blocks: $(cat "$T/q.json")"
[ "$(query q.vhd "['virtual_size']")" = "$(qsize q.vhd)" ] || fail "size differs from qemu's"
expect 0 'ok' "$VHD" check q.vhd
expect 0 'path: q.vhd' "$VHD" query q.vhd

# --- tapd-vhd-made images in qemu -------------------------------------------
"$VHD" create d.vhd 100M
"$VHD" create --fixed f.vhd 100M
for img in d.vhd f.vhd; do
	[ "$(qsize $img)" = 104857600 ] || fail "$img: qemu sees $(qsize $img) bytes"
	qemu-img info -f vpc $img | grep -q 'file format: vpc' || fail "$img: not vpc to qemu"
	# qemu 7.2's vpc driver has no check: accept "not supported" (63).
	rc=0; qemu-img check -f vpc $img >"$T/out" 2>&1 || rc=$?
	[ $rc = 0 ] || [ $rc = 63 ] || fail "qemu-img check $img: $rc $(cat "$T/out")"
	qemu-io -f vpc -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 5M 4k' \
		-c 'write -P 0xef 99M 1M' $img >/dev/null
	qemu-io -f vpc -c 'read -P 0xab 0 64k' -c 'read -P 0 64k 64k' -c 'read -P 0xcd 5M 4k' \
		-c 'read -P 0xef 99M 1M' $img >"$T/out" || fail "$img: read back"
	grep -q 'Pattern verification failed' "$T/out" && fail "$img: data differs"
	expect 0 'ok' "$VHD" check $img
done
[ "$(query d.vhd "['allocated_blocks']")" = 3 ] || fail "d.vhd blocks"
[ "$(query f.vhd "['type']")" = fixed ] || fail "f.vhd type"
[ "$(stat -c %s f.vhd)" = $((100 * 1024 * 1024 + 512)) ] || fail "fixed file size"
expect 1 'exists' "$VHD" create d.vhd 1M

# --- snapshot, then coalesce ------------------------------------------------
qemu-img convert -f vpc -O raw d.vhd expect.raw
"$VHD" snapshot c.vhd d.vhd
[ "$(query c.vhd "['type']")" = differencing ] || fail "child type"
[ "$(query c.vhd "['parent']")" = d.vhd ] || fail "child parent: $(cat "$T/q.json")"
[ "$(query c.vhd "['parent_uuid']")" = "$(query d.vhd "['uuid']")" ] || fail "parent uuid"
# qemu's vpc driver cannot follow a parent (it reads a differencing disk as
# if it were dynamic), so only write whole blocks the parent left empty.
qemu-io -f vpc -c 'write -P 0x77 20M 2M' c.vhd >/dev/null
python3 - expect.raw <<'EOF'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(20 << 20); f.write(b'\x77' * (2 << 20))
EOF
expect 0 'c.vhd: ok' "$VHD" check c.vhd
[ "$(query c.vhd "['allocated_blocks']")" = 1 ] || fail "child blocks"
"$VHD" coalesce --progress c.vhd 2>"$T/progress" || fail "coalesce: $(cat "$T/progress")"
grep -q 'coalesce: 100%' "$T/progress" || fail "no progress: $(cat "$T/progress")"
qemu-img compare -q -f vpc -F raw d.vhd expect.raw || fail "coalesce: parent lacks child data"
expect 0 'ok' "$VHD" check c.vhd
expect 1 'not a differencing disk' "$VHD" coalesce d.vhd

# --- resize ----------------------------------------------------------------
"$VHD" resize d.vhd 200M
[ "$(qsize d.vhd)" = 209715200 ] || fail "resize: qemu sees $(qsize d.vhd)"
qemu-img compare -q -f vpc -F raw d.vhd expect.raw || fail "resize lost data"
expect 0 'ok' "$VHD" check d.vhd
expect 1 'BAT has room for 128 blocks' "$VHD" resize d.vhd 1G
expect 1 'shrinking is not supported' "$VHD" resize d.vhd 100M
"$VHD" resize f.vhd 150M
[ "$(qsize f.vhd)" = 157286400 ] || fail "fixed resize: qemu sees $(qsize f.vhd)"
qemu-io -f vpc -c 'read -P 0xef 99M 1M' -c 'read -P 0 100M 50M' f.vhd >"$T/out"
grep -q 'Pattern verification failed' "$T/out" && fail "fixed resize: data"
"$VHD" create --max-size 4G g.vhd 1G
"$VHD" resize g.vhd 3G
[ "$(qsize g.vhd)" = $((3 << 30)) ] || fail "--max-size resize"

# --- corrupted copies: exit 1 and one readable line ---------------------------
poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
cp d.vhd bad-csum.vhd
poke bad-csum.vhd $(( $(stat -c %s d.vhd) - 512 + 64 )) '\x00\x00'
expect 1 'bad-csum.vhd: footer at the end of the file is damaged \(bad footer checksum' \
	"$VHD" check bad-csum.vhd
cp f.vhd bad-fixed.vhd
poke bad-fixed.vhd $(( $(stat -c %s f.vhd) - 512 + 64 )) '\x00\x00'
expect 1 'bad-fixed.vhd: bad footer checksum' "$VHD" check bad-fixed.vhd
expect 1 'bad footer checksum' "$VHD" query bad-fixed.vhd
cp d.vhd bad-bat.vhd
poke bad-bat.vhd $((1536 + 4 * 7)) '\x00\x40\x00\x00'
expect 1 'bad-bat.vhd: BAT entry 7 points past the end of file' "$VHD" check bad-bat.vhd
cp d.vhd bad-cookie.vhd
poke bad-cookie.vhd 512 'xxsparse'
expect 1 'bad dynamic header: the cookie "cxsparse" is missing' "$VHD" check bad-cookie.vhd
"$VHD" create p1.vhd 10M
"$VHD" snapshot orphan.vhd p1.vhd
"$VHD" create p2.vhd 10M
"$VHD" snapshot wrong.vhd p2.vhd
rm p1.vhd
expect 1 'orphan.vhd: parent not found \(tried .*p1.vhd' "$VHD" check orphan.vhd
mv p2.vhd p1.vhd.tmp && "$VHD" create p2.vhd 10M && rm p1.vhd.tmp
expect 1 'wrong.vhd: parent UUID mismatch: the child expects [0-9a-f-]+, the parent is' \
	"$VHD" check wrong.vhd
[ "$(wc -l <"$T/out")" = 2 ] || fail "not one line per problem: $(cat "$T/out")"
expect 1 'parent UUID mismatch' "$VHD" coalesce wrong.vhd

# --- locks ----------------------------------------------------------------
# A helper holds a write OFD lock, as tapd does on a leaf it serves.
python3 - d.vhd >"$T/lock.out" <<'EOF' &
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
print('locked', flush=True)
time.sleep(60)
EOF
LOCKER=$!
track_pid $LOCKER
for _ in $(seq 1 100); do grep -q locked "$T/lock.out" && break; sleep 0.05; done
grep -q locked "$T/lock.out" || fail "lock helper did not start"
expect 1 'd.vhd is in use' "$VHD" resize d.vhd 210M
expect 1 'd.vhd is in use' "$VHD" snapshot c2.vhd d.vhd
[ ! -e c2.vhd ] || fail "refused snapshot left a file"
expect 1 'd.vhd is in use' "$VHD" coalesce c.vhd
expect 0 'ok' "$VHD" check d.vhd
expect 0 'dynamic' "$VHD" query d.vhd
kill $LOCKER; wait $LOCKER 2>/dev/null || true
"$VHD" resize d.vhd 210M || fail "resize after the lock went away"

# --- usage ----------------------------------------------------------------
expect 2 'Usage:' "$VHD"
expect 0 'snapshot FILE PARENT' "$VHD" --help
expect 0 'block-size' "$VHD" create --help
expect 2 "unknown command 'frob'" "$VHD" frob
expect 2 "unknown option '--json'" "$VHD" create --json x.vhd 1M
expect 2 'missing arguments' "$VHD" create x.vhd
expect 2 'too many arguments' "$VHD" check a b
expect 2 "invalid size 'lots'" "$VHD" create x.vhd lots
expect 2 'needs a value' "$VHD" create x.vhd 1M --block-size
expect 1 'block size 3145728 must be a power of two' "$VHD" create --block-size 3M x.vhd 1G
expect 1 '2040 GiB' "$VHD" create x.vhd 3T
[ ! -e x.vhd ] || fail "failed create left x.vhd"
log "PASS"
