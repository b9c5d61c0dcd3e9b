/* The vhd driver's cache of sector bitmaps: a fixed set of slots filled on
 * demand by asynchronous reads, evicted least-recently-used among those no
 * io holds, and written back so that a write of the map never overtakes an
 * earlier one (each write carries every bit set before it started). A vio
 * that had to wait goes back to the driver through the wake callback it
 * registered at setup. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int vhd_bm_setup(struct vhd *v, vhd_wake_fn *wake)
{
	uint32_t size = v->meta.layout.bitmap_size;

	v->bm_wake = wake;
	TAILQ_INIT(&v->bm_waiters);
	for (int i = 0; i < VHD_BM_SLOTS; i++) {
		struct vhd_bm *bm = &v->bm[i];

		bm->block = UINT32_MAX;
		bm->vhd = v;
		TAILQ_INIT(&bm->waiters);
		if (size && posix_memalign((void **)&bm->map, 4096, size))
			return -ENOMEM;
	}
	return 0;
}

void vhd_bm_teardown(struct vhd *v)
{
	for (int i = 0; i < VHD_BM_SLOTS; i++)
		free(v->bm[i].map);
}

static void bm_wake_all(struct vhd *v, struct vhd_waitq *q, int err)
{
	struct vhd_waitq now = TAILQ_HEAD_INITIALIZER(now);
	struct vhd_io *vio;

	TAILQ_CONCAT(&now, q, link);
	while ((vio = TAILQ_FIRST(&now))) {
		TAILQ_REMOVE(&now, vio, link);
		v->bm_wake(vio, err);
	}
}

static void bm_loaded(struct aio_op *op, long res)
{
	struct vhd_bm *bm = container_of(op, struct vhd_bm, op);
	int err = res < 0 ? (int)res : (uint64_t)res < bm->vhd->meta.layout.bitmap_size ? -EIO : 0;
	struct vhd_waitq q = TAILQ_HEAD_INITIALIZER(q);
	struct vhd_io *vio;

	bm->loading = false;
	TAILQ_CONCAT(&q, &bm->waiters, link);
	if (err) {
		/* Forget it, so that the next use reads it again. */
		bm->block = UINT32_MAX;
	}
	while ((vio = TAILQ_FIRST(&q))) {
		TAILQ_REMOVE(&q, vio, link);
		if (err) {
			bm->refs--;
			vio->bm = NULL;
		}
		bm->vhd->bm_wake(vio, err);
	}
}

int vhd_bm_get(struct vhd_io *vio, uint32_t block)
{
	struct vhd *v = vio->vhd;
	struct vhd_bm *bm, *victim = NULL;

	for (int i = 0; i < VHD_BM_SLOTS; i++) {
		bm = &v->bm[i];
		if (bm->block == block) {
			bm->refs++;
			bm->lru = ++v->lru_clock;
			vio->bm = bm;
			if (bm->loading) {
				TAILQ_INSERT_TAIL(&bm->waiters, vio, link);
				return 1;
			}
			return 0;
		}
		if (!bm->refs && !bm->writing && !bm->loading &&
		    (!victim || bm->lru < victim->lru))
			victim = bm;
	}
	if (!victim) {
		TAILQ_INSERT_TAIL(&v->bm_waiters, vio, link);
		return 1;
	}
	bm = victim;
	bm->block = block;
	bm->refs = 1;
	bm->lru = ++v->lru_clock;
	bm->loading = true;
	bm->set_gen = bm->write_gen = bm->disk_gen = 0;
	vio->bm = bm;
	TAILQ_INSERT_TAIL(&bm->waiters, vio, link);
	io_prep_pread(&bm->op.iocb, v->fd, bm->map, v->meta.layout.bitmap_size,
		      (long long)vhd_bitmap_offset(v->meta.bat[block]));
	bm->op.done = bm_loaded;
	aio_submit(&bm->op);
	return 1;
}

void vhd_bm_put(struct vhd_io *vio)
{
	struct vhd_bm *bm = vio->bm;
	struct vhd *v = vio->vhd;

	if (!bm)
		return;
	vio->bm = NULL;
	if (--bm->refs == 0 && !bm->writing && !TAILQ_EMPTY(&v->bm_waiters))
		/* A slot is free: everyone waiting for one tries again. */
		bm_wake_all(v, &v->bm_waiters, 0);
}

static void bm_write(struct vhd_bm *bm);

static void bm_written(struct aio_op *op, long res)
{
	struct vhd_bm *bm = container_of(op, struct vhd_bm, op);
	struct vhd *v = bm->vhd;
	int err = res < 0 ? (int)res : 0;
	struct vhd_waitq q = TAILQ_HEAD_INITIALIZER(q);
	struct vhd_io *vio, *next;

	bm->writing = false;
	if (!err)
		bm->disk_gen = bm->write_gen;
	/* Those whose bits this write carried (all of them, on error) go;
	 * the others need the next write. */
	for (vio = TAILQ_FIRST(&bm->waiters); vio; vio = next) {
		next = TAILQ_NEXT(vio, link);
		if (err || vio->need_gen <= bm->disk_gen) {
			TAILQ_REMOVE(&bm->waiters, vio, link);
			TAILQ_INSERT_TAIL(&q, vio, link);
		}
	}
	if (!TAILQ_EMPTY(&bm->waiters))
		bm_write(bm);
	while ((vio = TAILQ_FIRST(&q))) {
		TAILQ_REMOVE(&q, vio, link);
		v->bm_wake(vio, err);
	}
	if (!bm->refs && !bm->writing && !TAILQ_EMPTY(&v->bm_waiters))
		bm_wake_all(v, &v->bm_waiters, 0);
}

static void bm_write(struct vhd_bm *bm)
{
	struct vhd *v = bm->vhd;

	bm->writing = true;
	bm->write_gen = bm->set_gen;
	io_prep_pwrite(&bm->op.iocb, v->fd, bm->map, v->meta.layout.bitmap_size,
		       (long long)vhd_bitmap_offset(v->meta.bat[bm->block]));
	bm->op.done = bm_written;
	aio_submit(&bm->op);
}

int vhd_bm_commit(struct vhd_io *vio, uint32_t first, uint32_t count)
{
	struct vhd_bm *bm = vio->bm;

	if (vhd_bits_all(bm->map, first, count))
		return 0;
	vhd_bits_set(bm->map, first, count);
	vio->need_gen = ++bm->set_gen;
	TAILQ_INSERT_TAIL(&bm->waiters, vio, link);
	if (!bm->writing)
		bm_write(bm);
	return 1;
}
