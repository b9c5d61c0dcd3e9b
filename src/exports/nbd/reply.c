/* The reply side of one NBD connection: simple replies and structured
 * chunks (data, holes, block status, errors) described as iovecs in each
 * slot, and written in completion order through an output queue that
 * survives partial writes, many replies per sendmsg(). A spliced READ
 * (splice.c) has only its header in the slot: the gather stops after
 * it, and its data goes from the connection's pipe with splice(). Each
 * write reports how it went; the connection's owner (server.c) loops,
 * arms EV_WRITE and decides what a failed socket means. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "internal.h"

/* ---- transport ----
 * Every byte to the client goes through here (see sock_recv in
 * conn.c for the other way), through TLS after STARTTLS. Behaves like
 * sendmsg() on a non-blocking socket. */

static ssize_t sock_send(struct nbd_conn *c, struct iovec *iov, size_t n)
{
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};

	if (c->tls_up)
		return nbd_tls_send(c->tls, iov, n);
	return sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- replies ---- */

static void reply_add(struct nbd_slot *s, void *base, size_t len)
{
	struct iovec *prev = s->rn ? &s->riov[s->rn - 1] : NULL;

	/* Consecutive chunk headers in rbuf go out as one piece. */
	if (prev && (char *)prev->iov_base + prev->iov_len == (char *)base) {
		prev->iov_len += len;
	} else {
		s->riov[s->rn].iov_base = base;
		s->riov[s->rn++].iov_len = len;
	}
	s->rtotal += len;
}

/* The chunks of a successful sparse READ, as planned in pieces[]. */
static void build_sparse(struct nbd_slot *s)
{
	unsigned char *p = s->rbuf;
	uint64_t off = s->off;

	for (unsigned i = 0; i < s->npieces; i++) {
		uint16_t fl = i + 1 == s->npieces ? NBD_REPLY_FLAG_DONE : 0;
		uint32_t len = s->pieces[i].len;
		size_t n;

		if (s->pieces[i].hole) {
			n = nbd_encode_chunk_hole(p, fl, s->cookie, off, len);
			reply_add(s, p, n);
		} else {
			n = nbd_encode_chunk_data(p, fl, s->cookie, off, len);
			reply_add(s, p, n);
			reply_add(s, (char *)s->req.buf + (off - s->off), len);
		}
		p += n;
		off += len;
	}
}

/* One piece of a READ in pieces (core/tap.h): the simple reply's header
 * goes with the first piece and the data of each piece follows it; a
 * structured reply sends each piece as a data chunk, DONE on the last.
 * Returns false when the reply cannot be finished: a piece after the
 * first failed under a simple reply, whose header said all was well. */
static bool build_piece(struct nbd_slot *s, uint32_t error)
{
	struct tap_req *req = &s->req;
	bool first = req->piece_off == s->off;
	size_t n;

	s->more = !error && tap_req_more(req);
	/* One header, then every piece's data back to back: a simple reply,
	 * or the one data chunk a DF READ allows. A failure once the header
	 * is out cannot be told: the caller closes the connection. */
	if (!s->conn->structured || (s->flags & NBD_CMD_FLAG_DF)) {
		if (error && !first)
			return false;
		if (first) {
			if (!s->conn->structured)
				n = nbd_encode_simple_reply(s->rbuf, error, s->cookie);
			else if (error)
				n = nbd_encode_chunk_error(s->rbuf, s->cookie, error);
			else
				n = nbd_encode_chunk_data(s->rbuf, NBD_REPLY_FLAG_DONE, s->cookie,
							  s->off, s->len);
			reply_add(s, s->rbuf, n);
		}
		if (!error)
			reply_add(s, req->buf, req->piece_len);
		return true;
	}
	if (error) {
		reply_add(s, s->rbuf, nbd_encode_chunk_error(s->rbuf, s->cookie, error));
		return true;
	}
	n = nbd_encode_chunk_data(s->rbuf, s->more ? 0 : NBD_REPLY_FLAG_DONE, s->cookie,
				  req->piece_off, req->piece_len);
	reply_add(s, s->rbuf, n);
	reply_add(s, req->buf, req->piece_len);
	return true;
}

static bool read_pieced(const struct nbd_slot *s)
{
	return s->type == NBD_CMD_READ && !s->spliced && s->prepared && s->len &&
	       s->req.piece_len < s->len;
}

