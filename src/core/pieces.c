/* Planning a request's buffer and its pieces (core/tap.h, "Requests in
 * pieces"): how many pages a range needs, where a piece may end, the first
 * piece and the buffer's size for a pool, the next piece in the same
 * buffer, and the envelope in the image's alignment. Arithmetic only: the
 * request path (tap-io.c) takes the buffers and runs the pieces. */
#include <errno.h>

#include "internal.h"

/* The buffer is laid out by pages, whatever the image's alignment (a
 * power of two up to a page): whole pages around the data, then for a
 * write that does not begin and end on a page two pages of scratch for the
 * partial blocks. The image's own envelope, known only when the request
 * runs, always fits inside, so a request prepared before a pause still
 * fits the image after it. */
uint64_t tap_piece_need(enum image_op op, uint64_t p, uint64_t e)
{
	bool unaligned = p % POOL_PAGE || e % POOL_PAGE;

	return ALIGN_UP(e, (uint64_t)POOL_PAGE) - ALIGN_DOWN(p, (uint64_t)POOL_PAGE) +
	       (op == IMAGE_OP_WRITE && unaligned ? 2 * POOL_PAGE : 0);
}

uint32_t tap_piece_len(enum image_op op, uint64_t p, uint64_t end, uint64_t cap)
{
	uint64_t e;

	if (p >= end)
		return 0;
	if (tap_piece_need(op, p, end) <= cap)
		return (uint32_t)(end - p);
	/* A piece that ends on a page boundary: only the first one can
	 * begin inside a page, and then a write needs its scratch. */
	e = ALIGN_DOWN(p, (uint64_t)POOL_PAGE) + ALIGN_DOWN(cap, (uint64_t)POOL_PAGE);
	if (op == IMAGE_OP_WRITE && p % POOL_PAGE)
		e = e > 2 * POOL_PAGE ? e - 2 * POOL_PAGE : 0;
	e = MIN(e, ALIGN_DOWN(end, (uint64_t)POOL_PAGE));
	return e > p ? (uint32_t)(e - p) : 0;
}

/* Plan req's buffer for a pool that gives at most cap bytes: the first
 * piece (all of the request where it fits) and the buffer's length in
 * *need (0: none). A READ or WRITE whose buffer would not fit is served in
 * pieces through a quarter of what the pool gives, kept for all of them.
 * -ENOMEM only for a write with a partial page at either end in a pool of
 * less than three pages: its last piece would need a data page and two of
 * scratch, and such a pool can never give them. */
int tap_req_need(struct tap_req *req, uint64_t cap, size_t *need)
{
	uint64_t end = req->off + req->len;
	uint64_t whole;

	req->piece_off = req->off;
	req->piece_len = req->len;
	req->buf_off = ALIGN_DOWN(req->off, (uint64_t)POOL_PAGE);
	*need = 0;
	switch (req->op) {
	case IMAGE_OP_READ:
	case IMAGE_OP_WRITE:
		if (req->len == 0)
			return 0;
		whole = tap_piece_need(req->op, req->off, end);
		if (whole <= cap) {
			*need = whole;
			return 0;
		}
		if (req->op == IMAGE_OP_WRITE && (req->off % POOL_PAGE || end % POOL_PAGE) &&
		    cap < 3 * POOL_PAGE)
			return -ENOMEM;
		/* Pieces through a quarter of the pool (three pages at
		 * least, for a partial write's scratch): the buffer is held
		 * while the client sets the pace, and the whole pool would
		 * stop every other tap in it for as long. */
		cap = MAX(ALIGN_DOWN(cap / 4, (uint64_t)POOL_PAGE),
			  MIN(3 * (uint64_t)POOL_PAGE, ALIGN_DOWN(cap, (uint64_t)POOL_PAGE)));
		req->piece_len = tap_piece_len(req->op, req->off, end, cap);
		if (!req->piece_len)
			return -ENOMEM;
		*need = cap;
		return 0;
	case IMAGE_OP_WRITE_ZEROES:
		/* One block of scratch for partial edges. */
		if (req->len && (req->off % POOL_PAGE || end % POOL_PAGE))
			*need = POOL_PAGE;
		return 0;
	default:
		return 0;
	}
}

bool tap_req_more(const struct tap_req *req)
{
	return req->piece_off + req->piece_len < req->off + req->len;
}

void tap_req_next(struct tap_req *req)
{
	req->piece_off += req->piece_len;
	req->buf_off = ALIGN_DOWN(req->piece_off, (uint64_t)POOL_PAGE);
	/* tap_req_need made sure every piece fits the buffer. */
	req->piece_len = tap_piece_len(req->op, req->piece_off, req->off + req->len, req->base_len);
	req->buf = (char *)req->base + (req->piece_off - req->buf_off);
	req->error = 0;
}

/* The envelope in the image's alignment, when the request runs. */
void tap_req_plan(const struct tap *t, struct tap_req *req)
{
	uint32_t a = t->img->align;
	uint64_t end = req->piece_off + req->piece_len;

	req->env_off = ALIGN_DOWN(req->piece_off, a);
	req->env_len = ALIGN_UP(end, (uint64_t)a) - req->env_off;
	req->rmw = req->env_off != req->piece_off || req->env_len != req->piece_len;
	if (req->op == IMAGE_OP_TRIM) {
		/* Advisory: only whole blocks inside the range are freed. */
		req->rmw = false;
		req->env_off = ALIGN_UP(req->piece_off, (uint64_t)a);
		req->env_len = end > req->env_off ? ALIGN_DOWN(end, (uint64_t)a) - req->env_off : 0;
	}
}
