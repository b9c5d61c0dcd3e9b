/* The "fuse" device kind: a loop device bound to the tap's FUSE file with
 * direct I/O (LOOP_CONFIGURE with LO_FLAGS_DIRECT_IO on a free device
 * from /dev/loop-control; LOOP_SET_FD and LOOP_SET_STATUS64 where the
 * kernel is older than 5.8), never with LO_FLAGS_AUTOCLEAR: tapd detaches
 * it itself.
 *
 * Opening the tap's file, the loop ioctls and closing the loop device all
 * make the kernel send FUSE requests (lookup, open, flush, reads) and
 * wait for answers that only the loop thread gives: they run on a thread
 * of their own per device (worker_spawn; a detach may wait as long as a
 * paused tap holds the loop device's I/O, and must hold up nothing else).
 *
 * The loop device's hold on the file is known from the FUSE side: the
 * attach thread claims the open it is about to make (fx_claim, by its
 * thread id), and the RELEASE of that open says the kernel let the loop
 * device go, whoever detached it. A device is gone when both its thread
 * has finished and that release has come, in either order.
 *
 * Detach without force opens the device O_EXCL (EBUSY: mounted or held
 * by device-mapper; named from mountinfo and /sys/block/loopN/holders),
 * then LOOP_CLR_FD; a device still bound after that is open by a process
 * (named from /proc): its autoclear is taken back and the detach refused.
 * With force the file is revoked first (the consumer's I/O fails with
 * EIO) and the device goes when the consumer lets go of it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "exports/device.h"
#include "lib/log.h"
#include "lib/worker.h"
#include "internal.h"

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
struct loop_config {
	__u32 fd;
	__u32 block_size;
	struct loop_info64 info;
	__u64 __reserved[8];
};
#endif

/* Tries for a free device when others take the one we were given. */
#define FX_LOOP_TRIES 16

struct fx_loop {
	struct device *dev;
	struct worker_job job;
	struct fx_claim claim;
	/* Set on the loop before the job starts; only read by it. */
	char file[PATH_MAX]; /* STATE/fuse/NAME */
	bool read_only, force;
	uint32_t block_size;
	/* The job's results, read on the loop in its done. */
	int err;
	char msg[256];
	int number; /* N of /dev/loopN, -1 none yet */
	dev_t devnum;
	bool dio;
	bool deferred; /* forced, and others still hold it */
	/* On the loop. */
	bool running;  /* a job runs */
	bool released; /* the kernel released the file */
};

static void loop_path(const struct fx_loop *l, char *buf, size_t len)
{
	snprintf(buf, len, "/dev/loop%d", l->number);
}

