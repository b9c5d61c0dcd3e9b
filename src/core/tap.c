/* Taps: their lifecycle. Creation (the image opened off the loop, the tap
 * listed once it runs), destruction, pause and unpause, and the orderly
 * close of every tap at daemon exit. The registry and the properties are
 * in registry.c, below; the request path is in tap-io.c, which this file
 * drives: it hears back only through tap_drained(), so the calls run one
 * way (see internal.h). */
#include "tap.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "drivers/image.h"
#include "lib/log.h"
#include "minor.h"
#include "internal.h"

static struct {
	/* Taps being created: their chains are opening; not listed. */
	TAILQ_HEAD(, tap) creating;
	unsigned open_timeout_s;
	/* Daemon shutdown in progress. */
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
	struct event *shutdown_ev;
	/* Answers an unpause that needed no open, from the loop. */
	struct event *answer_ev;
} taps = {
	.creating = TAILQ_HEAD_INITIALIZER(taps.creating),
	.open_timeout_s = 30,
};

/* ---- taps ---------------------------------------------------------- */

struct tap *tap_opening(void)
{
	return image_open_owner();
}

void tap_set_open_timeout(unsigned seconds)
{
	if (seconds)
		taps.open_timeout_s = seconds;
}

static void tap_image_opened(void *arg, struct image *img, int err, const struct errbuf *oeb);

/* Open spec as the tap's image chain, off the loop: tap_image_opened
 * follows. */
static int tap_open_image(struct tap *t, const char *spec, struct errbuf *eb)
{
	char parent_spec[TAP_NAME_MAX + 8];

	/* Image strings hold paths: beyond what a path can be, say so
	 * instead of echoing kilobytes of it in an open() error. */
	if (strlen(spec) > TAP_IMAGE_MAX) {
		err_set(eb, "image string too long (%zu bytes, at most %d)", strlen(spec),
			TAP_IMAGE_MAX);
		return -ENAMETOOLONG;
	}
	if (t->parent_name)
		snprintf(parent_spec, sizeof(parent_spec), "tap:%s", t->parent_name);
	/* A tap: image met on the way asks who is opening (stack.c refuses
	 * loops and too deep stacks): t, the owner. */
	return image_open_async(spec, t->read_only, t->parent_name ? parent_spec : NULL, t,
				taps.open_timeout_s, tap_image_opened, t, &t->opening, eb);
}

/* The chain is open: can the tap use it? Then remember what it can do, so
 * the tap can still answer while paused. */
static int tap_take_image(struct tap *t, struct image *img, const char *spec,
			  struct errbuf *eb)
{
	char *copy;

	/* Whatever the driver: a disk of no bytes serves nothing and would
	 * trip every client that divides by its size. */
	if (img->size == 0) {
		err_set(eb, "%s: the image is empty (0 bytes)", spec);
		return -EINVAL;
	}
	if (img->align > POOL_PAGE || (img->align & (img->align - 1))) {
		err_set(eb, "%s: unsupported I/O alignment %u", spec, img->align);
		return -EINVAL;
	}
	if (!t->creating && img->size != t->size) {
		err_set(eb, "%s is %llu bytes but tap %s is %llu: a tap keeps its size", spec,
			(unsigned long long)img->size, t->name, (unsigned long long)t->size);
		return -ERANGE;
	}
	copy = strdup(spec);
	if (!copy)
		return -ENOMEM;
	free(t->spec);
	t->spec = copy;
	t->img = img;
	t->below = tap_reads_through(t);
	t->align = img->align;
	t->can_flush = img->can_flush;
	t->can_trim = img->can_trim;
	t->can_zero = img->can_zero;
	return 0;
}

static void tap_open_answer(struct tap *t, struct tap *who, int err, const struct errbuf *eb)
{
	tap_open_done_fn *done = t->open_done;

	t->open_done = NULL;
	if (done)
		done(t->open_arg, who, err, eb);
}

static void tap_create_finish(struct tap *t, int err, const struct errbuf *eb);
static void tap_unpause_finish(struct tap *t, int err, const struct errbuf *eb);

static void tap_image_opened(void *arg, struct image *img, int err, const struct errbuf *oeb)
{
	struct tap *t = arg;
	struct errbuf eb = *oeb;

	t->opening = NULL;
	if (err == 0) {
		err = tap_take_image(t, img, img->spec, &eb);
		if (err < 0)
			image_close(img);
	}
	if (t->creating)
		tap_create_finish(t, err, &eb);
	else
		tap_unpause_finish(t, err, &eb);
}

/* A name is taken by a listed tap or one being created. */
static struct tap *tap_find_creating(const char *name)
{
	struct tap *t;

