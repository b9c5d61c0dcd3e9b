/* Unit tests for the NBD wire format: handshake and option parsing, request
 * header parsing and classification (bad magic, oversized lengths, unknown
 * commands, read-only exports), meta contexts, simple and structured reply
 * encoding, sparse read planning and errno mapping. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check-run.h"
#include "drivers/driver.h"
#include "formats/nbd/proto.h"

#define MAX_LEN (32u << 20)
#define SIZE (64ull << 20)
#define BASE_FLAGS                                                                 \
	(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE |         \
	 NBD_FLAG_CAN_MULTI_CONN)
#define RW_FLAGS \
	(BASE_FLAGS | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES)

static void make_request(unsigned char *b, uint32_t magic, uint16_t flags, uint16_t type,
			 uint64_t cookie, uint64_t off, uint32_t len)
{
	put_be32(b, magic);
	put_be16(b + 4, flags);
	put_be16(b + 6, type);
	put_be64(b + 8, cookie);
	put_be64(b + 16, off);
	put_be32(b + 24, len);
}

/* Build GO/INFO data: name, then n info requests. Returns its length. */
static uint32_t make_go(unsigned char *b, const char *name, uint32_t name_len, const uint16_t *info,
			uint16_t n)
{
	put_be32(b, name_len);
	memcpy(b + 4, name, name_len);
	put_be16(b + 4 + name_len, n);
	for (uint16_t i = 0; i < n; i++)
		put_be16(b + 6 + name_len + 2 * i, info[i]);
	return 6 + name_len + 2u * n;
}

START_TEST(test_endian)
{
	unsigned char b[8];

	put_be64(b, 0x0102030405060708ull);
	ck_assert_int_eq(b[0], 1);
	ck_assert_int_eq(b[7], 8);
	ck_assert_uint_eq(get_be64(b), 0x0102030405060708ull);
	put_be32(b, 0xdeadbeef);
	ck_assert_uint_eq(get_be32(b), 0xdeadbeef);
	put_be16(b, 0xfffe);
	ck_assert_uint_eq(get_be16(b), 0xfffe);
}
END_TEST

START_TEST(test_greeting)
{
	unsigned char b[NBD_GREETING_LEN];

	ck_assert_uint_eq(nbd_encode_greeting(b), 18);
	ck_assert(memcmp(b, "NBDMAGICIHAVEOPT", 16) == 0);
	ck_assert_uint_eq(get_be16(b + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}
END_TEST

START_TEST(test_client_flags)
{
	unsigned char b[4];
	bool nz = true;

	put_be32(b, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), 0);
	ck_assert(!nz);
	put_be32(b, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), 0);
	ck_assert(nz);
	/* Unknown bits: the protocol requires a disconnect. */
	put_be32(b, NBD_FLAG_C_FIXED_NEWSTYLE | 4);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), -EPROTO);
	memcpy(b, "GARB", 4);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), -EPROTO);
}
END_TEST

START_TEST(test_opt_hdr)
{
	unsigned char b[NBD_OPT_HDR_LEN];
	struct nbd_opt_hdr h;

	put_be64(b, NBD_IHAVEOPT);
	put_be32(b + 8, NBD_OPT_GO);
	put_be32(b + 12, 42);
	ck_assert_int_eq(nbd_parse_opt_hdr(b, &h), 0);
	ck_assert_uint_eq(h.opt, NBD_OPT_GO);
	ck_assert_uint_eq(h.len, 42);
	b[3] ^= 1;
	ck_assert_int_eq(nbd_parse_opt_hdr(b, &h), -EBADMSG);
	memset(b, 0xff, sizeof(b));
	ck_assert_int_eq(nbd_parse_opt_hdr(b, &h), -EBADMSG);
}
END_TEST

