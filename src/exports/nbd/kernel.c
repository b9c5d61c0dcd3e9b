/* The "nbd" device kind: a tap as /dev/nbdN, the kernel's own NBD client
 * configured over generic netlink (the "nbd" family: CONNECT, RECONFIGURE,
 * DISCONNECT; raw netlink sockets, no library). Each of the device's
 * connections is a socketpair: the kernel gets one end, this server
 * adopts the other in transmission (nbd_server_adopt: the kernel does no
 * handshake, it is told the size, block size and flags instead).
 *
 * Which device: /dev/nbdM, M the tap's minor, where it exists and is
 * free; else the kernel's first free one. The device carries a backend
 * identifier, "tapd:PID:TAP", PID that of the tapd that connected it.
 * When that tapd dies, the kernel holds the device's I/O for the dead
 * connection timeout (KNBD_DEAD_CONN_TIMEOUT); an Attach("nbd") of a tap of
 * the same name in a later tapd finds the device by its identifier, sees
 * its tapd gone and gives it new sockets (RECONFIGURE) instead of making
 * another one: the consumer carries on.
 *
 * The netlink calls, and the exclusive open a detach tries, may block
 * (the kernel waits for its receive threads; opening a device reads its
 * partition table through us): they run on threads of their own
 * (worker_spawn), and report back on the loop. */
#include "kernel.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>

#include "exports/device.h"
#include "lib/log.h"
#include "lib/worker.h"
#include "server.h"

/* Seconds the kernel holds a device's I/O once every connection died,
 * waiting for a RECONFIGURE (a restarted tapd), before failing it. */
#define KNBD_DEAD_CONN_TIMEOUT 120
/* Seconds a netlink call may take before its thread gives up. */
#define KNBD_NL_TIMEOUT 60
#define KNBD_MSG_MAX 4096

static struct {
	struct event_base *base;
	unsigned conns;
} kn = { .conns = KNBD_CONNS_DEFAULT };

struct knbd;

/* One connection: its server side's id, and the kernel's end until the
 * job gave it to the kernel. */
struct knbd_conn {
	struct knbd *k;
	unsigned id; /* 0: gone (or never made) */
	int kfd;     /* the kernel's end, -1 once closed */
};

struct knbd {
	struct device *dev;
	struct worker_job job;
	/* Set on the loop before a job starts; only read by it. */
	char tap[TAP_NAME_MAX + 1];
	int minor;
	uint64_t size, block_size, flags;
	unsigned n;
	bool force;
	struct knbd_conn conn[KNBD_CONNS_MAX];
	/* The job's results, read on the loop in its done. */
	int err;
	char msg[256];
	int index; /* N of /dev/nbdN, -1 none yet */
	char backend[TAP_NAME_MAX + 64]; /* a dead tapd's device's, to reconfigure it */
	dev_t devnum;
	bool reconfigured;
	bool unconfigured; /* the check found the kernel let it go */
	/* On the loop. */
	bool running;
	bool checking;	   /* the running job is a check */
	bool detach_queued; /* a detach waits for the check */
};

