/* Taps: the registry (the list, the minors, who listens) and what is read
 * or set on a running tap: its properties, its pool (and the pool graph of
 * stacks), its QoS limits, the references stacks and exports hold. The
 * lifecycle (creation, opening, pause, shutdown) is in tap.c, above this
 * file, which lists and unlists taps through tap_list_add/tap_list_remove
 * (see internal.h). */
#include "tap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/image.h"
#include "lib/log.h"
#include "minor.h"
#include "internal.h"

static struct {
	TAILQ_HEAD(, tap) taps;
	unsigned count;
	struct minors minors;
	void (*listener)(struct tap *t, enum tap_event ev);
} reg = {
	.taps = TAILQ_HEAD_INITIALIZER(reg.taps),
};

void tap_notify(struct tap *t, enum tap_event ev)
{
	if (reg.listener)
		reg.listener(t, ev);
}

void tap_set_listener(void (*fn)(struct tap *t, enum tap_event ev))
{
	reg.listener = fn;
}

/* ---- names ---------------------------------------------------------- */

int tap_name_check(const char *name, struct errbuf *eb)
{
	size_t n = strlen(name);
	bool digits = true;

	if (n == 0 || n >= TAP_NAME_MAX) {
		err_set(eb, "bad tap name: a tap name has 1 to %d characters", TAP_NAME_MAX - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.')) {
			err_set(eb, "bad tap name '%.*s': use letters, digits, '_', '-' and '.'",
				TAP_NAME_MAX, name);
			return -EINVAL;
		}
		digits &= c >= '0' && c <= '9';
	}
	/* Names end up as file names and command-line arguments: ".", ".."
	 * and "-x" would mean something else there. */
	if (name[0] == '-' || name[0] == '.') {
		err_set(eb, "bad tap name '%s': use letters, digits, '_', '-' and '.', but do "
			    "not start with '-' or '.'", name);
		return -EINVAL;
	}
	if (digits) {
		err_set(eb, "bad tap name '%s': a number would be taken for a minor", name);
		return -EINVAL;
	}
	return 0;
}

/* A leaf stacked on parent must draw from another pool: with one pool,
 * leaves can hold every buffer while their requests wait for the parent,
 * which then has none to serve them with (blktap's stacking deadlock). */
int tap_check_stack(struct tap *parent, const char *name, struct pool *pool,
			   struct errbuf *eb)
{
	if (!parent) {
		err_set(eb, "no tap named '%s' to serve as the parent", name);
		return -ENOENT;
	}
	if (parent->pool == pool) {
		err_set(eb, "a tap and the tap serving its parent chain (%s) must use different "
			    "pools, or the leaves can starve the parent of buffers; both would use '%s'",
			parent->name, pool_name(pool));
		return -EINVAL;
	}
	return 0;
}

int tap_minor_take(void)
{
	return minor_alloc(&reg.minors);
}

void tap_minor_give(int minor)
{
	minor_free(&reg.minors, minor);
}

void tap_list_add(struct tap *t)
{
	TAILQ_INSERT_TAIL(&reg.taps, t, link);
	reg.count++;
}

void tap_list_remove(struct tap *t)
{
	struct tap *c;

	TAILQ_REMOVE(&reg.taps, t, link);
	reg.count--;
	/* A paused tap stacked on t no longer holds it (its chain is
	 * closed): it must not point at it either. Its unpause looks the
	 * name up again. */
	TAILQ_FOREACH(c, &reg.taps, link)
		if (c->parent == t)
			c->parent = NULL;
}

/* ---- lookup and properties ------------------------------------------- */

struct tap *tap_find(const char *key)
{
	struct tap *t;
	char *end;
	long minor;

	if (!key || !*key)
		return NULL;
	TAILQ_FOREACH(t, &reg.taps, link)
		if (strcmp(t->name, key) == 0)
			return t;
	minor = strtol(key, &end, 10);
	if (*end || minor < 0 || minor >= MINOR_MAX)
		return NULL;
	return tap_by_minor((int)minor);
}

struct tap *tap_by_minor(int minor)
{
	struct tap *t;

