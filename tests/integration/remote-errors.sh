#!/bin/bash
# Errors of the nbd: driver. The remote's errors reach tapd's clients as
# the same errno (nbdkit's error filter: ENOSPC on writes while a trigger
# file exists, EPERM on write-zeroes); a missing socket, an unknown export,
# a read-only export opened writable and servers that do not speak NBD are
# clear errors at create; a server that answers requests with garbage
# fails them with EIO after the timeout; tapd stays up throughout.
. "$(dirname "$0")/lib.sh"
need nbdkit qemu-io python3
need_libnbd

start_bus
start_tapd


# --- errors from the remote ------------------------------------------------
esock=$T/error.sock
nbdkit --foreground --unix "$esock" --filter=error memory 16M \
	error-pwrite=ENOSPC error-pwrite-rate=100% error-pwrite-file="$T/inject" \
	error-zero=EPERM error-zero-rate=100% >"$T/nbdkit-error.log" 2>&1 &
track_pid $!
wait_sock "$esock"
tapctl create --name err "nbd:nbd+unix:///?socket=$esock" >/dev/null || fail "create err"
uri=$(nbd_uri err)

qemu-io -f raw -c "write -P 0x11 0 64k" "$uri" >/dev/null 2>&1 || fail "write before the trigger"
touch "$T/inject"
qemu-io -f raw -c "write -P 0x22 0 64k" "$uri" >"$T/qio.out" 2>&1 && fail "write with ENOSPC succeeded"
grep -q "No space left on device" "$T/qio.out" || fail "no ENOSPC: $(cat "$T/qio.out")"
URI=$uri nbdsh -c '
import errno, os
h.connect_uri(os.environ["URI"])
try:
    h.pwrite(b"x" * 4096, 8192)
    raise SystemExit("pwrite succeeded under ENOSPC")
except nbd.Error as e:
    assert e.errnum == errno.ENOSPC, e
try:
    h.zero(4096, 0)
    raise SystemExit("zero succeeded under EPERM")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
assert h.pread(4, 0) == b"\x11" * 4, "reads are not affected"
' || fail "errors through nbdsh"
rm "$T/inject"
qemu-io -f raw -c "write -P 0x33 0 64k" -c "read -P 0x33 0 64k" "$uri" >"$T/qio.out" 2>&1 ||
	fail "write after the trigger went: $(cat "$T/qio.out")"
grep -q "Pattern verification failed" "$T/qio.out" && fail "wrong data after ENOSPC"

# --- clear errors at create ------------------------------------------------
expect_create_error() {
	local what=$1 pattern=$2 out rc=0
	shift 2
	out=$(tapctl create "$@" 2>&1) || rc=$?
	[ $rc = 1 ] || fail "$what: tapctl create exited $rc: $out"
	log "$what: $out"
	printf '%s' "$out" | grep -qiE "$pattern" || fail "$what: unclear error: $out"
}
expect_create_error "missing socket" "No such file or directory" \
	"nbd:nbd+unix:///?socket=$T/nothing.sock"
expect_create_error "bad URI" "want nbd\+unix" "nbd:http://example.com/"
expect_create_error "no socket=" "without \?socket" "nbd:nbd+unix:///x"
expect_create_error "bad timeout" "timeout" "nbd:nbd+unix:///?socket=$esock&timeout=abc"

rsock=$T/ro.sock
nbdkit --foreground --unix "$rsock" --readonly memory 1M >"$T/nbdkit-ro.log" 2>&1 &
track_pid $!
wait_sock "$rsock"
expect_create_error "read-only export" "read-only" "nbd:nbd+unix:///?socket=$rsock"
tapctl create --read-only --name ro "nbd:nbd+unix:///?socket=$rsock" >/dev/null ||
	fail "read-only create of a read-only export"

xsock=$T/exports.sock
nbdkit --foreground --unix "$xsock" --filter=exportname memory 1M exportname=only \
	exportname-strict=true >"$T/nbdkit-x.log" 2>&1 &
track_pid $!
wait_sock "$xsock"
expect_create_error "unknown export" "refused export 'other'" \
	"nbd:nbd+unix:///other?socket=$xsock"
tapctl create --name only "nbd:nbd+unix:///only?socket=$xsock" >/dev/null || fail "known export"

# --- servers that are not NBD servers --------------------------------------
# mode greeting: garbage instead of a greeting; hangup: close at once;
# replies: a proper handshake (GO with the export's size), then garbage in
# answer to any request.
fake() {
	python3 - "$1" "$2" <<'PY' &
import os, socket, struct, sys
mode, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(8)
def recvn(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
while True:
    c, _ = s.accept()
    try:
        if mode == "greeting":
            c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n" * 4)
            c.recv(1024)
        elif mode == "hangup":
            pass
        else:
            c.sendall(b"NBDMAGIC" + b"IHAVEOPT" + struct.pack(">H", 3))
            recvn(c, 4)
            magic, opt, ln = struct.unpack(">QII", recvn(c, 16))
            recvn(c, ln)
            info = struct.pack(">HQH", 0, 1 << 20, 1 | 4)
            c.sendall(struct.pack(">QIII", 0x3e889045565a9, opt, 3, len(info)) + info)
            c.sendall(struct.pack(">QIII", 0x3e889045565a9, opt, 1, 0))
            while True:
                recvn(c, 28)
                c.sendall(b"\xde\xad\xbe\xef" * 8)
    except (EOFError, OSError):
        pass
    c.close()
PY
	track_pid $!
	wait_sock "$2"
}
fake greeting "$T/g.sock"
expect_create_error "garbage greeting" "does not speak NBD" "nbd:nbd+unix:///?socket=$T/g.sock"
fake hangup "$T/h.sock"
expect_create_error "hangup" "closed the connection" "nbd:nbd+unix:///?socket=$T/h.sock"
fake replies "$T/r.sock"
tapctl create --name garbage "nbd:nbd+unix:///?socket=$T/r.sock&timeout=2" >/dev/null ||
	fail "create over a server that handshakes properly"
qemu-io -f raw -c "read 0 4k" "$(nbd_uri garbage)" >"$T/qio.out" 2>&1 &&
	fail "read answered with garbage succeeded"
grep -q "Input/output error" "$T/qio.out" || fail "no EIO from garbage replies: $(cat "$T/qio.out")"
grep -q "protocol error: bad reply magic" "$TAPD_LOG" || fail "protocol error not logged"
tapctl destroy garbage >/dev/null || fail "destroy the tap of the garbage server"

tapd_alive || fail "tapd died"
# The taps over healthy servers still work.
qemu-io -f raw -c "read -P 0x33 0 64k" "$uri" >/dev/null 2>&1 || fail "err tap after all this"
log "PASS"
