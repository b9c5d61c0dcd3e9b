/* raw: a plain file or block device, byte for byte.
 *
 * Format: none; the image is the storage. Guarantees: data moves with
 * O_DIRECT through Linux AIO, so the daemon never dirties the page cache and
 * never sits in dirty-page throttling (the blktap wedge); a write completes
 * when the device has it, and with FUA (RWF_DSYNC) when it is stable; flush
 * is an asynchronous fdatasync (IOCB_CMD_FDSYNC). Errors from the storage are
 * passed up unchanged, so a full filesystem is ENOSPC to the client and the
 * same write succeeds once space is freed.
 *
 * Trim punches holes, write-zeroes punches (or with NO_HOLE zero-fills the
 * extents) with fallocate, and block status asks SEEK_DATA/SEEK_HOLE: the
 * kernel has no asynchronous form of those, so they run on worker threads.
 *
 * A file on tmpfs is memory: Linux AIO copies its pages inside io_submit,
 * on the loop thread, before it returns. There raw does the same copy with
 * preadv2/pwritev2 straight from submit, which blocks the loop no longer
 * than io_submit would and saves the AIO round trip (iocb, completion
 * ring, eventfd wake-up, io_getevents) on every request. It also offers
 * splice_read and splice_write there: the NBD server hands tmpfs pages to
 * its socket by reference, and moves a WRITE's payload from its socket into
 * the file through a pipe without copying it into a buffer of its own, both
 * through a second descriptor of the same file opened without O_DIRECT
 * (splice with an O_DIRECT file copies).
 *
 * Requests arrive aligned to img->align (the file's direct-I/O alignment);
 * the tap layer does read-modify-write for clients that are not. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "lib/aio.h"
#include "lib/log.h"
#include "lib/worker.h"
#include "driver.h"
#include "path.h"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

struct raw {
	int fd;
	bool direct;
	bool blockdev;
	bool inline_io; /* memory-backed: copy in submit instead of AIO */
	int splice_fd;	/* memory-backed: the file without O_DIRECT, or -1 */
};

/* Per-io state, kept in image_io.priv: an io goes either to AIO or to a
 * worker thread, never both. */
struct raw_io {
	union {
		struct aio_op op;
		struct worker_job job;
	};
	struct image_io *io;
	struct raw *raw;
	union {
		uint32_t done_bytes; /* AIO: progress across short transfers */
		int err;             /* worker: the result */
	};
};

_Static_assert(sizeof(struct raw_io) <= sizeof(((struct image_io *)0)->priv),
	       "raw_io must fit in image_io.priv");

static uint32_t raw_dio_align(int fd, const struct stat *st)
{
	struct statx stx;
	int ssz;

	if (S_ISBLK(st->st_mode) && ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0)
		return (uint32_t)ssz;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align)
		return MAX(stx.stx_dio_offset_align, stx.stx_dio_mem_align);
	return 512;
}

