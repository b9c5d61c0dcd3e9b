/* Taps: one userspace block device each, with a minor, a name, an image chain
 * and a pool. Exports (NBD, FUSE, ...) turn their consumers' protocol into
 * tap requests; the tap validates them, gives them pool buffers, aligns them
 * for the image, runs them and completes them asynchronously.
 *
 * State: opening -> running -> closing -> gone. A state change is a callback
 * step on the loop, never a nested event loop.
 *
 * Threading: everything here runs on the loop thread. */
#ifndef TAPD_TAP_H
#define TAPD_TAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/queue.h>

#include "drivers/driver.h"
#include "pools/pool.h"
#include "lib/util.h"

struct event_base;
struct tap;

#define TAP_NAME_MAX 64
/* Longest image string: a path (PATH_MAX) and room for a driver, options. */
#define TAP_IMAGE_MAX (4096 + 256)
/* Most taps in one stack (a tap reading through a tap reading through...),
 * the top one included: every walk down a stack stops there. */
#define TAP_STACK_MAX 16
/* Largest data length of one request (the NBD protocol's usual limit). */
#define TAP_REQ_MAX (32u << 20)

/* running -> pausing (new requests wait, in-flight ones drain) -> paused
 * (chain closed: the images may be snapshotted or replaced; an image whose
 * contents live only in tapd, ram:, is kept open and idle) -> running. */
enum tap_state { TAP_OPENING, TAP_RUNNING, TAP_PAUSING, TAP_PAUSED, TAP_CLOSING };

/* One request from an export. The export owns the struct (usually embedded
 * in its own per-request state); the tap borrows it between
 * tap_req_prepare() and the done callback, and owns req->buf until
 * tap_req_release(). */
struct tap_req {
	/* Set by the export before tap_req_prepare(). */
	enum image_op op;
	uint32_t flags; /* IMAGE_F_FUA, IMAGE_F_NO_HOLE, IMAGE_F_FAST_ZERO */
	uint64_t off;
	uint32_t len;
	/* BLOCK_STATUS: where to put the answer (ext_max >= 1); on success
	 * ext_count extents describe [off, off + sum of their lengths), at
	 * least one byte and at most len bytes. */
	struct image_extent *ext;
	uint32_t ext_max;
	uint32_t ext_count;
	/* Called on the loop when the request has finished, with req->error
	 * set. Never called from inside a tap_* call. */
	void (*done)(struct tap_req *req);

	/* Set by the tap. */
	void *buf;  /* READ, WRITE: the data of the current piece */
	int error;  /* 0 or a negative errno */
	/* READ, WRITE: the piece buf holds, [piece_off, piece_off +
	 * piece_len) of the image; all of [off, off + len) unless the
	 * request goes in pieces (see tap_req_next). */
	uint64_t piece_off;
	uint32_t piece_len;

	/* Private to the request path (core/tap-io.c). */
	struct tap *tap;
	void (*ready)(struct tap_req *req, int err);
	struct pool_waiter wait;
	struct pool *pool; /* where base came from (the tap may move) */
	void *base;        /* pool buffer: whole pages around the data, then scratch */
	size_t base_len;
	uint64_t buf_off;  /* image offset of base: off rounded down to a page */
	uint64_t env_off;  /* envelope around [off, off + len), image-aligned */
	uint64_t env_len;
	uint64_t pos;      /* progress of a multi-step request */
	int stage;
	bool rmw;
	bool parked;
	TAILQ_ENTRY(tap_req) link;
	struct image_io io;
};

/* Flags an export may add to a request, beside IMAGE_F_*: they tell QoS
 * what a request stands for. */
#define TAP_F_READ_PROBE 0x100u /* BLOCK_STATUS asked before a READ, in its place */
#define TAP_F_QOS_PAID 0x200u   /* READ whose probe was already charged */

struct tap_config {
	const char *name;  /* NULL: "tapN" */
	const char *image; /* "raw:/path", "ram:SIZE", "null:SIZE" */
	const char *pool;  /* NULL: the default pool */
	/* NULL, or the name of a running tap that serves this image's
	 * parent chain (stacking): the image must be a differencing disk
	 * whose parent is that tap's image, and the two taps must use
	 * different pools. */
	const char *parent;
	bool read_only;
	uint64_t qos_iops, qos_bps; /* 0: unlimited */
};

