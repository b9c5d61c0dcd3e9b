/* VHD metadata codecs: footer, dynamic header, BAT, bitmaps, batmap and
 * geometry, each a pure function over a byte buffer so that the driver,
 * the tool and the fuzzer share one parser. See format.h for the
 * on-disk layout. Locator and path codecs live in locator.c. */
#include "format.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/endian.h"

#define FOOTER_COOKIE "conectix"
#define HEADER_COOKIE "cxsparse"
#define BATMAP_COOKIE "tdbatmap"
#define VHD_VERSION_1 0x00010000u
#define BATMAP_MAX_VERSION 0x00010002u
/* Unix time of 2000-01-01 00:00:00 UTC, the VHD epoch. */
#define VHD_EPOCH 946684800

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static uint64_t pad_sector(uint64_t v)
{
	return ALIGN_UP(v, VHD_SECTOR_SIZE);
}

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t skip)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < skip || i >= skip + 4)
			sum += buf[i];
	return ~sum;
}

/* Cookies are raw bytes; show them escaped so a garbage one stays one line. */
int vhd_footer_decode(const uint8_t buf[VHD_FOOTER_SIZE], struct vhd_footer *f,
		      uint64_t file_size, struct errbuf *eb)
{
	uint32_t sum;

	/* The bytes found are not quoted: the file may be anything
	 * (/etc/shadow named as a parent), and messages reach callers. */
	if (memcmp(buf, FOOTER_COOKIE, 8)) {
		err_set(eb, "no VHD footer: the cookie \"" FOOTER_COOKIE "\" is missing");
		return -EINVAL;
	}
	memset(f, 0, sizeof(*f));
	f->features = get_be32(buf + 8);
	f->version = get_be32(buf + 12);
	f->data_offset = get_be64(buf + 16);
	f->timestamp = get_be32(buf + 24);
	memcpy(f->creator_app, buf + 28, 4);
	f->creator_version = get_be32(buf + 32);
	f->creator_os = get_be32(buf + 36);
	f->orig_size = get_be64(buf + 40);
	f->curr_size = get_be64(buf + 48);
	f->cylinders = get_be16(buf + 56);
	f->heads = buf[58];
	f->sectors = buf[59];
	f->type = get_be32(buf + 60);
	f->checksum = get_be32(buf + 64);
	memcpy(f->uuid, buf + 68, 16);
	f->saved_state = buf[84];
	f->hidden = buf[85];

	sum = vhd_checksum(buf, VHD_FOOTER_SIZE, 64);
	if (sum != f->checksum) {
		err_set(eb, "bad footer checksum 0x%08" PRIx32 " (computed 0x%08" PRIx32 ")",
			f->checksum, sum);
		return -EINVAL;
	}
	if ((f->version >> 16) != 1) {
		err_set(eb, "unsupported footer version 0x%08" PRIx32, f->version);
		return -EINVAL;
	}
	if (f->type != VHD_TYPE_FIXED && f->type != VHD_TYPE_DYNAMIC &&
	    f->type != VHD_TYPE_DIFF) {
		err_set(eb, "unsupported disk type %" PRIu32, f->type);
		return -EINVAL;
	}
	if (f->curr_size % VHD_SECTOR_SIZE) {
		err_set(eb, "virtual size %" PRIu64 " is not a multiple of 512", f->curr_size);
		return -EINVAL;
	}
	if (f->curr_size > VHD_MAX_SIZE) {
		err_set(eb, "virtual size %" PRIu64 " exceeds the VHD limit of 2040 GiB",
			f->curr_size);
		return -EINVAL;
	}
	if (f->type == VHD_TYPE_FIXED) {
		/* The spec says all ones; some writers leave zero. */
		if (f->data_offset != VHD_NO_OFFSET && f->data_offset != 0) {
			err_set(eb, "bad data offset 0x%" PRIx64 " in a fixed disk footer",
				f->data_offset);
			return -EINVAL;
		}
		return 0;
	}
	if (f->data_offset < VHD_FOOTER_SIZE || f->data_offset % VHD_SECTOR_SIZE ||
	    (file_size && (file_size < 2 * VHD_FOOTER_SIZE + VHD_HEADER_SIZE ||
			   f->data_offset > file_size - VHD_FOOTER_SIZE - VHD_HEADER_SIZE))) {
		err_set(eb, "bad data offset 0x%" PRIx64 ": the dynamic header would not lie "
			"inside the file", f->data_offset);
		return -EINVAL;
	}
	return 0;
}

