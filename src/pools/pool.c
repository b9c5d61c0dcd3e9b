/* Buffer pools. A pool's memory is a list of arenas (anonymous mappings,
 * populated and mlocked, at most POOL_ARENA_MAX each); each arena tracks its
 * pages in a bitmap and a buffer is a first-fit run of pages inside one arena.
 *
 * Invariants kept by pool_fit(): mapped >= size, and some arena is at least
 * min(size, POOL_ARENA_MAX) bytes, so every request pool_get() accepts can be
 * served once enough buffers return: nothing accepted ever waits forever.
 * Shrinking lowers size at once; arenas are unmapped (or replaced by smaller
 * ones) only when entirely free, which is why mapped can exceed size for a
 * while. Waiters are served strictly FIFO from a libevent event, never from
 * inside pool_put(), so a caller's completion path is never re-entered.
 *
 * Creating or growing a pool maps and locks its arenas on the workers, one
 * arena (at most POOL_ARENA_MAX) per job so that other workers' jobs are
 * not held up for long; meanwhile the pool serves at its old size and
 * drops no arena, so what the plan counted on is still there when the new
 * arenas are added. A shrink's remap (pool_fit) still maps on the loop:
 * at most two arenas, and only once the freed arenas are unmapped. */
#include "pool.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "bucket.h"
#include "lib/log.h"
#include "lib/worker.h"

/* A create or grow in progress: the workers map big (if not 0) and then
 * left bytes, one arena a job; done adds them to the pool. */
struct pool_op {
	struct worker_job job;
	struct pool *p;
	uint64_t size;         /* the pool's size when done */
	uint64_t big, left;    /* still to map */
	uint64_t total, added; /* bytes this op maps, and mapped so far */
	bool lock;             /* pool_lock, read on the worker */
	struct arena *cur;     /* the worker's result, NULL on failure */
	TAILQ_HEAD(, arena) fresh;
	pool_done_fn *done;
	void *arg;
};

struct pool {
	TAILQ_ENTRY(pool) link;
	char name[POOL_NAME_MAX];
	uint64_t size, in_use, high_water, mapped;
	uint32_t nwaiters, refs;
	bool refit;  /* size shrank: fail waiters that no longer fit */
	bool waking; /* inside pool_wake(): defer freeing */
	bool dying;
	enum pool_state state;
	struct pool_op *op; /* while creating or growing */
	struct event *wake;
	struct qos_bucket qos;
	TAILQ_HEAD(, arena) arenas;
	TAILQ_HEAD(, pool_waiter) waiters;
};

static TAILQ_HEAD(, pool) pools = TAILQ_HEAD_INITIALIZER(pools);
static struct event_base *pool_base;
static void (*pool_listener)(struct pool *p, enum pool_event ev);
static bool pool_lock = true;
static unsigned pool_count;

static void pool_notify(struct pool *p, enum pool_event ev)
{
	if (pool_listener)
		pool_listener(p, ev);
}

/* Largest request the pool can ever serve. */
static uint64_t pool_limit(const struct pool *p)
{
	return MIN(p->size, (uint64_t)POOL_ARENA_MAX);
}

uint64_t pool_max_get(const struct pool *p)
{
	return pool_limit(p);
}

static void *pool_alloc(struct pool *p, size_t n)
{
	struct arena *a;

	if (p->in_use + (uint64_t)n * POOL_PAGE > p->size)
		return NULL;
	TAILQ_FOREACH(a, &p->arenas, link) {
		ssize_t start = arena_take(a, n);

		if (start < 0)
			continue;
		p->in_use += (uint64_t)n * POOL_PAGE;
		p->high_water = MAX(p->high_water, p->in_use);
		return a->base + (size_t)start * POOL_PAGE;
	}
	return NULL;
}

static void arenas_drop(struct pool *p, bool all)
{
	struct arena *a, *next;

	for (a = TAILQ_FIRST(&p->arenas); a; a = next) {
		next = TAILQ_NEXT(a, link);
		if (all || !a->keep) {
			TAILQ_REMOVE(&p->arenas, a, link);
			p->mapped -= arena_bytes(a);
			arena_unmap(a);
		}
	}
}

