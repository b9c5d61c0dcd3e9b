/* Shared between the files of the ublk device kind, private to
 * src/exports/ublk/. Lowest first, calls going down only:
 *
 *   io.c    the data path, on the loop: one io_uring shared by every
 *           device, its eventfd in the loop; each tag's FETCH_REQ and
 *           COMMIT_AND_FETCH_REQ, its request a tap_req. It tells ublk.c
 *           that a device may have drained through the callback given to
 *           ub_io_setup.
 *   ctrl.c  the control commands to /dev/ublk-control, each job on a
 *           thread of its own (worker_spawn): the attach (ADD_DEV and
 *           SET_PARAMS, or the recovery pair; the fetches, queued by the
 *           loop through io.c; START_DEV), the detach's checks and
 *           STOP_DEV, DEL_DEV
 *   ublk.c  the "ublk" device kind (ublk.h): a struct ub_dev's life, the
 *           attach, detach and forget ops, the jobs' done callbacks, the
 *           end of a device once drained, start and stop
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
#ifndef TAPD_UBLK_INTERNAL_H
#define TAPD_UBLK_INTERNAL_H

#include <linux/ublk_cmd.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "core/tap.h"
#include "exports/device.h"
#include "lib/worker.h"

struct event;
struct event_base;

/* Tags (requests in flight) of a device's one queue, and the largest
 * request: each tag has a buffer of its own that large. */
#define UB_DEPTH 64
#define UB_MAX_IO (256u << 10)

/* The ioctl-encoded opcodes (Linux 6.0's ublk_cmd.h lacks them; a kernel
 * built without UBLK_LEGACY_OPCODES takes only these). */
#define UB_CTRL(nr) _IOWR('u', nr, struct ublksrv_ctrl_cmd)
#define UB_IO(nr) _IOWR('u', nr, struct ublksrv_io_cmd)
#define UB_GET_DEV_INFO _IOR('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UB_GET_PARAMS _IOR('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)

struct ub_dev;

/* One tag of a device's queue: io.c's, on the loop. */
struct ub_tag {
	struct ub_dev *ud;
	struct tap_req req;
	unsigned tag;
	char *buf;
	bool in_ring; /* a command of this tag is in the ring */
	bool busy;    /* a tap request is in flight */
	bool prepared;
};

/* One /dev/ublkbN: made and freed by ublk.c. The job's fields are set on
 * the loop before it runs, its results by the job's thread (ctrl.c) and
 * read on the loop once it is done. */
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

/* ---- io.c (the loop thread) ----------------------------------------------- */

/* Where the ring's event goes, and drained(ud), called from the loop
 * whenever a command of ud's came back or a tap request of ud's ended: a
 * stopping device may then be done with. Before any device. */
void ub_io_setup(struct event_base *base, void (*drained)(struct ub_dev *ud));
/* On the loop, for the attach job (worker_call_on_loop): make the ring if
 * it is not up yet and queue a FETCH_REQ for every tag of ud; the error,
 * if any, in ud->fetch_err. */
void ub_queue_start(void *ud);
/* Give back the tap requests still held by ud's tags (the stop did not
 * finish). */
void ub_io_drop(struct ub_dev *ud);
/* Free the ring, after the devices. */
void ub_io_free(void);

/* ---- ctrl.c (a job's thread) ---------------------------------------------- */

/* The jobs' run callbacks (ud->job): each sets ud->err and ud->msg on
 * failure. The attach: GET_DEV_INFO, then the recovery of a device a dead
 * tapd left or ADD_DEV and SET_PARAMS; /dev/ublkcN opened and mapped, the
 * fetches queued (ub_queue_start), START_DEV or END_USER_RECOVERY. */
void ub_attach_run(struct worker_job *job);
/* The detach: refuse a device in use (unless ud->force), then STOP_DEV. */
void ub_stop_run(struct worker_job *job);
/* DEL_DEV: waits for the last close of /dev/ublkbN. */
void ub_del_run(struct worker_job *job);

#endif
