/* Whole-image VHD operations for tapd-vhd: create (fixed, dynamic, or a
 * differencing child with relative and absolute locators), grow, coalesce
 * a child into its parent, and check a chain listing every problem.
 * Blocking I/O, tool side only. */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static int new_uuid(uint8_t uuid[16], struct errbuf *eb)
{
	if (getrandom(uuid, 16, 0) != 16) {
		err_set(eb, "getrandom: %s", strerror(errno));
		return -EIO;
	}
	uuid[6] = (uuid[6] & 0x0f) | 0x40;	/* RFC 4122 version 4 */
	uuid[8] = (uuid[8] & 0x3f) | 0x80;
	return 0;
}

/* The child's absolute path without requiring it to exist: realpath of
 * its directory plus its name. */
static int abs_child_path(const char *path, char *out, size_t out_size)
{
	char *d = strdup(path), *b = strdup(path), *rd = NULL;
	int r = -ENOMEM;

	if (d && b) {
		rd = realpath(dirname(d), NULL);
		r = rd ? 0 : -errno;
		if (!r && (size_t)snprintf(out, out_size, "%s/%s", strcmp(rd, "/") ? rd : "",
					   basename(b)) >= out_size)
			r = -ENAMETOOLONG;
	}
	free(rd);
	free(d);
	free(b);
	return r;
}

/* Fill the locators (W2ru, then W2ku) starting at *off; advances *off. */
static int add_locators(struct vhd_header *h, const char *child, const char *parent,
			uint8_t *out, size_t out_size, uint64_t *off, size_t *used,
			struct errbuf *eb)
{
	char child_abs[VHD_PATH_MAX], rel[VHD_PATH_MAX], *parent_abs;
	const uint32_t codes[2] = { VHD_PLAT_W2RU, VHD_PLAT_W2KU };
	int r;

	parent_abs = realpath(parent, NULL);
	if (!parent_abs) {
		err_set(eb, "%s: %s", parent, strerror(errno));
		return -errno;
	}
	r = abs_child_path(child, child_abs, sizeof(child_abs));
	if (!r)
		r = vhd_relative_path(child_abs, parent_abs, rel, sizeof(rel));
	if (r) {
		err_set(eb, "%s: cannot compute the parent's relative path: %s", child,
			strerror(-r));
		free(parent_abs);
		return r;
	}
	snprintf(h->parent_name, sizeof(h->parent_name), "%s", strrchr(parent_abs, '/') + 1);
	for (int i = 0; i < 2; i++) {
		ssize_t n = vhd_locator_encode(codes[i], i ? parent_abs : rel, out + *used,
					       out_size - *used);
		uint32_t space;

		if (n <= 0) {
			err_set(eb, "cannot encode the parent locator for %s", parent_abs);
			free(parent_abs);
			return n ? (int)n : -EINVAL;
		}
		space = (uint32_t)ALIGN_UP((size_t)n, VHD_SECTOR_SIZE);
		h->loc[i].code = codes[i];
		h->loc[i].data_len = (uint32_t)n;
		h->loc[i].data_space = space;	/* bytes, as Windows writes it */
		h->loc[i].data_offset = *off;
		*off += space;
		*used += space;
	}
	/* The header's name field holds at most 256 UTF-16 units. */
	if (vhd_utf16_encode(h->parent_name, (uint8_t[512]){ 0 }, 512, true) < 0)
		h->parent_name[0] = '\0';
	free(parent_abs);
	return 0;
}

