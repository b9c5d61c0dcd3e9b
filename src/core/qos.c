/* QoS of taps and pools: token buckets for requests and bytes per second,
 * each with a burst of one second's worth. A request over a limit waits in
 * its tap's queue, in order, and a timer lets it go when the buckets have
 * refilled: the loop never waits. A tap's requests pass its own bucket and
 * its pool's, so a pool limit is shared by all the taps in it.
 *
 * Counted: reads and writes (one request, their bytes), trim and
 * write-zeroes (one request, no bytes: they move no data), and a hole probe
 * that an export sends in place of a READ (as that READ). Flush, block
 * status asked by a client, and cache are free. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "internal.h"

struct pool_qos {
	char name[POOL_NAME_MAX];
	struct qos_bucket b;
	struct pool_qos *next;
};

static struct {
	struct event_base *base;
	struct pool_qos *pools;
} qos;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool bucket_on(const struct qos_bucket *b)
{
	return b->iops || b->bps;
}

static void bucket_refill(struct qos_bucket *b, uint64_t now)
{
	double dt = (double)(now - b->last_ns) / 1e9;

	b->last_ns = now;
	if (b->iops)
		b->ops = MIN(b->ops + dt * (double)b->iops, (double)b->iops);
	if (b->bps)
		b->bytes = MIN(b->bytes + dt * (double)b->bps, (double)b->bps);
}

/* Seconds until the bucket can pay for (1, bytes); 0 if it can now. A
 * request bigger than the burst goes once the bucket is full, and leaves
 * it in debt, so that it neither waits forever nor escapes its cost. */
static double bucket_wait(const struct qos_bucket *b, uint64_t bytes)
{
	double w = 0;

	if (b->iops && b->ops < 1)
		w = (1 - b->ops) / (double)b->iops;
	if (b->bps && b->bytes < MIN((double)bytes, (double)b->bps))
		w = MAX(w, (MIN((double)bytes, (double)b->bps) - b->bytes) / (double)b->bps);
	return w;
}

static void bucket_pay(struct qos_bucket *b, uint64_t bytes)
{
	if (b->iops)
		b->ops -= 1;
	if (b->bps)
		b->bytes -= (double)bytes;
}

static void bucket_set(struct qos_bucket *b, uint64_t iops, uint64_t bps)
{
	b->iops = iops;
	b->bps = bps;
	/* Start full: a new limit does not punish what came before it. */
	b->ops = (double)iops;
	b->bytes = (double)bps;
	b->last_ns = now_ns();
}

static struct pool_qos *pool_qos_find(const char *name)
{
	struct pool_qos *q;

	for (q = qos.pools; q; q = q->next)
		if (strcmp(q->name, name) == 0)
			return q;
	return NULL;
}

/* A hole probe that stands in for a READ pays for it; the READ that
 * follows the probe, if any, has been paid for. */
static bool req_counted(const struct tap_req *req)
{
	if (req->flags & TAP_F_QOS_PAID)
		return false;
	if (req->op == IMAGE_OP_BLOCK_STATUS)
		return req->flags & TAP_F_READ_PROBE;
	return req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE || req->op == IMAGE_OP_TRIM ||
	       req->op == IMAGE_OP_WRITE_ZEROES;
}

static uint64_t req_bytes(const struct tap_req *req)
{
	if (req->op == IMAGE_OP_BLOCK_STATUS)
		return req->len;
	return req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE ? req->len : 0;
}

/* Let queued requests go while both buckets allow; arm the timer for the
 * first that must wait. */
static void tap_qos_run(struct tap *t)
{
	struct pool_qos *pq = pool_qos_find(pool_name(t->pool));
	uint64_t now = now_ns();
	struct tap_req *req;

	bucket_refill(&t->qos, now);
	if (pq)
		bucket_refill(&pq->b, now);
	while ((req = TAILQ_FIRST(&t->qos_q))) {
		uint64_t bytes = req_bytes(req);
		double w = bucket_wait(&t->qos, bytes);

		if (pq)
			w = MAX(w, bucket_wait(&pq->b, bytes));
		if (w > 0 && !tap_stopping()) {
			struct timeval tv = { (time_t)w, (suseconds_t)((w - (double)(time_t)w) * 1e6) + 1 };

			evtimer_add(t->qos_timer, &tv);
			return;
		}
		TAILQ_REMOVE(&t->qos_q, req, link);
		t->st.waiting--;
		bucket_pay(&t->qos, bytes);
		if (pq)
			bucket_pay(&pq->b, bytes);
		if (t->state == TAP_PAUSING || t->state == TAP_PAUSED) {
			/* Its turn came during a pause: it waits for the
			 * unpause with the others. */
			req->parked = true;
			TAILQ_INSERT_TAIL(&t->parked, req, link);
			continue;
		}
		tap_req_dispatch(req);
	}
}

