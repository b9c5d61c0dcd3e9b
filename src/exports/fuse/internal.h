/* Shared between the files of the FUSE export, private to
 * src/exports/fuse/. Lowest first, calls going down only:
 *
 *   stale.c   what a tapd that died left: loop devices bound to its
 *             files, its mount (found at start, cleaned before the mount)
 *   io.c      open files and the request path: FUSE READ, WRITE, FLUSH,
 *             FSYNC and FALLOCATE as tap requests, answered from their
 *             completions; a fixed table of requests in flight
 *   fs.c      the session: the mount, /dev/fuse in the loop, the reader
 *             and its back-pressure, the directory of taps (lookup,
 *             getattr, readdir), open and release; the stop
 *   loop.c    the "fuse" device kind (exports/device.h): a loop device
 *             bound to a tap's file, attached and detached on threads of
 *             their own
 *   export.c  start and stop of the whole (fuse.h)
 *
 * The loop thread answers every FUSE request; anything that makes the
 * kernel send FUSE requests and wait for their answer (opening and closing
 * the tap's file, the loop ioctls, closing a loop device, unmounting) runs
 * on another thread, or tapd would wait for itself. */
#ifndef TAPD_FUSE_INTERNAL_H
#define TAPD_FUSE_INTERNAL_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "core/tap.h"
#include "lib/util.h"

struct event_base;

/* The largest READ or WRITE the kernel sends (max_write; reads are cut to
 * max_pages, which libfuse derives from it). */
#define FX_MAX_IO (1u << 20)
/* I/O requests in flight at once; with all taken, /dev/fuse is not read
 * (the kernel queues, and its callers wait): back-pressure, not queues.
 * A slot holds no memory of its own beyond its ~500 bytes. */
#define FX_SLOTS 512
/* What the kernel may have in flight in the background (async direct I/O
 * from loop devices): max_background, per connection, so shared by every
 * tap, and where it starts to call the connection congested. Requests
 * parked by a paused tap count against it: with the default of 12, or 64,
 * one paused loop device (128 requests deep) would hold up every other
 * tap's device. tapd is root, so the kernel takes the value as it is. */
#define FX_BACKGROUND 256
#define FX_CONGESTION 192
/* WRITE payloads copied aside while their pool buffer is not ready, or
 * while they go in pieces, so that the one receive buffer goes on serving
 * the other taps; past this much, a write keeps the receive buffer and the
 * reader waits for it (head-of-line, the last resort). */
#define FX_SPILL_MAX (32u << 20)
/* Open files at once (each holds its tap). */
#define FX_OPEN_MAX 4096
/* Requests read from /dev/fuse per wakeup, so that a flood of them takes
 * its turn with the other events (NBD clients, D-Bus). */
#define FX_READ_BUDGET 16
/* Inode numbers: 1 is the root, a tap is its minor plus this. */
#define FX_INO_BASE 2

struct fx_claim;

/* One open file (a FUSE OPEN), owned by io.c: made by fs.c's open,
 * given back by its release and by every request done with it. It holds
 * its tap (tap_attach) until then, so a tap whose file is open cannot be
 * destroyed. */
struct fx_open {
	LIST_ENTRY(fx_open) link;
	struct tap *tap;
	bool writable;
	/* A forced detach cut it off: its I/O fails with EIO. */
	bool revoked;
	/* The open plus each request in flight on it. */
	unsigned refs;
	/* The loop device kind's claim on it, or NULL (fs.c). */
	struct fx_claim *claim;
};

/* ---- io.c ----------------------------------------------------------------- */

/* wake: from the loop, whenever the reader may go on (a request slot came
 * free, a write gave back the receive buffer, or all went idle). */
int fx_io_setup(void (*wake)(void));
void fx_io_teardown(void);
/* The reader may read one more request: a slot is free and no write holds
 * the receive buffer. */
bool fx_io_can_read(void);
/* Nothing in flight. */
bool fx_io_idle(void);
/* A new open of t (takes the tap: tap_attach); -ENFILE past FX_OPEN_MAX,
 * -ESHUTDOWN, -ENOMEM. */
int fx_open_new(struct tap *t, bool writable, struct fx_open **out);
/* Drop a reference (the open's own at release). */
void fx_open_put(struct fx_open *fo);
/* The first open file, for the stop. */
struct fx_open *fx_open_first(void);
/* FUSE requests on an open file, answered later from the loop. A WRITE's
 * buf is in the receive buffer: when it is needed after the call (its pool
 * buffer not ready yet, or going in pieces) it is copied aside within
 * FX_SPILL_MAX, or else kept there and fx_io_can_read says no until it is
 * done with. */
void fx_io_read(fuse_req_t fr, struct fx_open *fo, size_t size, off_t off);
void fx_io_write(fuse_req_t fr, struct fx_open *fo, const char *buf, size_t size, off_t off);
void fx_io_flush(fuse_req_t fr, struct fx_open *fo);
void fx_io_fallocate(fuse_req_t fr, struct fx_open *fo, int mode, off_t off, off_t len);

/* ---- stale.c -------------------------------------------------------------- */

/* Whether dir is a mount point (mountinfo: a dead FUSE mount fails stat). */
bool fx_mounted(const char *dir);
/* Clear the loop devices a dead tapd left bound to files of dir: those
 * under dir at once, those the kernel names "/NAME" (their mount gone)
 * on a thread of their own, not waited for. Before the mount. */
void fx_clear_stale_loops(const char *dir);

/* ---- fs.c ----------------------------------------------------------------- */

/* Mount at dir (made, or cleaned of a stale mount of a crashed tapd
 * first) and put /dev/fuse in the loop. 0, or a negative errno with eb. */
int fx_fs_start(struct event_base *base, const char *dir, struct errbuf *eb);
/* Whether the mount serves: 1, or 0 with eb saying why not. */
bool fx_fs_up(struct errbuf *eb);
/* The mount point, or NULL. */
const char *fx_fs_dir(void);
/* Stop reading new requests, let those in flight finish, then unmount (on
 * a thread) and give back every open file; done(arg) from the loop. */
void fx_fs_stop(void (*done)(void *arg), void *arg);
void fx_fs_free(void);

/* A claim: "the next open of tap's file by thread tid is mine" (the loop
 * device kind opens the file on a thread, the loop device keeps it). The
 * open it matched is fo; released is called from the loop when the kernel
 * releases it (the loop device let go of the file). */
struct fx_claim {
	LIST_ENTRY(fx_claim) link;
	const struct tap *tap;
	int tid; /* set on the thread (atomic), before its open() */
	struct fx_open *fo;
	bool matched; /* fo was set once (stays true after the release) */
	void (*released)(struct fx_claim *c);
};
void fx_claim_add(struct fx_claim *c);
void fx_claim_del(struct fx_claim *c);

/* ---- loop.c --------------------------------------------------------------- */

/* The "fuse" device kind. */
extern const struct device_kind fx_loop_kind;

#endif
