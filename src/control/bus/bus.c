/* The D-Bus service: connects sd-bus to the libevent loop (no sd-event),
 * owns org.xenproject.Tapd1, serves the Manager object and turns tap and
 * pool listener events into ObjectManager and PropertiesChanged signals. */
#include "bus.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lib/log.h"

/* Pool in_use changes on every request; one signal per pool per interval
 * is plenty for a person watching and costs the I/O path nothing. */
#define BUS_POOL_SIGNAL_USEC 100000
/* Pools with a pending PropertiesChanged. More dirty pools than this just
 * means "signal them all" on the next tick. */
#define BUS_DIRTY_MAX 32

static struct {
	sd_bus *bus;
	struct event_base *base;
	struct event *io_ev;
	struct event *timer_ev;
	struct event *pool_ev;
	short io_flags;
	struct daemon_info info; /* strings owned */
	struct pool *dirty[BUS_DIRTY_MAX];
	unsigned ndirty;
	bool all_dirty;
} B;

struct tap *bus_tap_in_flight;
struct pool *bus_pool_in_flight;
const struct daemon_info *bus_info = &B.info;

int bus_core_error(sd_bus_error *e, int err, const struct errbuf *eb, enum bus_op op)
{
	const char *msg = eb && eb->msg[0] ? eb->msg : strerror(-err);
	bool pool = op == BUS_OP_POOL || op == BUS_OP_POOL_CREATE;
	bool opens = op == BUS_OP_TAP_CREATE || op == BUS_OP_TAP_UNPAUSE;
	const char *name;

	switch (-err) {
	case ENOENT:
		/* Only opening the image looks up files. */
		name = opens ? BUS_ERR_NO_SUCH_FILE : BUS_ERR_FAILED;
		break;
	case ENODEV:
		/* Only pool lookups by name (CreateTap, SetPool) say ENODEV. */
		name = op == BUS_OP_TAP_CREATE || op == BUS_OP_TAP ? BUS_ERR_NO_SUCH_POOL
								   : BUS_ERR_FAILED;
		break;
	case ERANGE:
		/* tap_unpause(): the new chain has another size. */
		name = op == BUS_OP_TAP_UNPAUSE ? BUS_ERR_SIZE_MISMATCH : BUS_ERR_FAILED;
		break;
	case EINVAL:
		name = opens ? BUS_ERR_BAD_IMAGE : SD_BUS_ERROR_INVALID_ARGS;
		break;
	case ESHUTDOWN:
		name = BUS_ERR_SHUTTING_DOWN;
		break;
	case EEXIST:
		name = pool ? BUS_ERR_POOL_EXISTS : BUS_ERR_TAP_EXISTS;
		break;
	case EBUSY:
		name = pool ? BUS_ERR_POOL_BUSY : BUS_ERR_TAP_BUSY;
		break;
	case EACCES:
	case EPERM:
	case EROFS:
		name = BUS_ERR_PERMISSION;
		break;
	default:
		name = BUS_ERR_FAILED;
		break;
	}
	return sd_bus_error_setf(e, name, "%s", msg);
}

/* ---- loop glue ---------------------------------------------------------- */

static void bus_process(void);

static void bus_dead(int r)
{
	/* Without the bus we keep serving the taps we have; only control is
	 * lost. Stop watching the fd so a dead socket cannot spin the loop. */
	log_err("D-Bus connection lost (%s); control plane disabled, taps keep running",
		strerror(-r));
	if (B.io_ev)
		event_del(B.io_ev);
	if (B.timer_ev)
		event_del(B.timer_ev);
	B.io_flags = 0;
	sd_bus_close(B.bus);
	B.bus = sd_bus_unref(B.bus);
}

static void bus_on_io(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	bus_process();
}

/* Follow what sd-bus wants next: readable and/or writable fd, and a wake-up
 * at its next timeout (method call timeouts, queued messages: 0). */
