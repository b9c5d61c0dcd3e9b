/* The tap objects, /org/xenproject/Tapd1/tap/<minor>: their methods and
 * properties, how a path finds its tap, and the signals that announce a
 * tap's arrival, changes and departure. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "internal.h"
#include "lib/log.h"
#include "exports/device.h"
#include "exports/nbd/server.h"

/* For Exports: the daemon's NBD socket. */
static const struct daemon_info *tap_info;

/* The tap being announced or retracted: the core may call its listener
 * before linking or after unlinking it, and sd-bus must still find it to
 * list its interfaces in the signal. */
static struct tap *tap_in_flight;

char *bus_tap_path(const struct tap *t)
{
	char *path;

	if (asprintf(&path, BUS_TAP_PREFIX "/%d", tap_minor(t)) < 0)
		return NULL;
	return path;
}

/* Percent-encode everything but RFC 3986 unreserved characters (and '/'
 * where asked) so the URI survives any name or path. */
static char *uri_encode(char *o, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    strchr("-._~", c) || (keep_slash && c == '/')) {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	return o;
}

/* "nbd+unix:///NAME?socket=PATH" with the socket percent-encoded. */
static char *nbd_unix_uri(const char *name, const char *socket)
{
	char *uri = malloc(sizeof("nbd+unix:///?socket=") + 3 * (strlen(name) + strlen(socket)));
	char *o = uri;

	if (!uri)
		return NULL;
	o = stpcpy(o, "nbd+unix:///");
	o = uri_encode(o, name, false);
	o = stpcpy(o, "?socket=");
	o = uri_encode(o, socket, true);
	*o = '\0';
	return uri;
}

/* "/org/xenproject/Tapd1/tap/12" -> the tap, or NULL. Strict: decimal digits
 * only, no sign, no leading zeros, so each tap has exactly one path. */
static void *tap_lookup(const char *path)
{
	static const char prefix[] = BUS_TAP_PREFIX "/";
	const char *s;
	int minor = 0;

	if (!path || strncmp(path, prefix, sizeof(prefix) - 1) != 0)
		return NULL;
	s = path + sizeof(prefix) - 1;
	if (!*s || (s[0] == '0' && s[1]))
		return NULL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || minor > 1000000)
			return NULL;
		minor = minor * 10 + (*s - '0');
	}
	if (tap_in_flight && tap_minor(tap_in_flight) == minor)
		return tap_in_flight;
	return tap_by_minor(minor);
}

static int tap_missing(sd_bus_error *e, const char *path)
{
	return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_TAP, "no such tap: %s (no tap has that minor)",
				 path);
}

/* ---- kernel devices ------------------------------------------------------
 * Attach, Detach, and a Destroy that detaches first, held while the device
 * kind works (exports/device.h). A call holds the D-Bus call, not the tap:
 * the tap is looked up again by minor and name when the answer comes. */

enum bus_dev_what { BUS_DEV_ATTACH, BUS_DEV_DETACH, BUS_DEV_DESTROY };

struct bus_dev_call {
	struct bus_held held; /* about the tap's name */
	enum bus_dev_what what;
	int minor;
};

static struct bus_dev_call *bus_dev_call_new(sd_bus_message *m, const struct tap *t,
					     enum bus_dev_what what)
{
	static const char *const method[] = { "Attach", "Detach", "Destroy" };
	struct bus_dev_call *c = bus_held_new(m, sizeof(*c), method[what], tap_name(t));

	if (!c)
		return NULL;
	c->what = what;
	c->minor = tap_minor(t);
	return c;
}

/* Destroy, once the tap's device is gone. */
static int tap_destroy_now(struct bus_dev_call *c, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = tap_by_minor(c->minor);
	int r;

	if (!t || strcmp(tap_name(t), c->held.about) != 0)
		return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_TAP, "no such tap: %s", c->held.about);
	r = tap_destroy(t, &eb);
	if (r < 0)
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	return 0;
}

/* From the device kind, on the loop: answer the call. */
static void tap_dev_done(void *arg, int err, const char *msg)
{
	struct bus_dev_call *c = arg;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct errbuf eb = { { 0 } };

	if (err < 0) {
		if (c->what == BUS_DEV_DESTROY) {
			/* The tap is busy with its consumer: say so as any
			 * other busy tap, naming the holder. */
			err_set(&eb, "tap %s is attached as a device that cannot be detached: %s",
				c->held.about, msg);
			bus_core_error(&e, err, &eb, BUS_OP_TAP);
		} else {
			err_set(&eb, "%s", msg);
			bus_core_error(&e, err, &eb, BUS_OP_DEVICE);
		}
	} else if (c->what == BUS_DEV_DESTROY) {
		tap_destroy_now(c, &e);
	}
	if (sd_bus_error_is_set(&e)) {
		log_info("%s %s failed: %s", c->held.method, c->held.about, e.message);
		bus_held_error(&c->held, &e);
	} else if (c->what == BUS_DEV_ATTACH) {
		bus_held_return(&c->held, "s", msg);
	} else {
		bus_held_return(&c->held, "");
	}
}

