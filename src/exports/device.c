/* The attach API (device.h): the kinds' table, one device per tap, the
 * control plane's pending calls answered from a deferred event, the stop
 * that detaches everything, and the helpers that name who holds a block
 * device. The kernel work is the kinds' (exports/fuse/loop.c, ...). */
#include "device.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "lib/log.h"

/* Attaches and detaches at work at once: each holds a thread. */
#define DEVICE_WORKING_MAX 64
/* /proc/PID/fd links looked at to name an opener: bounded work. */
#define DEVICE_OPENER_SCAN_MAX 65536

struct device {
	TAILQ_ENTRY(device) link;
	const struct device_kind *kind;
	struct tap *tap;
	enum device_state state;
	char path[DEVICE_PATH_MAX];
	dev_t devnum;
	void *priv;
	/* The kind has an attach or a detach running, not yet reported. */
	bool working;
	/* The control plane's call waiting for the kind. */
	device_done_fn done;
	void *arg;
};

/* A result on its way to the control plane (delivered from an event, so
 * never from inside a call the control plane or a kind made). */
struct device_result {
	TAILQ_ENTRY(device_result) link;
	device_done_fn done;
	void *arg;
	int err;
	char msg[256];
};

static struct {
	const struct device_kind *kinds[DEVICE_KINDS_MAX];
	unsigned nkinds;
	char names[DEVICE_KINDS_MAX * 16];
	TAILQ_HEAD(, device) devices;
	unsigned working;
	TAILQ_HEAD(, device_result) results;
	struct event *results_ev;
	void (*listener)(struct tap *t);
	/* Stopping: every device is detached with force. */
	bool stopping;
	void (*stop_done)(void *arg);
	void *stop_arg;
} D = {
	.devices = TAILQ_HEAD_INITIALIZER(D.devices),
	.results = TAILQ_HEAD_INITIALIZER(D.results),
};

static void device_stop_check(void);

/* The deferred event: results to the control plane, then the stop's
 * check, never from inside a kind's report (which may still use its
 * state after reporting). */
static void device_deliver(evutil_socket_t fd, short what, void *arg)
{
	TAILQ_HEAD(, device_result) q = TAILQ_HEAD_INITIALIZER(q);
	struct device_result *r;

	(void)fd;
	(void)what;
	(void)arg;
	TAILQ_CONCAT(&q, &D.results, link);
	while ((r = TAILQ_FIRST(&q))) {
		TAILQ_REMOVE(&q, r, link);
		r->done(r->arg, r->err, r->msg);
		free(r);
	}
	device_stop_check();
}

/* Queue done(arg, err, msg) for the deferred event. A result that cannot
 * be allocated is delivered without its message rather than lost. */
static void device_answer(device_done_fn done, void *arg, int err, const char *msg)
{
	struct device_result *r;

	if (!done)
		return;
	r = calloc(1, sizeof(*r));
	if (!r) {
		log_err("devices: out of memory for a reply: answering now");
		done(arg, err, "out of memory");
		return;
	}
	r->done = done;
	r->arg = arg;
	r->err = err;
	snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
	TAILQ_INSERT_TAIL(&D.results, r, link);
	event_active(D.results_ev, 0, 0);
}

/* Run the deferred event (the stop's check) even without a result. */
static void device_later(void)
{
	if (D.stop_done)
		event_active(D.results_ev, 0, 0);
}

static void device_notify(struct tap *t)
{
	if (D.listener)
		D.listener(t);
}

int device_setup(struct event_base *base)
{
	D.results_ev = event_new(base, -1, 0, device_deliver, NULL);
	return D.results_ev ? 0 : -ENOMEM;
}

static void device_free(struct device *dev)
{
	TAILQ_REMOVE(&D.devices, dev, link);
	tap_detach(dev->tap);
	free(dev);
}

void device_teardown(void)
{
	struct device *dev;
	struct device_result *r;

	while ((dev = TAILQ_FIRST(&D.devices)))
		device_free(dev);
	while ((r = TAILQ_FIRST(&D.results))) {
		TAILQ_REMOVE(&D.results, r, link);
		free(r);
	}
	if (D.results_ev)
		event_free(D.results_ev);
	D.results_ev = NULL;
	D.nkinds = 0;
	D.working = 0;
	D.stopping = false;
	D.stop_done = NULL;
	D.listener = NULL;
}