static void bus_arm(void)
{
	short want = EV_PERSIST;
	uint64_t until;
	int events, r;

	if (!B.bus)
		return;
	/* A failure here means the connection is closing; the next
	 * sd_bus_process() reports it and bus_process() tears down. Never
	 * tear down here: we may be inside a method handler. */
	events = sd_bus_get_events(B.bus);
	if (events < 0)
		return;
	if (events & POLLIN)
		want |= EV_READ;
	if (events & POLLOUT)
		want |= EV_WRITE;
	if (want != B.io_flags) {
		event_del(B.io_ev);
		event_assign(B.io_ev, B.base, sd_bus_get_fd(B.bus), want, bus_on_io, NULL);
		if (want & (EV_READ | EV_WRITE))
			event_add(B.io_ev, NULL);
		B.io_flags = want;
	}

	r = sd_bus_get_timeout(B.bus, &until);
	if (r > 0 && until != UINT64_MAX) {
		struct timespec now;
		uint64_t now_us, rel;
		struct timeval tv;

		clock_gettime(CLOCK_MONOTONIC, &now);
		now_us = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
		rel = until > now_us ? until - now_us : 0;
		tv.tv_sec = (time_t)(rel / 1000000);
		tv.tv_usec = (suseconds_t)(rel % 1000000);
		evtimer_add(B.timer_ev, &tv);
	} else {
		evtimer_del(B.timer_ev);
	}
}

static void bus_process(void)
{
	int r;

	while (B.bus) {
		r = sd_bus_process(B.bus, NULL);
		if (r < 0) {
			bus_dead(r);
			return;
		}
		if (r == 0)
			break;
	}
	bus_arm();
}

void bus_kick(void)
{
	bus_arm();
}

static void bus_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	bus_process();
}

/* ---- signals from the core ---------------------------------------------- */

static void bus_emit_pool(struct pool *p)
{
	_cleanup_free_ char *path = bus_pool_path(p);

	if (path)
		sd_bus_emit_properties_changed(B.bus, path, BUS_IFACE_POOL, "Size", "InUse",
					       "Waiters", "HighWater", "Mapped", "Taps",
					       "Locked", NULL);
}

/* Pool signals go out on a tick: the first change after a quiet spell is
 * announced at once (next loop iteration), later ones are collected for a
 * window of BUS_POOL_SIGNAL_USEC and sent together at its end. */
static void bus_on_pool_tick(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval window = { 0, BUS_POOL_SIGNAL_USEC };
	bool sent = B.all_dirty || B.ndirty;

	(void)fd;
	(void)what;
	(void)arg;
	if (!B.bus)
		return;
	if (B.all_dirty) {
		for (struct pool *p = pool_first(); p; p = pool_next(p))
			bus_emit_pool(p);
	} else {
		for (unsigned i = 0; i < B.ndirty; i++)
			bus_emit_pool(B.dirty[i]);
	}
	B.ndirty = 0;
	B.all_dirty = false;
	/* Keep the window open while changes keep coming. */
	if (sent)
		evtimer_add(B.pool_ev, &window);
	bus_arm();
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
	_cleanup_free_ char *path = NULL;

	if (!B.bus)
		return;
	if (ev == POOL_CHANGED) {
		bus_mark_dirty(p);
		return;
	}
	path = bus_pool_path(p);
	if (!path)
		return;
	bus_pool_in_flight = p;
	if (ev == POOL_ADDED) {
		sd_bus_emit_object_added(B.bus, path);
	} else {
		/* With all_dirty the tick walks the live list, where p no
		 * longer is; otherwise drop it from the set by hand. */
		bus_forget_dirty(p);
		sd_bus_emit_object_removed(B.bus, path);
	}
	bus_pool_in_flight = NULL;
	bus_arm();
}

static void bus_on_tap_event(struct tap *t, enum tap_event ev)
{
	_cleanup_free_ char *path = NULL;

	if (!B.bus)
		return;
	path = bus_tap_path(t);
	if (!path)
		return;
	bus_tap_in_flight = t;
	switch (ev) {
	case TAP_ADDED:
		sd_bus_emit_object_added(B.bus, path);
		break;
	case TAP_CHANGED:
		/* Pause and unpause change State; unpausing on a new image
		 * changes Image; SetPool and SetQos change the rest. */
		sd_bus_emit_properties_changed(B.bus, path, BUS_IFACE_TAP, "State", "Image",
					       "Size", "Pool", "QosIops", "QosBps", "Parent",
					       NULL);
		break;
	case TAP_REMOVED:
		sd_bus_emit_object_removed(B.bus, path);
		break;
	}
	bus_tap_in_flight = NULL;
	bus_arm();
}