static void knbd_fail(struct knbd *k, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void knbd_fail(struct knbd *k, int err, const char *fmt, ...)
{
	va_list ap;

	k->err = err;
	va_start(ap, fmt);
	vsnprintf(k->msg, sizeof(k->msg), fmt, ap);
	va_end(ap);
}

/* ---- generic netlink (on the job's thread) ---------------------------- */

struct nl_msg {
	union {
		struct nlmsghdr hdr;
		unsigned char buf[KNBD_MSG_MAX];
	};
	bool overflow;
};

static void nl_init(struct nl_msg *m, uint16_t family, uint8_t cmd, uint8_t version)
{
	struct genlmsghdr *g;

	memset(m, 0, sizeof(*m));
	m->hdr.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	m->hdr.nlmsg_type = family;
	m->hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	g = NLMSG_DATA(&m->hdr);
	g->cmd = cmd;
	g->version = version;
}

/* GCC 12 with the sanitizers' instrumentation reports the stores below
 * as overflowing "a region of size 0" once nl_put is inlined into its
 * callers, whatever the bounds check before them says: a false positive
 * of -Wstringop-overflow (the check keeps every store inside buf). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
static struct nlattr *nl_put(struct nl_msg *m, uint16_t type, const void *data, size_t len)
{
	size_t at = NLMSG_ALIGN(m->hdr.nlmsg_len);
	struct nlattr *a;

	if (at + NLA_ALIGN(NLA_HDRLEN + len) > sizeof(m->buf)) {
		m->overflow = true;
		return NULL;
	}
	a = (struct nlattr *)(m->buf + at);
	a->nla_type = type;
	a->nla_len = (uint16_t)(NLA_HDRLEN + len);
	if (len)
		memcpy((unsigned char *)a + NLA_HDRLEN, data, len);
	m->hdr.nlmsg_len = (uint32_t)(at + NLA_ALIGN(a->nla_len));
	return a;
}

static void nl_u32(struct nl_msg *m, uint16_t type, uint32_t v)
{
	nl_put(m, type, &v, sizeof(v));
}

static void nl_u64(struct nl_msg *m, uint16_t type, uint64_t v)
{
	nl_put(m, type, &v, sizeof(v));
}

static struct nlattr *nl_nest(struct nl_msg *m, uint16_t type)
{
	return nl_put(m, type | NLA_F_NESTED, NULL, 0);
}

#pragma GCC diagnostic pop

static void nl_nest_end(struct nl_msg *m, struct nlattr *a)
{
	if (a)
		a->nla_len = (uint16_t)(m->buf + m->hdr.nlmsg_len - (unsigned char *)a);
}

static int nl_open(void)
{
	struct timeval tv = { KNBD_NL_TIMEOUT, 0 };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);

	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Find attribute type among the attributes at [p, p + len). */
static const struct nlattr *nl_find(const unsigned char *p, size_t len, uint16_t type)
{
	while (len >= NLA_HDRLEN) {
		const struct nlattr *a = (const struct nlattr *)p;
		size_t al = a->nla_len;

		if (al < NLA_HDRLEN || al > len)
			break;
		if ((a->nla_type & NLA_TYPE_MASK) == type)
			return a;
		al = NLA_ALIGN(al);
		if (al >= len)
			break;
		p += al;
		len -= al;
	}
	return NULL;
}

/* Send m and read the answer up to its ack: 0 or the kernel's -errno.
 * With want, the first attribute want of a reply is copied to out
 * (outlen bytes at most). */
static int nl_call(int fd, struct nl_msg *m, uint16_t want, void *out, size_t outlen)
{
	static const struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	unsigned char buf[KNBD_MSG_MAX];
	static uint32_t seq;
	uint32_t s = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);

	if (m->overflow)
		return -EMSGSIZE;
	m->hdr.nlmsg_seq = s;
	if (sendto(fd, m->buf, m->hdr.nlmsg_len, 0, (const struct sockaddr *)&kernel,
		   sizeof(kernel)) < 0)
		return -errno;
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		const struct nlmsghdr *h;
		size_t left;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		left = (size_t)r;
		for (h = (const struct nlmsghdr *)buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != s)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return -EPROTO;
				return e->error;
			}
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (want && h->nlmsg_len >= NLMSG_LENGTH(GENL_HDRLEN)) {
				const unsigned char *p =
					(const unsigned char *)NLMSG_DATA(h) + GENL_HDRLEN;
				const struct nlattr *a = nl_find(
					p, h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN), want);

				if (a && (size_t)(a->nla_len - NLA_HDRLEN) <= outlen)
					memcpy(out, (const unsigned char *)a + NLA_HDRLEN,
					       a->nla_len - NLA_HDRLEN);
			}
		}
	}
}

/* The "nbd" family's id, or a negative errno (-ENOENT: no nbd driver). */
static int nl_family(int fd)
{
	struct nl_msg m;
	uint16_t id = 0;
	int ret;

	nl_init(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
	nl_put(&m, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof(NBD_GENL_FAMILY_NAME));
	ret = nl_call(fd, &m, CTRL_ATTR_FAMILY_ID, &id, sizeof(id));
	if (ret < 0)
		return ret;
	return id ? id : -ENOENT;
}

/* ---- sysfs (on the job's thread) -------------------------------------- */

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

/* Whether pid is a running tapd. */
static bool tapd_alive(long pid)
{
	char path[64], comm[32];

	if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno == ESRCH))
		return false;
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	return device_read_line(path, comm, sizeof(comm)) == 0 && strcmp(comm, "tapd") == 0;
}

