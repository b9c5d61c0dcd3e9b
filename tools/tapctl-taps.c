/* tapctl's tap commands: create, destroy, list, stats, pause, unpause,
 * set-pool, qos (which also serves pool-qos), attach and detach. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "tapctl-internal.h"

/* Pause waits for the requests in flight, which a slow or stuck backend
 * may hold for longer than sd-bus's default 25 s. */
#define PAUSE_TIMEOUT_USEC (120ULL * 1000000)
/* Attach and detach wait for the kernel (a detach, for a paused tap's
 * I/O to drain) and for the FUSE requests tapd answers meanwhile. */
#define DEVICE_TIMEOUT_USEC (120ULL * 1000000)

int cmd_create(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
	const char *path, *name;
	int r;

	r = sd_bus_message_new_method_call(bus, &m, DEST, ROOT, IFACE_MANAGER, "CreateTap");
	if (r >= 0)
		r = sd_bus_message_append(m, "s", a->pos[0]);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0 && a->name)
		r = sd_bus_message_append(m, "{sv}", "name", "s", a->name);
	if (r >= 0 && a->pool)
		r = sd_bus_message_append(m, "{sv}", "pool", "s", a->pool);
	if (r >= 0 && a->parent)
		r = sd_bus_message_append(m, "{sv}", "parent", "s", a->parent);
	if (r >= 0 && a->read_only)
		r = sd_bus_message_append(m, "{sv}", "read-only", "b", 1);
	if (r >= 0 && a->has_iops)
		r = sd_bus_message_append(m, "{sv}", "qos-iops", "t", a->iops);
	if (r >= 0 && a->has_bps)
		r = sd_bus_message_append(m, "{sv}", "qos-bps", "t", a->bps);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_call(bus, m, 0, &e, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "os", &path, &name);
	if (r < 0)
		return refused(&e, r);
	printf("%s\n", name);
	return 0;
}

int cmd_destroy(sd_bus *bus, const struct args *a)
{
	return tap_call(bus, a->pos[0], 0, NULL, "Destroy", "");
}

int cmd_pause(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	/* Returns once the tap is paused: its image is closed and may be
	 * copied, snapshotted or replaced. */
	int r = tap_call(bus, a->pos[0], PAUSE_TIMEOUT_USEC, &e, "Pause", "");

	if (r && sd_bus_error_get_errno(&e) == ETIMEDOUT)
		fprintf(stderr, "tapctl: %s may still be pausing; see 'tapctl list'\n", a->pos[0]);
	return r;
}

int cmd_unpause(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	int r = tap_call(bus, a->pos[0], 0, &e, "Unpause", "s", a->npos > 1 ? a->pos[1] : "");

	/* The image was refused: say that nothing changed, so the next step
	 * (another image, or the old one) is obvious. */
	if (r && (sd_bus_error_has_name(&e, ERR_PREFIX "SizeMismatch") ||
		  sd_bus_error_has_name(&e, ERR_PREFIX "NoSuchFile") ||
		  sd_bus_error_has_name(&e, ERR_PREFIX "BadImage") ||
		  sd_bus_error_has_name(&e, ERR_PREFIX "PermissionDenied") ||
		  sd_bus_error_has_name(&e, ERR_PREFIX "Failed")))
		fprintf(stderr, "tapctl: %s stays paused; unpause it on a usable image\n",
			a->pos[0]);
	return r;
}

int cmd_set_pool(sd_bus *bus, const struct args *a)
{
	return tap_call(bus, a->pos[0], 0, NULL, "SetPool", "s", a->pos[1]);
}

