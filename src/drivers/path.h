/* Opening image files: the one place a driver turns an image path into a
 * descriptor, so that the allow-list (--image-dir, --device-allow) and the
 * file-type rule (regular files and block devices only) hold for every
 * driver and every parent. Loop thread; the policy is set once at start. */
#ifndef TAPD_DRIVERS_PATH_H
#define TAPD_DRIVERS_PATH_H

#include <stdbool.h>
#include <sys/stat.h>

#include "lib/util.h"

/* Bounds on the policy: each entry holds a descriptor or a pattern. */
#define IMAGE_PATH_DIRS_MAX 64
#define IMAGE_PATH_DEVICES_MAX 64

/* Allow image files beneath dir (an existing directory, absolute path):
 * kept open, and matched against paths by both its given and its
 * resolved spelling. 0, or -errno with a message. */
int image_path_allow_dir(const char *dir, struct errbuf *eb);
/* Allow block devices whose path, as given or resolved, matches pattern
 * (fnmatch, e.g. /dev/mapper/vg-*). 0, or -EINVAL/-ENOSPC. */
int image_path_allow_device(const char *pattern, struct errbuf *eb);
/* True once any directory or device is allowed: from then on the lists
 * are the whole policy (files beneath a directory, devices named). */
bool image_path_restricted(void);
/* Forget the policy (closes the directories): at exit. */
void image_path_policy_free(void);
/* Use the realpath fallback as if openat2 were missing (unit tests). */
void image_path_no_openat2(void);

/* Open path (absolute) with flags (O_RDONLY/O_RDWR, O_DIRECT...):
 * resolved beneath an allowed directory when the policy is restricted,
 * and only if it is a regular file or a block device (a FIFO, socket,
 * character device or directory is never opened for I/O, so nothing can
 * block or take effect on open). Fills *st. The descriptor, or -EACCES
 * (outside the allow-list), -EINVAL (relative path, wrong file type),
 * -errno from open; eb says which. O_DIRECT's -EINVAL has no message. */
int image_path_open(const char *path, int flags, struct stat *st, struct errbuf *eb);
/* The file fd refers to, opened once more with flags (through
 * /proc/self/fd: the same inode, whatever its path became). fd or -errno. */
int image_path_reopen(int fd, int flags);

#endif
