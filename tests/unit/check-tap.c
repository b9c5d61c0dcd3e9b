/* Unit tests of the tap layer over real drivers: validation, read-modify-
 * write against a real O_DIRECT file through libaio, exclusion between
 * overlapping unaligned writes, waiting for pool memory, minors. */
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aio.h"
#include "log.h"
#include "tap.h"

static struct event_base *base;
static char dir[] = "/var/tmp/check-tap.XXXXXX";
static char path[512];
static int completed;

static void setup(void)
{
	struct errbuf eb = { { 0 } };
	struct pool *p;
	int fd;

	log_set_level(LOG_WARNING);
	base = event_base_new();
	pool_setup(base);
	tap_setup(base);
	ck_assert_int_eq(aio_setup(base), 0);
	ck_assert_int_eq(pool_create(POOL_DEFAULT, 4u << 20, &p, &eb), 0);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/disk.raw", dir);
	fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
	close(fd);
	completed = 0;
}

static void teardown(void)
{
	tap_teardown();
	pool_teardown();
	aio_teardown();
	event_base_free(base);
	unlink(path);
	rmdir(dir);
	strcpy(dir, "/var/tmp/check-tap.XXXXXX");
}

static void on_done(struct tap_req *req)
{
	(void)req;
	completed++;
}

static void run_until(int n)
{
	for (int i = 0; i < 10000 && completed < n; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(completed, n);
}

static struct tap *make_tap(const char *image, const char *name, bool ro)
{
	struct tap_config cfg = { .name = name, .image = image, .read_only = ro };
	struct errbuf eb = { { 0 } };
	struct tap *t = NULL;
	int ret = tap_create(&cfg, &t, &eb);

	ck_assert_msg(ret == 0, "tap_create %s: %s", image, eb.msg);
	return t;
}

static void no_wait(struct tap_req *req, int err)
{
	(void)req;
	(void)err;
	ck_abort_msg("unexpected wait for memory");
}

/* Prepare and submit a write of len bytes of c at off; buffer ready at once. */
static void start_write(struct tap *t, struct tap_req *req, uint64_t off, uint32_t len, int c)
{
	memset(req, 0, sizeof(*req));
	req->op = TAP_OP_WRITE;
	req->off = off;
	req->len = len;
	req->done = on_done;
	ck_assert_int_eq(tap_req_prepare(t, req, no_wait), 0);
	memset(req->buf, c, len);
	tap_req_submit(req);
}

static void read_back(struct tap *t, uint64_t off, uint32_t len, char *out)
{
	struct tap_req req = { .op = TAP_OP_READ, .off = off, .len = len, .done = on_done };
	int before = completed;

	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), 0);
	tap_req_submit(&req);
	run_until(before + 1);
	ck_assert_int_eq(req.error, 0);
	memcpy(out, req.buf, len);
	tap_req_release(&req);
}

START_TEST(test_unaligned_rmw)
{
	char spec[600], *model, *got;
	struct tap *t;
	struct tap_req w[4];
	static const struct {
		uint64_t off;
		uint32_t len;
	} cases[] = { { 1000, 3000 }, { 511, 2 }, { 4095, 4098 }, { 8192 + 7, 1 } };

	snprintf(spec, sizeof(spec), "raw:%s", path);
	t = make_tap(spec, "rmw", false);
	model = calloc(1, 1 << 20);
	got = malloc(1 << 20);
	for (int i = 0; i < 4; i++) {
		start_write(t, &w[i], cases[i].off, cases[i].len, 'a' + i);
		run_until(i + 1);
		ck_assert_int_eq(w[i].error, 0);
		tap_req_release(&w[i]);
		memset(model + cases[i].off, 'a' + i, cases[i].len);
	}
	read_back(t, 0, 16384, got);
	ck_assert(memcmp(model, got, 16384) == 0);
	/* An unaligned read of the same data. */
	read_back(t, 1001, 5000, got);
	ck_assert(memcmp(model + 1001, got, 5000) == 0);
	free(model);
	free(got);
}
END_TEST

/* Overlapping unaligned writes in flight together must land in the order
 * submitted, not interleave their read-modify-write cycles. */
START_TEST(test_overlapping_rmw)
{
	char spec[600], *model, *got;
	struct tap *t;
	struct tap_req w[16];

	snprintf(spec, sizeof(spec), "raw:%s", path);
	t = make_tap(spec, NULL, false);
	model = calloc(1, 65536);
	got = malloc(65536);
	for (int i = 0; i < 16; i++) {
		uint64_t off = 100 + (uint64_t)i * 300;
		uint32_t len = 700;

		start_write(t, &w[i], off, len, 'A' + i);
		memset(model + off, 'A' + i, len);
	}
	run_until(16);
	for (int i = 0; i < 16; i++) {
		ck_assert_int_eq(w[i].error, 0);
		tap_req_release(&w[i]);
	}
	read_back(t, 0, 65536, got);
	ck_assert(memcmp(model, got, 65536) == 0);
	free(model);
	free(got);
}
END_TEST

