/* Taps: registry, request validation, buffers from the tap's pool,
 * read-modify-write for clients that are not aligned to the image, and
 * asynchronous completion. Every completion reaches the export from a
 * deferred event, never from inside the call that started it, so exports
 * need not be reentrant and no call chain grows with the queue depth. */
#include "tap.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "image.h"
#include "log.h"
#include "minor.h"

struct tap {
	TAILQ_ENTRY(tap) link;
	char name[TAP_NAME_MAX];
	int minor;
	enum tap_state state;
	struct image *img;
	struct pool *pool;
	bool read_only;
	struct tap_stats st;
	/* Requests holding (or waiting for) a pool buffer: the tap must
	 * outlive them, so closing waits for this to reach zero too. */
	unsigned held;
	/* Writes in flight, for read-modify-write exclusion. */
	TAILQ_HEAD(, tap_req) writes;
	/* Writes waiting for an overlapping write to finish. */
	TAILQ_HEAD(, tap_req) blocked;
	/* Shutdown: flush, then close. */
	struct image_io flush_io;
	bool flushing;
};

static struct {
	struct event_base *base;
	TAILQ_HEAD(, tap) taps;
	unsigned count;
	struct minors minors;
	/* Completed requests whose done callback is still to be called. */
	TAILQ_HEAD(, tap_req) done_q;
	struct event *done_ev;
	void (*listener)(struct tap *t, enum tap_event ev);
	/* Daemon shutdown in progress. */
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
	struct event *shutdown_ev;
} taps = {
	.taps = TAILQ_HEAD_INITIALIZER(taps.taps),
	.done_q = TAILQ_HEAD_INITIALIZER(taps.done_q),
};

static void tap_notify(struct tap *t, enum tap_event ev)
{
	if (taps.listener)
		taps.listener(t, ev);
}

void tap_set_listener(void (*fn)(struct tap *t, enum tap_event ev))
{
	taps.listener = fn;
}

/* ---- completion ---------------------------------------------------- */

static void tap_run_done(evutil_socket_t fd, short what, void *arg)
{
	TAILQ_HEAD(, tap_req) q = TAILQ_HEAD_INITIALIZER(q);
	struct tap_req *req;

	(void)fd;
	(void)what;
	(void)arg;
	/* Only what is queued now: completions queued by these callbacks
	 * wait for the next round, so other events get their turn. */
	TAILQ_CONCAT(&q, &taps.done_q, link);
	while ((req = TAILQ_FIRST(&q))) {
		struct tap *t = req->tap;

		TAILQ_REMOVE(&q, req, link);
		/* In flight until the export has heard of it: a closing tap
		 * must not go away under a completion not yet delivered. */
		t->st.inflight--;
		if (t->state == TAP_CLOSING)
			event_active(taps.shutdown_ev, 0, 0);
		req->done(req);
	}
}

static void tap_req_finish(struct tap_req *req, int err)
{
	struct tap *t = req->tap;

	req->error = err;
	if (err) {
		t->st.errors++;
		log_debug("%s: %s of %u at %llu failed: %s", t->name,
			  req->op == TAP_OP_READ ? "read" : req->op == TAP_OP_WRITE ? "write" : "op",
			  req->len, (unsigned long long)req->off, strerror(-err));
	}
	if (TAILQ_EMPTY(&taps.done_q))
		event_active(taps.done_ev, 0, 0);
	TAILQ_INSERT_TAIL(&taps.done_q, req, link);
}

/* ---- write exclusion -------------------------------------------------
 * A read-modify-write rewrites whole blocks around the client's range, so
 * it must not run alongside any other write touching those blocks, or one
 * of them would put back stale bytes. Aligned writes only conflict with
 * read-modify-writes; two plain writes to one place are the client's
 * business, as on any disk. */

static bool ranges_overlap(const struct tap_req *a, const struct tap_req *b)
{
	return a->env_off < b->env_off + b->env_len && b->env_off < a->env_off + a->env_len;
}

/* Conflicts with a write in flight, or with an earlier blocked one (so that
 * overlapping writes still land in the order they came). */
static bool tap_write_conflicts(struct tap *t, const struct tap_req *req)
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

