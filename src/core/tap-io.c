/* The request path of a tap: validation, buffers from the tap's pool, the
 * gate (a paused tap parks requests, a QoS limit queues them), read-modify-
 * write for clients that are not aligned to the image, zeroing and trimming
 * whatever the image can do, and asynchronous completion. Every completion
 * reaches the export from a deferred event, never from inside the call that
 * started it, so exports need not be reentrant and no call chain grows with
 * the queue depth.
 *
 * tap.c drives this file (setup, stop, resume) and hears back only through
 * the drained callback: nothing here calls up into the registry. */
#include <errno.h>
#include <event2/event.h>
#include <string.h>
#include <sys/mman.h>

#include "drivers/image.h"
#include "lib/log.h"
#include "internal.h"

/* Source of zeros for images that cannot zero a range cheaply. */
#define ZERO_CHUNK (1u << 20)

static struct {
	struct event_base *base;
	/* Completed requests whose done callback is still to be called. */
	TAILQ_HEAD(, tap_req) done_q;
	struct event *done_ev;
	void *zeros;
	/* tap.c's: a closing or pausing tap may have drained. */
	void (*drained)(struct tap *t);
	/* The daemon is stopping: no request waits any more. */
	bool stopping;
} io = {
	.done_q = TAILQ_HEAD_INITIALIZER(io.done_q),
};

/* ---- completion ------------------------------------------------------ */

static void tap_run_done(evutil_socket_t fd, short what, void *arg)
{
	TAILQ_HEAD(, tap_req) q = TAILQ_HEAD_INITIALIZER(q);
	struct tap_req *req;

	(void)fd;
	(void)what;
	(void)arg;
	/* Only what is queued now: completions queued by these callbacks
	 * wait for the next round, so other events get their turn. */
	TAILQ_CONCAT(&q, &io.done_q, link);
	while ((req = TAILQ_FIRST(&q))) {
		struct tap *t = req->tap;

		TAILQ_REMOVE(&q, req, link);
		/* In flight until the export has heard of it: a closing tap
		 * must not go away under a completion not yet delivered. */
		t->st.inflight--;
		if (t->state == TAP_CLOSING || t->state == TAP_PAUSING)
			io.drained(t);
		req->done(req);
	}
}

static const char *op_name(enum image_op op)
{
	static const char *const names[] = {
		[IMAGE_OP_READ] = "read",		[IMAGE_OP_WRITE] = "write",
		[IMAGE_OP_FLUSH] = "flush",	[IMAGE_OP_TRIM] = "trim",
		[IMAGE_OP_WRITE_ZEROES] = "write-zeroes", [IMAGE_OP_BLOCK_STATUS] = "block-status",
		[IMAGE_OP_CACHE] = "cache",
	};

	return op < ARRAY_SIZE(names) && names[op] ? names[op] : "op";
}

static void tap_req_finish(struct tap_req *req, int err)
{
	struct tap *t = req->tap;

	req->error = err;
	if (err) {
		t->st.errors++;
		log_debug("%s: %s of %u at %llu failed: %s", t->name, op_name(req->op), req->len,
			  (unsigned long long)req->off, strerror(-err));
	}
	if (TAILQ_EMPTY(&io.done_q))
		event_active(io.done_ev, 0, 0);
	TAILQ_INSERT_TAIL(&io.done_q, req, link);
}

int tap_io_setup(struct event_base *base, void (*drained)(struct tap *t))
{
	io.base = base;
	io.drained = drained;
	io.done_ev = event_new(base, -1, 0, tap_run_done, NULL);
	/* Written once, then only read: the kernel shares nothing with us
	 * here, it only copies zeros out. */
	io.zeros = mmap(NULL, ZERO_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!io.done_ev || io.zeros == MAP_FAILED) {
		io.zeros = NULL;
		tap_io_teardown();
		return -ENOMEM;
	}
	memset(io.zeros, 0, ZERO_CHUNK);
	return 0;
}

void tap_io_teardown(void)
{
	if (io.done_ev)
		event_free(io.done_ev);
	if (io.zeros)
		munmap(io.zeros, ZERO_CHUNK);
	io.done_ev = NULL;
	io.zeros = NULL;
	/* A fresh start for whoever sets up again (unit tests do). */
	io.stopping = false;
}

void tap_io_stop(void)
{
	io.stopping = true;
}