	TAILQ_FOREACH(t, &reg.taps, link)
		if (t->minor == minor)
			return t;
	return NULL;
}

struct tap *tap_first(void)
{
	return TAILQ_FIRST(&reg.taps);
}

struct tap *tap_next(struct tap *t)
{
	return TAILQ_NEXT(t, link);
}

unsigned tap_count(void)
{
	return reg.count;
}

const char *tap_name(const struct tap *t)
{
	return t->name;
}

int tap_minor(const struct tap *t)
{
	return t->minor;
}

const char *tap_image(const struct tap *t)
{
	return t->spec;
}

uint64_t tap_size(const struct tap *t)
{
	return t->size;
}

bool tap_read_only(const struct tap *t)
{
	return t->read_only;
}

enum tap_state tap_state(const struct tap *t)
{
	return t->state;
}

const char *tap_state_name(enum tap_state s)
{
	switch (s) {
	case TAP_OPENING:
		return "opening";
	case TAP_RUNNING:
		return "running";
	case TAP_PAUSING:
		return "pausing";
	case TAP_PAUSED:
		return "paused";
	case TAP_CLOSING:
		return "closing";
	}
	return "unknown";
}

struct pool *tap_pool(const struct tap *t)
{
	return t->pool;
}

void tap_get_stats(const struct tap *t, struct tap_stats *st)
{
	struct image *img = t->img;

	*st = t->st;
	st->chain_depth = 0;
	st->parent_shares = 0;
	/* Any caller may ask: bounded even were a chain to loop. */
	for (; img && st->chain_depth < TAP_CHAIN_IMAGES_MAX;
	     img = img->drv->parent ? img->drv->parent(img) : NULL) {
		if (st->chain_depth++ == 1)
			st->parent_shares = image_refs(img);
	}
}

bool tap_can_flush(const struct tap *t)
{
	return t->can_flush;
}

bool tap_can_fua(const struct tap *t)
{
	return t->can_flush;
}

bool tap_can_trim(const struct tap *t)
{
	return t->can_trim;
}

bool tap_can_fast_zero(const struct tap *t)
{
	return t->img ? t->img->can_zero : t->can_zero;
}

uint32_t tap_align(const struct tap *t)
{
	return t->align;
}

struct tap *tap_reads_through(const struct tap *t)
{
	struct image *img = t->img;
	struct tap *c;

	for (unsigned n = 0; img && n < TAP_CHAIN_IMAGES_MAX; n++) {
		img = img->drv->parent ? img->drv->parent(img) : NULL;
		TAILQ_FOREACH(c, &reg.taps, link)
			if (img && c != t && c->img == img)
				return c;
	}
	return NULL;
}

bool tap_pool_reaches(const struct pool *from, const struct pool *to)
{
	const struct pool *seen[POOL_COUNT_MAX];
	unsigned n = 1, before;
	struct tap *t;

	seen[0] = from;
	/* Grow the set of pools reached until it stops growing: at most
	 * POOL_COUNT_MAX rounds over the taps. */
	do {
		before = n;
		TAILQ_FOREACH(t, &reg.taps, link) {
			const struct pool *p = t->below ? t->below->pool : NULL;
			bool have_from = false, have_p = false;

			if (!p)
				continue;
			for (unsigned i = 0; i < n; i++) {
				have_from |= seen[i] == t->pool;
				have_p |= seen[i] == p;
			}
			if (have_from && !have_p && n < POOL_COUNT_MAX)
				seen[n++] = p;
		}
	} while (n != before);
	for (unsigned i = 0; i < n; i++)
		if (seen[i] == to)
			return true;
	return false;
}

/* Would a tap stacked on t wait on pool (pool reaches its pool)? */
static bool tap_pool_reaches_above(const struct tap *t, const struct pool *pool)
{
	struct tap *c;

	TAILQ_FOREACH(c, &reg.taps, link)
		if (c->below == t && tap_pool_reaches(pool, c->pool))
			return true;
	return false;
}

