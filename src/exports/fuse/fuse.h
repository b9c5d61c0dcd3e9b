/* The FUSE export: every tap as a regular file in one FUSE mount,
 * STATE_DIR/fuse/NAME (libfuse's low-level API, /dev/fuse in the loop, no
 * threads of its own), and the "fuse" device kind that binds a loop device
 * with direct I/O to such a file (exports/device.h).
 *
 * Threading: the loop thread; the kind's kernel calls and the unmount run
 * on threads of their own. */
#ifndef TAPD_FUSE_H
#define TAPD_FUSE_H

#include "lib/util.h"

struct event_base;

/* Register the "fuse" device kind (after device_setup), then mount
 * state_dir/fuse (after cleaning up a stale mount of a tapd that died).
 * Returns 0, or a negative errno with eb saying why FUSE is not served
 * here (no /dev/fuse, the mount refused): the daemon goes on without,
 * and Attach of kind fuse says the same. */
int fuse_export_start(struct event_base *base, const char *state_dir, struct errbuf *eb);
/* The mount point while mounted, or NULL. */
const char *fuse_export_dir(void);
/* At daemon stop, after device_shutdown_all: stop reading requests, let
 * those in flight finish, unmount; done(arg) from the loop. */
void fuse_export_stop(void (*done)(void *arg), void *arg);
/* Free everything (after the stop, or after a failed start). */
void fuse_export_free(void);

#endif