void vhd_footer_encode(struct vhd_footer *f, uint8_t buf[VHD_FOOTER_SIZE])
{
	memset(buf, 0, VHD_FOOTER_SIZE);
	memcpy(buf, FOOTER_COOKIE, 8);
	put_be32(buf + 8, f->features);
	put_be32(buf + 12, f->version);
	put_be64(buf + 16, f->data_offset);
	put_be32(buf + 24, f->timestamp);
	memcpy(buf + 28, f->creator_app, 4);
	put_be32(buf + 32, f->creator_version);
	put_be32(buf + 36, f->creator_os);
	put_be64(buf + 40, f->orig_size);
	put_be64(buf + 48, f->curr_size);
	put_be16(buf + 56, f->cylinders);
	buf[58] = f->heads;
	buf[59] = f->sectors;
	put_be32(buf + 60, f->type);
	memcpy(buf + 68, f->uuid, 16);
	buf[84] = f->saved_state;
	buf[85] = f->hidden;
	f->checksum = vhd_checksum(buf, VHD_FOOTER_SIZE, 64);
	put_be32(buf + 64, f->checksum);
}

static bool known_plat(uint32_t code)
{
	switch (code) {
	case VHD_PLAT_NONE:
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
	case VHD_PLAT_MACX:
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
	case VHD_PLAT_MAC:
		return true;
	}
	return false;
}

int vhd_header_decode(const uint8_t buf[VHD_HEADER_SIZE], struct vhd_header *h,
		      struct errbuf *eb)
{
	uint32_t sum;

	if (memcmp(buf, HEADER_COOKIE, 8)) {
		err_set(eb, "bad dynamic header: the cookie \"" HEADER_COOKIE "\" is missing");
		return -EINVAL;
	}
	memset(h, 0, sizeof(*h));
	h->data_offset = get_be64(buf + 8);
	h->table_offset = get_be64(buf + 16);
	h->version = get_be32(buf + 24);
	h->max_bat_entries = get_be32(buf + 28);
	h->block_size = get_be32(buf + 32);
	h->checksum = get_be32(buf + 36);
	memcpy(h->parent_uuid, buf + 40, 16);
	h->parent_timestamp = get_be32(buf + 56);
	for (int i = 0; i < VHD_LOCATORS; i++) {
		const uint8_t *p = buf + 576 + 24 * i;

		h->loc[i].code = get_be32(p);
		h->loc[i].data_space = get_be32(p + 4);
		h->loc[i].data_len = get_be32(p + 8);
		h->loc[i].data_offset = get_be64(p + 16);
	}

	sum = vhd_checksum(buf, VHD_HEADER_SIZE, 36);
	if (sum != h->checksum) {
		err_set(eb, "bad dynamic header checksum 0x%08" PRIx32 " (computed 0x%08" PRIx32 ")",
			h->checksum, sum);
		return -EINVAL;
	}
	if ((h->version >> 16) != 1) {
		err_set(eb, "unsupported dynamic header version 0x%08" PRIx32, h->version);
		return -EINVAL;
	}
	if (h->data_offset != VHD_NO_OFFSET) {
		err_set(eb, "bad data offset 0x%" PRIx64 " in the dynamic header", h->data_offset);
		return -EINVAL;
	}
	for (int i = 0; i < VHD_LOCATORS; i++) {
		if (!known_plat(h->loc[i].code)) {
			err_set(eb, "parent locator %d has unknown platform code 0x%08" PRIx32, i,
				h->loc[i].code);
			return -EINVAL;
		}
	}
	/* The name is informative (locators find the parent): a bad one is
	 * shown as empty rather than refusing the image. */
	if (vhd_utf16_decode(buf + 64, 512, true, h->parent_name, sizeof(h->parent_name)))
		h->parent_name[0] = '\0';
	return 0;
}

