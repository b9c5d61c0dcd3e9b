/* The FUSE session of the export: one mount, STATE/fuse, with one regular
 * file per tap (name: the tap's, size: the tap's, mode 0600, 0400 for a
 * read-only tap), served with libfuse's low-level API from the loop
 * thread: /dev/fuse is non-blocking and one more event in the loop; each
 * wakeup reads a bounded number of requests with fuse_session_receive_buf
 * and hands each to fuse_session_process_buf, whose callbacks answer
 * metadata at once and pass data to io.c, which answers later.
 *
 * Caching: files are opened with FOPEN_DIRECT_IO, so the kernel keeps no
 * page cache of a tap: every read and write of the file reaches the tap
 * and sees what NBD clients wrote, and no dirty pages of ours wait for
 * writeback (which on this host could wedge: tapd(8), MEMORY). A loop
 * device with direct I/O works on such a file (it submits IOCB_DIRECT
 * reads and writes, asynchronously: FUSE_CAP_ASYNC_DIO), and so does
 * O_DIRECT; without FOPEN_DIRECT_IO the loop device's direct I/O would
 * work too, but plain readers of the file would get stale cached data.
 * The price is mmap(2), which such files do not allow.
 *
 * Names are looked up on every use (entry timeout 0): a tap destroyed and
 * made again under its name needs no invalidation, which tapd could not
 * send from the loop thread anyway (the kernel may wait, holding the
 * directory, for a request only the loop thread answers). */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/minor.h"
#include "lib/log.h"
#include "lib/worker.h"
#include "internal.h"

/* How long the kernel may keep a tap's attributes (a tap keeps its size). */
#define FX_ATTR_TIMEOUT 1.0
/* The most a READDIR answers at once (the kernel asks for a page or so). */
#define FX_DIR_MAX 65536

static struct {
	struct event_base *base;
	struct fuse_session *se;
	char dir[PATH_MAX];
	struct event *ev;
	bool reading;
	struct fuse_buf buf;
	/* A READDIR's answer, sent before the next request is read. */
	char dirents[FX_DIR_MAX];
	time_t mounted_at;
	/* Why the mount does not serve, for the device kind's available(). */
	char why[256];
	/* Claims of the loop device kind on opens to come. */
	LIST_HEAD(, fx_claim) claims;
	/* The generation of each minor's inode: bumped when another tap
	 * shows up under the minor, so the kernel never mixes two taps. */
	struct {
		const struct tap *tap;
		uint64_t gen;
	} nodes[MINOR_MAX];
	uint64_t gen;
	/* The stop: no more reading; unmount once idle. */
	bool stopping, unmounting;
	void (*stop_done)(void *arg);
	void *stop_arg;
	struct worker_job unmount_job;
} fs;

/* ---- log ------------------------------------------------------------ */

static void fx_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[512];
	int prio = level <= FUSE_LOG_ERR ? LOG_ERR : level == FUSE_LOG_WARNING ? LOG_WARNING
						     : LOG_DEBUG;

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_msg(prio, "fuse: %s", line);
}

/* ---- the directory of taps ------------------------------------------ */

/* The tap named exactly name (tap_find also takes a minor: "3" is no file). */
static struct tap *fx_tap_named(const char *name)
{
	struct tap *t = tap_find(name);

	return t && strcmp(tap_name(t), name) == 0 ? t : NULL;
}

static struct tap *fx_tap_of(fuse_ino_t ino)
{
	if (ino < FX_INO_BASE || ino - FX_INO_BASE >= MINOR_MAX)
		return NULL;
	return tap_by_minor((int)(ino - FX_INO_BASE));
}

static void fx_root_attr(struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = FUSE_ROOT_ID;
	st->st_mode = S_IFDIR | 0500;
	st->st_nlink = 2;
	st->st_atime = st->st_mtime = st->st_ctime = fs.mounted_at;
}

static void fx_tap_attr(const struct tap *t, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = (ino_t)tap_minor(t) + FX_INO_BASE;
	st->st_mode = S_IFREG | (tap_read_only(t) ? 0400 : 0600);
	st->st_nlink = 1;
	st->st_size = (off_t)tap_size(t);
	st->st_blksize = (blksize_t)MAX(tap_align(t), 4096u);
	st->st_blocks = (blkcnt_t)(tap_size(t) / 512);
	st->st_atime = st->st_mtime = st->st_ctime = fs.mounted_at;
}

