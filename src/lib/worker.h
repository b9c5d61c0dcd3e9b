/* Worker threads for the few storage calls Linux offers no asynchronous
 * form of (fallocate, lseek SEEK_DATA/SEEK_HOLE, ioctls on block devices):
 * they run on a small pool of threads and complete on the loop through an
 * eventfd, so the loop itself never blocks on them. A call that may wait
 * for as long as someone else pleases (a loop device ioctl that waits for
 * I/O a paused tap holds) runs on a thread of its own (worker_spawn), so
 * that it holds up no other job.
 *
 * Threading: worker_submit and done callbacks run on the loop thread; run
 * callbacks run on a worker thread and must touch only the job's own data. */
#ifndef TAPD_WORKER_H
#define TAPD_WORKER_H

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
/* Run job on a new thread of its own, then done on the loop as for
 * worker_submit. 0, or -errno (no thread could be started: job is not
 * run). The caller bounds how many it spawns. worker_teardown does not
 * wait for spawned threads: their owners wait for done before they let
 * the loop end. */
int worker_spawn(struct worker_job *job);

#endif