START_TEST(test_opt_go)
{
	unsigned char b[256];
	uint16_t info[] = {NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME};
	struct nbd_opt_go go;
	uint32_t len;

	len = make_go(b, "disk0", 5, info, 2);
	ck_assert_int_eq(nbd_parse_opt_go(b, len, &go), 0);
	ck_assert_uint_eq(go.name_len, 5);
	ck_assert(memcmp(go.name, "disk0", 5) == 0);
	ck_assert_uint_eq(go.n_info, 2);
	ck_assert(nbd_opt_go_wants(&go, NBD_INFO_BLOCK_SIZE));
	ck_assert(nbd_opt_go_wants(&go, NBD_INFO_NAME));
	ck_assert(!nbd_opt_go_wants(&go, NBD_INFO_DESCRIPTION));

	/* Empty name (the default export) and no info requests. */
	len = make_go(b, "", 0, NULL, 0);
	ck_assert_int_eq(len, 6);
	ck_assert_int_eq(nbd_parse_opt_go(b, len, &go), 0);
	ck_assert_uint_eq(go.name_len, 0);

	/* Truncated: the lengths inside must add up exactly. */
	len = make_go(b, "disk0", 5, info, 2);
	ck_assert_int_eq(nbd_parse_opt_go(b, len - 1, &go), -EINVAL);
	ck_assert_int_eq(nbd_parse_opt_go(b, len + 1, &go), -EINVAL);
	ck_assert_int_eq(nbd_parse_opt_go(b, 3, &go), -EINVAL);
	ck_assert_int_eq(nbd_parse_opt_go(b, 0, &go), -EINVAL);
	/* A name length that would wrap a 32-bit sum. */
	put_be32(b, 0xfffffffe);
	ck_assert_int_eq(nbd_parse_opt_go(b, len, &go), -EINVAL);
	/* NUL inside the name. */
	len = make_go(b, "di\0k", 4, NULL, 0);
	ck_assert_int_eq(nbd_parse_opt_go(b, len, &go), -EINVAL);
}
END_TEST

START_TEST(test_name_valid)
{
	static char big[NBD_NAME_MAX + 1];

	memset(big, 'a', sizeof(big));
	ck_assert(nbd_name_valid("tap0", 4));
	ck_assert(nbd_name_valid(big, NBD_NAME_MAX));
	ck_assert(!nbd_name_valid(big, NBD_NAME_MAX + 1));
	ck_assert(!nbd_name_valid("a\0b", 3));
}
END_TEST

