# The Debian 12 packages tapd needs to build, test and run: one list, sourced
# by tools/run and tools/check. Add a package here, nowhere else.
# shellcheck shell=bash

TAPD_DEPS=(
	# build
	build-essential autoconf automake libtool pkg-config
	libevent-dev libaio-dev libsystemd-dev check libxen-dev libfuse3-dev fuse3
	libgnutls28-dev           # TLS on the NBD export
	liburing-dev              # the ublk device kind
	# test peers and tools
	qemu-utils libnbd-bin python3-libnbd nbdkit fio
	gnutls-bin                # certtool, psktool for the TLS tests
	dbus-daemon dbus-bin      # dbus-daemon; dbus-send
	systemd                   # systemd-analyze verify
	libxml2-utils             # xmllint for the D-Bus policy
	util-linux                # setpriv, findmnt
	e2fsprogs                 # mkfs.ext4 for the ENOSPC test
	valgrind socat
	libvhdi-utils             # vhdiinfo, vhdimount: a second VHD reader
	clang libclang-rt-14-dev  # libFuzzer for tests/fuzz
	# the VM rig (tests/vm): a TCG guest, its image built by debootstrap
	qemu-system-x86 debootstrap
)

# Install whatever in TAPD_DEPS is missing; apt-get update only if needed.
deps_install()
{
	local missing=() p

	for p in "${TAPD_DEPS[@]}"; do
		if [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]; then
			missing+=("$p")
		fi
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "Installing missing packages: ${missing[*]}" >&2
	if [ "$(id -u)" -ne 0 ]; then
		echo "error: not root; install them with: apt-get install ${missing[*]}" >&2
		return 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
