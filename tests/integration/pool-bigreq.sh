#!/bin/bash
# Requests larger than their pool (issue 10, defect 6): a pool bounds
# memory, never the size of a request. A tap on a 16M pool takes a 24M and
# a 32M (the advertised maximum) WRITE and READ, aligned or not, with
# simple and structured replies, and they read back right; a pool of a
# few pages still serves them, in pieces. fio 64k randrw with verify runs
# while its pool is shrunk to 4K under it and set-pool moves it to a 4K
# pool: no error, data verified; a tap on another pool keeps serving.
. "$(dirname "$0")/lib.sh"
need fio
need_libnbd
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
start_bus
start_tapd

# Slower under valgrind: less fio time is enough to cross the changes.
RUNTIME=8
[ -n "$TAPD_WRAPPER" ] && RUNTIME=20

# tap_errors TAP: the tap's error count.
tap_errors() { tapctl stats "$1" | awk '$1 == "errors" { print $2 }'; }

# bigio TAP IMAGE STRUCTURED OFF:LEN...: with libnbd, write fresh random
# bytes at each OFF:LEN in one request, read each back in one request and
# compare, and compare the image file itself. STRUCTURED 0 asks for
# simple replies. Prints "ok" per range.
bigio() {
	local tap=$1 img=$2 sr=$3
	shift 3
	/usr/bin/python3 - "$(nbd_uri "$tap")" "$img" "$sr" "$@" <<'EOF'
import os, sys, nbd
uri, img, sr = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
h = nbd.NBD()
h.set_request_structured_replies(sr)
h.connect_uri(uri)
assert h.get_structured_replies_negotiated() == sr, "structured replies"
maxb = h.get_block_size(nbd.SIZE_MAXIMUM)
for r in sys.argv[4:]:
    off, ln = (int(x) for x in r.split(":"))
    assert ln <= maxb, "request %d over the advertised %d" % (ln, maxb)
    data = os.urandom(ln)
    h.pwrite(data, off)
    got = h.pread(ln, off)
    assert got == data, "read back %s differs" % r
    if sr:
        # DF: the whole READ in one data chunk, pieces or not.
        chunks = []
        def chunk(sub, o, status, err):
            chunks.append((o, len(sub), status))
            return 0
        buf = h.pread_structured(ln, off, chunk, nbd.CMD_FLAG_DF)
        assert buf == data, "DF read back %s differs" % r
        assert len(chunks) == 1 and chunks[0][:2] == (off, ln) and \
            chunks[0][2] == nbd.READ_DATA, "DF read %s came in chunks %s" % (r, chunks[:4])
    with open(img, "rb") as f:
        f.seek(off)
        assert f.read(ln) == data, "image at %s differs" % r
    print("ok", r, flush=True)
h.shutdown()
EOF
}

M=$((1 << 20))
tapctl pool-create big 16M
tapctl pool-create other 8M
truncate -s 80M "$T/big.raw"
truncate -s 32M "$T/other.raw"
tapctl create --name big --pool big "raw:$T/big.raw" >/dev/null || fail "create big"
tapctl create --name other --pool other "raw:$T/other.raw" >/dev/null || fail "create other"

# ---- over a 16M pool: 24M, 32M, unaligned, both reply kinds -----------------
for sr in 1 0; do
	bigio big "$T/big.raw" $sr 0:$((24 * M)) $((40 * M)):$((32 * M)) \
		$((4096 * 3 + 517)):$((24 * M + 1001)) >"$T/out" 2>"$T/err" ||
		fail "big requests (structured=$sr): $(cat "$T/out" "$T/err")"
	[ "$(grep -c '^ok' "$T/out")" = 3 ] || fail "structured=$sr: $(cat "$T/out")"
done
[ "$(tap_errors big)" = 0 ] || fail "big counted errors: $(tapctl stats big)"
[ "$(pool_field big in_use)" = 0 ] || fail "big lent buffers it did not get back"
log "24M and 32M requests served over a 16M pool"

# ---- a pool of a few pages: every request in pieces -------------------------
tapctl pool-resize big 12K || fail "pool-resize big 12K"
bigio big "$T/big.raw" 1 $((4096 + 3)):$((3 * M + 5)) 0:$((4 * M)) >"$T/out" 2>"$T/err" ||
	fail "over a 12K pool: $(cat "$T/out" "$T/err")"
