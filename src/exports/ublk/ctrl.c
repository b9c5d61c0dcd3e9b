/* The ublk control commands (internal.h): ADD_DEV, SET_PARAMS, START_DEV,
 * STOP_DEV, DEL_DEV and the recovery pair go to /dev/ublk-control as
 * IORING_OP_URING_CMD on a small SQE128 ring of the job's own, on a thread
 * of their own (worker_spawn): START_DEV and END_USER_RECOVERY wait for
 * the queue's FETCH_REQs (and START_DEV for the partition scan, I/O the
 * loop serves), DEL_DEV for the last close of /dev/ublkcN. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* TRIM and WRITE_ZEROES at most this long (a tap takes 4 GiB - 1). */
#define UB_MAX_DISCARD (1u << 30)
/* How long an attach waits for the driver's nodes, and for a dead
 * tapd's device to be quiesced. */
#define UB_NODE_WAIT_MS 5000
#define UB_QUIESCE_WAIT_MS 10000

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

/* Wait for a node the driver makes (devtmpfs, at once; udev may lag):
 * 0 with st filled, or -errno. */
static int node_wait(const char *path, struct stat *st)
{
	for (unsigned ms = 0;; ms += 20) {
		if (stat(path, st) == 0)
			return 0;
		if (errno != ENOENT || ms >= UB_NODE_WAIT_MS)
			return -errno;
		sleep_ms(20);
	}
}

void ub_attach_run(struct worker_job *job)
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
	ret = node_wait(path, &st);
	if (ret == 0 && (ud->cfd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		ret = -errno;
	if (ret < 0) {
		ub_fail(ud, ret, "%s: %s", path, strerror(-ret));
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
	worker_call_on_loop(ub_queue_start, ud);
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
	ret = node_wait(path, &st);
	if (ret < 0)
		ub_fail(ud, ret, "%s: %s", path, strerror(-ret));
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
void ub_stop_run(struct worker_job *job)
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

void ub_del_run(struct worker_job *job)
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
