/* The NBD export: a fixed-newstyle NBD server on a unix socket (and later
 * TCP), export name = tap name. Each connection reads requests, turns them
 * into tap requests and sends replies in completion order. */
#ifndef TAPD_NBD_SERVER_H
#define TAPD_NBD_SERVER_H

#include "util.h"

struct event_base;

/* Listen on a unix socket at path (an existing stale socket is replaced).
 * Returns 0 or a negative errno with eb filled. */
int nbd_server_start(struct event_base *base, const char *path, struct errbuf *eb);
/* The socket path given to nbd_server_start, or NULL. */
const char *nbd_server_socket(void);
/* Graceful stop: close the listener, stop reading new requests, let
 * in-flight requests finish and their replies go out, then close every
 * connection. done is called from the loop when no connection is left. */
void nbd_server_shutdown(void (*done)(void *arg), void *arg);
/* Free everything (after shutdown). */
void nbd_server_free(void);

#endif