static void list_json(const struct tap_row *rows, const struct obj_props *props, size_t n)
{
	printf("[");
	for (size_t i = 0; i < n; i++) {
		printf("%s\n  {\"minor\": %" PRIu32 ", \"name\": ", i ? "," : "", rows[i].minor);
		json_str(rows[i].name);
		printf(", \"image\": ");
		json_str(rows[i].image);
		printf(", \"state\": ");
		json_str(rows[i].state);
		printf(", \"pool\": ");
		json_str(rows[i].pool);
		printf(", \"read_only\": %s, \"size\": %" PRIu64 ", \"path\": ",
		       rows[i].read_only ? "true" : "false", rows[i].size);
		json_str(rows[i].path);
		printf(", \"nbd_uri\": ");
		json_str(props[i].export ? props[i].export : "-");
		printf(", \"qos_iops\": %" PRIu64 ", \"qos_bps\": %" PRIu64 ", \"parent\": ",
		       props[i].qos_iops, props[i].qos_bps);
		json_str(props[i].parent ? props[i].parent : "");
		printf(", \"devices\": [");
		if (props[i].ndevices) {
			printf("{\"kind\": ");
			json_str(props[i].dev_kind);
			printf(", \"path\": ");
			json_str(props[i].dev_path);
			printf(", \"devnum\": ");
			json_str(props[i].dev_num);
			printf("}");
		}
		printf("]}");
	}
	printf("%s]\n", n ? "\n" : "");
}

/* A limit in a table column: "-" for none. */
static const char *col_limit(uint64_t v, bool bytes, char *buf, size_t len)
{
	if (!v)
		return "-";
	return format_limit(v, bytes, buf, len);
}

static void list_table(const struct tap_row *rows, const struct obj_props *props, size_t n)
{
	int w[10] = { 5, 4, 5, 4, 4, 4, 3, 6, 5, 7 };
	char sz[32], state[64];

	for (size_t i = 0; i < n; i++) {
		const char *parent = props[i].parent && *props[i].parent ? props[i].parent : "-";

		w[0] = MAX(w[0], snprintf(sz, sizeof(sz), "%" PRIu32, rows[i].minor));
		w[1] = MAX(w[1], (int)strlen(rows[i].name));
		w[2] = MAX(w[2], (int)strlen(rows[i].state) + (rows[i].read_only ? 3 : 0));
		w[3] = MAX(w[3], (int)strlen(rows[i].pool));
		w[4] = MAX(w[4], (int)strlen(format_size(rows[i].size, sz, sizeof(sz))));
		w[5] = MAX(w[5], (int)strlen(col_limit(props[i].qos_iops, false, sz, sizeof(sz))));
		w[6] = MAX(w[6], (int)strlen(col_limit(props[i].qos_bps, true, sz, sizeof(sz))));
		w[7] = MAX(w[7], (int)strlen(parent));
		w[8] = MAX(w[8], (int)strlen(rows[i].image));
		w[9] = MAX(w[9], (int)strlen(props[i].export ? props[i].export : "-"));
	}
	/* DEVICE last: scripts that read the older columns still find them. */
	printf("%-*s %-*s %-*s %-*s %*s %*s %*s %-*s %-*s %-*s %s\n", w[0], "MINOR", w[1],
	       "NAME", w[2], "STATE", w[3], "POOL", w[4], "SIZE", w[5], "IOPS", w[6], "BPS", w[7],
	       "PARENT", w[8], "IMAGE", w[9], "NBD-URI", "DEVICE");
	for (size_t i = 0; i < n; i++) {
		char s1[32], s2[32];

		snprintf(state, sizeof(state), "%s%s", rows[i].state,
			 rows[i].read_only ? ",ro" : "");
		printf("%-*" PRIu32 " %-*s %-*s %-*s %*s %*s %*s %-*s %-*s %-*s %s\n", w[0],
		       rows[i].minor, w[1], rows[i].name, w[2], state, w[3], rows[i].pool, w[4],
		       format_size(rows[i].size, sz, sizeof(sz)), w[5],
		       col_limit(props[i].qos_iops, false, s1, sizeof(s1)), w[6],
		       col_limit(props[i].qos_bps, true, s2, sizeof(s2)), w[7],
		       props[i].parent && *props[i].parent ? props[i].parent : "-", w[8],
		       rows[i].image, w[9], props[i].export ? props[i].export : "-",
		       props[i].dev_path ? props[i].dev_path : "-");
	}
}

