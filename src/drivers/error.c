/* error: fault injection, an image layer over any other image, in the manner
 * of nbdkit's error filter. "error[,errno=E][,rate=R][,ops=OPS][,trigger=FILE]
 * [,delay-ms=N]:IMAGE" opens IMAGE (any image string, with its own options)
 * and passes every request through to it, except that a request of one of
 * OPS fails with errno E (without reaching IMAGE) with probability R, and
 * completes N ms late, while FILE exists (always, without a trigger).
 *
 * Nothing here blocks the loop: delays are one timer over a FIFO of
 * completions (every delay is the same, so the FIFO is in deadline order),
 * and the trigger file is watched with inotify on its directory, its state
 * cached; only open() looks at it directly. Requests go to the inner image
 * through a fixed table of slots, each with the io the inner driver needs;
 * requests beyond it wait their turn in a FIFO. */
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "lib/log.h"
#include "lib/worker.h"

/* Requests passed to the inner image at once; more wait. The NBD export
 * has 64 per connection in flight, so this is rarely the limit. */
#define ERRL_SLOTS 128
/* A delay is a fault to inject, not a way to park requests for good. */
#define ERRL_DELAY_MAX_MS 60000
/* inotify events read per wake-up (each at most sizeof + NAME_MAX + 1). */
#define ERRL_INOTIFY_BUF 4096

#define OP_BIT(op) (1u << (op))
#define ERRL_OPS_ALL                                                               \
	(OP_BIT(IMAGE_OP_READ) | OP_BIT(IMAGE_OP_WRITE) | OP_BIT(IMAGE_OP_FLUSH) | \
	 OP_BIT(IMAGE_OP_TRIM) | OP_BIT(IMAGE_OP_WRITE_ZEROES) | OP_BIT(IMAGE_OP_BLOCK_STATUS))

struct errl;

/* The state of a request while it is ours, in its io->priv. */
struct errl_req {
	struct image_io *next; /* in the slot queue or the delay queue */
	uint64_t due_ms;       /* when a delayed completion is due */
	int err;	       /* its result, while delayed */
};

struct errl_slot {
	struct image_io pio; /* the request to the inner image */
	struct image_io *io; /* the request it serves */
	struct errl *e;
	struct errl_slot *next_free;
};

struct errl_queue {
	struct image_io *head, *tail;
};

/* A stat() of the trigger on a worker, after inotify lost events. Its own
 * allocation: a close while it runs leaves it to free itself. */
struct errl_probe {
	struct worker_job job;
	struct errl *e; /* NULL once the image is closed */
	bool exists;
	char path[];
};

struct errl {
	struct image *inner;
	int err;	   /* positive errno to inject */
	double rate;	   /* 0..1 */
	unsigned ops;	   /* OP_BIT()s that fail or are delayed */
	unsigned delay_ms; /* 0: none */
	uint64_t rng;
	/* The trigger: a path, its directory's inotify watch and what is
	 * known of it (without a trigger, always on). */
	char *trigger;
	const char *trigger_name; /* the last component, in trigger */
	int ino_fd;
	struct event *ino_ev;
	bool on;
	struct errl_probe *probe;
	/* Delayed completions in deadline order, and their timer. */
	struct errl_queue delayed;
	struct event *timer;
	/* Slots, and the requests waiting for one. */
	struct errl_queue wait;
	struct errl_slot *free_slots;
	struct errl_slot slots[ERRL_SLOTS];
};

_Static_assert(sizeof(struct errl_req) <= sizeof(((struct image_io *)0)->priv),
	       "errl_req must fit in image_io.priv");

static struct errl_req *req_of(struct image_io *io)
{
	return (struct errl_req *)io->priv;
}

static void q_push(struct errl_queue *q, struct image_io *io)
{
	req_of(io)->next = NULL;
	if (q->tail)
		req_of(q->tail)->next = io;
	else
		q->head = io;
	q->tail = io;
}

static struct image_io *q_pop(struct errl_queue *q)
{
	struct image_io *io = q->head;

