/* The request side of one NBD connection: reading the socket and turning
 * requests into tap requests held in slots (slots.c), including the hole
 * probe of sparse READs and the tap's callbacks. Replies are built and
 * written by reply.c; wire details live in formats/nbd/proto.c. A failure
 * goes up to server.c as a negative errno (nbd_fail); from a tap callback,
 * which has nobody to return to, it waits there for the run it asks for. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "lib/log.h"
#include "internal.h"
#include "server.h"

/* ---- transport ----
 * Every byte from the client comes through here (and every byte to it
 * through sock_send in reply.c), through TLS after STARTTLS. Behaves
 * like recv() on a non-blocking socket. */

static ssize_t sock_recv(struct nbd_conn *c, void *buf, size_t len)
{
	if (c->tls_up)
		return nbd_tls_recv(c->tls, buf, len);
	return recv(c->fd, buf, len, 0);
}

/* ---- request side ---- */

static void slot_ready(struct tap_req *req, int err);
static int discard_done(struct nbd_conn *c);
static void payload_done(struct nbd_conn *c);

/* A WRITE's buffer is ready for its next piece (the first, or one after
 * tap_req_next): read that piece's payload, first what a splice began
 * with and left in the write pipe. 0 or a negative errno (c failed). */
static int payload_piece(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;
	uint32_t n = MIN(s->piped, s->req.piece_len);

	s->state = SLOT_PAYLOAD;
	c->got = n;
	c->rs = RS_PAYLOAD;
	if (n && nbd_wsplice_take(c, s->req.buf, n) < 0)
		return nbd_fail(c, -EIO, "the write pipe lost a payload");
	s->piped -= n;
	if (c->got == s->req.piece_len)
		payload_done(c);
	return 0;
}

/* Outcome of tap_req_prepare, immediate or through the ready callback.
 * Returns 0, or a negative errno (c failed). */
static int prepare_result(struct nbd_slot *s, int err)
{
	struct nbd_conn *c = s->conn;

	if (nbd_conn_gone(c)) {
		nbd_slot_free(s);
		return 0;
	}
	if (err < 0) {
		if (s->type == NBD_CMD_WRITE) {
			/* The payload is on its way: drop it to stay in sync
			 * (what already sits in the write pipe with it). */
			s->error = nbd_errno_to_nbd(err);
			s->state = SLOT_PAYLOAD;
			c->discard = s->req.len - s->piped;
			c->rs = RS_DISCARD;
			if (s->piped)
				nbd_wsplice_drop(c);
			s->piped = 0;
			if (!c->discard)
				return discard_done(c);
		} else {
			nbd_queue_reply(s, nbd_errno_to_nbd(err));
		}
		return 0;
	}
	if (s->type == NBD_CMD_WRITE) {
		/* Any payload a splice began with is in the pipe. */
		return payload_piece(s);
	} else {
		s->state = SLOT_INFLIGHT;
		tap_req_submit(&s->req);
	}
	return 0;
}

/* Ask the tap for s's request (a buffer, then submission or, for a
 * WRITE, its payload). 0 or a negative errno (c failed). */
static int slot_prepare(struct nbd_slot *s)
{
	int ret;

	s->prepared = true;
	s->state = SLOT_PREPARE;
	ret = tap_req_prepare(s->conn->tap, &s->req, slot_ready);
	if (ret != 1)
		return prepare_result(s, ret);
	return 0;
}

static void slot_ready(struct tap_req *req, int err)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);

	/* A failure is recorded in the connection: the run kills it. */
	(void)prepare_result(s, err);
	nbd_conn_defer(s->conn);
}

/* A piece of a WRITE in pieces is done, more to come (c->cur is s, the
 * reader waits in RS_WRITE_WAIT): on to the next piece, or on an error
 * drop the rest of the payload and then say so. */
