/* `tapd-vhd check`: walk a chain and list every metadata problem, one
 * readable line each, instead of stopping at the first as opening does.
 * Read-only, no locks, so it can look at an image a tapd is serving. */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct checker {
	vhd_report_fn *report;
	void *opaque;
	const char *path;
	unsigned problems;
};

static void problem(struct checker *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct checker *c, const char *fmt, ...)
{
	char msg[400], line[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(line, sizeof(line), "%s: %s", c->path, msg);
	c->problems++;
	if (c->report)
		c->report(c->opaque, line);
}

static void collect(void *opaque, const char *msg)
{
	problem(opaque, "%s", msg);
}

/* One image; returns 0 and fills next (the parent's path) to go on.
 * *loaded tells whether m holds metadata (to free, and to compare). */
static int check_one(struct checker *c, struct vhd_chain *chain, struct vhd_meta *m, char *next,
		     size_t next_size, bool *loaded)
{
	struct errbuf eb = { "" };
	uint8_t *bm = NULL;
	uint64_t size;
	int fd, r;

	*loaded = false;
	fd = open(c->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		problem(c, "cannot open: %s", strerror(errno));
		return -errno;
	}
	r = vhd_chain_add(chain, fd, &eb);
	if (r) {
		problem(c, "%s", eb.msg);
		goto out;
	}
	r = vhd_file_size(fd, &size);
	if (r) {
		problem(c, "cannot get the size: %s", strerror(-r));
		goto out;
	}
	r = vhd_meta_load(m, vhd_fd_pread, &fd, size, collect, c, &eb);
	*loaded = !r;
	if (r) {
		/* BAT problems were listed one by one already. */
		if (!strstr(eb.msg, "BAT entr"))
			problem(c, "%s", eb.msg);
		goto out;
	}
	if (m->footer.type != VHD_TYPE_FIXED) {
		bm = malloc(m->layout.bitmap_size);
		for (uint32_t i = 0; bm && i < m->layout.bat_entries; i++) {
			if (m->bat[i] == VHD_BAT_UNUSED)
				continue;
			if (vhd_fd_pread(&fd, bm, m->layout.bitmap_size,
					 vhd_bitmap_offset(m->bat[i])))
				problem(c, "bitmap of block %" PRIu32 " at %" PRIu64 " is unreadable",
					i, vhd_bitmap_offset(m->bat[i]));
		}
		free(bm);
	}
	if (m->footer.type == VHD_TYPE_DIFF) {
		r = vhd_find_parent(c->path, m, next, next_size, &eb);
		if (r) {
			/* eb already names the child. */
			c->problems++;
			if (c->report)
				c->report(c->opaque, eb.msg);
		}
	} else {
		r = -ENOENT;	/* end of chain, not a problem */
		next[0] = '\0';
	}
out:
	close(fd);
	return r;
}

unsigned vhd_image_check(const char *path, vhd_report_fn *report, void *opaque)
{
	struct checker c = { .report = report, .opaque = opaque };
	char paths[2][VHD_PATH_MAX], child_path[VHD_PATH_MAX];
	struct vhd_chain chain = { 0 };
	struct vhd_meta child, cur;
	bool have_child = false;
	int depth = 0;

	snprintf(paths[0], sizeof(paths[0]), "%s", path);
	for (;;) {
		char *here = paths[depth & 1], *next = paths[(depth + 1) & 1];
		bool loaded;
		int r;

		c.path = here;
		r = check_one(&c, &chain, &cur, next, VHD_PATH_MAX, &loaded);
		if (have_child) {
			struct errbuf eb = { "" };

			if (loaded && vhd_parent_match(&child, &cur.footer, &eb)) {
				c.path = child_path;
				problem(&c, "%s (parent %s)", eb.msg, here);
			}
			vhd_meta_free(&child);
			have_child = false;
		}
		if (r) {
			if (loaded)
				vhd_meta_free(&cur);
			break;
		}
		child = cur;
		have_child = true;
		memcpy(child_path, here, sizeof(child_path));
		depth++;
	}
	return c.problems;
}
