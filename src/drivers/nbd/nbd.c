/* nbd: a remote NBD server as storage ("nbd:nbd+unix:///EXPORT?socket=PATH",
 * "nbd:nbd://HOST[:PORT]/EXPORT", both with an optional &timeout=SECONDS).
 *
 * Requests are pipelined on one non-blocking socket: each takes a slot of a
 * fixed table (its cookie names the slot, so replies find their io without
 * a search or a malloc), its header and payload go out through sendmsg
 * straight from the io's buffer, and READ payloads are received straight
 * into it. Requests beyond the table wait in a queue. FUA passes through,
 * or becomes a flush after the write when the server lacks it.
 *
 * When the server goes away every request on the wire goes back to the
 * queue (READ, WRITE, FLUSH, TRIM and WRITE_ZEROES can all be repeated),
 * the driver reconnects with backoff on the loop, and requests still
 * waiting after the timeout (30 s, or ?timeout=) fail with -EIO. The same
 * timeout bounds a server that stays connected but holds a request without
 * answering: the requests it held that long fail with -EIO and the
 * connection is dropped and made again (a late reply must not land in a
 * buffer given back). Errors the server answers pass through as their
 * errno, without a reconnect.
 *
 * open() resolves the host and connects and shakes hands synchronously
 * with a 5 s deadline, on the opening thread (image_open_async), and
 * start() then watches the socket on the loop; reconnects reuse the
 * address and never block the loop. Not done:
 * structured replies and block status (can_extents is false), TLS.
 *
 * Files (src/drivers/nbd/): nbd.c, this one (setup and the ops); io.c (the
 * connection at work and its reconnects; owns struct nbdc); handshake.c
 * (resolve, connect and handshake, used by both); internal.h (their shared
 * state); nbd.h (setup, for the daemon). The wire format is in
 * src/formats/nbd/client.c. Calls run one way: nbd.c -> io.c -> handshake.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "internal.h"
#include "nbd.h"

#define NBDC_OPEN_TIMEOUT_MS 5000

_Static_assert(sizeof(struct nbdc_req) <= sizeof(((struct image_io *)0)->priv),
	       "nbdc_req must fit in image_io.priv");
_Static_assert((NBDC_SLOTS & (NBDC_SLOTS - 1)) == 0 && NBDC_SLOTS <= 65536, "slot count");

static struct event_base *nbdc_base;
static unsigned nbdc_default_timeout = 30;

int nbd_client_setup(struct event_base *base)
{
	nbdc_base = base;
	return 0;
}

void nbd_client_set_default_timeout(unsigned seconds)
{
	if (seconds)
		nbdc_default_timeout = seconds;
}

/* ---- driver ops -------------------------------------------------------- */

/* What the export says it can do, into the image. */
static int nbdc_apply_export(struct nbdc *c, struct image *img, struct errbuf *eb)
{
	const struct nbdc_export *x = &c->hs.x;
	uint16_t f = x->tx_flags;

	c->x = *x;
	if (x->size > INT64_MAX) {
		err_set(eb, "nbd: %s: the server claims an export of %llu bytes", c->desc,
			(unsigned long long)x->size);
		return -EBADMSG;
	}
	if (!(f & NBD_FLAG_HAS_FLAGS))
		f = c->x.tx_flags = 0;
	if (!img->read_only && (f & NBD_FLAG_READ_ONLY)) {
		err_set(eb, "nbd: %s: the server's export is read-only; create the tap read-only",
			c->desc);
		return -EROFS;
	}
	img->size = x->size;
	/* Requests come aligned to align; a server minimum above a page
	 * cannot be honoured by the tap and the server will refuse them. */
	img->align = x->min_block ? MIN(x->min_block, 4096u) : 1;
	c->max_payload = x->max_block ? MIN(x->max_block, NBDC_DEFAULT_MAX_PAYLOAD)
				      : NBDC_DEFAULT_MAX_PAYLOAD;
	c->max_payload = ALIGN_DOWN(c->max_payload, img->align);
	img->can_flush = f & NBD_FLAG_SEND_FLUSH;
	img->can_trim = !img->read_only && (f & NBD_FLAG_SEND_TRIM);
	img->can_zero = !img->read_only && (f & NBD_FLAG_SEND_WRITE_ZEROES);
	/* Structured replies and base:allocation are not negotiated. */
	img->can_extents = false;
	return 0;
}

