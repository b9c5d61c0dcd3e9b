/* Unit tests for buffer pools: accounting, strict FIFO wake-up from the event
 * loop, resize in both directions while buffers are out, and destruction;
 * the memory limits (with made-up /proc numbers), the count limit, and
 * creates and grows mapped on the workers. */
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check-run.h"
#include "lib/worker.h"
#include "pools/pool.h"

#define K 1024u
#define M (1024u * 1024u)

static struct event_base *base;

/* A waiter that records what it was told, and the order it was told in. */
struct rec {
	struct pool_waiter w;
	void *buf;
	int err;
	int calls;
	int order;
};

static int ready_seq;

static void rec_ready(struct pool_waiter *w, void *buf, int err)
{
	struct rec *r = container_of(w, struct rec, w);

	r->buf = buf;
	r->err = err;
	r->calls++;
	r->order = ++ready_seq;
}

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	r->w.ready = rec_ready;
}

static void setup(void)
{
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	pool_setup(base);
	ready_seq = 0;
}

static void teardown(void)
{
	pool_set_listener(NULL);
	pool_teardown();
	event_base_free(base);
}

static void run_loop(void)
{
	ck_assert_int_ge(event_base_loop(base, EVLOOP_NONBLOCK), 0);
}

static struct pool *mkpool(const char *name, uint64_t size)
{
	struct errbuf eb = { "" };
	struct pool *p = NULL;

	ck_assert_msg(pool_create(name, size, &p, &eb) == 0, "create %s: %s", name, eb.msg);
	ck_assert_ptr_nonnull(p);
	return p;
}

static void *get_now(struct pool *p, size_t len)
{
	void *buf = NULL;

	ck_assert_int_eq(pool_get(p, len, NULL, &buf), 0);
	ck_assert_ptr_nonnull(buf);
	return buf;
}

static struct pool_stats stats(struct pool *p)
{
	struct pool_stats st;

	pool_get_stats(p, &st);
	return st;
}

START_TEST(test_accounting)
{
	struct pool *p = mkpool("acct", 100 * K + 1);
	struct pool_stats st = stats(p);
	void *a, *b;

	ck_assert_uint_eq(st.size, 104 * K); /* rounded up to a page */
	ck_assert_uint_ge(st.mapped, st.size);
	ck_assert_uint_eq(st.in_use, 0);
	ck_assert_uint_eq(st.waiters, 0);
	ck_assert_uint_eq(st.taps, 0);

	a = get_now(p, 10 * K); /* 3 pages */
	b = get_now(p, 4 * K);
	st = stats(p);
	ck_assert_uint_eq(st.in_use, 16 * K);
	ck_assert_uint_eq(st.high_water, 16 * K);
	pool_put(p, a, 10 * K);
	st = stats(p);
	ck_assert_uint_eq(st.in_use, 4 * K);
	ck_assert_uint_eq(st.high_water, 16 * K);
	pool_put(p, b, 4 * K);
	ck_assert_uint_eq(stats(p).in_use, 0);

	pool_ref(p);
	pool_ref(p);
	ck_assert_uint_eq(stats(p).taps, 2);
	pool_unref(p);
	ck_assert_uint_eq(stats(p).taps, 1);

	ck_assert_ptr_eq(pool_find("acct"), p);
	ck_assert_ptr_eq(pool_first(), p);
	ck_assert_ptr_null(pool_next(p));
	ck_assert_str_eq(pool_name(p), "acct");
}
END_TEST

START_TEST(test_aligned_writable)
{
	static const size_t lens[] = { 1, 4096, 4097, 65536, 12345, 3 * M };
	struct pool *p = mkpool("wr", 8 * M);
	void *bufs[ARRAY_SIZE(lens)];

	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		bufs[i] = get_now(p, lens[i]);
		ck_assert_uint_eq((uintptr_t)bufs[i] % POOL_PAGE, 0);
		memset(bufs[i], 0xa0 + (int)i, ALIGN_UP(lens[i], POOL_PAGE));
	}
	/* No two buffers overlap: every byte still holds its own pattern. */
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		unsigned char *c = bufs[i];
		size_t j = 0, n = ALIGN_UP(lens[i], POOL_PAGE);

		while (j < n && c[j] == 0xa0 + i)
			j++;
		ck_assert_uint_eq(j, n);
	}
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++)
		pool_put(p, bufs[i], lens[i]);
	ck_assert_uint_eq(stats(p).in_use, 0);
}
END_TEST