bigio big "$T/big.raw" 0 $((5 * M)):$((2 * M)) >"$T/out" 2>"$T/err" ||
	fail "over a 12K pool, simple replies: $(cat "$T/out" "$T/err")"
tapctl pool-resize big 4K || fail "pool-resize big 4K"
bigio big "$T/big.raw" 1 $((8 * M)):$((4 * M)) >"$T/out" 2>"$T/err" ||
	fail "over a 4K pool: $(cat "$T/out" "$T/err")"
[ "$(tap_errors big)" = 0 ] || fail "big counted errors: $(tapctl stats big)"
# A write with a partial page cannot go through one page (it needs two of
# scratch): a clear error, and the connection goes on.
/usr/bin/python3 - "$(nbd_uri big)" <<'EOF' || fail "partial-page write in a 4K pool"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"x" * 100, 4096 + 1)
    raise SystemExit("a partial-page write through a 4K pool succeeded")
except nbd.Error as e:
    assert "ENOMEM" in str(e), e
h.pwrite(b"y" * 8192, 8192)
assert h.pread(8192, 8192) == b"y" * 8192
h.shutdown()
EOF
tapctl pool-resize big 16M || fail "pool-resize big 16M"

# ---- a piece that fails after part of a READ went out ----------------------
# A 60k READ (too short for a hole probe, which would pay for all of it at
# once) through a 4K pool, its pieces paced by a 16K/s limit; once the
# first pieces are on their way, reads start failing. With structured replies
# the client hears EIO and the connection goes on; a simple reply said "no
# error" in its header already, so the connection is closed instead.
tapctl pool-create ep 4K
truncate -s 16M "$T/e.raw"
tapctl create --name e --pool ep --qos-bps 16K \
	"error,errno=EIO,ops=read,trigger=$T/trig:raw:$T/e.raw" >/dev/null || fail "create e"
# read_bytes: the bytes e's reads have been dispatched for.
read_bytes() { tapctl stats e | awk '$1 == "read_bytes" { print $2 }'; }
cat >"$T/midfail.py" <<'PY'
import sys, nbd
uri, sr = sys.argv[1], sys.argv[2] == "1"
h = nbd.NBD()
h.set_request_structured_replies(sr)
h.connect_uri(uri)
try:
    h.pread(60 << 10, 0)
    print("read succeeded")
except nbd.Error as e:
    print("read failed:", e)
try:
    h.pwrite(b"z" * 4096, 0)  # a write: reads still fail
    print("connection usable")
except nbd.Error as e:
    print("connection dead:", e)
PY
for sr in 1 0; do
	rm -f "$T/trig"
	before=$(read_bytes)
	/usr/bin/python3 "$T/midfail.py" "$(nbd_uri e)" $sr >"$T/out" 2>&1 &
	PY=$!
	track_pid $PY
	for _ in $(seq 1 400); do
		[ "$(read_bytes)" -gt "$before" ] && break
		sleep 0.02
	done
	touch "$T/trig"
	wait $PY || fail "client (structured=$sr): $(cat "$T/out")"
	rm -f "$T/trig"
	if [ $sr = 1 ]; then
		grep -q "read failed:.*EIO" "$T/out" || fail "structured: $(cat "$T/out")"
		grep -q "connection usable" "$T/out" || fail "structured: $(cat "$T/out")"
	else
		grep -q "read failed:.*disconnected" "$T/out" || fail "simple: $(cat "$T/out")"
		grep -q "connection dead" "$T/out" || fail "simple: $(cat "$T/out")"
		grep -q "a READ failed after its reply began" "$TAPD_LOG" ||
			fail "no log of the closed connection"
	fi
done
[ "$(pool_field ep in_use)" = 0 ] || fail "ep still has buffers out: $(tapctl pool-list)"
log "a READ failing in a later piece: EIO, or a closed simple-reply connection"

# ---- fio while its pool shrinks to 4K and set-pool moves it to a 4K pool ----
fio_job() { # NAME TAP ARGS...
	local name=$1 tap=$2
	shift 2
	(cd "$T" && fio --name="$name" --ioengine=nbd --uri="$(nbd_uri "$tap")" "$@" \
		--output="$T/$name.out" >/dev/null 2>"$T/$name.err")
}
tapctl pool-create fp 1M
tapctl pool-create tiny 4K
truncate -s 16M "$T/fio.raw"
tapctl create --name f --pool fp "raw:$T/fio.raw" >/dev/null || fail "create f"
VERIFY=(--size=16M --verify=crc32c --verify_fatal=1 --verify_state_save=0)
fio_job fill f --rw=write --bs=64k --iodepth=16 --do_verify=0 "${VERIFY[@]}" ||
	fail "fio fill: $(cat "$T/fill.err")"
