/* vhd: Microsoft VHD images, fixed, dynamic and differencing ("vhd:/path").
 *
 * Format and write order: see src/formats/vhd/format.h. In short, a dynamic disk is
 * a table (BAT) of blocks, each a sector bitmap followed by data; a sector
 * whose bit is clear reads as zeros (dynamic) or from the parent
 * (differencing). This driver keeps the BAT in memory, caches bitmaps
 * (bitmap.c), and does everything through the same AIO path as raw:
 *
 *   write into an allocated block:  data, then the bitmap if bits change;
 *   write into a new block:         data, footer after the block, bitmap
 *                                   over the old footer, fdatasync, BAT
 *                                   sector; one allocation at a time;
 *   read:                           per run of equal bits, from the file,
 *                                   from the parent, or zeros.
 *
 * A request is split at block boundaries and bitmap runs and its pieces run
 * one after another. Parents are opened read-only and shared between chains
 * (image_open_shared). The leaf takes an OFD write lock, parents read
 * locks, so tapd-vhd refuses to change what we have open. Trim is not
 * supported (blocks are never freed); write-zeroes is done by the tap.
 *
 * open() reads the metadata, BAT included, with src/formats/vhd/
 * (vhd_meta_load over file.c's vhd_fd_pread), synchronously: it runs on an
 * opening thread of its own (image_open_async), not on the loop. Files: this one (ops, the
 * piece machine, allocation, block status), bitmap.c (the bitmap cache,
 * which hands waiters back through a callback), internal.h (their state). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivers/image.h"
#include "drivers/path.h"
#include "lib/log.h"
#include "internal.h"

enum {
	S_START,      /* pick the next piece */
	S_SLOT,       /* waiting for an io slot */
	S_BITMAP,     /* waiting for the block's bitmap */
	S_DATA,       /* own-file read or write of the piece */
	S_PARENT,     /* piece read from the parent */
	S_COMMIT,     /* bitmap write carrying our bits */
	S_ALLOC_WAIT, /* waiting to allocate */
	S_ALLOC_DATA, S_ALLOC_FOOTER, S_ALLOC_BITMAP, S_ALLOC_SYNC, S_ALLOC_BAT,
	S_ALLOC_DONE, /* the BAT sector is on disk: the block exists */
	S_FUA,        /* final fdatasync of a FUA write */
	S_STATUS_BM,  /* block status waiting for a bitmap */
};

/* blktap's batmap says a block is wholly written: no bitmap needed. It is
 * only a hint, but a safe one: a block never loses written sectors. */
static bool vhd_block_full(const struct vhd *v, uint32_t block)
{
	return v->meta.has_batmap && vhd_bit_test(v->meta.batmap_map, block);
}

static struct vhd_io *vio_of(struct image_io *io)
{
	return (struct vhd_io *)io->priv;
}

static void vhd_step(struct vhd_io *vio);
static void vhd_status_step(struct vhd_io *vio);
static void vhd_resume(struct vhd_io *vio, int err);

/* The allocation is done: every waiter looks again, since the block it
 * waited for may now exist; those that still need one queue up again
 * behind whichever of them allocates next. */
static void vhd_alloc_release(struct vhd *v)
{
	struct vhd_waitq q = TAILQ_HEAD_INITIALIZER(q);
	struct vhd_io *w;

	v->allocating = NULL;
	TAILQ_CONCAT(&q, &v->alloc_waiters, link);
	while ((w = TAILQ_FIRST(&q))) {
		TAILQ_REMOVE(&q, w, link);
		vhd_resume(w, 0);
	}
}

static void vhd_finish(struct vhd_io *vio, int err)
{
	struct vhd *v = vio->vhd;
	struct vhd_slot *slot = vio->slot;
	struct image_io *io = vio->io;

	vhd_bm_put(vio);
	if (v->allocating == vio)
		vhd_alloc_release(v);
	if (slot) {
		vio->slot = NULL;
		slot->next_free = v->free_slots;
		v->free_slots = slot;
		if (!TAILQ_EMPTY(&v->slot_waiters)) {
			struct vhd_io *w = TAILQ_FIRST(&v->slot_waiters);

			TAILQ_REMOVE(&v->slot_waiters, w, link);
			vhd_resume(w, 0);
		}
	}
	io->done(io, err);
}

/* Carry on with vio after a wait; an error ends it. Also the bitmap
 * cache's wake callback. */
