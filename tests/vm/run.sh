#!/usr/bin/env bash
# Run test folders of tests/vm inside a QEMU guest (Debian, real systemd, the
# bookworm-backports kernel): install the build's `make install` tree into
# it, run every test of the folders in one boot, print a status per test and,
# for each failure, its output and tapd's journal. See tests/vm/README.md.
#
#   tests/vm/run.sh [OPTIONS] [FOLDER|TEST.sh]...
#     (no FOLDER: every folder of tests/vm that holds tests; a relative path
#     not found here is taken from the top of the source tree)
#   -B, --build-dir DIR   the configured and built tree to install (default build/)
#   --timeout S           QEMU's whole run, boot to power-off (default 900)
#   --test-timeout S      one test in the guest (default 300)
#   --keep                keep the work folder (share, console log) after a pass
#   --can-run             exit 0 if the rig can run here, else say why and exit 1
#
# Exit status: 0 every test passed or skipped, 1 a test failed, 2 the rig
# failed (no image, QEMU, no status from the guest: the console log is shown).
# The last line is "vm: N passed, N failed, N skipped (...)" for tools/check.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BUILD=$TOP/build
TIMEOUT=${TAPD_VM_TIMEOUT:-900}
TEST_TIMEOUT=${TAPD_VM_TEST_TIMEOUT:-300}
MEM=${TAPD_VM_MEM:-2048}
SMP=${TAPD_VM_SMP:-2}
CACHE=${TAPD_VM_CACHE:-/var/cache/tapd-vm}
keep=
can_run=
args=()
while [ $# -gt 0 ]; do
	case $1 in
	-B|--build-dir) BUILD=$(cd "$2" && pwd); shift ;;
	--timeout) TIMEOUT=$2; shift ;;
	--test-timeout) TEST_TIMEOUT=$2; shift ;;
	--keep) keep=1 ;;
	--can-run) can_run=1 ;;
	-h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	-*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	*) args+=("$1") ;;
	esac
	shift
done

say() { printf 'vm: %s\n' "$*" >&2; }

# Why the rig cannot run here, or nothing: QEMU that can start a TCG machine,
# and an image, cached or buildable (root and debootstrap).
why_not()
{
	command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 not installed"; return; }
	if ! echo quit | timeout 30 qemu-system-x86_64 -accel tcg -machine pc -nodefaults -display none \
		-monitor stdio -S >/dev/null 2>&1; then
		echo "qemu-system-x86_64 cannot start a TCG machine here"
		return
	fi
	if [ ! -f "$CACHE/image-$("$HERE/image.sh" --print-key)/image.ext4" ]; then
		[ "$(id -u)" = 0 ] || { echo "no cached guest image and not root to build one"; return; }
		command -v debootstrap >/dev/null || { echo "debootstrap not installed to build the guest image"; return; }
	fi
}
reason=$(why_not)
if [ -n "$can_run" ]; then
	[ -z "$reason" ] && exit 0
	echo "$reason"
	exit 1
fi
if [ -n "$reason" ]; then
	say "cannot run: $reason"
	echo "vm: 0 passed, 0 failed, 0 skipped (not run: $reason)"
	exit 2
fi