/* ---- Manager ------------------------------------------------------------ */

/* CreateTap's options: key, D-Bus type, and where the value goes. */
enum mgr_opt_kind { MGR_OPT_STR, MGR_OPT_BOOL, MGR_OPT_U64 };

static const struct {
	const char *key;
	enum mgr_opt_kind kind;
	size_t off; /* in struct tap_config */
} mgr_options[] = {
	{ "name", MGR_OPT_STR, offsetof(struct tap_config, name) },
	{ "pool", MGR_OPT_STR, offsetof(struct tap_config, pool) },
	{ "parent", MGR_OPT_STR, offsetof(struct tap_config, parent) },
	{ "read-only", MGR_OPT_BOOL, offsetof(struct tap_config, read_only) },
	{ "qos-iops", MGR_OPT_U64, offsetof(struct tap_config, qos_iops) },
	{ "qos-bps", MGR_OPT_U64, offsetof(struct tap_config, qos_bps) },
};

static int mgr_parse_option(sd_bus_message *m, struct tap_config *cfg, const char *key,
			    sd_bus_error *e)
{
	static const char *const type_name[] = { "a string (s)", "a boolean (b)",
						 "an unsigned 64-bit integer (t)" };
	static const char sig[] = "sbt";
	const char *type;
	char *field;
	size_t i;
	int b, r;

	for (i = 0; i < ARRAY_SIZE(mgr_options) && strcmp(key, mgr_options[i].key) != 0; i++)
		;
	if (i == ARRAY_SIZE(mgr_options))
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "unknown option '%s' (known: name, pool, parent, "
					 "read-only, qos-iops, qos-bps)", key);
	r = sd_bus_message_peek_type(m, NULL, &type);
	if (r < 0)
		return r;
	if (type[0] != sig[mgr_options[i].kind] || type[1])
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "option '%s' must be %s, not '%s'", key,
					 type_name[mgr_options[i].kind], type);
	field = (char *)cfg + mgr_options[i].off;
	switch (mgr_options[i].kind) {
	case MGR_OPT_STR:
		r = sd_bus_message_read(m, "v", "s", (const char **)field);
		if (r >= 0 && !**(const char **)field)
			return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
						 "option '%s' is empty", key);
		return r;
	case MGR_OPT_BOOL:
		r = sd_bus_message_read(m, "v", "b", &b);
		if (r >= 0)
			*(bool *)field = b;
		return r;
	case MGR_OPT_U64:
		return sd_bus_message_read(m, "v", "t", (uint64_t *)field);
	}
	return -EINVAL;
}

/* Parse CreateTap's a{sv}. Strings point into m, valid while it lives. */
static int mgr_parse_options(sd_bus_message *m, struct tap_config *cfg, sd_bus_error *e)
{
	int r;

	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key;

		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			return r;
		r = mgr_parse_option(m, cfg, key, e);
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

static int mgr_create_tap(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct tap_config cfg = { 0 };
	struct errbuf eb = { { 0 } };
	_cleanup_free_ char *path = NULL;
	struct tap *t;
	int r;

	(void)userdata;
	r = sd_bus_message_read(m, "s", &cfg.image);
	if (r < 0)
		return r;
	r = mgr_parse_options(m, &cfg, e);
	if (r < 0)
		return r;
	if (!*cfg.image)
		return sd_bus_error_setf(e, BUS_ERR_BAD_IMAGE,
					 "empty image string; expected raw:/path, ram:SIZE or null:SIZE");
	/* Checked here: -ENOENT from the core means a missing image file. */
	if (cfg.parent && !tap_find(cfg.parent))
		return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_TAP,
					 "no such tap: %s (the parent must be a running tap)",
					 cfg.parent);

	r = tap_create(&cfg, &t, &eb);
	if (r < 0) {
		log_info("CreateTap %s refused: %s", cfg.image, eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_TAP_CREATE);
	}
	path = bus_tap_path(t);
	if (!path)
		return -ENOMEM;
	return sd_bus_reply_method_return(m, "os", path, tap_name(t));
}