static void vhd_resume(struct vhd_io *vio, int err)
{
	if (err) {
		vhd_finish(vio, err);
		return;
	}
	vhd_step(vio);
}

static void vhd_aio_done(struct aio_op *op, long res)
{
	struct vhd_slot *slot = container_of(op, struct vhd_slot, op);
	struct vhd_io *vio = slot->owner;

	if (res >= 0 && op->iocb.aio_lio_opcode != IO_CMD_FDSYNC &&
	    (uint64_t)res != op->iocb.u.c.nbytes)
		res = -EIO; /* short I/O on a file we sized ourselves */
	vhd_resume(vio, res < 0 ? (int)res : 0);
}

static void vhd_parent_done(struct image_io *pio, int err)
{
	struct vhd_slot *slot = container_of(pio, struct vhd_slot, pio);

	vhd_resume(slot->owner, err);
}

static void vhd_aio(struct vhd_io *vio, short opcode, void *buf, size_t len, uint64_t off)
{
	struct iocb *cb = &vio->slot->op.iocb;

	if (opcode == IO_CMD_PREAD)
		io_prep_pread(cb, vio->vhd->fd, buf, len, (long long)off);
	else if (opcode == IO_CMD_PWRITE)
		io_prep_pwrite(cb, vio->vhd->fd, buf, len, (long long)off);
	else
		io_prep_fdsync(cb, vio->vhd->fd);
	vio->slot->op.done = vhd_aio_done;
	aio_submit(&vio->slot->op);
}

/* ---- block allocation ---------------------------------------------------
 * The write order of src/formats/vhd/format.h, one step per completion. */

static void vhd_alloc_step(struct vhd_io *vio)
{
	struct vhd *v = vio->vhd;
	const struct vhd_layout *l = &v->meta.layout;
	uint64_t sector = vio->pos >> VHD_SECTOR_SHIFT;
	uint32_t block = vhd_block_of(l, sector);
	uint64_t e = v->next_block;
	uint8_t *buf = v->meta_buf;
	uint64_t bat_at;

	switch (vio->stage) {
	case S_ALLOC_DATA:
		vio->stage = S_ALLOC_FOOTER;
		vhd_aio(vio, IO_CMD_PWRITE, (char *)vio->io->buf + (vio->pos - vio->io->off),
			vio->piece, vhd_data_offset(l, (uint32_t)(e >> VHD_SECTOR_SHIFT),
						    vhd_block_sector(l, sector)));
		return;
	case S_ALLOC_FOOTER:
		vio->stage = S_ALLOC_BITMAP;
		vhd_footer_encode(&v->meta.footer, buf);
		vhd_aio(vio, IO_CMD_PWRITE, buf, VHD_FOOTER_SIZE, e + l->bitmap_size + l->block_size);
		return;
	case S_ALLOC_BITMAP:
		vio->stage = S_ALLOC_SYNC;
		memset(buf, 0, l->bitmap_size);
		vhd_bits_set(buf, vhd_block_sector(l, sector), vio->piece >> VHD_SECTOR_SHIFT);
		vhd_aio(vio, IO_CMD_PWRITE, buf, l->bitmap_size, e);
		return;
	case S_ALLOC_SYNC:
		vio->stage = S_ALLOC_BAT;
		vhd_aio(vio, IO_CMD_FDSYNC, NULL, 0, 0);
		return;
	case S_ALLOC_BAT:
		/* Only in the sector: until it is on disk, the block does not
		 * exist for anyone (writers to it wait in alloc_waiters, readers
		 * read below it), and a failed write leaves nothing behind. */
		vio->stage = S_ALLOC_DONE;
		bat_at = vhd_bat_sector_encode(l, v->meta.bat, block, (uint32_t)(e >> VHD_SECTOR_SHIFT),
					       buf);
		vhd_aio(vio, IO_CMD_PWRITE, buf, VHD_SECTOR_SIZE, bat_at);
		return;
	case S_ALLOC_DONE:
		v->meta.bat[block] = (uint32_t)(e >> VHD_SECTOR_SHIFT);
		v->next_block = e + l->bitmap_size + l->block_size;
		vio->pos += vio->piece;
		vio->stage = S_START;
		return;
	}
}

/* ---- the piece machine ---------------------------------------------------- */

