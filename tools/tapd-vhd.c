/* tapd-vhd: offline VHD tool (create, snapshot, query, check, coalesce,
 * resize) on top of src/formats/vhd/format.h. One table drives option parsing for
 * every subcommand. Exit codes: 0 ok, 1 failure (with a message), 2 usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/util.h"
#include "formats/vhd/format.h"

#ifndef TAPD_VERSION
#define TAPD_VERSION "unknown"
#endif

#define EXIT_FAIL 1
#define EXIT_USAGE 2

enum {
	OPT_FIXED = 1 << 0,
	OPT_BLOCK_SIZE = 1 << 1,
	OPT_MAX_SIZE = 1 << 2,
	OPT_JSON = 1 << 3,
	OPT_PROGRESS = 1 << 4,
};

/* Every option once; each command's mask says which it accepts. */
static const struct option_def {
	const char *name;
	unsigned bit;
	bool has_arg;
	const char *help;
} options[] = {
	{ "fixed", OPT_FIXED, false, "create a fixed (preallocated) disk" },
	{ "block-size", OPT_BLOCK_SIZE, true, "SIZE  block size of a dynamic disk (2M)" },
	{ "max-size", OPT_MAX_SIZE, true, "SIZE  reserve BAT room to resize up to SIZE" },
	{ "json", OPT_JSON, false, "print JSON" },
	{ "progress", OPT_PROGRESS, false, "print progress even if stderr is no tty" },
};

struct args {
	unsigned set;
	const char *val[8];	/* by option index */
	const char *pos[4];
	int npos;
};

struct command {
	const char *name;
	const char *usage;
	const char *summary;
	int min_pos, max_pos;
	unsigned opts;
	int (*run)(const struct args *a);
};

static const char *prog = "tapd-vhd";

static void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail_msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const char *opt_val(const struct args *a, unsigned bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++)
		if (options[i].bit == bit)
			return a->val[i];
	return NULL;
}

static int size_arg(const char *s, const char *what, uint64_t *out)
{
	if (parse_size(s, out) || !*out) {
		fail_msg("invalid %s '%s' (e.g. 512M, 10G)", what, s);
		return -EINVAL;
	}
	if (*out % 512) {
		fail_msg("%s '%s' is not a multiple of 512 bytes", what, s);
		return -EINVAL;
	}
	return 0;
}

static int cmd_create(const struct args *a)
{
	struct vhd_create_opts o = { .type = VHD_TYPE_DYNAMIC };
	struct errbuf eb = { "" };
	uint64_t bs = 0;

	if (size_arg(a->pos[1], "size", &o.size))
		return EXIT_USAGE;
	if (a->set & OPT_FIXED) {
		if (a->set & (OPT_BLOCK_SIZE | OPT_MAX_SIZE)) {
			fail_msg("--fixed takes no --block-size or --max-size");
			return EXIT_USAGE;
		}
		o.type = VHD_TYPE_FIXED;
	}
	if ((a->set & OPT_BLOCK_SIZE) && size_arg(opt_val(a, OPT_BLOCK_SIZE), "block size", &bs))
		return EXIT_USAGE;
	if (bs > UINT32_MAX) {
		fail_msg("block size too large");
		return EXIT_USAGE;
	}
	o.block_size = (uint32_t)bs;
	if ((a->set & OPT_MAX_SIZE) && size_arg(opt_val(a, OPT_MAX_SIZE), "max size", &o.max_size))
		return EXIT_USAGE;
	if (vhd_image_create(a->pos[0], &o, &eb)) {
		fail_msg("%s", eb.msg);
		return EXIT_FAIL;
	}
	return 0;
}

static int cmd_snapshot(const struct args *a)
{
	struct vhd_create_opts o = { .type = VHD_TYPE_DIFF, .parent = a->pos[1] };
	struct errbuf eb = { "" };

	if (vhd_image_create(a->pos[0], &o, &eb)) {
		fail_msg("%s", eb.msg);
		return EXIT_FAIL;
	}
	return 0;
}

static const char *type_name(uint32_t t)
{
	return t == VHD_TYPE_FIXED ? "fixed" : t == VHD_TYPE_DYNAMIC ? "dynamic" : "differencing";
}

