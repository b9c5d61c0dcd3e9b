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
 * A stack must end: a tap that reads through itself spins every walk down
 * its chain and sends its reads round the circle until the pools run dry.
 * Opening a tap: image is where taps get linked (a tap: image string, or
 * --parent under a vhd child), so that is where loops, stacks deeper than
 * TAP_STACK_MAX and a parent in the leaf's own pool are refused.
 *
 * This file sits on top of core: it uses the registry (tap_stack_get, ...)
 * and the request path (tap_req_*) as an export would, and neither calls
 * it; setup.c registers its driver with image.c. */
#include <errno.h>
#include <stdio.h>
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

/* Taps from t down to to (0: t is to), or -1 when t's stack does not reach
 * it within TAP_STACK_MAX taps. */
static int tapdev_hops(const struct tap *t, const struct tap *to)
{
	for (int n = 0; t && n <= TAP_STACK_MAX; n++, t = t->below)
		if (t == to)
			return n;
	return -1;
}

/* May opener's chain read through parent? Not if parent's stack reaches
 * opener (a loop), nor if the stack through opener, from the highest tap
 * stacked on it to the bottom of parent's, would be deeper than
 * TAP_STACK_MAX, nor if both draw from one pool. opener is NULL when no
 * tap is opening (nothing to check but the depth). Every walk is bounded:
 * what is open has no loop (each link was checked), but a walk must end
 * even were that broken. */
static int tapdev_check(const struct tap *opener, struct tap *parent, struct errbuf *eb)
{
	const struct tap *below[TAP_STACK_MAX];
	const struct tap *x = parent;
	unsigned n = 0, above = 0;

	for (; x && x != opener && n < TAP_STACK_MAX; x = x->below)
		below[n++] = x;
	if (x && x == opener) {
		char path[sizeof(eb->msg)];
		size_t len;

		len = (size_t)snprintf(path, sizeof(path), "%s", tap_name(opener));
		for (unsigned i = 0; i < n && len < sizeof(path); i++)
			len += (size_t)snprintf(path + len, sizeof(path) - len, " -> %s",
						tap_name(below[i]));
		if (len < sizeof(path))
			snprintf(path + len, sizeof(path) - len, " -> %s", tap_name(opener));
		err_set(eb, "tap:%s would close a loop of taps: %s", tap_name(parent), path);
		return -ELOOP;
	}
	/* Only open chains reach opener, and each counts in its children. */
	if (opener && opener->children)
		for (struct tap *t = tap_first(); t; t = tap_next(t)) {
			int h = tapdev_hops(t, opener);

			above = h > (int)above ? (unsigned)h : above;
		}
	if (x || above + 1 + n > TAP_STACK_MAX) {
		err_set(eb, "tap:%s would make a stack of %s%u taps, deeper than %d",
			tap_name(parent), x ? "more than " : "", above + 1 + n, TAP_STACK_MAX);
		return -ELOOP;
	}
	if (opener && tap_pool(opener) == tap_pool(parent)) {
		err_set(eb, "a tap and the tap it reads through (%s) must use different pools, or "
			    "the leaves can starve the parent of buffers; both would use '%s'",
			tap_name(parent), pool_name(tap_pool(parent)));
		return -EINVAL;
	}
	/* Nor may a pool come back below itself further down (A over B over
	 * A, or crossed stacks): the upper A's requests could hold every
	 * buffer of A while they wait for the lower A's, which need one. */
	if (opener && tap_pool_reaches(tap_pool(parent), tap_pool(opener))) {
		err_set(eb, "tap:%s would make pool '%s' wait on itself: below %s, taps of pool "
			    "'%s' already read through taps of '%s'; every level of a stack needs a "
			    "pool of its own",
			tap_name(parent), pool_name(tap_pool(opener)), tap_name(parent),
			pool_name(tap_pool(parent)), pool_name(tap_pool(opener)));
		return -EINVAL;
	}
	return 0;
}

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

	if (!err && io->op == IMAGE_OP_READ) {
		/* The parent's pool may be smaller than the read: it goes
		 * in pieces through one buffer. */
		memcpy((char *)io->buf + (req->piece_off - req->off), req->buf, req->piece_len);
		if (tap_req_more(req)) {
			tap_req_next(req);
			tap_req_submit(req);
			return;
		}
	}
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
	ret = tapdev_check(tap_opening(), parent, eb);
	if (ret < 0) {
		tap_stack_put(parent);
		return ret;
	}
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
	.on_loop = true,
	.submit = tapdev_submit,
	.parent = tapdev_parent,
};
