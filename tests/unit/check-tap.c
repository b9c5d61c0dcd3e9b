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
#include <sys/stat.h>
#include <unistd.h>

#include "check-run.h"
#include "lib/aio.h"
#include "lib/log.h"
#include "core/internal.h"
#include "core/tap.h"
#include "formats/vhd/format.h"
#include "lib/worker.h"

static struct event_base *base;
static char dir[] = "/var/tmp/check-tap.XXXXXX";
static char path[512];
static int completed;

/* tap_create and tap_unpause answer from the loop (the image opens on a
 * thread of its own): run it until they do. */
struct answer {
	bool got;
	int err;
	struct tap *t;
	struct errbuf *eb;
};

static void on_answer(void *arg, struct tap *t, int err, const struct errbuf *eb)
{
	struct answer *a = arg;

	a->got = true;
	a->err = err;
	a->t = t;
	if (eb)
		*a->eb = *eb;
}

static int answer_wait(struct answer *a, int ret)
{
	if (ret < 0)
		return ret;
	while (!a->got)
		event_base_loop(base, EVLOOP_ONCE);
	return a->err;
}

static int create_wait(const struct tap_config *cfg, struct tap **out, struct errbuf *eb)
{
	struct answer a = {.eb = eb};
	int ret = answer_wait(&a, tap_create(cfg, on_answer, &a, eb));

	if (ret == 0)
		*out = a.t;
	return ret;
}

static int unpause_wait(struct tap *t, const char *image, struct errbuf *eb)
{
	struct answer a = {.eb = eb};

	return answer_wait(&a, tap_unpause(t, image, on_answer, &a, eb));
}

static void setup(void)
{
	struct errbuf eb = { { 0 } };
	struct pool *p;
	int fd;

	log_set_level(LOG_WARNING);
	base = event_base_new();
	pool_setup(base);
	ck_assert_int_eq(tap_setup(base), 0);
	ck_assert_int_eq(aio_setup(base), 0);
	ck_assert_int_eq(worker_setup(base, 1), 0);
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
	worker_teardown();
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
	int ret = create_wait(&cfg, &t, &eb);

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
	req->op = IMAGE_OP_WRITE;
	req->off = off;
	req->len = len;
	req->done = on_done;
	ck_assert_int_eq(tap_req_prepare(t, req, no_wait), 0);
	memset(req->buf, c, len);
	tap_req_submit(req);
}

static void read_back(struct tap *t, uint64_t off, uint32_t len, char *out)
{
	struct tap_req req = { .op = IMAGE_OP_READ, .off = off, .len = len, .done = on_done };
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
	struct tap_req req = { .op = IMAGE_OP_READ, .off = 1 << 20, .len = 1, .done = on_done };

	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), -EINVAL);
	req.op = IMAGE_OP_WRITE;
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
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	ck_assert(strstr(eb.msg, "DRIVER:ARG"));
	cfg.image = "raw:/nonexistent/file";
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -ENOENT);
	ck_assert(strstr(eb.msg, "/nonexistent/file"));
	cfg.image = "ram:0";
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	cfg.image = "ram:1M";
	cfg.name = "12";
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	cfg.name = "x";
	cfg.pool = "nosuch";
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -ENODEV);
	cfg.pool = NULL;
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), 0);
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EEXIST);
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
	struct tap_req a = { .op = IMAGE_OP_READ, .len = 8192, .done = on_done };
	struct tap_req b = { .op = IMAGE_OP_READ, .len = 4096, .done = on_done };
	struct tap_stats st;
	struct pool *p;
	struct tap *t;

	ck_assert_int_eq(pool_create("tiny", 8192, &p, &eb), 0);
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), 0);
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
	/* Larger than the whole pool: served in pieces, never refused. */
	a.len = 16384;
	ck_assert_int_eq(tap_req_prepare(t, &a, on_ready), 0);
	ck_assert_uint_eq(a.piece_len, 8192);
	ck_assert(tap_req_more(&a));
	tap_req_release(&a);
}
END_TEST

/* Walk the pieces of [off, off + len) for a buffer of cap bytes: they
 * follow each other, cover it all, fit the buffer, and only the first
 * begins and only the last ends inside a page. Returns how many. */
static unsigned check_pieces(enum image_op op, uint64_t off, uint64_t len, uint64_t cap)
{
	uint64_t p = off, end = off + len;
	unsigned n = 0;

	while (p < end) {
		uint32_t l = tap_piece_len(op, p, end, cap);

		ck_assert_msg(l > 0, "no piece at %llu of [%llu, %llu) in %llu",
			      (unsigned long long)p, (unsigned long long)off,
			      (unsigned long long)end, (unsigned long long)cap);
		ck_assert_uint_le(tap_piece_need(op, p, p + l), cap);
		if (p != off)
			ck_assert_uint_eq(p % POOL_PAGE, 0);
		if (p + l != end)
			ck_assert_uint_eq((p + l) % POOL_PAGE, 0);
		p += l;
		n++;
	}
	ck_assert_uint_eq(p, end);
	return n;
}

