/* Shared between the D-Bus files, lowest first: common.c (errors, the
 * find/enumerate callbacks of one kind of object), conn.c (the connection
 * and its loop glue), tap-object.c and pool-object.c (one file per object
 * kind), manager.c (the Manager object) and bus.c (start, stop, signals).
 * Not a public interface; only the files in src/control/bus/ include it. */
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
#define BUS_ERR_TIMED_OUT BUS_ERR_PREFIX "TimedOut"
#define BUS_ERR_NOT_SUPPORTED BUS_ERR_PREFIX "NotSupported"
#define BUS_ERR_ALREADY_ATTACHED BUS_ERR_PREFIX "AlreadyAttached"
#define BUS_ERR_NOT_ATTACHED BUS_ERR_PREFIX "NotAttached"
#define BUS_ERR_DEVICE_BUSY BUS_ERR_PREFIX "DeviceBusy"
#define BUS_ERR_FAILED BUS_ERR_PREFIX "Failed"

#define BUS_CHANGES SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE

/* ---- common.c ----------------------------------------------------------- */

/* Which operation failed: the same errno means different things (EEXIST is
 * a taken tap name for CreateTap and a taken pool name for CreatePool;
 * EINVAL is a bad image for CreateTap and Unpause, bad arguments elsewhere). */
enum bus_op { BUS_OP_TAP_CREATE, BUS_OP_TAP_UNPAUSE, BUS_OP_TAP, BUS_OP_POOL_CREATE,
	      BUS_OP_POOL, BUS_OP_DEVICE };

/* Fill e with the named error for a core failure (err < 0) and return the
 * value a method handler returns. eb may be NULL or empty. */
int bus_core_error(sd_bus_error *e, int err, const struct errbuf *eb, enum bus_op op);

/* A method call answered later, from a core callback (an image opened, a
 * tap drained, a pool mapped, a device attached). It holds the call, not
 * the object, which may be gone by then. A caller that needs more embeds
 * it first in its own struct. */
struct bus_held {
	sd_bus_message *call;
	const char *method; /* a literal, for the log: "Pause", "CreateTap" */
	char *about;        /* for the log: the tap, pool or image it is about */
};

/* Hold m in a zeroed struct of size bytes that begins with a struct
 * bus_held; about is copied. NULL: out of memory. */
void *bus_held_new(sd_bus_message *m, size_t size, const char *method, const char *about);
/* Free a call that will not be answered here (the core refused it at once
 * and the handler returns the error). */
void bus_held_free(struct bus_held *h);
/* Answer with e's error (from bus_core_error(), usually) and free e; or
 * with the method return of types and the arguments after it. Either way
 * log a reply that cannot be sent (the caller or the connection may have
 * gone: nothing to undo), free h and push the reply out, as a core
 * callback does not run inside sd_bus_process(). */
void bus_held_error(struct bus_held *h, sd_bus_error *e);
void bus_held_return(struct bus_held *h, const char *types, ...);

/* One kind of object served under a path prefix by a fallback vtable that
 * looks the object up on every call, so nothing on the bus side has to be
 * kept in step with the core's lists. */
struct bus_kind {
	const char *prefix; /* the objects are PREFIX/something */
	const char *iface;
	const sd_bus_vtable *vtable;
	/* The core's list: the first object (prev NULL) or the one after
	 * prev; NULL at the end. */
	void *(*iter)(void *prev);
	/* The object's path, malloc'd, or NULL. */
	char *(*path)(const void *obj);
	/* The object at path, or NULL. */
	void *(*lookup)(const char *path);
	/* Name the error for a call on a path where no object is. */
	int (*missing)(sd_bus_error *e, const char *path);
};

/* Register a kind: its vtable, its node enumerator and a fallback that
 * answers calls on paths without an object. kind must outlive the bus. */
int bus_kind_add(sd_bus *bus, const struct bus_kind *kind);

/* ---- conn.c ------------------------------------------------------------- */

/* Connect ("system", "session" or a D-Bus address). */
int bus_conn_open(const char *address);
/* Follow the connection from the loop of base; -ENOMEM. */
int bus_conn_watch(struct event_base *base);
/* The connection, or NULL before bus_conn_open() and once it died. */
sd_bus *bus_conn(void);
/* Handle everything that is waiting, then re-arm. */
void bus_conn_process(void);
/* Send what a deferred reply or a signal queued, outside sd_bus_process();
 * a no-op without a connection. */
void bus_kick(void);
/* Stop watching, flush and close. */
void bus_conn_close(void);

/* ---- tap-object.c ------------------------------------------------------- */

/* The tap's object path, malloc'd, or NULL. */
char *bus_tap_path(const struct tap *t);
/* Register the tap objects; info (for Exports) must outlive the bus. */
int bus_tap_objects_add(sd_bus *bus, const struct daemon_info *info);
/* Announce a tap event: ObjectManager or PropertiesChanged signals. */
void bus_tap_emit(sd_bus *bus, struct tap *t, enum tap_event ev);
/* Announce that the tap's Devices changed. */
void bus_tap_devices_changed(sd_bus *bus, struct tap *t);

/* ---- pool-object.c ------------------------------------------------------ */

/* The pool's object path, malloc'd, or NULL. */
char *bus_pool_path(const struct pool *p);
int bus_pool_objects_add(sd_bus *bus);
/* Announce a pool event (POOL_CHANGED: its counters changed). */
void bus_pool_emit(sd_bus *bus, struct pool *p, enum pool_event ev);
/* A CreatePool or Resize call held until the workers have mapped the
 * pool's memory (pool_done_fn); about the pool's name. Freed with
 * bus_held_free(&c->held) if the pools refuse it at once. */
struct bus_pool_call {
	struct bus_held held;
	uint64_t size;
	bool create;
};
struct bus_pool_call *bus_pool_call_new(sd_bus_message *m, const char *name, uint64_t size,
					bool create);
/* The pool_done_fn: answers the call and frees it. */
void bus_pool_call_done(void *arg, struct pool *p, int err, const char *msg);

/* ---- manager.c ---------------------------------------------------------- */

/* Register the Manager object and the ObjectManager at the root; info
 * (the Manager's properties) must outlive the bus. */
int bus_manager_add(sd_bus *bus, const struct daemon_info *info);

#endif
