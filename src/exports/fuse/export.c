/* Start and stop of the FUSE export (fuse.h): the device kind is
 * registered whether or not the mount works, so that Attach of kind fuse
 * can say why it cannot. */
#include "fuse.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>

#include "exports/device.h"
#include "internal.h"

int fuse_export_start(struct event_base *base, const char *state_dir, struct errbuf *eb)
{
	char dir[PATH_MAX];
	int ret = device_kind_register(&fx_loop_kind);

	if (ret < 0) {
		err_set(eb, "cannot register the fuse device kind");
		return ret;
	}
	if ((size_t)snprintf(dir, sizeof(dir), "%s/fuse", state_dir) >= sizeof(dir)) {
		err_set(eb, "fuse: the state directory's path is too long");
		return -ENAMETOOLONG;
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
