/* The data path of one NBD connection: reading the socket, turning requests
 * into tap requests held in a fixed array of slots (no malloc per request),
 * and writing replies in completion order through an output queue that
 * survives partial writes. Wire details live in nbd-proto.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/event.h>

#include "log.h"
#include "nbd-internal.h"

/* ---- slots ---- */

void nbd_slots_init(struct nbd_conn *c)
{
	TAILQ_INIT(&c->outq);
	TAILQ_INIT(&c->freeq);
	for (unsigned i = 0; i < NBD_SLOTS; i++) {
		c->slots[i].conn = c;
		TAILQ_INSERT_TAIL(&c->freeq, &c->slots[i], link);
	}
}

static struct nbd_slot *slot_get(struct nbd_conn *c)
{
	struct nbd_slot *s = TAILQ_FIRST(&c->freeq);

	TAILQ_REMOVE(&c->freeq, s, link);
	memset(&s->req, 0, sizeof(s->req));
	s->prepared = false;
	s->with_data = false;
	s->error = 0;
	s->sent = 0;
	c->busy++;
	return s;
}

static void slot_free(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;

	if (s->prepared)
		tap_req_release(&s->req);
	s->prepared = false;
	s->state = SLOT_FREE;
	TAILQ_INSERT_TAIL(&c->freeq, s, link);
	c->busy--;
	/* A free slot may unblock the reader. */
	c->rerun = true;
}

void nbd_slots_drop(struct nbd_conn *c)
{
	/* Requests the tap still runs come back through slot_done. */
	for (unsigned i = 0; i < NBD_SLOTS; i++) {
		struct nbd_slot *s = &c->slots[i];

		if (s->state == SLOT_FREE || s->state == SLOT_INFLIGHT)
			continue;
		if (s->state == SLOT_QUEUED)
			TAILQ_REMOVE(&c->outq, s, link);
		slot_free(s);
	}
}

/* ---- output ---- */

static void queue_reply(struct nbd_slot *s, uint32_t error)
{
	struct nbd_conn *c = s->conn;

	if (c->dead) {
		slot_free(s);
		return;
	}
	nbd_encode_simple_reply(s->hdr, error, s->cookie);
	s->with_data = s->type == NBD_CMD_READ && !error;
	s->sent = 0;
	s->state = SLOT_QUEUED;
	TAILQ_INSERT_TAIL(&c->outq, s, link);
}

static size_t slot_total(const struct nbd_slot *s)
{
	return NBD_SIMPLE_REPLY_LEN + (s->with_data ? s->req.len : 0);
}

void nbd_conn_flush(struct nbd_conn *c)
{
	while (!c->dead) {
		struct iovec iov[NBD_IOV];
		struct msghdr msg = {.msg_iov = iov};
		size_t n = 0;
		ssize_t w;

		if (c->hs_off < c->hs_len) {
			iov[n].iov_base = c->hs + c->hs_off;
			iov[n++].iov_len = c->hs_len - c->hs_off;
		} else {
			struct nbd_slot *s;

			TAILQ_FOREACH (s, &c->outq, link) {
				if (n + 2 > NBD_IOV)
					break;
				if (s->sent < NBD_SIMPLE_REPLY_LEN) {
					iov[n].iov_base = s->hdr + s->sent;
					iov[n++].iov_len = NBD_SIMPLE_REPLY_LEN - s->sent;
					if (s->with_data) {
						iov[n].iov_base = s->req.buf;
						iov[n++].iov_len = s->req.len;
					}
				} else {
					size_t done = s->sent - NBD_SIMPLE_REPLY_LEN;

					iov[n].iov_base = (char *)s->req.buf + done;
					iov[n++].iov_len = s->req.len - done;
				}
			}
		}
		if (!n) {
			if (c->writing)
				event_del(c->ev_write);
			c->writing = false;
			return;
		}
		msg.msg_iovlen = n;
		w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (!c->writing)
					event_add(c->ev_write, NULL);
				c->writing = true;
				return;
			}
			nbd_conn_kill(c, strerror(errno));
			return;
		}
		if (c->hs_off < c->hs_len) {
			c->hs_off += (size_t)w;
			continue;
		}
		while (w > 0) {
			struct nbd_slot *s = TAILQ_FIRST(&c->outq);
			size_t left = slot_total(s) - s->sent;

			if ((size_t)w < left) {
				s->sent += (size_t)w;
				break;
			}
			w -= (ssize_t)left;
			TAILQ_REMOVE(&c->outq, s, link);
			/* The buffer was needed until now: release it. */
			slot_free(s);
		}
	}
}