/* A device a dead tapd connected for this tap and the kernel still has
 * configured (its pid file exists): its index, -ENOENT none, -EBUSY one
 * that a live tapd serves (k->msg says which). */
static int find_left(struct knbd *k)
{
	char path[300], line[TAP_NAME_MAX + 64];
	struct dirent *e;
	int found = -ENOENT;
	DIR *d = opendir("/sys/block");

	if (!d)
		return -ENOENT;
	while ((e = readdir(d))) {
		const char *name;
		char *end;
		long pid;
		int idx;

		if (strncmp(e->d_name, "nbd", 3) != 0)
			continue;
		idx = (int)strtol(e->d_name + 3, &end, 10);
		if (*end || end == e->d_name + 3)
			continue;
		snprintf(path, sizeof(path), "/sys/block/%s/backend", e->d_name);
		if (device_read_line(path, line, sizeof(line)) < 0 ||
		    strncmp(line, "tapd:", 5) != 0)
			continue;
		pid = strtol(line + 5, &end, 10);
		if (*end != ':' || strcmp(end + 1, k->tap) != 0)
			continue;
		name = e->d_name;
		snprintf(path, sizeof(path), "/sys/block/%s/pid", name);
		if (!exists(path))
			continue; /* not configured any more */
		if (pid == getpid())
			continue; /* ours, cut off by a forced detach */
		if (tapd_alive(pid)) {
			knbd_fail(k, -EBUSY, "/dev/%s: tap %s is served by tapd pid %ld", name,
				  k->tap, pid);
			found = -EBUSY;
			break;
		}
		snprintf(k->backend, sizeof(k->backend), "%s", line);
		found = idx;
		break;
	}
	closedir(d);
	return found;
}

/* ---- attach and detach (on the job's thread) -------------------------- */

static void put_sockets(struct knbd *k, struct nl_msg *m)
{
	struct nlattr *socks = nl_nest(m, NBD_ATTR_SOCKETS);

	for (unsigned i = 0; i < k->n; i++) {
		struct nlattr *item = nl_nest(m, NBD_SOCK_ITEM);

		nl_u32(m, NBD_SOCK_FD, (uint32_t)k->conn[i].kfd);
		nl_nest_end(m, item);
	}
	nl_nest_end(m, socks);
}

static int do_connect(struct knbd *k, int fd, int family, int index)
{
	char backend[TAP_NAME_MAX + 32];
	struct nl_msg m;
	uint32_t got = (uint32_t)-1;
	int ret;

	snprintf(backend, sizeof(backend), "tapd:%ld:%s", (long)getpid(), k->tap);
	nl_init(&m, (uint16_t)family, NBD_CMD_CONNECT, NBD_GENL_VERSION);
	if (index >= 0)
		nl_u32(&m, NBD_ATTR_INDEX, (uint32_t)index);
	nl_u64(&m, NBD_ATTR_SIZE_BYTES, k->size);
	nl_u64(&m, NBD_ATTR_BLOCK_SIZE_BYTES, k->block_size);
	nl_u64(&m, NBD_ATTR_SERVER_FLAGS, k->flags);
	nl_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, KNBD_DEAD_CONN_TIMEOUT);
	nl_put(&m, NBD_ATTR_BACKEND_IDENTIFIER, backend, strlen(backend) + 1);
	put_sockets(k, &m);
	ret = nl_call(fd, &m, NBD_ATTR_INDEX, &got, sizeof(got));
	if (ret < 0)
		return ret;
	k->index = index >= 0 ? index : (int)got;
	return k->index >= 0 ? 0 : -EPROTO;
}