bool tap_io_stopping(void)
{
	return io.stopping;
}

static void tap_qos_timer(evutil_socket_t fd, short what, void *arg);

int tap_io_init(struct tap *t)
{
	TAILQ_INIT(&t->writes);
	TAILQ_INIT(&t->blocked);
	TAILQ_INIT(&t->parked);
	TAILQ_INIT(&t->qos_q);
	t->qos_timer = evtimer_new(io.base, tap_qos_timer, t);
	return t->qos_timer ? 0 : -ENOMEM;
}

void tap_io_free(struct tap *t)
{
	if (t->qos_timer)
		event_free(t->qos_timer);
	t->qos_timer = NULL;
}

/* ---- write exclusion --------------------------------------------------
 * A read-modify-write rewrites whole blocks around the client's range, so
 * it must not run alongside any other write touching those blocks, or one
 * of them would put back stale bytes. Aligned writes only conflict with
 * read-modify-writes; two plain writes to one place are the client's
 * business, as on any disk. Write-zeroes with unaligned edges counts as a
 * read-modify-write. */

static bool ranges_overlap(const struct tap_req *a, const struct tap_req *b)
{
	return a->env_off < b->env_off + b->env_len && b->env_off < a->env_off + a->env_len;
}

/* Conflicts with a write in flight, or with an earlier blocked one (so that
 * overlapping writes still land in the order they came). */
bool tap_write_conflicts(struct tap *t, const struct tap_req *req)
{
	struct tap_req *w;

	TAILQ_FOREACH(w, &t->writes, link)
		if ((req->rmw || w->rmw) && ranges_overlap(req, w))
			return true;
	TAILQ_FOREACH(w, &t->blocked, link) {
		if (w == req)
			break;
		if ((req->rmw || w->rmw) && ranges_overlap(req, w))
			return true;
	}
	return false;
}

static void tap_write_go(struct tap_req *req);

static void tap_write_end(struct tap_req *req, int err)
{
	struct tap *t = req->tap;
	struct tap_req *b;

	TAILQ_REMOVE(&t->writes, req, link);
	tap_req_finish(req, err);
	/* Let blocked writes that no longer conflict go, oldest first. The
	 * scan restarts after each start because a driver may complete at
	 * once and change both lists under us. */
	for (;;) {
		TAILQ_FOREACH(b, &t->blocked, link)
			if (!tap_write_conflicts(t, b))
				break;
		if (!b)
			break;
		TAILQ_REMOVE(&t->blocked, b, link);
		tap_write_go(b);
	}
}

static void tap_write_start(struct tap_req *req)
{
	if (tap_write_conflicts(req->tap, req))
		TAILQ_INSERT_TAIL(&req->tap->blocked, req, link);
	else
		tap_write_go(req);
}

/* Where the image's envelope starts in the buffer, and the scratch pages
 * after the data pages (see tap_req_need). */
static char *tap_env_buf(const struct tap_req *req)
{
	return (char *)req->base + (req->env_off - req->buf_off);
}

static char *tap_scratch(const struct tap_req *req)
{
	if (req->op == IMAGE_OP_WRITE_ZEROES)
		return req->base;
	return (char *)req->base +
	       (ALIGN_UP(req->piece_off + req->piece_len, (uint64_t)POOL_PAGE) - req->buf_off);
}

static void tap_io_set(struct image_io *iop, enum image_op op, uint32_t flags, uint64_t off,
		       uint32_t len, void *buf, void (*done)(struct image_io *, int))
{
	iop->op = op;
	iop->flags = flags;
	iop->off = off;
	iop->len = len;
	iop->buf = buf;
	iop->done = done;
}

/* ---- read-modify-write -------------------------------------------------
 * Buffer layout of an unaligned write: [envelope][head block][tail block].
 * The client's data sits inside the envelope; the partial head and tail
 * blocks are read into the scratch blocks and their outside bytes copied
 * around the data, then the whole envelope is written. */

enum { RMW_HEAD, RMW_TAIL, RMW_WRITE };

static void tap_rmw_step(struct tap_req *req);