# The tests: folders (every test in them) or single test files.
if [ ${#args[@]} -eq 0 ]; then
	for d in "$HERE"/*/; do
		ls "$d"*.sh >/dev/null 2>&1 && args+=("${d%/}")
	done
fi
[ ${#args[@]} -gt 0 ] || { say "no test folders"; exit 2; }
[ -x "$BUILD/src/tapd" ] || { say "$BUILD/src/tapd not built (make -C $BUILD first)"; exit 2; }

start=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tapd-vm.XXXXXX")
SHARE=$WORK/share
mkdir -p "$SHARE/tests" "$SHARE/out"
chmod 755 "$WORK"
finish() {
	local rc=$?
	if [ $rc = 0 ] && [ -z "$keep" ]; then
		rm -rf "$WORK"
	else
		say "work folder kept: $WORK (console.log, share/out/logs)"
	fi
	exit $rc
}
trap finish EXIT

cp "$HERE/guest-run.sh" "$SHARE/"
cp "$HERE/lib.sh" "$SHARE/tests/"
echo "$TEST_TIMEOUT" >"$SHARE/test-timeout"
: >"$SHARE/folders"
for a in "${args[@]}"; do
	# Paths as given, or from the top of the source tree (make -C build).
	[ -e "$a" ] || [ ! -e "$TOP/$a" ] || a=$TOP/$a
	if [ -d "$a" ]; then
		name=$(basename "$a")
		mkdir -p "$SHARE/tests/$name"
		cp -a "$a"/. "$SHARE/tests/$name/"
	elif [ -f "$a" ]; then
		name=$(basename "$(dirname "$(readlink -f "$a")")")
		mkdir -p "$SHARE/tests/$name"
		cp -a "$a" "$SHARE/tests/$name/"
	else
		say "no such test folder or file: $a"
		exit 2
	fi
	grep -qx "$name" "$SHARE/folders" || echo "$name" >>"$SHARE/folders"
done

# --- the image (cached, or built now) and tapd's install tree
t0=$(date +%s)
IMG=$("$HERE/image.sh") || { say "no guest image"; exit 2; }
t_image=$(( $(date +%s) - t0 ))
env -u MAKEFLAGS -u MFLAGS make -s -C "$BUILD" install DESTDIR="$SHARE/install" >"$WORK/install.log" 2>&1 ||
	{ cat "$WORK/install.log" >&2; say "make install failed"; exit 2; }

# --- one boot runs everything; a copy-on-write overlay keeps the image pristine
say "booting $(basename "$IMG") (TCG, $SMP CPUs, $MEM MiB) for: $(tr '\n' ' ' <"$SHARE/folders")"
t0=$(date +%s)
qrc=0
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
	-accel tcg -cpu max -smp "$SMP" -m "$MEM" \
	-nodefaults -no-user-config -display none -no-reboot \
	-serial "file:$WORK/console.log" \
	-kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 loglevel=4 panic=-1 tapd.vmtest=1" \
	-drive "file=$IMG/image.ext4,format=raw,if=virtio,snapshot=on" \
	-virtfs "local,path=$SHARE,mount_tag=host0,security_model=none" \
	>"$WORK/qemu.log" 2>&1 || qrc=$?
t_vm=$(( $(date +%s) - t0 ))
OUT=$SHARE/out

if [ ! -f "$OUT/done" ]; then
	if [ -f "$OUT/infra" ]; then
		say "the guest could not run the tests: $(cat "$OUT/infra")"
	elif [ $qrc = 124 ] || [ $qrc = 137 ]; then
		say "QEMU killed after $TIMEOUT s without a status from the guest"
	else
		say "the guest wrote no status (QEMU exit $qrc)"
	fi
	cat "$WORK/qemu.log" >&2
	say "--- console log ($WORK/console.log), last 150 lines"
	tail -n 150 "$WORK/console.log" >&2 || true
	[ -f "$OUT/guest.log" ] && { say "--- guest runner log"; tail -n 50 "$OUT/guest.log" >&2; }
	echo "vm: 0 passed, 0 failed, 0 skipped (rig failure, ${t_vm} s in QEMU)"
	exit 2
fi

pass=0 fail=0 skip=0
while read -r name rc secs; do
	flat=${name//\//__}
	case $rc in
	0) pass=$((pass + 1)); printf 'PASS %s (%s s)\n' "$name" "$secs" ;;
	77) skip=$((skip + 1)); printf 'SKIP %s (%s s): %s\n' "$name" "$secs" \
		"$(grep -m1 'SKIP' "$OUT/logs/$flat.log" | sed 's/.*SKIP: //')" ;;
	*)
		fail=$((fail + 1))
		printf 'FAIL %s (%s s, exit %s)\n' "$name" "$secs" "$rc"
		sed 's/^/  | /' "$OUT/logs/$flat.log"
		if [ -s "$OUT/logs/$flat.journal" ]; then
			echo "  --- journal of tapd.service and dbus.service during the test (all units: $OUT/logs/$flat.journal-all)"
			tail -n 80 "$OUT/logs/$flat.journal" | sed 's/^/  | /'
		fi
		;;
	esac
done <"$OUT/results"
if [ -s "$OUT/measures" ]; then
	echo "measured:"
	sed 's/^/  /' "$OUT/measures"
fi
boot=$(cat "$OUT/boot-seconds" 2>/dev/null || echo '?')
echo "vm: $pass passed, $fail failed, $skip skipped (kernel $(cat "$OUT/kernel"); image ${t_image} s, boot ${boot} s, QEMU ${t_vm} s, all $(( $(date +%s) - start )) s)"
[ $fail = 0 ]
