/* Blocking file-level VHD access: the file helpers (vhd_fd_pread/pwrite,
 * vhd_file_size, vhd_write_footer, vhd_find_parent) and, on them, the
 * vhd_image_* chain API: open (with the OFD locks of format.h), read and
 * write sectors (one walk for both), allocate blocks in the crash-safe
 * order. Used by tapd-vhd, and by the driver only at open, on the loop
 * thread (vhd_file_size, vhd_fd_pread under vhd_meta_load, vhd_find_parent):
 * a known issue to fix in issue 10: the BAT is read synchronously at open.
 * The driver never calls vhd_image_*. */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


int vhd_fd_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	int fd = *(int *)opaque;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

int vhd_fd_pwrite(int fd, const void *buf, size_t len, uint64_t off, const char *path,
		  struct errbuf *eb)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;

			err_set(eb, "%s: write at %" PRIu64 " failed: %s", path, off + done,
				strerror(e));
			return -e;
		}
		done += (size_t)n;
	}
	return 0;
}

int vhd_file_size(int fd, uint64_t *size)
{
	struct stat st;
	off_t end;

	if (fstat(fd, &st))
		return -errno;
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		return 0;
	}
	end = lseek(fd, 0, SEEK_END);
	if (end < 0)
		return -errno;
	*size = (uint64_t)end;
	return 0;
}

int vhd_write_footer(struct vhd_image *img, uint64_t end_off, struct errbuf *eb)
{
	uint8_t buf[VHD_FOOTER_SIZE];
	int r;

	vhd_footer_encode(&img->meta.footer, buf);
	r = vhd_fd_pwrite(img->fd, buf, sizeof(buf), end_off, img->path, eb);
	if (r || img->meta.footer.type == VHD_TYPE_FIXED)
		return r;
	return vhd_fd_pwrite(img->fd, buf, sizeof(buf), 0, img->path, eb);
}

int vhd_find_parent(const char *child_path, const struct vhd_meta *m, char *out,
		    size_t out_size, struct errbuf *eb)
{
	char tried[512] = "";
	size_t tl = 0;

	for (int i = 0; i <= VHD_LOCATORS; i++) {
		/* Locators first, then the header's name beside the child
		 * (where libvhdi looks). */
		const char *p = i < VHD_LOCATORS ? m->parent_loc[i] : m->header.parent_name;
		const char *base;

		if (!p || !p[0])
			continue;
		if (i == VHD_LOCATORS) {
			base = strrchr(p, '\\');
			p = base ? base + 1 : p;
		}
		if (vhd_parent_join(child_path, p, out, out_size))
			continue;
		if (access(out, F_OK) == 0)
			return 0;
		if (tl < sizeof(tried) - 1)
			tl += (size_t)snprintf(tried + tl, sizeof(tried) - tl, "%s%s",
					       tl ? ", " : "", out);
	}
	if (tl)
		err_set(eb, "%s: parent not found (tried %s)", child_path, tried);
	else
		err_set(eb, "%s: differencing disk without a usable parent locator",
			child_path);
	return -ENOENT;
}

static int open_one(struct vhd_image **out, const char *path, unsigned flags,
		    struct vhd_chain *chain, struct errbuf *eb)
{
	bool rw = flags & VHD_OPEN_RDWR;
	struct vhd_image *img;
	struct errbuf merr = { "" };
	uint64_t size = 0;
	int r;

	img = calloc(1, sizeof(*img));
	if (!img || !(img->path = strdup(path))) {
		free(img);
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	img->writable = rw;
	img->fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (img->fd < 0) {
		r = -errno;
		err_set(eb, "%s: %s", path, strerror(errno));
		goto fail;
	}
	/* Before the lock: a loop would otherwise look like another
	 * process holding the file. */
	r = vhd_chain_add(chain, img->fd, &merr);
	if (r) {
		err_set(eb, "%s: %s", path, merr.msg);
		goto fail;
	}
	if (flags & VHD_OPEN_LOCK) {
		r = vhd_lock(img->fd, rw, path, eb);
		if (r)
			goto fail;
	}
	r = vhd_file_size(img->fd, &size);
	if (r) {
		err_set(eb, "%s: %s", path, strerror(-r));
		goto fail;
	}
	r = vhd_meta_load(&img->meta, vhd_fd_pread, &img->fd, size, NULL, NULL, &merr);
	if (r) {
		err_set(eb, "%s: %s", path, merr.msg);
		goto fail;
	}
	if (img->meta.footer.type != VHD_TYPE_FIXED) {
		img->next_block = MAX(vhd_data_end(&img->meta.layout, img->meta.bat),
				      img->meta.footer_from_copy ? 0 : size - VHD_FOOTER_SIZE);
		/* Repair after a crash mid-allocation: footer back at the end. */
		if (rw && img->meta.footer_from_copy) {
			img->next_block = vhd_data_end(&img->meta.layout, img->meta.bat);
			r = vhd_write_footer(img, img->next_block, eb);
			if (!r && ftruncate(img->fd, (off_t)(img->next_block + VHD_FOOTER_SIZE)))
				r = -errno;
			if (r) {
				err_set(eb, "%s: cannot repair the end footer", path);
				goto fail;
			}
		}
	}
	if (img->meta.footer.type == VHD_TYPE_DIFF && !(flags & VHD_OPEN_NOCHAIN)) {
		char ppath[VHD_PATH_MAX];
		unsigned pflags = (flags & VHD_OPEN_LOCK) | (flags & VHD_OPEN_PARENT_RDWR ?
							     VHD_OPEN_RDWR : 0);

		r = vhd_find_parent(path, &img->meta, ppath, sizeof(ppath), eb);
		if (!r)
			r = open_one(&img->parent, ppath, pflags, chain, eb);
		if (r)
			goto fail;
		r = vhd_parent_match(&img->meta, &img->parent->meta.footer, &merr);
		if (r == -EINVAL) {
			err_set(eb, "%s: %s (%s)", path, merr.msg, ppath);
			goto fail;
		}
	}
	*out = img;
	return 0;
fail:
	vhd_image_close(img);
	return r;
}

int vhd_image_open(struct vhd_image **out, const char *path, unsigned flags,
		   struct errbuf *eb)
{
	struct vhd_chain chain = { 0 };

