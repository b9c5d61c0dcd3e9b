/* The NBD export: a unix-socket listener and one state machine per client
 * connection on the libevent loop. Requests become tap requests held in a
 * fixed array of slots per connection (no malloc per request); replies go
 * out in completion order through a per-connection output queue that
 * survives partial writes. Wire details live in nbd-proto.c. */
#include <errno.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "nbd-proto.h"
#include "nbd-server.h"
#include "tap.h"

/* Requests in flight per connection. When all slots are busy we stop
 * reading the socket: TCP-style backpressure instead of queues. */
#define NBD_SLOTS 64
/* Input buffer: big enough for a whole option (header and data) plus
 * read-ahead; write payloads beyond what it holds go straight to req->buf. */
#define NBD_IN_BUF (NBD_OPT_HDR_LEN + NBD_OPT_DATA_MAX + 4096)
/* Options longer than this are not worth discarding: hang up. */
#define NBD_OPT_DISCARD_MAX (1u << 20)
/* recv() calls per wakeup, so one busy client cannot starve the others. */
#define NBD_RECV_BUDGET 32
/* Slots gathered per sendmsg(): header and data each. */
#define NBD_IOV 64

enum slot_state {
	SLOT_FREE,
	SLOT_PREPARE,  /* waiting for tap_req_prepare's ready callback */
	SLOT_PAYLOAD,  /* WRITE: payload being read (or discarded) */
	SLOT_INFLIGHT, /* submitted to the tap, done callback pending */
	SLOT_QUEUED,   /* reply in the output queue */
};

struct nbd_conn;

struct nbd_slot {
	struct tap_req req;
	struct nbd_conn *conn;
	uint64_t cookie;
	uint16_t type;
	enum slot_state state;
	bool prepared;	/* tap_req_prepare was called: release when freed */
	bool with_data; /* the reply carries req.buf */
	uint32_t error; /* NBD error to send after a discarded payload */
	size_t sent;	/* bytes of header + data written */
	unsigned char hdr[NBD_SIMPLE_REPLY_LEN];
	TAILQ_ENTRY(nbd_slot) link; /* free list or output queue */
};

/* What the input side is doing. */
enum read_state {
	RS_FLAGS,      /* client flags */
	RS_OPT,	       /* option haggling */
	RS_HDR,	       /* transmission: next request header */
	RS_WRITE_WAIT, /* WRITE waiting for its buffer: do not read */
	RS_PAYLOAD,    /* WRITE payload into cur->req.buf */
	RS_DISCARD,    /* dropping bytes, then reply */
	RS_STOP,       /* nothing more will be read */
};

struct nbd_conn {
	LIST_ENTRY(nbd_conn) link;
	unsigned id;
	int fd;
	struct event *ev_read, *ev_write;
	bool reading, writing;
	enum read_state rs;
	bool no_zeroes;
	bool closing; /* close once idle (DISC, ABORT, server shutdown) */
	bool dead;    /* socket closed; waiting for in-flight requests */
	bool running, rerun;

	struct tap *tap; /* attached after GO / EXPORT_NAME */
	uint16_t tx_flags;
	uint64_t size;

	struct nbd_slot *cur; /* WRITE whose payload is being read */
	uint32_t got;
	uint64_t discard;     /* bytes still to drop */
	uint32_t discard_opt; /* the too-long option, in the handshake */

	/* Handshake replies, sent before any request reply exists. */
	unsigned char *hs;
	size_t hs_len, hs_cap, hs_off;

	TAILQ_HEAD(, nbd_slot) outq;
	TAILQ_HEAD(, nbd_slot) freeq;
	unsigned busy;

	size_t in_start, in_end;
	unsigned char in[NBD_IN_BUF];
	struct nbd_slot slots[NBD_SLOTS];
};

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

static void conn_run(struct nbd_conn *c);

/* ---- output ---- */

/* Room for n more handshake bytes; NULL (and the connection killed by the
 * caller) if memory is short. Handshake replies are rare and small except
 * LIST, so a growing buffer is fine here. */
static unsigned char *hs_space(struct nbd_conn *c, size_t n)
{
	if (c->hs_off == c->hs_len)
		c->hs_off = c->hs_len = 0;
	if (c->hs_len + n > c->hs_cap) {
		size_t cap = MAX(c->hs_cap * 2, c->hs_len + n + 256);
		unsigned char *p = realloc(c->hs, cap);

		if (!p)
			return NULL;
		c->hs = p;
		c->hs_cap = cap;
	}
	return c->hs + c->hs_len;
}

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
	close(c->fd);
	c->fd = -1;
	c->cur = NULL;
	/* Requests the tap still runs come back through slot_done. */
	for (unsigned i = 0; i < NBD_SLOTS; i++) {
		struct nbd_slot *s = &c->slots[i];

		if (s->state == SLOT_FREE || s->state == SLOT_INFLIGHT)
			continue;
		if (s->state == SLOT_QUEUED)
			TAILQ_REMOVE(&c->outq, s, link);
		if (s->prepared)
			tap_req_release(&s->req);
		s->prepared = false;
		s->state = SLOT_FREE;
		TAILQ_INSERT_TAIL(&c->freeq, s, link);
		c->busy--;
	}
}