static int do_reconfigure(struct knbd *k, int fd, int family, int index)
{
	struct nl_msg m;

	nl_init(&m, (uint16_t)family, NBD_CMD_RECONFIGURE, NBD_GENL_VERSION);
	nl_u32(&m, NBD_ATTR_INDEX, (uint32_t)index);
	/* The kernel wants the device's own identifier back. */
	nl_put(&m, NBD_ATTR_BACKEND_IDENTIFIER, k->backend, strlen(k->backend) + 1);
	nl_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, KNBD_DEAD_CONN_TIMEOUT);
	put_sockets(k, &m);
	k->index = index;
	return nl_call(fd, &m, 0, NULL, 0);
}

static void close_kernel_ends(struct knbd *k)
{
	for (unsigned i = 0; i < k->n; i++)
		if (k->conn[i].kfd >= 0) {
			close(k->conn[i].kfd);
			k->conn[i].kfd = -1;
		}
}

static void knbd_attach_run(struct worker_job *job)
{
	struct knbd *k = container_of(job, struct knbd, job);
	char path[64], line[32];
	unsigned ma, mi;
	int fd, family, left, ret;

	fd = nl_open();
	if (fd < 0) {
		knbd_fail(k, fd, "nbd: netlink: %s", strerror(-fd));
		goto out;
	}
	family = nl_family(fd);
	if (family < 0) {
		knbd_fail(k, -EOPNOTSUPP, "nbd: the kernel has no nbd driver (%s; modprobe nbd)",
			  strerror(-family));
		goto out;
	}
	left = find_left(k);
	if (left == -EBUSY)
		goto out;
	if (left >= 0) {
		ret = do_reconfigure(k, fd, family, left);
		if (ret < 0) {
			knbd_fail(k, ret, "nbd: /dev/nbd%d, left by a dead tapd: RECONFIGURE: %s",
				  left, strerror(-ret));
			goto out;
		}
		k->reconfigured = true;
	} else {
		snprintf(path, sizeof(path), "/sys/block/nbd%d", k->minor);
		ret = -EBUSY;
		if (exists(path))
			ret = do_connect(k, fd, family, k->minor);
		if (ret == -EBUSY)
			ret = do_connect(k, fd, family, -1);
		if (ret < 0) {
			knbd_fail(k, ret, "nbd: CONNECT: %s", strerror(-ret));
			goto out;
		}
	}
	snprintf(path, sizeof(path), "/sys/block/nbd%d/dev", k->index);
	if (device_read_line(path, line, sizeof(line)) == 0 && sscanf(line, "%u:%u", &ma, &mi) == 2)
		k->devnum = makedev(ma, mi);
out:
	if (fd >= 0)
		close(fd);
	/* The kernel holds its own references to the sockets it took. */
	close_kernel_ends(k);
}

static void knbd_detach_run(struct worker_job *job)
{
	struct knbd *k = container_of(job, struct knbd, job);
	char path[64], name[32];
	struct nl_msg m;
	int fd, family, ret;

	snprintf(path, sizeof(path), "/dev/nbd%d", k->index);
	snprintf(name, sizeof(name), "nbd%d", k->index);
	if (!k->force) {
		/* O_EXCL fails while it is mounted or held. */
		fd = open(path, O_RDONLY | O_CLOEXEC | O_EXCL);
		if (fd < 0 && errno == EBUSY) {
			k->err = -EBUSY;
			if (device_holder(name, k->devnum, k->msg, sizeof(k->msg)) == 0)
				snprintf(k->msg, sizeof(k->msg),
					 "%s is in use (opened exclusively by another program)",
					 path);
			return;
		}
		if (fd >= 0)
			close(fd);
		if (device_opener(path, k->msg, sizeof(k->msg)) == 0) {
			k->err = -EBUSY;
			strncat(k->msg, "; close it first", sizeof(k->msg) - strlen(k->msg) - 1);
			return;
		}
		k->msg[0] = '\0';
	}
	fd = nl_open();
	if (fd < 0) {
		knbd_fail(k, fd, "nbd: netlink: %s", strerror(-fd));
		return;
	}
	family = nl_family(fd);
	if (family < 0) {
		knbd_fail(k, family, "nbd: the kernel has no nbd driver any more: %s",
			  strerror(-family));
		close(fd);
		return;
	}
	nl_init(&m, (uint16_t)family, NBD_CMD_DISCONNECT, NBD_GENL_VERSION);
	nl_u32(&m, NBD_ATTR_INDEX, (uint32_t)k->index);
	ret = nl_call(fd, &m, 0, NULL, 0);
	close(fd);
	/* -EINVAL: not configured any more (someone disconnected it). */
	if (ret < 0 && ret != -EINVAL)
		knbd_fail(k, ret, "nbd: %s: DISCONNECT: %s", path, strerror(-ret));
}

