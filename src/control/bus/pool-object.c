/* The pool objects, /org/xenproject/Tapd1/pool/<escaped name>: their
 * methods and properties, how a path finds its pool, the signals that
 * announce a pool's arrival, changes and departure, and the CreatePool and
 * Resize calls answered once the workers have mapped the pool's memory. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "lib/log.h"

/* The pool being announced or retracted (see tap_in_flight). */
static struct pool *pool_in_flight;

char *bus_pool_path(const struct pool *p)
{
	char *path;

	if (sd_bus_path_encode(BUS_POOL_PREFIX, pool_name(p), &path) < 0)
		return NULL;
	return path;
}

/* The pool at path, or NULL. */
static void *pool_lookup(const char *path)
{
	_cleanup_free_ char *name = NULL;
	struct pool *p;

	if (!path || sd_bus_path_decode(path, BUS_POOL_PREFIX, &name) <= 0 || !name)
		return NULL;
	if (pool_in_flight && strcmp(pool_name(pool_in_flight), name) == 0)
		return pool_in_flight;
	/* Pools being created too: they are listed, and answer Destroy
	 * or Resize with PoolBusy. */
	p = pool_find_any(name);
	return p;
}

static int pool_missing(sd_bus_error *e, const char *path)
{
	_cleanup_free_ char *name = NULL;

	if (sd_bus_path_decode(path, BUS_POOL_PREFIX, &name) > 0 && name)
		return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_POOL, "no such pool: %s", name);
	return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_POOL, "no such pool: %s", path);
}

struct bus_pool_call *bus_pool_call_new(sd_bus_message *m, const char *name, uint64_t size,
					bool create)
{
	struct bus_pool_call *c =
		bus_held_new(m, sizeof(*c), create ? "CreatePool" : "Resize", name);

	if (!c)
		return NULL;
	c->size = size;
	c->create = create;
	return c;
}

/* From the pools, on the loop (or from pool_teardown() at exit): the
 * memory is mapped, or will not be. */
void bus_pool_call_done(void *arg, struct pool *p, int err, const char *msg)
{
	struct bus_pool_call *c = arg;
	const char *name = c->held.about;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct errbuf eb = { { 0 } };
	_cleanup_free_ char *path = NULL;

	if (err < 0) {
		log_info("%s %s (%llu bytes) failed: %s", c->held.method, name,
			 (unsigned long long)c->size, msg ? msg : strerror(-err));
		if (msg)
			err_set(&eb, "%s", msg);
		bus_core_error(&e, err, &eb, c->create ? BUS_OP_POOL_CREATE : BUS_OP_POOL);
		bus_held_error(&c->held, &e);
	} else if (c->create) {
		log_info("pool %s created (%llu bytes)", name, (unsigned long long)c->size);
		path = bus_pool_path(p);
		if (!path) {
			sd_bus_error_set_errno(&e, ENOMEM);
			bus_held_error(&c->held, &e);
		} else {
			bus_held_return(&c->held, "o", path);
		}
	} else {
		log_info("pool %s resized to %llu bytes", name, (unsigned long long)c->size);
		bus_held_return(&c->held, "");
	}
}

static int pool_resize_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct bus_pool_call *c;
	uint64_t size;
	int r;

	r = sd_bus_message_read(m, "t", &size);
	if (r < 0)
		return r;
	if (size == 0)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "pool size must be greater than 0");
	c = bus_pool_call_new(m, pool_name(userdata), size, false);
	if (!c)
		return -ENOMEM;
	/* A second Resize, or one on a pool being created: PoolBusy. */
	r = pool_resize_async(userdata, size, bus_pool_call_done, c, &eb);
	if (r > 0)
		return 1; /* answered by bus_pool_call_done() */
	bus_held_free(&c->held);
	if (r < 0) {
		log_info("Resize %s to %llu bytes refused: %s", pool_name(userdata),
			 (unsigned long long)size, eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_POOL);
	}
	log_info("pool %s resized to %llu bytes", pool_name(userdata), (unsigned long long)size);
	return sd_bus_reply_method_return(m, "");
}

static int pool_destroy_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	char name[POOL_NAME_MAX + 1];
	int r;

	snprintf(name, sizeof(name), "%s", pool_name(userdata));
	/* pool_destroy() refuses the default pool (-EBUSY: PoolBusy). */
	r = pool_destroy(userdata, &eb);
	if (r < 0)
		return bus_core_error(e, r, &eb, BUS_OP_POOL);
	log_info("pool %s destroyed", name);
	return sd_bus_reply_method_return(m, "");
}