int cmd_list(sd_bus *bus, const struct args *a)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_free_ struct tap_row *rows = NULL;
	_cleanup_free_ struct obj_props *props = NULL;
	size_t n;
	int r;

	r = list_taps(bus, &reply, &rows, &n);
	if (r)
		return r;
	props = calloc(n + 1, sizeof(*props));
	if (!props)
		return refused(NULL, -ENOMEM);
	/* A tap destroyed since ListTaps simply shows no URI or limits. */
	for (size_t i = 0; i < n; i++)
		get_props(bus, rows[i].path, IFACE_TAP, &props[i], NULL);
	if (a->json)
		list_json(rows, props, n);
	else
		list_table(rows, props, n);
	for (size_t i = 0; i < n; i++)
		free_props(&props[i]);
	return 0;
}

int cmd_stats(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_free_ char *path = NULL;
	const char *key;
	uint64_t val;
	bool first = true;
	int r;

	r = resolve_tap(bus, a->pos[0], &path);
	if (r)
		return r;
	r = call_array(bus, path, IFACE_TAP, "Stats", "{st}", &e, &reply);
	if (r < 0)
		return refused(&e, r);
	if (a->json)
		printf("{");
	while ((r = sd_bus_message_read(reply, "{st}", &key, &val)) > 0) {
		if (a->json) {
			printf("%s\n  ", first ? "" : ",");
			json_str(key);
			printf(": %" PRIu64, val);
		} else {
			printf("%-12s %" PRIu64 "\n", key, val);
		}
		first = false;
	}
	if (a->json)
		printf("\n}\n");
	return r < 0 ? refused(NULL, r) : 0;
}

/* Without --iops and --bps, print the limits; with one of them, keep the
 * other as it is. kind is "tap" or "pool", name the user's word for it. */
int qos_show_or_set(sd_bus *bus, const char *path, const char *iface, const char *kind,
		    const char *name, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	struct obj_props p = { 0 };
	char s1[32], s2[32];
	int r;

	if (!a->has_iops || !a->has_bps) {
		r = get_props(bus, path, iface, &p, &e);
		/* sd-bus's words for a path nobody serves. */
		if (r < 0 && (sd_bus_error_has_name(&e, SD_BUS_ERROR_UNKNOWN_OBJECT) ||
			      sd_bus_error_has_name(&e, SD_BUS_ERROR_UNKNOWN_INTERFACE))) {
			fprintf(stderr, "tapctl: no such %s: %s\n", kind, name);
			return EXIT_REFUSED;
		}
		if (r < 0)
			return refused(&e, r);
		free_props(&p);
		if (!a->has_iops && !a->has_bps) {
			if (a->json)
				printf("{\"iops\": %" PRIu64 ", \"bps\": %" PRIu64 "}\n",
				       p.qos_iops, p.qos_bps);
			else
				printf("iops %s\nbps  %s\n",
				       format_limit(p.qos_iops, false, s1, sizeof(s1)),
				       format_limit(p.qos_bps, true, s2, sizeof(s2)));
			return 0;
		}
	}
	return error_call(bus, 0, &e, path, iface, "SetQos", "tt",
			  a->has_iops ? a->iops : p.qos_iops, a->has_bps ? a->bps : p.qos_bps);
}

int cmd_qos(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = resolve_tap(bus, a->pos[0], &path);

	return r ? r : qos_show_or_set(bus, path, IFACE_TAP, "tap", a->pos[0], a);
}

int cmd_attach(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
	_cleanup_free_ char *path = NULL;
	const char *dev;
	int r = resolve_tap(bus, a->pos[0], &path);

	if (r)
		return r;
	r = sd_bus_message_new_method_call(bus, &m, DEST, path, IFACE_TAP, "Attach");
	if (r >= 0)
		r = sd_bus_message_append(m, "s", a->kind ? a->kind : "");
	if (r >= 0)
		r = sd_bus_call(bus, m, DEVICE_TIMEOUT_USEC, &e, &reply);
	if (r >= 0)
		r = sd_bus_message_read(reply, "s", &dev);
	if (r < 0)
		return refused(&e, r);
	printf("%s\n", dev);
	return 0;
}

int cmd_detach(sd_bus *bus, const struct args *a)
{
	return tap_call(bus, a->pos[0], DEVICE_TIMEOUT_USEC, NULL, "Detach", "b", (int)a->force);
}