/* Every connection closed: was the device disconnected (nbd-client -d),
 * or does the kernel wait for new ones (a tapd stopping)? Its pid file
 * goes once the kernel has let it go: a moment after the sockets. */
static void knbd_check_run(struct worker_job *job)
{
	struct knbd *k = container_of(job, struct knbd, job);
	char path[64];

	snprintf(path, sizeof(path), "/sys/block/nbd%d/pid", k->index);
	for (int i = 0; i < 20; i++) {
		if (!exists(path)) {
			k->unconfigured = true;
			return;
		}
		usleep(100 * 1000);
	}
}

/* ---- on the loop ------------------------------------------------------- */

static int knbd_spawn(struct knbd *k, struct errbuf *eb);
static void knbd_detach_done(struct worker_job *job);
static void knbd_check_done(struct worker_job *job);

/* Whether an adopted connection is not gone yet. */
static bool knbd_live(const struct knbd *k)
{
	for (unsigned i = 0; i < k->n; i++)
		if (k->conn[i].id)
			return true;
	return false;
}

static void conn_gone(void *arg)
{
	struct knbd_conn *kc = arg;
	struct knbd *k = kc->k;
	struct errbuf eb = { { 0 } };

	kc->id = 0;
	if (knbd_live(k) || device_state(k->dev) != DEVICE_ATTACHED || k->running ||
	    nbd_server_stopping())
		return;
	k->unconfigured = false;
	k->job.run = knbd_check_run;
	k->job.done = knbd_check_done;
	if (knbd_spawn(k, &eb) == 0)
		k->checking = true;
}

/* Close what is left of the server side, then free k. */
static void knbd_free(struct knbd *k)
{
	for (unsigned i = 0; i < k->n; i++) {
		if (k->conn[i].id)
			nbd_server_adopt_close(k->conn[i].id);
		if (k->conn[i].kfd >= 0)
			close(k->conn[i].kfd);
	}
	free(k);
}

static void knbd_attach_done(struct worker_job *job)
{
	struct knbd *k = container_of(job, struct knbd, job);
	struct device *dev = k->dev;
	char path[64];

	k->running = false;
	if (k->err) {
		device_set_priv(dev, NULL);
		device_attached(dev, k->err, NULL, 0, k->msg);
		knbd_free(k);
		return;
	}
	snprintf(path, sizeof(path), "/dev/nbd%d", k->index);
	log_info("nbd: tap %s is %s (%s, %u connection%s)", k->tap, path,
		 k->reconfigured ? "reconfigured: left by a dead tapd" : "connected", k->n,
		 k->n == 1 ? "" : "s");
	device_attached(dev, 0, path, k->devnum, NULL);
}

static void knbd_detach_done(struct worker_job *job)
{
	struct knbd *k = container_of(job, struct knbd, job);
	struct device *dev = k->dev;

	k->running = false;
	if (k->err) {
		device_detach_reply(dev, k->err, k->msg);
		return;
	}
	device_set_priv(dev, NULL);
	knbd_free(k);
	device_gone(dev);
}

static void knbd_check_done(struct worker_job *job)
{
	struct knbd *k = container_of(job, struct knbd, job);
	struct device *dev = k->dev;
	struct errbuf eb = { { 0 } };

	k->running = k->checking = false;
	if (k->detach_queued) {
		/* Detach runs now, and reports as usual. */
		k->detach_queued = false;
		k->job.run = knbd_detach_run;
		k->job.done = knbd_detach_done;
		if (knbd_spawn(k, &eb) < 0)
			device_detach_reply(dev, -EAGAIN, eb.msg);
		return;
	}
	if (!k->unconfigured) {
		log_warn("nbd: /dev/nbd%d (tap %s): every connection closed; the kernel holds "
			 "its I/O for %d s",
			 k->index, k->tap, KNBD_DEAD_CONN_TIMEOUT);
		return;
	}
	log_notice("nbd: /dev/nbd%d (tap %s) was disconnected by someone else", k->index,
		   k->tap);
	device_set_priv(dev, NULL);
	knbd_free(k);
	device_gone(dev);
}