static void vhd_read_piece(struct vhd_io *vio, uint32_t block, uint32_t bs, uint32_t count)
{
	struct vhd *v = vio->vhd;
	const struct vhd_layout *l = &v->meta.layout;
	char *dst = (char *)vio->io->buf + (vio->pos - vio->io->off);
	bool set = false;
	uint32_t run = count;

	if (v->meta.bat[block] != VHD_BAT_UNUSED) {
		set = true;
		if (vio->bm)
			run = vhd_bits_run(vio->bm->map, bs, count, &set);
	}
	vio->piece = run << VHD_SECTOR_SHIFT;
	if (set) {
		vio->stage = S_DATA;
		vhd_aio(vio, IO_CMD_PREAD, dst, vio->piece, vhd_data_offset(l, v->meta.bat[block], bs));
	} else if (v->parent && vio->pos < v->parent->size) {
		struct image_io *pio = &vio->slot->pio;

		vio->stage = S_PARENT;
		pio->op = IMAGE_OP_READ;
		pio->flags = 0;
		pio->off = vio->pos;
		pio->len = (uint32_t)MIN(vio->piece, v->parent->size - vio->pos);
		vio->piece = pio->len;
		pio->buf = dst;
		pio->done = vhd_parent_done;
		image_submit(v->parent, pio);
	} else {
		/* Never written here and nothing below: zeros. */
		memset(dst, 0, vio->piece);
		vio->pos += vio->piece;
		vio->stage = S_START;
		vhd_bm_put(vio);
		vhd_step(vio);
	}
}

static void vhd_write_piece(struct vhd_io *vio, uint32_t block, uint32_t bs, uint32_t count)
{
	struct vhd *v = vio->vhd;
	const struct vhd_layout *l = &v->meta.layout;

	vio->piece = count << VHD_SECTOR_SHIFT;
	if (v->meta.bat[block] == VHD_BAT_UNUSED) {
		if (v->allocating && v->allocating != vio) {
			vio->stage = S_ALLOC_WAIT;
			TAILQ_INSERT_TAIL(&v->alloc_waiters, vio, link);
			return;
		}
		v->allocating = vio;
		vio->stage = S_ALLOC_DATA;
		vhd_alloc_step(vio);
		return;
	}
	vio->stage = S_DATA;
	vhd_aio(vio, IO_CMD_PWRITE, (char *)vio->io->buf + (vio->pos - vio->io->off), vio->piece,
		vhd_data_offset(l, v->meta.bat[block], bs));
}

/* Where the machine goes after the state it was in completed. */
static void vhd_step(struct vhd_io *vio)
{
	struct vhd *v = vio->vhd;
	struct image_io *io = vio->io;
	const struct vhd_layout *l = &v->meta.layout;
	uint64_t end = io->off + io->len, sector;
	uint32_t block, bs, count;

	switch (vio->stage) {
	case S_SLOT:
		if (!v->free_slots) {
			TAILQ_INSERT_TAIL(&v->slot_waiters, vio, link);
			return;
		}
		vio->slot = v->free_slots;
		v->free_slots = vio->slot->next_free;
		vio->slot->owner = vio;
		vio->stage = S_START;
		if (io->op == IMAGE_OP_FLUSH) {
			/* Parents are read-only: only our own file has
			 * anything to make durable. */
			vio->stage = S_FUA;
			vhd_aio(vio, IO_CMD_FDSYNC, NULL, 0, 0);
			return;
		}
		if (io->op == IMAGE_OP_BLOCK_STATUS) {
			io->ext_count = 0;
			vhd_status_step(vio);
			return;
		}
		break;
	case S_DATA:
	case S_PARENT:
		if (io->op == IMAGE_OP_WRITE) {
			sector = vio->pos >> VHD_SECTOR_SHIFT;
			vio->stage = S_COMMIT;
			if (vio->bm &&
			    vhd_bm_commit(vio, vhd_block_sector(l, sector), vio->piece >> 9))
				return;
		}
		__attribute__((fallthrough)); /* the piece is done */
	case S_COMMIT:
		vio->pos += vio->piece;
		vio->stage = S_START;
		vhd_bm_put(vio);
		break;
	case S_ALLOC_WAIT:
		vio->stage = S_START;
		break;
	case S_ALLOC_DATA ... S_ALLOC_BAT:
		vhd_alloc_step(vio);
		return;
	case S_ALLOC_DONE:
		vhd_alloc_step(vio); /* records the block; then the next piece */
		break;
	case S_FUA:
		vhd_finish(vio, 0);
		return;
	case S_STATUS_BM:
		vhd_status_step(vio);
		return;
	default:
		break;
	}
	if (v->allocating == vio && vio->stage == S_START)
		vhd_alloc_release(v);
	if (vio->pos >= end) {
		if (io->op == IMAGE_OP_WRITE && (io->flags & IMAGE_F_FUA)) {
			vio->stage = S_FUA;
			vhd_aio(vio, IO_CMD_FDSYNC, NULL, 0, 0);
			return;
		}
		vhd_finish(vio, 0);
		return;
	}
	if (l->type == VHD_TYPE_FIXED) {
		/* No bitmaps: the piece is done when it is read or written. */
		vio->piece = (uint32_t)(end - vio->pos);
		vio->stage = S_COMMIT;
		vhd_aio(vio, io->op == IMAGE_OP_READ ? IO_CMD_PREAD : IO_CMD_PWRITE,
			(char *)io->buf + (vio->pos - io->off), vio->piece, vio->pos);
		return;
	}
	sector = vio->pos >> VHD_SECTOR_SHIFT;
	block = vhd_block_of(l, sector);
	bs = vhd_block_sector(l, sector);
	count = (uint32_t)MIN(l->block_sectors - bs, (end - vio->pos) >> VHD_SECTOR_SHIFT);
	if (v->meta.bat[block] != VHD_BAT_UNUSED && !vio->bm && !vhd_block_full(v, block)) {
		vio->stage = S_BITMAP;
		if (vhd_bm_get(vio, block))
			return;
	}
	if (io->op == IMAGE_OP_READ)
		vhd_read_piece(vio, block, bs, count);
	else
		vhd_write_piece(vio, block, bs, count);
}