static void write_piece_done(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;
	struct tap_req *req = &s->req;

	if (!req->error) {
		tap_req_next(req);
		(void)payload_piece(s); /* a failure waits for the run */
		return;
	}
	log_debug("nbd: client %u: WRITE at %llu+%u failed at %llu: %s", c->id,
		  (unsigned long long)req->off, req->len, (unsigned long long)req->piece_off,
		  strerror(-req->error));
	s->error = nbd_errno_to_nbd(req->error);
	s->state = SLOT_PAYLOAD;
	c->discard = req->off + req->len - (req->piece_off + req->piece_len) - s->piped;
	c->rs = RS_DISCARD;
	if (s->piped)
		nbd_wsplice_drop(c);
	s->piped = 0;
	if (!c->discard)
		(void)discard_done(c);
}

static void slot_done(struct tap_req *req)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);

	if (s->conn->cur == s && !nbd_conn_gone(s->conn)) {
		write_piece_done(s);
		nbd_conn_defer(s->conn);
		return;
	}
	if (req->error)
		log_debug("nbd: client %u: %s at %llu+%u: %s", s->conn->id, nbd_cmd_name(s->type),
			  (unsigned long long)req->off, req->len, strerror(-req->error));
	nbd_queue_reply(s, nbd_errno_to_nbd(req->error));
	nbd_conn_defer(s->conn);
}

/* Start a READ the usual way: a pool buffer, the tap, a copy. */
static int read_start(struct nbd_slot *s, uint32_t flags)
{
	memset(&s->req, 0, sizeof(s->req));
	s->req.op = IMAGE_OP_READ;
	s->req.flags = flags;
	s->req.off = s->off;
	s->req.len = s->len;
	s->req.done = slot_done;
	return slot_prepare(s);
}

/* Whether this eligible READ should look for holes first. */
static bool probe_wanted(struct nbd_conn *c)
{
	if (c->probing)
		return false;
	if (!c->probe_skip)
		return c->probing = true;
	c->probe_skip--;
	return false;
}

static void probe_learn(struct nbd_conn *c, bool found_zeros)
{
	c->probing = false;
	if (found_zeros) {
		c->probe_misses = 0;
		c->probe_skip = 0;
		return;
	}
	if (c->probe_misses < NBD_PROBE_BACKOFF_MAX)
		c->probe_misses++;
	c->probe_skip = (1u << c->probe_misses) - 1;
}

/* The BLOCK_STATUS probe of a sparse READ finished: plan the reply. A
 * probe that failed only costs the optimisation; the READ says what is
 * really wrong, if anything. */
static void probe_done(struct tap_req *req)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);
	struct nbd_conn *c = s->conn;

	if (nbd_conn_gone(c)) {
		nbd_slot_free(s);
		nbd_conn_defer(c);
		return;
	}
	s->npieces = 0;
	if (!req->error)
		s->npieces = nbd_plan_read(s->ext, MIN(req->ext_count, (uint32_t)NBD_EXTENTS),
					   s->len, s->pieces, NBD_READ_CHUNKS);
	tap_req_release(req);
	s->prepared = false;
	s->sparse = s->npieces > 1 || (s->npieces == 1 && s->pieces[0].hole);
	probe_learn(c, s->sparse);
	/* A failure is recorded in the connection: the run kills it. */
	if (s->npieces == 1 && s->pieces[0].hole)
		nbd_queue_reply(s, 0); /* all zeros: nothing to read */
	else if (s->sparse || !nbd_splice_read(s))
		(void)read_start(s, TAP_F_QOS_PAID); /* the probe paid for it */
	nbd_conn_defer(c);
}

static void probe_ready(struct tap_req *req, int err)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);

	if (nbd_conn_gone(s->conn)) {
		nbd_slot_free(s);
	} else if (err < 0) {
		s->conn->probing = false;
		tap_req_release(req);
		s->prepared = false;
		(void)read_start(s, 0); /* a failure waits for the run */
	} else {
		s->state = SLOT_INFLIGHT;
		tap_req_submit(req);
	}
	nbd_conn_defer(s->conn);
}

/* Sparse READ: ask the tap where the holes are before reading. 0 or a
 * negative errno (c failed). */
