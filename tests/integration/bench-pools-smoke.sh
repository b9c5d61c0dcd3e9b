#!/bin/bash
# Smoke run of bench/pools --quick (a second per run) against the build
# under test: it must finish, print every isolation and QoS row with its
# numbers and ratio, and leave no process or temp dir behind. Performance
# is not asserted: 1 s runs are noise, and the benchmark is for numbers.
. "$(dirname "$0")/lib.sh"
need fio nbdkit python3 dbus-daemon
[ "$(id -u)" = 0 ] || skip "bench/pools needs root"
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
nbdkit memory --version >/dev/null 2>&1 || skip "nbdkit has no memory plugin"
nbdkit --filter=delay memory --version >/dev/null 2>&1 || skip "nbdkit has no delay filter"

ISO_ROWS="separate/randread-4k separate/randwrite-64k control/randread-4k control/randwrite-64k
shared/randread-4k shared/randwrite-64k"
QOS_ROWS="tap-iops-500:randread-4k tap-iops-5000:randread-4k tap-bps-20MB:randread-64k
pool-iops-2000:randread-4k pool-bps-20MB:randread-64k tap-bps-20MB-holes:randread-64k"

# The bench makes its temp dir under TMPDIR: inside $T, so that anything it
# leaves behind (a process whose command line names its sockets, a folder)
# is ours to find.
rc=0
(cd "$T" && TMPDIR=$T "$TOP_SRCDIR/bench/pools" --quick --tapd-build "$TOP_BUILDDIR" \
	--json "$T/bench.json") >"$T/bench.out" 2>"$T/bench.err" || rc=$?
cat "$T/bench.out" >&2
[ $rc = 0 ] || { tail -n 40 "$T/bench.err" >&2; fail "bench/pools --quick exited $rc"; }

# Nothing left running, and its temp dir is gone.
for p in /proc/[0-9]*; do
	cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
	if [[ $cmd == *"$T/tapd-pools."* ]]; then
		fail "left a process behind: $cmd"
	fi
done
! ls -d "$T"/tapd-pools.* >/dev/null 2>&1 || fail "left its temp dir behind"

num='^[0-9]+(\.[0-9]+)?$'
# Isolation rows: alone IOPS and MB/s, loaded IOPS and MB/s, the slow
# tap's IOPS, then the ratio ("0.97x").
for r in $ISO_ROWS; do
	row=$(grep -m1 -F "$r " "$T/bench.out") || fail "no row for $r"
	# shellcheck disable=SC2086
	set -- $row
	shift
	for f in "alone IOPS" "alone MB/s" "loaded IOPS" "loaded MB/s" "slow IOPS"; do
		[[ ${1:-} =~ $num ]] || fail "$r: '${1:-}' where $f belongs: $row"
		shift
	done
	[[ ${1:-} =~ ^[0-9]+\.[0-9]+x$ ]] || fail "$r: no ratio: $row"
done
# QoS rows: the limit and the measured rate, each with its unit, then
# the per-tap split, the ratio and the target.
for r in $QOS_ROWS; do
	row=$(grep -m1 -F "$r " "$T/bench.out") || fail "no row for $r"
	# shellcheck disable=SC2086
	set -- $row
	[[ ${2:-} =~ $num ]] && [[ ${3:-} =~ ^(IOPS|MB/s)$ ]] || fail "$r: no limit: $row"
	[[ ${4:-} =~ $num ]] && [ "${5:-}" = "$3" ] || fail "$r: no measured rate: $row"
	[[ ${7:-} =~ ^[0-9]+\.[0-9]+x$ ]] || fail "$r: no ratio: $row"
	# A pool limit is shared: the row shows both taps' shares.
	case $r in
	pool-*) [[ ${6:-} =~ ^[0-9]+\+[0-9]+$ ]] || fail "$r: no per-tap split: $row" ;;
	esac
done

# The JSON: every run moved data, every loaded run saw the slow tap busy,
# and each summary row has its ratio.
python3 - "$T/bench.json" "$ISO_ROWS" "$QOS_ROWS" <<'EOF' || fail "bench JSON incomplete"
import json, sys
doc = json.load(open(sys.argv[1]))
bad = [r for r in doc["runs"] if not r["ok"] or not r["io_bytes"]]
if bad:
    sys.exit("failed runs: %s" % bad)
idle = [r["case"] for r in doc["runs"] if r["mode"] == "loaded" and not r.get("slow_iops")]
if idle:
    sys.exit("slow tap did no I/O during: %s" % idle)
iso = {r["case"]: r for r in doc["isolation"]}
qos = {r["case"]: r for r in doc["qos"]}
for name, rows, want in (("isolation", iso, sys.argv[2]), ("qos", qos, sys.argv[3])):
    for c in want.split():
        if rows.get(c, {}).get("ratio") is None:
            sys.exit("%s row %s has no ratio" % (name, c))
pool = qos["pool-iops-2000:randread-4k"]["per_tap"][0]
if len(pool) != 2 or not all(pool):
    sys.exit("pool QoS row did not drive both taps: %s" % pool)
for k in ("date", "host", "kernel", "cpus"):
    if not doc["meta"].get(k):
        sys.exit("meta lacks %s" % k)
EOF
log "PASS"