	*out = NULL;
	return open_one(out, path, flags, &chain, eb);
}

void vhd_image_close(struct vhd_image *img)
{
	while (img) {
		struct vhd_image *parent = img->parent;

		if (img->fd >= 0)
			close(img->fd);	/* drops the OFD lock too */
		vhd_meta_free(&img->meta);
		free(img->path);
		free(img);
		img = parent;
	}
}

static int read_bitmap(struct vhd_image *img, uint32_t entry, uint8_t *bm,
		       struct errbuf *eb)
{
	int r = vhd_fd_pread(&img->fd, bm, img->meta.layout.bitmap_size,
			     vhd_bitmap_offset(entry));

	if (r)
		err_set(eb, "%s: cannot read the bitmap at %" PRIu64 ": %s", img->path,
			vhd_bitmap_offset(entry), strerror(-r));
	return r;
}

/* Sectors this image does not hold: from the parent, or zeros. */
static int read_below(struct vhd_image *img, uint8_t *buf, uint64_t sector, uint32_t count,
		      struct errbuf *eb)
{
	struct vhd_image *p = img->meta.footer.type == VHD_TYPE_DIFF ? img->parent : NULL;
	uint32_t in = 0;

	if (p && sector < p->meta.layout.sectors)
		in = (uint32_t)MIN((uint64_t)count, p->meta.layout.sectors - sector);
	memset(buf + ((size_t)in << VHD_SECTOR_SHIFT), 0, (size_t)(count - in) << VHD_SECTOR_SHIFT);
	return in ? vhd_image_read(p, buf, sector, in, eb) : 0;
}

/* Data sectors of this image, with a readable reason on failure. */
static int read_data(struct vhd_image *img, uint8_t *buf, size_t len, uint64_t off,
		     struct errbuf *eb)
{
	int r = vhd_fd_pread(&img->fd, buf, len, off);

