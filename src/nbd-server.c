/* The NBD export's outer shell: the unix-socket listener, accepting
 * clients, each connection's lifetime (create, run, kill, destroy) and the
 * graceful server shutdown. Options are in nbd-handshake.c, the request and
 * reply data path in nbd-conn.c. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "nbd-internal.h"
#include "nbd-server.h"

static struct {
	struct event_base *base;
	int lfd;
	struct event *ev_accept, *ev_retry;
	char *path;
	LIST_HEAD(, nbd_conn) conns;
	unsigned nconns, next_id;
	bool shutting;
	void (*done)(void *arg);
	void *done_arg;
} srv = {.lfd = -1};

/* ---- connection lifetime ---- */

static void server_done_cb(evutil_socket_t fd, short what, void *arg)
{
	void (*done)(void *) = srv.done;

	(void)fd;
	(void)what;
	(void)arg;
	srv.done = NULL;
	if (done)
		done(srv.done_arg);
}

static void maybe_server_done(void)
{
	struct timeval now = {0, 0};

	if (!srv.shutting || srv.nconns || !srv.done)
		return;
	/* From the loop, never from inside nbd_server_shutdown. */
	if (event_base_once(srv.base, -1, EV_TIMEOUT, server_done_cb, NULL, &now) < 0)
		server_done_cb(-1, 0, NULL);
}

void nbd_conn_kill(struct nbd_conn *c, const char *why)
{
	if (c->dead)
		return;
	if (why)
		log_info("nbd: client %u: closing: %s", c->id, why);
	c->dead = true;
	c->rs = RS_STOP;
	event_del(c->ev_read);
	event_del(c->ev_write);
	c->reading = c->writing = false;
	close(c->fd);
	c->fd = -1;
	c->cur = NULL;
	nbd_slots_drop(c);
}

static void conn_destroy(struct nbd_conn *c)
{
	if (c->tap)
		tap_detach(c->tap);
	event_free(c->ev_read);
	event_free(c->ev_write);
	free(c->hs);
	LIST_REMOVE(c, link);
	srv.nconns--;
	log_debug("nbd: client %u: gone", c->id);
	free(c);
	maybe_server_done();
}

/* Run the connection until nothing more can happen now. Every entry point
 * (socket events, tap callbacks) ends here; re-entry is folded into the
 * running loop so that the connection is never freed under a caller. */
void nbd_conn_run(struct nbd_conn *c)
{
	int rounds = 0;

	if (c->running) {
		c->rerun = true;
		return;
	}
	c->running = true;
	do {
		c->rerun = false;
		nbd_conn_flush(c);
		nbd_conn_pump(c);
		nbd_conn_flush(c);
	} while (c->rerun && !c->dead && ++rounds < 8);
	c->running = false;
	if (c->rerun && !c->dead)
		event_active(c->ev_read, EV_READ, 0); /* finish on the next turn */

	/* Closing: nothing in flight (busy also covers a write payload being
	 * read) and every reply written. */
	if (!c->dead && c->closing && !c->busy && c->hs_off == c->hs_len)
		nbd_conn_kill(c, NULL);
	if (c->dead && !c->busy)
		conn_destroy(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	nbd_conn_run(arg);
}

static void conn_new(int fd)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		log_warn("nbd: refusing a client: out of memory");
		close(fd);
		return;
	}
	c->id = ++srv.next_id;
	c->fd = fd;
	c->rs = RS_FLAGS;
	nbd_slots_init(c);
	c->ev_read = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_io, c);
	c->ev_write = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, on_io, c);
	if (!c->ev_read || !c->ev_write || nbd_hs_greet(c) < 0) {
		log_warn("nbd: refusing a client: out of memory");
		if (c->ev_read)
			event_free(c->ev_read);
		if (c->ev_write)
			event_free(c->ev_write);
		free(c->hs);
		free(c);
		close(fd);
		return;
	}
	LIST_INSERT_HEAD(&srv.conns, c, link);
	srv.nconns++;
	log_debug("nbd: client %u: connected", c->id);
	nbd_conn_run(c);
}