START_TEST(test_einval)
{
	struct pool *small = mkpool("small", 64 * K);
	struct pool *big = mkpool("big", 64 * M);
	struct rec r;
	void *buf;

	rec_init(&r);
	ck_assert_int_eq(pool_get(small, 0, &r.w, &buf), -EINVAL);
	ck_assert_int_eq(pool_get(small, 64 * K + 1, &r.w, &buf), -EINVAL);
	ck_assert_int_eq(pool_get(big, POOL_ARENA_MAX + 1, &r.w, &buf), -EINVAL);
	ck_assert_int_eq(pool_get(big, SIZE_MAX, &r.w, &buf), -EINVAL);
	ck_assert(!r.w.queued);
	ck_assert_uint_eq(stats(small).waiters, 0);
	/* The largest legal requests are served. */
	buf = get_now(small, 64 * K);
	pool_put(small, buf, 64 * K);
	buf = get_now(big, POOL_ARENA_MAX);
	pool_put(big, buf, POOL_ARENA_MAX);
}
END_TEST

START_TEST(test_fifo_order)
{
	struct pool *p = mkpool("fifo", 64 * K);
	struct rec r[3];
	static const size_t lens[] = { 12 * K, 4 * K, 8 * K };
	void *all = get_now(p, 64 * K), *buf;

	for (int i = 0; i < 3; i++) {
		rec_init(&r[i]);
		ck_assert_int_eq(pool_get(p, lens[i], &r[i].w, &buf), 1);
		ck_assert(r[i].w.queued);
	}
	ck_assert_uint_eq(stats(p).waiters, 3);
	pool_put(p, all, 64 * K);
	/* Never woken from inside pool_put(). */
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(r[i].calls, 0);
	run_loop();
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(r[i].calls, 1);
		ck_assert_int_eq(r[i].err, 0);
		ck_assert_ptr_nonnull(r[i].buf);
		ck_assert_int_eq(r[i].order, i + 1);
		ck_assert(!r[i].w.queued);
	}
	ck_assert_uint_eq(stats(p).in_use, 24 * K);
	ck_assert_uint_eq(stats(p).waiters, 0);
	for (int i = 0; i < 3; i++)
		pool_put(p, r[i].buf, lens[i]);
}
END_TEST

START_TEST(test_no_overtaking)
{
	struct pool *p = mkpool("fair", 64 * K);
	void *held = get_now(p, 48 * K), *buf = NULL;
	struct rec bigw, smallw;

	rec_init(&bigw);
	rec_init(&smallw);
	ck_assert_int_eq(pool_get(p, 32 * K, &bigw.w, &buf), 1);
	/* 16K are free, but the big waiter came first. */
	ck_assert_int_eq(pool_get(p, 4 * K, &smallw.w, &buf), 1);
	ck_assert_int_eq(pool_get(p, 4 * K, NULL, &buf), -EAGAIN);
	run_loop();
	ck_assert_int_eq(bigw.calls + smallw.calls, 0);
	ck_assert_uint_eq(stats(p).in_use, 48 * K);

	pool_put(p, held, 48 * K);
	run_loop();
	ck_assert_int_eq(bigw.calls, 1);
	ck_assert_int_eq(smallw.calls, 1);
	ck_assert_int_lt(bigw.order, smallw.order);
	pool_put(p, bigw.buf, 32 * K);
	pool_put(p, smallw.buf, 4 * K);
}
END_TEST

START_TEST(test_exhaustion_resume)
{
	struct pool *p = mkpool("exh", 16 * K);
	void *b[4], *buf;
	struct rec r;

	for (int i = 0; i < 4; i++)
		b[i] = get_now(p, 4 * K);
	rec_init(&r);
	ck_assert_int_eq(pool_get(p, 8 * K, &r.w, &buf), 1);
	pool_put(p, b[0], 4 * K);
	run_loop();
	ck_assert_int_eq(r.calls, 0); /* 4K free, 8K wanted */
	pool_put(p, b[2], 4 * K);
	run_loop();
	/* Free pages are not contiguous: one arena, pages 0 and 2. */
	ck_assert_int_eq(r.calls, 0);
	pool_put(p, b[1], 4 * K);
	run_loop();
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.err, 0);
	memset(r.buf, 1, 8 * K);
	ck_assert_uint_eq(stats(p).in_use, 12 * K);
	pool_put(p, r.buf, 8 * K);
	pool_put(p, b[3], 4 * K);
	ck_assert_uint_eq(stats(p).in_use, 0);
	ck_assert_uint_eq(stats(p).high_water, 16 * K);
}
END_TEST

