/* tapctl: the command line client of tapd. Every command is one or two
 * D-Bus calls to org.xenproject.Tapd1; output is a table for people or JSON
 * for programs. Exit codes: 0 ok, 1 the daemon refused or is unreachable,
 * 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "../src/util.h"

#ifndef TAPD_VERSION
#define TAPD_VERSION "unknown"
#endif

#define DEST "org.xenproject.Tapd1"
#define ROOT "/org/xenproject/Tapd1"
#define POOL_PREFIX ROOT "/pool"
#define IFACE_MANAGER DEST ".Manager"
#define IFACE_TAP DEST ".Tap"
#define IFACE_POOL DEST ".Pool"
#define ERR_PREFIX DEST ".Error."

/* Pause waits for the requests in flight, which a slow or stuck backend
 * may hold for longer than sd-bus's default 25 s. */
#define PAUSE_TIMEOUT_USEC (120ULL * 1000000)

#define EXIT_REFUSED 1
#define EXIT_USAGE 2

#define _cleanup_msg_ __attribute__((cleanup(sd_bus_message_unrefp)))
#define _cleanup_err_ __attribute__((cleanup(sd_bus_error_free)))

/* ---- options -------------------------------------------------------------- */

enum { OPT_NAME = 1 << 0, OPT_POOL = 1 << 1, OPT_RO = 1 << 2, OPT_JSON = 1 << 3 };

/* Every subcommand option, once; a command's mask says which it accepts. */
static const struct {
	struct option opt;
	unsigned bit;
	const char *usage;
	const char *help;
} option_table[] = {
	{ { "name", required_argument, NULL, 'n' }, OPT_NAME, "name NAME",
	  "create: name of the new tap (default tapMINOR)" },
	{ { "pool", required_argument, NULL, 'p' }, OPT_POOL, "pool POOL",
	  "create: buffer pool of the tap (default: default)" },
	{ { "read-only", no_argument, NULL, 'r' }, OPT_RO, "read-only",
	  "create: refuse writes" },
	{ { "json", no_argument, NULL, 'j' }, OPT_JSON, "json",
	  "list, stats, pool-list: print JSON for programs" },
};

struct args {
	const char *name;
	const char *pool;
	bool read_only;
	bool json;
	char **pos; /* positional arguments */
	int npos;
	uint64_t size; /* the SIZE argument, parsed */
};

struct command {
	const char *name;
	const char *args; /* synopsis after the command name */
	const char *summary;
	unsigned opts;
	int npos;     /* positional arguments required */
	int npos_opt; /* ... and how many more may follow */
	int size_arg; /* 1-based index of a SIZE positional, 0: none */
	int (*run)(sd_bus *bus, const struct args *a);
};

static const char *bus_address;

/* ---- output helpers ----------------------------------------------------- */

/* Names and image paths may hold quotes, backslashes or control bytes; D-Bus
 * guarantees valid UTF-8, so everything else passes through. */
static void json_str(const char *s)
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

static int refused(const sd_bus_error *e, int r)
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

static const struct command *current;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("tapctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (current)
		fprintf(stderr, "\nusage: tapctl %s %s\n", current->name, current->args);
	else
		fputs("\nusage: tapctl [--bus ADDRESS] COMMAND [ARGS]; try 'tapctl --help'\n", stderr);
	return EXIT_USAGE;
}

static int parse_size_arg(const char *s, uint64_t *out)
{
	if (parse_size(s, out) < 0)
		return usage_error("bad size '%s' (bytes, or with a K, M, G or T suffix)", s);
	if (*out == 0)
		return usage_error("size must be greater than 0");
	return 0;
}

/* ---- D-Bus helpers ------------------------------------------------------ */

struct tap_row {
	uint32_t minor;
	const char *name, *image, *state, *pool, *path;
	int read_only;
	uint64_t size;
};

/* Read ListTaps; strings point into *reply. */
static int list_taps(sd_bus *bus, sd_bus_message **reply, struct tap_row **rows, size_t *n)
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

/* NAME|MINOR to an object path (malloc'd): names first, so a tap named "3"
 * is found by its name. */
static int resolve_tap(sd_bus *bus, const char *what, char **path)
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

/* One call without reply data, waiting usec (0: sd-bus's default). On
 * failure the message is printed and the D-Bus error left in *e for the
 * caller to look at. */
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