int device_kind_register(const struct device_kind *kind)
{
	size_t n = strlen(D.names);

	for (unsigned i = 0; i < D.nkinds; i++)
		if (strcmp(D.kinds[i]->name, kind->name) == 0)
			return -EEXIST;
	if (D.nkinds == DEVICE_KINDS_MAX)
		return -ENOSPC;
	D.kinds[D.nkinds++] = kind;
	snprintf(D.names + n, sizeof(D.names) - n, "%s%s", n ? ", " : "", kind->name);
	return 0;
}

const char *device_kind_names(void)
{
	return D.nkinds ? D.names : "none";
}

void device_set_listener(void (*fn)(struct tap *t))
{
	D.listener = fn;
}

struct device *device_of(const struct tap *t)
{
	struct device *dev;

	TAILQ_FOREACH(dev, &D.devices, link)
		if (dev->tap == t)
			return dev;
	return NULL;
}

bool device_listed(const struct device *dev)
{
	return dev->state != DEVICE_ATTACHING;
}

const char *device_kind_name(const struct device *dev)
{
	return dev->kind->name;
}

const char *device_path(const struct device *dev)
{
	return dev->path;
}

dev_t device_devnum(const struct device *dev)
{
	return dev->devnum;
}

enum device_state device_state(const struct device *dev)
{
	return dev->state;
}

struct tap *device_tap(const struct device *dev)
{
	return dev->tap;
}

void *device_priv(const struct device *dev)
{
	return dev->priv;
}

void device_set_priv(struct device *dev, void *priv)
{
	dev->priv = priv;
}

/* ---- the control plane's calls ---------------------------------------- */

static const struct device_kind *device_pick(const char *name, struct errbuf *eb)
{
	struct errbuf why = { { 0 } };

	if (!*name) {
		/* The first kind that works here, in registration order. */
		for (unsigned i = 0; i < D.nkinds; i++)
			if (D.kinds[i]->available(&why) == 0)
				return D.kinds[i];
		err_set(eb, "no kind of device is available%s%s", why.msg[0] ? ": " : "",
			why.msg);
		return NULL;
	}
	for (unsigned i = 0; i < D.nkinds; i++) {
		if (strcmp(D.kinds[i]->name, name) != 0)
			continue;
		if (D.kinds[i]->available(&why) < 0) {
			err_set(eb, "%s", why.msg[0] ? why.msg : "not available here");
			return NULL;
		}
		return D.kinds[i];
	}
	err_set(eb, "unknown device kind '%.32s' (this tapd has: %s)", name, device_kind_names());
	return NULL;
}

/* Whether the tap's device (if any) may take a new call. */
static int device_check_idle(const struct tap *t, const struct device *dev, struct errbuf *eb)
{
	if (dev->working || dev->done) {
		err_set(eb, "tap %s: %s is being %s", tap_name(t),
			dev->path[0] ? dev->path : "its device",
			dev->state == DEVICE_ATTACHING ? "attached" : "detached");
		return -EBUSY;
	}
	return 0;
}

static int device_stopped(struct errbuf *eb)
{
	err_set(eb, "tapd is stopping");
	return -ESHUTDOWN;
}

int device_attach(struct tap *t, const char *kind, device_done_fn done, void *arg,
		  struct errbuf *eb)
{
	const struct device_kind *k;
	struct device *dev = device_of(t);
	int ret;