START_TEST(test_cancel)
{
	struct pool *p = mkpool("cancel", 16 * K);
	void *all = get_now(p, 16 * K), *buf;
	struct rec a, b;

	rec_init(&a);
	rec_init(&b);
	ck_assert_int_eq(pool_get(p, 16 * K, &a.w, &buf), 1);
	ck_assert_int_eq(pool_get(p, 4 * K, &b.w, &buf), 1);
	pool_put(p, all, 16 * K);
	pool_cancel(p, &a.w);
	pool_cancel(p, &a.w); /* no-op when not queued */
	run_loop();
	ck_assert_int_eq(a.calls, 0);
	ck_assert_int_eq(b.calls, 1);
	ck_assert_uint_eq(stats(p).waiters, 0);
	pool_put(p, b.buf, 4 * K);
}
END_TEST

START_TEST(test_grow_wakes)
{
	struct pool *p = mkpool("grow", 64 * K);
	void *all = get_now(p, 64 * K), *buf;
	struct errbuf eb = { "" };
	struct rec r;

	rec_init(&r);
	ck_assert_int_eq(pool_get(p, 32 * K, &r.w, &buf), 1);
	ck_assert_int_eq(pool_resize(p, 128 * K, &eb), 0);
	ck_assert_uint_eq(stats(p).size, 128 * K);
	ck_assert_uint_ge(stats(p).mapped, 128 * K);
	ck_assert_int_eq(r.calls, 0);
	run_loop();
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.err, 0);
	memset(r.buf, 2, 32 * K);
	ck_assert_uint_eq(stats(p).in_use, 96 * K);
	pool_put(p, all, 64 * K);
	pool_put(p, r.buf, 32 * K);
}
END_TEST

START_TEST(test_shrink_in_use)
{
	struct pool *p = mkpool("shrink", 64 * M);
	struct errbuf eb = { "" };
	struct pool_stats st;
	void *a, *b, *c, *buf;
	struct rec r;

	ck_assert_uint_eq(stats(p).mapped, 64 * M);
	a = get_now(p, POOL_ARENA_MAX); /* one whole arena each */
	b = get_now(p, 16 * M);
	c = get_now(p, 16 * M);
	ck_assert_int_eq(pool_resize(p, 8 * M, &eb), 0);
	st = stats(p);
	ck_assert_uint_eq(st.size, 8 * M);
	ck_assert_uint_eq(st.in_use, 64 * M);
	ck_assert_uint_eq(st.mapped, 64 * M);
	/* Over capacity: even a small request waits. */
	rec_init(&r);
	ck_assert_int_eq(pool_get(p, 4 * K, &r.w, &buf), 1);
	ck_assert_int_eq(pool_get(p, 8 * M + 1, NULL, &buf), -EINVAL);

	pool_put(p, a, POOL_ARENA_MAX);
	ck_assert_uint_eq(stats(p).mapped, 32 * M);
	pool_put(p, b, 16 * M);
	ck_assert_uint_eq(stats(p).mapped, 32 * M); /* c still holds it */
	run_loop();
	ck_assert_int_eq(r.calls, 0); /* in_use 16M > 8M */
	pool_put(p, c, 16 * M);
	st = stats(p);
	ck_assert_uint_eq(st.mapped, 8 * M);
	ck_assert_uint_eq(st.in_use, 0);
	run_loop();
	ck_assert_int_eq(r.calls, 1);
	pool_put(p, r.buf, 4 * K);

	buf = get_now(p, 8 * M);
	memset(buf, 3, 8 * M);
	pool_put(p, buf, 8 * M);
	/* Growing back maps the missing arenas and serves a full arena. */
	ck_assert_int_eq(pool_resize(p, 40 * M, &eb), 0);
	ck_assert_uint_eq(stats(p).mapped, 40 * M);
	buf = get_now(p, POOL_ARENA_MAX);
	pool_put(p, buf, POOL_ARENA_MAX);
	ck_assert_uint_eq(stats(p).mapped, 40 * M);
}
END_TEST

START_TEST(test_shrink_fails_waiter)
{
	struct pool *p = mkpool("shrinkw", 64 * K);
	void *all = get_now(p, 64 * K), *buf;
	struct errbuf eb = { "" };
	struct rec big, small;

	rec_init(&big);
	rec_init(&small);
	ck_assert_int_eq(pool_get(p, 32 * K, &big.w, &buf), 1);
	ck_assert_int_eq(pool_get(p, 4 * K, &small.w, &buf), 1);
	ck_assert_int_eq(pool_resize(p, 16 * K, &eb), 0);
	run_loop();
	ck_assert_int_eq(big.calls, 1);
	ck_assert_int_eq(big.err, -EINVAL);
	ck_assert_ptr_null(big.buf);
	ck_assert(!big.w.queued);
	ck_assert_int_eq(small.calls, 0);
	ck_assert_uint_eq(stats(p).waiters, 1);
	pool_put(p, all, 64 * K);
	run_loop();
	ck_assert_int_eq(small.calls, 1);
	ck_assert_int_eq(small.err, 0);
	ck_assert_uint_eq(stats(p).mapped, 16 * K);
	pool_put(p, small.buf, 4 * K);
}
END_TEST

