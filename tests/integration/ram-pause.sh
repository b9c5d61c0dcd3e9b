#!/bin/bash
# A pause keeps a ram: image (issue 10, defect 5): its contents live only
# in tapd, so closing it on pause, as files are closed, wiped the disk.
# Written and flushed data reads back after pause and unpause without an
# image, twice over and with the tap destroyed while paused; a ram tap
# serving a stacked tap keeps its bytes for the leaf through its own pause
# and the leaf's; an unpause on a new image string starts on that image
# (a new ram: is empty); null: pauses and unpauses as before.
. "$(dirname "$0")/lib.sh"
need qemu-io
start_bus
start_tapd

# qio TAP CMD: qemu-io runs CMD on TAP (a read -P that finds other bytes
# fails it).
qio() {
	qemu-io -f raw -c "$2" "$(nbd_uri "$1")" >"$T/qio.out" 2>&1 ||
		fail "$1: qemu-io '$2': $(cat "$T/qio.out")"
}

tapctl create --name r ram:8M >/dev/null
qio r 'write -P 0x3c 0 1M'
qio r 'write -P 0xc3 7M 1M'
qio r flush
for _ in 1 2; do
	tapctl pause r
	tapctl list --json | grep -q '"name": "r".*"state": "paused"' || fail "r not paused"
	tapctl stats --json r | grep -q '"chain_depth": 0' || fail "paused r: $(tapctl stats --json r)"
	tapctl unpause r
	qio r 'read -P 0x3c 0 1M'
	qio r 'read -P 0xc3 7M 1M'
	qio r 'read -P 0 1M 1M'
done
# A new image string is a new image: a new ram: disk is empty.
tapctl pause r
expect 1 "keeps its size" tapctl unpause r ram:4M
tapctl unpause r ram:8M
qio r 'read -P 0 0 1M'
# Destroyed while paused: nothing of it is left (valgrind sees leaks).
qio r 'write -P 0x11 0 64k'
tapctl pause r
tapctl destroy r

# A ram tap as the parent of a stacked one.
tapctl pool-create leaf 4M >/dev/null
tapctl create --name base ram:8M >/dev/null
qio base 'write -P 0x77 0 2M'
tapctl create --name top --pool leaf tap:base >/dev/null
qio top 'read -P 0x77 0 2M'
tapctl pause base
tapctl unpause base
qio top 'read -P 0x77 0 2M'
tapctl pause top
tapctl unpause top
qio top 'read -P 0x77 0 2M'
tapctl destroy top
tapctl destroy base

# null: has nothing to keep and pauses as it did.
tapctl create --name n null:8M >/dev/null
qio n 'write -P 0x99 0 1M'
tapctl pause n
tapctl unpause n
qio n 'read -P 0 0 1M'
tapctl destroy n
stop_tapd || fail "tapd did not stop cleanly on SIGTERM"
log "ok"