START_TEST(test_piece_plan)
{
	static const uint64_t offs[] = {0, 1, 511, 4096, 4097, 12288 - 7};
	static const uint64_t lens[] = {1, 4095, 4096, 65536, 65536 + 513, 24u << 20};
	static const uint64_t caps[] = {3 * 4096, 5 * 4096 + 100, 16384, 1u << 20, 16u << 20};

	/* What fits goes whole, with scratch only for a write that is
	 * not on pages. */
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_READ, 0, 16384, 16384), 16384);
	ck_assert_uint_eq(tap_piece_need(IMAGE_OP_WRITE, 0, 16384), 16384);
	ck_assert_uint_eq(tap_piece_need(IMAGE_OP_WRITE, 1, 16384), 16384 + 8192);
	ck_assert_uint_eq(tap_piece_need(IMAGE_OP_READ, 1, 16384), 16384);
	/* 24 MiB through 16 MiB: 16 then 8. */
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_READ, 0, 24u << 20, 16u << 20), 16u << 20);
	ck_assert_uint_eq(check_pieces(IMAGE_OP_WRITE, 0, 24u << 20, 16u << 20), 2);
	/* An unaligned write's first piece leaves room for its scratch. */
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_WRITE, 100, 24u << 20, 16u << 20),
			  (16u << 20) - 2 * 4096 - 100);
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_READ, 100, 24u << 20, 16u << 20),
			  (16u << 20) - 100);
	/* A 64k write through a one-page pool: sixteen pages. */
	ck_assert_uint_eq(check_pieces(IMAGE_OP_WRITE, 65536, 65536, 4096), 16);
	ck_assert_uint_eq(check_pieces(IMAGE_OP_READ, 100, 65536, 4096), 17);
	/* A partial last page of a write needs three pages; two are not
	 * enough for it, whatever comes before. */
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_WRITE, 8192, 8192 + 100, 3 * 4096), 100);
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_WRITE, 8192, 8192 + 100, 2 * 4096), 0);
	ck_assert_uint_eq(tap_piece_len(IMAGE_OP_WRITE, 0, 0, 4096), 0);
	for (unsigned i = 0; i < ARRAY_SIZE(offs); i++)
		for (unsigned j = 0; j < ARRAY_SIZE(lens); j++)
			for (unsigned k = 0; k < ARRAY_SIZE(caps); k++) {
				check_pieces(IMAGE_OP_READ, offs[i], lens[j], caps[k]);
				check_pieces(IMAGE_OP_WRITE, offs[i], lens[j], caps[k]);
			}
}
END_TEST

/* Run req (prepared, its buffer ready) piece by piece: a WRITE takes its
 * bytes from data, a READ puts them there. Returns the error, or 0. */
static int run_pieces(struct tap_req *req, char *data, unsigned *pieces)
{
	*pieces = 0;
	for (;;) {
		int before = completed;

		if (req->op == IMAGE_OP_WRITE)
			memcpy(req->buf, data + (req->piece_off - req->off), req->piece_len);
		tap_req_submit(req);
		run_until(before + 1);
		(*pieces)++;
		if (req->error)
			return req->error;
		if (req->op == IMAGE_OP_READ)
			memcpy(data + (req->piece_off - req->off), req->buf, req->piece_len);
		if (!tap_req_more(req))
			return 0;
		tap_req_next(req);
	}
}

static void fill_pattern(char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)((i * 31 + seed) ^ (i >> 9));
}

/* A tap on an O_DIRECT file in a pool of a few pages: unaligned writes
 * and reads many times the pool's size go in pieces and read back right;
 * the tap counts each request once; the pool gets all its memory back. */
START_TEST(test_pieces_raw)
{
	struct errbuf eb = {{0}};
	struct tap_config cfg = {.name = "bigreq", .pool = "few"};
	struct tap_req req;
	struct pool_stats ps;
	struct tap_stats st;
	char spec[600], *model, *got;
	const uint64_t off = 4096 * 3 + 77;
	const uint32_t len = 200000 + 13;
	unsigned pieces;
	struct pool *p;
	struct tap *t;

	snprintf(spec, sizeof(spec), "raw:%s", path);
	cfg.image = spec;
	ck_assert_int_eq(pool_create("few", 5 * 4096, &p, &eb), 0);
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), 0);
	model = malloc(1 << 20);
	got = malloc(1 << 20);
	memset(model, 0, 1 << 20);
	fill_pattern(model + off, len, 7);

	memset(&req, 0, sizeof(req));
	req.op = IMAGE_OP_WRITE;
	req.off = off;
	req.len = len;
	req.flags = IMAGE_F_FUA;
	req.done = on_done;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), 0);
	ck_assert_uint_lt(req.piece_len, len);
	ck_assert_int_eq(run_pieces(&req, model + off, &pieces), 0);
	ck_assert_uint_gt(pieces, len / (5 * 4096));
	tap_req_release(&req);

	memset(&req, 0, sizeof(req));
	req.op = IMAGE_OP_READ;
	req.off = 0;
	req.len = 1 << 20;
	req.done = on_done;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), 0);
	ck_assert_int_eq(run_pieces(&req, got, &pieces), 0);
	/* Pieces through a quarter of the pool, three pages at least. */
	ck_assert_uint_eq(pieces, (1u << 20) / (3 * 4096) + 1);
	tap_req_release(&req);
	ck_assert_int_eq(memcmp(model, got, 1 << 20), 0);

	tap_get_stats(t, &st);
	ck_assert_uint_eq(st.writes, 1);
	ck_assert_uint_eq(st.reads, 1);
	ck_assert_uint_eq(st.write_bytes, len);
	ck_assert_uint_eq(st.read_bytes, 1u << 20);
	ck_assert_uint_eq(st.errors, 0);
	pool_get_stats(p, &ps);
	ck_assert_uint_eq(ps.in_use, 0);

	/* A one-page pool serves page-aligned writes and any read, but not
	 * a write with a partial page: it says so at once. */
	ck_assert_int_eq(pool_resize(p, 4096, &eb), 0);
	memset(&req, 0, sizeof(req));
	req.op = IMAGE_OP_WRITE;
	req.off = 8192;
	req.len = 65536;
	req.done = on_done;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), 0);
	ck_assert_int_eq(run_pieces(&req, model + 8192, &pieces), 0);
	ck_assert_uint_eq(pieces, 16);
	tap_req_release(&req);
	req.off = 8193;
	ck_assert_int_eq(tap_req_prepare(t, &req, no_wait), -ENOMEM);
	tap_req_release(&req);
	free(model);
	free(got);
}
END_TEST