START_TEST(test_names)
{
	static const char *const bad[] = { "", "a b", "a/b", ".", "..", "é", "x\n",
		"0123456789012345678901234567890123456789012345678901234567890123" };
	struct errbuf eb = { "" };
	struct pool *p;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		memset(&eb, 0, sizeof(eb));
		ck_assert_int_eq(pool_create(bad[i], 64 * K, &p, &eb), -EINVAL);
		ck_assert_str_ne(eb.msg, "");
	}
	mkpool("ok-Name_1.2", 64 * K);
	mkpool("012345678901234567890123456789012345678901234567890123456789012", 4 * K);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_create("ok-Name_1.2", 64 * K, &p, &eb), -EEXIST);
	ck_assert_str_ne(eb.msg, "");
	ck_assert_int_eq(pool_create("tiny", 100, &p, NULL), -EINVAL);
	ck_assert_int_eq(pool_create("huge", UINT64_MAX, &p, NULL), -EINVAL);
	ck_assert_ptr_null(pool_find("tiny"));
	ck_assert_int_eq(pool_resize(pool_find("ok-Name_1.2"), 0, NULL), -EINVAL);
}
END_TEST

START_TEST(test_destroy)
{
	struct pool *def = mkpool(POOL_DEFAULT, 64 * K);
	struct pool *p = mkpool("mine", 64 * K);
	struct errbuf eb = { "" };
	void *buf;

	ck_assert_int_eq(pool_destroy(def, &eb), -EBUSY);
	ck_assert_str_eq(eb.msg, "the default pool cannot be destroyed");

	pool_ref(p);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_destroy(p, &eb), -EBUSY);
	ck_assert_str_eq(eb.msg, "pool mine is used by 1 taps");
	pool_unref(p);

	buf = get_now(p, 4 * K);
	ck_assert_int_eq(pool_destroy(p, NULL), -EBUSY);
	pool_put(p, buf, 4 * K);
	ck_assert_int_eq(pool_destroy(p, &eb), 0);
	ck_assert_ptr_null(pool_find("mine"));
	ck_assert_ptr_eq(pool_first(), def);
	ck_assert_ptr_null(pool_next(def));
	/* The name is free again. */
	mkpool("mine", 4 * K);
}
END_TEST

START_TEST(test_teardown_fails_waiters)
{
	struct pool *p = mkpool(POOL_DEFAULT, 16 * K);
	struct rec r;
	void *buf;

	get_now(p, 16 * K);
	rec_init(&r);
	ck_assert_int_eq(pool_get(p, 4 * K, &r.w, &buf), 1);
	pool_teardown();
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.err, -ESHUTDOWN);
	ck_assert_ptr_null(pool_first());
	run_loop(); /* no stale event left behind */
}
END_TEST

/* A waiter's callback may give its buffer back and destroy the pool while
 * the pool is waking it; the pool must outlive its own wake-up. */
static void put_and_destroy(struct pool_waiter *w, void *buf, int err)
{
	struct pool *p = pool_find("reent");

	rec_ready(w, buf, err);
	pool_put(p, buf, w->len);
	ck_assert_int_eq(pool_destroy(p, NULL), 0);
}

START_TEST(test_reentrant_destroy)
{
	struct pool *p = mkpool("reent", 16 * K);
	void *all = get_now(p, 16 * K), *buf;
	struct rec a, b;

	rec_init(&a);
	rec_init(&b);
	a.w.ready = put_and_destroy;
	ck_assert_int_eq(pool_get(p, 4 * K, &a.w, &buf), 1);
	ck_assert_int_eq(pool_get(p, 4 * K, &b.w, &buf), 1);
	pool_put(p, all, 16 * K);
	run_loop();
	ck_assert_int_eq(a.calls, 1);
	ck_assert_int_eq(b.calls, 1);
	ck_assert_int_eq(b.err, -ESHUTDOWN);
	ck_assert_ptr_null(pool_find("reent"));
}
END_TEST

/* Raise or drop CAP_IPC_LOCK in the effective set (it stays permitted). */
static void ipc_lock_cap(bool on)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	ck_assert_int_eq(syscall(SYS_capget, &h, d), 0);
	if (on)
		d[0].effective |= d[0].permitted & (1u << CAP_IPC_LOCK);
	else
		d[0].effective &= ~(1u << CAP_IPC_LOCK);
	ck_assert_int_eq(syscall(SYS_capset, &h, d), 0);
}