struct tap_stats {
	uint64_t reads, writes, flushes, trims, zeroes;
	uint64_t read_bytes, write_bytes;
	uint64_t errors;      /* requests completed with an error */
	uint32_t inflight;    /* requests submitted and not yet done */
	uint32_t waiting;     /* requests waiting for pool memory */
	uint32_t connections; /* exports' clients attached */
	uint32_t chain_depth; /* images in the chain, leaf included (0: paused) */
	uint32_t parent_shares; /* chains sharing this tap's first parent */
};

/* Set up the registry and the completion queue, and register the image
 * drivers (the built-in ones and tap:). 0 or -ENOMEM. */
int tap_setup(struct event_base *base);
/* Free every tap at once (after tap_shutdown_all, or in tests). */
void tap_teardown(void);

/* The answer to tap_create or tap_unpause, on the loop: t (NULL when a
 * create failed) and 0, or a negative errno with eb saying why. */
typedef void tap_open_done_fn(void *arg, struct tap *t, int err, const struct errbuf *eb);

/* Open the image and register the tap. The image chain opens on a thread
 * of its own (image_open_async): what can be checked at once is, and then
 * done is called from the loop, never from inside tap_create, when the tap
 * is running (and listed) or has failed. The name and the minor are taken
 * meanwhile, the tap is not listed. Returns 0, or an error (done is then
 * never called). Errors, either way: -EINVAL bad name or image string, an
 * image of 0 bytes, a stacked tap in its parent's pool; -ELOOP the tap
 * would read through itself or a stack would be deeper than TAP_STACK_MAX;
 * -EEXIST name taken, -ENODEV no such pool, -ENOENT/-EACCES/... from
 * opening the image, -ENOSPC no free minor, -ETIMEDOUT the open took
 * longer than the open timeout, -EAGAIN too many opens in flight,
 * -ESHUTDOWN the daemon stops. eb says which. */
int tap_create(const struct tap_config *cfg, tap_open_done_fn *done, void *arg,
	       struct errbuf *eb);
/* How long an image open may take before its caller is answered with
 * -ETIMEDOUT (seconds, > 0); the late chain is closed when it opens. */
void tap_set_open_timeout(unsigned seconds);
/* Whether name may name a tap: 1 to TAP_NAME_MAX - 1 letters, digits, '_',
 * '-' and '.', not all digits (a minor) and not beginning with '-' or '.'
 * (names become paths and command-line arguments). 0 or -EINVAL with eb.
 * tap_create checks it too; a front-end that must tell a bad name from a
 * bad image (both -EINVAL) checks first. */
int tap_name_check(const char *name, struct errbuf *eb);

/* Remove the tap: -EBUSY while clients are attached. On success the tap is
 * closed, its minor freed and it is gone when this returns. */
int tap_destroy(struct tap *t, struct errbuf *eb);

/* Pause: requests submitted from now on wait; once those in flight are
 * done the image chain is closed and done(arg, 0) is called from the loop,
 * never from inside tap_pause (done(arg, -ESHUTDOWN) if the daemon stops
 * first).
 * Returns 0, or -EBUSY (already pausing or paused) / -ESHUTDOWN with eb. */
int tap_pause(struct tap *t, void (*done)(void *arg, int err), void *arg, struct errbuf *eb);
/* Reopen a paused tap on image (NULL or "": the image it had, or the one
 * the pause kept open) and serve the requests that waited. An image string
 * always opens anew (and closes a kept image), off the loop as in
 * tap_create: done(arg, t, err, eb) follows from the loop, never from
 * inside tap_unpause; the tap stays paused meanwhile. -EINVAL if not
 * paused, -EBUSY if an unpause is under way, at once; -ERANGE if the new
 * chain's size differs, or any error of tap_create's from opening, at
 * once or through done. On error the tap stays paused, a kept image kept. */
int tap_unpause(struct tap *t, const char *image, tap_open_done_fn *done, void *arg,
		struct errbuf *eb);

/* The daemon begins to stop: requests parked on paused taps, and any that
 * would park from now on, fail with -ESHUTDOWN (or run, if the image is
 * still open), so that exports can drain. Call before draining exports. */
void tap_stop_begin(void);

/* Stop every tap for daemon exit: new requests are refused with
 * -ESHUTDOWN, in-flight ones drain, images are flushed and closed. done is
 * called from the loop when all taps are gone. */
void tap_shutdown_all(void (*done)(void *arg), void *arg);