/* A request waiting for a buffer the pool no longer has after a shrink
 * is not failed: it waits again for one the pool can give, and goes in
 * pieces. */
START_TEST(test_shrink_waiter_pieces)
{
	struct errbuf eb = {{0}};
	struct tap_config cfg = {.image = "ram:1M", .name = "shrunk", .pool = "sh"};
	struct tap_req a = {.op = IMAGE_OP_WRITE, .len = 65536, .done = on_done};
	struct tap_req b = {.op = IMAGE_OP_READ, .len = 65536, .done = on_done};
	char *model, *got;
	struct tap_stats st;
	unsigned pieces;
	struct pool *p;
	struct tap *t;

	ck_assert_int_eq(pool_create("sh", 65536, &p, &eb), 0);
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), 0);
	model = malloc(65536);
	got = malloc(65536);
	fill_pattern(model, 65536, 3);
	waited = 0;
	ck_assert_int_eq(tap_req_prepare(t, &a, on_ready), 0);
	ck_assert_int_eq(tap_req_prepare(t, &b, on_ready), 1);
	ck_assert_uint_eq(b.piece_len, 65536);
	/* The shrink leaves b waiting for 64k of a 16k pool. */
	ck_assert_int_eq(pool_resize(p, 16384, &eb), 0);
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(waited, 0);
	tap_get_stats(t, &st);
	ck_assert_uint_eq(st.waiting, 1);
	ck_assert_uint_eq(st.errors, 0);
	memcpy(a.buf, model, 65536);
	tap_req_submit(&a);
	run_until(1);
	ck_assert_int_eq(a.error, 0);
	tap_req_release(&a);
	for (int i = 0; i < 100 && !waited; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(waited, 1);
	/* A 16K pool: pieces of three pages (a quarter would be one). */
	ck_assert_uint_eq(b.piece_len, 12288);
	ck_assert_int_eq(run_pieces(&b, got, &pieces), 0);
	ck_assert_uint_eq(pieces, 6);
	tap_req_release(&b);
	ck_assert_int_eq(memcmp(model, got, 65536), 0);
	free(model);
	free(got);
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


/* Run one buffer-less request to completion and return its error. */
static int run_op(struct tap *t, enum image_op op, uint64_t off, uint32_t len, uint32_t flags,
		  struct image_extent *ext, uint32_t ext_max, uint32_t *ext_count)
{
	struct tap_req req = { .op = op, .off = off, .len = len, .flags = flags, .done = on_done,
			       .ext = ext, .ext_max = ext_max };
	int before = completed, ret;

	ret = tap_req_prepare(t, &req, no_wait);
	if (ret < 0)
		return ret;
	tap_req_submit(&req);
	run_until(before + 1);
	if (ext_count)
		*ext_count = req.ext_count;
	tap_req_release(&req);
	return req.error;
}

static void fill(struct tap *t, uint64_t off, uint32_t len, int c)
{
	struct tap_req w;
	int before = completed;

	start_write(t, &w, off, len, c);
	run_until(before + 1);
	ck_assert_int_eq(w.error, 0);
	tap_req_release(&w);
}

static uint64_t allocated_bytes(void)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

START_TEST(test_zeroes_unaligned)
{
	char spec[600], *got = malloc(65536), *model = malloc(65536);
	struct tap *t;

	snprintf(spec, sizeof(spec), "raw:%s", path);
	t = make_tap(spec, "z", false);
	fill(t, 0, 65536, 'x');
	memset(model, 'x', 65536);
	/* Partial head block, whole middle blocks, partial tail block. */
	ck_assert_int_eq(run_op(t, IMAGE_OP_WRITE_ZEROES, 1000, 13000, 0, NULL, 0, NULL), 0);
	memset(model + 1000, 0, 13000);
	/* Inside a single block. */
	ck_assert_int_eq(run_op(t, IMAGE_OP_WRITE_ZEROES, 20000, 10, IMAGE_F_FUA, NULL, 0, NULL), 0);
	memset(model + 20000, 0, 10);
	/* Kept allocated. */
	ck_assert_int_eq(run_op(t, IMAGE_OP_WRITE_ZEROES, 32768, 16384, IMAGE_F_NO_HOLE, NULL, 0,
				NULL), 0);
	memset(model + 32768, 0, 16384);
	read_back(t, 0, 65536, got);
	ck_assert(memcmp(model, got, 65536) == 0);
	free(got);
	free(model);
}
END_TEST

START_TEST(test_trim_and_extents_raw)
{
	struct image_extent ext[8];
	uint32_t n = 0;
	char spec[600];
	struct tap *t;
	uint64_t before;

	snprintf(spec, sizeof(spec), "raw:%s", path);
	t = make_tap(spec, "e", false);
	fill(t, 65536, 65536, 'd');
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 0, 1 << 20, 0, ext, 8, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(ext[0].len, 65536);
	ck_assert_uint_eq(ext[0].flags, IMAGE_EXT_HOLE | IMAGE_EXT_ZERO);
	ck_assert_uint_eq(ext[1].len, 65536);
	ck_assert_uint_eq(ext[1].flags, 0);
	ck_assert_uint_eq(ext[2].len, (1 << 20) - 131072);
	/* REQ_ONE-style: room for one extent only. */
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 70000, 100, 0, ext, 1, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ext[0].flags, 0);
	ck_assert_uint_le(ext[0].len, 100);
	/* Trim frees the blocks, which then read as a hole. */
	before = allocated_bytes();
	ck_assert_int_eq(run_op(t, IMAGE_OP_TRIM, 65536, 65536, 0, NULL, 0, NULL), 0);
	ck_assert_uint_lt(allocated_bytes(), before);
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 0, 1 << 20, 0, ext, 8, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ext[0].flags, IMAGE_EXT_HOLE | IMAGE_EXT_ZERO);
	/* Bad requests. */
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 0, 0, 0, ext, 8, &n), -EINVAL);
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 0, 4096, 0, NULL, 8, &n), -EINVAL);
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 1 << 20, 1, 0, ext, 8, &n), -EINVAL);
	ck_assert_int_eq(run_op(t, IMAGE_OP_TRIM, 1 << 20, 1, 0, NULL, 0, NULL), -ENOSPC);
}
END_TEST