/* Without the right to lock memory a locking daemon refuses a pool it
 * could not lock, with the numbers; one that does not lock makes it, and
 * says it is not locked. */
START_TEST(test_mlock_denied)
{
	struct rlimit old, none;
	struct errbuf eb = { "" };
	struct pool *p;
	void *buf;

	ck_assert_int_eq(getrlimit(RLIMIT_MEMLOCK, &old), 0);
	none = old;
	none.rlim_cur = 0;
	ck_assert_int_eq(setrlimit(RLIMIT_MEMLOCK, &none), 0);
	ipc_lock_cap(false);
	ck_assert_int_eq(pool_create("unlocked", 64 * K, &p, &eb), -ENOMEM);
	ck_assert_msg(strstr(eb.msg, "65536 bytes asked, 0 available to lock (RLIMIT_MEMLOCK 0"),
		      "%s", eb.msg);
	/* Not locking (--no-mlock, or a daemon that could not lock). */
	pool_set_lock(false);
	p = mkpool("unlocked", 64 * K);
	pool_set_lock(true);
	ipc_lock_cap(true);
	ck_assert_int_eq(setrlimit(RLIMIT_MEMLOCK, &old), 0);
	ck_assert(!stats(p).locked);
	buf = get_now(p, 64 * K);
	memset(buf, 4, 64 * K);
	pool_put(p, buf, 64 * K);
	/* Where locking is allowed, a new pool is locked. */
	if (mlock(buf, 1) == 0) {
		munlock(buf, 1);
		ck_assert(stats(mkpool("locked", 64 * K)).locked);
	}
}
END_TEST

static int events[3];
static struct pool *last_pool;

static void listener(struct pool *p, enum pool_event ev)
{
	events[ev]++;
	last_pool = p;
}

START_TEST(test_listener)
{
	struct pool *p;
	void *buf;
	struct errbuf eb = { "" };

	pool_set_listener(listener);
	p = mkpool("heard", 16 * K);
	ck_assert_int_eq(events[POOL_ADDED], 1);
	ck_assert_ptr_eq(last_pool, p);
	buf = get_now(p, 4 * K);
	ck_assert_int_ge(events[POOL_CHANGED], 1);
	events[POOL_CHANGED] = 0;
	pool_put(p, buf, 4 * K);
	ck_assert_int_ge(events[POOL_CHANGED], 1);
	events[POOL_CHANGED] = 0;
	ck_assert_int_eq(pool_resize(p, 32 * K, &eb), 0);
	ck_assert_int_ge(events[POOL_CHANGED], 1);
	ck_assert_int_eq(pool_destroy(p, &eb), 0);
	ck_assert_int_eq(events[POOL_REMOVED], 1);
}
END_TEST

/* Random gets, puts and cancels against a model: buffers never overlap, the
 * books balance, and once everything is returned every waiter was served. */
START_TEST(test_stress)
{
	enum { N = 64 };
	struct pool *p = mkpool("stress", 40 * M);
	struct rec r[N];
	size_t lens[N];
	bool held[N] = { false };
	uint64_t sum = 0;
	unsigned seed = 12345;

	for (int i = 0; i < N; i++)
		rec_init(&r[i]);
	for (int step = 0; step < 4000; step++) {
		int i = rand_r(&seed) % N;

		if (held[i]) {
			unsigned char *c = r[i].buf;

			for (size_t o = 0; o < lens[i]; o += POOL_PAGE)
				ck_assert_uint_eq(c[o], (unsigned char)i);
			ck_assert_uint_eq(c[lens[i] - 1], (unsigned char)i);
			pool_put(p, r[i].buf, lens[i]);
			held[i] = false;
			sum -= ALIGN_UP(lens[i], POOL_PAGE);
		} else if (r[i].w.queued) {
			if (rand_r(&seed) % 4 == 0)
				pool_cancel(p, &r[i].w);
		} else {
			lens[i] = 1 + rand_r(&seed) % (rand_r(&seed) % 8 ? 256 * K : 32 * M);
			r[i].calls = 0;
			if (pool_get(p, lens[i], &r[i].w, &r[i].buf) == 0)
				r[i].calls = 1;
		}
		if (step % 7 == 0)
			run_loop();
		for (int j = 0; j < N; j++) {
			if (r[j].calls && !held[j]) {
				ck_assert_int_eq(r[j].err, 0);
				unsigned char *c = r[j].buf;

				/* One byte a page is enough to catch overlaps. */
				for (size_t o = 0; o < lens[j]; o += POOL_PAGE)
					c[o] = j;
				c[lens[j] - 1] = j;
				held[j] = true;
				r[j].calls = 0;
				sum += ALIGN_UP(lens[j], POOL_PAGE);
			}
		}
		ck_assert_uint_eq(stats(p).in_use, sum);
		ck_assert_uint_le(sum, 40 * M);
	}
	/* Drain: return everything; all remaining waiters must be served. */
	for (int round = 0; round < 2 * N; round++) {
		for (int j = 0; j < N; j++) {
			if (held[j]) {
				pool_put(p, r[j].buf, lens[j]);
				held[j] = false;
			}
		}
		run_loop();
		for (int j = 0; j < N; j++)
			if (r[j].calls) {
				held[j] = true;
				r[j].calls = 0;
			}
	}
	ck_assert_uint_eq(stats(p).waiters, 0);
	ck_assert_uint_eq(stats(p).in_use, 0);
}
END_TEST