int vhd_header_encode(struct vhd_header *h, uint8_t buf[VHD_HEADER_SIZE])
{
	ssize_t n;

	memset(buf, 0, VHD_HEADER_SIZE);
	n = vhd_utf16_encode(h->parent_name, buf + 64, 512, true);
	if (n < 0)
		return (int)n;
	memcpy(buf, HEADER_COOKIE, 8);
	put_be64(buf + 8, h->data_offset);
	put_be64(buf + 16, h->table_offset);
	put_be32(buf + 24, h->version);
	put_be32(buf + 28, h->max_bat_entries);
	put_be32(buf + 32, h->block_size);
	memcpy(buf + 40, h->parent_uuid, 16);
	put_be32(buf + 56, h->parent_timestamp);
	for (int i = 0; i < VHD_LOCATORS; i++) {
		uint8_t *p = buf + 576 + 24 * i;

		put_be32(p, h->loc[i].code);
		put_be32(p + 4, h->loc[i].data_space);
		put_be32(p + 8, h->loc[i].data_len);
		put_be64(p + 16, h->loc[i].data_offset);
	}
	h->checksum = vhd_checksum(buf, VHD_HEADER_SIZE, 36);
	put_be32(buf + 36, h->checksum);
	return 0;
}

/* [a, a+alen) and [b, b+blen) intersect? */
static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int vhd_layout_init(struct vhd_layout *l, const struct vhd_footer *f,
		    const struct vhd_header *h, uint64_t file_size, struct errbuf *eb)
{
	uint64_t hdr_end, need;

	memset(l, 0, sizeof(*l));
	l->type = f->type;
	l->size = f->curr_size;
	l->sectors = f->curr_size >> VHD_SECTOR_SHIFT;
	if (f->type == VHD_TYPE_FIXED) {
		if (file_size < VHD_FOOTER_SIZE || file_size - VHD_FOOTER_SIZE < f->curr_size) {
			err_set(eb, "fixed disk of %" PRIu64 " bytes is truncated: the file holds "
				"%" PRIu64 " bytes of data", f->curr_size,
				file_size < VHD_FOOTER_SIZE ? 0 : file_size - VHD_FOOTER_SIZE);
			return -EINVAL;
		}
		return 0;
	}

	if (!is_pow2(h->block_size) || h->block_size < VHD_MIN_BLOCK_SIZE ||
	    h->block_size > VHD_MAX_BLOCK_SIZE) {
		err_set(eb, "unsupported block size %" PRIu32 " (need a power of two from "
			"64 KiB to 256 MiB)", h->block_size);
		return -EINVAL;
	}
	l->block_size = h->block_size;
	l->block_sectors = h->block_size >> VHD_SECTOR_SHIFT;
	l->bitmap_size = (uint32_t)pad_sector(l->block_sectors / 8);
	need = (f->curr_size + h->block_size - 1) / h->block_size;
	l->blocks = (uint32_t)need;
	if (h->max_bat_entries < need) {
		err_set(eb, "max_table_entries %" PRIu32 " is too small for a disk of %" PRIu64
			" bytes (needs %" PRIu64 " blocks of %" PRIu32 ")", h->max_bat_entries,
			f->curr_size, need, h->block_size);
		return -EINVAL;
	}
	/* Room to grow is fine; more entries than the VHD limit is garbage. */
	if ((uint64_t)h->max_bat_entries * h->block_size > VHD_MAX_SIZE + h->block_size) {
		err_set(eb, "max_table_entries %" PRIu32 " is inconsistent with the disk size "
			"(%" PRIu64 " bytes, block size %" PRIu32 ")", h->max_bat_entries,
			f->curr_size, h->block_size);
		return -EINVAL;
	}
	l->bat_entries = h->max_bat_entries;
	l->bat_offset = h->table_offset;
	l->bat_size = (uint32_t)pad_sector((uint64_t)h->max_bat_entries * 4);

	hdr_end = f->data_offset + VHD_HEADER_SIZE;
	if (h->table_offset % VHD_SECTOR_SIZE || h->table_offset < VHD_FOOTER_SIZE ||
	    overlaps(h->table_offset, l->bat_size, f->data_offset, VHD_HEADER_SIZE) ||
	    h->table_offset > file_size ||
	    file_size - h->table_offset < (uint64_t)l->bat_size + VHD_FOOTER_SIZE) {
		err_set(eb, "BAT at offset %" PRIu64 " (%" PRIu32 " bytes) does not lie inside "
			"the file (%" PRIu64 " bytes) clear of the headers", h->table_offset,
			l->bat_size, file_size);
		return -EINVAL;
	}
	l->meta_end = MAX(hdr_end, h->table_offset + l->bat_size);

	for (int i = 0; i < VHD_LOCATORS; i++) {
		const struct vhd_locator *loc = &h->loc[i];
		uint64_t space;

		if (loc->code == VHD_PLAT_NONE)
			continue;
		space = vhd_locator_space(loc);
		if (f->type != VHD_TYPE_DIFF) {
			/* Only a differencing disk uses them; ignore leftovers. */
			continue;
		}
		if (!space || loc->data_len > space || loc->data_offset % VHD_SECTOR_SIZE ||
		    loc->data_offset < VHD_FOOTER_SIZE || loc->data_offset > file_size ||
		    file_size - loc->data_offset < space + VHD_FOOTER_SIZE ||
		    overlaps(loc->data_offset, space, f->data_offset, VHD_HEADER_SIZE) ||
		    overlaps(loc->data_offset, space, l->bat_offset, l->bat_size)) {
			err_set(eb, "parent locator %d (offset %" PRIu64 ", %" PRIu64 " bytes) "
				"does not lie inside the file clear of the headers and BAT", i,
				loc->data_offset, space);
			return -EINVAL;
		}
		l->meta_end = MAX(l->meta_end, loc->data_offset + space);
	}
	return 0;
}