START_TEST(test_ram_ops)
{
	struct tap *t = make_tap("ram:1M", "r", false);
	struct tap *ro = make_tap("ram:1M", "rro", true);
	struct image_extent ext[8];
	char got[8192];
	uint32_t n = 0;

	fill(t, 4096, 4096, 'r');
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 0, 12288, 0, ext, 8, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(ext[0].flags, IMAGE_EXT_HOLE | IMAGE_EXT_ZERO);
	ck_assert_uint_eq(ext[1].flags, 0);
	ck_assert_uint_eq(ext[1].len, 4096);
	ck_assert_int_eq(run_op(t, IMAGE_OP_WRITE_ZEROES, 4100, 100, IMAGE_F_FAST_ZERO, NULL, 0,
				NULL), 0);
	read_back(t, 4096, 4096, got);
	ck_assert_int_eq(got[3], 'r');
	ck_assert_int_eq(got[4], 0);
	ck_assert_int_eq(got[103], 0);
	ck_assert_int_eq(got[104], 'r');
	ck_assert_int_eq(run_op(t, IMAGE_OP_TRIM, 4096, 4096, 0, NULL, 0, NULL), 0);
	ck_assert_int_eq(run_op(t, IMAGE_OP_BLOCK_STATUS, 0, 12288, 0, ext, 8, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(ext[0].len, 12288);
	ck_assert_int_eq(run_op(t, IMAGE_OP_CACHE, 0, 4096, 0, NULL, 0, NULL), 0);
	ck_assert_int_eq(run_op(ro, IMAGE_OP_TRIM, 0, 4096, 0, NULL, 0, NULL), -EPERM);
	ck_assert_int_eq(run_op(ro, IMAGE_OP_WRITE_ZEROES, 0, 4096, 0, NULL, 0, NULL), -EPERM);
	ck_assert_int_eq(run_op(ro, IMAGE_OP_BLOCK_STATUS, 0, 4096, 0, ext, 8, &n), 0);
}
END_TEST

static int paused_err = 1;

static void on_paused(void *arg, int err)
{
	(void)arg;
	paused_err = err;
}

static void make_file(const char *name, uint64_t size, int c, char *out, size_t outlen)
{
	char buf[4096];
	int fd;

	snprintf(out, outlen, "%s/%s", dir, name);
	fd = open(out, O_CREAT | O_RDWR | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	memset(buf, c, sizeof(buf));
	for (uint64_t o = 0; o < size; o += sizeof(buf))
		ck_assert_int_eq(pwrite(fd, buf, sizeof(buf), (off_t)o), (ssize_t)sizeof(buf));
	close(fd);
}

START_TEST(test_pause_unpause)
{
	char spec[600], other[600], small[600], spec2[700];
	struct errbuf eb = { { 0 } };
	struct tap_req w, r = { .op = IMAGE_OP_READ, .off = 0, .len = 4096, .done = on_done };
	struct tap *t;

	snprintf(spec, sizeof(spec), "raw:%s", path);
	t = make_tap(spec, "p", false);
	start_write(t, &w, 0, 4096, 'w');
	paused_err = 1;
	ck_assert_int_eq(tap_pause(t, on_paused, NULL, &eb), 0);
	ck_assert_int_eq(tap_pause(t, on_paused, NULL, &eb), -EBUSY);
	/* The write in flight finishes, then the pause. */
	run_until(1);
	ck_assert_int_eq(w.error, 0);
	tap_req_release(&w);
	for (int i = 0; i < 100 && paused_err == 1; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(paused_err, 0);
	ck_assert_int_eq(tap_state(t), TAP_PAUSED);

	/* A request while paused waits. */
	ck_assert_int_eq(tap_req_prepare(t, &r, no_wait), 0);
	tap_req_submit(&r);
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(completed, 1);

	/* A chain of another size is refused; the tap stays paused. */
	make_file("small.raw", 65536, 's', small, sizeof(small));
	snprintf(spec2, sizeof(spec2), "raw:%s", small);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(t, spec2, &eb), -ERANGE);
	ck_assert(strstr(eb.msg, "keeps its size"));
	ck_assert_int_eq(tap_state(t), TAP_PAUSED);

	/* Unpause on a new leaf of the same size: the waiting read is served
	 * from it. */
	make_file("other.raw", 1 << 20, 'o', other, sizeof(other));
	snprintf(spec2, sizeof(spec2), "raw:%s", other);
	ck_assert_int_eq(unpause_wait(t, spec2, &eb), 0);
	ck_assert_str_eq(tap_image(t), spec2);
	run_until(2);
	ck_assert_int_eq(r.error, 0);
	ck_assert_int_eq(((char *)r.buf)[0], 'o');
	tap_req_release(&r);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(t, NULL, &eb), -EINVAL);
	unlink(small);
	unlink(other);
}
END_TEST

START_TEST(test_shutdown_while_paused)
{
	struct errbuf eb = { { 0 } };
	struct tap_req r = { .op = IMAGE_OP_READ, .off = 0, .len = 4096, .done = on_done };
	struct tap *t = make_tap("ram:1M", "sp", false);

	paused_err = 1;
	ck_assert_int_eq(tap_pause(t, on_paused, NULL, &eb), 0);
	for (int i = 0; i < 100 && paused_err == 1; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(paused_err, 0);
	ck_assert_int_eq(tap_req_prepare(t, &r, no_wait), 0);
	tap_req_submit(&r);
	shut = 0;
	tap_shutdown_all(on_shutdown, NULL);
	run_until(1);
	ck_assert_int_eq(r.error, -ESHUTDOWN);
	tap_req_release(&r);
	for (int i = 0; i < 1000 && !shut; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(shut, 1);
}
END_TEST

START_TEST(test_set_pool_live)
{
	struct errbuf eb = { { 0 } };
	struct tap_req r = { .op = IMAGE_OP_READ, .off = 0, .len = 8192, .done = on_done };
	struct pool_stats a, b;
	struct pool *pa, *pb;
	struct tap *t;

	ck_assert_int_eq(pool_create("pa", 1 << 20, &pa, &eb), 0);
	ck_assert_int_eq(pool_create("pb", 1 << 20, &pb, &eb), 0);
	t = make_tap("ram:1M", "mv", false);
	ck_assert_int_eq(tap_set_pool(t, "pa", &eb), 0);
	ck_assert_int_eq(tap_req_prepare(t, &r, no_wait), 0);
	/* Moved with a buffer out: it goes back where it came from. */
	ck_assert_int_eq(tap_set_pool(t, "pb", &eb), 0);
	ck_assert_str_eq(pool_name(tap_pool(t)), "pb");
	tap_req_submit(&r);
	run_until(1);
	tap_req_release(&r);
	pool_get_stats(pa, &a);
	pool_get_stats(pb, &b);
	ck_assert_uint_eq(a.in_use, 0);
	ck_assert_uint_eq(a.taps, 0);
	ck_assert_uint_eq(b.taps, 1);
	ck_assert_int_eq(tap_req_prepare(t, &r, no_wait), 0);
	pool_get_stats(pb, &b);
	ck_assert_uint_eq(b.in_use, 8192);
	tap_req_release(&r);
	ck_assert_int_eq(tap_set_pool(t, "nosuch", &eb), -ENODEV);
}
END_TEST

static void pause_now(struct tap *t);

static int vhd_make(const char *name, const char *parent, char *out, size_t len)
{
	struct vhd_create_opts o = { .type = VHD_TYPE_DYNAMIC, .size = 8u << 20 };
	struct errbuf eb = { { 0 } };
	char ppath[600];

	snprintf(out, len, "%s/%s", dir, name);
	if (parent) {
		snprintf(ppath, sizeof(ppath), "%s/%s", dir, parent);
		o.type = VHD_TYPE_DIFF;
		o.parent = ppath;
	}
	return vhd_image_create(out, &o, &eb);
}

START_TEST(test_stacked)
{
	char base[600], leaf[600], other[600], spec[700];
	struct errbuf eb = { { 0 } };
	struct tap_config cfg = { .name = "leaf", .parent = "base", .pool = "lp" };
	struct tap_stats st;
	struct pool *p;
	struct tap *pt, *lt, *ot;
	char got[4096];

	ck_assert_int_eq(vhd_make("base.vhd", NULL, base, sizeof(base)), 0);
	ck_assert_int_eq(vhd_make("other.vhd", NULL, other, sizeof(other)), 0);
	snprintf(spec, sizeof(spec), "vhd:%s", base);
	pt = make_tap(spec, "base", false);
	fill(pt, 0, 4096, 'b');
	ck_assert_int_eq(tap_destroy(pt, &eb), 0);
	ck_assert_int_eq(vhd_make("leaf.vhd", "base.vhd", leaf, sizeof(leaf)), 0);
	/* A golden image: served read-only by its own tap. */
	pt = make_tap(spec, "base", true);
	ck_assert_int_eq(pool_create("lp", 1 << 20, &p, &eb), 0);
	/* The leaf reads its parent through the parent's tap. */
	snprintf(spec, sizeof(spec), "vhd:%s", leaf);
	cfg.image = spec;
	cfg.pool = NULL;
	ck_assert_int_eq(create_wait(&cfg, &lt, &eb), -EINVAL);
	ck_assert(strstr(eb.msg, "different pools"));
	cfg.pool = "lp";
	memset(&eb, 0, sizeof(eb));
	ck_assert_msg(create_wait(&cfg, &lt, &eb) == 0, "%s", eb.msg);
	ck_assert_ptr_eq(tap_parent(lt), pt);
	read_back(lt, 0, 4096, got);
	ck_assert_int_eq(got[0], 'b');
	ck_assert_int_eq(got[4095], 'b');
	tap_get_stats(pt, &st);
	ck_assert_uint_ge(st.reads, 1);
	tap_get_stats(lt, &st);
	ck_assert_uint_eq(st.chain_depth, 3); /* leaf, tap:base, base.vhd */
	ck_assert_int_eq(tap_set_pool(lt, POOL_DEFAULT, &eb), -EINVAL);
	ck_assert_int_eq(tap_set_pool(pt, "lp", &eb), -EINVAL);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(tap_destroy(pt, &eb), -EBUSY);
	ck_assert(strstr(eb.msg, "parent chain"));
	/* A tap over another image is not this leaf's parent. */
	snprintf(spec, sizeof(spec), "vhd:%s", other);
	ot = make_tap(spec, "other", true);
	(void)ot;
	cfg.name = "leaf2";
	cfg.parent = "other";
	snprintf(spec, sizeof(spec), "vhd:%s", leaf);
	cfg.image = spec;
	ck_assert_int_eq(tap_destroy(lt, &eb), 0);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(create_wait(&cfg, &lt, &eb), -EINVAL);
	ck_assert(strstr(eb.msg, "parent of"));
	cfg.parent = "nosuch";
	ck_assert_int_eq(create_wait(&cfg, &lt, &eb), -ENOENT);
	/* A paused leaf no longer holds its parent tap, which may go: the
	 * leaf then names no parent (it pointed at freed memory) and cannot
	 * unpause without it. */
	cfg.parent = "base";
	ck_assert_int_eq(create_wait(&cfg, &lt, &eb), 0);
	ck_assert_ptr_eq(tap_parent(lt), pt);
	pause_now(lt);
	ck_assert_int_eq(tap_destroy(pt, &eb), 0);
	ck_assert_ptr_null(tap_parent(lt));
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(lt, NULL, &eb), -ENOENT);
	ck_assert_msg(strstr(eb.msg, "base"), "%s", eb.msg);
	ck_assert_int_eq(tap_state(lt), TAP_PAUSED);
	unlink(base);
	unlink(leaf);
	unlink(other);
}
END_TEST

/* Pause t and run the loop until it is paused. */
static void pause_now(struct tap *t)
{
	struct errbuf eb = { { 0 } };

	paused_err = 1;
	ck_assert_int_eq(tap_pause(t, on_paused, NULL, &eb), 0);
	for (int i = 0; i < 100 && paused_err == 1; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(paused_err, 0);
}

static struct tap *make_tap_in(const char *image, const char *name, const char *pool)
{
	struct tap_config cfg = { .name = name, .image = image, .pool = pool };
	struct errbuf eb = { { 0 } };
	struct tap *t = NULL;

	ck_assert_msg(create_wait(&cfg, &t, &eb) == 0, "tap_create %s: %s", name, eb.msg);
	return t;
}

/* Issue 10, defect 1: a tap may not read through itself, by any road, and
 * a stack ends at TAP_STACK_MAX taps. */
START_TEST(test_stack_loop)
{
	struct errbuf eb = { { 0 } };
	struct tap_config cfg = { .name = "c", .image = "tap:a" };
	struct tap_stats st;
	struct pool *p;
	struct tap *a, *b, *t;
	char name[16], img[32], got[4096];

	ck_assert_int_eq(pool_create("p1", 1 << 20, &p, &eb), 0);
	ck_assert_int_eq(pool_create("p2", 1 << 20, &p, &eb), 0);
	a = make_tap("ram:1M", "a", false);
	fill(a, 0, 4096, 'a');
	b = make_tap_in("tap:a", "b", "p2");
	/* Nor may either move into the other's pool. */
	ck_assert_int_eq(tap_set_pool(b, POOL_DEFAULT, &eb), -EINVAL);
	ck_assert_int_eq(tap_set_pool(a, "p2", &eb), -EINVAL);
	ck_assert_int_eq(tap_set_pool(b, "p1", &eb), 0);
	ck_assert_int_eq(tap_set_pool(b, "p2", &eb), 0);
	pause_now(a);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(a, "tap:b", &eb), -ELOOP);
	ck_assert_msg(strstr(eb.msg, "a -> b -> a"), "%s", eb.msg);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(a, "tap:a", &eb), -ELOOP);
	ck_assert_msg(strstr(eb.msg, "a -> a"), "%s", eb.msg);
	ck_assert_int_eq(tap_state(a), TAP_PAUSED);
	tap_get_stats(b, &st);
	ck_assert_uint_eq(st.chain_depth, 1); /* tap:a, a paused */
	ck_assert_int_eq(unpause_wait(a, NULL, &eb), 0);
	tap_get_stats(b, &st);
	ck_assert_uint_eq(st.chain_depth, 2);
	read_back(b, 0, 4096, got);
	ck_assert_int_eq(got[4095], 'a');
	/* One pool for a tap and the tap it reads through: refused. */
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	ck_assert_msg(strstr(eb.msg, "different pools"), "%s", eb.msg);
	/* Nor a pool again further down: c (default) over b (p2) over a
	 * (default) could hold all of default waiting for a. */
	cfg.image = "tap:b";
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	ck_assert_msg(strstr(eb.msg, "wait on itself"), "%s", eb.msg);
	ck_assert_int_eq(tap_destroy(b, &eb), 0);

	/* a and 15 more on it make 16, each level in a pool of its own; a
	 * 17th is refused. */
	for (int i = 2; i <= TAP_STACK_MAX; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		snprintf(img, sizeof(img), i == 2 ? "tap:a" : "tap:s%d", i - 1);
		ck_assert_int_eq(pool_create(name, 1 << 20, &p, &eb), 0);
		make_tap_in(img, name, name);
	}
	tap_get_stats(tap_find(name), &st);
	ck_assert_uint_eq(st.chain_depth, TAP_STACK_MAX);
	cfg.name = "s17";
	cfg.image = img;
	snprintf(img, sizeof(img), "tap:%s", name);
	cfg.pool = "p1";
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -ELOOP);
	ck_assert_msg(strstr(eb.msg, "deeper than 16"), "%s", eb.msg);
	/* Deepening from below: a on a tap with one under it makes 18. */
	make_tap_in("ram:1M", "x1", "p2");
	make_tap_in("tap:x1", "x2", "p1");
	pause_now(a);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(a, "tap:x2", &eb), -ELOOP);
	ck_assert_msg(strstr(eb.msg, "18 taps"), "%s", eb.msg);
	ck_assert_int_eq(unpause_wait(a, NULL, &eb), 0);
	read_back(tap_find(name), 0, 4096, got);
	ck_assert_int_eq(got[0], 'a');
}
END_TEST

