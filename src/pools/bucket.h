/* Token buckets: a rate of requests and a rate of bytes per second, each
 * with a burst of one second's worth. Only arithmetic: the caller asks how
 * long a request must wait, charges it when it goes, and does the waiting.
 * A pool carries one (pool_qos), shared by all its taps; core gives each
 * tap its own and applies both (core/qos.c). */
#ifndef TAPD_BUCKET_H
#define TAPD_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

/* Rates 0 = unlimited. A zeroed bucket is an unlimited one. */
struct qos_bucket {
	uint64_t iops, bps;
	double ops, bytes; /* tokens */
	uint64_t last_ns;
};

/* CLOCK_MONOTONIC in nanoseconds: the clock the buckets run on. */
uint64_t qos_now_ns(void);
/* New rates; the bucket starts full, so a new limit does not punish what
 * came before it. */
void qos_bucket_set(struct qos_bucket *b, uint64_t iops, uint64_t bps);
/* Some limit is set. */
bool qos_bucket_on(const struct qos_bucket *b);
/* Add the tokens earned since the last refill. */
void qos_bucket_refill(struct qos_bucket *b, uint64_t now);
/* Seconds until the bucket can pay for ops requests (0 or 1: the later
 * pieces of a request in pieces pay bytes only) of bytes; 0 if it can now.
 * A request bigger than the burst goes once the bucket is full and leaves
 * it in debt, so that it neither waits forever nor escapes its cost. */
double qos_bucket_wait(const struct qos_bucket *b, unsigned ops, uint64_t bytes);
/* Charge ops requests of bytes (the bucket may go into debt). */
void qos_bucket_pay(struct qos_bucket *b, unsigned ops, uint64_t bytes);

#endif
