#!/bin/bash
# `systemd-analyze security tapd.service` rates the installed unit at most
# 4.0, and every exposure left (each line marked ✗) is named in a comment of
# the unit that says why it stays.
. "$(dirname "$0")/../lib.sh"
need systemd-analyze

systemd-analyze security --no-pager tapd.service >"$T/sec" 2>&1 || fail "systemd-analyze security: $(cat "$T/sec")"
score=$(sed -n 's/.*Overall exposure level for tapd.service: \([0-9.]*\).*/\1/p' "$T/sec")
[ -n "$score" ] || fail "no exposure level in: $(cat "$T/sec")"
measure "systemd-analyze security exposure" "$score"
grep '^✗' "$T/sec" >&2 || true
awk -v s="$score" 'BEGIN { exit !(s <= 4.0) }' || { cat "$T/sec" >&2; fail "exposure $score above 4.0"; }

unit=$(systemctl show -P FragmentPath "$UNIT")
grep '^#' "$unit" >"$T/comments"
missing=
while read -r setting; do
	grep -qF -- "$setting" "$T/comments" || missing="$missing $setting"
done < <(sed -n 's/^✗ \([^ ]*\) .*/\1/p' "$T/sec")
[ -z "$missing" ] || fail "exposures not explained in $unit:$missing"
log "ok: exposure $score, $(grep -c '^✗' "$T/sec" || true) exposures, each explained"
