#!/bin/bash
# Loops and depth in stacks of taps (issue 10, defect 1). A tap reading
# through another (a tap: image, or --parent under a vhd child) must never
# end up reading through itself: the unpause that would close the circle
# (A on tap:B while B reads A; A on tap:A; a vhd parent tap on its own
# child) is refused with BadImage and a message naming the taps, A stays
# paused and unpauses on its own image. Stacks deeper than 16 taps are
# refused, also when the unpause of a bottom tap would deepen the stacks
# above it. A tap: image in its parent's pool is refused, at create and by
# set-pool (the leaves could starve the parent). Through all of it stats
# answers (before the fix it spun tapd forever), reads return the parent's
# bytes, and SIGTERM stops tapd cleanly.
. "$(dirname "$0")/lib.sh"
need qemu-io
start_bus
start_tapd

E=org.xenproject.Tapd1.Error
R=/org/xenproject/Tapd1
minor() { tapctl list --json | grep "\"name\": \"$1\"" | sed 's/.*"minor": \([0-9]*\).*/\1/'; }
# qread TAP PATTERN: the first MiB of TAP reads as PATTERN over NBD.
qread() {
	qemu-io -f raw -r -c "read -P $2 0 1M" "$(nbd_uri "$1")" >"$T/qio.out" 2>&1 ||
		fail "read $2 from $1: $(cat "$T/qio.out")"
}

truncate -s 8M "$T/a.raw"
tapctl create --name A "raw:$T/a.raw" >/dev/null
qemu-io -f raw -c 'write -P 0x5a 0 1M' "$(nbd_uri A)" >/dev/null || fail "write A"
tapctl pool-create p2 4M >/dev/null
tapctl create --name B --pool p2 tap:A >/dev/null || fail "create B on tap:A"
qread B 0x5a

# ---- the repro of the issue: A on tap:B while B reads through A ------------
tapctl pause A
expect 1 "loop.*A -> B -> A" tapctl unpause A tap:B
errname $E.BadImage "$R/tap/$(minor A)" org.xenproject.Tapd1.Tap.Unpause tap:B
[ "$(tap_state A)" = paused ] || fail "A is $(tap_state A) after a refused unpause"
# Answers at once (before the fix: tapd spun in tap_get_stats for good).
timeout 10 "$TAPCTL" stats B >/dev/null || fail "stats B did not answer"
# A tap on itself, by name and by minor.
expect 1 "loop.*A -> A" tapctl unpause A tap:A
expect 1 "loop" tapctl unpause A "tap:$(minor A)"
tapctl unpause A || fail "A did not unpause on its own image"
qread B 0x5a
tapctl stats --json B | grep -q '"chain_depth": 2' || fail "B's chain: $(tapctl stats --json B)"

# ---- a tap: image in its parent's pool --------------------------------------
expect 1 "different pools" tapctl create --name C tap:A
errname $E.BadImage $R org.xenproject.Tapd1.Manager.CreateTap tap:A '{}'
expect 1 "different pools" tapctl set-pool B default
expect 1 "different pools" tapctl set-pool A p2
errname org.freedesktop.DBus.Error.InvalidArgs "$R/tap/$(minor B)" org.xenproject.Tapd1.Tap.SetPool default

# ---- --parent: a vhd child served by its parent's tap ----------------------
VHD=$TOP_BUILDDIR/tools/tapd-vhd
"$VHD" create "$T/gold.vhd" 8M >/dev/null
"$VHD" snapshot "$T/child.vhd" "$T/gold.vhd" >/dev/null
tapctl create --name G --read-only "vhd:$T/gold.vhd" >/dev/null
tapctl create --name K --pool p2 --parent G "vhd:$T/child.vhd" >/dev/null || fail "create K"
tapctl pause G
expect 1 "loop.*G -> K -> G" tapctl unpause G tap:K
tapctl unpause G || fail "G did not unpause"
qemu-io -f raw -r -c 'read -P 0 0 64k' "$(nbd_uri K)" >/dev/null || fail "read through K"
tapctl destroy K
tapctl destroy G

# ---- a pool again further down a stack --------------------------------------
# C (default) over B (p2) over A (default): C's requests could hold all of
# default waiting for A's, which need one. The same when crossing stacks:
# Y1 (cx) reads through Q2 (cy), Y2 (cy) would read through Q1 (cx).
# Refused at create, unpause and set-pool; a third pool is fine.
expect 1 "would make pool 'default' wait on itself" tapctl create --name C tap:B
tapctl pool-create cx 1M >/dev/null
tapctl pool-create cy 1M >/dev/null
tapctl pool-create cz 1M >/dev/null
tapctl create --name Q1 --pool cx ram:1M >/dev/null
tapctl create --name Q2 --pool cy ram:1M >/dev/null
tapctl create --name Y1 --pool cx tap:Q2 >/dev/null || fail "create Y1 over Q2"
expect 1 "wait on itself" tapctl create --name Y2 --pool cy tap:Q1
tapctl create --name Y2 --pool cz tap:Q1 >/dev/null || fail "Y2 in a third pool"
expect 1 "wait on itself" tapctl set-pool Y2 cy
tapctl create --name Z --pool cy ram:1M >/dev/null
tapctl pause Z
expect 1 "wait on itself" tapctl unpause Z tap:Y1
[ "$(tap_state Z)" = paused ] || fail "Z is $(tap_state Z) after the refused unpause"
tapctl unpause Z || fail "unpause Z"
for n in Z Y1 Y2 Q1 Q2; do tapctl destroy $n; done

# ---- depth: 16 taps in a stack, not 17 --------------------------------------
# Each level in a pool of its own.
for i in $(seq 1 17); do tapctl pool-create "l$i" 1M >/dev/null; done
tapctl create --name s1 --pool l1 ram:1M >/dev/null
for i in $(seq 2 16); do
	tapctl create --name "s$i" --pool "l$i" "tap:s$((i - 1))" >/dev/null ||
		fail "create s$i: a stack of $i taps was refused"
done
tapctl stats --json s16 | grep -q '"chain_depth": 16' || fail "s16: $(tapctl stats --json s16)"
expect 1 "deeper than 16" tapctl create --name s17 --pool l17 tap:s16
# The bottom tap unpaused on a stack of two would make 18.
tapctl pool-create p1 1M >/dev/null
tapctl create --name x1 --pool p1 ram:1M >/dev/null
tapctl create --name x2 --pool p2 tap:x1 >/dev/null
tapctl pause s1
expect 1 "deeper than 16" tapctl unpause s1 tap:x2
tapctl unpause s1
for i in $(seq 16 -1 1); do tapctl destroy "s$i"; done

# Through tapd's own NBD socket, a tap would read through tapd itself (and
# through itself, once unpaused onto its own export): refused, tap: is the
# way. x1 goes on serving.
expect 1 "this tapd's own NBD socket" tapctl create --name self "nbd:$(nbd_uri x1)"
tapctl pause x1
expect 1 "this tapd's own NBD socket" tapctl unpause x1 "nbd:$(nbd_uri x1)"
[ "$(tap_state x1)" = paused ] || fail "x1 is $(tap_state x1) after the refused unpause"
tapctl unpause x1 || fail "unpause x1"

# Still answering, and a clean stop.
tapctl list >/dev/null || fail "list"
stop_tapd || fail "tapd did not stop cleanly on SIGTERM"
log "ok"
