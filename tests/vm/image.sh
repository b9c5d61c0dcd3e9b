#!/usr/bin/env bash
# Build, or find in the cache, the Debian guest image of the VM rig: a root
# file system with systemd, D-Bus, the bookworm-backports kernel (nbd and
# ublk_drv modules) and tapd's runtime libraries, plus the kernel and
# initramfs to boot it with. Prints the image's folder (image.ext4, vmlinuz,
# initrd.img) on stdout; progress goes to stderr.
#
#   tests/vm/image.sh [--rebuild] [--print-key]
#
# The cache is outside the checkout: $TAPD_VM_CACHE (default
# /var/cache/tapd-vm), one folder image-KEY per image, KEY a hash of this
# script and image.conf; building a new one removes the older ones. .deb files
# are kept in $TAPD_VM_CACHE/debs for the next build. Building needs root
# (debootstrap, chroot); using a cached image does not.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${TAPD_VM_CACHE:-/var/cache/tapd-vm}
rebuild=
print_key=
for arg in "$@"; do
	case $arg in
	--rebuild) rebuild=1 ;;
	--print-key) print_key=1 ;;
	-h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "image.sh: unknown option $arg" >&2; exit 2 ;;
	esac
done

# shellcheck source=tests/vm/image.conf
. "$HERE/image.conf"
KEY=$(cat "$HERE/image.sh" "$HERE/image.conf" | sha256sum | cut -c1-16)
if [ -n "$print_key" ]; then
	echo "$KEY"
	exit 0
fi
IMG=$CACHE/image-$KEY

