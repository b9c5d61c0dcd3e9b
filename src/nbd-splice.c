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
 * the usual way. Not under TLS (GnuTLS encrypts from user memory). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "nbd-internal.h"

/* Pipe buffers [off, off + len) can take: one per page it touches (a
 * pipe has F_GETPIPE_SZ / page size buffers). */
static uint32_t pipe_bufs_for(uint64_t off, uint32_t len)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	return (uint32_t)(ALIGN_UP(off % page + len, page) / page);
}

static bool pipe_open(struct nbd_conn *c)
{
	int fds[2];
	long size;

	if (c->pipe_rd >= 0)
		return true;
	if (c->no_splice)
		return false;
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_debug("nbd: client %u: no pipe for splice: %s", c->id, strerror(errno));
		c->no_splice = true;
		return false;
	}
	/* Best effort: without room for a request the usual path serves. */
	(void)fcntl(fds[1], F_SETPIPE_SZ, (int)NBD_PIPE_SIZE);
	size = fcntl(fds[1], F_GETPIPE_SZ);
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
	c->pipe_cap = size > 0 ? (uint32_t)(size / sysconf(_SC_PAGESIZE)) : 0;
	c->pipe_bufs = 0;
	return true;
}

/* Move s's data into the pipe now and queue its reply; false when the tap
 * says it must go the usual way (nothing moved). */
static bool splice_in(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;
	ssize_t n = tap_read_splice(c->tap, s->off, s->len, c->pipe_wr);

	if (n == (ssize_t)s->len) {
		s->spliced = true;
		s->pipe_bufs = pipe_bufs_for(s->off, s->len);
		c->pipe_bufs += s->pipe_bufs;
		nbd_queue_reply(s, 0);
		return true;
	}
	if (n > 0) {
		/* Part of a READ sits in the pipe ahead of nothing that can
		 * use it: the reply stream is out of step. Nothing was sent
		 * and nothing is lost; the client has to reconnect. */
		nbd_slot_free(s);
		nbd_conn_kill(c, "the image gave a short splice");
		return true;
	}
	return false;
}

bool nbd_splice_read(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;
	uint32_t need;

	if (c->tls || s->len < NBD_SPLICE_MIN || !tap_can_splice(c->tap) || !pipe_open(c))
		return false;
	need = pipe_bufs_for(s->off, s->len);
	if (need > c->pipe_cap)
		return false;
	if (TAILQ_EMPTY(&c->splice_q) && c->pipe_bufs + need <= c->pipe_cap)
		return splice_in(s);
	s->state = SLOT_SPLICE_WAIT;
	TAILQ_INSERT_TAIL(&c->splice_q, s, link);
	return true;
}

void nbd_splice_resume(struct nbd_conn *c)
{
	struct nbd_slot *s;

	while (!c->dead && (s = TAILQ_FIRST(&c->splice_q))) {
		if (c->pipe_bufs + pipe_bufs_for(s->off, s->len) > c->pipe_cap)
			return;
		TAILQ_REMOVE(&c->splice_q, s, link);
		if (!splice_in(s))
			nbd_read_start(s, 0);
	}
}

ssize_t nbd_splice_send(struct nbd_conn *c, size_t len)
{
	return splice(c->pipe_rd, NULL, c->fd, NULL, len, SPLICE_F_NONBLOCK);
}

void nbd_splice_close(struct nbd_conn *c)
{
	if (c->pipe_rd < 0)
		return;
	close(c->pipe_rd);
	close(c->pipe_wr);
	c->pipe_rd = c->pipe_wr = -1;
	c->no_splice = true;
}
