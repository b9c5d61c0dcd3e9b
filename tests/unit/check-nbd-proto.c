/* Unit tests for the NBD wire format: handshake and option parsing, request
 * header parsing and classification (bad magic, oversized lengths, unknown
 * commands, read-only exports), reply encoding and errno mapping. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nbd-proto.h"

#define MAX_LEN (32u << 20)
#define SIZE (64ull << 20)
#define RW_FLAGS (NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA)

static void make_request(unsigned char *b, uint32_t magic, uint16_t flags, uint16_t type,
			 uint64_t cookie, uint64_t off, uint32_t len)
{
	nbd_put32(b, magic);
	nbd_put16(b + 4, flags);
	nbd_put16(b + 6, type);
	nbd_put64(b + 8, cookie);
	nbd_put64(b + 16, off);
	nbd_put32(b + 24, len);
}

/* Build GO/INFO data: name, then n info requests. Returns its length. */
static uint32_t make_go(unsigned char *b, const char *name, uint32_t name_len, const uint16_t *info,
			uint16_t n)
{
	nbd_put32(b, name_len);
	memcpy(b + 4, name, name_len);
	nbd_put16(b + 4 + name_len, n);
	for (uint16_t i = 0; i < n; i++)
		nbd_put16(b + 6 + name_len + 2 * i, info[i]);
	return 6 + name_len + 2u * n;
}

START_TEST(test_endian)
{
	unsigned char b[8];

	nbd_put64(b, 0x0102030405060708ull);
	ck_assert_int_eq(b[0], 1);
	ck_assert_int_eq(b[7], 8);
	ck_assert_uint_eq(nbd_get64(b), 0x0102030405060708ull);
	nbd_put32(b, 0xdeadbeef);
	ck_assert_uint_eq(nbd_get32(b), 0xdeadbeef);
	nbd_put16(b, 0xfffe);
	ck_assert_uint_eq(nbd_get16(b), 0xfffe);
}
END_TEST

START_TEST(test_greeting)
{
	unsigned char b[NBD_GREETING_LEN];

	ck_assert_uint_eq(nbd_encode_greeting(b), 18);
	ck_assert(memcmp(b, "NBDMAGICIHAVEOPT", 16) == 0);
	ck_assert_uint_eq(nbd_get16(b + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}
END_TEST

START_TEST(test_client_flags)
{
	unsigned char b[4];
	bool nz = true;

	nbd_put32(b, NBD_FLAG_C_FIXED_NEWSTYLE);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), 0);
	ck_assert(!nz);
	nbd_put32(b, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), 0);
	ck_assert(nz);
	/* Unknown bits: the protocol requires a disconnect. */
	nbd_put32(b, NBD_FLAG_C_FIXED_NEWSTYLE | 4);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), -EPROTO);
	memcpy(b, "GARB", 4);
	ck_assert_int_eq(nbd_parse_client_flags(b, &nz), -EPROTO);
}
END_TEST