/* Reconcile arenas with size (see the invariants at the top). Arenas in use
 * stay; a free one is kept if it can serve the largest request (and is no
 * bigger than needed) or helps cover size; new ones are mapped only for what
 * is missing. Nothing changes unless it fixes an invariant or lowers mapped,
 * so a pool at rest never remaps. The plan marks the arenas to keep and says
 * what to map: an arena of *big bytes (0: none), then *rest bytes in arenas
 * of at most POOL_ARENA_MAX. false: nothing to change. */
static bool pool_plan(struct pool *p, uint64_t *big_out, uint64_t *rest)
{
	uint64_t target = pool_limit(p), largest = 0, all_largest = 0, big = 0, total;
	int64_t deficit = p->size;
	struct arena *a;

	TAILQ_FOREACH(a, &p->arenas, link) {
		a->keep = a->free < a->pages;
		all_largest = MAX(all_largest, arena_bytes(a));
		if (a->keep) {
			deficit -= arena_bytes(a);
			largest = MAX(largest, arena_bytes(a));
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 && largest < target) {
			big = target;
			deficit -= big;
		}
		TAILQ_FOREACH(a, &p->arenas, link) {
			int64_t b = arena_bytes(a), t = target;
			bool serves_largest = largest < target && b >= t && b <= MAX(deficit, t);

			if (a->keep || !(pass ? b <= deficit : serves_largest))
				continue;
			a->keep = true;
			largest = MAX(largest, (uint64_t)b);
			deficit -= b;
		}
	}
	*big_out = big;
	*rest = deficit > 0 ? (uint64_t)deficit : 0;
	total = p->size + (deficit < 0 ? (uint64_t)-deficit : 0);
	return !(p->mapped >= p->size && all_largest >= target && total >= p->mapped);
}

/* Carry out pool_plan on the calling thread. New arenas are mapped before
 * old ones are dropped: on failure the pool is left as it was. */
static int pool_fit(struct pool *p)
{
	struct pool fresh = { .mapped = 0 }; /* only its arena list is used */
	uint64_t big, rest;
	struct arena *a;

	if (!pool_plan(p, &big, &rest))
		return 0;
	TAILQ_INIT(&fresh.arenas);
	while (big || rest) {
		uint64_t b = big ? big : MIN(rest, (uint64_t)POOL_ARENA_MAX);

		a = arena_map(b, pool_lock);
		if (!a) {
			arenas_drop(&fresh, true);
			return -ENOMEM;
		}
		arena_note(a, pool_lock);
		TAILQ_INSERT_TAIL(&fresh.arenas, a, link);
		fresh.mapped += b;
		if (big)
			big = 0;
		else
			rest -= b;
	}
	arenas_drop(p, false);
	p->mapped += fresh.mapped;
	TAILQ_CONCAT(&p->arenas, &fresh.arenas, link);
	return 0;
}

static void pool_dequeue(struct pool *p, struct pool_waiter *w)
{
	TAILQ_REMOVE(&p->waiters, w, link);
	w->queued = false;
	p->nwaiters--;
}

static void pool_kick(struct pool *p)
{
	if (!TAILQ_EMPTY(&p->waiters))
		event_active(p->wake, EV_TIMEOUT, 0);
}

static void pool_free(struct pool *p)
{
	arenas_drop(p, true);
	event_free(p->wake);
	free(p);
}

static void pool_wake(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;
	struct pool_waiter *w;
	void *buf;

	(void)fd;
	(void)what;
	p->waking = true;
	/* Callbacks may cancel or queue waiters, so rescan from the head
	 * after each one. */
	while (p->refit && !p->dying) {
		TAILQ_FOREACH(w, &p->waiters, link)
			if (w->len > pool_limit(p))
				break;
		if (!w) {
			p->refit = false;
			break;
		}
		pool_dequeue(p, w);
		w->ready(w, NULL, -EINVAL);
	}
	while (!p->dying && (w = TAILQ_FIRST(&p->waiters))) {
		buf = pool_alloc(p, ALIGN_UP(w->len, POOL_PAGE) / POOL_PAGE);
		if (!buf)
			break;
		pool_dequeue(p, w);
		w->ready(w, buf, 0);
	}
	p->waking = false;
	if (p->dying)
		pool_free(p);
	else
		pool_notify(p, POOL_CHANGED);
}

void pool_setup(struct event_base *base)
{
	pool_base = base;
}

void pool_set_lock(bool lock)
{
	pool_lock = lock;
}

