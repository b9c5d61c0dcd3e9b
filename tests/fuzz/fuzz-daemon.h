/* For the fuzz harnesses that run the daemon's own parts in-process: the
 * loop, pools (the default one of pool_size bytes), taps, AIO, one worker
 * and the NBD export on nbd_sock, as tapd.c brings them up. Aborts on any
 * failure: a harness that cannot start has nothing to say. */
#ifndef TAPD_FUZZ_DAEMON_H
#define TAPD_FUZZ_DAEMON_H

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/tap.h"
#include "exports/nbd/server.h"
#include "lib/aio.h"
#include "lib/log.h"
#include "lib/worker.h"
#include "pools/pool.h"

static inline struct event_base *fuzz_daemon_start(const char *nbd_sock, uint64_t pool_size)
{
	struct errbuf eb = { "" };
	struct event_base *base;
	struct pool *def;

	log_set_level(getenv("FUZZ_LOG") ? 7 : 0);
	base = event_base_new();
	if (!base)
		abort();
	pool_setup(base);
	if (tap_setup(base) < 0 || aio_setup(base) < 0 || worker_setup(base, 1) < 0 ||
	    pool_create(POOL_DEFAULT, pool_size, &def, &eb) < 0 ||
	    nbd_server_start(base, nbd_sock, &eb) < 0) {
		fprintf(stderr, "fuzz: cannot start the daemon's parts: %s\n", eb.msg);
		abort();
	}
	return base;
}

#endif