static bool raw_memory_backed(int fd)
{
	struct statfs sfs;

	return fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

static int raw_open(struct image *img, const char *path, struct errbuf *eb)
{
	int flags = (img->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	struct raw *raw;
	struct stat st;
	int fd, ret;

	if (!*path) {
		err_set(eb, "raw: missing path (raw:/path/to/file)");
		return -EINVAL;
	}
	/* The allow-list and the file-type rule: only a regular file or a
	 * block device gets this far. */
	fd = image_path_open(path, flags | O_DIRECT, &st, eb);
	if (fd == -EINVAL && !eb->msg[0]) {
		/* Filesystem without O_DIRECT: still correct, but writes
		 * may now block the loop in the page cache. */
		fd = image_path_open(path, flags, &st, eb);
		if (fd >= 0)
			log_warn("raw: %s: no O_DIRECT on this filesystem; using the page cache, "
				 "which can stall the daemon under memory pressure", path);
	} else if (fd >= 0) {
		flags |= O_DIRECT;
	}
	if (fd < 0)
		return fd;
	if (S_ISREG(st.st_mode)) {
		img->size = (uint64_t)st.st_size;
	} else if (ioctl(fd, BLKGETSIZE64, &img->size) < 0) {
		ret = -errno;
		goto fail;
	}
	raw = calloc(1, sizeof(*raw));
	if (!raw) {
		ret = -ENOMEM;
		goto fail;
	}
	raw->fd = fd;
	raw->direct = flags & O_DIRECT;
	raw->blockdev = S_ISBLK(st.st_mode);
	raw->inline_io = raw_memory_backed(fd);
	/* The same open file once more, without O_DIRECT, for splice. */
	raw->splice_fd = raw->inline_io ? image_path_reopen(fd, flags & ~O_DIRECT) : -1;
	if (raw->inline_io && raw->splice_fd < 0)
		log_debug("raw: %s: no second descriptor for splice: %s", path,
			  strerror(-raw->splice_fd));
	img->priv = raw;
	img->align = raw->direct ? raw_dio_align(fd, &st) : 1;
	img->can_flush = true;
	img->can_splice = raw->splice_fd >= 0;
	/* Optimistic: a filesystem or device that cannot says EOPNOTSUPP on
	 * first use and the tap stops asking. */
	img->can_trim = img->can_zero = !img->read_only;
	/* SEEK_DATA means nothing on a block device. */
	img->can_extents = !raw->blockdev;
	return 0;
fail:
	err_set(eb, "cannot use %s: %s", path, strerror(-ret));
	close(fd);
	return ret;
}

static void raw_close(struct image *img)
{
	struct raw *raw = img->priv;

	close(raw->fd);
	if (raw->splice_fd >= 0)
		close(raw->splice_fd);
	free(raw);
	img->priv = NULL;
}

static void raw_complete(struct aio_op *op, long res);

/* The memory-backed path: the same copy io_submit would make, minus AIO. */
static void raw_issue_inline(struct raw_io *rio, char *buf, size_t len, off_t off)
{
	struct image_io *io = rio->io;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	int fd = rio->raw->fd;
	long res;

	switch (io->op) {
	case IMAGE_OP_READ:
		res = preadv2(fd, &iov, 1, off, 0);
		break;
	case IMAGE_OP_WRITE:
		res = pwritev2(fd, &iov, 1, off, (io->flags & IMAGE_F_FUA) ? RWF_DSYNC : 0);
		break;
	default:
		res = fdatasync(fd);
		break;
	}
	raw_complete(&rio->op, res < 0 ? -errno : res);
}

static void raw_issue(struct raw_io *rio)
{
	struct image_io *io = rio->io;
	struct iocb *cb = &rio->op.iocb;
	char *buf = (char *)io->buf + rio->done_bytes;
	long long off = (long long)(io->off + rio->done_bytes);
	size_t len = io->len - rio->done_bytes;

	if (rio->raw->inline_io) {
		raw_issue_inline(rio, buf, len, (off_t)off);
		return;
	}
	switch (io->op) {
	case IMAGE_OP_READ:
		io_prep_pread(cb, rio->raw->fd, buf, len, off);
		break;
	case IMAGE_OP_WRITE:
		io_prep_pwrite(cb, rio->raw->fd, buf, len, off);
		if (io->flags & IMAGE_F_FUA)
			cb->aio_rw_flags = RWF_DSYNC;
		break;
	default:
		io_prep_fdsync(cb, rio->raw->fd);
		break;
	}
	aio_submit(&rio->op);
}

static void raw_complete(struct aio_op *op, long res)
{
	struct raw_io *rio = container_of(op, struct raw_io, op);
	struct image_io *io = rio->io;

	if (res < 0) {
		io->done(io, (int)res);
		return;
	}
	if (io->op == IMAGE_OP_FLUSH) {
		io->done(io, 0);
		return;
	}
	rio->done_bytes += (uint32_t)res;
	if (rio->done_bytes < io->len) {
		if (res == 0 && io->op == IMAGE_OP_READ) {
			/* End of a file whose size is not a multiple of the
			 * alignment: the rest reads as zeros. */
			memset((char *)io->buf + rio->done_bytes, 0, io->len - rio->done_bytes);
		} else if (res == 0) {
			io->done(io, -EIO);
			return;
		} else {
			/* Short transfer: go on from where it stopped; if the
			 * device is full the next attempt says ENOSPC. */
			raw_issue(rio);
			return;
		}
	}
	io->done(io, 0);
}

/* ---- on a worker thread -------------------------------------------- */

static int raw_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
	return fallocate(fd, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

static int raw_zero(struct raw *raw, struct image_io *io)
{
	int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	int zero = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	int ret;

	/* A hole reads as zeros and costs nothing; NO_HOLE asks to keep
	 * the blocks, which ZERO_RANGE does. */
	if (io->flags & IMAGE_F_NO_HOLE)
		return raw_fallocate(raw->fd, zero, io->off, io->len);
	ret = raw_fallocate(raw->fd, punch, io->off, io->len);
	if (ret == -EOPNOTSUPP)
		ret = raw_fallocate(raw->fd, zero, io->off, io->len);
	return ret;
}

/* Describe [off, off + len) as runs of data and holes. */
static int raw_extents(struct raw *raw, struct image_io *io)
{
	uint64_t pos = io->off, end = io->off + io->len;
	struct stat st;

	io->ext_count = 0;
	/* A file with as many blocks as bytes has no holes, and fstat is
	 * cheap where SEEK_DATA is not (tmpfs walks its pages: milliseconds
	 * on a big file). */
	if (fstat(raw->fd, &st) == 0 && (uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size) {
		io->ext[0].len = io->len;
		io->ext[0].flags = 0;
		io->ext_count = 1;
		return 0;
	}
	while (pos < end && io->ext_count < io->ext_max) {
		off_t data = lseek(raw->fd, (off_t)pos, SEEK_DATA);
		struct image_extent *e = &io->ext[io->ext_count];
		uint64_t next;

		if (data < 0 && errno != ENXIO)
			return -errno;
		if (data < 0 || (uint64_t)data > pos) {
			/* ENXIO: no data from here to the end of the file. */
			next = data < 0 ? end : MIN((uint64_t)data, end);
			e->flags = IMAGE_EXT_HOLE | IMAGE_EXT_ZERO;
		} else {
			off_t hole = lseek(raw->fd, (off_t)pos, SEEK_HOLE);

			if (hole < 0)
				return -errno;
			next = MIN((uint64_t)hole, end);
			e->flags = 0;
		}
		e->len = next - pos;
		io->ext_count++;
		pos = next;
	}
	return 0;
}

static void raw_work(struct worker_job *job)
{
	struct raw_io *rio = container_of(job, struct raw_io, job);
	struct image_io *io = rio->io;
	struct raw *raw = rio->raw;

	switch (io->op) {
	case IMAGE_OP_TRIM:
		rio->err = raw_fallocate(raw->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					 io->off, io->len);
		/* Trim is advice; storage that cannot take it loses nothing. */
		if (rio->err == -EOPNOTSUPP)
			rio->err = 0;
		break;
	case IMAGE_OP_WRITE_ZEROES:
		rio->err = raw_zero(raw, io);
		break;
	default:
		rio->err = raw_extents(raw, io);
		return;
	}
	if (!rio->err && (io->flags & IMAGE_F_FUA) && fdatasync(raw->fd) < 0)
		rio->err = -errno;
}

static void raw_work_done(struct worker_job *job)
{
	struct raw_io *rio = container_of(job, struct raw_io, job);

	rio->io->done(rio->io, rio->err);
}

static void raw_submit(struct image *img, struct image_io *io)
{
	struct raw_io *rio = (struct raw_io *)io->priv;

	rio->io = io;
	rio->raw = img->priv;
	switch (io->op) {
	case IMAGE_OP_READ:
	case IMAGE_OP_WRITE:
	case IMAGE_OP_FLUSH:
		rio->done_bytes = 0;
		rio->op.done = raw_complete;
		raw_issue(rio);
		return;
	case IMAGE_OP_TRIM:
	case IMAGE_OP_WRITE_ZEROES:
	case IMAGE_OP_BLOCK_STATUS:
		rio->job.run = raw_work;
		rio->job.done = raw_work_done;
		worker_submit(&rio->job);
		return;
	default:
		io->done(io, -EOPNOTSUPP);
		return;
	}
}

/* Splice len bytes from in to out, one side being the tmpfs file at
 * *pos. Returns len, the bytes moved when it stopped short, or a negative
 * errno when nothing moved. */
static ssize_t raw_splice_all(int in, loff_t *in_pos, int out, loff_t *out_pos, size_t len)
{
	size_t moved = 0;

	while (moved < len) {
		ssize_t n = splice(in, in_pos, out, out_pos, len - moved, SPLICE_F_NONBLOCK);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (moved)
				return (ssize_t)moved;
			return n < 0 ? -errno : -EIO;
		}
		moved += (size_t)n;
	}
	return (ssize_t)moved;
}

static ssize_t raw_splice_read(struct image *img, uint64_t off, size_t len, int pipe_fd)
{
	struct raw *raw = img->priv;
	loff_t pos = (loff_t)off;

	if (raw->splice_fd < 0)
		return -EOPNOTSUPP;
	return raw_splice_all(raw->splice_fd, &pos, pipe_fd, NULL, len);
}

static ssize_t raw_splice_write(struct image *img, uint64_t off, size_t len, int pipe_fd)
{
	struct raw *raw = img->priv;
	loff_t pos = (loff_t)off;

	if (raw->splice_fd < 0 || img->read_only)
		return -EOPNOTSUPP;
	return raw_splice_all(pipe_fd, NULL, raw->splice_fd, &pos, len);
}

const struct driver driver_raw = {
	.name = "raw",
	.open = raw_open,
	.close = raw_close,
	.submit = raw_submit,
	.splice_read = raw_splice_read,
	.splice_write = raw_splice_write,
};
