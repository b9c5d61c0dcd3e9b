/* The "ublk" device kind: a tap as /dev/ublkbN, N its minor, served by
 * the ublk_drv kernel driver (ublk.h).
 *
 * Control: ADD_DEV, SET_PARAMS, START_DEV, STOP_DEV, DEL_DEV and the
 * recovery pair go to /dev/ublk-control as IORING_OP_URING_CMD on a small
 * SQE128 ring of the job's own, on a thread of their own (worker_spawn):
 * START_DEV and END_USER_RECOVERY wait for the queue's FETCH_REQs (and
 * START_DEV for the partition scan, I/O the loop serves), DEL_DEV for the
 * last close of /dev/ublkcN.
 *
 * Data: one queue of UB_DEPTH tags per device on one io_uring shared by
 * every device, made on the loop thread (ublk takes commands of a queue
 * from one task only), its eventfd one more event in the loop. A tag's
 * FETCH_REQ completes with a request (its descriptor in the mmap'd array
 * of /dev/ublkcN); the request goes to the tap (tap_req, pool buffer,
 * pieces as the tap gives them), and COMMIT_AND_FETCH_REQ answers it and
 * waits for the next one. Without UBLK_F_USER_COPY the driver copies to
 * and from the address a tag's command names, for the next request as
 * well as this one: each tag has a buffer of its own of UB_MAX_IO bytes,
 * copied to and from the tap's buffer.
 *
 * Going down: STOP_DEV makes the driver fail the tags' commands with
 * UBLK_IO_RES_ABORT (requests in flight are answered first); once no
 * command is in the ring and no tap request is in flight, /dev/ublkcN is
 * closed and DEL_DEV may finish.
 *
 * Recovery: the devices are added with UBLK_F_USER_RECOVERY (and
 * _REISSUE): when tapd dies the driver keeps the device and queues its
 * I/O. An attach that finds /dev/ublkbN in that state sends
 * START_USER_RECOVERY, fetches again and sends END_USER_RECOVERY; the
 * queued I/O is reissued to us. */
#include "ublk.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/ublk_cmd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/worker.h"

#define UB_DEPTH 64
#define UB_MAX_IO (256u << 10)
/* TRIM and WRITE_ZEROES at most this long (a tap takes 4 GiB - 1). */
#define UB_MAX_DISCARD (1u << 30)
#define UB_RING_SQ 256
#define UB_RING_CQ 4096
/* How long an attach waits for the driver's nodes, and for a dead
 * tapd's device to be quiesced. */
#define UB_NODE_WAIT_MS 5000
#define UB_QUIESCE_WAIT_MS 10000
/* DEL_DEV waits for the last close of /dev/ublkbN: a detach whose DEL_DEV
 * has not finished by then is answered as cut off (see del_slow). */
#define UB_DEL_SLOW_MS 1000

/* The ioctl-encoded opcodes (Linux 6.0's ublk_cmd.h lacks them; a kernel
 * built without UBLK_LEGACY_OPCODES takes only these). */
#define UB_CTRL(nr) _IOWR('u', nr, struct ublksrv_ctrl_cmd)
#define UB_IO(nr) _IOWR('u', nr, struct ublksrv_io_cmd)
#define UB_GET_DEV_INFO _IOR('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UB_GET_PARAMS _IOR('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)

struct ub_dev;

struct ub_tag {
	struct ub_dev *ud;
	struct tap_req req;
	unsigned tag;
	char *buf;
	bool in_ring; /* a command of this tag is in the ring */
	bool busy;    /* a tap request is in flight */
	bool prepared;
};

