#!/bin/bash
# tapctl top: frames of the taps and pools tables, once a second. Not on a
# terminal it prints plain tables (no escape codes) and stops after
# --iterations; its rates follow real I/O; on a terminal it redraws in
# place and q quits; Ctrl-C quits too.
. "$(dirname "$0")/lib.sh"
need fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio built without the nbd engine"
start_bus
start_tapd

tapctl pool-create toppool 4M
tapctl create --name watched --pool toppool ram:16M >/dev/null || fail "create"

# ---- plain output ----------------------------------------------------------
start=$(date +%s%N)
tapctl top --iterations 2 >"$T/top.out" 2>"$T/top.err" || fail "top exited $?: $(cat "$T/top.err")"
ms=$((($(date +%s%N) - start) / 1000000))
cat "$T/top.out" >&2
[ "$(grep -cE '^NAME +STATE +POOL +R-IOPS +W-IOPS +R-MB/s +W-MB/s +INFLIGHT +WAITING$' "$T/top.out")" = 2 ] ||
	fail "want 2 tap tables: $(cat "$T/top.out")"
[ "$(grep -cE '^POOL +SIZE +IN-USE +HIGH-WATER +WAITERS +TAPS$' "$T/top.out")" = 2 ] ||
	fail "want 2 pool tables"
[ "$(grep -cE '^watched +running +toppool ' "$T/top.out")" = 2 ] || fail "the tap is not in both frames"
[ "$(grep -cE '^toppool +4M +0 +0 +0 +1$' "$T/top.out")" = 2 ] || fail "toppool is not in both frames"
[ "$(grep -cE '^default ' "$T/top.out")" = 2 ] || fail "the default pool is not in both frames"
[ "$(grep -c '^tapctl top .* 1 tap, 2 pools$' "$T/top.out")" = 2 ] || fail "no frame headers"
! grep -q $'\033' "$T/top.out" || fail "escape codes in output that is not a terminal"
[ ! -s "$T/top.err" ] || fail "top wrote to stderr: $(cat "$T/top.err")"
# One frame a second, the first after one second of sampling.
[ "$ms" -ge 1900 ] && [ "$ms" -lt 6000 ] || fail "2 frames took $ms ms"

tapctl top --once >"$T/once.out" || fail "top --once"
[ "$(grep -c '^NAME ' "$T/once.out")" = 1 ] || fail "--once drew more than once"

# ---- rates follow I/O ------------------------------------------------------
(cd "$T" && fio --name=w --ioengine=nbd --uri="$(nbd_uri watched)" --rw=write --bs=64k \
	--iodepth=4 --size=16M --time_based --runtime=4 --output="$T/fio.out" \
	>/dev/null 2>&1) &
FIO=$!
track_pid $FIO
sleep 0.5
tapctl top --iterations 2 >"$T/io.out" || fail "top under I/O"
wait $FIO || fail "fio failed: $(cat "$T/fio.out")"
# Columns: NAME STATE POOL R-IOPS W-IOPS R-MB/s W-MB/s INFLIGHT WAITING.
awk '$1 == "watched" && $5 > 0 && $7 > 0 { n++ } END { exit n == 2 ? 0 : 1 }' "$T/io.out" ||
	fail "top shows no writes while fio writes: $(cat "$T/io.out")"
awk '$1 == "watched" && $4 != 0 { bad = 1 } END { exit bad }' "$T/io.out" ||
	fail "top shows reads nobody made: $(cat "$T/io.out")"
grep -qE '^toppool +4M +[0-9.KM]+ +[1-9]' "$T/io.out" ||
	fail "toppool shows no high water after I/O: $(cat "$T/io.out")"

# ---- Ctrl-C ------------------------------------------------------------------
"$TAPCTL" top >"$T/int.out" 2>&1 &
TOP=$!
track_pid $TOP
sleep 1.5
kill -INT $TOP
rc=0
for _ in $(seq 1 40); do kill -0 $TOP 2>/dev/null || break; sleep 0.05; done
kill -0 $TOP 2>/dev/null && fail "top still runs 2 s after SIGINT"
wait $TOP || rc=$?
[ $rc = 0 ] || fail "top exited $rc on SIGINT: $(cat "$T/int.out")"
grep -q '^watched ' "$T/int.out" || fail "top drew nothing before SIGINT"

# ---- on a terminal: redrawn in place, q quits --------------------------------
if command -v script >/dev/null; then
	start=$(date +%s%N)
	(sleep 2.5; printf q) | timeout 10 script -qfec "$TAPCTL top" "$T/tty.out" >/dev/null ||
		fail "top on a terminal failed or did not quit on q: $(cat -v "$T/tty.out")"
	ms=$((($(date +%s%N) - start) / 1000000))
	[ "$ms" -lt 5000 ] || fail "q took $ms ms to quit"
	grep -q $'\033\\[H\033\\[2J' "$T/tty.out" || fail "no clear-screen on a terminal: $(cat -v "$T/tty.out")"
	grep -q '(q quits)' "$T/tty.out" || fail "no hint on a terminal"
	grep -q '^watched ' "$T/tty.out" || fail "no tap drawn on a terminal"
	grep -q $'\033\\[?25h' "$T/tty.out" || fail "the cursor was not shown again on exit"
else
	log "script(1) missing: the terminal mode is not checked"
fi

# A daemon gone mid-view is an error (1), not a hang.
"$TAPCTL" top >"$T/gone.out" 2>"$T/gone.err" &
TOP=$!
track_pid $TOP
sleep 1.2
stop_tapd || fail "tapd did not stop cleanly"
rc=0
for _ in $(seq 1 60); do kill -0 $TOP 2>/dev/null || break; sleep 0.05; done
kill -0 $TOP 2>/dev/null && fail "top still runs 3 s after tapd stopped"
wait $TOP || rc=$?
[ $rc = 1 ] || fail "top exited $rc after tapd stopped, expected 1"
grep -q '^tapctl: ' "$T/gone.err" || fail "no message when tapd went away"
exit 0