#define G (1024ull * M)

/* A made-up host: 32 GiB, 23.4 GiB available, locking unlimited. */
static struct pool_mem fake_mem(void)
{
	return (struct pool_mem){
		.available = 234 * G / 10, .total = 32 * G, .lock_limit = UINT64_MAX, .lock = true};
}

START_TEST(test_mem_check)
{
	struct pool_mem m = fake_mem();
	struct errbuf eb = { "" };

	/* 1 GiB reserve: 22.4 GiB may be taken. */
	ck_assert_int_eq(pool_mem_check("x", 22 * G, &m, &eb), 0);
	ck_assert_int_eq(pool_mem_check("x", 1ull << 40, &m, &eb), -ENOMEM);
	ck_assert_str_eq(eb.msg, "pool 'x': 1099511627776 bytes asked, 22.4G available to lock "
				 "(MemAvailable 23.4G less 1G reserve)");
	ck_assert_int_eq(pool_mem_check("x", 224 * G / 10 + POOL_PAGE, &m, NULL), -ENOMEM);
	/* What other creates have still to map counts. */
	m.pending = 20 * G;
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_mem_check("y", 3 * G, &m, &eb), -ENOMEM);
	ck_assert_msg(strstr(eb.msg, ", 20G being mapped for other pools)"), "%s", eb.msg);
	ck_assert_int_eq(pool_mem_check("y", 2 * G, &m, NULL), 0);
	/* A small host keeps a sixteenth. */
	m = fake_mem();
	m.total = 2 * G;
	m.available = 1 * G;
	ck_assert_int_eq(pool_mem_check("s", 896 * M, &m, NULL), 0);
	ck_assert_int_eq(pool_mem_check("s", 896 * M + POOL_PAGE, &m, NULL), -ENOMEM);
	/* Unknown MemAvailable: no such limit. */
	m.available = UINT64_MAX;
	ck_assert_int_eq(pool_mem_check("s", 1ull << 40, &m, NULL), 0);

	/* RLIMIT_MEMLOCK counts what is locked already, when pools lock. */
	m = fake_mem();
	m.lock_limit = 64 * M;
	m.locked = 16 * M;
	ck_assert_int_eq(pool_mem_check("r", 48 * M, &m, NULL), 0);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_mem_check("r", 48 * M + POOL_PAGE, &m, &eb), -ENOMEM);
	ck_assert_msg(strstr(eb.msg, "pool 'r': 50335744 bytes asked, 48M available to lock "
				     "(RLIMIT_MEMLOCK 64M, 16M locked already"),
		      "%s", eb.msg);
	m.pending = 40 * M;
	ck_assert_int_eq(pool_mem_check("r", 16 * M, &m, NULL), -ENOMEM);
	/* Not locking (--no-mlock): only MemAvailable counts. */
	m.lock = false;
	ck_assert_int_eq(pool_mem_check("r", 1 * G, &m, NULL), 0);
	/* The real numbers of this host refuse an absurd size. */
	pool_mem_read(&m);
	if (m.available != UINT64_MAX)
		ck_assert_int_eq(pool_mem_check("z", m.available, &m, NULL), -ENOMEM);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_create("z", 1ull << 46, NULL, &eb), -ENOMEM);
	ck_assert_msg(strstr(eb.msg, "70368744177664 bytes asked"), "%s", eb.msg);
	ck_assert_ptr_null(pool_find_any("z"));
}
END_TEST