fio_check fill
# The other tap, on its own pool, is read and written all along.
fio_job side other --rw=randrw --bs=64k --iodepth=4 --size=32M --time_based \
	--runtime=$RUNTIME &
SIDE=$!
track_pid $SIDE
fio_job squeeze f --rw=randrw --bs=64k --iodepth=32 --time_based --runtime=$RUNTIME \
	--do_verify=1 "${VERIFY[@]}" &
FIO=$!
track_pid $FIO
# 32 requests of 64k want 2M of a 1M pool: some wait when it shrinks.
waiters=0
for _ in $(seq 1 100); do
	waiters=$(pool_field fp waiters)
	[ "$waiters" -gt 0 ] && break
	sleep 0.05
done
log "fp: $waiters waiting when shrunk to 4K"
tapctl pool-resize fp 4K || fail "pool-resize fp 4K under load"
sleep $((RUNTIME / 4))
kill -0 $FIO 2>/dev/null || fail "fio ended before set-pool: $(cat "$T/squeeze.out")"
tapctl pool-resize fp 1M || fail "pool-resize fp 1M under load"
sleep 0.5
tapctl set-pool f tiny || fail "set-pool f tiny under load"
sleep $((RUNTIME / 4))
kill -0 $FIO 2>/dev/null || fail "fio ended before the last change: $(cat "$T/squeeze.out")"
[ "$(tapctl list --json | python3 -c 'import json, sys
print({t["name"]: t for t in json.load(sys.stdin)}["f"]["pool"])')" = tiny ] ||
	fail "f is not in tiny: $(tapctl list)"
rc=0
wait $FIO || rc=$?
[ $rc = 0 ] || fail "fio squeeze exited $rc: $(cat "$T/squeeze.out" "$T/squeeze.err")"
fio_check squeeze
grep -qE 'write: IOPS=' "$T/squeeze.out" || fail "fio wrote nothing"
grep -qE 'read: IOPS=' "$T/squeeze.out" || fail "fio read nothing"
rc=0
wait $SIDE || rc=$?
[ $rc = 0 ] || fail "fio on the other tap exited $rc: $(cat "$T/side.out" "$T/side.err")"
fio_check side
[ "$(tap_errors f)" = 0 ] || fail "f counted errors: $(tapctl stats f)"
[ "$(tap_errors other)" = 0 ] || fail "other counted errors: $(tapctl stats other)"
[ "$(pool_field tiny high_water)" -gt 0 ] || fail "tiny never served f: $(tapctl pool-list)"
for p in fp tiny other big; do
	[ "$(pool_field $p in_use)" = 0 ] || fail "$p still has buffers out: $(tapctl pool-list)"
done
# A last read-back of all of it through the 4K pool, in one 16M request.
cmp <(/usr/bin/python3 -c 'import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
sys.stdout.buffer.write(h.pread(16 << 20, 0)); h.shutdown()' "$(nbd_uri f)") "$T/fio.raw" ||
	fail "a 16M read through the 4K pool differs from the image"

# An IOPS limit counts a request once, not once per piece: 1 MiB written
# and read through the 4K pool is 256 pieces each, which at 4 I/O a
# second would take two minutes if each paid an I/O.
tapctl create --name q --pool tiny --qos-iops 4 ram:4M >/dev/null || fail "create q"
timeout 20 env PATH=/usr/bin:$PATH nbdsh -u "$(nbd_uri q)" -c '
h.pwrite(b"\x5a" * (1 << 20), 0)
assert h.pread(1 << 20, 0) == b"\x5a" * (1 << 20)' ||
	fail "a 1M write and read in 256 pieces each under --qos-iops 4 took over 20 s"
[ "$(tapctl stats q | awk '$1 == "reads" || $1 == "writes" { printf "%s ", $2 }')" = "1 1 " ] ||
	fail "q: not one read and one write: $(tapctl stats q)"
log "a request in pieces pays one I/O"

tapd_alive || fail "tapd died"
exit 0
