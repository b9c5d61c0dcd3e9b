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
 * inside pool_put(), so a caller's completion path is never re-entered. */
#include "pool.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bucket.h"
#include "lib/log.h"

struct arena {
	TAILQ_ENTRY(arena) link;
	char *base;
	size_t pages, free;
	bool locked, keep; /* keep: scratch for pool_fit() */
	uint64_t bits[];
};

struct pool {
	TAILQ_ENTRY(pool) link;
	char name[POOL_NAME_MAX];
	uint64_t size, in_use, high_water, mapped;
	uint32_t nwaiters, refs;
	bool refit;  /* size shrank: fail waiters that no longer fit */
	bool waking; /* inside pool_wake(): defer freeing */
	bool dying;
	struct event *wake;
	struct qos_bucket qos;
	TAILQ_HEAD(, arena) arenas;
	TAILQ_HEAD(, pool_waiter) waiters;
};

static TAILQ_HEAD(, pool) pools = TAILQ_HEAD_INITIALIZER(pools);
static struct event_base *pool_base;
static void (*pool_listener)(struct pool *p, enum pool_event ev);

static void pool_notify(struct pool *p, enum pool_event ev)
{
	if (pool_listener)
		pool_listener(p, ev);
}

static uint64_t arena_bytes(const struct arena *a)
{
	return (uint64_t)a->pages * POOL_PAGE;
}

static bool bit_test(const struct arena *a, size_t i)
{
	return (a->bits[i / 64] >> (i % 64)) & 1;
}

/* Callers know the run is all clear (alloc) or all set (put). */
static void bits_flip(struct arena *a, size_t start, size_t n)
{
	for (size_t i = start; i < start + n; i++)
		a->bits[i / 64] ^= 1ULL << (i % 64);
}

static struct arena *arena_map(uint64_t bytes)
{
	static bool warned;
	size_t pages = bytes / POOL_PAGE, words = (pages + 63) / 64;
	struct arena *a = calloc(1, sizeof(*a) + words * sizeof(uint64_t));

	if (!a)
		return NULL;
	a->base = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (a->base == MAP_FAILED) {
		free(a);
		return NULL;
	}
	a->pages = a->free = pages;
	/* Mark the tail of the last word used so run searches stop there. */
	if (pages % 64)
		a->bits[words - 1] = ~0ULL << (pages % 64);
	a->locked = mlock(a->base, bytes) == 0;
	if (!a->locked && !warned) {
		/* Pool memory may then be swapped out, and I/O that waits for
		 * swap-in can deadlock under memory pressure; not fatal. */
		log_warn("pool: mlock of %llu bytes failed (%m); buffers may be swapped",
			 (unsigned long long)bytes);
		warned = true;
	}
	return a;
}

static void arena_unmap(struct arena *a)
{
	munmap(a->base, arena_bytes(a));
	free(a);
}

/* First page of a run of n free pages, or -1. Whole words that are full or
 * empty are stepped over at once: a 32 MiB arena is 128 words. */
static ssize_t arena_find(const struct arena *a, size_t n)
{
	size_t i = 0, run = 0, start = 0;

	while (i < a->pages) {
		uint64_t w = a->bits[i / 64];
		size_t step = i % 64 || (w && ~w) ? 1 : 64;

		if ((w >> (i % 64)) & 1) {
			run = 0;
		} else {
			start = run ? start : i;
			run += step;
			if (run >= n)
				return start;
		}
		i += step;
	}
	return -1;
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
		ssize_t start = a->free >= n ? arena_find(a, n) : -1;

		if (start < 0)
			continue;
		bits_flip(a, start, n);
		a->free -= n;
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
 * so a pool at rest never remaps. New arenas are mapped before old ones are
 * dropped: on failure the pool is left as it was. */
static int pool_fit(struct pool *p)
{
	uint64_t target = pool_limit(p), largest = 0, all_largest = 0, big = 0, adding, total;
	int64_t deficit = p->size;
	struct pool fresh = { .mapped = 0 }; /* only its arena list is used */
	struct arena *a;

	TAILQ_INIT(&fresh.arenas);
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
	adding = big + (deficit > 0 ? (uint64_t)deficit : 0);
	total = p->size + (deficit < 0 ? (uint64_t)-deficit : 0);
	if (p->mapped >= p->size && all_largest >= target && total >= p->mapped)
		return 0;
	for (uint64_t b; adding; adding -= b, big = 0) {
		b = big ? big : MIN(adding, (uint64_t)POOL_ARENA_MAX);
		a = arena_map(b);
		if (!a) {
			arenas_drop(&fresh, true);
			return -ENOMEM;
		}
		TAILQ_INSERT_TAIL(&fresh.arenas, a, link);
		fresh.mapped += b;
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

int pool_create(const char *name, uint64_t size, struct pool **out, struct errbuf *eb)
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
	if (pool_find(name)) {
		err_set(eb, "pool %s already exists", name);
		return -EEXIST;
	}
	if (!pool_base) {
		err_set(eb, "pools are not set up");
		return -EINVAL;
	}
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
	r = pool_fit(p);
	if (r < 0) {
		pool_free(p);
		err_set(eb, "cannot map %llu bytes for pool %s", (unsigned long long)size, name);
		return r;
	}
	TAILQ_INSERT_TAIL(&pools, p, link);
	if (out)
		*out = p;
	pool_notify(p, POOL_ADDED);
	return 0;
}

int pool_resize(struct pool *p, uint64_t size, struct errbuf *eb)
{
	uint64_t old = p->size;
	int r = pool_check_size(size, eb);

	if (r < 0)
		return r;
	p->size = ALIGN_UP(size, POOL_PAGE);
	r = pool_fit(p);
	if (r < 0 && p->size > old) {
		p->size = old;
		err_set(eb, "cannot map %llu bytes to grow pool %s",
			(unsigned long long)(size - old), p->name);
		return r;
	}
	/* A failed shrink-remap is harmless: the old arenas still cover it. */
	if (p->size < old)
		p->refit = true;
	pool_kick(p);
	pool_notify(p, POOL_CHANGED);
	return 0;
}

/* Unlink, fail the waiters and free (deferred while pool_wake() runs). */
static void pool_kill(struct pool *p)
{
	struct pool_waiter *w;

	p->dying = true;
	TAILQ_REMOVE(&pools, p, link);
	while ((w = TAILQ_FIRST(&p->waiters))) {
		pool_dequeue(p, w);
		w->ready(w, NULL, -ESHUTDOWN);
	}
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

void pool_teardown(void)
{
	struct pool *p;

	while ((p = TAILQ_FIRST(&pools)))
		pool_kill(p);
}

struct pool *pool_find(const char *name)
{
	struct pool *p;

	TAILQ_FOREACH(p, &pools, link)
		if (!strcmp(p->name, name))
			return p;
	return NULL;
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
	for (size_t i = start; i < start + n; i++) {
		if (!bit_test(a, i)) {
			log_err("pool %s: put of %zu bytes at %p: double free", p->name, len, buf);
			return;
		}
	}
	bits_flip(a, start, n);
	a->free += n;
	p->in_use -= (uint64_t)n * POOL_PAGE;
	if (p->mapped > p->size && a->free == a->pages && pool_fit(p) < 0)
		log_debug("pool %s: cannot remap smaller arenas yet", p->name);
	pool_kick(p);
	pool_notify(p, POOL_CHANGED);
}