struct ub_dev {
	struct device *dev; /* NULL once the device layer forgot it */
	struct tap *tap;    /* held (tap_attach) until freed */
	int id;		    /* the tap's minor: /dev/ublkbN, /dev/ublkcN */
	int cfd;	    /* /dev/ublkcN, -1 */
	struct ublksrv_io_desc *descs;
	size_t descs_len;
	char *bufs;
	struct ub_tag tags[UB_DEPTH];
	unsigned in_ring, busy;
	bool stopping; /* STOP_DEV sent (or failed attach): no new fetches */
	/* The job: set on the loop before it runs. */
	struct worker_job job;
	bool read_only, force;
	uint32_t block; /* logical block size */
	uint64_t size;
	uint32_t max_io;
	bool flush, fua;
	/* The job's results. */
	int err;
	char msg[256];
	bool added, recovered, started;
	dev_t devnum;
	int fetch_err;
	/* DEL_DEV still waits after UB_DEL_SLOW_MS: the detach is answered. */
	struct event *slow;
	LIST_ENTRY(ub_dev) link;
};

static struct {
	struct event_base *base;
	struct io_uring ring;
	bool ring_up;
	int efd;
	struct event *ev;
	LIST_HEAD(, ub_dev) devs;
	unsigned ndevs;
} U = {.efd = -1};