	if (D.stopping)
		return device_stopped(eb);
	if (dev) {
		if ((ret = device_check_idle(t, dev, eb)) < 0)
			return ret;
		err_set(eb, "tap %s is attached already as %s (%s); detach it first", tap_name(t),
			dev->path, dev->kind->name);
		return -EEXIST;
	}
	k = device_pick(kind, eb);
	if (!k)
		return -EOPNOTSUPP;
	if (D.working >= DEVICE_WORKING_MAX) {
		err_set(eb, "%u attaches and detaches are under way; try again", D.working);
		return -EAGAIN;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	ret = tap_attach(t);
	if (ret < 0) {
		free(dev);
		if (tap_state(t) == TAP_CLOSING || tap_state(t) == TAP_OPENING)
			err_set(eb, "tap %s is %s", tap_name(t), tap_state_name(tap_state(t)));
		else
			err_set(eb, "tapd is stopping");
		return ret;
	}
	dev->kind = k;
	dev->tap = t;
	dev->state = DEVICE_ATTACHING;
	TAILQ_INSERT_TAIL(&D.devices, dev, link);
	ret = k->attach(dev, eb);
	if (ret < 0) {
		device_free(dev);
		return ret;
	}
	dev->working = true;
	D.working++;
	dev->done = done;
	dev->arg = arg;
	log_info("%s: attaching as a %s device", tap_name(t), k->name);
	return 0;
}

/* Start the kind's detach; with a pending call when done is set. */
static int device_start_detach(struct device *dev, bool force, struct errbuf *eb)
{
	int ret = dev->kind->detach(dev, force, eb);

	if (ret < 0)
		return ret;
	dev->working = true;
	D.working++;
	/* Still listed, as before: Devices does not change. */
	if (dev->state == DEVICE_ATTACHED)
		dev->state = DEVICE_DETACHING;
	log_info("%s: detaching %s%s", tap_name(dev->tap), dev->path, force ? " (forced)" : "");
	return 0;
}

int device_detach(struct tap *t, bool force, device_done_fn done, void *arg, struct errbuf *eb)
{
	struct device *dev = device_of(t);
	int ret;

	if (D.stopping)
		return device_stopped(eb);
	if (!dev) {
		err_set(eb, "tap %s is not attached as a device", tap_name(t));
		return -ENXIO;
	}
	if ((ret = device_check_idle(t, dev, eb)) < 0)
		return ret;
	if (dev->state == DEVICE_DETACHING) {
		err_set(eb, "tap %s: %s was detached with force and goes once its user closes it",
			tap_name(t), dev->path);
		return -EBUSY;
	}
	if (D.working >= DEVICE_WORKING_MAX) {
		err_set(eb, "%u attaches and detaches are under way; try again", D.working);
		return -EAGAIN;
	}
	ret = device_start_detach(dev, force, eb);
	if (ret < 0)
		return ret;
	dev->done = done;
	dev->arg = arg;
	return 0;
}

/* ---- stop ------------------------------------------------------------- */

static void device_stop_check(void)
{
	struct device *dev, *next;
	void (*done)(void *);

	if (!D.stop_done || D.working)
		return;
	/* Devices still held by their consumer: cut off, and the kernel
	 * frees them once let go. Nothing of ours refers to them now. */
	for (dev = TAILQ_FIRST(&D.devices); dev; dev = next) {
		next = TAILQ_NEXT(dev, link);
		log_warn("%s: %s is still held by its user, cut off: it goes when let go",
			 tap_name(dev->tap), dev->path);
		if (dev->kind->forget)
			dev->kind->forget(dev);
		device_free(dev);
	}
	done = D.stop_done;
	D.stop_done = NULL;
	done(D.stop_arg);
}

/* Detach dev with force for the stop, if nothing works on it. */
static void device_stop_one(struct device *dev)
{
	struct errbuf eb = { { 0 } };

	if (dev->working || dev->state != DEVICE_ATTACHED)
		return;
	if (device_start_detach(dev, true, &eb) < 0)
		log_err("%s: cannot detach %s: %s", tap_name(dev->tap), dev->path, eb.msg);
}

void device_shutdown_all(void (*done)(void *arg), void *arg)
{
	struct device *dev;

	D.stopping = true;
	D.stop_done = done;
	D.stop_arg = arg;
	TAILQ_FOREACH(dev, &D.devices, link)
		device_stop_one(dev);
	/* done from the loop, never from inside this call. */
	device_later();
}

/* ---- reports from the kinds ------------------------------------------- */

static void device_work_done(struct device *dev)
{
	if (dev->working) {
		dev->working = false;
		D.working--;
	}
}

void device_attached(struct device *dev, int err, const char *path, dev_t devnum,
		     const char *msg)
{
	struct tap *t = dev->tap;
	device_done_fn done = dev->done;
	void *arg = dev->arg;

	device_work_done(dev);
	dev->done = NULL;
	if (err < 0) {
		log_info("%s: attach as a %s device failed: %s", tap_name(t), dev->kind->name,
			 msg ? msg : strerror(-err));
		device_free(dev);
		device_answer(done, arg, err, msg && *msg ? msg : strerror(-err));
		device_later();
		return;
	}
	snprintf(dev->path, sizeof(dev->path), "%s", path);
	dev->devnum = devnum;
	dev->state = DEVICE_ATTACHED;
	log_info("%s: attached as %s (%s, %u:%u)", tap_name(t), dev->path, dev->kind->name,
		 major(devnum), minor(devnum));
	device_notify(t);
	device_answer(done, arg, 0, dev->path);
	if (D.stopping)
		device_stop_one(dev);
	device_later();
}

void device_detach_reply(struct device *dev, int err, const char *msg)
{
	device_done_fn done = dev->done;
	void *arg = dev->arg;

	device_work_done(dev);
	dev->done = NULL;
	if (err < 0) {
		log_info("%s: detach of %s refused: %s", tap_name(dev->tap), dev->path,
			 msg ? msg : strerror(-err));
		dev->state = DEVICE_ATTACHED;
	} else {
		log_info("%s: %s cut off; it goes once its user lets go", tap_name(dev->tap),
			 dev->path);
	}
	device_answer(done, arg, err, msg && *msg ? msg : err ? strerror(-err) : NULL);
	device_later();
}

void device_gone(struct device *dev)
{
	struct tap *t = dev->tap;
	device_done_fn done = dev->done;
	void *arg = dev->arg;

	log_info("%s: %s detached", tap_name(t), dev->path[0] ? dev->path : "device");
	device_work_done(dev);
	device_free(dev);
	device_notify(t);
	device_answer(done, arg, 0, NULL);
	device_later();
}

/* ---- who holds a block device (blocking threads) ------------------------ */

int device_read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int ret = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f))
		ret = -EIO;
	else
		buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
	return ret;
}

