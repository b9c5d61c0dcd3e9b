/* The ublk export: taps as /dev/ublkbN (the ublk_drv kernel driver), N
 * the tap's minor, as the "ublk" device kind of exports/device.h.
 *
 * Attach("ublk") on a tap whose /dev/ublkbN was left by a dead tapd
 * (UBLK_F_USER_RECOVERY: the kernel keeps the device and queues its I/O)
 * recovers that device instead of adding one: the consumer, its mounts
 * and its queued I/O carry on. Only when the device's size and logical
 * block size are the tap's: otherwise the attach fails with -EEXIST and
 * the device waits on. ublk_recover is that call by name, for the restore
 * of recorded taps: call it once the tap exists again with its old minor.
 *
 * Threading: the loop thread. The data path (FETCH_REQ and
 * COMMIT_AND_FETCH_REQ on /dev/ublkcN) is one io_uring whose eventfd is in
 * the loop; control commands to /dev/ublk-control run on threads of their
 * own (worker_spawn). */
#ifndef TAPD_EXPORTS_UBLK_H
#define TAPD_EXPORTS_UBLK_H

#include "exports/device.h"

struct event_base;

/* Register the kind (whether or not the module is loaded: Attach then
 * says what is missing). 0 or -errno with eb. */
int ublk_export_start(struct event_base *base, struct errbuf *eb);
/* After device_shutdown_all: free the ring. */
void ublk_export_free(void);
/* Recover the tap's /dev/ublkbN left by a dead tapd (or add it if there
 * is none): device_attach(t, "ublk", ...). */
int ublk_recover(struct tap *t, device_done_fn done, void *arg, struct errbuf *eb);

#endif