int tap_set_pool(struct tap *t, const char *name, struct errbuf *eb)
{
	struct pool *pool = pool_find(name ? name : "");
	struct pool *old = t->pool;
	struct tap *c, *below;
	int ret;

	if (!pool) {
		err_set(eb, "no pool named '%s'", name ? name : "");
		return -ENODEV;
	}
	if (pool == old)
		return 0;
	if (t->parent && (ret = tap_check_stack(t->parent, t->parent->name, pool, eb)) < 0)
		return ret;
	/* The same for a tap: image, whose link is its open chain. */
	below = t->below;
	if (below && (ret = tap_check_stack(below, below->name, pool, eb)) < 0)
		return ret;
	TAILQ_FOREACH(c, &reg.taps, link) {
		if (c->pool == pool && (c->parent == t || (t->children && c->below == t))) {
			err_set(eb, "tap %s is stacked on %s and uses pool '%s': a tap and its parent "
				    "must use different pools", c->name, t->name, name);
			return -EINVAL;
		}
	}
	/* No pool below itself (stack.c): below t, nothing may lead back to
	 * the new pool; above t, nothing may be reached from it. */
	if ((t->below && tap_pool_reaches(t->below->pool, pool)) ||
	    (t->children && tap_pool_reaches_above(t, pool))) {
		err_set(eb, "moving tap %s to pool '%s' would make that pool wait on itself "
			    "through the stack; every level of a stack needs a pool of its own",
			t->name, name);
		return -EINVAL;
	}
	/* Requests holding buffers give them back to the pool they came
	 * from (tap_req.pool); only new ones see the new pool. */
	pool_ref(pool);
	t->pool = pool;
	pool_unref(old);
	log_info("%s: moved from pool %s to %s", t->name, pool_name(old), pool_name(pool));
	tap_notify(t, TAP_CHANGED);
	return 0;
}

/* ---- limits ---------------------------------------------------------- */

void tap_set_qos(struct tap *t, uint64_t iops, uint64_t bps)
{
	qos_bucket_set(&t->qos, iops, bps);
	log_info("%s: QoS %llu IOPS, %llu B/s (0: unlimited)", t->name, (unsigned long long)iops,
		 (unsigned long long)bps);
	/* Whatever waited is judged by the new limit. */
	tap_io_qos_changed(t);
}

void tap_get_qos(const struct tap *t, uint64_t *iops, uint64_t *bps)
{
	*iops = t->qos.iops;
	*bps = t->qos.bps;
}

void tap_set_pool_qos(struct pool *pool, uint64_t iops, uint64_t bps)
{
	struct tap *t;

	qos_bucket_set(pool_qos(pool), iops, bps);
	log_info("pool %s: QoS %llu IOPS, %llu B/s (0: unlimited)", pool_name(pool),
		 (unsigned long long)iops, (unsigned long long)bps);
	TAILQ_FOREACH(t, &reg.taps, link)
		if (t->pool == pool)
			tap_io_qos_changed(t);
}

void tap_get_pool_qos(struct pool *pool, uint64_t *iops, uint64_t *bps)
{
	const struct qos_bucket *b = pool_qos(pool);

	*iops = b->iops;
	*bps = b->bps;
}

struct tap *tap_parent(const struct tap *t)
{
	return t->parent;
}

int tap_stack_get(const char *name, struct tap **out, struct errbuf *eb)
{
	struct tap *t = tap_find(name);

	if (!t) {
		err_set(eb, "no tap named '%s' to serve as a parent", name);
		return -ENOENT;
	}
	if (t->state == TAP_CLOSING || tap_io_stopping()) {
		err_set(eb, "tap %s is closing", name);
		return -ESHUTDOWN;
	}
	t->children++;
	*out = t;
	return 0;
}

void tap_stack_put(struct tap *t)
{
	t->children--;
}

struct image *tap_chain(const struct tap *t)
{
	return t->img;
}

int tap_attach(struct tap *t)
{
	/* A paused tap takes clients: their requests wait for the unpause. */
	if (t->state == TAP_CLOSING || t->state == TAP_OPENING || tap_io_stopping())
		return -ESHUTDOWN;
	t->st.connections++;
	return 0;
}

void tap_detach(struct tap *t)
{
	t->st.connections--;
}