static int tap_attach_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	struct bus_dev_call *c;
	const char *kind;
	int r;

	r = sd_bus_message_read(m, "s", &kind);
	if (r < 0)
		return r;
	c = bus_dev_call_new(m, t, BUS_DEV_ATTACH);
	if (!c)
		return -ENOMEM;
	r = device_attach(t, kind, tap_dev_done, c, &eb);
	if (r < 0) {
		bus_held_free(&c->held);
		log_info("Attach %s as %s refused: %s", tap_name(t), *kind ? kind : "a device",
			 eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_DEVICE);
	}
	/* Answered by tap_dev_done() once the device is there. */
	return 1;
}

static int tap_detach_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	struct bus_dev_call *c;
	int force, r;

	r = sd_bus_message_read(m, "b", &force);
	if (r < 0)
		return r;
	c = bus_dev_call_new(m, t, BUS_DEV_DETACH);
	if (!c)
		return -ENOMEM;
	r = device_detach(t, force, tap_dev_done, c, &eb);
	if (r < 0) {
		bus_held_free(&c->held);
		log_info("Detach %s refused: %s", tap_name(t), eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_DEVICE);
	}
	return 1;
}

static int tap_get_devices(sd_bus *bus, const char *path, const char *iface,
			   const char *prop, sd_bus_message *reply, void *userdata,
			   sd_bus_error *e)
{
	struct device *dev = device_of(userdata);
	char num[32];
	int r;

	(void)bus;
	(void)path;
	(void)iface;
	(void)prop;
	(void)e;
	r = sd_bus_message_open_container(reply, 'a', "(sss)");
	if (r >= 0 && dev && device_listed(dev)) {
		snprintf(num, sizeof(num), "%u:%u", major(device_devnum(dev)),
			 minor(device_devnum(dev)));
		r = sd_bus_message_append(reply, "(sss)", device_kind_name(dev), device_path(dev),
					  num);
	}
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	return r;
}

/* A tap attached as a device is detached first (without force: a device
 * in use makes the Destroy fail, naming its holder), then destroyed. */
static int tap_destroy_detach(sd_bus_message *m, struct tap *t, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct bus_dev_call *c = bus_dev_call_new(m, t, BUS_DEV_DESTROY);
	int r;

	if (!c)
		return -ENOMEM;
	r = device_detach(t, false, tap_dev_done, c, &eb);
	if (r < 0) {
		bus_held_free(&c->held);
		log_info("Destroy %s refused: %s", tap_name(t), eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r == -ENXIO ? -EBUSY : r, &eb, BUS_OP_TAP);
	}
	return 1;
}

static int tap_destroy_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	int r;

	if (device_of(t))
		return tap_destroy_detach(m, t, e);
	r = tap_destroy(t, &eb);
	if (r < 0)
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	/* t is gone now. */
	return sd_bus_reply_method_return(m, "");
}

/* From the core, on the loop (or from tap_shutdown_all() at daemon stop):
 * the tap is paused, or will not be. arg is the held call, about the tap's
 * name: the tap may be gone by now. */
static void tap_pause_done(void *arg, int err)
{
	struct bus_held *p = arg;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	struct errbuf eb = { { 0 } };

	if (err < 0) {
		log_info("Pause %s failed: %s", p->about, strerror(-err));
		if (err == -ESHUTDOWN)
			err_set(&eb, "tapd is stopping: tap %s was not paused", p->about);
		bus_core_error(&e, err, &eb, BUS_OP_TAP);
		bus_held_error(p, &e);
	} else {
		bus_held_return(p, "");
	}
}

static int tap_pause_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	struct bus_held *p;
	int r;

	p = bus_held_new(m, sizeof(*p), "Pause", tap_name(t));
	if (!p)
		return -ENOMEM;
	r = tap_pause(t, tap_pause_done, p, &eb);
	if (r < 0) {
		bus_held_free(p);
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	}
	/* Answered by tap_pause_done() once in-flight requests are done. */
	return 1;
}

/* An Unpause waiting for its image to open. */
struct bus_unpause {
	struct bus_held held; /* about the tap's name */
	char image[];         /* for the log */
};

static void tap_unpause_done(void *arg, struct tap *t, int err, const struct errbuf *eb)
{
	struct bus_unpause *u = arg;
	sd_bus_error e = SD_BUS_ERROR_NULL;

	(void)t;
	if (err < 0) {
		log_info("Unpause %s on %s refused: %s", u->held.about,
			 *u->image ? u->image : "its image",
			 eb && eb->msg[0] ? eb->msg : strerror(-err));
		bus_core_error(&e, err, eb, BUS_OP_TAP_UNPAUSE);
		bus_held_error(&u->held, &e);
	} else {
		bus_held_return(&u->held, "");
	}
}

