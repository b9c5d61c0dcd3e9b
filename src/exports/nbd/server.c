/* The NBD export's owner of connections: each one's life (accept or
 * refuse at once over a limit, run, kill, destroy), its timer (the
 * handshake deadline, then the write-stall check), the graceful server
 * shutdown, and the public calls that open listeners (listen.c hands their
 * clients back here). Every entry point (socket events, the deferred run
 * tap callbacks ask for, the timer) runs the connection here; the parts
 * below report failures (nbd_fail, a negative errno) and only this file
 * closes or frees a connection. */
#include <errno.h>
#include <string.h>
#include <time.h>
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
	/* Refusals over a limit are logged once per second at most for
	 * each limit ([0] the total, [1] per peer): a flood must not become
	 * a flood of log lines, nor hide that the other limit was hit. */
	struct {
		uint64_t sec;
		unsigned quiet;
	} refused[2];
} srv;

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Remember the loop (every listener that starts does this). */
static void server_init(struct event_base *base)
{
	srv.base = base;
	srv.shutting = false;
}

/* ---- connection lifetime ---- */

static void conn_free_new(struct nbd_conn *c);

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
	evtimer_del(c->ev_timer);
	evtimer_del(c->ev_next);
	c->deadline_on = c->stall_on = false;
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
	void (*gone)(void *) = c->gone;
	void *gone_arg = c->gone_arg;

	if (c->tap)
		tap_detach(c->tap);
	event_free(c->ev_read);
	event_free(c->ev_write);
	event_free(c->ev_run);
	event_free(c->ev_timer);
	event_free(c->ev_next);
	free(c->hs);
	free(c->slots);
	nbd_clients_remove(c);
	log_debug("nbd: client %u: gone", c->id);
	free(c);
	if (gone)
		gone(gone_arg);
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

/* Run c on the next turn of the loop: after the others had theirs. A
 * client flooding options gets 64 KiB of replies' worth of the loop per
 * turn. */
static void conn_next_turn(struct nbd_conn *c)
{
	struct timeval now = {0, 0};

	evtimer_add(c->ev_next, &now);
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
		/* The client takes replies: restart its stall clock, and
		 * read options again if they waited for room. */
		if (w > 0 && c->stall_on)
			c->out_stamp = mono_ms();
		if (w > 0 && c->hs_full && c->hs_len - c->hs_off < NBD_HS_OUT_MAX) {
			c->hs_full = false;
			conn_next_turn(c);
		}
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

static void timer_arm(struct nbd_conn *c, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};

	evtimer_add(c->ev_timer, &tv);
}

/* Bytes of replies waiting to be written. */
static size_t out_pending(const struct nbd_conn *c)
{
	const struct nbd_slot *s;
	size_t n = c->hs_len - c->hs_off;

	TAILQ_FOREACH (s, &c->outq, link)
		n += s->rtotal - s->sent;
	return n;
}

/* The timer went off: in the handshake the deadline passed; in
 * transmission, replies may have waited unread for too long (if they still
 * wait and the socket took nothing for write_timeout, c is failed; else
 * the check is set again for what is left, or not at all with nothing
 * waiting). */
static void timer_check(struct nbd_conn *c)
{
	const struct nbd_limits *lim = nbd_server_limits();
	uint64_t idle, limit = (uint64_t)lim->write_timeout * 1000;
	char why[160];

	if (c->deadline_on) {
		c->deadline_on = false;
		if (c->rs == RS_TLS)
			snprintf(why, sizeof(why),
				 "TLS handshake timed out (%u s after connecting)",
				 lim->handshake_timeout);
		else
			snprintf(why, sizeof(why),
				 "handshake not finished within %u s (%zu bytes of replies unread)",
				 lim->handshake_timeout, out_pending(c));
		nbd_fail(c, -ETIMEDOUT, why);
		return;
	}
	if (!c->stall_on)
		return;
	c->stall_on = false;
	if (!c->writing || !limit)
		return;
	idle = mono_ms() - c->out_stamp;
	if (idle >= limit) {
		snprintf(why, sizeof(why), "replies unread for %u s (%zu bytes waiting)",
			 lim->write_timeout, out_pending(c));
		nbd_fail(c, -ETIMEDOUT, why);
		return;
	}
	c->stall_on = true;
	timer_arm(c, limit - idle);
}

/* After a run: the handshake deadline ends with the handshake; in
 * transmission, replies that wait for the socket start the stall clock. */
static void timer_update(struct nbd_conn *c)
{
	unsigned t = nbd_server_limits()->write_timeout;

	if (c->dead || !c->tx)
		return;
	if (c->deadline_on) {
		evtimer_del(c->ev_timer);
		c->deadline_on = false;
	}
	/* The handshake buffer is not needed again. */
	if (c->hs && c->hs_off == c->hs_len) {
		free(c->hs);
		c->hs = NULL;
		c->hs_off = c->hs_len = c->hs_cap = 0;
	}
	if (c->writing && !c->stall_on && t) {
		c->stall_on = true;
		c->out_stamp = mono_ms();
		timer_arm(c, (uint64_t)t * 1000);
	}
}

/* Run the connection until nothing more can happen now. Every entry point
 * (socket events, tap callbacks, the timer) ends here; re-entry is
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
	if (c->timer_fired) {
		c->timer_fired = false;
		if (!c->dead)
			timer_check(c);
	}
	do {
		c->rerun = false;
		if (!c->dead && conn_step(c) < 0)
			break;
	} while (c->rerun && !c->dead && ++rounds < 8);
	c->running = false;
	if (c->failed)
		conn_kill(c, c->why[0] ? c->why : NULL);
	timer_update(c);
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

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_conn *c = arg;

	(void)fd;
	(void)what;
	c->timer_fired = true;
	conn_run(c);
}

/* A client over a limit (err from nbd_clients_admit): closed at once (so
 * the listen backlog never fills with clients we will not serve), and
 * logged at most once per second for each limit, with how many were
 * refused quietly since the last line. The line is written before the
 * close, so the client never sees the close first. */