static int nbd_open(struct image *img, const char *arg, struct errbuf *eb)
{
	struct nbdc *c;
	int ret;

	if (!nbdc_base) {
		err_set(eb, "nbd: the NBD client is not set up in this daemon");
		return -ENOTSUP;
	}
	c = nbdc_new(img, nbdc_base);
	if (!c)
		return -ENOMEM;
	ret = nbdc_uri_parse(arg, &c->uri, eb);
	if (ret < 0)
		goto fail;
	c->timeout_s = c->uri.timeout ? c->uri.timeout : nbdc_default_timeout;
	/* Log lines name the server as the user did. */
	snprintf(c->desc, sizeof(c->desc), "%s", arg);
	ret = nbdc_resolve(c, eb);
	if (ret < 0)
		goto fail;
	ret = nbdc_connect_blocking(c, NBDC_OPEN_TIMEOUT_MS, eb);
	if (ret < 0)
		goto fail;
	ret = nbdc_apply_export(c, img, eb);
	if (ret < 0)
		goto fail;
	img->priv = c;
	log_info("nbd: %s: connected, %llu bytes%s, align %u, flags %#x", c->desc,
		 (unsigned long long)img->size,
		 (c->x.tx_flags & NBD_FLAG_READ_ONLY) ? ", read-only" : "", img->align,
		 c->x.tx_flags);
	return 0;
fail:
	err_set(eb, "nbd: cannot open %s: %s", arg, strerror(-ret));
	nbdc_release(c);
	return ret;
}

/* On the loop: the connection's events. */
static int nbd_start(struct image *img, struct errbuf *eb)
{
	struct nbdc *c = img->priv;
	int ret = nbdc_start(c);

	if (ret < 0)
		err_set(eb, "nbd: %s: out of memory", c->desc);
	return ret;
}

static void nbd_close(struct image *img)
{
	struct nbdc *c = img->priv;

	if (c->state == NBDC_UP && !c->send.head) {
		unsigned char hdr[NBD_REQUEST_LEN];

		/* A polite goodbye; the server copes if it never arrives. */
		nbdc_encode_request(hdr, 0, NBD_CMD_DISC, 0, 0, 0);
		if (send(c->fd, hdr, sizeof(hdr), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("nbd: %s: disconnect: %s", c->desc, strerror(errno));
	}
	img->priv = NULL;
	nbdc_release(c);
}

static void nbd_submit(struct image *img, struct image_io *io)
{
	struct nbdc *c = img->priv;
	struct nbdc_req *r = (struct nbdc_req *)io->priv;
	uint16_t f = c->x.tx_flags;

	memset(r, 0, offsetof(struct nbdc_req, hdr));
	switch (io->op) {
	case IMAGE_OP_READ:
	case IMAGE_OP_WRITE:
		if (!io->len) {
			io->done(io, 0);
			return;
		}
		break;
	case IMAGE_OP_FLUSH:
		/* No SEND_FLUSH: the server has no cache to flush. */
		if (!(f & NBD_FLAG_SEND_FLUSH)) {
			io->done(io, 0);
			return;
		}
		break;
	case IMAGE_OP_TRIM:
		if (!(f & NBD_FLAG_SEND_TRIM)) {
			io->done(io, 0); /* advice only */
			return;
		}
		break;
	case IMAGE_OP_WRITE_ZEROES:
		if (!(f & NBD_FLAG_SEND_WRITE_ZEROES) ||
		    ((io->flags & IMAGE_F_FAST_ZERO) && !(f & NBD_FLAG_SEND_FAST_ZERO))) {
			io->done(io, -EOPNOTSUPP);
			return;
		}
		break;
	default:
		io->done(io, -EOPNOTSUPP);
		return;
	}
	if (io->op != IMAGE_OP_READ && io->op != IMAGE_OP_FLUSH && (io->flags & IMAGE_F_FUA) &&
	    !(f & NBD_FLAG_SEND_FUA) && (f & NBD_FLAG_SEND_FLUSH))
		r->flush_after = true;
	nbdc_enqueue(c, r);
}

const struct driver driver_nbd = {
	.name = "nbd",
	.open = nbd_open,
	.start = nbd_start,
	.close = nbd_close,
	.submit = nbd_submit,
};
