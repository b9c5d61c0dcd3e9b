/* Taps as kernel block devices: the attach API that every kind of device
 * (fuse: a loop device over the tap's FUSE file; ublk; nbd: the kernel's
 * NBD client) plugs into as one row of ops. This file keeps which tap has which
 * device, holds the control plane's calls while a kind works, and tells
 * the control plane when a tap's devices change; the kinds do the kernel
 * work, off the loop thread.
 *
 * Rules every kind follows:
 * - A tap has at most one device. The device holds the tap (tap_attach)
 *   from the start of its attach until it is gone, so the tap cannot be
 *   destroyed under it.
 * - The consumer goes first: a detach without force refuses a device that
 *   is open (mounted, held by device-mapper, open by a process) with -EBUSY
 *   and a message naming the holder; with force the consumer is cut off
 *   (its I/O fails) and the device goes as soon as the consumer lets go.
 * - A device is listed (device_of) from the moment the kernel has it until
 *   the kernel has let it go: never an orphan either way.
 *
 * Threading: everything here runs on the loop thread; kinds run their
 * blocking calls (ioctls, opens and closes of devices) on threads of their
 * own (worker_spawn) and report back on the loop. */
#ifndef TAPD_EXPORTS_DEVICE_H
#define TAPD_EXPORTS_DEVICE_H

#include <stdbool.h>
#include <sys/types.h>

#include "core/tap.h"
#include "lib/util.h"

struct event_base;
struct device;

/* Most kinds registered, and the longest device path. */
#define DEVICE_KINDS_MAX 8
#define DEVICE_PATH_MAX 64

enum device_state {
	DEVICE_ATTACHING, /* the kind is making it: not listed yet */
	DEVICE_ATTACHED,  /* in the kernel, serving */
	DEVICE_DETACHING, /* being taken down, or forced and waiting for its
			   * consumer to let go (its I/O fails meanwhile) */
};

/* One kind of device: a row of ops. */
struct device_kind {
	/* "fuse", "ublk", "nbd": what Attach(kind) names. */
	const char *name;
	/* Required. Whether this kind can attach here now: 0, or a negative
	 * errno with eb naming what is missing, e.g. "ublk:
	 * /dev/ublk-control: no such file (modprobe ublk_drv)". On the loop;
	 * must not block. */
	int (*available)(struct errbuf *eb);
	/* Required. Start making a kernel device for device_tap(dev), then
	 * report once with device_attached() from the loop (never from inside
	 * this call). Returns 0, or a negative errno with eb (nothing started,
	 * no report). */
	int (*attach)(struct device *dev, struct errbuf *eb);
	/* Required. Start taking the device down (see the rules above):
	 * report with device_detach_reply() (refused, or forced and waiting
	 * for the consumer) and/or device_gone() (the kernel let it go), from
	 * the loop. Returns 0, or a negative errno with eb (nothing started,
	 * no report). */
	int (*detach)(struct device *dev, bool force, struct errbuf *eb);
	/* Optional. The daemon stops and drops a device that a forced
	 * detach cut off but whose consumer still holds it: free the kind's
	 * state for it; nothing more is reported for it. */
	void (*forget)(struct device *dev);
};

/* Called with the result of an attach or a detach: err 0 and, for an
 * attach, msg is the device path; or a negative errno and msg says why.
 * From the loop, never from inside a device_* call. */
typedef void (*device_done_fn)(void *arg, int err, const char *msg);

int device_setup(struct event_base *base);
/* Free what is left (after device_shutdown_all). */
void device_teardown(void);
/* Add a kind (at start): -ENOSPC past DEVICE_KINDS_MAX, -EEXIST. */
int device_kind_register(const struct device_kind *kind);
/* The names of the registered kinds, "fuse, ublk", for messages. */
const char *device_kind_names(void);

/* The control plane's calls. kind "" picks the first registered kind that
 * is available. Returns 0 (done is called later) or a negative errno with
 * eb: -EOPNOTSUPP unknown or unavailable kind, -EEXIST the tap has a
 * device, -EBUSY the tap's device is busy with another call,
 * -ESHUTDOWN the tap or the daemon is closing, -EAGAIN too many calls at
 * once. */
int device_attach(struct tap *t, const char *kind, device_done_fn done, void *arg,
		  struct errbuf *eb);
/* Take the tap's device down: -ENXIO the tap has none, -EBUSY it is
 * busy with another call, else as device_attach. done(arg, 0, NULL) once
 * the device is gone, or (forced, consumer still there) once it is cut
 * off; done(arg, -EBUSY, "... mounted on /mnt") when refused. */
int device_detach(struct tap *t, bool force, device_done_fn done, void *arg,
		  struct errbuf *eb);

/* The daemon stops: every device is detached with force (a device still
 * being attached first finishes). done(arg) once no kind works on any
 * device any more; devices whose consumer still holds them are then
 * dropped from the list (their I/O fails until the consumer lets go, and
 * the kernel frees them then). */
void device_shutdown_all(void (*done)(void *arg), void *arg);

/* Who is told when a tap's devices change (the bus: Devices). */
void device_set_listener(void (*fn)(struct tap *t));

/* The tap's device, or NULL. */
struct device *device_of(const struct tap *t);
/* Whether the device is in the kernel (listed): attached or detaching. */
bool device_listed(const struct device *dev);
const char *device_kind_name(const struct device *dev);
const char *device_path(const struct device *dev); /* "/dev/loop3" */
dev_t device_devnum(const struct device *dev);
enum device_state device_state(const struct device *dev);

/* ---- for the kinds -------------------------------------------------- */

struct tap *device_tap(const struct device *dev);
/* The kind's own state for this device (NULL until set). */
void *device_priv(const struct device *dev);
void device_set_priv(struct device *dev, void *priv);
/* The attach finished: on success (err 0) the device is listed with path
 * and devnum; on failure it is forgotten and the call fails with msg. */
void device_attached(struct device *dev, int err, const char *path, dev_t devnum,
		     const char *msg);
/* Answer the pending detach call without the device going: err < 0
 * refused (the device stays attached), 0 forced and cut off (it stays
 * listed, detaching, until device_gone). */
void device_detach_reply(struct device *dev, int err, const char *msg);
/* The kernel let the device go (a detach finished, or someone removed
 * it): answers a pending detach with success, forgets the device. The
 * kind's priv must be freed by the kind before. */
void device_gone(struct device *dev);

/* The first line of a small file (sysfs, /proc) into buf, without its
 * newline: 0, or a negative errno (-EIO: empty). It may wait for the
 * file's system: for the kinds' threads (and the start, before the loop
 * serves). */
int device_read_line(const char *path, char *buf, size_t len);
/* On a blocking thread: who holds the block device devname ("loop3",
 * number devnum) open exclusively: a mount (named from mountinfo) or a
 * holder in /sys/block/NAME/holders. Fills msg and returns -EBUSY, or 0
 * (nobody holds it exclusively). For the kinds' detach. */
int device_holder(const char *devname, dev_t devnum, char *msg, size_t len);
/* On a blocking thread: a process that has the block device path open
 * ("pid 123 (dd)"), found in /proc/PID/fd; 0 with msg filled, -ENOENT. */
int device_opener(const char *path, char *msg, size_t len);

#endif
