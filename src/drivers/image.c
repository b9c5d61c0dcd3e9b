/* Image strings ("driver[,key=value...]:arg") and their options, the driver
 * table and shared parents. The table is filled by registration (builtin.c
 * for this folder's drivers, core for tap:) and names no driver itself: the
 * drivers sit above this file, since vhd and error open images through it. */
#include "image.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/worker.h"

/* Registered drivers, in the order they came. */
static const struct driver *drivers[16];
static size_t ndrivers;

/* Shared read-only images, a short list: parents are few. Opens run on
 * their own threads (image_open_async) while the loop closes images: the
 * lock covers the list and every image's refs. */
static struct image *shared;
static pthread_mutex_t images_lock = PTHREAD_MUTEX_INITIALIZER;

static struct event_base *loop;

/* How deep the image_open calls of this thread nest, for IMAGE_DEPTH_MAX.
 * Per thread: opens may one day run on workers. */
static _Thread_local unsigned open_depth;
struct image_opening;
/* The image_open_async this thread opens for (on its opening thread). */
static _Thread_local struct image_opening *cur_opening;
/* Who an on_loop driver's open is for (image_open_owner), on the loop
 * while that open runs: read there from the opening, whose owner a
 * timeout or a stop clears (on the loop too) before the owner goes. */
static _Thread_local void *open_owner;
static void *image_opening_owner(const struct image_opening *o);
/* Opens on their threads (image_open_async), stuck ones included. */
static unsigned opens_in_flight;

void image_set_loop(struct event_base *base)
{
	loop = base;
}

struct event_base *image_loop(void)
{
	return loop;
}

static const struct driver *image_driver(const char *name, size_t len)
{
	for (size_t i = 0; i < ndrivers; i++)
		if (strlen(drivers[i]->name) == len && strncmp(drivers[i]->name, name, len) == 0)
			return drivers[i];
	return NULL;
}

int image_register_driver(const struct driver *drv)
{
	const struct driver *known = image_driver(drv->name, strlen(drv->name));

	if (known)
		return known == drv ? 0 : -EEXIST;
	if (ndrivers == ARRAY_SIZE(drivers))
		return -ENOSPC;
	drivers[ndrivers++] = drv;
	return 0;
}

/* "raw, ram, ...": the registered drivers' names, for an error message. */
static void image_driver_names(char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ndrivers && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? ", " : "", drivers[i]->name);
}

/* ---- image strings ----------------------------------------------------- */

/* The first size - 4 bytes of s for a message: anything but [a-z0-9-] shows as '?',
 * so a hostile string cannot put control characters into logs. */
static const char *opt_show(const char *s, size_t len, char *buf, size_t size)
{
	size_t n = MIN(len, size - 4), i;

	for (i = 0; i < n; i++) {
		char c = s[i];

		buf[i] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ? c : '?';
	}
	strcpy(buf + i, len > n ? "..." : "");
	return buf;
}

static bool opt_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* One "key=value" of len bytes at p (not NUL-terminated) into opts, its
 * copy at *dst. */
static int opt_add(struct image_opts *opts, const char *p, size_t len, char **dst,
		   struct errbuf *eb)
{
	const char *eq = memchr(p, '=', len);
	size_t klen = eq ? (size_t)(eq - p) : len, vlen = eq ? len - klen - 1 : 0;
	char show[IMAGE_OPT_KEY_MAX + 4];

