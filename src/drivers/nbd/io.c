/* The nbd: driver's connection at work: requests out through sendmsg from
 * their own buffers, replies in (READ payloads straight into the io's
 * buffer), and the life of the connection: drop, requeue, reconnect with
 * backoff on the loop, and the timeout that turns waiting into EIO, both
 * for a server that is away and for one that holds a request without
 * answering (a stalled server: its connection is dropped). This file owns
 * struct nbdc, from nbdc_new to its free; nbd.c calls down. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/log.h"
#include "internal.h"

#define NBDC_HS_TIMEOUT_MS 5000
#define NBDC_BACKOFF_MIN_MS 50
#define NBDC_BACKOFF_MAX_MS 1000
/* A connection that lasted less than this did not end a backoff. */
#define NBDC_STABLE_MS 2000
#define NBDC_IOV_MAX 64
/* Replies handled per wake-up before the loop gets to other sockets. */
#define NBDC_READ_BATCH 128

static void nbdc_free(struct nbdc *c);
static void nbdc_arm_timer(struct nbdc *c);

/* r is finished with err: queue it for nbdc_deliver. */
static void nbdc_finish(struct nbdc *c, struct nbdc_req *r, int err)
{
	r->err = err;
	q_push(&c->done, r);
}

/* Call the done callbacks of finished requests; the last thing any entry
 * point does, since a callback may close the image (a stopping tap closes
 * it from its final flush's completion) and c may be gone afterwards. */
static void nbdc_deliver(struct nbdc *c)
{
	struct nbdc_req *r;

	if (c->delivering)
		return;
	c->delivering = true;
	while ((r = q_pop(&c->done))) {
		struct image_io *io = nbdc_io(r);

		io->done(io, r->err);
		if (c->close_pending) {
			nbdc_free(c);
			return;
		}
	}
	c->delivering = false;
}

static bool req_has_payload(const struct nbdc_req *r)
{
	return nbdc_io(r)->op == IMAGE_OP_WRITE && !r->flushing;
}

static uint32_t req_wire_len(const struct nbdc_req *r)
{
	return NBD_REQUEST_LEN + (req_has_payload(r) ? r->cur : 0);
}

static void nbdc_drop(struct nbdc *c, const char *why);

/* ---- sending ----------------------------------------------------------- */

static void nbdc_set_write(struct nbdc *c, bool on)
{
	if (on == c->write_armed)
		return;
	c->write_armed = on;
	if (on)
		event_add(c->ev_write, NULL);
	else
		event_del(c->ev_write);
}

/* Write as much of the send queue as the socket takes. Returns 0, or -1
 * when the connection was dropped. */
static int nbdc_flush_out(struct nbdc *c)
{
	while (c->send.head) {
		struct iovec iov[NBDC_IOV_MAX];
		struct msghdr msg = {.msg_iov = iov};
		struct nbdc_req *r;
		ssize_t n;
		int k = 0;

		for (r = c->send.head; r && k + 2 <= NBDC_IOV_MAX; r = r->next) {
			uint32_t s = r->sent;

			if (s < NBD_REQUEST_LEN) {
				iov[k].iov_base = r->hdr + s;
				iov[k++].iov_len = NBD_REQUEST_LEN - s;
				s = NBD_REQUEST_LEN;
			}
			if (req_has_payload(r)) {
				iov[k].iov_base =
					(char *)nbdc_io(r)->buf + r->done + (s - NBD_REQUEST_LEN);
				iov[k++].iov_len = r->cur - (s - NBD_REQUEST_LEN);
			}
		}
		msg.msg_iovlen = (size_t)k;
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			nbdc_set_write(c, true);
			return 0;
		}
		if (n < 0) {
			char why[64];

			snprintf(why, sizeof(why), "send: %s", strerror(errno));
			nbdc_drop(c, why);
			return -1;
		}
		while (n > 0) {
			uint32_t take;

			r = c->send.head;
			take = (uint32_t)MIN((size_t)n, (size_t)(req_wire_len(r) - r->sent));
			r->sent += take;
			n -= take;
			if (r->sent == req_wire_len(r))
				q_pop(&c->send); /* on the wire; its slot holds it */
		}
	}
	nbdc_set_write(c, false);
	return 0;
}

