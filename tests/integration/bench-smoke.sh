#!/bin/bash
# Smoke run of bench/nbd --quick (a second per run, tmpfs only) against the
# build under test: it must finish, print a full table, and leave no server
# or mount behind. Performance numbers are not asserted: that is what the
# benchmark itself is for.
. "$(dirname "$0")/lib.sh"
need fio qemu-nbd nbdkit python3 dbus-daemon
[ "$(id -u)" = 0 ] || skip "bench/nbd needs root (it mounts a tmpfs)"
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
nbdkit file --version >/dev/null 2>&1 || skip "nbdkit has no file plugin"

JOBS="randread-4k randwrite-4k randread-64k seqread-1m seqwrite-1m randread-4k-4conn"
SERVERS="tapd qemu-nbd nbdkit"

# The bench makes its temp dir under TMPDIR: inside $T, so that anything it
# leaves behind (a process whose command line names its sockets, a mount, a
# folder) is ours to find.
rc=0
(cd "$T" && TMPDIR=$T "$TOP_SRCDIR/bench/nbd" --quick --tapd-build "$TOP_BUILDDIR" \
	--json "$T/bench.json") >"$T/bench.out" 2>"$T/bench.err" || rc=$?
cat "$T/bench.out" >&2
[ $rc = 0 ] || { tail -n 40 "$T/bench.err" >&2; fail "bench/nbd --quick exited $rc"; }

# Nothing left running or mounted, and its temp dir is gone.
for p in /proc/[0-9]*; do
	cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
	if [[ $cmd == *"$T/tapd-bench."* ]]; then
		fail "left a process behind: $cmd"
	fi
done
! findmnt -rno TARGET | grep -qF "$T/" || fail "left a mount behind: $(findmnt -rno TARGET | grep -F "$T/")"
! ls -d "$T"/tapd-bench.* >/dev/null 2>&1 || fail "left its temp dir behind"

# The table: the tmpfs section has a row per job with the four figures
# (IOPS, MB/s, p99, CPU-s/GiB) of each server as numbers.
grep -q '^tmpfs backing' "$T/bench.out" || fail "no tmpfs table"
sed -n '/^tmpfs backing/,/^$/p' "$T/bench.out" >"$T/table"
grep -q '^job ' "$T/table" || fail "no table header"
for s in $SERVERS; do
	grep -B1 -m1 '^job ' "$T/table" | grep -qw -- "$s" || fail "no column for $s"
done
for j in $JOBS; do
	row=$(grep -m1 "^$j " "$T/table") || fail "no row for $j"
	# shellcheck disable=SC2046
	set -- $(printf '%s\n' "$row" | tr '|' ' ')
	shift
	for s in $SERVERS; do
		for _ in 1 2 3 4; do
			[[ ${1:-} =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
				fail "$j: $s has '${1:-}' where a number belongs: $row"
			shift
		done
	done
	# Then tapd's ratios to the best peer, e.g. "1.23x".
	[[ ${1:-} =~ ^[0-9]+\.[0-9]+x$ ]] || fail "$j: no ratio to the best peer: $row"
done

# The raw results: every job ran on every server and moved data (a run
# that moved nothing would make every number above meaningless).
python3 - "$T/bench.json" "$JOBS" "$SERVERS" <<'EOF' || fail "bench JSON incomplete"
import json, sys
doc = json.load(open(sys.argv[1]))
runs = {(r["job"], r["server"]): r for r in doc["runs"]}
bad = [(j, s) for j in sys.argv[2].split() for s in sys.argv[3].split()
       if not runs.get((j, s), {}).get("ok") or not runs[(j, s)]["io_bytes"]]
if bad:
    sys.exit("missing or failed runs: %s" % bad)
EOF
log "PASS"
