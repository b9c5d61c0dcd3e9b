/* Start and stop of the FUSE export (fuse.h): the device kind is
 * registered whether or not the mount works, so that Attach of kind fuse
 * can say why it cannot. */
#include "fuse.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "exports/device.h"
#include "internal.h"

/* STATE_DIR/fuse as the kernel spells it in mountinfo and in a loop
 * device's backing file: absolute, no "//", no "/" at the end, which the
 * start compares with to find what a dead tapd left. */
static int fuse_dir(const char *state_dir, char *dir, size_t len)
{
	char cwd[PATH_MAX], raw[PATH_MAX];
	size_t n = 0;

	if (state_dir[0] != '/' && !getcwd(cwd, sizeof(cwd)))
		return -errno;
	if ((size_t)snprintf(raw, sizeof(raw), "%s/%s/fuse", state_dir[0] == '/' ? "" : cwd,
			     state_dir) >= sizeof(raw))
		return -ENAMETOOLONG;
	for (const char *p = raw; *p && n + 1 < len; p++)
		if (*p != '/' || p[1] != '/')
			dir[n++] = *p;
	dir[n] = '\0';
	return 0;
}

int fuse_export_start(struct event_base *base, const char *state_dir, struct errbuf *eb)
{
	char dir[PATH_MAX];
	int ret = device_kind_register(&fx_loop_kind);

	if (ret < 0) {
		err_set(eb, "cannot register the fuse device kind");
		return ret;
	}
	ret = fuse_dir(state_dir, dir, sizeof(dir));
	if (ret < 0) {
		err_set(eb, "fuse: %s: %s", state_dir, strerror(-ret));
		return ret;
	}
	return fx_fs_start(base, dir, eb);
}

const char *fuse_export_dir(void)
{
	return fx_fs_dir();
}

void fuse_export_stop(void (*done)(void *arg), void *arg)
{
	fx_fs_stop(done, arg);
}

void fuse_export_free(void)
{
	fx_fs_free();
}
