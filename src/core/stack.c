/* tap: another tap as an image ("tap:NAME"), so that a stack of taps can
 * share a parent: a read that falls through a leaf's chain becomes a
 * request on the parent tap, queued there and served with buffers from the
 * parent's pool, then copied into the leaf's buffer. Separate pools per
 * layer are what keeps a parent from being starved by its leaves (blktap's
 * stacking deadlock): a leaf request only ever waits for the parent, never
 * for memory its own siblings hold.
 *
 * Read-only by nature: only reads and block status go down a chain.
 *
 * This file sits on top of core: it uses the registry (tap_stack_get, ...)
 * and the request path (tap_req_*) as an export would, and neither calls
 * it; setup.c registers its driver with image.c. */
#include <errno.h>
#include <string.h>

#include "drivers/driver.h"
#include "internal.h"

/* Requests one stacked image may have on its parent at once; more wait
 * for a slot, in order. */
#define TAPDEV_SLOTS 128

struct tapdev_slot {
	struct tap_req req;
	struct image_io *io;
	struct tapdev *dev;
	struct tapdev_slot *next_free;
};

struct tapdev {
	struct tap *parent;
	struct tapdev_slot slots[TAPDEV_SLOTS];
	struct tapdev_slot *free;
	/* ios waiting for a slot: a singly linked FIFO through priv */
	struct image_io *wait_head, *wait_tail;
};

/* What an io waiting for a slot keeps in its priv. */
struct tapdev_wait {
	struct image_io *next;
};

static void tapdev_start(struct tapdev *d, struct image_io *io);

static void tapdev_slot_free(struct tapdev *d, struct tapdev_slot *s)
{
	struct image_io *io = d->wait_head;

	s->next_free = d->free;
	d->free = s;
	if (io) {
		d->wait_head = ((struct tapdev_wait *)io->priv)->next;
		if (!d->wait_head)
			d->wait_tail = NULL;
		tapdev_start(d, io);
	}
}

static void tapdev_done(struct tap_req *req)
{
	struct tapdev_slot *s = container_of(req, struct tapdev_slot, req);
	struct image_io *io = s->io;
	int err = req->error;

	if (!err && io->op == IMAGE_OP_READ)
		memcpy(io->buf, req->buf, io->len);
	if (!err && io->op == IMAGE_OP_BLOCK_STATUS)
		io->ext_count = req->ext_count;
	tap_req_release(req);
	tapdev_slot_free(s->dev, s);
	io->done(io, err);
}

static void tapdev_ready(struct tap_req *req, int err)
{
	struct tapdev_slot *s = container_of(req, struct tapdev_slot, req);

	if (err) {
		struct image_io *io = s->io;

		tap_req_release(req);
		tapdev_slot_free(s->dev, s);
		io->done(io, err);
		return;
	}
	tap_req_submit(req);
}

static void tapdev_start(struct tapdev *d, struct image_io *io)
{
	struct tapdev_slot *s = d->free;
	int ret;

	if (!s) {
		((struct tapdev_wait *)io->priv)->next = NULL;
		if (d->wait_tail)
			((struct tapdev_wait *)d->wait_tail->priv)->next = io;
		else
			d->wait_head = io;
		d->wait_tail = io;
		return;
	}
	d->free = s->next_free;
	memset(&s->req, 0, sizeof(s->req));
	s->io = io;
	s->req.op = io->op;
	s->req.off = io->off;
	s->req.len = io->len;
	s->req.ext = io->ext;
	s->req.ext_max = io->ext_max;
	s->req.done = tapdev_done;
	ret = tap_req_prepare(d->parent, &s->req, tapdev_ready);
	if (ret == 0)
		tap_req_submit(&s->req);
	else if (ret < 0)
		tapdev_ready(&s->req, ret);
	/* ret == 1: the parent's pool calls tapdev_ready */
}

static void tapdev_submit(struct image *img, struct image_io *io)
{
	switch (io->op) {
	case IMAGE_OP_READ:
	case IMAGE_OP_BLOCK_STATUS:
		tapdev_start(img->priv, io);
		return;
	case IMAGE_OP_FLUSH:
		/* We never write to the parent: nothing of ours to flush. */
		io->done(io, 0);
		return;
	default:
		io->done(io, -EROFS);
		return;
	}
}

static int tapdev_open(struct image *img, const char *name, struct errbuf *eb)
{
	struct tapdev *d;
	struct tap *parent;
	int ret;

	ret = tap_stack_get(name, &parent, eb);
	if (ret < 0)
		return ret;
	d = calloc(1, sizeof(*d));
	if (!d) {
		tap_stack_put(parent);
		return -ENOMEM;
	}
	d->parent = parent;
	for (int i = TAPDEV_SLOTS - 1; i >= 0; i--) {
		d->slots[i].dev = d;
		d->slots[i].next_free = d->free;
		d->free = &d->slots[i];
	}
	img->priv = d;
	img->size = tap_size(parent);
	/* The parent tap takes any alignment and aligns for its own chain. */
	img->align = 1;
	img->read_only = true;
	img->can_extents = true;
	return 0;
}

/* The parent tap's chain, for the chain walk and for the leaf's check
 * that this is really its parent. */
static struct image *tapdev_parent(struct image *img)
{
	return tap_chain(((struct tapdev *)img->priv)->parent);
}

static void tapdev_close(struct image *img)
{
	struct tapdev *d = img->priv;

	tap_stack_put(d->parent);
	free(d);
}

const struct driver driver_tap = {
	.name = "tap",
	.open = tapdev_open,
	.close = tapdev_close,
	.submit = tapdev_submit,
	.parent = tapdev_parent,
};