START_TEST(test_count_limit)
{
	struct errbuf eb = { "" };
	char name[16];
	struct pool *p;

	for (unsigned i = 0; i < POOL_COUNT_MAX; i++) {
		snprintf(name, sizeof(name), "p%u", i);
		mkpool(name, POOL_PAGE);
	}
	ck_assert_int_eq(pool_create("one-more", POOL_PAGE, &p, &eb), -ENOSPC);
	ck_assert_str_eq(eb.msg, "pool one-more: there are 256 pools already, the most tapd keeps");
	ck_assert_int_eq(pool_create_async("one-more", POOL_PAGE, NULL, NULL, NULL), -ENOSPC);
	ck_assert_ptr_null(pool_find_any("one-more"));
	ck_assert_int_eq(pool_destroy(pool_find("p7"), NULL), 0);
	mkpool("one-more", POOL_PAGE);
}
END_TEST

/* What a pool_done_fn was told. */
struct done_rec {
	int calls, err;
	struct pool *p;
	char msg[256];
};

static void rec_done(void *arg, struct pool *p, int err, const char *msg)
{
	struct done_rec *d = arg;

	d->calls++;
	d->p = p;
	d->err = err;
	snprintf(d->msg, sizeof(d->msg), "%s", msg ? msg : "");
}

/* Run the loop until d is told, at most about 60 s. */
static void wait_done(struct done_rec *d)
{
	static const struct timeval tick = { 0, 10000 };

	for (int i = 0; i < 6000 && !d->calls; i++) {
		event_base_loopexit(base, &tick);
		ck_assert_int_ge(event_base_loop(base, 0), 0);
	}
	ck_assert_int_eq(d->calls, 1);
}

START_TEST(test_async_create)
{
	struct done_rec d = { 0 };
	struct errbuf eb = { "" };
	struct pool *p;
	void *buf;

	ck_assert_int_eq(worker_setup(base, 1), 0);
	ck_assert_int_eq(pool_create_async("big", 80 * M, rec_done, &d, &eb), 1);
	ck_assert_int_eq(d.calls, 0); /* never from inside the call */
	/* Listed, not usable by taps, refuses what would race the workers. */
	ck_assert_ptr_null(pool_find("big"));
	p = pool_find_any("big");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(stats(p).state, POOL_CREATING);
	ck_assert_uint_eq(stats(p).target, 80 * M);
	ck_assert_int_eq(pool_create_async("big", 4 * K, rec_done, &d, &eb), -EEXIST);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_destroy(p, &eb), -EBUSY);
	ck_assert_msg(strstr(eb.msg, "pool big is being created ("), "%s", eb.msg);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_resize_async(p, 96 * M, rec_done, &d, &eb), -EBUSY);
	ck_assert_msg(strstr(eb.msg, "a create is in progress"), "%s", eb.msg);
	wait_done(&d);
	ck_assert_int_eq(d.err, 0);
	ck_assert_ptr_eq(d.p, p);
	ck_assert_ptr_eq(pool_find("big"), p);
	ck_assert_int_eq(stats(p).state, POOL_READY);
	ck_assert_uint_eq(stats(p).size, 80 * M);
	ck_assert_uint_eq(stats(p).mapped, 80 * M);
	buf = get_now(p, POOL_ARENA_MAX);
	memset(buf, 5, POOL_ARENA_MAX);
	pool_put(p, buf, POOL_ARENA_MAX);
	ck_assert_int_eq(pool_destroy(p, NULL), 0);
	worker_teardown();
}
END_TEST

START_TEST(test_async_grow)
{
	struct pool *p = mkpool("g", 64 * K);
	void *all = get_now(p, 64 * K), *buf;
	struct done_rec d = { 0 };
	struct errbuf eb = { "" };
	struct rec r;

	ck_assert_int_eq(worker_setup(base, 2), 0);
	rec_init(&r);
	ck_assert_int_eq(pool_get(p, 32 * K, &r.w, &buf), 1);
	ck_assert_int_eq(pool_resize_async(p, 70 * M, rec_done, &d, &eb), 1);
	/* Serves at its old size until the new memory is all there. */
	ck_assert_int_eq(stats(p).state, POOL_GROWING);
	ck_assert_uint_eq(stats(p).size, 64 * K);
	ck_assert_int_eq(pool_get(p, 1 * M, NULL, &buf), -EINVAL);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_resize_async(p, 8 * M, rec_done, &d, &eb), -EBUSY);
	ck_assert_msg(strstr(eb.msg, "pool g: a resize is in progress"), "%s", eb.msg);
	ck_assert_int_eq(pool_resize(p, 8 * M, NULL), -EBUSY);
	ck_assert_int_eq(pool_destroy(p, NULL), -EBUSY);
	/* Buffers come and go meanwhile. */
	pool_put(p, all, 64 * K);
	wait_done(&d);
	ck_assert_int_eq(d.err, 0);
	ck_assert_ptr_eq(d.p, p);
	ck_assert_uint_eq(stats(p).size, 70 * M);
	ck_assert_uint_ge(stats(p).mapped, 70 * M);
	ck_assert_int_eq(stats(p).state, POOL_READY);
	run_loop();
	ck_assert_int_eq(r.calls, 1);
	pool_put(p, r.buf, 32 * K);
	buf = get_now(p, POOL_ARENA_MAX);
	memset(buf, 6, POOL_ARENA_MAX);
	pool_put(p, buf, POOL_ARENA_MAX);
	/* A shrink is done at once: 0, and done is not called. */
	ck_assert_int_eq(pool_resize_async(p, 1 * M, rec_done, &d, &eb), 0);
	ck_assert_uint_eq(stats(p).size, 1 * M);
	ck_assert_int_eq(d.calls, 1);
	/* Over the limits: refused at once, with the numbers. */
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(pool_resize_async(p, 1ull << 46, rec_done, &d, &eb), -ENOMEM);
	ck_assert_msg(strstr(eb.msg, "bytes asked"), "%s", eb.msg);
	ck_assert_int_eq(stats(p).state, POOL_READY);
	worker_teardown();
}
END_TEST

