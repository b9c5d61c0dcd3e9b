/* Fuzz target for the VHD metadata parser: the input is a whole VHD file
 * held in memory, loaded with vhd_meta_load() and then walked the way the
 * driver would (locators joined, bitmaps and the batmap tested). Built as
 * a libFuzzer target (-DFUZZ_LIBFUZZER, clang) or, without clang, with a
 * small standalone driver that replays seeds with random mutations.
 *
 * The first input byte is a mode: with bit 0 set the harness rewrites the
 * footer and header checksums first, so mutations reach the code behind
 * them instead of dying at the checksum test. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "formats/vhd/format.h"

struct mem {
	const uint8_t *buf;
	size_t len;
};

static int mem_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	const struct mem *m = opaque;

	if (off > m->len || len > m->len - off)
		return -EIO;
	memcpy(buf, m->buf + off, len);
	return 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void fix_checksums(uint8_t *b, size_t len)
{
	uint64_t off = 0;

	if (len < 512)
		return;
	put32(b + len - 512 + 64, vhd_checksum(b + len - 512, 512, 64));
	put32(b + 64, vhd_checksum(b, 512, 64));
	for (int i = 0; i < 8; i++)
		off = off << 8 | b[len - 512 + 16 + i];
	if (off <= len && len - off >= 1024)
		put32(b + off + 36, vhd_checksum(b + off, 1024, 36));
}

static void report(void *opaque, const char *msg)
{
	(void)opaque;
	if (!msg[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct errbuf eb = { "" };
	struct vhd_meta m;
	struct mem mem;
	uint8_t *copy;

	if (size < 1 || size > (8u << 20))
		return 0;
	copy = malloc(size - 1 ? size - 1 : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	if (data[0] & 1)
		fix_checksums(copy, size - 1);
	mem.buf = copy;
	mem.len = size - 1;

	if (!vhd_meta_load(&m, mem_pread, &mem, mem.len, (data[0] & 2) ? report : NULL, NULL,
			   &eb)) {
		const struct vhd_layout *l = &m.layout;
		uint8_t *bm = l->bitmap_size ? malloc(l->bitmap_size) : NULL;
		char path[VHD_PATH_MAX];

		for (uint32_t i = 0; bm && i < l->bat_entries; i++) {
			bool set;

			if (m.bat[i] == VHD_BAT_UNUSED)
				continue;
			/* Validation promised the whole block is inside the file. */
			if (mem_pread(&mem, bm, l->bitmap_size, vhd_bitmap_offset(m.bat[i])) ||
			    vhd_data_offset(l, m.bat[i], l->block_sectors) > mem.len)
				abort();
			for (uint32_t s = 0; s < l->block_sectors;)
				s += vhd_bits_run(bm, s, l->block_sectors - s, &set);
		}
		free(bm);
		if (m.has_batmap)
			for (uint32_t i = 0; i < l->bat_entries; i++)
				(void)vhd_bit_test(m.batmap_map, i);
		for (int i = 0; i < VHD_LOCATORS; i++)
			if (m.parent_loc[i])
				(void)vhd_parent_join("/srv/child.vhd", m.parent_loc[i], path,
						      sizeof(path));
		if (vhd_data_end(l, m.bat) > mem.len && l->type != VHD_TYPE_FIXED)
			abort();
		vhd_meta_free(&m);
	} else if (!eb.msg[0]) {
		abort();	/* every refusal must say why */
	}
	free(copy);
	return 0;
}

#ifndef FUZZ_LIBFUZZER
/* Standalone driver: fuzz-vhd-meta SECONDS SEED... (seeds carry the mode
 * byte, like libFuzzer's corpus). */
static uint8_t *load(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	b = n > 0 ? malloc((size_t)n) : NULL;
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

int main(int argc, char **argv)
{
	time_t end;
	unsigned long runs = 0;
	int nseeds = argc - 2;
	uint8_t **seeds;
	size_t *lens;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SECONDS SEED...\n", argv[0]);
		return 2;
	}
	seeds = calloc((size_t)nseeds, sizeof(*seeds));
	lens = calloc((size_t)nseeds, sizeof(*lens));
	for (int i = 0; i < nseeds; i++) {
		seeds[i] = load(argv[i + 2], &lens[i]);
		if (!seeds[i]) {
			perror(argv[i + 2]);
			return 2;
		}
		LLVMFuzzerTestOneInput(seeds[i], lens[i]);
	}
	srand((unsigned)time(NULL));
	end = time(NULL) + atoi(argv[1]);
	while (time(NULL) < end) {
		for (int k = 0; k < 200; k++, runs++) {
			int s = rand() % nseeds;
			size_t len = lens[s];
			uint8_t *b = malloc(len + 4096);
			int flips = 1 + rand() % 8;

			memcpy(b, seeds[s], len);
			b[0] = (uint8_t)(rand() & 3);
			for (int j = 0; j < flips; j++) {
				/* Aim at the metadata: the first and last 4 KiB. */
				size_t pos = rand() & 1 ? (size_t)rand() % MIN(len, 4096u) :
							  len - 1 - (size_t)rand() % MIN(len, 600u);
				int what = rand() % 4;

				if (what == 0)
					b[pos] ^= (uint8_t)(1 << (rand() % 8));
				else if (what == 1)
					b[pos] = rand() & 1 ? 0xff : 0;
				else
					b[pos] = (uint8_t)rand();
			}
			if (rand() % 16 == 0)
				len = 1 + (size_t)rand() % len;
			LLVMFuzzerTestOneInput(b, len);
			free(b);
		}
	}
	printf("fuzz-vhd-meta: %lu runs over %d seeds, no crash\n", runs, nseeds);
	for (int i = 0; i < nseeds; i++)
		free(seeds[i]);
	free(seeds);
	free(lens);
	return 0;
}
#endif
