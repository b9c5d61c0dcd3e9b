/* Shared between the D-Bus files: bus.c (connection, loop glue, Manager,
 * signals) and objects.c (the per-tap and per-pool objects). Not a
 * public interface; only the files in src/control/bus/ include it. */
#ifndef TAPD_BUS_INTERNAL_H
#define TAPD_BUS_INTERNAL_H

#include <systemd/sd-bus.h>

#include "bus.h"
#include "pools/pool.h"
#include "core/tap.h"

#define BUS_NAME "org.xenproject.Tapd1"
#define BUS_ROOT "/org/xenproject/Tapd1"
#define BUS_TAP_PREFIX BUS_ROOT "/tap"
#define BUS_POOL_PREFIX BUS_ROOT "/pool"
#define BUS_IFACE_MANAGER BUS_NAME ".Manager"
#define BUS_IFACE_TAP BUS_NAME ".Tap"
#define BUS_IFACE_POOL BUS_NAME ".Pool"

#define _cleanup_msg_ __attribute__((cleanup(sd_bus_message_unrefp)))

#define BUS_ERR_PREFIX BUS_NAME ".Error."
#define BUS_ERR_NO_SUCH_TAP BUS_ERR_PREFIX "NoSuchTap"
#define BUS_ERR_NO_SUCH_POOL BUS_ERR_PREFIX "NoSuchPool"
#define BUS_ERR_NO_SUCH_FILE BUS_ERR_PREFIX "NoSuchFile"
#define BUS_ERR_BAD_IMAGE BUS_ERR_PREFIX "BadImage"
#define BUS_ERR_TAP_EXISTS BUS_ERR_PREFIX "TapExists"
#define BUS_ERR_POOL_EXISTS BUS_ERR_PREFIX "PoolExists"
#define BUS_ERR_TAP_BUSY BUS_ERR_PREFIX "TapBusy"
#define BUS_ERR_POOL_BUSY BUS_ERR_PREFIX "PoolBusy"
#define BUS_ERR_PERMISSION BUS_ERR_PREFIX "PermissionDenied"
#define BUS_ERR_NOT_PAUSED BUS_ERR_PREFIX "NotPaused"
#define BUS_ERR_SIZE_MISMATCH BUS_ERR_PREFIX "SizeMismatch"
#define BUS_ERR_SHUTTING_DOWN BUS_ERR_PREFIX "ShuttingDown"
#define BUS_ERR_FAILED BUS_ERR_PREFIX "Failed"

/* Which operation failed: the same errno means different things (EEXIST is
 * a taken tap name for CreateTap and a taken pool name for CreatePool;
 * EINVAL is a bad image for CreateTap and Unpause, bad arguments elsewhere). */
enum bus_op { BUS_OP_TAP_CREATE, BUS_OP_TAP_UNPAUSE, BUS_OP_TAP, BUS_OP_POOL_CREATE,
	      BUS_OP_POOL };

/* Fill e with the named error for a core failure (err < 0) and return the
 * value a method handler returns. eb may be NULL or empty. */
int bus_core_error(sd_bus_error *e, int err, const struct errbuf *eb, enum bus_op op);

/* The tap or pool currently being announced or retracted: the core may
 * call its listener before linking or after unlinking the object, and
 * sd-bus must still find it to list its interfaces in the signal. */
extern struct tap *bus_tap_in_flight;
extern struct pool *bus_pool_in_flight;

extern const struct daemon_info *bus_info;

/* Object paths; return a malloc'd string or NULL. */
char *bus_tap_path(const struct tap *t);
char *bus_pool_path(const struct pool *p);

/* "nbd+unix:///NAME?socket=PATH" with the socket percent-encoded. */
char *bus_nbd_uri(const char *name, const char *socket);

/* Send what a deferred reply or a signal queued, outside sd_bus_process()
 * (bus.c); a no-op without a connection. */
void bus_kick(void);

/* Register the tap and pool objects (objects.c). */
int bus_objects_add(sd_bus *bus);

#endif
