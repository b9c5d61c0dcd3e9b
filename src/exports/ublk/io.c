/* The ublk data path (internal.h): one queue of UB_DEPTH tags per device
 * on one io_uring shared by every device, made on the loop thread (ublk
 * takes commands of a queue from one task only), its eventfd one more
 * event in the loop. A tag's FETCH_REQ completes with a request (its
 * descriptor in the mmap'd array of /dev/ublkcN); the request goes to the
 * tap (tap_req, pool buffer, pieces as the tap gives them), and
 * COMMIT_AND_FETCH_REQ answers it and waits for the next one. Without
 * UBLK_F_USER_COPY the driver copies to and from the address a tag's
 * command names, for the next request as well as this one: each tag has
 * a buffer of its own of UB_MAX_IO bytes, copied to and from the tap's
 * buffer. The commands queued in one pass of the loop go to the kernel
 * in one io_uring_enter. */
#include <errno.h>
#include <liburing.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "internal.h"

#define UB_RING_SQ 256
#define UB_RING_CQ 4096

static struct {
	struct event_base *base;
	void (*drained)(struct ub_dev *ud);
	struct io_uring ring;
	bool ring_up;
	int efd;
	struct event *ev;
	/* Deferred: the commands queued while the loop ran its callbacks go
	 * to the kernel in one io_uring_enter (as lib/aio.c's io_submit). */
	struct event *submit_ev;
} R = {.efd = -1};

static void ring_submit(evutil_socket_t fd, short what, void *arg)
{
	int ret;

	(void)fd;
	(void)what;
	(void)arg;
	ret = io_uring_submit(&R.ring);
	if (ret < 0)
		log_warn("ublk: io_uring_submit: %s", strerror(-ret));
}

static struct io_uring_sqe *ring_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&R.ring);

	if (!sqe) {
		io_uring_submit(&R.ring);
		sqe = io_uring_get_sqe(&R.ring);
	}
	return sqe;
}

/* Queue FETCH_REQ (first) or COMMIT_AND_FETCH_REQ with result, submitted
 * once the loop has run this pass's callbacks. */
static int tag_cmd(struct ub_tag *tg, unsigned op, int result)
{
	struct io_uring_sqe *sqe = ring_sqe();
	struct ublksrv_io_cmd *cmd;

	if (!sqe)
		return -EAGAIN;
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, tg->ud->cfd, NULL, 0, 0);
	sqe->cmd_op = op;
	cmd = (struct ublksrv_io_cmd *)sqe->cmd;
	cmd->q_id = 0;
	cmd->tag = (uint16_t)tg->tag;
	cmd->result = result;
	cmd->addr = (uint64_t)(uintptr_t)tg->buf;
	io_uring_sqe_set_data(sqe, tg);
	tg->in_ring = true;
	tg->ud->in_ring++;
	event_active(R.submit_ev, 0, 0);
	return 0;
}

static void tag_commit(struct ub_tag *tg, int result)
{
	struct ub_dev *ud = tg->ud;
	int ret;

	if (tg->prepared)
		tap_req_release(&tg->req);
	tg->prepared = false;
	tg->busy = false;
	ud->busy--;
	ret = tag_cmd(tg, UB_IO(UBLK_IO_COMMIT_AND_FETCH_REQ), result);
	if (ret < 0)
		log_warn("ublk: /dev/ublkb%d: cannot commit tag %u: %s", ud->id, tg->tag,
			 strerror(-ret));
	R.drained(ud);
}

static void tag_done(struct tap_req *req);

static void tag_go(struct ub_tag *tg, int err)
{
	struct tap_req *req = &tg->req;

	if (err < 0) {
		tag_commit(tg, err);
		return;
	}
	if (req->op == IMAGE_OP_WRITE)
		memcpy(req->buf, tg->buf + (req->piece_off - req->off), req->piece_len);
	tap_req_submit(req);
}

static void tag_ready(struct tap_req *req, int err)
{
	tag_go(container_of(req, struct ub_tag, req), err);
}

static void tag_done(struct tap_req *req)
{
	struct ub_tag *tg = container_of(req, struct ub_tag, req);

	if (req->error) {
		tag_commit(tg, req->error);
		return;
	}
	if (req->op == IMAGE_OP_READ)
		memcpy(tg->buf + (req->piece_off - req->off), req->buf, req->piece_len);
	if ((req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE) && tap_req_more(req)) {
		tap_req_next(req);
		tag_go(tg, 0);
		return;
	}
	tag_commit(tg, req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE ? (int)req->len : 0);
}

