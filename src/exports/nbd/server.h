/* The NBD export: a fixed-newstyle NBD server, export name = tap name, on a
 * unix socket, optional TCP listeners, or sockets passed by systemd. Each
 * connection reads requests, turns them into tap requests and sends
 * replies in completion order. */
#ifndef TAPD_NBD_SERVER_H
#define TAPD_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/util.h"

struct event_base;
struct tap;

/* Defaults of struct nbd_limits (max_clients and max_clients_per_peer
 * come from nbd_server_default_limits, which sizes them to the fds). */
#define NBD_DEFAULT_MAX_CLIENT_BYTES (32ull << 20)
#define NBD_DEFAULT_MAX_CONNECTIONS 16u
#define NBD_DEFAULT_HANDSHAKE_TIMEOUT 10u
#define NBD_DEFAULT_WRITE_TIMEOUT 60u
/* The most clients the default allows, however many fds there are. */
#define NBD_DEFAULT_MAX_CLIENTS 1024u
/* Fds kept out of the clients' share for images, D-Bus, listeners and the
 * loop's own (eventfds, epoll), and the most one client may hold: its
 * socket and two splice pipes. */
#define NBD_FD_RESERVE 256u
#define NBD_FDS_PER_CLIENT 5u

struct nbd_limits {
	/* READ/WRITE bytes in flight per client (a single larger request
	 * still runs when it is alone). */
	uint64_t max_client_bytes;
	/* NBD connections per tap. */
	unsigned max_connections;
	/* Connections in all, and per peer (a source address, or an IPv6
	 * /64, on TCP; a uid on the unix socket, where uid 0 is not
	 * limited); a client beyond either is closed as soon as accepted. */
	unsigned max_clients, max_clients_per_peer;
	/* Seconds from accept to transmission (TLS included), and seconds a
	 * client may leave its replies unread in transmission (0: never
	 * dropped for that). */
	unsigned handshake_timeout, write_timeout;
};

/* The defaults, max_clients sized to RLIMIT_NOFILE: (soft limit -
 * NBD_FD_RESERVE) / NBD_FDS_PER_CLIENT, between 1 and
 * NBD_DEFAULT_MAX_CLIENTS; per peer a quarter of that (at least 1). */
void nbd_server_default_limits(struct nbd_limits *l);
/* Apply limits (before the listeners start; later they apply to new
 * connections and requests). */
void nbd_server_set_limits(const struct nbd_limits *l);

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
/* The unix socket path (given or passed by systemd), or NULL. */
const char *nbd_server_socket(void);
/* The first TCP listener as "HOST:PORT" ("[::1]:10809"), for nbd:// URIs,
 * or NULL without one. */
const char *nbd_server_tcp_address(void);
/* Serve fd, one end of a socketpair whose other end was (or is about to
 * be) given to the kernel's nbd driver, as a client of tap t already in
 * transmission: the kernel does no handshake. Requests are checked
 * against the flags nbd_server_adopt_flags(t) gives, which the kernel
 * must be told; replies are simple. gone(arg) is called from the loop
 * when the connection is freed (the kernel closed its end, a protocol
 * error, the server's shutdown). Returns the connection's id (> 0; fd is
 * the server's then) or a negative errno with eb (fd not taken). */
int nbd_server_adopt(struct event_base *base, int fd, struct tap *t, void (*gone)(void *arg),
		     void *arg, struct errbuf *eb);
/* The transmission flags of an adopted connection on t. */
uint16_t nbd_server_adopt_flags(const struct tap *t);
/* Close an adopted connection once its requests in flight are answered;
 * its gone callback is not called. */
void nbd_server_adopt_close(unsigned id);
/* Whether nbd_server_shutdown was called. */
bool nbd_server_stopping(void);
/* Graceful stop: close the listeners, stop reading new requests, let
 * in-flight requests finish and their replies go out, then close every
 * connection. done is called from the loop when no connection is left. */
void nbd_server_shutdown(void (*done)(void *arg), void *arg);
/* Free everything (after shutdown). */
void nbd_server_free(void);

#endif
