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

struct job_list {
	struct worker_job *head, *tail;
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
} w = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
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

/* A finished job goes to the loop: queued, and the eventfd kicked (unless
 * the loop is gone: a spawned job outliving worker_teardown). Under lock. */
static void job_finished(struct worker_job *job)
{
	const uint64_t one = 1;

	list_push(&w.done, job);
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
		job_finished(job);
	}
	pthread_mutex_unlock(&w.lock);
	return NULL;
}

static void worker_reap(evutil_socket_t fd, short what, void *arg)
{
	struct worker_job *job, *next;
	uint64_t n;

	(void)what;
	(void)arg;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_err("worker: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&w.lock);
	job = w.done.head;
	w.done.head = w.done.tail = NULL;
	pthread_mutex_unlock(&w.lock);
	for (; job; job = next) {
		next = job->next;
		job->done(job);
	}
}

int worker_setup(struct event_base *base, unsigned nthreads)
{
	int ret;

	w.stop = false;
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
	pthread_mutex_lock(&w.lock);
	if (w.efd >= 0)
		close(w.efd);
	w.efd = -1;
	pthread_mutex_unlock(&w.lock);
	w.todo.head = w.todo.tail = w.done.head = w.done.tail = NULL;
}

static void *spawned_main(void *arg)
{
	struct worker_job *job = arg;

	job->run(job);
	pthread_mutex_lock(&w.lock);
	job_finished(job);
	pthread_mutex_unlock(&w.lock);
	return NULL;
}

int worker_spawn(struct worker_job *job)
{
	pthread_attr_t attr;
	pthread_t th;
	int ret;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* Such a job makes a few syscalls; the default 8 MiB would be
	 * address space for nothing. */
	pthread_attr_setstacksize(&attr, 256u << 10);
	ret = pthread_create(&th, &attr, spawned_main, job);
	pthread_attr_destroy(&attr);
	if (ret) {
		log_err("worker: cannot start a thread: %s", strerror(ret));
		return -ret;
	}
	return 0;
}

void worker_submit(struct worker_job *job)
{
	pthread_mutex_lock(&w.lock);
	list_push(&w.todo, job);
	pthread_cond_signal(&w.cond);
	pthread_mutex_unlock(&w.lock);
}
