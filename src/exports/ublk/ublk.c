/* The "ublk" device kind: a tap as /dev/ublkbN, N its minor, served by
 * the ublk_drv kernel driver (ublk.h). This file owns each device's
 * struct ub_dev: the kind's ops, the jobs (ctrl.c) they start and their
 * done callbacks, and the end of a device once the data path (io.c) has
 * drained it; internal.h maps the files. Loop thread. */
#include "ublk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "internal.h"

/* DEL_DEV waits for the last close of /dev/ublkbN: a detach whose DEL_DEV
 * has not finished by then is answered as cut off (see del_slow). */
#define UB_DEL_SLOW_MS 1000

static struct {
	struct event_base *base;
	LIST_HEAD(, ub_dev) devs;
} U;

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
	tap_detach(ud->tap);
	free(ud);
}

/* Start a job on ud (job_running until its done callback clears it). */
static int ub_spawn(struct ub_dev *ud, void (*run)(struct worker_job *),
		    void (*done)(struct worker_job *))
{
	int ret;

	ud->err = 0;
	ud->msg[0] = '\0';
	ud->job.run = run;
	ud->job.done = done;
	ret = worker_spawn(&ud->job);
	if (ret < 0)
		ud->job.run = NULL;
	return ret;
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

/* The kernel has let the device go (or never had it of ours): free it and
 * tell the device layer, if it still knows it. */
static void dev_end(struct ub_dev *ud)
{
	struct device *dev = ud->dev;

	ub_free(ud);
	if (dev) {
		device_set_priv(dev, NULL);
		device_gone(dev);
	}
}

static void del_done(struct worker_job *job)
{
	struct ub_dev *ud = container_of(job, struct ub_dev, job);

	ud->job.run = NULL;
	if (ud->err)
		log_warn("%s", ud->msg);
	dev_end(ud);
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
		dev_end(ud);
		return;
	}
	ret = ub_spawn(ud, ub_del_run, del_done);
	if (ret < 0) {
		log_warn("ublk: /dev/ublkb%d: cannot start a thread to delete it: %s", ud->id,
			 strerror(-ret));
		dev_end(ud);
		return;
	}
	if (ud->dev && (ud->slow = evtimer_new(U.base, del_slow, ud))) {
		struct timeval tv = {0, UB_DEL_SLOW_MS * 1000};

		evtimer_add(ud->slow, &tv);
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
	ret = ub_spawn(ud, ub_attach_run, attach_done);
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
	ret = ub_spawn(ud, ub_stop_run, stop_done);
	if (ret < 0)
		err_set(eb, "cannot start a thread: %s", strerror(-ret));
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
	ub_io_setup(base, dev_maybe_drained);
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
		ub_io_drop(ud);
		if (ud->dev)
			device_set_priv(ud->dev, NULL);
		ub_free(ud);
	}
	ub_io_free();
}

int ublk_recover(struct tap *t, device_done_fn done, void *arg, struct errbuf *eb)
{
	return device_attach(t, "ublk", done, arg, eb);
}