/* Move the tap to another pool while it runs: requests in flight keep the
 * buffers they have (and give them back where they came from), new ones
 * take from the new pool. -ENODEV no such pool; -EINVAL the tap is stacked
 * on, or under, a tap of that pool. */
int tap_set_pool(struct tap *t, const char *pool, struct errbuf *eb);

/* Limits on the requests a tap starts per second and the bytes they move
 * per second (token buckets with a one-second burst; 0 = unlimited).
 * Requests over the limit wait, in order, on a timer: never on the loop. */
void tap_set_qos(struct tap *t, uint64_t iops, uint64_t bps);
void tap_get_qos(const struct tap *t, uint64_t *iops, uint64_t *bps);
/* The same for all taps of a pool together. The limits are the pool's
 * (pool_qos) and go with it: a pool made again starts without. */
void tap_set_pool_qos(struct pool *pool, uint64_t iops, uint64_t bps);
void tap_get_pool_qos(struct pool *pool, uint64_t *iops, uint64_t *bps);
/* The tap serving this tap's parent chain, or NULL. */
struct tap *tap_parent(const struct tap *t);
/* For the tap: driver. Take the running tap NAME as a parent (it cannot be
 * destroyed while stacked on): -ENOENT no such tap, -ESHUTDOWN closing. */
int tap_stack_get(const char *name, struct tap **out, struct errbuf *eb);
void tap_stack_put(struct tap *t);
/* The tap's open image chain (NULL while paused). */
struct image *tap_chain(const struct tap *t);

/* Look up by name, or by minor given as a decimal string. */
struct tap *tap_find(const char *name_or_minor);
struct tap *tap_by_minor(int minor);
struct tap *tap_first(void);
struct tap *tap_next(struct tap *t);
unsigned tap_count(void);

const char *tap_name(const struct tap *t);
int tap_minor(const struct tap *t);
const char *tap_image(const struct tap *t);
uint64_t tap_size(const struct tap *t);
bool tap_read_only(const struct tap *t);
enum tap_state tap_state(const struct tap *t);
const char *tap_state_name(enum tap_state s);
struct pool *tap_pool(const struct tap *t);
void tap_get_stats(const struct tap *t, struct tap_stats *st);
/* Capabilities of the image, for exports to advertise. */
bool tap_can_flush(const struct tap *t);
bool tap_can_fua(const struct tap *t);
bool tap_can_trim(const struct tap *t);       /* TRIM frees storage */
bool tap_can_fast_zero(const struct tap *t);  /* WRITE_ZEROES is cheap */
/* Smallest I/O unit the image prefers (requests of any alignment work). */
uint32_t tap_align(const struct tap *t);

/* A client of an export attaches for as long as it may send requests.
 * -ESHUTDOWN if the tap is closing. */
int tap_attach(struct tap *t);
void tap_detach(struct tap *t);

/* Validate req and get its buffer (for its first piece: see below).
 * Returns 0 when req->buf is ready (for WRITE the export fills it, then
 * submits), 1 when ready(req, 0) will be called later, or a negative
 * errno: -EINVAL (read or block status past the end, bad length), -ENOSPC
 * (write, trim or zeroes past the end), -EPERM (write, trim or zeroes to a
 * read-only tap), -ESHUTDOWN (tap closing), -ENOMEM (a write with a
 * partial page at an end, too big for a pool of less than three pages).
 * ready may also be called with an error. The pool's size never fails a
 * READ or WRITE up to TAP_REQ_MAX otherwise.
 *
 * Every op works on every tap, whatever the image can do: TRIM is a no-op
 * where storage cannot be freed, WRITE_ZEROES writes zeros where the image
 * has no cheaper way (or fails with -ENOTSUP under IMAGE_F_FAST_ZERO),
 * BLOCK_STATUS says "all data" where the image cannot tell, CACHE succeeds.
 * WRITE_ZEROES and TRIM may be up to 4 GiB - 1 long (no buffer needed);
 * READ and WRITE at most TAP_REQ_MAX. */
int tap_req_prepare(struct tap *t, struct tap_req *req,
		    void (*ready)(struct tap_req *req, int err));
/* Run a prepared request (its current piece); req->done is called later. */
void tap_req_submit(struct tap_req *req);

