#!/usr/bin/env bash
# The files we install for systemd and D-Bus are valid: systemd-analyze
# verify accepts tapd.service (with its man pages found), dbus-daemon loads
# our policy, the activation and tmpfiles entries parse, and `make install`
# puts everything where systemd and dbus look for it.
. "$(dirname "$0")/lib.sh"

need systemd-analyze xmllint python3 dbus-daemon systemd-tmpfiles
[ -x "$TAPD" ] || fail "$TAPD not built"

# --- tapd.service, pointing at the binary we just built
mkdir -p "$T/units" "$T/man/man8"
sed -e "s|@sbindir@|$TOP_BUILDDIR/src|g" "$TOP_SRCDIR/units/tapd.service.in" >"$T/units/tapd.service"
grep -q "^ExecStart=$TOP_BUILDDIR/src/tapd " "$T/units/tapd.service" || fail "ExecStart not substituted"
[ -f "$TOP_BUILDDIR/units/tapd.service" ] || fail "units/tapd.service not built"
grep -q "@[a-z_]*@" "$TOP_BUILDDIR/units/tapd.service" && fail "build's tapd.service still has @...@ in it"

# Documentation=man:... is checked too: point man at our pages.
ln -s "$TOP_SRCDIR/man/tapd.8" "$T/man/man8/tapd.8"
ln -s "$TOP_SRCDIR/man/tapctl.8" "$T/man/man8/tapctl.8"
man_opt=--man=yes
command -v man >/dev/null 2>&1 || man_opt=--man=no
rc=0
MANPATH=$T/man systemd-analyze verify "$man_opt" "$T/units/tapd.service" >"$T/verify.out" 2>&1 || rc=$?
cat "$T/verify.out" >&2
[ $rc -eq 0 ] || fail "systemd-analyze verify exited $rc"
if grep -F tapd.service "$T/verify.out"; then
	fail "systemd-analyze verify complained about tapd.service"
fi
for key in Type=notify NotifyAccess=main BusName=org.xenproject.Tapd1 WatchdogSec= \
	   Restart=on-failure LimitMEMLOCK=infinity OOMScoreAdjust=-1000 RuntimeDirectory=tapd; do
	grep -q "^$key" "$T/units/tapd.service" || fail "tapd.service lacks $key"
done

# Hardening must not regress silently (systemd 252 scores 0 safe .. 10
# unsafe): at most 4.0, and every exposure left is named, as
# systemd-analyze prints it, in a comment of the unit saying why (the VM
# test tests/vm/systemd/security.sh checks the same of the installed unit).
if systemd-analyze security --offline=yes "$T/units/tapd.service" >"$T/security.out" 2>&1; then
	score=$(sed -n 's/.*Overall exposure level for tapd.service: \([0-9.]*\).*/\1/p' "$T/security.out")
	log "systemd-analyze security: exposure $score"
	[ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 4.0) }' ||
		fail "exposure level '$score' above 4.0: $(cat "$T/security.out")"
	grep '^#' "$T/units/tapd.service" >"$T/comments"
	while read -r setting; do
		grep -qF -- "$setting" "$T/comments" || fail "exposure $setting not explained in tapd.service.in"
	done < <(sed -n 's/^✗ \([^ ]*\) .*/\1/p' "$T/security.out")
fi

# --- D-Bus policy: well-formed XML, and a real dbus-daemon accepts it.
xmllint --noout --nonet "$TOP_SRCDIR/units/org.xenproject.Tapd1.conf" || fail "policy is not well-formed XML"
grep -q 'own="org.xenproject.Tapd1"' "$TOP_SRCDIR/units/org.xenproject.Tapd1.conf" ||
	fail "policy does not let anyone own org.xenproject.Tapd1"
start_bus
dbus-send --bus="$DBUS_SYSTEM_BUS_ADDRESS" --print-reply --dest=org.freedesktop.DBus \
	/org/freedesktop/DBus org.freedesktop.DBus.GetId >/dev/null || fail "bus with our policy does not answer"

# --- D-Bus activation file
python3 - "$TOP_SRCDIR/units/org.xenproject.Tapd1.service" <<'PY' || fail "bad D-Bus activation file"
import configparser, sys
c = configparser.ConfigParser(interpolation=None)
c.optionxform = str
c.read_file(open(sys.argv[1]))
s = c["D-BUS Service"]
assert s["Name"] == "org.xenproject.Tapd1", s["Name"]
assert s["SystemdService"] == "tapd.service", s["SystemdService"]
assert s["Exec"].startswith("/"), s["Exec"]
PY

# --- tmpfiles.d entry creates the state directory
systemd-tmpfiles --root="$T/root" --create "$TOP_SRCDIR/units/tapd.tmpfiles" || fail "systemd-tmpfiles rejected tapd.tmpfiles"
[ -d "$T/root/run/tapd" ] || fail "tmpfiles did not create /run/tapd"
[ "$(stat -c %a "$T/root/run/tapd")" = 755 ] || fail "/run/tapd mode is not 755"

# --- make install lays things out where systemd and dbus look
env -u MAKEFLAGS -u MFLAGS make -s -C "$TOP_BUILDDIR" install DESTDIR="$T/inst" >"$T/install.out" 2>&1 ||
	{ cat "$T/install.out" >&2; fail "make install failed"; }
for f in sbin/tapd bin/tapctl share/dbus-1/system.d/org.xenproject.Tapd1.conf \
	 share/dbus-1/system-services/org.xenproject.Tapd1.service lib/tmpfiles.d/tapd.conf \
	 share/man/man8/tapd.8 share/man/man8/tapctl.8; do
	[ -n "$(find "$T/inst" -path "*/$f" -print -quit)" ] || fail "make install did not install */$f"
done
unit=$(find "$T/inst" -path '*/system/tapd.service' -print -quit)
[ -n "$unit" ] || fail "make install did not install tapd.service"
exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[ -x "$T/inst$exec_path" ] || fail "installed unit runs $exec_path, which make install did not install"
log "ok: unit, policy, activation, tmpfiles and install layout"