	TAILQ_FOREACH(t, &taps.creating, link)
		if (strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

/* A tap that never ran: unlisted, nothing refers to it. */
static void tap_free_unborn(struct tap *t)
{
	TAILQ_REMOVE(&taps.creating, t, link);
	if (t->pool)
		pool_unref(t->pool);
	tap_io_free(t);
	tap_minor_give(t->minor);
	free(t->spec);
	free(t->parent_name);
	free(t);
}

int tap_create(const struct tap_config *cfg, tap_open_done_fn *done, void *arg,
	       struct errbuf *eb)
{
	const char *pool_nm = cfg->pool && *cfg->pool ? cfg->pool : POOL_DEFAULT;
	struct tap *t;
	struct pool *pool;
	int minor, ret;

	if (taps.shutdown_done) {
		err_set(eb, "tapd is shutting down");
		return -ESHUTDOWN;
	}
	if (cfg->name && (ret = tap_name_check(cfg->name, eb)) < 0)
		return ret;
	if (cfg->name && (tap_find(cfg->name) || tap_find_creating(cfg->name))) {
		err_set(eb, "a tap named '%s' exists already", cfg->name);
		return -EEXIST;
	}
	pool = pool_find(pool_nm);
	if (!pool) {
		err_set(eb, "no pool named '%s'", pool_nm);
		return -ENODEV;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	minor = tap_minor_take();
	if (minor < 0) {
		err_set(eb, "all %d minors are in use", MINOR_MAX);
		free(t);
		return minor;
	}
	t->minor = minor;
	t->creating = true;
	TAILQ_INSERT_TAIL(&taps.creating, t, link);
	if (cfg->name)
		snprintf(t->name, sizeof(t->name), "%s", cfg->name);
	else
		snprintf(t->name, sizeof(t->name), "tap%d", minor);
	if (!cfg->name && (tap_find(t->name) || tap_find_creating(t->name) != t)) {
		err_set(eb, "the default name '%s' is taken by another tap; give a name", t->name);
		ret = -EEXIST;
		goto fail;
	}
	t->read_only = cfg->read_only;
	if (cfg->parent && *cfg->parent) {
		ret = tap_check_stack(tap_find(cfg->parent), cfg->parent, pool, eb);
		if (ret < 0)
			goto fail;
		t->parent_name = strdup(cfg->parent);
		if (!t->parent_name) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	t->state = TAP_OPENING;
	ret = tap_io_init(t);
	if (ret < 0)
		goto fail;
	/* Set before the open, which checks it against a tap: image's tap;
	 * referenced only once the tap exists. */
	t->pool = pool;
	pool_ref(pool);
	t->qos_iops_cfg = cfg->qos_iops;
	t->qos_bps_cfg = cfg->qos_bps;
	ret = tap_open_image(t, cfg->image, eb);
	if (ret < 0)
		goto fail;
	t->open_done = done;
	t->open_arg = arg;
	return 0;
fail:
	tap_free_unborn(t);
	return ret;
}

static void tap_create_finish(struct tap *t, int err, const struct errbuf *eb)
{
	tap_open_done_fn *done = t->open_done;
	void *arg = t->open_arg;

	if (err < 0) {
		log_info("%s: not created: %s", t->name, eb->msg[0] ? eb->msg : strerror(-err));
		tap_free_unborn(t);
		if (done)
			done(arg, NULL, err, eb);
		return;
	}
	TAILQ_REMOVE(&taps.creating, t, link);
	t->creating = false;
	t->size = t->img->size;
	t->parent = t->parent_name ? tap_find(t->parent_name) : NULL;
	t->state = TAP_RUNNING;
	if (t->qos_iops_cfg || t->qos_bps_cfg)
		tap_set_qos(t, t->qos_iops_cfg, t->qos_bps_cfg);
	tap_list_add(t);
	log_info("%s: created (minor %d, %s, %llu bytes, pool %s%s)", t->name, t->minor, t->spec,
		 (unsigned long long)t->size, pool_name(t->pool), t->read_only ? ", read-only" : "");
	tap_notify(t, TAP_ADDED);
	tap_open_answer(t, t, 0, eb);
}

/* Unlink, close and free; the minor goes last, when nothing refers to it. */
static void tap_free(struct tap *t)
{
	tap_list_remove(t);
	tap_notify(t, TAP_REMOVED);
	tap_open_answer(t, t, 0, &(struct errbuf){{0}});
	image_close(t->img);
	image_close(t->kept);
	tap_io_free(t);
	free(t->spec);
	free(t->parent_name);
	pool_unref(t->pool);
	tap_minor_give(t->minor);
	free(t);
}

int tap_destroy(struct tap *t, struct errbuf *eb)
{
	if (t->st.connections) {
		err_set(eb, "tap %s has %u client%s connected", t->name, t->st.connections,
			t->st.connections == 1 ? "" : "s");
		return -EBUSY;
	}
	if (t->children) {
		err_set(eb, "tap %s serves the parent chain of %u tap%s", t->name, t->children,
			t->children == 1 ? "" : "s");
		return -EBUSY;
	}
	if (t->opening) {
		err_set(eb, "tap %s is being unpaused", t->name);
		return -EBUSY;
	}
	if ((t->state != TAP_RUNNING && t->state != TAP_PAUSED) || t->st.inflight || t->held ||
	    !TAILQ_EMPTY(&t->parked)) {
		err_set(eb, "tap %s is %s", t->name, tap_state_name(t->state));
		return -EBUSY;
	}
	log_info("%s: destroyed (minor %d)", t->name, t->minor);
	tap_free(t);
	return 0;
}

/* ---- pause --------------------------------------------------------------
 * Pausing parks new submissions (tap-io.c) and waits, without a nested
 * loop, for the requests in flight; the deferred state check then closes
 * the chain and answers. Unpausing reopens and lets the parked requests go
 * in their order. */

static void tap_pause_end(struct tap *t, int err)
{
	void (*done)(void *, int) = t->pause_done;

	t->pause_done = NULL;
	if (done)
		done(t->pause_arg, err);
}

static void tap_paused(struct tap *t)
{
	struct image *img = t->img;

	/* Closing a ram: image would wipe it: keep it, idle, for the
	 * unpause. It has no parent, so no other tap is held by it. */
	if (img->drv->keep_on_pause && !img->drv->parent)
		t->kept = img;
	else
		image_close(img);
	t->img = NULL;
	t->below = NULL;
	t->state = TAP_PAUSED;
	log_info("%s: paused", t->name);
	tap_notify(t, TAP_CHANGED);
	tap_pause_end(t, 0);
}

int tap_pause(struct tap *t, void (*done)(void *arg, int err), void *arg, struct errbuf *eb)
{
	if (t->state == TAP_CLOSING || t->state == TAP_OPENING) {
		err_set(eb, "tap %s is %s", t->name, tap_state_name(t->state));
		return -ESHUTDOWN;
	}
	if (t->opening) {
		err_set(eb, "tap %s is being unpaused", t->name);
		return -EBUSY;
	}
	if (t->state != TAP_RUNNING) {
		err_set(eb, "tap %s is already %s", t->name, tap_state_name(t->state));
		return -EBUSY;
	}
	t->state = TAP_PAUSING;
	t->pause_done = done;
	t->pause_arg = arg;
	log_info("%s: pausing with %u request%s in flight", t->name, t->st.inflight,
		 t->st.inflight == 1 ? "" : "s");
	tap_notify(t, TAP_CHANGED);
	event_active(taps.shutdown_ev, 0, 0);
	return 0;
}

/* Run again on t->img, or the kept image. */
static void tap_run_again(struct tap *t)
{
	/* The tap serving our parent chain may have gone and come back. */
	t->parent = t->parent_name ? tap_find(t->parent_name) : NULL;
	t->state = TAP_RUNNING;
	log_info("%s: running again on %s", t->name, t->spec);
	tap_notify(t, TAP_CHANGED);
	tap_io_resume(t);
}

int tap_unpause(struct tap *t, const char *image, tap_open_done_fn *done, void *arg,
		struct errbuf *eb)
{
	int ret;

	if (t->state != TAP_PAUSED) {
		err_set(eb, "tap %s is %s, not paused", t->name, tap_state_name(t->state));
		return -EINVAL;
	}
	if (t->opening) {
		err_set(eb, "tap %s is being unpaused already", t->name);
		return -EBUSY;
	}
	if (t->kept && !(image && *image)) {
		t->img = t->kept;
		t->kept = NULL;
		tap_run_again(t);
		/* Answered from the loop all the same. */
		t->open_done = done;
		t->open_arg = arg;
		event_active(taps.answer_ev, 0, 0);
		return 0;
	}
	ret = tap_open_image(t, image && *image ? image : t->spec, eb);
	if (ret < 0)
		return ret;
	t->open_done = done;
	t->open_arg = arg;
	return 0;
}

static void tap_unpause_finish(struct tap *t, int err, const struct errbuf *eb)
{
	if (err < 0) {
		log_info("%s: still paused: %s", t->name, eb->msg[0] ? eb->msg : strerror(-err));
		tap_open_answer(t, t, err, eb);
		return;
	}
	image_close(t->kept);
	t->kept = NULL;
	tap_run_again(t);
	tap_open_answer(t, t, 0, eb);
}

/* ---- shutdown --------------------------------------------------------
 * Each step runs from its own deferred event, so a tap is only freed when no
 * callback above us on the stack can still refer to it. */

static void tap_flush_done(struct image_io *io, int err)
{
	struct tap *t = container_of(io, struct tap, flush_io);

	if (err)
		log_err("%s: final flush failed: %s", t->name, strerror(-err));
	log_info("%s: closed", t->name);
	tap_free(t);
	event_active(taps.shutdown_ev, 0, 0);
}

static void tap_shutdown_check(evutil_socket_t fd, short what, void *arg)
{
	struct tap *t, *next;

	(void)fd;
	(void)what;
	(void)arg;
	for (t = tap_first(); t; t = next) {
		next = tap_next(t);
		if (t->state == TAP_PAUSING && !t->st.inflight) {
			tap_paused(t);
			continue;
		}
		/* A tap serving others closes after them: they hold it. */
		if (t->state != TAP_CLOSING || t->st.inflight || t->held || t->flushing ||
		    t->children)
			continue;
		t->flushing = true;
		t->flush_io.op = IMAGE_OP_FLUSH;
		t->flush_io.done = tap_flush_done;
		if (t->img && t->img->can_flush && !t->read_only) {
			image_submit(t->img, &t->flush_io);
		} else {
			tap_flush_done(&t->flush_io, 0);
		}
	}
	if (tap_count() == 0 && taps.shutdown_done) {
		void (*done)(void *) = taps.shutdown_done;

		taps.shutdown_done = NULL;
		done(taps.shutdown_arg);
	}
}

void tap_stop_begin(void)
{
	struct tap *t;

	tap_io_stop();
	for (t = tap_first(); t; t = tap_next(t))
		tap_io_release(t);
}

/* Nobody waits for t's open any more: its caller is told the daemon
 * stops, and the chain is closed whenever it opens. */
static void tap_open_abandon(struct tap *t)
{
	struct errbuf eb = {{0}};

	if (!t->opening)
		return;
	image_open_abandon(t->opening);
	t->opening = NULL;
	err_set(&eb, "tapd is stopping: the image of tap %s was still opening", t->name);
	tap_open_answer(t, t->creating ? NULL : t, -ESHUTDOWN, &eb);
}

void tap_shutdown_all(void (*done)(void *arg), void *arg)
{
	struct tap *t;

	taps.shutdown_done = done;
	taps.shutdown_arg = arg;
	tap_io_stop();
	while ((t = TAILQ_FIRST(&taps.creating))) {
		tap_open_abandon(t);
		tap_free_unborn(t);
	}
	for (t = tap_first(); t; t = tap_next(t)) {
		tap_open_abandon(t);
		tap_pause_end(t, -ESHUTDOWN);
		t->state = TAP_CLOSING;
		tap_notify(t, TAP_CHANGED);
		tap_io_release(t);
	}
	event_active(taps.shutdown_ev, 0, 0);
}

/* A closing or pausing tap may have drained: look again from the loop. */
static void tap_drained(struct tap *t)
{
	(void)t;
	event_active(taps.shutdown_ev, 0, 0);
}

static void tap_answer_unpaused(evutil_socket_t fd, short what, void *arg)
{
	struct tap *t, *next;

	(void)fd;
	(void)what;
	(void)arg;
	for (t = tap_first(); t; t = next) {
		next = tap_next(t);
		if (t->open_done && !t->opening)
			tap_open_answer(t, t, 0, &(struct errbuf){{0}});
	}
}

int tap_registry_setup(struct event_base *base)
{
	taps.shutdown_ev = event_new(base, -1, 0, tap_shutdown_check, NULL);
	taps.answer_ev = event_new(base, -1, 0, tap_answer_unpaused, NULL);
	if (!taps.shutdown_ev || !taps.answer_ev)
		return -ENOMEM;
	return tap_io_setup(base, tap_drained);
}

void tap_registry_teardown(void)
{
	struct tap *t;

	while ((t = TAILQ_FIRST(&taps.creating))) {
		tap_open_abandon(t);
		tap_free_unborn(t);
	}
	for (t = tap_first(); t; t = tap_next(t))
		tap_open_abandon(t);
	/* Stacked taps first: each holds the tap that serves its parent. */
	while (tap_first()) {
		for (t = tap_first(); t && t->children; t = tap_next(t))
			;
		tap_free(t ? t : tap_first());
	}
	tap_io_teardown();
	if (taps.shutdown_ev)
		event_free(taps.shutdown_ev);
	taps.shutdown_ev = NULL;
	if (taps.answer_ev)
		event_free(taps.answer_ev);
	taps.answer_ev = NULL;
	/* A fresh start for whoever sets up again (unit tests do). */
	taps.shutdown_done = NULL;
}