static void conn_refuse(int fd, int err, const char *why)
{
	uint64_t sec = mono_ms() / 1000;
	unsigned i = err != -EUSERS;

	if (sec != srv.refused[i].sec || !srv.refused[i].quiet) {
		if (srv.refused[i].quiet > 1)
			log_notice("nbd: refusing a client: %s (and %u more refused since the "
				   "last such line)",
				   why, srv.refused[i].quiet - 1);
		else
			log_notice("nbd: refusing a client: %s", why);
		srv.refused[i].sec = sec;
		srv.refused[i].quiet = 0;
	}
	srv.refused[i].quiet++;
	close(fd);
}

/* A connection on fd with its events, not yet in the client list; NULL
 * (out of memory: nothing allocated, fd not closed). */
static struct nbd_conn *conn_new(int fd)
{
	struct nbd_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = fd;
	c->pipe_rd = c->pipe_wr = -1;
	c->wpipe_rd = c->wpipe_wr = -1;
	nbd_slots_init(c);
	c->ev_read = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_io, c);
	c->ev_write = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, on_io, c);
	c->ev_run = event_new(srv.base, -1, 0, on_io, c);
	c->ev_timer = evtimer_new(srv.base, on_timer, c);
	c->ev_next = evtimer_new(srv.base, on_io, c);
	if (c->ev_read && c->ev_write && c->ev_run && c->ev_timer && c->ev_next)
		return c;
	conn_free_new(c);
	return NULL;
}

/* Undo conn_new (the fd stays open). */
static void conn_free_new(struct nbd_conn *c)
{
	if (c->ev_read)
		event_free(c->ev_read);
	if (c->ev_write)
		event_free(c->ev_write);
	if (c->ev_run)
		event_free(c->ev_run);
	if (c->ev_timer)
		event_free(c->ev_timer);
	if (c->ev_next)
		event_free(c->ev_next);
	free(c->hs);
	free(c->slots);
	free(c);
}

/* A client accepted on a listener (listen.c). */
static void conn_accepted(int fd, bool tcp)
{
	const struct nbd_limits *lim = nbd_server_limits();
	struct nbd_conn *c;
	struct nbd_peer peer;
	char why[128];
	int err;

	nbd_peer_get(fd, tcp, &peer);
	if ((err = nbd_clients_admit(&peer, why, sizeof(why))) < 0) {
		conn_refuse(fd, err, why);
		return;
	}
	c = conn_new(fd);
	if (c && nbd_hs_greet(c) < 0) {
		conn_free_new(c);
		c = NULL;
	}
	if (!c) {
		log_warn("nbd: refusing a client: out of memory");
		close(fd);
		return;
	}
	c->id = ++srv.next_id;
	c->tcp = tcp;
	c->peer = peer;
	c->rs = RS_FLAGS;
	nbd_clients_add(c);
	/* From accept to transmission, TLS included. */
	c->deadline_on = true;
	timer_arm(c, (uint64_t)lim->handshake_timeout * 1000);
	log_debug("nbd: client %u: connected from %s", c->id,
		  nbd_peer_name(&peer, why, sizeof(why)));
	conn_run(c);
}

int nbd_server_adopt(struct event_base *base, int fd, struct tap *t, void (*gone)(void *arg),
		     void *arg, struct errbuf *eb)
{
	struct nbd_conn *c;

	if (srv.shutting) {
		err_set(eb, "nbd: the server is shutting down");
		return -ESHUTDOWN;
	}
	if (!srv.base)
		srv.base = base;
	c = conn_new(fd);
	if (!c) {
		err_set(eb, "nbd: out of memory for a connection");
		return -ENOMEM;
	}
	if (tap_attach(t) < 0) {
		conn_free_new(c);
		err_set(eb, "tap %s is closing", tap_name(t));
		return -ESHUTDOWN;
	}
	c->id = ++srv.next_id;
	if (nbd_hs_adopt(c, t) < 0) {
		tap_detach(t);
		conn_free_new(c);
		err_set(eb, "nbd: out of memory for a request table");
		return -ENOMEM;
	}
	c->peer.kind = NBD_PEER_UNKNOWN;
	c->adopted = true;
	c->gone = gone;
	c->gone_arg = arg;
	nbd_clients_add(c);
	log_debug("nbd: client %u: the kernel, on tap %s", c->id, tap_name(t));
	conn_run(c);
	return (int)c->id;
}

static struct nbd_conn *conn_by_id(unsigned id)
{
	struct nbd_conn *c;

	for (c = nbd_clients_first(); c; c = LIST_NEXT(c, link))
		if (c->id == id)
			return c;
	return NULL;
}

void nbd_server_adopt_close(unsigned id)
{
	struct nbd_conn *c = conn_by_id(id);

	if (!c || !c->adopted)
		return;
	c->gone = NULL;
	if (c->dead)
		return;
	c->closing = true;
	conn_run(c);
}

uint16_t nbd_server_adopt_flags(const struct tap *t)
{
	/* As nbd_hs_adopt's connection will check them: simple replies. */
	return nbd_hs_export_flags(t, false);
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

bool nbd_server_stopping(void)
{
	return srv.shutting;
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
