/* Opening image files under the allow-list. An allowed directory is held
 * open (O_PATH) and a path beneath it is resolved with openat2
 * RESOLVE_BENEATH, so neither a symlink nor ".." leads out of it, whatever
 * the tree holds. Every open is first an O_PATH open and an fstat: only a
 * regular file or a block device is then opened for I/O. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "path.h"

struct allowed_dir {
	char *path; /* as given, without trailing slashes */
	char *real; /* resolved */
	int fd;	    /* O_PATH | O_DIRECTORY */
};

static struct allowed_dir dirs[IMAGE_PATH_DIRS_MAX];
static unsigned n_dirs;
static char *devices[IMAGE_PATH_DEVICES_MAX];
static unsigned n_devices;
/* openat2 is missing (Linux before 5.6, or a seccomp filter): fall back
 * to realpath and a prefix check, which a concurrent rename can race. */
static bool no_openat2;

static char *strip_slashes(const char *p)
{
	char *s = strdup(p);
	size_t n;

	if (!s)
		return NULL;
	n = strlen(s);
	while (n > 1 && s[n - 1] == '/')
		s[--n] = '\0';
	return s;
}

int image_path_allow_dir(const char *dir, struct errbuf *eb)
{
	struct allowed_dir *a = &dirs[n_dirs];

	if (dir[0] != '/') {
		err_set(eb, "image directory %s: not an absolute path", dir);
		return -EINVAL;
	}
	if (n_dirs == IMAGE_PATH_DIRS_MAX) {
		err_set(eb, "more than %d image directories", IMAGE_PATH_DIRS_MAX);
		return -ENOSPC;
	}
	a->fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (a->fd < 0) {
		int e = errno;

		err_set(eb, "image directory %s: %s", dir, strerror(e));
		return -e;
	}
	a->path = strip_slashes(dir);
	a->real = realpath(dir, NULL);
	if (!a->path || !a->real) {
		int e = a->path && !a->real ? errno : ENOMEM;

		free(a->path);
		free(a->real);
		close(a->fd);
		err_set(eb, "image directory %s: %s", dir, strerror(e));
		return -e;
	}
	n_dirs++;
	return 0;
}

int image_path_allow_device(const char *pattern, struct errbuf *eb)
{
	if (pattern[0] != '/') {
		err_set(eb, "device %s: not an absolute path", pattern);
		return -EINVAL;
	}
	if (n_devices == IMAGE_PATH_DEVICES_MAX) {
		err_set(eb, "more than %d allowed devices", IMAGE_PATH_DEVICES_MAX);
		return -ENOSPC;
	}
	devices[n_devices] = strdup(pattern);
	if (!devices[n_devices])
		return -ENOMEM;
	n_devices++;
	return 0;
}

bool image_path_restricted(void)
{
	return n_dirs || n_devices;
}

void image_path_policy_free(void)
{
	for (unsigned i = 0; i < n_dirs; i++) {
		close(dirs[i].fd);
		free(dirs[i].path);
		free(dirs[i].real);
	}
	for (unsigned i = 0; i < n_devices; i++)
		free(devices[i]);
	n_dirs = n_devices = 0;
}

void image_path_no_openat2(void)
{
	no_openat2 = true;
}

int image_path_reopen(int fd, int flags)
{
	char p[40];
	int nfd;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	nfd = open(p, flags | O_CLOEXEC);
	return nfd < 0 ? -errno : nfd;
}

/* The part of path beneath prefix ("" for prefix itself), or NULL. */
static const char *beneath(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);

	if (n == 1 && prefix[0] == '/')
		n = 0;
	if (strncmp(path, prefix, n) != 0 || (path[n] != '/' && path[n] != '\0'))
		return NULL;
	path += n;
	while (*path == '/')
		path++;
	return path;
}

/* O_PATH descriptor of rel beneath a, or -errno; -EXDEV for a way out. */
static int open_beneath(const struct allowed_dir *a, const char *path, const char *rel)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	const char *r;
	char *real;
	long fd;

	if (!no_openat2) {
		/* EAGAIN: a rename raced the lookup; the kernel asks to retry. */
		for (int tries = 0; tries < 3; tries++) {
			fd = syscall(SYS_openat2, a->fd, rel, &how, sizeof(how));
			if (fd >= 0 || errno != EAGAIN)
				break;
		}
		if (fd >= 0)
			return (int)fd;
		if (errno != ENOSYS && errno != EPERM)
			return errno == ELOOP ? -EXDEV : -errno;
		no_openat2 = true;
	}
	/* Weaker: the resolved path must still be beneath the directory,
	 * and its last component is not followed again. */
	real = realpath(path, NULL);
	if (!real)
		return -errno;
	r = beneath(real, a->real);
	fd = r ? open(real, O_PATH | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (!r)
		errno = EXDEV;
	free(real);
	return fd < 0 ? -errno : (int)fd;
}