START_TEST(test_opt_replies)
{
	unsigned char b[256];
	size_t n;

	n = nbd_encode_opt_reply(b, NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, 0);
	ck_assert_uint_eq(n, 20);
	ck_assert_uint_eq(get_be64(b), NBD_REP_MAGIC);
	ck_assert_uint_eq(get_be32(b + 8), NBD_OPT_STARTTLS);
	ck_assert_uint_eq(get_be32(b + 12), 0x80000001u);
	ck_assert_uint_eq(get_be32(b + 16), 0);
	ck_assert_uint_eq(NBD_REP_ERR_UNKNOWN, 0x80000006u);
	ck_assert_uint_eq(NBD_REP_ERR_INVALID, 0x80000003u);

	n = nbd_encode_rep_server(b, "disk0", 5);
	ck_assert_uint_eq(n, 29);
	ck_assert_uint_eq(get_be32(b + 8), NBD_OPT_LIST);
	ck_assert_uint_eq(get_be32(b + 12), NBD_REP_SERVER);
	ck_assert_uint_eq(get_be32(b + 16), 9);
	ck_assert_uint_eq(get_be32(b + 20), 5);
	ck_assert(memcmp(b + 24, "disk0", 5) == 0);

	n = nbd_encode_info_export(b, NBD_OPT_GO, SIZE, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
	ck_assert_uint_eq(n, NBD_INFO_EXPORT_LEN);
	ck_assert_uint_eq(get_be32(b + 12), NBD_REP_INFO);
	ck_assert_uint_eq(get_be32(b + 16), 12);
	ck_assert_uint_eq(get_be16(b + 20), NBD_INFO_EXPORT);
	ck_assert_uint_eq(get_be64(b + 22), SIZE);
	ck_assert_uint_eq(get_be16(b + 30), 3);

	n = nbd_encode_info_block_size(b, NBD_OPT_INFO, 1, 4096, MAX_LEN);
	ck_assert_uint_eq(n, NBD_INFO_BLOCK_SIZE_LEN);
	ck_assert_uint_eq(get_be32(b + 8), NBD_OPT_INFO);
	ck_assert_uint_eq(get_be16(b + 20), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(get_be32(b + 22), 1);
	ck_assert_uint_eq(get_be32(b + 26), 4096);
	ck_assert_uint_eq(get_be32(b + 30), MAX_LEN);
}
END_TEST

START_TEST(test_export_name_reply)
{
	unsigned char b[NBD_EXPORT_NAME_REPLY_LEN];

	memset(b, 0xaa, sizeof(b));
	ck_assert_uint_eq(nbd_encode_export_name_reply(b, SIZE, 1, true), 10);
	ck_assert_uint_eq(get_be64(b), SIZE);
	ck_assert_uint_eq(get_be16(b + 8), 1);
	ck_assert_int_eq(b[10], 0xaa);
	ck_assert_uint_eq(nbd_encode_export_name_reply(b, SIZE, 1, false), 134);
	for (int i = 10; i < 134; i++)
		ck_assert_int_eq(b[i], 0);
}
END_TEST

START_TEST(test_tx_flags)
{
	struct nbd_caps caps = {0};

	ck_assert_uint_eq(nbd_tx_flags(&caps), RW_FLAGS);
	caps.fast_zero = true;
	ck_assert_uint_eq(nbd_tx_flags(&caps), RW_FLAGS | NBD_FLAG_SEND_FAST_ZERO);
	/* DF only once structured replies are on. */
	caps.structured = true;
	ck_assert_uint_eq(nbd_tx_flags(&caps),
			  RW_FLAGS | NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_SEND_DF);
	/* Read-only: nothing write-like is offered. */
	caps.read_only = true;
	ck_assert_uint_eq(nbd_tx_flags(&caps), BASE_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_DF);
	caps.structured = false;
	ck_assert_uint_eq(nbd_tx_flags(&caps), BASE_FLAGS | NBD_FLAG_READ_ONLY);
}
END_TEST

START_TEST(test_request_parse)
{
	unsigned char b[NBD_REQUEST_LEN];
	struct nbd_request r;

	make_request(b, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0x1122334455667788ull,
		     1ull << 40, 4096);
	ck_assert_int_eq(nbd_parse_request(b, &r), 0);
	ck_assert_uint_eq(r.flags, NBD_CMD_FLAG_FUA);
	ck_assert_uint_eq(r.type, NBD_CMD_WRITE);
	ck_assert_uint_eq(r.cookie, 0x1122334455667788ull);
	ck_assert_uint_eq(r.off, 1ull << 40);
	ck_assert_uint_eq(r.len, 4096);

	/* Bad magic: the reply magic, garbage, zeroes. */
	make_request(b, NBD_SIMPLE_REPLY_MAGIC, 0, NBD_CMD_READ, 1, 0, 512);
	ck_assert_int_eq(nbd_parse_request(b, &r), -EBADMSG);
	memset(b, 0, sizeof(b));
	ck_assert_int_eq(nbd_parse_request(b, &r), -EBADMSG);
	memcpy(b, "GET / HTTP/1.0\r\n\r\n", 18);
	ck_assert_int_eq(nbd_parse_request(b, &r), -EBADMSG);
}
END_TEST

static bool meta_on;

static enum nbd_action classify(uint16_t flags, uint16_t type, uint64_t off, uint32_t len,
				uint16_t tx, uint32_t *err)
{
	unsigned char b[NBD_REQUEST_LEN];
	struct nbd_request r;
	struct nbd_export_view x = {.tx_flags = tx, .size = SIZE, .max_len = MAX_LEN,
				    .meta = meta_on};

	make_request(b, NBD_REQUEST_MAGIC, flags, type, 7, off, len);
	ck_assert_int_eq(nbd_parse_request(b, &r), 0);
	return nbd_classify(&r, &x, err);
}

START_TEST(test_classify_ok)
{
	uint32_t err = 99;

	ck_assert_int_eq(classify(0, NBD_CMD_READ, 0, 4096, RW_FLAGS, &err), NBD_ACT_READ);
	ck_assert_uint_eq(err, 0);
	ck_assert_int_eq(classify(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1000, 3000, RW_FLAGS, &err),
			 NBD_ACT_WRITE);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, 0, MAX_LEN, RW_FLAGS, &err), NBD_ACT_WRITE);
	ck_assert_int_eq(classify(0, NBD_CMD_FLUSH, 0, 0, RW_FLAGS, &err), NBD_ACT_SUBMIT);
	ck_assert_int_eq(classify(0, NBD_CMD_DISC, 0, 0, RW_FLAGS, &err), NBD_ACT_DISC);
	/* Range checks belong to the tap: past the end still goes there. */
	ck_assert_int_eq(classify(0, NBD_CMD_READ, SIZE, 512, RW_FLAGS, &err), NBD_ACT_READ);
}
END_TEST