START_TEST(test_validation)
{
	struct tap *t = make_tap("ram:1M", "v", false);
	struct tap *ro = make_tap("null:1M", "ro", true);
	struct tap_req req = { .op = TAP_OP_READ, .off = 1 << 20, .len = 1, .done = on_done };

	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), -EINVAL);
	req.op = TAP_OP_WRITE;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), -ENOSPC);
	req.off = UINT64_MAX - 1;
	req.len = 4;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), -ENOSPC);
	req.off = 0;
	ck_assert_int_eq(tap_req_prepare(ro, &req, no_wait), -EPERM);
	req.len = TAP_REQ_MAX + 1;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), -EINVAL);
}
END_TEST

START_TEST(test_bad_create)
{
	struct errbuf eb = { { 0 } };
	struct tap_config cfg = { .image = "ram:1M", .name = "x" };
	struct tap *t;

	cfg.image = "nope";
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), -EINVAL);
	ck_assert(strstr(eb.msg, "DRIVER:ARG"));
	cfg.image = "raw:/nonexistent/file";
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), -ENOENT);
	ck_assert(strstr(eb.msg, "/nonexistent/file"));
	cfg.image = "ram:0";
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), -EINVAL);
	cfg.image = "ram:1M";
	cfg.name = "12";
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), -EINVAL);
	cfg.name = "x";
	cfg.pool = "nosuch";
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), -ENODEV);
	cfg.pool = NULL;
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), 0);
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), -EEXIST);
	ck_assert_int_eq(tap_count(), 1);
}
END_TEST

static int waited;

static void on_ready(struct tap_req *req, int err)
{
	ck_assert_int_eq(err, 0);
	ck_assert_ptr_nonnull(req->buf);
	waited++;
}

START_TEST(test_wait_for_memory)
{
	struct errbuf eb = { { 0 } };
	struct tap_config cfg = { .image = "ram:1M", .name = "small", .pool = "tiny" };
	struct tap_req a = { .op = TAP_OP_READ, .len = 8192, .done = on_done };
	struct tap_req b = { .op = TAP_OP_READ, .len = 4096, .done = on_done };
	struct tap_stats st;
	struct pool *p;
	struct tap *t;

	ck_assert_int_eq(pool_create("tiny", 8192, &p, &eb), 0);
	ck_assert_int_eq(tap_create(&cfg, &t, &eb), 0);
	waited = 0;
	ck_assert_int_eq(tap_req_prepare(t, &a, on_ready), 0);
	ck_assert_int_eq(tap_req_prepare(t, &b, on_ready), 1);
	tap_get_stats(t, &st);
	ck_assert_uint_eq(st.waiting, 1);
	tap_req_submit(&a);
	run_until(1);
	ck_assert_int_eq(waited, 0);
	tap_req_release(&a);
	for (int i = 0; i < 100 && !waited; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(waited, 1);
	tap_get_stats(t, &st);
	ck_assert_uint_eq(st.waiting, 0);
	tap_req_release(&b);
	/* Larger than the whole pool: refused, never queued. */
	a.len = 16384;
	ck_assert_int_eq(tap_req_prepare(t, &a, on_ready), -EINVAL);
}
END_TEST

START_TEST(test_minors_and_busy)
{
	struct errbuf eb = { { 0 } };
	struct tap *t0 = make_tap("null:1M", NULL, false);
	struct tap *t1 = make_tap("null:1M", NULL, false);
	struct tap *t2 = make_tap("null:1M", NULL, false);

	ck_assert_int_eq(tap_minor(t0), 0);
	ck_assert_int_eq(tap_minor(t2), 2);
	ck_assert_str_eq(tap_name(t1), "tap1");
	ck_assert_ptr_eq(tap_find("1"), t1);
	ck_assert_int_eq(tap_attach(t1), 0);
	ck_assert_int_eq(tap_destroy(t1, &eb), -EBUSY);
	ck_assert(strstr(eb.msg, "connected"));
	tap_detach(t1);
	ck_assert_int_eq(tap_destroy(t1, &eb), 0);
	ck_assert_ptr_null(tap_find("tap1"));
	t1 = make_tap("null:1M", NULL, false);
	ck_assert_int_eq(tap_minor(t1), 1);
}
END_TEST

static int shut;

static void on_shutdown(void *arg)
{
	(void)arg;
	shut = 1;
}

START_TEST(test_shutdown_flushes)
{
	char spec[600];
	struct tap_req w;
	struct tap *t;

	snprintf(spec, sizeof(spec), "raw:%s", path);
	t = make_tap(spec, "s", false);
	start_write(t, &w, 0, 4096, 'z');
	shut = 0;
	tap_shutdown_all(on_shutdown, NULL);
	/* In flight when the stop began: still completes, and new work is
	 * refused meanwhile. */
	run_until(1);
	ck_assert_int_eq(w.error, 0);
	tap_req_release(&w);
	for (int i = 0; i < 1000 && !shut; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(shut, 1);
	ck_assert_int_eq(tap_count(), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tap");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_unaligned_rmw);
	tcase_add_test(tc, test_overlapping_rmw);
	tcase_add_test(tc, test_validation);
	tcase_add_test(tc, test_bad_create);
	tcase_add_test(tc, test_wait_for_memory);
	tcase_add_test(tc, test_minors_and_busy);
	tcase_add_test(tc, test_shutdown_flushes);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
