/* tapctl's D-Bus and output helpers: calls that print why they failed,
 * ListTaps as rows, name-to-path lookups, one-call property reads and JSON
 * string escaping. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "tapctl-internal.h"

/* Names and image paths may hold quotes, backslashes or control bytes; D-Bus
 * guarantees valid UTF-8, so everything else passes through. */
void json_str(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		switch (c) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		case '\b': fputs("\\b", stdout); break;
		case '\f': fputs("\\f", stdout); break;
		default:
			if (c < 0x20 || c == 0x7f)
				printf("\\u%04x", c);
			else
				putchar(c);
		}
	}
	putchar('"');
}

const char *format_limit(uint64_t v, bool bytes, char *buf, size_t len)
{
	if (!v)
		snprintf(buf, len, "unlimited");
	else if (bytes)
		format_size(v, buf, len);
	else
		snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

int refused(const sd_bus_error *e, int r)
{
	const char *msg = e && sd_bus_error_is_set(e) && e->message ? e->message : strerror(-r);

	if (e && sd_bus_error_has_name(e, SD_BUS_ERROR_ACCESS_DENIED))
		fprintf(stderr, "tapctl: access denied: only root may change tapd (%s)\n", msg);
	else if (e && (sd_bus_error_has_name(e, SD_BUS_ERROR_SERVICE_UNKNOWN) ||
		       sd_bus_error_has_name(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER)))
		fprintf(stderr, "tapctl: tapd is not running on this bus (%s)\n", msg);
	else
		fprintf(stderr, "tapctl: %s\n", msg);
	return EXIT_REFUSED;
}

int call_array(sd_bus *bus, const char *path, const char *iface, const char *member,
	       const char *contents, sd_bus_error *e, sd_bus_message **reply)
{
	int r = sd_bus_call_method(bus, DEST, path, iface, member, e, reply, "");

	if (r >= 0)
		r = sd_bus_message_enter_container(*reply, 'a', contents);
	return r;
}

int list_taps(sd_bus *bus, sd_bus_message **reply, struct tap_row **rows, size_t *n)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	size_t cap = 0;
	int r;

	*rows = NULL;
	*n = 0;
	r = sd_bus_call_method(bus, DEST, ROOT, IFACE_MANAGER, "ListTaps", &e, reply, "");
	if (r < 0)
		return refused(&e, r);
	r = sd_bus_message_enter_container(*reply, 'a', "(ussssbto)");
	for (;;) {
		struct tap_row t;

		if (r >= 0)
			r = sd_bus_message_read(*reply, "(ussssbto)", &t.minor, &t.name, &t.image,
						&t.state, &t.pool, &t.read_only, &t.size, &t.path);
		if (r <= 0)
			break;
		if (*n == cap) {
			struct tap_row *nr = realloc(*rows, (cap = cap * 2 + 8) * sizeof(**rows));

			if (!nr) {
				r = -ENOMEM;
				break;
			}
			*rows = nr;
		}
		(*rows)[(*n)++] = t;
	}
	if (r < 0) {
		free(*rows);
		*rows = NULL;
		return refused(NULL, r);
	}
	return 0;
}

/* Names first, so a tap named "3" is found by its name. */
int resolve_tap(sd_bus *bus, const char *what, char **path)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_free_ struct tap_row *rows = NULL;
	const struct tap_row *hit = NULL;
	char *end;
	size_t n;
	int r;

	r = list_taps(bus, &reply, &rows, &n);
	if (r)
		return r;
	for (size_t i = 0; i < n && !hit; i++)
		if (strcmp(rows[i].name, what) == 0)
			hit = &rows[i];
	if (!hit && *what >= '0' && *what <= '9') {
		unsigned long m = strtoul(what, &end, 10);

		for (size_t i = 0; i < n && !hit && !*end; i++)
			if (rows[i].minor == m)
				hit = &rows[i];
	}
	if (!hit) {
		fprintf(stderr, "tapctl: no such tap: %s\n", what);
		return EXIT_REFUSED;
	}
	*path = strdup(hit->path);
	return *path ? 0 : refused(NULL, -ENOMEM);
}

int pool_path(const char *name, char **path)
{
	int r = sd_bus_path_encode(POOL_PREFIX, name, path);

	return r < 0 ? refused(NULL, r) : 0;
}

