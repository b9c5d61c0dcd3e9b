/* Minor numbers: small integers naming taps, like a block device's minor.
 * A minor is freed only when its tap is completely gone, and the smallest
 * free one is reused, so a list never shows an orphan and numbers stay dense. */
#ifndef TAPD_MINOR_H
#define TAPD_MINOR_H

#include <stdbool.h>
#include <stdint.h>

#define MINOR_MAX 4096

struct minors {
	uint64_t bits[MINOR_MAX / 64];
};

/* Smallest free minor, now marked used; -ENOSPC when all are taken. */
int minor_alloc(struct minors *m);
/* Mark a given minor used (restoring state): -EEXIST, -ERANGE. */
int minor_reserve(struct minors *m, int minor);
void minor_free(struct minors *m, int minor);
bool minor_used(const struct minors *m, int minor);

#endif