/* The next command of r: the whole request, the next piece of a long READ
 * or WRITE, or the flush that stands for FUA. */
static void nbdc_encode(struct nbdc *c, struct nbdc_req *r, uint16_t slot)
{
	struct image_io *io = nbdc_io(r);
	uint16_t type, flags = 0;
	uint64_t off = io->off + r->done;

	r->cookie = ((uint64_t)++c->seq << 16) | slot;
	r->sent = 0;
	if (r->flushing) {
		r->cur = 0;
		nbdc_encode_request(r->hdr, 0, NBD_CMD_FLUSH, r->cookie, 0, 0);
		return;
	}
	switch (io->op) {
	case IMAGE_OP_READ:
		type = NBD_CMD_READ;
		r->cur = MIN(io->len - r->done, c->max_payload);
		break;
	case IMAGE_OP_WRITE:
		type = NBD_CMD_WRITE;
		r->cur = MIN(io->len - r->done, c->max_payload);
		break;
	case IMAGE_OP_FLUSH:
		type = NBD_CMD_FLUSH;
		r->cur = 0;
		off = 0;
		break;
	case IMAGE_OP_TRIM:
		type = NBD_CMD_TRIM;
		r->cur = io->len;
		break;
	default:
		type = NBD_CMD_WRITE_ZEROES;
		r->cur = io->len;
		if (io->flags & IMAGE_F_NO_HOLE)
			flags |= NBD_CMD_FLAG_NO_HOLE;
		if ((io->flags & IMAGE_F_FAST_ZERO) && (c->x.tx_flags & NBD_FLAG_SEND_FAST_ZERO))
			flags |= NBD_CMD_FLAG_FAST_ZERO;
		break;
	}
	if ((io->flags & IMAGE_F_FUA) && (c->x.tx_flags & NBD_FLAG_SEND_FUA) &&
	    type != NBD_CMD_READ && type != NBD_CMD_FLUSH)
		flags |= NBD_CMD_FLAG_FUA;
	nbdc_encode_request(r->hdr, flags, type, r->cookie, off, r->cur);
}

/* Give waiting requests free slots and write them out. */
static void nbdc_kick(struct nbdc *c)
{
	struct nbdc_req *r;
	uint64_t now = 0;

	if (c->state != NBDC_UP)
		return;
	while (c->n_free && (r = q_pop(&c->wait))) {
		uint16_t slot = c->free_slots[--c->n_free];

		c->slots[slot] = r;
		nbdc_encode(c, r, slot);
		r->wire_ms = now ? now : (now = nbdc_now_ms());
		q_push(&c->send, r);
	}
	/* The first command on the wire starts the stall check. */
	if (now && !evtimer_pending(c->timer, NULL))
		nbdc_arm_timer(c);
	nbdc_flush_out(c);
}

/* ---- receiving --------------------------------------------------------- */

/* One command of r is answered. Returns -1 when the connection must go
 * (the server is shutting down: r goes back to wait for the next one). */
static int nbdc_answered(struct nbdc *c, struct nbdc_req *r, int err)
{
	struct image_io *io = nbdc_io(r);

	c->slots[r->cookie & (NBDC_SLOTS - 1)] = NULL;
	c->free_slots[c->n_free++] = (uint16_t)(r->cookie & (NBDC_SLOTS - 1));
	if (err == -ESHUTDOWN) {
		q_push_front(&c->wait, r);
		return -1;
	}
	if (err) {
		nbdc_finish(c, r, err);
		return 0;
	}
	r->wait_ms = 0; /* the server is answering */
	if (!r->flushing && (io->op == IMAGE_OP_READ || io->op == IMAGE_OP_WRITE))
		r->done += r->cur;
	else if (!r->flushing)
		r->done = io->len;
	if (r->done < io->len) {
		q_push_front(&c->wait, r);
	} else if (r->flush_after && !r->flushing) {
		r->flushing = true;
		q_push_front(&c->wait, r);
	} else {
		nbdc_finish(c, r, 0);
	}
	return 0;
}