static int hs_put(struct nbd_conn *c, const void *p, size_t n)
{
	unsigned char *d = hs_space(c, n);

	if (!d) {
		conn_kill(c, "out of memory");
		return -ENOMEM;
	}
	memcpy(d, p, n);
	c->hs_len += n;
	return 0;
}

static void opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *msg)
{
	size_t len = msg ? strlen(msg) : 0;
	unsigned char *d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + len);

	if (!d) {
		conn_kill(c, "out of memory");
		return;
	}
	nbd_encode_opt_reply(d, opt, type, len);
	if (len)
		memcpy(d + NBD_OPT_REPLY_HDR_LEN, msg, len);
	c->hs_len += NBD_OPT_REPLY_HDR_LEN + len;
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

/* Write as much as the socket takes; wait for EV_WRITE for the rest. */
static void conn_flush(struct nbd_conn *c)
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
			conn_kill(c, strerror(errno));
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

static void slot_done(struct tap_req *req);

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
	conn_run(s->conn);
}

static void slot_done(struct tap_req *req)
{
	struct nbd_slot *s = container_of(req, struct nbd_slot, req);

	if (req->error)
		log_debug("nbd: client %u: %s at %llu+%u: %s", s->conn->id, nbd_cmd_name(s->type),
			  (unsigned long long)req->off, req->len, strerror(-req->error));
	queue_reply(s, nbd_errno_to_nbd(req->error));
	conn_run(s->conn);
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
		conn_kill(c, why);
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

/* ---- option haggling ---- */

static struct tap *find_export(const char *name, size_t len)
{
	char buf[TAP_NAME_MAX + 1];

	if (len > TAP_NAME_MAX || !nbd_name_valid(name, len))
		return NULL;
	memcpy(buf, name, len);
	buf[len] = '\0';
	return tap_find(buf);
}

static void enter_transmission(struct nbd_conn *c, struct tap *t)
{
	c->tap = t;
	c->size = tap_size(t);
	c->tx_flags = nbd_tx_flags(tap_read_only(t), tap_can_flush(t), tap_can_fua(t));
	c->rs = RS_HDR;
	log_info("nbd: client %u: export %s (%llu bytes%s)", c->id, tap_name(t),
		 (unsigned long long)c->size, tap_read_only(t) ? ", read-only" : "");
}

static void opt_export_name(struct nbd_conn *c, const unsigned char *data, uint32_t len)
{
	unsigned char reply[NBD_EXPORT_NAME_REPLY_LEN];
	struct tap *t = find_export((const char *)data, len);
	size_t n;

	/* This option has no error reply: the protocol says hang up. */
	if (!t) {
		conn_kill(c, "EXPORT_NAME: no such export");
		return;
	}
	if (tap_attach(t) < 0) {
		conn_kill(c, "EXPORT_NAME: export is shutting down");
		return;
	}
	enter_transmission(c, t);
	n = nbd_encode_export_name_reply(reply, c->size, c->tx_flags, c->no_zeroes);
	hs_put(c, reply, n);
}

static void opt_go(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	unsigned char buf[NBD_INFO_EXPORT_LEN + NBD_INFO_BLOCK_SIZE_LEN];
	struct nbd_opt_go go;
	struct tap *t;
	char msg[128];
	size_t n;

	if (nbd_parse_opt_go(data, len, &go) < 0) {
		opt_reply(c, opt, NBD_REP_ERR_INVALID, "malformed request");
		return;
	}
	t = find_export(go.name, go.name_len);
	if (!t) {
		snprintf(msg, sizeof(msg), "no such export: %.*s", (int)MIN(go.name_len, 64u),
			 go.name);
		log_info("nbd: client %u: %s", c->id, msg);
		opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, msg);
		return;
	}
	if (opt == NBD_OPT_GO) {
		if (tap_attach(t) < 0) {
			opt_reply(c, opt, NBD_REP_ERR_SHUTDOWN, "export is shutting down");
			return;
		}
		c->tap = t; /* detached by conn_destroy whatever happens next */
	}
	n = nbd_encode_info_export(
		buf, opt, tap_size(t),
		nbd_tx_flags(tap_read_only(t), tap_can_flush(t), tap_can_fua(t)));
	/* The tap aligns and read-modify-writes, so any byte granularity
	 * works; 4 KiB is what avoids the read-modify-write. */
	n += nbd_encode_info_block_size(buf + n, opt, 1, 4096, TAP_REQ_MAX);
	if (hs_put(c, buf, n) < 0)
		return;
	opt_reply(c, opt, NBD_REP_ACK, NULL);
	if (opt == NBD_OPT_GO && !c->dead)
		enter_transmission(c, t);
}

