/* The NBD server's listeners: the unix socket, TCP listeners
 * (--nbd-listen), and sockets passed by systemd socket activation. Each
 * accepted client goes to the callback the listener was opened with
 * (server.c's). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "internal.h"
#include "server.h"

#define NBD_LISTENERS_MAX 16

struct nbd_listener {
	int fd;
	bool tcp;
	bool unlink_path; /* we made the unix socket, so we remove it */
	char *name;	  /* socket path, or "HOST:PORT" */
	nbd_accept_fn *accepted;
	struct event *ev_accept, *ev_retry;
};

static struct {
	struct nbd_listener l[NBD_LISTENERS_MAX];
	unsigned n;
} lst;

/* ---- accepting ---- */

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_listener *l = arg;

	(void)fd;
	(void)what;
	if (l->fd >= 0)
		event_add(l->ev_accept, NULL);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_listener *l = arg;
	struct timeval tv = {1, 0};
	int one = 1;

	(void)what;
	for (int i = 0; i < 16; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd >= 0) {
			/* Replies are whole messages: send them now. */
			if (l->tcp)
				setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			l->accepted(cfd, l->tcp);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Out of fds or memory: back off instead of spinning on a
		 * listener that stays readable. */
		log_warn("nbd: accept on %s: %s; pausing the listener for a second", l->name,
			 strerror(errno));
		event_del(l->ev_accept);
		evtimer_add(l->ev_retry, &tv);
		return;
	}
}

/* Register a listening fd; takes ownership of fd and name (freed on
 * failure too). */
static int add_listener(struct event_base *base, nbd_accept_fn *accepted, int fd, bool tcp,
			bool unlink_path, char *name, struct errbuf *eb)
{
	struct nbd_listener *l;

	if (!name || lst.n == NBD_LISTENERS_MAX) {
		err_set(eb, name ? "too many NBD listeners (at most %d)" : "out of memory",
			NBD_LISTENERS_MAX);
		goto fail;
	}
	l = &lst.l[lst.n];
	l->ev_accept = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, l);
	l->ev_retry = evtimer_new(base, on_retry, l);
	if (!l->ev_accept || !l->ev_retry) {
		if (l->ev_accept)
			event_free(l->ev_accept);
		if (l->ev_retry)
			event_free(l->ev_retry);
		err_set(eb, "out of memory");
		goto fail;
	}
	l->fd = fd;
	l->tcp = tcp;
	l->unlink_path = unlink_path;
	l->name = name;
	l->accepted = accepted;
	lst.n++;
	event_add(l->ev_accept, NULL);
	log_info("nbd: listening on %s%s", tcp ? "tcp " : "", name);
	return 0;
fail:
	if (unlink_path && name)
		unlink(name);
	free(name);
	close(fd);
	return -ENOMEM;
}

/* ---- unix socket ---- */

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

int nbd_listen_unix(struct event_base *base, const char *path, nbd_accept_fn *accepted,
		    struct errbuf *eb)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, r;

	if (nbd_server_socket()) {
		err_set(eb, "NBD unix socket already open");
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
	return add_listener(base, accepted, fd, false, true, strdup(path), eb);
}

/* ---- TCP ---- */

/* "HOST:PORT" or "[V6]:PORT" into host and port buffers. */
static int split_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *h = s, *colon;
	size_t n;
	char *end;
	unsigned long p;

	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		n = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		n = (size_t)(colon - s);
		/* A bare IPv6 address is ambiguous: brackets required. */
		if (memchr(s, ':', n))
			return -EINVAL;
	}
	if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
		return -EINVAL;
	memcpy(host, h, n);
	host[n] = '\0';
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || p == 0 || p > 65535 || colon[1] == '-' || colon[1] == '+')
		return -EINVAL;
	snprintf(port, plen, "%lu", p);
	return 0;
}

/* The bound address as "HOST:PORT" / "[V6]:PORT". */
static char *sock_name(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV], buf[NI_MAXHOST + NI_MAXSERV + 4];

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		return strdup("?");
	snprintf(buf, sizeof(buf), ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
	return strdup(buf);
}