/* ---- block status -------------------------------------------------------
 * From the BAT and the bitmaps: sectors this image wrote are data; the
 * others read as zeros (a hole) on a dynamic disk, and as whatever the
 * parent says on a differencing one. */

static void vhd_ext_add(struct image_io *io, uint64_t len, uint32_t flags)
{
	struct image_extent *e = io->ext_count ? &io->ext[io->ext_count - 1] : NULL;

	if (e && e->flags == flags) {
		e->len += len;
	} else if (io->ext_count < io->ext_max) {
		e = &io->ext[io->ext_count++];
		e->len = len;
		e->flags = flags;
	}
}

static void vhd_status_step(struct vhd_io *vio);

static void vhd_status_parent_done(struct image_io *pio, int err)
{
	struct vhd_slot *slot = container_of(pio, struct vhd_slot, pio);
	struct vhd_io *vio = slot->owner;
	struct image_io *io = vio->io;
	uint64_t got = 0;

	if (err) {
		vhd_finish(vio, err);
		return;
	}
	/* The parent wrote its extents after ours, in our array; merge the
	 * first with our last if they match. */
	for (uint32_t i = 0; i < pio->ext_count; i++)
		got += pio->ext[i].len;
	if (io->ext_count && pio->ext_count && io->ext[io->ext_count - 1].flags == pio->ext[0].flags) {
		io->ext[io->ext_count - 1].len += pio->ext[0].len;
		memmove(pio->ext, pio->ext + 1, (pio->ext_count - 1) * sizeof(*pio->ext));
		pio->ext_count--;
	}
	io->ext_count += pio->ext_count;
	vio->pos += got;
	if (got < pio->len)
		vio->pos = io->off + io->len; /* the parent said less: so do we */
	vhd_status_step(vio);
}

/* Ask the parent about [pos, next): its extents land after ours. */
static void vhd_status_parent(struct vhd_io *vio, uint64_t next)
{
	struct vhd *v = vio->vhd;
	struct image_io *io = vio->io;
	struct image_io *pio = &vio->slot->pio;

	pio->op = IMAGE_OP_BLOCK_STATUS;
	pio->flags = 0;
	pio->off = vio->pos;
	pio->len = (uint32_t)(MIN(next, v->parent->size) - vio->pos);
	pio->buf = NULL;
	pio->ext = io->ext + io->ext_count;
	pio->ext_max = io->ext_max - io->ext_count;
	pio->ext_count = 0;
	pio->done = vhd_status_parent_done;
	image_submit(v->parent, pio);
}

