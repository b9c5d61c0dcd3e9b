/* The QoS gate of taps and pools: what a request costs and whether the
 * tap's bucket and its pool's let it pass now, or how long it must wait.
 * It only answers: tap-io.c asks it (only when a limit is set), and holds
 * and releases the requests. The bucket arithmetic is pools/bucket.c; a
 * pool limit is shared by all the taps in it.
 *
 * Counted: reads and writes (one request, their bytes), trim and
 * write-zeroes (one request, no bytes: they move no data), and a hole probe
 * that an export sends in place of a READ (as that READ). Flush, block
 * status asked by a client, and cache are free. */
#include "internal.h"

bool tap_qos_limited(const struct tap *t)
{
	return qos_bucket_on(&t->qos) || qos_bucket_on(pool_qos(t->pool));
}

/* A hole probe that stands in for a READ pays for it; the READ that
 * follows the probe, if any, has been paid for. */
bool tap_qos_counted(const struct tap_req *req)
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
	/* A request in pieces pays for each as it goes. */
	return req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE ? req->piece_len : 0;
}

double tap_qos_admit(struct tap *t, const struct tap_req *req, bool force)
{
	struct qos_bucket *pq = pool_qos(t->pool);
	uint64_t bytes = req_bytes(req), now = qos_now_ns();
	/* A request counts once: its first piece pays the I/O. */
	unsigned ops = req->piece_off == req->off;
	double w;

	qos_bucket_refill(&t->qos, now);
	qos_bucket_refill(pq, now);
	w = MAX(qos_bucket_wait(&t->qos, ops, bytes), qos_bucket_wait(pq, ops, bytes));
	if (w > 0 && !force)
		return w;
	qos_bucket_pay(&t->qos, ops, bytes);
	qos_bucket_pay(pq, ops, bytes);
	return 0;
}
