#!/bin/bash
# The installed unit passes `systemd-analyze verify` with nothing to say
# about it (its man pages are found), and the system bus knows the
# activatable name and loaded the policy.
. "$(dirname "$0")/../lib.sh"
need systemd-analyze man

rc=0
systemd-analyze verify tapd.service >"$T/verify" 2>&1 || rc=$?
cat "$T/verify" >&2
[ $rc = 0 ] || fail "systemd-analyze verify exited $rc"
grep -i tapd "$T/verify" && fail "systemd-analyze verify complained about tapd"
man -w tapd.8 >/dev/null || fail "man tapd(8) not found"
man -w tapctl.8 >/dev/null || fail "man tapctl(8) not found"
unit=$(systemctl show -P FragmentPath "$UNIT")
exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[ -x "$exe" ] || fail "$unit runs $exe, which is not installed"
log "ok: $unit"
