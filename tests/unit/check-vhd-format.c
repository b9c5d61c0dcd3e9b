/* Unit tests for the VHD format layer: every structure round-trips,
 * checksums and each kind of corrupt metadata are refused with a readable
 * reason, locators survive non-ASCII names, and vhd_meta_load() works on
 * an image held in memory. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check-run.h"
#include "formats/vhd/format.h"

static const uint8_t uuid_a[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

#define ck_assert_msg_has(eb, text) \
	ck_assert_msg(strstr((eb)->msg, (text)), "message '%s' lacks '%s'", (eb)->msg, (text))

/* An in-memory image for vhd_meta_load(). */
struct memfile {
	uint8_t *buf;
	size_t len;
};

static int mem_pread(void *opaque, void *buf, size_t len, uint64_t off)
{
	struct memfile *m = opaque;

	if (off > m->len || len > m->len - off)
		return -EIO;
	memcpy(buf, m->buf + off, len);
	return 0;
}

/* A dynamic disk of 8 MiB, 2 MiB blocks, block 1 allocated after the BAT. */
static struct memfile make_dynamic(struct vhd_footer *f, struct vhd_header *h)
{
	struct memfile m;
	uint32_t bat[4] = { VHD_BAT_UNUSED, 0, VHD_BAT_UNUSED, VHD_BAT_UNUSED };
	uint64_t blk = 1536 + 512;
	struct errbuf eb = { "" };

	ck_assert_int_eq(vhd_init_new(f, h, VHD_TYPE_DYNAMIC, 8 << 20, 2 << 20, 0, uuid_a, 1000,
				      &eb), 0);
	m.len = blk + 512 + (2 << 20) + 512;
	m.buf = calloc(1, m.len);
	vhd_footer_encode(f, m.buf);
	memcpy(m.buf + m.len - 512, m.buf, 512);
	ck_assert_int_eq(vhd_header_encode(h, m.buf + 512), 0);
	memset(m.buf + 1536, 0xff, 512);
	bat[1] = (uint32_t)(blk / 512);
	vhd_bat_encode(bat, 4, m.buf + 1536);
	vhd_bits_set(m.buf + blk, 0, 8);
	memset(m.buf + blk + 512, 0x5a, 4096);
	return m;
}

START_TEST(test_footer_round_trip)
{
	struct vhd_footer f, g;
	struct vhd_header h;
	struct errbuf eb = { "" };
	uint8_t buf[512];

	ck_assert_int_eq(vhd_init_new(&f, &h, VHD_TYPE_DYNAMIC, 1ull << 30, 2 << 20, 0, uuid_a,
				      12345, &eb), 0);
	f.hidden = 1;
	vhd_footer_encode(&f, buf);
	ck_assert(!memcmp(buf, "conectix", 8));
	ck_assert_int_eq(vhd_footer_decode(buf, &g, 1 << 20, &eb), 0);
	ck_assert(!memcmp(&f, &g, sizeof(f)));
	ck_assert_uint_eq(g.curr_size, 1ull << 30);
	ck_assert_uint_eq(g.data_offset, 512);
	ck_assert(!memcmp(g.creator_app, "tap", 4));

	/* Any flipped byte is caught by the checksum. */
	for (int i = 8; i < 512; i += 37) {
		struct errbuf e2 = { "" };

		buf[i] ^= 0x40;
		ck_assert_int_eq(vhd_footer_decode(buf, &g, 1 << 20, &e2), -EINVAL);
		ck_assert_msg_has(&e2, "bad footer checksum");
		buf[i] ^= 0x40;
	}
}
END_TEST

/* Encode f and decode it again with file_size; return the message. */
static int footer_verdict(struct vhd_footer *f, uint64_t file_size, struct errbuf *eb)
{
	struct vhd_footer g;
	uint8_t buf[512];

	vhd_footer_encode(f, buf);
	return vhd_footer_decode(buf, &g, file_size, eb);
}

