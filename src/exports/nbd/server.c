/* The NBD export's owner of connections: each one's life (accept, run,
 * kill, destroy), the graceful server shutdown, and the public calls that
 * open listeners (listen.c hands their clients back here). Every entry
 * point (socket events, the deferred run tap callbacks ask for, a TLS
 * deadline) runs the connection here; the parts below report failures
 * (nbd_fail, a negative errno) and only this file closes or frees a
 * connection. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "internal.h"
#include "server.h"

static struct {
	struct event_base *base;
	unsigned next_id;
	bool shutting;
	void (*done)(void *arg);
	void *done_arg;
} srv;

/* Remember the loop (every listener that starts does this). */
static void server_init(struct event_base *base)
{
	srv.base = base;
	srv.shutting = false;
}

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

	if (!srv.shutting || nbd_clients_count() || !srv.done)
		return;
	/* From the loop, never from inside nbd_server_shutdown. */
	if (event_base_once(srv.base, -1, EV_TIMEOUT, server_done_cb, NULL, &now) < 0)
		server_done_cb(-1, 0, NULL);
}

/* Close the socket and drop every request not inside the tap; c itself
 * stays until conn_run sees it idle. why NULL means a quiet close. */
static void conn_kill(struct nbd_conn *c, const char *why)
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
	/* close_notify only when we chose to close (DISC, ABORT, shutdown). */
	nbd_tls_free(c->tls, c->closing);
	c->tls = NULL;
	c->tls_want_write = false;
	c->tls_up = false;
	close(c->fd);
	c->fd = -1;
	c->cur = NULL;
	nbd_slots_drop(c);
	nbd_splice_close(c);
}

static void conn_destroy(struct nbd_conn *c)
{
	if (c->tap)
		tap_detach(c->tap);
	event_free(c->ev_read);
	event_free(c->ev_write);
	event_free(c->ev_run);
	free(c->hs);
	nbd_clients_remove(c);
	log_debug("nbd: client %u: gone", c->id);
	free(c);
	maybe_server_done();
}

static void write_enable(struct nbd_conn *c, bool on)
{
	if (on == c->writing)
		return;
	if (on)
		event_add(c->ev_write, NULL);
	else
		event_del(c->ev_write);
	c->writing = on;
}

/* Write as much output as the socket takes; arm EV_WRITE for the rest.
 * 0, or a negative errno (c failed). */
static int conn_flush(struct nbd_conn *c)
{
	while (!c->failed) {
		bool hs = c->hs_off < c->hs_len;
		ssize_t w = nbd_out_write(c);
		int r;

		if (w == -EINTR)
			continue;
		if (w == -EAGAIN || w == -EWOULDBLOCK) {
			write_enable(c, true);
			return 0;
		}
		if (w < 0)
			return nbd_fail(c, (int)w, strerror((int)-w));
		if (!w) {
			/* Nothing to write; the TLS handshake may wait for
			 * room to write all the same. */
			write_enable(c, c->tls_want_write);
			return 0;
		}
		/* Replies that left the pipe made room for waiting READs. */
		if (!hs && !TAILQ_EMPTY(&c->splice_q) && (r = nbd_reads_resume(c)) < 0)
			return r;
	}
	return -EIO;
}

/* Flush, read, flush. 0, or a negative errno (c failed). The flag is
 * checked after each step too, as a safety net for a failure recorded on a
 * path that did not return it: core never calls our callbacks from inside
 * a call we make, so none should come from there. */
static int conn_step(struct nbd_conn *c)
{
	if (c->failed || conn_flush(c) < 0 || c->failed)
		return -EIO;
	if (nbd_conn_pump(c) < 0 || c->failed)
		return -EIO;
	if (conn_flush(c) < 0 || c->failed)
		return -EIO;
	return 0;
}

/* Run the connection until nothing more can happen now. Every entry point
 * (socket events, tap callbacks, the TLS deadline) ends here; re-entry is
 * folded into the running loop so that the connection is never freed
 * under a caller. A part that failed c left it to this: c is killed here,
 * and freed here once the tap holds nothing of it. */