void vhd_bat_decode(const uint8_t *buf, uint32_t entries, uint32_t *bat)
{
	for (uint32_t i = 0; i < entries; i++)
		bat[i] = get_be32(buf + 4 * (size_t)i);
}

void vhd_bat_encode(const uint32_t *bat, uint32_t entries, uint8_t *buf)
{
	for (uint32_t i = 0; i < entries; i++)
		put_be32(buf + 4 * (size_t)i, bat[i]);
}

uint64_t vhd_bat_sector_encode(const struct vhd_layout *l, const uint32_t *bat, uint32_t block,
			       uint32_t entry, uint8_t *buf)
{
	const uint32_t per = VHD_SECTOR_SIZE / 4;
	uint32_t first = block - block % per;
	uint32_t n = l->bat_entries - first < per ? l->bat_entries - first : per;

	memset(buf, 0xff, VHD_SECTOR_SIZE);
	vhd_bat_encode(bat + first, n, buf);
	put_be32(buf + 4 * (size_t)(block - first), entry);
	return l->bat_offset + (uint64_t)(first / per) * VHD_SECTOR_SIZE;
}

struct bat_slot {
	uint32_t sector;
	uint32_t block;
};

static int slot_cmp(const void *a, const void *b)
{
	const struct bat_slot *x = a, *y = b;

	return x->sector < y->sector ? -1 : x->sector > y->sector;
}

static void bat_problem(vhd_report_fn *report, void *opaque, struct errbuf *eb,
			unsigned *n, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void bat_problem(vhd_report_fn *report, void *opaque, struct errbuf *eb,
			unsigned *n, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A wholly corrupt BAT would print thousands of lines: cap it. */
	if (report && *n < 20)
		report(opaque, msg);
	else if (report && *n == 20)
		report(opaque, "more BAT problems not listed");
	if (!*n)
		err_set(eb, "%s", msg);
	(*n)++;
}

int vhd_bat_validate(const struct vhd_layout *l, const uint32_t *bat, uint64_t file_size,
		     vhd_report_fn *report, void *opaque, struct errbuf *eb)
{
	uint64_t span = (uint64_t)l->bitmap_size + l->block_size;
	struct bat_slot *slots;
	uint32_t used = 0;
	unsigned bad = 0;

	slots = malloc(sizeof(*slots) * (l->bat_entries ? l->bat_entries : 1));
	if (!slots) {
		err_set(eb, "out of memory checking the BAT");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < l->bat_entries; i++) {
		uint64_t off = vhd_bitmap_offset(bat[i]);

		if (bat[i] == VHD_BAT_UNUSED)
			continue;
		if (i >= l->blocks) {
			bat_problem(report, opaque, eb, &bad, "BAT entry %" PRIu32 " is in use but "
				    "lies beyond the disk size (%" PRIu32 " blocks)", i, l->blocks);
			continue;
		}
		if (off + span > file_size - VHD_FOOTER_SIZE) {
			bat_problem(report, opaque, eb, &bad, "BAT entry %" PRIu32 " points past the "
				    "end of file (block at %" PRIu64 ", file is %" PRIu64 " bytes)",
				    i, off, file_size);
			continue;
		}
		if (off < l->meta_end) {
			bat_problem(report, opaque, eb, &bad, "BAT entry %" PRIu32 " (block at %"
				    PRIu64 ") overlaps the metadata (which ends at %" PRIu64 ")",
				    i, off, l->meta_end);
			continue;
		}
		slots[used].sector = bat[i];
		slots[used].block = i;
		used++;
	}
	qsort(slots, used, sizeof(*slots), slot_cmp);
	for (uint32_t i = 1; i < used; i++) {
		uint64_t prev_end = vhd_bitmap_offset(slots[i - 1].sector) + span;

		if (vhd_bitmap_offset(slots[i].sector) < prev_end)
			bat_problem(report, opaque, eb, &bad, "BAT entries %" PRIu32 " and %" PRIu32
				    " overlap (blocks at %" PRIu64 " and %" PRIu64 ")",
				    slots[i - 1].block, slots[i].block,
				    vhd_bitmap_offset(slots[i - 1].sector),
				    vhd_bitmap_offset(slots[i].sector));
	}
	free(slots);
	return bad ? -EINVAL : 0;
}

uint64_t vhd_data_end(const struct vhd_layout *l, const uint32_t *bat)
{
	uint64_t end = l->meta_end;

	for (uint32_t i = 0; i < l->bat_entries; i++)
		if (bat[i] != VHD_BAT_UNUSED)
			end = MAX(end, vhd_bitmap_offset(bat[i]) + l->bitmap_size + l->block_size);
	return pad_sector(end);
}

uint32_t vhd_bat_allocated(const struct vhd_layout *l, const uint32_t *bat)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < l->bat_entries; i++)
		n += bat[i] != VHD_BAT_UNUSED;
	return n;
}