	if (io) {
		q->head = req_of(io)->next;
		if (!q->head)
			q->tail = NULL;
	}
	return io;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* xorshift64*: cheap and good enough to decide which requests fail. */
static double errl_random(struct errl *e)
{
	e->rng ^= e->rng >> 12;
	e->rng ^= e->rng << 25;
	e->rng ^= e->rng >> 27;
	return (double)((e->rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

/* ---- completions --------------------------------------------------------- */

static void errl_arm_timer(struct errl *e)
{
	uint64_t now = now_ms(), due = req_of(e->delayed.head)->due_ms;
	uint64_t wait = due > now ? due - now : 0;
	struct timeval tv = {.tv_sec = (time_t)(wait / 1000),
			     .tv_usec = (suseconds_t)(wait % 1000 * 1000)};

	event_add(e->timer, &tv);
}

/* Complete io with err, after the delay if it has one. The caller's last
 * use of e: the io's done callback may close the image. */
static void errl_complete(struct errl *e, struct image_io *io, int err, bool delay)
{
	if (!delay) {
		io->done(io, err);
		return;
	}
	req_of(io)->err = err;
	req_of(io)->due_ms = now_ms() + e->delay_ms;
	q_push(&e->delayed, io);
	if (e->delayed.head == io)
		errl_arm_timer(e);
}

static void errl_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct errl *e = arg;
	uint64_t now = now_ms();
	struct image_io *io;

	(void)fd;
	(void)what;
	while ((io = e->delayed.head) && req_of(io)->due_ms <= now) {
		q_pop(&e->delayed);
		/* Only the last request in flight can close the image, and
		 * then nothing is left to do. */
		if (!e->delayed.head) {
			io->done(io, req_of(io)->err);
			return;
		}
		io->done(io, req_of(io)->err);
	}
	if (e->delayed.head)
		errl_arm_timer(e);
}

/* ---- passing requests on ------------------------------------------------- */

static void errl_start(struct errl *e, struct errl_slot *s, struct image_io *io);

static void errl_inner_done(struct image_io *pio, int err)
{
	struct errl_slot *s = container_of(pio, struct errl_slot, pio);
	struct errl *e = s->e;
	struct image_io *io = s->io, *next;
	bool delay = e->delay_ms && e->on && (e->ops & OP_BIT(io->op));

	if (io->op == IMAGE_OP_BLOCK_STATUS)
		io->ext_count = pio->ext_count;
	/* The slot goes to the next waiter before io completes: io's done
	 * callback may close the image if io was the last in flight. */
	if ((next = q_pop(&e->wait)))
		errl_start(e, s, next);
	else {
		s->next_free = e->free_slots;
		e->free_slots = s;
	}
	errl_complete(e, io, err, delay);
}

static void errl_start(struct errl *e, struct errl_slot *s, struct image_io *io)
{
	struct image_io *pio = &s->pio;

	s->io = io;
	pio->op = io->op;
	pio->flags = io->flags;
	pio->off = io->off;
	pio->len = io->len;
	pio->buf = io->buf;
	pio->ext = io->ext;
	pio->ext_max = io->ext_max;
	pio->ext_count = 0;
	pio->done = errl_inner_done;
	image_submit(e->inner, pio);
}

static void errl_submit(struct image *img, struct image_io *io)
{
	struct errl *e = img->priv;
	struct errl_slot *s;
	bool hit = e->on && (e->ops & OP_BIT(io->op));

	if (hit && e->rate > 0 && (e->rate >= 1 || errl_random(e) < e->rate)) {
		errl_complete(e, io, -e->err, e->delay_ms);
		return;
	}
	s = e->free_slots;
	if (!s) {
		q_push(&e->wait, io);
		return;
	}
	e->free_slots = s->next_free;
	errl_start(e, s, io);
}

/* ---- the trigger ----------------------------------------------------------- */

static void errl_set_on(struct errl *e, bool on)
{
	if (on != e->on)
		log_notice("error: %s: trigger %s %s: faults %s", e->inner->spec, e->trigger,
			   on ? "appeared" : "gone", on ? "on" : "off");
	e->on = on;
}

static void errl_probe_run(struct worker_job *job)
{
	struct errl_probe *p = container_of(job, struct errl_probe, job);
	struct stat st;

	p->exists = lstat(p->path, &st) == 0;
}

static void errl_probe_done(struct worker_job *job)
{
	struct errl_probe *p = container_of(job, struct errl_probe, job);

	if (p->e) {
		p->e->probe = NULL;
		errl_set_on(p->e, p->exists);
	}
	free(p);
}

/* inotify dropped events: ask a worker what is there now. */
static void errl_probe(struct errl *e)
{
	struct errl_probe *p;

	if (e->probe)
		return;
	p = calloc(1, sizeof(*p) + strlen(e->trigger) + 1);
	if (!p) {
		log_warn("error: %s: cannot recheck trigger %s: out of memory", e->inner->spec,
			 e->trigger);
		return;
	}
	strcpy(p->path, e->trigger);
	p->e = e;
	p->job.run = errl_probe_run;
	p->job.done = errl_probe_done;
	e->probe = p;
	worker_submit(&p->job);
}

static void errl_on_inotify(evutil_socket_t fd, short what, void *arg)
{
	struct errl *e = arg;
	char buf[ERRL_INOTIFY_BUF] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	(void)what;
	/* One read per wake-up: the descriptor stays readable if more is
	 * queued, and the loop serves others in between. */
	n = read(fd, buf, sizeof(buf));
	if (n <= 0)
		return;
	for (char *p = buf; p < buf + n;) {
		const struct inotify_event *ev = (const struct inotify_event *)p;

		p += sizeof(*ev) + ev->len;
		if (ev->mask & IN_Q_OVERFLOW) {
			errl_probe(e);
		} else if (ev->mask & IN_IGNORED) {
			/* The directory went away, and the trigger with it. */
			log_warn("error: %s: the trigger's directory is gone; faults stay off",
				 e->inner->spec);
			errl_set_on(e, false);
			event_del(e->ino_ev);
		} else if (ev->len && strcmp(ev->name, e->trigger_name) == 0) {
			errl_set_on(e, ev->mask & (IN_CREATE | IN_MOVED_TO));
		}
	}
}

static int errl_watch(struct errl *e, struct errbuf *eb)
{
	char *slash = strrchr(e->trigger, '/');
	struct stat st;
	int ret;

	if (e->trigger[0] != '/' || !slash[1]) {
		err_set(eb, "error: trigger '%s': want an absolute path to a file", e->trigger);
		return -EINVAL;
	}
	e->trigger_name = slash + 1;
	e->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (e->ino_fd < 0) {
		ret = -errno;
		err_set(eb, "error: trigger: inotify: %s", strerror(errno));
		return ret;
	}
	/* The directory, not the file: the file comes and goes. */
	*slash = '\0';
	ret = inotify_add_watch(e->ino_fd, slash == e->trigger ? "/" : e->trigger,
				IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR);
	*slash = '/';
	if (ret < 0) {
		ret = -errno;
		err_set(eb, "error: trigger %s: cannot watch its directory: %s", e->trigger,
			strerror(errno));
		return ret;
	}
	/* Watched first, then looked at: no change falls in between (the
	 * events queue up in the inotify fd until start() reads them). */
	e->on = lstat(e->trigger, &st) == 0;
	return 0;
}

/* ---- options --------------------------------------------------------------- */

static const struct {
	const char *name;
	int err;
} errl_errnos[] = {
	{"EIO", EIO},
	{"ENOSPC", ENOSPC},
	{"EPERM", EPERM},
	{"ENOMEM", ENOMEM},
	{"ESHUTDOWN", ESHUTDOWN},
	{"EINVAL", EINVAL},
	{"EROFS", EROFS},
	{"EDQUOT", EDQUOT},
	{"EFBIG", EFBIG},
	{"EOVERFLOW", EOVERFLOW},
	{"ENOTSUP", ENOTSUP},
	{"EOPNOTSUPP", EOPNOTSUPP},
	{"ETIMEDOUT", ETIMEDOUT},
	{"EACCES", EACCES},
	{"EAGAIN", EAGAIN},
	{"EBUSY", EBUSY},
	{"ENODEV", ENODEV},
	{"ENXIO", ENXIO},
	{"ESTALE", ESTALE},
	{"EILSEQ", EILSEQ},
	{"EBADMSG", EBADMSG},
};

/* A decimal number in [min, max], all of s. */
static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static int errl_parse_errno(const char *s, int *out, struct errbuf *eb)
{
	unsigned long v;

	for (size_t i = 0; i < ARRAY_SIZE(errl_errnos); i++) {
		if (strcasecmp(s, errl_errnos[i].name) == 0) {
			*out = errl_errnos[i].err;
			return 0;
		}
	}
	if (parse_uint(s, 1, 4095, &v)) {
		*out = (int)v;
		return 0;
	}
	err_set(eb,
		"error: bad errno '%.32s': want a name such as EIO, ENOSPC, EPERM, ENOMEM, "
		"ESHUTDOWN, or a number 1-4095",
		s);
	return -EINVAL;
}

/* "0.5", "1", "0", "1e-3" or "50%". */
static int errl_parse_rate(const char *s, double *out, struct errbuf *eb)
{
	size_t len = strlen(s);
	bool pct = len && s[len - 1] == '%';
	char num[64], *end;
	double v;

	if (len - pct == 0 || len - pct >= sizeof(num))
		goto bad;
	memcpy(num, s, len - pct);
	num[len - pct] = '\0';
	if (!((num[0] >= '0' && num[0] <= '9') || num[0] == '.'))
		goto bad;
	errno = 0;
	v = strtod(num, &end);
	if (errno || *end || !isfinite(v))
		goto bad;
	if (pct)
		v /= 100;
	if (v < 0 || v > 1)
		goto bad;
	*out = v;
	return 0;
bad:
	err_set(eb, "error: bad rate '%.32s': want a fraction 0..1 (0.25) or a percentage (25%%)",
		s);
	return -EINVAL;
}

static int errl_parse_ops(const char *s, unsigned *out, struct errbuf *eb)
{
	static const struct {
		const char *name;
		unsigned bits;
	} names[] = {
		{"read", OP_BIT(IMAGE_OP_READ)},
		{"write", OP_BIT(IMAGE_OP_WRITE)},
		{"flush", OP_BIT(IMAGE_OP_FLUSH)},
		{"trim", OP_BIT(IMAGE_OP_TRIM)},
		{"zero", OP_BIT(IMAGE_OP_WRITE_ZEROES)},
		{"block-status", OP_BIT(IMAGE_OP_BLOCK_STATUS)},
		{"all", ERRL_OPS_ALL},
	};
	unsigned ops = 0;

	for (const char *p = s, *end;; p = end + 1) {
		size_t len, i;

		end = strchr(p, '+');
		len = end ? (size_t)(end - p) : strlen(p);
		for (i = 0; i < ARRAY_SIZE(names); i++)
			if (strlen(names[i].name) == len && !strncmp(names[i].name, p, len))
				break;
		if (i == ARRAY_SIZE(names)) {
			err_set(eb,
				"error: bad ops '%.64s' at '%.*s': want read, write, flush, "
				"trim, zero, block-status or all, joined by '+'",
				s, (int)MIN(len, 32), p);
			return -EINVAL;
		}
		ops |= names[i].bits;
		if (!end)
			break;
	}
	*out = ops;
	return 0;
}

static int errl_parse(struct errl *e, const struct image_opts *opts, struct errbuf *eb)
{
	const char *v;
	unsigned long ms;
	int ret = 0;

	e->err = EIO;
	e->rate = 1;
	e->ops = ERRL_OPS_ALL;
	if ((v = image_opt(opts, "errno")))
		ret = errl_parse_errno(v, &e->err, eb);
	if (!ret && (v = image_opt(opts, "rate")))
		ret = errl_parse_rate(v, &e->rate, eb);
	if (!ret && (v = image_opt(opts, "ops")))
		ret = errl_parse_ops(v, &e->ops, eb);
	if (!ret && (v = image_opt(opts, "delay-ms"))) {
		if (!parse_uint(v, 0, ERRL_DELAY_MAX_MS, &ms)) {
			err_set(eb, "error: bad delay-ms '%.32s': want 0 to %u", v,
				ERRL_DELAY_MAX_MS);
			return -EINVAL;
		}
		e->delay_ms = (unsigned)ms;
	}
	if (!ret && (v = image_opt(opts, "trigger")) && !(e->trigger = strdup(v)))
		return -ENOMEM;
	return ret;
}

/* ---- ops table ------------------------------------------------------------- */

static void errl_free(struct errl *e)
{
	if (e->probe)
		e->probe->e = NULL; /* it frees itself */
	if (e->ino_ev)
		event_free(e->ino_ev);
	if (e->ino_fd >= 0)
		close(e->ino_fd);
	if (e->timer)
		event_free(e->timer);
	if (e->inner)
		image_close(e->inner);
	free(e->trigger);
	free(e);
}

static int errl_open(struct image *img, const char *arg, struct errbuf *eb)
{
	struct event_base *base = image_loop();
	struct errl *e = calloc(1, sizeof(*e));
	int ret;

	if (!e)
		return -ENOMEM;
	e->ino_fd = -1;
	e->on = true;
	ret = errl_parse(e, img->opts, eb);
	if (ret < 0)
		goto fail;
	if ((e->delay_ms || e->trigger) && !base) {
		err_set(eb, "error: delay-ms and trigger need the daemon's loop");
		ret = -ENOTSUP;
		goto fail;
	}
	/* The inner image first: errors in it are the user's first concern,
	 * and the trigger message names it. */
	ret = image_open_parent(arg, img->read_only, img->parent_spec, &e->inner, eb);
	if (ret < 0)
		goto fail;
	if (e->trigger && (ret = errl_watch(e, eb)) < 0)
		goto fail;
	if (getrandom(&e->rng, sizeof(e->rng), GRND_NONBLOCK) != sizeof(e->rng) || !e->rng)
		e->rng = now_ms() ^ (uintptr_t)e ^ 0x9E3779B97F4A7C15ULL;
	for (int i = ERRL_SLOTS - 1; i >= 0; i--) {
		e->slots[i].e = e;
		e->slots[i].next_free = e->free_slots;
		e->free_slots = &e->slots[i];
	}
	img->priv = e;
	img->size = e->inner->size;
	img->align = e->inner->align;
	img->can_flush = e->inner->can_flush;
	img->can_trim = e->inner->can_trim;
	img->can_zero = e->inner->can_zero;
	img->can_extents = e->inner->can_extents;
	/* Spliced reads and writes would go round submit, and the faults. */
	img->can_splice = false;
	return 0;
fail:
	errl_free(e);
	return ret;
}

/* On the loop: the delay timer and the trigger's watch. */
static int errl_image_start(struct image *img, struct errbuf *eb)
{
	struct event_base *base = image_loop();
	struct errl *e = img->priv;

	if (e->delay_ms && !(e->timer = evtimer_new(base, errl_on_timer, e)))
		goto nomem;
	if (e->trigger) {
		e->ino_ev = event_new(base, e->ino_fd, EV_READ | EV_PERSIST, errl_on_inotify, e);
		if (!e->ino_ev || event_add(e->ino_ev, NULL) < 0)
			goto nomem;
	}
	return 0;
nomem:
	err_set(eb, "error: out of memory");
	return -ENOMEM;
}

static void errl_close(struct image *img)
{
	errl_free(img->priv);
	img->priv = NULL;
}

static struct image *errl_parent(struct image *img)
{
	return ((struct errl *)img->priv)->inner;
}

static const char *const errl_options[] = {"errno", "rate", "ops", "trigger", "delay-ms", NULL};

const struct driver driver_error = {
	.name = "error",
	.open = errl_open,
	.start = errl_image_start,
	.options = errl_options,
	.close = errl_close,
	.submit = errl_submit,
	.parent = errl_parent,
};
