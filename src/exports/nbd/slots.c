/* The request table of one NBD connection: a fixed array of slots (no
 * malloc per request), allocated when the connection enters transmission
 * and set up slot by slot as the client first needs them, and its free
 * list. The one place slots are taken and given back, so that the request
 * side, the reply side and splice.c can each finish with a slot without
 * reaching into one another. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void nbd_slots_init(struct nbd_conn *c)
{
	TAILQ_INIT(&c->outq);
	TAILQ_INIT(&c->freeq);
	TAILQ_INIT(&c->splice_q);
	c->slots = NULL;
	c->slots_used = 0;
}

int nbd_slots_alloc(struct nbd_conn *c)
{
	/* malloc, not calloc: pages of slots never used are never touched,
	 * so they cost nothing (locked memory is locked on fault). */
	if (!c->slots)
		c->slots = malloc(NBD_SLOTS * sizeof(*c->slots));
	return c->slots ? 0 : -ENOMEM;
}

bool nbd_slot_available(const struct nbd_conn *c)
{
	return !TAILQ_EMPTY(&c->freeq) || (c->slots && c->slots_used < NBD_SLOTS);
}

struct nbd_slot *nbd_slot_get(struct nbd_conn *c, const struct nbd_request *r)
{
	struct nbd_slot *s = TAILQ_FIRST(&c->freeq);

	if (s) {
		TAILQ_REMOVE(&c->freeq, s, link);
	} else {
		/* A slot never used before: its first touch. */
		s = &c->slots[c->slots_used++];
		memset(s, 0, sizeof(*s));
		s->conn = c;
	}
	memset(&s->req, 0, sizeof(s->req));
	s->cookie = r->cookie;
	s->type = r->type;
	s->flags = r->flags;
	s->off = r->off;
	s->len = r->len;
	s->prepared = false;
	s->sparse = false;
	s->more = false;
	s->piped = 0;
	s->error = 0;
	s->bytes = 0;
	s->sent = 0;
	s->rtotal = 0;
	s->rn = 0;
	c->busy++;
	return s;
}

/* Freed with the slot (its reply written or dropped). */
void nbd_slot_hold(struct nbd_slot *s)
{
	s->bytes = s->len;
	s->conn->bytes_held += s->len;
}

void nbd_slot_free(struct nbd_slot *s)
{
	struct nbd_conn *c = s->conn;

	if (s->prepared)
		tap_req_release(&s->req);
	s->prepared = false;
	s->state = SLOT_FREE;
	c->pipe_bufs -= s->pipe_bufs;
	s->pipe_bufs = 0;
	s->spliced = false;
	c->bytes_held -= s->bytes;
	s->bytes = 0;
	TAILQ_INSERT_TAIL(&c->freeq, s, link);
	c->busy--;
	/* A free slot (or freed bytes) may unblock the reader. */
	c->rerun = true;
}

void nbd_slots_drop(struct nbd_conn *c)
{
	/* Requests the tap still runs come back through their done
	 * callback. */
	for (unsigned i = 0; i < c->slots_used; i++) {
		struct nbd_slot *s = &c->slots[i];

		if (s->state == SLOT_FREE || s->state == SLOT_INFLIGHT)
			continue;
		if (s->state == SLOT_QUEUED)
			TAILQ_REMOVE(&c->outq, s, link);
		else if (s->state == SLOT_SPLICE_WAIT)
			TAILQ_REMOVE(&c->splice_q, s, link);
		nbd_slot_free(s);
	}
}