static void ub_fail(struct ub_dev *ud, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ub_fail(struct ub_dev *ud, int err, const char *fmt, ...)
{
	va_list ap;

	if (ud->err)
		return;
	ud->err = err;
	va_start(ap, fmt);
	vsnprintf(ud->msg, sizeof(ud->msg), fmt, ap);
	va_end(ap);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* ---- control commands (on a job's thread) ----------------------------- */

struct ub_ctrl {
	struct io_uring ring;
	int fd;
};

static int ctrl_open(struct ub_ctrl *c, struct ub_dev *ud)
{
	int ret;

	c->fd = open("/dev/ublk-control", O_RDWR | O_CLOEXEC);
	if (c->fd < 0) {
		ret = -errno;
		ub_fail(ud, ret, "ublk: /dev/ublk-control: %s%s", strerror(errno),
			errno == ENOENT ? " (modprobe ublk_drv)" : "");
		return ret;
	}
	ret = io_uring_queue_init(4, &c->ring, IORING_SETUP_SQE128);
	if (ret < 0) {
		ub_fail(ud, ret, "ublk: io_uring: %s", strerror(-ret));
		close(c->fd);
		return ret;
	}
	return 0;
}

static void ctrl_close(struct ub_ctrl *c)
{
	io_uring_queue_exit(&c->ring);
	close(c->fd);
}

/* One command: the driver's result (0 or -errno). */
static int ctrl_cmd(struct ub_ctrl *c, unsigned op, int dev_id, uint64_t data0, void *buf,
		    size_t len)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
	struct ublksrv_ctrl_cmd *cmd;
	struct io_uring_cqe *cqe;
	int ret;

	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, 2 * sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = c->fd;
	sqe->cmd_op = op;
	cmd = (struct ublksrv_ctrl_cmd *)sqe->cmd;
	cmd->dev_id = (uint32_t)dev_id;
	cmd->queue_id = (uint16_t)-1;
	cmd->addr = (uint64_t)(uintptr_t)buf;
	cmd->len = (uint16_t)len;
	cmd->data[0] = data0;
	ret = io_uring_submit_and_wait(&c->ring, 1);
	if (ret < 0)
		return ret;
	do
		ret = io_uring_wait_cqe(&c->ring, &cqe);
	while (ret == -EINTR);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&c->ring, cqe);
	return ret;
}

static const char *state_name(unsigned s)
{
	switch (s) {
	case UBLK_S_DEV_DEAD:
		return "dead";
	case UBLK_S_DEV_LIVE:
		return "live";
	case UBLK_S_DEV_QUIESCED:
		return "quiesced";
	}
	return "unknown";
}

static void set_params(struct ub_dev *ud, struct ublk_params *p)
{
	unsigned shift = (unsigned)__builtin_ctz(ud->block);

	memset(p, 0, sizeof(*p));
	p->len = sizeof(*p);
	p->types = UBLK_PARAM_TYPE_BASIC | (ud->read_only ? 0 : UBLK_PARAM_TYPE_DISCARD);
	p->basic.attrs = (ud->read_only ? UBLK_ATTR_READ_ONLY : 0) |
			 (ud->flush ? UBLK_ATTR_VOLATILE_CACHE : 0) |
			 (ud->flush && ud->fua ? UBLK_ATTR_FUA : 0);
	p->basic.logical_bs_shift = (uint8_t)shift;
	p->basic.physical_bs_shift = (uint8_t)MAX(shift, 12u);
	p->basic.io_min_shift = (uint8_t)shift;
	p->basic.io_opt_shift = (uint8_t)MAX(shift, 12u);
	p->basic.max_sectors = ud->max_io >> 9;
	p->basic.dev_sectors = ud->size >> 9;
	if (!ud->read_only) {
		p->discard.discard_granularity = MAX(ud->block, 4096u);
		p->discard.max_discard_sectors = UB_MAX_DISCARD >> 9;
		p->discard.max_write_zeroes_sectors = UB_MAX_DISCARD >> 9;
		p->discard.max_discard_segments = 1;
	}
}

/* Open a node the driver makes (devtmpfs, at once; udev may lag). */
static int open_node(const char *path, int flags)
{
	int fd = -1;

	for (unsigned ms = 0; ms < UB_NODE_WAIT_MS; ms += 20) {
		fd = open(path, flags | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			break;
		sleep_ms(20);
	}
	return fd;
}

static void queue_start(void *arg);

static void attach_run(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);
	struct ublksrv_ctrl_dev_info info;
	struct ublk_params params;
	struct ub_ctrl c;
	char path[64];
	struct stat st;
	int ret;

	if (ctrl_open(&c, ud) < 0)
		return;
	memset(&info, 0, sizeof(info));
	ret = ctrl_cmd(&c, UB_GET_DEV_INFO, ud->id, 0, &info, sizeof(info));
	if (ret == 0) {
		/* Left by a dead tapd? Wait for the driver to see it gone. */
		if (!(info.flags & UBLK_F_USER_RECOVERY)) {
			ub_fail(ud, -EEXIST, "/dev/ublkb%d exists (%s) and cannot be recovered",
				ud->id, state_name(info.state));
			goto out;
		}
		/* Only the same disk: a tap of another size or block size
		 * would change what its users see under them. */
		memset(&params, 0, sizeof(params));
		params.len = sizeof(params);
		ret = ctrl_cmd(&c, UB_GET_PARAMS, ud->id, 0, &params, sizeof(params));
		if (ret < 0) {
			ub_fail(ud, ret, "/dev/ublkb%d exists (%s): GET_PARAMS: %s", ud->id,
				state_name(info.state), strerror(-ret));
			goto out;
		}
		if (params.basic.dev_sectors != ud->size >> 9 ||
		    params.basic.logical_bs_shift != __builtin_ctz(ud->block)) {
			ub_fail(ud, -EEXIST,
				"/dev/ublkb%d exists (%s) with %llu bytes in blocks of %u, not "
				"this "
				"tap's %llu in blocks of %u: not recovered",
				ud->id, state_name(info.state),
				(unsigned long long)params.basic.dev_sectors << 9,
				1u << params.basic.logical_bs_shift, (unsigned long long)ud->size,
				ud->block);
			goto out;
		}
		for (unsigned ms = 0;; ms += 100) {
			ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_START_USER_RECOVERY), ud->id, 0, NULL,
				       0);
			if (ret != -EBUSY || ms >= UB_QUIESCE_WAIT_MS)
				break;
			sleep_ms(100);
		}
		if (ret < 0) {
			ub_fail(ud, ret,
				"/dev/ublkb%d exists (%s) and cannot be recovered: "
				"START_USER_RECOVERY: %s",
				ud->id, state_name(info.state), strerror(-ret));
			goto out;
		}
		ud->recovered = true;
	} else if (ret == -ENODEV) {
		memset(&info, 0, sizeof(info));
		info.nr_hw_queues = 1;
		info.queue_depth = UB_DEPTH;
		info.max_io_buf_bytes = ud->max_io;
		info.dev_id = (uint32_t)ud->id;
		info.ublksrv_pid = getpid();
		info.flags = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
		ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_ADD_DEV), ud->id, 0, &info, sizeof(info));
		if (ret < 0) {
			ub_fail(ud, ret, "ublk: ADD_DEV %d: %s", ud->id, strerror(-ret));
			goto out;
		}
		ud->added = true;
		set_params(ud, &params);
		ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_SET_PARAMS), ud->id, 0, &params,
			       sizeof(params));
		if (ret < 0) {
			ub_fail(ud, ret, "ublk: SET_PARAMS: %s", strerror(-ret));
			goto out;
		}
	} else {
		ub_fail(ud, ret, "ublk: GET_DEV_INFO %d: %s", ud->id, strerror(-ret));
		goto out;
	}

	snprintf(path, sizeof(path), "/dev/ublkc%d", ud->id);
	ud->cfd = open_node(path, O_RDWR);
	if (ud->cfd < 0) {
		ub_fail(ud, -errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	ud->descs_len = (UB_DEPTH * sizeof(struct ublksrv_io_desc) + 4095) & ~(size_t)4095;
	ud->descs = mmap(NULL, ud->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, ud->cfd,
			 UBLKSRV_CMD_BUF_OFFSET);
	if (ud->descs == MAP_FAILED) {
		ud->descs = NULL;
		ub_fail(ud, -errno, "%s: mmap: %s", path, strerror(errno));
		goto out;
	}
	/* The tags wait for requests: only then may the device start. */
	worker_call_on_loop(queue_start, ud);
	if (ud->fetch_err) {
		ub_fail(ud, ud->fetch_err, "ublk: cannot queue its fetches: %s",
			strerror(-ud->fetch_err));
		goto out;
	}
	if (ud->recovered)
		ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_END_USER_RECOVERY), ud->id, (uint64_t)getpid(),
			       NULL, 0);
	else
		ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_START_DEV), ud->id, (uint64_t)getpid(), NULL,
			       0);
	if (ret < 0) {
		ub_fail(ud, ret, "ublk: %s: %s", ud->recovered ? "END_USER_RECOVERY" : "START_DEV",
			strerror(-ret));
		goto out;
	}
	ud->started = true;
	snprintf(path, sizeof(path), "/dev/ublkb%d", ud->id);
	for (unsigned ms = 0; ms < UB_NODE_WAIT_MS; ms += 20) {
		if (stat(path, &st) == 0)
			break;
		sleep_ms(20);
	}
	if (stat(path, &st) < 0)
		ub_fail(ud, -errno, "%s: %s", path, strerror(errno));
	else
		ud->devnum = st.st_rdev;