int nbd_listen_tcp(struct event_base *base, const char *hostport, nbd_accept_fn *accepted,
		   struct errbuf *eb)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	};
	struct addrinfo *res;
	char host[256], port[8];
	int fd, r, one = 1;

	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
		err_set(eb, "bad address '%s' (HOST:PORT or [IPV6]:PORT, port 1-65535)", hostport);
		return -EINVAL;
	}
	r = getaddrinfo(host, port, &hints, &res);
	if (r) {
		err_set(eb, "cannot resolve %s: %s", host, gai_strerror(r));
		return -EADDRNOTAVAIL;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    res->ai_protocol);
	if (fd < 0) {
		r = -errno;
		err_set(eb, "socket: %s", strerror(errno));
		freeaddrinfo(res);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* "[::]:N" means IPv6 only: say 0.0.0.0:N for IPv4 as well. */
	if (res->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		err_set(eb, "cannot listen on %s: %s", hostport, strerror(errno));
		close(fd);
		freeaddrinfo(res);
		return r;
	}
	freeaddrinfo(res);
	return add_listener(base, accepted, fd, true, false, sock_name(fd), eb);
}

/* ---- systemd socket activation ---- */

static char *unix_name(int fd)
{
	struct sockaddr_un sa;
	socklen_t sl = sizeof(sa);

	memset(&sa, 0, sizeof(sa));
	if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0 || sl <= sizeof(sa_family_t))
		return strdup("(unnamed socket)");
	if (sa.sun_path[0] == '\0') {
		char buf[sizeof(sa.sun_path) + 1];

		/* Abstract: show it the way ss(8) does. */
		snprintf(buf, sizeof(buf), "@%.*s", (int)(sl - sizeof(sa_family_t) - 1),
			 sa.sun_path + 1);
		return strdup(buf);
	}
	sa.sun_path[sizeof(sa.sun_path) - 1] = '\0';
	return strdup(sa.sun_path);
}

int nbd_listen_activate(struct event_base *base, nbd_accept_fn *accepted, struct errbuf *eb)
{
	int n = sd_listen_fds(1), adopted = 0;

	if (n < 0) {
		err_set(eb, "sd_listen_fds: %s", strerror(-n));
		return n;
	}
	for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
		bool is_unix = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0;
		bool is_inet = !is_unix && sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0;
		int r;

		if (!is_unix && !is_inet) {
			log_warn("nbd: ignoring fd %d from systemd: not a listening stream socket",
				 fd);
			close(fd);
			continue;
		}
		if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
			r = -errno;
			err_set(eb, "fd %d from systemd: %s", fd, strerror(errno));
			return r;
		}
		r = add_listener(base, accepted, fd, is_inet, false,
				 is_unix ? unix_name(fd) : sock_name(fd), eb);
		if (r < 0)
			return r;
		adopted++;
	}
	if (adopted)
		log_info("nbd: %d socket%s passed by systemd", adopted, adopted == 1 ? "" : "s");
	return adopted;
}

/* ---- queries and teardown ---- */

static const char *first_name(bool tcp)
{
	for (unsigned i = 0; i < lst.n; i++)
		if (lst.l[i].tcp == tcp)
			return lst.l[i].name;
	return NULL;
}

const char *nbd_server_socket(void)
{
	return first_name(false);
}

const char *nbd_server_tcp_address(void)
{
	return first_name(true);
}

void nbd_listen_close_all(void)
{
	for (unsigned i = 0; i < lst.n; i++) {
		struct nbd_listener *l = &lst.l[i];

		if (l->fd < 0)
			continue;
		event_del(l->ev_accept);
		event_del(l->ev_retry);
		close(l->fd);
		l->fd = -1;
		if (l->unlink_path)
			unlink(l->name);
	}
}

void nbd_listen_free(void)
{
	nbd_listen_close_all();
	for (unsigned i = 0; i < lst.n; i++) {
		event_free(lst.l[i].ev_accept);
		event_free(lst.l[i].ev_retry);
		free(lst.l[i].name);
	}
	lst.n = 0;
}
