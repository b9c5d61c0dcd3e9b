/* What the files of src/pools/ share: the pool and its op, and the calls
 * between the files. Calls run one way: grow.c (creates and grows on the
 * workers, stop and teardown) -> pool.c (the registry and each pool's
 * life) -> buffers.c (a pool's arenas, buffers and waiters) -> arena.c.
 * Private to src/pools/; the calls run on the loop thread. */
#ifndef TAPD_POOLS_INTERNAL_H
#define TAPD_POOLS_INTERNAL_H

#include <event2/util.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "arena.h"
#include "bucket.h"
#include "lib/worker.h"
#include "pool.h"

struct event;

/* A create or grow in progress (grow.c): the workers map big (if not 0)
 * and then left bytes, one arena a job; done adds them to the pool. */
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

/* Largest request the pool can ever serve. */
static inline uint64_t pool_limit(const struct pool *p)
{
	return MIN(p->size, (uint64_t)POOL_ARENA_MAX);
}

/* buffers.c */
extern bool pool_lock; /* pool_set_lock */
void pool_notify(struct pool *p, enum pool_event ev);
/* Arenas against size: the plan (false: nothing to change) and carrying
 * it out on the calling thread (-ENOMEM: the pool is left as it was). */
bool pool_plan(struct pool *p, uint64_t *big_out, uint64_t *rest);
int pool_fit(struct pool *p);
void pool_dequeue(struct pool *p, struct pool_waiter *w);
/* Wake the waiters from the loop, if there are any. */
void pool_kick(struct pool *p);
/* The event of p->wake. */
void pool_wake(evutil_socket_t fd, short what, void *arg);
/* Unmap every arena and free p (not listed). */
void pool_free(struct pool *p);

/* pool.c */
int pool_check_mem(const char *name, uint64_t asked, struct errbuf *eb);
int pool_new(const char *name, uint64_t size, struct pool **out, struct errbuf *eb);
void pool_list(struct pool *p);
int pool_resize_check(struct pool *p, uint64_t size, struct errbuf *eb);
int pool_resize_now(struct pool *p, uint64_t size);
/* pool_unlist(), then pool_gone(): in two halves so that pool_teardown()
 * can end an op in between. */
void pool_kill(struct pool *p);
void pool_unlist(struct pool *p);
void pool_gone(struct pool *p);

#endif