/* ---- request side ---- */

/* Outcome of tap_req_prepare, immediate or through the ready callback. */
static void prepare_result(struct nbd_slot *s, int err)
{
	struct nbd_conn *c = s->conn;

	if (c->dead) {
		slot_free(s);
		return;
	}
	if (err < 0) {
		if (s->type == NBD_CMD_WRITE) {
			/* The payload is on its way: drop it to stay in sync. */
			s->error = nbd_errno_to_nbd(err);
			s->state = SLOT_PAYLOAD;
			c->discard = s->req.len;
			c->rs = RS_DISCARD;
		} else {
			queue_reply(s, nbd_errno_to_nbd(err));
		}
		return;
	}
	if (s->type == NBD_CMD_WRITE) {
		s->state = SLOT_PAYLOAD;
		c->got = 0;
		c->rs = RS_PAYLOAD;
	} else {
		s->state = SLOT_INFLIGHT;
		tap_req_submit(&s->req);
	}
}

static void slot_ready(struct tap_req *req, int err)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);

	prepare_result(s, err);
	nbd_conn_run(s->conn);
}

static void slot_done(struct tap_req *req)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);

	if (req->error)
		log_debug("nbd: client %u: %s at %llu+%u: %s", s->conn->id, nbd_cmd_name(s->type),
			  (unsigned long long)req->off, req->len, strerror(-req->error));
	queue_reply(s, nbd_errno_to_nbd(req->error));
	nbd_conn_run(s->conn);
}

static void handle_request(struct nbd_conn *c, const struct nbd_request *r)
{
	uint32_t error;
	enum nbd_action act = nbd_classify(r, c->tx_flags, c->size, TAP_REQ_MAX, &error);
	struct nbd_slot *s;
	int ret;

	if (act == NBD_ACT_HANGUP) {
		char why[96];

		snprintf(why, sizeof(why), "%s of %u bytes is too long", nbd_cmd_name(r->type),
			 r->len);
		nbd_conn_kill(c, why);
		return;
	}
	if (act == NBD_ACT_DISC) {
		log_debug("nbd: client %u: disconnect requested", c->id);
		c->closing = true;
		c->rs = RS_STOP;
		return;
	}
	s = slot_get(c);
	s->cookie = r->cookie;
	s->type = r->type;
	switch (act) {
	case NBD_ACT_REPLY:
		if (error)
			log_debug("nbd: client %u: %s (type %u) at %llu+%u refused: error %u",
				  c->id, nbd_cmd_name(r->type), r->type, (unsigned long long)r->off,
				  r->len, error);
		queue_reply(s, error);
		return;
	case NBD_ACT_DISCARD:
		s->error = error;
		s->state = SLOT_PAYLOAD;
		c->cur = s;
		c->discard = r->len;
		c->rs = RS_DISCARD;
		return;
	case NBD_ACT_READ:
		s->req.op = TAP_OP_READ;
		break;
	case NBD_ACT_WRITE:
		s->req.op = TAP_OP_WRITE;
		if (r->flags & NBD_CMD_FLAG_FUA)
			s->req.flags = IMAGE_F_FUA;
		c->cur = s;
		c->rs = RS_WRITE_WAIT;
		break;
	default: /* NBD_ACT_FLUSH */
		s->req.op = TAP_OP_FLUSH;
		break;
	}
	if (act != NBD_ACT_FLUSH) {
		s->req.off = r->off;
		s->req.len = r->len;
	}
	s->req.done = slot_done;
	s->prepared = true;
	s->state = SLOT_PREPARE;
	ret = tap_req_prepare(c->tap, &s->req, slot_ready);
	if (ret != 1)
		prepare_result(s, ret);
}