void pool_set_listener(void (*fn)(struct pool *p, enum pool_event ev))
{
	pool_listener = fn;
}

static bool pool_name_valid(const char *name)
{
	size_t n = strlen(name);

	/* "." and ".." would be trouble as state file names. */
	if (n == 0 || n >= POOL_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			    "0123456789_.-") == n;
}

/* Sizes beyond this are certainly mistakes, and keep the arithmetic safe. */
#define POOL_SIZE_MAX (1ULL << 48)

static int pool_check_size(uint64_t size, struct errbuf *eb)
{
	if (size < POOL_PAGE || size > POOL_SIZE_MAX) {
		err_set(eb, "pool size must be between %u bytes and %llu bytes", POOL_PAGE,
			POOL_SIZE_MAX);
		return -EINVAL;
	}
	return 0;
}

/* Bytes the creates and grows in progress have still to map. */
static uint64_t pool_pending(void)
{
	uint64_t n = 0;
	struct pool *p;

	TAILQ_FOREACH(p, &pools, link)
		if (p->op)
			n += p->op->total - p->op->added;
	return n;
}

static int pool_check_mem(const char *name, uint64_t asked, struct errbuf *eb)
{
	struct pool_mem m;

	pool_mem_read(&m);
	m.pending = pool_pending();
	m.lock = pool_lock;
	return pool_mem_check(name, asked, &m, eb);
}

/* Checks shared by both creates, then a pool not yet listed. */
static int pool_new(const char *name, uint64_t size, struct pool **out, struct errbuf *eb)
{
	struct pool *p;
	int r;

	if (!name || !pool_name_valid(name)) {
		err_set(eb, "invalid pool name \"%s\": use 1 to 63 of A-Z a-z 0-9 _ . -",
			name ? name : "");
		return -EINVAL;
	}
	r = pool_check_size(size, eb);
	if (r < 0)
		return r;
	if (pool_find_any(name)) {
		err_set(eb, "pool %s already exists", name);
		return -EEXIST;
	}
	if (!pool_base) {
		err_set(eb, "pools are not set up");
		return -EINVAL;
	}
	if (pool_count >= POOL_COUNT_MAX) {
		err_set(eb, "pool %s: there are %u pools already, the most tapd keeps", name,
			pool_count);
		return -ENOSPC;
	}
	r = pool_check_mem(name, ALIGN_UP(size, POOL_PAGE), eb);
	if (r < 0)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p || !(p->wake = event_new(pool_base, -1, 0, pool_wake, p))) {
		free(p);
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	strcpy(p->name, name);
	p->size = ALIGN_UP(size, POOL_PAGE);
	TAILQ_INIT(&p->arenas);
	TAILQ_INIT(&p->waiters);
	*out = p;
	return 0;
}

static void pool_list(struct pool *p)
{
	TAILQ_INSERT_TAIL(&pools, p, link);
	pool_count++;
	pool_notify(p, POOL_ADDED);
}

int pool_create(const char *name, uint64_t size, struct pool **out, struct errbuf *eb)
{
	struct pool *p;
	int r;

	r = pool_new(name, size, &p, eb);
	if (r < 0)
		return r;
	r = pool_fit(p);
	if (r < 0) {
		pool_free(p);
		err_set(eb, "cannot map %llu bytes for pool %s", (unsigned long long)size, name);
		return r;
	}
	pool_list(p);
	if (out)
		*out = p;
	return 0;
}

static void pool_kill(struct pool *p);

static void pool_op_run(struct worker_job *job)
{
	struct pool_op *op = container_of(job, struct pool_op, job);

	op->cur = arena_map(op->big ? op->big : MIN(op->left, (uint64_t)POOL_ARENA_MAX), op->lock);
}

static void arena_list_free(struct pool_op *op)
{
	struct arena *a;

	while ((a = TAILQ_FIRST(&op->fresh))) {
		TAILQ_REMOVE(&op->fresh, a, link);
		arena_unmap(a);
	}
	if (op->cur)
		arena_unmap(op->cur);
	op->cur = NULL;
}

/* The op is over: give the pool its memory and size, or undo. The caller
 * is told last, once the pool is consistent, and op is gone by then. */
