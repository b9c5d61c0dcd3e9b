/* The NBD export: a fixed-newstyle NBD server, export name = tap name, on a
 * unix socket, optional TCP listeners, or sockets passed by systemd. Each
 * connection reads requests, turns them into tap requests and sends
 * replies in completion order. */
#ifndef TAPD_NBD_SERVER_H
#define TAPD_NBD_SERVER_H

#include <stdint.h>

#include "lib/util.h"

struct event_base;

/* Defaults of nbd_server_set_limits. */
#define NBD_DEFAULT_MAX_CLIENT_BYTES (32ull << 20)
#define NBD_DEFAULT_MAX_CONNECTIONS 16u

/* Adopt the listening sockets systemd passed (sd_listen_fds): unix ones
 * serve as the NBD socket (never unlinked by us: systemd owns them), inet
 * ones as TCP listeners. Returns how many were adopted (0: not socket
 * activated), or a negative errno with eb filled. */
int nbd_server_activate(struct event_base *base, struct errbuf *eb);
/* Listen on a unix socket at path (an existing stale socket is replaced).
 * Returns 0 or a negative errno with eb filled. */
int nbd_server_start(struct event_base *base, const char *path, struct errbuf *eb);
/* Listen on TCP at "HOST:PORT", "[IPV6]:PORT" (port 1-65535). Returns 0,
 * -EINVAL for a malformed address, or another negative errno, eb filled. */
int nbd_server_listen_tcp(struct event_base *base, const char *hostport, struct errbuf *eb);
/* Per-client cap on READ/WRITE bytes in flight (a single larger request
 * still runs when it is alone) and per-tap cap on NBD connections. */
void nbd_server_set_limits(uint64_t max_client_bytes, unsigned max_connections);
/* The unix socket path (given or passed by systemd), or NULL. */
const char *nbd_server_socket(void);
/* The first TCP listener as "HOST:PORT" ("[::1]:10809"), for nbd:// URIs,
 * or NULL without one. */
const char *nbd_server_tcp_address(void);
/* Graceful stop: close the listeners, stop reading new requests, let
 * in-flight requests finish and their replies go out, then close every
 * connection. done is called from the loop when no connection is left. */
void nbd_server_shutdown(void (*done)(void *arg), void *arg);
/* Free everything (after shutdown). */
void nbd_server_free(void);

#endif