static void opt_list(struct nbd_conn *c, uint32_t len)
{
	if (len) {
		opt_reply(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
		return;
	}
	for (struct tap *t = tap_first(); t; t = tap_next(t)) {
		const char *name = tap_name(t);
		size_t nl = strlen(name);
		unsigned char *d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + 4 + nl);

		if (!d) {
			conn_kill(c, "out of memory");
			return;
		}
		c->hs_len += nbd_encode_rep_server(d, name, (uint32_t)nl);
	}
	opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL);
}

static void handle_option(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	char msg[64];

	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		opt_export_name(c, data, len);
		break;
	case NBD_OPT_GO:
	case NBD_OPT_INFO:
		opt_go(c, opt, data, len);
		break;
	case NBD_OPT_LIST:
		opt_list(c, len);
		break;
	case NBD_OPT_ABORT:
		opt_reply(c, opt, NBD_REP_ACK, NULL);
		c->closing = true;
		c->rs = RS_STOP;
		break;
	default:
		snprintf(msg, sizeof(msg), "option %s (%u) not supported", nbd_opt_name(opt), opt);
		log_debug("nbd: client %u: %s", c->id, msg);
		opt_reply(c, opt, NBD_REP_ERR_UNSUP, msg);
		break;
	}
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
		c->rs = RS_OPT;
		opt_reply(c, c->discard_opt, NBD_REP_ERR_TOO_BIG, "option too long");
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
	struct nbd_opt_hdr oh;
	struct nbd_request r;
	bool nz;

	switch (c->rs) {
	case RS_FLAGS:
		if (avail < NBD_CLIENT_FLAGS_LEN)
			return 0;
		if (nbd_parse_client_flags(p, &nz) < 0) {
			conn_kill(c, "unknown client flags");
			return -1;
		}
		c->no_zeroes = nz;
		c->in_start += NBD_CLIENT_FLAGS_LEN;
		c->rs = RS_OPT;
		return 1;
	case RS_OPT:
		if (c->closing)
			return -1;
		if (avail < NBD_OPT_HDR_LEN)
			return 0;
		if (nbd_parse_opt_hdr(p, &oh) < 0) {
			conn_kill(c, "bad option magic");
			return -1;
		}
		if (oh.len > NBD_OPT_DATA_MAX) {
			if (oh.opt == NBD_OPT_EXPORT_NAME || oh.len > NBD_OPT_DISCARD_MAX) {
				conn_kill(c, "option too long");
				return -1;
			}
			c->in_start += NBD_OPT_HDR_LEN;
			c->discard = oh.len;
			c->discard_opt = oh.opt;
			c->rs = RS_DISCARD;
			return 1;
		}
		if (avail < NBD_OPT_HDR_LEN + oh.len)
			return 0;
		c->in_start += NBD_OPT_HDR_LEN + oh.len;
		handle_option(c, oh.opt, p + NBD_OPT_HDR_LEN, oh.len);
		return 1;
	case RS_HDR:
		if (c->closing || TAILQ_EMPTY(&c->freeq))
			return -1;
		if (avail < NBD_REQUEST_LEN)
			return 0;
		if (nbd_parse_request(p, &r) < 0) {
			conn_kill(c, "bad request magic");
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

static void conn_pump(struct nbd_conn *c)
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
				conn_kill(c, NULL);
			else
				conn_kill(c, "unexpected end of input");
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				read_enable(c, true);
				return;
			}
			conn_kill(c, strerror(errno));
			return;
		}
	}
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
static void conn_run(struct nbd_conn *c)
{
	int rounds = 0;

	if (c->running) {
		c->rerun = true;
		return;
	}
	c->running = true;
	do {
		c->rerun = false;
		conn_flush(c);
		conn_pump(c);
		conn_flush(c);
	} while (c->rerun && !c->dead && ++rounds < 8);
	c->running = false;
	if (c->rerun && !c->dead)
		event_active(c->ev_read, EV_READ, 0); /* finish on the next turn */

	/* Closing: nothing in flight (busy also covers a write payload being
	 * read) and every reply written. */
	if (!c->dead && c->closing && !c->busy && c->hs_off == c->hs_len)
		conn_kill(c, NULL);
	if (c->dead && !c->busy)
		conn_destroy(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_run(arg);
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
	TAILQ_INIT(&c->outq);
	TAILQ_INIT(&c->freeq);
	for (unsigned i = 0; i < NBD_SLOTS; i++) {
		c->slots[i].conn = c;
		TAILQ_INSERT_TAIL(&c->freeq, &c->slots[i], link);
	}
	c->ev_read = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_io, c);
	c->ev_write = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, on_io, c);
	if (!c->ev_read || !c->ev_write || hs_space(c, NBD_GREETING_LEN) == NULL) {
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
	c->hs_len = nbd_encode_greeting(c->hs);
	LIST_INSERT_HEAD(&srv.conns, c, link);
	srv.nconns++;
	log_debug("nbd: client %u: connected", c->id);
	conn_run(c);
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
		conn_run(c);
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
		conn_kill(c, NULL);
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
