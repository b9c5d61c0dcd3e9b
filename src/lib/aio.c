/* Linux AIO for the data path. Submissions are gathered while the loop runs
 * its callbacks and go to the kernel in one io_submit from a deferred event;
 * completions arrive on an eventfd that the loop watches, so no thread and
 * no blocking call is involved. If the kernel's queue is full, ops wait in
 * our own queue and go out as completions make room. */
#include "aio.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define AIO_DEPTH 1024
#define AIO_BATCH 256

static struct {
	io_context_t ctx;
	int efd;
	struct event *efd_ev;
	struct event *flush_ev;
	/* Ops waiting to be submitted, in order: a ring of AIO_DEPTH. */
	struct aio_op *pending[AIO_DEPTH];
	unsigned head, count;
	unsigned inflight;
	unsigned long completed;
	bool ready;
} aio;

unsigned aio_inflight(void)
{
	return aio.inflight;
}

unsigned long aio_completed(void)
{
	return aio.completed;
}

static void aio_fail(struct aio_op *op, long res)
{
	op->done(op, res);
}

static void aio_flush(evutil_socket_t fd, short what, void *arg)
{
	struct iocb *batch[AIO_BATCH];

	(void)fd;
	(void)what;
	(void)arg;
	while (aio.count && aio.inflight < AIO_DEPTH) {
		unsigned n = MIN(aio.count, AIO_BATCH);
		int ret;

		n = MIN(n, AIO_DEPTH - aio.inflight);
		for (unsigned i = 0; i < n; i++)
			batch[i] = &aio.pending[(aio.head + i) % AIO_DEPTH]->iocb;
		ret = io_submit(aio.ctx, n, batch);
		if (ret == -EAGAIN || ret == 0)
			return; /* kernel queue full: completions will retry */
		if (ret < 0) {
			/* The first op is bad (e.g. EINVAL): fail it alone
			 * and carry on with the rest. */
			struct aio_op *op = aio.pending[aio.head];

			aio.head = (aio.head + 1) % AIO_DEPTH;
			aio.count--;
			aio_fail(op, ret);
			continue;
		}
		aio.head = (aio.head + (unsigned)ret) % AIO_DEPTH;
		aio.count -= (unsigned)ret;
		aio.inflight += (unsigned)ret;
	}
}

static void aio_reap(evutil_socket_t fd, short what, void *arg)
{
	struct io_event events[128];
	struct timespec zero = { 0, 0 };
	uint64_t ticks;
	int n;

	(void)what;
	(void)arg;
	if (read(fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		log_err("aio: reading eventfd: %s", strerror(errno));
	do {
		n = io_getevents(aio.ctx, 0, ARRAY_SIZE(events), events, &zero);
		if (n < 0) {
			if (n != -EINTR)
				log_err("aio: io_getevents: %s", strerror(-n));
			break;
		}
		aio.inflight -= (unsigned)n;
		aio.completed += (unsigned long)n;
		for (int i = 0; i < n; i++) {
			struct aio_op *op = events[i].data;

			op->done(op, (long)events[i].res);
		}
	} while (n == (int)ARRAY_SIZE(events));
	if (aio.count)
		aio_flush(-1, 0, NULL);
}

int aio_setup(struct event_base *base)
{
	int ret;

	memset(&aio, 0, sizeof(aio));
	ret = io_setup(AIO_DEPTH, &aio.ctx);
	if (ret < 0) {
		log_err("aio: io_setup(%d): %s (see /proc/sys/fs/aio-max-nr)", AIO_DEPTH,
			strerror(-ret));
		return ret;
	}
	aio.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (aio.efd < 0) {
		ret = -errno;
		io_destroy(aio.ctx);
		return ret;
	}
	aio.efd_ev = event_new(base, aio.efd, EV_READ | EV_PERSIST, aio_reap, NULL);
	aio.flush_ev = event_new(base, -1, 0, aio_flush, NULL);
	if (!aio.efd_ev || !aio.flush_ev || event_add(aio.efd_ev, NULL) < 0) {
		aio_teardown();
		return -ENOMEM;
	}
	aio.ready = true;
	return 0;
}

void aio_teardown(void)
{
	if (aio.efd_ev)
		event_free(aio.efd_ev);
	if (aio.flush_ev)
		event_free(aio.flush_ev);
	if (aio.efd > 0)
		close(aio.efd);
	if (aio.ctx)
		io_destroy(aio.ctx);
	memset(&aio, 0, sizeof(aio));
}

void aio_submit(struct aio_op *op)
{
	if (aio.count == AIO_DEPTH) {
		/* Callers bound their own in-flight counts far below this;
		 * reaching it is a bug, not a reason to block. */
		aio_fail(op, -EAGAIN);
		return;
	}
	op->iocb.data = op;
	io_set_eventfd(&op->iocb, aio.efd);
	aio.pending[(aio.head + aio.count) % AIO_DEPTH] = op;
	if (aio.count++ == 0)
		event_active(aio.flush_ev, 0, 0);
}
