/* Zero-copy READ replies. Where the tap's image is memory that offers
 * splice_read (a raw file on tmpfs), a READ of NBD_SPLICE_MIN bytes or more
 * moves the image's pages into a pipe the connection keeps, by reference,
 * the moment it arrives; its reply header goes out with sendmsg() and the
 * data follows with splice() from the pipe into the socket, again by
 * reference (unix sockets take spliced pages since Linux 6.5, TCP always
 * has). The daemon copies nothing; the client's recv() makes the one copy.
 *
 * The pipe holds the data of spliced replies in the order they sit in the
 * output queue. A READ that would overfill it waits on splice_q, in
 * order, and is spliced as earlier replies leave the pipe; it is not inside
 * the tap while it waits, so a pause is never held up by it, and when its
 * turn comes and the tap no longer allows splicing (paused, QoS) it goes
 * the usual way. Not under TLS (GnuTLS encrypts from user memory).
 *
 * WRITEs of NBD_SPLICE_MIN bytes or more on a unix socket go the other
 * way through a second pipe: as the payload arrives it is spliced from the
 * socket into the pipe (the socket buffer's pages move by reference), and
 * the tap splices it on into the file in page-aligned pieces (of
 * NBD_WSPLICE_STEP or more, or what is in the pipe when it is full), which
 * makes the one copy; the last piece queues the reply. Writing
 * while the payload still comes keeps the socket drained, so the client
 * sends on instead of waiting behind one big copy at the end. The tap
 * takes each piece there and then or not at all, so a client that stalls
 * mid-payload holds up nothing but itself (a pause never waits for it).
 * When the pipe runs out of room before a page of payload is in it (a
 * socket that delivers many tiny pieces; TCP from a real network would,
 * hence not on TCP), or the tap declines a piece (paused, QoS, a
 * read-modify-write in the way) or the image takes only part of it (a
 * full filesystem), the WRITE goes on the usual way from where it got to:
 * a pool buffer for the rest, filled from the pipe and then from the
 * socket, and the tap, which reports any error.
 *
 * Nothing here starts a request the usual way or closes the connection:
 * the calls say so (a verdict, or a negative errno after nbd_fail) and
 * the request side (conn.c) or the owner (server.c) acts. The pipes'
 * data leaves for the socket in reply.c, which writes all output. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "internal.h"

/* Pipe buffers [off, off + len) can take: one per page it touches (a
 * pipe has F_GETPIPE_SZ / page size buffers). */
static uint32_t pipe_bufs_for(uint64_t off, uint32_t len)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	return (uint32_t)(ALIGN_UP(off % page + len, page) / page);
}

/* A pipe of NBD_PIPE_SIZE if it can have it; returns its size in bytes,
 * or 0 without a pipe (and splicing is off for c). */
static long pipe_make(struct nbd_conn *c, int fds[2])
{
	long size;

	if (c->no_splice)
		return 0;
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_debug("nbd: client %u: no pipe for splice: %s", c->id, strerror(errno));
		c->no_splice = true;
		return 0;
	}
	/* Best effort: without room for a request the usual path serves. */
	(void)fcntl(fds[1], F_SETPIPE_SZ, (int)NBD_PIPE_SIZE);
	size = fcntl(fds[1], F_GETPIPE_SZ);
	if (size <= 0) {
		close(fds[0]);
		close(fds[1]);
		c->no_splice = true;
		return 0;
	}
	return size;
}

static bool pipe_open(struct nbd_conn *c)
{
	int fds[2];
	long size;

	if (c->pipe_rd >= 0)
		return true;
	if (!(size = pipe_make(c, fds)))
		return false;
	/* Room in a unix socket for several spliced replies, so the pipe
	 * empties in one splice() each (the kernel caps this at
	 * net.core.wmem_max). Spliced data costs the socket references to
	 * the image's pages, not memory. TCP sizes its own buffer, and
	 * setting one would stop that. */
	if (!c->tcp)
		(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &(int){ NBD_SPLICE_SNDBUF },
				 sizeof(int));
	c->pipe_rd = fds[0];
	c->pipe_wr = fds[1];
	c->pipe_cap = (uint32_t)(size / sysconf(_SC_PAGESIZE));
	c->pipe_bufs = 0;
	return true;
}

/* Move s's data into the pipe now and queue its reply: 1, or 0 when the
 * tap says it must go the usual way (nothing moved), or a negative errno
 * (s freed, c failed). */
static int splice_in(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;
	ssize_t n = tap_read_splice(c->tap, s->off, s->len, c->pipe_wr);

	if (n == (ssize_t)s->len) {
		s->spliced = true;
		s->pipe_bufs = pipe_bufs_for(s->off, s->len);
		c->pipe_bufs += s->pipe_bufs;
		nbd_queue_reply(s, 0);
		return 1;
	}
	if (n > 0) {
		/* Part of a READ sits in the pipe ahead of nothing that can
		 * use it: the reply stream is out of step. Nothing was sent
		 * and nothing is lost; the client has to reconnect. */
		nbd_slot_free(s);
		return nbd_fail(c, -EIO, "the image gave a short splice");
	}
	return 0;
}

int nbd_splice_read(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;
	uint32_t need;

	if (c->tls || s->len < NBD_SPLICE_MIN || !tap_can_splice(c->tap) || !pipe_open(c))
		return 0;
	need = pipe_bufs_for(s->off, s->len);
	if (need > c->pipe_cap)
		return 0;
	if (TAILQ_EMPTY(&c->splice_q) && c->pipe_bufs + need <= c->pipe_cap)
		return splice_in(s);
	s->state = SLOT_SPLICE_WAIT;
	TAILQ_INSERT_TAIL(&c->splice_q, s, link);
	return 1;
}