/* One a{sv} entry, positioned after its key. */
static int read_prop(sd_bus_message *m, const char *key, struct obj_props *p)
{
	const char *s;
	int r;

	if (strcmp(key, "QosIops") == 0)
		return sd_bus_message_read(m, "v", "t", &p->qos_iops);
	if (strcmp(key, "QosBps") == 0)
		return sd_bus_message_read(m, "v", "t", &p->qos_bps);
	if (strcmp(key, "Parent") == 0) {
		r = sd_bus_message_read(m, "v", "s", &s);
		if (r >= 0 && !(p->parent = strdup(s)))
			r = -ENOMEM;
		return r;
	}
	if (strcmp(key, "Devices") == 0) {
		const char *kind, *path, *num;

		r = sd_bus_message_enter_container(m, 'v', "a(sss)");
		if (r >= 0)
			r = sd_bus_message_enter_container(m, 'a', "(sss)");
		while (r >= 0 && (r = sd_bus_message_read(m, "(sss)", &kind, &path, &num)) > 0) {
			if (p->ndevices++)
				continue;
			p->dev_kind = strdup(kind);
			p->dev_path = strdup(path);
			p->dev_num = strdup(num);
			if (!p->dev_kind || !p->dev_path || !p->dev_num)
				r = -ENOMEM;
		}
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		return r;
	}
	if (strcmp(key, "Exports") == 0) {
		r = sd_bus_message_enter_container(m, 'v', "as");
		if (r >= 0)
			r = sd_bus_message_enter_container(m, 'a', "s");
		/* The first URI (unix socket) is the one to show. */
		while (r >= 0 && (r = sd_bus_message_read(m, "s", &s)) > 0)
			if (!p->export && !(p->export = strdup(s)))
				r = -ENOMEM;
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		if (r >= 0)
			r = sd_bus_message_exit_container(m);
		return r;
	}
	return sd_bus_message_skip(m, "v");
}

int get_props(sd_bus *bus, const char *path, const char *iface, struct obj_props *p,
	      sd_bus_error *e)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	const char *key;
	int r;

	memset(p, 0, sizeof(*p));
	r = sd_bus_call_method(bus, DEST, path, "org.freedesktop.DBus.Properties", "GetAll", e,
			       &reply, "s", iface);
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		r = sd_bus_message_read(reply, "s", &key);
		if (r >= 0)
			r = read_prop(reply, key, p);
		if (r >= 0)
			r = sd_bus_message_exit_container(reply);
	}
	if (r < 0) {
		free_props(p);
		return r;
	}
	return 0;
}

void free_props(struct obj_props *p)
{
	free(p->parent);
	free(p->export);
	free(p->dev_kind);
	free(p->dev_path);
	free(p->dev_num);
	p->parent = p->export = p->dev_kind = p->dev_path = p->dev_num = NULL;
	p->ndevices = 0;
}

/* On failure the message is printed and the D-Bus error left in *e. */
static int timed_call(sd_bus *bus, uint64_t usec, sd_bus_error *e, const char *path,
		      const char *iface, const char *member, const char *sig, va_list ap)
{
	_cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DEST, path, iface, member);
	if (r >= 0)
		r = sd_bus_message_appendv(m, sig, ap);
	if (r >= 0)
		r = sd_bus_call(bus, m, usec, e, &reply);
	return r < 0 ? refused(e, r) : 0;
}

int simple_call(sd_bus *bus, const char *path, const char *iface, const char *member,
		const char *sig, ...)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	va_list ap;
	int r;

	va_start(ap, sig);
	r = timed_call(bus, 0, &e, path, iface, member, sig, ap);
	va_end(ap);
	return r;
}

int error_call(sd_bus *bus, uint64_t usec, sd_bus_error *e, const char *path,
	       const char *iface, const char *member, const char *sig, ...)
{
	va_list ap;
	int r;

	va_start(ap, sig);
	r = timed_call(bus, usec, e, path, iface, member, sig, ap);
	va_end(ap);
	return r;
}

int tap_call(sd_bus *bus, const char *tap, uint64_t usec, sd_bus_error *e, const char *member,
	     const char *sig, ...)
{
	_cleanup_err_ sd_bus_error own = SD_BUS_ERROR_NULL;
	_cleanup_free_ char *path = NULL;
	va_list ap;
	int r = resolve_tap(bus, tap, &path);

	if (r)
		return r;
	va_start(ap, sig);
	r = timed_call(bus, usec, e ? e : &own, path, IFACE_TAP, member, sig, ap);
	va_end(ap);
	return r;
}