/* Read one reply (or some of it). 1: go on, 0: the socket is empty, -1:
 * the connection was dropped. */
static int nbdc_read_one(struct nbdc *c)
{
	char why[96];
	ssize_t n;

	if (c->rreq) {
		struct nbdc_req *r = c->rreq;
		char *dst = (char *)nbdc_io(r)->buf + r->done + c->rgot;

		n = recv(c->fd, dst, r->cur - c->rgot, MSG_DONTWAIT);
		if (n > 0) {
			c->rgot += (uint32_t)n;
			if (c->rgot == r->cur) {
				c->rreq = NULL;
				if (nbdc_answered(c, r, 0) < 0)
					goto shutdown;
			}
			return 1;
		}
	} else {
		uint64_t cookie;
		uint32_t error;
		struct nbdc_req *r;
		int err;

		n = recv(c->fd, c->rhdr + c->rhdr_got, NBD_SIMPLE_REPLY_LEN - c->rhdr_got,
			 MSG_DONTWAIT);
		if (n <= 0)
			goto io_error;
		c->rhdr_got += (uint32_t)n;
		if (c->rhdr_got < NBD_SIMPLE_REPLY_LEN)
			return 1;
		c->rhdr_got = 0;
		if (nbdc_parse_simple_reply(c->rhdr, &error, &cookie) < 0) {
			nbdc_drop(c, "protocol error: bad reply magic");
			return -1;
		}
		r = c->slots[cookie & (NBDC_SLOTS - 1)];
		if (!r || r->cookie != cookie || r->sent < req_wire_len(r)) {
			snprintf(why, sizeof(why), "protocol error: reply to unknown cookie %#llx",
				 (unsigned long long)cookie);
			nbdc_drop(c, why);
			return -1;
		}
		err = nbdc_error_to_errno(error);
		if (!err && nbdc_io(r)->op == IMAGE_OP_READ && !r->flushing && r->cur) {
			c->rreq = r;
			c->rgot = 0;
			return 1;
		}
		if (nbdc_answered(c, r, err) < 0)
			goto shutdown;
		return 1;
	}
io_error:
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n == 0)
		snprintf(why, sizeof(why), "server closed the connection");
	else
		snprintf(why, sizeof(why), "recv: %s", strerror(errno));
	nbdc_drop(c, why);
	return -1;
shutdown:
	nbdc_drop(c, "server is shutting down (ESHUTDOWN)");
	return -1;
}

/* ---- connection life --------------------------------------------------- */

static void nbdc_on_fd(evutil_socket_t fd, short what, void *arg);

