/* Buffer pools: the registry (names, the count limit, lookups, creation
 * order) and each pool's life on the loop: the checks every create and
 * resize makes, creates and resizes mapped on the calling thread, destroy,
 * references and stats. The other files (internal.h says which way calls
 * run): buffers.c, a pool's arenas, buffers and waiters; grow.c, creates
 * and grows mapped on the workers; arena.c, mem.c, bucket.c. */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lib/log.h"

static TAILQ_HEAD(, pool) pools = TAILQ_HEAD_INITIALIZER(pools);
static struct event_base *pool_base;
static unsigned pool_count;

void pool_setup(struct event_base *base)
{
	pool_base = base;
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

int pool_check_mem(const char *name, uint64_t asked, struct errbuf *eb)
{
	struct pool_mem m;

	pool_mem_read(&m);
	m.pending = pool_pending();
	m.lock = pool_lock;
	return pool_mem_check(name, asked, &m, eb);
}

/* Checks shared by both creates, then a pool not yet listed. */
int pool_new(const char *name, uint64_t size, struct pool **out, struct errbuf *eb)
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

void pool_list(struct pool *p)
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

/* Checks shared by both resizes; 1: go on. */
int pool_resize_check(struct pool *p, uint64_t size, struct errbuf *eb)
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
int pool_resize_now(struct pool *p, uint64_t size)
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

/* Unlink the pool and fail its waiters. */
void pool_unlist(struct pool *p)
{
	struct pool_waiter *w;

	p->dying = true;
	TAILQ_REMOVE(&pools, p, link);
	pool_count--;
	while ((w = TAILQ_FIRST(&p->waiters))) {
		pool_dequeue(p, w);
		w->ready(w, NULL, -ESHUTDOWN);
	}
}

/* Tell the listener, and free (deferred while pool_wake() runs). */
void pool_gone(struct pool *p)
{
	pool_notify(p, POOL_REMOVED);
	if (!p->waking)
		pool_free(p);
}

void pool_kill(struct pool *p)
{
	pool_unlist(p);
	pool_gone(p);
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