/* Issue 10, defect 5: a pause keeps a ram: disk; a new image string
 * replaces it. */
START_TEST(test_ram_pause)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = make_tap("ram:1M", "r", false);
	char got[4096];

	fill(t, 8192, 4096, 'r');
	pause_now(t);
	ck_assert_int_eq(unpause_wait(t, NULL, &eb), 0);
	read_back(t, 8192, 4096, got);
	ck_assert_int_eq(got[0], 'r');
	ck_assert_int_eq(got[4095], 'r');
	/* A failed unpause keeps it too. */
	pause_now(t);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(t, "ram:2M", &eb), -ERANGE);
	ck_assert_int_eq(unpause_wait(t, "", &eb), 0);
	read_back(t, 8192, 4096, got);
	ck_assert_int_eq(got[0], 'r');
	pause_now(t);
	ck_assert_int_eq(unpause_wait(t, "ram:1M", &eb), 0);
	read_back(t, 8192, 4096, got);
	ck_assert_int_eq(got[0], 0);
	/* Destroyed while paused: the kept disk goes with it (valgrind). */
	fill(t, 0, 4096, 'x');
	pause_now(t);
	ck_assert_int_eq(tap_destroy(t, &eb), 0);
}
END_TEST

/* Issue 10, item 8: names that read as paths or options, and empty images. */
START_TEST(test_names_and_empty)
{
	static const char *bad[] = { ".", "..", "-", "-a", ".a", "a/b", "12", "" };
	struct errbuf eb = { { 0 } };
	struct tap_config cfg = { .image = "null:1M" };
	char spec[700], empty[600];
	struct tap *t;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&eb, 0, sizeof(eb));
		ck_assert_int_eq(tap_name_check(bad[i], &eb), -EINVAL);
		ck_assert_msg(strstr(eb.msg, "bad tap name"), "%s", eb.msg);
		cfg.name = bad[i];
		memset(&eb, 0, sizeof(eb));
		ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	}
	ck_assert(strstr(eb.msg, "1 to 63"));
	ck_assert_int_eq(tap_name_check("a.-_9", &eb), 0);
	ck_assert_int_eq(tap_count(), 0);
	make_file("empty.raw", 0, 0, empty, sizeof(empty));
	snprintf(spec, sizeof(spec), "raw:%s", empty);
	cfg.name = "e";
	cfg.image = spec;
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(create_wait(&cfg, &t, &eb), -EINVAL);
	ck_assert_msg(strstr(eb.msg, spec) && strstr(eb.msg, "0 bytes"), "%s", eb.msg);
	t = make_tap("ram:1M", "e", false);
	pause_now(t);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(unpause_wait(t, spec, &eb), -EINVAL);
	ck_assert_int_eq(tap_state(t), TAP_PAUSED);
	ck_assert_int_eq(unpause_wait(t, NULL, &eb), 0);
	unlink(empty);
}
END_TEST

