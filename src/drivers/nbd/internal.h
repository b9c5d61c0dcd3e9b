/* Shared state of the nbd: driver's three files: nbd.c (the ops), io.c (the
 * connection at work, which owns struct nbdc) and handshake.c (connect and
 * handshake, below both). Private to src/drivers/nbd/; loop thread only. */
#ifndef TAPD_NBD_CLIENT_INTERNAL_H
#define TAPD_NBD_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <event2/event.h>
#include <sys/socket.h>

#include "formats/nbd/client.h"
#include "drivers/driver.h"

/* Requests on the wire at once per image; more wait in a queue. A power of
 * two no larger than 65536: the slot is the low 16 bits of the cookie. */
#define NBDC_SLOTS 256
#define NBDC_MAX_ADDRS 4

enum nbdc_hs_state {
	HS_CONNECTING,	/* non-blocking connect in progress */
	HS_GREETING,	/* NBDMAGIC, IHAVEOPT, handshake flags */
	HS_OPT_HDR,	/* an option reply header */
	HS_OPT_DATA,	/* its data */
	HS_EXPORT_NAME, /* the reply to NBD_OPT_EXPORT_NAME */
	HS_DONE,
};

struct nbdc_hs {
	enum nbdc_hs_state state;
	bool no_zeroes;
	struct nbdc_opt_reply rep;
	uint32_t have, want; /* input collected into in[] */
	uint32_t out_len, out_sent;
	struct nbdc_export x;
	unsigned char in[NBD_OPT_DATA_MAX];
	unsigned char out[NBD_CLIENT_FLAGS_LEN + NBDC_OPT_GO_LEN(NBD_NAME_MAX) + NBD_OPT_HDR_LEN +
			  NBD_NAME_MAX];
};

/* Per-request state, in image_io.priv. A READ or WRITE longer than the
 * server takes in one command goes as several commands in turn. */
struct nbdc_req {
	struct nbdc_req *next; /* in the wait or the send queue */
	/* When it began to wait for a connection (0: it has not): kept across
	 * reconnects, so a request that breaks every connection still fails
	 * after the timeout. */
	uint64_t wait_ms;
	/* When its current command went into the send queue: a server that
	 * holds it past the timeout without a reply is stalled. */
	uint64_t wire_ms;
	uint64_t cookie;
	uint32_t done;	  /* bytes of io->len finished */
	uint32_t cur;	  /* bytes of the command on the wire */
	uint32_t sent;	  /* bytes of header and payload written */
	bool flush_after; /* FUA the server lacks: a flush follows */
	bool flushing;	  /* the command on the wire is that flush */
	int err;	  /* the result, once in the done queue */
	unsigned char hdr[NBD_REQUEST_LEN];
};

struct nbdc_queue {
	struct nbdc_req *head, *tail;
};

enum nbdc_state {
	NBDC_DOWN,	/* waiting for the next reconnect attempt */
	NBDC_HANDSHAKE, /* connecting again, on the loop */
	NBDC_UP,
};

struct nbdc {
	struct image *img;
	struct event_base *base; /* the daemon's loop, from nbd_client_setup */
	struct nbdc_uri uri;
	char desc[160]; /* for log lines: the URI */
	struct sockaddr_storage addrs[NBDC_MAX_ADDRS];
	socklen_t addr_lens[NBDC_MAX_ADDRS];
	unsigned n_addrs, addr_cur;
	int fd;
	enum nbdc_state state;
	struct event *ev_read, *ev_write, *timer;
	bool write_armed;
	unsigned timeout_s;
	unsigned backoff_ms, attempts;
	uint64_t down_ms; /* when the connection went away */
	uint64_t up_ms;	  /* when it came (back) up */
	uint64_t next_ms; /* next attempt (DOWN), or end of the handshake */
	/* The export as negotiated at open; a reconnect must find it again. */
	struct nbdc_export x;
	uint32_t max_payload;
	/* Requests: waiting (no slot, or no connection), being written, and
	 * on the wire by slot. */
	struct nbdc_queue wait, send;
	/* Finished requests, told to their owner once the driver's state is
	 * consistent: a done callback may close the image. */
	struct nbdc_queue done;
	bool delivering, close_pending;
	struct nbdc_req *slots[NBDC_SLOTS];
	uint16_t free_slots[NBDC_SLOTS];
	unsigned n_free;
	uint32_t seq;
	/* Reply input: a header, then a READ's payload into the io buffer. */
	unsigned char rhdr[NBD_SIMPLE_REPLY_LEN];
	uint32_t rhdr_got;
	struct nbdc_req *rreq;
	uint32_t rgot;
	struct nbdc_hs hs;
};

static inline struct image_io *nbdc_io(const struct nbdc_req *r)
{
	return container_of((void *)(uintptr_t)r, struct image_io, priv);
}

static inline void q_push(struct nbdc_queue *q, struct nbdc_req *r)
{
	r->next = NULL;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
}

static inline void q_push_front(struct nbdc_queue *q, struct nbdc_req *r)
{
	r->next = q->head;
	q->head = r;
	if (!q->tail)
		q->tail = r;
}

static inline struct nbdc_req *q_pop(struct nbdc_queue *q)
{
	struct nbdc_req *r = q->head;

	if (r) {
		q->head = r->next;
		if (!q->head)
			q->tail = NULL;
	}
	return r;
}

/* io.c: the life of a struct nbdc, which io.c owns; nbd.c calls down. */
/* Without NBD_INFO_BLOCK_SIZE the protocol promises 32 MiB payloads. */
#define NBDC_DEFAULT_MAX_PAYLOAD (32u << 20)
/* A new connection state for img on base, not connected (fd -1); NULL
 * when out of memory. */
struct nbdc *nbdc_new(struct image *img, struct event_base *base);
/* The blocking handshake at open succeeded: watch the socket, make the
 * reconnect timer and take requests. 0 or -ENOMEM. */
int nbdc_start(struct nbdc *c);
/* Queue r (taken by nbd.c's submit) and send it if the connection is up. */
void nbdc_enqueue(struct nbdc *c, struct nbdc_req *r);
/* Close the socket and free c, at once or, inside one of c's done
 * callbacks, once they return. */
void nbdc_release(struct nbdc *c);

/* handshake.c */
/* Resolve the URI's address(es) into c->addrs; may block on DNS, so for
 * open() only. */
int nbdc_resolve(struct nbdc *c, struct errbuf *eb);
/* Start a non-blocking connect to c->addrs[i]; sets c->fd and c->hs. */
int nbdc_hs_start(struct nbdc *c, unsigned i, struct errbuf *eb);
/* Make what progress the socket allows: 1 when the export is ready (in
 * c->hs.x), 0 to wait (for writing if nbdc_hs_wants_write), or a negative
 * errno with eb filled. */
int nbdc_hs_step(struct nbdc *c, struct errbuf *eb);
bool nbdc_hs_wants_write(const struct nbdc *c);
/* The whole connection at open(), with poll() and a deadline: tries each
 * address in turn. */
int nbdc_connect_blocking(struct nbdc *c, unsigned timeout_ms, struct errbuf *eb);

uint64_t nbdc_now_ms(void);

#endif