static void build_reply(struct nbd_slot *s, uint32_t error)
{
	bool data = s->type == NBD_CMD_READ && !error && s->len;
	size_t n;

	s->rn = 0;
	s->rtotal = 0;
	s->sent = 0;
	if (s->spliced) {
		/* One data chunk (or a simple reply): the header here, the
		 * data in the pipe. */
		if (s->conn->structured)
			n = nbd_encode_chunk_data(s->rbuf, NBD_REPLY_FLAG_DONE, s->cookie, s->off,
						  s->len);
		else
			n = nbd_encode_simple_reply(s->rbuf, 0, s->cookie);
		reply_add(s, s->rbuf, n);
		s->rtotal += s->len;
		return;
	}
	/* Structured replies only where the protocol wants them: READ must
	 * use them once negotiated, BLOCK_STATUS always does; everything
	 * else keeps the shorter simple reply. */
	if (!s->conn->structured || (s->type != NBD_CMD_READ && s->type != NBD_CMD_BLOCK_STATUS)) {
		reply_add(s, s->rbuf, nbd_encode_simple_reply(s->rbuf, error, s->cookie));
		if (data)
			reply_add(s, s->req.buf, s->len);
		return;
	}
	if (!error && s->type == NBD_CMD_BLOCK_STATUS) {
		n = nbd_encode_block_status(s->rbuf, s->cookie, NBD_CONTEXT_ID_BASE, s->ext,
					    MIN(s->req.ext_count, (uint32_t)NBD_EXTENTS),
					    s->req.len, s->flags & NBD_CMD_FLAG_REQ_ONE);
		if (n) {
			reply_add(s, s->rbuf, n);
			return;
		}
		/* The tap broke its promise of at least one byte. */
		error = NBD_EIO;
	}
	if (error) {
		reply_add(s, s->rbuf, nbd_encode_chunk_error(s->rbuf, s->cookie, error));
	} else if (!s->len) {
		reply_add(s, s->rbuf, nbd_encode_chunk_none(s->rbuf, s->cookie));
	} else if (s->sparse) {
		build_sparse(s);
	} else {
		n = nbd_encode_chunk_data(s->rbuf, NBD_REPLY_FLAG_DONE, s->cookie, s->off, s->len);
		reply_add(s, s->rbuf, n);
		reply_add(s, s->req.buf, s->len);
	}
}

void nbd_queue_reply(struct nbd_slot *s, uint32_t error)
{
	struct nbd_conn *c = s->conn;
	bool held = c->out_hold == s;

	if (held)
		c->out_hold = NULL;
	if (nbd_conn_gone(c)) {
		nbd_slot_free(s);
		return;
	}
	if (read_pieced(s)) {
		s->rn = 0;
		s->rtotal = 0;
		s->sent = 0;
		if (!build_piece(s, error)) {
			nbd_fail(c, -EIO, "a READ failed after its reply began");
			nbd_slot_free(s);
			return;
		}
	} else {
		build_reply(s, error);
	}
	s->state = SLOT_QUEUED;
	/* A held READ's next piece goes out before anything queued since. */
	if (held)
		TAILQ_INSERT_HEAD(&c->outq, s, link);
	else
		TAILQ_INSERT_TAIL(&c->outq, s, link);
}

/* Gather iovecs from the handshake buffer or the output queue. */
static size_t gather(struct nbd_conn *c, struct iovec *iov)
{
	struct nbd_slot *s;
	size_t n = 0;

	if (c->hs_off < c->hs_len) {
		iov[0].iov_base = c->hs + c->hs_off;
		iov[0].iov_len = c->hs_len - c->hs_off;
		return 1;
	}
	if (c->out_hold)
		return 0;
	TAILQ_FOREACH (s, &c->outq, link) {
		size_t skip = s->sent;

		for (unsigned i = 0; i < s->rn; i++) {
			if (skip >= s->riov[i].iov_len) {
				skip -= s->riov[i].iov_len;
				continue;
			}
			if (n == NBD_IOV)
				return n;
			iov[n].iov_base = (char *)s->riov[i].iov_base + skip;
			iov[n++].iov_len = s->riov[i].iov_len - skip;
			skip = 0;
		}
		/* Its data is in the pipe, or more of its data is to come:
		 * nothing after it can go first. */
		if (s->spliced || s->more)
			break;
	}
	return n;
}

/* Bytes of the head reply's data waiting in the pipe, when they are what
 * goes out next (its header is out); else 0. */
static size_t pipe_next(struct nbd_conn *c)
{
	struct nbd_slot *s = TAILQ_FIRST(&c->outq);

	if (c->hs_off < c->hs_len || c->out_hold || !s || !s->spliced ||
	    s->sent < s->rtotal - s->len)
		return 0;
	return s->rtotal - s->sent;
}

/* Move up to len bytes of the head reply's data from the pipe (filled by
 * splice.c) to the socket; behaves like send(). */
static ssize_t pipe_send(struct nbd_conn *c, size_t len)
{
	return splice(c->pipe_rd, NULL, c->fd, NULL, len, SPLICE_F_NONBLOCK);
}

ssize_t nbd_out_write(struct nbd_conn *c)
{
	struct iovec iov[NBD_IOV];
	size_t piped = pipe_next(c);
	size_t n = piped ? 0 : gather(c, iov);
	ssize_t w, done;

	if (!n && !piped)
		return 0;
	w = piped ? pipe_send(c, piped) : sock_send(c, iov, n);
	if (w < 0)
		return -errno;
	if (!w)
		return -EAGAIN; /* no progress: wait until the socket is writable */
	done = w;
	if (c->hs_off < c->hs_len) {
		c->hs_off += (size_t)w;
		return done;
	}
	while (w > 0) {
		struct nbd_slot *s = TAILQ_FIRST(&c->outq);
		size_t left = s->rtotal - s->sent;

		if ((size_t)w < left) {
			s->sent += (size_t)w;
			break;
		}
		w -= (ssize_t)left;
		TAILQ_REMOVE(&c->outq, s, link);
		if (s->more) {
			/* This piece left: read the next into the same
			 * buffer, holding the output until it is queued. */
			s->more = false;
			s->state = SLOT_INFLIGHT;
			c->out_hold = s;
			tap_req_next(&s->req);
			tap_req_submit(&s->req);
			break;
		}
		/* The buffer was needed until now: release it. */
		nbd_slot_free(s);
	}
	return done;
}