static void tap_rmw_done(struct image_io *iop, int err)
{
	struct tap_req *req = container_of(iop, struct tap_req, io);
	uint32_t a = req->tap->img->align;
	char *env = tap_env_buf(req);
	char *scratch = tap_scratch(req);
	uint64_t end = req->piece_off + req->piece_len;
	uint64_t env_end = req->env_off + req->env_len;

	if (err) {
		tap_write_end(req, err);
		return;
	}
	switch (req->stage) {
	case RMW_HEAD:
		memcpy(env, scratch, req->piece_off - req->env_off);
		if (req->env_len == a && end != env_end) {
			/* Head and tail are the same block. */
			memcpy(env + (end - req->env_off), scratch + (end - req->env_off),
			       env_end - end);
			req->stage = RMW_WRITE;
		} else {
			req->stage = RMW_TAIL;
		}
		break;
	case RMW_TAIL:
		memcpy(env + (end - req->env_off), scratch + a + (end - (env_end - a)), env_end - end);
		req->stage = RMW_WRITE;
		break;
	default:
		tap_write_end(req, 0);
		return;
	}
	tap_rmw_step(req);
}

static void tap_rmw_step(struct tap_req *req)
{
	struct tap *t = req->tap;
	uint32_t a = t->img->align;
	char *scratch = tap_scratch(req);

	if (req->stage == RMW_HEAD && req->piece_off == req->env_off)
		req->stage = RMW_TAIL;
	if (req->stage == RMW_TAIL &&
	    req->piece_off + req->piece_len == req->env_off + req->env_len)
		req->stage = RMW_WRITE;

	switch (req->stage) {
	case RMW_HEAD:
		tap_io_set(&req->io, IMAGE_OP_READ, 0, req->env_off, a, scratch, tap_rmw_done);
		break;
	case RMW_TAIL:
		tap_io_set(&req->io, IMAGE_OP_READ, 0, req->env_off + req->env_len - a, a,
			   scratch + a, tap_rmw_done);
		break;
	default:
		tap_io_set(&req->io, IMAGE_OP_WRITE, req->flags & IMAGE_F_FUA, req->env_off,
			   (uint32_t)req->env_len, tap_env_buf(req), tap_rmw_done);
		break;
	}
	image_submit(t->img, &req->io);
}

/* ---- write-zeroes --------------------------------------------------------
 * In up to three steps: a partial head block (read it into the one-block
 * scratch buffer, clear the client's part, write it back), the aligned
 * middle (the image zeroes it, or we write zeros from a shared zero buffer
 * if it cannot), a partial tail block (as the head). req->pos tracks the
 * next byte to zero. */

enum { Z_EDGE_READ, Z_EDGE_WRITE, Z_MIDDLE, Z_MIDDLE_WRITE };

static void tap_zero_step(struct tap_req *req);

static void tap_zero_done(struct image_io *iop, int err)
{
	struct tap_req *req = container_of(iop, struct tap_req, io);
	struct tap *t = req->tap;

	if (err == -EOPNOTSUPP && req->stage == Z_MIDDLE) {
		/* The storage cannot zero after all: write zeros from now on,
		 * unless the client only wanted it if it is fast. */
		t->img->can_zero = false;
		if (req->flags & IMAGE_F_FAST_ZERO) {
			tap_write_end(req, -ENOTSUP);
			return;
		}
		req->stage = Z_MIDDLE_WRITE;
		tap_zero_step(req);
		return;
	}
	if (err) {
		tap_write_end(req, err);
		return;
	}
	switch (req->stage) {
	case Z_EDGE_READ: {
		uint64_t blk = ALIGN_DOWN(req->pos, (uint64_t)t->img->align);
		uint64_t end = MIN(req->off + req->len, blk + t->img->align);

		memset((char *)req->base + (req->pos - blk), 0, end - req->pos);
		req->stage = Z_EDGE_WRITE;
		tap_io_set(&req->io, IMAGE_OP_WRITE, req->flags & IMAGE_F_FUA, blk, t->img->align,
			   req->base, tap_zero_done);
		image_submit(t->img, &req->io);
		return;
	}
	case Z_EDGE_WRITE:
		req->pos = MIN(req->off + req->len,
			       ALIGN_DOWN(req->pos, (uint64_t)t->img->align) + t->img->align);
		break;
	default:
		req->pos += iop->len;
		break;
	}
	tap_zero_step(req);
}