static int start_probe(struct nbd_slot *s)
{
	int ret;

	s->req.op = IMAGE_OP_BLOCK_STATUS;
	s->req.flags = TAP_F_READ_PROBE; /* QoS charges it as the READ */
	s->req.off = s->off;
	s->req.len = s->len;
	s->req.ext = s->ext;
	s->req.ext_max = NBD_EXTENTS;
	s->req.done = probe_done;
	s->prepared = true;
	s->state = SLOT_PREPARE;
	ret = tap_req_prepare(s->conn->tap, &s->req, probe_ready);
	if (ret == 0) {
		s->state = SLOT_INFLIGHT;
		tap_req_submit(&s->req);
	} else if (ret < 0) {
		s->conn->probing = false;
		tap_req_release(&s->req);
		s->prepared = false;
		return read_start(s, 0);
	}
	return 0;
}

static enum image_op submit_op(uint16_t type)
{
	switch (type) {
	case NBD_CMD_TRIM:
		return IMAGE_OP_TRIM;
	case NBD_CMD_WRITE_ZEROES:
		return IMAGE_OP_WRITE_ZEROES;
	case NBD_CMD_CACHE:
		return IMAGE_OP_CACHE;
	default:
		return IMAGE_OP_FLUSH;
	}
}

static uint32_t image_flags(uint16_t f)
{
	return (f & NBD_CMD_FLAG_FUA ? IMAGE_F_FUA : 0) |
	       (f & NBD_CMD_FLAG_NO_HOLE ? IMAGE_F_NO_HOLE : 0) |
	       (f & NBD_CMD_FLAG_FAST_ZERO ? IMAGE_F_FAST_ZERO : 0);
}

/* Returns 0 or a negative errno (c failed). */
static int handle_request(struct nbd_conn *c, const struct nbd_request *r)
{
	uint32_t error;
	enum nbd_action act = nbd_classify(r, &c->view, &error);
	struct nbd_slot *s;
	int ret;

	if (act == NBD_ACT_HANGUP) {
		char why[96];

		snprintf(why, sizeof(why), "%s of %u bytes is too long", nbd_cmd_name(r->type),
			 r->len);
		return nbd_fail(c, -EMSGSIZE, why);
	}
	if (act == NBD_ACT_DISC) {
		log_debug("nbd: client %u: disconnect requested", c->id);
		c->closing = true;
		c->rs = RS_STOP;
		return 0;
	}
	s = nbd_slot_get(c, r);
	s->req.off = r->off;
	s->req.len = r->len;
	s->req.done = slot_done;
	switch (act) {
	case NBD_ACT_REPLY:
		if (error)
			log_debug("nbd: client %u: %s (type %u) at %llu+%u refused: error %u",
				  c->id, nbd_cmd_name(r->type), r->type, (unsigned long long)r->off,
				  r->len, error);
		nbd_queue_reply(s, error);
		return 0;
	case NBD_ACT_DISCARD:
		s->error = error;
		s->state = SLOT_PAYLOAD;
		c->cur = s;
		c->discard = r->len;
		c->rs = RS_DISCARD;
		return 0;
	case NBD_ACT_READ:
		nbd_slot_hold(s);
		if (c->structured && !(r->flags & NBD_CMD_FLAG_DF) && r->len >= NBD_SPARSE_MIN &&
		    probe_wanted(c))
			return start_probe(s);
		if ((ret = nbd_splice_read(s)))
			return MIN(ret, 0);
		s->req.op = IMAGE_OP_READ;
		break;
	case NBD_ACT_WRITE:
		nbd_slot_hold(s);
		s->req.op = IMAGE_OP_WRITE;
		s->req.flags = image_flags(r->flags & NBD_CMD_FLAG_FUA);
		c->cur = s;
		if (nbd_wsplice_start(s))
			return 0;
		c->rs = RS_WRITE_WAIT;
		break;
	case NBD_ACT_BLOCK_STATUS:
		s->req.op = IMAGE_OP_BLOCK_STATUS;
		s->req.ext = s->ext;
		s->req.ext_max = NBD_EXTENTS;
		break;
	default: /* NBD_ACT_SUBMIT */
		s->req.op = submit_op(r->type);
		s->req.flags = image_flags(r->flags);
		if (r->type == NBD_CMD_FLUSH)
			s->req.off = s->req.len = 0;
		break;
	}
	return slot_prepare(s);
}