static void nbdc_close_fd(struct nbdc *c)
{
	if (c->ev_read)
		event_free(c->ev_read);
	if (c->ev_write)
		event_free(c->ev_write);
	c->ev_read = c->ev_write = NULL;
	c->write_armed = false;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Watch c->fd on the loop (new events for each new socket). */
static int nbdc_watch_fd(struct nbdc *c)
{
	c->ev_read = event_new(c->base, c->fd, EV_READ | EV_PERSIST, nbdc_on_fd, c);
	c->ev_write = event_new(c->base, c->fd, EV_WRITE | EV_PERSIST, nbdc_on_fd, c);
	if (!c->ev_read || !c->ev_write || event_add(c->ev_read, NULL) < 0)
		return -ENOMEM;
	return 0;
}

/* Every request, on the wire or not, waits for the next connection from
 * now; those on the wire go first, in the order they were sent. */
static void nbdc_requeue_all(struct nbdc *c, uint64_t now)
{
	struct nbdc_queue q = {0};
	struct nbdc_req *r;

	for (unsigned i = 0; i < NBDC_SLOTS; i++) {
		r = c->slots[i];
		if (!r)
			continue;
		c->slots[i] = NULL;
		/* Insertion by sequence number keeps resends in order. */
		if (!q.head || (q.tail->cookie >> 16) < (r->cookie >> 16)) {
			q_push(&q, r);
		} else {
			struct nbdc_req **p = &q.head;

			while ((*p)->cookie >> 16 < r->cookie >> 16)
				p = &(*p)->next;
			r->next = *p;
			*p = r;
		}
	}
	c->send.head = c->send.tail = NULL;
	if (q.head) {
		q.tail->next = c->wait.head;
		if (!c->wait.tail)
			c->wait.tail = q.tail;
		c->wait.head = q.head;
	}
	for (r = c->wait.head; r; r = r->next) {
		if (!r->wait_ms)
			r->wait_ms = now;
		r->sent = 0;
	}
	c->n_free = 0;
	for (unsigned i = NBDC_SLOTS; i-- > 0;)
		c->free_slots[c->n_free++] = (uint16_t)i;
	c->rreq = NULL;
	c->rhdr_got = 0;
}

static void nbdc_drop(struct nbdc *c, const char *why)
{
	uint64_t now = nbdc_now_ms();

	log_warn("nbd: %s: %s; reconnecting (requests wait up to %u s)", c->desc, why,
		 c->timeout_s);
	nbdc_close_fd(c);
	nbdc_requeue_all(c, now);
	c->state = NBDC_DOWN;
	c->down_ms = now;
	c->attempts = 0;
	if (now - c->up_ms < NBDC_STABLE_MS) {
		/* Flapping (a server that breaks on some request): keep
		 * backing off rather than reconnecting in a tight loop. */
		c->next_ms = now + c->backoff_ms;
		c->backoff_ms = MIN(c->backoff_ms * 2, NBDC_BACKOFF_MAX_MS);
	} else {
		/* At once: a restarting server may be back already. */
		c->backoff_ms = NBDC_BACKOFF_MIN_MS;
		c->next_ms = now;
	}
	nbdc_arm_timer(c);
}

/* Fail requests that waited too long for a connection. */
static void nbdc_expire(struct nbdc *c, uint64_t now)
{
	uint64_t limit = (uint64_t)c->timeout_s * 1000;
	struct nbdc_queue keep = {0}, dead = {0};
	struct nbdc_req *r;
	unsigned n = 0;

	while ((r = q_pop(&c->wait)))
		q_push(r->wait_ms && now - r->wait_ms >= limit ? &dead : &keep, r);
	c->wait = keep;
	if (!dead.head)
		return;
	while ((r = q_pop(&dead))) {
		n++;
		nbdc_finish(c, r, -EIO);
	}
	log_warn("nbd: %s: %u request%s failed with EIO: no server for %u s", c->desc, n,
		 n == 1 ? "" : "s", c->timeout_s);
}

/* When the oldest command on the wire was sent, or 0 for none. A scan of
 * the slots, once per timeout while the server answers. */
static uint64_t nbdc_oldest_on_wire(const struct nbdc *c)
{
	uint64_t oldest = 0;

	if (c->n_free == NBDC_SLOTS)
		return 0;
	for (unsigned i = 0; i < NBDC_SLOTS; i++)
		if (c->slots[i] && (!oldest || c->slots[i]->wire_ms < oldest))
			oldest = c->slots[i]->wire_ms;
	return oldest;
}

/* The timer: while the connection is not up, for the next reconnect
 * attempt and the first waiter's expiry; while it is up, for the stall
 * check of the oldest command on the wire. */
static void nbdc_arm_timer(struct nbdc *c)
{
	uint64_t now = nbdc_now_ms(), when = c->next_ms;
	struct timeval tv;

	if (c->state == NBDC_UP) {
		when = nbdc_oldest_on_wire(c);
		if (!when) {
			event_del(c->timer);
			return;
		}
		when += (uint64_t)c->timeout_s * 1000;
		when = when > now ? when - now : 0;
		tv.tv_sec = (time_t)(when / 1000);
		tv.tv_usec = (suseconds_t)(when % 1000 * 1000);
		event_add(c->timer, &tv);
		return;
	}
	/* The queue is short-lived while the server is away: a scan is fine. */
	for (struct nbdc_req *r = c->wait.head; r; r = r->next)
		if (r->wait_ms)
			when = MIN(when, r->wait_ms + (uint64_t)c->timeout_s * 1000);
	when = when > now ? when - now : 0;
	tv.tv_sec = (time_t)(when / 1000);
	tv.tv_usec = (suseconds_t)(when % 1000 * 1000);
	event_add(c->timer, &tv);
}

/* An attempt failed: wait longer before the next. */
static void nbdc_attempt_failed(struct nbdc *c, const char *msg)
{
	uint64_t now = nbdc_now_ms();

	log_debug("nbd: %s: reconnect attempt %u failed: %s", c->desc, c->attempts, msg);
	nbdc_close_fd(c);
	c->state = NBDC_DOWN;
	c->next_ms = now + c->backoff_ms;
	c->backoff_ms = MIN(c->backoff_ms * 2, NBDC_BACKOFF_MAX_MS);
	nbdc_arm_timer(c);
}

/* The server must offer the export it offered at open. */
static int nbdc_check_export(struct nbdc *c, const struct nbdc_export *x, struct errbuf *eb)
{
	if (x->size != c->img->size) {
		err_set(eb, "export size changed from %llu to %llu bytes",
			(unsigned long long)c->img->size, (unsigned long long)x->size);
		return -ESTALE;
	}
	if (!c->img->read_only && (x->tx_flags & NBD_FLAG_READ_ONLY)) {
		err_set(eb, "export became read-only");
		return -EROFS;
	}
	return 0;
}

static void nbdc_hs_progress(struct nbdc *c)
{
	struct errbuf eb = {{0}};
	int ret = nbdc_hs_step(c, &eb);

	if (ret == 0) {
		nbdc_set_write(c, nbdc_hs_wants_write(c));
		return;
	}
	if (ret > 0)
		ret = nbdc_check_export(c, &c->hs.x, &eb);
	if (ret < 0) {
		nbdc_attempt_failed(c, eb.msg);
		return;
	}
	nbdc_set_write(c, false);
	c->x.tx_flags = c->hs.x.tx_flags;
	c->state = NBDC_UP;
	c->up_ms = nbdc_now_ms();
	log_notice("nbd: %s: reconnected after %.1f s", c->desc,
		   (double)(nbdc_now_ms() - c->down_ms) / 1000);
	nbdc_arm_timer(c);
	nbdc_kick(c);
}

static void nbdc_attempt(struct nbdc *c)
{
	struct errbuf eb = {{0}};

	c->attempts++;
	if (nbdc_hs_start(c, c->addr_cur, &eb) < 0 || nbdc_watch_fd(c) < 0) {
		nbdc_attempt_failed(c, eb.msg[0] ? eb.msg : "out of memory");
		return;
	}
	c->state = NBDC_HANDSHAKE;
	c->next_ms = nbdc_now_ms() + NBDC_HS_TIMEOUT_MS;
	nbdc_arm_timer(c);
	nbdc_hs_progress(c);
}

/* The connection is up: has the server held a command past the timeout?
 * Then it is stalled. Its connection is dropped (so that a late reply
 * cannot land in a buffer given back), the requests it held that long
 * fail with EIO, and the others wait for the next connection as after
 * any drop. */
static void nbdc_check_stall(struct nbdc *c, uint64_t now)
{
	uint64_t limit = (uint64_t)c->timeout_s * 1000, oldest = nbdc_oldest_on_wire(c);
	char why[80];

	if (!oldest || now - oldest < limit) {
		nbdc_arm_timer(c);
		return;
	}
	/* Their wait began when they were sent: nbdc_expire fails them. */
	for (unsigned i = 0; i < NBDC_SLOTS; i++) {
		struct nbdc_req *r = c->slots[i];

		if (r && !r->wait_ms && now - r->wire_ms >= limit)
			r->wait_ms = r->wire_ms;
	}
	snprintf(why, sizeof(why), "no reply for %u s (server stalled)", c->timeout_s);
	nbdc_drop(c, why);
	nbdc_expire(c, now);
	nbdc_arm_timer(c);
}

static void nbdc_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct nbdc *c = arg;
	uint64_t now = nbdc_now_ms();

	(void)fd;
	(void)what;
	if (c->state == NBDC_UP) {
		nbdc_check_stall(c, now);
		nbdc_deliver(c);
		return;
	}
	nbdc_expire(c, now);
	if (now < c->next_ms) {
		nbdc_arm_timer(c);
		nbdc_deliver(c);
		return;
	}
	if (c->state == NBDC_HANDSHAKE)
		nbdc_attempt_failed(c, "handshake timed out");
	else
		nbdc_attempt(c);
	nbdc_deliver(c);
}