/* A JSON string with everything that needs escaping escaped. */
static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static int cmd_query(const struct args *a)
{
	struct vhd_image *img;
	struct errbuf eb = { "" };
	char uuid[40], puuid[40], parent[VHD_PATH_MAX], sz[16];
	const char *ppath = NULL;
	const struct vhd_meta *m;
	uint32_t alloc = 0, total = 0;
	struct stat st;

	if (vhd_image_open(&img, a->pos[0], VHD_OPEN_NOCHAIN, &eb)) {
		fail_msg("%s", eb.msg);
		return EXIT_FAIL;
	}
	m = &img->meta;
	if (m->footer.type != VHD_TYPE_FIXED) {
		alloc = vhd_bat_allocated(&m->layout, m->bat);
		total = m->layout.blocks;
	}
	if (m->footer.type == VHD_TYPE_DIFF) {
		struct errbuf peb = { "" };

		ppath = vhd_find_parent(img->path, m, parent, sizeof(parent), &peb) ? NULL : parent;
		vhd_uuid_str(m->header.parent_uuid, puuid);
	}
	if (fstat(img->fd, &st))
		st.st_size = 0;
	vhd_uuid_str(m->footer.uuid, uuid);
	if (a->set & OPT_JSON) {
		printf("{\"path\": ");
		json_str(img->path);
		printf(", \"type\": \"%s\", \"virtual_size\": %" PRIu64 ", \"block_size\": %" PRIu32
		       ", \"allocated_blocks\": %" PRIu32 ", \"total_blocks\": %" PRIu32
		       ", \"physical_size\": %" PRIu64 ", \"uuid\": \"%s\", \"parent\": ",
		       type_name(m->footer.type), m->layout.size, m->layout.block_size, alloc,
		       total, (uint64_t)st.st_size, uuid);
		json_str(ppath);
		printf(", \"parent_name\": ");
		json_str(m->footer.type == VHD_TYPE_DIFF ? m->header.parent_name : NULL);
		printf(", \"parent_uuid\": ");
		json_str(m->footer.type == VHD_TYPE_DIFF ? puuid : NULL);
		printf(", \"batmap\": %s}\n", m->has_batmap ? "true" : "false");
	} else {
		printf("path: %s\n", img->path);
		printf("type: %s\n", type_name(m->footer.type));
		printf("virtual size: %" PRIu64 " (%s)\n", m->layout.size,
		       format_size(m->layout.size, sz, sizeof(sz)));
		if (m->footer.type != VHD_TYPE_FIXED) {
			printf("block size: %" PRIu32 "\n", m->layout.block_size);
			printf("allocated blocks: %" PRIu32 " of %" PRIu32 "\n", alloc, total);
		}
		printf("physical size: %" PRIu64 "\n", (uint64_t)st.st_size);
		printf("uuid: %s\n", uuid);
		if (m->footer.type == VHD_TYPE_DIFF) {
			printf("parent: %s\n", ppath ? ppath : "(not found)");
			printf("parent name: %s\n", m->header.parent_name);
			printf("parent uuid: %s\n", puuid);
		}
	}
	vhd_image_close(img);
	return 0;
}

static void print_problem(void *opaque, const char *msg)
{
	(void)opaque;
	printf("%s\n", msg);
}

static int cmd_check(const struct args *a)
{
	unsigned n = vhd_image_check(a->pos[0], print_problem, NULL);

	if (n) {
		fail_msg("%u problem%s found", n, n == 1 ? "" : "s");
		return EXIT_FAIL;
	}
	printf("%s: ok\n", a->pos[0]);
	return 0;
}

struct progress {
	bool on;
	int last;	/* last percentage printed */
};

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct progress *p = opaque;
	int pct = total ? (int)(done * 100 / total) : 100;

	if (!p->on || pct / 5 == p->last / 5)
		return;
	p->last = pct;
	fprintf(stderr, "coalesce: %d%%\n", pct);
}

static int cmd_coalesce(const struct args *a)
{
	struct progress p = { .on = (a->set & OPT_PROGRESS) || isatty(2), .last = 0 };
	struct vhd_image *img;
	struct errbuf eb = { "" };
	int r;

	r = vhd_image_open(&img, a->pos[0], VHD_OPEN_RDWR | VHD_OPEN_LOCK | VHD_OPEN_PARENT_RDWR,
			   &eb);
	if (!r)
		r = vhd_image_coalesce(img, show_progress, &p, &eb);
	vhd_image_close(img);
	if (r) {
		fail_msg("%s", eb.msg);
		return EXIT_FAIL;
	}
	return 0;
}