static void fx_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_write = FX_MAX_IO;
	conn->max_background = FX_BACKGROUND;
	conn->congestion_threshold = FX_CONGESTION;
	/* No page cache (see the top), no splice: data is copied once,
	 * between the kernel and a pool buffer. */
	conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
			FUSE_CAP_SPLICE_MOVE);
	/* The loop device's direct I/O in parallel; O_TRUNC in open (where
	 * we ignore it, as a block device does) rather than a setattr. */
	conn->want |= conn->capable & (FUSE_CAP_ASYNC_DIO | FUSE_CAP_ATOMIC_O_TRUNC);
	log_debug("fuse: session up (max_write %u, max_background %u)", conn->max_write,
		  conn->max_background);
}

static void fx_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct tap *t;
	int m;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	t = fx_tap_named(name);
	if (!t) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	m = tap_minor(t);
	if (fs.nodes[m].tap != t) {
		fs.nodes[m].tap = t;
		fs.nodes[m].gen = ++fs.gen;
	}
	memset(&e, 0, sizeof(e));
	e.ino = (fuse_ino_t)m + FX_INO_BASE;
	e.generation = fs.nodes[m].gen;
	e.attr_timeout = FX_ATTR_TIMEOUT;
	e.entry_timeout = 0;
	fx_tap_attr(t, &e.attr);
	fuse_reply_entry(req, &e);
}

static void fx_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	struct tap *t;

	(void)fi;
	if (ino == FUSE_ROOT_ID) {
		fx_root_attr(&st);
		fuse_reply_attr(req, &st, FX_ATTR_TIMEOUT);
		return;
	}
	t = fx_tap_of(ino);
	if (!t) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fx_tap_attr(t, &st);
	fuse_reply_attr(req, &st, FX_ATTR_TIMEOUT);
}

/* Times are accepted (and forgotten: touch works); the size, mode and
 * owner are the tap's. */
static void fx_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct stat st;
	struct tap *t = fx_tap_of(ino);

	(void)fi;
	if (ino == FUSE_ROOT_ID) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!t) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && (uint64_t)attr->st_size != tap_size(t)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fx_tap_attr(t, &st);
	fuse_reply_attr(req, &st, FX_ATTR_TIMEOUT);
}

static void fx_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fuse_reply_open(req, fi);
}

/* Offsets: 1 ".", 2 "..", then 3 + the tap's place in the list. */
static void fx_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	char *buf = fs.dirents;
	struct stat st;
	size_t used = 0, n;
	off_t i = 0;

	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	size = MIN(size, sizeof(fs.dirents));
	fx_root_attr(&st);
	for (i = off; i < 2; i++) {
		n = fuse_add_direntry(req, buf + used, size - used, i ? ".." : ".", &st, i + 1);
		if (n > size - used)
			goto full;
		used += n;
	}
	i = 2;
	for (struct tap *t = tap_first(); t; t = tap_next(t), i++) {
		if (i < off)
			continue;
		fx_tap_attr(t, &st);
		n = fuse_add_direntry(req, buf + used, size - used, tap_name(t), &st, i + 1);
		if (n > size - used)
			break;
		used += n;
	}
full:
	fuse_reply_buf(req, buf, used);
}

static struct fx_open *fx_fh(const struct fuse_file_info *fi)
{
	return (struct fx_open *)(uintptr_t)fi->fh;
}

static void fx_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tap *t = fx_tap_of(ino);
	bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fx_open *fo;
	struct fx_claim *c;
	int ret;

	if (!t || fs.nodes[tap_minor(t)].tap != t) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (writable && tap_read_only(t)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = fx_open_new(t, writable, &fo);
	if (ret < 0) {
		fuse_reply_err(req, ret == -ESHUTDOWN ? ENODEV : -ret);
		return;
	}
	LIST_FOREACH(c, &fs.claims, link) {
		if (c->tap == t && !c->matched &&
		    __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE) == ctx->pid) {
			c->fo = fo;
			c->matched = true;
			fo->claim = c;
			break;
		}
	}
	fi->direct_io = 1;
	fi->keep_cache = 0;
	/* A close of a read-only open has nothing to make durable; nor has
	 * the attach thread's close of the file it handed to a loop device
	 * (which flushes through fsync), and that close must not wait for
	 * the loop thread: under valgrind a thread in close() holds the
	 * lock every other thread waits for. */
	fi->noflush = !writable || fo->claim;
	fi->fh = (uint64_t)(uintptr_t)fo;
	if (fuse_reply_open(req, fi) < 0) {
		/* The opener went (interrupted): no release will come. */
		if (fo->claim) {
			fo->claim->fo = NULL;
			fo->claim->matched = false;
		}
		fx_open_put(fo);
	}
}

static void fx_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fx_open *fo = fx_fh(fi);
	struct fx_claim *c = fo->claim;

	(void)ino;
	fuse_reply_err(req, 0);
	if (c) {
		fo->claim = NULL;
		c->fo = NULL;
		c->released(c);
	}
	fx_open_put(fo);
}