static void vhd_status_step(struct vhd_io *vio)
{
	struct vhd *v = vio->vhd;
	struct image_io *io = vio->io;
	const struct vhd_layout *l = &v->meta.layout;
	uint64_t end = io->off + io->len;

	while (vio->pos < end && io->ext_count < io->ext_max) {
		uint64_t sector = vio->pos >> VHD_SECTOR_SHIFT;
		uint32_t block = vhd_block_of(l, sector);
		uint64_t next = MIN(end, ((uint64_t)block + 1) * l->block_size);
		/* What a sector this image never wrote reads as: the
		 * parent's, or zeros past it and on a dynamic disk. */
		bool below = v->parent && vio->pos < v->parent->size;
		bool set = false;

		if (vio->bm && vio->bm->block != block)
			vhd_bm_put(vio);
		if (v->meta.bat[block] == VHD_BAT_UNUSED) {
			/* Unallocated blocks go down as one run. */
			while (next < end && v->meta.bat[vhd_block_of(l, next >> 9)] == VHD_BAT_UNUSED)
				next = MIN(end, next + l->block_size);
		} else if (vhd_block_full(v, block)) {
			set = true;
		} else {
			uint32_t bs = vhd_block_sector(l, sector);

			if (!vio->bm) {
				vio->stage = S_STATUS_BM;
				if (vhd_bm_get(vio, block))
					return;
			}
			next = vio->pos + ((uint64_t)vhd_bits_run(vio->bm->map, bs,
				(uint32_t)((next - vio->pos) >> VHD_SECTOR_SHIFT), &set) << 9);
		}
		if (set || (below && !v->parent->can_extents)) {
			vhd_ext_add(io, next - vio->pos, 0);
		} else if (below) {
			vhd_status_parent(vio, next);
			return;
		} else {
			vhd_ext_add(io, next - vio->pos, IMAGE_EXT_HOLE | IMAGE_EXT_ZERO);
		}
		vio->pos = next;
	}
	vhd_bm_put(vio);
	vhd_finish(vio, 0);
}

/* ---- ops table --------------------------------------------------------- */

static void vhd_submit(struct image *img, struct image_io *io)
{
	struct vhd *v = img->priv;
	struct vhd_io *vio = vio_of(io);

	memset(vio, 0, sizeof(*vio));
	vio->io = io;
	vio->vhd = v;
	vio->pos = io->off;
	switch (io->op) {
	case IMAGE_OP_READ:
	case IMAGE_OP_WRITE:
	case IMAGE_OP_FLUSH:
	case IMAGE_OP_BLOCK_STATUS:
		vio->stage = S_SLOT;
		vhd_step(vio);
		return;
	default:
		io->done(io, -EOPNOTSUPP);
		return;
	}
}

static void vhd_report(void *opaque, const char *msg)
{
	log_warn("%s: %s", (const char *)opaque, msg);
}

/* Same file? (Paths may differ in spelling.) */
static bool vhd_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* Open and check the parent of a differencing disk: the one its locators
 * name, shared with other chains, or the image given in its place (a
 * stacked tap), which must be that same file. */
static int vhd_open_parent(struct vhd *v, const char *parent_spec, struct errbuf *eb)
{
	char ppath[VHD_PATH_MAX];
	struct image *pimg;
	struct vhd *p;
	int ret;

	ret = vhd_find_parent(v->path, &v->meta, ppath, sizeof(ppath), eb);
	if (ret < 0)
		return ret;
	if (parent_spec) {
		ret = image_open(parent_spec, true, &v->parent, eb);
		if (ret < 0)
			return ret;
		pimg = image_below(v->parent);
		if (!pimg || pimg->drv != &driver_vhd ||
		    !vhd_same_file(((struct vhd *)pimg->priv)->path, ppath)) {
			err_set(eb, "%s serves %s, but the parent of %s is %s", parent_spec,
				pimg ? pimg->spec : "no image", v->path, ppath);
			return -EINVAL;
		}
	} else {
		ret = image_open_shared("vhd", ppath, &v->parent, eb);
		if (ret < 0)
			return ret;
		pimg = v->parent;
	}
	p = pimg->priv;
	ret = vhd_parent_match(&v->meta, &p->meta.footer, eb);
	if (ret == -ESTALE) {
		log_warn("%s: %s (accepted)", v->path, eb->msg);
		eb->msg[0] = '\0';
		ret = 0;
	}
	return ret;
}

static void vhd_free(struct vhd *v)
{
	if (v->parent)
		image_close(v->parent);
	vhd_bm_teardown(v);
	vhd_meta_free(&v->meta);
	free(v->meta_buf);
	if (v->fd >= 0)
		close(v->fd);
	free(v->path);
	free(v);
}

