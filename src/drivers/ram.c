/* ram: a disk in anonymous memory, gone when the tap is destroyed.
 *
 * "ram:SIZE" maps SIZE bytes with MAP_NORESERVE, so an untouched range costs
 * nothing and reads as zeros. Everything completes at once; there is nothing
 * to flush. Useful for tests and as a scratch disk. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "driver.h"

static int ram_open(struct image *img, const char *arg, struct errbuf *eb)
{
	uint64_t size;
	void *mem;

	if (parse_size(arg, &size) < 0 || size == 0) {
		err_set(eb, "ram: bad size '%s' (want e.g. ram:64M)", arg);
		return -EINVAL;
	}
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED) {
		int ret = -errno;

		err_set(eb, "ram: cannot map %s bytes: %s", arg, strerror(errno));
		return ret;
	}
	img->priv = mem;
	img->size = size;
	/* Any byte granularity works for memory. */
	img->align = 1;
	return 0;
}

static void ram_close(struct image *img)
{
	munmap(img->priv, img->size);
}

static void ram_submit(struct image *img, struct image_io *io)
{
	char *mem = (char *)img->priv + io->off;

	switch (io->op) {
	case TAP_OP_READ:
		memcpy(io->buf, mem, io->len);
		break;
	case TAP_OP_WRITE:
		memcpy(mem, io->buf, io->len);
		break;
	case TAP_OP_FLUSH:
		/* Memory is as stable as it gets. */
		break;
	default:
		io->done(io, -EOPNOTSUPP);
		return;
	}
	io->done(io, 0);
}

const struct driver driver_ram = {
	.name = "ram",
	.open = ram_open,
	.close = ram_close,
	.submit = ram_submit,
};