	if (!len) {
		err_set(eb,
			"bad image options: an empty option (two commas, or a comma before ':')");
		return -EINVAL;
	}
	if (!klen) {
		err_set(eb, "bad image option at '=': the key is missing (want KEY=VALUE)");
		return -EINVAL;
	}
	if (klen > IMAGE_OPT_KEY_MAX) {
		err_set(eb, "bad image option '%s': keys are at most %u characters",
			opt_show(p, klen, show, sizeof(show)), IMAGE_OPT_KEY_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < klen; i++) {
		if (!opt_key_char(p[i])) {
			err_set(eb,
				"bad image option '%s': keys are lower-case letters, digits and "
				"'-'",
				opt_show(p, klen, show, sizeof(show)));
			return -EINVAL;
		}
	}
	if (!eq || !vlen) {
		err_set(eb, "bad image option '%.*s': it wants a value (%.*s=VALUE)", (int)klen, p,
			(int)klen, p);
		return -EINVAL;
	}
	if (vlen > IMAGE_OPT_VALUE_MAX) {
		err_set(eb, "bad image option '%.*s': its value is longer than %u bytes", (int)klen,
			p, IMAGE_OPT_VALUE_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = (unsigned char)eq[1 + i];

		if (c < 0x20 || c == 0x7f) {
			err_set(eb, "bad image option '%.*s': its value has a control character",
				(int)klen, p);
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < opts->n; i++) {
		if (strlen(opts->opt[i].key) == klen && !memcmp(opts->opt[i].key, p, klen)) {
			err_set(eb, "bad image options: '%.*s' is given twice", (int)klen, p);
			return -EINVAL;
		}
	}
	if (opts->n == IMAGE_OPTS_MAX) {
		err_set(eb, "bad image options: more than %u (at '%.*s')", IMAGE_OPTS_MAX,
			(int)klen, p);
		return -EINVAL;
	}
	opts->opt[opts->n].key = memcpy(*dst, p, klen);
	(*dst)[klen] = '\0';
	*dst += klen + 1;
	opts->opt[opts->n].value = memcpy(*dst, eq + 1, vlen);
	(*dst)[vlen] = '\0';
	*dst += vlen + 1;
	opts->n++;
	return 0;
}

int image_spec_parse(const char *spec, struct image_spec *out, struct errbuf *eb)
{
	const char *colon, *comma, *p, *end;
	size_t len;
	char *dst;
	int ret;

	memset(out, 0, sizeof(*out));
	len = spec ? strnlen(spec, IMAGE_SPEC_MAX + 1) : 0;
	if (len > IMAGE_SPEC_MAX) {
		err_set(eb, "bad image string: longer than %u bytes", IMAGE_SPEC_MAX);
		return -EINVAL;
	}
	colon = spec ? strchr(spec, ':') : NULL;
	comma = colon ? memchr(spec, ',', (size_t)(colon - spec)) : NULL;
	if (!colon || colon == spec || comma == spec) {
		err_set(eb,
			"bad image string '%s': want DRIVER:ARG or DRIVER,KEY=VALUE...:ARG, "
			"e.g. raw:/path, ram:64M, null:1G",
			spec ? spec : "");
		return -EINVAL;
	}
	out->driver = spec;
	out->driver_len = (size_t)((comma ? comma : colon) - spec);
	out->arg = colon + 1;
	if (!comma)
		return 0;
	/* Every key and value fits, NUL-terminated, in the option text's
	 * own length plus one: '=' and ',' become the terminators. */
	out->opts.buf = dst = malloc((size_t)(colon - comma));
	if (!dst)
		return -ENOMEM;
	for (p = comma + 1;; p = end + 1) {
		end = memchr(p, ',', (size_t)(colon - p));
		if (!end)
			end = colon;
		ret = opt_add(&out->opts, p, (size_t)(end - p), &dst, eb);
		if (ret < 0)
			return ret;
		if (end == colon)
			return 0;
	}
}

void image_spec_free(struct image_spec *s)
{
	free(s->opts.buf);
	s->opts.buf = NULL;
	s->opts.n = 0;
}

const char *image_opt(const struct image_opts *opts, const char *key)
{
	for (unsigned i = 0; i < opts->n; i++)
		if (strcmp(opts->opt[i].key, key) == 0)
			return opts->opt[i].value;
	return NULL;
}

/* Every key of opts must be one drv takes. */
static int image_check_opts(const struct driver *drv, const struct image_opts *opts,
			    struct errbuf *eb)
{
	for (unsigned i = 0; i < opts->n; i++) {
		const char *key = opts->opt[i].key;
		char known[160];
		size_t k = 0, n = 0;

		while (drv->options && drv->options[k] && strcmp(drv->options[k], key))
			k++;
		if (drv->options && drv->options[k])
			continue;
		known[0] = '\0';
		for (k = 0; drv->options && drv->options[k] && n < sizeof(known); k++)
			n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", k ? ", " : "",
					      drv->options[k]);
		err_set(eb, "image driver %s takes no option '%s' (%s%s)", drv->name, key,
			known[0] ? "it takes: " : "it takes none", known);
		return -EINVAL;
	}
	return 0;
}

/* ---- opening ----------------------------------------------------------- */

static int image_start(struct image *img, struct errbuf *eb);

int image_open(const char *spec, bool read_only, struct image **out, struct errbuf *eb)
{
	return image_open_parent(spec, read_only, NULL, out, eb);
}

/* A driver whose open and close touch daemon state (tap:) has them run on
 * the loop, whichever thread opens the chain. */
struct loop_open {
	struct image *img;
	const char *arg;
	struct errbuf *eb;
	struct image_opening *opening;
	int ret;
};

static void image_loop_open(void *arg)
{
	struct loop_open *o = arg;
	void *saved = open_owner;

	open_owner = o->opening ? image_opening_owner(o->opening) : NULL;
	o->ret = o->img->drv->open(o->img, o->arg, o->eb);
	open_owner = saved;
}

static int image_drv_open(struct image *img, const char *arg, struct errbuf *eb)
{
	struct loop_open o = {.img = img, .arg = arg, .eb = eb, .opening = cur_opening};

	if (!img->drv->on_loop)
		return img->drv->open(img, arg, eb);
	worker_call_on_loop(image_loop_open, &o);
	return o.ret;
}

static void image_loop_close(void *arg)
{
	struct image *img = arg;

	img->drv->close(img);
}

static int image_open_spec(const char *spec, const struct image_spec *s, bool read_only,
			   const char *parent, struct image **out, struct errbuf *eb)
{
	const struct driver *drv;
	struct image *img;
	int ret;

	drv = image_driver(s->driver, s->driver_len);
	if (!drv) {
		char known[128];

		image_driver_names(known, sizeof(known));
		err_set(eb, "unknown image driver '%.*s' (known: %s)", (int)MIN(s->driver_len, 64),
			s->driver, known);
		return -EINVAL;
	}
	ret = image_check_opts(drv, &s->opts, eb);
	if (ret < 0)
		return ret;
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->drv = drv;
	img->refs = 1;
	img->read_only = read_only;
	img->parent_spec = parent;
	img->opts = &s->opts;
	img->spec = strdup(spec);
	if (!img->spec) {
		free(img);
		return -ENOMEM;
	}
	ret = image_drv_open(img, s->arg, eb);
	if (ret < 0) {
		free(img->spec);
		free(img);
		return ret;
	}
	img->parent_spec = NULL;
	img->opts = NULL;
	if (parent && !drv->parent) {
		err_set(eb, "%s has no parent chain for %s to serve", spec, parent);
		image_close(img);
		return -EINVAL;
	}
	*out = img;
	return 0;
}

int image_open_parent(const char *spec, bool read_only, const char *parent, struct image **out,
		      struct errbuf *eb)
{
	struct image_spec s;
	int ret;

	if (open_depth >= IMAGE_DEPTH_MAX) {
		err_set(eb, "image chain deeper than %u images", IMAGE_DEPTH_MAX);
		return -EINVAL;
	}
	ret = image_spec_parse(spec, &s, eb);
	if (ret == 0) {
		open_depth++;
		ret = image_open_spec(spec, &s, read_only, parent, out, eb);
		open_depth--;
	}
	image_spec_free(&s);
	/* A whole chain opened on the loop starts at once; one opened on
	 * another thread starts when image_open_async hands it back. */
	if (ret == 0 && open_depth == 0 && worker_on_loop() && (ret = image_start(*out, eb)) < 0) {
		image_close(*out);
		*out = NULL;
	}
	return ret;
}

void image_close(struct image *img)
{
	if (!img)
		return;
	pthread_mutex_lock(&images_lock);
	if (--img->refs) {
		pthread_mutex_unlock(&images_lock);
		return;
	}
	if (img->shared_key) {
		struct image **p = &shared;

		while (*p != img)
			p = &(*p)->shared_next;
		*p = img->shared_next;
		free(img->shared_key);
	}
	pthread_mutex_unlock(&images_lock);
	if (img->drv->on_loop)
		worker_call_on_loop(image_loop_close, img);
	else
		img->drv->close(img);
	free(img->spec);
	free(img);
}

/* With images_lock held: the shared image of key, with a new reference. */
static struct image *shared_find(const char *key)
{
	for (struct image *img = shared; img; img = img->shared_next) {
		if (strcmp(img->shared_key, key) == 0) {
			img->refs++;
			return img;
		}
	}
	return NULL;
}

int image_open_shared(const char *driver, const char *path, struct image **out,
		      struct errbuf *eb)
{
	char *real = realpath(path, NULL), *key, *spec;
	struct image *img, *other;
	int ret;

	if (!real) {
		ret = -errno;
		err_set(eb, "cannot open %s: %s", path, strerror(errno));
		return ret;
	}
	ret = asprintf(&key, "%s:%s", driver, real);
	free(real);
	if (ret < 0)
		return -ENOMEM;
	pthread_mutex_lock(&images_lock);
	img = shared_find(key);
	pthread_mutex_unlock(&images_lock);
	if (img) {
		free(key);
		*out = img;
		return 0;
	}
	/* Opened without the lock (it may block); another thread may open
	 * the same parent meanwhile: the first one in the list is kept. */
	spec = key; /* "driver:/canonical/path" is also the image string */
	ret = image_open(spec, true, &img, eb);
	if (ret < 0) {
		free(key);
		return ret;
	}
	pthread_mutex_lock(&images_lock);
	other = shared_find(key);
	if (!other) {
		img->shared_key = key;
		img->shared_next = shared;
		shared = img;
	}
	pthread_mutex_unlock(&images_lock);
	if (other) {
		free(key);
		image_close(img);
		img = other;
	}
	*out = img;
	return 0;
}

unsigned image_refs(const struct image *img)
{
	unsigned n;

	pthread_mutex_lock(&images_lock);
	n = img->refs;
	pthread_mutex_unlock(&images_lock);
	return n;
}

struct below_call {
	struct image *img, *below;
};

static void image_loop_below(void *arg)
{
	struct below_call *b = arg;

	b->below = b->img->drv->parent(b->img);
}

struct image *image_below(struct image *img)
{
	struct below_call b = {.img = img};

	if (!img->drv->parent)
		return NULL;
	if (!img->drv->on_loop)
		return img->drv->parent(img);
	worker_call_on_loop(image_loop_below, &b);
	return b.below;
}

void *image_open_owner(void)
{
	return open_owner;
}

/* ---- opening off the loop ----------------------------------------------- */

/* Start a chain opened on another thread: parents first, each image once
 * (a shared parent may have started for another chain already). */
static int image_start(struct image *img, struct errbuf *eb)
{
	struct image *below = img->drv->parent ? img->drv->parent(img) : NULL;
	int ret;

	if (img->started)
		return 0;
	if (below && (ret = image_start(below, eb)) < 0)
		return ret;
	if (img->drv->start && (ret = img->drv->start(img, eb)) < 0)
		return ret;
	img->started = true;
	return 0;
}

struct image_opening {
	struct worker_job job;
	char *spec, *parent;
	bool read_only;
	void *owner;
	struct image *img;
	int ret;
	struct errbuf eb;
	/* On the loop: the caller's, until answered or abandoned. */
	void (*done)(void *arg, struct image *img, int err, const struct errbuf *eb);
	void *arg;
	struct event *timer;
	unsigned timeout_s;
};

static void *image_opening_owner(const struct image_opening *o)
{
	return o->owner;
}

static void image_opening_run(struct worker_job *job)
{
	struct image_opening *o = container_of(job, struct image_opening, job);

	cur_opening = o;
	o->ret = image_open_parent(o->spec, o->read_only, o->parent, &o->img, &o->eb);
	cur_opening = NULL;
}

static void image_opening_free(struct image_opening *o)
{
	if (o->timer)
		event_free(o->timer);
	free(o->spec);
	free(o->parent);
	free(o);
}

static void image_opening_done(struct worker_job *job)
{
	struct image_opening *o = container_of(job, struct image_opening, job);

	opens_in_flight--;
	if (!o->done) {
		/* Abandoned (timed out, or the daemon stops): nobody wants it. */
		if (o->ret == 0) {
			log_info("%s: opened after %u s, too late; closing it", o->spec,
				 o->timeout_s);
			image_close(o->img);
		} else {
			log_info("%s: the open given up on failed too: %s", o->spec,
				 o->eb.msg[0] ? o->eb.msg : strerror(-o->ret));
		}
		image_opening_free(o);
		return;
	}
	if (o->ret == 0 && (o->ret = image_start(o->img, &o->eb)) < 0) {
		image_close(o->img);
		o->img = NULL;
	}
	o->done(o->arg, o->ret == 0 ? o->img : NULL, o->ret, &o->eb);
	image_opening_free(o);
}

static void image_opening_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct image_opening *o = arg;
	void (*done)(void *, struct image *, int, const struct errbuf *) = o->done;
	struct errbuf eb = {{0}};

	(void)fd;
	(void)what;
	o->done = NULL;
	o->owner = NULL; /* it may go now: a tap: open still to come finds none */
	err_set(&eb, "opening %s: no answer after %u s (the storage or server does not "
		     "respond)", o->spec, o->timeout_s);
	log_warn("%s", eb.msg);
	done(o->arg, NULL, -ETIMEDOUT, &eb);
}

int image_open_async(const char *spec, bool read_only, const char *parent, void *owner,
		     unsigned timeout_s,
		     void (*done)(void *arg, struct image *img, int err, const struct errbuf *eb),
		     void *arg, struct image_opening **out, struct errbuf *eb)
{
	struct image_opening *o;
	int ret = -ENOMEM;

	if (opens_in_flight >= IMAGE_OPENS_MAX) {
		err_set(eb, "%u image opens are in progress already (some may be stuck on "
			    "storage that does not answer); try again later",
			opens_in_flight);
		return -EAGAIN;
	}
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->spec = strdup(spec);
	o->parent = parent ? strdup(parent) : NULL;
	o->read_only = read_only;
	o->owner = owner;
	o->done = done;
	o->arg = arg;
	o->timeout_s = timeout_s;
	o->job.run = image_opening_run;
	o->job.done = image_opening_done;
	if (!o->spec || (parent && !o->parent))
		goto fail;
	if (timeout_s) {
		struct timeval tv = {.tv_sec = timeout_s};

		o->timer = evtimer_new(loop, image_opening_timeout, o);
		if (!o->timer || evtimer_add(o->timer, &tv) < 0)
			goto fail;
	}
	ret = worker_spawn(&o->job);
	if (ret < 0) {
		err_set(eb, "cannot start a thread to open %s: %s", spec, strerror(-ret));
		goto fail;
	}
	opens_in_flight++;
	if (out)
		*out = o;
	return 0;
fail:
	image_opening_free(o);
	return ret;
}

void image_open_abandon(struct image_opening *o)
{
	o->done = NULL;
	o->owner = NULL;
	if (o->timer)
		event_del(o->timer);
}