	if (r)
		err_set(eb, "%s: read failed: %s", img->path, strerror(-r));
	return r;
}

/* Read n sectors from s of the block at BAT entry entry (sector is the
 * virtual sector of s): per run of equal bits, from this file or below. */
static int read_block(struct vhd_image *img, uint8_t *buf, uint64_t sector, uint32_t entry,
		      uint32_t s, uint32_t n, uint8_t *bm, struct errbuf *eb)
{
	const struct vhd_layout *l = &img->meta.layout;
	int r;

	if (entry == VHD_BAT_UNUSED)
		return read_below(img, buf, sector, n, eb);
	r = read_bitmap(img, entry, bm, eb);
	for (uint32_t done = 0, run; done < n && !r; done += run) {
		bool set;
		uint8_t *p = buf + ((size_t)done << VHD_SECTOR_SHIFT);

		run = vhd_bits_run(bm, s + done, n - done, &set);
		if (!set)
			r = read_below(img, p, sector + done, run, eb);
		else
			r = read_data(img, p, (size_t)run << VHD_SECTOR_SHIFT,
				      vhd_data_offset(l, entry, s + done), eb);
	}
	return r;
}

/* Steps 1-5 of the crash-safe order in format.h for a new block. */
static int alloc_block(struct vhd_image *img, uint32_t blk, const uint8_t *buf, uint32_t s,
		       uint32_t n, struct errbuf *eb)
{
	const struct vhd_layout *l = &img->meta.layout;
	uint64_t at = img->next_block, bat_at;
	uint32_t entry = (uint32_t)(at >> VHD_SECTOR_SHIFT);
	uint8_t sec[VHD_SECTOR_SIZE], *bm;
	int r;

	if (at % VHD_SECTOR_SIZE || (at >> VHD_SECTOR_SHIFT) >= VHD_BAT_UNUSED) {
		err_set(eb, "%s: no room for a new block at %" PRIu64, img->path, at);
		return -ENOSPC;
	}
	bm = calloc(1, l->bitmap_size);
	if (!bm) {
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	vhd_bits_set(bm, s, n);
	r = vhd_fd_pwrite(img->fd, buf, (size_t)n << VHD_SECTOR_SHIFT,
			  vhd_data_offset(l, entry, s), img->path, eb);
	if (!r)
		r = vhd_write_footer(img, at + l->bitmap_size + l->block_size, eb);
	if (!r)
		r = vhd_fd_pwrite(img->fd, bm, l->bitmap_size, at, img->path, eb);
	free(bm);
	if (!r && fdatasync(img->fd)) {
		r = -errno;
		err_set(eb, "%s: fdatasync failed: %s", img->path, strerror(errno));
	}
	if (r)
		return r;
	bat_at = vhd_bat_sector_encode(l, img->meta.bat, blk, entry, sec);
	r = vhd_fd_pwrite(img->fd, sec, sizeof(sec), bat_at, img->path, eb);
	if (r)
		return r;
	/* The block exists once its BAT sector is on disk. */
	img->meta.bat[blk] = entry;
	img->next_block = at + l->bitmap_size + l->block_size;
	return 0;
}

/* Write n sectors from s of block blk (BAT entry entry): a new block in
 * the crash-safe order, else data first, then the bitmap if it changes. */
static int write_block(struct vhd_image *img, const uint8_t *buf, uint32_t blk, uint32_t entry,
		       uint32_t s, uint32_t n, uint8_t *bm, struct errbuf *eb)
{
	const struct vhd_layout *l = &img->meta.layout;
	int r;

	if (entry == VHD_BAT_UNUSED)
		return alloc_block(img, blk, buf, s, n, eb);
	r = vhd_fd_pwrite(img->fd, buf, (size_t)n << VHD_SECTOR_SHIFT, vhd_data_offset(l, entry, s),
			  img->path, eb);
	if (!r)
		r = read_bitmap(img, entry, bm, eb);
	if (!r && !vhd_bits_all(bm, s, n)) {
		uint32_t first = s / (8 * VHD_SECTOR_SIZE);
		uint32_t last = (s + n - 1) / (8 * VHD_SECTOR_SIZE);

		vhd_bits_set(bm, s, n);
		r = vhd_fd_pwrite(
			img->fd, bm + first * VHD_SECTOR_SIZE, (last - first + 1) * VHD_SECTOR_SIZE,
			vhd_bitmap_offset(entry) + first * VHD_SECTOR_SIZE, img->path, eb);
	}
	return r;
}

/* The one sector walk of reads and writes: bounds, then a fixed disk in
 * one go, or a dynamic one block by block. A write only reads buf. */
static int walk(struct vhd_image *img, bool write, uint8_t *buf, uint64_t sector, uint32_t count,
		struct errbuf *eb)
{
	const struct vhd_layout *l = &img->meta.layout;
	uint8_t *bm;
	int r = 0;

	if (sector > l->sectors || count > l->sectors - sector) {
		err_set(eb, "%s: %s past the end of the disk", img->path, write ? "write" : "read");
		return -EINVAL;
	}
	if (l->type == VHD_TYPE_FIXED)
		return write ? vhd_fd_pwrite(img->fd, buf, (size_t)count << VHD_SECTOR_SHIFT,
					     sector << VHD_SECTOR_SHIFT, img->path, eb)
			     : read_data(img, buf, (size_t)count << VHD_SECTOR_SHIFT,
					 sector << VHD_SECTOR_SHIFT, eb);
	bm = malloc(l->bitmap_size);
	if (!bm) {
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	while (count && !r) {
		uint32_t blk = vhd_block_of(l, sector), s = vhd_block_sector(l, sector);
		uint32_t n = MIN(count, l->block_sectors - s), entry = img->meta.bat[blk];

		r = write ? write_block(img, buf, blk, entry, s, n, bm, eb)
			  : read_block(img, buf, sector, entry, s, n, bm, eb);
		buf += (size_t)n << VHD_SECTOR_SHIFT;
		sector += n;
		count -= n;
	}
	free(bm);
	return r;
}

int vhd_image_read(struct vhd_image *img, void *buf, uint64_t sector, uint32_t count,
		   struct errbuf *eb)
{
	return walk(img, false, buf, sector, count, eb);
}

int vhd_image_write(struct vhd_image *img, const void *buf, uint64_t sector, uint32_t count,
		    struct errbuf *eb)
{
	if (!img->writable) {
		err_set(eb, "%s: opened read-only", img->path);
		return -EBADF;
	}
	return walk(img, true, (uint8_t *)(uintptr_t)buf, sector, count, eb);
}