static void tap_zero_step(struct tap_req *req)
{
	struct tap *t = req->tap;
	uint32_t a = t->img->align;
	uint64_t end = req->off + req->len;
	uint64_t mid_end = ALIGN_DOWN(end, (uint64_t)a);
	uint32_t flags = req->flags & (IMAGE_F_FUA | IMAGE_F_NO_HOLE);

	if (req->pos >= end) {
		tap_write_end(req, 0);
		return;
	}
	if (req->pos % a || req->pos >= mid_end) {
		/* A partial block at either end. */
		req->stage = Z_EDGE_READ;
		tap_io_set(&req->io, IMAGE_OP_READ, 0, ALIGN_DOWN(req->pos, (uint64_t)a), a,
			   req->base, tap_zero_done);
	} else if (req->stage != Z_MIDDLE_WRITE && t->img->can_zero) {
		req->stage = Z_MIDDLE;
		tap_io_set(&req->io, IMAGE_OP_WRITE_ZEROES, flags, req->pos,
			   (uint32_t)MIN(mid_end - req->pos, UINT32_MAX / a * a), NULL,
			   tap_zero_done);
	} else {
		req->stage = Z_MIDDLE_WRITE;
		tap_io_set(&req->io, IMAGE_OP_WRITE, req->flags & IMAGE_F_FUA, req->pos,
			   (uint32_t)MIN(mid_end - req->pos, ZERO_CHUNK), io.zeros, tap_zero_done);
	}
	image_submit(t->img, &req->io);
}

/* ---- request path --------------------------------------------------------- */

static void tap_io_done(struct image_io *iop, int err)
{
	struct tap_req *req = container_of(iop, struct tap_req, io);

	switch (req->op) {
	case IMAGE_OP_WRITE:
	case IMAGE_OP_TRIM:
		tap_write_end(req, err);
		return;
	case IMAGE_OP_BLOCK_STATUS:
		req->ext_count = err ? 0 : iop->ext_count;
		break;
	default:
		break;
	}
	tap_req_finish(req, err);
}

static void tap_write_go(struct tap_req *req)
{
	struct tap *t = req->tap;

	TAILQ_INSERT_TAIL(&t->writes, req, link);
	switch (req->op) {
	case IMAGE_OP_WRITE_ZEROES:
		if ((req->flags & IMAGE_F_FAST_ZERO) && !t->img->can_zero) {
			tap_write_end(req, -ENOTSUP);
			return;
		}
		req->pos = req->off;
		req->stage = Z_MIDDLE;
		tap_zero_step(req);
		return;
	case IMAGE_OP_TRIM:
		tap_io_set(&req->io, IMAGE_OP_TRIM, req->flags & IMAGE_F_FUA, req->env_off,
			   (uint32_t)req->env_len, NULL, tap_io_done);
		break;
	default:
		if (req->rmw) {
			req->stage = RMW_HEAD;
			tap_rmw_step(req);
			return;
		}
		tap_io_set(&req->io, IMAGE_OP_WRITE, req->flags & IMAGE_F_FUA, req->env_off,
			   (uint32_t)req->env_len, tap_env_buf(req), tap_io_done);
		break;
	}
	image_submit(t->img, &req->io);
}

static void tap_buf_ready(struct pool_waiter *w, void *buf, int err);

/* Take req's buffer from its pool now (0), queue for it (1), or fail. */
static int tap_req_get(struct tap_req *req)
{
	size_t need;
	int ret = tap_req_need(req, pool_max_get(req->pool), &need);

	if (ret < 0 || !need)
		return ret;
	req->base_len = need;
	req->wait.len = need;
	req->wait.ready = tap_buf_ready;
	ret = pool_get(req->pool, need, &req->wait, &req->base);
	if (ret < 0)
		req->base_len = 0;
	return ret;
}

static void tap_buf_ready(struct pool_waiter *w, void *buf, int err)
{
	struct tap_req *req = container_of(w, struct tap_req, wait);

	if (err == -EINVAL) {
		/* The pool shrank below the buffer we waited for: wait
		 * again, at the back, for one the pool can still give,
		 * and go in pieces. */
		err = tap_req_get(req);
		if (err == 1)
			return;
		buf = req->base;
	}
	req->tap->st.waiting--;
	if (err) {
		req->tap->held--;
	} else {
		req->base = buf;
		if (req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE)
			req->buf = (char *)buf + (req->piece_off - req->buf_off);
	}
	req->ready(req, err);
}