static int create_fd(struct vhd_image *img, const struct vhd_create_opts *o,
		     const struct vhd_image *parent, struct errbuf *eb)
{
	struct vhd_footer *f = &img->meta.footer;
	struct vhd_header *h = &img->meta.header;
	uint8_t uuid[16], hbuf[VHD_HEADER_SIZE], *meta;
	uint64_t size = parent ? parent->meta.layout.size : o->size, off;
	uint32_t bs = o->block_size, bat_entries, bat_size;
	size_t used = 0, meta_size;
	int r;

	if (!bs)
		bs = parent && parent->meta.layout.block_size ? parent->meta.layout.block_size :
			VHD_DEFAULT_BLOCK_SIZE;
	r = new_uuid(uuid, eb);
	if (r)
		return r;
	bat_entries = bs ? (uint32_t)MIN((MAX(o->max_size, size) + bs - 1) / bs,
					 (uint64_t)UINT32_MAX) : 0;
	r = vhd_init_new(f, h, o->type, size, bs, bat_entries, uuid,
			 vhd_timestamp(time(NULL)), eb);
	if (r)
		return r;
	if (o->type == VHD_TYPE_FIXED) {
		if (ftruncate(img->fd, (off_t)size)) {
			err_set(eb, "%s: %s", img->path, strerror(errno));
			return -errno;
		}
		r = vhd_write_footer(img, size, eb);
		return r ? r : (fsync(img->fd) ? -errno : 0);
	}
	/* Locator data goes between the header and the BAT: tools that do
	 * not know differencing disks (qemu's vpc) put new blocks right after
	 * the BAT and would overwrite locators placed there. */
	bat_size = (uint32_t)ALIGN_UP((uint64_t)h->max_bat_entries * 4, VHD_SECTOR_SIZE);
	meta_size = bat_size + 2 * ALIGN_UP(VHD_PATH_MAX * 2 + 4, VHD_SECTOR_SIZE);
	meta = calloc(1, meta_size);
	if (!meta) {
		err_set(eb, "out of memory for a BAT of %" PRIu32 " entries", h->max_bat_entries);
		return -ENOMEM;
	}
	off = h->table_offset;
	if (parent) {
		memcpy(h->parent_uuid, parent->meta.footer.uuid, 16);
		h->parent_timestamp = parent->meta.footer.timestamp;
		r = add_locators(h, img->path, parent->path, meta, meta_size, &off, &used, eb);
		h->table_offset = off;
	}
	memset(meta + used, 0xff, bat_size);	/* every entry unused, padding too */
	used += bat_size;
	off += bat_size;
	if (!r)
		r = vhd_header_encode(h, hbuf);
	if (!r)
		r = vhd_fd_pwrite(img->fd, hbuf, sizeof(hbuf), f->data_offset, img->path, eb);
	if (!r)
		r = vhd_fd_pwrite(img->fd, meta, used, f->data_offset + VHD_HEADER_SIZE,
				  img->path, eb);
	free(meta);
	if (!r)
		r = vhd_write_footer(img, off, eb);
	if (!r && fsync(img->fd)) {
		err_set(eb, "%s: fsync: %s", img->path, strerror(errno));
		r = -errno;
	}
	return r;
}

int vhd_image_create(const char *path, const struct vhd_create_opts *o, struct errbuf *eb)
{
	struct vhd_image *parent = NULL, img = { .fd = -1, .path = (char *)path };
	int r;

	if (o->parent) {
		/* Read lock: a tapd writing the parent makes the snapshot unsafe. */
		r = vhd_image_open(&parent, o->parent, VHD_OPEN_LOCK, eb);
		if (r)
			return r;
	}
	img.fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (img.fd < 0) {
		r = -errno;
		err_set(eb, "%s: %s", path, strerror(errno));
		vhd_image_close(parent);
		return r;
	}
	r = vhd_lock(img.fd, true, path, eb);
	if (!r)
		r = create_fd(&img, o, parent, eb);
	if (r)
		unlink(path);
	close(img.fd);
	vhd_image_close(parent);
	return r;
}

static int grow_bat(struct vhd_image *img, uint32_t need, struct errbuf *eb)
{
	struct vhd_layout *l = &img->meta.layout;
	uint8_t hbuf[VHD_HEADER_SIZE], pad[VHD_SECTOR_SIZE];
	char sz[16];
	uint64_t first;
	int r;

	/* Entries in the BAT's last sector past max_bat_entries are padding:
	 * usable when they read unused (0xFF, as we and qemu write them). */
	if ((uint64_t)need * 4 > l->bat_size) {
		err_set(eb, "%s: the BAT has room for %" PRIu32 " blocks (%s); growing "
			"further would need BAT relocation, which is not supported (create "
			"with --max-size)", img->path, l->bat_size / 4,
			format_size((uint64_t)(l->bat_size / 4) * l->block_size, sz, sizeof(sz)));
		return -ENOSPC;
	}
	first = l->bat_offset + ALIGN_DOWN((uint64_t)l->bat_entries * 4, VHD_SECTOR_SIZE);
	r = vhd_fd_pread(&img->fd, pad, sizeof(pad), first);
	for (uint32_t i = l->bat_entries; !r && i < need; i++)
		if (memcmp(pad + (i * 4) % VHD_SECTOR_SIZE, "\xff\xff\xff\xff", 4))
			r = -ENOSPC;
	if (r) {
		err_set(eb, "%s: the BAT padding is not free; cannot grow past %" PRIu32
			" blocks", img->path, l->bat_entries);
		return r;
	}
	img->meta.header.max_bat_entries = need;
	r = vhd_header_encode(&img->meta.header, hbuf);
	if (!r)
		r = vhd_fd_pwrite(img->fd, hbuf, sizeof(hbuf), img->meta.footer.data_offset,
				  img->path, eb);
	return r;
}