void vhd_bits_set(uint8_t *map, uint32_t first, uint32_t count)
{
	for (; count && (first & 7); first++, count--)
		map[first >> 3] |= 0x80 >> (first & 7);
	if (count >= 8) {
		memset(map + (first >> 3), 0xff, count >> 3);
		first += count & ~7u;
		count &= 7;
	}
	for (; count; first++, count--)
		map[first >> 3] |= 0x80 >> (first & 7);
}

uint32_t vhd_bits_run(const uint8_t *map, uint32_t first, uint32_t max, bool *set)
{
	uint32_t n = 1;

	if (!max)
		return 0;
	*set = vhd_bit_test(map, first);
	while (n < max) {
		uint32_t b = first + n;

		/* Whole bytes at a time once aligned: bitmaps are 512+ bytes. */
		if (!(b & 7) && max - n >= 8 && map[b >> 3] == (*set ? 0xff : 0)) {
			n += 8;
			continue;
		}
		if (vhd_bit_test(map, b) != *set)
			break;
		n++;
	}
	return n;
}

bool vhd_bits_all(const uint8_t *map, uint32_t first, uint32_t count)
{
	bool set;

	return !count || (vhd_bits_run(map, first, count, &set) == count && set);
}

int vhd_batmap_decode(const uint8_t buf[VHD_SECTOR_SIZE], const struct vhd_layout *l,
		      uint64_t file_size, struct vhd_batmap *bm, struct errbuf *eb)
{
	uint64_t need;

	if (memcmp(buf, BATMAP_COOKIE, 8))
		return -ENOENT;
	bm->offset = get_be64(buf + 8);
	bm->size = get_be32(buf + 16);
	bm->version = get_be32(buf + 20);
	bm->checksum = get_be32(buf + 24);
	bm->marker = buf[28];
	if (bm->version > BATMAP_MAX_VERSION) {
		err_set(eb, "batmap version 0x%08" PRIx32 " not supported", bm->version);
		return -EINVAL;
	}
	need = pad_sector((l->bat_entries + 7) / 8) >> VHD_SECTOR_SHIFT;
	if (!bm->size || bm->size < need || bm->size > need + 1 ||
	    bm->offset % VHD_SECTOR_SIZE || bm->offset < vhd_batmap_header_offset(l) +
	    VHD_SECTOR_SIZE || bm->offset > file_size ||
	    file_size - bm->offset < ((uint64_t)bm->size << VHD_SECTOR_SHIFT) + VHD_FOOTER_SIZE) {
		err_set(eb, "batmap (offset %" PRIu64 ", %" PRIu32 " sectors) does not fit the "
			"BAT or the file", bm->offset, bm->size);
		return -EINVAL;
	}
	return 0;
}