static void pool_op_finish(struct pool_op *op, int err, const char *msg)
{
	pool_done_fn *done = op->done;
	struct pool *p = op->p;
	bool creating = p->state == POOL_CREATING;
	void *arg = op->arg;

	if (err == 0 && !done)
		err = -ESHUTDOWN; /* pool_stop() answered it: undo */
	p->op = NULL;
	p->state = POOL_READY;
	if (err == 0) {
		TAILQ_CONCAT(&p->arenas, &op->fresh, link);
		p->mapped += op->added;
		p->size = op->size;
		free(op);
		pool_kick(p);
		pool_notify(p, POOL_CHANGED);
		done(arg, p, 0, NULL);
		return;
	}
	arena_list_free(op);
	free(op);
	if (p->dying) {
		p = NULL; /* pool_kill() is calling */
	} else if (creating) {
		pool_kill(p);
		p = NULL;
	} else {
		pool_notify(p, POOL_CHANGED);
	}
	if (done)
		done(arg, p, err, msg);
}

static void pool_op_done(struct worker_job *job)
{
	struct pool_op *op = container_of(job, struct pool_op, job);
	uint64_t b = op->big ? op->big : MIN(op->left, (uint64_t)POOL_ARENA_MAX);
	struct errbuf eb = { { 0 } };

	if (!op->cur) {
		err_set(&eb,
			"pool %s: cannot map %" PRIu64 " bytes (%" PRIu64 " of %" PRIu64
			" mapped): out of memory",
			op->p->name, b, op->added, op->total);
		pool_op_finish(op, -ENOMEM, eb.msg);
		return;
	}
	arena_note(op->cur, pool_lock);
	TAILQ_INSERT_TAIL(&op->fresh, op->cur, link);
	op->cur = NULL;
	op->added += b;
	if (op->big)
		op->big = 0;
	else
		op->left -= b;
	if (!op->done) {
		pool_op_finish(op, -ESHUTDOWN, NULL);
		return;
	}
	if (op->big || op->left) {
		/* One arena a job: jobs of other modules queued meanwhile
		 * run in between. */
		worker_submit(&op->job);
		pool_notify(op->p, POOL_CHANGED);
		return;
	}
	pool_op_finish(op, 0, NULL);
}

