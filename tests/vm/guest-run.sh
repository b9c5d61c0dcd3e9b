#!/bin/bash
# Runs inside the guest (tapd-vm-run.service starts it from the share once
# the system is up): installs the tapd tree from /mnt/host/install, runs
# every test of the folders in /mnt/host/tests in the order of
# /mnt/host/folders, writes each one's status and logs into /mnt/host/out,
# and powers off. Written by tests/vm/run.sh into the share on every run.
H=/mnt/host
O=$H/out
mkdir -p "$O/logs"
exec >"$O/guest.log" 2>&1
set -u
TEST_TIMEOUT=$(cat "$H/test-timeout" 2>/dev/null || echo 300)

# Boot time as the guest saw it (kernel start to this script).
cut -d' ' -f1 /proc/uptime >"$O/boot-seconds"
uname -r >"$O/kernel"
systemd-analyze blame --no-pager 2>&1 | head -n 12

finish()
{
	sync
	systemctl poweroff -ff
}

# infra MESSAGE: the rig itself failed; the host reports it and no test.
infra()
{
	echo "$*" >"$O/infra"
	echo "infra: $*"
	finish
	exit 1
}

# --- install tapd the way `make install` laid it out (/lib is a symlink on
# bookworm: tar keeps it, cp -a would try to replace it).
[ -d "$H/install" ] || infra "no install tree in the share"
tar -C "$H/install" -c . | tar -C / -x --keep-directory-symlink ||
	infra "installing the tree failed"
ldconfig
tapd=$(PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH command -v tapd) || infra "tapd not installed by the tree"
missing=$(ldd "$tapd" "$(PATH=/usr/local/bin:$PATH command -v tapctl)" 2>&1 | grep 'not found' | sort -u)
[ -z "$missing" ] || infra "libraries missing in the guest image (add their package to tests/vm/image.conf): $missing"
systemctl daemon-reload
systemd-tmpfiles --create >/dev/null 2>&1 || true
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig ||
	infra "dbus-daemon did not reload its configuration"

# --- the tests: a private copy, so a test cannot change the share's
cp -a "$H/tests" /root/tests || infra "cannot copy the tests"
: >"$O/results"
: >"$O/measures"
export TAPD_VM=1 TAPD_VM_OUT=$O TAPD_VM_MEASURES=$O/measures
while read -r folder; do
	for t in /root/tests/"$folder"/*.sh; do
		[ -f "$t" ] || continue
		name=$folder/$(basename "$t" .sh)
		flat=${name//\//__}
		# Every test starts with tapd stopped and nothing left failed.
		systemctl stop tapd.service >/dev/null 2>&1
		systemctl reset-failed tapd.service >/dev/null 2>&1
		echo "=== $name"
		t0=$(date +%s.%N)
		since=$(date '+%Y-%m-%d %H:%M:%S')
		rc=0
		(cd /root/tests/"$folder" && TEST_NAME=$name timeout -k 10 "$TEST_TIMEOUT" bash "$t") \
			>"$O/logs/$flat.log" 2>&1 </dev/null || rc=$?
		secs=$(echo "$(date +%s.%N) $t0" | awk '{ printf "%.1f", $1 - $2 }')
		[ $rc = 124 ] && echo "(killed after ${TEST_TIMEOUT} s)" >>"$O/logs/$flat.log"
		if [ $rc != 0 ] && [ $rc != 77 ]; then
			journalctl --no-pager -o short-monotonic --since "$since" -u tapd.service -u dbus.service \
				>"$O/logs/$flat.journal" 2>&1
			journalctl --no-pager -o short-monotonic --since "$since" \
				>"$O/logs/$flat.journal-all" 2>&1
		fi
		echo "$name $rc $secs" >>"$O/results"
		sync
	done
done <"$H/folders"
echo finished >"$O/done"
finish
