/* Worker threads for the few storage calls Linux offers no asynchronous
 * form of (fallocate, lseek SEEK_DATA/SEEK_HOLE, ioctls on block devices):
 * they run on a small pool of threads and complete on the loop through an
 * eventfd, so the loop itself never blocks on them. Calls that may block
 * for good (opening an image on hung storage, a remote that never
 * answers) get a thread of their own instead (worker_spawn), so that a
 * stuck one holds nothing else up.
 *
 * Threading: worker_submit, worker_spawn and done callbacks run on the
 * loop thread; run callbacks run on another thread and must touch only the
 * job's own data, or ask the loop (worker_call_on_loop). */
#ifndef TAPD_WORKER_H
#define TAPD_WORKER_H

#include <stdbool.h>

struct event_base;

/* Caller-owned, usually embedded in the I/O it serves; no allocation. */
struct worker_job {
	void (*run)(struct worker_job *job);  /* on a worker thread */
	void (*done)(struct worker_job *job); /* then on the loop */
	struct worker_job *next;
};

/* Start nthreads threads. Call after the process's privileges are set
 * (PR_SET_IO_FLUSHER, mlockall): threads inherit them. */
int worker_setup(struct event_base *base, unsigned nthreads);
/* Stop and join the threads; jobs still queued are not run. */
void worker_teardown(void);
void worker_submit(struct worker_job *job);

/* Run job->run on a new thread of its own, then job->done on the loop as
 * for worker_submit: for calls that may block for as long as someone else
 * pleases (opening an image on hung storage). 0, or -errno (no thread
 * could be started: job is not run; -ENOSYS before worker_setup). The
 * caller bounds how many it spawns. worker_teardown does not wait for
 * spawned threads; one that ends after it drops its job. */
int worker_spawn(struct worker_job *job);
/* Run fn(arg) on the loop thread and wait until it returns: for the few
 * calls a spawned job must make there (they must not block). On the loop
 * itself, or without a loop (tools), a plain call; from another thread
 * after worker_teardown, it never returns (the process is ending). */
void worker_call_on_loop(void (*fn)(void *arg), void *arg);
/* True on the loop thread, and everywhere before worker_setup. */
bool worker_on_loop(void);

#endif
