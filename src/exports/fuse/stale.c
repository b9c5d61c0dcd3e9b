/* What a tapd that died leaves behind on the FUSE side, found and cleaned
 * at start, before the new mount: loop devices bound to its files, and
 * its mount (fs.c lazily unmounts it when fx_mounted says it is there). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "exports/device.h"
#include "lib/log.h"
#include "lib/worker.h"
#include "internal.h"

/* Whether dir is a mount point, from mountinfo (a dead FUSE mount fails
 * stat with ENOTCONN, so the path is what tells). */
bool fx_mounted(const char *dir)
{
	char line[4096], mnt[PATH_MAX];
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	while (f && !found && fgets(line, sizeof(line), f))
		found = sscanf(line, "%*u %*u %*u:%*u %*s %4095s", mnt) == 1 &&
			strcmp(mnt, dir) == 0;
	if (f)
		fclose(f);
	return found;
}

/* ---- what a tapd that died left behind ---------------------------------
 * Loop devices bound to its files, which can only fail now, and its mount,
 * dead (ENOTCONN to everyone), unless the mount lived in a mount namespace
 * of its own (systemd's ProtectSystem) and went with it. This tapd has
 * bound nothing yet and no other serves the directory (we own the bus
 * name). A device is cleared as it is let go (LOOP_CLR_FD: autoclear
 * while something holds it). */

/* Loop devices whose file the kernel names "/NAME": at the root of a
 * mount it can no longer name (detached, or in a namespace that is gone). */
#define FX_STALE_MAX 64

static struct {
	struct worker_job job;
	char dir[PATH_MAX];
	unsigned n;
	struct {
		int number;
		char file[TAP_NAME_MAX + 1];
		bool cleared;
	} loops[FX_STALE_MAX];
} stale;

static void fx_backing_file(int number, char *buf, size_t len)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/block/loop%d/loop/backing_file", number);
	if (device_read_line(path, buf, len) < 0)
		buf[0] = '\0';
}

static bool fx_clear_loop(int number)
{
	char dev[32];
	bool ok;
	int fd;

	snprintf(dev, sizeof(dev), "/dev/loop%d", number);
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ok = ioctl(fd, LOOP_CLR_FD, 0) == 0;
	close(fd);
	return ok;
}

/* On a thread of its own: LOOP_GET_STATUS64 asks the backing file's FUSE
 * server for its attributes, which may be someone else's and hung. Ours
 * says so by its name (loop.c sets lo_file_name to STATE/fuse/NAME), or,
 * past the attribute timeout, fails with ENOTCONN: the server is dead. */
static void fx_stale_run(struct worker_job *job)
{
	size_t n = MIN(strlen(stale.dir), (size_t)LO_NAME_SIZE - 2);

	(void)job;
	for (unsigned i = 0; i < stale.n; i++) {
		struct loop_info64 info = {0}; /* valgrind knows not the loop ioctls */
		char now[PATH_MAX], dev[32];
		bool ours;
		int fd;

		/* Still the same device (its number may have been reused). */
		fx_backing_file(stale.loops[i].number, now, sizeof(now));
		if (now[0] != '/' || strcmp(now + 1, stale.loops[i].file) != 0)
			continue;
		snprintf(dev, sizeof(dev), "/dev/loop%d", stale.loops[i].number);
		fd = open(dev, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
			info.lo_file_name[LO_NAME_SIZE - 1] = '\0';
			ours = strncmp((const char *)info.lo_file_name, stale.dir, n) == 0 &&
			       (n < strlen(stale.dir) || info.lo_file_name[n] == '/');
		} else {
			ours = errno == ENOTCONN;
		}
		close(fd);
		stale.loops[i].cleared = ours && fx_clear_loop(stale.loops[i].number);
	}
}

static void fx_stale_done(struct worker_job *job)
{
	(void)job;
	for (unsigned i = 0; i < stale.n; i++)
		if (stale.loops[i].cleared)
			log_notice("fuse: /dev/loop%d was left bound to a file of %s by a tapd "
				   "that stopped (its mount gone): cleared",
				   stale.loops[i].number, stale.dir);
}

/* Before the mount. */
void fx_clear_stale_loops(const char *dir)
{
	char back[PATH_MAX];
	size_t dlen = strlen(dir);
	struct dirent *de;
	struct errbuf eb;
	DIR *d = opendir("/sys/block");
	int number;

	snprintf(stale.dir, sizeof(stale.dir), "%s", dir);
	stale.n = 0;
	while (d && (de = readdir(d))) {
		if (sscanf(de->d_name, "loop%d", &number) != 1)
			continue;
		fx_backing_file(number, back, sizeof(back));
		if (strncmp(back, dir, dlen) == 0 && back[dlen] == '/') {
			/* Under the dead mount here: no FUSE request needed. */
			if (fx_clear_loop(number))
				log_notice("fuse: /dev/loop%d was left bound to a file of %s by "
					   "a tapd that stopped: cleared", number, dir);
		} else if (back[0] == '/' && !strchr(back + 1, '/') && stale.n < FX_STALE_MAX &&
			   tap_name_check(back + 1, &eb) == 0) {
			stale.loops[stale.n].number = number;
			snprintf(stale.loops[stale.n].file, sizeof(stale.loops[0].file), "%.*s",
				 TAP_NAME_MAX, back + 1);
			stale.n++;
		}
	}
	if (d)
		closedir(d);
	if (!stale.n)
		return;
	/* Not waited for: a hung stranger only holds up this thread. */
	stale.job.run = fx_stale_run;
	stale.job.done = fx_stale_done;
	if (worker_spawn(&stale.job) < 0)
		log_warn("fuse: cannot look at %u loop device(s) a tapd may have left", stale.n);
}