START_TEST(test_footer_refusals)
{
	struct vhd_footer f, base;
	struct vhd_header h;
	struct errbuf eb = { "" };
	uint8_t buf[512];

	ck_assert_int_eq(vhd_init_new(&base, &h, VHD_TYPE_DYNAMIC, 1 << 30, 2 << 20, 0, uuid_a,
				      1, &eb), 0);
	f = base;
	f.curr_size = 2041ull << 30;
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "exceeds the VHD limit of 2040 GiB");

	f = base, eb.msg[0] = '\0';
	f.data_offset = 1 << 30;
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad data offset");

	f = base, eb.msg[0] = '\0';
	f.data_offset = 700;	/* not sector aligned */
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad data offset");

	f = base, eb.msg[0] = '\0';
	f.type = 5;
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "unsupported disk type 5");

	f = base, eb.msg[0] = '\0';
	f.version = 0x00020000;
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "unsupported footer version");

	f = base, eb.msg[0] = '\0';
	f.curr_size = 1000;
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "not a multiple of 512");

	f = base, eb.msg[0] = '\0';
	f.type = VHD_TYPE_FIXED;
	f.data_offset = 512;
	ck_assert_int_eq(footer_verdict(&f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "fixed disk footer");

	eb.msg[0] = '\0';
	vhd_footer_encode(&base, buf);
	memcpy(buf, "conectiX", 8);
	ck_assert_int_eq(vhd_footer_decode(buf, &f, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "no VHD footer: the cookie \"conectix\" is missing");
	/* What the file holds is never echoed (it may be a secret). */
	ck_assert_ptr_null(strstr(eb.msg, "conectiX"));
	memcpy(buf, "root:$6$", 8);
	eb.msg[0] = '\0';
	ck_assert_int_eq(vhd_footer_decode(buf, &f, 1 << 20, &eb), -EINVAL);
	ck_assert_ptr_null(strstr(eb.msg, "root"));
}
END_TEST

START_TEST(test_header_round_trip)
{
	struct vhd_footer f;
	struct vhd_header h, g;
	struct errbuf eb = { "" };
	uint8_t buf[1024];

	ck_assert_int_eq(vhd_init_new(&f, &h, VHD_TYPE_DIFF, 1 << 30, 2 << 20, 1024, uuid_a, 1,
				      &eb), 0);
	memcpy(h.parent_uuid, uuid_a, 16);
	h.parent_timestamp = 777;
	strcpy(h.parent_name, "p\xc3\xa4rent-\xe3\x83\x9a\xf0\x9f\x98\x80.vhd");	/* päre-ペ😀 */
	h.loc[0] = (struct vhd_locator){ VHD_PLAT_W2RU, 512, 30, 1536 };
	h.loc[1] = (struct vhd_locator){ VHD_PLAT_W2KU, 1, 60, 2048 };
	ck_assert_int_eq(vhd_header_encode(&h, buf), 0);
	ck_assert(!memcmp(buf, "cxsparse", 8));
	ck_assert_int_eq(vhd_header_decode(buf, &g, &eb), 0);
	ck_assert(!memcmp(&h, &g, sizeof(h)));
	ck_assert_uint_eq(g.max_bat_entries, 1024);

	buf[100] ^= 1;
	ck_assert_int_eq(vhd_header_decode(buf, &g, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad dynamic header checksum");
	buf[100] ^= 1;

	eb.msg[0] = '\0';
	memcpy(buf, "cxsparsf", 8);
	ck_assert_int_eq(vhd_header_decode(buf, &g, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad dynamic header: the cookie \"cxsparse\" is missing");
	ck_assert_ptr_null(strstr(eb.msg, "cxsparsf"));

	eb.msg[0] = '\0';
	h.data_offset = 0;
	ck_assert_int_eq(vhd_header_encode(&h, buf), 0);
	ck_assert_int_eq(vhd_header_decode(buf, &g, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad data offset 0x0 in the dynamic header");

	eb.msg[0] = '\0';
	h.data_offset = VHD_NO_OFFSET;
	h.loc[3].code = 0x41424344;
	ck_assert_int_eq(vhd_header_encode(&h, buf), 0);
	ck_assert_int_eq(vhd_header_decode(buf, &g, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "parent locator 3 has unknown platform code");
}
END_TEST

static int layout_verdict(uint32_t block_size, uint32_t entries, uint64_t table_offset,
			  uint64_t file_size, struct errbuf *eb)
{
	struct vhd_footer f;
	struct vhd_header h;
	struct vhd_layout l;
	int r;

	r = vhd_init_new(&f, &h, VHD_TYPE_DYNAMIC, 64 << 20, 2 << 20, 0, uuid_a, 1, eb);
	ck_assert_int_eq(r, 0);
	h.block_size = block_size;
	h.max_bat_entries = entries;
	h.table_offset = table_offset;
	return vhd_layout_init(&l, &f, &h, file_size, eb);
}

START_TEST(test_layout_refusals)
{
	struct errbuf eb = { "" };

	ck_assert_int_eq(layout_verdict(2 << 20, 32, 1536, 1 << 20, &eb), 0);
	ck_assert_int_eq(layout_verdict(3 << 20, 32, 1536, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "unsupported block size 3145728");
	eb.msg[0] = '\0';
	ck_assert_int_eq(layout_verdict(512, 1 << 17, 1536, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "unsupported block size 512");
	eb.msg[0] = '\0';
	ck_assert_int_eq(layout_verdict(2 << 20, 31, 1536, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "max_table_entries 31 is too small");
	eb.msg[0] = '\0';
	ck_assert_int_eq(layout_verdict(2 << 20, 4000000, 1536, 1ull << 26, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "max_table_entries 4000000 is inconsistent with the disk size");
	eb.msg[0] = '\0';
	ck_assert_int_eq(layout_verdict(2 << 20, 32, 1 << 20, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "does not lie inside the file");
	eb.msg[0] = '\0';
	ck_assert_int_eq(layout_verdict(2 << 20, 32, 1024, 1 << 20, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "BAT at offset 1024");
}
END_TEST

START_TEST(test_bat_validation)
{
	struct vhd_footer f;
	struct vhd_header h;
	struct vhd_layout l;
	struct errbuf eb = { "" };
	uint32_t bat[32];
	uint64_t file = 2048 + 5 * (512 + (2 << 20)) + 512;
	uint8_t raw[128];
	uint32_t back[32];

	ck_assert_int_eq(vhd_init_new(&f, &h, VHD_TYPE_DYNAMIC, 64 << 20, 2 << 20, 0, uuid_a, 1,
				      &eb), 0);
	ck_assert_int_eq(vhd_layout_init(&l, &f, &h, file, &eb), 0);
	ck_assert_uint_eq(l.meta_end, 2048);
	ck_assert_uint_eq(l.bitmap_size, 512);
	ck_assert_uint_eq(l.blocks, 32);
	memset(bat, 0xff, sizeof(bat));
	bat[0] = 4;
	bat[7] = 4 + 4097;
	vhd_bat_encode(bat, 32, raw);
	vhd_bat_decode(raw, 32, back);
	ck_assert(!memcmp(bat, back, sizeof(bat)));
	ck_assert_int_eq(vhd_bat_validate(&l, bat, file, NULL, NULL, &eb), 0);
	ck_assert_uint_eq(vhd_bat_allocated(&l, bat), 2);
	ck_assert_uint_eq(vhd_data_end(&l, bat), 2048 + 2 * (512 + (2 << 20)));
	ck_assert_uint_eq(vhd_data_offset(&l, bat[7], 3), (4 + 4097) * 512ull + 512 + 3 * 512);

	bat[3] = 1u << 22;
	ck_assert_int_eq(vhd_bat_validate(&l, bat, file, NULL, NULL, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "BAT entry 3 points past the end of file");
	bat[3] = VHD_BAT_UNUSED;

	eb.msg[0] = '\0';
	bat[5] = 2;
	ck_assert_int_eq(vhd_bat_validate(&l, bat, file, NULL, NULL, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "BAT entry 5 (block at 1024) overlaps the metadata");

	eb.msg[0] = '\0';
	bat[5] = 4 + 100;
	ck_assert_int_eq(vhd_bat_validate(&l, bat, file, NULL, NULL, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "BAT entries 0 and 5 overlap");
}
END_TEST

static unsigned reported;

static void count_report(void *opaque, const char *msg)
{
	(void)opaque;
	ck_assert(msg[0]);
	reported++;
}

START_TEST(test_bat_reports_every_problem)
{
	struct vhd_footer f;
	struct vhd_header h;
	struct vhd_layout l;
	struct errbuf eb = { "" };
	uint32_t bat[32];

	ck_assert_int_eq(vhd_init_new(&f, &h, VHD_TYPE_DYNAMIC, 64 << 20, 2 << 20, 0, uuid_a, 1,
				      &eb), 0);
	ck_assert_int_eq(vhd_layout_init(&l, &f, &h, 1 << 20, &eb), 0);
	memset(bat, 0xff, sizeof(bat));
	bat[1] = bat[2] = bat[30] = 1u << 30;
	reported = 0;
	ck_assert_int_eq(vhd_bat_validate(&l, bat, 1 << 20, count_report, NULL, &eb), -EINVAL);
	ck_assert_uint_eq(reported, 3);
	ck_assert_msg_has(&eb, "BAT entry 1 ");
}
END_TEST

START_TEST(test_bitmaps)
{
	uint8_t map[16] = { 0 };
	bool set;

	vhd_bits_set(map, 3, 20);
	ck_assert_uint_eq(map[0], 0x1f);
	ck_assert_uint_eq(map[1], 0xff);
	ck_assert_uint_eq(map[2], 0xfe);
	ck_assert(!vhd_bit_test(map, 2));
	ck_assert(vhd_bit_test(map, 3));
	ck_assert(vhd_bit_test(map, 22));
	ck_assert(!vhd_bit_test(map, 23));
	ck_assert_uint_eq(vhd_bits_run(map, 0, 128, &set), 3);
	ck_assert(!set);
	ck_assert_uint_eq(vhd_bits_run(map, 3, 128, &set), 20);
	ck_assert(set);
	ck_assert_uint_eq(vhd_bits_run(map, 10, 5, &set), 5);
	ck_assert_uint_eq(vhd_bits_run(map, 23, 105, &set), 105);
	ck_assert(!set);
	ck_assert(vhd_bits_all(map, 3, 20));
	ck_assert(!vhd_bits_all(map, 2, 20));
	ck_assert(!vhd_bits_all(map, 3, 21));
}
END_TEST

START_TEST(test_geometry_and_time)
{
	uint16_t c;
	uint8_t h, s;

	vhd_geometry(1ull << 30, &c, &h, &s);
	ck_assert_uint_eq(c, 2080);
	ck_assert_uint_eq(h, 16);
	ck_assert_uint_eq(s, 63);
	vhd_geometry(20ull << 20, &c, &h, &s);	/* 40960 sectors: 17 spt, 4 heads */
	ck_assert_uint_eq(s, 17);
	ck_assert_uint_eq(h, 4);
	ck_assert_uint_eq(c, 602);
	vhd_geometry(2040ull << 30, &c, &h, &s);
	ck_assert_uint_eq(s, 255);
	ck_assert_uint_eq(h, 16);
	ck_assert_uint_eq(c, 65535);
	ck_assert_uint_eq(vhd_timestamp(946684800), 0);
	ck_assert_uint_eq(vhd_timestamp(946684800 + 86400), 86400);
	ck_assert_int_eq(vhd_time_to_unix(86400), 946684800 + 86400);
}
END_TEST

START_TEST(test_utf16)
{
	const char *name = "d\xc3\xa9j\xc3\xa0-\xe3\x83\x9a-\xf0\x9f\x98\x80";
	uint8_t buf[64];
	char out[64];
	ssize_t n;

	n = vhd_utf16_encode(name, buf, sizeof(buf), false);
	ck_assert_int_eq(n, 2 * 9);	/* 8 BMP units + a surrogate pair */
	ck_assert_uint_eq(buf[0], 'd');
	ck_assert_uint_eq(buf[1], 0);
	ck_assert_int_eq(vhd_utf16_decode(buf, (size_t)n, false, out, sizeof(out)), 0);
	ck_assert_str_eq(out, name);
	n = vhd_utf16_encode(name, buf, sizeof(buf), true);
	ck_assert_uint_eq(buf[0], 0);
	ck_assert_uint_eq(buf[1], 'd');
	ck_assert_int_eq(vhd_utf16_decode(buf, (size_t)n, true, out, sizeof(out)), 0);
	ck_assert_str_eq(out, name);

	ck_assert_int_eq(vhd_utf16_encode("bad\xff", buf, sizeof(buf), false), -EINVAL);
	ck_assert_int_eq(vhd_utf16_encode("\xc0\xaf", buf, sizeof(buf), false), -EINVAL);
	ck_assert_int_eq(vhd_utf16_encode("abcdef", buf, 4, false), -ENAMETOOLONG);
	/* A lone high surrogate, then 'a'. */
	memcpy(buf, "\x3d\xd8\x61\x00", 4);
	ck_assert_int_eq(vhd_utf16_decode(buf, 4, false, out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(vhd_utf16_decode((const uint8_t *)"a\0b\0", 4, false, out, 2),
			 -ENAMETOOLONG);
}
END_TEST

static void locator_round_trip(uint32_t code, const char *in, const char *want)
{
	uint8_t buf[1024];
	char out[1024];
	struct errbuf eb = { "" };
	ssize_t n = vhd_locator_encode(code, in, buf, sizeof(buf));

	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(vhd_locator_decode(code, buf, (size_t)n, out, sizeof(out), &eb), 0);
	ck_assert_str_eq(out, want);
}

START_TEST(test_locators)
{
	uint8_t buf[256];
	char out[256];
	struct errbuf eb = { "" };
	ssize_t n;

	locator_round_trip(VHD_PLAT_W2KU, "/srv/vhd/p\xc3\xa4rent \xe3\x83\x9a.vhd",
			   "/srv/vhd/p\xc3\xa4rent \xe3\x83\x9a.vhd");
	locator_round_trip(VHD_PLAT_W2RU, "../base/x.vhd", "../base/x.vhd");
	locator_round_trip(VHD_PLAT_W2RU, "x\xf0\x9f\x98\x80.vhd", "./x\xf0\x9f\x98\x80.vhd");
	locator_round_trip(VHD_PLAT_MACX, "/a/b.vhd", "/a/b.vhd");

	/* Relative ones are written the Windows way. */
	n = vhd_locator_encode(VHD_PLAT_W2RU, "sub/x.vhd", buf, sizeof(buf));
	ck_assert_int_eq(n, 2 * 11);
	ck_assert_int_eq(vhd_utf16_decode(buf, (size_t)n, false, out, sizeof(out)), 0);
	ck_assert_str_eq(out, ".\\sub\\x.vhd");
	ck_assert_int_eq(vhd_locator_encode(VHD_PLAT_W2KU, "rel.vhd", buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(vhd_locator_encode(VHD_PLAT_WI2K, "/a", buf, sizeof(buf)), -ENOTSUP);

	/* A Windows absolute path loses its drive letter. */
	n = vhd_utf16_encode("C:\\vhds\\p.vhd", buf, sizeof(buf), false);
	ck_assert_int_eq(vhd_locator_decode(VHD_PLAT_W2KU, buf, (size_t)n, out, sizeof(out), &eb),
			 0);
	ck_assert_str_eq(out, "/vhds/p.vhd");
	ck_assert_int_eq(vhd_locator_decode(VHD_PLAT_MACX, (const uint8_t *)"http://x", 8, out,
					    sizeof(out), &eb), -EINVAL);
	ck_assert_msg_has(&eb, "not a file:// URL");
	eb.msg[0] = '\0';
	ck_assert_int_eq(vhd_locator_decode(VHD_PLAT_W2RU, (const uint8_t *)"\x00\xdc", 2, out,
					    sizeof(out), &eb), -EINVAL);
	ck_assert_msg_has(&eb, "not valid UTF-16LE");

	/* Spaces: sectors when small, bytes when a multiple of 512. */
	ck_assert_uint_eq(vhd_locator_space(&(struct vhd_locator){ .data_space = 2 }), 1024);
	ck_assert_uint_eq(vhd_locator_space(&(struct vhd_locator){ .data_space = 1024 }), 1024);
	ck_assert_uint_eq(vhd_locator_space(&(struct vhd_locator){ .data_space = 1000 }), 0);
}
END_TEST

START_TEST(test_paths)
{
	char out[256];

	ck_assert_int_eq(vhd_relative_path("/a/b/c.vhd", "/a/d/e.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "../d/e.vhd");
	ck_assert_int_eq(vhd_relative_path("/a/b/c.vhd", "/a/b/p.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "p.vhd");
	ck_assert_int_eq(vhd_relative_path("/x/y/z/c.vhd", "/p.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "../../../p.vhd");
	ck_assert_int_eq(vhd_relative_path("/a/bc/c.vhd", "/a/b/p.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "../b/p.vhd");
	ck_assert_int_eq(vhd_relative_path("rel", "/a", out, sizeof(out)), -EINVAL);
	ck_assert_int_eq(vhd_parent_join("/a/b/c.vhd", "./p.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "/a/b/p.vhd");
	ck_assert_int_eq(vhd_parent_join("/a/b/c.vhd", "/z/p.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "/z/p.vhd");
	ck_assert_int_eq(vhd_parent_join("c.vhd", "../p.vhd", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "../p.vhd");
	ck_assert_int_eq(vhd_parent_join("/a/c.vhd", "p.vhd", out, 5), -ENAMETOOLONG);
}
END_TEST

START_TEST(test_batmap)
{
	struct vhd_footer f;
	struct vhd_header h;
	struct vhd_layout l;
	struct vhd_batmap bm;
	struct errbuf eb = { "" };
	uint8_t sec[512] = "tdbatmap", map[512] = { 0x80 };
	uint32_t sum = 0;

	ck_assert_int_eq(vhd_init_new(&f, &h, VHD_TYPE_DYNAMIC, 64 << 20, 2 << 20, 0, uuid_a, 1,
				      &eb), 0);
	ck_assert_int_eq(vhd_layout_init(&l, &f, &h, 1 << 20, &eb), 0);
	ck_assert_uint_eq(vhd_batmap_header_offset(&l), 2048);
	for (int i = 0; i < 512; i++)
		sum += map[i];
	sum = ~sum;
	sec[8 + 6] = 0x0a;	/* map offset 2560 = 0xa00, big-endian u64 at 8 */
	sec[19] = 1;		/* size: 1 sector */
	sec[21] = 1, sec[23] = 2;	/* version 1.2 */
	sec[24] = (uint8_t)(sum >> 24), sec[25] = (uint8_t)(sum >> 16);
	sec[26] = (uint8_t)(sum >> 8), sec[27] = (uint8_t)sum;
	ck_assert_int_eq(vhd_batmap_decode(sec, &l, 1 << 20, &bm, &eb), 0);
	ck_assert_uint_eq(bm.offset, 2560);
	ck_assert_uint_eq(bm.size, 1);
	ck_assert_int_eq(vhd_batmap_verify(&bm, map, &eb), 0);
	ck_assert(vhd_bit_test(map, 0));
	map[3] = 1;
	ck_assert_int_eq(vhd_batmap_verify(&bm, map, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad batmap checksum");
	sec[0] = 'x';
	ck_assert_int_eq(vhd_batmap_decode(sec, &l, 1 << 20, &bm, &eb), -ENOENT);
}
END_TEST

START_TEST(test_meta_load)
{
	struct vhd_footer f;
	struct vhd_header h;
	struct vhd_meta m;
	struct errbuf eb = { "" };
	struct memfile mf = make_dynamic(&f, &h);

	ck_assert_int_eq(vhd_meta_load(&m, mem_pread, &mf, mf.len, NULL, NULL, &eb), 0);
	ck_assert_uint_eq(m.layout.size, 8 << 20);
	ck_assert_uint_eq(m.bat[1], 4);
	ck_assert_uint_eq(m.bat[0], VHD_BAT_UNUSED);
	ck_assert(!m.footer_from_copy && !m.copies_differ && !m.has_batmap);
	ck_assert_uint_eq(vhd_data_end(&m.layout, m.bat), mf.len - 512);
	vhd_meta_free(&m);

	/* Damaged end footer: the copy at 0 is used and that is reported. */
	mf.buf[mf.len - 512 + 64] ^= 0xff;
	reported = 0;
	ck_assert_int_eq(vhd_meta_load(&m, mem_pread, &mf, mf.len, count_report, NULL, &eb), 0);
	ck_assert(m.footer_from_copy);
	ck_assert_uint_eq(reported, 1);
	vhd_meta_free(&m);

	/* Both damaged, each its own way (the copy's cookie): refused with
	 * the end footer's reason. */
	mf.buf[0] ^= 0xff;
	ck_assert_int_eq(vhd_meta_load(&m, mem_pread, &mf, mf.len, NULL, NULL, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "bad footer checksum");
	mf.buf[0] ^= 0xff;
	mf.buf[mf.len - 512 + 64] ^= 0xff;

	/* A BAT entry past the end of the file. */
	eb.msg[0] = '\0';
	mf.buf[1536 + 8] = 0x7f;
	ck_assert_int_eq(vhd_meta_load(&m, mem_pread, &mf, mf.len, NULL, NULL, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "BAT entry 2 points past the end of file");

	/* Truncated to 1 KiB: where the end footer should be is the
	 * header's "cxsparse". */
	eb.msg[0] = '\0';
	ck_assert_int_eq(vhd_meta_load(&m, mem_pread, &mf, 1024, NULL, NULL, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "cookie");
	free(mf.buf);
}
END_TEST

START_TEST(test_parent_match)
{
	struct vhd_meta child = { 0 };
	struct vhd_footer parent = { 0 };
	struct errbuf eb = { "" };

	memcpy(child.header.parent_uuid, uuid_a, 16);
	child.header.parent_timestamp = 5;
	memcpy(parent.uuid, uuid_a, 16);
	parent.timestamp = 5;
	ck_assert_int_eq(vhd_parent_match(&child, &parent, &eb), 0);
	parent.timestamp = 6;
	ck_assert_int_eq(vhd_parent_match(&child, &parent, &eb), -ESTALE);
	ck_assert_msg_has(&eb, "parent timestamp mismatch");
	eb.msg[0] = '\0';
	parent.uuid[15] = 0;
	ck_assert_int_eq(vhd_parent_match(&child, &parent, &eb), -EINVAL);
	ck_assert_msg_has(&eb, "parent UUID mismatch: the child expects "
			  "01020304-0506-0708-090a-0b0c0d0e0f10, the parent is "
			  "01020304-0506-0708-090a-0b0c0d0e0f00");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("vhd-format");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_footer_round_trip);
	tcase_add_test(tc, test_footer_refusals);
	tcase_add_test(tc, test_header_round_trip);
	tcase_add_test(tc, test_layout_refusals);
	tcase_add_test(tc, test_bat_validation);
	tcase_add_test(tc, test_bat_reports_every_problem);
	tcase_add_test(tc, test_bitmaps);
	tcase_add_test(tc, test_geometry_and_time);
	tcase_add_test(tc, test_utf16);
	tcase_add_test(tc, test_locators);
	tcase_add_test(tc, test_paths);
	tcase_add_test(tc, test_batmap);
	tcase_add_test(tc, test_meta_load);
	tcase_add_test(tc, test_parent_match);
	return check_run(s, tc);
}
