/* ram: a disk in anonymous memory, gone when the tap is destroyed (a pause
 * keeps it: keep_on_pause).
 *
 * "ram:SIZE" maps SIZE bytes with MAP_NORESERVE, so an untouched range costs
 * nothing and reads as zeros. Everything completes at once; there is nothing
 * to flush. Trim and write-zeroes give whole pages back to the kernel
 * (MADV_DONTNEED on a private mapping: they read as zeros afterwards), and
 * block status reports pages never touched, or given back, as holes.
 *
 * The disk's contents are its storage, not the daemon's working memory, so
 * they are left out of mlockall: like tmpfs, the kernel may swap them, and
 * only so can trimmed pages really be given back. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "driver.h"

#define RAM_PAGE 4096u

struct ram {
	char *mem;
	uint64_t size;
};

static int ram_open(struct image *img, const char *arg, struct errbuf *eb)
{
	struct ram *ram;
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
	/* See the top of the file. Fails harmlessly when nothing is locked. */
	munlock(mem, size);
	ram = calloc(1, sizeof(*ram));
	if (!ram) {
		munmap(mem, size);
		return -ENOMEM;
	}
	ram->mem = mem;
	ram->size = size;
	img->priv = ram;
	img->size = size;
	/* Any byte granularity works for memory. */
	img->align = 1;
	img->can_trim = img->can_zero = img->can_extents = true;
	return 0;
}

static void ram_close(struct image *img)
{
	struct ram *ram = img->priv;

	munmap(ram->mem, ram->size);
	free(ram);
}

/* Zero [off, off + len): partial pages by hand, whole pages given back
 * unless the caller wants them kept (NO_HOLE). */
static void ram_zero(struct ram *ram, uint64_t off, uint64_t len, bool keep)
{
	uint64_t end = off + len;
	uint64_t pstart = ALIGN_UP(off, (uint64_t)RAM_PAGE), pend = ALIGN_DOWN(end, (uint64_t)RAM_PAGE);

	if (keep || pstart >= pend ||
	    madvise(ram->mem + pstart, pend - pstart, MADV_DONTNEED) < 0) {
		memset(ram->mem + off, 0, len);
		return;
	}
	memset(ram->mem + off, 0, pstart - off);
	memset(ram->mem + pend, 0, end - pend);
}

/* Pages the kernel has for us are data; the others read as zeros. */
static void ram_extents(struct ram *ram, struct image_io *io)
{
	unsigned char vec[256];
	uint64_t pos = io->off, end = io->off + io->len;

	io->ext_count = 0;
	while (pos < end) {
		uint64_t page = ALIGN_DOWN(pos, (uint64_t)RAM_PAGE);
		uint64_t span = MIN(ALIGN_UP(end, (uint64_t)RAM_PAGE), page + sizeof(vec) * RAM_PAGE) - page;
		size_t n = span / RAM_PAGE;

		if (mincore(ram->mem + page, span, vec) < 0)
			memset(vec, 1, n); /* unknown: data is always true */
		for (size_t i = 0; i < n && pos < end; i++) {
			uint64_t next = MIN(page + (i + 1) * RAM_PAGE, end);
			uint32_t flags = (vec[i] & 1) ? 0 : IMAGE_EXT_HOLE | IMAGE_EXT_ZERO;
			struct image_extent *e = &io->ext[io->ext_count ? io->ext_count - 1 : 0];

			if (io->ext_count && e->flags == flags) {
				e->len += next - pos;
			} else if (io->ext_count == io->ext_max) {
				return;
			} else {
				e = &io->ext[io->ext_count++];
				e->len = next - pos;
				e->flags = flags;
			}
			pos = next;
		}
	}
}

static void ram_submit(struct image *img, struct image_io *io)
{
	struct ram *ram = img->priv;
	char *mem = ram->mem + io->off;

	switch (io->op) {
	case IMAGE_OP_READ:
		memcpy(io->buf, mem, io->len);
		break;
	case IMAGE_OP_WRITE:
		memcpy(mem, io->buf, io->len);
		break;
	case IMAGE_OP_FLUSH:
		/* Memory is as stable as it gets. */
		break;
	case IMAGE_OP_TRIM:
	case IMAGE_OP_WRITE_ZEROES:
		ram_zero(ram, io->off, io->len, io->op == IMAGE_OP_WRITE_ZEROES &&
						 (io->flags & IMAGE_F_NO_HOLE));
		break;
	case IMAGE_OP_BLOCK_STATUS:
		ram_extents(ram, io);
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
	/* Closing is wiping: a paused tap keeps its disk. */
	.keep_on_pause = true,
};
