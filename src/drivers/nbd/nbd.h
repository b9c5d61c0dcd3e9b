/* Setup of the nbd: image driver (a client of remote NBD servers), which
 * needs the daemon's loop for its sockets and reconnect timers.
 *
 * Threading: loop thread only. */
#ifndef TAPD_NBD_CLIENT_H
#define TAPD_NBD_CLIENT_H

struct event_base;

/* Call once before any nbd: image is opened; opening one before fails
 * with a clear error. */
int nbd_client_setup(struct event_base *base);
/* How long requests wait for a lost server, or for a reply from a server
 * that holds them, before failing with EIO, for URIs without
 * ?timeout=SECONDS (default 30). */
void nbd_client_set_default_timeout(unsigned seconds);

#endif