static void fx_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	fx_io_read(req, fx_fh(fi), size, off);
}

static void fx_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	fx_io_write(req, fx_fh(fi), buf, size, off);
}

static void fx_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fx_open *fo = fx_fh(fi);

	(void)ino;
	if (!fo->writable) {
		fuse_reply_err(req, 0);
		return;
	}
	fx_io_flush(req, fo);
}

static void fx_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	(void)datasync;
	fx_io_flush(req, fx_fh(fi));
}

static void fx_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	(void)ino;
	fx_io_fallocate(req, fx_fh(fi), mode, off, len);
}

static const struct fuse_lowlevel_ops fx_ops = {
	.init = fx_init,
	.lookup = fx_lookup,
	.getattr = fx_getattr,
	.setattr = fx_setattr,
	.opendir = fx_opendir,
	.readdir = fx_readdir,
	.open = fx_open,
	.release = fx_release,
	.read = fx_read,
	.write = fx_write,
	.flush = fx_flush,
	.fsync = fx_fsync,
	.fallocate = fx_fallocate,
};

void fx_claim_add(struct fx_claim *c)
{
	c->fo = NULL;
	c->matched = false;
	LIST_INSERT_HEAD(&fs.claims, c, link);
}

void fx_claim_del(struct fx_claim *c)
{
	if (c->fo)
		c->fo->claim = NULL;
	c->fo = NULL;
	LIST_REMOVE(c, link);
}

/* ---- the reader ------------------------------------------------------ */

static void fx_stop_check(void);

static void fx_reader(bool on)
{
	if (on == fs.reading || !fs.ev)
		return;
	if (on)
		event_add(fs.ev, NULL);
	else
		event_del(fs.ev);
	fs.reading = on;
}

/* The session is over from the kernel's side (someone unmounted it). */
static void fx_lost(const char *why)
{
	log_err("fuse: %s: %s; taps are no longer served as files", fs.dir, why);
	snprintf(fs.why, sizeof(fs.why), "fuse: %.160s: %.80s", fs.dir, why);
	fx_reader(false);
}

static void fx_on_read(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (int n = 0; n < FX_READ_BUDGET; n++) {
		int res;

		if (fs.stopping || !fx_io_can_read()) {
			/* Back-pressure: the kernel queues until a slot (or
			 * the receive buffer) comes back (fx_wake). */
			if (!fs.stopping)
				log_debug("fuse: every request slot is taken, or a write holds the "
					  "receive buffer: not reading /dev/fuse for now");
			fx_reader(false);
			return;
		}
		res = fuse_session_receive_buf(fs.se, &fs.buf);
		if (res == -EAGAIN || res == -EINTR)
			return;
		if (res <= 0 || fuse_session_exited(fs.se)) {
			fx_lost(res < 0 ? strerror(-res) : "unmounted");
			return;
		}
		fuse_session_process_buf(fs.se, &fs.buf);
	}
}

/* From io.c: a slot or the receive buffer came back, or all is idle. */
static void fx_wake(void)
{
	if (fs.stopping) {
		fx_stop_check();
		return;
	}
	if (fs.ev && !fs.why[0] && fx_io_can_read()) {
		fx_reader(true);
		/* Requests may be waiting already: the fd will not say so
		 * again before the loop looks. */
		event_active(fs.ev, EV_READ, 0);
	}
}

/* ---- start ------------------------------------------------------------ */