static bool device_allowed(const char *path, int pfd)
{
	char link[40], real[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", pfd);
	n = readlink(link, real, sizeof(real) - 1);
	real[n > 0 ? n : 0] = '\0';
	for (unsigned i = 0; i < n_devices; i++)
		if (fnmatch(devices[i], path, FNM_PATHNAME) == 0 ||
		    (n > 0 && fnmatch(devices[i], real, FNM_PATHNAME) == 0))
			return true;
	return false;
}

static const char *type_name(mode_t m)
{
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISLNK(m))
		return "a symbolic link";
	return "not a regular file";
}

/* The O_PATH descriptor the policy allows for path, or -errno; *in_dir
 * says whether it was found beneath an allowed directory. */
static int open_path(const char *path, bool *in_dir, struct errbuf *eb)
{
	int fd, e;

	*in_dir = false;
	if (!image_path_restricted()) {
		fd = open(path, O_PATH | O_CLOEXEC);
		if (fd < 0) {
			e = errno;
			err_set(eb, "cannot open %s: %s", path, strerror(e));
			return -e;
		}
		return fd;
	}
	for (unsigned i = 0; i < n_dirs; i++) {
		const char *rel = beneath(path, dirs[i].path);

		if (!rel)
			rel = beneath(path, dirs[i].real);
		if (!rel)
			continue;
		*in_dir = true;
		fd = open_beneath(&dirs[i], path, *rel ? rel : ".");
		if (fd == -EXDEV) {
			err_set(eb, "%s leads out of the image directory %s (a symlink or '..')",
				path, dirs[i].path);
			return -EACCES;
		}
		if (fd < 0)
			err_set(eb, "cannot open %s: %s", path, strerror(-fd));
		return fd;
	}
	if (n_devices) {
		/* Follows symlinks (/dev/mapper/NAME): the pattern is matched
		 * against what was opened, and only a block device passes. */
		fd = open(path, O_PATH | O_CLOEXEC);
		if (fd >= 0 && device_allowed(path, fd))
			return fd;
		if (fd >= 0)
			close(fd);
	}
	err_set(eb, "not under an allowed image directory (--image-dir): %s", path);
	return -EACCES;
}

int image_path_open(const char *path, int flags, struct stat *st, struct errbuf *eb)
{
	bool in_dir;
	int pfd, fd, e;

	if (path[0] != '/') {
		err_set(eb, "image path must be absolute: %s", path);
		return -EINVAL;
	}
	pfd = open_path(path, &in_dir, eb);
	if (pfd < 0)
		return pfd;
	if (fstat(pfd, st) < 0) {
		e = errno;
		err_set(eb, "cannot open %s: %s", path, strerror(e));
		close(pfd);
		return -e;
	}
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		err_set(eb, "%s is %s: an image is a regular file or a block device", path,
			type_name(st->st_mode));
		close(pfd);
		return -EINVAL;
	}
	if (S_ISBLK(st->st_mode) && image_path_restricted() && !device_allowed(path, pfd)) {
		err_set(eb, "%s is a block device not named by --device-allow", path);
		close(pfd);
		return -EACCES;
	}
	/* A --device-allow pattern names devices: a regular file it matches
	 * outside every image directory stays out. */
	if (S_ISREG(st->st_mode) && image_path_restricted() && !in_dir) {
		err_set(eb, "not under an allowed image directory (--image-dir): %s", path);
		close(pfd);
		return -EACCES;
	}
	/* The checked inode itself, opened for I/O; O_NONBLOCK so that no
	 * device driver can make the open wait (removable media). */
	fd = image_path_reopen(pfd, flags | O_NONBLOCK | O_NOCTTY);
	close(pfd);
	if (fd < 0) {
		if (!(fd == -EINVAL && (flags & O_DIRECT)))
			err_set(eb, "cannot open %s: %s", path, strerror(-fd));
		return fd;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		e = errno;
		close(fd);
		err_set(eb, "cannot open %s: %s", path, strerror(e));
		return -e;
	}
	return fd;
}