static bool op_writes(enum image_op op)
{
	return op == IMAGE_OP_WRITE || op == IMAGE_OP_TRIM || op == IMAGE_OP_WRITE_ZEROES;
}

int tap_req_prepare(struct tap *t, struct tap_req *req, void (*ready)(struct tap_req *req, int err))
{
	int ret;

	req->tap = t;
	req->ready = ready;
	req->buf = NULL;
	req->piece_off = req->off;
	req->piece_len = req->len;
	req->base = NULL;
	req->base_len = 0;
	req->error = 0;
	req->rmw = false;
	req->wait.queued = false;
	req->ext_count = 0;
	req->parked = false;
	/* While pausing or paused, requests are prepared as usual and wait
	 * at submission. */
	if (t->state == TAP_OPENING || t->state == TAP_CLOSING)
		return -ESHUTDOWN;
	if (op_writes(req->op) && t->read_only)
		return -EPERM;
	if (req->len > TAP_REQ_MAX && (req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE))
		return -EINVAL;
	if (req->op == IMAGE_OP_BLOCK_STATUS && (!req->ext || !req->ext_max || !req->len))
		return -EINVAL;
	if (req->off > t->size || req->len > t->size - req->off)
		return op_writes(req->op) ? -ENOSPC : -EINVAL;

	req->pool = t->pool;
	ret = tap_req_get(req);
	if (ret < 0 || (ret == 0 && !req->base))
		return ret;
	t->held++;
	if (ret == 1) {
		t->st.waiting++;
		return 1;
	}
	if (req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE)
		req->buf = (char *)req->base + (req->piece_off - req->buf_off);
	return 0;
}

static void tap_count_op(struct tap *t, const struct tap_req *req)
{
	switch (req->op) {
	/* A request in pieces counts once, its bytes as they go. */
	case IMAGE_OP_READ:
		t->st.reads += req->piece_off == req->off;
		t->st.read_bytes += req->piece_len;
		break;
	case IMAGE_OP_WRITE:
		t->st.writes += req->piece_off == req->off;
		t->st.write_bytes += req->piece_len;
		break;
	case IMAGE_OP_FLUSH:
		t->st.flushes++;
		break;
	case IMAGE_OP_TRIM:
		t->st.trims++;
		break;
	case IMAGE_OP_WRITE_ZEROES:
		t->st.zeroes++;
		break;
	default:
		break;
	}
}

/* Run a request that has passed the gate. */
static void tap_req_dispatch(struct tap_req *req)
{
	struct tap *t = req->tap;
	struct image *img = t->img;

	req->parked = false;
	t->st.inflight++;
	if (!img) {
		/* Parked on a paused tap that is now closing for good. */
		tap_req_finish(req, -ESHUTDOWN);
		return;
	}
	tap_count_op(t, req);
	tap_req_plan(t, req);
	switch (req->op) {
	case IMAGE_OP_READ:
		if (req->len == 0)
			break;
		tap_io_set(&req->io, IMAGE_OP_READ, 0, req->env_off, (uint32_t)req->env_len,
			   tap_env_buf(req), tap_io_done);
		image_submit(img, &req->io);
		return;
	case IMAGE_OP_WRITE:
	case IMAGE_OP_WRITE_ZEROES:
		if (req->len == 0)
			break;
		tap_write_start(req);
		return;
	case IMAGE_OP_TRIM:
		/* Nothing whole to free, or nothing can be freed: a trim
		 * that does nothing is a correct trim. */
		if (!req->env_len || !img->can_trim)
			break;
		tap_write_start(req);
		return;
	case IMAGE_OP_FLUSH:
		if (!img->can_flush)
			break;
		tap_io_set(&req->io, IMAGE_OP_FLUSH, 0, 0, 0, NULL, tap_io_done);
		image_submit(img, &req->io);
		return;
	case IMAGE_OP_BLOCK_STATUS:
		if (!img->can_extents) {
			/* Without allocation information everything is data,
			 * which is always true. */
			req->ext[0].len = req->len;
			req->ext[0].flags = 0;
			req->ext_count = 1;
			break;
		}
		tap_io_set(&req->io, IMAGE_OP_BLOCK_STATUS, 0, req->off, req->len, NULL, tap_io_done);
		req->io.ext = req->ext;
		req->io.ext_max = req->ext_max;
		req->io.ext_count = 0;
		image_submit(img, &req->io);
		return;
	case IMAGE_OP_CACHE:
		/* Data moves with O_DIRECT or lives in memory: there is no
		 * cache of ours to warm. */
		break;
	}
	tap_req_finish(req, 0);
}