static int simple_call(sd_bus *bus, const char *path, const char *iface, const char *member,
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

static int error_call(sd_bus *bus, uint64_t usec, sd_bus_error *e, const char *path,
		      const char *iface, const char *member, const char *sig, ...)
{
	va_list ap;
	int r;

	va_start(ap, sig);
	r = timed_call(bus, usec, e, path, iface, member, sig, ap);
	va_end(ap);
	return r;
}

/* ---- commands ----------------------------------------------------------- */

static int cmd_create(sd_bus *bus, const struct args *a)
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
	if (r >= 0 && a->read_only)
		r = sd_bus_message_append(m, "{sv}", "read-only", "b", 1);
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

static int cmd_destroy(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = resolve_tap(bus, a->pos[0], &path);

	return r ? r : simple_call(bus, path, IFACE_TAP, "Destroy", "");
}

static int cmd_pause(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_free_ char *path = NULL;
	int r = resolve_tap(bus, a->pos[0], &path);

	if (r)
		return r;
	/* Returns once the tap is paused: its image is closed and may be
	 * copied, snapshotted or replaced. */
	r = error_call(bus, PAUSE_TIMEOUT_USEC, &e, path, IFACE_TAP, "Pause", "");
	if (r && sd_bus_error_get_errno(&e) == ETIMEDOUT)
		fprintf(stderr, "tapctl: %s may still be pausing; see 'tapctl list'\n", a->pos[0]);
	return r;
}

static int cmd_unpause(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_free_ char *path = NULL;
	int r = resolve_tap(bus, a->pos[0], &path);

	if (r)
		return r;
	r = error_call(bus, 0, &e, path, IFACE_TAP, "Unpause", "s",
		       a->npos > 1 ? a->pos[1] : "");
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

static char *get_export(sd_bus *bus, const char *path)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	const char *uri = NULL;

	/* A tap destroyed since ListTaps simply has no URI. */
	if (sd_bus_get_property(bus, DEST, path, IFACE_TAP, "Exports", NULL, &reply, "as") < 0 ||
	    sd_bus_message_enter_container(reply, 'a', "s") < 0 ||
	    sd_bus_message_read(reply, "s", &uri) <= 0)
		return strdup("-");
	return strdup(uri);
}

static int cmd_list(sd_bus *bus, const struct args *a)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_free_ struct tap_row *rows = NULL;
	_cleanup_free_ char **uris = NULL;
	int w[6] = { 5, 4, 5, 4, 4, 5 };
	char sz[32];
	size_t n;
	int r;

	r = list_taps(bus, &reply, &rows, &n);
	if (r)
		return r;
	uris = calloc(n + 1, sizeof(*uris));
	if (!uris)
		return refused(NULL, -ENOMEM);
	for (size_t i = 0; i < n; i++)
		uris[i] = get_export(bus, rows[i].path);

	if (a->json) {
		printf("[");
		for (size_t i = 0; i < n; i++) {
			printf("%s\n  {\"minor\": %" PRIu32 ", \"name\": ", i ? "," : "",
			       rows[i].minor);
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
			json_str(uris[i]);
			printf("}");
		}
		printf("%s]\n", n ? "\n" : "");
	} else {
		for (size_t i = 0; i < n; i++) {
			w[0] = MAX(w[0], snprintf(sz, sizeof(sz), "%" PRIu32, rows[i].minor));
			w[1] = MAX(w[1], (int)strlen(rows[i].name));
			w[2] = MAX(w[2], (int)strlen(rows[i].state) + (rows[i].read_only ? 3 : 0));
			w[3] = MAX(w[3], (int)strlen(rows[i].pool));
			w[4] = MAX(w[4], (int)strlen(format_size(rows[i].size, sz, sizeof(sz))));
			w[5] = MAX(w[5], (int)strlen(rows[i].image));
		}
		printf("%-*s %-*s %-*s %-*s %*s %-*s %s\n", w[0], "MINOR", w[1], "NAME", w[2],
		       "STATE", w[3], "POOL", w[4], "SIZE", w[5], "IMAGE", "NBD-URI");
		for (size_t i = 0; i < n; i++) {
			char state[64];

			snprintf(state, sizeof(state), "%s%s", rows[i].state,
				 rows[i].read_only ? ",ro" : "");
			printf("%-*" PRIu32 " %-*s %-*s %-*s %*s %-*s %s\n", w[0], rows[i].minor,
			       w[1], rows[i].name, w[2], state, w[3], rows[i].pool, w[4],
			       format_size(rows[i].size, sz, sizeof(sz)), w[5], rows[i].image,
			       uris[i] ? uris[i] : "-");
		}
	}
	for (size_t i = 0; i < n; i++)
		free(uris[i]);
	return 0;
}

static int cmd_stats(sd_bus *bus, const struct args *a)
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
	r = sd_bus_call_method(bus, DEST, path, IFACE_TAP, "Stats", &e, &reply, "");
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "{st}");
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