static int cmd_resize(const struct args *a)
{
	struct vhd_image *img;
	struct errbuf eb = { "" };
	uint64_t size;
	int r;

	if (size_arg(a->pos[1], "size", &size))
		return EXIT_USAGE;
	r = vhd_image_open(&img, a->pos[0], VHD_OPEN_RDWR | VHD_OPEN_LOCK | VHD_OPEN_NOCHAIN,
			   &eb);
	if (!r)
		r = vhd_image_resize(img, size, &eb);
	vhd_image_close(img);
	if (r) {
		fail_msg("%s", eb.msg);
		return EXIT_FAIL;
	}
	return 0;
}

static const struct command commands[] = {
	{ "create", "[--fixed] [--block-size SIZE] [--max-size SIZE] FILE SIZE",
	  "create a dynamic (or fixed) VHD", 2, 2, OPT_FIXED | OPT_BLOCK_SIZE | OPT_MAX_SIZE,
	  cmd_create },
	{ "snapshot", "FILE PARENT", "create FILE, a differencing child of PARENT", 2, 2, 0,
	  cmd_snapshot },
	{ "query", "[--json] FILE", "show size, type, parent, allocation", 1, 1, OPT_JSON,
	  cmd_query },
	{ "check", "FILE", "check the metadata of FILE and its chain", 1, 1, 0, cmd_check },
	{ "coalesce", "[--progress] FILE", "merge FILE's data into its parent", 1, 1,
	  OPT_PROGRESS, cmd_coalesce },
	{ "resize", "FILE SIZE", "grow the virtual size of FILE", 2, 2, 0, cmd_resize },
};

static void usage(FILE *out, const struct command *only)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const struct command *c = &commands[i];

		if (only && c != only)
			continue;
		fprintf(out, "%s %s %s\n    %s\n", only || i ? "      " : "Usage:", c->name,
			c->usage, c->summary);
		for (size_t j = 0; j < ARRAY_SIZE(options); j++)
			if (c->opts & options[j].bit)
				fprintf(out, "    --%s %s\n", options[j].name, options[j].help);
	}
	if (!only)
		fprintf(out, "Sizes take K, M, G, T suffixes (powers of 1024). "
			"See tapd-vhd(8).\n");
}

static int parse(const struct command *c, int argc, char **argv, struct args *a)
{
	bool no_more_opts = false;

	memset(a, 0, sizeof(*a));
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *eq;
		size_t len, j;

		if (no_more_opts || arg[0] != '-' || !arg[1]) {
			if (a->npos >= c->max_pos) {
				fail_msg("%s: too many arguments", c->name);
				return -EINVAL;
			}
			a->pos[a->npos++] = arg;
			continue;
		}
		if (!strcmp(arg, "--")) {
			no_more_opts = true;
			continue;
		}
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help"))
			return 1;
		if (strncmp(arg, "--", 2)) {
			fail_msg("%s: unknown option '%s'", c->name, arg);
			return -EINVAL;
		}
		arg += 2;
		eq = strchr(arg, '=');
		len = eq ? (size_t)(eq - arg) : strlen(arg);
		for (j = 0; j < ARRAY_SIZE(options); j++)
			if ((c->opts & options[j].bit) && strlen(options[j].name) == len &&
			    !strncmp(options[j].name, arg, len))
				break;
		if (j == ARRAY_SIZE(options)) {
			fail_msg("%s: unknown option '--%.*s'", c->name, (int)len, arg);
			return -EINVAL;
		}
		if (options[j].has_arg) {
			if (!eq && i + 1 >= argc) {
				fail_msg("%s: --%s needs a value", c->name, options[j].name);
				return -EINVAL;
			}
			a->val[j] = eq ? eq + 1 : argv[++i];
		} else if (eq) {
			fail_msg("%s: --%s takes no value", c->name, options[j].name);
			return -EINVAL;
		}
		a->set |= options[j].bit;
	}
	if (a->npos < c->min_pos) {
		fail_msg("%s: missing arguments", c->name);
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct args a;

	if (argc < 2) {
		usage(stderr, NULL);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout, NULL);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("tapd-vhd %s\n", TAPD_VERSION);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const struct command *c = &commands[i];
		int r;

		if (strcmp(argv[1], c->name))
			continue;
		r = parse(c, argc - 2, argv + 2, &a);
		if (r > 0) {
			usage(stdout, c);
			return 0;
		}
		if (r) {
			usage(stderr, c);
			return EXIT_USAGE;
		}
		return c->run(&a);
	}
	fail_msg("unknown command '%s'", argv[1]);
	usage(stderr, NULL);
	return EXIT_USAGE;
}