/* The daemon stops while a create and a grow are mapped: both are
 * answered -ESHUTDOWN and nothing leaks (valgrind). */
START_TEST(test_async_teardown)
{
	struct pool *p = mkpool("g2", 64 * K);
	struct done_rec c = { 0 }, g = { 0 };

	ck_assert_int_eq(worker_setup(base, 1), 0);
	ck_assert_int_eq(pool_create_async("c", 200 * M, rec_done, &c, NULL), 1);
	ck_assert_int_eq(pool_resize_async(p, 200 * M, rec_done, &g, NULL), 1);
	worker_teardown();
	pool_teardown();
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(c.err, -ESHUTDOWN);
	ck_assert_ptr_null(c.p);
	ck_assert_int_eq(g.calls, 1);
	ck_assert_int_eq(g.err, -ESHUTDOWN);
	ck_assert_ptr_null(pool_first());
}
END_TEST

/* The daemon begins to stop: callers are answered at once, and the memory
 * being mapped is let go when the workers are done with it. */
START_TEST(test_async_stop)
{
	struct pool *p = mkpool("g3", 64 * K);
	struct done_rec c = { 0 }, g = { 0 };

	ck_assert_int_eq(worker_setup(base, 2), 0);
	ck_assert_int_eq(pool_create_async("c", 100 * M, rec_done, &c, NULL), 1);
	ck_assert_int_eq(pool_resize_async(p, 100 * M, rec_done, &g, NULL), 1);
	pool_stop();
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(c.err, -ESHUTDOWN);
	ck_assert_str_eq(c.msg, "tapd is stopping: pool c was not created");
	ck_assert_int_eq(g.calls, 1);
	ck_assert_str_eq(g.msg, "tapd is stopping: pool g3 was not grown");
	for (int i = 0; i < 6000 && (pool_find_any("c") || stats(p).state != POOL_READY); i++) {
		static const struct timeval tick = { 0, 10000 };

		event_base_loopexit(base, &tick);
		ck_assert_int_ge(event_base_loop(base, 0), 0);
	}
	ck_assert_ptr_null(pool_find_any("c"));
	ck_assert_uint_eq(stats(p).size, 64 * K);
	ck_assert_uint_eq(stats(p).mapped, 64 * K);
	ck_assert_int_eq(c.calls, 1);
	ck_assert_int_eq(g.calls, 1);
	worker_teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_accounting);
	tcase_add_test(tc, test_aligned_writable);
	tcase_add_test(tc, test_einval);
	tcase_add_test(tc, test_fifo_order);
	tcase_add_test(tc, test_no_overtaking);
	tcase_add_test(tc, test_exhaustion_resume);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_grow_wakes);
	tcase_add_test(tc, test_shrink_in_use);
	tcase_add_test(tc, test_shrink_fails_waiter);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_destroy);
	tcase_add_test(tc, test_teardown_fails_waiters);
	tcase_add_test(tc, test_reentrant_destroy);
	tcase_add_test(tc, test_listener);
	tcase_add_test(tc, test_mlock_denied);
	tcase_add_test(tc, test_stress);
	tcase_add_test(tc, test_mem_check);
	tcase_add_test(tc, test_count_limit);
	tcase_add_test(tc, test_async_create);
	tcase_add_test(tc, test_async_grow);
	tcase_add_test(tc, test_async_teardown);
	tcase_add_test(tc, test_async_stop);
	return check_run(s, tc);
}