START_TEST(test_classify_oversized)
{
	uint32_t err;

	/* A read too long: error reply, nothing to skip. */
	ck_assert_int_eq(classify(0, NBD_CMD_READ, 0, MAX_LEN + 1, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_READ, 0, 0xffffffffu, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* A write too long cannot be buffered: hang up. */
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, 0, MAX_LEN + 1, RW_FLAGS, &err),
			 NBD_ACT_HANGUP);
	ck_assert_int_eq(
		classify(0, NBD_CMD_WRITE, 0, 0xffffffffu, RW_FLAGS | NBD_FLAG_READ_ONLY, &err),
		NBD_ACT_HANGUP);
	/* Offset + length wrapping around 2^64. */
	ck_assert_int_eq(classify(0, NBD_CMD_READ, UINT64_MAX - 10, 4096, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, UINT64_MAX - 10, 4096, RW_FLAGS, &err),
			 NBD_ACT_DISCARD);
	ck_assert_uint_eq(err, NBD_EINVAL);
}
END_TEST

START_TEST(test_classify_unknown)
{
	uint32_t err;

	ck_assert_int_eq(classify(0, 99, 0, 4096, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, 0xffff, 0, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* RESIZE (8) is not offered. */
	ck_assert_int_eq(classify(0, 8, 0, 4096, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* Unknown flags: reply EINVAL, and a write's payload is skipped. */
	ck_assert_int_eq(classify(1u << 7, NBD_CMD_READ, 0, 512, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(1u << 1, NBD_CMD_WRITE, 0, 512, RW_FLAGS, &err), NBD_ACT_DISCARD);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(1u << 2, NBD_CMD_FLUSH, 0, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* Flags of other commands. */
	ck_assert_int_eq(classify(NBD_CMD_FLAG_NO_HOLE, NBD_CMD_TRIM, 0, 512, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_READ, 0, 512, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* DF is only valid once offered (with structured replies). */
	ck_assert_int_eq(classify(NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512,
				  RW_FLAGS | NBD_FLAG_SEND_DF, &err),
			 NBD_ACT_READ);
}
END_TEST

START_TEST(test_classify_new_commands)
{
	uint32_t err;
	uint16_t zf = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;

	ck_assert_int_eq(classify(NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 0, 4096, RW_FLAGS, &err),
			 NBD_ACT_SUBMIT);
	/* TRIM and WRITE_ZEROES have no payload: any length up to 4G. */
	ck_assert_int_eq(classify(0, NBD_CMD_TRIM, 0, 0xffffffffu, RW_FLAGS, &err),
			 NBD_ACT_SUBMIT);
	ck_assert_int_eq(classify(zf, NBD_CMD_WRITE_ZEROES, 1000, 5000, RW_FLAGS, &err),
			 NBD_ACT_SUBMIT);
	ck_assert_int_eq(classify(0, NBD_CMD_CACHE, 0, 1 << 20, RW_FLAGS, &err), NBD_ACT_SUBMIT);
	ck_assert_int_eq(classify(0, NBD_CMD_TRIM, UINT64_MAX - 10, 4096, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* Zero length: a no-op at or before the end. */
	ck_assert_int_eq(classify(0, NBD_CMD_TRIM, SIZE, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, 0);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE_ZEROES, SIZE + 1, 0, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_ENOSPC);
	ck_assert_int_eq(classify(0, NBD_CMD_CACHE, SIZE + 1, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
}
END_TEST

START_TEST(test_classify_block_status)
{
	uint32_t err;

	/* No context selected: EINVAL. */
	meta_on = false;
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, 0, 4096, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	meta_on = true;
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, 0, 4096, RW_FLAGS, &err),
			 NBD_ACT_BLOCK_STATUS);
	ck_assert_int_eq(classify(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, SIZE - 1, 1,
				  RW_FLAGS, &err),
			 NBD_ACT_BLOCK_STATUS);
	/* Longer than a READ may be. */
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, 0, (uint32_t)SIZE, RW_FLAGS, &err),
			 NBD_ACT_BLOCK_STATUS);
	/* Past the end, zero length, wrapping, bad flags: EINVAL. */
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, SIZE - 1, 2, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, SIZE, 1, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, 0, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_BLOCK_STATUS, UINT64_MAX, 2, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(NBD_CMD_FLAG_DF, NBD_CMD_BLOCK_STATUS, 0, 1, RW_FLAGS, &err),
			 NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	meta_on = false;
}
END_TEST

START_TEST(test_classify_read_only)
{
	uint32_t err;
	uint16_t ro = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY;

	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, 0, 4096, ro, &err), NBD_ACT_DISCARD);
	ck_assert_uint_eq(err, NBD_EPERM);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, 0, 0, ro, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EPERM);
	ck_assert_int_eq(classify(0, NBD_CMD_READ, 0, 4096, ro, &err), NBD_ACT_READ);
	/* Trim and zeroes write too; cache does not. */
	ck_assert_int_eq(classify(0, NBD_CMD_TRIM, 0, 4096, ro, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EPERM);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE_ZEROES, 0, 4096, ro, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EPERM);
	ck_assert_int_eq(classify(0, NBD_CMD_CACHE, 0, 4096, ro, &err), NBD_ACT_SUBMIT);
}
END_TEST

START_TEST(test_classify_zero_length)
{
	uint32_t err;

	ck_assert_int_eq(classify(0, NBD_CMD_READ, 512, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, 0);
	ck_assert_int_eq(classify(0, NBD_CMD_READ, SIZE, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, 0);
	ck_assert_int_eq(classify(0, NBD_CMD_READ, SIZE + 1, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, SIZE + 1, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_ENOSPC);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, 0, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, 0);
}
END_TEST

/* Truncated input: a stream cut anywhere parses only once whole, which the
 * server enforces by never parsing fewer than the fixed lengths. Here we
 * check that what a truncated stream leaves in the buffer (zeroes after
 * the cut) is never mistaken for a valid message. */
START_TEST(test_truncated)
{
	unsigned char full[NBD_REQUEST_LEN], b[NBD_REQUEST_LEN];
	struct nbd_request r;
	struct nbd_opt_go go;
	unsigned char g[64];
	uint32_t len;

	make_request(full, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1, 0, 512);
	for (size_t cut = 0; cut < 4; cut++) {
		memset(b, 0, sizeof(b));
		memcpy(b, full, cut);
		ck_assert_int_eq(nbd_parse_request(b, &r), -EBADMSG);
	}
	len = make_go(g, "tap0", 4, NULL, 0);
	for (uint32_t cut = 0; cut < len; cut++)
		ck_assert_int_eq(nbd_parse_opt_go(g, cut, &go), -EINVAL);
	ck_assert_int_eq(nbd_parse_opt_go(g, len, &go), 0);
}
END_TEST

START_TEST(test_simple_reply)
{
	unsigned char b[NBD_SIMPLE_REPLY_LEN];

	ck_assert_uint_eq(nbd_encode_simple_reply(b, NBD_ENOSPC, 0xabcdefull), 16);
	ck_assert_uint_eq(get_be32(b), NBD_SIMPLE_REPLY_MAGIC);
	ck_assert_uint_eq(get_be32(b + 4), 28);
	ck_assert_uint_eq(get_be64(b + 8), 0xabcdefull);
}
END_TEST

START_TEST(test_errno_map)
{
	ck_assert_uint_eq(nbd_errno_to_nbd(0), 0);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EPERM), NBD_EPERM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EROFS), NBD_EPERM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EIO), NBD_EIO);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOMEM), NBD_ENOMEM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EINVAL), NBD_EINVAL);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOSPC), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EDQUOT), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EOVERFLOW), NBD_EOVERFLOW);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ESHUTDOWN), NBD_ESHUTDOWN);
	ck_assert_uint_eq(nbd_errno_to_nbd(ENOSPC), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EBADF), NBD_EIO);
	ck_assert_uint_eq(nbd_errno_to_nbd(-12345), NBD_EIO);
}
END_TEST

