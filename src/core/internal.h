/* What the files of core share, private to src/core/. The files call each
 * other in one direction only, lowest first:
 *
 *   pieces.c  a request's buffer and pieces: arithmetic, no state
 *   qos.c     the QoS gate: what a request costs, whether it may pass now
 *   tap-io.c  the request path: gates, queues, dispatch, completion
 *   registry.c the taps listed, their properties, pools, QoS, references
 *   tap.c     the lifecycle of taps: create, open, pause, stop (drives tap-io.c)
 *   splice.c  data by reference between memory images and export pipes
 *   stack.c   the tap: driver (a tap as another tap's parent), on both
 *   setup.c   brings core up: registers the image drivers, tap: included
 *
 * A lower file learns what it needs from a higher one through state it is
 * given (tap-io.c's stopping flag) or a callback (tap.c's drained). */
#ifndef TAPD_TAP_INTERNAL_H
#define TAPD_TAP_INTERNAL_H

#include "pools/bucket.h"
#include "tap.h"

/* Images a walk down a chain visits at most, through every tap of a stack:
 * far more than any chain has (a vhd chain stops at 64), so only a bug
 * (a loop) could reach it, and then the walk still ends. */
#define TAP_CHAIN_IMAGES_MAX (TAP_STACK_MAX * 128)

struct image_opening;

struct tap {
	TAILQ_ENTRY(tap) link;
	char name[TAP_NAME_MAX];
	int minor;
	enum tap_state state;
	struct image *img; /* NULL while paused */
	/* While paused: the image the pause kept open (keep_on_pause), for
	 * the unpause to go on with; else NULL. */
	struct image *kept;
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
	/* The tap our open chain reads through (a tap: image's, found once
	 * the chain is taken, NULL while paused): the links of stacks and
	 * the edges of the pool graph. */
	struct tap *below;
	struct tap_stats st;
	/* Requests holding (or waiting for) a pool buffer: the tap must
	 * outlive them, so closing waits for this to reach zero too. */
	unsigned held;
	/* Kept by the request path (tap-io.c); tap.c sets the QoS rates and
	 * looks at parked before a destroy. */
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
	/* The lifecycle's own (tap.c). */
	void (*pause_done)(void *arg, int err);
	void *pause_arg;
	/* An image chain being opened for tap_create (creating: the tap is
	 * not listed yet) or tap_unpause, and who waits for it. */
	struct image_opening *opening;
	bool creating;
	tap_open_done_fn *open_done;
	void *open_arg;
	uint64_t qos_iops_cfg, qos_bps_cfg; /* tap_create's, set once running */
	/* Shutdown: flush, then close. */
	struct image_io flush_io;
	bool flushing;
};

/* qos.c: the gate, applied by tap-io.c. It never queues or dispatches. */
/* A limit applies to t: its own or its pool's. */
bool tap_qos_limited(const struct tap *t);
/* req is charged at all (flush, cache, ... always pass). */
bool tap_qos_counted(const struct tap_req *req);
/* Seconds req must still wait for the tap's and its pool's buckets; 0: it
 * passes now, and has been charged. With force it passes and is charged
 * whatever the wait. */
double tap_qos_admit(struct tap *t, const struct tap_req *req, bool force);

/* tap-io.c, driven by tap.c */
/* The completion queue and the zero buffer. drained(t) is called from the
 * loop when a closing or pausing tap may have drained: look again. */
int tap_io_setup(struct event_base *base, void (*drained)(struct tap *t));
void tap_io_teardown(void);
/* A new tap's request queues and QoS timer; tap_io_free undoes it. */
int tap_io_init(struct tap *t);
void tap_io_free(struct tap *t);
/* The daemon begins to stop: no request waits for a pause or a limit any
 * more. Reset by tap_io_teardown. */
void tap_io_stop(void);
bool tap_io_stopping(void);
/* Let everything waiting on t (for the unpause, for QoS) go now: run on
 * the image if it is open, else fail with -ESHUTDOWN. For a stop. */
void tap_io_release(struct tap *t);
/* t runs again: the requests parked by the pause pass the gate in order. */
void tap_io_resume(struct tap *t);
/* t's or its pool's limits changed: judge what waits by the new ones. */
void tap_io_qos_changed(struct tap *t);

/* tap-io.c: whether req (its envelope) overlaps a write in flight or
 * waiting before it such that one of the two is a read-modify-write. */
bool tap_write_conflicts(struct tap *t, const struct tap_req *req);

/* pieces.c. The pool buffer a READ or WRITE of [p, e) needs: the pages
 * around it, and two of scratch for a write with a partial page at either
 * end. */
uint64_t tap_piece_need(enum image_op op, uint64_t p, uint64_t e);
/* The longest piece of [p, end) whose buffer fits in cap bytes: all of it
 * if it fits, else one that ends on a page; 0 if none does. */
uint32_t tap_piece_len(enum image_op op, uint64_t p, uint64_t end, uint64_t cap);
/* req's first piece and its buffer's length (*need, 0: none) for a pool
 * that gives at most cap bytes; -ENOMEM where no piece can ever fit. */
int tap_req_need(struct tap_req *req, uint64_t cap, size_t *need);
/* req's envelope in the image's alignment, for its current piece. */
void tap_req_plan(const struct tap *t, struct tap_req *req);

/* registry.c, for tap.c (above it) and the files above: */
/* Tell the listener (the bus) that t was added, changed or removed. */
void tap_notify(struct tap *t, enum tap_event ev);
/* A free minor, or -ENOSPC; give it back when the tap is gone. */
int tap_minor_take(void);
void tap_minor_give(int minor);
/* List a tap that runs (tap_find, tap_first... see it), or unlist it. */
void tap_list_add(struct tap *t);
void tap_list_remove(struct tap *t);
/* The tap whose chain t's open chain enters (a tap: image hands reads on
 * to its tap's chain: a tap's own leaf image is never shared, so meeting
 * it means meeting the tap), or NULL. For tap->below. */
struct tap *tap_reads_through(const struct tap *t);
/* A leaf stacked on parent (named name, NULL: no such tap) must draw
 * from another pool than parent: 0, or -ENOENT/-EINVAL with eb. */
int tap_check_stack(struct tap *parent, const char *name, struct pool *pool,
		    struct errbuf *eb);

/* tap.c, for setup.c */
int tap_registry_setup(struct event_base *base);
void tap_registry_teardown(void);
/* tap.c, for stack.c: the tap whose chain is being opened by this open
 * (by tap_create or tap_unpause), or NULL; its chain is not yet in place. */
struct tap *tap_opening(void);

/* tap.c, for stack.c: whether a request holding a buffer of pool from can
 * come to wait for a buffer of pool to, through taps stacked on taps
 * (each tap's pool leads to its below's): true also for from == to. */
bool tap_pool_reaches(const struct pool *from, const struct pool *to);

/* stack.c: the tap: driver, registered by setup.c. */
extern const struct driver driver_tap;

#endif