START_TEST(test_qos_waits)
{
	struct tap_req r[12];
	struct tap_stats st;
	struct tap *t = make_tap("null:1M", "q", false);
	uint64_t iops, bps;

	tap_set_qos(t, 2, 0);
	tap_get_qos(t, &iops, &bps);
	ck_assert_uint_eq(iops, 2);
	for (int i = 0; i < 12; i++) {
		r[i] = (struct tap_req){ .op = IMAGE_OP_READ, .off = 0, .len = 4096, .done = on_done };
		ck_assert_int_eq(tap_req_prepare(t, &r[i], no_wait), 0);
		tap_req_submit(&r[i]);
	}
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	/* The burst is one second's worth: 2 (3 if the clock ticked). */
	ck_assert_int_le(completed, 3);
	tap_get_stats(t, &st);
	ck_assert_uint_ge(st.waiting, 9);
	/* Lifting the limit lets the rest go, in order. */
	tap_set_qos(t, 0, 0);
	run_until(12);
	for (int i = 0; i < 12; i++) {
		ck_assert_int_eq(r[i].error, 0);
		tap_req_release(&r[i]);
	}
	tap_get_stats(t, &st);
	ck_assert_uint_eq(st.waiting, 0);

	/* A hole probe standing in for a READ pays for it: the second one
	 * waits for the bytes the first took. A client's block status is
	 * free. */
	{
		struct image_extent ext[4];
		struct tap_req p[3];
		int before = completed;

		tap_set_qos(t, 0, 4096);
		for (int i = 0; i < 3; i++) {
			p[i] = (struct tap_req){ .op = IMAGE_OP_BLOCK_STATUS, .off = 0, .len = 65536,
						 .flags = i < 2 ? TAP_F_READ_PROBE : 0,
						 .ext = ext, .ext_max = 4, .done = on_done };
			ck_assert_int_eq(tap_req_prepare(t, &p[i], no_wait), 0);
			tap_req_submit(&p[i]);
		}
		for (int i = 0; i < 20; i++)
			event_base_loop(base, EVLOOP_NONBLOCK);
		ck_assert_int_eq(completed, before + 2);
		tap_get_stats(t, &st);
		ck_assert_uint_eq(st.waiting, 1);
		tap_set_qos(t, 0, 0);
		run_until(before + 3);
		for (int i = 0; i < 3; i++)
			tap_req_release(&p[i]);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tap");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_unaligned_rmw);
	tcase_add_test(tc, test_overlapping_rmw);
	tcase_add_test(tc, test_validation);
	tcase_add_test(tc, test_bad_create);
	tcase_add_test(tc, test_wait_for_memory);
	tcase_add_test(tc, test_piece_plan);
	tcase_add_test(tc, test_pieces_raw);
	tcase_add_test(tc, test_shrink_waiter_pieces);
	tcase_add_test(tc, test_minors_and_busy);
	tcase_add_test(tc, test_shutdown_flushes);
	tcase_add_test(tc, test_zeroes_unaligned);
	tcase_add_test(tc, test_trim_and_extents_raw);
	tcase_add_test(tc, test_ram_ops);
	tcase_add_test(tc, test_pause_unpause);
	tcase_add_test(tc, test_shutdown_while_paused);
	tcase_add_test(tc, test_set_pool_live);
	tcase_add_test(tc, test_stacked);
	tcase_add_test(tc, test_qos_waits);
	tcase_add_test(tc, test_stack_loop);
	tcase_add_test(tc, test_ram_pause);
	tcase_add_test(tc, test_names_and_empty);
	return check_run(s, tc);
}