static int pool_op_start(struct pool *p, uint64_t size, uint64_t big, uint64_t rest,
			 pool_done_fn *done, void *arg, struct errbuf *eb)
{
	struct pool_op *op = calloc(1, sizeof(*op));

	if (!op) {
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	op->job.run = pool_op_run;
	op->job.done = pool_op_done;
	op->p = p;
	op->size = size;
	op->big = big;
	op->left = rest;
	op->total = big + rest;
	op->lock = pool_lock;
	op->done = done;
	op->arg = arg;
	TAILQ_INIT(&op->fresh);
	p->op = op;
	worker_submit(&op->job);
	return 1;
}

int pool_create_async(const char *name, uint64_t size, pool_done_fn *done, void *arg,
		      struct errbuf *eb)
{
	struct pool *p;
	uint64_t target;
	int r;

	r = pool_new(name, size, &p, eb);
	if (r < 0)
		return r;
	/* What pool_plan() says for an empty pool. */
	target = pool_limit(p);
	r = pool_op_start(p, p->size, target, p->size - target, done, arg, eb);
	if (r < 0) {
		pool_free(p);
		return r;
	}
	p->state = POOL_CREATING;
	pool_list(p);
	return 1;
}

/* Checks shared by both resizes; 1: go on. */
static int pool_resize_check(struct pool *p, uint64_t size, struct errbuf *eb)
{
	int r = pool_check_size(size, eb);

	if (r < 0)
		return r;
	if (p->dying)
		return -ESHUTDOWN;
	if (p->op) {
		err_set(eb,
			"pool %s: a %s is in progress (%" PRIu64 " of %" PRIu64
			" bytes mapped); try again once it has answered",
			p->name, p->state == POOL_CREATING ? "create" : "resize", p->op->added,
			p->op->total);
		return -EBUSY;
	}
	return 1;
}

/* Shrinks, and grows with nothing to map: at once. */
static int pool_resize_now(struct pool *p, uint64_t size)
{
	uint64_t old = p->size;

	p->size = size;
	if (pool_fit(p) < 0)
		log_debug("pool %s: cannot remap smaller arenas yet", p->name);
	/* A failed shrink-remap is harmless: the old arenas still cover it. */
	if (p->size < old)
		p->refit = true;
	pool_kick(p);
	pool_notify(p, POOL_CHANGED);
	return 0;
}

int pool_resize_async(struct pool *p, uint64_t size, pool_done_fn *done, void *arg,
		      struct errbuf *eb)
{
	uint64_t old = p->size, big, rest;
	int r = pool_resize_check(p, size, eb);

	if (r <= 0)
		return r;
	size = ALIGN_UP(size, POOL_PAGE);
	if (size <= old)
		return pool_resize_now(p, size);
	/* Plan at the new size, serve at the old one until it is mapped. */
	p->size = size;
	if (!pool_plan(p, &big, &rest))
		big = rest = 0;
	p->size = old;
	if (!big && !rest)
		return pool_resize_now(p, size);
	r = pool_check_mem(p->name, big + rest, eb);
	if (r < 0)
		return r;
	r = pool_op_start(p, size, big, rest, done, arg, eb);
	if (r > 0) {
		p->state = POOL_GROWING;
		pool_notify(p, POOL_CHANGED);
	}
	return r;
}

int pool_resize(struct pool *p, uint64_t size, struct errbuf *eb)
{
	uint64_t old = p->size, big, rest;
	int r = pool_resize_check(p, size, eb);

	if (r <= 0)
		return r;
	size = ALIGN_UP(size, POOL_PAGE);
	if (size > old) {
		p->size = size;
		r = pool_plan(p, &big, &rest) ? pool_check_mem(p->name, big + rest, eb) : 0;
		p->size = old;
		if (r < 0)
			return r;
		p->size = size;
		r = pool_fit(p);
		if (r < 0) {
			p->size = old;
			err_set(eb, "cannot map %llu bytes to grow pool %s",
				(unsigned long long)(size - old), p->name);
			return r;
		}
		p->size = old;
	}
	return pool_resize_now(p, size);
}

/* Unlink, fail the waiters and free (deferred while pool_wake() runs). An
 * op still here is one the stopped workers will not finish (teardown). */
static void pool_kill(struct pool *p)
{
	struct pool_waiter *w;

	p->dying = true;
	TAILQ_REMOVE(&pools, p, link);
	pool_count--;
	while ((w = TAILQ_FIRST(&p->waiters))) {
		pool_dequeue(p, w);
		w->ready(w, NULL, -ESHUTDOWN);
	}
	if (p->op)
		pool_op_finish(p->op, -ESHUTDOWN, "tapd is stopping");
	pool_notify(p, POOL_REMOVED);
	if (!p->waking)
		pool_free(p);
}

int pool_destroy(struct pool *p, struct errbuf *eb)
{
	if (p->dying)
		return -ESHUTDOWN;
	if (!strcmp(p->name, POOL_DEFAULT)) {
		err_set(eb, "the default pool cannot be destroyed");
		return -EBUSY;
	}
	/* Its arenas are being mapped on a worker: answer, do not wait. */
	if (p->op) {
		err_set(eb,
			"pool %s is being %s (%" PRIu64 " of %" PRIu64
			" bytes mapped); destroy it once that call has answered",
			p->name, p->state == POOL_CREATING ? "created" : "grown", p->op->added,
			p->op->total);
		return -EBUSY;
	}
	if (p->refs) {
		err_set(eb, "pool %s is used by %u taps", p->name, p->refs);
		return -EBUSY;
	}
	/* Unmapping buffers someone still holds would corrupt their I/O. */
	if (p->in_use) {
		err_set(eb, "pool %s has %llu bytes in use", p->name,
			(unsigned long long)p->in_use);
		return -EBUSY;
	}
	pool_kill(p);
	return 0;
}

void pool_stop(void)
{
	struct errbuf eb = { { 0 } };
	struct pool *p;

	for (p = pool_first(); p; p = pool_next(p)) {
		pool_done_fn *done = p->op ? p->op->done : NULL;

		if (!done)
			continue;
		p->op->done = NULL;
		memset(&eb, 0, sizeof(eb));
		err_set(&eb, "tapd is stopping: pool %s was not %s", p->name,
			p->state == POOL_CREATING ? "created" : "grown");
		done(p->op->arg, NULL, -ESHUTDOWN, eb.msg);
	}
}

void pool_teardown(void)
{
	struct pool *p;

	while ((p = TAILQ_FIRST(&pools)))
		pool_kill(p);
}

struct pool *pool_find_any(const char *name)
{
	struct pool *p;

	TAILQ_FOREACH(p, &pools, link)
		if (!strcmp(p->name, name))
			return p;
	return NULL;
}

struct pool *pool_find(const char *name)
{
	struct pool *p = pool_find_any(name);

	return p && p->state != POOL_CREATING ? p : NULL;
}

const char *pool_state_name(enum pool_state s)
{
	switch (s) {
	case POOL_READY:
		return "ready";
	case POOL_CREATING:
		return "creating";
	case POOL_GROWING:
		return "growing";
	}
	return "?";
}

struct pool *pool_first(void)
{
	return TAILQ_FIRST(&pools);
}

struct pool *pool_next(struct pool *p)
{
	return TAILQ_NEXT(p, link);
}

void pool_ref(struct pool *p)
{
	p->refs++;
	pool_notify(p, POOL_CHANGED);
}

void pool_unref(struct pool *p)
{
	if (p->refs)
		p->refs--;
	pool_notify(p, POOL_CHANGED);
}

const char *pool_name(const struct pool *p)
{
	return p->name;
}

void pool_get_stats(const struct pool *p, struct pool_stats *st)
{
	const struct arena *a;

	st->size = p->size;
	st->in_use = p->in_use;
	st->high_water = p->high_water;
	st->mapped = p->mapped;
	st->waiters = p->nwaiters;
	st->taps = p->refs;
	st->locked = !TAILQ_EMPTY(&p->arenas);
	TAILQ_FOREACH(a, &p->arenas, link)
		st->locked = st->locked && a->locked;
	st->state = p->state;
	st->target = p->op ? p->op->size : p->size;
	/* Progress of a create or grow: what the workers mapped so far. */
	if (p->op)
		st->mapped += p->op->added;
}

struct qos_bucket *pool_qos(struct pool *p)
{
	return &p->qos;
}

int pool_get(struct pool *p, size_t len, struct pool_waiter *w, void **buf)
{
	if (p->dying)
		return -ESHUTDOWN;
	if (len == 0 || len > pool_limit(p) || (w && w->queued))
		return -EINVAL;
	/* Never overtake a queued waiter, even if this one would fit. */
	if (TAILQ_EMPTY(&p->waiters)) {
		*buf = pool_alloc(p, ALIGN_UP(len, POOL_PAGE) / POOL_PAGE);
		if (*buf) {
			pool_notify(p, POOL_CHANGED);
			return 0;
		}
	}
	if (!w)
		return -EAGAIN;
	w->len = len;
	w->queued = true;
	TAILQ_INSERT_TAIL(&p->waiters, w, link);
	p->nwaiters++;
	pool_notify(p, POOL_CHANGED);
	return 1;
}

void pool_cancel(struct pool *p, struct pool_waiter *w)
{
	if (!w->queued)
		return;
	pool_dequeue(p, w);
	/* The new head may fit where the cancelled one did not. */
	pool_kick(p);
	pool_notify(p, POOL_CHANGED);
}

void pool_put(struct pool *p, void *buf, size_t len)
{
	size_t n = ALIGN_UP(len, POOL_PAGE) / POOL_PAGE, start;
	struct arena *a;

	TAILQ_FOREACH(a, &p->arenas, link)
		if ((char *)buf >= a->base && (char *)buf < a->base + arena_bytes(a))
			break;
	start = a ? (size_t)((char *)buf - a->base) / POOL_PAGE : 0;
	if (!a || ((char *)buf - a->base) % POOL_PAGE || n == 0 || start + n > a->pages) {
		log_err("pool %s: put of %zu bytes at %p not from this pool", p->name, len, buf);
		return;
	}
	if (arena_give(a, start, n) < 0) {
		log_err("pool %s: put of %zu bytes at %p: double free", p->name, len, buf);
		return;
	}
	p->in_use -= (uint64_t)n * POOL_PAGE;
	/* Not while an op runs: its plan counts on the arenas there now. */
	if (!p->op && p->mapped > p->size && a->free == a->pages && pool_fit(p) < 0)
		log_debug("pool %s: cannot remap smaller arenas yet", p->name);
	pool_kick(p);
	pool_notify(p, POOL_CHANGED);
}