static int pool_get_prop(sd_bus *bus, const char *path, const char *iface, const char *prop,
			 sd_bus_message *reply, void *userdata, sd_bus_error *e)
{
	struct pool_stats st;

	(void)bus;
	(void)path;
	(void)iface;
	(void)e;
	if (strcmp(prop, "Name") == 0)
		return sd_bus_message_append(reply, "s", pool_name(userdata));
	pool_get_stats(userdata, &st);
	if (strcmp(prop, "State") == 0)
		return sd_bus_message_append(reply, "s", pool_state_name(st.state));
	if (strcmp(prop, "Size") == 0)
		return sd_bus_message_append(reply, "t", st.size);
	if (strcmp(prop, "InUse") == 0)
		return sd_bus_message_append(reply, "t", st.in_use);
	if (strcmp(prop, "HighWater") == 0)
		return sd_bus_message_append(reply, "t", st.high_water);
	if (strcmp(prop, "Mapped") == 0)
		return sd_bus_message_append(reply, "t", st.mapped);
	if (strcmp(prop, "Waiters") == 0)
		return sd_bus_message_append(reply, "u", st.waiters);
	if (strcmp(prop, "Taps") == 0)
		return sd_bus_message_append(reply, "u", st.taps);
	if (strcmp(prop, "Locked") == 0)
		return sd_bus_message_append(reply, "b", (int)st.locked);
	if (strcmp(prop, "QosIops") == 0 || strcmp(prop, "QosBps") == 0) {
		uint64_t iops, bps;

		tap_get_pool_qos(userdata, &iops, &bps);
		return sd_bus_message_append(reply, "t", prop[3] == 'I' ? iops : bps);
	}
	return -ENOENT;
}

static int pool_set_qos_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	uint64_t iops, bps;
	int r;

	(void)e;
	r = sd_bus_message_read(m, "tt", &iops, &bps);
	if (r < 0)
		return r;
	tap_set_pool_qos(userdata, iops, bps);
	sd_bus_emit_properties_changed(sd_bus_message_get_bus(m), sd_bus_message_get_path(m),
				       BUS_IFACE_POOL, "QosIops", "QosBps", NULL);
	return sd_bus_reply_method_return(m, "");
}

static const sd_bus_vtable pool_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD_WITH_NAMES("Resize", "t", SD_BUS_PARAM(size), "", , pool_resize_cb, 0),
	SD_BUS_METHOD("Destroy", "", "", pool_destroy_cb, 0),
	SD_BUS_METHOD_WITH_NAMES("SetQos", "tt", SD_BUS_PARAM(iops) SD_BUS_PARAM(bps), "", ,
				 pool_set_qos_cb, 0),
	SD_BUS_PROPERTY("Name", "s", pool_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Size", "t", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("InUse", "t", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Waiters", "u", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("HighWater", "t", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Mapped", "t", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Taps", "u", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Locked", "b", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("State", "s", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("QosIops", "t", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("QosBps", "t", pool_get_prop, 0, BUS_CHANGES),
	SD_BUS_VTABLE_END
};

static void *pool_iter(void *prev)
{
	return prev ? pool_next(prev) : pool_first();
}

static char *pool_path(const void *p)
{
	return bus_pool_path(p);
}

static const struct bus_kind pool_kind = {
	.prefix = BUS_POOL_PREFIX,
	.iface = BUS_IFACE_POOL,
	.vtable = pool_vtable,
	.iter = pool_iter,
	.path = pool_path,
	.lookup = pool_lookup,
	.missing = pool_missing,
};

int bus_pool_objects_add(sd_bus *bus)
{
	return bus_kind_add(bus, &pool_kind);
}

void bus_pool_emit(sd_bus *bus, struct pool *p, enum pool_event ev)
{
	_cleanup_free_ char *path = bus_pool_path(p);

	if (!path)
		return;
	pool_in_flight = p;
	switch (ev) {
	case POOL_ADDED:
		sd_bus_emit_object_added(bus, path);
		break;
	case POOL_CHANGED:
		sd_bus_emit_properties_changed(bus, path, BUS_IFACE_POOL, "Size", "InUse",
					       "Waiters", "HighWater", "Mapped", "Taps", "Locked",
					       "State", NULL);
		break;
	case POOL_REMOVED:
		sd_bus_emit_object_removed(bus, path);
		break;
	}
	pool_in_flight = NULL;
}
