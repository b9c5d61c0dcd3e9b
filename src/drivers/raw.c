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
 * Requests arrive aligned to img->align (the file's direct-I/O alignment);
 * the tap layer does read-modify-write for clients that are not. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../aio.h"
#include "../log.h"
#include "driver.h"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

struct raw {
	int fd;
	bool direct;
};

/* Per-io state, kept in image_io.priv. */
struct raw_io {
	struct aio_op op;
	struct image_io *io;
	struct raw *raw;
	uint32_t done_bytes; /* progress across short transfers */
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
	fd = open(path, flags | O_DIRECT);
	if (fd < 0 && errno == EINVAL) {
		/* Filesystem without O_DIRECT: still correct, but writes
		 * may now block the loop in the page cache. */
		fd = open(path, flags);
		if (fd >= 0)
			log_warn("raw: %s: no O_DIRECT on this filesystem; using the page cache, "
				 "which can stall the daemon under memory pressure", path);
	} else if (fd >= 0) {
		flags |= O_DIRECT;
	}
	if (fd < 0) {
		ret = -errno;
		err_set(eb, "cannot open %s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		img->size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &img->size) < 0) {
			ret = -errno;
			goto fail;
		}
	} else {
		err_set(eb, "%s is neither a regular file nor a block device", path);
		ret = -EINVAL;
		goto fail;
	}
	raw = calloc(1, sizeof(*raw));
	if (!raw) {
		ret = -ENOMEM;
		goto fail;
	}
	raw->fd = fd;
	raw->direct = flags & O_DIRECT;
	img->priv = raw;
	img->align = raw->direct ? raw_dio_align(fd, &st) : 1;
	img->can_flush = true;
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
	free(raw);
	img->priv = NULL;
}

static void raw_issue(struct raw_io *rio)
{
	struct image_io *io = rio->io;
	struct iocb *cb = &rio->op.iocb;
	char *buf = (char *)io->buf + rio->done_bytes;
	long long off = (long long)(io->off + rio->done_bytes);
	size_t len = io->len - rio->done_bytes;

	switch (io->op) {
	case TAP_OP_READ:
		io_prep_pread(cb, rio->raw->fd, buf, len, off);
		break;
	case TAP_OP_WRITE:
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
	if (io->op == TAP_OP_FLUSH) {
		io->done(io, 0);
		return;
	}
	rio->done_bytes += (uint32_t)res;
	if (rio->done_bytes < io->len) {
		if (res == 0 && io->op == TAP_OP_READ) {
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

static void raw_submit(struct image *img, struct image_io *io)
{
	struct raw_io *rio = (struct raw_io *)io->priv;

	if (io->op != TAP_OP_READ && io->op != TAP_OP_WRITE && io->op != TAP_OP_FLUSH) {
		io->done(io, -EOPNOTSUPP);
		return;
	}
	rio->io = io;
	rio->raw = img->priv;
	rio->done_bytes = 0;
	rio->op.done = raw_complete;
	raw_issue(rio);
}

const struct driver driver_raw = {
	.name = "raw",
	.open = raw_open,
	.close = raw_close,
	.submit = raw_submit,
};