static int mgr_list_taps(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	int r;

	(void)userdata;
	(void)e;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(ussssbto)");
	if (r < 0)
		return r;
	for (struct tap *t = tap_first(); t; t = tap_next(t)) {
		_cleanup_free_ char *path = bus_tap_path(t);
		struct pool *p = tap_pool(t);

		if (!path)
			return -ENOMEM;
		r = sd_bus_message_append(reply, "(ussssbto)", (uint32_t)tap_minor(t),
					  tap_name(t), tap_image(t),
					  tap_state_name(tap_state(t)), p ? pool_name(p) : "",
					  (int)tap_read_only(t), tap_size(t), path);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int mgr_create_pool(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	_cleanup_free_ char *path = NULL;
	const char *name;
	struct pool *p;
	uint64_t size;
	int r;

	(void)userdata;
	r = sd_bus_message_read(m, "st", &name, &size);
	if (r < 0)
		return r;
	if (!*name)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "pool name is empty");
	if (size == 0)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "pool size must be greater than 0");
	r = pool_create(name, size, &p, &eb);
	if (r < 0)
		return bus_core_error(e, r, &eb, BUS_OP_POOL_CREATE);
	path = bus_pool_path(p);
	if (!path)
		return -ENOMEM;
	log_info("pool %s created (%llu bytes)", name, (unsigned long long)size);
	return sd_bus_reply_method_return(m, "o", path);
}