static int knbd_available(struct errbuf *eb)
{
	if (access("/sys/module/nbd", F_OK) < 0) {
		err_set(eb, "nbd: the kernel has no nbd driver (/sys/module/nbd: %s; modprobe nbd)",
			strerror(errno));
		return -EOPNOTSUPP;
	}
	return 0;
}

static int knbd_spawn(struct knbd *k, struct errbuf *eb)
{
	int ret = worker_spawn(&k->job);

	if (ret < 0) {
		err_set(eb, "cannot start a thread: %s", strerror(-ret));
		return ret;
	}
	k->running = true;
	return 0;
}

/* A socketpair per connection; the server adopts our ends. */
static int knbd_pairs(struct knbd *k, struct tap *t, struct errbuf *eb)
{
	for (unsigned i = 0; i < k->n; i++) {
		int sv[2], id;

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
			int err = -errno;

			err_set(eb, "nbd: socketpair: %s", strerror(-err));
			return err;
		}
		if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
			err_set(eb, "nbd: socketpair: %s", strerror(errno));
			close(sv[0]);
			close(sv[1]);
			return -EIO;
		}
		k->conn[i].kfd = sv[1];
		id = nbd_server_adopt(kn.base, sv[0], t, conn_gone, &k->conn[i], eb);
		if (id < 0) {
			close(sv[0]);
			return id;
		}
		k->conn[i].id = (unsigned)id;
	}
	return 0;
}

static int knbd_attach(struct device *dev, struct errbuf *eb)
{
	struct tap *t = device_tap(dev);
	struct knbd *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return -ENOMEM;
	k->dev = dev;
	k->index = -1;
	k->n = kn.conns;
	for (unsigned i = 0; i < KNBD_CONNS_MAX; i++) {
		k->conn[i].k = k;
		k->conn[i].kfd = -1;
	}
	snprintf(k->tap, sizeof(k->tap), "%s", tap_name(t));
	k->minor = tap_minor(t);
	/* The image's block, so its consumer never makes it read-modify-
	 * write: at least a sector, at most a page (the kernel's limits). */
	k->block_size = MIN(MAX(tap_align(t), 512u), 4096u);
	k->size = tap_size(t) / k->block_size * k->block_size;
	k->flags = nbd_server_adopt_flags(t);
	k->job.run = knbd_attach_run;
	k->job.done = knbd_attach_done;
	ret = knbd_pairs(k, t, eb);
	if (ret == 0)
		ret = knbd_spawn(k, eb);
	if (ret < 0) {
		knbd_free(k);
		return ret;
	}
	device_set_priv(dev, k);
	return 0;
}

static int knbd_detach(struct device *dev, bool force, struct errbuf *eb)
{
	struct knbd *k = device_priv(dev);

	k->force = force;
	k->err = 0;
	k->msg[0] = '\0';
	if (k->checking) {
		k->detach_queued = true;
		return 0;
	}
	k->job.run = knbd_detach_run;
	k->job.done = knbd_detach_done;
	return knbd_spawn(k, eb);
}

static void knbd_forget(struct device *dev)
{
	struct knbd *k = device_priv(dev);

	device_set_priv(dev, NULL);
	if (k)
		knbd_free(k);
}

static const struct device_kind knbd_kind = {
	.name = "nbd",
	.available = knbd_available,
	.attach = knbd_attach,
	.detach = knbd_detach,
	.forget = knbd_forget,
};

int nbd_kernel_start(struct event_base *base, unsigned conns, struct errbuf *eb)
{
	int ret = device_kind_register(&knbd_kind);

	if (ret < 0) {
		err_set(eb, "cannot register the nbd device kind");
		return ret;
	}
	kn.base = base;
	kn.conns = conns;
	return 0;
}