/* ---- the gate ------------------------------------------------------------
 * Between submission and dispatch a request may wait, in its tap's order:
 * parked while the tap is paused (until the unpause), or queued while a QoS
 * limit holds it back (until a timer says the buckets have refilled; qos.c
 * says how long). Once the daemon stops, nothing waits any more. */

/* The pause rule, written here only: a request parks while its tap is
 * pausing or paused, unless the daemon is stopping (then it runs on the
 * image if that is still open, or fails in tap_req_dispatch). */
static bool tap_holds(const struct tap *t)
{
	return (t->state == TAP_PAUSING || t->state == TAP_PAUSED) && !io.stopping;
}

static void tap_qos_run(struct tap *t);

/* Park, queue for QoS, or dispatch. qos_done: the request has passed QoS
 * (and paid) already; it may still have to park. */
static void tap_req_go(struct tap_req *req, bool qos_done)
{
	struct tap *t = req->tap;

	if (tap_holds(t)) {
		req->parked = true;
		TAILQ_INSERT_TAIL(&t->parked, req, link);
		return;
	}
	/* Uncounted requests never wait; counted ones queue behind any that
	 * already wait, so a limit lifted keeps the order. */
	if (!qos_done && tap_qos_counted(req) && (!TAILQ_EMPTY(&t->qos_q) || tap_qos_limited(t))) {
		TAILQ_INSERT_TAIL(&t->qos_q, req, link);
		t->st.waiting++;
		if (TAILQ_FIRST(&t->qos_q) == req)
			tap_qos_run(t);
		return;
	}
	tap_req_dispatch(req);
}

void tap_req_submit(struct tap_req *req)
{
	tap_req_go(req, false);
}

/* Let queued requests go while the buckets allow; arm the timer for the
 * first that must wait. One whose turn comes during a pause parks, paid,
 * and waits for the unpause with the others. */
static void tap_qos_run(struct tap *t)
{
	struct tap_req *req;

	while ((req = TAILQ_FIRST(&t->qos_q))) {
		double w = tap_qos_admit(t, req, io.stopping);

		if (w > 0) {
			struct timeval tv;

			tv.tv_sec = (time_t)w;
			tv.tv_usec = (suseconds_t)((w - (double)tv.tv_sec) * 1e6) + 1;
			evtimer_add(t->qos_timer, &tv);
			return;
		}
		TAILQ_REMOVE(&t->qos_q, req, link);
		t->st.waiting--;
		tap_req_go(req, true);
	}
}

static void tap_qos_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tap_qos_run(arg);
}

void tap_io_qos_changed(struct tap *t)
{
	tap_qos_run(t);
}

void tap_io_release(struct tap *t)
{
	struct tap_req *req;

	evtimer_del(t->qos_timer);
	while ((req = TAILQ_FIRST(&t->qos_q))) {
		TAILQ_REMOVE(&t->qos_q, req, link);
		t->st.waiting--;
		tap_req_dispatch(req);
	}
	while ((req = TAILQ_FIRST(&t->parked))) {
		TAILQ_REMOVE(&t->parked, req, link);
		tap_req_dispatch(req);
	}
}

void tap_io_resume(struct tap *t)
{
	struct tap_req *req;

	while ((req = TAILQ_FIRST(&t->parked))) {
		TAILQ_REMOVE(&t->parked, req, link);
		req->parked = false;
		tap_req_go(req, false);
	}
}

void tap_req_release(struct tap_req *req)
{
	struct tap *t = req->tap;

	if (!t)
		return;
	if (req->parked) {
		/* Given up while the tap was paused. */
		TAILQ_REMOVE(&t->parked, req, link);
		req->parked = false;
	}
	if (req->wait.queued) {
		pool_cancel(req->pool, &req->wait);
		t->st.waiting--;
		t->held--;
	}
	if (req->base) {
		pool_put(req->pool, req->base, req->base_len);
		req->base = NULL;
		req->buf = NULL;
		t->held--;
	}
	if (t->state == TAP_CLOSING)
		io.drained(t);
}
