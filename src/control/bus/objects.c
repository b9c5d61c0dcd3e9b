/* The per-tap (/org/xenproject/Tapd1/tap/<minor>) and per-pool
 * (/org/xenproject/Tapd1/pool/<escaped name>) D-Bus objects: fallback
 * vtables that look the object up on every call, so nothing on the bus side
 * has to be kept in step with the core's lists. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "lib/log.h"
#include "exports/nbd/server.h"

char *bus_tap_path(const struct tap *t)
{
	char *path;

	if (asprintf(&path, BUS_TAP_PREFIX "/%d", tap_minor(t)) < 0)
		return NULL;
	return path;
}

char *bus_pool_path(const struct pool *p)
{
	char *path;

	if (sd_bus_path_encode(BUS_POOL_PREFIX, pool_name(p), &path) < 0)
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

char *bus_nbd_uri(const char *name, const char *socket)
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

/* ---- taps --------------------------------------------------------------- */

/* "/org/xenproject/Tapd1/tap/12" -> the tap, or NULL. Strict: decimal digits
 * only, no sign, no leading zeros, so each tap has exactly one path. */
static struct tap *tap_from_path(const char *path)
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
	if (bus_tap_in_flight && tap_minor(bus_tap_in_flight) == minor)
		return bus_tap_in_flight;
	return tap_by_minor(minor);
}

static int tap_find_cb(sd_bus *bus, const char *path, const char *iface, void *userdata,
		       void **found, sd_bus_error *e)
{
	struct tap *t = tap_from_path(path);

	(void)bus;
	(void)iface;
	(void)userdata;
	(void)e;
	if (!t)
		return 0;
	*found = t;
	return 1;
}

static int tap_enum_cb(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
		       sd_bus_error *e)
{
	size_t n = 0, cap = tap_count() + 1;
	char **v = calloc(cap + 1, sizeof(*v));

	(void)bus;
	(void)prefix;
	(void)userdata;
	(void)e;
	if (!v)
		return -ENOMEM;
	for (struct tap *t = tap_first(); t && n < cap; t = tap_next(t)) {
		v[n] = bus_tap_path(t);
		if (!v[n])
			goto oom;
		n++;
	}
	*nodes = v;
	return 0;
oom:
	while (n)
		free(v[--n]);
	free(v);
	return -ENOMEM;
}

/* Any call on a tap path that no vtable claimed: a tap that does not exist
 * (any more). Say so by name instead of sd-bus's generic UnknownObject. */
static int tap_missing_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	const char *iface = sd_bus_message_get_interface(m);

	(void)userdata;
	if (!sd_bus_message_is_method_call(m, NULL, NULL) || !iface ||
	    strcmp(iface, BUS_IFACE_TAP) != 0 || tap_from_path(sd_bus_message_get_path(m)))
		return 0;
	return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_TAP, "no such tap: %s (no tap has that minor)",
				 sd_bus_message_get_path(m));
}

static int tap_destroy_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	int r;

	r = tap_destroy(t, &eb);
	if (r < 0)
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	/* t is gone now. */
	return sd_bus_reply_method_return(m, "");
}

/* A Pause() call waiting for its tap to drain. It holds the call, not the
 * tap: the tap may be gone by the time the core answers. */
struct bus_pause {
	sd_bus_message *call;
	char name[TAP_NAME_MAX];
};

/* From the core, on the loop (or from tap_shutdown_all() at daemon stop):
 * the tap is paused, or will not be. Reply now and push the reply out, as
 * we are not inside sd_bus_process(). */
static void tap_pause_done(void *arg, int err)
{
	struct bus_pause *p = arg;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	int r;

	if (err < 0) {
		log_info("Pause %s failed: %s", p->name, strerror(-err));
		if (err == -ESHUTDOWN)
			sd_bus_error_setf(&e, BUS_ERR_SHUTTING_DOWN,
					  "tapd is stopping: tap %s was not paused", p->name);
		else
			bus_core_error(&e, err, NULL, BUS_OP_TAP);
		r = sd_bus_reply_method_error(p->call, &e);
		sd_bus_error_free(&e);
	} else {
		r = sd_bus_reply_method_return(p->call, "");
	}
	/* The caller may have gone, or the connection: nothing to undo. */
	if (r < 0)
		log_debug("Pause %s: cannot reply: %s", p->name, strerror(-r));
	sd_bus_message_unref(p->call);
	free(p);
	bus_kick();
}

static int tap_pause_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
	struct bus_pause *p;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	snprintf(p->name, sizeof(p->name), "%s", tap_name(t));
	p->call = sd_bus_message_ref(m);
	r = tap_pause(t, tap_pause_done, p, &eb);
	if (r < 0) {
		sd_bus_message_unref(p->call);
		free(p);
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	}
	/* Answered by tap_pause_done() once in-flight requests are done. */
	return 1;
}

