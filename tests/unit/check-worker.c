/* Unit tests for the threads of lib/worker.c that image opens and device
 * attaches stand on: a spawned job runs off the loop, the calls it asks
 * of the loop run there, and after worker_teardown a thread still out is
 * not taken for the loop. */
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>

#include "check-run.h"
#include "lib/util.h"
#include "lib/worker.h"

static pthread_t main_thread;

struct probe {
	struct worker_job job;
	bool run_on_loop;  /* worker_on_loop() in run */
	bool call_on_main; /* the call ran on the main (loop) thread */
	bool call_on_loop; /* worker_on_loop() in the call */
	int calls, dones;
	sem_t go, seen;
};

static void probe_call(void *arg)
{
	struct probe *pr = arg;

	pr->calls++;
	pr->call_on_main = pthread_equal(pthread_self(), main_thread);
	pr->call_on_loop = worker_on_loop();
}

static void probe_run(struct worker_job *job)
{
	struct probe *pr = container_of(job, struct probe, job);

	pr->run_on_loop = worker_on_loop();
	worker_call_on_loop(probe_call, pr);
}

static void probe_done(struct worker_job *job)
{
	container_of(job, struct probe, job)->dones++;
}

START_TEST(test_spawn_calls_the_loop)
{
	struct event_base *base = event_base_new();
	struct probe pr = {.job = {.run = probe_run, .done = probe_done}};

	main_thread = pthread_self();
	ck_assert_ptr_nonnull(base);
	ck_assert_int_eq(worker_spawn(&pr.job), -ENOSYS); /* before worker_setup */
	ck_assert_int_eq(worker_setup(base, 1), 0);
	ck_assert(worker_on_loop());
	ck_assert_int_eq(worker_spawn(&pr.job), 0);
	for (int i = 0; i < 1000 && !pr.dones; i++) {
		static const struct timeval tick = {0, 10000};

		event_base_loopexit(base, &tick);
		ck_assert_int_ge(event_base_loop(base, 0), 0);
	}
	ck_assert_int_eq(pr.dones, 1);
	ck_assert_int_eq(pr.calls, 1);
	ck_assert(!pr.run_on_loop);
	ck_assert(pr.call_on_main);
	ck_assert(pr.call_on_loop);
	worker_teardown();
	event_base_free(base);
}
END_TEST

static void late_run(struct worker_job *job)
{
	struct probe *pr = container_of(job, struct probe, job);

	sem_wait(&pr->go);
	pr->run_on_loop = worker_on_loop();
	sem_post(&pr->seen);
}

/* The loop is gone, not everywhere: a thread that comes back after
 * worker_teardown (an open of hung storage at exit) must not run the
 * loop's work (image_start, on_loop drivers) on itself. */
START_TEST(test_after_teardown_not_the_loop)
{
	struct event_base *base = event_base_new();
	static struct probe pr = {.job = {.run = late_run, .done = probe_done}};

	ck_assert_int_eq(sem_init(&pr.go, 0, 0), 0);
	ck_assert_int_eq(sem_init(&pr.seen, 0, 0), 0);
	ck_assert_int_eq(worker_setup(base, 1), 0);
	ck_assert_int_eq(worker_spawn(&pr.job), 0);
	worker_teardown();
	sem_post(&pr.go);
	sem_wait(&pr.seen);
	ck_assert(!pr.run_on_loop);
	ck_assert(worker_on_loop()); /* the main thread still is */
	ck_assert_int_eq(pr.dones, 0);
	event_base_free(base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker");
	TCase *tc = tcase_create("spawn");

	tcase_add_test(tc, test_spawn_calls_the_loop);
	tcase_add_test(tc, test_after_teardown_not_the_loop);
	return check_run(s, tc);
}
