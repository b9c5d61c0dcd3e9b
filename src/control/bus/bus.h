/* The D-Bus control plane: org.xenproject.Tapd1 on the system bus (or a
 * given one), attached to the libevent loop. */
#ifndef TAPD_BUS_H
#define TAPD_BUS_H

#include <stdbool.h>

#include "lib/util.h"

struct event_base;

/* What the daemon found out about itself at start, for Manager properties. */
struct daemon_info {
	const char *version;
	bool io_flusher;    /* PR_GET_IO_FLUSHER read back 1 */
	bool memory_locked; /* mlockall succeeded */
	const char *state_dir;
	const char *nbd_socket;
};

/* Connect ("system", "session" or a D-Bus address), publish the objects
 * and own the bus name. Returns once the name is owned, or a negative errno
 * with eb filled (-EEXIST: another daemon owns the name). */
int bus_start(struct event_base *base, const char *address,
	      const struct daemon_info *info, struct errbuf *eb);
/* Release the name and disconnect. */
void bus_stop(void);

#endif
