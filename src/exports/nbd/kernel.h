/* The "nbd" kind of kernel device (kernel.c): a tap as /dev/nbdN, the
 * kernel's NBD client connected over socketpairs to this server. */
#ifndef TAPD_NBD_KERNEL_H
#define TAPD_NBD_KERNEL_H

#include "lib/util.h"

struct event_base;

/* Connections per device: the default of --nbd-kernel-connections, and
 * its most. */
#define KNBD_CONNS_DEFAULT 2u
#define KNBD_CONNS_MAX 16u

/* Register the kind (at start, after device_setup), each device with
 * conns connections (1 to KNBD_CONNS_MAX). 0 or a negative errno with
 * eb. */
int nbd_kernel_start(struct event_base *base, unsigned conns, struct errbuf *eb);

#endif