out:
	if (ud->err && ud->added && !ud->started)
		/* Nothing started: its fetches are failed by this, and DEL_DEV
		 * follows once /dev/ublkcN is closed. */
		(void)ctrl_cmd(&c, UB_CTRL(UBLK_CMD_STOP_DEV), ud->id, 0, NULL, 0);
	ctrl_close(&c);
}

/* Detach: refuse while used (unless forced), then STOP_DEV. */
static void stop_run(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);
	char path[64], name[32];
	struct ub_ctrl c;
	int fd, ret;

	snprintf(path, sizeof(path), "/dev/ublkb%d", ud->id);
	snprintf(name, sizeof(name), "ublkb%d", ud->id);
	if (!ud->force) {
		fd = open(path, O_RDONLY | O_CLOEXEC | O_EXCL);
		if (fd < 0 && errno == EBUSY) {
			ud->err = -EBUSY;
			if (device_holder(name, ud->devnum, ud->msg, sizeof(ud->msg)) == 0)
				snprintf(ud->msg, sizeof(ud->msg),
					 "%s is in use (opened exclusively by another program)",
					 path);
			return;
		}
		if (fd >= 0)
			close(fd);
		if (device_opener(path, ud->msg, sizeof(ud->msg)) == 0) {
			ud->err = -EBUSY;
			strncat(ud->msg, "; close it first", sizeof(ud->msg) - strlen(ud->msg) - 1);
			return;
		}
		ud->msg[0] = '\0';
	}
	if (ctrl_open(&c, ud) < 0)
		return;
	ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_STOP_DEV), ud->id, 0, NULL, 0);
	if (ret < 0)
		ub_fail(ud, ret, "ublk: STOP_DEV %d: %s", ud->id, strerror(-ret));
	ctrl_close(&c);
}