START_TEST(test_opt_hdr)
{
	unsigned char b[NBD_OPT_HDR_LEN];
	struct nbd_opt_hdr h;

	nbd_put64(b, NBD_IHAVEOPT);
	nbd_put32(b + 8, NBD_OPT_GO);
	nbd_put32(b + 12, 42);
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
	nbd_put32(b, 0xfffffffe);
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
	ck_assert_uint_eq(nbd_get64(b), NBD_REP_MAGIC);
	ck_assert_uint_eq(nbd_get32(b + 8), NBD_OPT_STARTTLS);
	ck_assert_uint_eq(nbd_get32(b + 12), 0x80000001u);
	ck_assert_uint_eq(nbd_get32(b + 16), 0);
	ck_assert_uint_eq(NBD_REP_ERR_UNKNOWN, 0x80000006u);
	ck_assert_uint_eq(NBD_REP_ERR_INVALID, 0x80000003u);

	n = nbd_encode_rep_server(b, "disk0", 5);
	ck_assert_uint_eq(n, 29);
	ck_assert_uint_eq(nbd_get32(b + 8), NBD_OPT_LIST);
	ck_assert_uint_eq(nbd_get32(b + 12), NBD_REP_SERVER);
	ck_assert_uint_eq(nbd_get32(b + 16), 9);
	ck_assert_uint_eq(nbd_get32(b + 20), 5);
	ck_assert(memcmp(b + 24, "disk0", 5) == 0);

	n = nbd_encode_info_export(b, NBD_OPT_GO, SIZE, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
	ck_assert_uint_eq(n, NBD_INFO_EXPORT_LEN);
	ck_assert_uint_eq(nbd_get32(b + 12), NBD_REP_INFO);
	ck_assert_uint_eq(nbd_get32(b + 16), 12);
	ck_assert_uint_eq(nbd_get16(b + 20), NBD_INFO_EXPORT);
	ck_assert_uint_eq(nbd_get64(b + 22), SIZE);
	ck_assert_uint_eq(nbd_get16(b + 30), 3);

	n = nbd_encode_info_block_size(b, NBD_OPT_INFO, 1, 4096, MAX_LEN);
	ck_assert_uint_eq(n, NBD_INFO_BLOCK_SIZE_LEN);
	ck_assert_uint_eq(nbd_get32(b + 8), NBD_OPT_INFO);
	ck_assert_uint_eq(nbd_get16(b + 20), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(nbd_get32(b + 22), 1);
	ck_assert_uint_eq(nbd_get32(b + 26), 4096);
	ck_assert_uint_eq(nbd_get32(b + 30), MAX_LEN);
}
END_TEST

START_TEST(test_export_name_reply)
{
	unsigned char b[NBD_EXPORT_NAME_REPLY_LEN];

	memset(b, 0xaa, sizeof(b));
	ck_assert_uint_eq(nbd_encode_export_name_reply(b, SIZE, 1, true), 10);
	ck_assert_uint_eq(nbd_get64(b), SIZE);
	ck_assert_uint_eq(nbd_get16(b + 8), 1);
	ck_assert_int_eq(b[10], 0xaa);
	ck_assert_uint_eq(nbd_encode_export_name_reply(b, SIZE, 1, false), 134);
	for (int i = 10; i < 134; i++)
		ck_assert_int_eq(b[i], 0);
}
END_TEST

START_TEST(test_tx_flags)
{
	ck_assert_uint_eq(nbd_tx_flags(false, true, true), RW_FLAGS);
	ck_assert_uint_eq(nbd_tx_flags(false, false, false), NBD_FLAG_HAS_FLAGS);
	ck_assert_uint_eq(nbd_tx_flags(true, true, true),
			  NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH);
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

static enum nbd_action classify(uint16_t flags, uint16_t type, uint64_t off, uint32_t len,
				uint16_t tx, uint32_t *err)
{
	unsigned char b[NBD_REQUEST_LEN];
	struct nbd_request r;

	make_request(b, NBD_REQUEST_MAGIC, flags, type, 7, off, len);
	ck_assert_int_eq(nbd_parse_request(b, &r), 0);
	return nbd_classify(&r, tx, SIZE, MAX_LEN, err);
}

START_TEST(test_classify_ok)
{
	uint32_t err = 99;

	ck_assert_int_eq(classify(0, NBD_CMD_READ, 0, 4096, RW_FLAGS, &err), NBD_ACT_READ);
	ck_assert_uint_eq(err, 0);
	ck_assert_int_eq(classify(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1000, 3000, RW_FLAGS, &err),
			 NBD_ACT_WRITE);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE, 0, MAX_LEN, RW_FLAGS, &err), NBD_ACT_WRITE);
	ck_assert_int_eq(classify(0, NBD_CMD_FLUSH, 0, 0, RW_FLAGS, &err), NBD_ACT_FLUSH);
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
	/* Not advertised yet. */
	ck_assert_int_eq(classify(0, NBD_CMD_TRIM, 0, 4096, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(0, NBD_CMD_WRITE_ZEROES, 0, 4096, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	/* Unknown flags: reply EINVAL, and a write's payload is skipped. */
	ck_assert_int_eq(classify(1u << 7, NBD_CMD_READ, 0, 512, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(1u << 1, NBD_CMD_WRITE, 0, 512, RW_FLAGS, &err), NBD_ACT_DISCARD);
	ck_assert_uint_eq(err, NBD_EINVAL);
	ck_assert_int_eq(classify(1u << 2, NBD_CMD_FLUSH, 0, 0, RW_FLAGS, &err), NBD_ACT_REPLY);
	ck_assert_uint_eq(err, NBD_EINVAL);
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
	ck_assert_uint_eq(nbd_get32(b), NBD_SIMPLE_REPLY_MAGIC);
	ck_assert_uint_eq(nbd_get32(b + 4), 28);
	ck_assert_uint_eq(nbd_get64(b + 8), 0xabcdefull);
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

START_TEST(test_names)
{
	ck_assert_str_eq(nbd_opt_name(NBD_OPT_GO), "GO");
	ck_assert_str_eq(nbd_opt_name(1234), "unknown");
	ck_assert_str_eq(nbd_cmd_name(NBD_CMD_WRITE), "WRITE");
	ck_assert_str_eq(nbd_cmd_name(77), "unknown");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("nbd-proto");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

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
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_simple_reply);
	tcase_add_test(tc, test_errno_map);
	tcase_add_test(tc, test_names);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
