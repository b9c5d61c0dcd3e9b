/* The NBD export's outer shell: each connection's lifetime (create, run,
 * kill, destroy), the limits, and the graceful server shutdown. Listeners
 * are in listen.c, options in handshake.c, the request and reply
 * data path in conn.c. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "internal.h"
#include "server.h"

static struct {
	struct event_base *base;
	LIST_HEAD(, nbd_conn) conns;
	unsigned nconns, next_id;
	bool shutting;
	void (*done)(void *arg);
	void *done_arg;
	uint64_t max_client_bytes;
	unsigned max_connections;
} srv = {
	.conns = LIST_HEAD_INITIALIZER(srv.conns),
	.max_client_bytes = NBD_DEFAULT_MAX_CLIENT_BYTES,
	.max_connections = NBD_DEFAULT_MAX_CONNECTIONS,
};

void nbd_server_init(struct event_base *base)
{
	srv.base = base;
	srv.shutting = false;
}

void nbd_server_set_limits(uint64_t max_client_bytes, unsigned max_connections)
{
	srv.max_client_bytes = max_client_bytes;
	srv.max_connections = max_connections;
}

uint64_t nbd_server_max_client_bytes(void)
{
	return srv.max_client_bytes;
}

unsigned nbd_server_max_connections(void)
{
	return srv.max_connections;
}

unsigned nbd_server_tap_conns(const struct tap *t)
{
	struct nbd_conn *c;
	unsigned n = 0;

	LIST_FOREACH (c, &srv.conns, link)
		if (c->tap == t)
			n++;
	return n;
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
	/* close_notify only when we chose to close (DISC, ABORT, shutdown). */
	nbd_tls_close(c, c->closing);
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
		nbd_conn_defer(c); /* finish on the next turn */

	/* Closing: nothing in flight (busy also covers a write payload being
	 * read) and every reply written. */
	if (!c->dead && c->closing && !c->busy && c->hs_off == c->hs_len)
		nbd_conn_kill(c, NULL);
	if (c->dead && !c->busy)
		conn_destroy(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_conn *c = arg;

	(void)fd;
	if (what & EV_READ)
		c->sock_idle = false;
	nbd_conn_run(c);
}

void nbd_conn_defer(struct nbd_conn *c)
{
	/* An event already active stays so: one run however many calls. */
	event_active(c->ev_run, 0, 0);
}

void nbd_server_accepted(int fd, bool tcp)
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
	LIST_INSERT_HEAD(&srv.conns, c, link);
	srv.nconns++;
	log_debug("nbd: client %u: connected%s", c->id, tcp ? " over TCP" : "");
	nbd_conn_run(c);
}

/* ---- server ---- */

void nbd_server_shutdown(void (*done)(void *arg), void *arg)
{
	struct nbd_conn *c, *next;

	srv.shutting = true;
	srv.done = done;
	srv.done_arg = arg;
	nbd_listen_close_all();
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

	srv.done = NULL;
	for (c = LIST_FIRST(&srv.conns); c; c = next) {
		next = LIST_NEXT(c, link);
		nbd_conn_kill(c, NULL);
		/* A request still inside the tap keeps its connection. */
		if (!c->busy)
			conn_destroy(c);
	}
	nbd_listen_free();
}