static void del_run(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);
	struct ub_ctrl c;
	int ret;

	if (ctrl_open(&c, ud) < 0)
		return;
	ret = ctrl_cmd(&c, UB_CTRL(UBLK_CMD_DEL_DEV), ud->id, 0, NULL, 0);
	if (ret < 0 && ret != -ENODEV)
		ub_fail(ud, ret, "ublk: DEL_DEV %d: %s", ud->id, strerror(-ret));
	ctrl_close(&c);
}

/* ---- the data path (on the loop) -------------------------------------- */

static struct io_uring_sqe *ring_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&U.ring);

	if (!sqe) {
		io_uring_submit(&U.ring);
		sqe = io_uring_get_sqe(&U.ring);
	}
	return sqe;
}

/* FETCH_REQ (first) or COMMIT_AND_FETCH_REQ with result. */
static int tag_cmd(struct ub_tag *tg, unsigned op, int result)
{
	struct io_uring_sqe *sqe = ring_sqe();
	struct ublksrv_io_cmd *cmd;
	int ret;

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
	ret = io_uring_submit(&U.ring);
	return ret < 0 ? ret : 0;
}

static void dev_maybe_drained(struct ub_dev *ud);

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
	dev_maybe_drained(ud);
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
	while (io_uring_peek_cqe(&U.ring, &cqe) == 0) {
		struct ub_tag *tg = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		struct ub_dev *ud = tg->ud;

		io_uring_cqe_seen(&U.ring, cqe);
		tg->in_ring = false;
		ud->in_ring--;
		if (res == UBLK_IO_RES_OK) {
			/* Even after STOP_DEV: the driver waits for it. */
			tag_request(tg);
			continue;
		}
		if (res != UBLK_IO_RES_ABORT)
			log_warn("ublk: /dev/ublkb%d: tag %u: %s", ud->id, tg->tag, strerror(-res));
		dev_maybe_drained(ud);
	}
}

static int ring_up(void)
{
	struct io_uring_params p;
	int ret;

	if (U.ring_up)
		return 0;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = UB_RING_CQ;
	ret = io_uring_queue_init_params(UB_RING_SQ, &U.ring, &p);
	if (ret < 0)
		return ret;
	U.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (U.efd < 0 || io_uring_register_eventfd(&U.ring, U.efd) < 0) {
		ret = -errno;
		goto fail;
	}
	U.ev = event_new(U.base, U.efd, EV_READ | EV_PERSIST, on_ring, NULL);
	if (!U.ev || event_add(U.ev, NULL) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	U.ring_up = true;
	return 0;
fail:
	if (U.ev)
		event_free(U.ev);
	U.ev = NULL;
	if (U.efd >= 0)
		close(U.efd);
	U.efd = -1;
	io_uring_queue_exit(&U.ring);
	return ret ? ret : -EIO;
}

/* On the loop, called by the attach job: a fetch for every tag. */
static void queue_start(void *arg)
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
}

/* ---- lifecycle (on the loop) ------------------------------------------ */

static void ub_free(struct ub_dev *ud)
{
	if (ud->slow)
		event_free(ud->slow);
	if (ud->descs)
		munmap(ud->descs, ud->descs_len);
	if (ud->cfd >= 0)
		close(ud->cfd);
	if (ud->bufs)
		munmap(ud->bufs, (size_t)UB_DEPTH * ud->max_io);
	LIST_REMOVE(ud, link);
	U.ndevs--;
	tap_detach(ud->tap);
	free(ud);
}

static int ub_spawn(struct ub_dev *ud, void (*run)(struct worker_job *),
		    void (*done)(struct worker_job *))
{
	ud->err = 0;
	ud->msg[0] = '\0';
	ud->job.run = run;
	ud->job.done = done;
	return worker_spawn(&ud->job);
}

static bool job_running(const struct ub_dev *ud)
{
	return ud->job.run != NULL;
}