/* LIST/SET_META_CONTEXT data: name, then n queries. */
static uint32_t make_meta(unsigned char *b, const char *name, const char **q, uint32_t n)
{
	uint32_t len = 0, l = (uint32_t)strlen(name);

	put_be32(b, l);
	memcpy(b + 4, name, l);
	len = 4 + l;
	put_be32(b + len, n);
	len += 4;
	for (uint32_t i = 0; i < n; i++) {
		l = (uint32_t)strlen(q[i]);
		put_be32(b + len, l);
		memcpy(b + len + 4, q[i], l);
		len += 4 + l;
	}
	return len;
}

START_TEST(test_opt_meta)
{
	unsigned char b[512];
	struct nbd_opt_meta m;
	const char *base[] = {"base:allocation"};
	const char *ns[] = {"base:"};
	const char *unknown[] = {"qemu:dirty-bitmap:x", "base:nope", "garbage"};
	const char *mixed[] = {"x-foo:bar", "base:allocation"};
	uint32_t len;

	len = make_meta(b, "tap0", base, 1);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), 0);
	ck_assert_uint_eq(m.name_len, 4);
	ck_assert(memcmp(m.name, "tap0", 4) == 0);
	ck_assert_uint_eq(m.n_queries, 1);
	ck_assert(nbd_meta_selects_base(&m, false));
	ck_assert(nbd_meta_selects_base(&m, true));

	/* No query: LIST shows everything, SET selects nothing. */
	len = make_meta(b, "tap0", NULL, 0);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), 0);
	ck_assert(nbd_meta_selects_base(&m, true));
	ck_assert(!nbd_meta_selects_base(&m, false));

	/* A namespace alone lists its contexts. */
	len = make_meta(b, "tap0", ns, 1);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), 0);
	ck_assert(nbd_meta_selects_base(&m, true));
	ck_assert(!nbd_meta_selects_base(&m, false));

	len = make_meta(b, "", unknown, 3);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), 0);
	ck_assert(!nbd_meta_selects_base(&m, true));
	ck_assert(!nbd_meta_selects_base(&m, false));

	len = make_meta(b, "tap0", mixed, 2);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), 0);
	ck_assert(nbd_meta_selects_base(&m, false));

	/* Every truncation, and extra bytes, are malformed. */
	for (uint32_t cut = 0; cut < len; cut++)
		ck_assert_int_eq(nbd_parse_opt_meta(b, cut, &m), -EINVAL);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len + 1, &m), -EINVAL);
	/* A query count far beyond the data. */
	len = make_meta(b, "tap0", base, 1);
	put_be32(b + 8, 0xffffffffu);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), -EINVAL);
	/* A query length that would wrap. */
	len = make_meta(b, "tap0", base, 1);
	put_be32(b + 12, 0xfffffffcu);
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), -EINVAL);
	/* NUL in a query. */
	len = make_meta(b, "tap0", base, 1);
	b[20] = '\0';
	ck_assert_int_eq(nbd_parse_opt_meta(b, len, &m), -EINVAL);
}
END_TEST

