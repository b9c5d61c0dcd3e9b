/* What every D-Bus object file shares: the mapping from a core failure
 * (-errno and its message) to a named D-Bus error, the calls answered later
 * (struct bus_held), and the find, enumerate and missing-object callbacks
 * of one kind of object (struct bus_kind). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "internal.h"
#include "lib/log.h"

int bus_core_error(sd_bus_error *e, int err, const struct errbuf *eb, enum bus_op op)
{
	const char *msg = eb && eb->msg[0] ? eb->msg : strerror(-err);
	bool pool = op == BUS_OP_POOL || op == BUS_OP_POOL_CREATE;
	bool opens = op == BUS_OP_TAP_CREATE || op == BUS_OP_TAP_UNPAUSE;
	const char *name;

	if (op == BUS_OP_DEVICE) {
		/* Attach and Detach (exports/device.h). */
		switch (-err) {
		case EOPNOTSUPP:
			name = BUS_ERR_NOT_SUPPORTED;
			break;
		case EEXIST:
			name = BUS_ERR_ALREADY_ATTACHED;
			break;
		case ENXIO:
			name = BUS_ERR_NOT_ATTACHED;
			break;
		case EBUSY:
			name = BUS_ERR_DEVICE_BUSY;
			break;
		case ESHUTDOWN:
			name = BUS_ERR_SHUTTING_DOWN;
			break;
		default:
			name = BUS_ERR_FAILED;
			break;
		}
		return sd_bus_error_setf(e, name, "%s", msg);
	}
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
	case ELOOP:
		/* The image would stack a tap on itself, or too deep; or its
		 * VHD parent chain comes back to one of its files. */
		name = opens ? BUS_ERR_BAD_IMAGE : BUS_ERR_FAILED;
		break;
	case ENAMETOOLONG:
		/* A path in the image string longer than the system takes. */
		name = opens ? BUS_ERR_BAD_IMAGE : SD_BUS_ERROR_INVALID_ARGS;
		break;
	case ESHUTDOWN:
		name = BUS_ERR_SHUTTING_DOWN;
		break;
	case ETIMEDOUT:
		/* An image open that took longer than --open-timeout. */
		name = BUS_ERR_TIMED_OUT;
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

void *bus_held_new(sd_bus_message *m, size_t size, const char *method, const char *about)
{
	struct bus_held *h = calloc(1, size);

	if (!h || !(h->about = strdup(about))) {
		free(h);
		return NULL;
	}
	h->call = sd_bus_message_ref(m);
	h->method = method;
	return h;
}

void bus_held_free(struct bus_held *h)
{
	sd_bus_message_unref(h->call);
	free(h->about);
	free(h);
}

static void bus_held_end(struct bus_held *h, int r)
{
	if (r < 0)
		log_debug("%s %s: cannot reply: %s", h->method, h->about, strerror(-r));
	bus_held_free(h);
	bus_kick();
}

void bus_held_error(struct bus_held *h, sd_bus_error *e)
{
	int r = sd_bus_reply_method_error(h->call, e);

	sd_bus_error_free(e);
	bus_held_end(h, r);
}

void bus_held_return(struct bus_held *h, const char *types, ...)
{
	va_list ap;
	int r;

	va_start(ap, types);
	r = sd_bus_reply_method_returnv(h->call, types, ap);
	va_end(ap);
	bus_held_end(h, r);
}

static int kind_find_cb(sd_bus *bus, const char *path, const char *iface, void *userdata,
			void **found, sd_bus_error *e)
{
	const struct bus_kind *kind = userdata;
	void *obj = kind->lookup(path);

	(void)bus;
	(void)iface;
	(void)e;
	if (!obj)
		return 0;
	*found = obj;
	return 1;
}

static int kind_enum_cb(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
			sd_bus_error *e)
{
	const struct bus_kind *kind = userdata;
	size_t n = 0, cap = 8;
	char **v = calloc(cap + 1, sizeof(*v));

	(void)bus;
	(void)prefix;
	(void)e;
	if (!v)
		return -ENOMEM;
	for (void *obj = kind->iter(NULL); obj; obj = kind->iter(obj)) {
		if (n == cap) {
			char **nv = realloc(v, (2 * cap + 1) * sizeof(*v));

			if (!nv)
				goto oom;
			v = nv;
			cap *= 2;
		}
		v[n] = kind->path(obj);
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

/* Any call on the kind's interface under its prefix that no vtable claimed:
 * an object that does not exist (any more). Say so by name instead of
 * sd-bus's generic UnknownObject. */
static int kind_missing_cb(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	const struct bus_kind *kind = userdata;
	const char *iface = sd_bus_message_get_interface(m);
	const char *path = sd_bus_message_get_path(m);

	if (!sd_bus_message_is_method_call(m, NULL, NULL) || !iface ||
	    strcmp(iface, kind->iface) != 0 || kind->lookup(path))
		return 0;
	return kind->missing(e, path);
}

int bus_kind_add(sd_bus *bus, const struct bus_kind *kind)
{
	void *k = (void *)kind;
	int r;

	r = sd_bus_add_fallback_vtable(bus, NULL, kind->prefix, kind->iface, kind->vtable,
				       kind_find_cb, k);
	if (r >= 0)
		r = sd_bus_add_node_enumerator(bus, NULL, kind->prefix, kind_enum_cb, k);
	if (r >= 0)
		r = sd_bus_add_fallback(bus, NULL, kind->prefix, kind_missing_cb, k);
	return r;
}
