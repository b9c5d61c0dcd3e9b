/* What tap.c (registry and lifecycle) and tap-io.c (the request path) share.
 * Private to those two files. */
#ifndef TAPD_TAP_INTERNAL_H
#define TAPD_TAP_INTERNAL_H

#include "tap.h"

/* A token bucket (qos.c); rates 0 = unlimited. */
struct qos_bucket {
	uint64_t iops, bps;
	double ops, bytes; /* tokens */
	uint64_t last_ns;
};

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
	/* Stacking: the tap serving our parent chain (its name is kept to
	 * reopen after a pause) and how many taps we serve. */
	struct tap *parent;
	char *parent_name;
	unsigned children;
	struct tap_stats st;
	/* Requests holding (or waiting for) a pool buffer: the tap must
	 * outlive them, so closing waits for this to reach zero too. */
	unsigned held;
	/* Write-like requests in flight, for read-modify-write exclusion. */
	TAILQ_HEAD(, tap_req) writes;
	/* Write-like requests waiting for an overlapping one to finish. */
	TAILQ_HEAD(, tap_req) blocked;
	/* QoS: the tap's bucket, requests waiting for it, its timer. */
	struct qos_bucket qos;
	TAILQ_HEAD(, tap_req) qos_q;
	struct event *qos_timer;
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

/* qos.c */
void tap_qos_setup(struct event_base *base);
void tap_qos_teardown(void);
int tap_qos_init(struct tap *t);
void tap_qos_free(struct tap *t);
/* Dispatch now, or queue until the tap's and its pool's limits allow. */
void tap_qos_submit(struct tap_req *req);
/* No limit applies to t and nothing of it waits for one. */
bool tap_qos_unlimited(const struct tap *t);
/* Dispatch everything queued, limits or not (the daemon stops). */
void tap_qos_release(struct tap *t);

/* tap-io.c: the completion queue, set up with the registry. */
int tap_io_setup(struct event_base *base);
void tap_io_teardown(void);

/* tap.c: a closing tap may have drained; look again from the loop. */
void tap_closing_progress(struct tap *t);
/* tap.c: the daemon is stopping (requests must not park any more). */
bool tap_stopping(void);

#endif
