/* A pool's memory: a list of arenas (anonymous mappings, populated and
 * mlocked, at most POOL_ARENA_MAX each; arena.c), the buffers handed out
 * of them and the waiters queued for one. A buffer is a first-fit run of
 * pages inside one arena.
 *
 * Invariants kept by pool_fit(): mapped >= size, and some arena is at least
 * min(size, POOL_ARENA_MAX) bytes, so every request pool_get() accepts can be
 * served once enough buffers return: nothing accepted ever waits forever.
 * Shrinking lowers size at once; arenas are unmapped (or replaced by smaller
 * ones) only when entirely free, which is why mapped can exceed size for a
 * while. Waiters are served strictly FIFO from a libevent event, never from
 * inside pool_put(), so a caller's completion path is never re-entered.
 * A shrink's remap (pool_fit) maps on the loop: at most two arenas, and
 * only once the freed arenas are unmapped. */
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>

#include "internal.h"
#include "lib/log.h"

static void (*pool_listener)(struct pool *p, enum pool_event ev);
bool pool_lock = true;

void pool_notify(struct pool *p, enum pool_event ev)
{
	if (pool_listener)
		pool_listener(p, ev);
}

void pool_set_lock(bool lock)
{
	pool_lock = lock;
}

void pool_set_listener(void (*fn)(struct pool *p, enum pool_event ev))
{
	pool_listener = fn;
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
bool pool_plan(struct pool *p, uint64_t *big_out, uint64_t *rest)
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
int pool_fit(struct pool *p)
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

void pool_dequeue(struct pool *p, struct pool_waiter *w)
{
	TAILQ_REMOVE(&p->waiters, w, link);
	w->queued = false;
	p->nwaiters--;
}

void pool_kick(struct pool *p)
{
	if (!TAILQ_EMPTY(&p->waiters))
		event_active(p->wake, EV_TIMEOUT, 0);
}

void pool_free(struct pool *p)
{
	arenas_drop(p, true);
	event_free(p->wake);
	free(p);
}

void pool_wake(evutil_socket_t fd, short what, void *arg)
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