int fx_fs_start(struct event_base *base, const char *dir, struct errbuf *eb)
{
	char *argv[] = { "tapd", "-o", "fsname=tapd,subtype=tapd", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	struct stat st;
	int fd, ret;

	LIST_INIT(&fs.claims);
	fs.base = base;
	snprintf(fs.dir, sizeof(fs.dir), "%s", dir);
	fuse_set_log_func(fx_log);
	ret = fx_io_setup(fx_wake);
	if (ret < 0) {
		err_set(eb, "out of memory");
		goto fail;
	}
	if (access("/dev/fuse", R_OK | W_OK) < 0) {
		ret = -errno;
		err_set(eb, "fuse: /dev/fuse: %s%s", strerror(errno),
			errno == ENOENT ? " (modprobe fuse)" : "");
		goto fail;
	}
	/* What a tapd that died left (stale.c), before our own mount;
	 * nothing here sends a FUSE request from the loop thread. */
	fx_clear_stale_loops(fs.dir);
	if (fx_mounted(fs.dir)) {
		if (umount2(fs.dir, MNT_DETACH) == 0)
			log_notice("fuse: %s was left mounted by a tapd that stopped: unmounted",
				   fs.dir);
		else
			log_warn("fuse: %s is mounted and cannot be unmounted: %s", fs.dir,
				 strerror(errno));
	}
	if (mkdir(fs.dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		err_set(eb, "fuse: cannot create %s: %s", fs.dir, strerror(errno));
		goto fail;
	}
	/* FUSE mounts on a file too (a file root), or through a symlink. */
	if (lstat(fs.dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		ret = -ENOTDIR;
		err_set(eb, "fuse: %s is not a directory", fs.dir);
		goto fail;
	}
	fs.se = fuse_session_new(&args, &fx_ops, sizeof(fx_ops), NULL);
	if (!fs.se) {
		ret = -ENOMEM;
		err_set(eb, "fuse: cannot make a session");
		goto fail;
	}
	if (fuse_session_mount(fs.se, fs.dir) != 0) {
		ret = -EIO;
		err_set(eb, "fuse: cannot mount %s (see the log above)", fs.dir);
		goto fail;
	}
	fs.mounted_at = time(NULL);
	fd = fuse_session_fd(fs.se);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		ret = -errno;
		err_set(eb, "fuse: /dev/fuse: %s", strerror(errno));
		goto fail;
	}
	fs.ev = event_new(base, fd, EV_READ | EV_PERSIST, fx_on_read, NULL);
	if (!fs.ev) {
		ret = -ENOMEM;
		err_set(eb, "out of memory");
		goto fail;
	}
	fx_reader(true);
	fuse_opt_free_args(&args);
	log_info("fuse: taps are files in %s", fs.dir);
	return 0;
fail:
	fuse_opt_free_args(&args);
	snprintf(fs.why, sizeof(fs.why), "%s", eb->msg);
	if (fs.se) {
		fuse_session_unmount(fs.se);
		fuse_session_destroy(fs.se);
		fs.se = NULL;
	}
	return ret;
}

bool fx_fs_up(struct errbuf *eb)
{
	if (fs.ev && !fs.why[0] && !fs.stopping)
		return true;
	err_set(eb, "%s", fs.stopping ? "fuse: tapd is stopping"
			  : fs.why[0] ? fs.why : "fuse: the FUSE export is not started");
	return false;
}

const char *fx_fs_dir(void)
{
	return fs.ev ? fs.dir : NULL;
}

/* ---- stop ------------------------------------------------------------- */

/* On its own thread: unmounting closes /dev/fuse first (libfuse does), so
 * the kernel fails whatever is still queued instead of waiting for us. */
static void fx_unmount_run(struct worker_job *job)
{
	(void)job;
	fuse_session_unmount(fs.se);
	rmdir(fs.dir);
}

static void fx_unmount_done(struct worker_job *job)
{
	struct fx_open *fo;
	void (*done)(void *) = fs.stop_done;

	(void)job;
	/* Files still open (by whoever: the kernel has failed them) give
	 * back their taps now. */
	while ((fo = fx_open_first())) {
		if (fo->claim)
			fo->claim->fo = NULL;
		fo->refs = 1;
		fx_open_put(fo);
	}
	if (fs.se)
		log_info("fuse: %s unmounted", fs.dir);
	fs.stop_done = NULL;
	done(fs.stop_arg);
}

static void fx_stop_check(void)
{
	if (!fs.stop_done || fs.unmounting || !fx_io_idle())
		return;
	fs.unmounting = true;
	if (!fs.se) {
		fs.unmount_job.done(&fs.unmount_job);
		return;
	}
	if (worker_spawn(&fs.unmount_job) < 0) {
		/* No thread: unmounting is lazy and /dev/fuse is closed
		 * first, so it does not wait for us; do it here. */
		fx_unmount_run(&fs.unmount_job);
		fx_unmount_done(&fs.unmount_job);
	}
}

static void fx_stop_ev(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fx_stop_check();
}

void fx_fs_stop(void (*done)(void *arg), void *arg)
{
	fs.stopping = true;
	fs.stop_done = done;
	fs.stop_arg = arg;
	fs.unmount_job.run = fx_unmount_run;
	fs.unmount_job.done = fx_unmount_done;
	fx_reader(false);
	/* From the loop, never from inside this call. */
	event_base_once(fs.base, -1, EV_TIMEOUT, fx_stop_ev, NULL, NULL);
}

void fx_fs_free(void)
{
	if (fs.ev)
		event_free(fs.ev);
	fs.ev = NULL;
	if (fs.se) {
		/* A stop that did not finish: lazy, /dev/fuse closed first. */
		fuse_session_unmount(fs.se);
		fuse_session_destroy(fs.se);
	}
	fs.se = NULL;
	free(fs.buf.mem);
	fs.buf.mem = NULL;
	fx_io_teardown();
}
