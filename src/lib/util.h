/* Small helpers shared by every module: error buffers that carry a message a
 * person can read from deep in a call chain up to D-Bus or tapctl, size
 * parsing, and scoped frees. Nothing here allocates on the I/O path. */
#ifndef TAPD_UTIL_H
#define TAPD_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_DOWN(x, a) ((x) / (a) * (a))
#define ALIGN_UP(x, a) (((x) + (a)-1) / (a) * (a))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr)-offsetof(type, member)))

/* A readable reason for a failure, filled by the function that knows it.
 * Callers return a negative errno and fill the buffer; the first message
 * set wins so that the deepest, most precise reason survives. */
struct errbuf {
	char msg[256];
};

void err_set(struct errbuf *eb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Parse "1048576", "64K", "512M", "1G", "2T" (powers of 1024, optional
 * trailing "B"/"iB"). Returns 0 and stores bytes, or -EINVAL. */
int parse_size(const char *s, uint64_t *out);

/* Format bytes as "64M", "1.5G" into buf (at least 16 bytes). */
const char *format_size(uint64_t bytes, char *buf, size_t len);

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ __attribute__((cleanup(freep)))

#endif