static void conn_run(struct nbd_conn *c)
{
	int rounds = 0;

	if (c->running) {
		c->rerun = true;
		return;
	}
	c->running = true;
	/* tls.c woke us because the handshake took too long. */
	if (!c->dead && nbd_tls_expired(c->tls))
		nbd_fail(c, -ETIMEDOUT, "TLS handshake timed out");
	do {
		c->rerun = false;
		if (!c->dead && conn_step(c) < 0)
			break;
	} while (c->rerun && !c->dead && ++rounds < 8);
	c->running = false;
	if (c->failed)
		conn_kill(c, c->why[0] ? c->why : NULL);
	if (c->rerun && !c->dead)
		nbd_conn_defer(c); /* finish on the next turn */

	/* Closing: nothing in flight (busy also covers a write payload being
	 * read) and every reply written. */
	if (!c->dead && c->closing && !c->busy && c->hs_off == c->hs_len)
		conn_kill(c, NULL);
	if (c->dead && !c->busy)
		conn_destroy(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_conn *c = arg;

	(void)fd;
	if (what & EV_READ)
		c->sock_idle = false;
	conn_run(c);
}

/* A client accepted on a listener (listen.c). */
static void conn_accepted(int fd, bool tcp)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		log_warn("nbd: refusing a client: out of memory");
		close(fd);
		return;
	}
	c->id = ++srv.next_id;
	c->fd = fd;
	c->tcp = tcp;
	c->rs = RS_FLAGS;
	c->pipe_rd = c->pipe_wr = -1;
	c->wpipe_rd = c->wpipe_wr = -1;
	nbd_slots_init(c);
	c->ev_read = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_io, c);
	c->ev_write = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, on_io, c);
	c->ev_run = event_new(srv.base, -1, 0, on_io, c);
	if (!c->ev_read || !c->ev_write || !c->ev_run || nbd_hs_greet(c) < 0) {
		log_warn("nbd: refusing a client: out of memory");
		if (c->ev_read)
			event_free(c->ev_read);
		if (c->ev_write)
			event_free(c->ev_write);
		if (c->ev_run)
			event_free(c->ev_run);
		free(c->hs);
		free(c);
		close(fd);
		return;
	}
	nbd_clients_add(c);
	log_debug("nbd: client %u: connected%s", c->id, tcp ? " over TCP" : "");
	conn_run(c);
}

/* ---- server ---- */

int nbd_server_start(struct event_base *base, const char *path, struct errbuf *eb)
{
	/* Before the listener: it may take a client at once. */
	server_init(base);
	return nbd_listen_unix(base, path, conn_accepted, eb);
}

int nbd_server_listen_tcp(struct event_base *base, const char *hostport, struct errbuf *eb)
{
	server_init(base);
	return nbd_listen_tcp(base, hostport, conn_accepted, eb);
}

int nbd_server_activate(struct event_base *base, struct errbuf *eb)
{
	/* Sockets adopted before a later one fails are armed already. */
	server_init(base);
	return nbd_listen_activate(base, conn_accepted, eb);
}

void nbd_server_shutdown(void (*done)(void *arg), void *arg)
{
	struct nbd_conn *c, *next;

	srv.shutting = true;
	srv.done = done;
	srv.done_arg = arg;
	nbd_listen_close_all();
	log_info("nbd: shutting down, %u client(s) connected", nbd_clients_count());
	for (c = nbd_clients_first(); c; c = next) {
		next = LIST_NEXT(c, link);
		c->closing = true;
		conn_run(c);
	}
	maybe_server_done();
}

void nbd_server_free(void)
{
	struct nbd_conn *c, *next;

	srv.done = NULL;
	for (c = nbd_clients_first(); c; c = next) {
		next = LIST_NEXT(c, link);
		conn_kill(c, NULL);
		/* A request still inside the tap keeps its connection. */
		if (!c->busy)
			conn_destroy(c);
	}
	nbd_listen_free();
}