START_TEST(test_info_and_meta_replies)
{
	unsigned char b[256];
	size_t n;

	n = nbd_encode_info_string(b, NBD_OPT_GO, NBD_INFO_NAME, "tap0", 4);
	ck_assert_uint_eq(n, 26);
	ck_assert_uint_eq(get_be32(b + 12), NBD_REP_INFO);
	ck_assert_uint_eq(get_be32(b + 16), 6);
	ck_assert_uint_eq(get_be16(b + 20), NBD_INFO_NAME);
	ck_assert(memcmp(b + 22, "tap0", 4) == 0);

	n = nbd_encode_meta_context(b, NBD_OPT_SET_META_CONTEXT, NBD_CONTEXT_ID_BASE,
				    NBD_CONTEXT_BASE_ALLOCATION);
	ck_assert_uint_eq(n, 20 + 4 + 15);
	ck_assert_uint_eq(get_be32(b + 8), 10);
	ck_assert_uint_eq(get_be32(b + 12), NBD_REP_META_CONTEXT);
	ck_assert_uint_eq(get_be32(b + 16), 19);
	ck_assert_uint_eq(get_be32(b + 20), NBD_CONTEXT_ID_BASE);
	ck_assert(memcmp(b + 24, "base:allocation", 15) == 0);
}
END_TEST