/* ---- read-modify-write ----------------------------------------------
 * Buffer layout of an unaligned write: [envelope][head block][tail block].
 * The client's data sits inside the envelope; the partial head and tail
 * blocks are read into the scratch blocks and their outside bytes copied
 * around the data, then the whole envelope is written. */

enum { RMW_HEAD, RMW_TAIL, RMW_WRITE };

static void tap_rmw_step(struct tap_req *req);

static void tap_rmw_done(struct image_io *io, int err)
{
	struct tap_req *req = container_of(io, struct tap_req, io);
	struct tap *t = req->tap;
	uint32_t a = t->img->align;
	char *env = req->base;
	char *scratch = env + req->env_len;
	uint64_t end = req->off + req->len;
	uint64_t env_end = req->env_off + req->env_len;

	if (err) {
		tap_write_end(req, err);
		return;
	}
	switch (req->stage) {
	case RMW_HEAD:
		memcpy(env, scratch, req->off - req->env_off);
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
	case RMW_WRITE:
		tap_write_end(req, 0);
		return;
	}
	tap_rmw_step(req);
}

static void tap_rmw_step(struct tap_req *req)
{
	struct tap *t = req->tap;
	uint32_t a = t->img->align;
	char *scratch = (char *)req->base + req->env_len;
	struct image_io *io = &req->io;

	if (req->stage == RMW_HEAD && req->off == req->env_off)
		req->stage = RMW_TAIL;
	if (req->stage == RMW_TAIL && req->off + req->len == req->env_off + req->env_len)
		req->stage = RMW_WRITE;

	io->done = tap_rmw_done;
	io->flags = 0;
	switch (req->stage) {
	case RMW_HEAD:
		io->op = TAP_OP_READ;
		io->off = req->env_off;
		io->len = a;
		io->buf = scratch;
		break;
	case RMW_TAIL:
		io->op = TAP_OP_READ;
		io->off = req->env_off + req->env_len - a;
		io->len = a;
		io->buf = scratch + a;
		break;
	default:
		io->op = TAP_OP_WRITE;
		io->flags = req->flags & IMAGE_F_FUA;
		io->off = req->env_off;
		io->len = req->env_len;
		io->buf = req->base;
		break;
	}
	image_submit(t->img, io);
}

/* ---- request path ---------------------------------------------------- */

static void tap_io_done(struct image_io *io, int err)
{
	struct tap_req *req = container_of(io, struct tap_req, io);

	if (req->op == TAP_OP_WRITE)
		tap_write_end(req, err);
	else
		tap_req_finish(req, err);
}

static void tap_write_go(struct tap_req *req)
{
	struct tap *t = req->tap;

	TAILQ_INSERT_TAIL(&t->writes, req, link);
	if (req->rmw) {
		req->stage = RMW_HEAD;
		tap_rmw_step(req);
		return;
	}
	req->io.op = TAP_OP_WRITE;
	req->io.flags = req->flags & IMAGE_F_FUA;
	req->io.off = req->env_off;
	req->io.len = req->env_len;
	req->io.buf = req->base;
	req->io.done = tap_io_done;
	image_submit(t->img, &req->io);
}

static void tap_write_start(struct tap_req *req)
{
	if (tap_write_conflicts(req->tap, req))
		TAILQ_INSERT_TAIL(&req->tap->blocked, req, link);
	else
		tap_write_go(req);
}

static void tap_buf_ready(struct pool_waiter *w, void *buf, int err)
{
	struct tap_req *req = container_of(w, struct tap_req, wait);

	req->tap->st.waiting--;
	if (err)
		req->tap->held--;
	else {
		req->base = buf;
		req->buf = (char *)buf + (req->off - req->env_off);
	}
	req->ready(req, err);
}

static bool tap_op_writes(enum tap_op op)
{
	return op == TAP_OP_WRITE || op == TAP_OP_TRIM || op == TAP_OP_WRITE_ZEROES;
}