static void nbdc_on_fd(evutil_socket_t fd, short what, void *arg)
{
	struct nbdc *c = arg;

	(void)fd;
	if (c->state == NBDC_HANDSHAKE) {
		nbdc_hs_progress(c);
		return;
	}
	if (c->state != NBDC_UP)
		return;
	if ((what & EV_WRITE) && nbdc_flush_out(c) < 0)
		return;
	if (what & EV_READ) {
		for (int i = 0; i < NBDC_READ_BATCH; i++) {
			int ret = nbdc_read_one(c);

			if (ret < 0)
				break;
			if (ret == 0)
				break;
		}
		nbdc_kick(c);
	}
	nbdc_deliver(c);
}

/* ---- the life of struct nbdc --------------------------------------------- */

struct nbdc *nbdc_new(struct image *img, struct event_base *base)
{
	struct nbdc *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	c->img = img;
	c->base = base;
	c->backoff_ms = NBDC_BACKOFF_MIN_MS;
	return c;
}

int nbdc_start(struct nbdc *c)
{
	c->timer = evtimer_new(c->base, nbdc_on_timer, c);
	if (!c->timer || nbdc_watch_fd(c) < 0)
		return -ENOMEM;
	for (unsigned i = NBDC_SLOTS; i-- > 0;)
		c->free_slots[c->n_free++] = (uint16_t)i;
	c->state = NBDC_UP;
	c->up_ms = nbdc_now_ms();
	return 0;
}

void nbdc_enqueue(struct nbdc *c, struct nbdc_req *r)
{
	if (c->state != NBDC_UP)
		r->wait_ms = nbdc_now_ms();
	q_push(&c->wait, r);
	if (c->state == NBDC_UP)
		nbdc_kick(c);
	else if (!c->wait.head->next)
		nbdc_arm_timer(c); /* the first waiter sets the expiry */
}

void nbdc_release(struct nbdc *c)
{
	if (c->delivering) {
		/* Inside one of our done callbacks: nbdc_deliver frees. */
		nbdc_close_fd(c);
		if (c->timer)
			event_del(c->timer);
		c->close_pending = true;
		return;
	}
	nbdc_free(c);
}

static void nbdc_free(struct nbdc *c)
{
	nbdc_close_fd(c);
	if (c->timer)
		event_free(c->timer);
	free(c);
}