static int mgr_list_pools(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	int r;

	(void)userdata;
	(void)e;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(sttttuuo)");
	if (r < 0)
		return r;
	for (struct pool *p = pool_first(); p; p = pool_next(p)) {
		_cleanup_free_ char *path = bus_pool_path(p);
		struct pool_stats st;

		if (!path)
			return -ENOMEM;
		pool_get_stats(p, &st);
		r = sd_bus_message_append(reply, "(sttttuuo)", pool_name(p), st.size, st.in_use,
					  st.high_water, st.mapped, st.waiters, st.taps, path);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int mgr_get_bool(sd_bus *bus, const char *path, const char *iface,
			const char *prop, sd_bus_message *reply, void *userdata,
			sd_bus_error *e)
{
	(void)bus;
	(void)path;
	(void)iface;
	(void)prop;
	(void)e;
	return sd_bus_message_append(reply, "b", (int)*(const bool *)userdata);
}

static int mgr_get_str(sd_bus *bus, const char *path, const char *iface,
		       const char *prop, sd_bus_message *reply, void *userdata,
		       sd_bus_error *e)
{
	const char *s = *(const char *const *)userdata;

	(void)bus;
	(void)path;
	(void)iface;
	(void)prop;
	(void)e;
	return sd_bus_message_append(reply, "s", s ? s : "");
}

/* Methods that change something carry no UNPRIVILEGED flag: on an untrusted
 * bus sd-bus then checks the caller for CAP_SYS_ADMIN, a second fence
 * behind the bus policy (which already lets only root call them). */
static const sd_bus_vtable mgr_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD_WITH_NAMES("CreateTap", "sa{sv}", SD_BUS_PARAM(image) SD_BUS_PARAM(options),
				 "os", SD_BUS_PARAM(tap) SD_BUS_PARAM(name), mgr_create_tap, 0),
	SD_BUS_METHOD_WITH_NAMES("ListTaps", "", , "a(ussssbto)", SD_BUS_PARAM(taps),
				 mgr_list_taps, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_NAMES("CreatePool", "st", SD_BUS_PARAM(name) SD_BUS_PARAM(size),
				 "o", SD_BUS_PARAM(pool), mgr_create_pool, 0),
	SD_BUS_METHOD_WITH_NAMES("ListPools", "", , "a(sttttuuo)", SD_BUS_PARAM(pools),
				 mgr_list_pools, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_PROPERTY("Version", "s", mgr_get_str, offsetof(struct daemon_info, version),
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("IoFlusher", "b", mgr_get_bool, offsetof(struct daemon_info, io_flusher),
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("MemoryLocked", "b", mgr_get_bool,
			offsetof(struct daemon_info, memory_locked), SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("StateDirectory", "s", mgr_get_str,
			offsetof(struct daemon_info, state_dir), SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("NbdSocket", "s", mgr_get_str, offsetof(struct daemon_info, nbd_socket),
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_VTABLE_END
};

/* ---- start / stop ------------------------------------------------------- */

static int bus_connect(const char *address, sd_bus **out)
{
	sd_bus *bus = NULL;
	int r;

	if (!address || strcmp(address, "system") == 0)
		return sd_bus_open_system(out);
	if (strcmp(address, "session") == 0)
		return sd_bus_open_user(out);
	r = sd_bus_new(&bus);
	if (r < 0)
		return r;
	r = sd_bus_set_address(bus, address);
	if (r >= 0)
		r = sd_bus_set_bus_client(bus, 1);
	/* Like sd_bus_open_system(): sd-bus itself then refuses privileged
	 * methods to callers without CAP_SYS_ADMIN, behind the bus policy. */
	if (r >= 0)
		r = sd_bus_set_trusted(bus, 0);
	if (r >= 0)
		r = sd_bus_start(bus);
	if (r < 0) {
		sd_bus_unref(bus);
		return r;
	}
	*out = bus;
	return 0;
}

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

	if (B.bus) {
		err_set(eb, "the D-Bus service is already started");
		return -EALREADY;
	}
	B.base = base;
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

	r = bus_connect(address, &B.bus);
	if (r < 0) {
		err_set(eb, "cannot connect to the %s bus: %s", where, strerror(-r));
		goto fail;
	}
	r = sd_bus_add_object_vtable(B.bus, NULL, BUS_ROOT, BUS_IFACE_MANAGER, mgr_vtable,
				     &B.info);
	if (r >= 0)
		r = sd_bus_add_object_manager(B.bus, NULL, BUS_ROOT);
	if (r >= 0)
		r = bus_objects_add(B.bus);
	if (r < 0) {
		err_set(eb, "cannot publish D-Bus objects: %s", strerror(-r));
		goto fail;
	}

	/* Synchronous on purpose: READY=1 must mean the name is ours. */
	r = sd_bus_request_name(B.bus, BUS_NAME, 0);
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

	B.io_ev = event_new(base, -1, 0, bus_on_io, NULL);
	B.timer_ev = evtimer_new(base, bus_on_timer, NULL);
	B.pool_ev = evtimer_new(base, bus_on_pool_tick, NULL);
	if (!B.io_ev || !B.timer_ev || !B.pool_ev) {
		r = -ENOMEM;
		err_set(eb, "out of memory");
		goto fail;
	}
	B.io_flags = 0;
	tap_set_listener(bus_on_tap_event);
	pool_set_listener(bus_on_pool_event);
	log_info("D-Bus: %s owned on the %s bus", BUS_NAME, where);
	/* Messages may already sit in the read queue (from the name request). */
	bus_process();
	return 0;

fail:
	bus_stop();
	return r;
}

void bus_stop(void)
{
	tap_set_listener(NULL);
	pool_set_listener(NULL);
	if (B.io_ev)
		event_free(B.io_ev);
	if (B.timer_ev)
		event_free(B.timer_ev);
	if (B.pool_ev)
		event_free(B.pool_ev);
	B.io_ev = B.timer_ev = B.pool_ev = NULL;
	B.io_flags = 0;
	B.ndirty = 0;
	B.all_dirty = false;
	if (B.bus) {
		sd_bus_release_name(B.bus, BUS_NAME);
		B.bus = sd_bus_flush_close_unref(B.bus);
	}
	bus_free_info();
}