int nbd_reads_resume(struct nbd_conn *c)
{
	struct nbd_slot *s;
	int r;

	while ((r = nbd_splice_resume(c, &s)) > 0)
		if ((r = read_start(s, 0)) < 0)
			return r;
	return r;
}

/* ---- input ---- */

/* 0 or a negative errno (c failed). */
static int discard_done(struct nbd_conn *c)
{
	struct nbd_slot *s = c->cur;

	if (!s)
		return nbd_hs_opt_discarded(c);
	c->cur = NULL;
	c->rs = RS_HDR;
	nbd_queue_reply(s, s->error);
	return 0;
}

/* A splicing WRITE that must go on the usual way (RS_WRITE_WAIT after
 * nbd_wsplice_put or nbd_wsplice_recv) asks the tap for a buffer. */
static int wsplice_usual(struct nbd_conn *c)
{
	return c->rs == RS_WRITE_WAIT ? slot_prepare(c->cur) : 0;
}

/* A piece of payload is in: write it. A WRITE in pieces keeps the reader
 * (c->cur) until its last piece is submitted: the next piece's payload is
 * read only once this one is written, into the same buffer. */
static void payload_done(struct nbd_conn *c)
{
	struct nbd_slot *s = c->cur;

	if (tap_req_more(&s->req)) {
		c->rs = RS_WRITE_WAIT;
	} else {
		c->cur = NULL;
		c->rs = RS_HDR;
	}
	s->state = SLOT_INFLIGHT;
	tap_req_submit(&s->req);
}

/* Act on buffered input. Returns 1 after progress, 0 when more bytes are
 * needed, -EAGAIN when input must wait (no slot, buffer pending, closing),
 * or another negative errno (c failed). */
static int conn_consume(struct nbd_conn *c)
{
	unsigned char *p = c->in + c->in_start;
	size_t avail = c->in_end - c->in_start, n;
	struct nbd_request r;

	switch (c->rs) {
	case RS_FLAGS:
	case RS_OPT:
		return nbd_hs_consume(c);
	case RS_HDR:
		if (c->closing || !nbd_slot_available(c))
			return -EAGAIN;
		if (avail < NBD_REQUEST_LEN)
			return 0;
		if (nbd_parse_request(p, &r) < 0)
			return nbd_fail(c, -EPROTO, "bad request magic");
		/* The per-client cap: leave the header where it is until
		 * replies drain. One request alone may exceed it, so a big
		 * request never waits forever. */
		if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) && c->bytes_held &&
		    c->bytes_held + r.len > nbd_server_limits()->max_client_bytes)
			return -EAGAIN;
		c->in_start += NBD_REQUEST_LEN;
		return handle_request(c, &r) ?: 1;
	case RS_PAYLOAD:
		if (!avail)
			return 0;
		n = MIN(avail, (size_t)(c->cur->req.piece_len - c->got));
		memcpy((char *)c->cur->req.buf + c->got, p, n);
		c->got += n;
		c->in_start += n;
		if (c->got == c->cur->req.piece_len)
			payload_done(c);
		return 1;
	case RS_SPLICE:
		if (!avail)
			return 0;
		n = MIN(avail, (size_t)(c->cur->len - c->got));
		c->in_start += nbd_wsplice_put(c, p, n);
		return wsplice_usual(c) ?: 1;
	case RS_DISCARD:
		if (!avail)
			return 0;
		n = MIN(avail, c->discard);
		c->in_start += n;
		c->discard -= n;
		if (!c->discard)
			return discard_done(c) ?: 1;
		return 1;
	default: /* RS_WRITE_WAIT, RS_TLS (see tls_step), RS_STOP */
		return -EAGAIN;
	}
}

/* Like recv(); a plain socket that gave fewer bytes than asked is empty
 * for now (sets *drained), which spares the recv() that would say so.
 * The caller checks c->failed afterwards (a WRITE leaving the splice path
 * can fail to start). */
