#!/bin/bash
# tapctl usage errors: exit 2 with a usage line, before touching the bus
# (no daemon runs here, so a try to connect would show up as exit 1).
. "$(dirname "$0")/lib.sh"

# No bus at this address: any command that got past parsing would fail with 1.
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$T/no-bus.sock"

# usage RC REGEX ARGS...: tapctl ARGS exits RC and stderr matches REGEX.
usage() {
	local want=$1 pat=$2 rc=0
	shift 2
	tapctl "$@" >"$T/out" 2>"$T/err" || rc=$?
	[ "$rc" = "$want" ] || fail "tapctl $*: exit $rc, expected $want; stderr: $(cat "$T/err")"
	grep -qE -- "$pat" "$T/err" || fail "tapctl $*: stderr lacks /$pat/: $(cat "$T/err")"
}

usage 2 'no command.*' 
grep -q '^usage: tapctl' "$T/err" || fail "no usage line without arguments"
usage 2 "unknown command 'frobnicate'" frobnicate
usage 2 "unknown option '--frob'" --frob list
usage 2 "option '--bus' needs an argument" --bus
usage 2 'missing argument' create
grep -q '^usage: tapctl create \[--name NAME\]' "$T/err" || fail "create: no usage line: $(cat "$T/err")"
usage 2 "option '--name' needs an argument" create ram:1M --name
usage 2 "unknown option '--json'" create --json ram:1M
usage 2 "unexpected argument 'extra'" create ram:1M extra
usage 2 'missing argument' destroy
usage 2 'missing argument' stats --json
usage 2 "unknown option '--read-only'" list --read-only
usage 2 "unexpected argument 'x'" list x
usage 2 'missing argument' pool-create onlyname
usage 2 "bad size '12Q'" pool-create p 12Q
usage 2 "bad size 'abc'" pool-resize p abc
usage 2 "bad size '-1M'" pool-resize p -- -1M
usage 2 "unknown option '-1'" pool-resize p -1M
usage 2 'greater than 0' pool-create p 0
usage 2 "bad size|ERANGE" pool-create p 99999999999999G
usage 2 'missing argument' pool-destroy
usage 2 'empty argument' create ''
usage 2 'missing argument' pause
usage 2 "unexpected argument 'extra'" pause disk extra
usage 2 "unknown option '--json'" pause --json disk
usage 2 'missing argument' unpause
grep -q '^usage: tapctl unpause NAME|MINOR \[IMAGE\]' "$T/err" ||
	fail "unpause: no usage line: $(cat "$T/err")"
usage 2 "unexpected argument 'raw:/b'" unpause disk raw:/a raw:/b
usage 2 'empty argument' unpause disk ''
# QoS, pool moves and top.
usage 2 "bad value '-1' for --qos-iops" create --qos-iops -1 null:1M
usage 2 "bad value '1x' for --qos-bps" create --qos-bps 1x null:1M
usage 2 "option '--parent' needs an argument" create null:1M --parent
usage 2 "unknown option '--iops'" create --iops 5 null:1M
usage 2 'missing argument' set-pool disk
usage 2 "unexpected argument 'c'" set-pool disk p c
usage 2 'missing argument' qos --iops 5
usage 2 "bad value '' for --iops" qos disk --iops ''
usage 2 "bad value '\+5' for --iops" qos disk --iops +5
usage 2 "bad value ' 5' for --iops" qos disk --iops ' 5'
usage 2 "bad value '5k' for --iops" qos disk --iops 5k
usage 2 "bad value '18446744073709551616' for --iops" qos disk --iops 18446744073709551616
usage 2 "bad value '-0' for --bps" qos disk --bps -0
usage 2 "unknown option '--qos-iops'" qos disk --qos-iops 5
usage 2 'missing argument' pool-qos
usage 2 "bad value 'lots' for --bps" pool-qos p --bps lots
usage 2 "unexpected argument 'x'" top x
usage 2 "bad value '0' for --iterations" top --iterations 0
usage 2 "bad value 'two' for --iterations" top --iterations two
usage 2 "unknown option '--json'" top --json
grep -q '^usage: tapctl top \[--iterations N | --once\]' "$T/err" || fail "top: no usage line"
# Kernel devices.
usage 2 'missing argument' attach
grep -q '^usage: tapctl attach NAME|MINOR \[--kind fuse|ublk|nbd\]' "$T/err" ||
	fail "attach: no usage line: $(cat "$T/err")"
usage 2 "option '--kind' needs an argument" attach disk --kind
usage 2 "unknown option '--force'" attach disk --force
usage 2 "unexpected argument 'x'" attach disk x
usage 2 'empty argument' attach ''
usage 2 'missing argument' detach --force
usage 2 "unknown option '--kind'" detach disk --kind fuse
usage 2 "unexpected argument 'x'" detach disk x

# Help and version go to stdout and succeed, also without a daemon.
tapctl --help >"$T/out" || fail "--help failed"
grep -q 'pool-create NAME SIZE' "$T/out" || fail "--help lacks the commands"
grep -q 'unpause NAME|MINOR \[IMAGE\]' "$T/out" || fail "--help lacks unpause"
for c in 'set-pool NAME|MINOR POOL' 'qos \[--json\] NAME|MINOR' 'pool-qos \[--json\] POOL' 'top \[' \
	'attach NAME|MINOR \[--kind' 'detach NAME|MINOR \[--force\]'; do
	grep -q "^  $c" "$T/out" || fail "--help lacks $c"
done
tapctl -h | grep -q '^usage:' || fail "-h failed"
tapctl help | grep -q 'stats' || fail "tapctl help failed"
tapctl create --help | grep -q 'usage: tapctl create' || fail "create --help failed"
tapctl --version | grep -q '^tapctl ' || fail "--version failed"

# A well-formed command with no bus reachable is a refusal (1), not a usage error.
rc=0
tapctl list 2>"$T/err" || rc=$?
[ $rc = 1 ] || fail "list without a bus: exit $rc, expected 1"
grep -q '^tapctl: ' "$T/err" || fail "list without a bus: no message"
for cmd in "pause disk" "unpause disk" "unpause disk raw:/x" "set-pool disk p" "qos disk" \
	"qos disk --iops 0" "pool-qos p --bps 1M" "top --once" "attach disk" \
	"attach disk --kind fuse" "detach disk" "detach --force disk"; do
	rc=0
	# shellcheck disable=SC2086 # the words are the arguments
	tapctl $cmd 2>"$T/err" || rc=$?
	[ $rc = 1 ] || fail "$cmd without a bus: exit $rc, expected 1"
done
rc=0
tapctl --bus "unix:path=$T/nowhere" list 2>"$T/err" || rc=$?
[ $rc = 1 ] || fail "--bus to nowhere: exit $rc, expected 1"
grep -q "$T/nowhere" "$T/err" || fail "--bus to nowhere: message does not name the bus: $(cat "$T/err")"
exit 0
