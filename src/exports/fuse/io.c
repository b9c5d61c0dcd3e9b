/* The FUSE export's request path: open files, and READ, WRITE, FLUSH,
 * FSYNC and FALLOCATE turned into tap requests (core/tap.h) the way the
 * NBD export does it, answered with fuse_reply_* from their completions,
 * so that many are in flight at once. FX_SLOTS bound them: with every
 * slot taken the reader stops (fx_io_can_read), the kernel queues and its
 * callers wait.
 *
 * A WRITE's payload sits in the session's one receive buffer, shared by
 * every tap. When the tap cannot take it at once (its pool buffer is not
 * ready, or the write goes in pieces through a smaller buffer) it is
 * copied aside (FX_SPILL_MAX in all), so that a tap whose pool ran dry (a
 * paused tap's parked writes keep their buffers) holds up no other tap;
 * past that budget the write keeps the receive buffer and the reader
 * waits until the last piece is copied out, as the NBD export stops
 * reading its socket. A READ in pieces
 * gathers them in one staging buffer of FX_MAX_IO, one such READ at a
 * time (the others wait for it in order): FUSE takes a READ's reply
 * whole. Pieces happen only with pools smaller than four FUSE requests. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>

#include "lib/log.h"
#include "internal.h"

/* WRITE_ZEROES takes up to 4 GiB - 1 at a time; a longer FALLOCATE goes
 * in steps of this. */
#define FX_ZERO_STEP (1ull << 30)

enum fx_op { FX_READ, FX_WRITE, FX_FLUSH, FX_ZERO };

/* One FUSE request in flight. */
struct fx_io {
	struct tap_req req;
	fuse_req_t fr;
	struct fx_open *fo;
	enum fx_op op;
	bool prepared; /* tap_req_prepare was called: release when done */
	bool staged;   /* READ in pieces: gathered in the staging buffer */
	const char *wdata; /* WRITE: the payload, in the receive buffer or spill */
	char *spill;	   /* WRITE: the payload copied aside, or NULL */
	size_t spill_len;
	uint64_t zpos, zend; /* FALLOCATE: what is left to zero */
	uint32_t zflags;
	TAILQ_ENTRY(fx_io) link; /* free list, or waiting for the stage */
};

static struct {
	struct fx_io slots[FX_SLOTS];
	TAILQ_HEAD(, fx_io) free;
	unsigned busy;
	/* The WRITE that holds the receive buffer, or NULL. */
	struct fx_io *lent;
	/* Bytes of WRITE payloads copied aside. */
	size_t spilled;
	/* READs in pieces: the staging buffer, its user, who waits. */
	char *stage;
	struct fx_io *stage_owner;
	TAILQ_HEAD(, fx_io) stage_wait;
	LIST_HEAD(, fx_open) opens;
	unsigned nopens;
	void (*wake)(void);
} io;

/* ---- open files ------------------------------------------------------- */

int fx_open_new(struct tap *t, bool writable, struct fx_open **out)
{
	struct fx_open *fo;
	int ret;

	if (io.nopens >= FX_OPEN_MAX)
		return -ENFILE;
	fo = calloc(1, sizeof(*fo));
	if (!fo)
		return -ENOMEM;
	ret = tap_attach(t);
	if (ret < 0) {
		free(fo);
		return ret;
	}
	fo->tap = t;
	fo->writable = writable;
	fo->refs = 1;
	LIST_INSERT_HEAD(&io.opens, fo, link);
	io.nopens++;
	*out = fo;
	return 0;
}

void fx_open_put(struct fx_open *fo)
{
	if (--fo->refs)
		return;
	LIST_REMOVE(fo, link);
	io.nopens--;
	tap_detach(fo->tap);
	free(fo);
}

struct fx_open *fx_open_first(void)
{
	return LIST_FIRST(&io.opens);
}

/* ---- slots ------------------------------------------------------------ */

int fx_io_setup(void (*wake)(void))
{
	io.wake = wake;
	TAILQ_INIT(&io.free);
	TAILQ_INIT(&io.stage_wait);
	LIST_INIT(&io.opens);
	for (unsigned i = 0; i < FX_SLOTS; i++)
		TAILQ_INSERT_TAIL(&io.free, &io.slots[i], link);
	io.stage = malloc(FX_MAX_IO);
	return io.stage ? 0 : -ENOMEM;
}

void fx_io_teardown(void)
{
	struct fx_open *fo;

	while ((fo = LIST_FIRST(&io.opens))) {
		fo->refs = 1;
		fx_open_put(fo);
	}
	free(io.stage);
	memset(&io, 0, sizeof(io));
}

bool fx_io_can_read(void)
{
	return !io.lent && !TAILQ_EMPTY(&io.free);
}

bool fx_io_idle(void)
{
	return io.busy == 0;
}

static struct fx_io *slot_get(fuse_req_t fr, struct fx_open *fo, enum fx_op op)
{
	struct fx_io *s = TAILQ_FIRST(&io.free);

