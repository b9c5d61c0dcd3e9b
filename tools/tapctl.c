/* tapctl: the command line client of tapd. Every command is one or a few
 * D-Bus calls to org.xenproject.Tapd1; output is a table for people or JSON
 * for programs. Exit codes: 0 ok, 1 the daemon refused or is unreachable,
 * 2 usage error. This file parses the command line; the commands live in
 * tapctl-taps.c, tapctl-pools.c and tapctl-top.c. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapctl-internal.h"

#ifndef TAPD_VERSION
#define TAPD_VERSION "unknown"
#endif

/* ---- options -------------------------------------------------------------- */

enum {
	OPT_NAME = 1 << 0, OPT_POOL = 1 << 1, OPT_RO = 1 << 2, OPT_JSON = 1 << 3,
	OPT_PARENT = 1 << 4, OPT_QOS = 1 << 5, OPT_LIMITS = 1 << 6, OPT_TOP = 1 << 7,
	OPT_KIND = 1 << 8, OPT_FORCE = 1 << 9,
};

/* getopt codes of the long-only options. */
enum { O_PARENT = 256, O_QOS_IOPS, O_QOS_BPS, O_IOPS, O_BPS, O_ITER, O_ONCE, O_KIND, O_FORCE };

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
	{ { "parent", required_argument, NULL, O_PARENT }, OPT_PARENT, "parent TAP",
	  "create: serve the image's parent chain through tap TAP" },
	{ { "read-only", no_argument, NULL, 'r' }, OPT_RO, "read-only",
	  "create: refuse writes" },
	{ { "qos-iops", required_argument, NULL, O_QOS_IOPS }, OPT_QOS, "qos-iops N",
	  "create: at most N requests per second (0: unlimited)" },
	{ { "qos-bps", required_argument, NULL, O_QOS_BPS }, OPT_QOS, "qos-bps N",
	  "create: at most N bytes per second (K/M/G suffixes; 0: unlimited)" },
	{ { "iops", required_argument, NULL, O_IOPS }, OPT_LIMITS, "iops N",
	  "qos, pool-qos: requests per second (0: unlimited)" },
	{ { "bps", required_argument, NULL, O_BPS }, OPT_LIMITS, "bps N",
	  "qos, pool-qos: bytes per second (K/M/G suffixes; 0: unlimited)" },
	{ { "json", no_argument, NULL, 'j' }, OPT_JSON, "json",
	  "list, stats, pool-list, qos, pool-qos: print JSON for programs" },
	{ { "iterations", required_argument, NULL, O_ITER }, OPT_TOP, "iterations N",
	  "top: draw N times, then exit" },
	{ { "once", no_argument, NULL, O_ONCE }, OPT_TOP, "once",
	  "top: draw once (same as --iterations 1)" },
	{ { "kind", required_argument, NULL, O_KIND }, OPT_KIND, "kind KIND",
	  "attach: fuse (a loop device over the tap's FUSE file), nbd (/dev/nbdN); default: "
	  "the first available" },
	{ { "force", no_argument, NULL, O_FORCE }, OPT_FORCE, "force",
	  "detach: even while in use (its user's I/O then fails)" },
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

/* A whole number of requests per second: digits only, so "-1", "1.5" and
 * "10k" are refused rather than read as something else. */
static int parse_iops(const char *opt, const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9' || (*out = strtoull(s, &end, 10), errno || *end))
		return usage_error("bad value '%s' for --%s (a whole number of requests per "
				   "second; 0 = unlimited)", s, opt);
	return 0;
}

/* Bytes per second: a size, where 0 means unlimited. */
static int parse_bps(const char *opt, const char *s, uint64_t *out)
{
	if (parse_size(s, out) < 0)
		return usage_error("bad value '%s' for --%s (bytes per second, with an optional "
				   "K, M, G or T suffix; 0 = unlimited)", s, opt);
	return 0;
}

static int parse_iterations(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : 0;
	if (*s < '0' || *s > '9' || errno || *end || v == 0 || v > 1000000)
		return usage_error("bad value '%s' for --iterations (a number from 1)", s);
	*out = (unsigned)v;
	return 0;
}

static int cmd_help(sd_bus *bus, const struct args *a);

