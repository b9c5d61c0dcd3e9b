/* A job queue served by a few threads, with completions handed back to the
 * loop in submission order per thread through one eventfd. */
#include "worker.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

#define WORKER_MAX 16
/* Spawned threads run metadata calls and a handshake, not data paths. */
#define WORKER_SPAWN_STACK (512 * 1024)

struct job_list {
	struct worker_job *head, *tail;
};

struct loop_call {
	void (*fn)(void *arg);
	void *arg;
	bool done;
	struct loop_call *next;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job_list todo, done;
	bool stop;
	int efd;
	struct event *ev;
	pthread_t threads[WORKER_MAX];
	unsigned nthreads;
	/* Calls spawned threads wait on the loop for. */
	struct loop_call *calls;
	pthread_cond_t call_cond;
	pthread_t loop;
	bool have_loop;
} w = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
	.call_cond = PTHREAD_COND_INITIALIZER,
	.efd = -1,
};

static void list_push(struct job_list *l, struct worker_job *job)
{
	job->next = NULL;
	if (l->tail)
		l->tail->next = job;
	else
		l->head = job;
	l->tail = job;
}

/* With w.lock held: a job is done, or a call waits; wake the loop. */
static void worker_wake(void)
{
	const uint64_t one = 1;

	/* An eventfd write never blocks short of 2^64 - 1 pending. */
	if (w.efd >= 0 && write(w.efd, &one, sizeof(one)) < 0)
		log_err("worker: eventfd: %s", strerror(errno));
}

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&w.lock);
	for (;;) {
		struct worker_job *job;

		while (!w.stop && !w.todo.head)
			pthread_cond_wait(&w.cond, &w.lock);
		if (w.stop)
			break;
		job = w.todo.head;
		w.todo.head = job->next;
		if (!w.todo.head)
			w.todo.tail = NULL;
		pthread_mutex_unlock(&w.lock);

		job->run(job);

		pthread_mutex_lock(&w.lock);
		list_push(&w.done, job);
		worker_wake();
	}
	pthread_mutex_unlock(&w.lock);
	return NULL;
}

static void worker_reap(evutil_socket_t fd, short what, void *arg)
{
	struct worker_job *job, *next;
	struct loop_call *call, *cnext;
	uint64_t n;

	(void)what;
	(void)arg;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_err("worker: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&w.lock);
	job = w.done.head;
	w.done.head = w.done.tail = NULL;
	call = w.calls;
	w.calls = NULL;
	pthread_mutex_unlock(&w.lock);
	/* Calls first: their threads wait, and their jobs' done may follow. */
	for (; call; call = cnext) {
		cnext = call->next;
		call->fn(call->arg);
		pthread_mutex_lock(&w.lock);
		call->done = true;
		pthread_cond_broadcast(&w.call_cond);
		pthread_mutex_unlock(&w.lock);
	}
	for (; job; job = next) {
		next = job->next;
		job->done(job);
	}
}

int worker_setup(struct event_base *base, unsigned nthreads)
{
	int ret;

	w.stop = false;
	w.loop = pthread_self();
	w.have_loop = true;
	w.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w.efd < 0)
		return -errno;
	w.ev = event_new(base, w.efd, EV_READ | EV_PERSIST, worker_reap, NULL);
	if (!w.ev || event_add(w.ev, NULL) < 0) {
		worker_teardown();
		return -ENOMEM;
	}
	for (w.nthreads = 0; w.nthreads < nthreads && w.nthreads < WORKER_MAX; w.nthreads++) {
		ret = pthread_create(&w.threads[w.nthreads], NULL, worker_main, NULL);
		if (ret) {
			log_err("worker: cannot start a thread: %s", strerror(ret));
			worker_teardown();
			return -ret;
		}
	}
	return 0;
}

void worker_teardown(void)
{
	pthread_mutex_lock(&w.lock);
	w.stop = true;
	pthread_cond_broadcast(&w.cond);
	pthread_mutex_unlock(&w.lock);
	for (unsigned i = 0; i < w.nthreads; i++)
		pthread_join(w.threads[i], NULL);
	w.nthreads = 0;
	if (w.ev)
		event_free(w.ev);
	w.ev = NULL;
	/* Spawned threads still out (stuck in a call that never returns)
	 * find no eventfd and drop their job, and a call they ask of the
	 * loop waits for good: the process is ending. The loop thread stays
	 * the loop, so that worker_on_loop() does not say yes on theirs. */
	pthread_mutex_lock(&w.lock);
	if (w.efd >= 0)
		close(w.efd);
	w.efd = -1;
	w.todo.head = w.todo.tail = w.done.head = w.done.tail = NULL;
	pthread_mutex_unlock(&w.lock);
}

void worker_submit(struct worker_job *job)
{
	pthread_mutex_lock(&w.lock);
	list_push(&w.todo, job);
	pthread_cond_signal(&w.cond);
	pthread_mutex_unlock(&w.lock);
}

static void *worker_spawn_main(void *arg)
{
	struct worker_job *job = arg;

	job->run(job);
	pthread_mutex_lock(&w.lock);
	if (w.efd >= 0) {
		list_push(&w.done, job);
		worker_wake();
	}
	pthread_mutex_unlock(&w.lock);
	return NULL;
}

int worker_spawn(struct worker_job *job)
{
	pthread_attr_t attr;
	pthread_t th;
	int ret;

	if (w.efd < 0)
		return -ENOSYS;
	ret = pthread_attr_init(&attr);
	if (!ret) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, WORKER_SPAWN_STACK);
		ret = pthread_create(&th, &attr, worker_spawn_main, job);
		pthread_attr_destroy(&attr);
	}
	return -ret;
}

bool worker_on_loop(void)
{
	return !w.have_loop || pthread_equal(pthread_self(), w.loop);
}

void worker_call_on_loop(void (*fn)(void *arg), void *arg)
{
	struct loop_call call = {.fn = fn, .arg = arg};

	if (worker_on_loop()) {
		fn(arg);
		return;
	}
	pthread_mutex_lock(&w.lock);
	call.next = w.calls;
	w.calls = &call;
	worker_wake();
	while (!call.done)
		pthread_cond_wait(&w.call_cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
}
