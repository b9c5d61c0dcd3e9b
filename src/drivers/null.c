/* null: a disk of a given size that reads zeros and discards writes.
 *
 * "null:SIZE". The cheapest possible backend, for measuring the daemon and
 * exports alone (nbdkit's null plugin plays the same role). */
#include <errno.h>
#include <string.h>

#include "driver.h"

static int null_open(struct image *img, const char *arg, struct errbuf *eb)
{
	if (parse_size(arg, &img->size) < 0 || img->size == 0) {
		err_set(eb, "null: bad size '%s' (want e.g. null:1G)", arg);
		return -EINVAL;
	}
	/* No storage, so no alignment constraint; every byte is a hole
	 * that reads as zero, and zeroing it costs nothing. */
	img->align = 1;
	img->can_zero = img->can_extents = true;
	return 0;
}

static void null_close(struct image *img)
{
	(void)img;
}

static void null_submit(struct image *img, struct image_io *io)
{
	(void)img;
	switch (io->op) {
	case IMAGE_OP_READ:
		/* Nothing was ever stored. */
		memset(io->buf, 0, io->len);
		break;
	case IMAGE_OP_WRITE:
	case IMAGE_OP_FLUSH:
	case IMAGE_OP_TRIM:
	case IMAGE_OP_WRITE_ZEROES:
		/* Discarded, and trivially durable. */
		break;
	case IMAGE_OP_BLOCK_STATUS:
		io->ext[0].len = io->len;
		io->ext[0].flags = IMAGE_EXT_HOLE | IMAGE_EXT_ZERO;
		io->ext_count = 1;
		break;
	default:
		io->done(io, -EOPNOTSUPP);
		return;
	}
	io->done(io, 0);
}

const struct driver driver_null = {
	.name = "null",
	.open = null_open,
	.close = null_close,
	.submit = null_submit,
};
