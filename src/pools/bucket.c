/* Token bucket arithmetic (see bucket.h). It lives beside the pools because
 * a pool carries the bucket its taps share; taps use the same type. */
#include "bucket.h"

#include <time.h>

#include "lib/util.h"

uint64_t qos_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void qos_bucket_set(struct qos_bucket *b, uint64_t iops, uint64_t bps)
{
	b->iops = iops;
	b->bps = bps;
	b->ops = (double)iops;
	b->bytes = (double)bps;
	b->last_ns = qos_now_ns();
}

bool qos_bucket_on(const struct qos_bucket *b)
{
	return b->iops || b->bps;
}

void qos_bucket_refill(struct qos_bucket *b, uint64_t now)
{
	double dt = (double)(now - b->last_ns) / 1e9;

	b->last_ns = now;
	if (b->iops)
		b->ops = MIN(b->ops + dt * (double)b->iops, (double)b->iops);
	if (b->bps)
		b->bytes = MIN(b->bytes + dt * (double)b->bps, (double)b->bps);
}

double qos_bucket_wait(const struct qos_bucket *b, unsigned ops, uint64_t bytes)
{
	double w = 0;

	if (ops && b->iops && b->ops < 1)
		w = (1 - b->ops) / (double)b->iops;
	if (b->bps && b->bytes < MIN((double)bytes, (double)b->bps))
		w = MAX(w, (MIN((double)bytes, (double)b->bps) - b->bytes) / (double)b->bps);
	return w;
}

void qos_bucket_pay(struct qos_bucket *b, unsigned ops, uint64_t bytes)
{
	if (b->iops)
		b->ops -= ops;
	if (b->bps)
		b->bytes -= (double)bytes;
}
