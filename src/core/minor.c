/* Minor allocator: a fixed bitmap of MINOR_MAX bits. The smallest free minor
 * is always handed out so numbers stay dense and a freed minor is reused
 * first; minor_reserve() lets a restarted daemon take back the same numbers. */
#include "minor.h"

#include <errno.h>

static bool minor_valid(int minor)
{
	return minor >= 0 && minor < MINOR_MAX;
}

int minor_alloc(struct minors *m)
{
	for (unsigned i = 0; i < MINOR_MAX / 64; i++) {
		if (m->bits[i] == ~0ULL)
			continue;
		int bit = __builtin_ctzll(~m->bits[i]);

		m->bits[i] |= 1ULL << bit;
		return (int)(i * 64 + bit);
	}
	return -ENOSPC;
}

int minor_reserve(struct minors *m, int minor)
{
	if (!minor_valid(minor))
		return -ERANGE;
	if (minor_used(m, minor))
		return -EEXIST;
	m->bits[minor / 64] |= 1ULL << (minor % 64);
	return 0;
}

void minor_free(struct minors *m, int minor)
{
	/* Out of range is a caller bug, but freeing must never corrupt memory. */
	if (minor_valid(minor))
		m->bits[minor / 64] &= ~(1ULL << (minor % 64));
}

bool minor_used(const struct minors *m, int minor)
{
	return minor_valid(minor) && (m->bits[minor / 64] >> (minor % 64)) & 1;
}
