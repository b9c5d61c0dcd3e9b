/* The asynchronous data path: one Linux AIO context per loop, its
 * completions delivered through an eventfd watched by the loop. Submissions
 * made while the loop runs callbacks are batched into one io_submit. */
#ifndef TAPD_AIO_H
#define TAPD_AIO_H

#include <libaio.h>

struct event_base;

struct aio_op {
	struct iocb iocb;
	/* res: bytes transferred, or a negative errno. */
	void (*done)(struct aio_op *op, long res);
};

int aio_setup(struct event_base *base);
void aio_teardown(void);
/* Queue op; io_submit happens before the loop sleeps again. On submission
 * failure op->done is called with the error, from the loop. */
void aio_submit(struct aio_op *op);
/* Ops in the kernel now, and completed since setup. */
unsigned aio_inflight(void);
unsigned long aio_completed(void);

#endif
