/* Buffer pools: named arenas of mlocked, page-aligned memory with a capacity
 * in bytes. Every I/O buffer comes from the pool of the tap that serves the
 * request, so the I/O path never calls malloc and one tap (or one layer of a
 * stack) cannot take memory that another one needs to make progress.
 *
 * Threading: a pool belongs to the loop it was created on; every function
 * here must be called from that loop's thread.
 *
 * Waiting: pool_get() either hands out a buffer at once or queues the caller's
 * waiter in FIFO order. Queued waiters are woken from the event loop (never
 * from inside pool_put()), strictly in order: a large request at the head is
 * not overtaken by small ones behind it, so it cannot starve. */
#ifndef TAPD_POOL_H
#define TAPD_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "lib/util.h"

struct event_base;
struct pool;
struct qos_bucket;

#define POOL_DEFAULT "default"
#define POOL_NAME_MAX 64
/* Granule of allocation and accounting. */
#define POOL_PAGE 4096u
/* Largest single buffer; memory is mapped in arenas of at most this size. */
#define POOL_ARENA_MAX (32u << 20)

/* Caller-owned waiter, typically embedded in a request. */
struct pool_waiter {
	TAILQ_ENTRY(pool_waiter) link;
	size_t len;
	/* Called from the loop with buf != NULL and err == 0 once the buffer
	 * is available (the caller owns it from then on), or with buf == NULL
	 * and err < 0 if the request can no longer be satisfied (-EINVAL: the
	 * pool shrank below len; -ESHUTDOWN: the pool is being destroyed). */
	void (*ready)(struct pool_waiter *w, void *buf, int err);
	bool queued;
};

struct pool_stats {
	uint64_t size;       /* capacity in bytes */
	uint64_t in_use;     /* bytes handed out */
	uint64_t high_water; /* largest in_use seen */
	uint64_t mapped;     /* bytes currently mapped (> size while shrinking) */
	uint32_t waiters;    /* requests queued for memory */
	uint32_t taps;       /* references (taps using the pool) */
	bool locked;         /* every arena mlocked */
};

/* Set the loop used to wake waiters. Call once before creating pools. */
void pool_setup(struct event_base *base);
/* Destroy every pool (at exit). */
void pool_teardown(void);

/* Create a pool. Names: [A-Za-z0-9_.-]{1,63}. size >= POOL_PAGE.
 * -EEXIST (name taken), -EINVAL (bad name or size), -ENOMEM. */
int pool_create(const char *name, uint64_t size, struct pool **out, struct errbuf *eb);
/* Grow at once; shrink as buffers come back. Waiters that no longer fit
 * (len > new size) are failed with -EINVAL. */
int pool_resize(struct pool *p, uint64_t size, struct errbuf *eb);
/* -EBUSY while referenced, while buffers are still out (unmapping them
 * would corrupt I/O in progress), or for the default pool, which always
 * exists: this is the one place that rule is kept, callers pass on the
 * errno and eb. */
int pool_destroy(struct pool *p, struct errbuf *eb);

struct pool *pool_find(const char *name);
/* Iterate in creation order: for (p = pool_first(); p; p = pool_next(p)). */
struct pool *pool_first(void);
struct pool *pool_next(struct pool *p);

void pool_ref(struct pool *p);
void pool_unref(struct pool *p);

const char *pool_name(const struct pool *p);
void pool_get_stats(const struct pool *p, struct pool_stats *st);
/* The rate limit shared by the taps of the pool (bucket.h; core applies
 * it). Unlimited when the pool is made; it goes with the pool. */
struct qos_bucket *pool_qos(struct pool *p);

/* The largest len pool_get takes now (the pool's size, at most
 * POOL_ARENA_MAX). */
uint64_t pool_max_get(const struct pool *p);
/* Get a buffer of len bytes (rounded up to POOL_PAGE), page aligned.
 * Returns 0 with *buf set, 1 when w was queued (w->ready is called later),
 * or -EINVAL when len is 0 or larger than the pool or POOL_ARENA_MAX.
 * With w == NULL nothing is queued: -EAGAIN where it would have waited. */
int pool_get(struct pool *p, size_t len, struct pool_waiter *w, void **buf);
/* Remove a queued waiter without calling it. No-op if not queued. */
void pool_cancel(struct pool *p, struct pool_waiter *w);
/* Return a buffer obtained from pool_get with the same len. A pointer the
 * pool did not hand out is logged and ignored. */
void pool_put(struct pool *p, void *buf, size_t len);

/* Called after any change to a pool's stats or set (created, resized,
 * destroyed, in_use changed). Used by the bus to emit signals; may be NULL. */
enum pool_event { POOL_ADDED, POOL_CHANGED, POOL_REMOVED };
void pool_set_listener(void (*fn)(struct pool *p, enum pool_event ev));

#endif