say() { printf 'image.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

have_image() { [ -f "$IMG/image.ext4" ] && [ -f "$IMG/vmlinuz" ] && [ -f "$IMG/initrd.img" ]; }

if [ -z "$rebuild" ] && have_image; then
	echo "$IMG"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "building the guest image needs root (debootstrap, chroot); no cached image in $IMG"
for c in debootstrap mkfs.ext4 chroot findmnt flock; do
	command -v "$c" >/dev/null || die "$c not found (tools/deps.sh installs the rig's packages)"
done

mkdir -p "$CACHE/debs"
# One builder at a time; a second one waits and then finds the image.
exec 9>"$CACHE/lock"
flock 9
if [ -z "$rebuild" ] && have_image; then
	echo "$IMG"
	exit 0
fi

# The mirror the host uses (deb822 or one-line sources), else Debian's CDN.
host_mirror()
{
	local f
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -n -e 's/^URIs: *\(http[^ ]*\/debian\/\{0,1\}\)$/\1/p' \
		       -e 's/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\/debian\/\{0,1\}\) .*/\2/p' "$f"
	done | head -n1
}
MIRROR=${TAPD_VM_MIRROR:-$(host_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
MIRROR=${MIRROR%/}
SECURITY=${TAPD_VM_SECURITY_MIRROR:-${MIRROR}-security}

WORK=$CACHE/build-$KEY
ROOT=$WORK/root

# Unmount whatever the build mounted under ROOT; only then may it be removed.
unmount_root()
{
	local m
	for m in $(findmnt -rno TARGET 2>/dev/null | grep "^$ROOT/" | sort -r); do
		umount -l "$m" || true
	done
}
cleanup()
{
	unmount_root
	if findmnt -rno TARGET | grep -q "^$ROOT/"; then
		say "still mounted under $ROOT: not removing it"
		return
	fi
	rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

unmount_root
rm -rf --one-file-system "$WORK"
mkdir -p "$ROOT"
t0=$(date +%s)

say "debootstrap $SUITE from $MIRROR (about a minute)"
debootstrap --variant=minbase --cache-dir="$CACHE/debs" \
	--include="$(echo "$BASE_PACKAGES" | tr -s ' \t\n' ',' | sed 's/^,//; s/,$//')" \
	"$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
	{ tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
t1=$(date +%s)

# The chroot: the host's /dev, /proc, /sys, and the .deb cache.
mount -t proc proc "$ROOT/proc"
mount --bind /sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"

cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
deb $MIRROR $SUITE-backports main
EOF
# Mirrors may serve a dated snapshot; never pull recommends.
cat >"$ROOT/etc/apt/apt.conf.d/90tapd-vm" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

# A small initramfs: only what mounts the root and the share, zstd.
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
# shellcheck disable=SC2086 # a word list
printf '%s\n' $INITRAMFS_MODULES >"$ROOT/etc/initramfs-tools/modules"
printf 'MODULES=list\nCOMPRESS=zstd\n' >"$ROOT/etc/initramfs-tools/conf.d/tapd-vm.conf"

in_root() { chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
apt_install() {
	in_root apt-get install -y -q -o Dpkg::Options::=--force-confold -o Dpkg::Use-Pty=0 "$@"
}

say "installing packages (about a minute and a half)"
{
	in_root apt-get update -q
	# nbd-client's initramfs hooks would put it, and a root-on-NBD
	# script, into the initramfs: diverted away before it is installed.
	for f in hooks/nbd hooks/nbd-client scripts/local-top/nbd; do
		in_root dpkg-divert --local --rename --divert "/usr/share/initramfs-tools/$f.tapd-vm" \
			--add "/usr/share/initramfs-tools/$f"
	done
	echo 'man-db man-db/auto-update boolean false' | in_root debconf-set-selections
	apt_install initramfs-tools
	# shellcheck disable=SC2086 # word lists
	apt_install $GUEST_PACKAGES
	# shellcheck disable=SC2086
	apt_install -t "$SUITE-backports" $BACKPORTS_PACKAGES
} >"$WORK/packages.log" 2>&1 || { tail -n 40 "$WORK/packages.log" >&2; die "package install failed (log above)"; }
t2=$(date +%s)

# --- the guest's configuration
echo tapd-vm >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 tapd-vm\n' >"$ROOT/etc/hosts"
cat >"$ROOT/etc/fstab" <<'EOF'
/dev/vda / ext4 rw,errors=remount-ro 0 1
host0 /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
EOF
mkdir -p "$ROOT/mnt/host"
in_root passwd -d root >/dev/null
in_root systemctl set-default multi-user.target >/dev/null 2>&1
# Nothing periodic runs while tests do.
for t in "$ROOT"/lib/systemd/system/*.timer; do
	[ -e "$t" ] && in_root systemctl mask "$(basename "$t")" >/dev/null 2>&1
done
in_root systemctl mask systemd-timesyncd.service >/dev/null 2>&1 || true

# The runner: when the kernel command line says tapd.vmtest, run the
# share's guest-run.sh once the system is up. guest-run.sh comes with every
# run (not baked in), so changing it needs no new image; it powers off.
cat >"$ROOT/etc/systemd/system/tapd-vm-run.service" <<'EOF'
[Unit]
Description=tapd VM rig: run the tests in /mnt/host
ConditionKernelCommandLine=tapd.vmtest
After=multi-user.target
RequiresMountsFor=/mnt/host

[Service]
Type=oneshot
ExecStart=/bin/bash /mnt/host/guest-run.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable tapd-vm-run.service >/dev/null 2>&1

# Kernel and initramfs are booted directly by QEMU (-kernel, -initrd).
kver=$(ls "$ROOT/lib/modules" | sort -V | tail -n1)
[ -n "$kver" ] || die "no kernel installed"
for m in nbd ublk_drv; do
	find "$ROOT/lib/modules/$kver" -name "$m.ko*" | grep -q . || die "kernel $kver has no $m module"
done
cp "$ROOT/boot/vmlinuz-$kver" "$WORK/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$WORK/initrd.img"
rm -f "$ROOT/usr/sbin/policy-rc.d"

unmount_root
rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/var/cache/apt/archives/"*.deb
say "making the ext4 image ($IMAGE_SIZE, sparse)"
mkfs.ext4 -q -F -L tapd-vm -d "$ROOT" "$WORK/image.ext4" "$IMAGE_SIZE" >>"$WORK/packages.log" 2>&1 ||
	{ tail -n 20 "$WORK/packages.log" >&2; die "mkfs.ext4 -d failed"; }
t3=$(date +%s)

mkdir -p "$WORK/out"
mv "$WORK/image.ext4" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/debootstrap.log" "$WORK/packages.log" "$WORK/out/"
cat >"$WORK/out/build-times" <<EOF
kernel $kver
debootstrap $((t1 - t0)) s
packages $((t2 - t1)) s
image $((t3 - t2)) s
total $((t3 - t0)) s
EOF
rm -rf "$IMG"
mv "$WORK/out" "$IMG"
# Older images are of no use: their key no longer matches these files.
for old in "$CACHE"/image-*; do
	[ "$old" = "$IMG" ] || rm -rf --one-file-system "$old"
done
say "built $IMG in $((t3 - t0)) s (debootstrap $((t1 - t0)) s, packages $((t2 - t1)) s, image $((t3 - t2)) s), kernel $kver"
echo "$IMG"
