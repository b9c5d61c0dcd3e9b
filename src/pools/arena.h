/* A pool's arenas (arena.c): mappings of at most POOL_ARENA_MAX bytes
 * whose pages are handed out as runs. Private to src/pools/.
 *
 * Threading: arena_map and arena_unmap may run on a worker thread (they
 * touch nothing shared and do not log); the rest on the loop. */
#ifndef TAPD_ARENA_H
#define TAPD_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "pool.h"

struct arena {
	TAILQ_ENTRY(arena) link;
	char *base;
	size_t pages, free;
	bool locked, keep; /* keep: scratch for pool_fit() */
	uint64_t bits[];
};

static inline uint64_t arena_bytes(const struct arena *a)
{
	return (uint64_t)a->pages * POOL_PAGE;
}

/* Map bytes (a multiple of POOL_PAGE), populated, mlocked if lock and the
 * process may; NULL if the mapping fails. */
struct arena *arena_map(uint64_t bytes, bool lock);
/* Warn once if a was to be locked (want_lock) and could not be. */
void arena_note(const struct arena *a, bool want_lock);
void arena_unmap(struct arena *a);
/* Take a run of n free pages: its first page, or -1 if there is none. */
ssize_t arena_take(struct arena *a, size_t n);
/* Give back the run [start, start + n): 0, or -EINVAL if a page of it is
 * free already (a double free; nothing is changed). */
int arena_give(struct arena *a, size_t start, size_t n);

#endif
