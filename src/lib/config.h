/* The daemon's configuration file: "key = value" lines, '#' comments.
 * Read once at start, before the loop: the caller decides what each key
 * means and refuses what it does not know. */
#ifndef TAPD_LIB_CONFIG_H
#define TAPD_LIB_CONFIG_H

#include <stdbool.h>

#include "util.h"

/* A line longer than this, or a file with more lines, is refused. */
#define CONFIG_LINE_MAX 4096
#define CONFIG_LINES_MAX 10000

/* Called for each setting; returns 0 or -errno with a message in eb
 * (config_read prefixes it with FILE:LINE). */
typedef int (*config_fn)(const char *key, const char *value, void *arg, struct errbuf *eb);

/* Read file and call fn for each "key = value" (both trimmed). 0 (also
 * for a missing file unless must_exist), -EINVAL for a malformed or too
 * long line, fn's error, or -errno; eb names the file and the line. */
int config_read(const char *file, bool must_exist, config_fn fn, void *arg, struct errbuf *eb);

#endif