	/* The reader reads only with a slot free (fx_io_can_read). */
	TAILQ_REMOVE(&io.free, s, link);
	io.busy++;
	/* Nothing of the last request it served carries over. */
	*s = (struct fx_io){ .fr = fr, .fo = fo, .op = op };
	fo->refs++;
	return s;
}

static void slot_put(struct fx_io *s)
{
	bool was_full = TAILQ_EMPTY(&io.free);

	if (s->prepared)
		tap_req_release(&s->req);
	if (s->spill) {
		io.spilled -= s->spill_len;
		free(s->spill);
		s->spill = NULL;
	}
	fx_open_put(s->fo);
	s->fo = NULL;
	TAILQ_INSERT_HEAD(&io.free, s, link);
	io.busy--;
	if (was_full || !io.busy)
		io.wake();
}

static void lend(struct fx_io *s)
{
	io.lent = s;
}

static void unlend(struct fx_io *s)
{
	if (io.lent != s)
		return;
	io.lent = NULL;
	io.wake();
}

/* s's payload is needed after this FUSE request has been handled: copy it
 * aside if the budget allows, else keep the receive buffer. Called while
 * the payload is still where the kernel put it, or once it is kept. */
static void keep_payload(struct fx_io *s)
{
	if (s->spill || io.lent == s)
		return;
	if (io.spilled + s->req.len <= FX_SPILL_MAX && (s->spill = malloc(s->req.len))) {
		memcpy(s->spill, s->wdata, s->req.len);
		s->wdata = s->spill;
		s->spill_len = s->req.len;
		io.spilled += s->spill_len;
		return;
	}
	lend(s);
}

/* The staging buffer for a READ in pieces: true if s has it now, false if
 * s waits for it (stage_give hands it on and submits). */
static bool stage_take(struct fx_io *s)
{
	if (io.stage_owner) {
		TAILQ_INSERT_TAIL(&io.stage_wait, s, link);
		return false;
	}
	io.stage_owner = s;
	s->staged = true;
	return true;
}

static void stage_give(struct fx_io *s)
{
	struct fx_io *next;

	if (!s->staged || io.stage_owner != s)
		return;
	s->staged = false;
	io.stage_owner = NULL;
	next = TAILQ_FIRST(&io.stage_wait);
	if (!next)
		return;
	TAILQ_REMOVE(&io.stage_wait, next, link);
	io.stage_owner = next;
	next->staged = true;
	tap_req_submit(&next->req);
}

/* Answer with an error and free the slot. The tap's own errors reach the
 * caller as they are; a write to a read-only tap is EROFS, as a read-only
 * file system says. */
static void fx_fail(struct fx_io *s, int err)
{
	if (err == -EPERM && s->op != FX_READ && tap_read_only(s->fo->tap))
		err = -EROFS;
	unlend(s);
	stage_give(s);
	fuse_reply_err(s->fr, -err);
	slot_put(s);
}

/* The payload of the current piece of a WRITE into its buffer; the
 * receive buffer goes back to the reader with the last piece. */
static void write_fill(struct fx_io *s)
{
	struct tap_req *req = &s->req;

	memcpy(req->buf, s->wdata + (req->piece_off - req->off), req->piece_len);
	if (tap_req_more(req))
		keep_payload(s);
	else
		unlend(s);
}

/* The request's buffer is ready (or it failed): run it. */
static void fx_go(struct fx_io *s, int err)
{
	if (err < 0) {
		fx_fail(s, err);
		return;
	}
	switch (s->op) {
	case FX_READ:
		if (s->req.piece_len < s->req.len && !stage_take(s))
			return;
		break;
	case FX_WRITE:
		write_fill(s);
		break;
	default:
		break;
	}
	tap_req_submit(&s->req);
}

static void fx_ready(struct tap_req *req, int err)
{
	fx_go(container_of(req, struct fx_io, req), err);
}

static void fx_prepare(struct fx_io *s)
{
	int ret;

	s->prepared = true;
	ret = tap_req_prepare(s->fo->tap, &s->req, fx_ready);
	if (ret == 1) {
		/* Waits for pool memory: a WRITE keeps its payload. */
		if (s->op == FX_WRITE)
			keep_payload(s);
		return;
	}
	fx_go(s, ret);
}

static void fx_done(struct tap_req *req);

/* FALLOCATE: set up the next step of zeros (zpos < zend). */
static void zero_step(struct fx_io *s)
{
	uint64_t n = MIN(s->zend - s->zpos, FX_ZERO_STEP);

	if (s->prepared)
		tap_req_release(&s->req);
	memset(&s->req, 0, sizeof(s->req));
	s->req.op = IMAGE_OP_WRITE_ZEROES;
	s->req.flags = s->zflags;
	s->req.off = s->zpos;
	s->req.len = (uint32_t)n;
	s->req.done = fx_done;
	s->zpos += n;
}