/* ---- listener ---- */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (srv.lfd >= 0)
		event_add(srv.ev_accept, NULL);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (int i = 0; i < 16; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd >= 0) {
			conn_new(cfd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Out of fds or memory: back off instead of spinning on a
		 * listener that stays readable. */
		log_warn("nbd: accept: %s; pausing the listener for a second", strerror(errno));
		event_del(srv.ev_accept);
		struct timeval tv = {1, 0};
		evtimer_add(srv.ev_retry, &tv);
		return;
	}
}

/* Replace a socket nobody listens on (left by a crash); refuse to touch
 * anything else. */
static int remove_stale(const char *path, struct errbuf *eb)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		err_set(eb, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	strcpy(sa.sun_path, path);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r == 0 || errno == EAGAIN || errno == EINPROGRESS) {
		close(fd);
		err_set(eb, "another server listens on %s", path);
		return -EADDRINUSE;
	}
	close(fd);
	if (unlink(path) < 0 && errno != ENOENT) {
		r = -errno;
		err_set(eb, "cannot remove stale socket %s: %s", path, strerror(errno));
		return r;
	}
	log_info("nbd: removed stale socket %s", path);
	return 0;
}

int nbd_server_start(struct event_base *base, const char *path, struct errbuf *eb)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	if (srv.lfd >= 0) {
		err_set(eb, "NBD server already started");
		return -EBUSY;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		err_set(eb, "NBD socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	r = remove_stale(path, eb);
	if (r < 0) {
		err_set(eb, "cannot use %s: %s", path, strerror(-r));
		return r;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		err_set(eb, "socket: %s", strerror(errno));
		return r;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0660) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		err_set(eb, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return r;
	}
	srv.path = strdup(path);
	srv.ev_accept = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, NULL);
	srv.ev_retry = evtimer_new(base, on_retry, NULL);
	if (!srv.path || !srv.ev_accept || !srv.ev_retry) {
		err_set(eb, "out of memory");
		nbd_server_free();
		close(fd);
		unlink(path);
		return -ENOMEM;
	}
	srv.base = base;
	srv.lfd = fd;
	srv.shutting = false;
	LIST_INIT(&srv.conns);
	event_add(srv.ev_accept, NULL);
	log_info("nbd: listening on %s", path);
	return 0;
}

const char *nbd_server_socket(void)
{
	return srv.path;
}

static void close_listener(void)
{
	if (srv.lfd < 0)
		return;
	event_del(srv.ev_accept);
	event_del(srv.ev_retry);
	close(srv.lfd);
	srv.lfd = -1;
	if (srv.path)
		unlink(srv.path);
}

void nbd_server_shutdown(void (*done)(void *arg), void *arg)
{
	struct nbd_conn *c, *next;

	srv.shutting = true;
	srv.done = done;
	srv.done_arg = arg;
	close_listener();
	log_info("nbd: shutting down, %u client(s) connected", srv.nconns);
	for (c = LIST_FIRST(&srv.conns); c; c = next) {
		next = LIST_NEXT(c, link);
		c->closing = true;
		nbd_conn_run(c);
	}
	maybe_server_done();
}

void nbd_server_free(void)
{
	struct nbd_conn *c, *next;

	close_listener();
	srv.done = NULL;
	for (c = LIST_FIRST(&srv.conns); c; c = next) {
		next = LIST_NEXT(c, link);
		nbd_conn_kill(c, NULL);
		/* A request still inside the tap keeps its connection. */
		if (!c->busy)
			conn_destroy(c);
	}
	if (srv.ev_accept)
		event_free(srv.ev_accept);
	if (srv.ev_retry)
		event_free(srv.ev_retry);
	srv.ev_accept = srv.ev_retry = NULL;
	free(srv.path);
	srv.path = NULL;
}
