/* Buffer pools: named arenas of mlocked, page-aligned memory with a capacity
 * in bytes. Every I/O buffer comes from the pool of the tap that serves the
 * request, so the I/O path never calls malloc and one tap (or one layer of a
 * stack) cannot take memory that another one needs to make progress.
 *
 * Threading: a pool belongs to the loop it was created on; every function
 * here must be called from that loop's thread. Mapping and locking the
 * memory of a new or growing pool is the one slow part: pool_create_async()
 * and pool_resize_async() do it on the worker threads (lib/worker.c), one
 * arena per job, and change the pool on the loop when it is all there.
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
/* At most this many pools, the default one and those being made included. */
#define POOL_COUNT_MAX 256u

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

/* A pool being created is listed but not found by pool_find() (no tap can
 * use it yet); a growing pool serves at its old size until the new memory
 * is all mapped. */
enum pool_state { POOL_READY, POOL_CREATING, POOL_GROWING };

struct pool_stats {
	uint64_t size;       /* capacity in bytes */
	uint64_t in_use;     /* bytes handed out */
	uint64_t high_water; /* largest in_use seen */
	uint64_t mapped;     /* bytes currently mapped (> size while shrinking) */
	uint32_t waiters;    /* requests queued for memory */
	uint32_t taps;       /* references (taps using the pool) */
	bool locked;         /* every arena mlocked */
	enum pool_state state;
	uint64_t target; /* the size being made (= size when ready) */
};

/* Set the loop used to wake waiters. Call once before creating pools. */
void pool_setup(struct event_base *base);
/* Lock pool memory (the default) or not (--no-mlock, or a daemon that
 * could not lock itself): without locking RLIMIT_MEMLOCK is not a limit. */
void pool_set_lock(bool lock);
/* The daemon stops: creates and grows in progress are answered
 * -ESHUTDOWN now, and their memory is let go when the workers are done
 * with it (or at pool_teardown). */
void pool_stop(void);
/* Destroy every pool (at exit). A create or grow in progress is answered
 * -ESHUTDOWN: call after worker_teardown(), when no job can still run. */
void pool_teardown(void);

/* What memory a pool may still take: MemAvailable less a reserve, and when
 * pools are locked RLIMIT_MEMLOCK less what the process has locked. */
struct pool_mem {
	uint64_t available;  /* MemAvailable; UINT64_MAX: unknown */
	uint64_t total;      /* MemTotal: the reserve is min(1 GiB, total / 16) */
	uint64_t lock_limit; /* RLIMIT_MEMLOCK; UINT64_MAX: unlimited or CAP_IPC_LOCK */
	uint64_t locked;     /* VmLck of the process */
	uint64_t pending;    /* bytes other creates and grows have still to map */
	bool lock;           /* pools are locked (pool_set_lock) */
};
/* Fill m from /proc/meminfo, /proc/self/status, getrlimit and capget
 * (mem.c); pending is 0 and lock true, for the caller to set. */
void pool_mem_read(struct pool_mem *m);
/* 0 if asked more bytes fit in m, else -ENOMEM and a message with the
 * numbers in eb. Pure: tests pass their own m. */
int pool_mem_check(const char *name, uint64_t asked, const struct pool_mem *m, struct errbuf *eb);

/* Create a pool, mapping its memory now, on the calling thread: for the
 * default pool at start (nothing is served yet) and for tests. Names:
 * [A-Za-z0-9_.-]{1,63}. size >= POOL_PAGE. -EEXIST (name taken), -EINVAL
 * (bad name or size), -ENOSPC (POOL_COUNT_MAX pools), -ENOMEM (more than
 * pool_mem_check allows, or mapping failed). */
int pool_create(const char *name, uint64_t size, struct pool **out, struct errbuf *eb);

/* The end of a create or grow, on the loop, never from inside the call
 * that started it: err 0 and p ready at its new size, or err < 0 with msg
 * (a failed create's pool is gone, p NULL; a failed grow keeps its size). */
typedef void pool_done_fn(void *arg, struct pool *p, int err, const char *msg);
/* Create a pool whose memory the workers map: the pool is listed at once
 * (POOL_CREATING) and found by pool_find() once done() says 0. Returns 1
 * (done is called later) or the errors of pool_create(). */
int pool_create_async(const char *name, uint64_t size, pool_done_fn *done, void *arg,
		      struct errbuf *eb);
/* Resize. A shrink (or a grow that needs no new memory) is done at once:
 * returns 0 and done is not called. A grow that maps memory returns 1 and
 * calls done when the pool has its new size. -EBUSY while another create or
 * grow of p runs (one at a time: the caller retries after its answer),
 * -ENOMEM over the limits of pool_mem_check. */
int pool_resize_async(struct pool *p, uint64_t size, pool_done_fn *done, void *arg,
		      struct errbuf *eb);
/* The same, mapping on the calling thread (tests). Shrinks at once, and
 * frees memory as buffers come back. Waiters that no longer fit (len > new
 * size) are failed with -EINVAL. */
int pool_resize(struct pool *p, uint64_t size, struct errbuf *eb);
/* -EBUSY while referenced, while buffers are still out (unmapping them
 * would corrupt I/O in progress), while it is being created or grown, or
 * for the default pool, which always exists: this is the one place that
 * rule is kept, callers pass on the errno and eb. */
int pool_destroy(struct pool *p, struct errbuf *eb);

/* A ready pool by name (what taps may use). */
struct pool *pool_find(const char *name);
/* Any listed pool by name, one being created included (control). */
struct pool *pool_find_any(const char *name);
const char *pool_state_name(enum pool_state s);
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