/* Requests in pieces. A pool bounds memory, not the size of a request: a
 * READ or WRITE whose buffer the tap's pool can never give (larger than
 * pool_max_get, or larger than the pool became while it waited: a
 * shrink, and tap_set_pool does not move it) is served in pieces through
 * one buffer of a quarter of what the pool gives (three pages at least:
 * the buffer is held while the client sets the pace, and the whole pool
 * would stop the other taps in it), taken once (waiting like any other)
 * and kept until tap_req_release. req->buf then holds only the
 * piece [piece_off, piece_off + piece_len); pieces follow in order, each a
 * whole number of pages but the first and the last, so only those two may
 * need a read-modify-write. The export moves the data piece by piece:
 *
 *   prepare (ready) -> WRITE: fill piece -> submit -> done
 *     -> error: the request failed (earlier pieces may have landed, as
 *        with any write not acknowledged; an export that sent part of a
 *        READ must tell its client or hang up)
 *     -> tap_req_more: tap_req_next, then READ: submit (after the last
 *        piece's data left: buf is reused), WRITE: fill, submit
 *     -> else the request is complete.
 *
 * Every piece goes through the gate on its own: it parks while the tap is
 * paused (a WRITE a pause interrupts lands partly before and partly after
 * it), QoS charges it its bytes (and the I/O once, with the first), a
 * FUA WRITE makes each piece durable before the next (so all of it is
 * when the last is done), and the stats count the request once. Holding
 * the buffer from piece to piece means a request in pieces never waits
 * for its own pool's memory after its first piece, so an export may hold
 * its later replies behind it. (Through a tap: parent each piece is a
 * request on the parent, with the parent's pool: see core/stack.c.)
 * An export that takes only what fits checks piece_len == len. */
bool tap_req_more(const struct tap_req *req);
/* After a piece's done with req->error == 0 and tap_req_more: the next
 * piece, in the same buffer. */
void tap_req_next(struct tap_req *req);
/* Give back the buffer (after the reply was sent), or cancel a request
 * still waiting for memory. Safe to call on a request without buffer. */
void tap_req_release(struct tap_req *req);

/* A READ without a buffer: move [off, off + len) of the image into the
 * pipe pipe_fd by reference (splice(2)), there and then, for an export
 * that passes the pages on to its client. Only where that can neither
 * block nor bend a rule: a running tap with no QoS limit on it or its pool,
 * whose image is memory that offers splice_read. The caller makes sure the
 * pipe has room for len bytes. Returns len (counted in the tap's stats
 * like a READ); -EOPNOTSUPP when the request should go the usual way
 * (tap_req_prepare), which also reports any error; or, when the image
 * stopped short, the bytes it moved (the pipe holds a partial read). */
ssize_t tap_read_splice(struct tap *t, uint64_t off, uint32_t len, int pipe_fd);
/* Whether tap_read_splice may work now (it still checks). */
bool tap_can_splice(const struct tap *t);

/* A WRITE without a buffer: len bytes waiting in the pipe pipe_fd go to
 * [off, off + len) of the image by splice(2), there and then, under the
 * same rules as tap_read_splice, and only for writes that need nothing
 * more than that: no FUA, aligned to the image, clear of any
 * read-modify-write in flight or waiting. The pipe must hold at least len
 * bytes. A WRITE may go in pieces as its payload arrives, in order, each
 * a multiple of a page but the last one; last says this piece ends it.
 * Returns the bytes written and taken from the pipe: len (the last piece
 * counts the WRITE in the stats), or fewer when the tap declined or the
 * image stopped short; the rest is then for a WRITE the usual way
 * (tap_req_prepare, with off and len moved past what was written), which
 * reports any error. Pieces are never written while the tap is paused, so
 * a WRITE whose payload a pause interrupts lands partly before it and
 * partly after (as any write not yet acknowledged may). */
size_t tap_write_splice(struct tap *t, uint64_t off, uint32_t len, uint32_t flags, int pipe_fd,
			bool last);
/* Whether tap_write_splice may take this write now (it checks again, and
 * for conflicts): also whether the usual way could, were it to end up
 * there (its pool is big enough). flags: IMAGE_F_*. */
bool tap_can_splice_write(const struct tap *t, uint64_t off, uint32_t len, uint32_t flags);

/* Called when taps come, change state and go; used by the bus. */
enum tap_event { TAP_ADDED, TAP_CHANGED, TAP_REMOVED };
void tap_set_listener(void (*fn)(struct tap *t, enum tap_event ev));

#endif
