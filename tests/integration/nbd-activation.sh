#!/bin/bash
# systemd socket activation: tapd started by systemd-socket-activate with a
# unix and a TCP socket (LISTEN_FDS) serves NBD on both, makes no socket of
# its own, and leaves the passed unix socket in place when it exits
# (systemd owns it).
. "$(dirname "$0")/lib.sh"
need systemd-socket-activate nbdinfo python3

start_bus
mkdir -p "$STATE"
act=$T/act.sock
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# systemd-socket-activate execs tapd on the first connection, in its own
# process: LISTEN_PID matches.
systemd-socket-activate -l "$act" -l "127.0.0.1:$port" \
	$TAPD_WRAPPER "$TAPD" --foreground --state-dir "$STATE" --bus "$DBUS_SYSTEM_BUS_ADDRESS" \
	--log-level debug >>"$TAPD_LOG" 2>&1 &
TAPD_PID=$!
for _ in $(seq 1 100); do [ -S "$act" ] && break; sleep 0.05; done
[ -S "$act" ] || fail "systemd-socket-activate did not listen"

# The first client starts the daemon and is served once it is up.
nbdinfo --list "nbd+unix:///?socket=$act" >"$T/first" 2>&1 || fail "first client: $(cat "$T/first")"
for _ in $(seq 1 200); do tapctl list >/dev/null 2>&1 && break; sleep 0.05; done
tapctl list >/dev/null || fail "tapd did not come up on the bus"
grep -q "2 sockets passed by systemd" "$TAPD_LOG" || fail "activation not logged"

tapctl create --name act ram:4M >/dev/null || fail "create"
tapctl list | grep -q "socket=$act" || fail "URIs do not name the passed socket: $(tapctl list)"
out=$(nbdinfo "nbd+unix:///act?socket=$act") || fail "nbdinfo via the passed unix socket"
printf '%s\n' "$out" | grep -q "export-size: 4194304" || fail "nbdinfo: $out"
nbdinfo "nbd://127.0.0.1:$port/act" >/dev/null || fail "nbdinfo via the passed TCP socket"
[ -e "$STATE/nbd.sock" ] && fail "tapd made its own socket although systemd passed one"

stop_tapd || fail "tapd did not stop cleanly"
[ -S "$act" ] || fail "tapd removed the socket systemd owns"
log "PASS"