int nbd_splice_resume(struct nbd_conn *c, struct nbd_slot **usual)
{
	struct nbd_slot *s;
	int r;

	while (!nbd_conn_gone(c) && (s = TAILQ_FIRST(&c->splice_q))) {
		if (c->pipe_bufs + pipe_bufs_for(s->off, s->len) > c->pipe_cap)
			return 0;
		TAILQ_REMOVE(&c->splice_q, s, link);
		r = splice_in(s);
		if (r < 0)
			return r;
		if (!r) {
			*usual = s;
			return 1;
		}
	}
	return 0;
}

void nbd_wsplice_drop(struct nbd_conn *c)
{
	if (c->wpipe_rd < 0)
		return;
	close(c->wpipe_rd);
	close(c->wpipe_wr);
	c->wpipe_rd = c->wpipe_wr = -1;
}

void nbd_splice_close(struct nbd_conn *c)
{
	nbd_wsplice_drop(c);
	c->no_splice = true;
	if (c->pipe_rd < 0)
		return;
	close(c->pipe_rd);
	close(c->pipe_wr);
	c->pipe_rd = c->pipe_wr = -1;
}

/* ---- WRITEs ---- */

static bool wpipe_open(struct nbd_conn *c)
{
	int fds[2];

	if (c->wpipe_rd >= 0)
		return true;
	if (!pipe_make(c, fds))
		return false;
	c->wpipe_rd = fds[0];
	c->wpipe_wr = fds[1];
	return true;
}

bool nbd_wsplice_start(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;

	if (c->tls || c->tcp || s->len < NBD_SPLICE_MIN ||
	    !tap_can_splice_write(c->tap, s->off, s->len, s->req.flags) || !wpipe_open(c))
		return false;
	s->state = SLOT_PAYLOAD;
	s->piped = 0;
	c->got = 0;
	c->wrote = 0;
	c->rs = RS_SPLICE;
	return true;
}

/* The rest of c->cur goes the usual way: c->wrote bytes of its payload
 * are in the image, c->got - c->wrote wait in the pipe. RS_WRITE_WAIT
 * tells the caller of nbd_wsplice_put / nbd_wsplice_recv to prepare it. */
static void wsplice_fallback(struct nbd_conn *c, bool pipe_full)
{
	struct nbd_slot *s = c->cur;

	log_debug("nbd: client %u: WRITE at %llu+%u: %u bytes written by splice, the rest the "
		  "usual way (%s)", c->id, (unsigned long long)s->off, s->len, c->wrote,
		  pipe_full ? "the pipe is full" : "the tap declined, or the image took less");
	s->req.off = s->off + c->wrote;
	s->req.len = s->len - c->wrote;
	s->piped = c->got - c->wrote;
	c->rs = RS_WRITE_WAIT;
}

/* Payload came into the pipe: write what is worth a piece (all of it
 * once the payload is whole, or when the pipe is full) and answer a whole
 * WRITE. */
static void wsplice_step(struct nbd_conn *c, bool pipe_full)
{
	struct nbd_slot *s = c->cur;
	bool last = c->got == s->len;
	uint32_t piece = c->got - c->wrote;
	size_t n;

	if (!last) {
		if (piece < NBD_WSPLICE_STEP && !pipe_full)
			return;
		/* Pieces but the last stay page-aligned, like the image. */
		piece = ALIGN_DOWN(piece, POOL_PAGE);
	}
	n = piece ? tap_write_splice(c->tap, s->off + c->wrote, piece, s->req.flags,
				     c->wpipe_rd, last)
		  : 0;
	c->wrote += (uint32_t)n;
	if (n < piece || (!piece && !last)) {
		/* Declined, stopped short, or a full pipe with less than a
		 * page in it: the rest as usual. */
		wsplice_fallback(c, pipe_full && n == piece);
		return;
	}
	if (!last)
		return;
	c->cur = NULL;
	c->rs = RS_HDR;
	nbd_queue_reply(s, 0);
}

size_t nbd_wsplice_put(struct nbd_conn *c, const void *p, size_t n)
{
	ssize_t w = write(c->wpipe_wr, p, n);

	if (w > 0) {
		c->got += (uint32_t)w;
		wsplice_step(c, false);
	} else {
		wsplice_step(c, true);
	}
	return w > 0 ? (size_t)w : 0;
}

ssize_t nbd_wsplice_recv(struct nbd_conn *c, bool *drained)
{
	size_t want = c->cur->len - c->got;
	ssize_t n = splice(c->fd, NULL, c->wpipe_wr, NULL, want,
			   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
	int queued;

	if (n > 0) {
		/* Short: the socket is empty, or the pipe full (the next
		 * call says which). */
		*drained = (size_t)n < want;
		c->got += (uint32_t)n;
		wsplice_step(c, false);
		return n;
	}
	if (n < 0 && errno == EAGAIN && ioctl(c->fd, FIONREAD, &queued) == 0 && queued > 0) {
		/* Data waits in the socket: it came just now, or the pipe
		 * has no room. Splice again to tell, and if the pipe is full
		 * make room, or go the usual way; either way, try again. */
		n = splice(c->fd, NULL, c->wpipe_wr, NULL, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			c->got += (uint32_t)n;
			wsplice_step(c, false);
			return n;
		}
		if (n < 0 && errno == EAGAIN) {
			wsplice_step(c, true);
			errno = EINTR;
		}
	}
	return n;
}

int nbd_wsplice_take(struct nbd_conn *c, void *buf, size_t n)
{
	while (n) {
		ssize_t r = read(c->wpipe_rd, buf, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		buf = (char *)buf + r;
		n -= (size_t)r;
	}
	return 0;
}