/* STOP_DEV cut the device off, but DEL_DEV still waits: someone has
 * /dev/ublkbN open whom the detach could not see (device_opener reads
 * /proc, and under tapd.service's ProtectProc=invisible another root
 * process with more capabilities than tapd is invisible). Answer the
 * detach now: the device is cut off (its I/O fails) and goes, listed
 * until then, when that process closes it. */
static void del_slow(evutil_socket_t fd, short what, void *arg)
{
	struct ub_dev *ud = arg;

	(void)fd;
	(void)what;
	if (!ud->dev || !job_running(ud))
		return;
	log_warn("ublk: /dev/ublkb%d is still open by a process tapd cannot see: cut off, "
		 "it goes when that process closes it",
		 ud->id);
	device_detach_reply(ud->dev, 0, NULL);
}

static void del_done(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);
	struct device *dev = ud->dev;

	ud->job.run = NULL;
	if (ud->err)
		log_warn("%s", ud->msg);
	ub_free(ud);
	if (dev) {
		device_set_priv(dev, NULL);
		device_gone(dev);
	}
}

/* After STOP_DEV: once nothing is in the ring or in flight, close
 * /dev/ublkcN and delete the device. */
static void dev_maybe_drained(struct ub_dev *ud)
{
	int ret;

	if (!ud->stopping || ud->in_ring || ud->busy || job_running(ud))
		return;
	if (ud->descs)
		munmap(ud->descs, ud->descs_len);
	ud->descs = NULL;
	if (ud->cfd >= 0)
		close(ud->cfd);
	ud->cfd = -1;
	if (!ud->added && !ud->started) {
		/* Nothing of ours in the kernel (a failed recovery). */
		ud->job.run = del_run;
		del_done(&ud->job);
		return;
	}
	ret = ub_spawn(ud, del_run, del_done);
	if (ret == 0 && ud->dev && (ud->slow = evtimer_new(U.base, del_slow, ud))) {
		struct timeval tv = {0, UB_DEL_SLOW_MS * 1000};

		evtimer_add(ud->slow, &tv);
	}
	if (ret < 0) {
		ud->job.run = NULL;
		log_warn("ublk: /dev/ublkb%d: cannot start a thread to delete it: %s", ud->id,
			 strerror(-ret));
		ud->job.run = del_run;
		del_done(&ud->job);
	}
}

static void attach_done(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);
	struct device *dev = ud->dev;
	char path[64];

	ud->job.run = NULL;
	if (ud->err) {
		/* Forgotten by the device layer now; the kernel's side goes as
		 * it drains (STOP_DEV was sent if we added it). */
		device_set_priv(dev, NULL);
		device_attached(dev, ud->err, NULL, 0, ud->msg);
		ud->dev = NULL;
		ud->stopping = true;
		dev_maybe_drained(ud);
		return;
	}
	snprintf(path, sizeof(path), "/dev/ublkb%d", ud->id);
	if (ud->recovered)
		log_notice("ublk: %s of tap %s recovered", path, tap_name(ud->tap));
	device_attached(dev, 0, path, ud->devnum, NULL);
}

static void stop_done(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);

	ud->job.run = NULL;
	if (ud->err) {
		device_detach_reply(ud->dev, ud->err, ud->msg);
		return;
	}
	ud->stopping = true;
	dev_maybe_drained(ud);
}

static int ub_available(struct errbuf *eb)
{
	if (access("/dev/ublk-control", R_OK | W_OK) < 0) {
		err_set(eb, "ublk: /dev/ublk-control: %s%s", strerror(errno),
			errno == ENOENT ? " (modprobe ublk_drv)" : "");
		return -EOPNOTSUPP;
	}
	return 0;
}