/* Answered by tap_unpause_done once the image is open. */
static int tap_unpause_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	struct bus_unpause *u;
	const char *image;
	int r;

	r = sd_bus_message_read(m, "s", &image);
	if (r < 0)
		return r;
	/* Checked here so that -EINVAL from the core only ever means the
	 * image (bus_core_error()). */
	if (tap_state(t) != TAP_PAUSED)
		return sd_bus_error_setf(e, BUS_ERR_NOT_PAUSED, "tap %s is %s, not paused",
					 tap_name(t), tap_state_name(tap_state(t)));
	u = bus_held_new(m, sizeof(*u) + strlen(image) + 1, "Unpause", tap_name(t));
	if (!u)
		return -ENOMEM;
	strcpy(u->image, image);
	r = tap_unpause(t, image, tap_unpause_done, u, &eb);
	if (r < 0) {
		bus_held_free(&u->held);
		log_info("Unpause %s on %s refused: %s", tap_name(t), *image ? image : "its image",
			 eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_TAP_UNPAUSE);
	}
	return 1;
}

static int tap_stats_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	struct tap_stats st;
	int r;

	(void)e;
	tap_get_stats(userdata, &st);
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_append(reply, "a{st}", 13,
				  "reads", st.reads,
				  "writes", st.writes,
				  "flushes", st.flushes,
				  "trims", st.trims,
				  "zeroes", st.zeroes,
				  "read_bytes", st.read_bytes,
				  "write_bytes", st.write_bytes,
				  "errors", st.errors,
				  "inflight", (uint64_t)st.inflight,
				  "waiting", (uint64_t)st.waiting,
				  "connections", (uint64_t)st.connections,
				  "chain_depth", (uint64_t)st.chain_depth,
				  "parent_shares", (uint64_t)st.parent_shares);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int tap_get_prop(sd_bus *bus, const char *path, const char *iface, const char *prop,
			sd_bus_message *reply, void *userdata, sd_bus_error *e)
{
	struct tap *t = userdata;
	struct pool *p;

	(void)bus;
	(void)path;
	(void)iface;
	(void)e;
	if (strcmp(prop, "Name") == 0)
		return sd_bus_message_append(reply, "s", tap_name(t));
	if (strcmp(prop, "Minor") == 0)
		return sd_bus_message_append(reply, "u", (uint32_t)tap_minor(t));
	if (strcmp(prop, "Image") == 0)
		return sd_bus_message_append(reply, "s", tap_image(t));
	if (strcmp(prop, "State") == 0)
		return sd_bus_message_append(reply, "s", tap_state_name(tap_state(t)));
	if (strcmp(prop, "Pool") == 0) {
		p = tap_pool(t);
		return sd_bus_message_append(reply, "s", p ? pool_name(p) : "");
	}
	if (strcmp(prop, "Size") == 0)
		return sd_bus_message_append(reply, "t", tap_size(t));
	if (strcmp(prop, "ReadOnly") == 0)
		return sd_bus_message_append(reply, "b", (int)tap_read_only(t));
	if (strcmp(prop, "QosIops") == 0 || strcmp(prop, "QosBps") == 0) {
		uint64_t iops, bps;

		tap_get_qos(t, &iops, &bps);
		return sd_bus_message_append(reply, "t", prop[3] == 'I' ? iops : bps);
	}
	if (strcmp(prop, "Parent") == 0) {
		struct tap *parent = tap_parent(t);

		return sd_bus_message_append(reply, "s", parent ? tap_name(parent) : "");
	}
	return -ENOENT;
}

static int tap_set_pool_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	struct pool *old = tap_pool(t);
	const char *name;
	int r;

	r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	if (!*name)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "pool name is empty");
	if (!pool_find(name))
		return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_POOL, "no such pool: %s", name);
	if (old && strcmp(pool_name(old), name) == 0)
		return sd_bus_reply_method_return(m, "");
	r = tap_set_pool(t, name, &eb);
	if (r < 0) {
		log_info("SetPool %s to %s refused: %s", tap_name(t), name,
			 eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	}
	/* The core announces the change (TAP_CHANGED): Pool. */
	return sd_bus_reply_method_return(m, "");
}

static int tap_set_qos_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct tap *t = userdata;
	uint64_t iops, bps;
	int r;

	(void)e;
	r = sd_bus_message_read(m, "tt", &iops, &bps);
	if (r < 0)
		return r;
	tap_set_qos(t, iops, bps);
	/* tap_set_qos() does not call the tap listener: say it here. */
	sd_bus_emit_properties_changed(sd_bus_message_get_bus(m), sd_bus_message_get_path(m),
				       BUS_IFACE_TAP, "QosIops", "QosBps", NULL);
	return sd_bus_reply_method_return(m, "");
}