static int pool_path(const char *name, char **path)
{
	int r = sd_bus_path_encode(POOL_PREFIX, name, path);

	return r < 0 ? refused(NULL, r) : 0;
}

static int cmd_pool_create(sd_bus *bus, const struct args *a)
{
	return simple_call(bus, ROOT, IFACE_MANAGER, "CreatePool", "st", a->pos[0], a->size);
}

static int cmd_pool_resize(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = pool_path(a->pos[0], &path);

	return r ? r : simple_call(bus, path, IFACE_POOL, "Resize", "t", a->size);
}

static int cmd_pool_destroy(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = pool_path(a->pos[0], &path);

	return r ? r : simple_call(bus, path, IFACE_POOL, "Destroy", "");
}

static int cmd_pool_list(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	const char *name, *path;
	uint64_t size, in_use, high, mapped;
	uint32_t waiters, taps;
	char s1[32], s2[32], s3[32];
	bool first = true;
	int r;

	r = sd_bus_call_method(bus, DEST, ROOT, IFACE_MANAGER, "ListPools", &e, &reply, "");
	if (r >= 0)
		r = sd_bus_message_enter_container(reply, 'a', "(sttttuuo)");
	if (r < 0)
		return refused(&e, r);
	if (a->json)
		printf("[");
	else
		printf("%-16s %8s %8s %10s %7s %4s\n", "NAME", "SIZE", "IN-USE", "HIGH-WATER",
		       "WAITERS", "TAPS");
	while ((r = sd_bus_message_read(reply, "(sttttuuo)", &name, &size, &in_use, &high,
					&mapped, &waiters, &taps, &path)) > 0) {
		if (a->json) {
			printf("%s\n  {\"name\": ", first ? "" : ",");
			json_str(name);
			printf(", \"size\": %" PRIu64 ", \"in_use\": %" PRIu64
			       ", \"high_water\": %" PRIu64 ", \"mapped\": %" PRIu64
			       ", \"waiters\": %" PRIu32 ", \"taps\": %" PRIu32 ", \"path\": ",
			       size, in_use, high, mapped, waiters, taps);
			json_str(path);
			printf("}");
		} else {
			printf("%-16s %8s %8s %10s %7" PRIu32 " %4" PRIu32 "\n", name,
			       format_size(size, s1, sizeof(s1)), format_size(in_use, s2, sizeof(s2)),
			       format_size(high, s3, sizeof(s3)), waiters, taps);
		}
		first = false;
	}
	if (a->json)
		printf("%s]\n", first ? "" : "\n");
	return r < 0 ? refused(NULL, r) : 0;
}

static int cmd_help(sd_bus *bus, const struct args *a);

static const struct command commands[] = {
	{ "create", "[--name NAME] [--pool POOL] [--read-only] IMAGE",
	  "create a tap over IMAGE (raw:/path, ram:SIZE, null:SIZE); prints its name",
	  OPT_NAME | OPT_POOL | OPT_RO, 1, 0, 0, cmd_create },
	{ "destroy", "NAME|MINOR", "destroy a tap", 0, 1, 0, 0, cmd_destroy },
	{ "list", "[--json]", "list taps with their state and NBD URIs", OPT_JSON, 0, 0, 0,
	  cmd_list },
	{ "stats", "[--json] NAME|MINOR", "show a tap's I/O counters", OPT_JSON, 1, 0, 0,
	  cmd_stats },
	{ "pause", "NAME|MINOR",
	  "let requests in flight finish, hold new ones and close the image; returns when paused",
	  0, 1, 0, 0, cmd_pause },
	{ "unpause", "NAME|MINOR [IMAGE]",
	  "reopen a paused tap, on IMAGE (same size) if given, and serve the held requests", 0,
	  1, 1, 0, cmd_unpause },
	{ "pool-create", "NAME SIZE", "create a buffer pool of SIZE bytes (K/M/G suffixes)", 0,
	  2, 0, 2, cmd_pool_create },
	{ "pool-resize", "NAME SIZE", "grow or shrink a pool", 0, 2, 0, 2, cmd_pool_resize },
	{ "pool-destroy", "NAME", "destroy an unused pool", 0, 1, 0, 0, cmd_pool_destroy },
	{ "pool-list", "[--json]", "list pools and their usage", OPT_JSON, 0, 0, 0,
	  cmd_pool_list },
	{ "help", "", "show this help", 0, 0, 0, 0, cmd_help },
};