static void loop_fail(struct fx_loop *l, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void loop_fail(struct fx_loop *l, int err, const char *fmt, ...)
{
	va_list ap;

	l->err = err;
	va_start(ap, fmt);
	vsnprintf(l->msg, sizeof(l->msg), fmt, ap);
	va_end(ap);
}

/* ---- attach (on the job's thread) ------------------------------------ */

/* Bind lfd to bfd the pre-5.8 way. 0, or -errno (-EBUSY: taken). */
static int loop_bind_legacy(struct fx_loop *l, int lfd, int bfd, const struct loop_info64 *info)
{
	if (ioctl(lfd, LOOP_SET_FD, bfd) < 0)
		return -errno;
	if (ioctl(lfd, LOOP_SET_STATUS64, info) < 0 ||
	    (l->block_size != 512 && ioctl(lfd, LOOP_SET_BLOCK_SIZE, l->block_size) < 0)) {
		int e = errno;

		ioctl(lfd, LOOP_CLR_FD, 0);
		return -e;
	}
	/* Best effort, as LOOP_CONFIGURE does it: reported below. */
	(void)ioctl(lfd, LOOP_SET_DIRECT_IO, 1UL);
	return 0;
}

/* Take a free loop device and bind it to bfd: its fd, or -1 with l->err. */
static int loop_bind(struct fx_loop *l, int bfd)
{
	struct loop_config cfg;
	char path[64];
	int ctl, lfd = -1, r;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		loop_fail(l, -errno, "/dev/loop-control: %s%s", strerror(errno),
			  errno == ENOENT ? " (modprobe loop)" : "");
		return -1;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (__u32)bfd;
	cfg.block_size = l->block_size;
	cfg.info.lo_flags = LO_FLAGS_DIRECT_IO | (l->read_only ? LO_FLAGS_READ_ONLY : 0);
	snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%.*s", LO_NAME_SIZE - 1, l->file);
	for (int tries = 0; tries < FX_LOOP_TRIES; tries++) {
		l->number = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (l->number < 0) {
			loop_fail(l, -errno, "no free loop device: %s", strerror(errno));
			break;
		}
		loop_path(l, path, sizeof(path));
		lfd = open(path, O_RDWR | O_CLOEXEC);
		if (lfd < 0) {
			loop_fail(l, -errno, "%s: %s", path, strerror(errno));
			break;
		}
		r = ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0 ? -errno : 0;
		if (r == -EINVAL || r == -ENOTTY)
			r = loop_bind_legacy(l, lfd, bfd, &cfg.info);
		if (r == 0)
			break;
		close(lfd);
		lfd = -1;
		if (r != -EBUSY) {
			loop_fail(l, r, "%s: cannot bind it to %s: %s", path, l->file,
				  strerror(-r));
			break;
		}
		/* Someone took it between GET_FREE and us: another one. */
	}
	if (lfd < 0 && !l->err)
		loop_fail(l, -EBUSY, "no free loop device after %d tries", FX_LOOP_TRIES);
	close(ctl);
	return lfd;
}

static void loop_attach_run(struct worker_job *job)
{
	struct fx_loop *l = container_of(job, struct fx_loop, job);
	char path[PATH_MAX], dio[8];
	struct stat st;
	int bfd, lfd;

	/* The open below is ours (fs.c matches the claim by thread). */
	__atomic_store_n(&l->claim.tid, (int)gettid(), __ATOMIC_RELEASE);
	bfd = open(l->file, (l->read_only ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
	if (bfd < 0) {
		loop_fail(l, -errno, "%s: %s", l->file, strerror(errno));
		return;
	}
	lfd = loop_bind(l, bfd);
	if (lfd >= 0) {
		if (fstat(lfd, &st) == 0)
			l->devnum = st.st_rdev;
		snprintf(path, sizeof(path), "/sys/block/loop%d/loop/dio", l->number);
		l->dio = device_read_line(path, dio, sizeof(dio)) == 0 && dio[0] == '1';
		close(lfd);
	}
	/* The loop device holds the file now (or nobody does). */
	close(bfd);
}

/* ---- detach (on the job's thread) ------------------------------------ */

static void loop_detach_run(struct worker_job *job)
{
	struct fx_loop *l = container_of(job, struct fx_loop, job);
	struct loop_info64 info = {0}; /* valgrind knows not the loop ioctls */
	char path[64], name[32];
	int fd;

	loop_path(l, path, sizeof(path));
	snprintf(name, sizeof(name), "loop%d", l->number);
	/* O_EXCL fails while it is mounted or held, and keeps anyone from
	 * mounting it while we look. */
	fd = open(path, O_RDONLY | O_CLOEXEC | (l->force ? 0 : O_EXCL));
	if (fd < 0 && errno == EBUSY && !l->force) {
		l->err = -EBUSY;
		if (device_holder(name, l->devnum, l->msg, sizeof(l->msg)) == 0)
			snprintf(l->msg, sizeof(l->msg),
				 "%s is in use (opened exclusively by another program)", path);
		return;
	}
	if (fd < 0) {
		/* ENXIO: going away already; the release tells the rest. */
		if (errno != ENXIO)
			loop_fail(l, -errno, "%s: %s", path, strerror(errno));
		return;
	}
	if (ioctl(fd, LOOP_CLR_FD, 0) < 0 && errno != ENXIO) {
		loop_fail(l, -errno, "%s: LOOP_CLR_FD: %s", path, strerror(errno));
		close(fd);
		return;
	}
	/* Still bound: someone else has it open, and it is cleared when the
	 * last one closes it (autoclear). */
	if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
		if (l->force) {
			l->deferred = true;
		} else {
			info.lo_flags &= ~(uint32_t)LO_FLAGS_AUTOCLEAR;
			if (ioctl(fd, LOOP_SET_STATUS64, &info) < 0)
				log_warn("fuse: %s: cannot take back its autoclear: %s", path,
					 strerror(errno));
			l->err = -EBUSY;
			if (device_opener(path, l->msg, sizeof(l->msg)) == 0)
				strncat(l->msg, "; close it first",
					sizeof(l->msg) - strlen(l->msg) - 1);
			else
				snprintf(l->msg, sizeof(l->msg), "%s is open by another process",
					 path);
		}
	}
	/* The last close clears it: the file is released from here. */
	close(fd);
}

/* ---- on the loop ------------------------------------------------------ */

static void loop_free(struct fx_loop *l)
{
	fx_claim_del(&l->claim);
	free(l);
}

/* The device is gone once its job is done and the file released. */
static void loop_maybe_gone(struct fx_loop *l)
{
	struct device *dev = l->dev;

	if (l->running || !(l->released || !l->claim.matched))
		return;
	device_set_priv(dev, NULL);
	loop_free(l);
	device_gone(dev);
}

static void loop_released(struct fx_claim *c)
{
	struct fx_loop *l = container_of(c, struct fx_loop, claim);

	l->released = true;
	/* During an attach, or a detach that is still at work: its done
	 * looks. Otherwise someone else detached it (losetup -d), or the
	 * consumer of a forced detach let go. */
	if (device_state(l->dev) != DEVICE_ATTACHING)
		loop_maybe_gone(l);
}

static void loop_attach_done(struct worker_job *job)
{
	struct fx_loop *l = container_of(job, struct fx_loop, job);
	struct device *dev = l->dev;
	char path[64];

	l->running = false;
	if (!l->err && l->released) {
		l->err = -ENXIO;
		snprintf(l->msg, sizeof(l->msg), "the loop device let go of %.200s at once",
			 l->file);
	}
	if (l->err) {
		device_set_priv(dev, NULL);
		device_attached(dev, l->err, NULL, 0, l->msg);
		loop_free(l);
		return;
	}
	if (!l->claim.matched)
		log_warn("fuse: the loop device's open of %s was not seen", l->file);
	loop_path(l, path, sizeof(path));
	if (!l->dio)
		log_warn("fuse: %s: the kernel did not turn direct I/O on: its reads and writes "
			 "go through the page cache", path);
	device_attached(dev, 0, path, l->devnum, NULL);
}

static void loop_detach_done(struct worker_job *job)
{
	struct fx_loop *l = container_of(job, struct fx_loop, job);

	l->running = false;
	if (l->err) {
		/* It stays: so does its consumer's I/O. */
		if (l->claim.fo)
			l->claim.fo->revoked = false;
		device_detach_reply(l->dev, l->err, l->msg);
		return;
	}
	if (l->deferred) {
		/* Forced, its consumer still there: answered now; gone when
		 * the consumer lets go (the release). */
		device_detach_reply(l->dev, 0, NULL);
		if (!l->released)
			return;
	}
	loop_maybe_gone(l);
}

static int loop_available(struct errbuf *eb)
{
	if (!fx_fs_up(eb))
		return -EOPNOTSUPP;
	if (access("/dev/loop-control", R_OK | W_OK) < 0) {
		err_set(eb, "fuse: /dev/loop-control: %s%s", strerror(errno),
			errno == ENOENT ? " (modprobe loop)" : "");
		return -EOPNOTSUPP;
	}
	return 0;
}

static int loop_spawn(struct fx_loop *l, struct errbuf *eb)
{
	int ret = worker_spawn(&l->job);

	if (ret < 0) {
		err_set(eb, "cannot start a thread: %s", strerror(-ret));
		return ret;
	}
	l->running = true;
	return 0;
}

static int loop_attach(struct device *dev, struct errbuf *eb)
{
	struct tap *t = device_tap(dev);
	struct fx_loop *l = calloc(1, sizeof(*l));
	int ret;

	if (!l)
		return -ENOMEM;
	l->dev = dev;
	l->number = -1;
	snprintf(l->file, sizeof(l->file), "%s/%s", fx_fs_dir(), tap_name(t));
	l->read_only = tap_read_only(t);
	/* The image's block, so its consumer never makes it read-modify-
	 * write; at least a sector. */
	l->block_size = MAX(tap_align(t), 512u);
	l->claim.tap = t;
	l->claim.tid = 0;
	l->claim.released = loop_released;
	l->job.run = loop_attach_run;
	l->job.done = loop_attach_done;
	fx_claim_add(&l->claim);
	ret = loop_spawn(l, eb);
	if (ret < 0) {
		loop_free(l);
		return ret;
	}
	device_set_priv(dev, l);
	return 0;
}

static int loop_detach(struct device *dev, bool force, struct errbuf *eb)
{
	struct fx_loop *l = device_priv(dev);

	l->force = force;
	l->err = 0;
	l->msg[0] = '\0';
	l->deferred = false;
	l->job.run = loop_detach_run;
	l->job.done = loop_detach_done;
	/* Cut the consumer off first: its I/O fails from now on. */
	if (force && l->claim.fo)
		l->claim.fo->revoked = true;
	return loop_spawn(l, eb);
}

static void loop_forget(struct device *dev)
{
	struct fx_loop *l = device_priv(dev);

	device_set_priv(dev, NULL);
	if (l)
		loop_free(l);
}

const struct device_kind fx_loop_kind = {
	.name = "fuse",
	.available = loop_available,
	.attach = loop_attach,
	.detach = loop_detach,
	.forget = loop_forget,
};