int vhd_image_resize(struct vhd_image *img, uint64_t size, struct errbuf *eb)
{
	struct vhd_footer *f = &img->meta.footer;
	uint64_t old = f->curr_size;
	uint8_t zero[VHD_FOOTER_SIZE] = { 0 };
	int r;

	if (size < old) {
		err_set(eb, "%s: shrinking is not supported (%" PRIu64 " < %" PRIu64 ")",
			img->path, size, old);
		return -EINVAL;
	}
	if (size % VHD_SECTOR_SIZE || size > VHD_MAX_SIZE) {
		err_set(eb, "size %" PRIu64 " must be a multiple of 512 up to 2040 GiB", size);
		return -EINVAL;
	}
	if (size == old)
		return 0;
	f->curr_size = size;
	vhd_geometry(size, &f->cylinders, &f->heads, &f->sectors);
	if (f->type == VHD_TYPE_FIXED) {
		/* New footer first: a crash leaves a valid, bigger disk whose
		 * grown area holds the old footer's bytes, never no footer. */
		r = vhd_write_footer(img, size, eb);
		if (!r && fdatasync(img->fd))
			r = -errno;
		if (!r)
			r = vhd_fd_pwrite(img->fd, zero, sizeof(zero), old, img->path, eb);
	} else {
		uint32_t need = (uint32_t)((size + img->meta.layout.block_size - 1) /
					   img->meta.layout.block_size);

		r = need > img->meta.layout.bat_entries ? grow_bat(img, need, eb) : 0;
		if (!r)
			r = vhd_write_footer(img, img->next_block, eb);
	}
	if (!r && fsync(img->fd))
		r = -errno;
	if (r)
		f->curr_size = old;
	return r;
}

int vhd_image_coalesce(struct vhd_image *child, vhd_progress_fn *progress, void *opaque,
		       struct errbuf *eb)
{
	const struct vhd_layout *l = &child->meta.layout;
	struct vhd_image *parent = child->parent;
	uint32_t total, done = 0;
	uint8_t *bm, *data;
	int r = 0;

	if (l->type != VHD_TYPE_DIFF || !parent) {
		err_set(eb, "%s: not a differencing disk: nothing to coalesce", child->path);
		return -EINVAL;
	}
	if (!parent->writable) {
		err_set(eb, "%s: parent opened read-only", parent->path);
		return -EBADF;
	}
	if (parent->meta.layout.size < l->size) {
		err_set(eb, "%s: the child is larger than its parent %s; resize the parent first",
			child->path, parent->path);
		return -EINVAL;
	}
	total = vhd_bat_allocated(l, child->meta.bat);
	bm = malloc(l->bitmap_size);
	data = malloc(l->block_size);
	if (!bm || !data) {
		err_set(eb, "out of memory");
		r = -ENOMEM;
	}
	for (uint32_t blk = 0; !r && blk < l->blocks; blk++) {
		uint32_t entry = child->meta.bat[blk];
		uint64_t base = (uint64_t)blk * l->block_sectors;
		uint32_t n = (uint32_t)MIN((uint64_t)l->block_sectors, l->sectors - base);

		if (entry == VHD_BAT_UNUSED)
			continue;
		r = vhd_fd_pread(&child->fd, bm, l->bitmap_size, vhd_bitmap_offset(entry));
		if (r)
			err_set(eb, "%s: cannot read a bitmap: %s", child->path, strerror(-r));
		for (uint32_t s = 0, run; !r && s < n; s += run) {
			bool set;

			run = vhd_bits_run(bm, s, n - s, &set);
			if (!set)
				continue;
			r = vhd_fd_pread(&child->fd, data, (size_t)run << VHD_SECTOR_SHIFT,
					 vhd_data_offset(l, entry, s));
			if (r)
				err_set(eb, "%s: read failed: %s", child->path, strerror(-r));
			else
				r = vhd_image_write(parent, data, base + s, run, eb);
		}
		if (progress)
			progress(opaque, ++done, total);
	}
	free(bm);
	free(data);
	if (!r && fsync(parent->fd)) {
		err_set(eb, "%s: fsync: %s", parent->path, strerror(errno));
		r = -errno;
	}
	return r;
}