static int tap_unpause_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct tap *t = userdata;
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
	r = tap_unpause(t, image, &eb);
	if (r < 0) {
		log_info("Unpause %s on %s refused: %s", tap_name(t), *image ? image : "its image",
			 eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_TAP_UNPAUSE);
	}
	return sd_bus_reply_method_return(m, "");
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
	if (bus_info->nbd_socket && *bus_info->nbd_socket) {
		uri = bus_nbd_uri(tap_name(userdata), bus_info->nbd_socket);
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

#define CHANGES SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE

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
	SD_BUS_PROPERTY("Name", "s", tap_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Minor", "u", tap_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Image", "s", tap_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("State", "s", tap_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Pool", "s", tap_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Size", "t", tap_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("ReadOnly", "b", tap_get_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Exports", "as", tap_get_exports, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("QosIops", "t", tap_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("QosBps", "t", tap_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Parent", "s", tap_get_prop, 0, CHANGES),
	SD_BUS_VTABLE_END
};

/* ---- pools -------------------------------------------------------------- */

static struct pool *pool_from_path(const char *path)
{
	_cleanup_free_ char *name = NULL;
	struct pool *p;

	if (!path || sd_bus_path_decode(path, BUS_POOL_PREFIX, &name) <= 0 || !name)
		return NULL;
	if (bus_pool_in_flight && strcmp(pool_name(bus_pool_in_flight), name) == 0)
		return bus_pool_in_flight;
	p = pool_find(name);
	return p;
}

static int pool_find_cb(sd_bus *bus, const char *path, const char *iface, void *userdata,
			void **found, sd_bus_error *e)
{
	struct pool *p = pool_from_path(path);

	(void)bus;
	(void)iface;
	(void)userdata;
	(void)e;
	if (!p)
		return 0;
	*found = p;
	return 1;
}

static int pool_enum_cb(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
			sd_bus_error *e)
{
	size_t n = 0, cap = 8;
	char **v = calloc(cap + 1, sizeof(*v));

	(void)bus;
	(void)prefix;
	(void)userdata;
	(void)e;
	if (!v)
		return -ENOMEM;
	for (struct pool *p = pool_first(); p; p = pool_next(p)) {
		if (n == cap) {
			char **nv = realloc(v, (2 * cap + 1) * sizeof(*v));

			if (!nv)
				goto oom;
			v = nv;
			cap *= 2;
		}
		v[n] = bus_pool_path(p);
		if (!v[n])
			goto oom;
		v[++n] = NULL;
	}
	*nodes = v;
	return 0;
oom:
	while (n)
		free(v[--n]);
	free(v);
	return -ENOMEM;
}

static int pool_missing_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	const char *iface = sd_bus_message_get_interface(m);
	const char *path = sd_bus_message_get_path(m);
	_cleanup_free_ char *name = NULL;

	(void)userdata;
	if (!sd_bus_message_is_method_call(m, NULL, NULL) || !iface ||
	    strcmp(iface, BUS_IFACE_POOL) != 0 || pool_from_path(path))
		return 0;
	if (sd_bus_path_decode(path, BUS_POOL_PREFIX, &name) > 0 && name)
		return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_POOL, "no such pool: %s", name);
	return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_POOL, "no such pool: %s", path);
}

static int pool_resize_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	uint64_t size;
	int r;

	r = sd_bus_message_read(m, "t", &size);
	if (r < 0)
		return r;
	if (size == 0)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "pool size must be greater than 0");
	r = pool_resize(userdata, size, &eb);
	if (r < 0)
		return bus_core_error(e, r, &eb, BUS_OP_POOL);
	log_info("pool %s resized to %llu bytes", pool_name(userdata), (unsigned long long)size);
	return sd_bus_reply_method_return(m, "");
}

static int pool_destroy_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	char name[POOL_NAME_MAX + 1];
	int r;

	snprintf(name, sizeof(name), "%s", pool_name(userdata));
	if (strcmp(name, POOL_DEFAULT) == 0)
		return sd_bus_error_setf(e, BUS_ERR_POOL_BUSY,
					 "the default pool always exists and cannot be destroyed");
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
	SD_BUS_PROPERTY("Size", "t", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("InUse", "t", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Waiters", "u", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("HighWater", "t", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Mapped", "t", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Taps", "u", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("Locked", "b", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("QosIops", "t", pool_get_prop, 0, CHANGES),
	SD_BUS_PROPERTY("QosBps", "t", pool_get_prop, 0, CHANGES),
	SD_BUS_VTABLE_END
};

int bus_objects_add(sd_bus *bus)
{
	int r;

	r = sd_bus_add_fallback_vtable(bus, NULL, BUS_TAP_PREFIX, BUS_IFACE_TAP, tap_vtable,
				       tap_find_cb, NULL);
	if (r >= 0)
		r = sd_bus_add_node_enumerator(bus, NULL, BUS_TAP_PREFIX, tap_enum_cb, NULL);
	if (r >= 0)
		r = sd_bus_add_fallback(bus, NULL, BUS_TAP_PREFIX, tap_missing_cb, NULL);
	if (r >= 0)
		r = sd_bus_add_fallback_vtable(bus, NULL, BUS_POOL_PREFIX, BUS_IFACE_POOL,
					       pool_vtable, pool_find_cb, NULL);
	if (r >= 0)
		r = sd_bus_add_node_enumerator(bus, NULL, BUS_POOL_PREFIX, pool_enum_cb, NULL);
	if (r >= 0)
		r = sd_bus_add_fallback(bus, NULL, BUS_POOL_PREFIX, pool_missing_cb, NULL);
	return r;
}