static const struct command commands[] = {
	{ "create",
	  "[--name NAME] [--pool POOL] [--parent TAP] [--read-only] [--qos-iops N] "
	  "[--qos-bps N] IMAGE",
	  "create a tap over IMAGE (raw:/path, ram:SIZE, null:SIZE, ...); prints its name",
	  OPT_NAME | OPT_POOL | OPT_PARENT | OPT_RO | OPT_QOS, 1, 0, 0, cmd_create },
	{ "destroy", "NAME|MINOR", "destroy a tap", 0, 1, 0, 0, cmd_destroy },
	{ "list", "[--json]", "list taps with their state, limits, devices and NBD URIs",
	  OPT_JSON, 0, 0, 0, cmd_list },
	{ "stats", "[--json] NAME|MINOR", "show a tap's I/O counters", OPT_JSON, 1, 0, 0,
	  cmd_stats },
	{ "pause", "NAME|MINOR",
	  "let requests in flight finish, hold new ones and close the image; returns when paused",
	  0, 1, 0, 0, cmd_pause },
	{ "unpause", "NAME|MINOR [IMAGE]",
	  "reopen a paused tap, on IMAGE (same size) if given, and serve the held requests", 0,
	  1, 1, 0, cmd_unpause },
	{ "set-pool", "NAME|MINOR POOL", "move a running tap to another buffer pool", 0, 2, 0,
	  0, cmd_set_pool },
	{ "qos", "[--json] NAME|MINOR [--iops N] [--bps N]",
	  "show, or change, a tap's limits (0: unlimited; an option left out stays)",
	  OPT_LIMITS | OPT_JSON, 1, 0, 0, cmd_qos },
	{ "attach", "NAME|MINOR [--kind fuse|ublk|nbd]",
	  "make the tap a kernel block device; prints its path (e.g. /dev/loop0)", OPT_KIND, 1,
	  0, 0, cmd_attach },
	{ "detach", "NAME|MINOR [--force]",
	  "remove the tap's kernel block device; refused while it is in use unless --force",
	  OPT_FORCE, 1, 0, 0, cmd_detach },
	{ "top", "[--iterations N | --once]",
	  "live view of taps and pools, refreshed every second; q or Ctrl-C quits", OPT_TOP, 0,
	  0, 0, cmd_top },
	{ "pool-create", "NAME SIZE", "create a buffer pool of SIZE bytes (K/M/G suffixes)", 0,
	  2, 0, 2, cmd_pool_create },
	{ "pool-resize", "NAME SIZE", "grow or shrink a pool", 0, 2, 0, 2, cmd_pool_resize },
	{ "pool-destroy", "NAME", "destroy an unused pool", 0, 1, 0, 0, cmd_pool_destroy },
	{ "pool-list", "[--json]", "list pools, their usage and limits", OPT_JSON, 0, 0, 0,
	  cmd_pool_list },
	{ "pool-qos", "[--json] POOL [--iops N] [--bps N]",
	  "show, or change, the limits shared by all taps of a pool", OPT_LIMITS | OPT_JSON, 1,
	  0, 0, cmd_pool_qos },
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
		fprintf(f, "  --%-14s %s\n", option_table[i].usage, option_table[i].help);
	fputs("  --bus ADDRESS    the bus: system (default; honours DBUS_SYSTEM_BUS_ADDRESS),\n"
	      "                   session, or a D-Bus address such as unix:path=/run/bus.sock\n"
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
	int opt, r = 0;

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
		case O_PARENT: a->parent = optarg; break;
		case O_QOS_IOPS:
		case O_IOPS:
			a->has_iops = true;
			r = parse_iops(opt == O_IOPS ? "iops" : "qos-iops", optarg, &a->iops);
			break;
		case O_QOS_BPS:
		case O_BPS:
			a->has_bps = true;
			r = parse_bps(opt == O_BPS ? "bps" : "qos-bps", optarg, &a->bps);
			break;
		case O_ITER: r = parse_iterations(optarg, &a->iterations); break;
		case O_ONCE: a->iterations = 1; break;
		case O_KIND: a->kind = optarg; break;
		case O_FORCE: a->force = true; break;
		case 'h':
			printf("usage: tapctl %s %s\n  %s\n", c->name, c->args, c->summary);
			return -1;
		case ':':
			return usage_error("option '%s' needs an argument", argv[optind - 1]);
		default:
			return bad_option(argv);
		}
		if (r)
			return r;
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