static ssize_t conn_recv(struct nbd_conn *c, bool *drained)
{
	ssize_t n;
	size_t want;

	if (c->in_start == c->in_end)
		c->in_start = c->in_end = 0;
	if (c->rs == RS_SPLICE && c->in_start == c->in_end) {
		n = nbd_wsplice_recv(c, drained);
		if (c->rs == RS_WRITE_WAIT) {
			int e = errno;

			(void)wsplice_usual(c);
			errno = e;
		}
		return n;
	}
	if (c->rs == RS_PAYLOAD && c->in_start == c->in_end) {
		/* Straight into the tap's buffer: no copy for big writes. */
		struct nbd_slot *s = c->cur;

		want = s->req.piece_len - c->got;
		n = sock_recv(c, (char *)s->req.buf + c->got, want);
		*drained = !c->tls_up && n > 0 && (size_t)n < want;
		if (n > 0) {
			c->got += n;
			if (c->got == s->req.piece_len)
				payload_done(c);
		}
		return n;
	}
	if (c->in_start) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
	}
	want = NBD_IN_BUF - c->in_end;
	n = sock_recv(c, c->in + c->in_end, want);
	*drained = !c->tls_up && n > 0 && (size_t)n < want;
	if (n > 0)
		c->in_end += n;
	return n;
}

static void read_enable(struct nbd_conn *c, bool on)
{
	if (!on)
		c->sock_idle = false; /* nobody watches the socket now */
	if (on == c->reading || c->dead)
		return;
	if (on)
		event_add(c->ev_read, NULL);
	else
		event_del(c->ev_read);
	c->reading = on;
}

/* The TLS handshake after STARTTLS: once the ACK is out in the clear, let
 * GnuTLS run until it waits for the socket. Returns 1 when option haggling
 * can go on (under TLS), 0 to wait, a negative errno when it failed. */
static int tls_step(struct nbd_conn *c)
{
	char why[160];
	int r;

	if (c->hs_off < c->hs_len) {
		read_enable(c, false); /* the flush arms EV_WRITE */
		return 0;
	}
	r = nbd_tls_handshake(c->tls, &c->tls_want_write, why, sizeof(why));
	if (r < 0)
		return nbd_fail(c, r, why);
	if (r == 0) {
		read_enable(c, !c->tls_want_write);
		return 0;
	}
	c->tls_up = true;
	/* Nothing negotiated in the clear carries over (the protocol has the
	 * client start again under TLS). */
	c->structured = false;
	c->meta_set = false;
	c->rs = RS_OPT;
	return 1;
}

int nbd_conn_pump(struct nbd_conn *c)
{
	int budget = NBD_RECV_BUDGET;
	bool drained = false;
	int r;

	if (c->rs == RS_TLS && (r = tls_step(c)) <= 0)
		return MIN(r, 0);
	for (;;) {
		ssize_t n;

		r = conn_consume(c);
		if (r < 0 && r != -EAGAIN)
			return r;
		/* A safety net: a failure recorded on a path that did not
		 * return it. */
		if (c->failed)
			return -EIO;
		if (r > 0)
			continue;
		if (r == -EAGAIN) {
			read_enable(c, false);
			return 0;
		}
		if (drained || (c->sock_idle && c->reading)) {
			/* Nothing to read until the loop says otherwise. */
			read_enable(c, true);
			c->sock_idle = !c->tls_up;
			return 0;
		}
		if (budget-- == 0) {
			read_enable(c, true);
			/* Input GnuTLS already decrypted makes no socket
			 * readable: come back for it on the next turn. */
			if (nbd_tls_pending(c->tls))
				event_active(c->ev_read, EV_READ, 0);
			return 0;
		}
		n = conn_recv(c, &drained);
		if (c->failed)
			return -EIO;
		if (n == 0) {
			/* Between requests with nothing pending, a hang-up is
			 * merely impolite (no DISC); anywhere else it cut a
			 * message short. */
			if (c->rs == RS_HDR && c->in_start == c->in_end && !c->busy)
				return nbd_fail(c, -ECONNRESET, NULL);
			return nbd_fail(c, -ECONNRESET, "unexpected end of input");
		}
		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			if (e == EAGAIN || e == EWOULDBLOCK) {
				read_enable(c, true);
				c->sock_idle = !c->tls_up;
				return 0;
			}
			return nbd_fail(c, -e, strerror(e));
		}
	}
}