static void fx_done(struct tap_req *req)
{
	struct fx_io *s = container_of(req, struct fx_io, req);

	if (req->error) {
		fx_fail(s, req->error);
		return;
	}
	switch (s->op) {
	case FX_READ:
		if (s->staged)
			memcpy(io.stage + (req->piece_off - req->off), req->buf, req->piece_len);
		if (tap_req_more(req)) {
			tap_req_next(req);
			tap_req_submit(req);
			return;
		}
		fuse_reply_buf(s->fr, s->staged ? io.stage : req->buf, req->len);
		stage_give(s);
		break;
	case FX_WRITE:
		if (tap_req_more(req)) {
			tap_req_next(req);
			write_fill(s);
			tap_req_submit(req);
			return;
		}
		fuse_reply_write(s->fr, req->len);
		break;
	case FX_FLUSH:
		fuse_reply_err(s->fr, 0);
		break;
	case FX_ZERO:
		if (s->zpos < s->zend) {
			zero_step(s);
			fx_prepare(s);
			return;
		}
		fuse_reply_err(s->fr, 0);
		break;
	}
	slot_put(s);
}

/* ---- the FUSE requests ------------------------------------------------ */

void fx_io_read(fuse_req_t fr, struct fx_open *fo, size_t size, off_t off)
{
	uint64_t tsize = tap_size(fo->tap);
	struct fx_io *s;

	if (fo->revoked) {
		fuse_reply_err(fr, EIO);
		return;
	}
	if (off < 0) {
		fuse_reply_err(fr, EINVAL);
		return;
	}
	/* At or past the end: end of file, as for any file. */
	if ((uint64_t)off >= tsize || !size) {
		fuse_reply_buf(fr, NULL, 0);
		return;
	}
	s = slot_get(fr, fo, FX_READ);
	s->req.op = IMAGE_OP_READ;
	s->req.off = (uint64_t)off;
	s->req.len = (uint32_t)MIN(MIN((uint64_t)size, tsize - (uint64_t)off), (uint64_t)FX_MAX_IO);
	s->req.done = fx_done;
	fx_prepare(s);
}

void fx_io_write(fuse_req_t fr, struct fx_open *fo, const char *buf, size_t size, off_t off)
{
	struct fx_io *s;

	if (fo->revoked) {
		fuse_reply_err(fr, EIO);
		return;
	}
	if (!fo->writable || tap_read_only(fo->tap)) {
		fuse_reply_err(fr, tap_read_only(fo->tap) ? EROFS : EBADF);
		return;
	}
	if (off < 0 || size > FX_MAX_IO) {
		fuse_reply_err(fr, EINVAL);
		return;
	}
	if (!size) {
		fuse_reply_write(fr, 0);
		return;
	}
	/* Past the end: the tap says ENOSPC, as a block device does. */
	s = slot_get(fr, fo, FX_WRITE);
	s->req.op = IMAGE_OP_WRITE;
	s->req.off = (uint64_t)off;
	s->req.len = (uint32_t)size;
	s->req.done = fx_done;
	s->wdata = buf;
	fx_prepare(s);
}

void fx_io_flush(fuse_req_t fr, struct fx_open *fo)
{
	struct fx_io *s;

	if (fo->revoked) {
		fuse_reply_err(fr, EIO);
		return;
	}
	s = slot_get(fr, fo, FX_FLUSH);
	s->req.op = IMAGE_OP_FLUSH;
	s->req.done = fx_done;
	fx_prepare(s);
}

/* PUNCH_HOLE and ZERO_RANGE both become WRITE_ZEROES: a punched range
 * must read back as zeros (fallocate(2)), and the loop driver sends its
 * own WRITE_ZEROES as PUNCH_HOLE; a TRIM is only advice (core/tap.h: a
 * no-op where the image cannot free storage). PUNCH_HOLE lets the image
 * free the storage, ZERO_RANGE keeps it allocated (IMAGE_F_NO_HOLE). The
 * part of a range past the end is ignored, as for a file whose size is
 * kept; mode 0 (allocate) has nothing to do on a tap of fixed size. */
void fx_io_fallocate(fuse_req_t fr, struct fx_open *fo, int mode, off_t off, off_t len)
{
	uint64_t tsize = tap_size(fo->tap);
	uint64_t end;
	struct fx_io *s;

	if (fo->revoked) {
		fuse_reply_err(fr, EIO);
		return;
	}
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE))) {
		fuse_reply_err(fr, EOPNOTSUPP);
		return;
	}
	if (off < 0 || len <= 0) {
		fuse_reply_err(fr, EINVAL);
		return;
	}
	if (!fo->writable || tap_read_only(fo->tap)) {
		fuse_reply_err(fr, tap_read_only(fo->tap) ? EROFS : EBADF);
		return;
	}
	end = (uint64_t)off + (uint64_t)len;
	if (end > tsize && !(mode & FALLOC_FL_KEEP_SIZE)) {
		/* It would grow the file: a tap keeps its size. */
		fuse_reply_err(fr, ENOSPC);
		return;
	}
	end = MIN(end, tsize);
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) || (uint64_t)off >= end) {
		fuse_reply_err(fr, 0);
		return;
	}
	s = slot_get(fr, fo, FX_ZERO);
	s->zpos = (uint64_t)off;
	s->zend = end;
	s->zflags = mode & FALLOC_FL_ZERO_RANGE ? IMAGE_F_NO_HOLE : 0;
	zero_step(s);
	fx_prepare(s);
}