static void tap_qos_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tap_qos_run(arg);
}

void tap_qos_submit(struct tap_req *req)
{
	struct tap *t = req->tap;

	/* Uncounted requests never wait; counted ones queue behind any
	 * that already wait, so a limit lifted keeps the order. */
	if (!req_counted(req) || tap_qos_unlimited(t)) {
		tap_req_dispatch(req);
		return;
	}
	TAILQ_INSERT_TAIL(&t->qos_q, req, link);
	t->st.waiting++;
	if (TAILQ_FIRST(&t->qos_q) == req)
		tap_qos_run(t);
}

bool tap_qos_unlimited(const struct tap *t)
{
	const struct pool_qos *pq = pool_qos_find(pool_name(t->pool));

	/* A pool whose limits were set back to 0 keeps its entry. */
	return TAILQ_EMPTY(&t->qos_q) && !bucket_on(&t->qos) && !(pq && bucket_on(&pq->b));
}

/* The daemon stops, or the limit went away: nothing waits any more. */
void tap_qos_release(struct tap *t)
{
	struct tap_req *req;

	if (t->qos_timer)
		evtimer_del(t->qos_timer);
	while ((req = TAILQ_FIRST(&t->qos_q))) {
		TAILQ_REMOVE(&t->qos_q, req, link);
		t->st.waiting--;
		tap_req_dispatch(req);
	}
}

void tap_qos_setup(struct event_base *base)
{
	qos.base = base;
}

int tap_qos_init(struct tap *t)
{
	TAILQ_INIT(&t->qos_q);
	t->qos_timer = evtimer_new(qos.base, tap_qos_timer, t);
	return t->qos_timer ? 0 : -ENOMEM;
}

void tap_qos_free(struct tap *t)
{
	if (t->qos_timer)
		event_free(t->qos_timer);
	t->qos_timer = NULL;
}

void tap_qos_teardown(void)
{
	struct pool_qos *q;

	while ((q = qos.pools)) {
		qos.pools = q->next;
		free(q);
	}
}

void tap_set_qos(struct tap *t, uint64_t iops, uint64_t bps)
{
	bucket_set(&t->qos, iops, bps);
	log_info("%s: QoS %llu IOPS, %llu B/s (0: unlimited)", t->name, (unsigned long long)iops,
		 (unsigned long long)bps);
	/* Whatever waited is judged by the new limit. */
	tap_qos_run(t);
}

void tap_get_qos(const struct tap *t, uint64_t *iops, uint64_t *bps)
{
	*iops = t->qos.iops;
	*bps = t->qos.bps;
}

int tap_set_pool_qos(const char *pool, uint64_t iops, uint64_t bps, struct errbuf *eb)
{
	struct pool_qos *q = pool_qos_find(pool);
	struct tap *t;

	if (!pool_find(pool)) {
		err_set(eb, "no pool named '%s'", pool);
		return -ENODEV;
	}
	if (!q && (iops || bps)) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return -ENOMEM;
		snprintf(q->name, sizeof(q->name), "%s", pool);
		q->next = qos.pools;
		qos.pools = q;
	}
	if (q)
		bucket_set(&q->b, iops, bps);
	log_info("pool %s: QoS %llu IOPS, %llu B/s (0: unlimited)", pool,
		 (unsigned long long)iops, (unsigned long long)bps);
	for (t = tap_first(); t; t = tap_next(t)) {
		if (strcmp(pool_name(t->pool), pool) == 0)
			tap_qos_run(t);
	}
	return 0;
}

void tap_forget_pool_qos(const char *pool)
{
	struct pool_qos **pp, *q;

	for (pp = &qos.pools; (q = *pp); pp = &q->next) {
		if (strcmp(q->name, pool) == 0) {
			*pp = q->next;
			free(q);
			return;
		}
	}
}

int tap_get_pool_qos(const char *pool, uint64_t *iops, uint64_t *bps)
{
	struct pool_qos *q = pool_qos_find(pool);

	if (!pool_find(pool))
		return -ENODEV;
	*iops = q ? q->b.iops : 0;
	*bps = q ? q->b.bps : 0;
	return 0;
}
