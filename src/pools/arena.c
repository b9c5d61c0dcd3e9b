/* Arenas: one anonymous mapping of a pool's memory, populated and (where
 * asked) mlocked, with a bitmap of its pages; a buffer is a first-fit run
 * of pages inside one arena. The pool (buffers.c, grow.c) owns its list
 * of arenas and decides when to map and unmap them. */
#include "arena.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "lib/log.h"

static bool bit_test(const struct arena *a, size_t i)
{
	return (a->bits[i / 64] >> (i % 64)) & 1;
}

/* Callers know the run is all clear (alloc) or all set (put). */
static void bits_flip(struct arena *a, size_t start, size_t n)
{
	for (size_t i = start; i < start + n; i++)
		a->bits[i / 64] ^= 1ULL << (i % 64);
}

struct arena *arena_map(uint64_t bytes, bool lock)
{
	size_t pages = bytes / POOL_PAGE, words = (pages + 63) / 64;
	struct arena *a = calloc(1, sizeof(*a) + words * sizeof(uint64_t));

	if (!a)
		return NULL;
	a->base = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (a->base == MAP_FAILED) {
		free(a);
		return NULL;
	}
	a->pages = a->free = pages;
	/* Mark the tail of the last word used so run searches stop there. */
	if (pages % 64)
		a->bits[words - 1] = ~0ULL << (pages % 64);
	a->locked = lock && mlock(a->base, bytes) == 0;
	return a;
}

void arena_note(const struct arena *a, bool want_lock)
{
	static bool warned;

	if (!a->locked && want_lock && !warned) {
		/* Pool memory may then be swapped out, and I/O that waits for
		 * swap-in can deadlock under memory pressure; not fatal. */
		log_warn("pool: mlock of %" PRIu64 " bytes failed; buffers may be swapped",
			 arena_bytes(a));
		warned = true;
	}
}

void arena_unmap(struct arena *a)
{
	munmap(a->base, arena_bytes(a));
	free(a);
}

/* First page of a run of n free pages, or -1. Whole words that are full or
 * empty are stepped over at once: a 32 MiB arena is 128 words. */
static ssize_t arena_find(const struct arena *a, size_t n)
{
	size_t i = 0, run = 0, start = 0;

	while (i < a->pages) {
		uint64_t w = a->bits[i / 64];
		size_t step = i % 64 || (w && ~w) ? 1 : 64;

		if ((w >> (i % 64)) & 1) {
			run = 0;
		} else {
			start = run ? start : i;
			run += step;
			if (run >= n)
				return start;
		}
		i += step;
	}
	return -1;
}

ssize_t arena_take(struct arena *a, size_t n)
{
	ssize_t start = a->free >= n ? arena_find(a, n) : -1;

	if (start >= 0) {
		bits_flip(a, (size_t)start, n);
		a->free -= n;
	}
	return start;
}

int arena_give(struct arena *a, size_t start, size_t n)
{
	for (size_t i = start; i < start + n; i++)
		if (!bit_test(a, i))
			return -EINVAL;
	bits_flip(a, start, n);
	a->free += n;
	return 0;
}