/* The files of the chain being opened: a parent opens inside its child's
 * vhd_open (through image_open_shared), so a chain whose locators come
 * back to one of its files is caught here, not taken for a file that
 * another process holds locked. */
static _Thread_local struct vhd_chain vhd_opening;

static int vhd_open_file(struct image *img, struct vhd *v, const char *path, struct errbuf *eb);

static int vhd_open(struct image *img, const char *path, struct errbuf *eb)
{
	unsigned depth = vhd_opening.n;
	struct vhd *v = calloc(1, sizeof(*v));
	int ret;

	if (!v)
		return -ENOMEM;
	ret = vhd_open_file(img, v, path, eb);
	vhd_opening.n = depth; /* this file and those below leave the chain */
	return ret;
}

static int vhd_open_file(struct image *img, struct vhd *v, const char *path, struct errbuf *eb)
{
	struct errbuf cerr = { "" };
	struct stat st;
	uint64_t fsize;
	int mfd, ret;

	v->fd = -1;
	v->path = strdup(path);
	if (!v->path) {
		free(v);
		return -ENOMEM;
	}
	/* The allow-list and the file-type rule, for the leaf and for every
	 * parent (which opens through image_open_shared and comes here). */
	ret = image_path_open(path, (img->read_only ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC,
			      &st, eb);
	if (ret < 0) {
		err_set(eb, "cannot open %s: %s", path, strerror(-ret));
		goto fail;
	}
	v->fd = ret;
	ret = vhd_chain_add(&vhd_opening, v->fd, &cerr);
	if (ret < 0) {
		err_set(eb, "%s: %s", path, cerr.msg);
		goto fail;
	}
	ret = vhd_lock(v->fd, !img->read_only, path, eb);
	if (ret < 0)
		goto fail;
	/* Metadata is read once, at open, through a plain descriptor: the
	 * loader's buffers are not aligned for O_DIRECT. */
	mfd = image_path_reopen(v->fd, O_RDONLY | O_CLOEXEC);
	ret = mfd < 0 ? mfd : vhd_file_size(mfd, &fsize); /* block devices too */
	if (ret < 0) {
		err_set(eb, "cannot read %s: %s", path, strerror(-ret));
		if (mfd >= 0)
			close(mfd);
		goto fail;
	}
	ret = vhd_meta_load(&v->meta, vhd_fd_pread, &mfd, fsize, vhd_report, v->path, eb);
	close(mfd);
	if (ret < 0)
		goto fail;
	if (v->meta.footer_from_copy && !img->read_only) {
		err_set(eb, "%s: the footer at the end is damaged; run tapd-vhd check", path);
		ret = -EINVAL;
		goto fail;
	}
	if (v->meta.layout.type == VHD_TYPE_DIFF &&
	    (ret = vhd_open_parent(v, img->parent_spec, eb)) < 0)
		goto fail;
	if (img->parent_spec && v->meta.layout.type != VHD_TYPE_DIFF) {
		err_set(eb, "%s is not a differencing disk: it has no parent for %s to serve",
			path, img->parent_spec);
		ret = -EINVAL;
		goto fail;
	}
	if (v->meta.layout.type != VHD_TYPE_FIXED)
		v->next_block = vhd_data_end(&v->meta.layout, v->meta.bat);
	if (posix_memalign((void **)&v->meta_buf, 4096,
			   MAX(VHD_SECTOR_SIZE, v->meta.layout.bitmap_size)) ||
	    vhd_bm_setup(v, vhd_resume) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	TAILQ_INIT(&v->slot_waiters);
	TAILQ_INIT(&v->alloc_waiters);
	for (int i = VHD_SLOTS - 1; i >= 0; i--) {
		v->slots[i].next_free = v->free_slots;
		v->free_slots = &v->slots[i];
	}
	img->priv = v;
	img->size = v->meta.layout.size;
	img->align = VHD_SECTOR_SIZE;
	img->can_flush = true;
	img->can_extents = v->meta.layout.type != VHD_TYPE_FIXED;
	return 0;
fail:
	vhd_free(v);
	return ret;
}

static struct image *vhd_parent(struct image *img)
{
	return ((struct vhd *)img->priv)->parent;
}

static void vhd_close(struct image *img)
{
	vhd_free(img->priv);
	img->priv = NULL;
}

const struct driver driver_vhd = {
	.name = "vhd",
	.open = vhd_open,
	.close = vhd_close,
	.submit = vhd_submit,
	.parent = vhd_parent,
};