static int tap_get_exports(sd_bus *bus, const char *path, const char *iface,
			   const char *prop, sd_bus_message *reply, void *userdata,
			   sd_bus_error *e)
{
	_cleanup_free_ char *uri = NULL;
	int r;

	(void)bus;
	(void)path;
	(void)iface;
	(void)prop;
	(void)e;
	r = sd_bus_message_open_container(reply, 'a', "s");
	if (r < 0)
		return r;
	if (tap_info->nbd_socket && *tap_info->nbd_socket) {
		uri = nbd_unix_uri(tap_name(userdata), tap_info->nbd_socket);
		if (!uri)
			return -ENOMEM;
		r = sd_bus_message_append(reply, "s", uri);
		if (r < 0)
			return r;
	}
	if (nbd_server_tcp_address()) {
		/* nbd://HOST:PORT/NAME; an IPv6 host keeps its brackets. */
		_cleanup_free_ char *tcp = NULL;

		if (asprintf(&tcp, "nbd://%s/%s", nbd_server_tcp_address(), tap_name(userdata)) < 0)
			return -ENOMEM;
		r = sd_bus_message_append(reply, "s", tcp);
		if (r < 0)
			return r;
	}
	return sd_bus_message_close_container(reply);
}

static const sd_bus_vtable tap_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("Destroy", "", "", tap_destroy_cb, 0),
	SD_BUS_METHOD("Pause", "", "", tap_pause_cb, 0),
	SD_BUS_METHOD_WITH_NAMES("Unpause", "s", SD_BUS_PARAM(image), "", , tap_unpause_cb, 0),
	SD_BUS_METHOD_WITH_NAMES("Stats", "", , "a{st}", SD_BUS_PARAM(stats), tap_stats_cb,
				 SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_NAMES("SetPool", "s", SD_BUS_PARAM(pool), "", , tap_set_pool_cb, 0),
	SD_BUS_METHOD_WITH_NAMES("SetQos", "tt", SD_BUS_PARAM(iops) SD_BUS_PARAM(bps), "", ,
				 tap_set_qos_cb, 0),
	SD_BUS_METHOD_WITH_NAMES("Attach", "s", SD_BUS_PARAM(kind), "s", SD_BUS_PARAM(device),
				 tap_attach_cb, 0),
	SD_BUS_METHOD_WITH_NAMES("Detach", "b", SD_BUS_PARAM(force), "", , tap_detach_cb, 0),
	SD_BUS_PROPERTY("Name", "s", tap_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Minor", "u", tap_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Image", "s", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("State", "s", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Pool", "s", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Size", "t", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("ReadOnly", "b", tap_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Exports", "as", tap_get_exports, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("QosIops", "t", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("QosBps", "t", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Parent", "s", tap_get_prop, 0, BUS_CHANGES),
	SD_BUS_PROPERTY("Devices", "a(sss)", tap_get_devices, 0, BUS_CHANGES),
	SD_BUS_VTABLE_END
};

static void *tap_iter(void *prev)
{
	return prev ? tap_next(prev) : tap_first();
}

static char *tap_path(const void *t)
{
	return bus_tap_path(t);
}

static const struct bus_kind tap_kind = {
	.prefix = BUS_TAP_PREFIX,
	.iface = BUS_IFACE_TAP,
	.vtable = tap_vtable,
	.iter = tap_iter,
	.path = tap_path,
	.lookup = tap_lookup,
	.missing = tap_missing,
};

int bus_tap_objects_add(sd_bus *bus, const struct daemon_info *info)
{
	tap_info = info;
	return bus_kind_add(bus, &tap_kind);
}

void bus_tap_emit(sd_bus *bus, struct tap *t, enum tap_event ev)
{
	_cleanup_free_ char *path = bus_tap_path(t);

	if (!path)
		return;
	tap_in_flight = t;
	switch (ev) {
	case TAP_ADDED:
		sd_bus_emit_object_added(bus, path);
		break;
	case TAP_CHANGED:
		/* Pause and unpause change State; unpausing on a new image
		 * changes Image; SetPool and SetQos change the rest. */
		sd_bus_emit_properties_changed(bus, path, BUS_IFACE_TAP, "State", "Image", "Size",
					       "Pool", "QosIops", "QosBps", "Parent", NULL);
		break;
	case TAP_REMOVED:
		sd_bus_emit_object_removed(bus, path);
		break;
	}
	tap_in_flight = NULL;
}

void bus_tap_devices_changed(sd_bus *bus, struct tap *t)
{
	_cleanup_free_ char *path = bus_tap_path(t);

	if (path)
		sd_bus_emit_properties_changed(bus, path, BUS_IFACE_TAP, "Devices", NULL);
}
