/* Creating or growing a pool maps and locks its arenas on the workers, one
 * arena (at most POOL_ARENA_MAX) per job so that other workers' jobs are
 * not held up for long; meanwhile the pool serves at its old size and
 * drops no arena, so what the plan counted on is still there when the new
 * arenas are added. The daemon's end is here too, as it is these ops' end:
 * pool_stop() answers them, pool_teardown() ends what the stopped workers
 * left and then every pool. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
		p = NULL; /* pool_teardown() is calling */
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

/* An op still here is one the stopped workers will not finish: it ends
 * as an op of a pool that is going, between the two halves of pool_kill(). */
void pool_teardown(void)
{
	struct pool *p;

	while ((p = pool_first())) {
		pool_unlist(p);
		if (p->op)
			pool_op_finish(p->op, -ESHUTDOWN, "tapd is stopping");
		pool_gone(p);
	}
}