int tap_req_prepare(struct tap *t, struct tap_req *req, void (*ready)(struct tap_req *req, int err))
{
	uint32_t a = t->img->align;
	int ret;

	req->tap = t;
	req->ready = ready;
	req->buf = NULL;
	req->base = NULL;
	req->base_len = 0;
	req->error = 0;
	req->rmw = false;
	req->wait.queued = false;
	if (t->state != TAP_RUNNING)
		return -ESHUTDOWN;
	if (tap_op_writes(req->op) && t->read_only)
		return -EPERM;
	if (req->len > TAP_REQ_MAX)
		return -EINVAL;
	if (req->off > t->img->size || req->len > t->img->size - req->off)
		return tap_op_writes(req->op) ? -ENOSPC : -EINVAL;
	if (req->op != TAP_OP_READ && req->op != TAP_OP_WRITE)
		return 0;
	if (req->len == 0)
		return 0;

	req->env_off = ALIGN_DOWN(req->off, a);
	req->env_len = (uint32_t)(ALIGN_UP(req->off + req->len, (uint64_t)a) - req->env_off);
	req->rmw = req->env_off != req->off || req->env_len != req->len;
	req->base_len = req->env_len;
	if (req->rmw && req->op == TAP_OP_WRITE)
		req->base_len += 2 * a;

	req->wait.len = req->base_len;
	req->wait.ready = tap_buf_ready;
	ret = pool_get(t->pool, req->base_len, &req->wait, &req->base);
	if (ret >= 0)
		t->held++;
	if (ret == 1) {
		t->st.waiting++;
		return 1;
	}
	if (ret < 0) {
		req->base_len = 0;
		return ret;
	}
	req->buf = (char *)req->base + (req->off - req->env_off);
	return 0;
}

void tap_req_submit(struct tap_req *req)
{
	struct tap *t = req->tap;

	t->st.inflight++;
	switch (req->op) {
	case TAP_OP_READ:
		t->st.reads++;
		t->st.read_bytes += req->len;
		break;
	case TAP_OP_WRITE:
		t->st.writes++;
		t->st.write_bytes += req->len;
		break;
	case TAP_OP_FLUSH:
		t->st.flushes++;
		break;
	case TAP_OP_TRIM:
		t->st.trims++;
		break;
	case TAP_OP_WRITE_ZEROES:
		t->st.zeroes++;
		break;
	}
	if (req->len == 0 && (req->op == TAP_OP_READ || req->op == TAP_OP_WRITE)) {
		tap_req_finish(req, 0);
		return;
	}
	switch (req->op) {
	case TAP_OP_WRITE:
		tap_write_start(req);
		return;
	case TAP_OP_READ:
		req->io.off = req->env_off;
		req->io.len = req->env_len;
		req->io.buf = req->base;
		break;
	case TAP_OP_FLUSH:
		if (!t->img->can_flush) {
			tap_req_finish(req, 0);
			return;
		}
		req->io.off = 0;
		req->io.len = 0;
		req->io.buf = NULL;
		break;
	default:
		req->io.off = req->off;
		req->io.len = req->len;
		req->io.buf = NULL;
		break;
	}
	req->io.op = req->op;
	req->io.flags = req->flags & IMAGE_F_FUA;
	req->io.done = tap_io_done;
	image_submit(t->img, &req->io);
}

void tap_req_release(struct tap_req *req)
{
	struct tap *t = req->tap;

	if (!t)
		return;
	if (req->wait.queued) {
		pool_cancel(t->pool, &req->wait);
		t->st.waiting--;
		t->held--;
	}
	if (req->base) {
		pool_put(t->pool, req->base, req->base_len);
		req->base = NULL;
		req->buf = NULL;
		t->held--;
	}
	if (t->state == TAP_CLOSING)
		event_active(taps.shutdown_ev, 0, 0);
}

/* ---- taps ---------------------------------------------------------- */

static bool tap_name_valid(const char *name, struct errbuf *eb)
{
	size_t n = strlen(name);
	bool digits = true;

	if (n == 0 || n >= TAP_NAME_MAX) {
		err_set(eb, "a tap name has 1 to %d characters", TAP_NAME_MAX - 1);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.')) {
			err_set(eb, "bad tap name '%s': use letters, digits, '_', '-' and '.'", name);
			return false;
		}
		digits &= c >= '0' && c <= '9';
	}
	if (digits) {
		err_set(eb, "bad tap name '%s': a number would be taken for a minor", name);
		return false;
	}
	return true;
}