static void print_help(FILE *f)
{
	fputs("usage: tapctl [--bus system|session|ADDRESS] COMMAND [ARGS]\n"
	      "       tapctl --help | --version\n\n"
	      "Control tapd, the userspace block device daemon, over D-Bus.\n\n"
	      "Commands:\n", f);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %s %s\n      %s\n", commands[i].name, commands[i].args,
			commands[i].summary);
	fputs("\nOptions:\n", f);
	for (size_t i = 0; i < ARRAY_SIZE(option_table); i++)
		fprintf(f, "  --%-12s %s\n", option_table[i].usage, option_table[i].help);
	fputs("  --bus ADDRESS  the bus: system (default; honours DBUS_SYSTEM_BUS_ADDRESS),\n"
	      "                 session, or a D-Bus address such as unix:path=/run/bus.sock\n"
	      "\nExit status: 0 ok, 1 tapd refused or is unreachable, 2 usage error.\n", f);
}

static int cmd_help(sd_bus *bus, const struct args *a)
{
	(void)bus;
	(void)a;
	print_help(stdout);
	return 0;
}

/* ---- main --------------------------------------------------------------- */

static int connect_bus(sd_bus **bus)
{
	const char *what = bus_address ? bus_address : "system";
	int r;

	if (!bus_address || strcmp(bus_address, "system") == 0) {
		r = sd_bus_open_system(bus);
	} else if (strcmp(bus_address, "session") == 0) {
		r = sd_bus_open_user(bus);
	} else {
		r = sd_bus_new(bus);
		if (r >= 0)
			r = sd_bus_set_address(*bus, bus_address);
		if (r >= 0)
			r = sd_bus_set_bus_client(*bus, 1);
		if (r >= 0)
			r = sd_bus_start(*bus);
	}
	if (r < 0) {
		fprintf(stderr, "tapctl: cannot connect to the %s bus: %s\n", what, strerror(-r));
		return EXIT_REFUSED;
	}
	return 0;
}

/* getopt leaves an unknown short option in optopt, a long one in argv. */
static int bad_option(char **argv)
{
	if (optopt)
		return usage_error("unknown option '-%c'", optopt);
	return usage_error("unknown option '%s'", argv[optind - 1]);
}

/* One parser for every command, driven by option_table and the command's
 * mask: getopt_long over the options the command accepts, then a count of
 * the positional arguments. */
static int parse_command(const struct command *c, int argc, char **argv, struct args *a)
{
	struct option longopts[ARRAY_SIZE(option_table) + 2];
	size_t n = 0;
	int opt;

	for (size_t i = 0; i < ARRAY_SIZE(option_table); i++)
		if (c->opts & option_table[i].bit)
			longopts[n++] = option_table[i].opt;
	longopts[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	longopts[n] = (struct option){ NULL, 0, NULL, 0 };

	memset(a, 0, sizeof(*a));
	optind = 0; /* full re-initialisation of GNU getopt */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n': a->name = optarg; break;
		case 'p': a->pool = optarg; break;
		case 'r': a->read_only = true; break;
		case 'j': a->json = true; break;
		case 'h':
			printf("usage: tapctl %s %s\n  %s\n", c->name, c->args, c->summary);
			return -1;
		case ':':
			return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			return bad_option(argv);
		}
	}
	a->pos = argv + optind;
	a->npos = argc - optind;
	if (a->npos < c->npos)
		return usage_error("missing argument");
	if (a->npos > c->npos + c->npos_opt)
		return usage_error("unexpected argument '%s'", a->pos[c->npos + c->npos_opt]);
	for (int i = 0; i < a->npos; i++)
		if (!*a->pos[i])
			return usage_error("empty argument");
	if (c->size_arg)
		return parse_size_arg(a->pos[c->size_arg - 1], &a->size);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option global[] = {
		{ "bus", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *c = NULL;
	sd_bus *bus = NULL;
	struct args a;
	int opt, r;

	opterr = 0;
	/* '+': stop at the command name; its options are its own. */
	while ((opt = getopt_long(argc, argv, "+:hV", global, NULL)) != -1) {
		switch (opt) {
		case 'b': bus_address = optarg; break;
		case 'h': print_help(stdout); return 0;
		case 'V': printf("tapctl %s\n", TAPD_VERSION); return 0;
		case ':': return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default: return bad_option(argv);
		}
	}
	if (optind >= argc)
		return usage_error("no command given");
	for (size_t i = 0; i < ARRAY_SIZE(commands) && !c; i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			c = &commands[i];
	if (!c)
		return usage_error("unknown command '%s'", argv[optind]);
	current = c;

	r = parse_command(c, argc - optind, argv + optind, &a);
	if (r)
		return r < 0 ? 0 : r;
	if (c->run == cmd_help)
		return cmd_help(NULL, &a);

	r = connect_bus(&bus);
	if (r)
		return r;
	r = c->run(bus, &a);
	fflush(stdout);
	sd_bus_flush_close_unref(bus);
	return r;
}
