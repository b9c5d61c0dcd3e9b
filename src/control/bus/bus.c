/* The D-Bus service on top of the object files: starts and stops it (the
 * connection, the objects, the bus name) and turns the core's tap and pool
 * listener events into signals, pool counter changes at a bounded rate. */
#include "bus.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>

#include "internal.h"
#include "exports/device.h"
#include "lib/log.h"

/* Pool in_use changes on every request; one signal per pool per interval
 * is plenty for a person watching and costs the I/O path nothing. */
#define BUS_POOL_SIGNAL_USEC 100000
/* Pools with a pending PropertiesChanged. More dirty pools than this just
 * means "signal them all" on the next tick. */
#define BUS_DIRTY_MAX 32

static struct {
	struct event *pool_ev;
	struct daemon_info info; /* strings owned */
	struct pool *dirty[BUS_DIRTY_MAX];
	unsigned ndirty;
	bool all_dirty;
} B;

/* ---- signals from the core ---------------------------------------------- */

/* Pool signals go out on a tick: the first change after a quiet spell is
 * announced at once (next loop iteration), later ones are collected for a
 * window of BUS_POOL_SIGNAL_USEC and sent together at its end. */
static void bus_on_pool_tick(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval window = { 0, BUS_POOL_SIGNAL_USEC };
	bool sent = B.all_dirty || B.ndirty;
	sd_bus *bus = bus_conn();

	(void)fd;
	(void)what;
	(void)arg;
	if (!bus)
		return;
	if (B.all_dirty) {
		for (struct pool *p = pool_first(); p; p = pool_next(p))
			bus_pool_emit(bus, p, POOL_CHANGED);
	} else {
		for (unsigned i = 0; i < B.ndirty; i++)
			bus_pool_emit(bus, B.dirty[i], POOL_CHANGED);
	}
	B.ndirty = 0;
	B.all_dirty = false;
	/* Keep the window open while changes keep coming. */
	if (sent)
		evtimer_add(B.pool_ev, &window);
	bus_kick();
}

static void bus_forget_dirty(struct pool *p)
{
	for (unsigned i = 0; i < B.ndirty; i++) {
		if (B.dirty[i] == p) {
			B.dirty[i] = B.dirty[--B.ndirty];
			return;
		}
	}
}

/* Called on the I/O path (in_use changes): no allocation, no syscalls
 * beyond arming a timer that is not already pending. */
static void bus_mark_dirty(struct pool *p)
{
	static const struct timeval now = { 0, 0 };
	unsigned i;

	if (!B.all_dirty) {
		for (i = 0; i < B.ndirty && B.dirty[i] != p; i++)
			;
		if (i == B.ndirty) {
			if (B.ndirty < BUS_DIRTY_MAX)
				B.dirty[B.ndirty++] = p;
			else
				B.all_dirty = true;
		}
	}
	/* Pending: a tick or an open window will send it. */
	if (!evtimer_pending(B.pool_ev, NULL))
		evtimer_add(B.pool_ev, &now);
}

static void bus_on_pool_event(struct pool *p, enum pool_event ev)
{
	sd_bus *bus = bus_conn();

	if (!bus)
		return;
	if (ev == POOL_CHANGED) {
		bus_mark_dirty(p);
		return;
	}
	/* With all_dirty the tick walks the live list, where a removed pool
	 * no longer is; otherwise drop it from the set by hand. */
	if (ev == POOL_REMOVED)
		bus_forget_dirty(p);
	bus_pool_emit(bus, p, ev);
	bus_kick();
}

static void bus_on_tap_event(struct tap *t, enum tap_event ev)
{
	sd_bus *bus = bus_conn();

	if (!bus)
		return;
	bus_tap_emit(bus, t, ev);
	bus_kick();
}

static void bus_on_devices(struct tap *t)
{
	sd_bus *bus = bus_conn();

	if (!bus)
		return;
	bus_tap_devices_changed(bus, t);
	bus_kick();
}

/* ---- start / stop ------------------------------------------------------- */

static void bus_free_info(void)
{
	free((char *)B.info.version);
	free((char *)B.info.state_dir);
	free((char *)B.info.nbd_socket);
	memset(&B.info, 0, sizeof(B.info));
}

int bus_start(struct event_base *base, const char *address,
	      const struct daemon_info *info, struct errbuf *eb)
{
	const char *where = address ? address : "system";
	int r;

	if (bus_conn()) {
		err_set(eb, "the D-Bus service is already started");
		return -EALREADY;
	}
	B.info.version = strdup(info && info->version ? info->version : "");
	B.info.state_dir = strdup(info && info->state_dir ? info->state_dir : "");
	B.info.nbd_socket = strdup(info && info->nbd_socket ? info->nbd_socket : "");
	B.info.io_flusher = info && info->io_flusher;
	B.info.memory_locked = info && info->memory_locked;
	if (!B.info.version || !B.info.state_dir || !B.info.nbd_socket) {
		r = -ENOMEM;
		err_set(eb, "out of memory");
		goto fail;
	}

	r = bus_conn_open(address);
	if (r < 0) {
		err_set(eb, "cannot connect to the %s bus: %s", where, strerror(-r));
		goto fail;
	}
	r = bus_manager_add(bus_conn(), &B.info);
	if (r >= 0)
		r = bus_tap_objects_add(bus_conn(), &B.info);
	if (r >= 0)
		r = bus_pool_objects_add(bus_conn());
	if (r < 0) {
		err_set(eb, "cannot publish D-Bus objects: %s", strerror(-r));
		goto fail;
	}

	/* Synchronous on purpose: READY=1 must mean the name is ours. */
	r = sd_bus_request_name(bus_conn(), BUS_NAME, 0);
	if (r == -EEXIST) {
		err_set(eb, "another tapd owns %s on this bus", BUS_NAME);
		goto fail;
	}
	if (r < 0) {
		err_set(eb, "cannot own %s on the %s bus: %s", BUS_NAME, where,
			r == -EACCES ? "the bus policy does not allow it (is "
				       "org.xenproject.Tapd1.conf installed, are we root?)"
				     : strerror(-r));
		goto fail;
	}

	r = bus_conn_watch(base);
	B.pool_ev = evtimer_new(base, bus_on_pool_tick, NULL);
	if (r < 0 || !B.pool_ev) {
		r = -ENOMEM;
		err_set(eb, "out of memory");
		goto fail;
	}
	tap_set_listener(bus_on_tap_event);
	pool_set_listener(bus_on_pool_event);
	device_set_listener(bus_on_devices);
	log_info("D-Bus: %s owned on the %s bus", BUS_NAME, where);
	/* Messages may already sit in the read queue (from the name request). */
	bus_conn_process();
	return 0;

fail:
	bus_stop();
	return r;
}

void bus_stop(void)
{
	tap_set_listener(NULL);
	pool_set_listener(NULL);
	device_set_listener(NULL);
	if (B.pool_ev)
		event_free(B.pool_ev);
	B.pool_ev = NULL;
	B.ndirty = 0;
	B.all_dirty = false;
	if (bus_conn())
		sd_bus_release_name(bus_conn(), BUS_NAME);
	bus_conn_close();
	bus_free_info();
}