/* ---- input ---- */

static void discard_done(struct nbd_conn *c)
{
	struct nbd_slot *s = c->cur;

	if (s) {
		c->cur = NULL;
		c->rs = RS_HDR;
		queue_reply(s, s->error);
	} else {
		nbd_hs_opt_discarded(c);
	}
}

static void payload_done(struct nbd_conn *c)
{
	struct nbd_slot *s = c->cur;

	c->cur = NULL;
	c->rs = RS_HDR;
	s->state = SLOT_INFLIGHT;
	tap_req_submit(&s->req);
}

/* Act on buffered input. Returns 1 after progress, 0 when more bytes are
 * needed, -1 when input must wait (no slot, buffer pending, closing). */
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
		if (c->closing || TAILQ_EMPTY(&c->freeq))
			return -1;
		if (avail < NBD_REQUEST_LEN)
			return 0;
		if (nbd_parse_request(p, &r) < 0) {
			nbd_conn_kill(c, "bad request magic");
			return -1;
		}
		c->in_start += NBD_REQUEST_LEN;
		handle_request(c, &r);
		return 1;
	case RS_PAYLOAD:
		if (!avail)
			return 0;
		n = MIN(avail, (size_t)(c->cur->req.len - c->got));
		memcpy((char *)c->cur->req.buf + c->got, p, n);
		c->got += n;
		c->in_start += n;
		if (c->got == c->cur->req.len)
			payload_done(c);
		return 1;
	case RS_DISCARD:
		if (!avail)
			return 0;
		n = MIN(avail, c->discard);
		c->in_start += n;
		c->discard -= n;
		if (!c->discard)
			discard_done(c);
		return 1;
	default: /* RS_WRITE_WAIT, RS_STOP */
		return -1;
	}
}

static ssize_t conn_recv(struct nbd_conn *c)
{
	ssize_t n;

	if (c->in_start == c->in_end)
		c->in_start = c->in_end = 0;
	if (c->rs == RS_PAYLOAD && c->in_start == c->in_end) {
		/* Straight into the tap's buffer: no copy for big writes. */
		struct nbd_slot *s = c->cur;

		n = recv(c->fd, (char *)s->req.buf + c->got, s->req.len - c->got, 0);
		if (n > 0) {
			c->got += n;
			if (c->got == s->req.len)
				payload_done(c);
		}
		return n;
	}
	if (c->in_start) {
		memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
	}
	n = recv(c->fd, c->in + c->in_end, NBD_IN_BUF - c->in_end, 0);
	if (n > 0)
		c->in_end += n;
	return n;
}

static void read_enable(struct nbd_conn *c, bool on)
{
	if (on == c->reading || c->dead)
		return;
	if (on)
		event_add(c->ev_read, NULL);
	else
		event_del(c->ev_read);
	c->reading = on;
}

void nbd_conn_pump(struct nbd_conn *c)
{
	int budget = NBD_RECV_BUDGET;

	while (!c->dead) {
		int r = conn_consume(c);
		ssize_t n;

		if (c->dead)
			return;
		if (r > 0)
			continue;
		if (r < 0) {
			read_enable(c, false);
			return;
		}
		if (budget-- == 0) {
			read_enable(c, true);
			return;
		}
		n = conn_recv(c);
		if (n == 0) {
			/* Between requests with nothing pending, a hang-up is
			 * merely impolite (no DISC); anywhere else it cut a
			 * message short. */
			if (c->rs == RS_HDR && c->in_start == c->in_end && !c->busy)
				nbd_conn_kill(c, NULL);
			else
				nbd_conn_kill(c, "unexpected end of input");
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				read_enable(c, true);
				return;
			}
			nbd_conn_kill(c, strerror(errno));
			return;
		}
	}
}
