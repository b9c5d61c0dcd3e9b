/* What tap.c (registry and lifecycle) and tap-io.c (the request path) share.
 * Private to those two files. */
#ifndef TAPD_TAP_INTERNAL_H
#define TAPD_TAP_INTERNAL_H

#include "tap.h"

struct tap {
	TAILQ_ENTRY(tap) link;
	char name[TAP_NAME_MAX];
	int minor;
	enum tap_state state;
	struct image *img; /* NULL while paused */
	/* What the tap shows while its image is closed. */
	char *spec;
	uint64_t size;
	uint32_t align;
	bool can_flush, can_trim, can_zero;
	struct pool *pool;
	bool read_only;
	struct tap_stats st;
	/* Requests holding (or waiting for) a pool buffer: the tap must
	 * outlive them, so closing waits for this to reach zero too. */
	unsigned held;
	/* Write-like requests in flight, for read-modify-write exclusion. */
	TAILQ_HEAD(, tap_req) writes;
	/* Write-like requests waiting for an overlapping one to finish. */
	TAILQ_HEAD(, tap_req) blocked;
	/* Requests submitted while pausing or paused, in order. */
	TAILQ_HEAD(, tap_req) parked;
	void (*pause_done)(void *arg, int err);
	void *pause_arg;
	/* Shutdown: flush, then close. */
	struct image_io flush_io;
	bool flushing;
};

/* tap-io.c: run a request (the state allows it). */
void tap_req_dispatch(struct tap_req *req);

/* tap-io.c: the completion queue, set up with the registry. */
int tap_io_setup(struct event_base *base);
void tap_io_teardown(void);

/* tap.c: a closing tap may have drained; look again from the loop. */
void tap_closing_progress(struct tap *t);
/* tap.c: the daemon is stopping (requests must not park any more). */
bool tap_stopping(void);

#endif
