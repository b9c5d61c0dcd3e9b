/* Shared between the tapctl files: tapctl.c (arguments, command table,
 * main), tapctl-bus.c (D-Bus and output helpers), tapctl-taps.c and
 * tapctl-pools.c (the commands) and tapctl-top.c (the live view). */
#ifndef TAPCTL_INTERNAL_H
#define TAPCTL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "lib/util.h"

#define DEST "org.xenproject.Tapd1"
#define ROOT "/org/xenproject/Tapd1"
#define POOL_PREFIX ROOT "/pool"
#define IFACE_MANAGER DEST ".Manager"
#define IFACE_TAP DEST ".Tap"
#define IFACE_POOL DEST ".Pool"
#define ERR_PREFIX DEST ".Error."

#define EXIT_REFUSED 1
#define EXIT_USAGE 2

#define _cleanup_msg_ __attribute__((cleanup(sd_bus_message_unrefp)))
#define _cleanup_err_ __attribute__((cleanup(sd_bus_error_free)))

/* What the command line said; unset options are zero. */
struct args {
	const char *name;
	const char *pool;
	const char *parent;
	bool read_only;
	bool json;
	const char *kind; /* attach --kind */
	bool force;       /* detach --force */
	bool has_iops, has_bps; /* --iops/--qos-iops, --bps/--qos-bps given */
	uint64_t iops, bps;
	unsigned iterations; /* top: frames to draw, 0: until q */
	char **pos;          /* positional arguments */
	int npos;
	uint64_t size; /* the SIZE argument, parsed */
};

/* ---- tapctl-bus.c ------------------------------------------------------- */

/* Print why a call failed and return EXIT_REFUSED. e may be NULL. */
int refused(const sd_bus_error *e, int r);
/* A JSON string literal, escaped. */
void json_str(const char *s);
/* "unlimited" for 0, else the number (bps with a size suffix). */
const char *format_limit(uint64_t v, bool bytes, char *buf, size_t len);

struct tap_row {
	uint32_t minor;
	const char *name, *image, *state, *pool, *path;
	int read_only;
	uint64_t size;
};

/* ListTaps; strings point into *reply; *rows is malloc'd. */
int list_taps(sd_bus *bus, sd_bus_message **reply, struct tap_row **rows, size_t *n);
/* Call member (no arguments) on path and enter the array of contents it
 * returns, ready for sd_bus_message_read of each element; < 0 on failure
 * (e says why when the call was refused; e may be NULL). */
int call_array(sd_bus *bus, const char *path, const char *iface, const char *member,
	       const char *contents, sd_bus_error *e, sd_bus_message **reply);
/* NAME|MINOR to a malloc'd object path. */
int resolve_tap(sd_bus *bus, const char *what, char **path);
/* A pool name to its object path (no check that it exists). */
int pool_path(const char *name, char **path);

/* Properties read with one GetAll; strings malloc'd, absent ones empty.
 * The D-Bus error goes to *e (may be NULL). */
struct obj_props {
	uint64_t qos_iops, qos_bps;
	char *parent;
	char *export; /* first of Exports */
	/* Devices: the first one's kind, path and "major:minor", and how
	 * many there are. */
	char *dev_kind, *dev_path, *dev_num;
	unsigned ndevices;
};
int get_props(sd_bus *bus, const char *path, const char *iface, struct obj_props *p,
	      sd_bus_error *e);
void free_props(struct obj_props *p);

/* One call without reply data; prints the failure. */
int simple_call(sd_bus *bus, const char *path, const char *iface, const char *member,
		const char *sig, ...);
/* The same with a timeout (0: default), leaving the D-Bus error in *e. */
int error_call(sd_bus *bus, uint64_t usec, sd_bus_error *e, const char *path,
	       const char *iface, const char *member, const char *sig, ...);
/* error_call on the tap NAME|MINOR (e may be NULL); a tap not found is
 * printed and refused as by resolve_tap. */
int tap_call(sd_bus *bus, const char *tap, uint64_t usec, sd_bus_error *e, const char *member,
	     const char *sig, ...);

/* ---- commands ----------------------------------------------------------- */

int cmd_create(sd_bus *bus, const struct args *a);
int cmd_destroy(sd_bus *bus, const struct args *a);
int cmd_list(sd_bus *bus, const struct args *a);
int cmd_stats(sd_bus *bus, const struct args *a);
int cmd_pause(sd_bus *bus, const struct args *a);
int cmd_unpause(sd_bus *bus, const struct args *a);
int cmd_set_pool(sd_bus *bus, const struct args *a);
int cmd_qos(sd_bus *bus, const struct args *a);
int cmd_attach(sd_bus *bus, const struct args *a);
int cmd_detach(sd_bus *bus, const struct args *a);
int cmd_pool_create(sd_bus *bus, const struct args *a);
int cmd_pool_resize(sd_bus *bus, const struct args *a);
int cmd_pool_destroy(sd_bus *bus, const struct args *a);
int cmd_pool_list(sd_bus *bus, const struct args *a);
int cmd_pool_qos(sd_bus *bus, const struct args *a);
int cmd_top(sd_bus *bus, const struct args *a);

/* Show or change the limits of the object at path (a tap or a pool). */
int qos_show_or_set(sd_bus *bus, const char *path, const char *iface, const char *kind,
		    const char *name, const struct args *a);

#endif