static int ub_attach(struct device *dev, struct errbuf *eb)
{
	struct tap *t = device_tap(dev);
	struct ub_dev *ud;
	uint64_t pmax;
	int ret;

	if (tap_minor(t) < 0 || tap_minor(t) >= (1 << 20)) {
		err_set(eb, "ublk: tap minor %d out of range", tap_minor(t));
		return -ERANGE;
	}
	ud = calloc(1, sizeof(*ud));
	if (!ud)
		return -ENOMEM;
	ret = tap_attach(t);
	if (ret < 0) {
		free(ud);
		err_set(eb, "tap %s is closing", tap_name(t));
		return ret;
	}
	ud->dev = dev;
	ud->tap = t;
	ud->id = tap_minor(t);
	ud->cfd = -1;
	ud->read_only = tap_read_only(t);
	ud->block = MAX(tap_align(t), 512u);
	if (ud->block > 4096 || (ud->block & (ud->block - 1)))
		ud->block = 4096;
	ud->size = tap_size(t) & ~(uint64_t)(ud->block - 1);
	/* The largest request: what the pool gives at once, at most UB_MAX_IO. */
	pmax = pool_max_get(tap_pool(t));
	ud->max_io = (uint32_t)MIN(pmax, (uint64_t)UB_MAX_IO) & ~4095u;
	if (ud->max_io < MAX(ud->block, 4096u))
		ud->max_io = MAX(ud->block, 4096u);
	ud->flush = tap_can_flush(t);
	ud->fua = tap_can_fua(t);
	LIST_INSERT_HEAD(&U.devs, ud, link);
	U.ndevs++;
	ud->bufs = mmap(NULL, (size_t)UB_DEPTH * ud->max_io, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ud->bufs == MAP_FAILED) {
		ud->bufs = NULL;
		ub_free(ud);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < UB_DEPTH; i++) {
		ud->tags[i].ud = ud;
		ud->tags[i].tag = i;
		ud->tags[i].buf = ud->bufs + (size_t)i * ud->max_io;
	}
	ret = ub_spawn(ud, attach_run, attach_done);
	if (ret < 0) {
		err_set(eb, "cannot start a thread: %s", strerror(-ret));
		ub_free(ud);
		return ret;
	}
	device_set_priv(dev, ud);
	return 0;
}

static int ub_detach(struct device *dev, bool force, struct errbuf *eb)
{
	struct ub_dev *ud = device_priv(dev);
	int ret;

	ud->force = force;
	ret = ub_spawn(ud, stop_run, stop_done);
	if (ret < 0) {
		ud->job.run = NULL;
		err_set(eb, "cannot start a thread: %s", strerror(-ret));
	}
	return ret;
}

static void ub_forget(struct device *dev)
{
	struct ub_dev *ud = device_priv(dev);

	device_set_priv(dev, NULL);
	if (ud)
		ud->dev = NULL;
}

static const struct device_kind ub_kind = {
	.name = "ublk",
	.available = ub_available,
	.attach = ub_attach,
	.detach = ub_detach,
	.forget = ub_forget,
};

int ublk_export_start(struct event_base *base, struct errbuf *eb)
{
	int ret;

	U.base = base;
	LIST_INIT(&U.devs);
	ret = device_kind_register(&ub_kind);
	if (ret < 0)
		err_set(eb, "cannot register the ublk device kind");
	return ret;
}

void ublk_export_free(void)
{
	struct ub_dev *ud, *next;

	/* Devices still here (the stop did not finish): the kernel keeps
	 * them (recoverable) once we exit. */
	for (ud = LIST_FIRST(&U.devs); ud; ud = next) {
		next = LIST_NEXT(ud, link);
		/* A thread still works on it (DEL_DEV waiting for a user):
		 * left to the exit. */
		if (job_running(ud)) {
			if (ud->slow)
				event_del(ud->slow);
			continue;
		}
		if (ud->busy)
			for (unsigned i = 0; i < UB_DEPTH; i++)
				if (ud->tags[i].prepared)
					tap_req_release(&ud->tags[i].req);
		if (ud->dev)
			device_set_priv(ud->dev, NULL);
		ub_free(ud);
	}
	if (U.ring_up) {
		event_free(U.ev);
		io_uring_queue_exit(&U.ring);
		close(U.efd);
		U.ring_up = false;
	}
}

int ublk_recover(struct tap *t, device_done_fn done, void *arg, struct errbuf *eb)
{
	return device_attach(t, "ublk", done, arg, eb);
}