/* A request came for this tag: to the tap. */
static void tag_request(struct ub_tag *tg)
{
	struct ub_dev *ud = tg->ud;
	const struct ublksrv_io_desc *iod = &ud->descs[tg->tag];
	struct tap_req *req = &tg->req;
	unsigned op = iod->op_flags & 0xff, fl = iod->op_flags >> 8;
	int ret;

	tg->busy = true;
	ud->busy++;
	memset(req, 0, sizeof(*req));
	req->off = iod->start_sector << 9;
	req->len = iod->nr_sectors << 9;
	req->done = tag_done;
	switch (op) {
	case UBLK_IO_OP_READ:
		req->op = IMAGE_OP_READ;
		break;
	case UBLK_IO_OP_WRITE:
		req->op = IMAGE_OP_WRITE;
		if (fl & (UBLK_IO_F_FUA >> 8))
			req->flags |= IMAGE_F_FUA;
		break;
	case UBLK_IO_OP_FLUSH:
		req->op = IMAGE_OP_FLUSH;
		req->off = 0;
		req->len = 0;
		break;
	case UBLK_IO_OP_DISCARD:
		req->op = IMAGE_OP_TRIM;
		break;
	case UBLK_IO_OP_WRITE_ZEROES:
		req->op = IMAGE_OP_WRITE_ZEROES;
		if (fl & (UBLK_IO_F_NOUNMAP >> 8))
			req->flags |= IMAGE_F_NO_HOLE;
		break;
	default:
		tag_commit(tg, -EOPNOTSUPP);
		return;
	}
	if ((req->op == IMAGE_OP_READ || req->op == IMAGE_OP_WRITE) && req->len > ud->max_io) {
		tag_commit(tg, -EINVAL);
		return;
	}
	tg->prepared = true;
	ret = tap_req_prepare(ud->tap, req, tag_ready);
	if (ret == 1)
		return;
	tag_go(tg, ret);
}

static void on_ring(evutil_socket_t fd, short what, void *arg)
{
	struct io_uring_cqe *cqe;
	uint64_t n;

	(void)what;
	(void)arg;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("ublk: eventfd: %s", strerror(errno));
	while (io_uring_peek_cqe(&R.ring, &cqe) == 0) {
		struct ub_tag *tg = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		struct ub_dev *ud = tg->ud;

		io_uring_cqe_seen(&R.ring, cqe);
		tg->in_ring = false;
		ud->in_ring--;
		if (res == UBLK_IO_RES_OK) {
			/* Even after STOP_DEV: the driver waits for it. */
			tag_request(tg);
			continue;
		}
		if (res != UBLK_IO_RES_ABORT)
			log_warn("ublk: /dev/ublkb%d: tag %u: %s", ud->id, tg->tag, strerror(-res));
		R.drained(ud);
	}
}

static int ring_up(void)
{
	struct io_uring_params p;
	int ret;

	if (R.ring_up)
		return 0;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = UB_RING_CQ;
	ret = io_uring_queue_init_params(UB_RING_SQ, &R.ring, &p);
	if (ret < 0)
		return ret;
	R.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (R.efd < 0 || io_uring_register_eventfd(&R.ring, R.efd) < 0) {
		ret = -errno;
		goto fail;
	}
	R.ev = event_new(R.base, R.efd, EV_READ | EV_PERSIST, on_ring, NULL);
	R.submit_ev = event_new(R.base, -1, 0, ring_submit, NULL);
	if (!R.ev || !R.submit_ev || event_add(R.ev, NULL) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	R.ring_up = true;
	return 0;
fail:
	if (R.ev)
		event_free(R.ev);
	R.ev = NULL;
	if (R.submit_ev)
		event_free(R.submit_ev);
	R.submit_ev = NULL;
	if (R.efd >= 0)
		close(R.efd);
	R.efd = -1;
	io_uring_queue_exit(&R.ring);
	return ret ? ret : -EIO;
}

/* On the loop, called by the attach job: a fetch for every tag, in the
 * kernel when this returns (START_DEV waits for them). */
void ub_queue_start(void *arg)
{
	struct ub_dev *ud = arg;
	int ret = ring_up();

	if (ret < 0) {
		ud->fetch_err = ret;
		return;
	}
	for (unsigned i = 0; i < UB_DEPTH; i++) {
		ret = tag_cmd(&ud->tags[i], UB_IO(UBLK_IO_FETCH_REQ), 0);
		if (ret < 0) {
			ud->fetch_err = ret;
			return;
		}
	}
	ret = io_uring_submit(&R.ring);
	if (ret < 0)
		ud->fetch_err = ret;
}

void ub_io_setup(struct event_base *base, void (*drained)(struct ub_dev *ud))
{
	R.base = base;
	R.drained = drained;
}

void ub_io_drop(struct ub_dev *ud)
{
	if (ud->busy)
		for (unsigned i = 0; i < UB_DEPTH; i++)
			if (ud->tags[i].prepared)
				tap_req_release(&ud->tags[i].req);
}

void ub_io_free(void)
{
	if (R.ring_up) {
		event_free(R.ev);
		event_free(R.submit_ev);
		io_uring_queue_exit(&R.ring);
		close(R.efd);
		R.ring_up = false;
	}
}