START_TEST(test_chunks)
{
	unsigned char b[64];

	ck_assert_uint_eq(nbd_encode_chunk_data(b, NBD_REPLY_FLAG_DONE, 9, 4096, 512),
			  NBD_CHUNK_DATA_HDR_LEN);
	ck_assert_uint_eq(get_be32(b), 0x668e33efu);
	ck_assert_uint_eq(get_be16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get_be16(b + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	ck_assert_uint_eq(get_be64(b + 8), 9);
	ck_assert_uint_eq(get_be32(b + 16), 8 + 512);
	ck_assert_uint_eq(get_be64(b + 20), 4096);

	ck_assert_uint_eq(nbd_encode_chunk_hole(b, 0, 9, 8192, 65536), NBD_CHUNK_HOLE_LEN);
	ck_assert_uint_eq(get_be16(b + 4), 0);
	ck_assert_uint_eq(get_be16(b + 6), NBD_REPLY_TYPE_OFFSET_HOLE);
	ck_assert_uint_eq(get_be32(b + 16), 12);
	ck_assert_uint_eq(get_be64(b + 20), 8192);
	ck_assert_uint_eq(get_be32(b + 28), 65536);

	ck_assert_uint_eq(nbd_encode_chunk_error(b, 9, NBD_EIO), NBD_CHUNK_ERROR_LEN);
	ck_assert_uint_eq(get_be16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get_be16(b + 6), 32769);
	ck_assert_uint_eq(get_be32(b + 16), 6);
	ck_assert_uint_eq(get_be32(b + 20), NBD_EIO);
	ck_assert_uint_eq(get_be16(b + 24), 0);

	ck_assert_uint_eq(nbd_encode_chunk_none(b, 9), NBD_CHUNK_HDR_LEN);
	ck_assert_uint_eq(get_be16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get_be16(b + 6), NBD_REPLY_TYPE_NONE);
	ck_assert_uint_eq(get_be32(b + 16), 0);
}
END_TEST

START_TEST(test_block_status)
{
	unsigned char b[NBD_CHUNK_BS_HDR_LEN + 8 * NBD_BS_DESC_LEN];
	const unsigned char *d = b + NBD_CHUNK_BS_HDR_LEN;
	struct image_extent ext[] = {
		{4096, 0},
		{4096, 0},			     /* merged with the first */
		{0, IMAGE_EXT_HOLE},		     /* empty: skipped */
		{8192, IMAGE_EXT_HOLE | IMAGE_EXT_ZERO},
		{4096, IMAGE_EXT_ZERO},
		{1 << 20, 0},			     /* clipped to the request */
	};
	size_t n;

	n = nbd_encode_block_status(b, 5, NBD_CONTEXT_ID_BASE, ext, 6, 20480 + 100, false);
	ck_assert_uint_eq(n, NBD_CHUNK_BS_HDR_LEN + 4 * NBD_BS_DESC_LEN);
	ck_assert_uint_eq(get_be16(b + 4), NBD_REPLY_FLAG_DONE);
	ck_assert_uint_eq(get_be16(b + 6), NBD_REPLY_TYPE_BLOCK_STATUS);
	ck_assert_uint_eq(get_be64(b + 8), 5);
	ck_assert_uint_eq(get_be32(b + 16), 4 + 4 * 8);
	ck_assert_uint_eq(get_be32(b + 20), NBD_CONTEXT_ID_BASE);
	ck_assert_uint_eq(get_be32(d), 8192);
	ck_assert_uint_eq(get_be32(d + 4), 0);
	ck_assert_uint_eq(get_be32(d + 8), 8192);
	ck_assert_uint_eq(get_be32(d + 12), NBD_STATE_HOLE | NBD_STATE_ZERO);
	ck_assert_uint_eq(get_be32(d + 16), 4096);
	ck_assert_uint_eq(get_be32(d + 20), NBD_STATE_ZERO);
	ck_assert_uint_eq(get_be32(d + 24), 100);
	ck_assert_uint_eq(get_be32(d + 28), 0);

	/* REQ_ONE: one descriptor (merged runs still count as one). */
	n = nbd_encode_block_status(b, 5, 1, ext, 6, 1 << 30, true);
	ck_assert_uint_eq(n, NBD_CHUNK_BS_HDR_LEN + NBD_BS_DESC_LEN);
	ck_assert_uint_eq(get_be32(d), 8192);

	/* Clipped inside the first extent. */
	n = nbd_encode_block_status(b, 5, 1, ext, 6, 1000, false);
	ck_assert_uint_eq(n, NBD_CHUNK_BS_HDR_LEN + NBD_BS_DESC_LEN);
	ck_assert_uint_eq(get_be32(d), 1000);

	/* Nothing to describe. */
	ck_assert_uint_eq(nbd_encode_block_status(b, 5, 1, ext, 0, 4096, false), 0);
	ck_assert_uint_eq(nbd_encode_block_status(b, 5, 1, ext + 2, 1, 4096, false), 0);
}
END_TEST

static uint32_t pieces_total(const struct nbd_piece *p, unsigned n)
{
	uint32_t t = 0;

	for (unsigned i = 0; i < n; i++) {
		ck_assert_uint_gt(p[i].len, 0);
		if (i)
			ck_assert(p[i].hole != p[i - 1].hole);
		t += p[i].len;
	}
	return t;
}

START_TEST(test_plan_read)
{
	struct image_extent ext[40];
	struct nbd_piece p[16];
	unsigned n;

	/* All zeros: one hole. HOLE without ZERO is data. */
	ext[0] = (struct image_extent){1 << 20, IMAGE_EXT_HOLE | IMAGE_EXT_ZERO};
	n = nbd_plan_read(ext, 1, 65536, p, 16);
	ck_assert_uint_eq(n, 1);
	ck_assert(p[0].hole);
	ck_assert_uint_eq(p[0].len, 65536);
	ext[0].flags = IMAGE_EXT_HOLE;
	n = nbd_plan_read(ext, 1, 65536, p, 16);
	ck_assert_uint_eq(n, 1);
	ck_assert(!p[0].hole);

	/* Data, hole, data; the tap answered for less than asked: the rest
	 * is data, merged into the last data piece. */
	ext[0] = (struct image_extent){4096, 0};
	ext[1] = (struct image_extent){8192, IMAGE_EXT_ZERO};
	ext[2] = (struct image_extent){4096, 0};
	n = nbd_plan_read(ext, 3, 65536, p, 16);
	ck_assert_uint_eq(n, 3);
	ck_assert(!p[0].hole && p[1].hole && !p[2].hole);
	ck_assert_uint_eq(p[2].len, 65536 - 12288);
	ck_assert_uint_eq(pieces_total(p, n), 65536);

	/* Ends in a hole short of len: a data piece follows. */
	n = nbd_plan_read(ext, 2, 65536, p, 16);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(p[2].len, 65536 - 12288);
	ck_assert(!p[2].hole);

	/* Alternating runs beyond max: the tail becomes one data piece. */
	for (int i = 0; i < 40; i++)
		ext[i] = (struct image_extent){4096, i % 2 ? IMAGE_EXT_ZERO : 0};
	n = nbd_plan_read(ext, 40, 40 * 4096, p, 16);
	ck_assert_uint_le(n, 16);
	ck_assert_uint_eq(pieces_total(p, n), 40 * 4096);
	ck_assert(!p[n - 1].hole);
	/* max 1: everything is data. */
	n = nbd_plan_read(ext + 1, 39, 39 * 4096, p, 1);
	ck_assert_uint_eq(n, 1);
	ck_assert(!p[0].hole);
	ck_assert_uint_eq(p[0].len, 39 * 4096);
	/* Extents longer than the read are clipped. */
	ext[0] = (struct image_extent){1ull << 40, IMAGE_EXT_ZERO};
	n = nbd_plan_read(ext, 1, 70000, p, 16);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(p[0].len, 70000);
	ck_assert_uint_eq(nbd_plan_read(ext, 0, 0, p, 16), 0);
	/* No extents at all: data. */
	n = nbd_plan_read(ext, 0, 4096, p, 16);
	ck_assert_uint_eq(n, 1);
	ck_assert(!p[0].hole);
}
END_TEST

START_TEST(test_names)
{
	ck_assert_str_eq(nbd_opt_name(NBD_OPT_GO), "GO");
	ck_assert_str_eq(nbd_opt_name(1234), "unknown");
	ck_assert_str_eq(nbd_cmd_name(NBD_CMD_WRITE), "WRITE");
	ck_assert_str_eq(nbd_cmd_name(77), "unknown");
	ck_assert_str_eq(nbd_cmd_name(NBD_CMD_BLOCK_STATUS), "BLOCK_STATUS");
	ck_assert_str_eq(nbd_opt_name(NBD_OPT_SET_META_CONTEXT), "SET_META_CONTEXT");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-proto");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_endian);
	tcase_add_test(tc, test_greeting);
	tcase_add_test(tc, test_client_flags);
	tcase_add_test(tc, test_opt_hdr);
	tcase_add_test(tc, test_opt_go);
	tcase_add_test(tc, test_name_valid);
	tcase_add_test(tc, test_opt_replies);
	tcase_add_test(tc, test_export_name_reply);
	tcase_add_test(tc, test_tx_flags);
	tcase_add_test(tc, test_request_parse);
	tcase_add_test(tc, test_classify_ok);
	tcase_add_test(tc, test_classify_oversized);
	tcase_add_test(tc, test_classify_unknown);
	tcase_add_test(tc, test_classify_read_only);
	tcase_add_test(tc, test_classify_zero_length);
	tcase_add_test(tc, test_classify_new_commands);
	tcase_add_test(tc, test_classify_block_status);
	tcase_add_test(tc, test_opt_meta);
	tcase_add_test(tc, test_info_and_meta_replies);
	tcase_add_test(tc, test_chunks);
	tcase_add_test(tc, test_block_status);
	tcase_add_test(tc, test_plan_read);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_simple_reply);
	tcase_add_test(tc, test_errno_map);
	tcase_add_test(tc, test_names);
	return check_run(s, tc);
}