int tap_create(const struct tap_config *cfg, struct tap **out, struct errbuf *eb)
{
	const char *pool_nm = cfg->pool && *cfg->pool ? cfg->pool : POOL_DEFAULT;
	struct tap *t;
	struct pool *pool;
	int minor, ret;

	if (taps.shutdown_done) {
		err_set(eb, "tapd is shutting down");
		return -ESHUTDOWN;
	}
	if (cfg->name && !tap_name_valid(cfg->name, eb))
		return -EINVAL;
	if (cfg->name && tap_find(cfg->name)) {
		err_set(eb, "a tap named '%s' exists already", cfg->name);
		return -EEXIST;
	}
	pool = pool_find(pool_nm);
	if (!pool) {
		err_set(eb, "no pool named '%s'", pool_nm);
		return -ENODEV;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	minor = minor_alloc(&taps.minors);
	if (minor < 0) {
		err_set(eb, "all %d minors are in use", MINOR_MAX);
		free(t);
		return minor;
	}
	t->minor = minor;
	if (cfg->name)
		snprintf(t->name, sizeof(t->name), "%s", cfg->name);
	else
		snprintf(t->name, sizeof(t->name), "tap%d", minor);
	if (!cfg->name && tap_find(t->name)) {
		err_set(eb, "the default name '%s' is taken by another tap; give a name", t->name);
		ret = -EEXIST;
		goto fail;
	}
	t->read_only = cfg->read_only;
	t->state = TAP_OPENING;
	TAILQ_INIT(&t->writes);
	TAILQ_INIT(&t->blocked);
	ret = image_open(cfg->image, cfg->read_only, &t->img, eb);
	if (ret < 0)
		goto fail;
	if (t->img->align > POOL_PAGE || (t->img->align & (t->img->align - 1))) {
		err_set(eb, "%s: unsupported I/O alignment %u", cfg->image, t->img->align);
		image_close(t->img);
		ret = -EINVAL;
		goto fail;
	}
	t->pool = pool;
	pool_ref(pool);
	t->state = TAP_RUNNING;
	TAILQ_INSERT_TAIL(&taps.taps, t, link);
	taps.count++;
	log_info("%s: created (minor %d, %s, %llu bytes, pool %s%s)", t->name, t->minor,
		 cfg->image, (unsigned long long)t->img->size, pool_name(pool),
		 t->read_only ? ", read-only" : "");
	tap_notify(t, TAP_ADDED);
	if (out)
		*out = t;
	return 0;
fail:
	minor_free(&taps.minors, minor);
	free(t);
	return ret;
}

/* Unlink, close and free; the minor goes last, when nothing refers to it. */
static void tap_free(struct tap *t)
{
	TAILQ_REMOVE(&taps.taps, t, link);
	taps.count--;
	tap_notify(t, TAP_REMOVED);
	image_close(t->img);
	pool_unref(t->pool);
	minor_free(&taps.minors, t->minor);
	free(t);
}

int tap_destroy(struct tap *t, struct errbuf *eb)
{
	if (t->st.connections) {
		err_set(eb, "tap %s has %u client%s connected", t->name, t->st.connections,
			t->st.connections == 1 ? "" : "s");
		return -EBUSY;
	}
	if (t->state != TAP_RUNNING || t->st.inflight || t->held) {
		err_set(eb, "tap %s is %s", t->name, tap_state_name(t->state));
		return -EBUSY;
	}
	log_info("%s: destroyed (minor %d)", t->name, t->minor);
	tap_free(t);
	return 0;
}

/* ---- shutdown --------------------------------------------------------
 * Each step runs from its own deferred event, so a tap is only freed when no
 * callback above us on the stack can still refer to it. */

static void tap_flush_done(struct image_io *io, int err)
{
	struct tap *t = container_of(io, struct tap, flush_io);

	if (err)
		log_err("%s: final flush failed: %s", t->name, strerror(-err));
	log_info("%s: closed", t->name);
	tap_free(t);
	event_active(taps.shutdown_ev, 0, 0);
}

static void tap_shutdown_check(evutil_socket_t fd, short what, void *arg)
{
	struct tap *t, *next;

	(void)fd;
	(void)what;
	(void)arg;
	for (t = TAILQ_FIRST(&taps.taps); t; t = next) {
		next = TAILQ_NEXT(t, link);
		if (t->state != TAP_CLOSING || t->st.inflight || t->held || t->flushing)
			continue;
		t->flushing = true;
		t->flush_io.op = TAP_OP_FLUSH;
		t->flush_io.done = tap_flush_done;
		if (t->img->can_flush && !t->read_only) {
			image_submit(t->img, &t->flush_io);
		} else {
			tap_flush_done(&t->flush_io, 0);
		}
	}
	if (taps.count == 0 && taps.shutdown_done) {
		void (*done)(void *) = taps.shutdown_done;

		taps.shutdown_done = NULL;
		done(taps.shutdown_arg);
	}
}

void tap_shutdown_all(void (*done)(void *arg), void *arg)
{
	struct tap *t;

	taps.shutdown_done = done;
	taps.shutdown_arg = arg;
	TAILQ_FOREACH(t, &taps.taps, link) {
		t->state = TAP_CLOSING;
		tap_notify(t, TAP_CHANGED);
	}
	event_active(taps.shutdown_ev, 0, 0);
}

void tap_setup(struct event_base *base)
{
	taps.base = base;
	taps.done_ev = event_new(base, -1, 0, tap_run_done, NULL);
	taps.shutdown_ev = event_new(base, -1, 0, tap_shutdown_check, NULL);
}

void tap_teardown(void)
{
	struct tap *t;

	while ((t = TAILQ_FIRST(&taps.taps)))
		tap_free(t);
	if (taps.done_ev)
		event_free(taps.done_ev);
	if (taps.shutdown_ev)
		event_free(taps.shutdown_ev);
	taps.done_ev = taps.shutdown_ev = NULL;
}

/* ---- lookup and properties ------------------------------------------- */

struct tap *tap_find(const char *key)
{
	struct tap *t;
	char *end;
	long minor;

	if (!key || !*key)
		return NULL;
	TAILQ_FOREACH(t, &taps.taps, link)
		if (strcmp(t->name, key) == 0)
			return t;
	minor = strtol(key, &end, 10);
	if (*end || minor < 0 || minor >= MINOR_MAX)
		return NULL;
	return tap_by_minor((int)minor);
}

struct tap *tap_by_minor(int minor)
{
	struct tap *t;

	TAILQ_FOREACH(t, &taps.taps, link)
		if (t->minor == minor)
			return t;
	return NULL;
}

struct tap *tap_first(void)
{
	return TAILQ_FIRST(&taps.taps);
}

struct tap *tap_next(struct tap *t)
{
	return TAILQ_NEXT(t, link);
}

unsigned tap_count(void)
{
	return taps.count;
}

const char *tap_name(const struct tap *t)
{
	return t->name;
}

int tap_minor(const struct tap *t)
{
	return t->minor;
}

const char *tap_image(const struct tap *t)
{
	return t->img->spec;
}

uint64_t tap_size(const struct tap *t)
{
	return t->img->size;
}

bool tap_read_only(const struct tap *t)
{
	return t->read_only;
}

enum tap_state tap_state(const struct tap *t)
{
	return t->state;
}

const char *tap_state_name(enum tap_state s)
{
	switch (s) {
	case TAP_OPENING:
		return "opening";
	case TAP_RUNNING:
		return "running";
	case TAP_CLOSING:
		return "closing";
	}
	return "unknown";
}

struct pool *tap_pool(const struct tap *t)
{
	return t->pool;
}

void tap_get_stats(const struct tap *t, struct tap_stats *st)
{
	*st = t->st;
}

bool tap_can_flush(const struct tap *t)
{
	return t->img->can_flush;
}

bool tap_can_fua(const struct tap *t)
{
	return t->img->can_flush;
}

int tap_attach(struct tap *t)
{
	if (t->state != TAP_RUNNING)
		return -ESHUTDOWN;
	t->st.connections++;
	return 0;
}

void tap_detach(struct tap *t)
{
	t->st.connections--;
}
