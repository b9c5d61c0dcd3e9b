/* The vhd driver's shared state: the open image, its bitmap cache and the
 * per-io bookkeeping. Private to src/drivers/vhd/. */
#ifndef TAPD_VHD_INTERNAL_H
#define TAPD_VHD_INTERNAL_H

#include <sys/queue.h>

#include "lib/aio.h"
#include "formats/vhd/format.h"
#include "drivers/driver.h"

/* Sector bitmaps kept in memory; more blocks than this in use at once
 * wait for a slot. */
#define VHD_BM_SLOTS 64
/* I/Os in progress at once on one image; more wait for a slot. */
#define VHD_SLOTS 256

struct vhd_io;
TAILQ_HEAD(vhd_waitq, vhd_io);
/* How the bitmap cache hands a vio it queued back to the driver: carry on,
 * or fail with err. Registered by vhd.c at vhd_bm_setup. */
typedef void vhd_wake_fn(struct vhd_io *vio, int err);

/* One block's sector bitmap in memory. */
struct vhd_bm {
	uint32_t block;      /* BAT index; UINT32_MAX when empty */
	uint32_t refs;       /* ios using it: not evictable */
	bool loading;        /* read in flight; waiters wait */
	bool writing;        /* a write of the map in flight */
	uint64_t set_gen;    /* bumped on every change of map */
	uint64_t write_gen;  /* set_gen when the write in flight started */
	uint64_t disk_gen;   /* set_gen of the last completed write */
	uint64_t lru;
	uint8_t *map;        /* bitmap_size bytes, aligned for O_DIRECT */
	struct aio_op op;
	struct vhd *vhd;
	struct vhd_waitq waiters;
	int err;
};

/* Scratch for one io: its own-file AIO and, for differencing disks, the
 * io sent down to the parent. */
struct vhd_slot {
	struct aio_op op;
	struct image_io pio;
	struct vhd_io *owner;
	struct vhd_slot *next_free;
};

struct vhd {
	int fd;
	char *path;
	struct vhd_meta meta;
	struct image *parent;   /* differencing: shared, read-only */
	uint64_t next_block;    /* file offset where a new block goes */
	uint64_t lru_clock;
	struct vhd_bm bm[VHD_BM_SLOTS];
	vhd_wake_fn *bm_wake;	       /* the driver's, for bitmap waiters */
	struct vhd_waitq bm_waiters;   /* no free bitmap slot */
	struct vhd_slot slots[VHD_SLOTS];
	struct vhd_slot *free_slots;
	struct vhd_waitq slot_waiters; /* no free io slot */
	/* Block allocation: one at a time, the others queue. */
	struct vhd_io *allocating;
	struct vhd_waitq alloc_waiters;
	uint8_t *meta_buf;             /* aligned: footer, BAT sector, bitmap */
};

/* Per-io state, in image_io.priv. */
struct vhd_io {
	struct image_io *io;
	struct vhd *vhd;
	struct vhd_slot *slot;
	struct vhd_bm *bm;       /* bitmap of the block being worked on */
	uint64_t pos;            /* next byte of the io to do */
	uint32_t piece;          /* bytes of the piece in progress */
	int stage;
	uint64_t need_gen;       /* bitmap generation this write needs on disk */
	TAILQ_ENTRY(vhd_io) link;
};

_Static_assert(sizeof(struct vhd_io) <= sizeof(((struct image_io *)0)->priv),
	       "vhd_io must fit in image_io.priv");

/* bitmap.c: the cache calls nothing in vhd.c; a vio it queued comes back
 * through wake. */
int vhd_bm_setup(struct vhd *v, vhd_wake_fn *wake);
void vhd_bm_teardown(struct vhd *v);
/* Get block's bitmap for vio: 0 with vio->bm set (a reference), or 1 when
 * vio was queued and wake(vio, err) will be called once it is. */
int vhd_bm_get(struct vhd_io *vio, uint32_t block);
void vhd_bm_put(struct vhd_io *vio);
/* Set bits for [first, first+count) and get them on disk: 0 if they were
 * all set already, else 1 and wake(vio, err) once a write carrying them
 * has completed (vio->stage tells the caller where it was). */
int vhd_bm_commit(struct vhd_io *vio, uint32_t first, uint32_t count);

#endif