int vhd_batmap_verify(const struct vhd_batmap *bm, const uint8_t *map, struct errbuf *eb)
{
	size_t len = (size_t)bm->size << VHD_SECTOR_SHIFT;
	uint32_t sum = 0;

	/* Version 1.1 summed signed chars (a blktap bug kept for compat). */
	for (size_t i = 0; i < len; i++)
		sum += bm->version == 0x00010001u ? (uint32_t)(int8_t)map[i] : map[i];
	sum = ~sum;
	if (sum != bm->checksum) {
		err_set(eb, "bad batmap checksum 0x%08" PRIx32 " (computed 0x%08" PRIx32 ")",
			bm->checksum, sum);
		return -EINVAL;
	}
	return 0;
}

void vhd_geometry(uint64_t size, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
	uint64_t secs = size >> VHD_SECTOR_SHIFT;
	uint32_t s, h, cth;

	if (secs > 65535ull * 16 * 255)
		secs = 65535ull * 16 * 255;
	if (secs >= 65535ull * 16 * 63) {
		s = 255;
		h = 16;
		cth = (uint32_t)(secs / s);
	} else {
		s = 17;
		cth = (uint32_t)(secs / s);
		h = (cth + 1023) / 1024;
		if (h < 4)
			h = 4;
		if (cth >= h * 1024 || h > 16) {
			s = 31;
			h = 16;
			cth = (uint32_t)(secs / s);
		}
		if (cth >= h * 1024) {
			s = 63;
			h = 16;
			cth = (uint32_t)(secs / s);
		}
	}
	*cyl = (uint16_t)(cth / h);
	*heads = (uint8_t)h;
	*spt = (uint8_t)s;
}

uint32_t vhd_timestamp(time_t t)
{
	return t < VHD_EPOCH ? 0 : (uint32_t)(t - VHD_EPOCH);
}

time_t vhd_time_to_unix(uint32_t ts)
{
	return (time_t)ts + VHD_EPOCH;
}

int vhd_init_new(struct vhd_footer *f, struct vhd_header *h, enum vhd_type type,
		 uint64_t size, uint32_t block_size, uint32_t bat_entries,
		 const uint8_t uuid[16], uint32_t timestamp, struct errbuf *eb)
{
	uint64_t blocks;

	if (!size || size % VHD_SECTOR_SIZE || size > VHD_MAX_SIZE) {
		err_set(eb, "size %" PRIu64 " must be a non-zero multiple of 512 up to 2040 GiB",
			size);
		return -EINVAL;
	}
	memset(f, 0, sizeof(*f));
	f->features = 2;	/* "reserved", always set */
	f->version = VHD_VERSION_1;
	f->data_offset = type == VHD_TYPE_FIXED ? VHD_NO_OFFSET : VHD_FOOTER_SIZE;
	f->timestamp = timestamp;
	memcpy(f->creator_app, "tap", 4);
	f->creator_version = VHD_VERSION_1;
	f->creator_os = 0x4c6e7578;	/* "Lnux" */
	f->orig_size = size;
	f->curr_size = size;
	vhd_geometry(size, &f->cylinders, &f->heads, &f->sectors);
	f->type = type;
	memcpy(f->uuid, uuid, 16);
	if (type == VHD_TYPE_FIXED)
		return 0;

	if (!is_pow2(block_size) || block_size < VHD_MIN_BLOCK_SIZE ||
	    block_size > VHD_MAX_BLOCK_SIZE) {
		err_set(eb, "block size %" PRIu32 " must be a power of two from 64 KiB to 256 MiB",
			block_size);
		return -EINVAL;
	}
	blocks = (size + block_size - 1) / block_size;
	if (bat_entries < blocks)
		bat_entries = (uint32_t)blocks;
	if ((uint64_t)bat_entries * block_size > VHD_MAX_SIZE + block_size) {
		err_set(eb, "maximum size beyond the VHD limit of 2040 GiB");
		return -EINVAL;
	}
	memset(h, 0, sizeof(*h));
	h->data_offset = VHD_NO_OFFSET;
	h->table_offset = VHD_FOOTER_SIZE + VHD_HEADER_SIZE;
	h->version = VHD_VERSION_1;
	h->max_bat_entries = bat_entries;
	h->block_size = block_size;
	return 0;
}