int device_holder(const char *devname, dev_t devnum, char *msg, size_t len)
{
	char path[PATH_MAX], line[4096];
	struct dirent *de;
	unsigned ma, mi;
	DIR *d;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/holders", devname);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(msg, len, "/dev/%s is held by %s (device-mapper, md or another "
			 "block device stacked on it)", devname, de->d_name);
		closedir(d);
		return -EBUSY;
	}
	if (d)
		closedir(d);
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		char mnt[2048];

		/* ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ... */
		if (sscanf(line, "%*u %*u %u:%u %*s %2047s", &ma, &mi, mnt) != 3 ||
		    ma != major(devnum) || mi != minor(devnum))
			continue;
		snprintf(msg, len, "/dev/%s is mounted on %s; unmount it first", devname, mnt);
		fclose(f);
		return -EBUSY;
	}
	if (f)
		fclose(f);
	return 0;
}

int device_opener(const char *target, char *msg, size_t len)
{
	char path[PATH_MAX], link[PATH_MAX], comm[64];
	unsigned scanned = 0;
	struct dirent *p, *fd;
	DIR *proc = opendir("/proc"), *fds;
	ssize_t n;
	int pid;

	while (proc && (p = readdir(proc)) && scanned < DEVICE_OPENER_SCAN_MAX) {
		if (p->d_name[0] < '1' || p->d_name[0] > '9' || atoi(p->d_name) == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%s/fd", p->d_name);
		fds = opendir(path);
		while (fds && (fd = readdir(fds)) && scanned++ < DEVICE_OPENER_SCAN_MAX) {
			if (fd->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%s/fd/%s", p->d_name, fd->d_name);
			n = readlink(path, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			if (strcmp(link, target) != 0)
				continue;
			pid = atoi(p->d_name);
			closedir(fds);
			closedir(proc);
			snprintf(path, sizeof(path), "/proc/%d/comm", pid);
			if (device_read_line(path, comm, sizeof(comm)) < 0)
				comm[0] = '\0';
			snprintf(msg, len, "%s is open by pid %d (%s)", target, pid, comm);
			return 0;
		}
		if (fds)
			closedir(fds);
	}
	if (proc)
		closedir(proc);
	return -ENOENT;
}
